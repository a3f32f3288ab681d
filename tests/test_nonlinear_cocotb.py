# amaranth: UnusedElaboratable=no
"""GELU and the ExpNeg / Reciprocal / Rsqrt primitives on Verilator through cocotb.

The ``*_ecp5`` cases build the units as for ECP5 (every product in MULT18X18D blocks with their
own registers and clock enable) and simulate them with a behavioural model of the block.

Each unit runs ``tests/cocotb/stream_unit_tb.py``: a no-gap phase (one beat per cycle, the
documented latency) and a phase with random valid gaps and random / bursty backpressure. Inputs
are random codes plus edge cases; the expected outputs come from the golden models
(:func:`celosia.ir.gelu.gelu_int`, :func:`celosia.ir.approx.exp_neg_int`, ...) and are compared
bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest

from celosia.hw.gelu import Gelu
from celosia.hw.primitives import ExpNeg, Reciprocal, Rsqrt
from celosia.ir import approx
from celosia.ir.gelu import gelu_int
from celosia.ir.numerics import Fixed
from celosia.errors import SimulationError
from celosia.sim.cocotb_runner import run_cocotb

S = Fixed


def U(bits: int, frac: int) -> Fixed:
    return Fixed(bits, frac, signed=False)


N_RANDOM = 600


def _mask(codes, bits: int) -> list[int]:
    return [int(c) & ((1 << bits) - 1) for c in codes]


def _pack(codes: np.ndarray, bits: int, lanes: int) -> list[int]:
    """Pack ``codes`` (length a multiple of ``lanes``) into beats, lane 0 in the low bits."""
    words = []
    m = (1 << bits) - 1
    for k in range(0, len(codes), lanes):
        w = 0
        for j, c in enumerate(codes[k:k + lanes]):
            w |= (int(c) & m) << (j * bits)
        words.append(w)
    return words


def _edges(fmt: Fixed, extra=()) -> np.ndarray:
    e = {fmt.min_int, fmt.min_int + 1, fmt.max_int, fmt.max_int - 1, 0, 1, -1, 2, -2,
         1 << fmt.frac, -(1 << fmt.frac), *extra}
    return np.array(sorted(v for v in e if fmt.min_int <= v <= fmt.max_int), dtype=np.int64)


def _random(fmt: Fixed, rng: np.random.Generator, n: int) -> np.ndarray:
    """Half uniform over the whole range, half log-uniform magnitudes (every exponent)."""
    u = rng.integers(fmt.min_int, fmt.max_int + 1, n // 2)
    e = rng.uniform(0, fmt.bits - (1 if fmt.signed else 0), n - n // 2)
    mag = np.floor(2.0 ** e).astype(np.int64)
    sign = rng.choice([-1, 1], len(mag)) if fmt.signed else np.ones(len(mag), np.int64)
    v = np.clip(sign * mag, fmt.min_int, fmt.max_int)
    return np.concatenate([u, v]).astype(np.int64)


TB_TESTS = ["no_gap_throughput", "random_gaps_backpressure"]


class _Ecp5Target:
    """Just enough of a platform for the generators to pick the ECP5 DSP blocks."""

    family = "ecp5"


def _ecp5_verilog(dut, top: str) -> str:
    """``dut`` as built for ECP5 (MULT18X18D blocks with their own registers) plus a behavioural
    model of the block (tests/data/mult18x18d_model.v)."""
    from pathlib import Path

    from amaranth.back import verilog

    text = verilog.convert(dut, name=top, platform=_Ecp5Target())
    assert "MULT18X18D #(" in text
    return text + "\n" + (Path(__file__).parent / "data" / "mult18x18d_model.v").read_text()


def _run(dut, top, in_port, out_port, inputs, expected, lane_bits, out_signed, tmp_path, seed,
         latency=None, ecp5=False):
    result = run_cocotb(
        _ecp5_verilog(dut, top) if ecp5 else dut, top, "stream_unit_tb", tmp_path,
        params={"in_port": in_port, "out_port": out_port, "inputs": inputs,
                "expected": expected, "latency": dut.latency if latency is None else latency,
                "lane_bits": lane_bits, "out_signed": out_signed, "seed": seed},
    )
    assert sorted(result.tests) == TB_TESTS
    return result


GELU_CASES = [  # (in, out, lanes, ECP5 DSP blocks)
    (S(16, 13), S(16, 13), 1, False),
    (S(16, 12), S(16, 12), 2, False),
    (S(32, 22), S(32, 22), 1, True),
]


@pytest.mark.slow
@pytest.mark.parametrize("fi,fo,lanes,ecp5", GELU_CASES, ids=lambda v: str(v))
def test_gelu_cocotb(fi, fo, lanes, ecp5, tmp_path):
    rng = np.random.default_rng(7 + lanes)
    dut = Gelu(fi, fo, lanes=lanes)
    # Edges: extremes, zero, ±1 ulp, and both sides of every few segment boundaries.
    seg = [k << (fi.frac - 3) for k in range(-40, 41, 3)]
    codes = np.concatenate([_edges(fi, [s + d for s in seg for d in (-1, 0, 1)]),
                            _random(fi, rng, N_RANDOM),
                            np.round(rng.normal(0, 2.0, N_RANDOM // 2) * 2**fi.frac)
                            .clip(fi.min_int, fi.max_int).astype(np.int64)])
    codes = codes[: len(codes) - len(codes) % lanes]
    out = gelu_int(codes, fi, fo, dut.table)
    _run(dut, "gelu_top", "i", "o", _pack(codes, fi.bits, lanes), _pack(out, fo.bits, lanes),
         fo.bits, True, tmp_path, seed=lanes, ecp5=ecp5)


PRIM_CASES = [  # (name, class, golden, in, out, ECP5 DSP blocks)
    ("exp_neg", ExpNeg, approx.exp_neg_int, S(24, 16), U(24, 22), False),
    ("reciprocal", Reciprocal, approx.reciprocal_int, U(24, 12), U(24, 16), False),
    ("rsqrt", Rsqrt, approx.rsqrt_int, U(24, 12), U(24, 16), False),
    ("reciprocal_signed", Reciprocal, approx.reciprocal_int, S(16, 10), S(16, 10), False),
    ("exp_neg_ecp5", ExpNeg, approx.exp_neg_int, S(24, 16), U(24, 22), True),
    ("rsqrt_ecp5", Rsqrt, approx.rsqrt_int, U(24, 12), U(24, 16), True),
]


@pytest.mark.slow
@pytest.mark.parametrize("name,cls,golden,fi,fo,ecp5", PRIM_CASES, ids=[c[0] for c in PRIM_CASES])
def test_primitive_cocotb(name, cls, golden, fi, fo, ecp5, tmp_path):
    rng = np.random.default_rng(sum(map(ord, name)))
    dut = cls(fi, fo)
    # Edges: extremes, 0, ±1, powers of two and their neighbours (normalisation boundaries).
    pow2 = [s * ((1 << k) + d) for k in range(fi.bits) for d in (-1, 0, 1) for s in (1, -1)]
    codes = np.concatenate([_edges(fi, pow2), _random(fi, rng, N_RANDOM)])
    if name.startswith("exp_neg"):  # mostly the meaningful x <= 0 side, a dense band near 0
        codes = np.concatenate([codes, -rng.integers(0, 8 << fi.frac, N_RANDOM // 2)])
    out = golden(codes, fi, fo)
    _run(dut, f"{name}_top", "x", "y", _mask(codes, fi.bits), _mask(out, fo.bits),
         fo.bits, fo.signed, tmp_path, seed=len(name), ecp5=ecp5)


@pytest.mark.slow
def test_testbench_catches_errors(tmp_path):
    """The testbench fails on one wrong output bit and on a wrong documented latency."""
    fi, fo = S(12, 6), U(10, 8)
    dut = ExpNeg(fi, fo)
    codes = np.arange(-300, 5, dtype=np.int64)
    out = _mask(approx.exp_neg_int(codes, fi, fo), fo.bits)
    bad = list(out)
    bad[200] ^= 1
    with pytest.raises(SimulationError, match="mismatch"):
        _run(dut, "exp_neg_top", "x", "y", _mask(codes, fi.bits), bad, fo.bits, False,
             tmp_path / "bit", seed=1)
    with pytest.raises(SimulationError, match="latency"):
        _run(dut, "exp_neg_top", "x", "y", _mask(codes, fi.bits), out, fo.bits, False,
             tmp_path / "lat", seed=1, latency=dut.latency + 1)
