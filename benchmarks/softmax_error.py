"""Softmax unit error: bit-exact golden vs float64 softmax, per score spread σ and format, with ROM size.

Rows of 129 scores drawn from N(0, σ²), σ ∈ {1, 3, 8} (Edge-MoE's setup), 2000 rows per σ (seed 0),
quantized to the input format (round half-even, saturate). The error is measured against the
float64 softmax of the quantized scores, i.e. the error of the unit itself, with the real
(table + polynomial) exponential and reciprocal in the loop. ``bound`` is the largest stated
per-element bound (:func:`celosia.ir.softmax.softmax_error_bound`) over the rows, ``sum_bound``
the largest stated bound of ``|Σp − 1|``. ``rom_bits`` counts the lanes + 1 exponential tables
and the reciprocal table (lanes = 1); the row buffer is a RAM (``buffer_bits``, max_len = 1024).
No FPGA build.

    python benchmarks/softmax_error.py [--json]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit
from celosia.ir.numerics import Fixed, dequantize, quantize
from celosia.ir.softmax import (
    GOAL_MAX_ABS_ERROR_22,
    GOAL_MAX_SUM_ERROR_22,
    softmax_error_bound,
    softmax_float,
    softmax_int,
    softmax_params,
)

FORMATS = [
    (Fixed(32, 22), Fixed(24, 22, signed=False)),
    (Fixed(32, 22), Fixed(32, 22)),
    (Fixed(16, 10), Fixed(16, 15, signed=False)),
    (Fixed(16, 10), Fixed(16, 14)),
    (Fixed(16, 8), Fixed(12, 10, signed=False)),
    (Fixed(8, 4), Fixed(8, 7, signed=False)),
]
SIGMAS = (1.0, 3.0, 8.0)
N = 129
MAX_LEN = 1024


def measure(fi: Fixed, fo: Fixed, sigma: float, rows: int, seed: int = 0) -> dict:
    p = softmax_params(fi, fo, 1, MAX_LEN)
    x = np.random.default_rng(seed).normal(0.0, sigma, (rows, N))
    q = quantize(x, fi)
    y = dequantize(softmax_int(q, None, fi, fo, max_len=MAX_LEN), fo)
    ref = softmax_float(dequantize(q, fi))
    b = softmax_error_bound(q, None, fi, fo, max_len=MAX_LEN)
    err = np.abs(y - ref)
    sum_err = np.abs(y.sum(-1) - 1.0)
    assert (err <= b).all()
    return {
        "format": f"{fi}->{fo}",
        "sigma": sigma,
        "n": N,
        "rows": rows,
        "max_abs": float(err.max()),
        "mean_abs": float(err.mean()),
        "rms": float(np.sqrt(np.mean(err**2))),
        "max_sum_err": float(sum_err.max()),
        "bound": float(b.max()),
        "sum_bound": float(b.sum(-1).max()),
        "max_abs_lsb": float(err.max() / fo.lsb),
        "lsb_out": fo.lsb,
        "rom_bits": p.rom_bits,
        "buffer_bits": p.buffer_bits,
        "Fe": p.Fe,
        "Fr": p.Fr,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="also print the JSON payload")
    ap.add_argument("--rows", type=int, default=2000, help="rows per sigma (default 2000)")
    args = ap.parse_args(argv)
    rows = [measure(fi, fo, s, args.rows) for fi, fo in FORMATS for s in SIGMAS]
    q22 = [r for r in rows if r["format"] == f"{FORMATS[0][0]}->{FORMATS[0][1]}"]
    payload = {
        "goal_max_abs_22": GOAL_MAX_ABS_ERROR_22,
        "goal_max_sum_22": GOAL_MAX_SUM_ERROR_22,
        "goal_met_22": all(r["max_abs"] <= GOAL_MAX_ABS_ERROR_22 and r["max_sum_err"] <= GOAL_MAX_SUM_ERROR_22
                           for r in q22),
        "bound_meets_goal_22": all(r["bound"] <= GOAL_MAX_ABS_ERROR_22 and r["sum_bound"] <= GOAL_MAX_SUM_ERROR_22
                                   for r in q22),
        "rows": rows,
    }
    cols = ["format", "sigma", "max_abs", "mean_abs", "rms", "max_sum_err", "bound", "sum_bound", "max_abs_lsb",
            "rom_bits"]
    emit("softmax_error", rows, cols, args.json, payload)
    print(f"goals at 22 fractional bits (max {GOAL_MAX_ABS_ERROR_22}, sum {GOAL_MAX_SUM_ERROR_22}): "
          f"measured {'met' if payload['goal_met_22'] else 'NOT met'}, "
          f"stated bound {'meets' if payload['bound_meets_goal_22'] else 'does NOT meet'} them")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
