"""Built-in models (``celosia zoo``): deterministic, no download at run time."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from celosia.errors import UnknownNameError
from celosia.frontend.builder import GraphBuilder
from celosia.ir.graph import Graph

__all__ = ["ZooModel", "ZOO", "get_model", "list_models"]


@dataclass(frozen=True)
class ZooModel:
    """A built-in model and its sample-input generator.

    Attributes
    ----------
    name, description : str
    build : callable(batch) -> Graph
        The float graph for a batch size.
    sample : callable(batch, rng) -> dict
        One input sample (the same distribution as the model's real inputs).
    metrics : dict
        Recorded float figures of trained models (e.g. ``float_test_acc``), measured by
        their training script and checked by the zoo tests.
    test_set : callable(batch) -> (list of dict, ndarray), optional
        A labelled test set: input samples of ``batch`` rows each and their labels, shape
        ``(samples, batch)`` (a remainder smaller than ``batch`` is left out).
    """

    name: str
    description: str
    build: Callable[[int], Graph]
    sample: Callable[[int, np.random.Generator], dict]
    metrics: dict = field(default_factory=dict)
    test_set: Callable[[int], tuple[list[dict], np.ndarray]] | None = None

    def samples(self, count: int, batch: int = 1, seed: int = 0) -> list[dict]:
        """``count`` deterministic input samples."""
        rng = np.random.default_rng(seed)
        return [self.sample(batch, rng) for _ in range(count)]


def _mlp(name: str, dims: list[int], seed: int) -> Callable[[int], Graph]:
    """An MLP with ReLU between layers and He-initialised deterministic weights."""

    def build(batch: int = 1) -> Graph:
        rng = np.random.default_rng(seed)
        b = GraphBuilder(name)
        h = b.input("x", (batch, dims[0]))
        for i, (fan_in, fan_out) in enumerate(zip(dims, dims[1:])):
            w = rng.normal(0.0, np.sqrt(2.0 / fan_in), size=(fan_out, fan_in))
            bias = rng.normal(0.0, 0.05, size=fan_out)
            h = b.linear(h, w, bias, name=f"fc{i + 1}")
            if i < len(dims) - 2:
                h = b.relu(h, name=f"relu{i + 1}")
        b.output(h, "logits")
        return b.build()

    return build


def _pixels(features: int) -> Callable[[int, np.random.Generator], dict]:
    def sample(batch: int, rng: np.random.Generator) -> dict:
        # 8x8 digit-like intensities in [0, 1]
        return {"x": rng.uniform(0.0, 1.0, size=(batch, features))}

    return sample


def _digits(batch: int, rng: np.random.Generator) -> dict:
    from celosia.frontend.transformers import digits_calibration

    images = digits_calibration()
    return {"x": images[rng.integers(0, len(images), size=batch)]}


def _digits_test(batch: int) -> tuple[list[dict], np.ndarray]:
    from celosia.frontend.transformers import digits_test

    x, y = digits_test()
    n = len(y) // batch * batch
    return ([{"x": x[i:i + batch]} for i in range(0, n, batch)], y[:n].reshape(-1, batch))


def _text(batch: int, rng: np.random.Generator) -> dict:
    from celosia.frontend.transformers import load_weights, text_corpus

    meta = load_weights("gpt-tiny")[1]
    vocab, ctx = meta["vocab"], meta["config"]["ctx"]
    ids = np.array([vocab.index(c) for c in text_corpus()])
    starts = rng.integers(0, len(ids) - ctx, size=batch)
    return {"ids": np.stack([ids[s:s + ctx] for s in starts]).astype(np.float64)}


def _vit(name: str) -> Callable[[int], Graph]:
    def build(batch: int = 1) -> Graph:
        from celosia.frontend.transformers import build_vit

        return build_vit(name, batch)

    return build


def _gpt(batch: int = 1) -> Graph:
    from celosia.frontend.transformers import build_gpt

    return build_gpt("gpt-tiny", batch)


ZOO: dict[str, ZooModel] = {
    m.name: m
    for m in [
        ZooModel(
            "mlp-tiny",
            "MLP 64-128-64-10 with ReLU (8x8 image in, 10 logits out), deterministic weights",
            _mlp("mlp-tiny", [64, 128, 64, 10], seed=2026),
            _pixels(64),
        ),
        ZooModel(
            "mlp-micro",
            "MLP 16-16-4 with ReLU, small enough for an iCE40 UP5K",
            _mlp("mlp-micro", [16, 16, 4], seed=7),
            _pixels(16),
        ),
        ZooModel(
            "vit-digits",
            "ViT on 8x8 digits: 2x2 patches + class token, 2 pre-norm encoder layers (dim 32, 4 heads, "
            "GELU MLP 64), LayerNorm; float test accuracy 97.78 % (352/360)",
            _vit("vit-digits"),
            _digits,
            {"float_test_acc": 352 / 360, "test_size": 360, "train_script": "frontend/training/train_vit_digits.py"},
            _digits_test,
        ),
        ZooModel(
            "moe-vit-digits",
            "vit-digits with a MoE MLP in layer 2 (4 GELU experts, top-2, V-MoE softmax gate); "
            "float test accuracy 97.78 % (352/360)",
            _vit("moe-vit-digits"),
            _digits,
            {"float_test_acc": 352 / 360, "test_size": 360,
             "train_script": "frontend/training/train_vit_digits.py --moe"},
            _digits_test,
        ),
        ZooModel(
            "gpt-tiny",
            "decoder-only character model: 32-token context, 2 layers (dim 64, 4 query / 2 key-value heads, "
            "causal), RMSNorm, SiLU MLP 128; 94.1 % next-character accuracy on its public-domain text",
            _gpt,
            _text,
            {"float_next_char_acc": 0.9413, "train_script": "frontend/training/train_gpt_tiny.py"},
        ),
    ]
}


def list_models() -> list[ZooModel]:
    """All built-in models, by name."""
    return [ZOO[k] for k in sorted(ZOO)]


def get_model(name: str) -> ZooModel:
    """The built-in model called ``name``."""
    try:
        return ZOO[name]
    except KeyError:
        raise UnknownNameError(
            f"unknown model '{name}'", hint=f"built-in models: {', '.join(sorted(ZOO))} (see `celosia zoo`)"
        ) from None
