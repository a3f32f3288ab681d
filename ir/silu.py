"""SiLU (``x·σ(x)``, a.k.a. swish): float reference and bit-exact integer semantics.

The integer form uses the same split as the GELU unit: ``SiLU(x) = ReLU(x) − δ(|x|)`` with
``δ(a) = a·σ(−a) = a / (1 + e^a)`` for ``a ≥ 0`` (true for both signs of ``x``). ``δ`` is read
from a table sampled every ``h = 2^-s`` and interpolated linearly::

    a   = |x|                                  codes, frac fi
    i   = a >> (fi − s);  r = a − (i << (fi − s))
    d   = T[i] + shift_round((T[i+1] − T[i])·r, fi − s)     (T[i] = 0 beyond the table)
    y   = requantize(ReLU(x)·2^(F−fi) − d·2^(F−Ft), F, out_fmt)      F = max(fi, Ft)

with ``T[i] = round_half_even(δ(i·h)·2^Ft)``, ``Ft = out.frac + 4``, ``s`` the coarsest step whose
interpolation error ``h²/8·max|δ''|`` is at most a quarter LSB of the output (never finer
than the input's LSB), and the table long enough that ``δ < 2^-(Ft+1)`` past its end.

**Stated bound** (against float SiLU of the dequantized input, no saturation)::

    |y − SiLU(x)| ≤ h²/8·max|δ''| + 2^-Ft + δ_tail + lsb_out/2

(:func:`silu_error_bound`; ``max|δ''| = 1/2`` at ``a = 0``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from celosia.ir import numerics as nx_
from celosia.ir.numerics import Fixed

__all__ = ["silu_float", "SiluTable", "silu_table", "silu_int", "silu_error_bound"]

_D2_MAX = 0.5  # max |δ''(a)| over a >= 0, attained at a = 0 (δ'' = −2σ(1−σ) + aσ(1−σ)(1−2σ), σ = σ(−a))
_EXTRA = 4


def silu_float(x) -> np.ndarray:
    """Float64 ``x·σ(x)`` (computed without overflow for large |x|)."""
    x = np.asarray(x, dtype=np.float64)
    return x * 0.5 * (1.0 + np.tanh(0.5 * x))


def _delta(a) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return a * 0.5 * (1.0 - np.tanh(0.5 * a))


@dataclass(frozen=True)
class SiluTable:
    """The δ table of one (input, output) format pair."""

    in_fmt: Fixed
    out_fmt: Fixed
    step_bits: int
    table_frac: int
    values: tuple[int, ...]

    @property
    def h(self) -> float:
        """The sampling step ``2^-s``."""
        return 2.0**-self.step_bits

    @property
    def tail(self) -> float:
        """Largest δ beyond the table's end."""
        end = len(self.values) * self.h
        return float(_delta(max(end, 1.3)))  # δ decreases beyond its maximum at a ≈ 1.28

    @property
    def rom_bits(self) -> int:
        """Table size in bits (entries × width)."""
        return len(self.values) * max(int(max(self.values)).bit_length(), 1)


@lru_cache(maxsize=64)
def silu_table(in_fmt: Fixed, out_fmt: Fixed) -> SiluTable:
    """Build (cached) the δ table for a format pair."""
    ft = out_fmt.frac + _EXTRA
    s = math.ceil((out_fmt.frac + 2 + math.log2(_D2_MAX / 8)) / 2)
    s = min(s, in_fmt.frac)
    h = 2.0**-s
    # table end: δ(a) < 2^-(ft+1) for every a past it, and no further than the largest |x|
    a = 1.3
    while _delta(a) >= 2.0 ** -(ft + 1):
        a += 0.25
    a = min(a, max(abs(in_fmt.min_value), in_fmt.max_value) + h)
    n = int(math.ceil(a / h)) + 2
    values = nx_.quantize(_delta(np.arange(n) * h), Fixed(min(ft + 8, 62), ft))
    return SiluTable(in_fmt, out_fmt, s, ft, tuple(int(v) for v in values))


def silu_int(codes, in_fmt: Fixed, out_fmt: Fixed) -> np.ndarray:
    """Bit-exact SiLU of integer codes (see the module docstring)."""
    t = silu_table(in_fmt, out_fmt)
    x = np.asarray(codes, dtype=np.int64)
    a = np.abs(x)
    sh = in_fmt.frac - t.step_bits
    T = np.asarray(t.values + (0, 0), dtype=np.int64)
    i = a >> np.int64(sh) if sh > 0 else a << np.int64(-sh)
    r = a - (i << np.int64(sh)) if sh > 0 else np.zeros_like(a)
    inside = i < len(t.values) - 1
    ic = np.where(inside, i, 0)
    d = T[ic] + nx_.shift_round((T[ic + 1] - T[ic]) * r, max(sh, 0))
    d = np.where(inside, d, 0)
    F = max(in_fmt.frac, t.table_frac)
    acc = (np.maximum(x, 0) << np.int64(F - in_fmt.frac)) - (d << np.int64(F - t.table_frac))
    return nx_.requantize(acc, F, out_fmt)


def silu_error_bound(in_fmt: Fixed, out_fmt: Fixed) -> float:
    """The stated max |silu_int − SiLU| (absolute, output units) for a format pair."""
    t = silu_table(in_fmt, out_fmt)
    return t.h**2 / 8 * _D2_MAX + 2.0**-t.table_frac + t.tail + out_fmt.lsb / 2
