"""hw.pipeline: sliced products are exact for every width / signedness / constant, at the stated stage."""

from __future__ import annotations

import math
import random

import pytest
from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.sim import Simulator

from celosia.hw.pipeline import CHUNK, Pipeline, Tap


def _run(m: Module, out: Tap, inputs: list[tuple[Signal, list[int]]], n: int) -> list[int]:
    """Drive ``n`` input vectors, one per cycle, and collect ``out`` ``out.stage`` cycles later."""
    o = Signal(out.shape)
    m.d.comb += o.eq(out.value)
    got = []

    async def tb(ctx):
        for k in range(n + out.stage):
            for sig, seq in inputs:
                ctx.set(sig, seq[k] if k < n else 0)
            if k >= out.stage:
                got.append(ctx.get(o))
            await ctx.tick()
    sim = Simulator(m)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    return got


def _slices(width: int, sgn: bool) -> int:
    return 1 if width <= CHUNK + sgn else 1 + _slices(width - CHUNK, sgn)


CASES = [(8, 1, 8, 1, None), (24, 0, 25, 0, None), (37, 0, 27, 0, None), (33, 1, 20, 1, None),
         (18, 1, 35, 1, None), (17, 0, 17, 0, None), (40, 1, 5, 0, None),
         (30, 0, 4, 0, 3 * 2**40 + 5), (30, 1, 4, 0, -987654321), (30, 1, 4, 0, 2**17), (24, 0, 4, 0, 1)]


@pytest.mark.parametrize("wa,sa,wb,sb,const", CASES)
def test_product_exact_and_staged(wa, sa, wb, sb, const):
    m = Module()
    a = Signal(signed(wa) if sa else unsigned(wa))
    b = Signal(signed(wb) if sb else unsigned(wb))
    pipe = Pipeline(m)
    out = pipe.mul("p", Tap(a, 0), Tap(b, 0) if const is None else const)
    nb = 1 if const is None or -(1 << CHUNK) <= const < (1 << CHUNK) else None
    if const is None:
        n = _slices(wa, bool(sa)) * _slices(wb, bool(sb))
        assert out.stage == 2 + math.ceil(math.log2(n))  # operand regs, product regs, adder tree
    elif nb == 1:
        assert out.stage == 2 + math.ceil(math.log2(_slices(wa, bool(sa))))
    rng = random.Random(wa * 100 + wb)

    def rnd(w, s):
        return rng.randrange(-(1 << (w - 1)), 1 << (w - 1)) if s else rng.randrange(1 << w)
    vals = [(rnd(wa, sa), rnd(wb, sb)) for _ in range(40)]
    vals.append((-(1 << (wa - 1)) if sa else (1 << wa) - 1, -(1 << (wb - 1)) if sb else (1 << wb) - 1))
    got = _run(m, out, [(a, [v[0] for v in vals]), (b, [v[1] for v in vals])], len(vals))
    assert got == [x * (y if const is None else const) for x, y in vals]


def test_planning_matches_building_and_alignment():
    def path(pipe, x):
        y = pipe.reg("y", lambda v: v + 1, Tap(x, 0))
        z = pipe.mul("z", y, y)
        return pipe.reg("w", lambda a, b: a - b, z, Tap(x, 0))  # x delayed to z's stage
    plan = path(Pipeline(None), Signal(signed(20)))
    m = Module()
    x = Signal(signed(20))
    built = path(Pipeline(m), x)
    assert plan.stage == built.stage == 1 + 2 + 2 + 1
    seq = [random.Random(k).randrange(-(1 << 19), 1 << 19) for k in range(30)]
    got = _run(m, built, [(x, seq)], len(seq))
    assert got == [(v + 1) ** 2 - v for v in seq]
