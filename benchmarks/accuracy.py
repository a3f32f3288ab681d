"""Model accuracy: float golden vs quantized (bit-exact) golden for the zoo's trained models.

* ``vit-digits``, ``moe-vit-digits``: test accuracy on the fixed 360-image test split of
  scikit-learn's 8×8 digits (``frontend/training/common.py``), float and per preset; also the
  top-1 agreement with float and the max / mean abs error of the logits.
* ``gpt-tiny``: greedy next-token agreement of the quantized model with the float model over
  the first 1,000 positions of its text (non-overlapping 32-character windows); also the float
  model's next-character accuracy on the text.

Calibration: 4 batches drawn from the shipped calibration data (digits: 128 training images;
gpt-tiny: random windows of the text), seed 0. ``float_vs_pytorch`` is the largest relative
error of the float golden against the PyTorch model on the same inputs (needs torch).

    python benchmarks/accuracy.py [--json] [--models vit-digits,...] [--presets w8a16,w16a16]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit
from celosia.frontend.transformers import load_weights, text_windows
from celosia.frontend.zoo import get_model
from celosia.ir.numerics import dequantize
from celosia.ir.pipeline import lower
from celosia.ir.quantize import Precision
from celosia.ir.golden import run_float, run_int

POSITIONS = 1000


def _inputs(name: str):
    """``(input dict, labels)`` of the evaluation set."""
    if name == "gpt-tiny":
        meta = load_weights(name)[1]
        ids, nxt = text_windows(meta["vocab"], meta["config"]["ctx"])
        n = -(-POSITIONS // ids.shape[1])
        return {"ids": ids[:n].astype(np.float64)}, nxt[:n]
    from celosia.frontend.training.common import digits_split

    _, xte, _, yte = digits_split()
    return {"x": xte.astype(np.float64)}, yte


def _vs_pytorch(name: str, feed: dict, ref: np.ndarray) -> float | None:
    try:
        import torch

        from celosia.frontend.training.models import GPTTiny, ViTDigits, load_numpy_state
    except ImportError:
        return None
    arrays, meta = load_weights(name)
    cfg = dict(meta["config"])
    model = GPTTiny(cfg.pop("vocab"), **cfg) if name == "gpt-tiny" else ViTDigits(**cfg)
    model = load_numpy_state(model, arrays).double()
    arg = torch.from_numpy(feed["ids"].astype(np.int64)) if name == "gpt-tiny" else torch.from_numpy(feed["x"])
    with torch.no_grad():
        want = model(arg).numpy()
    return float(np.abs(ref - want).max() / np.abs(want).max())


def evaluate(name: str, presets: list[str]) -> dict:
    zoo = get_model(name)
    feed, labels = _inputs(name)
    batch = next(iter(feed.values())).shape[0]
    graph = zoo.build(batch)
    t0 = time.perf_counter()
    ref = run_float(graph, feed)["logits"]
    pred = ref.argmax(-1)
    gpt = name == "gpt-tiny"
    keep = np.arange(pred.size) < POSITIONS if gpt else np.ones(pred.size, bool)
    result = {"float_vs_pytorch": _vs_pytorch(name, feed, ref), "float_seconds": time.perf_counter() - t0}
    if gpt:
        result["float_agreement"] = 1.0
        result["float_next_char_acc"] = float((pred.reshape(-1) == labels.reshape(-1))[keep].mean())
        result["positions"] = int(keep.sum())
    else:
        result["float_acc"] = float((pred == labels).mean())
        result["test_size"] = int(labels.size)
    for preset in presets:
        t0 = time.perf_counter()
        q = lower(graph, zoo.samples(4, batch, seed=0), Precision.parse(preset))
        got = dequantize(run_int(q, feed)["logits"], q.op("logits").type.fmt)
        qpred = got.argmax(-1)
        agree = float((qpred.reshape(-1) == pred.reshape(-1))[keep].mean())
        err = np.abs(got - ref)
        detail = {"top1_agreement": agree, "max_abs_err": float(err.max()), "mean_abs_err": float(err.mean()),
                  "seconds": time.perf_counter() - t0}
        if gpt:
            result[preset] = agree
            detail["next_char_acc"] = float((qpred.reshape(-1) == labels.reshape(-1))[keep].mean())
        else:
            result[preset] = float((qpred == labels).mean())
            detail["acc"] = result[preset]
        result[f"{preset}_detail"] = detail
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="print the JSON object as the last line")
    p.add_argument("--models", default="vit-digits,moe-vit-digits,gpt-tiny")
    p.add_argument("--presets", default="w8a16,w16a16")
    args = p.parse_args(argv)
    presets = args.presets.split(",")
    payload, rows = {}, []
    for name in args.models.split(","):
        r = evaluate(name, presets)
        payload[name] = r
        base = r.get("float_acc", r.get("float_agreement"))
        metric = "test accuracy" if "float_acc" in r else "next-token agreement"
        for preset in ["float"] + presets:
            d = r.get(f"{preset}_detail", {})
            rows.append({
                "model": name, "precision": preset, "metric": metric,
                "value": base if preset == "float" else r[preset],
                "top1_vs_float": d.get("top1_agreement"), "max_abs_err": d.get("max_abs_err"),
                "mean_abs_err": d.get("mean_abs_err"),
                "vs_pytorch": r["float_vs_pytorch"] if preset == "float" else None,
            })
    emit("accuracy", rows, ["model", "precision", "metric", "value", "top1_vs_float", "max_abs_err",
                            "mean_abs_err", "vs_pytorch"], args.json, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
