"""Tensor types of the IR: a static shape and, once quantized, a fixed-point format."""

from __future__ import annotations

import math
from dataclasses import dataclass

from celosia.ir.numerics import Fixed

__all__ = ["TensorType"]


@dataclass(frozen=True)
class TensorType:
    """The type of a tensor flowing along a graph edge.

    Parameters
    ----------
    shape : tuple of int
        Static shape; every dimension is a positive integer.
    fmt : Fixed or None
        Fixed-point format of the quantized graph; ``None`` means float64.
    """

    shape: tuple[int, ...]
    fmt: Fixed | None = None

    @property
    def size(self) -> int:
        """Number of elements."""
        return math.prod(self.shape)

    def with_fmt(self, fmt: Fixed | None) -> "TensorType":
        """The same shape with another format."""
        return TensorType(self.shape, fmt)

    def __str__(self) -> str:
        dims = "x".join(str(d) for d in self.shape) or "scalar"
        return f"{dims}:{self.fmt if self.fmt else 'f64'}"
