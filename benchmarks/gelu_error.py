"""GELU unit error: bit-exact golden vs float64 x·Φ(x), per format, with the ROM size.

Two input sets per format: the published grid x ∈ [−8, 8] step 2**-14 (Edge-MoE's) and 2M samples
of N(0, 2²) (seed 0). Inputs are quantized to the input format (round half-even, saturate) and the
error is measured against gelu_float of the quantized input, i.e. the error of the unit itself;
points whose exact GELU falls outside the output range are excluded (counted in ``n_out_of_range``).
An emulation of Edge-MoE's linear table (δ at step 1/32 on [0, 5.5], 22-bit entries) is the
reference row. No FPGA build.

    python benchmarks/gelu_error.py [--json]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit
from celosia.ir.gelu import delta_float, gelu_float, gelu_int, gelu_table
from celosia.ir.numerics import Fixed, dequantize, quantize

FORMATS = [
    (Fixed(32, 22), Fixed(32, 22)),
    (Fixed(24, 16), Fixed(24, 16)),
    (Fixed(16, 15), Fixed(16, 15)),
    (Fixed(16, 14), Fixed(16, 14)),
    (Fixed(16, 13), Fixed(16, 13)),
    (Fixed(16, 12), Fixed(16, 12)),
    (Fixed(16, 11), Fixed(16, 11)),
    (Fixed(16, 10), Fixed(16, 10)),
    (Fixed(8, 4), Fixed(8, 4)),
]


def _stats(err: np.ndarray) -> dict:
    return {
        "max_abs": float(err.max()),
        "mean_abs": float(err.mean()),
        "rms": float(np.sqrt(np.mean(err**2))),
    }


def _inputs(seed: int = 0) -> dict[str, np.ndarray]:
    grid = np.arange(-8 * 2**14, 8 * 2**14 + 1, dtype=np.float64) / 2**14
    normal = np.random.default_rng(seed).normal(0.0, 2.0, 2_000_000)
    return {"grid": grid, "normal": normal}


def measure(fi: Fixed, fo: Fixed, inputs: dict[str, np.ndarray]) -> dict:
    table = gelu_table(fi, fo)
    row = {"format": f"{fi}->{fo}", "rom_bits": table.rom_bits, "segments": table.n_seg,
           "seg_width": 2.0**-table.seg_bits, "word_bits": table.word_bits,
           "error_bound": table.error_bound, "lsb_out": fo.lsb, "table": table.to_dict()}
    for name, x in inputs.items():
        q = quantize(x, fi)
        ref = gelu_float(dequantize(q, fi))
        y = dequantize(gelu_int(q, fi, fo, table), fo)
        ok = (ref <= fo.max_value) & (ref >= fo.min_value)
        err = np.abs(y - ref)[ok]
        s = _stats(err)
        s["n_out_of_range"] = int((~ok).sum())
        s["max_lsb"] = float(s["max_abs"] / fo.lsb)
        row[name] = s
        assert s["max_abs"] <= table.error_bound, (fi, fo, name, s["max_abs"], table.error_bound)
    return row


def edge_moe_reference(inputs: dict[str, np.ndarray]) -> dict:
    """Emulated Edge-MoE: δ at step 1/32 on [0, 5.5] (177 × 22 bit), linear interpolation, Q10.22."""
    fmt = Fixed(32, 22)
    knots = quantize(delta_float(np.arange(177) / 32), fmt)
    row = {"format": "edge-moe linear (emulated)", "rom_bits": 177 * 22, "segments": 176,
           "seg_width": 1 / 32, "word_bits": 22, "error_bound": None, "lsb_out": fmt.lsb}
    for name, x in inputs.items():
        xv = dequantize(quantize(x, fmt), fmt)
        a = np.abs(xv)
        pos = np.minimum(a * 32, 176.0)
        k = np.minimum(np.floor(pos).astype(np.int64), 175)
        f = pos - k
        d = np.where(a < 5.5, knots[k] + f * (knots[k + 1] - knots[k]), 0) * fmt.lsb
        y = dequantize(quantize(np.maximum(xv, 0) - d, fmt), fmt)
        s = _stats(np.abs(y - gelu_float(xv)))
        s["max_lsb"] = float(s["max_abs"] / fmt.lsb)
        row[name] = s
    return row


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="also print the JSON payload")
    args = ap.parse_args(argv)
    inputs = _inputs()
    rows = [measure(fi, fo, inputs) for fi, fo in FORMATS]
    rows.append(edge_moe_reference(inputs))
    flat = []
    for r in rows:
        flat.append({
            "format": r["format"], "rom_bits": r["rom_bits"], "segs": r["segments"],
            "bound": r["error_bound"],
            "grid_max": r["grid"]["max_abs"], "grid_mean": r["grid"]["mean_abs"], "grid_rms": r["grid"]["rms"],
            "N(0,4)_max": r["normal"]["max_abs"], "N(0,4)_mean": r["normal"]["mean_abs"],
            "N(0,4)_rms": r["normal"]["rms"], "max_lsb": max(r["grid"]["max_lsb"], r["normal"]["max_lsb"]),
        })
    payload = {
        "description": "GELU (erf) golden vs float64; grid = [-8, 8] step 2^-14, normal = 2M N(0, 2^2) seed 0",
        "goal": {"max_abs_22bit": 2.5e-5, "rom_bits": 4096, "max_lsb_16bit": 1.0},
        "rows": rows,
    }
    emit("gelu_error", flat, list(flat[0]), args.json, payload)


if __name__ == "__main__":
    main()
