# amaranth: UnusedElaboratable=no
"""Tests of celosia.ir.norm (golden vs float64, stated bound) and celosia.hw.norm (RTL == golden)."""

from __future__ import annotations

import random

import numpy as np
import pytest
from amaranth.sim import Simulator
from celosia.hw.norm import LayerNorm, RMSNorm
from celosia.ir.norm import (
    layernorm_float,
    layernorm_int,
    norm_error_bound,
    norm_int,
    norm_params,
    norm_rel_error,
    rmsnorm_float,
    rmsnorm_int,
)
from celosia.ir.numerics import Fixed, dequantize, quantize

from celosia.errors import HardwareGenerationError

EPS = 1e-5


def _rows(rng, rows: int, D: int, fmt: Fixed, mean_ratio: float = 0.0) -> np.ndarray:
    """Rows with std in [0.02, 0.5]·range/… and |mean| = mean_ratio·std, quantized to ``fmt``."""
    top = fmt.max_value
    std = rng.uniform(0.3, 1.0, (rows, 1)) * top / (3 + mean_ratio + 3)
    mean = mean_ratio * std * rng.choice([-1.0, 1.0], (rows, 1))
    x = rng.normal(0.0, 1.0, (rows, D)) * std + mean
    return quantize(x, fmt)


def _check(rms: bool, fi: Fixed, fo: Fixed, fg: Fixed, fb: Fixed, D: int, mean_ratio: float, seed: int):
    rng = np.random.default_rng(seed)
    q = _rows(rng, 40, D, fi, mean_ratio)
    g = quantize(rng.uniform(-2.0, 2.0, D), fg)
    b = quantize(rng.uniform(-1.0, 1.0, D), fb)
    x, gd, bd = dequantize(q, fi), dequantize(g, fg), dequantize(b, fb)
    if rms:
        p = norm_params(D, fi, fo, fg, None, EPS, rms=True)
        y = rmsnorm_int(q, fi, fo, g, fg, EPS)
        ref = rmsnorm_float(x, gd, EPS)
        t = x / np.sqrt((x * x).mean(-1, keepdims=True) + EPS)
    else:
        p = norm_params(D, fi, fo, fg, fb, EPS)
        y = layernorm_int(q, fi, fo, g, fg, b, fb, EPS)
        ref = layernorm_float(x, gd, bd, EPS)
        mu = x.mean(-1, keepdims=True)
        t = (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + EPS)
    ok = (ref <= fo.max_value) & (ref >= fo.min_value)
    err = np.abs(dequantize(y, fo) - ref)[ok]
    assert ok.mean() > 0.95
    assert np.all(err <= norm_error_bound(p, np.broadcast_to(gd, t.shape), t)[ok])
    assert err.max() <= norm_error_bound(p)  # the scalar worst case
    return err, p


@pytest.mark.parametrize("rms", [False, True], ids=["layernorm", "rmsnorm"])
@pytest.mark.parametrize("mean_ratio", [0.0, 100.0], ids=["mean0", "mean100std"])
@pytest.mark.parametrize("fmt", [(Fixed(16, 10), Fixed(16, 12)), (Fixed(16, 8), Fixed(16, 11)),
                                 (Fixed(24, 16), Fixed(24, 18))], ids=lambda f: f"{f[0]}->{f[1]}")
def test_golden_vs_float_within_bound(rms, mean_ratio, fmt):
    fi, fo = fmt
    fg = Fixed(fo.bits, fo.bits - 3)
    err, p = _check(rms, fi, fo, fg, fo, 512, mean_ratio, seed=1)
    if fo.bits == 16:
        # the bound itself is ≤ 1 output LSB at 16-bit formats (|γ| ≤ 2 here)
        assert norm_error_bound(p, 2.0) <= fo.lsb
        assert err.max() <= fo.lsb


def test_bound_does_not_depend_on_mean():
    # no cancellation: the stated bound has no |mean| term, and the measured error at |mean| = 100·std
    # is as small as at zero mean
    fi, fo = Fixed(24, 12), Fixed(16, 12)
    e0, _ = _check(False, fi, fo, Fixed(16, 13), fo, 256, 0.0, 3)
    e1, _ = _check(False, fi, fo, Fixed(16, 13), fo, 256, 100.0, 3)
    assert e1.max() <= 0.51 * fo.lsb and e0.max() <= 0.51 * fo.lsb


def test_rel_error_and_eps_quantization():
    p = norm_params(64, Fixed(16, 10), Fixed(16, 12), Fixed(16, 13), Fixed(16, 12), EPS)
    assert norm_rel_error(p) < 1.1e-7
    e_q = p.eps_code * 2.0 ** -(2 * 10 + 2 * p.k)
    assert abs(e_q - EPS) <= EPS * 2.0**-20
    assert p.eps_code >= 2**20


def test_all_equal_row_gives_beta_and_eps_only():
    fi, fo, fg = Fixed(16, 10), Fixed(16, 12), Fixed(16, 13)
    D = 16
    g = quantize(np.linspace(-1, 1, D), fg)
    b = quantize(np.linspace(-0.5, 0.5, D), fo)
    q = np.full((3, D), 0, dtype=np.int64)
    q[1] = 1234
    q[2] = fi.min_int
    y = layernorm_int(q, fi, fo, g, fg, b, fo, EPS)
    assert np.array_equal(y, np.broadcast_to(b, y.shape))
    # var = 0 → rstd = 1/√eps: a row with one outlier of one LSB
    q2 = np.zeros((1, D), dtype=np.int64)
    q2[0, 0] = 1
    ref = layernorm_float(dequantize(q2, fi), dequantize(g, fg), dequantize(b, fo), EPS)
    yy = dequantize(layernorm_int(q2, fi, fo, g, fg, b, fo, EPS), fo)
    assert np.all(np.abs(yy - np.clip(ref, fo.min_value, fo.max_value)) <= fo.lsb)


def test_parameter_checks():
    f = Fixed(16, 10)
    with pytest.raises(HardwareGenerationError, match="D=0"):
        norm_params(0, f, f, f, f, EPS)
    with pytest.raises(HardwareGenerationError, match="eps"):
        norm_params(8, f, f, f, f, 0.0)
    with pytest.raises(HardwareGenerationError, match="unsigned"):
        norm_params(8, Fixed(16, 10, signed=False), f, f, f, EPS)
    with pytest.raises(HardwareGenerationError, match="lanes=0"):
        LayerNorm(f, f, np.ones(8), np.zeros(8), lanes=0)
    with pytest.raises(HardwareGenerationError, match="D = 0"):
        RMSNorm(f, f, np.ones(0))
    with pytest.raises(HardwareGenerationError, match="D=6 is not a multiple of lanes=4"):
        RMSNorm(f, f, np.ones(6), lanes=4)
    with pytest.raises(HardwareGenerationError, match="z_bits"):
        RMSNorm(f, f, np.ones(4), z_bits=7)
    with pytest.raises(HardwareGenerationError, match="rsqrt"):
        RMSNorm(f, f, np.ones(4), z_bits=40, rsqrt_frac=40)  # rsqrt primitive too wide


# ----------------------------------------------------------------------------- level 1: RTL == golden


def _simulate(dut, rows: np.ndarray, seed: int, gaps: bool = True, stall: float = 0.4):
    L = dut.lanes
    beats = [list(map(int, r[j * L:(j + 1) * L])) for r in rows for j in range(len(r) // L)]
    out = []
    rnd = random.Random(seed)

    async def producer(ctx):
        for bt in beats:
            while gaps and rnd.random() < 0.3:
                await ctx.tick()
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.payload, bt)
            await ctx.tick().until(dut.i.ready)
            ctx.set(dut.i.valid, 0)

    async def consumer(ctx):
        for _ in range(len(beats)):
            while rnd.random() < stall:
                await ctx.tick()
            ctx.set(dut.o.ready, 1)
            (pl,) = await ctx.tick().sample(dut.o.payload).until(dut.o.valid)
            ctx.set(dut.o.ready, 0)
            out.extend(int(v) for v in pl)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    return np.asarray(out, dtype=np.int64).reshape(rows.shape)


def _golden(dut, q):
    return norm_int(q, dut.params, dut.gamma_codes, dut.beta_codes)


def _adversarial(fi: Fixed, D: int, rng) -> np.ndarray:
    rows = [np.full(D, 37), np.full(D, fi.min_int), np.full(D, fi.max_int),
            np.where(np.arange(D) % 2 == 0, fi.max_int, fi.min_int),
            rng.integers(fi.min_int, fi.max_int + 1, D)]
    r = np.full(D, fi.max_int - 3)
    r[0] += 1
    rows.append(r)  # |mean| ≫ std
    return np.stack(rows).astype(np.int64)


RTL_CASES = {
    # name: (in, out, gamma, beta, D, eps); |γ| up to 3 with t up to √D: some outputs saturate
    "s12.6-D12": (Fixed(12, 6), Fixed(12, 8), Fixed(12, 9), Fixed(10, 8), 12, 1e-3),
    "s16.10-D24": (Fixed(16, 10), Fixed(16, 12), Fixed(16, 13), Fixed(16, 12), 24, EPS),
}


@pytest.mark.parametrize("case", list(RTL_CASES))
@pytest.mark.parametrize("lanes", [1, 2])
@pytest.mark.parametrize("rms", [False, True], ids=["layernorm", "rmsnorm"])
def test_rtl_matches_golden(rms, lanes, case):
    fi, fo, fg, fb, D, eps = RTL_CASES[case]
    rng = np.random.default_rng(10 + lanes + 2 * rms + 4 * D)
    g = rng.uniform(-3.0, 3.0, D)
    g[0] = 2.9
    b = rng.uniform(-1.0, 1.0, D)
    kw = {"lanes": lanes, "gamma_fmt": fg, "eps": eps}
    dut = RMSNorm(fi, fo, g, **kw) if rms else LayerNorm(fi, fo, g, b, beta_fmt=fb, **kw)
    spikes = np.zeros((2, D), dtype=np.int64)
    spikes[0, 0], spikes[1, 0] = fi.max_int, fi.min_int  # t = ±√(D−1) or ±√D at γ ≈ 2.9: saturates
    q = np.concatenate([_adversarial(fi, D, rng), spikes, _rows(rng, 4, D, fi), _rows(rng, 2, D, fi, 100.0)])
    y = _simulate(dut, q, seed=lanes + 2 * rms)
    assert np.array_equal(y, _golden(dut, q))
    assert (y == fo.max_int).any() and (y == fo.min_int).any()


@pytest.mark.parametrize("rms", [False, True], ids=["layernorm", "rmsnorm"])
def test_rtl_row_length_one(rms):
    fi, fo = Fixed(10, 4), Fixed(10, 6)
    kw = {"gamma_fmt": Fixed(8, 6), "eps": 0.01}
    dut = RMSNorm(fi, fo, [1.5], **kw) if rms else LayerNorm(fi, fo, [1.5], [-0.25], **kw)
    q = np.array([[0], [1], [-1], [fi.max_int], [fi.min_int], [100]], dtype=np.int64)
    y = _simulate(dut, q, seed=5)
    assert np.array_equal(y, _golden(dut, q))
    if not rms:
        assert np.all(y == quantize(-0.25, fo))


def test_rtl_16bit_lanes2_and_cycles():
    """16-bit formats, no gaps, output always ready: measured cycles per row and latency == the attributes."""
    rng = np.random.default_rng(7)
    fi, fo = Fixed(16, 10), Fixed(16, 12)
    D = 16
    dut = LayerNorm(fi, fo, rng.uniform(0.5, 1.5, D), rng.uniform(-0.5, 0.5, D), lanes=2,
                    gamma_fmt=Fixed(16, 14), eps=EPS)
    q = np.concatenate([_rows(rng, 2, D, fi, 100.0), _rows(rng, 1, D, fi)])
    L = dut.lanes
    beats = [list(map(int, r[j * L:(j + 1) * L])) for r in q for j in range(D // L)]
    acc_cycles, out_cycles, out = [], [], []

    async def tb(ctx):
        ctx.set(dut.o.ready, 1)
        cyc, k = 0, 0
        while len(out) < q.size:
            if k < len(beats):
                ctx.set(dut.i.valid, 1)
                ctx.set(dut.i.payload, beats[k])
            else:
                ctx.set(dut.i.valid, 0)
            _, _, iv, ir, ov, op = await ctx.tick().sample(dut.i.valid, dut.i.ready, dut.o.valid, dut.o.payload)
            if iv and ir:
                acc_cycles.append(cyc)
                k += 1
            if ov:
                out_cycles.append(cyc)
                out.extend(int(v) for v in op)
            cyc += 1

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    y = np.asarray(out, dtype=np.int64).reshape(q.shape)
    assert np.array_equal(y, _golden(dut, q))
    nb = D // L
    # latency: last input beat of row 0 accepted → first output beat of row 0 valid
    assert out_cycles[0] - acc_cycles[nb - 1] == dut.latency
    # cycles per row (steady state, two row banks): start of row k → start of row k + 1
    assert acc_cycles[nb] - acc_cycles[0] == dut.cycles_per_row
    assert acc_cycles[2 * nb] - acc_cycles[nb] == dut.cycles_per_row
    assert dut.cycles_per_row == nb + dut.sum_latency + dut.row_latency + dut.rsqrt.latency + 2


@pytest.mark.parametrize("frac", [10, 12, 15])
def test_16bit_worst_case_bound_below_one_lsb(frac):
    fo = Fixed(16, frac)
    for rms in (False, True):
        p = norm_params(4096, Fixed(16, 10), fo, Fixed(16, 13), None if rms else fo, EPS, rms=rms)
        assert norm_error_bound(p, 2.0) < fo.lsb
