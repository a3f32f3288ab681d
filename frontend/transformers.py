"""Numpy rebuilds of the zoo's trained transformers (no torch): weights ``.npz`` -> float Graph.

The networks are those of :mod:`celosia.frontend.training.models`, written with the
:class:`~celosia.frontend.builder.GraphBuilder`; ``tests/test_zoo_transformers.py`` checks
that both agree to 1e-5 relative. Weights and calibration data are package data read with
:mod:`importlib.resources`.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

import numpy as np

from celosia.errors import CelosiaError
from celosia.frontend.builder import GraphBuilder, Tensor
from celosia.ir.graph import Graph

__all__ = ["load_weights", "build_vit", "build_gpt", "digits_calibration", "text_corpus", "text_windows"]


@lru_cache(maxsize=8)
def load_weights(name: str) -> tuple[dict[str, np.ndarray], dict]:
    """``(arrays as float64, meta)`` of the shipped ``weights/<name>.npz``."""
    try:
        with resources.files("celosia.frontend").joinpath(f"weights/{name}.npz").open("rb") as f:
            data = np.load(f, allow_pickle=False)
            arrays = {k: data[k].astype(np.float64) for k in data.files if k != "__meta__"}
            meta = json.loads(str(data["__meta__"])) if "__meta__" in data.files else {}
    except FileNotFoundError:
        raise CelosiaError(
            f"the weights of zoo model '{name}' are missing from the installed package",
            hint=f"reinstall celosia, or run frontend/training/ to regenerate weights/{name}.npz",
        ) from None
    return arrays, meta


@lru_cache(maxsize=1)
def digits_calibration() -> np.ndarray:
    """128 training images of the 8×8 digits (pixels in [0, 1]), shape (128, 64)."""
    return load_weights("digits-calib")[0]["x"]


@lru_cache(maxsize=1)
def digits_test() -> tuple[np.ndarray, np.ndarray]:
    """The 360-image test split of the 8×8 digits: ``(pixels in [0, 1] (360, 64), labels (360,))``."""
    arrays = load_weights("digits-test")[0]
    return arrays["x"] / 16.0, arrays["y"].astype(np.int64)


@lru_cache(maxsize=1)
def text_corpus() -> str:
    """The public-domain text gpt-tiny was trained on."""
    return resources.files("celosia.frontend").joinpath("data/public_domain.txt").read_text(encoding="utf-8")


def text_windows(vocab: str, ctx: int) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping windows of the corpus: ``(ids (n, ctx), next ids (n, ctx))``."""
    ids = np.array([vocab.index(c) for c in text_corpus()])
    n = (len(ids) - 1) // ctx
    return ids[: n * ctx].reshape(n, ctx), ids[1: n * ctx + 1].reshape(n, ctx)


def _attention(b: GraphBuilder, W: dict, p: str, h: Tensor, heads: int, kv_heads: int, causal: bool) -> Tensor:
    q = b.linear(h, W[f"{p}.q.weight"], W[f"{p}.q.bias"], name=f"{p}.q")
    k = b.linear(h, W[f"{p}.k.weight"], W[f"{p}.k.bias"], name=f"{p}.k")
    v = b.linear(h, W[f"{p}.v.weight"], W[f"{p}.v.bias"], name=f"{p}.v")
    a = b.attention(q, k, v, heads=heads, kv_heads=kv_heads, causal=causal, name=f"{p}.sdpa")
    return b.linear(a, W[f"{p}.o.weight"], W[f"{p}.o.bias"], name=f"{p}.o")


def _norm(b: GraphBuilder, W: dict, p: str, h: Tensor, rms: bool) -> Tensor:
    if rms:
        return b.rmsnorm(h, W[f"{p}.weight"], eps=1e-5, name=p)
    return b.layernorm(h, W[f"{p}.weight"], W[f"{p}.bias"], eps=1e-5, name=p)


def _mlp(b: GraphBuilder, W: dict, p: str, h: Tensor, act: str) -> Tensor:
    if f"{p}.gate.weight" in W:
        n = sum(1 for k in W if k.startswith(f"{p}.experts.") and k.endswith(".fc1.weight"))
        stack = lambda s: np.stack([W[f"{p}.experts.{e}.{s}"] for e in range(n)])  # noqa: E731
        return b.moe(h, W[f"{p}.gate.weight"], W[f"{p}.gate.bias"], stack("fc1.weight"), stack("fc1.bias"),
                     stack("fc2.weight"), stack("fc2.bias"), top_k=2, activation=act, name=p)
    h = b.linear(h, W[f"{p}.fc1.weight"], W[f"{p}.fc1.bias"], name=f"{p}.fc1")
    h = b.gelu(h, name=f"{p}.act") if act == "gelu" else b.silu(h, name=f"{p}.act")
    return b.linear(h, W[f"{p}.fc2.weight"], W[f"{p}.fc2.bias"], name=f"{p}.fc2")


def _blocks(b: GraphBuilder, W: dict, h: Tensor, depth: int, heads: int, kv_heads: int, causal: bool,
            rms: bool, act: str) -> Tensor:
    for i in range(depth):
        p = f"blocks.{i}"
        h = b.add(h, _attention(b, W, f"{p}.attn", _norm(b, W, f"{p}.norm1", h, rms), heads, kv_heads, causal),
                  name=f"{p}.res1")
        h = b.add(h, _mlp(b, W, f"{p}.mlp", _norm(b, W, f"{p}.norm2", h, rms), act), name=f"{p}.res2")
    return h


def build_vit(name: str, batch: int = 1) -> Graph:
    """The ViT of ``weights/<name>.npz`` for a batch size; input ``x`` (batch, 64), output ``logits``."""
    W, meta = load_weights(name)
    cfg = meta["config"]
    P, D = cfg["patch"], cfg["dim"]
    g = 8 // P
    b = GraphBuilder(name)
    x = b.input("x", (batch, 64))
    # patch embedding: conv with stride = kernel is a Linear on the flattened patches
    t = b.reshape(x, (batch, g, P, g, P), name="patches.split")
    t = b.transpose(t, (0, 1, 3, 2, 4), name="patches.order")
    t = b.reshape(t, (batch, g * g, P * P), name="patches")
    t = b.linear(t, W["embed.weight"].reshape(D, P * P), W["embed.bias"], name="embed")
    cls = b.const(np.broadcast_to(W["cls"], (batch, 1, D)).copy(), name="cls")
    t = b.concat([cls, t], axis=1, name="tokens")
    t = b.add(t, b.const(np.broadcast_to(W["pos"], (batch, g * g + 1, D)).copy(), name="pos"), name="embed.pos")
    t = _blocks(b, W, t, cfg["depth"], cfg["heads"], cfg["heads"], False, False, "gelu")
    t = _norm(b, W, "norm", t, rms=False)
    t = b.reshape(b.slice(t, 1, 0, 1, name="cls.take"), (batch, D), name="cls.flat")
    b.output(b.linear(t, W["head.weight"], W["head.bias"], name="head"), "logits")
    return b.build()


def build_gpt(name: str = "gpt-tiny", batch: int = 1) -> Graph:
    """The character GPT of ``weights/<name>.npz``; input ``ids`` (batch, ctx), output ``logits``."""
    W, meta = load_weights(name)
    cfg = meta["config"]
    T, D = cfg["ctx"], cfg["dim"]
    b = GraphBuilder(name)
    ids = b.input("ids", (batch, T))
    t = b.embedding(ids, W["tok.weight"], name="tok")
    t = b.add(t, b.const(np.broadcast_to(W["pos"][:, :T], (batch, T, D)).copy(), name="pos"), name="embed.pos")
    t = _blocks(b, W, t, cfg["depth"], cfg["heads"], cfg["kv_heads"], True, True, "silu")
    t = _norm(b, W, "norm", t, rms=True)
    b.output(b.linear(t, W["head.weight"], W["head.bias"], name="head"), "logits")
    return b.build()
