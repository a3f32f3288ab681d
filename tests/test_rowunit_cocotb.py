# amaranth: UnusedElaboratable=no
"""Softmax, LayerNorm and RMSNorm on Verilator through cocotb (``tests/cocotb/stream_unit_tb.py``).

Rows: random rows plus adversarial ones (all equal, one huge value, all masked but one, a fully
masked row, saturating inputs, row lengths 1 and max, a strictly increasing row that moves the
maximum every beat). The expected beats come from the golden models (:func:`softmax_int`,
:func:`norm_int`) and are compared bit for bit; the bench runs the rows back to back (the
documented per-row latency, checked on every row) and with random input gaps and random / bursty
output backpressure.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from celosia.hw.norm import LayerNorm, RMSNorm
from celosia.hw.softmax import Softmax
from celosia.ir.norm import norm_int
from celosia.ir.numerics import Fixed
from celosia.ir.softmax import softmax_int
from celosia.sim.cocotb_runner import run_cocotb

TB_TESTS = ["no_gap_throughput", "random_gaps_backpressure"]


def _word(fields: list[tuple[int, int]]) -> int:
    """Pack ``(value, bits)`` fields, the first in the low bits (amaranth layout order)."""
    w, pos = 0, 0
    for v, bits in fields:
        w |= (int(v) & ((1 << bits) - 1)) << pos
        pos += bits
    return w


def _run(dut, top, inputs, expected, rows, lane_bits, out_signed, tmp_path, seed, full_rate=False):
    result = run_cocotb(
        dut, top, "stream_unit_tb", tmp_path,
        params={"in_port": "i", "out_port": "o", "inputs": inputs, "expected": expected,
                "latency": dut.latency, "rows": rows, "full_rate": full_rate,
                "lane_bits": lane_bits, "out_signed": out_signed, "seed": seed},
    )
    assert sorted(result.tests) == TB_TESTS


# ----------------------------------------------------------------------------- softmax


def _softmax_rows(fi: Fixed, L: int, max_len: int, rng: random.Random, n_random: int):
    n = max_len
    rows = [([fi.max_int] * n, [0] * n),  # all equal, saturated
            ([0] * (n // 2) + [fi.max_int] + [0] * (n - n // 2 - 1), [0] * n),  # one huge
            ([rng.randint(fi.min_int, fi.max_int) for _ in range(n)], [1] * (n - 1) + [0]),  # all masked but one
            ([3] * L, [1] * L),  # fully masked, length = lanes
            ([fi.min_int if j % 2 else fi.max_int for j in range(L)], [0] * L),  # length = lanes, saturating
            (list(range(-n, 0)), [0] * n)]  # strictly increasing: the maximum moves every beat
    for _ in range(n_random):
        nb = rng.randint(1, max_len // L)
        sig = rng.choice([1, 3, 8])
        codes = [int(min(max(round(rng.gauss(0, sig) * 2**fi.frac), fi.min_int), fi.max_int)) for _ in range(nb * L)]
        rows.append((codes, [int(rng.random() < 0.15) for _ in range(nb * L)]))
    return rows


@pytest.mark.slow
@pytest.mark.parametrize("lanes", [1, 2])
def test_softmax_cocotb(lanes, tmp_path):
    fi, fo = Fixed(16, 10), Fixed(16, 14, signed=False)
    max_len = 48
    dut = Softmax(fi, fo, lanes=lanes, max_len=max_len)
    rows = _softmax_rows(fi, lanes, max_len, random.Random(lanes), 24)
    inputs, expected, beats = [], [], []
    for codes, mask in rows:
        out = softmax_int(np.array(codes), np.array(mask), fi, fo, lanes, max_len)
        nb = len(codes) // lanes
        beats.append(nb)
        for b in range(nb):
            sl = slice(b * lanes, (b + 1) * lanes)
            flags = [(b == 0, 1), (b == nb - 1, 1)]
            inputs.append(_word([(c, fi.bits) for c in codes[sl]] + [(_word([(k, 1) for k in mask[sl]]), lanes)] + flags))
            expected.append(_word([(v, fo.bits) for v in out[sl]] + flags))
    _run(dut, f"softmax{lanes}_top", inputs, expected, beats, fo.bits, False, tmp_path, seed=lanes)


# ----------------------------------------------------------------------------- LayerNorm / RMSNorm


@pytest.mark.slow
@pytest.mark.parametrize("rms,lanes", [(False, 1), (False, 2), (True, 2)], ids=["layernorm1", "layernorm2", "rmsnorm2"])
def test_norm_cocotb(rms, lanes, tmp_path):
    rng = np.random.default_rng(3 + lanes + 2 * rms)
    fi, fo = Fixed(16, 10), Fixed(16, 12)
    D = 12
    gamma = rng.uniform(0.5, 2.5, D)
    gamma[5] = 2.9  # the spike rows below give t = ±√(D−1)·2.9 > 8: saturates s16.12
    kw = {"lanes": lanes, "gamma_fmt": Fixed(16, 13), "eps": 1e-3}
    dut = RMSNorm(fi, fo, gamma, **kw) if rms else LayerNorm(fi, fo, gamma, rng.uniform(-0.5, 0.5, D), **kw)
    rows = [np.full(D, 37), np.full(D, fi.max_int), np.full(D, fi.min_int),  # all equal, saturating
            np.eye(1, D, 5)[0].astype(np.int64) * fi.max_int,  # one huge
            np.eye(1, D, 5)[0].astype(np.int64) * fi.min_int,
            (rng.normal(100.0, 1.0, D) * 2**fi.frac / 4).clip(fi.min_int, fi.max_int),  # |mean| = 100·std
            np.zeros(D)]
    rows += [rng.integers(fi.min_int, fi.max_int + 1, D) for _ in range(8)]
    rows += [np.round(rng.normal(0, 2.0, D) * 2**fi.frac).clip(fi.min_int, fi.max_int) for _ in range(8)]
    q = np.array(rows, dtype=np.int64)
    out = norm_int(q, dut.params, dut.gamma_codes, dut.beta_codes)
    assert (out == fo.max_int).any() and (out == fo.min_int).any()  # the spike rows saturate
    inputs = [_word([(v, fi.bits) for v in r[b * lanes:(b + 1) * lanes]]) for r in q for b in range(D // lanes)]
    expected = [_word([(v, fo.bits) for v in r[b * lanes:(b + 1) * lanes]]) for r in out for b in range(D // lanes)]
    _run(dut, f"norm{lanes}{int(rms)}_top", inputs, expected, [D // lanes] * len(q), fo.bits, True, tmp_path,
         seed=lanes)
