"""Mean over one axis (mean pooling over tokens): float and bit-exact integer semantics.

The integer form sums the codes exactly, multiplies once by ``c = round(2^R / n)``, an unsigned
constant of at most 17 bits (one DSP operand), and rounds once (half to even, saturating) to the
output format::

    y = requantize(Σ x_i · c, frac_x + R, out_fmt)        R = 16 + ceil(log2 n)

**Stated bound** (against the float mean of the dequantized codes): ``|mean|·|c·n/2^R − 1| +
lsb_out/2``; for a power-of-two ``n`` the constant is exact and the bound is ``lsb_out/2``.
"""

from __future__ import annotations

import math

import numpy as np

from celosia.ir import numerics as nx_
from celosia.ir.numerics import Fixed

__all__ = ["mean_float", "mean_int", "mean_constant", "mean_error_bound"]


def mean_constant(n: int) -> tuple[int, int]:
    """``(c, R)``: the reciprocal of ``n`` as ``c / 2^R`` with ``c < 2^17``."""
    r = 16 + math.ceil(math.log2(n)) if n > 1 else 0
    return round((1 << r) / n), r


def mean_float(x: np.ndarray, axis: int, keepdims: bool) -> np.ndarray:
    """Float64 mean of ``x`` over ``axis``."""
    return np.mean(np.asarray(x, np.float64), axis=axis, keepdims=keepdims)


def mean_int(codes: np.ndarray, in_fmt: Fixed, out_fmt: Fixed, axis: int, keepdims: bool) -> np.ndarray:
    """Bit-exact mean of integer codes over ``axis`` (see the module docstring)."""
    codes = np.asarray(codes, np.int64)
    c, r = mean_constant(codes.shape[axis])
    total = codes.sum(axis=axis, keepdims=keepdims)
    return nx_.requantize(total * c, in_fmt.frac + r, out_fmt)


def mean_error_bound(codes: np.ndarray, in_fmt: Fixed, out_fmt: Fixed, axis: int) -> float:
    """The stated bound on ``|dequantize(mean_int) − mean of the dequantized codes|``."""
    n = np.asarray(codes).shape[axis]
    c, r = mean_constant(n)
    top = float(np.max(np.abs(np.mean(nx_.dequantize(codes, in_fmt), axis=axis)), initial=0.0))
    return top * abs(c * n / 2**r - 1) + out_fmt.lsb / 2
