"""Shared helpers of the training scripts: deterministic setup, the digits split, the text corpus."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np

__all__ = ["WEIGHTS", "TEXT", "seed_everything", "digits_split", "text_corpus", "save_weights"]

WEIGHTS = Path(__file__).resolve().parent.parent / "weights"
TEXT = Path(__file__).resolve().parent.parent / "data" / "public_domain.txt"

#: The fixed split of scikit-learn's 8x8 digits used for training and every accuracy figure.
SPLIT_SEED = 0
TEST_FRACTION = 0.2


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch, and make torch single-threaded and deterministic."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)


def digits_split():
    """``(x_train, y_train, x_test, y_test)``: pixels scaled to [0, 1], shape (n, 64)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    return train_test_split(x, d.target, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=d.target)


def text_corpus() -> tuple[str, list[str]]:
    """The public-domain training text and its sorted character vocabulary."""
    text = TEXT.read_text(encoding="utf-8")
    return text, sorted(set(text))


def save_weights(name: str, arrays: dict, meta: dict) -> Path:
    """Write ``weights/<name>.npz`` with the arrays and a JSON ``meta`` entry."""
    WEIGHTS.mkdir(exist_ok=True)
    path = WEIGHTS / f"{name}.npz"
    np.savez_compressed(path, __meta__=np.array(json.dumps(meta, sort_keys=True)), **arrays)
    return path
