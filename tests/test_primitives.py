# amaranth: UnusedElaboratable=no
"""Tests of celosia.ir.approx (golden vs float64, stated bounds) and celosia.hw.primitives (RTL == golden)."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from amaranth.sim import Simulator
from celosia.hw.primitives import ExpNeg, Reciprocal, Rsqrt
from celosia.ir import approx
from celosia.ir.numerics import Fixed

from celosia.errors import HardwareGenerationError

U = lambda b, f: Fixed(b, f, signed=False)
S = Fixed


def _err_lsb(out, ref, fmt):
    return np.abs(out.astype(np.float64) * fmt.lsb - ref) / fmt.lsb


# ------------------------------------------------------------------ golden vs float64
EXP_CASES = [  # (in, out, exhaustive)
    (S(16, 10), U(16, 15), True),
    (S(16, 12), U(24, 22), True),
    (S(12, 6), U(10, 8), True),
    (S(24, 16), U(24, 22), False),
    (S(24, 20), U(23, 22), False),
]


@pytest.mark.parametrize("fin,fout,exhaustive", EXP_CASES, ids=lambda v: str(v))
def test_exp_neg_golden_within_bound(fin, fout, exhaustive):
    rng = np.random.default_rng(1)
    if exhaustive:
        codes = np.arange(fin.min_int, 1, dtype=np.int64)
    else:  # dense random, with a band near 0 where the output is large
        codes = np.concatenate([rng.integers(fin.min_int, 1, 200_000),
                                rng.integers(-(1 << (fin.frac + 3)), 1, 100_000)])
    out = approx.exp_neg_int(codes, fin, fout)
    ref = np.exp(codes * fin.lsb)
    err = _err_lsb(out, ref, fout)
    bound = approx.exp_neg_error_bound(fin, fout)
    assert bound <= 1.1
    assert err.max() <= bound, (err.max(), bound)
    assert out.min() >= 0 and out.max() <= min(fout.max_int, 1 << fout.frac)
    # monotonic non-decreasing in x
    order = np.argsort(codes, kind="stable")
    assert np.all(np.diff(out[order]) >= 0)


def test_exp_neg_edges():
    fin, fout = S(16, 10), U(24, 22)
    out = approx.exp_neg_int(np.array([0, 5, fin.max_int, fin.min_int, -1]), fin, fout)
    assert out[0] == out[1] == out[2] == 1 << 22  # exp(0) = 1, positives treated as 0
    assert out[3] == 0
    # no integer bit: 1.0 saturates to max_int
    assert approx.exp_neg_int(np.array([0]), fin, U(22, 22))[0] == (1 << 22) - 1


RECIP_CASES = [
    (U(16, 8), U(16, 8), True),
    (S(16, 10), S(16, 10), True),
    (U(12, 4), U(16, 15), True),
    (U(14, 14), U(18, 6), True),
    (U(24, 12), U(24, 16), False),
    (S(24, 20), U(24, 8), False),
]


def _positive_codes(fin, exhaustive, rng):
    if exhaustive:
        return np.arange(1, fin.max_int + 1, dtype=np.int64)
    # log-uniform over the whole range so every exponent is covered densely
    e = rng.uniform(0, math.log2(fin.max_int), 300_000)
    return np.clip(np.round(2.0**e), 1, fin.max_int).astype(np.int64)


@pytest.mark.parametrize("kind", ["reciprocal", "rsqrt"])
@pytest.mark.parametrize("fin,fout,exhaustive", RECIP_CASES, ids=lambda v: str(v))
def test_recip_rsqrt_golden_within_bound(kind, fin, fout, exhaustive):
    rng = np.random.default_rng(2)
    codes = _positive_codes(fin, exhaustive, rng)
    x = codes * fin.lsb
    if kind == "reciprocal":
        out, ref = approx.reciprocal_int(codes, fin, fout), 1.0 / x
        lsb, rel = approx.reciprocal_error_bound(fin, fout)
    else:
        out, ref = approx.rsqrt_int(codes, fin, fout), 1.0 / np.sqrt(x)
        lsb, rel = approx.rsqrt_error_bound(fin, fout)
    assert lsb <= 2.0
    ok = ref <= fout.max_value
    err = _err_lsb(out, ref, fout)
    assert err[ok].max() <= lsb
    # the finer per-input statement: |out - ref| <= lsb/2 + rel·ref
    assert np.all(np.abs(out * fout.lsb - ref)[ok] <= 0.5 * fout.lsb + rel * ref[ok] * (1 + 1e-12))
    # saturated inputs give max_int, and x <= 0 gives max_int
    assert np.all(out[~ok] >= min(fout.max_int, np.floor(fout.max_value / fout.lsb)))
    fn = approx.reciprocal_int if kind == "reciprocal" else approx.rsqrt_int
    nonpos = np.array([0, fin.min_int]) if fin.signed else np.array([0])
    assert np.all(fn(nonpos, fin, fout) == fout.max_int)


def test_tables_from_formula():
    p = approx.exp_neg_params(S(16, 10), U(24, 22))
    t = approx.exp_neg_table(p)
    assert len(t) == 128 and t[0] == 1 << p.W
    assert all(abs(v - 2 ** (-k / 128) * 2**p.W) <= 0.5 for k, v in enumerate(t))
    q = approx.reciprocal_params(U(16, 8), U(16, 8))
    for k, (r, s) in enumerate(approx.reciprocal_table(q)):
        assert abs(r - 2**q.Ws / (1 + k / 64)) <= 0.5 and 0 <= s < 1 << q.dbits
    q = approx.rsqrt_params(U(16, 8), U(16, 8))
    tab = approx.rsqrt_table(q)
    assert len(tab) == 128
    for j, (r, s) in enumerate(tab):
        a = (1 + (j % 64) / 64) * (2 if j >= 64 else 1)
        assert abs(r - 2**q.Ws / math.sqrt(a)) <= 0.5 and 0 <= s < 1 << q.dbits


@pytest.mark.parametrize(
    "make",
    [
        lambda: ExpNeg(U(16, 8), U(16, 15)),  # unsigned input
        lambda: ExpNeg(S(16, 8), U(16, 15), table_bits=13),
        lambda: ExpNeg(S(16, 8), U(8, 0)),  # no fractional output bits
        lambda: ExpNeg(S(8, 4), U(4, 2), table_bits=6),  # table wider than f
        lambda: Reciprocal(U(6, 2), U(16, 8), table_bits=6),  # input too narrow for the table
        lambda: Rsqrt(S(6, 2), U(16, 8), table_bits=5),
        lambda: Reciprocal(U(16, 8), U(60, 8)),  # intermediates too wide
        lambda: Rsqrt(U(16, 8), U(16, 8), guard_bits=0),
    ],
)
def test_rejects_impossible_parameters(make):
    with pytest.raises(HardwareGenerationError) as ei:
        make()
    assert any(ch.isdigit() for ch in ei.value.message) and ei.value.hint


def test_narrow_table_message_names_numbers():
    with pytest.raises(HardwareGenerationError, match=r"5 magnitude bits.*table_bits=6"):
        Reciprocal(S(6, 2), U(16, 8), table_bits=6)


# ------------------------------------------------------------------ RTL == golden
def _simulate(dut, codes, *, ready_p: float, gap_p: float, seed: int):
    """Drive ``codes`` into ``dut.x`` and collect ``dut.y`` with random valid gaps and backpressure.

    Returns the outputs and the cycle of each output (relative to the first input's acceptance).
    """
    rng = random.Random(seed)
    got: list[int] = []
    cycles: list[int] = []
    accepted: list[int] = []
    clock = [0]

    async def counter(ctx):
        async for _ in ctx.tick():
            clock[0] += 1

    async def producer(ctx):
        for c in codes:
            while rng.random() < gap_p:
                await ctx.tick()
            ctx.set(dut.x.valid, 1)
            ctx.set(dut.x.payload, int(c))
            await ctx.tick().until(dut.x.ready)
            accepted.append(clock[0])
            ctx.set(dut.x.valid, 0)

    async def consumer(ctx):
        while len(got) < len(codes):
            ready = rng.random() < ready_p
            ctx.set(dut.y.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(dut.y.valid, dut.y.payload)
            if valid and ready:
                got.append(payload)
                cycles.append(clock[0])

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_process(counter)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    return np.array(got, dtype=np.int64), accepted, cycles


def _edge_codes(fin: Fixed, extra=()):
    codes = {0, 1, -1, 2, fin.min_int, fin.max_int, fin.min_int + 1, fin.max_int - 1, *extra}
    for k in range(fin.bits):
        for v in ((1 << k), (1 << k) - 1, (1 << k) + 1, -(1 << k)):
            codes.add(v)
    return sorted(c for c in codes if fin.min_int <= c <= fin.max_int)


RTL_CASES = [
    # (component, golden, in, out, kwargs)
    (ExpNeg, approx.exp_neg_int, S(16, 10), U(24, 22), {}),
    (ExpNeg, approx.exp_neg_int, S(24, 16), U(23, 22), {"table_bits": 6, "guard_bits": 4}),
    (ExpNeg, approx.exp_neg_int, S(8, 3), U(9, 8), {"table_bits": 3}),
    (Reciprocal, approx.reciprocal_int, U(16, 8), U(16, 8), {}),
    (Reciprocal, approx.reciprocal_int, S(24, 12), U(24, 16), {}),
    (Reciprocal, approx.reciprocal_int, U(10, 10), S(12, 2), {"table_bits": 4}),
    (Rsqrt, approx.rsqrt_int, U(16, 8), U(16, 8), {}),
    (Rsqrt, approx.rsqrt_int, S(24, 15), U(24, 16), {}),
    (Rsqrt, approx.rsqrt_int, U(9, 0), U(12, 11), {"table_bits": 3}),
]


@pytest.mark.parametrize("idx", range(len(RTL_CASES)),
                         ids=[f"{c[0].__name__}_{c[2]}_{c[3]}" for c in RTL_CASES])
def test_rtl_matches_golden(idx):
    cls, golden, fin, fout, kw = RTL_CASES[idx]
    dut = cls(fin, fout, **kw)
    rng = np.random.default_rng(100 + idx)
    if cls is ExpNeg:
        # dense near 0, plus inputs whose output is exactly 0
        rnd = np.concatenate([rng.integers(fin.min_int, 1, 150),
                              rng.integers(-(1 << (fin.frac + 2)), 1, 150)])
        deep = [-(math.ceil((fout.frac + 2) / math.log2(math.e) * 2**fin.frac))]
        edges = _edge_codes(fin, deep)
    else:
        rnd = rng.integers(max(fin.min_int, -5), fin.max_int + 1, 300)
        edges = _edge_codes(fin)
    codes = np.concatenate([np.array(edges, dtype=np.int64), rnd])
    want = golden(codes, fin, fout, **kw)
    got, _, _ = _simulate(dut, codes, ready_p=0.6, gap_p=0.2, seed=idx)
    bad = np.nonzero(got != want)[0]
    assert bad.size == 0, [(int(codes[b]), int(want[b]), int(got[b])) for b in bad[:8]]
    if cls is ExpNeg:
        assert (want == 0).any()  # the flush-to-zero path was exercised


@pytest.mark.parametrize("cls", [ExpNeg, Reciprocal, Rsqrt])
def test_full_throughput_and_latency(cls):
    fin, fout = (S(16, 10), U(24, 22)) if cls is ExpNeg else (U(16, 8), U(16, 8))
    dut = cls(fin, fout)
    codes = np.arange(-60, 0) if cls is ExpNeg else np.arange(1, 61)
    got, accepted, cycles = _simulate(dut, codes, ready_p=1.0, gap_p=0.0, seed=0)
    assert np.array_equal(got, (approx.exp_neg_int if cls is ExpNeg else
                                approx.reciprocal_int if cls is Reciprocal else approx.rsqrt_int)(codes, fin, fout))
    assert np.all(np.diff(accepted) == 1) and np.all(np.diff(cycles) == 1)  # II = 1
    assert cycles[0] - accepted[0] == dut.latency
    assert dut.rom_bits == dut.params.rom_bits > 0
