# amaranth: UnusedElaboratable=no
"""The attention unit (ATTENTION on the scratchpad) on Verilator through the ctypes harness.

Two builds (one per engine configuration), each holding many attention records run one after
another on one scratchpad: vit-digits' shape (Tq = Tk = 17, 4 heads, E = F = 8, packed, 8 lanes,
engine 8 lanes × 1 row), grouped-query 4/2 and 4/1, causal (with and without GQA), split
``(H, T, E)`` layouts, strided operands, a query block longer than the keys and the reverse,
single-position jobs, q/k/v taken in place from a fused QKV projection (heads side by side or
interleaved), and E = 4 in 8-lane words (two heads per word, 8-bit formats, engine 2
lanes × 2 rows). For every instruction:

* every output element equals :func:`celosia.ir.attention.attention_int` bit for bit, the lanes
  past a tensor's width are written as zero and no other lane of the scratchpad changes;
* ``busy`` stays high for exactly :func:`celosia.ir.attention.attention_unit_cycles` cycles and
  the engine finished within that budget (no overrun);
* the contract's schedule (:func:`celosia.ir.attention_timing.attention_timeline`) at the
  engine's own latencies reproduces every pass and every output beat of the RTL to the cycle,
  with latencies within :data:`~celosia.ir.attention_timing.LATENCY_BOUND` (the budget's
  derivation holds).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from pathlib import Path

import numpy as np
import pytest
from amaranth.hdl import Module, Mux
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from celosia.errors import CelosiaError, GraphError, HardwareGenerationError
from celosia.hw.attention_unit import AttentionUnit
from celosia.hw.spad import InstructionLayout
from celosia.hw.verilog import write_verilog
from celosia.ir.attention import (AttentionConfig, AttentionRecord, OperandLayout, attention_int,
                                  attention_unit_cycles)
from celosia.ir.attention_timing import (LATENCY_BOUND, EngineLatencies, attention_blocks, attention_timeline,
                                         natural_boundary)
from celosia.ir.numerics import Fixed
from celosia.ir.program import Instruction, Opcode, pack_lanes
from celosia.sim.harness import VerilatedDesign

DEPTH, ADDR_BITS = 4096, 12


class _Bench(wiring.Component):
    """The unit on a scratchpad with a host port; the engine's stream handshakes as probes."""

    def __init__(self, unit: AttentionUnit):
        self.unit = unit
        word = unit.lanes * unit.act_bits
        super().__init__({"host_addr": In(ADDR_BITS), "host_wdata": In(word), "host_we": In(1),
                          "host_rdata": Out(word), "start": In(1), "p_addr": In(12), "busy": Out(1),
                          "overrun": Out(1), "k_fire": Out(1), "v_fire": Out(1), "o_fire": Out(1)})

    def elaborate(self, platform):
        m = Module()
        u = self.unit
        m.submodules.unit = u
        m.submodules.mem = mem = Memory(shape=u.lanes * u.act_bits, depth=DEPTH, init=[])
        r0, r1, rh = mem.read_port(), mem.read_port(), mem.read_port()
        w = mem.write_port(granularity=u.act_bits)
        m.d.comb += [r0.addr.eq(u.rd0.addr), r0.en.eq(u.rd0.en), u.rd0.data.eq(r0.data),
                     r1.addr.eq(u.rd1.addr), r1.en.eq(u.rd1.en), u.rd1.data.eq(r1.data),
                     rh.addr.eq(self.host_addr), self.host_rdata.eq(rh.data),
                     w.addr.eq(Mux(self.host_we, self.host_addr, u.wr.addr)),
                     w.data.eq(Mux(self.host_we, self.host_wdata, u.wr.data)),
                     w.en.eq(Mux(self.host_we, -1, u.wr.en.replicate(u.lanes) & u.wr.lane_en)),
                     u.job.start.eq(self.start), u.job.ins.p_addr.eq(self.p_addr), self.busy.eq(u.job.busy),
                     self.overrun.eq(u.overrun)]
        e = u.engine
        for name in ("k", "v", "o"):
            s = getattr(e, name)
            m.d.comb += getattr(self, f"{name}_fire").eq(s.valid & s.ready)
        return m


# ---------------------------------------------------------------------------------- layouts
class _Placer:
    """Places operands one after another in the scratchpad (with a spare word between them)."""

    def __init__(self, lanes: int):
        self.lanes, self.next = lanes, 0

    def packed(self, heads: int, seq: int, width: int, extra: int = 0) -> OperandLayout:
        stride = math.ceil(heads * width / self.lanes) + extra
        return self._take(OperandLayout(self.next, stride, 0, width), seq * stride)

    def split(self, heads: int, seq: int, width: int, extra: int = 0) -> OperandLayout:
        stride = math.ceil(width / self.lanes) + extra
        return self._take(OperandLayout(self.next, stride, seq, 0), heads * seq * stride)

    def _take(self, lay, words):
        self.next += words + 1
        assert self.next <= DEPTH
        return lay


def _record(lanes, cfg, heads, kv, tq, tk, causal=False, split=False, extra=0, name=""):
    p = _Placer(lanes)
    lay = p.split if split else p.packed
    return AttentionRecord(heads, kv, tq, tk, causal, lay(heads, tq, cfg.e, extra), lay(kv, tk, cfg.e, extra),
                           lay(kv, tk, cfg.f, extra), lay(heads, tq, cfg.f, extra), name=name)


def _fused(lanes, cfg, heads, seq, interleaved: bool, name=""):
    """q, k and v of one fused ``(T, 3·H·E)`` projection (E = F): per row ``[q | k | v]`` or, with
    ``interleaved``, ``[q_0 k_0 v_0 q_1 k_1 v_1 …]``; the output goes to its own tensor."""
    E, L = cfg.e, lanes
    stride = 3 * heads * E // L
    if interleaved:
        q, k, v = (OperandLayout(i * E // L, stride, 0, 3 * E) for i in range(3))
    else:
        q, k, v = (OperandLayout(i * heads * E // L, stride, 0, E) for i in range(3))
    out = OperandLayout(seq * stride + 1, heads * E // L, 0, E)
    return AttentionRecord(heads, heads, seq, seq, False, q, k, v, out, name=name)


def _elements(lay: OperandLayout, x: np.ndarray, lanes: int) -> dict[tuple[int, int], int]:
    """``(word, lane) -> code`` of a ``(heads, T, W)`` tensor in ``lay``."""
    out = {}
    H, T, W = x.shape
    for h in range(H):
        for t in range(T):
            base = lay.addr + (t + h * lay.head_rows) * lay.stride
            for e in range(W):
                c = h * lay.head_cols + e
                out[(base + c // lanes, c % lanes)] = int(x[h, t, e])
    return out


def _pad_lanes(rec: AttentionRecord, cfg, lanes: int) -> set[tuple[int, int]]:
    """Lanes past the output tensor's width in the words that hold its last column."""
    lay = rec.out
    width = (rec.heads - 1) * lay.head_cols + cfg.f if lay.head_cols else cfg.f
    if width % lanes == 0:
        return set()
    rows = rec.heads * rec.seq_q if lay.head_rows else rec.seq_q
    last = (width - 1) // lanes
    return {(lay.addr + r * lay.stride + last, j) for r in range(rows) for j in range(width % lanes, lanes)}


def _codes(word: int, lanes: int, bits: int) -> list[int]:
    out = []
    for j in range(lanes):
        v = (word >> (j * bits)) & ((1 << bits) - 1)
        out.append(v - (1 << bits) if v >> (bits - 1) else v)
    return out


def _gruns(fires: np.ndarray, rows: int) -> list[tuple[int, int]]:
    """Passes from a stream's fire cycles: one beat every ``rows`` cycles, held ``rows`` cycles."""
    idx = np.flatnonzero(fires)
    out, s, p = [], int(idx[0]), int(idx[0])
    for i in idx[1:]:
        if i > p + rows:
            out.append((s, p + rows - 1))
            s = int(i)
        p = int(i)
    out.append((s, p + rows - 1))
    return out


# ---------------------------------------------------------------------------------- the runs
class _Run:
    """One Verilator build of a unit for ``records``; runs each record on random data."""

    def __init__(self, cfg: AttentionConfig, lanes: int, act_bits: int, records, build_dir: Path, seed: int):
        self.cfg, self.lanes, self.bits, self.records = cfg, lanes, act_bits, records
        self.unit = AttentionUnit(lanes, act_bits, ADDR_BITS, InstructionLayout, records, cfg)
        verilog = write_verilog(_Bench(self.unit), build_dir / "attention_unit_bench.v", "attention_unit_bench")
        self.dut = VerilatedDesign.build([verilog], "attention_unit_bench", build_dir / "verilator")
        self.dut.reset()
        self.rng = np.random.default_rng(seed)
        self.results = [self._run(i, r) for i, r in enumerate(records)]

    def _codes(self, fmt: Fixed, shape):
        hi = min((1 << (fmt.bits - 1)) - 1, 3000)
        return self.rng.integers(-hi, hi + 1, shape)

    def _run(self, index: int, rec: AttentionRecord) -> dict:
        cfg, L, A, dut = self.cfg, self.lanes, self.bits, self.dut
        q = self._codes(cfg.q_fmt, (rec.heads, rec.seq_q, cfg.e))
        k = self._codes(cfg.k_fmt, (rec.kv_heads, rec.seq_k, cfg.e))
        v = self._codes(cfg.v_fmt, (rec.kv_heads, rec.seq_k, cfg.f))
        attrs = {"causal": rec.causal, "score_fmt": cfg.score_fmt, "scale": cfg.scale}
        y = attention_int(q[None], k[None], v[None], None, attrs, cfg.q_fmt, cfg.k_fmt, cfg.v_fmt, cfg.out_fmt,
                          tile=cfg.tile)[0]
        # every word gets a random background; the operands go over it
        image = {a: [int(c) for c in self.rng.integers(-(1 << (A - 1)), 1 << (A - 1), L)] for a in range(DEPTH)}
        for lay, x in ((rec.q, q), (rec.k, k), (rec.v, v)):
            for (a, j), c in _elements(lay, x, L).items():
                image[a][j] = c
        dut.set("host_we", 1)
        for a in range(DEPTH):
            dut.set("host_addr", a)
            dut.set("host_wdata", pack_lanes(image[a], A))
            dut.tick()
        dut.set("host_we", 0)
        budget = attention_unit_cycles(rec, cfg)
        n = budget + 64
        start = np.zeros(n, np.int64)
        start[0] = 1
        trace = dut.run_vectors({"start": start, "p_addr": index}, ["busy", "overrun", "k_fire", "v_fire", "o_fire"])
        after = {}
        for a in range(DEPTH):
            dut.set("host_addr", a)
            dut.tick()
            after[a] = _codes(dut.get("host_rdata"), L, A)
        expected = {a: list(w) for a, w in image.items()}
        for (a, j), c in _elements(rec.out, y, L).items():
            expected[a][j] = c
        for a, j in _pad_lanes(rec, cfg, L):
            expected[a][j] = 0
        busy = trace["busy"].astype(int)
        return {"record": rec, "after": after, "expected": expected, "budget": budget,
                "busy": int(busy[1:].argmin()) if not busy[-1] else None, "overrun": int(trace["overrun"][-1]),
                "passes": sorted(_gruns(trace["k_fire"], cfg.rows) + _gruns(trace["v_fire"], cfg.rows)),
                "o_beats": np.flatnonzero(trace["o_fire"]).tolist()}


def _model_events(rec, cfg, lat: EngineLatencies):
    tl = attention_timeline(rec, cfg, lat)
    passes = [(s, e) for _, _, s, e in tl["passes"]]
    beats = [t for a, b in zip(tl["o_first"], tl["o_last"]) for t in range(a, b + 1)]
    return passes, beats


def _fit_latencies(run: _Run, guess: EngineLatencies):
    """Engine latencies near ``guess`` at which the contract's schedule reproduces every run."""
    deltas = sorted(itertools.product(range(-2, 3), repeat=4), key=lambda d: sum(map(abs, d)))
    for d in deltas:
        lat = EngineLatencies(*(g + x for g, x in zip((guess.score, guess.softmax, guess.rescale, guess.output), d)))
        if all(_model_events(r["record"], run.cfg, lat) == (r["passes"], r["o_beats"]) for r in run.results):
            return lat
    return None


_D16, _S16 = Fixed(16, 12), Fixed(16, 10)
#: vit-digits' engine: E = F = 8, 8 lanes × 1 row, 16-bit formats.
VIT = AttentionConfig(e=8, f=8, lanes=8, rows=1, q_fmt=_D16, k_fmt=_D16, v_fmt=_D16, score_fmt=_S16,
                      out_fmt=_D16, scale=8 ** -0.5, max_len=64)
#: E = F = 4 in 8-lane words, 8-bit formats, 2 lanes × 2 rows (blocks of 4 queries), max_len 1024.
_D8 = Fixed(8, 5)
NARROW = AttentionConfig(e=4, f=4, lanes=2, rows=2, q_fmt=_D8, k_fmt=_D8, v_fmt=_D8, score_fmt=Fixed(8, 4),
                         out_fmt=_D8, scale=0.5, max_len=1024)
#: The widest engine the timing bound covers: 18-bit formats (a 17-bit score fraction: the
#: longest ExpNeg), max_len 65536 (the longest Reciprocal), E = 16 ≠ F = 8, in 4-lane words.
_D18 = Fixed(18, 14)
WIDE = AttentionConfig(e=16, f=8, lanes=4, rows=1, q_fmt=_D18, k_fmt=_D18, v_fmt=_D18, score_fmt=Fixed(18, 13),
                       out_fmt=_D18, scale=0.3, max_len=65536)
#: The engine latencies these configurations were measured at (the fit starts here).
_MEASURED = {"vit": EngineLatencies(12, 24, 8, 32), "narrow": EngineLatencies(10, 24, 7, 32),
             "wide": EngineLatencies(12, 25, 8, 33)}


def _vit_records():
    L, c = 8, VIT
    return [
        _record(L, c, 4, 4, 17, 17, name="vit-digits"),
        _record(L, c, 4, 2, 17, 17, name="gqa 4/2"),
        _record(L, c, 4, 4, 17, 17, causal=True, name="causal"),
        _record(L, c, 4, 4, 17, 17, split=True, name="split"),
        _record(L, c, 4, 2, 24, 24, causal=True, split=True, extra=2, name="split causal gqa, strided"),
        _record(L, c, 4, 1, 33, 33, extra=3, name="mqa, strided"),
        _record(L, c, 2, 2, 1, 1, name="one position"),
        _record(L, c, 4, 4, 5, 40, name="few queries"),
        _record(L, c, 4, 4, 40, 8, causal=True, name="few keys, causal"),
        _fused(L, c, 4, 17, interleaved=False, name="fused qkv [q | k | v]"),
        _fused(L, c, 4, 17, interleaved=True, name="fused qkv, heads interleaved"),
    ]


def _narrow_records():
    L, c = 8, NARROW
    return [
        _record(L, c, 4, 4, 17, 17, name="E=4 packed: two heads a word"),
        _record(L, c, 4, 2, 9, 21, name="E=4 gqa"),
        _record(L, c, 2, 1, 19, 19, causal=True, name="E=4 causal mqa"),
        _record(L, c, 4, 4, 11, 11, split=True, name="E=4 split: lanes past F are zero"),
        _record(L, c, 1, 1, 7, 7, extra=1, name="one head: lanes past 4 are zero, strided"),
        _record(L, c, 4, 4, 1, 3, name="one position"),
        _fused(L, c, 4, 9, interleaved=False, name="E=4 fused qkv [q | k | v]"),
    ]


def _wide_records():
    L, c = 4, WIDE
    return [
        _record(L, c, 4, 4, 9, 9, name="E=16, F=8 packed"),
        _record(L, c, 4, 2, 13, 13, causal=True, split=True, name="split causal gqa"),
        _record(L, c, 2, 1, 6, 35, extra=1, name="mqa, strided"),
    ]


_BUILDS = {"vit": (VIT, _vit_records, 8, 16), "narrow": (NARROW, _narrow_records, 8, 8),
           "wide": (WIDE, _wide_records, 4, 18)}


@pytest.fixture(scope="module", params=list(_BUILDS))
def run(request, tmp_path_factory):
    cfg, records, lanes, act_bits = _BUILDS[request.param]
    records = records()
    r = _Run(cfg, lanes, act_bits, records, tmp_path_factory.mktemp(f"attention_unit_{request.param}"),
             seed=len(records))
    r.name = request.param
    yield r
    r.dut.close()


def test_outputs_bit_exact_and_nothing_else_written(run):
    for r in run.results:
        name = r["record"].name
        for a in range(DEPTH):
            assert r["after"][a] == r["expected"][a], f"{name}: word {a}"


def test_busy_is_the_timing_contract(run):
    for i, r in enumerate(run.results):
        rec = r["record"]
        assert r["busy"] == r["budget"] == run.unit.cycles(Instruction(opcode=Opcode.ATTENTION, p_addr=i)), rec.name
        assert not r["overrun"], rec.name


def test_contract_schedule_is_the_engines(run):
    lat = _fit_latencies(run, _MEASURED[run.name])
    assert lat is not None, "no engine latencies near the measured ones reproduce the RTL's passes and outputs"
    for got, bound in zip((lat.score, lat.softmax, lat.rescale, lat.output),
                          (LATENCY_BOUND.score, LATENCY_BOUND.softmax, LATENCY_BOUND.rescale, LATENCY_BOUND.output)):
        assert got <= bound, (lat, LATENCY_BOUND)


# ---------------------------------------------------------------------------------- no RTL
def test_blocks_and_gated_boundaries():
    vit = _record(8, VIT, 4, 4, 17, 17)
    assert attention_blocks(vit, VIT) == [17] * 12                     # 4 groups × 3 blocks of 8 positions
    causal = _record(8, VIT, 4, 2, 17, 17, causal=True)                # blocks of 4 positions (2 heads a group)
    assert attention_blocks(causal, VIT) == [4, 8, 12, 16, 17] * 2
    # a block's QK passes must outlast loading the next Q block (8 rows × E = 64 beats)
    assert not natural_boundary(7, VIT) and natural_boundary(8, VIT) and natural_boundary(17, VIT)
    # cycles grow with the work and are a pure function of the numbers
    assert attention_unit_cycles(vit, VIT) < attention_unit_cycles(_record(8, VIT, 4, 4, 34, 34), VIT)
    assert attention_unit_cycles(vit, VIT) == attention_unit_cycles(_record(8, VIT, 4, 4, 17, 17, extra=5), VIT)


def test_rejects_bad_records_and_configs():
    rec = _record(8, VIT, 4, 4, 17, 17)
    with pytest.raises(HardwareGenerationError, match="no attention records"):
        AttentionUnit(8, 16, ADDR_BITS, InstructionLayout, [], VIT)
    with pytest.raises(GraphError, match="6 query heads are not a multiple of 4"):
        AttentionUnit(8, 16, ADDR_BITS, InstructionLayout, [_record(8, VIT, 6, 4, 4, 4)], VIT)
    with pytest.raises(HardwareGenerationError, match="sequence lengths 65 .* outside 1..64"):
        AttentionUnit(8, 16, ADDR_BITS, InstructionLayout, [_record(8, VIT, 4, 4, 65, 65)], VIT)
    with pytest.raises(HardwareGenerationError, match="q_fmt=.* wider than act_bits=8"):
        AttentionUnit(8, 8, ADDR_BITS, InstructionLayout, [rec], VIT)
    wide = dataclasses.replace(VIT, score_fmt=Fixed(20, 12))
    with pytest.raises(HardwareGenerationError, match="score_fmt=.* wider than 18 bits"):
        AttentionUnit(8, 16, ADDR_BITS, InstructionLayout, [rec], wide)
    far = AttentionRecord(4, 4, 17, 17, False, rec.q, rec.k, rec.v, OperandLayout(4090, 4, 0, 8), name="far")
    with pytest.raises(HardwareGenerationError, match="record 0 \\('far'\\): operand o reaches word"):
        AttentionUnit(8, 16, ADDR_BITS, InstructionLayout, [far], VIT)
    assert issubclass(HardwareGenerationError, CelosiaError)
