"""Property tests of ir.numerics against exact rational arithmetic (fractions.Fraction)."""

from fractions import Fraction
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from celosia.errors import QuantizationError
from celosia.ir import numerics as nm
from celosia.ir.numerics import Fixed, Overflow, Rounding

ints = st.integers(min_value=-(2**40), max_value=2**40)
shifts = st.integers(min_value=-8, max_value=24)
roundings = st.sampled_from(list(Rounding))
formats = st.builds(
    Fixed, bits=st.integers(2, 32), frac=st.integers(-4, 40), signed=st.just(True)
) | st.builds(Fixed, bits=st.integers(1, 32), frac=st.integers(-4, 40), signed=st.just(False))


def exact_round(q: Fraction, rounding: Rounding) -> int:
    """Reference rounding of a rational to an integer."""
    fl = math.floor(q)
    rem = q - fl
    if rounding is Rounding.FLOOR:
        return fl
    if rem > Fraction(1, 2):
        return fl + 1
    if rem < Fraction(1, 2):
        return fl
    if rounding is Rounding.HALF_UP:
        return fl + 1
    return fl + (fl % 2)  # half to even


def exact_clamp(v: int, fmt: Fixed) -> int:
    return min(max(v, fmt.min_int), fmt.max_int)


@given(ints, shifts, roundings)
def test_shift_round_matches_rational(x, shift, rounding):
    got = int(nm.shift_round(np.array([x]), shift, rounding)[0])
    assert got == exact_round(Fraction(x, 1) / Fraction(2) ** shift, rounding)


@given(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False), formats, roundings)
def test_quantize_matches_rational(value, fmt, rounding):
    got = int(nm.quantize(np.array([value]), fmt, rounding)[0])
    want = exact_clamp(exact_round(Fraction(value) * Fraction(2) ** fmt.frac, rounding), fmt)
    assert got == want


@given(st.integers(-(2**45), 2**45), formats)
def test_wrap_is_modular(x, fmt):
    got = int(nm.wrap(np.array([x]), fmt)[0])
    assert fmt.min_int <= got <= fmt.max_int
    assert (got - x) % (1 << fmt.bits) == 0


@given(st.integers(-(2**45), 2**45), formats)
def test_saturate_clamps(x, fmt):
    assert int(nm.saturate(np.array([x]), fmt)[0]) == exact_clamp(x, fmt)


@given(ints, st.integers(0, 30), formats, roundings)
def test_requantize_is_shift_then_saturate(x, from_frac, fmt, rounding):
    got = int(nm.requantize(np.array([x]), from_frac, fmt, rounding)[0])
    exact = Fraction(x, 2**from_frac) * Fraction(2) ** fmt.frac
    assert got == exact_clamp(exact_round(exact, rounding), fmt)


@given(st.integers(-(2**15), 2**15 - 1), st.integers(-(2**15), 2**15 - 1))
def test_sat_add(a, b):
    fmt = Fixed(16, 8)
    assert int(nm.sat_add(np.array([a]), np.array([b]), fmt)[0]) == exact_clamp(a + b, fmt)


@given(st.integers(-(2**30), 2**30), st.integers(-128, 127), st.integers(-(2**15), 2**15 - 1))
def test_mac_saturates_and_wraps(acc, a, b):
    fmt = Fixed(32, 10)
    assert int(nm.mac(np.array([acc]), np.array([a]), np.array([b]), fmt)[0]) == exact_clamp(acc + a * b, fmt)
    wrapped = int(nm.mac(np.array([acc]), np.array([a]), np.array([b]), fmt, Overflow.WRAP)[0])
    assert (wrapped - (acc + a * b)) % 2**32 == 0


@given(st.floats(min_value=1e-6, max_value=1e6), st.integers(4, 24))
def test_frac_for_range_is_tightest(max_abs, bits):
    frac = nm.frac_for_range(max_abs, bits)
    assert Fraction(2**(bits - 1) - 1) / Fraction(2) ** frac >= Fraction(max_abs)
    assert Fraction(2**(bits - 1) - 1) / Fraction(2) ** (frac + 1) < Fraction(max_abs)


@settings(max_examples=50)
@given(st.integers(1, 5), st.integers(1, 9), st.integers(1, 6), roundings, st.booleans(), st.booleans(),
       st.integers(0, 2**32 - 1))
def test_linear_int_matches_rational(m, k, n, rounding, relu, residual, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(-(2**15), 2**15, size=(m, k))
    w = rng.integers(-128, 128, size=(k, n))
    b = rng.integers(-(2**20), 2**20, size=n)
    r = rng.integers(-(2**15), 2**15, size=(m, n)) if residual else None
    out = Fixed(12, 0)
    got = nm.linear_int(x, w, b, out, 9, rounding, relu, r, 3)
    for i in range(m):
        for j in range(n):
            acc = sum(int(x[i, t]) * int(w[t, j]) for t in range(k)) + int(b[j])
            if residual:
                acc += int(r[i, j]) * 8
            v = exact_clamp(exact_round(Fraction(acc, 2**9), rounding), out)
            assert got[i, j] == (max(v, 0) if relu else v)


def test_format_limits_and_names():
    f = Fixed(8, 4)
    assert (f.min_int, f.max_int, f.lsb, str(f)) == (-128, 127, 1 / 16, "s8.4")
    assert Fixed(8, 0, signed=False).max_int == 255
    with pytest.raises(QuantizationError, match="out of range"):
        Fixed(0, 0)
    with pytest.raises(QuantizationError, match="non-finite"):
        nm.quantize(np.array([np.inf]), f)
    with pytest.raises(QuantizationError, match="non-negative shifts"):
        nm.linear_int(np.zeros((1, 1), int), np.zeros((1, 1), int), np.zeros(1, int), f, -1)


@settings(max_examples=60)
@given(st.integers(1, 4), st.integers(1, 40), st.integers(1, 8), roundings, st.integers(0, 2**32 - 1),
       st.sampled_from([(8, 16), (16, 16), (4, 8)]))
def test_linear_error_bound_holds(m, k, n, rounding, seed, widths):
    """Level 2: the bit-exact Linear stays within the stated bound of the float result."""
    wb, ab = widths
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (m, k))
    w = rng.normal(0, 1 / np.sqrt(k), (k, n))
    b = rng.normal(0, 0.1, n)
    fx = Fixed(ab, nm.frac_for_range(1.0, ab))
    fw = Fixed(wb, nm.frac_for_range(np.abs(w).max(), wb))
    y = x @ w + b
    fy = Fixed(ab, min(nm.frac_for_range(np.abs(y).max(), ab), fx.frac + fw.frac))
    acc = Fixed(40, fx.frac + fw.frac)
    got = nm.linear_int(nm.quantize(x, fx), nm.quantize(w, fw), nm.quantize(b, acc), fy,
                        fx.frac + fw.frac - fy.frac, rounding)
    err = np.abs(nm.dequantize(got, fy) - y)
    assert np.all(err <= nm.linear_error_bound(x, w, fx, fw, fy, rounding) * (1 + 1e-12))
