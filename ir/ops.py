"""The op set of the IR: every op declared once, in the registry (:mod:`celosia.ir.registry`).

Each declaration below gives an op's arity and shape rule, float semantics, bit-exact integer
semantics, quantization rule and, when a generated unit runs it, its hardware binding
(:mod:`celosia.ir.binding`). The arithmetic lives in :mod:`celosia.ir.numerics` and in one module
per op family (:mod:`celosia.ir.attention`, :mod:`celosia.ir.softmax`, :mod:`celosia.ir.norm`,
:mod:`celosia.ir.gelu`, :mod:`celosia.ir.silu`, :mod:`celosia.ir.moe`,
:mod:`celosia.ir.elementwise`, :mod:`celosia.ir.layout`). docs/adding_an_op.md is the recipe for a
new op.

Ops
---
Input   ()            attrs: shape
Const   ()            attrs: value (numpy array)
Linear  (x, w[, b])   y = x @ w.T + b; w is (out, in) like PyTorch and ONNX Gemm(transB=1).
                      After ``fuse_epilogues``: attrs activation ("relu", "gelu" or None) and an
                      optional 4th operand, a residual added before the activation.
ReLU    (x)
Add     (a, b)        same shapes, no broadcasting
Softmax (x)           over the last axis
GELU    (x)           erf form, x * Phi(x); attrs approximate: "none" (default) or "tanh" (float
                      semantics of the tanh form; the integer unit computes the erf form)
LayerNorm (x, gamma, beta)   over the last axis; attrs eps
RMSNorm (x, gamma)    over the last axis; attrs eps
Output  (x)
MatMul  (a, b)        batched a @ b, numpy matmul broadcasting of leading dims
Mul     (a, b)        elementwise product, numpy broadcasting
SiLU    (x)           x * sigmoid(x)
Embedding (ids, table)  table[ids]; ids integral, table (vocab, dim)
Attention (q, k, v[, mask])  multi-head softmax(scale q k^T) v; attrs heads, kv_heads
                      (packed (B, T, H*E) layout), causal, scale; mask (B, Tk) 1 = attend
MoE     (x, gate_w, gate_b, w1, b1, w2, b2)  softmax gate, top-k, expert MLPs, combine;
                      attrs top_k, activation
Reshape (x)           attrs shape (static, no -1); no compute
Transpose (x)         attrs perm; no compute
Slice   (x)           attrs axis, start, stop; no compute
Concat  (x0, x1, ...) attrs axis
Mean    (x)           mean over attrs axis (keepdims, default False): mean pooling over tokens
"""

from __future__ import annotations

import numpy as np

from celosia.errors import GraphError
from celosia.ir import numerics as nx_
from celosia.ir.attention import (TILE, attention_float, attention_int, attention_scores_float, attention_shapes,
                                  key_count, prob_format)
from celosia.ir.binding import (ATTENTION_UNIT, HOST_BINDING, LINEAR_BINDING, ROW_NORM, VECTOR_ADD, VECTOR_CONCAT,
                                VECTOR_LAYOUT, VECTOR_MEAN)
from celosia.ir.elementwise import embedding_float, embedding_int, matmul_int, mul_int
from celosia.ir.gelu import gelu_float, gelu_int
from celosia.ir.graph import Graph, Op
from celosia.ir.layout import concat_int, layout_apply
from celosia.ir.moe import moe_float, moe_int, moe_shapes
from celosia.ir.norm import layernorm_int, rmsnorm_int
from celosia.ir.perchannel import linear_int_per_channel
from celosia.ir.reduce import mean_float, mean_int
from celosia.ir.quantize import QuantContext, linear_format, moe_formats, quantize_const
from celosia.ir.registry import OpDef, register
from celosia.ir.silu import silu_float, silu_int
from celosia.ir.softmax import softmax_int
from celosia.ir.types import TensorType

__all__ = ["linear_params", "linear_preactivation_float"]


# ---- shape rules ---------------------------------------------------------------------------------

def _shape_attr(op: Op, _: list[TensorType]) -> tuple[int, ...]:
    shape = tuple(op.attrs.get("shape", ()))
    if not shape or any(not isinstance(d, (int, np.integer)) or d <= 0 for d in shape):
        raise GraphError(
            f"Input '{op.name}' has shape {shape}; every dimension must be a positive integer",
            hint="give the input a static shape such as (1, 64)",
        )
    return tuple(int(d) for d in shape)


def _const(op: Op, _: list[TensorType]) -> tuple[int, ...]:
    value = op.attrs.get("value")
    if not isinstance(value, np.ndarray):
        raise GraphError(f"Const '{op.name}' has no numpy 'value' attribute")
    return tuple(value.shape)


def _same(op: Op, ins: list[TensorType]) -> tuple[int, ...]:
    return ins[0].shape


def _linear(op: Op, ins: list[TensorType]) -> tuple[int, ...]:
    x, w = ins[0], ins[1]
    if len(w.shape) != 2:
        raise GraphError(f"Linear '{op.name}': weight '{op.inputs[1]}' must be 2-D (out, in), got {w.shape}")
    if not x.shape or x.shape[-1] != w.shape[1]:
        raise GraphError(
            f"Linear '{op.name}': input '{op.inputs[0]}' has shape {x.shape} but weight "
            f"'{op.inputs[1]}' has shape {w.shape} (expects last dim {w.shape[1]})",
            hint="the input's last dimension must equal the weight's in_features",
        )
    out = x.shape[:-1] + (w.shape[0],)
    if len(ins) >= 3 and ins[2].shape != (w.shape[0],):
        raise GraphError(
            f"Linear '{op.name}': bias '{op.inputs[2]}' has shape {ins[2].shape}, expected ({w.shape[0]},)"
        )
    if len(ins) == 4 and ins[3].shape != out:
        raise GraphError(
            f"Linear '{op.name}': residual '{op.inputs[3]}' has shape {ins[3].shape}, expected {out}"
        )
    return out


def _norm(op: Op, ins: list[TensorType]) -> tuple[int, ...]:
    x = ins[0]
    for name, t in zip(op.inputs[1:], ins[1:]):
        if t.shape != (x.shape[-1],):
            raise GraphError(
                f"{op.kind} '{op.name}': parameter '{name}' has shape {t.shape}, but input "
                f"'{op.inputs[0]}' {x.shape} normalizes over a last axis of {x.shape[-1]}",
                hint=f"gamma and beta must have shape ({x.shape[-1]},)",
            )
    if not op.attrs.get("eps", 1e-5) > 0:
        raise GraphError(f"{op.kind} '{op.name}': eps must be positive, got {op.attrs.get('eps')}")
    return x.shape


def _add(op: Op, ins: list[TensorType]) -> tuple[int, ...]:
    a, b = ins
    if a.shape != b.shape:
        raise GraphError(
            f"Add '{op.name}': operands '{op.inputs[0]}' {a.shape} and '{op.inputs[1]}' {b.shape} differ in shape",
            hint="Celosia's Add does not broadcast; reshape or expand one operand",
        )
    return a.shape


def _broadcast(op: Op, ins: list[TensorType]) -> tuple[int, ...]:
    try:
        return tuple(np.broadcast_shapes(ins[0].shape, ins[1].shape))
    except ValueError:
        raise GraphError(
            f"{op.kind} '{op.name}': operands '{op.inputs[0]}' {ins[0].shape} and '{op.inputs[1]}' "
            f"{ins[1].shape} do not broadcast",
            hint="shapes must agree or be 1 in every trailing dimension",
        ) from None


def _matmul(op: Op, ins: list[TensorType]) -> tuple[int, ...]:
    a, b = ins[0].shape, ins[1].shape
    if len(a) < 2 or len(b) < 2 or a[-1] != b[-2]:
        raise GraphError(
            f"MatMul '{op.name}': '{op.inputs[0]}' {a} and '{op.inputs[1]}' {b} cannot be multiplied",
            hint="operands must be at least 2-D with a's last dim equal to b's second to last",
        )
    try:
        lead = tuple(np.broadcast_shapes(a[:-2], b[:-2]))
    except ValueError:
        raise GraphError(f"MatMul '{op.name}': batch dims {a[:-2]} and {b[:-2]} do not broadcast") from None
    return lead + (a[-2], b[-1])


def _gelu(op: Op, ins: list[TensorType]) -> tuple[int, ...]:
    if op.attrs.get("approximate", "none") not in ("none", "tanh"):
        raise GraphError(f"GELU '{op.name}': approximate={op.attrs['approximate']!r} is not 'none' or 'tanh'")
    return ins[0].shape


def _embedding(op: Op, ins: list[TensorType]) -> tuple[int, ...]:
    if len(ins[1].shape) != 2:
        raise GraphError(f"Embedding '{op.name}': table '{op.inputs[1]}' must be 2-D (vocab, dim), got {ins[1].shape}")
    return ins[0].shape + (ins[1].shape[1],)


def _reshape(op: Op, ins: list[TensorType]) -> tuple[int, ...]:
    shape = tuple(int(d) for d in op.attrs.get("shape", ()))
    if any(d <= 0 for d in shape) or int(np.prod(shape)) != ins[0].size:
        raise GraphError(
            f"Reshape '{op.name}': cannot reshape '{op.inputs[0]}' {ins[0].shape} to {shape}",
            hint="the target shape must be static (no -1) and hold the same number of elements",
        )
    return shape


def _transpose(op: Op, ins: list[TensorType]) -> tuple[int, ...]:
    perm = tuple(int(p) for p in op.attrs.get("perm", ()))
    if sorted(perm) != list(range(len(ins[0].shape))):
        raise GraphError(f"Transpose '{op.name}': perm {perm} is not a permutation of the axes of {ins[0].shape}")
    return tuple(ins[0].shape[p] for p in perm)


def _axis(op: Op, rank: int) -> int:
    axis = int(op.attrs.get("axis", 0))
    if not -rank <= axis < rank:
        raise GraphError(f"{op.kind} '{op.name}': axis {axis} is out of range for rank {rank}")
    return axis % rank


def _slice(op: Op, ins: list[TensorType]) -> tuple[int, ...]:
    shape = ins[0].shape
    axis = _axis(op, len(shape))
    start, stop = int(op.attrs.get("start", 0)), int(op.attrs.get("stop", shape[axis]))
    if not 0 <= start < stop <= shape[axis]:
        raise GraphError(f"Slice '{op.name}': [{start}:{stop}] is empty or outside axis {axis} of {shape}")
    return shape[:axis] + (stop - start,) + shape[axis + 1:]


def _concat(op: Op, ins: list[TensorType]) -> tuple[int, ...]:
    first = ins[0].shape
    axis = _axis(op, len(first))
    for name, t in zip(op.inputs, ins):
        if len(t.shape) != len(first) or t.shape[:axis] + t.shape[axis + 1:] != first[:axis] + first[axis + 1:]:
            raise GraphError(f"Concat '{op.name}': '{name}' {t.shape} does not fit {first} along axis {axis}")
    return first[:axis] + (sum(t.shape[axis] for t in ins),) + first[axis + 1:]



def _attention(op: Op, ins: list[TensorType]) -> tuple[int, ...]:
    return attention_shapes(op.name, [t.shape for t in ins], op.attrs)


def _moe(op: Op, ins: list[TensorType]) -> tuple[int, ...]:
    return moe_shapes(op.name, [t.shape for t in ins], op.attrs)


def _mean(op: Op, ins: list[TensorType]) -> tuple[int, ...]:
    shape = ins[0].shape
    axis = _axis(op, len(shape))
    if op.attrs.get("keepdims", False):
        return shape[:axis] + (1,) + shape[axis + 1:]
    if len(shape) == 1:
        raise GraphError(f"Mean '{op.name}': the mean of a vector is a scalar; keep the axis (keepdims=True)")
    return shape[:axis] + shape[axis + 1:]


def _mean_args(op: Op, x: np.ndarray) -> tuple[int, bool]:
    return int(op.attrs.get("axis", 0)) % x.ndim, bool(op.attrs.get("keepdims", False))


# ---- shared semantics ----------------------------------------------------------------------------

_FLOAT_ACTIVATIONS = {None: lambda y: y, "relu": lambda y: np.maximum(y, 0.0), "gelu": gelu_float}


def _linear_float(op: Op, args: list[np.ndarray]) -> np.ndarray:
    y = args[0] @ args[1].T
    for extra in args[2:]:  # bias, then residual
        y = y + extra
    return _FLOAT_ACTIVATIONS[op.attrs.get("activation")](y)


def linear_preactivation_float(op: Op, args: list[np.ndarray]) -> np.ndarray:
    """A Linear's output before its fused activation (what its format must hold)."""
    return _linear_float(op.evolve(attrs={k: v for k, v in op.attrs.items() if k != "activation"}), args)


def linear_params(op: Op, ins: list[Op]) -> dict:
    """Integer parameters of a quantized Linear (``ins`` its operand ops): shifts, rounding, formats.

    ``shift = frac_x + frac_w - frac_y`` and ``res_shift = frac_x + frac_w - frac_res``.
    """
    acc_frac = ins[0].type.fmt.frac + ins[1].type.fmt.frac
    return {
        "acc_frac": acc_frac,
        "shift": acc_frac - op.type.fmt.frac,
        "res_shift": acc_frac - ins[3].type.fmt.frac if len(ins) == 4 else 0,
        "rounding": nx_.Rounding(op.attrs.get("rounding", nx_.Rounding.HALF_EVEN)),
        "relu": op.attrs.get("activation") == "relu",
        "out_fmt": op.type.fmt,
    }


def _fused_gelu(op: Op, y: np.ndarray) -> np.ndarray:
    """The fused GELU epilogue: ``gelu_int`` in the Linear's own output format (in = out)."""
    return gelu_int(y, op.type.fmt, op.type.fmt) if op.attrs.get("activation") == "gelu" else y


def _linear_int(op: Op, args: list[np.ndarray], ins: list[Op]) -> np.ndarray:
    n = op.type.shape[-1]
    x2 = args[0].reshape(-1, args[0].shape[-1])
    res = args[3].reshape(-1, n) if len(args) == 4 else None
    rounding = nx_.Rounding(op.attrs.get("rounding", nx_.Rounding.HALF_EVEN))
    relu = op.attrs.get("activation") == "relu"
    if "channel_frac" in ins[1].attrs:  # per-output-channel weight formats (celosia.ir.perchannel)
        acc = np.array([ins[0].type.fmt.frac + f for f in ins[1].attrs["channel_frac"]])
        res_shifts = acc - ins[3].type.fmt.frac if res is not None else None
        y = linear_int_per_channel(x2, args[1].T, args[2], op.type.fmt, acc - op.type.fmt.frac, rounding, relu,
                                   res, res_shifts)
    else:
        p = linear_params(op, ins)
        y = nx_.linear_int(x2, args[1].T, args[2], op.type.fmt, p["shift"], rounding, relu, res, p["res_shift"])
    return _fused_gelu(op, y).reshape(op.type.shape)


def _linear_calibrate(op: Op, args: list[np.ndarray]) -> dict[str, float]:
    # A Linear with a fused GELU is ranged on its pre-activation: the GELU lanes read the
    # saturated pre-activation in the Linear's format, so that is what the format must hold.
    if op.attrs.get("activation") != "gelu":
        return {}
    pre = linear_preactivation_float(op, args)
    return {op.name: float(np.max(np.abs(pre))) if pre.size else 0.0}


def _linear_quant(ctx: QuantContext, op: Op, override):
    calibrated = linear_format(ctx, op)  # also gives the bias its accumulator format
    op.attrs["rounding"] = ctx.precision.rounding
    return override or calibrated


def _requantized(op: Op, codes: np.ndarray, ins: list[Op]) -> np.ndarray:
    """``codes`` (in the first operand's format) requantized to the op's format."""
    return nx_.requantize(codes, ins[0].type.fmt.frac, op.type.fmt)


def _keep_operand_format(ctx: QuantContext, op: Op, override):
    return ctx.fmt(op.inputs[0])


def _activation(ctx: QuantContext, op: Op, override):
    return override or ctx.act(op.name)


def _product_format(ctx: QuantContext, op: Op, override):
    return override or ctx.act(op.name, ctx.fmt(op.inputs[0]).frac + ctx.fmt(op.inputs[1]).frac)


def _add_int(op: Op, args: list[np.ndarray], ins: list[Op]) -> np.ndarray:
    fa, fb = ins[0].type.fmt, ins[1].type.fmt
    frac = max(fa.frac, fb.frac)
    total = nx_.shift_round(args[0], fa.frac - frac) + nx_.shift_round(args[1], fb.frac - frac)
    return nx_.requantize(total, frac, op.type.fmt)


def _softmax_float(op: Op, args: list[np.ndarray]) -> np.ndarray:
    z = np.exp(args[0] - args[0].max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def _softmax_int(op: Op, args: list[np.ndarray], ins: list[Op]) -> np.ndarray:
    x = args[0].reshape(-1, args[0].shape[-1])
    return softmax_int(x, None, ins[0].type.fmt, op.type.fmt).reshape(args[0].shape)


def _softmax_quant(ctx: QuantContext, op: Op, override):  # probabilities: [0, 1] whatever calibration saw
    bits = ctx.precision.act_bits
    return override or nx_.Fixed(bits, nx_.frac_for_range(1.0, bits))


def _gelu_float(op: Op, args: list[np.ndarray]) -> np.ndarray:
    x = args[0]
    if op.attrs.get("approximate", "none") == "tanh":
        return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))
    return gelu_float(x)


def _gelu_int(op: Op, args: list[np.ndarray], ins: list[Op]) -> np.ndarray:
    # The unit computes the erf form for both attrs; a tanh-form op's bound vs its float
    # semantics adds max|gelu_tanh - gelu_erf| = 4.73e-4 (docs/frontends.md).
    return gelu_int(args[0], ins[0].type.fmt, op.type.fmt)


def _norm_float(op: Op, args: list[np.ndarray]) -> np.ndarray:
    x, eps = args[0], op.attrs.get("eps", 1e-5)
    if op.kind == "LayerNorm":
        x = x - x.mean(axis=-1, keepdims=True)
    y = x / np.sqrt((x * x).mean(axis=-1, keepdims=True) + eps) * args[1]
    return y + args[2] if op.kind == "LayerNorm" else y


def _norm_int(op: Op, args: list[np.ndarray], ins: list[Op]) -> np.ndarray:
    fin, eps = ins[0].type.fmt, op.attrs.get("eps", 1e-5)
    gamma = (args[1], ins[1].type.fmt)
    if op.kind == "RMSNorm":
        return rmsnorm_int(args[0], fin, op.type.fmt, *gamma, eps)
    return layernorm_int(args[0], fin, op.type.fmt, *gamma, args[2], ins[2].type.fmt, eps)


def _attention_calibrate(op: Op, args: list[np.ndarray]) -> dict[str, float]:
    scores = attention_scores_float(*args[:3], args[3] if len(args) == 4 else None, op.attrs)
    return {f"{op.name}:scores": float(np.abs(scores).max())}


def _key_tile(graph: Graph) -> int:
    """The key tile of every Attention of ``graph``: all keys of the longest sequence in one tile up
    to 64 keys (fewer tiles, fewer rescales: the engine's short-sequence overhead), at least
    :data:`celosia.ir.attention.TILE`."""
    longest = max(key_count(graph.op(a.inputs[1]).type.shape) for a in graph.ops("Attention"))
    return min(64, max(TILE, 1 << (longest - 1).bit_length()))


def _attention_quant(ctx: QuantContext, op: Op, override):
    op.attrs["tile"] = _key_tile(ctx.graph)
    op.attrs["score_fmt"] = (ctx.forced.get(f"{op.name}:score_fmt") or ctx.override(f"{op.name}:scores")
                             or ctx.act(f"{op.name}:scores"))
    op.attrs["prob_fmt"] = prob_format(ctx.precision.act_bits)
    return override or ctx.act(op.name, op.attrs["prob_fmt"].frac + ctx.fmt(op.inputs[2]).frac)


def _attention_int(op: Op, args: list[np.ndarray], ins: list[Op]) -> np.ndarray:
    mask = args[3] if len(args) == 4 else None
    return attention_int(*args[:3], mask, op.attrs, *(i.type.fmt for i in ins[:3]), op.type.fmt,
                         tile=int(op.attrs.get("tile", TILE)))


def _mask_format(graph: Graph, op: Op, index: int):
    return nx_.Fixed(2, 0) if index == 3 else None


def _id_format(graph: Graph, op: Op, index: int):
    if index != 0:
        return None
    vocab = graph.op(op.inputs[1]).type.shape[0]
    return nx_.Fixed(max(2, (vocab - 1).bit_length() + 1), 0)


def _moe_calibrate(op: Op, args: list[np.ndarray]) -> dict[str, float]:
    _, stats = moe_float(*args, op.attrs, internals=True)
    return {f"{op.name}:{key}": value for key, value in stats.items()}


def _moe_int(op: Op, args: list[np.ndarray], ins: list[Op]) -> np.ndarray:
    f = [i.type.fmt for i in ins]
    return moe_int(*args, op.attrs, f[0], f[1], f[3], f[5], op.type.fmt)


def _concat_quant(ctx: QuantContext, op: Op, override):
    fins = [ctx.fmt(i) for i in op.inputs]
    return override or nx_.Fixed(max(ctx.precision.act_bits, *(f.bits for f in fins)), min(f.frac for f in fins))


def _layout_float(op: Op, args: list[np.ndarray]) -> np.ndarray:
    return layout_apply(op.kind, op.attrs, args[0])


def _layout_int(op: Op, args: list[np.ndarray], ins: list[Op]) -> np.ndarray:
    return _requantized(op, layout_apply(op.kind, op.attrs, args[0]), ins)


def _input_quant(ctx: QuantContext, op: Op, override):
    return override or ctx.input_format(op.name) or ctx.act(op.name)


def _no_float(op: Op, args):
    raise GraphError(f"{op.kind} '{op.name}' is fed by the executor, not computed")


# ---- the declarations ------------------------------------------------------------------------------

for _d in [
    OpDef("Input", (0, 0), _shape_attr, _no_float, None, _input_quant, hw=HOST_BINDING,
          summary="a model input (static shape)"),
    OpDef("Const", (0, 0), _const, lambda op, args: np.asarray(op.attrs["value"], dtype=np.float64),
          lambda op, args, ins: np.asarray(op.attrs["codes"], dtype=np.int64), quantize_const, hw=HOST_BINDING,
          summary="a constant tensor (weights, biases, tables)"),
    OpDef("Output", (1, 1), _same, lambda op, args: args[0], lambda op, args, ins: _requantized(op, args[0], ins),
          _keep_operand_format, hw=HOST_BINDING, keeps_operand_format=True, summary="a model output"),
    OpDef("Linear", (2, 4), _linear, _linear_float, _linear_int, _linear_quant, _linear_calibrate,
          weights=(1,), biases=(2,), hw=LINEAR_BINDING,
          summary="x @ w.T + b [+ residual], fused ReLU/GELU epilogue"),
    OpDef("ReLU", (1, 1), _same, lambda op, args: np.maximum(args[0], 0.0),
          lambda op, args, ins: _requantized(op, np.maximum(args[0], 0), ins), _keep_operand_format,
          keeps_operand_format=True, summary="max(x, 0)"),
    OpDef("Add", (2, 2), _add, lambda op, args: args[0] + args[1], _add_int, _activation, hw=VECTOR_ADD,
          summary="elementwise sum of two tensors of one shape"),
    OpDef("Softmax", (1, 1), _same, _softmax_float, _softmax_int, _softmax_quant,
          summary="softmax over the last axis"),
    OpDef("GELU", (1, 1), _gelu, _gelu_float, _gelu_int, _activation, summary="GELU (erf or tanh form)"),
    OpDef("LayerNorm", (3, 3), _norm, _norm_float, _norm_int, _activation, hw=ROW_NORM,
          summary="LayerNorm over the last axis"),
    OpDef("RMSNorm", (2, 2), _norm, _norm_float, _norm_int, _activation, hw=ROW_NORM,
          summary="RMSNorm over the last axis"),
    OpDef("MatMul", (2, 2), _matmul, lambda op, args: np.matmul(args[0], args[1]),
          lambda op, args, ins: matmul_int(args[0], args[1], ins[0].type.fmt, ins[1].type.fmt, op.type.fmt),
          _product_format, weights=(0, 1), summary="batched matrix product"),
    OpDef("Mul", (2, 2), _broadcast, lambda op, args: args[0] * args[1],
          lambda op, args, ins: mul_int(args[0], args[1], ins[0].type.fmt, ins[1].type.fmt, op.type.fmt),
          _product_format, summary="elementwise product (broadcasting)"),
    OpDef("SiLU", (1, 1), _same, lambda op, args: silu_float(args[0]),
          lambda op, args, ins: silu_int(args[0], ins[0].type.fmt, op.type.fmt), _activation,
          summary="x * sigmoid(x)"),
    OpDef("Embedding", (2, 2), _embedding, lambda op, args: embedding_float(args[0], args[1]),
          lambda op, args, ins: embedding_int(args[0], args[1], ins[1].type.fmt, op.type.fmt),
          lambda ctx, op, override: override or ctx.fmt(op.inputs[1]), weights=(1,), operand_format=_id_format,
          summary="table row gather by token id"),
    OpDef("Attention", (3, 4), _attention,
          lambda op, args: attention_float(*args[:3], args[3] if len(args) == 4 else None, op.attrs),
          _attention_int, _attention_quant, _attention_calibrate, operand_format=_mask_format, hw=ATTENTION_UNIT,
          summary="multi-head / grouped-query scaled dot-product attention"),
    OpDef("MoE", (7, 7), _moe, lambda op, args: moe_float(*args, op.attrs), _moe_int,
          lambda ctx, op, override: override or moe_formats(ctx, op), _moe_calibrate,
          weights=(1, 3, 5), biases=(2, 4, 6), summary="mixture of experts: gate, top-k, expert MLPs, combine"),
    OpDef("Reshape", (1, 1), _reshape, _layout_float, _layout_int, _keep_operand_format, hw=VECTOR_LAYOUT,
          keeps_operand_format=True, summary="reshape"),
    OpDef("Transpose", (1, 1), _transpose, _layout_float, _layout_int, _keep_operand_format, hw=VECTOR_LAYOUT,
          keeps_operand_format=True, summary="axis permutation"),
    OpDef("Slice", (1, 1), _slice, _layout_float, _layout_int, _keep_operand_format, hw=VECTOR_LAYOUT,
          keeps_operand_format=True, summary="a contiguous range along one axis"),
    OpDef("Concat", (1, 64), _concat, lambda op, args: np.concatenate(args, axis=int(op.attrs.get("axis", 0))),
          lambda op, args, ins: concat_int(args, [i.type.fmt for i in ins], int(op.attrs.get("axis", 0)) % args[0].ndim,
                                           op.type.fmt),
          _concat_quant, hw=VECTOR_CONCAT, summary="concatenation along one axis"),
    OpDef("Mean", (1, 1), _mean, lambda op, args: mean_float(args[0], *_mean_args(op, args[0])),
          lambda op, args, ins: mean_int(args[0], ins[0].type.fmt, op.type.fmt, *_mean_args(op, args[0])),
          _activation, hw=VECTOR_MEAN, summary="mean over one axis (mean pooling)"),
]:
    register(_d)


# ---- math, reductions, selection and casts from the frontends (semantics: celosia.ir.mathops) ----
# Float-only ops (int_fn and quant None: quantize refuses them, check lists them) except Expand,
# ReduceSum and ReduceMax, whose integer semantics are exact or one requantization.

from celosia.ir import mathops as _mo  # noqa: E402


def _unary(kind: str) -> OpDef:
    fn = _mo.UNARY[kind]
    return OpDef(kind, (1, 1), _same, lambda op, args: np.asarray(fn(args[0]), np.float64),
                 summary=f"elementwise {kind.lower()} (float only)")


def _binary(kind: str) -> OpDef:
    fn = _mo.BINARY[kind]
    return OpDef(kind, (2, 2), _mo.broadcast_shape, lambda op, args: np.asarray(fn(args[0], args[1]), np.float64),
                 summary=f"elementwise {kind.lower()}, broadcasting (float only)")


def _reduce_args(op: Op, x: np.ndarray) -> tuple[int, bool]:
    return _mo.axis_of(op, x.ndim), bool(op.attrs.get("keepdims", False))


def _reduce_int(op: Op, args: list[np.ndarray], ins: list[Op]) -> np.ndarray:
    fn = _mo.reduce_sum_int if op.kind == "ReduceSum" else _mo.reduce_max_int
    return fn(args[0], ins[0].type.fmt, op.type.fmt, *_reduce_args(op, args[0]))


for _d in [
    *(_unary(k) for k in _mo.UNARY),
    *(_binary(k) for k in _mo.BINARY),
    OpDef("Where", (3, 3), _mo.broadcast_shape, lambda op, args: _mo.where_float(*args),
          summary="x where cond else y, broadcasting (float only)"),
    OpDef("Expand", (1, 1), _mo.expand_shape, lambda op, args: _mo.expand_float(args[0], op.attrs["shape"]),
          lambda op, args, ins: _requantized(op, np.broadcast_to(args[0], op.type.shape).copy(), ins),
          _keep_operand_format, summary="broadcast to a larger shape (no compute)"),
    OpDef("ReduceSum", (1, 1), _mo.reduce_shape,
          lambda op, args: _mo.reduce_float("ReduceSum", args[0], *_reduce_args(op, args[0])), _reduce_int,
          _activation, summary="sum over one axis"),
    OpDef("ReduceMax", (1, 1), _mo.reduce_shape,
          lambda op, args: _mo.reduce_float("ReduceMax", args[0], *_reduce_args(op, args[0])), _reduce_int,
          _keep_operand_format, summary="max over one axis"),
    OpDef("Gather", (2, 2), _mo.gather_shape,
          lambda op, args: _mo.gather_float(op.name, args[0], args[1], _mo.axis_of(op, args[0].ndim)),
          summary="take(data, indices, axis) (float only; constant indices import as Slice/Concat)"),
    OpDef("TopK", (1, 1), _mo.topk_shape,
          lambda op, args: _mo.topk_float(args[0], int(op.attrs["k"]), _mo.axis_of(op, args[0].ndim),
                                          bool(op.attrs.get("largest", True)), op.attrs.get("output", "values")),
          summary="k largest/smallest values or their indices along an axis (float only)"),
    OpDef("Cast", (1, 1), _mo.cast_shape,
          lambda op, args: _mo.cast_float(args[0], op.attrs["to"], bool(op.attrs.get("saturate", True)),
                                          op.attrs.get("round_mode", "up")),
          summary="round to a narrower float, integer or bool type (float only)"),
]:
    register(_d)
