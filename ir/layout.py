"""Layout ops (Reshape, Transpose, Slice, Concat): no arithmetic, the same on floats and codes.

Reshape, Transpose and Slice keep their operand's format and are exact. Concat
requantizes each operand to its output format (exact when the output has at least as
many fractional bits as every operand and holds its range; otherwise the stated bound
is ``lsb_out/2``).
"""

from __future__ import annotations

import numpy as np

from celosia.ir import numerics as nx_
from celosia.ir.numerics import Fixed

__all__ = ["layout_apply", "concat_int"]


def layout_apply(kind: str, attrs: dict, x: np.ndarray) -> np.ndarray:
    """Apply a Reshape, Transpose or Slice to an array (floats or codes alike)."""
    if kind == "Reshape":
        return np.reshape(x, tuple(attrs["shape"]))
    if kind == "Transpose":
        return np.transpose(x, tuple(attrs["perm"]))
    if kind == "Slice":
        axis = int(attrs.get("axis", 0)) % x.ndim
        index = [slice(None)] * x.ndim
        index[axis] = slice(int(attrs.get("start", 0)), int(attrs.get("stop", x.shape[axis])))
        return x[tuple(index)]
    raise ValueError(f"not a layout op: {kind}")


def concat_int(parts: list[np.ndarray], fmts: list[Fixed], axis: int, out_fmt: Fixed) -> np.ndarray:
    """Concatenate code arrays after requantizing each to ``out_fmt``."""
    return np.concatenate([nx_.requantize(p, f.frac, out_fmt) for p, f in zip(parts, fmts)], axis=axis)
