"""Oblivious map: logic of the deployable AXI4 top, synthesised for the Alveo U55C's fabric.

Generates ``OmapUnitAxi`` (keys through the key port, every HBM region on its own AXI4
master, 512-bit host AXI) for N = 2^20, V = 8, alpha = 0.2 and runs yosys ``synth_xilinx
-family xcup`` (UltraScale+, the U55C's XCU55C) on it. These are yosys's cell counts, an
estimate before Vivado's optimisation, placement and routing (no Fmax: there is no open
place-and-route for UltraScale+); the U55C's totals are from AMD's data sheet (XCU55C:
1,303,680 LUTs, 2,607,360 flip-flops, 9,024 DSP slices, 2,016 BRAM36). N only changes
address widths: the logic is nearly the same at every capacity.

    python benchmarks/omap_resources.py [--json] [--n N]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit
from celosia.boards.flow import find_tool
from celosia.omap.rtl import OmapUnitAxi
from celosia.hw.verilog import to_verilog
from celosia.omap.config import OmapConfig

U55C = {"lut": 1_303_680, "ff": 2_607_360, "dsp": 9_024, "bram36": 2_016}


def cell_totals(cells: dict[str, int]) -> dict[str, int]:
    """Group yosys's UltraScale+ cells into LUTs, flip-flops, carry chains, DSPs and RAM."""
    def total(prefixes):
        return sum(v for k, v in cells.items() if k.startswith(prefixes))

    return {"lut": total(("LUT",)), "lutram": total(("RAM32", "RAM64", "RAM128", "RAM256", "SRL")),
            "ff": total(("FD",)), "carry": total(("CARRY",)), "dsp": total(("DSP",)),
            "bram36": cells.get("RAMB36E2", 0) + cells.get("RAMB18E2", 0) / 2, "muxf": total(("MUXF",))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print the results as JSON on the last line")
    ap.add_argument("--n", type=int, default=2**20, help="capacity N (default 2^20)")
    args = ap.parse_args()
    cfg = OmapConfig(n=args.n, value_bytes=8, alpha=0.2)
    top = OmapUnitAxi(cfg, None, data_width=512)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)  # YoWASP tools see only their working directory
        (work / "omap_unit.v").write_text(to_verilog(top, "omap_unit"))
        t = time.time()
        script = ("read_verilog omap_unit.v; synth_xilinx -family xcup -top omap_unit -flatten; "
                  "tee -q -o stat.json stat -json")
        subprocess.run([find_tool("yosys"), "-q", "-p", script], cwd=work, check=True)
        seconds = time.time() - t
        stat = json.loads((work / "stat.json").read_text())
    cells = stat["design"]["num_cells_by_type"]
    used = cell_totals(cells)
    row = {"n": args.n, "value_bytes": 8, "alpha": 0.2, **used, "synth_seconds": round(seconds),
           **{f"{k}_pct_u55c": round(100 * used[k] / U55C[k], 3) for k in U55C}}
    payload = {"cases": [row], "cells": cells, "u55c": U55C,
               "notes": "yosys synth_xilinx -family xcup cell counts (pre-Vivado estimate, no Fmax); "
                        "AXI top with key port, index / value store / eviction queues / loads / versions "
                        "on AXI4 masters, 512-bit host AXI"}
    emit("omap_resources", [row], ["n", "lut", "ff", "carry", "lutram", "dsp", "bram36", "lut_pct_u55c",
                                   "ff_pct_u55c", "synth_seconds"], args.json, payload)


if __name__ == "__main__":
    main()
