"""ONNX frontend: an ``.onnx`` file (opset ≥ 17) -> float IR graph.

=====================================  ==================================================
ONNX                                   IR
=====================================  ==================================================
Gemm (alpha, beta, transB), MatMul     Linear when the weight is an initializer, else MatMul
by a constant
MatMul of two computed tensors         MatMul
Attention (opset 23: q/kv_num_heads,   Attention (packed or split layout, GQA, causal)
is_causal, scale)
Softmax (last axis), Relu, Gelu        Softmax, ReLU, GELU (``approximate`` kept)
(none/tanh), Sigmoid·x (SiLU)          SiLU (``Mul(x, Sigmoid(x))`` is recognised)
x·0.5·(1 + Erf(x/√2))                  GELU (the exporters' erf form, any operand order)
Conv (stride = kernel, no padding)     Reshape/Transpose + Linear (patch embedding)
LayerNormalization, RMSNormalization   LayerNorm, RMSNorm (last axis)
Add, Sub, Mul, Div with constants      Add (constants broadcast at import), Mul
Gather (initializer table, axis 0)     Embedding; Gather of one index of a computed tensor
                                       is a Slice + Reshape
Reshape, Transpose, Flatten, Squeeze,  Reshape, Transpose, Slice, Concat (composed, no-ops
Unsqueeze, Slice, Split, Concat        dropped)
Softmax -> TopK -> ScatterElements ->  MoE (the dense V-MoE routing as torch.onnx.export writes it)
Concat of experts · weights, ReduceSum
Identity, Dropout, Cast (to float)     removed
Shape (static), Expand (keeping shape)  constants / removed
Where(constant cond, x, −∞) and the    Add of a constant 0/−∞ mask (exact); before a
mirrored form                          Softmax it becomes Attention's causal/padding mask
=====================================  ==================================================

Everything computed from initializers alone is folded with ``onnx.reference`` at import.
A corrupt or truncated file, an opset below 17, a symbolic (unbounded) input dimension
without ``input_shapes``, and unsupported ops (all listed at once) raise a
:class:`~celosia.errors.CelosiaError` naming the node and what would work instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from celosia.errors import CelosiaError, GraphError
from celosia.frontend.builder import GraphBuilder, Tensor
from celosia.frontend.support import Unsupported, UnsupportedOpsError
from celosia.ir.graph import Graph
from celosia.ir.pipeline import tidy

__all__ = ["load", "check", "read", "SUPPORTED_ONNX", "MIN_OPSET"]

MIN_OPSET = 17
_DOMAIN = "ai.celosia"  # the fused MoE node the routing pattern is rewritten into before import
_IDENTITY = {"Identity", "Dropout", "Cast"}
SUPPORTED_ONNX = frozenset(_IDENTITY | {
    "Gemm", "MatMul", "Attention", "Softmax", "Relu", "Gelu", "Sigmoid", "LayerNormalization", "RMSNormalization",
    "Add", "Sub", "Mul", "Div", "Gather", "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Slice",
    "Split", "Concat", "Constant", "Shape", "Erf", "Conv", "Expand", "Where",
})
_HINTS = {
    "TopK": "top-k is imported inside the dense V-MoE routing pattern (softmax gate, TopK, ScatterElements, "
            "weighted ReduceSum of the experts), or write the block with the builder's moe()",
    "Conv": "use a convolution with stride equal to its kernel, no padding, one group (a patch embedding)",
}


def _onnx():
    try:
        import onnx
    except ImportError:
        raise CelosiaError("the ONNX frontend needs the onnx package", hint="pip install onnx") from None
    return onnx


def read(model):
    """Load and validate an ONNX model from a path, bytes or a ``ModelProto``."""
    onnx = _onnx()
    if isinstance(model, onnx.ModelProto):
        proto, where = model, model.graph.name or "model"
    else:
        where = str(model) if isinstance(model, (str, os.PathLike)) else "<bytes>"
        if isinstance(model, (str, os.PathLike)) and not Path(model).is_file():
            raise CelosiaError(f"ONNX file '{model}' does not exist", hint="check the path")
        try:
            data = Path(model).read_bytes() if isinstance(model, (str, os.PathLike)) else bytes(model)
            proto = onnx.load_from_string(data)
        except Exception as exc:
            raise GraphError(
                f"'{where}' is not a readable ONNX model (corrupt or truncated file: {type(exc).__name__})",
                hint="re-export the model (torch.onnx.export / onnx.save) and check the file was copied whole",
            ) from None
        if not proto.graph.node and not proto.graph.output:
            raise GraphError(f"'{where}' holds no ONNX graph (empty, corrupt or truncated file)",
                             hint="re-export the model and check the file was copied whole")
    opset = {o.domain: o.version for o in proto.opset_import}.get("", None) or {
        o.domain: o.version for o in proto.opset_import}.get("ai.onnx")
    if opset is None or opset < MIN_OPSET:
        raise GraphError(
            f"ONNX model '{where}' uses opset {opset}; Celosia reads opset {MIN_OPSET} or newer",
            hint=f"re-export with opset_version>={MIN_OPSET}, or convert it: "
                 f"onnx.version_converter.convert_version(model, {MIN_OPSET})",
        )
    try:
        onnx.checker.check_model(proto)
    except Exception as exc:
        raise GraphError(f"ONNX model '{where}' is invalid: {str(exc).splitlines()[0][:300]}",
                         hint="fix the exporter output; onnx.checker.check_model shows the details") from None
    return proto


def _shape_of(vi) -> tuple:
    dims = []
    for d in vi.type.tensor_type.shape.dim:
        dims.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?"))
    return tuple(dims)


class _Importer:
    def __init__(self, proto, name: str, input_shapes: dict | None):
        from onnx import numpy_helper

        self.proto = proto
        g = proto.graph
        self.consts: dict[str, np.ndarray] = {i.name: _f64(numpy_helper.to_array(i)) for i in g.initializer}
        self.b = GraphBuilder(name)
        self.env: dict[str, object] = dict(self.consts)
        self.input_shapes = dict(input_shapes or {})
        self.model_name = name
        self.sigmoid_of: dict[str, str] = {}
        self.dtypes = {vi.name: "bool" for vi in g.input if vi.type.tensor_type.elem_type == 9}  # TensorProto.BOOL

    def v(self, name: str):
        if name == "":
            return None
        return self.env[name]

    def t(self, x, name=None) -> Tensor:
        return x if isinstance(x, Tensor) else self.b.const(np.asarray(x, dtype=np.float64), name)

    def run(self) -> Graph:
        g = self.proto.graph
        for vi in g.input:
            if vi.name in self.consts:
                continue
            shape = tuple(self.input_shapes.get(vi.name, _shape_of(vi)))
            if not shape or not all(isinstance(d, int) and d > 0 for d in shape):
                raise GraphError(
                    f"ONNX input '{vi.name}' has dynamic shape {shape} without bounds",
                    hint=f"pass input_shapes={{'{vi.name}': (1, ...)}} to fix every dimension "
                         "(hardware buffers are sized at compile time)",
                )
            self.env[vi.name] = self.b.input(_safe(vi.name), shape)
        for node in g.node:
            outs = self._node(node)
            outs = outs if isinstance(outs, tuple) else (outs,)
            for name, val in zip(node.output, outs):
                self.env[name] = val
        for vo in g.output:
            out = _safe(vo.name)
            self.b.output(self.t(self.v(vo.name)), out if out not in self.b._graph else f"{out}.out")
        return tidy(self.b.build())

    def _node(self, node):
        from onnx import helper

        args = [self.v(i) for i in node.input]
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        attrs = {k: v.decode() if isinstance(v, bytes) else v for k, v in attrs.items()}
        op = node.op_type
        name = _safe(node.name or node.output[0])
        if op == "Constant":
            from onnx import numpy_helper

            return _f64(numpy_helper.to_array(attrs["value"]))
        if op == "Shape" and isinstance(args[0], Tensor):  # static shapes: a constant
            shape = np.array(args[0].shape, dtype=np.int64)
            return shape[attrs.get("start", 0): attrs.get("end", len(shape))]
        if not any(isinstance(a, Tensor) for a in args):
            return self._fold(node)
        if op in _IDENTITY:
            return args[0]
        return getattr(self, f"_{op}")(name, node, args, attrs)

    def _fold(self, node):
        from onnx import helper
        from onnx.reference import ReferenceEvaluator

        ins = [i for i in node.input if i]
        feeds = {i: np.asarray(self.env[i]) for i in ins}
        g = helper.make_graph([node], "fold", [helper.make_tensor_value_info(i, _dtype(feeds[i]), feeds[i].shape)
                                               for i in ins],
                              [helper.make_tensor_value_info(o, 0, None) for o in node.output])
        m = helper.make_model(g, opset_imports=list(self.proto.opset_import))
        res = ReferenceEvaluator(m).run(None, feeds)
        res = [_f64(np.asarray(r)) for r in res]
        return res[0] if len(res) == 1 else tuple(res)

    # -- compute ----------------------------------------------------------------------
    def _Gemm(self, name, node, a, at):
        x, w = a[0], a[1]
        bias = a[2] if len(a) > 2 else None
        if at.get("transA", 0) or not isinstance(w, np.ndarray) or (bias is not None and not isinstance(bias, np.ndarray)):
            raise _Unmapped("Gemm with transA or a computed weight/bias is not supported")
        w = w * at.get("alpha", 1.0)
        w = w if at.get("transB", 0) else w.T
        if bias is not None:
            bias = np.broadcast_to(bias * at.get("beta", 1.0), (w.shape[0],)).copy()
        return self.b.linear(x, w, bias, name=name)

    def _MatMul(self, name, node, a, at):
        x, w = a
        if isinstance(w, np.ndarray) and w.ndim == 2 and isinstance(x, Tensor):
            return self.b.linear(x, w.T, name=name)
        return self.b.matmul(self.t(x), self.t(w), name=name)

    def _Attention(self, name, node, a, at):
        q, k, v = a[:3]
        if any(x is not None for x in a[4:]) or len(node.output) > 1 and any(node.output[1:]):
            raise _Unmapped("Attention with past key/value, nonpad_kv_seqlen or extra outputs is not supported")
        if at.get("softcap", 0) or at.get("qk_matmul_output_mode", 0):
            raise _Unmapped("Attention softcap / qk output modes are not supported")
        if at.get("left_window_size", -1) != -1 or at.get("right_window_size", -1) != -1:
            raise _Unmapped("Attention with a local window (left/right_window_size) is not supported")
        kw = {"causal": bool(at.get("is_causal", 0)), "scale": at.get("scale"), "name": name}
        if len(q.shape) == 3:
            kw.update(heads=at["q_num_heads"], kv_heads=at["kv_num_heads"])
        if len(a) > 3 and a[3] is not None:
            kw["mask"] = self._key_padding(node, a[3], q.shape[0], k.shape[-2])
        return self.b.attention(q, k, v, **kw)

    def _key_padding(self, node, mask, batch: int, keys: int) -> Tensor:
        """The (B, Tk) keep-mask behind a boolean ``attn_mask`` that masks keys only (True = attend)."""
        hint = ("attn_mask is supported as a boolean key-padding mask of shape (B, 1, 1, Tk) (True = attend); "
                "additive float masks and per-query masks have no Attention mapping")
        if not isinstance(mask, Tensor) or self.dtypes.get(node.input[3]) != "bool" \
                or tuple(mask.shape) != (batch, 1, 1, keys):
            raise _Unmapped(hint)
        return self.b.reshape(mask, (batch, keys), name=f"{node.input[3]}.keys")

    def _Softmax(self, name, node, a, at):
        x = a[0]
        if at.get("axis", -1) % len(x.shape) != len(x.shape) - 1:
            raise _Unmapped("Softmax is supported over the last axis")
        return self.b.softmax(x, name=name)

    def _Relu(self, name, node, a, at):
        return self.b.relu(a[0], name=name)

    def _Gelu(self, name, node, a, at):
        if at.get("approximate", "none") == "tanh":
            return self.b.gelu_tanh(a[0], name=name)
        return self.b.gelu(a[0], name=name)

    def _Sigmoid(self, name, node, a, at):
        self.sigmoid_of[node.output[0]] = node.input[0]
        return _Pending(a[0], node)

    def _LayerNormalization(self, name, node, a, at):
        x, scale = a[0], a[1]
        bias = a[2] if len(a) > 2 and a[2] is not None else np.zeros(x.shape[-1])
        if at.get("axis", -1) % len(x.shape) != len(x.shape) - 1 or len(node.output) > 1 and any(node.output[1:]):
            raise _Unmapped("LayerNormalization is supported over the last axis, with one output")
        return self.b.layernorm(x, scale, bias, at.get("epsilon", 1e-5), name=name)

    def _RMSNormalization(self, name, node, a, at):
        x, scale = a[0], a[1]
        if at.get("axis", -1) % len(x.shape) != len(x.shape) - 1:
            raise _Unmapped("RMSNormalization is supported over the last axis")
        return self.b.rmsnorm(x, scale, at.get("epsilon", 1e-5), name=name)

    def _binary(self, name, node, a, b, kind):
        if isinstance(a, _Pending) or isinstance(b, _Pending):
            p, other = (a, b) if isinstance(a, _Pending) else (b, a)
            if kind == "Mul" and isinstance(other, Tensor) and other.name == p.x.name:
                return self.b.silu(other, name=name)
            raise _Unmapped("Sigmoid is supported only as x * Sigmoid(x) (SiLU)")
        out_shape = tuple(np.broadcast_shapes(np.shape(a) if not isinstance(a, Tensor) else a.shape,
                                              np.shape(b) if not isinstance(b, Tensor) else b.shape))
        if isinstance(a, Tensor) and isinstance(b, Tensor):
            if kind == "Add":
                if a.shape != b.shape:
                    raise _Unmapped(f"Add of computed tensors {a.shape} and {b.shape} needs broadcasting")
                return self.b.add(a, b, name=name)
            return self.b.mul(a, b, name=name)
        x, c = (a, b) if isinstance(a, Tensor) else (b, a)
        c = np.asarray(c, dtype=np.float64)
        if kind == "Add":
            if tuple(x.shape) != out_shape:
                raise _Unmapped(f"Add broadcasts the computed tensor {x.shape} to {out_shape}")
            return self.b.add(x, self.t(np.broadcast_to(c, out_shape).copy(), f"{name}.const"), name=name)
        return self.b.mul(x, self.t(c.reshape(c.shape or (1,)), f"{name}.const"), name=name)

    def _Add(self, name, node, a, at):
        return self._binary(name, node, a[0], a[1], "Add")

    def _Mul(self, name, node, a, at):
        return self._binary(name, node, a[0], a[1], "Mul")

    def _Sub(self, name, node, a, at):
        if isinstance(a[1], Tensor):
            raise _Unmapped("Sub of a computed tensor is not supported; add a negated constant instead")
        return self._binary(name, node, a[0], -np.asarray(a[1], dtype=np.float64), "Add")

    def _Div(self, name, node, a, at):
        if isinstance(a[1], Tensor):
            raise _Unmapped("Div by a computed tensor is not supported")
        return self._binary(name, node, a[0], 1.0 / np.asarray(a[1], dtype=np.float64), "Mul")

    def _Where(self, name, node, a, at):
        # Where(M, -inf, x) == x + (-inf where M, 0 elsewhere): the masked_fill form exporters write
        cond, x, y = a
        if not isinstance(cond, Tensor):
            for keep, fill, pick in ((x, y, ~np.asarray(cond, bool)), (y, x, np.asarray(cond, bool))):
                if isinstance(keep, Tensor) and not isinstance(fill, Tensor) and np.all(np.asarray(fill) == -np.inf):
                    return self._binary(name, node, keep, np.where(pick, -np.inf, 0.0), "Add")
        raise _Unmapped("Where is supported with a constant condition and -inf in the other branch (a constant "
                        "mask before Softmax); give the Attention op a boolean key-padding mask instead")

    def _MoE(self, name, node, a, at):
        return self.b.moe(a[0], *a[1:7], top_k=at["top_k"], activation=at["activation"], name=name)

    def _Erf(self, name, node, a, at):
        raise _Unmapped("Erf is supported inside GELU, x * 0.5 * (1 + erf(x / sqrt(2)))")

    def _Expand(self, name, node, a, at):
        x, shape = a
        if tuple(np.broadcast_shapes(x.shape, tuple(int(d) for d in shape))) != tuple(x.shape):
            raise _Unmapped("Expand of a computed tensor is supported only when it keeps the shape")
        return x

    def _Conv(self, name, node, a, at):
        x, w = a[0], a[1]
        bias = a[2] if len(a) > 2 else None
        k = tuple(at.get("kernel_shape", w.shape[2:]))
        if (not isinstance(w, np.ndarray) or len(k) != 2 or tuple(at.get("strides", (1, 1))) != k
                or any(at.get("pads", (0, 0, 0, 0))) or at.get("group", 1) != 1
                or tuple(at.get("dilations", (1, 1))) != (1, 1) or at.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID")):
            raise _Unmapped(_HINTS["Conv"])
        bsz, c, h, wd = x.shape
        gh, gw = h // k[0], wd // k[1]
        t = self.b.reshape(x, (bsz, c, gh, k[0], gw, k[1]), name=f"{name}.split")
        t = self.b.transpose(t, (0, 2, 4, 1, 3, 5), name=f"{name}.order")
        t = self.b.reshape(t, (bsz, gh * gw, c * k[0] * k[1]), name=f"{name}.patches")
        y = self.b.linear(t, w.reshape(w.shape[0], -1), bias, name=f"{name}.linear")
        y = self.b.transpose(y, (0, 2, 1), name=f"{name}.chw")
        return self.b.reshape(y, (bsz, w.shape[0], gh, gw), name=name)

    def _Gather(self, name, node, a, at):
        data, idx = a
        axis = at.get("axis", 0)
        if isinstance(data, np.ndarray) and isinstance(idx, Tensor):
            if axis != 0 or data.ndim != 2:
                raise _Unmapped("Gather of a constant is supported as an embedding lookup (2-D table, axis 0)")
            return self.b.embedding(idx, data, name=name)
        if isinstance(data, Tensor) and isinstance(idx, np.ndarray) and idx.ndim == 0:
            axis %= len(data.shape)
            i = int(idx) % data.shape[axis]
            s = self.b.slice(data, axis, i, i + 1, name=f"{name}.slice")
            return self.b.reshape(s, data.shape[:axis] + data.shape[axis + 1:], name=name)
        raise _Unmapped("Gather is supported as an embedding lookup or with one constant index")

    # -- layout -----------------------------------------------------------------------
    def _Reshape(self, name, node, a, at):
        x, shape = a
        target = [int(d) for d in np.asarray(shape)]
        if not at.get("allowzero", 0):
            target = [x.shape[i] if d == 0 else d for i, d in enumerate(target)]
        out = np.empty(x.shape).reshape(target).shape
        return self.b.reshape(x, out, name=name)

    def _Flatten(self, name, node, a, at):
        x = a[0]
        axis = at.get("axis", 1) % (len(x.shape) + 1)
        return self.b.reshape(x, (int(np.prod(x.shape[:axis])), int(np.prod(x.shape[axis:]))), name=name)

    def _axes(self, a, at):
        axes = a[1] if len(a) > 1 and a[1] is not None else at.get("axes")
        return None if axes is None else [int(i) for i in np.asarray(axes).ravel()]

    def _Squeeze(self, name, node, a, at):
        x, axes = a[0], self._axes(a, at)
        axes = [i % len(x.shape) for i in axes] if axes is not None else [i for i, d in enumerate(x.shape) if d == 1]
        return self.b.reshape(x, tuple(d for i, d in enumerate(x.shape) if i not in axes), name=name)

    def _Unsqueeze(self, name, node, a, at):
        x, axes = a[0], self._axes(a, at)
        rank = len(x.shape) + len(axes)
        axes = sorted(i % rank for i in axes)
        shape, it = [], iter(x.shape)
        for i in range(rank):
            shape.append(1 if i in axes else next(it))
        return self.b.reshape(x, tuple(shape), name=name)

    def _Transpose(self, name, node, a, at):
        x = a[0]
        perm = at.get("perm") or list(reversed(range(len(x.shape))))
        return self.b.transpose(x, perm, name=name)

    def _Slice(self, name, node, a, at):
        x = a[0]
        starts, ends = np.asarray(a[1]).ravel(), np.asarray(a[2]).ravel()
        axes = np.asarray(a[3]).ravel() if len(a) > 3 and a[3] is not None else np.arange(len(starts))
        steps = np.asarray(a[4]).ravel() if len(a) > 4 and a[4] is not None else np.ones(len(starts), int)
        t = x
        for j, (s, e, ax, st) in enumerate(zip(starts, ends, axes, steps)):
            if st != 1:
                raise _Unmapped("Slice with a step other than 1 is not supported")
            ax = int(ax) % len(t.shape)
            lo, hi, _ = slice(int(s), int(min(e, 2**62)), 1).indices(t.shape[ax])
            if (lo, hi) != (0, t.shape[ax]):
                t = self.b.slice(t, ax, lo, hi, name=name if j == len(starts) - 1 else f"{name}.{j}")
        return t

    def _Split(self, name, node, a, at):
        x = a[0]
        axis = at.get("axis", 0) % len(x.shape)
        sizes = a[1] if len(a) > 1 and a[1] is not None else at.get("split")
        n = len(node.output)
        sizes = [int(s) for s in np.asarray(sizes).ravel()] if sizes is not None else [x.shape[axis] // n] * n
        outs, start = [], 0
        for i, s in enumerate(sizes):
            outs.append(self.b.slice(x, axis, start, start + s, name=f"{name}.{i}"))
            start += s
        return tuple(outs)

    def _Concat(self, name, node, a, at):
        parts = [self.t(p, f"{name}.part{i}") for i, p in enumerate(a)]
        return self.b.concat(parts, at["axis"] % len(parts[0].shape), name=name)


class _Pending:
    """A Sigmoid waiting for the Mul that makes it a SiLU."""

    def __init__(self, x: Tensor, node):
        self.x, self.node = x, node


class _Unmapped(Exception):
    """A supported ONNX op used in a way the frontend cannot map (hint in the message)."""


def _f64(arr: np.ndarray) -> np.ndarray:
    """Float arrays as float64 (the IR's float type); integer and bool arrays unchanged."""
    return arr.astype(np.float64) if arr.dtype.kind == "f" else arr


def _safe(name: str) -> str:
    return name.replace("/", ".").strip(".") or "node"


def _dtype(arr: np.ndarray) -> int:
    from onnx import helper

    return helper.np_dtype_to_tensor_dtype(arr.dtype)


def _scan(proto) -> list[Unsupported]:
    """Nodes without a mapping that are not foldable (computed from constants and shapes only)."""
    out = []
    const = {i.name for i in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type in ("Constant", "Shape") or all(i in const for i in node.input if i):
            const.update(node.output)
            continue
        if node.op_type == "Conv" and not _conv_ok(node, proto):
            out.append(Unsupported(node.name or node.output[0], "Conv", "overlapping or padded convolution",
                                   _HINTS["Conv"]))
            continue
        if node.domain == _DOMAIN and node.op_type == "MoE":
            continue
        if node.op_type not in SUPPORTED_ONNX or node.domain not in ("", "ai.onnx"):
            out.append(Unsupported(
                node.name or node.output[0], node.op_type if not node.domain else f"{node.domain}.{node.op_type}",
                f"no IR mapping for ONNX {node.op_type}",
                _HINTS.get(node.op_type, "supported ops: " + ", ".join(sorted(SUPPORTED_ONNX))),
            ))
    return out


def _conv_ok(node, proto) -> bool:
    """True if a Conv is a patch embedding: stride = kernel, no padding, dilation 1, one group."""
    from onnx import helper

    at = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    k = at.get("kernel_shape")
    if k is None:
        w = next((i for i in proto.graph.initializer if i.name == node.input[1]), None)
        k = list(w.dims[2:]) if w is not None else None
    return (k is not None and len(k) == 2 and list(at.get("strides", [1, 1])) == list(k)
            and not any(at.get("pads", [0, 0, 0, 0])) and at.get("group", 1) == 1
            and list(at.get("dilations", [1, 1])) == [1, 1])


def _fuse_erf_gelu(proto):
    """Rewrite the exporters' erf GELU, ``x·0.5·(1 + erf(x/√2))`` in any operand order, into one Gelu."""
    from onnx import helper, numpy_helper

    g = proto.graph
    consts = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    for n in g.node:
        if n.op_type == "Constant":
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t) if n.attribute[0].t.dims or \
                n.attribute[0].type == 4 else None
    producer = {o: n for n in g.node for o in n.output}
    users: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            users.setdefault(i, []).append(n)

    def scalar(name):
        v = consts.get(name)
        return float(np.asarray(v).ravel()[0]) if v is not None and np.asarray(v).size == 1 else None

    def other(n, name):
        return n.input[1] if n.input[0] == name else n.input[0]

    dead, new_nodes = set(), {}
    for erf in [n for n in g.node if n.op_type == "Erf"]:
        pre = producer.get(erf.input[0])
        if pre is None or pre.op_type not in ("Div", "Mul"):
            continue
        c = scalar(pre.input[1])
        if c is None or not np.isclose(c if pre.op_type == "Div" else 1 / c, np.sqrt(2), rtol=1e-6):
            continue
        x = pre.input[0]
        chain = [pre, erf]
        cur = erf.output[0]
        ok, seen_x, seen_half, seen_one = True, False, False, False
        while ok and not (seen_x and seen_half and seen_one):
            us = users.get(cur, [])
            if len(us) != 1:
                ok = False
                break
            n = us[0]
            o = other(n, cur)
            if n.op_type == "Add" and not seen_one and scalar(o) == 1.0:
                seen_one = True
            elif n.op_type == "Mul" and not seen_half and scalar(o) == 0.5:
                seen_half = True
            elif n.op_type == "Mul" and not seen_x and o == x:
                seen_x = True
            else:
                ok = False
                break
            chain.append(n)
            cur = n.output[0]
        if not ok:
            continue
        dead.update(id(n) for n in chain)
        new_nodes[id(chain[0])] = helper.make_node("Gelu", [x], [cur], name=(erf.name or cur) + ".gelu")
    return _rewritten(proto, {k: (node, []) for k, node in new_nodes.items()}, dead)


def _fuse_moe(proto):
    """Rewrite the exported dense V-MoE routing into one fused MoE node (domain ``ai.celosia``).

    Pattern (``torch.onnx.export`` of :class:`celosia.frontend.training.models.MoEMLP`)::

        g = Softmax(x·Wg + bg);  v, i = TopK(g, k);  w = ScatterElements(zeros, i, v)
        y = ReduceSum(Concat_e(Unsqueeze(expert_e(x), -1)) · Unsqueeze(w, -2), -1)
        expert_e(x) = act(x·W1_e + b1_e)·W2_e + b2_e        act: Gelu, Relu or x·Sigmoid(x)
    """
    from onnx import helper, numpy_helper

    g = proto.graph
    consts = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    for n in g.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    producer = {o: n for n in g.node for o in n.output}
    users: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            users.setdefault(i, []).append(n)

    def sole(name, op_type):
        us = users.get(name, [])
        return us[0] if len(us) == 1 and us[0].op_type == op_type else None

    def linear(out):
        """``(x, w (out, in), b)`` of ``MatMul(x, W) + b`` or ``Gemm``, else None."""
        n = producer.get(out)
        if n is None:
            return None
        if n.op_type == "Gemm":
            at = {a.name: helper.get_attribute_value(a) for a in n.attribute}
            if len(n.input) < 3 or n.input[1] not in consts or n.input[2] not in consts or at.get("transA", 0):
                return None
            w = consts[n.input[1]] * at.get("alpha", 1.0)
            return n.input[0], (w if at.get("transB", 0) else w.T), consts[n.input[2]] * at.get("beta", 1.0)
        if n.op_type != "Add":
            return None
        for b, m in ((n.input[0], n.input[1]), (n.input[1], n.input[0])):
            mm = producer.get(m)
            if b in consts and mm is not None and mm.op_type == "MatMul" and mm.input[1] in consts:
                return mm.input[0], consts[mm.input[1]].T, consts[b]
        return None

    fused, dead = {}, set()
    for topk in [n for n in g.node if n.op_type == "TopK"]:
        try:
            sm = producer[topk.input[0]]
            gate = linear(sm.input[0]) if sm.op_type == "Softmax" else None
            if gate is None:
                continue
            x, gw, gb = gate
            k = int(np.asarray(consts[topk.input[1]]).ravel()[0])
            scat = sole(topk.output[1], "ScatterElements")
            if scat is None or scat.input[2] != topk.output[0] or np.any(consts.get(scat.input[0], 1) != 0):
                continue
            unsq = sole(scat.output[0], "Unsqueeze")
            mul = sole(unsq.output[0], "Mul") if unsq else None
            rsum = sole(mul.output[0], "ReduceSum") if mul else None
            cat = producer[mul.input[0] if mul.input[1] == unsq.output[0] else mul.input[1]] if rsum else None
            if cat is None or cat.op_type != "Concat":
                continue
            experts, acts, chain = [], set(), [topk, scat, unsq, mul, rsum, cat]
            for part in cat.input:
                u = producer[part]
                fc2 = linear(u.input[0]) if u.op_type == "Unsqueeze" else None
                act = producer.get(fc2[0]) if fc2 else None
                if act is None:
                    raise KeyError
                if act.op_type in ("Gelu", "Relu"):
                    kind, pre = ("gelu" if act.op_type == "Gelu" else "relu"), act.input[0]
                    at = {a.name: helper.get_attribute_value(a) for a in act.attribute}
                    if at.get("approximate", b"none") not in (b"none", "none"):
                        raise KeyError
                elif act.op_type == "Mul" and any(producer.get(i) is not None and producer[i].op_type == "Sigmoid"
                                                  for i in act.input):
                    sig = next(producer[i] for i in act.input if producer.get(i) is not None
                               and producer[i].op_type == "Sigmoid")
                    kind, pre = "silu", sig.input[0]
                else:
                    raise KeyError
                fc1 = linear(pre)
                if fc1 is None or fc1[0] != x:
                    raise KeyError
                acts.add(kind)
                experts.append((fc1[1], fc1[2], fc2[1], fc2[2]))
                chain.append(u)
            if len(acts) != 1:
                continue
        except (KeyError, AttributeError, IndexError, TypeError):
            continue
        name = rsum.name or rsum.output[0]
        stacked = {"gate_w": gw, "gate_b": gb}
        for j, key in enumerate(("w1", "b1", "w2", "b2")):
            stacked[key] = np.stack([e[j] for e in experts])
        inits = []
        for key, value in stacked.items():
            inits.append(numpy_helper.from_array(np.asarray(value, dtype=np.float64), f"{name}.{key}"))
        fused[id(rsum)] = (helper.make_node("MoE", [x] + [t.name for t in inits], [rsum.output[0]], name=name,
                                            domain=_DOMAIN, top_k=k, activation=acts.pop()), inits)
        dead.update(id(n) for n in chain)
    return _rewritten(proto, fused, dead)


def _rewritten(proto, replace: dict, dead: set):
    """A copy of ``proto`` where node ``n`` with ``id(n)`` in ``replace`` becomes ``replace[id(n)] =
    (node, initializers)`` and nodes with ids in ``dead`` are dropped (``proto`` itself if nothing
    is replaced)."""
    if not replace:
        return proto
    out = type(proto)()
    out.CopyFrom(proto)
    del out.graph.node[:]
    for n in proto.graph.node:
        if id(n) in replace:
            node, inits = replace[id(n)]
            out.graph.node.append(node)
            out.graph.initializer.extend(inits)
        elif id(n) not in dead:
            out.graph.node.append(n)
    return out


def _translate(proto, name, input_shapes):
    proto = _fuse_moe(_fuse_erf_gelu(proto))
    items = _scan(proto)
    if items:
        return None, items
    imp = _Importer(proto, name, input_shapes)
    node = None
    try:
        return imp.run(), []
    except _Unmapped as exc:
        done = set(imp.env)
        node = next((n for n in proto.graph.node if n.output and n.output[0] not in done), proto.graph.node[0])
        return None, [Unsupported(node.name or node.output[0], node.op_type, str(exc), str(exc))]


def load(model, *, name: str | None = None, input_shapes: dict | None = None) -> Graph:
    """Import an ONNX model as a float IR graph.

    Parameters
    ----------
    model : path, bytes or onnx.ModelProto
    name : str, optional
        Graph name (default: the file's stem or the ONNX graph name).
    input_shapes : dict of str to tuple, optional
        Static shapes for inputs with symbolic dimensions.

    Raises
    ------
    GraphError
        Corrupt/truncated file, opset below 17, unbounded dynamic shapes.
    UnsupportedOpsError
        Listing every node without a mapping.
    """
    proto = read(model)
    name = name or (Path(model).stem if isinstance(model, (str, os.PathLike)) else proto.graph.name or "model")
    graph, items = _translate(proto, name, input_shapes)
    if items:
        raise UnsupportedOpsError(name, items)
    return graph


def check(model, *, name: str | None = None, input_shapes: dict | None = None) -> list[Unsupported]:
    """Every node of the ONNX model that cannot be imported (empty if it imports)."""
    proto = read(model)
    name = name or (Path(model).stem if isinstance(model, (str, os.PathLike)) else proto.graph.name or "model")
    return _translate(proto, name, input_shapes)[1]
