"""The ONNX node mappings: one method per ONNX op, building IR ops through the builder.

:mod:`celosia.frontend.onnx` reads and checks the model, rewrites the fused patterns (erf GELU,
dense MoE routing) and hands the graph to :class:`Importer`, which walks the nodes in order.
Values are either IR tensors (:class:`~celosia.frontend.builder.Tensor`) or numpy constants;
a node whose inputs are all constants is evaluated at import (``onnx.reference``, so integer
shape arithmetic keeps its ONNX types), and an IR op built on constants alone is evaluated with
its own float semantics (:meth:`Importer.emit`).

Every IR tensor is float64; integer and bool tensors are carried as their (exact) values, so
ops that only select or move elements accept them, while integer *arithmetic* (wraparound,
truncating division) is refused naming the node. A use the IR cannot express raises
:class:`Unmapped` with the reason and a hint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from celosia.errors import GraphError
from celosia.frontend.builder import GraphBuilder, Tensor
from celosia.ir.graph import Graph, Op
from celosia.ir.mathops import CAST_TARGETS
from celosia.ir.pipeline import tidy
from celosia.ir.registry import op_def

__all__ = ["Importer", "Unmapped", "Empty", "STATIC_OPERANDS", "CONV_HINT", "safe_name"]

#: ONNX element types (TensorProto.DataType) of integer and bool tensors.
INTEGER_TYPES = frozenset({2, 3, 4, 5, 6, 7, 12, 13, 21, 22, 25, 26})
BOOL, STRING = 9, 8

#: Operands that fix a shape, so the importer needs their values (op type -> operand positions).
STATIC_OPERANDS = {
    "Reshape": (1,), "Expand": (1,), "Slice": (1, 2, 3, 4), "Split": (1,), "Squeeze": (1,), "Unsqueeze": (1,),
    "ReduceSum": (1,), "ReduceMean": (1,), "ReduceMax": (1,), "TopK": (1,),
}
CONV_HINT = "use a convolution with stride equal to its kernel, no padding, one group (a patch embedding)"
_MAX_RUNS = 64  # Concat's arity: a constant gather with more contiguous runs becomes a Gather op

_UNARY = {"Exp": "Exp", "Tanh": "Tanh", "Sqrt": "Sqrt", "Reciprocal": "Reciprocal", "Neg": "Neg", "Erf": "Erf",
          "Sigmoid": "Sigmoid"}


class Unmapped(Exception):
    """A supported ONNX op used in a way the IR cannot express.

    Parameters
    ----------
    reason : str
        What is not supported.
    hint : str, optional
        What would work instead (default: the reason).
    """

    def __init__(self, reason: str, hint: str | None = None):
        super().__init__(reason)
        self.reason, self.hint = reason, hint or reason


@dataclass(frozen=True)
class Empty:
    """A zero-size intermediate value (a Split part or Slice of length 0): no IR tensor holds it;
    a Concat drops it, any other reader is refused."""

    shape: tuple[int, ...]


def safe_name(name: str) -> str:
    """The IR name of an ONNX tensor or node name (``/`` becomes ``.``)."""
    return name.replace("/", ".").strip(".") or "node"


def as_value(arr: np.ndarray) -> np.ndarray:
    """A constant as the importer holds it: floats (any width) as float64, integers as int64,
    bools unchanged."""
    arr = np.asarray(arr)
    if arr.dtype == bool:
        return arr
    if arr.dtype.kind in "iu" or "int" in arr.dtype.name:
        return arr.astype(np.int64)
    if arr.dtype.kind in "fV":
        return arr.astype(np.float64)
    return arr


class _Builder(GraphBuilder):
    """A builder that keeps names unique: the graph's outputs take their ONNX names, and a name the
    mappings derive from a node that is already taken (or reserved for an output) gets a suffix."""

    def __init__(self, name: str, reserved: set[str]):
        super().__init__(name)
        self.reserved = reserved

    def _add(self, kind: str, inputs, name, **attrs):
        return super()._add(kind, inputs, self._unique(kind, name), **attrs)

    def _unique(self, kind: str, name: str | None) -> str:
        name = self._name(kind, name)
        base, n = name, 0
        while name in self._graph or (kind not in ("Output", "Input") and name in self.reserved):
            n += 1
            name = f"{base}.op" if n == 1 and kind not in ("Output", "Input") else f"{base}.{n}"
        return name


class Importer:
    """Translates one ONNX graph (already read, converted and pattern-rewritten) into IR.

    Parameters
    ----------
    proto : onnx.ModelProto
    name : str
        Graph name.
    input_shapes : dict, optional
        Static shapes for inputs with symbolic dimensions.
    dtypes : dict of str to int
        ONNX element type of every tensor name known (inputs, initializers, inferred values).
    """

    def __init__(self, proto, name: str, input_shapes: dict | None, dtypes: dict[str, int]):
        from onnx import numpy_helper

        self.proto = proto
        self.consts: dict[str, np.ndarray] = {i.name: as_value(numpy_helper.to_array(i))
                                              for i in proto.graph.initializer}
        self.b = _Builder(name, {safe_name(o.name) for o in proto.graph.output})
        self.env: dict[str, object] = dict(self.consts)
        self.input_shapes = dict(input_shapes or {})
        self.dtypes = dtypes
        self.sigmoid_of: dict[str, str] = {}   # Sigmoid op -> its operand (for x·σ(x) = SiLU)
        self.cast_of: dict[str, Tensor] = {}   # integer Cast op -> its operand (indices look through it)
        self.current = proto.graph.node[0] if proto.graph.node else None  # the node being translated

    # -- values ---------------------------------------------------------------------------
    def v(self, name: str):
        return None if name == "" else self.env[name]

    def t(self, x, name: str | None = None) -> Tensor:
        """An IR tensor for ``x`` (a constant becomes a Const op)."""
        return x if isinstance(x, Tensor) else self.b.const(np.asarray(x, dtype=np.float64), name)

    def dtype(self, name: str) -> int:
        """ONNX element type of tensor ``name`` (1, float, when not known)."""
        return self.dtypes.get(name, 0) or 1

    def emit(self, kind: str, args: list, name: str | None = None, **attrs):
        """IR op ``kind`` on ``args``; evaluated with its float semantics when every operand is a constant."""
        if not any(isinstance(a, Tensor) for a in args):
            op = Op(name or kind, kind, tuple(f"arg{i}" for i in range(len(args))), attrs)
            return op_def(kind).float_fn(op, [np.asarray(a, np.float64) for a in args])
        return self.b.op(kind, *(self.t(a, f"{name}.in{i}" if name else None) for i, a in enumerate(args)),
                         name=name, **attrs)

    def reshape(self, x, shape, name: str | None = None):
        shape = tuple(int(d) for d in shape)
        if not isinstance(x, Tensor):
            return np.reshape(x, shape)
        return x if tuple(x.shape) == shape else self.b.reshape(x, shape, name=name)

    def transpose(self, x, perm, name: str | None = None):
        if not isinstance(x, Tensor):
            return np.transpose(x, perm)
        return x if list(perm) == list(range(len(perm))) else self.b.transpose(x, perm, name=name)

    def slice(self, x, axis: int, start: int, stop: int, name: str | None = None):
        if not isinstance(x, Tensor):
            index = [slice(None)] * np.ndim(x)
            index[axis] = slice(start, stop)
            return np.asarray(x)[tuple(index)]
        return x if (start, stop) == (0, x.shape[axis]) else self.b.slice(x, axis, start, stop, name=name)

    def concat(self, parts: list, axis: int, name: str | None = None):
        if not any(isinstance(p, Tensor) for p in parts):
            return np.concatenate([np.asarray(p, np.float64) for p in parts], axis=axis)
        if len(parts) == 1:
            return parts[0]
        return self.b.concat([self.t(p, f"{name}.part{i}") for i, p in enumerate(parts)], axis, name=name)

    def take(self, x, axis: int, indices: list[int], name: str):
        """``take(x, indices, axis)`` for constant indices: Slices of the contiguous runs and a
        Concat (exact, quantizable), or one Gather op when there are too many runs."""
        runs: list[list[int]] = []
        for i in indices:
            if runs and i == runs[-1][1]:
                runs[-1][1] += 1
            else:
                runs.append([i, i + 1])
        if len(runs) > _MAX_RUNS:
            return self.emit("Gather", [x, np.asarray(indices, np.float64)], name, axis=axis)
        parts = [self.slice(x, axis, lo, hi, f"{name}.{j}" if len(runs) > 1 else name)
                 for j, (lo, hi) in enumerate(runs)]
        return self.concat(parts, axis, name)

    def shape_of(self, x) -> tuple[int, ...]:
        return tuple(x.shape) if isinstance(x, (Tensor, Empty)) else np.shape(x)

    # -- the walk -------------------------------------------------------------------------
    def run(self) -> Graph:
        g = self.proto.graph
        used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
        for vi in g.input:
            if vi.name in self.consts:
                continue
            shape = tuple(self.input_shapes.get(vi.name, _shape_of(vi)))
            if vi.type.tensor_type.HasField("shape") and not shape:
                raise GraphError(f"ONNX input '{vi.name}' is a scalar; IR inputs have at least one dimension",
                                 hint=f"declare '{vi.name}' with shape (1,), or make it an initializer")
            if not shape or not all(isinstance(d, int) and d >= 0 for d in shape):
                raise GraphError(
                    f"ONNX input '{vi.name}' has dynamic shape {shape} without bounds",
                    hint=f"pass input_shapes={{'{vi.name}': (1, ...)}} to fix every dimension "
                         "(hardware buffers are sized at compile time)",
                )
            if 0 in shape:
                if vi.name not in used:
                    continue  # an empty input nothing reads carries no data
                raise GraphError(f"ONNX input '{vi.name}' has an empty dimension {shape}",
                                 hint="every tensor of the IR holds at least one element")
            if vi.type.tensor_type.elem_type == STRING:
                raise GraphError(f"ONNX input '{vi.name}' holds strings", hint="the IR holds numbers only")
            self.env[vi.name] = self.b.input(safe_name(vi.name), shape)
        for node in g.node:
            self.current = node
            outs = self.node(node)
            outs = outs if isinstance(outs, tuple) else (outs,)
            for out, val in zip(node.output, outs):
                if out:
                    self.env[out] = val
        for vo in g.output:
            out = safe_name(vo.name)
            if isinstance(self.v(vo.name), Empty):
                self.current = next((n for n in g.node if vo.name in n.output), self.current)
                raise Unmapped(f"output '{vo.name}' is empty {self.v(vo.name).shape}",
                               hint="every IR tensor holds at least one element")
            self.b.output(self.t(self.v(vo.name), f"{out}.const"), out)
        return tidy(self.b.build())

    def node(self, node):
        from onnx import helper, numpy_helper

        args = [self.v(i) for i in node.input]
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        attrs = {k: v.decode() if isinstance(v, bytes) else v for k, v in attrs.items()}
        op = node.op_type
        name = safe_name(node.name or node.output[0])
        if op == "Constant" and "value" in attrs:
            return as_value(numpy_helper.to_array(attrs["value"]))
        if op == "Shape" and isinstance(args[0], Tensor):  # static shapes: a constant
            shape = np.array(args[0].shape, dtype=np.int64)
            return shape[attrs.get("start", 0): attrs.get("end", len(shape))]
        empty = [i for i, a in zip(node.input, args) if isinstance(a, Empty)]
        if empty and op != "Concat":
            raise Unmapped(f"{op} '{name}' reads the empty tensor '{empty[0]}'",
                           hint="every IR tensor holds at least one element")
        if not any(isinstance(a, (Tensor, Empty)) for a in args):
            return self.fold(node)
        for index in STATIC_OPERANDS.get(op, ()):
            if index < len(args) and isinstance(args[index], Tensor):
                raise Unmapped(
                    f"{op} '{name}': operand {index} ('{node.input[index]}') fixes a shape but is computed",
                    hint="shape, axes, k and slice bounds must be known at compile time: make them initializers or "
                         f"Constants, or bind the graph input with load(..., constant_inputs={{'{node.input[index]}': "
                         "value}})")
        return getattr(self, f"_{op}")(name, node, args, attrs)

    def fold(self, node):
        """Evaluate a node whose inputs are all constants with ``onnx.reference``."""
        from onnx import helper
        from onnx.reference import ReferenceEvaluator

        ins = [i for i in node.input if i]
        feeds = {i: np.asarray(self.env[i]) for i in ins}
        g = helper.make_graph([node], "fold", [helper.make_tensor_value_info(i, _elem(feeds[i]), feeds[i].shape)
                                               for i in ins],
                              [helper.make_tensor_value_info(o, 0, None) for o in node.output if o])
        m = helper.make_model(g, opset_imports=list(self.proto.opset_import))
        try:
            res = ReferenceEvaluator(m).run(None, feeds)
        except Exception as exc:
            raise Unmapped(f"{node.op_type} '{node.name or node.output[0]}' on constants could not be evaluated "
                           f"at import ({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})",
                           hint="check the node against the ONNX specification") from None
        res = [as_value(np.asarray(r)) for r in res]
        return res[0] if len(res) == 1 else tuple(res)

    def float_only(self, node, what: str = "") -> None:
        """Refuse integer arithmetic: the IR computes every tensor in float64."""
        out = node.output[0]
        if self.dtype(out) in INTEGER_TYPES or self.dtype(out) == BOOL:
            raise Unmapped(f"{node.op_type} '{node.name or out}' computes on integer tensors{what}",
                           hint="the IR computes in float (quantization makes its own integers); integer "
                                "arithmetic (wraparound, truncating division) has no IR semantics: cast to float first")

    # -- elementwise ------------------------------------------------------------------------
    def _unary(self, name, node, a, at):
        self.float_only(node)
        kind = _UNARY[node.op_type]
        y = self.emit(kind, [a[0]], name)
        if kind == "Sigmoid":
            self.sigmoid_of[y.name] = a[0].name
        return y

    _Exp = _Tanh = _Sqrt = _Reciprocal = _Neg = _Erf = _Sigmoid = _unary

    def _Relu(self, name, node, a, at):
        return self.b.relu(a[0], name=name)

    def _Gelu(self, name, node, a, at):
        self.float_only(node)
        if at.get("approximate", "none") == "tanh":
            return self.b.gelu_tanh(a[0], name=name)
        return self.b.gelu(a[0], name=name)

    def expand(self, x, shape, name: str):
        shape = tuple(int(d) for d in shape)
        if not isinstance(x, Tensor):
            return np.broadcast_to(x, shape).copy()
        return x if tuple(x.shape) == shape else self.b.op("Expand", x, name=name, shape=shape)

    def add(self, name: str, a, b):
        """``a + b`` with ONNX broadcasting: operands are expanded to the result's shape first
        (the IR's Add does not broadcast); constants are broadcast at import."""
        out = tuple(np.broadcast_shapes(self.shape_of(a), self.shape_of(b)))
        if isinstance(a, Tensor) and isinstance(b, Tensor):
            return self.b.add(self.expand(a, out, f"{name}.a"), self.expand(b, out, f"{name}.b"), name=name)
        x, c = (a, b) if isinstance(a, Tensor) else (b, a)
        c = np.broadcast_to(np.asarray(c, dtype=np.float64), out).copy()
        return self.b.add(self.expand(x, out, f"{name}.x"), self.t(c, f"{name}.const"), name=name)

    def mul(self, name: str, a, b):
        """``a · b`` (broadcasting); ``x · Sigmoid(x)`` is a SiLU."""
        for s, x in ((a, b), (b, a)):
            if isinstance(s, Tensor) and isinstance(x, Tensor) and self.sigmoid_of.get(s.name) == x.name:
                return self.b.silu(x, name=name)
        if isinstance(a, Tensor) and isinstance(b, Tensor):
            return self.b.mul(a, b, name=name)
        x, c = (a, b) if isinstance(a, Tensor) else (b, a)
        c = np.asarray(c, dtype=np.float64)
        return self.b.mul(x, self.t(c.reshape(c.shape or (1,)), f"{name}.const"), name=name)

    def _Add(self, name, node, a, at):
        self.float_only(node)
        return self.add(name, a[0], a[1])

    def _Mul(self, name, node, a, at):
        self.float_only(node)
        return self.mul(name, a[0], a[1])

    def _Sub(self, name, node, a, at):
        self.float_only(node)
        if not isinstance(a[1], Tensor):  # x − c = x + (−c), exactly
            return self.add(name, a[0], -np.asarray(a[1], dtype=np.float64))
        return self.emit("Sub", [a[0], a[1]], name)

    def _Div(self, name, node, a, at):
        self.float_only(node)
        if not isinstance(a[1], Tensor):  # x / c as x · (1/c): the form the hardware multiplies in
            with np.errstate(divide="ignore"):
                return self.mul(name, a[0], 1.0 / np.asarray(a[1], dtype=np.float64))
        return self.emit("Div", [a[0], a[1]], name)

    def _Pow(self, name, node, a, at):
        self.float_only(node, " (an integer base)")
        x, e = a
        if isinstance(x, Tensor) and not isinstance(e, Tensor) and np.size(e) == 1:
            c = float(np.asarray(e, np.float64).ravel()[0])
            out = tuple(np.broadcast_shapes(x.shape, np.shape(e)))
            if c == 2.0:  # numpy's power squares as x·x: the same values, and a quantizable Mul
                return self.reshape(self.b.mul(x, x, name=f"{name}.sq" if out != x.shape else name), out, name)
            if c == 1.0 and out == tuple(x.shape):
                return x
        return self.emit("Pow", [x, e], name)

    def _Where(self, name, node, a, at):
        cond, x, y = a
        if not isinstance(cond, Tensor):
            # Where(M, −inf, x) == x + (−inf where M, 0 elsewhere): the masked_fill form exporters write,
            # which fuse_attention turns into Attention's causal / key-padding mask
            for keep, fill, pick in ((x, y, ~np.asarray(cond, bool)), (y, x, np.asarray(cond, bool))):
                if isinstance(keep, Tensor) and not isinstance(fill, Tensor) and np.all(np.asarray(fill) == -np.inf):
                    out = tuple(np.broadcast_shapes(np.shape(cond), keep.shape, np.shape(fill)))
                    return self.add(name, keep, np.broadcast_to(np.where(pick, -np.inf, 0.0), out))
        return self.emit("Where", [cond, x, y], name)

    # -- matrix products ----------------------------------------------------------------------
    def matmul(self, name: str, a, b):
        """``a @ b`` with numpy's 1-D rules (a 1-D operand gains, then loses, a unit axis)."""
        sa, sb = self.shape_of(a), self.shape_of(b)
        if isinstance(a, Tensor) and not isinstance(b, Tensor) and np.ndim(b) == 2 and len(sa) >= 2:
            return self.b.linear(a, np.asarray(b, np.float64).T, name=name)
        if len(sa) > 1 and len(sb) > 1:
            return self.emit("MatMul", [a, b], name)
        a2 = self.reshape(a, (1,) + sa, f"{name}.row") if len(sa) == 1 else a
        b2 = self.reshape(b, sb + (1,), f"{name}.col") if len(sb) == 1 else b
        y = self.emit("MatMul", [a2, b2], f"{name}.mm")
        shape = list(self.shape_of(y))
        if len(sb) == 1:
            shape.pop(-1)
        if len(sa) == 1:
            shape.pop(-1 if len(sb) == 1 else -2)
        return self.reshape(y, shape, name)

    def _MatMul(self, name, node, a, at):
        self.float_only(node)
        return self.matmul(name, a[0], a[1])

    def _Gemm(self, name, node, a, at):
        self.float_only(node)
        x, w = a[0], a[1]
        c = a[2] if len(a) > 2 else None
        alpha, beta = float(at.get("alpha", 1.0)), float(at.get("beta", 1.0))
        if at.get("transA", 0):
            x = self.transpose(x, (1, 0), f"{name}.aT")
        if isinstance(x, Tensor) and not isinstance(w, Tensor) and not isinstance(c, Tensor):
            w = np.asarray(w, np.float64) * alpha
            w = w if at.get("transB", 0) else w.T  # (out, in)
            out = (x.shape[0], w.shape[0])
            bias = None if c is None else np.broadcast_to(np.asarray(c, np.float64) * beta, out)
            if bias is None or np.array_equal(bias, np.broadcast_to(bias[0], out)):
                return self.b.linear(x, w, None if bias is None else bias[0].copy(), name=name)
            return self.add(name, self.b.linear(x, w, name=f"{name}.linear"), bias)
        if at.get("transB", 0):
            w = self.transpose(w, (1, 0), f"{name}.bT")
        y = self.emit("MatMul", [x, w], f"{name}.mm" if alpha != 1 or c is not None else name)
        if alpha != 1:
            y = self.mul(f"{name}.alpha" if c is not None else name, y, np.array(alpha))
        if c is None:
            return y
        c = np.asarray(c, np.float64) * beta if not isinstance(c, Tensor) else (
            c if beta == 1 else self.mul(f"{name}.beta", c, np.array(beta)))
        return self.add(name, y, c)

    def _Attention(self, name, node, a, at):
        q, k, v = a[:3]
        if any(x is not None for x in a[4:]) or len(node.output) > 1 and any(node.output[1:]):
            raise Unmapped("Attention with past key/value, nonpad_kv_seqlen or extra outputs is not supported")
        if at.get("softcap", 0) or at.get("qk_matmul_output_mode", 0):
            raise Unmapped("Attention softcap / qk output modes are not supported")
        if at.get("left_window_size", -1) != -1 or at.get("right_window_size", -1) != -1:
            raise Unmapped("Attention with a local window (left/right_window_size) is not supported")
        kw = {"causal": bool(at.get("is_causal", 0)), "scale": at.get("scale"), "name": name}
        if len(q.shape) == 3:
            kw.update(heads=at["q_num_heads"], kv_heads=at["kv_num_heads"])
        if len(a) > 3 and a[3] is not None:
            kw["mask"] = self._key_padding(node, a[3], q.shape[0], k.shape[-2])
        return self.b.attention(*(self.t(x, f"{name}.{n}") for x, n in zip((q, k, v), "qkv")), **kw)

    def _key_padding(self, node, mask, batch: int, keys: int) -> Tensor:
        """The (B, Tk) keep-mask behind a boolean ``attn_mask`` that masks keys only (True = attend)."""
        hint = ("attn_mask is supported as a boolean key-padding mask of shape (B, 1, 1, Tk) (True = attend); "
                "additive float masks and per-query masks have no Attention mapping")
        if not isinstance(mask, Tensor) or self.dtype(node.input[3]) != BOOL or tuple(mask.shape) != (batch, 1, 1, keys):
            raise Unmapped(hint)
        return self.b.reshape(mask, (batch, keys), name=f"{safe_name(node.input[3])}.keys")

    def _MoE(self, name, node, a, at):
        return self.b.moe(a[0], *a[1:7], top_k=at["top_k"], activation=at["activation"], name=name)

    def _Conv(self, name, node, a, at):
        x, w = a[0], a[1]
        bias = a[2] if len(a) > 2 else None
        k = tuple(at.get("kernel_shape", np.shape(w)[2:]))
        if (not isinstance(w, np.ndarray) or isinstance(bias, Tensor) or len(k) != 2
                or tuple(at.get("strides", (1, 1))) != k or any(at.get("pads", (0, 0, 0, 0))) or at.get("group", 1) != 1
                or tuple(at.get("dilations", (1, 1))) != (1, 1) or at.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID")
                or x.shape[2] % k[0] or x.shape[3] % k[1]):
            raise Unmapped(CONV_HINT)
        bsz, c, h, wd = x.shape
        gh, gw = h // k[0], wd // k[1]
        t = self.b.reshape(x, (bsz, c, gh, k[0], gw, k[1]), name=f"{name}.split")
        t = self.b.transpose(t, (0, 2, 4, 1, 3, 5), name=f"{name}.order")
        t = self.b.reshape(t, (bsz, gh * gw, c * k[0] * k[1]), name=f"{name}.patches")
        y = self.b.linear(t, w.reshape(w.shape[0], -1), bias, name=f"{name}.linear")
        y = self.b.transpose(y, (0, 2, 1), name=f"{name}.chw")
        return self.b.reshape(y, (bsz, w.shape[0], gh, gw), name=name)

    # -- normalization, softmax, reductions ------------------------------------------------------
    def _Softmax(self, name, node, a, at):
        self.float_only(node)
        x = a[0]
        r = len(x.shape)
        axis = at.get("axis", -1) % r
        if axis == r - 1:
            return self.b.softmax(x, name=name)
        perm = list(range(r))
        perm[axis], perm[-1] = perm[-1], perm[axis]  # a swap: its own inverse
        t = self.b.transpose(x, perm, name=f"{name}.last")
        return self.b.transpose(self.b.softmax(t, name=f"{name}.softmax"), perm, name=name)

    def _row_param(self, p, trail: tuple, name: str):
        """A scale or bias broadcast over the normalized axes, flattened to one row."""
        d = math.prod(trail)
        if not isinstance(p, Tensor):
            return self.t(np.broadcast_to(np.asarray(p, np.float64), trail).reshape(d).copy(), name)
        return self.reshape(self.expand(p, tuple(np.broadcast_shapes(p.shape, trail)), f"{name}.full"), (d,),
                            f"{name}.row")

    def _norm(self, kind: str, name, node, a, at):
        self.float_only(node)
        x = a[0]
        r = len(x.shape)
        axis = at.get("axis", -1) % r
        lead, trail = tuple(x.shape[:axis]), tuple(x.shape[axis:])
        rows = (lead or (1,)) + (math.prod(trail),)
        direct = axis == r - 1 and r >= 2
        x2 = self.reshape(x, rows, f"{name}.rows")
        params = [self._row_param(a[1], trail, f"{name}.scale")]
        if kind == "LayerNorm":
            bias = a[2] if len(a) > 2 and a[2] is not None else np.zeros(trail)
            params.append(self._row_param(bias, trail, f"{name}.bias"))
        eps = float(at.get("epsilon", 1e-5))
        y = self.b.op(kind, x2, *params, name=name if direct else f"{name}.norm", eps=eps)
        y = self.reshape(y, x.shape, name)
        if kind != "LayerNorm" or len(node.output) < 2 or not any(node.output[1:]):
            return y
        # the optional Mean and InvStdDev outputs, as the ONNX function defines them
        stat = lead + (1,) * len(trail)
        mean = self.b.op("Mean", x2, name=f"{name}.mean", axis=-1, keepdims=True)
        d = self.emit("Sub", [x2, mean], f"{name}.centered")
        var = self.b.op("Mean", self.b.mul(d, d, name=f"{name}.sq"), name=f"{name}.var", axis=-1, keepdims=True)
        std = self.emit("Sqrt", [self.add(f"{name}.var_eps", var, np.array(eps))], f"{name}.std")
        inv = self.emit("Reciprocal", [std], f"{name}.inv_std")
        return y, self.reshape(mean, stat, f"{name}.Mean"), self.reshape(inv, stat, f"{name}.InvStdDev")

    def _LayerNormalization(self, name, node, a, at):
        return self._norm("LayerNorm", name, node, a, at)

    def _RMSNormalization(self, name, node, a, at):
        return self._norm("RMSNorm", name, node, a, at)

    def _reduce(self, name, node, a, at):
        kind = {"ReduceMean": "Mean", "ReduceSum": "ReduceSum", "ReduceMax": "ReduceMax"}[node.op_type]
        if kind != "ReduceMax":
            self.float_only(node)
        x = a[0]
        r = len(x.shape)
        axes = a[1] if len(a) > 1 and a[1] is not None else at.get("axes")
        axes = [] if axes is None else [int(i) for i in np.asarray(axes).ravel()]
        if not axes:
            if at.get("noop_with_empty_axes", 0):
                return x
            axes = list(range(r))
        axes = sorted({i % r for i in axes})
        keep = bool(at.get("keepdims", 1))
        t = x
        for j, axis in enumerate(axes):
            last = j == len(axes) - 1 and keep
            t = self.b.op(kind, t, name=name if last else f"{name}.{axis}", axis=axis, keepdims=True)
        if keep:
            return t
        return self.reshape(t, tuple(d for i, d in enumerate(x.shape) if i not in axes), name)

    _ReduceMean = _ReduceSum = _ReduceMax = _reduce

    def _TopK(self, name, node, a, at):
        x = a[0]
        k = int(np.asarray(a[1]).ravel()[0])
        axis = at.get("axis", -1) % len(x.shape)
        kw = {"k": k, "axis": axis, "largest": bool(at.get("largest", 1))}
        if not 0 < k <= x.shape[axis]:
            raise Unmapped(f"TopK '{name}': k = {k} is not in 1..{x.shape[axis]}")
        return (self.b.op("TopK", x, name=f"{name}.values", output="values", **kw),
                self.b.op("TopK", x, name=f"{name}.indices", output="indices", **kw))

    # -- casts and gathers ---------------------------------------------------------------------
    def _Cast(self, name, node, a, at, to=None):
        from onnx import helper

        to = at.get("to") if to is None else to
        try:
            target = helper.tensor_dtype_to_np_dtype(int(to)).name
        except Exception:
            target = None
        if target not in CAST_TARGETS:
            raise Unmapped(f"Cast '{name}' to ONNX type {to} ({target}): the IR holds numbers only",
                           hint="cast to a float, integer or bool type")
        if target in ("float32", "float64"):
            return a[0]  # the IR computes every float tensor in float64
        attrs = {"to": target, "saturate": bool(at.get("saturate", 1)), "round_mode": at.get("round_mode", "up")}
        y = self.emit("Cast", [a[0]], name, **attrs)
        if isinstance(y, Tensor) and (target == "bool" or "int" in target):
            self.cast_of[y.name] = a[0]
        return y

    def _CastLike(self, name, node, a, at):
        return self._Cast(name, node, a[:1], at, to=self.dtype(node.input[1]))

    def _index(self, idx):
        """Indices with an integer Cast looked through: every gather truncates its indices itself."""
        while isinstance(idx, Tensor) and idx.name in self.cast_of:
            idx = self.cast_of[idx.name]
        return idx

    def _Gather(self, name, node, a, at):
        data, idx = a
        r = len(self.shape_of(data))
        axis = at.get("axis", 0) % r
        size = self.shape_of(data)[axis]
        if not isinstance(idx, Tensor):
            ii = np.asarray(idx).astype(np.int64)
            if np.any((ii < -size) | (ii >= size)):
                raise Unmapped(f"Gather '{name}': an index is out of range for an axis of {size}")
            ii = np.where(ii < 0, ii + size, ii)
            t = self.take(data, axis, ii.ravel().tolist(), f"{name}.take")
            shape = self.shape_of(data)
            return self.reshape(t, shape[:axis] + ii.shape + shape[axis + 1:], name)
        idx = self._index(idx)
        if not isinstance(data, Tensor) and np.ndim(data) == 2 and axis == 0:
            return self.b.embedding(idx, np.asarray(data, np.float64), name=name)
        return self.emit("Gather", [data, idx], name, axis=axis)

    def _RotaryEmbedding(self, name, node, a, at):
        """RoPE lowered to Gather/Embedding, Slice, Mul, Add/Sub and Concat (exactly the ONNX function)."""
        self.float_only(node)
        x, cos, sin = a[:3]
        pos = self._index(a[3]) if len(a) > 3 and a[3] is not None else None
        if len(x.shape) == 4:
            bsz, heads, seq, d = x.shape
            t = self.transpose(x, (0, 2, 1, 3), f"{name}.bshd")
        else:
            bsz, seq, hidden = x.shape
            heads = int(at.get("num_heads", 0))
            if not heads or hidden % heads:
                raise Unmapped(f"RotaryEmbedding '{name}': a 3-D input needs num_heads dividing {hidden}")
            d = hidden // heads
            t = self.reshape(x, (bsz, seq, heads, d), f"{name}.bshd")
        rd = int(at.get("rotary_embedding_dim", 0)) or d
        half = rd // 2
        if rd % 2 or rd > d:
            raise Unmapped(f"RotaryEmbedding '{name}': rotary_embedding_dim {rd} must be even and at most {d}")

        def table(c, tag, negate=False):
            sign = -1.0 if negate else 1.0
            if pos is None:
                v = c if not negate else self.emit("Neg", [c], f"{name}.{tag}.neg")
            elif isinstance(c, Tensor):
                v = self.emit("Gather", [c, pos], f"{name}.{tag}", axis=0)
                v = v if not negate else self.emit("Neg", [v], f"{name}.{tag}.neg")
            else:
                v = self.b.embedding(pos, sign * np.asarray(c, np.float64), name=f"{name}.{tag}")
            return self.reshape(v, (bsz, seq, 1, half), f"{name}.{tag}.b1")

        cos_t, sin_t, nsin_t = table(cos, "cos"), table(sin, "sin"), table(sin, "nsin", negate=True)
        xr = self.slice(t, 3, 0, rd, f"{name}.rot")
        if at.get("interleaved", 0):
            pairs = self.reshape(xr, (bsz, seq, heads, half, 2), f"{name}.pairs")
            x1 = self.reshape(self.slice(pairs, 4, 0, 1, f"{name}.even"), (bsz, seq, heads, half), f"{name}.x1")
            x2 = self.reshape(self.slice(pairs, 4, 1, 2, f"{name}.odd"), (bsz, seq, heads, half), f"{name}.x2")
        else:
            x1, x2 = self.slice(xr, 3, 0, half, f"{name}.x1"), self.slice(xr, 3, half, rd, f"{name}.x2")
        # real = cos·x1 − sin·x2 (as cos·x1 + (−sin)·x2: the same floats), imag = sin·x1 + cos·x2
        real = self.b.add(self.b.mul(cos_t, x1, name=f"{name}.cx1"), self.b.mul(nsin_t, x2, name=f"{name}.sx2"),
                          name=f"{name}.real")
        imag = self.b.add(self.b.mul(sin_t, x1, name=f"{name}.sx1"), self.b.mul(cos_t, x2, name=f"{name}.cx2"),
                          name=f"{name}.imag")
        if at.get("interleaved", 0):
            parts = [self.reshape(p, (bsz, seq, heads, half, 1), f"{p.name}.1") for p in (real, imag)]
            rot = self.reshape(self.concat(parts, 4, f"{name}.zip"), (bsz, seq, heads, rd), f"{name}.rotated")
        else:
            rot = self.concat([real, imag], 3, f"{name}.rotated")
        y = self.concat([rot, self.slice(t, 3, rd, d, f"{name}.pass")], 3, f"{name}.out") if rd < d else rot
        if len(x.shape) == 4:
            return self.transpose(y, (0, 2, 1, 3), name)
        return self.reshape(y, x.shape, name)

    # -- layout ---------------------------------------------------------------------------------
    def _Identity(self, name, node, a, at):
        return a[0]

    def _Dropout(self, name, node, a, at):  # inference: the identity, and an all-true mask
        return a[0], np.ones(self.shape_of(a[0]), dtype=bool)

    def _Reshape(self, name, node, a, at):
        x, shape = a
        target = [int(d) for d in np.asarray(shape).ravel()]
        if not at.get("allowzero", 0):
            target = [x.shape[i] if d == 0 else d for i, d in enumerate(target)]
        try:
            out = np.empty(x.shape).reshape(target).shape
        except ValueError:
            raise Unmapped(f"Reshape '{name}': cannot reshape {x.shape} to {target}") from None
        if 0 in out:
            raise Unmapped(f"Reshape '{name}': the result {out} is empty", hint="every IR tensor holds an element")
        return self.reshape(x, out, name)

    def _Flatten(self, name, node, a, at):
        x = a[0]
        r = len(x.shape)
        axis = at.get("axis", 1)
        axis = axis + r if axis < 0 else axis
        return self.reshape(x, (math.prod(x.shape[:axis]), math.prod(x.shape[axis:])), name)

    def _axes(self, a, at):
        axes = a[1] if len(a) > 1 and a[1] is not None else at.get("axes")
        return None if axes is None else [int(i) for i in np.asarray(axes).ravel()]

    def _Squeeze(self, name, node, a, at):
        x, axes = a[0], self._axes(a, at)
        axes = [i % len(x.shape) for i in axes] if axes is not None else [i for i, d in enumerate(x.shape) if d == 1]
        if any(x.shape[i] != 1 for i in axes):
            raise Unmapped(f"Squeeze '{name}': axes {axes} of {x.shape} are not all 1")
        return self.reshape(x, tuple(d for i, d in enumerate(x.shape) if i not in axes), name)

    def _Unsqueeze(self, name, node, a, at):
        x, axes = a[0], self._axes(a, at)
        rank = len(x.shape) + len(axes)
        axes = sorted(i % rank for i in axes)
        shape, it = [], iter(x.shape)
        for i in range(rank):
            shape.append(1 if i in axes else next(it))
        return self.reshape(x, tuple(shape), name)

    def _Transpose(self, name, node, a, at):
        x = a[0]
        perm = at.get("perm") or list(reversed(range(len(x.shape))))
        return self.transpose(x, [int(p) for p in perm], name)

    def _Slice(self, name, node, a, at):
        x = a[0]
        starts, ends = np.asarray(a[1]).ravel(), np.asarray(a[2]).ravel()
        axes = np.asarray(a[3]).ravel() if len(a) > 3 and a[3] is not None else np.arange(len(starts))
        steps = np.asarray(a[4]).ravel() if len(a) > 4 and a[4] is not None else np.ones(len(starts), int)
        t = x
        for j, (s, e, ax, st) in enumerate(zip(starts, ends, axes, steps)):
            ax = int(ax) % len(t.shape)
            part = name if j == len(starts) - 1 else f"{name}.{j}"
            if int(st) == 0:
                raise Unmapped(f"Slice '{name}': a step of 0")
            idx = range(*slice(int(s), int(e), int(st)).indices(t.shape[ax]))
            if len(idx) == 0:
                return Empty(tuple(t.shape[:ax]) + (0,) + tuple(t.shape[ax + 1:]))
            t = self.slice(t, ax, idx.start, idx.stop, part) if idx.step == 1 else self.take(t, ax, list(idx), part)
        return t

    def _Split(self, name, node, a, at):
        x = a[0]
        axis = at.get("axis", 0) % len(x.shape)
        dim = x.shape[axis]
        sizes = a[1] if len(a) > 1 and a[1] is not None else at.get("split")
        if sizes is not None:
            sizes = [int(s) for s in np.asarray(sizes).ravel()]
        else:
            n = int(at.get("num_outputs", len(node.output)))
            chunk = -(-dim // n)
            sizes = [chunk] * (n - 1) + [dim - chunk * (n - 1)]
        if sum(sizes) != dim or any(s < 0 for s in sizes):
            raise Unmapped(f"Split '{name}': sizes {sizes} do not split an axis of {dim}")
        outs, start = [], 0
        for i, s in enumerate(sizes):
            part = x.shape[:axis] + (s,) + x.shape[axis + 1:]
            outs.append(self.slice(x, axis, start, start + s, f"{name}.{i}") if s else Empty(tuple(part)))
            start += s
        return tuple(outs)

    def _Concat(self, name, node, a, at):
        parts = [p for p in a if p is not None]
        axis = at["axis"] % len(self.shape_of(parts[0]))
        kept = [p for p in parts if isinstance(p, Tensor) or (not isinstance(p, Empty) and np.size(p))]
        if not kept:
            shape = list(self.shape_of(parts[0]))
            shape[axis] = 0
            return Empty(tuple(shape))
        return self.concat(kept, axis, name)

    def _Expand(self, name, node, a, at):
        x, shape = a
        try:
            out = tuple(np.broadcast_shapes(x.shape, tuple(int(d) for d in np.asarray(shape).ravel())))
        except ValueError:
            raise Unmapped(f"Expand '{name}': {x.shape} does not broadcast to {list(np.asarray(shape))}") from None
        return self.expand(x, out, name)


def _shape_of(vi) -> tuple:
    dims = []
    for d in vi.type.tensor_type.shape.dim:
        dims.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?"))
    return tuple(dims)


def _elem(arr: np.ndarray) -> int:
    from onnx import helper

    return helper.np_dtype_to_tensor_dtype(arr.dtype)
