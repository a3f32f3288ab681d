"""Golden executors: float64 reference and bit-exact integer execution of the quantized graph.

The integer executor is the specification the RTL is checked against, bit for bit;
its arithmetic comes from :mod:`celosia.ir.numerics` only.
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np

from celosia.errors import GraphError, SimulationError
from celosia.ir import numerics as nx_
from celosia.ir.attention import attention_float, attention_int
from celosia.ir.elementwise import embedding_float, embedding_int, matmul_int, mul_int
from celosia.ir.gelu import gelu_int
from celosia.ir.layout import concat_int, layout_apply
from celosia.ir.moe import moe_float, moe_int
from celosia.ir.perchannel import linear_int_per_channel
from celosia.ir.silu import silu_float, silu_int
from celosia.ir.norm import layernorm_int, rmsnorm_int
from celosia.ir.softmax import softmax_int
from celosia.ir.graph import Graph, Op

__all__ = ["run_float", "run_int", "linear_params", "feed_inputs"]


def feed_inputs(graph: Graph, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Check ``inputs`` against the graph's Input ops and return them as float64 arrays."""
    names = [op.name for op in graph.inputs]
    missing = [n for n in names if n not in inputs]
    extra = [n for n in inputs if n not in names]
    if missing or extra:
        raise GraphError(
            f"graph '{graph.name}' takes inputs {names}; missing {missing}, unexpected {extra}"
        )
    fed = {}
    for op in graph.inputs:
        arr = np.asarray(inputs[op.name], dtype=np.float64)
        if arr.shape != op.type.shape:
            raise GraphError(
                f"input '{op.name}' has shape {arr.shape}, the graph expects {op.type.shape}"
            )
        fed[op.name] = arr
    return fed


def run_float(graph: Graph, inputs: Mapping[str, np.ndarray], *, keep_all: bool = False) -> dict[str, np.ndarray]:
    """Execute ``graph`` in float64.

    Returns the Output tensors by name (all tensors if ``keep_all``).
    """
    env: dict[str, np.ndarray] = dict(feed_inputs(graph, inputs))
    for op in graph:
        if op.kind == "Input":
            continue
        args = [env[i] for i in op.inputs]
        env[op.name] = _float_op(op, args)
    return env if keep_all else {op.name: env[op.name] for op in graph.outputs}


def _float_activation(activation: str | None, y: np.ndarray) -> np.ndarray:
    """A fused Linear epilogue's activation in float64."""
    if activation == "relu":
        return np.maximum(y, 0.0)
    if activation == "gelu":
        return 0.5 * y * _erfc(-y / np.sqrt(2.0))  # erfc form: no cancellation for very negative y
    return y


def linear_preactivation_float(op: Op, args: list[np.ndarray]) -> np.ndarray:
    """A Linear's output before its fused activation (what its format must hold)."""
    return _float_op(op.evolve(attrs={k: v for k, v in op.attrs.items() if k != "activation"}), args)


def _float_op(op: Op, args: list[np.ndarray]) -> np.ndarray:
    kind = op.kind
    if kind == "Const":
        return np.asarray(op.attrs["value"], dtype=np.float64)
    if kind == "Linear":
        y = args[0] @ args[1].T
        if len(args) >= 3:
            y = y + args[2]
        if len(args) == 4:
            y = y + args[3]
        return _float_activation(op.attrs.get("activation"), y)
    if kind == "ReLU":
        return np.maximum(args[0], 0.0)
    if kind == "Add":
        return args[0] + args[1]
    if kind == "Softmax":
        z = np.exp(args[0] - args[0].max(axis=-1, keepdims=True))
        return z / z.sum(axis=-1, keepdims=True)
    if kind == "GELU" and op.attrs.get("approximate", "none") == "tanh":
        x = args[0]
        return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))
    if kind == "GELU":
        return _float_activation("gelu", args[0])
    if kind in ("LayerNorm", "RMSNorm"):
        x = args[0]
        eps = op.attrs.get("eps", 1e-5)
        if kind == "LayerNorm":
            x = x - x.mean(axis=-1, keepdims=True)
            return x / np.sqrt((x * x).mean(axis=-1, keepdims=True) + eps) * args[1] + args[2]
        return x / np.sqrt((x * x).mean(axis=-1, keepdims=True) + eps) * args[1]
    if kind == "Output":
        return args[0]
    if kind == "MatMul":
        return np.matmul(args[0], args[1])
    if kind == "Mul":
        return args[0] * args[1]
    if kind == "SiLU":
        return silu_float(args[0])
    if kind == "Embedding":
        return embedding_float(args[0], args[1])
    if kind == "Attention":
        return attention_float(*args[:3], args[3] if len(args) == 4 else None, op.attrs)
    if kind == "MoE":
        return moe_float(*args, op.attrs)
    if kind in ("Reshape", "Transpose", "Slice"):
        return layout_apply(kind, op.attrs, args[0])
    if kind == "Concat":
        return np.concatenate(args, axis=int(op.attrs.get("axis", 0)))
    raise GraphError(f"op '{op.name}': no float semantics for kind '{kind}'")


_erfc = np.vectorize(math.erfc, otypes=[np.float64])


def linear_params(graph: Graph, op: Op) -> dict:
    """Integer parameters of a quantized Linear: shifts, rounding, formats.

    ``shift = frac_x + frac_w - frac_y`` and ``res_shift = frac_x + frac_w - frac_res``.
    """
    fx = graph.op(op.inputs[0]).type.fmt
    fw = graph.op(op.inputs[1]).type.fmt
    fy = op.type.fmt
    acc_frac = fx.frac + fw.frac
    params = {
        "acc_frac": acc_frac,
        "shift": acc_frac - fy.frac,
        "res_shift": 0,
        "rounding": nx_.Rounding(op.attrs.get("rounding", nx_.Rounding.HALF_EVEN)),
        "relu": op.attrs.get("activation") == "relu",
        "out_fmt": fy,
    }
    if len(op.inputs) == 4:
        params["res_shift"] = acc_frac - graph.op(op.inputs[3]).type.fmt.frac
    return params


def run_int(graph: Graph, inputs: Mapping[str, np.ndarray], *, keep_all: bool = False) -> dict[str, np.ndarray]:
    """Execute a quantized graph bit-exactly on integer codes.

    Float inputs are quantized to their Input formats (round half to even,
    saturate). Returns integer codes (int64) of the Output tensors (all tensors if
    ``keep_all``); use :func:`celosia.ir.numerics.dequantize` for their values.
    """
    env: dict[str, np.ndarray] = {}
    for name, arr in feed_inputs(graph, inputs).items():
        env[name] = nx_.quantize(arr, graph.op(name).type.fmt)
    for op in graph:
        if op.kind == "Input":
            continue
        if op.type is None or op.type.fmt is None:
            raise SimulationError(f"op '{op.name}' ({op.kind}) is not quantized", hint="run the quantize pass")
        args = [env[i] for i in op.inputs]
        env[op.name] = _int_op(graph, op, args)
    return env if keep_all else {op.name: env[op.name] for op in graph.outputs}


def _linear_per_channel(graph: Graph, op: Op, args: list[np.ndarray]) -> np.ndarray:
    """A Linear whose weight has per-output-channel formats (see celosia.ir.perchannel)."""
    fx = graph.op(op.inputs[0]).type.fmt
    acc = np.array([fx.frac + f for f in graph.op(op.inputs[1]).attrs["channel_frac"]])
    fmt = op.type.fmt
    res = res_shifts = None
    if len(args) == 4:
        res = args[3].reshape(-1, op.type.shape[-1])
        res_shifts = acc - graph.op(op.inputs[3]).type.fmt.frac
    y = linear_int_per_channel(
        args[0].reshape(-1, args[0].shape[-1]), args[1].T, args[2], fmt, acc - fmt.frac,
        nx_.Rounding(op.attrs.get("rounding", nx_.Rounding.HALF_EVEN)), op.attrs.get("activation") == "relu",
        res, res_shifts,
    )
    return _int_gelu(op, y).reshape(op.type.shape)


def _int_gelu(op: Op, y: np.ndarray) -> np.ndarray:
    """The fused GELU epilogue: ``gelu_int`` in the Linear's own output format (in = out)."""
    return gelu_int(y, op.type.fmt, op.type.fmt) if op.attrs.get("activation") == "gelu" else y


def _int_op(graph: Graph, op: Op, args: list[np.ndarray]) -> np.ndarray:
    kind = op.kind
    fmt = op.type.fmt
    if kind == "Const":
        return np.asarray(op.attrs["codes"], dtype=np.int64)
    if kind == "Linear" and "channel_frac" in graph.op(op.inputs[1]).attrs:
        return _linear_per_channel(graph, op, args)
    if kind == "Linear":
        p = linear_params(graph, op)
        n = op.type.shape[-1]
        bias = args[2] if len(args) >= 3 else np.zeros(n, dtype=np.int64)
        x2 = args[0].reshape(-1, args[0].shape[-1])
        res = args[3].reshape(-1, n) if len(args) == 4 else None
        y = nx_.linear_int(
            x2, args[1].T, bias, fmt, p["shift"], p["rounding"], p["relu"], res, p["res_shift"]
        )
        return _int_gelu(op, y).reshape(op.type.shape)
    if kind == "ReLU":
        src = graph.op(op.inputs[0]).type.fmt
        return nx_.requantize(np.maximum(args[0], 0), src.frac, fmt)
    if kind == "Add":
        fa = graph.op(op.inputs[0]).type.fmt
        fb = graph.op(op.inputs[1]).type.fmt
        frac = max(fa.frac, fb.frac)
        total = nx_.shift_round(args[0], fa.frac - frac) + nx_.shift_round(args[1], fb.frac - frac)
        return nx_.requantize(total, frac, fmt)
    # GELU: the unit computes the erf form for both attrs; a tanh-form op's bound vs its float
    # semantics adds max|gelu_tanh - gelu_erf| = 4.73e-4 (docs/frontends.md).
    if kind == "GELU":
        return gelu_int(args[0], graph.op(op.inputs[0]).type.fmt, fmt)
    if kind == "Softmax":
        x = args[0].reshape(-1, args[0].shape[-1])
        return softmax_int(x, None, graph.op(op.inputs[0]).type.fmt, fmt).reshape(args[0].shape)
    if kind in ("LayerNorm", "RMSNorm"):
        fin = graph.op(op.inputs[0]).type.fmt
        eps = op.attrs.get("eps", 1e-5)
        gamma = (args[1], graph.op(op.inputs[1]).type.fmt)
        if kind == "RMSNorm":
            return rmsnorm_int(args[0], fin, fmt, *gamma, eps)
        return layernorm_int(args[0], fin, fmt, *gamma, args[2], graph.op(op.inputs[2]).type.fmt, eps)
    if kind == "Output":
        src = graph.op(op.inputs[0]).type.fmt
        return nx_.requantize(args[0], src.frac, fmt)
    fin = [graph.op(i).type.fmt for i in op.inputs]
    if kind == "MatMul":
        return matmul_int(args[0], args[1], fin[0], fin[1], fmt)
    if kind == "Mul":
        return mul_int(args[0], args[1], fin[0], fin[1], fmt)
    if kind == "SiLU":
        return silu_int(args[0], fin[0], fmt)
    if kind == "Embedding":
        return embedding_int(args[0], args[1], fin[1], fmt)
    if kind == "Attention":
        mask = args[3] if len(args) == 4 else None
        return attention_int(*args[:3], mask, op.attrs, *fin[:3], fmt)
    if kind == "MoE":
        return moe_int(*args, op.attrs, fin[0], fin[1], fin[3], fin[5], fmt)
    if kind in ("Reshape", "Transpose", "Slice"):
        return nx_.requantize(layout_apply(kind, op.attrs, args[0]), fin[0].frac, fmt)
    if kind == "Concat":
        return concat_int(args, fin, int(op.attrs.get("axis", 0)) % args[0].ndim, fmt)
    raise SimulationError(f"op '{op.name}': no integer semantics for kind '{kind}'")
