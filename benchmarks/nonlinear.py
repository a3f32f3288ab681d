"""Nonlinear units: error vs float64 per format and ECP5-85F figures, in one JSON object.

Runs the per-unit scripts (gelu_error, softmax_error, norm_error and, unless
``--no-fpga``, nonlinear_fpga: each builds its unit alone through yosys + nextpnr) and
gathers their results from benchmarks/results/ into the shape the issue asks for:
``{unit: {"formats": {fmt: {max_abs_err, mean_abs_err, rom_bits[, max_sum_err]}},
"fmax_mhz", "resources"}}`` for gelu, softmax, layernorm and rmsnorm.

    python benchmarks/nonlinear.py [--json] [--no-fpga]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import RESULTS, emit  # noqa: E402


def _run(script: str, *args: str) -> dict:
    subprocess.run([sys.executable, str(HERE / f"{script}.py"), *args], check=True, stdout=subprocess.DEVNULL)
    return json.loads((RESULTS / f"{script}.json").read_text())


def _worst(rows: list[dict], keys: tuple[str, ...]) -> dict:
    return {k: max(r[k] for r in rows) for k in keys}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--no-fpga", action="store_true", help="reuse benchmarks/results/nonlinear_fpga.json")
    args = ap.parse_args()
    out: dict[str, dict] = {u: {"formats": {}} for u in ("gelu", "softmax", "layernorm", "rmsnorm")}

    for r in _run("gelu_error")["rows"]:
        worst = max(r["grid"]["max_abs"], r["normal"]["max_abs"])
        if r["format"].startswith("edge-moe"):  # the anchor, emulated: not a Celosia format
            out["gelu"]["edge_moe_reference"] = {"max_abs_err": worst, "rom_bits": r["rom_bits"]}
            continue
        out["gelu"]["formats"][r["format"]] = {
            "max_abs_err": worst, "mean_abs_err": r["grid"]["mean_abs"], "rom_bits": r["rom_bits"],
            "stated_bound": r["error_bound"],
        }
    softmax_rows: dict[str, list[dict]] = {}
    for r in _run("softmax_error")["rows"]:
        softmax_rows.setdefault(r["format"], []).append(r)
    for fmt, rows in softmax_rows.items():
        w = _worst(rows, ("max_abs", "mean_abs", "max_sum_err", "bound", "sum_bound"))
        out["softmax"]["formats"][fmt] = {
            "max_abs_err": w["max_abs"], "mean_abs_err": w["mean_abs"], "max_sum_err": w["max_sum_err"],
            "rom_bits": rows[0]["rom_bits"], "stated_bound": w["bound"], "stated_sum_bound": w["sum_bound"],
        }
    norm_rows: dict[tuple[str, str], list[dict]] = {}
    for r in _run("norm_error")["rows"]:
        norm_rows.setdefault((r["mode"], r["format"]), []).append(r)
    for (mode, fmt), rows in norm_rows.items():
        w = _worst(rows, ("max_abs", "mean_abs", "bound"))
        out[mode]["formats"][fmt] = {
            "max_abs_err": w["max_abs"], "mean_abs_err": w["mean_abs"], "rom_bits": rows[0]["rom_bits"],
            "stated_bound": w["bound"],
        }

    fpga = json.loads((RESULTS / "nonlinear_fpga.json").read_text()) if args.no_fpga else _run("nonlinear_fpga")
    avail = fpga["available"]
    for u in fpga["units"]:
        if u["unit"] in out and "fmax_mhz" not in out[u["unit"]]:  # first (widest) build per unit
            out[u["unit"]]["fmax_mhz"] = u["fmax_mhz"]
            out[u["unit"]]["fpga_format"] = u["format"]
            out[u["unit"]]["resources"] = {k: {"used": u[k], "available": avail[k]} for k in ("lut", "ff", "dsp", "bram")}

    rows = [
        {"unit": unit, "format": fmt, **{k: v for k, v in f.items() if not k.startswith("stated")},
         "fmax_mhz": d.get("fmax_mhz")}
        for unit, d in out.items() for fmt, f in d["formats"].items()
    ]
    emit("nonlinear", rows, ["unit", "format", "max_abs_err", "mean_abs_err", "max_sum_err", "rom_bits", "fmax_mhz"],
         args.json, out)


if __name__ == "__main__":
    main()
