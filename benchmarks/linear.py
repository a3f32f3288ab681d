"""Linear-array efficiency: RTL cycles vs ideal for Y = X W^T + b on 8x8 and 16x16 arrays.

Each case compiles a one-layer model, runs it on the Verilated accelerator and
reads the hardware cycle counter (start to HALT: instruction fetch, weight-tile
reads from the on-chip weight memory, the array pipeline and write-back all
included). Ideal = M*K*N / (R*C).

    python benchmarks/linear.py [--json] [--quick]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit  # noqa: E402

from celosia.frontend.builder import GraphBuilder  # noqa: E402
from celosia.ir.numerics import quantize  # noqa: E402
from celosia.ir.pipeline import lower  # noqa: E402
from celosia.ir.quantize import Precision  # noqa: E402
from celosia.ir.schedule import schedule  # noqa: E402
from celosia.sim.accel_sim import AcceleratorSim  # noqa: E402
from celosia.ir.golden import run_int  # noqa: E402

CASES = {
    8: [(1, 64, 128), (16, 64, 64), (64, 128, 128), (128, 256, 128), (256, 256, 256), (50, 100, 30)],
    16: [(16, 64, 64), (64, 128, 128), (128, 256, 256), (256, 256, 256), (50, 100, 30)],
}
QUICK = {8: [(16, 64, 64), (64, 128, 128)], 16: [(64, 128, 128)]}


def run_case(lanes: int, m: int, k: int, n: int, work: Path) -> dict:
    rng = np.random.default_rng(m * 7 + k * 3 + n)
    b = GraphBuilder(f"linear_{m}x{k}x{n}")
    x = b.input("x", (m, k))
    b.output(b.linear(x, rng.normal(0, 1 / np.sqrt(k), (n, k)), rng.normal(0, 0.1, n), name="fc"), "y")
    sample = {"x": rng.uniform(-1, 1, (m, k))}
    q = lower(b.build(), [sample], Precision.parse("w8a16"))
    prog = schedule(q, lanes)
    sim = AcceleratorSim(prog, work / f"l{lanes}_{m}_{k}_{n}")
    try:
        got, cycles = sim.infer({"x": quantize(sample["x"], q.op("x").type.fmt)})
    finally:
        sim.close()
    exact = bool(np.array_equal(got["y"], run_int(q, sample)["y"]))
    ideal = m * k * n / (lanes * lanes)
    aligned = k % lanes == 0 and n % lanes == 0
    return {
        "array": f"{lanes}x{lanes}", "m": m, "k": k, "n": n, "cycles": cycles,
        "ideal_cycles": ideal, "ratio": cycles / ideal, "aligned": aligned, "rtl_matches_golden": exact,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print the results as JSON on the last line")
    ap.add_argument("--quick", action="store_true", help="a few small cases only")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for lanes, cases in (QUICK if args.quick else CASES).items():
            for m, k, n in cases:
                rows.append(run_case(lanes, m, k, n, Path(tmp)))
                print(f"  {rows[-1]['array']} {m}x{k}x{n}: {rows[-1]['cycles']} cycles", file=sys.stderr)
    emit("linear", rows, ["array", "m", "k", "n", "cycles", "ideal_cycles", "ratio", "aligned", "rtl_matches_golden"], args.json)


if __name__ == "__main__":
    main()
