# amaranth: UnusedElaboratable=no
"""The row unit (Opcode.NORM) on the Amaranth simulator: several LayerNorm / RMSNorm records in one
unit, strided rows, bit-exact against :func:`celosia.ir.norm.norm_int`, and its busy cycles against
``RowUnit.instruction_cycles``."""

import json

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.lib.memory import Memory
from amaranth.sim import Simulator

from celosia.errors import HardwareGenerationError
from celosia.hw.rowunit import MAX_D, NORM_LATENCY, RowUnit
from celosia.hw.spad import InstructionLayout
from celosia.ir.norm import NormRecord, norm_int, norm_params
from celosia.ir.numerics import Fixed, quantize
from celosia.ir.program import Instruction, Opcode, pack_lanes

A, DEPTH = 16, 1024


def _record(D, fi, fo, fg, fb, eps, rms=False, seed=0, name=""):
    rng = np.random.default_rng(seed)
    p = norm_params(D, fi, fo, fg, None if rms else fb, eps, rms=rms)
    g = quantize(rng.uniform(-2.0, 2.0, D), fg)
    b = None if rms else quantize(rng.uniform(-1.0, 1.0, D), fb)
    return NormRecord(p, g, b, name=name)


#: One unit, many ops: LayerNorm and RMSNorm, D a multiple of lanes, equal to lanes, not a
#: multiple and below lanes, different input / output / γ / β formats and eps.
_FIXED = [
    _record(32, Fixed(16, 10), Fixed(16, 12), Fixed(16, 13), Fixed(16, 12), 1e-5, seed=1, name="ln32"),
    _record(13, Fixed(16, 8), Fixed(16, 11), Fixed(16, 14), None, 1e-6, rms=True, seed=2, name="rms13"),
    _record(8, Fixed(12, 6), Fixed(10, 5), Fixed(8, 6), Fixed(12, 9), 1e-3, seed=3, name="ln8"),
    _record(20, Fixed(16, 4), Fixed(16, 9), Fixed(14, 12), Fixed(16, 14), 1e-5, seed=4, name="ln20"),
    _record(5, Fixed(16, 12), Fixed(16, 14), Fixed(16, 14), None, 1e-2, rms=True, seed=5, name="rms5"),
]


class _Bench(wiring.Component):
    def __init__(self, lanes, unit_lanes, records):
        self.lanes = lanes
        self.ru = RowUnit(lanes, A, 10, InstructionLayout, records, unit_lanes=unit_lanes)
        self.mem = Memory(shape=lanes * A, depth=DEPTH, init=[])
        super().__init__({})

    def elaborate(self, platform):
        m = Module()
        m.submodules.ru, m.submodules.mem = self.ru, self.mem
        r0, r1, w = self.mem.read_port(), self.mem.read_port(), self.mem.write_port()
        m.d.comb += [r0.addr.eq(self.ru.rd0.addr), r0.en.eq(self.ru.rd0.en), self.ru.rd0.data.eq(r0.data),
                     r1.addr.eq(self.ru.rd1.addr), r1.en.eq(self.ru.rd1.en), self.ru.rd1.data.eq(r1.data),
                     w.addr.eq(self.ru.wr.addr), w.data.eq(self.ru.wr.data), w.en.eq(self.ru.wr.en)]
        return m


def _codes(word, lanes):
    out = []
    for lane in range(lanes):
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
            ctx.set(bench.ru.job.ins, InstructionLayout.const({k: getattr(ins, k) for k, _ in InstructionLayout}))
            ctx.set(bench.ru.job.start, 1)
            await ctx.tick()
            ctx.set(bench.ru.job.start, 0)
            n = 0
            while True:
                await ctx.tick()
                if not ctx.get(bench.ru.job.busy):
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


def _rows(rng, rows, rec: NormRecord, mean_ratio=0.0):
    """Input rows in the record's format; ``mean_ratio`` sets |mean|/std."""
    f = rec.params.in_fmt
    std = rng.uniform(0.05, 1.0, (rows, 1)) * f.max_value / (6 + mean_ratio)
    mean = mean_ratio * std * rng.choice([-1.0, 1.0], (rows, 1))
    return quantize(rng.normal(0.0, 1.0, (rows, rec.params.D)) * std + mean, f)


def _case(rng, lanes, records, p_addr, rows, mean_ratio, x_addr, y_addr, pad):
    """One NORM instruction on random rows: (preload, instruction, expected output rows)."""
    rec = records[p_addr]
    D = rec.params.D
    nt = -(-D // lanes)
    x = _rows(rng, rows, rec, mean_ratio)
    if rows > 2:  # adversarial rows: constant (var = 0), saturated extremes
        x[0] = rec.params.in_fmt.max_int if rows % 2 else rec.params.in_fmt.min_int // 3
        x[1] = np.where(np.arange(D) % 2, rec.params.in_fmt.min_int, rec.params.in_fmt.max_int)
    xs, ys = nt + pad, nt + (pad + 1) % 3  # strided input and output rows
    preload = {}
    for r in range(rows):
        row = np.zeros(nt * lanes, dtype=np.int64)
        row[:D] = x[r]
        row[D:] = rng.integers(-50, 50, nt * lanes - D) if pad else 0  # junk beyond D must be ignored
        for t in range(nt):
            preload[x_addr + r * xs + t] = pack_lanes(row[t * lanes:(t + 1) * lanes], A)
        for t in range(nt):  # the output region starts dirty
            preload[y_addr + r * ys + t] = pack_lanes(rng.integers(-99, 99, lanes), A)
    ins = Instruction(opcode=Opcode.NORM, x_addr=x_addr, x_stride=xs, y_addr=y_addr, y_stride=ys, m=rows, nt=nt,
                      p_addr=p_addr)
    return preload, ins, norm_int(x, rec.params, rec.gamma, rec.beta)


def _check(image, ins, expected, lanes):
    for r in range(ins.m):
        got = []
        for t in range(ins.nt):
            got += _codes(image[ins.y_addr + r * ins.y_stride + t], lanes)
        D = expected.shape[1]
        assert got[:D] == list(expected[r]), (ins.p_addr, r)
        assert got[D:] == [0] * (len(got) - D), (ins.p_addr, r)  # lanes beyond D written as zero


def _run_plan(rng, lanes, unit_lanes, records, plan):
    """Run one NORM instruction per ``(p_addr, rows, mean_ratio)`` back to back on one unit and
    check every row and every instruction's busy cycles."""
    bench = _Bench(lanes, unit_lanes, records)
    preload, jobs, want = {}, [], []
    x_addr, y_addr = 0, 512
    for k, (p_addr, rows, mean_ratio) in enumerate(plan):
        pre, ins, exp = _case(rng, lanes, records, p_addr, rows, mean_ratio, x_addr, y_addr, pad=k % 3)
        preload.update(pre)
        jobs.append(ins)
        want.append(exp)
        x_addr += rows * ins.x_stride
        y_addr += rows * ins.y_stride
    assert x_addr <= 512 and y_addr <= DEPTH
    image, cycles = _run(bench, preload, jobs)
    for ins, exp in zip(jobs, want):
        _check(image, ins, exp, lanes)
    assert cycles == [RowUnit.instruction_cycles(ins, lanes, unit_lanes) for ins in jobs]
    assert cycles == [bench.ru.cycles(ins) for ins in jobs]


@pytest.mark.parametrize("lanes, unit_lanes", [(8, 2), (8, 8), (8, 4), (8, 1), (4, 1), (4, 2)])
def test_norm_records_bit_exact_and_cycles(lanes, unit_lanes):
    rng = np.random.default_rng(lanes * 10 + unit_lanes)
    plan = [(0, 20, 0.0), (1, 1, 0.0), (2, 7, 0.0), (3, 5, 100.0), (4, 20, 0.0), (0, 2, 1000.0), (1, 9, 30.0),
            (4, 1, 0.0), (2, 3, 100.0)]
    _run_plan(rng, lanes, unit_lanes, list(_FIXED), plan)


@pytest.mark.parametrize("seed", range(6))
def test_random_records(seed):
    """Random records (D from 1, narrow and wide formats, eps, LayerNorm / RMSNorm) and unit shapes."""
    rng = np.random.default_rng(100 + seed)
    lanes = int(rng.choice([2, 4, 8]))
    unit_lanes = int(rng.choice([d for d in (1, 2, 4, 8) if lanes % d == 0]))
    records = []
    for k in range(int(rng.integers(1, 5))):
        D = int(rng.choice([1, 2, 3, lanes, 2 * lanes + 1, int(rng.integers(1, 41))]))
        fmts = []
        for _ in range(4):
            bits = int(rng.integers(4, A + 1))
            fmts.append(Fixed(bits, int(rng.integers(0, bits))))
        fi, fo, fg, fb = fmts
        rms = bool(rng.integers(0, 2))
        records.append(_record(D, fi, fo, fg, fb, float(10.0 ** rng.uniform(-7, -1)), rms=rms, seed=seed * 10 + k))
    plan = [(int(rng.integers(0, len(records))), int(rng.integers(1, 12)), float(rng.choice([0.0, 0.0, 100.0])))
            for _ in range(5)]
    _run_plan(rng, lanes, unit_lanes, records, plan)


def test_single_record_unit():
    """One record: every per-op table is a constant; rows of one beat (B = 1) back to back."""
    rng = np.random.default_rng(7)
    _run_plan(rng, 8, 8, [_FIXED[4]], [(0, 20, 0.0), (0, 1, 0.0), (0, 6, 100.0)])
    _run_plan(rng, 8, 4, [_FIXED[2]], [(0, 13, 0.0), (0, 2, 1000.0)])


class _VerilatorBench(_Bench):
    """The unit and a preloaded scratchpad, with the job ports and a read-back port at the top."""

    def __init__(self, lanes, unit_lanes, records, image: dict[int, int]):
        self.ru = RowUnit(lanes, A, 10, InstructionLayout, records, unit_lanes=unit_lanes)
        self.mem = Memory(shape=lanes * A, depth=DEPTH, init=[image.get(a, 0) for a in range(DEPTH)])
        wiring.Component.__init__(self, {"start": In(1), "ins": In(InstructionLayout), "busy": Out(1),
                                         "dump_addr": In(10), "dump_data": Out(lanes * A)})

    def elaborate(self, platform):
        m = super().elaborate(platform)
        d = self.mem.read_port()
        m.d.comb += [self.ru.job.start.eq(self.start), self.ru.job.ins.eq(self.ins), self.busy.eq(self.ru.job.busy),
                     d.addr.eq(self.dump_addr), self.dump_data.eq(d.data)]
        return m


@pytest.mark.slow
def test_verilator(tmp_path):
    """The same instructions on Verilator (through cocotb): bit-exact rows and exact busy cycles."""
    from celosia.sim.cocotb_runner import run_cocotb

    lanes, unit_lanes = 8, 2
    rng = np.random.default_rng(5)
    plan = [(0, 20, 0.0), (1, 3, 0.0), (2, 7, 100.0), (3, 5, 0.0), (4, 11, 0.0), (0, 1, 1000.0)]
    preload, jobs, want = {}, [], []
    x_addr, y_addr = 0, 512
    for k, (p_addr, rows, mean_ratio) in enumerate(plan):
        pre, ins, exp = _case(rng, lanes, _FIXED, p_addr, rows, mean_ratio, x_addr, y_addr, pad=k % 3)
        preload.update(pre)
        jobs.append(ins)
        want.append(exp)
        x_addr += rows * ins.x_stride
        y_addr += rows * ins.y_stride
    expected = []
    for ins, exp in zip(jobs, want):
        D = exp.shape[1]
        for r in range(ins.m):
            row = np.zeros(ins.nt * lanes, dtype=np.int64)
            row[:D] = exp[r]
            for t in range(ins.nt):
                expected.append([ins.y_addr + r * ins.y_stride + t, pack_lanes(row[t * lanes:(t + 1) * lanes], A)])
    dut = _VerilatorBench(lanes, unit_lanes, _FIXED, preload)
    words = [InstructionLayout.const({k: getattr(i, k) for k, _ in InstructionLayout}).as_value().value for i in jobs]
    stim = tmp_path / "stimulus.json"
    stim.write_text(json.dumps({"jobs": words, "cycles": [dut.ru.cycles(i) for i in jobs], "expected": expected}))
    result = run_cocotb(dut, "rowunit_top", "rowunit_tb", tmp_path, params={"file": str(stim)})
    assert result.tests == ["norm_jobs"]


def test_cycles_formula():
    ins = Instruction(opcode=Opcode.NORM, m=17, nt=4)
    # one row per nt·lanes/unit_lanes cycles in steady state, plus one row (the first row's statistics)
    assert RowUnit.instruction_cycles(ins, 8, 2) == 18 * 16 + NORM_LATENCY + 1
    assert RowUnit.instruction_cycles(ins, 8) == 18 * 4 + NORM_LATENCY + 3


def test_scheduler_cost_matches_the_unit():
    """The performance model's copy of the timing contract (celosia.ir.binding) is the unit's."""
    from celosia.ir import binding

    assert binding.NORM_LATENCY == NORM_LATENCY
    for m, nt, lanes, unit_lanes in [(1, 1, 8, 8), (17, 4, 8, 2), (3, 5, 4, 1), (20, 2, 16, 4)]:
        ins = Instruction(opcode=Opcode.NORM, m=m, nt=nt)
        assert binding.norm_cycles(ins, lanes, unit_lanes) == RowUnit.instruction_cycles(ins, lanes, unit_lanes)


def test_rejects_bad_configurations():
    with pytest.raises(HardwareGenerationError, match="unit_lanes"):
        RowUnit(8, A, 10, InstructionLayout, _FIXED, unit_lanes=3)
    with pytest.raises(HardwareGenerationError, match="no norm records"):
        RowUnit(8, A, 10, InstructionLayout, [])
    with pytest.raises(HardwareGenerationError, match="wider than act_bits"):
        RowUnit(8, 12, 10, InstructionLayout, _FIXED[:1])
    odd = _record(16, Fixed(16, 10), Fixed(16, 12), Fixed(16, 13), Fixed(16, 12), 1e-5)
    odd = NormRecord(norm_params(16, Fixed(16, 10), Fixed(16, 12), Fixed(16, 13), Fixed(16, 12), 1e-5, z_bits=24),
                     odd.gamma, odd.beta)
    with pytest.raises(HardwareGenerationError, match="rsqrt parameters"):
        RowUnit(8, A, 10, InstructionLayout, [_FIXED[0], odd])
    long = _record(MAX_D + 1, Fixed(16, 10), Fixed(16, 12), Fixed(16, 13), None, 1e-5, rms=True)
    with pytest.raises(HardwareGenerationError, match="longer than"):
        RowUnit(8, A, 10, InstructionLayout, [long])
    with pytest.raises(HardwareGenerationError, match="not a NormRecord"):
        RowUnit(8, A, 10, InstructionLayout, [_FIXED[0].params])
    with pytest.raises(HardwareGenerationError, match="β"):
        NormRecord(_FIXED[0].params, _FIXED[0].gamma, None)
    with pytest.raises(HardwareGenerationError, match="γ has 3 codes"):
        NormRecord(_FIXED[1].params, [1, 2, 3])
