"""Transformer encoders on the accelerator: vit-digits and two unseen ViT shapes, whole on the RTL.

For each model: cycles per image on the RTL (Verilator, == the performance model), the roofline
(Σ per instruction of max(work at its unit's peak, words at the memories' bandwidth)), their ratio,
images/s at the board's target clock (or the post-route Fmax with ``--fpga``), the estimated DSP
and block RAM, and accuracy: the RTL's, the golden model's and the float reference's top-1 on the
360-image digits test set (vit-digits; the unseen models are randomly initialised, so they report
RTL == golden on sample inputs only). With ``--fpga`` each model also gets a real ECP5 bitstream
(slow: yosys + nextpnr, tens of minutes each).

    python benchmarks/encoder.py [--json] [--fpga] [--board ulx3s-85f]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
from _common import emit  # noqa: E402

import celosia  # noqa: E402

#: The unseen shapes measured beside vit-digits (from tests/vit_family.py).
UNSEEN = {
    "vit-hand-d32-h4-p2": dict(patch=2, dim=32, heads=4, layers=2, attention="hand"),
    "vit-torch-d64-h8-p4-mean": dict(patch=4, dim=64, heads=8, layers=2, attention="torch", pool="mean"),
}


def _model(name: str):
    if name == "vit-digits":
        return name, None
    import torch
    from vit_family import make_vit

    return make_vit(**UNSEEN[name]), (torch.rand(1, 64),)


def measure(name: str, board: str, fpga: bool) -> dict:
    model, example = _model(name)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        report = celosia.compile(model, board, Path(tmp) / "out", example_inputs=example, bitstream=fpga,
                                 samples=4)
    r = report
    dsp, bram = r.resources["dsp"], r.resources["bram"]
    return {
        "model": name, "cycles": r.cycles, "predicted": r.predicted_cycles, "roofline": round(r.roofline_cycles),
        "cycles/roofline": r.cycles_over_roofline, "images/s": r.inferences_per_s,
        "clock_mhz": r.fmax_mhz or r.target_mhz, "fmax_mhz": r.fmax_mhz, "dsp": dsp["used"], "bram": bram["used"],
        "lut": r.resources.get("lut", {}).get("used"), "rtl_matches_golden": r.rtl_matches_golden,
        "rtl_acc": r.rtl_accuracy, "golden_acc": r.golden_accuracy, "float_acc": r.float_accuracy,
        "ops/dsp/cycle": r.ops_per_dsp_per_cycle, "scratch_words": r.scratchpad["peak_words"],
        "seconds": time.perf_counter() - t0, "op_cycles": r.op_cycles,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--fpga", action="store_true", help="also build each bitstream (post-route Fmax)")
    ap.add_argument("--board", default="ulx3s-85f")
    args = ap.parse_args()
    rows = [measure(name, args.board, args.fpga) for name in ["vit-digits", *UNSEEN]]
    emit("encoder", rows, ["model", "cycles", "roofline", "cycles/roofline", "images/s", "clock_mhz", "dsp", "bram",
                           "rtl_matches_golden", "rtl_acc", "golden_acc", "float_acc", "seconds"], args.json,
         {"board": args.board, "models": rows})


if __name__ == "__main__":
    main()
