"""The vector unit (ADD, COPY, MEAN) and its requantizer on the Amaranth simulator, against the
integer semantics of the IR ops they run, and its cycle count against ``VectorUnit.cycles``."""

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.sim import Simulator

from celosia.hw.requant import REQUANT_LATENCY, Requantizer
from celosia.hw.spad import InstructionLayout
from celosia.hw.vector import VectorUnit
from celosia.ir import numerics as nx
from celosia.ir.program import Instruction, Opcode, pack_lanes
from celosia.ir.reduce import mean_constant

L, A, DEPTH = 4, 16, 256
_MODES = [nx.Rounding.FLOOR, nx.Rounding.HALF_UP, nx.Rounding.HALF_EVEN]


def test_requantizer_matches_numerics():
    dut = Requantizer(40, 16)
    rng = np.random.default_rng(0)
    cases = [(int(rng.integers(-2**39, 2**39)) >> int(rng.integers(0, 38)), int(rng.integers(0, 40)),
              int(rng.integers(0, 3)), int(rng.integers(2, 17))) for _ in range(1500)]
    cases += [(v, s, r, 16) for v in range(-7, 8) for s in range(4) for r in range(3)]
    got = []

    async def bench(ctx):
        for v, s, r, ob in cases + [(0, 0, 0, 2)] * REQUANT_LATENCY:
            ctx.set(dut.v, v)
            ctx.set(dut.shift, s)
            ctx.set(dut.rounding, r)
            ctx.set(dut.out_bits, ob)
            await ctx.tick()
            got.append(ctx.get(dut.y))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    for (v, s, r, ob), g in zip(cases, got[REQUANT_LATENCY - 1:]):
        assert g == int(nx.saturate(nx.shift_round(np.array([v]), s, _MODES[r]), nx.Fixed(ob, 0))[0]), (v, s, r, ob)


class _Bench(wiring.Component):
    def __init__(self, consts, max_rows):
        self.vu = VectorUnit(L, A, 8, InstructionLayout, consts, max_rows)
        self.mem = Memory(shape=L * A, depth=DEPTH, init=[])
        super().__init__({})

    def elaborate(self, platform):
        m = Module()
        m.submodules.vu, m.submodules.mem = self.vu, self.mem
        r0, r1, w = self.mem.read_port(), self.mem.read_port(), self.mem.write_port()
        m.d.comb += [r0.addr.eq(self.vu.rd0.addr), r0.en.eq(self.vu.rd0.en), self.vu.rd0.data.eq(r0.data),
                     r1.addr.eq(self.vu.rd1.addr), r1.en.eq(self.vu.rd1.en), self.vu.rd1.data.eq(r1.data),
                     w.addr.eq(self.vu.wr.addr), w.data.eq(self.vu.wr.data), w.en.eq(self.vu.wr.en)]
        return m


def _words(codes):
    return [pack_lanes(row, A) for row in codes.reshape(-1, L)]


def _codes(word):
    out = []
    for lane in range(L):
        v = (word >> (lane * A)) & ((1 << A) - 1)
        out.append(v - (1 << A) if v >> (A - 1) else v)
    return out


def _run(bench, preload: dict[int, int], jobs: list[Instruction]):
    """Run ``jobs`` one after another; returns (memory image, busy cycles of each job)."""
    image, cycles = {}, []

    async def tb(ctx):
        for addr, word in preload.items():
            ctx.set(bench.mem.data[addr], word)
        for ins in jobs:
            ctx.set(bench.vu.job.ins, InstructionLayout.const({k: getattr(ins, k) for k, _ in InstructionLayout}))
            ctx.set(bench.vu.job.start, 1)
            await ctx.tick()
            ctx.set(bench.vu.job.start, 0)
            n = 0
            while True:
                await ctx.tick()
                if not ctx.get(bench.vu.job.busy):
                    break
                n += 1
            cycles.append(n + 1)  # busy was high from the cycle after start until this one
        for addr in range(DEPTH):
            image[addr] = ctx.get(bench.mem.data[addr])

    sim = Simulator(bench)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    return image, cycles


@pytest.mark.parametrize("rows, tiles", [(1, 1), (3, 2), (5, 3)])
def test_add_copy_and_mean(rows, tiles):
    rng = np.random.default_rng(rows * 7 + tiles)
    x = rng.integers(-2**15, 2**15, (rows, tiles * L))
    r = rng.integers(-2**15, 2**15, (rows, tiles * L))
    stride = tiles + 1  # strided operands: one spare word per row
    preload = {}
    for i in range(rows):
        for t in range(tiles):
            preload[i * stride + t] = _words(x[i, t * L:(t + 1) * L])[0]
            preload[100 + i * stride + t] = _words(r[i, t * L:(t + 1) * L])[0]
    c, R = mean_constant(rows)
    jobs = [
        Instruction(opcode=Opcode.ADD, x_addr=0, x_stride=stride, r_addr=100, r_stride=stride, y_addr=150,
                    y_stride=tiles, m=rows, nt=tiles, x_shift=2, res_shift=0, shift=3, rounding=2, out_bits=16),
        Instruction(opcode=Opcode.COPY, x_addr=100, x_stride=stride, y_addr=200, y_stride=tiles, m=rows, nt=tiles,
                    x_shift=1, shift=0, rounding=2, out_bits=12, y_lanes=L - 1),
        Instruction(opcode=Opcode.MEAN, x_addr=0, x_stride=stride, y_addr=240, y_stride=1, m=rows, nt=tiles,
                    p_addr=0, shift=R + 2, rounding=2, out_bits=16),
    ]
    image, cycles = _run(_Bench([c], rows), preload, jobs)
    add = nx.saturate(nx.shift_round((x << 2) + r, 3), nx.Fixed(16, 0))
    copy = nx.saturate(r << 1, nx.Fixed(12, 0))
    copy[:, -1] = 0  # y_lanes = L - 1: the last lane of the last tile is written as zero
    mean = nx.requantize(x.sum(axis=0) * c, R + 2, nx.Fixed(16, 0))
    for i in range(rows):
        for t in range(tiles):
            assert _codes(image[150 + i * tiles + t]) == list(add[i, t * L:(t + 1) * L])
            assert _codes(image[200 + i * tiles + t]) == list(copy[i, t * L:(t + 1) * L])
    for t in range(tiles):
        assert _codes(image[240 + t]) == list(mean[t * L:(t + 1) * L])
    assert cycles == [VectorUnit.instruction_cycles(ins, L) for ins in jobs]
