"""Integer semantics of the MAC-style ops without a dedicated unit yet: MatMul, Mul, Embedding.

Each computes its exact integer result (int64, products carry ``frac_a + frac_b``
fractional bits) and requantizes once to the output format with round-half-even and
saturation. **Stated bound** (against float semantics of the dequantized operands,
no saturation): ``lsb_out/2`` for each of them (the only rounding is the final one;
``Embedding`` is exact when the output format equals the table's).
"""

from __future__ import annotations

import numpy as np

from celosia.ir import numerics as nx_
from celosia.ir.numerics import Fixed

__all__ = ["matmul_int", "mul_int", "embedding_int", "embedding_float"]


def matmul_int(a, b, fa: Fixed, fb: Fixed, out_fmt: Fixed, rounding=nx_.Rounding.HALF_EVEN) -> np.ndarray:
    """``requantize(a @ b)``: batched matrix product (numpy ``matmul`` broadcasting)."""
    acc = np.matmul(np.asarray(a, np.int64), np.asarray(b, np.int64))
    return nx_.requantize(acc, fa.frac + fb.frac, out_fmt, rounding)


def mul_int(a, b, fa: Fixed, fb: Fixed, out_fmt: Fixed, rounding=nx_.Rounding.HALF_EVEN) -> np.ndarray:
    """``requantize(a * b)``: elementwise product (numpy broadcasting)."""
    acc = np.asarray(a, np.int64) * np.asarray(b, np.int64)
    return nx_.requantize(acc, fa.frac + fb.frac, out_fmt, rounding)


def embedding_float(ids, table) -> np.ndarray:
    """``table[ids]`` with ids given as (integral) floats."""
    return np.asarray(table, np.float64)[np.asarray(ids).astype(np.int64)]


def embedding_int(ids, table_codes, table_fmt: Fixed, out_fmt: Fixed) -> np.ndarray:
    """Row gather of the table's codes, requantized to ``out_fmt``."""
    return nx_.requantize(np.asarray(table_codes, np.int64)[np.asarray(ids, np.int64)], table_fmt.frac, out_fmt)
