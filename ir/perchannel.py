"""Per-output-channel weight formats for Linear: choice of formats and bit-exact semantics.

With per-channel quantization, row ``n`` of a Linear weight ``(out, in)`` has its own
fractional bits ``f_n`` (the finest that holds ``max|w[n, :]|`` in ``weight_bits``), so
small rows keep their resolution. Accumulator column ``n`` then carries ``fx + f_n``
fractional bits; the bias of channel ``n`` is stored there, and the requantizing shift is
per column::

    acc[:, n] = x · w[n]ᵀ + bias[n] (+ residual[:, n] << (fx + f_n − f_res))
    y[:, n]   = saturate(shift_round(acc[:, n], fx + f_n − f_y, rounding), out_fmt)   (then ReLU)

The weight Const keeps a nominal per-tensor format (the coarsest ``f_n``) in its type and
the per-row fractional bits in ``attrs["channel_frac"]``; its codes are per row. The
stated bound is :func:`celosia.ir.numerics.linear_error_bound` with ``lsb_w`` taken per
column. The linear unit takes one weight format per layer today, so per-channel graphs
run in the golden simulator only (``prepare`` refuses them for hardware).
"""

from __future__ import annotations

import numpy as np

from celosia.ir import numerics as nx_
from celosia.ir.numerics import Fixed

__all__ = ["channel_fracs", "quantize_rows", "linear_int_per_channel"]


def channel_fracs(w: np.ndarray, bits: int) -> np.ndarray:
    """Per-row fractional bits of a weight ``(out, in)``."""
    return np.array([nx_.frac_for_range(float(np.max(np.abs(r))) if r.size else 0.0, bits) for r in w])


def quantize_rows(values: np.ndarray, bits: int, fracs, rounding: nx_.Rounding) -> np.ndarray:
    """Codes of ``values`` whose leading index ``n`` uses ``Fixed(bits, fracs[n])``."""
    values = np.asarray(values, dtype=np.float64)
    return np.stack([nx_.quantize(v, Fixed(bits, int(f)), rounding) for v, f in zip(values, fracs)])


def linear_int_per_channel(x, w, bias, out_fmt: Fixed, shifts, rounding=nx_.Rounding.HALF_EVEN, relu=False,
                           residual=None, res_shifts=None) -> np.ndarray:
    """Integer Linear with one requantizing shift per output column (``w`` is (K, N))."""
    shifts = np.asarray(shifts, dtype=np.int64)
    acc = np.asarray(x, np.int64) @ np.asarray(w, np.int64) + np.asarray(bias, np.int64)
    if residual is not None:
        res = np.asarray(residual, np.int64)
        acc = acc + np.stack([res[:, n] << np.int64(s) for n, s in enumerate(res_shifts)], axis=1)
    y = np.empty_like(acc)
    for s in np.unique(shifts):
        cols = shifts == s
        y[:, cols] = nx_.shift_round(acc[:, cols], int(s), rounding)
    y = nx_.saturate(y, out_fmt)
    return np.maximum(y, 0) if relu else y
