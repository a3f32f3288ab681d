# amaranth: UnusedElaboratable=no
"""Tests of celosia.ir.softmax (golden, stated bound, adversarial rows) and celosia.hw.softmax (RTL == golden)."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest
from amaranth.sim import Simulator
from celosia.hw.softmax import Softmax
from celosia.ir.numerics import Fixed, dequantize, quantize
from celosia.ir.softmax import (
    GOAL_MAX_ABS_ERROR_22,
    GOAL_MAX_SUM_ERROR_22,
    softmax_error_bound,
    softmax_float,
    softmax_int,
    softmax_params,
)

from celosia.errors import HardwareGenerationError

Q10_22 = Fixed(32, 22)
OUT22 = Fixed(24, 22, signed=False)
N = 129


def _check_rows(q, mask, fi, fo, lanes=1, max_len=None):
    """Golden vs float64 on rows: every element within its stated bound; returns (err, sum_err, bound)."""
    y = dequantize(softmax_int(q, mask, fi, fo, lanes, max_len), fo)
    ref = softmax_float(dequantize(q, fi), mask)
    b = softmax_error_bound(q, mask, fi, fo, lanes, max_len)
    err = np.abs(y - ref)
    assert (err <= b).all(), f"bound violated: max excess {(err - b).max():.3g}"
    full = ~np.asarray(mask, bool).all(-1) if mask is not None else np.ones(q.shape[0], bool)
    sum_err = np.abs(y.sum(-1) - 1.0)[full]
    assert (sum_err <= b.sum(-1)[full]).all()
    assert (y <= 1.0).all() and (y >= 0).all()
    return err, sum_err, b, y, ref


# ----------------------------------------------------------------------------- level 2: golden vs float


@pytest.mark.parametrize("sigma", [1.0, 3.0, 8.0])
def test_q22_normal_rows_meet_goals(sigma):
    rng = np.random.default_rng(int(sigma * 10))
    q = quantize(rng.normal(0.0, sigma, (300, N)), Q10_22)
    err, sum_err, b, _, _ = _check_rows(q, None, Q10_22, OUT22)
    # the goals (Edge-MoE figures, real exp in the loop), measured and as a stated bound
    assert err.max() <= GOAL_MAX_ABS_ERROR_22 and b.max() <= GOAL_MAX_ABS_ERROR_22
    assert sum_err.max() <= GOAL_MAX_SUM_ERROR_22
    # units spec: Σp within 2 LSB·√n of 1, max error ≤ 1 LSB + primitive bound
    assert sum_err.max() <= 2 * OUT22.lsb * np.sqrt(N)
    assert err.max() <= 1.5 * OUT22.lsb


@pytest.mark.parametrize("fo", [Fixed(16, 15, signed=False), Fixed(16, 14), Fixed(12, 10, signed=False)], ids=str)
def test_narrow_formats_within_bound(fo):
    fi = Fixed(16, 10)
    rng = np.random.default_rng(7)
    q = quantize(rng.normal(0.0, 3.0, (100, 64)), fi)
    err, _, _b, y, _ = _check_rows(q, None, fi, fo)
    assert err.max() <= 2 * fo.lsb
    assert (y <= min(1.0, fo.max_value)).all()


def test_argmax_never_flips_where_gap_exceeds_bound():
    rng = np.random.default_rng(3)
    q = quantize(rng.normal(0.0, 2.0, (400, 32)), Q10_22)
    fo = Fixed(12, 10, signed=False)  # coarse output: ties possible, flips must not be
    y = softmax_int(q, None, Q10_22, fo)
    ref = softmax_float(dequantize(q, Q10_22))
    b = softmax_error_bound(q, None, Q10_22, fo)
    srt = np.sort(ref, -1)
    gap = srt[:, -1] - srt[:, -2]
    top = ref.argmax(-1)
    checked = 0
    for r in range(q.shape[0]):
        bb = 2 * b[r].max()
        if gap[r] > bb:
            checked += 1
            assert y[r].argmax() == top[r] and (y[r] < y[r, top[r]]).sum() == y.shape[1] - 1
    assert checked > 300


def test_adversarial_rows():
    fi, fo = Q10_22, OUT22
    one = 1 << fo.frac
    # all equal: exactly 1/n each (to the output rounding), for several n
    for n in (1, 2, 3, 7, 129, 1024):
        y = softmax_int(np.full(n, 12345), None, fi, fo, max_len=1024)
        ref = np.full(n, 1.0 / n)
        assert np.all(y == y[0]) and abs(y[0] / one - 1.0 / n) <= softmax_error_bound(
            np.full(n, 12345), None, fi, fo, max_len=1024).max()
        assert np.abs(dequantize(y, fo) - ref).max() <= fo.lsb
    # one huge value: exactly 1.0 and exact zeros
    row = np.zeros(129, dtype=np.int64)
    row[57] = 100 << 22
    y = softmax_int(row, None, fi, fo)
    assert y[57] == one and (np.delete(y, 57) == 0).all()
    # all masked but one: that one is exactly 1.0, masked are 0
    mask = np.ones(129, bool)
    mask[5] = False
    y = softmax_int(np.random.default_rng(0).integers(-(1 << 24), 1 << 24, 129), mask, fi, fo)
    assert y[5] == one and (np.delete(y, 5) == 0).all()
    # fully masked row: all zeros
    assert (softmax_int(np.arange(8), np.ones(8, bool), fi, fo) == 0).all()
    # saturating inputs: min and max codes of the input format
    row = np.array([fi.min_int, fi.max_int, fi.max_int, fi.min_int, 0])
    _check_rows(row[None], None, fi, fo)
    y = softmax_int(row, None, fi, fo)
    assert y[1] == y[2] and abs(int(y[1]) - one // 2) <= 1 and y[0] == y[3] == y[4] == 0
    # a mixed masked row vs float
    rng = np.random.default_rng(11)
    q = quantize(rng.normal(0, 4, (50, 129)), fi)
    mk = rng.random((50, 129)) < 0.3
    mk[0] = True
    _check_rows(q, mk, fi, fo)
    # outputs never exceed 1.0 even when 1.0 is representable and the output format is signed
    y = softmax_int(np.array([0, -(200 << 22)]), None, fi, Fixed(32, 22))
    assert y[0] == one and y[1] == 0


def test_order_independence_within_bound():
    rng = np.random.default_rng(5)
    fi, fo = Q10_22, OUT22
    m_num_exact = 0
    for trial in range(40):
        q = quantize(rng.normal(0, [1, 3, 8][trial % 3], N), fi)
        y0 = softmax_int(q, None, fi, fo)
        b = softmax_error_bound(q, None, fi, fo)
        k = int(rng.integers(1, N))
        yr = np.roll(softmax_int(np.roll(q, k), None, fi, fo), -k)
        yp_idx = rng.permutation(N)
        yp = np.empty(N, np.int64)
        yp[yp_idx] = softmax_int(q[yp_idx], None, fi, fo)
        for other in (yr, yp):
            assert (np.abs(dequantize(other, fo) - dequantize(y0, fo)) <= 2 * b).all()
            m_num_exact += int((other == y0).all())
    assert m_num_exact > 0  # often bit-exact (only the rounding of the rescales differs)


def test_lanes_change_the_recurrence_but_stay_within_bound():
    rng = np.random.default_rng(9)
    q = quantize(rng.normal(0, 3, (50, 128)), Q10_22)
    for lanes in (2, 4):
        _check_rows(q, None, Q10_22, OUT22, lanes=lanes)


def test_parameter_checks():
    with pytest.raises(HardwareGenerationError, match="lanes=0"):
        softmax_params(Q10_22, OUT22, lanes=0)
    with pytest.raises(HardwareGenerationError, match="max_len=0"):
        softmax_params(Q10_22, OUT22, max_len=0)
    with pytest.raises(HardwareGenerationError, match=r"u16\.10 is unsigned"):
        softmax_params(Fixed(16, 10, signed=False), OUT22)
    with pytest.raises(HardwareGenerationError, match=r"s8\.0 is too narrow: 0 fractional bits"):
        softmax_params(Q10_22, Fixed(8, 0))
    with pytest.raises(HardwareGenerationError, match="more than 62"):
        softmax_params(Q10_22, Fixed(40, 36, signed=False))
    with pytest.raises(HardwareGenerationError, match="not a multiple of lanes=2"):
        softmax_int(np.arange(5), None, Q10_22, OUT22, lanes=2)
    with pytest.raises(HardwareGenerationError, match=r"row length 9 is out of range 1\.\.8"):
        softmax_int(np.arange(9), None, Q10_22, OUT22, max_len=8)


# ----------------------------------------------------------------------------- level 1: RTL == golden


def _run_rtl(dut: Softmax, rows, seed, p_idle_in=0.2, p_stall_out=0.3):
    """Stream rows (codes, mask) through ``dut``; return the output codes per row and the flags."""
    L = dut.lanes
    rng = random.Random(seed)
    beats = []
    for codes, mask in rows:
        nb = len(codes) // L
        for b in range(nb):
            beats.append({
                "s": [int(v) for v in codes[b * L:(b + 1) * L]],
                "mask": sum(int(bool(mask[b * L + j])) << j for j in range(L)),
                "first": int(b == 0),
                "last": int(b == nb - 1),
            })
    got: list[tuple[list[int], int, int]] = []

    async def producer(ctx):
        for bt in beats:
            while rng.random() < p_idle_in:
                await ctx.tick()
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.payload, bt)
            await ctx.tick().until(dut.i.ready)
            ctx.set(dut.i.valid, 0)

    async def consumer(ctx):
        for _ in beats:
            while rng.random() < p_stall_out:
                await ctx.tick()
            ctx.set(dut.o.ready, 1)
            (pl,) = await ctx.tick().sample(dut.o.payload).until(dut.o.valid)
            ctx.set(dut.o.ready, 0)
            got.append(([int(pl.p[j]) for j in range(L)], int(pl.first), int(pl.last)))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    k = 0
    for codes, mask in rows:
        nb = len(codes) // L
        out = [v for g in got[k:k + nb] for v in g[0]]
        assert [g[1] for g in got[k:k + nb]] == [1] + [0] * (nb - 1)
        assert [g[2] for g in got[k:k + nb]] == [0] * (nb - 1) + [1]
        exp = softmax_int(np.asarray(codes), np.asarray(mask), dut.in_fmt, dut.out_fmt, L, dut.max_len).tolist()
        assert out == exp, f"RTL != golden for row {codes[:8]}..."
        k += nb
    assert k == len(got)


def _adversarial_rows(fi, L, max_len, rng):
    rows = []
    n = max_len
    rows.append(([fi.max_int] * n, [0] * n))  # all equal, saturated
    r = [0] * n
    r[n // 2] = fi.max_int
    rows.append((r, [0] * n))  # one huge
    mk = [1] * n
    mk[-1] = 0
    rows.append(([rng.randint(fi.min_int, fi.max_int) for _ in range(n)], mk))  # all masked but one
    rows.append(([3] * L, [1] * L))  # fully masked short row
    rows.append(([fi.min_int if j % 2 else fi.max_int for j in range(L)], [0] * L))  # length = lanes
    rows.append((list(range(-n, 0)), [0] * n))  # strictly increasing: a rescale every beat
    return rows


@pytest.mark.parametrize("lanes,seed,p_idle,p_stall", [(1, 1, 0.2, 0.3), (2, 2, 0.2, 0.3), (2, 3, 0.05, 0.7), (1, 4, 0.6, 0.1)])
def test_rtl_matches_golden_with_backpressure(lanes, seed, p_idle, p_stall):
    fi, fo = Fixed(16, 10), Fixed(16, 14, signed=False)
    max_len = 32
    dut = Softmax(fi, fo, lanes=lanes, max_len=max_len)
    rng = random.Random(seed)
    rows = _adversarial_rows(fi, lanes, max_len, rng)
    for _ in range(30):
        nb = rng.randint(1, max_len // lanes)
        sig = rng.choice([1, 3, 8])
        codes = [int(min(max(round(rng.gauss(0, sig) * 2**10), fi.min_int), fi.max_int)) for _ in range(nb * lanes)]
        mask = [int(rng.random() < 0.15) for _ in range(nb * lanes)]
        rows.append((codes, mask))
    rows += _adversarial_rows(fi, lanes, max_len, rng)  # again, after random rows (buffers reused)
    _run_rtl(dut, rows, seed, p_idle, p_stall)


def test_rtl_q22_lanes2():
    dut = Softmax(Q10_22, OUT22, lanes=2, max_len=N + 1)
    rng = np.random.default_rng(4)
    rows = []
    for sig in (1, 8):
        q = quantize(rng.normal(0, sig, N + 1), Q10_22)
        mask = np.zeros(N + 1, int)
        mask[-1] = 1  # 129 scores padded to 130 with one masked element
        rows.append((q.tolist(), mask.tolist()))
    _run_rtl(dut, rows, 7, p_idle_in=0.1, p_stall_out=0.1)


def _timing(B, nrows, buffers=4):
    """Cycles of acceptance and of output beats for back-to-back rows of B scores, ready held high."""
    dut = Softmax(Fixed(16, 10), Fixed(16, 14, signed=False), lanes=1, max_len=B, buffers=buffers)
    rows = [list(range(40, 40 - B, -1)) for _ in range(nrows)]
    accepted, emitted = [], []

    async def tb(ctx):
        ctx.set(dut.o.ready, 1)
        beats = [(v, int(k == 0), int(k == len(r) - 1)) for r in rows for k, v in enumerate(r)]
        sent, cycle = 0, 0
        while len(emitted) < len(beats):
            if sent < len(beats):
                v, f, la = beats[sent]
                ctx.set(dut.i.valid, 1)
                ctx.set(dut.i.payload, {"s": [v], "mask": 0, "first": f, "last": la})
            else:
                ctx.set(dut.i.valid, 0)
            _, _, iv, ir, ov = await ctx.tick().sample(dut.i.valid, dut.i.ready, dut.o.valid)
            if iv and ir:
                accepted.append(cycle)
                sent += 1
            if ov:
                emitted.append(cycle)
            cycle += 1
            assert cycle < 5000

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    return dut, accepted, emitted


def test_rtl_full_throughput_and_latency():
    B, nrows = 64, 4
    dut, accepted, emitted = _timing(B, nrows)
    # back to back: one element per cycle in and out, rows overlapping, fixed latency
    assert accepted == list(range(accepted[0], accepted[0] + B * nrows))
    assert emitted == list(range(emitted[0], emitted[0] + B * nrows))
    for r in range(nrows):
        assert emitted[r * B] - accepted[(r + 1) * B - 1] == dut.latency
    assert dut.latency == 117 and dut.row_overhead == 85  # 16-bit formats, max_len 64


@pytest.mark.parametrize("B,buffers", [(16, 3), (32, 1), (32, 2)])
def test_rtl_period_short_rows_and_few_buffers(B, buffers):
    nrows = 6
    dut, accepted, _ = _timing(B, nrows, buffers)
    starts = [accepted[r * B] for r in range(nrows)]
    per = [b - a for a, b in itertools.pairwise(starts)]
    assert max(per) == max(B, 2 * B + dut.row_overhead - (buffers - 1) * B)
    assert abs((starts[-1] - starts[nrows - 1 - buffers]) / buffers - max(B, (2 * B + dut.row_overhead) / buffers)) < 1


def test_rtl_rows_shorter_than_the_merge_gap():
    """Rows of <= phases beats: their last beats are accepted >= phases + 1 cycles apart."""
    dut, accepted, _ = _timing(4, 6, buffers=8)
    lasts = [accepted[r * 4 + 3] for r in range(6)]
    assert min(b - a for a, b in itertools.pairwise(lasts)) == dut.params.phases + 1


def test_unit_attributes_and_rejections():
    dut = Softmax(Q10_22, OUT22, lanes=2, max_len=130)
    p = softmax_params(Q10_22, OUT22, 2, 130)
    assert dut.rom_bits == p.rom_bits and dut.buffer_bits == 4 * 65 * 2 * 33
    with pytest.raises(HardwareGenerationError, match="lanes=0"):
        Softmax(Q10_22, OUT22, lanes=0)
    with pytest.raises(HardwareGenerationError, match="max_len=0"):
        Softmax(Q10_22, OUT22, max_len=0)
    with pytest.raises(HardwareGenerationError, match="too narrow"):
        Softmax(Q10_22, Fixed(2, 1, signed=True))
    with pytest.raises(HardwareGenerationError, match="buffers=0"):
        Softmax(Q10_22, OUT22, buffers=0)


def test_verilog_is_deterministic():
    from amaranth.back import verilog

    a = verilog.convert(Softmax(Fixed(16, 10), Fixed(16, 14, signed=False), lanes=2, max_len=16), name="softmax_unit")
    b = verilog.convert(Softmax(Fixed(16, 10), Fixed(16, 14, signed=False), lanes=2, max_len=16), name="softmax_unit")
    assert a == b and "module softmax_unit" in a
