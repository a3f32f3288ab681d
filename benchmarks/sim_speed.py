"""Simulation speed: the generated ctypes harness vs cocotb, same Verilated design.

Both run a model's accelerator program (default mlp-tiny, 8x8 array) repeatedly; the figure is
simulated clock cycles per wall-clock second of the run phase (build excluded).

    python benchmarks/sim_speed.py [--json] [--runs N] [--model M --board B]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit  # noqa: E402

import celosia  # noqa: E402
from celosia.ir.numerics import quantize  # noqa: E402
from celosia.ir.program import pack_words  # noqa: E402
from celosia.sim.accel_sim import TOP_NAME, AcceleratorSim  # noqa: E402
from celosia.sim.cocotb_runner import run_cocotb  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--runs", type=int, default=2000, help="program runs per simulator (cocotb gets runs/10)")
    ap.add_argument("--model", default="mlp-tiny")
    ap.add_argument("--board", default="ulx3s-85f")
    args = ap.parse_args()
    prep = celosia.prepare(args.model, args.board)
    prog, q = prep.program, prep.qgraph
    sample = prep.sampler(1, 1)[0]
    place = prog.inputs["x"]
    words = pack_words(quantize(sample["x"], q.op("x").type.fmt), place, prog.lanes, prog.act_bits)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sim = AcceleratorSim(prog, tmp / "harness", scratch_depth=prep.scratch_depth)
        sim.write_words(place.addr, words)
        start_cycle = sim.dut.cycle
        t0 = time.perf_counter()
        for _ in range(args.runs):
            cycles_per_run = sim.run()
        harness_s = time.perf_counter() - t0
        harness_cycles = sim.dut.cycle - start_cycle
        sim.close()

        cocotb_runs = max(1, args.runs // 10)
        result_path = tmp / "cocotb.json"
        run_cocotb(
            sim.verilog_path.read_text(), TOP_NAME, "accel_speed_tb", tmp / "cocotb",
            params={"runs": cocotb_runs, "result_path": str(result_path),
                    "input_words": [[place.addr + i, w] for i, w in enumerate(words)]},
        )
        coco = json.loads(result_path.read_text())
    rows = [{"simulator": "ctypes harness", "runs": args.runs, "simulated_cycles": harness_cycles,
             "seconds": harness_s, "cycles_per_second": harness_cycles / harness_s}]
    for style in ("poll_every_cycle", "wait_for_done_edge"):
        r = coco[style]
        rows.append({"simulator": f"cocotb ({style})", "runs": cocotb_runs, "simulated_cycles": r["simulated_cycles"],
                     "seconds": r["seconds"], "cycles_per_second": r["simulated_cycles"] / r["seconds"]})
    speedup = rows[0]["cycles_per_second"] / rows[1]["cycles_per_second"]
    payload = {"design": f"{args.model} accelerator, {prog.lanes}x{prog.lanes} array", "cycles_per_run": cycles_per_run,
               "rows": rows, "speedup": speedup,
               "speedup_vs_edge_wait": rows[0]["cycles_per_second"] / rows[2]["cycles_per_second"]}
    emit("sim_speed" if args.model == "mlp-tiny" else f"sim_speed_{args.model}", rows, ["simulator", "runs", "simulated_cycles", "seconds", "cycles_per_second"],
         args.json, payload)
    print(f"harness / cocotb speed-up: {speedup:.0f}x (per-cycle polling), "
          f"{payload['speedup_vs_edge_wait']:.1f}x (waiting on the done edge)", file=sys.stderr)


if __name__ == "__main__":
    main()
