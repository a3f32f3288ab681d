"""The Python builder API: write a model op by op, with shape errors at the call site.

Example
-------
>>> import numpy as np
>>> from celosia.frontend.builder import GraphBuilder
>>> b = GraphBuilder("tiny")
>>> x = b.input("x", (1, 4))
>>> h = b.relu(b.linear(x, np.ones((3, 4)), np.zeros(3)))
>>> b.output(h, "y")
>>> graph = b.build()
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from celosia.errors import GraphError
from celosia.ir.graph import Graph, Op
from celosia.ir.ops import infer_type
from celosia.ir.verify import verify

__all__ = ["Tensor", "GraphBuilder"]


@dataclass(frozen=True)
class Tensor:
    """A handle on a tensor of the graph being built."""

    name: str
    shape: tuple[int, ...]


class GraphBuilder:
    """Builds a float :class:`~celosia.ir.graph.Graph` one op at a time.

    Every method type-checks the new op immediately, so a shape mismatch raises a
    GraphError naming both tensors at the line that made it.
    """

    def __init__(self, name: str = "model"):
        self._graph = Graph(name)
        self._counts: dict[str, int] = {}

    def _name(self, kind: str, name: str | None) -> str:
        if name:
            return name
        n = self._counts.get(kind, 0)
        self._counts[kind] = n + 1
        return f"{kind.lower()}{n}"

    def _add(self, kind: str, inputs: tuple[str, ...], name: str | None, **attrs) -> Tensor:
        op = Op(self._name(kind, name), kind, inputs, attrs)
        op.type = infer_type(op, [self._graph.op(i).type for i in inputs])
        self._graph.add(op)
        return Tensor(op.name, op.type.shape)

    def _check(self, t: Tensor) -> str:
        if not isinstance(t, Tensor) or t.name not in self._graph:
            raise GraphError(f"{t!r} is not a tensor of graph '{self._graph.name}'")
        return t.name

    def input(self, name: str, shape: tuple[int, ...]) -> Tensor:
        """Declare a model input of a static shape."""
        return self._add("Input", (), name, shape=tuple(shape))

    def const(self, value, name: str | None = None) -> Tensor:
        """A constant tensor (float values)."""
        return self._add("Const", (), name, value=np.asarray(value, dtype=np.float64))

    def linear(self, x: Tensor, weight, bias=None, name: str | None = None) -> Tensor:
        """``x @ weight.T + bias`` with ``weight`` shaped (out_features, in_features)."""
        name = self._name("Linear", name)
        w = self.const(weight, f"{name}.weight")
        ins = (self._check(x), w.name)
        if bias is not None:
            ins += (self.const(bias, f"{name}.bias").name,)
        return self._add("Linear", ins, name)

    def relu(self, x: Tensor, name: str | None = None) -> Tensor:
        """Elementwise ``max(x, 0)``."""
        return self._add("ReLU", (self._check(x),), name)

    def add(self, a: Tensor, b: Tensor, name: str | None = None) -> Tensor:
        """Elementwise sum of two tensors of the same shape."""
        return self._add("Add", (self._check(a), self._check(b)), name)

    def softmax(self, x: Tensor, name: str | None = None) -> Tensor:
        """Softmax over the last axis."""
        return self._add("Softmax", (self._check(x),), name)

    def gelu(self, x: Tensor, name: str | None = None) -> Tensor:
        """GELU in its exact (erf) form, ``x * Phi(x)``."""
        return self._add("GELU", (self._check(x),), name)

    def layernorm(self, x: Tensor, gamma, beta, eps: float = 1e-5, name: str | None = None) -> Tensor:
        """LayerNorm over the last axis with scale ``gamma`` and shift ``beta``."""
        name = self._name("LayerNorm", name)
        g = self.const(gamma, f"{name}.gamma")
        b = self.const(beta, f"{name}.beta")
        return self._add("LayerNorm", (self._check(x), g.name, b.name), name, eps=float(eps))

    def rmsnorm(self, x: Tensor, gamma, eps: float = 1e-5, name: str | None = None) -> Tensor:
        """RMSNorm over the last axis with scale ``gamma``."""
        name = self._name("RMSNorm", name)
        g = self.const(gamma, f"{name}.gamma")
        return self._add("RMSNorm", (self._check(x), g.name), name, eps=float(eps))

    def output(self, x: Tensor, name: str | None = None) -> Tensor:
        """Mark ``x`` as a model output."""
        return self._add("Output", (self._check(x),), name)

    def build(self) -> Graph:
        """Verify and return the graph."""
        return verify(self._graph.copy())
