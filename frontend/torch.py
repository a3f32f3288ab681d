"""PyTorch frontend: ``nn.Module`` + example inputs -> float IR graph, through ``torch.export``.

The module is exported with static shapes (``torch.export.export``, then
``run_decompositions({})`` so high-level ATen ops such as ``linear``, ``layer_norm`` and
``scaled_dot_product_attention`` stay whole), and every ATen node is mapped to IR ops:

==================================  =========================================================
ATen                                IR
==================================  =========================================================
linear, conv2d (stride = kernel,    Linear (a patch embedding is Reshape/Transpose + Linear)
no padding, groups 1)
matmul, bmm, mm                     MatMul
scaled_dot_product_attention        Attention (GQA via ``enable_gqa``, ``is_causal``, scale,
                                    a boolean key-padding ``attn_mask`` such as ``keep[:, None, None, :]``);
(nn.MultiheadAttention decomposes   q/k/v coming from ``view + transpose`` of a projection
into it)                            use the packed (B, T, H·E) form
softmax (last dim), gelu (erf /     Softmax, GELU (``approximate`` kept: the two forms are
tanh), relu, silu                   distinguished), ReLU, SiLU
layer_norm, rms_norm (last dim)     LayerNorm, RMSNorm
add, sub, rsub, mul, div            Add (constants broadcast at import, computed operands
                                    expanded: the IR's Add does not broadcast), Mul;
                                    Sub / Div of computed tensors (float only)
sum, mean over dimensions           ReduceSum, Mean (one per dimension; ``keepdim`` kept)
topk, zeros_like, _to_copy          TopK (values, indices), a constant, Cast (float dtypes
                                    are the identity: the IR computes in float64)
embedding                           Embedding
view/reshape/permute/transpose/     Reshape, Transpose, Slice, Concat, Expand; chains are
flatten/unflatten/(un)squeeze/      composed and no-ops removed
select/slice/split/unbind/cat/      (:func:`celosia.ir.passes.fold_layout`)
stack/expand
dropout, clone, alias, contiguous   removed
softmax -> topk -> scatter ->       MoE (V-MoE routing: softmax gate, top-k probabilities
weighted sum of stacked experts     not renormalised, experts Linear-act-Linear)
==================================  =========================================================

Operations on parameters alone are folded into constants at import. Anything else is
reported, all nodes at once, with its source line (:class:`UnsupportedOpsError`). When
``torch.export`` itself fails (data-dependent control flow, unsupported Python), the error
quotes the failing line of the model's source with a hint; the partial FX graph torch prints
is not shown.
Torch is imported lazily: ``celosia.frontend.torch`` imports without it.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import operator
import re
import sys
import warnings
import traceback
from typing import Any, Callable

import numpy as np

from celosia.errors import CelosiaError, GraphError
from celosia.frontend.builder import GraphBuilder, Tensor
from celosia.frontend.support import Unsupported, UnsupportedOpsError
from celosia.ir.graph import Graph
from celosia.ir.mathops import CAST_TARGETS
from celosia.ir.pipeline import tidy

__all__ = ["load", "check", "SUPPORTED_ATEN"]

_IDENTITY = {"alias", "clone", "contiguous", "detach", "detach_", "dropout", "lift_fresh_copy",
             "_assert_tensor_metadata"}
_LAYOUT = {"view", "reshape", "_unsafe_view", "flatten", "unflatten", "unsqueeze", "squeeze", "expand",
           "transpose", "permute", "t", "select", "slice", "cat", "split", "split_with_sizes", "stack", "unbind"}
_COMPUTE = {"linear", "conv2d", "convolution", "matmul", "bmm", "mm", "scaled_dot_product_attention", "softmax",
            "_softmax", "gelu", "relu", "silu", "layer_norm", "rms_norm", "add", "sub", "rsub", "mul", "div",
            "embedding", "topk", "zeros_like", "scatter", "sum", "mean", "masked_fill", "_to_copy"}
#: ATen op names (overload stripped) the frontend maps.
SUPPORTED_ATEN = frozenset(_IDENTITY | _LAYOUT | _COMPUTE)

_HINTS = {
    "scatter": "scatter is supported inside the V-MoE routing pattern (softmax gate -> topk -> scatter -> "
               "weighted sum of stacked experts); write the block that way",
    "conv2d": "use a convolution with stride equal to its kernel, no padding, groups=1 (a patch embedding)",
}


def _require_torch():
    try:
        import torch
    except ImportError:
        raise CelosiaError(
            "the PyTorch frontend needs torch, which is not installed",
            hint="pip install torch (CPU build), or export the model to ONNX and use celosia.frontend.onnx",
        ) from None
    return torch


def _aten_name(target) -> str:
    name = getattr(target, "__name__", str(target))
    return name.split(".")[0]


def _source(node) -> str | None:
    trace = node.meta.get("stack_trace") or ""
    found = re.findall(r'File "([^"]+)", line (\d+)', trace)
    if not found:
        return None
    user = [f for f in found if "site-packages/torch/" not in f[0] and "/torch/nn/" not in f[0]]
    path, line = (user or found)[-1]
    return f"{path}:{line}"


def _export(model, args: tuple, name: str):
    torch = _require_torch()
    if isinstance(model, torch.export.ExportedProgram):
        ep = model
    else:
        if not isinstance(model, torch.nn.Module):
            raise CelosiaError(f"'{name}' is a {type(model).__name__}, not a torch.nn.Module",
                               hint="pass an nn.Module and a tuple of example inputs")
        model = model.eval()
        with _quiet_export() as captured:
            try:
                ep = torch.export.export(model, args)
            except Exception as exc:  # data-dependent control flow, unsupported Python, ...
                raise _export_error(model, name, exc) from None
        sys.stderr.write(captured.getvalue())  # a successful export's warnings, as torch printed them
    with warnings.catch_warnings():
        # torch 2.13's run_decompositions deep-copies pytree LeafSpecs, which warn about their own
        # deprecation: torch's internals, not the user's model
        warnings.filterwarnings("ignore", category=FutureWarning,
                                message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
        try:
            return ep.run_decompositions({})
        except Exception:
            return ep


@contextlib.contextmanager
def _quiet_export():
    """Capture what ``torch.export`` writes to stderr: on failure it prints the partial FX graph
    (and logs symbolic-shape warnings), which the error raised instead replaces with the
    failing source line."""
    buf = io.StringIO()
    loggers = [logging.getLogger(n) for n in ("torch.fx.experimental.symbolic_shapes", "torch._dynamo",
                                              "torch.export")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stderr(buf):
            yield buf
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _export_error(model, name: str, exc: Exception) -> CelosiaError:
    try:
        src = inspect.getsourcefile(type(model))
    except TypeError:
        src = None
    where = None
    frames = traceback.extract_tb(exc.__traceback__)
    for fr in frames:
        if src and fr.filename == src:
            where = f"{fr.filename}:{fr.lineno} ({(fr.line or '').strip()})"
    if where is None:
        found = re.findall(r'File "([^"]+)", line (\d+)(?:, in \w+)?\s*\n\s*(.+)', str(exc))
        user = [f for f in found if "site-packages" not in f[0]]
        if user:
            f = user[-1]
            where = f"{f[0]}:{f[1]} ({f[2].strip()})"
    data_dep = any(k in type(exc).__name__ + str(exc) for k in ("data-dependent", "DataDependent", "GuardOnDataDependent",
                                                                 "Could not guard", "data dependent"))
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    what = "data-dependent control flow" if data_dep else f"{type(exc).__name__}: {first[:200]}"
    return GraphError(
        f"torch.export cannot trace '{name}': {what}" + (f" at {where}" if where else ""),
        hint="Celosia compiles static dataflow: replace branches and loops on tensor values with tensor ops "
             "(e.g. torch.where, masks, the dense top-k routing of a V-MoE block)",
    )


class _Importer:
    def __init__(self, ep, name: str):
        self.ep = ep
        self.b = GraphBuilder(name)
        self.env: dict[str, Any] = {}
        self.skip: set[str] = set()
        self.deferred: dict[str, Callable[[], Any]] = {}
        self.params = self._params()

    def _params(self) -> dict[str, np.ndarray]:
        sig = self.ep.graph_signature
        state = dict(self.ep.state_dict)
        state.update(getattr(self.ep, "constants", {}) or {})
        out = {}
        for spec in sig.input_specs:
            if spec.target is not None and spec.target in state:
                out[spec.arg.name] = state[spec.target].detach().cpu().double().numpy()
        return out

    # -- values ---------------------------------------------------------------------
    def v(self, a):
        """The value of an FX argument: Tensor (IR), ndarray (constant) or a Python value."""
        import torch.fx as fx

        if isinstance(a, fx.Node):
            if a.name not in self.env:
                raise GraphError(f"node '{a.name}' is used outside the pattern that consumed it")
            return self.env[a.name]
        if isinstance(a, (list, tuple)):
            return type(a)(self.v(x) for x in a)
        return a

    def t(self, x, name=None) -> Tensor:
        """An IR tensor for ``x`` (a constant becomes a Const op)."""
        if isinstance(x, Tensor):
            return x
        return self.b.const(np.asarray(x, dtype=np.float64), name)

    # -- the walk ---------------------------------------------------------------------
    def run(self) -> Graph:
        graph = self.ep.graph
        for node in graph.nodes:
            if node.op == "placeholder":
                self._placeholder(node)
            elif node.op == "call_function":
                if node.name in self.skip:
                    continue
                if node.name in self.deferred:
                    self.env[node.name] = self.deferred.pop(node.name)()
                    continue
                self.env[node.name] = self._call(node)
            elif node.op == "output":
                outs = node.args[0] if isinstance(node.args[0], (list, tuple)) else (node.args[0],)
                for i, o in enumerate(outs):
                    self.b.output(self.t(self.v(o)), "output" if len(outs) == 1 else f"output{i}")
        return tidy(self.b.build())

    def _placeholder(self, node) -> None:
        if node.name in self.params:
            self.env[node.name] = self.params[node.name]
            return
        val = node.meta.get("val")
        shape = tuple(getattr(val, "shape", ()))
        if not all(isinstance(d, int) for d in shape):
            raise GraphError(
                f"input '{node.name}' has a dynamic shape {tuple(str(d) for d in shape)}",
                hint="export with static example shapes (no dynamic_shapes): hardware buffers are sized at compile time",
            )
        self.env[node.name] = self.b.input(node.name, shape)

    def _call(self, node):
        op = _aten_name(node.target)
        op = "softmax" if op == "_softmax" else op
        if node.target is operator.getitem:
            seq = self.v(node.args[0])
            return seq[node.args[1]]
        args = [self.v(a) for a in node.args]
        kwargs = {k: self.v(a) for k, a in node.kwargs.items()}
        if not any(isinstance(x, Tensor) for x in _flat(args) + _flat(list(kwargs.values()))):
            return self._fold(node, args, kwargs)
        handler = getattr(self, "_" + op.lstrip("_"), None)
        if op in _IDENTITY:
            return args[0]
        if handler is None:
            raise GraphError(f"no mapping for {op}")  # filtered out by check() first
        return handler(node, *args, **kwargs)

    def _fold(self, node, args, kwargs):
        """Evaluate an op whose operands are all constants, with torch itself."""
        import torch

        conv = lambda x: torch.from_numpy(x) if isinstance(x, np.ndarray) else x  # noqa: E731
        targs = [conv(a) if not isinstance(a, (list, tuple)) else type(a)(conv(x) for x in a) for a in args]
        res = node.target(*targs, **{k: conv(v) for k, v in kwargs.items()})
        if isinstance(res, torch.Tensor):
            return res.detach().double().numpy()
        if isinstance(res, (tuple, list)):
            return type(res)(r.detach().double().numpy() if isinstance(r, torch.Tensor) else r for r in res)
        return res

    def shape(self, node) -> tuple[int, ...]:
        return tuple(int(d) for d in node.meta["val"].shape)

    # -- layout ---------------------------------------------------------------------
    def _reshape_to(self, node, x, *_, **__):
        return self.b.reshape(self.t(x), self.shape(node), name=node.name)

    _view = _reshape = _unsafe_view = _flatten = _unflatten = _unsqueeze = _squeeze = _reshape_to

    def _expand(self, node, x, *_, **__):
        return self._expand_to(x, self.shape(node), node.name)

    def _transpose(self, node, x, d0, d1, *_, **__):
        perm = list(range(len(x.shape)))
        d0, d1 = d0 % len(perm), d1 % len(perm)
        perm[d0], perm[d1] = perm[d1], perm[d0]
        return self.b.transpose(x, perm, name=node.name)

    def _t(self, node, x, *_):
        return self._transpose(node, x, 0, 1)

    def _permute(self, node, x, dims, *_):
        return self.b.transpose(x, [d % len(x.shape) for d in dims], name=node.name)

    def _select(self, node, x, dim, index, *_):
        dim = dim % len(x.shape)
        index = index % x.shape[dim]
        s = self.b.slice(x, dim, index, index + 1, name=f"{node.name}.slice")
        return self.b.reshape(s, self.shape(node), name=node.name)

    def _unbind(self, node, x, dim=0):
        dim = dim % len(x.shape)
        shape = x.shape[:dim] + x.shape[dim + 1:]
        return tuple(
            self.b.reshape(self.b.slice(x, dim, i, i + 1, name=f"{node.name}.{i}.slice"), shape, name=f"{node.name}.{i}")
            for i in range(x.shape[dim])
        )

    def _slice(self, node, x, dim=0, start=None, end=None, step=1, *_):
        dim = dim % len(x.shape)
        n = x.shape[dim]
        start, end = slice(start, end).indices(n)[:2]
        if step != 1:
            raise GraphError(f"slice with step {step}")
        if start == 0 and end == n:
            return x
        return self.b.slice(x, dim, start, end, name=node.name)

    def _cat(self, node, parts, dim=0, *_):
        parts = [self.t(p, f"{node.name}.part{i}") for i, p in enumerate(parts)]
        return self.b.concat(parts, dim % len(parts[0].shape), name=node.name)

    def _split(self, node, x, size, dim=0, *_):
        dim = dim % len(x.shape)
        sizes = [size] * (x.shape[dim] // size) + ([x.shape[dim] % size] if x.shape[dim] % size else [])
        return self._split_with_sizes(node, x, sizes, dim)

    def _split_with_sizes(self, node, x, sizes, dim=0, *_):
        dim = dim % len(x.shape)
        out, start = [], 0
        for i, s in enumerate(sizes):
            out.append(self.b.slice(x, dim, start, start + s, name=f"{node.name}.{i}"))
            start += s
        return tuple(out)

    def _stack(self, node, parts, dim=0):
        parts = [self.t(p) for p in parts]
        rank = len(parts[0].shape) + 1
        dim = dim % rank
        shape = parts[0].shape[:dim] + (1,) + parts[0].shape[dim:]
        cols = [self.b.reshape(p, shape, name=f"{node.name}.in{i}") for i, p in enumerate(parts)]
        return self.b.concat(cols, dim, name=node.name)

    # -- compute --------------------------------------------------------------------
    def _linear(self, node, x, w, b=None):
        if not isinstance(w, np.ndarray):
            return self.b.matmul(x, self.b.transpose(w, (1, 0)), name=node.name)
        return self.b.linear(x, w, b, name=node.name)

    def _conv2d(self, node, x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
        k = tuple(w.shape[2:])
        st = tuple(stride) if isinstance(stride, (list, tuple)) else (stride, stride)
        pad = tuple(padding) if isinstance(padding, (list, tuple)) else (padding, padding)
        dil = tuple(dilation) if isinstance(dilation, (list, tuple)) else (dilation, dilation)
        if st != k or any(pad) or dil != (1, 1) or groups != 1 or not isinstance(w, np.ndarray):
            raise _Unmapped(_HINTS["conv2d"])
        bsz, c, h, wd = x.shape
        gh, gw = h // k[0], wd // k[1]
        if gh * k[0] != h or gw * k[1] != wd:
            raise _Unmapped("the image size must be a multiple of the kernel")
        t = self.b.reshape(x, (bsz, c, gh, k[0], gw, k[1]), name=f"{node.name}.split")
        t = self.b.transpose(t, (0, 2, 4, 1, 3, 5), name=f"{node.name}.order")
        t = self.b.reshape(t, (bsz, gh * gw, c * k[0] * k[1]), name=f"{node.name}.patches")
        y = self.b.linear(t, w.reshape(w.shape[0], -1), b, name=node.name)
        y = self.b.transpose(y, (0, 2, 1), name=f"{node.name}.chw")
        return self.b.reshape(y, (bsz, w.shape[0], gh, gw), name=f"{node.name}.out")

    def _convolution(self, node, x, w, b, stride, padding, dilation, transposed, _out_pad, groups):
        if transposed:
            raise _Unmapped("transposed convolutions are not supported")
        return self._conv2d(node, x, w, b, stride, padding, dilation, groups)

    def _matmul(self, node, a, b):
        return self.b.matmul(self.t(a), self.t(b), name=node.name)

    _bmm = _mm = _matmul

    def _scaled_dot_product_attention(self, node, q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False,
                                      scale=None, enable_gqa=False):
        mask = self._key_padding(node, attn_mask, q, k) if attn_mask is not None else None
        if dropout_p:
            raise _Unmapped("attention dropout must be 0 (export the model in eval mode)")
        packed = [self._packed(t) for t in (q, k, v)]
        if all(p is not None for p in packed):
            (qs, hq), (ks, hk), (vs, _) = packed
            y = self.b.attention(qs, ks, vs, heads=hq, kv_heads=hk, causal=bool(is_causal), scale=scale,
                                 mask=mask, name=node.name)
            bsz, t, d = y.shape
            y = self.b.reshape(y, (bsz, t, hq, d // hq), name=f"{node.name}.heads")
            return self.b.transpose(y, (0, 2, 1, 3), name=f"{node.name}.bhte")
        return self.b.attention(q, k, v, causal=bool(is_causal), scale=scale, mask=mask, name=node.name)

    def _key_padding(self, node, mask, q, k) -> Tensor:
        """The (B, Tk) tensor behind a boolean ``attn_mask`` that only masks keys (True = attend)."""
        hint = "attn_mask is supported as a boolean key-padding mask, e.g. keep[:, None, None, :] (True = attend)"
        val = node.args[3].meta.get("val") if len(node.args) > 3 else node.kwargs["attn_mask"].meta.get("val")
        if not isinstance(mask, Tensor) or str(getattr(val, "dtype", "")) != "torch.bool":
            raise _Unmapped(hint)
        g = self.b._graph
        op = g.op(mask.name)
        while op.kind == "Reshape":
            op = g.op(op.inputs[0])
        bsz, tk = q.shape[0], k.shape[-2]
        # attn_mask broadcasts against the (B, [H,] Tq, Tk) scores from the right
        if tuple(op.type.shape) != (bsz, tk) or tuple(mask.shape) != (bsz,) + (1,) * (len(q.shape) - 2) + (tk,):
            raise _Unmapped(hint)
        return Tensor(op.name, op.type.shape)

    def _packed(self, t: Tensor):
        """``(x, heads)`` if ``t`` is ``x (B, T, H·E)`` viewed as (B, T, H, E) and transposed to (B, H, T, E)."""
        g = self.b._graph
        op = g.op(t.name)
        if op.kind != "Transpose" or tuple(op.attrs["perm"]) != (0, 2, 1, 3):
            return None
        r = g.op(op.inputs[0])
        if r.kind != "Reshape":
            return None
        src = g.op(r.inputs[0])
        b, tt, h, e = r.type.shape
        if tuple(src.type.shape) != (b, tt, h * e):
            return None
        return Tensor(src.name, src.type.shape), h

    def _softmax(self, node, x, dim=-1, *_):
        if dim % len(x.shape) != len(x.shape) - 1:
            raise _Unmapped("softmax is supported over the last dimension")
        return self.b.softmax(x, name=node.name)

    def _gelu(self, node, x, approximate="none"):
        return self.b.gelu_tanh(x, name=node.name) if approximate == "tanh" else self.b.gelu(x, name=node.name)

    def _relu(self, node, x):
        return self.b.relu(x, name=node.name)

    def _silu(self, node, x):
        return self.b.silu(x, name=node.name)

    def _layer_norm(self, node, x, shape, w=None, b=None, eps=1e-5, *_):
        if len(shape) != 1:
            raise _Unmapped("LayerNorm is supported over the last dimension only")
        d = x.shape[-1]
        return self.b.layernorm(x, np.ones(d) if w is None else w, np.zeros(d) if b is None else b, eps, name=node.name)

    def _rms_norm(self, node, x, shape, w=None, eps=None):
        if len(shape) != 1:
            raise _Unmapped("RMSNorm is supported over the last dimension only")
        eps = float(np.finfo(np.float32).eps) if eps is None else eps
        return self.b.rmsnorm(x, np.ones(x.shape[-1]) if w is None else w, eps, name=node.name)

    def _embedding(self, node, table, ids, *_):
        if not isinstance(table, np.ndarray):
            raise _Unmapped("the embedding table must be a parameter")
        return self.b.embedding(ids, table, name=node.name)

    def _expand_to(self, x: Tensor, shape: tuple, name: str) -> Tensor:
        return x if tuple(x.shape) == tuple(shape) else self.b.op("Expand", x, name=name, shape=tuple(shape))

    def _binary(self, node, a, b, kind: str):
        out_shape = self.shape(node)
        if isinstance(a, Tensor) and isinstance(b, Tensor):
            if kind == "Add":  # the IR's Add does not broadcast: expand the operands first
                return self.b.add(self._expand_to(a, out_shape, f"{node.name}.a"),
                                  self._expand_to(b, out_shape, f"{node.name}.b"), name=node.name)
            return self.b.mul(a, b, name=node.name)
        x, c = (a, b) if isinstance(a, Tensor) else (b, a)
        c = np.asarray(c, dtype=np.float64)
        if kind == "Add":
            x = self._expand_to(x, out_shape, f"{node.name}.x")
            return self.b.add(x, self.t(np.broadcast_to(c, out_shape).copy(), f"{node.name}.const"), name=node.name)
        if c.ndim == 0:
            c = c.reshape(1)
        return self.b.mul(x, self.t(c, f"{node.name}.const"), name=node.name)

    def _add(self, node, a, b, alpha=1):
        if alpha != 1:
            b = b * alpha if not isinstance(b, Tensor) else self._binary(node, b, np.array(alpha), "Mul")
        return self._binary(node, a, b, "Add")

    def _sub(self, node, a, b, alpha=1):
        if not isinstance(b, Tensor):  # a − c = a + (−c), exactly
            return self._binary(node, a, -alpha * np.asarray(b, dtype=np.float64), "Add")
        if alpha != 1:
            b = self.b.mul(b, self.t(np.array([float(alpha)]), f"{node.name}.alpha"), name=f"{node.name}.scaled")
        return self.b.op("Sub", self.t(a, f"{node.name}.const"), b, name=node.name)

    def _rsub(self, node, a, b, alpha=1):  # b − alpha·a
        if not isinstance(b, Tensor):  # c − alpha·x = (−alpha)·x + c, exactly for alpha = 1
            neg = self.b.mul(a, self.t(np.array([-float(alpha)]), f"{node.name}.neg"), name=f"{node.name}.negated")
            return self._binary(node, neg, np.asarray(b, dtype=np.float64), "Add")
        return self._sub(node, b, a, alpha)

    def _mul(self, node, a, b):
        return self._binary(node, a, b, "Mul")

    def _div(self, node, a, b, rounding_mode=None, **_):
        if rounding_mode is not None:
            raise _Unmapped(f"division with rounding_mode={rounding_mode!r} is not supported")
        if not isinstance(b, Tensor):  # x / c as x · (1/c): the form the hardware multiplies in
            with np.errstate(divide="ignore"):
                return self._binary(node, a, 1.0 / np.asarray(b, dtype=np.float64), "Mul")
        return self.b.op("Div", self.t(a, f"{node.name}.const"), b, name=node.name)

    def _reduce(self, node, kind: str, x, dims=None, keepdim=False):
        """``sum``/``mean`` over dimensions: one ReduceSum / Mean per dimension, kept, then a Reshape."""
        rank = len(x.shape)
        dims = [dims] if isinstance(dims, int) else list(dims or [])
        dims = sorted({int(d) % rank for d in dims}) if dims else list(range(rank))
        t = x
        for j, d in enumerate(dims):
            last = j == len(dims) - 1 and keepdim
            t = self.b.op(kind, t, name=node.name if last else f"{node.name}.{d}", axis=d, keepdims=True)
        return t if keepdim else self.b.reshape(t, self.shape(node), name=node.name)

    def _sum(self, node, x, dims=None, keepdim=False, dtype=None):
        return self._reduce(node, "ReduceSum", x, dims, keepdim)

    def _mean(self, node, x, dims=None, keepdim=False, dtype=None):
        return self._reduce(node, "Mean", x, dims, keepdim)

    def _masked_fill(self, node, x, mask, value):
        # masked_fill(x, M, -inf) == x + (0 where not M, -inf where M): exact, and the form the
        # attention canonicalization recognises (a constant causal / key-padding mask)
        if isinstance(mask, Tensor) or not isinstance(x, Tensor) or float(value) != -np.inf:
            raise _Unmapped("masked_fill is supported with a constant mask and the value -inf "
                            "(e.g. a causal mask buffer); use scaled_dot_product_attention for input masks")
        add = np.where(np.broadcast_to(np.asarray(mask) != 0, self.shape(node)), -np.inf, 0.0)
        return self._binary(node, x, add, "Add")

    def _topk(self, node, x, k, dim=-1, largest=True, sorted=True):
        kw = {"k": int(k), "axis": dim % len(x.shape), "largest": bool(largest)}
        return (self.b.op("TopK", x, name=f"{node.name}.values", output="values", **kw),
                self.b.op("TopK", x, name=f"{node.name}.indices", output="indices", **kw))

    def _to_copy(self, node, x, *_, dtype=None, **__):
        """``x.to(dtype)``: float dtypes are the identity (the IR computes in float64), narrower
        floats, integers and bool a Cast (integers truncate toward zero, as torch does)."""
        name = str(dtype).replace("torch.", "") if dtype is not None else "float64"
        if name in ("float32", "float64"):
            return x
        if name not in CAST_TARGETS:
            raise _Unmapped(f"conversion to {dtype} has no IR type", "convert to a float, integer or bool dtype")
        return self.b.op("Cast", x, name=node.name, to=name)

    def _zeros_like(self, node, x, *_, **__):  # static shapes: a constant
        return np.zeros(self.shape(node))

    def _scatter(self, node, *_args, **_kw):
        raise _Unmapped(_HINTS["scatter"])  # only reached when the MoE pattern did not match


class _Unmapped(Exception):
    """A supported ATen op used in a way the frontend cannot map (hint in the message)."""


def _flat(xs) -> list:
    out = []
    for x in xs:
        out.extend(_flat(x) if isinstance(x, (list, tuple)) else [x])
    return out


# -- MoE routing pattern -----------------------------------------------------------------
def _users(node, name: str):
    return [u for u in node.users if _aten_name(u.target) == name]


def _match_moe(imp: _Importer, topk) -> bool:
    """Recognise the dense V-MoE routing pattern around ``topk`` and defer it to one MoE op."""
    try:
        sm = topk.args[0]
        if _aten_name(sm.target) not in ("softmax", "_softmax"):
            return False
        gate = sm.args[0]
        if _aten_name(gate.target) != "linear":
            return False
        x = gate.args[0]
        gw, gb = (imp.params.get(getattr(a, "name", None)) for a in (gate.args[1], gate.args[2]))
        k = int(topk.args[1])
        items = {u.args[1]: u for u in topk.users}
        vals, idx = items[0], items[1]
        (scatter,) = [u for u in idx.users if _aten_name(u.target) == "scatter"]
        if scatter.args[3] is not vals:
            return False
        zeros = scatter.args[0]
        (unsq,) = _users(scatter, "unsqueeze")
        (mul,) = _users(unsq, "mul")
        stack = mul.args[0] if mul.args[1] is unsq else mul.args[1]
        (total,) = _users(mul, "sum")
        if _aten_name(stack.target) != "stack":
            return False
        experts = []
        for out in stack.args[0]:
            act = out.args[0]
            fc1 = act.args[0]
            kind = _aten_name(act.target)
            if _aten_name(out.target) != "linear" or _aten_name(fc1.target) != "linear" or fc1.args[0] is not x:
                return False
            if kind not in ("gelu", "silu", "relu") or (kind == "gelu" and act.kwargs.get("approximate", "none") != "none"):
                return False
            experts.append((act, fc1, out))
    except (AttributeError, ValueError, KeyError, IndexError, TypeError):
        return False
    p = imp.params

    def w(n):
        return p[n.name] if n is not None else None

    try:
        w1 = np.stack([w(fc1.args[1]) for _, fc1, _ in experts])
        b1 = np.stack([w(fc1.args[2]) for _, fc1, _ in experts])
        w2 = np.stack([w(o.args[1]) for _, _, o in experts])
        b2 = np.stack([w(o.args[2]) for _, _, o in experts])
    except (KeyError, AttributeError, IndexError, ValueError):
        return False
    if gw is None or gb is None:
        return False
    activation = _aten_name(experts[0][0].target)
    imp.skip.update(n.name for n in (topk, vals, idx, scatter, zeros, unsq, mul, stack))
    imp.deferred[total.name] = lambda: imp.b.moe(imp.env[x.name], gw, gb, w1, b1, w2, b2, top_k=k,
                                                 activation=activation, name=total.name)
    return True


def _scan(ep) -> list[Unsupported]:
    """Every node the frontend has no mapping for (ops on constants alone are folded by torch)."""
    state = set(ep.state_dict) | set(getattr(ep, "constants", {}) or {})
    const = {spec.arg.name for spec in ep.graph_signature.input_specs if spec.target in state}
    out = []
    for node in ep.graph.nodes:
        if node.op != "call_function":
            continue
        if all(a.name in const for a in node.all_input_nodes):
            const.add(node.name)
            continue
        name = _aten_name(node.target)
        if name == "getitem" or name in SUPPORTED_ATEN or _bookkeeping(node, name):
            continue
        out.append(Unsupported(node.name, f"aten.{name}", f"no IR mapping for aten.{name}",
                               "rewrite it with supported ops (see celosia.frontend.torch)", _source(node)))
    return out


_SHAPE_CHECKS = {"sym_size", "sym_stride", "sym_numel", "sym_storage_offset", "_assert_scalar", "_assert_async",
                 "sym_constrain_range", "sym_constrain_range_for_size"}


def _bookkeeping(node, name: str) -> bool:
    """True for the shape checks torch.export adds around a data-dependent size (the op that
    made the size is what gets listed)."""
    import torch

    val = node.meta.get("val")
    return name in _SHAPE_CHECKS or isinstance(val, (torch.SymInt, torch.SymBool, torch.SymFloat))


def _translate(ep, name: str) -> tuple[Graph | None, list[Unsupported]]:
    items = _scan(ep)
    if items:
        return None, items
    imp = _Importer(ep, name)
    for node in ep.graph.nodes:
        if node.op == "call_function" and _aten_name(node.target) == "topk":
            _match_moe(imp, node)
    try:
        return imp.run(), []
    except _Unmapped as exc:
        node = _current(imp, ep)
        return None, [Unsupported(node.name, f"aten.{_aten_name(node.target)}", str(exc), str(exc), _source(node))]


def _current(imp: _Importer, ep):
    """The first call node not translated yet (the one that raised)."""
    for node in ep.graph.nodes:
        if node.op == "call_function" and node.name not in imp.env and node.name not in imp.skip:
            return node
    return next(iter(ep.graph.nodes))


def load(model, example_inputs, *, name: str | None = None) -> Graph:
    """Import a PyTorch model as a float IR graph.

    Parameters
    ----------
    model : torch.nn.Module or torch.export.ExportedProgram
        The model (put in eval mode) or an already exported program.
    example_inputs : tuple of torch.Tensor
        Inputs of the static shapes to compile for (the batch size included).
    name : str, optional
        Graph name (default: the module's class name).

    Raises
    ------
    UnsupportedOpsError
        Listing every node without a mapping, with source lines.
    GraphError
        For data-dependent control flow or dynamic shapes, naming the source line.
    """
    name = name or type(model).__name__
    args = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    graph, items = _translate(_export(model, args, name), name)
    if items:
        raise UnsupportedOpsError(name, items)
    return graph


def check(model, example_inputs, *, name: str | None = None) -> list[Unsupported]:
    """Every node of ``model`` the frontend cannot import (empty if it imports)."""
    name = name or type(model).__name__
    args = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    return _translate(_export(model, args, name), name)[1]
