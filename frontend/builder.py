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
from celosia.ir.registry import infer_type
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

    def op(self, kind: str, *inputs: Tensor, name: str | None = None, **attrs) -> Tensor:
        """Any registered op kind (:mod:`celosia.ir.ops`) applied to tensors, with attributes."""
        return self._add(kind, tuple(self._check(t) for t in inputs), name, **attrs)

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

    def matmul(self, a: Tensor, b: Tensor, name: str | None = None) -> Tensor:
        """Batched matrix product ``a @ b`` (numpy ``matmul`` broadcasting of leading dims)."""
        return self._add("MatMul", (self._check(a), self._check(b)), name)

    def mul(self, a: Tensor, b: Tensor, name: str | None = None) -> Tensor:
        """Elementwise product with numpy broadcasting."""
        return self._add("Mul", (self._check(a), self._check(b)), name)

    def silu(self, x: Tensor, name: str | None = None) -> Tensor:
        """Elementwise ``x * sigmoid(x)``."""
        return self._add("SiLU", (self._check(x),), name)

    def gelu_tanh(self, x: Tensor, name: str | None = None) -> Tensor:
        """GELU in its tanh approximation (PyTorch ``approximate="tanh"``)."""
        return self._add("GELU", (self._check(x),), name, approximate="tanh")

    def embedding(self, ids: Tensor, table, name: str | None = None) -> Tensor:
        """Rows of ``table`` (vocab, dim) picked by the integer ``ids``."""
        name = self._name("Embedding", name)
        t = self.const(table, f"{name}.weight")
        return self._add("Embedding", (self._check(ids), t.name), name)

    def attention(self, q: Tensor, k: Tensor, v: Tensor, *, heads: int | None = None, kv_heads: int | None = None,
                  causal: bool = False, mask: Tensor | None = None, scale: float | None = None,
                  name: str | None = None) -> Tensor:
        """Multi-head attention ``softmax(scale·q·kᵀ)·v`` (see :mod:`celosia.ir.attention`).

        ``q, k, v`` are packed ``(B, T, H·E)`` (give ``heads`` and, for GQA, ``kv_heads``)
        or split ``(B, H, T, E)``; ``mask`` is a ``(B, Tk)`` key-padding mask, 1 = attend.
        """
        ins = (self._check(q), self._check(k), self._check(v)) + ((self._check(mask),) if mask is not None else ())
        attrs = {"causal": bool(causal)}
        if heads is not None:
            attrs["heads"] = int(heads)
            attrs["kv_heads"] = int(kv_heads or heads)
        if scale is not None:
            attrs["scale"] = float(scale)
        return self._add("Attention", ins, name, **attrs)

    def moe(self, x: Tensor, gate_w, gate_b, w1, b1, w2, b2, *, top_k: int = 2, activation: str = "gelu",
            name: str | None = None) -> Tensor:
        """A mixture-of-experts MLP (see :mod:`celosia.ir.moe`); expert weights stacked on axis 0."""
        name = self._name("MoE", name)
        params = {"gate.weight": gate_w, "gate.bias": gate_b, "w1": w1, "b1": b1, "w2": w2, "b2": b2}
        ins = (self._check(x),) + tuple(self.const(v, f"{name}.{k}").name for k, v in params.items())
        return self._add("MoE", ins, name, top_k=int(top_k), activation=activation)

    def reshape(self, x: Tensor, shape, name: str | None = None) -> Tensor:
        """Reshape to a static shape (no compute)."""
        return self._add("Reshape", (self._check(x),), name, shape=tuple(int(d) for d in shape))

    def transpose(self, x: Tensor, perm, name: str | None = None) -> Tensor:
        """Permute the axes (no compute)."""
        return self._add("Transpose", (self._check(x),), name, perm=tuple(int(p) for p in perm))

    def slice(self, x: Tensor, axis: int, start: int, stop: int, name: str | None = None) -> Tensor:
        """``x[..., start:stop, ...]`` along ``axis`` (no compute)."""
        return self._add("Slice", (self._check(x),), name, axis=int(axis), start=int(start), stop=int(stop))

    def concat(self, parts: list[Tensor], axis: int, name: str | None = None) -> Tensor:
        """Concatenate tensors along ``axis``."""
        return self._add("Concat", tuple(self._check(p) for p in parts), name, axis=int(axis))

    def output(self, x: Tensor, name: str | None = None) -> Tensor:
        """Mark ``x`` as a model output."""
        return self._add("Output", (self._check(x),), name)

    def build(self) -> Graph:
        """Verify and return the graph."""
        return verify(self._graph.copy())
