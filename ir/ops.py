"""The op set of the IR: arity and shape rules per op kind.

Float and integer semantics live in :mod:`celosia.sim.golden`; the arithmetic of
the quantized ops in :mod:`celosia.ir.numerics`. Adding an op means adding an
:class:`OpSpec` here and its semantics there.

Ops
---
Input   ()            attrs: shape
Const   ()            attrs: value (numpy array)
Linear  (x, w[, b])   y = x @ w.T + b; w is (out, in) like PyTorch and ONNX Gemm(transB=1).
                      After ``fuse_epilogues``: attrs activation ("relu" or None) and an
                      optional 4th operand, a residual added before the activation.
ReLU    (x)
Add     (a, b)        same shapes, no broadcasting
Softmax (x)           over the last axis
GELU    (x)           erf form, x * Phi(x)
LayerNorm (x, gamma, beta)   over the last axis; attrs eps
RMSNorm (x, gamma)    over the last axis; attrs eps
Output  (x)

Transformer and MoE ops (semantics: :mod:`celosia.ir.attention`, :mod:`celosia.ir.moe`,
:mod:`celosia.ir.silu`, :mod:`celosia.ir.elementwise`, :mod:`celosia.ir.layout`):

MatMul  (a, b)        batched a @ b, numpy matmul broadcasting of leading dims
Mul     (a, b)        elementwise product, numpy broadcasting
SiLU    (x)           x * sigmoid(x)
GELU    attrs approximate: "none" (default, erf form) or "tanh" (float semantics of the
                      tanh form; the integer unit computes the erf form, see sim.golden)
Embedding (ids, table)  table[ids]; ids integral, table (vocab, dim)
Attention (q, k, v[, mask])  multi-head softmax(scale q k^T) v; attrs heads, kv_heads
                      (packed (B, T, H*E) layout), causal, scale; mask (B, Tk) 1 = attend
MoE     (x, gate_w, gate_b, w1, b1, w2, b2)  softmax gate, top-k, expert MLPs, combine;
                      attrs top_k, activation
Reshape (x)           attrs shape (static, no -1); no compute
Transpose (x)         attrs perm; no compute
Slice   (x)           attrs axis, start, stop; no compute
Concat  (x0, x1, ...) attrs axis
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from celosia.errors import GraphError
from celosia.ir.graph import Op
from celosia.ir.types import TensorType

__all__ = ["OpSpec", "OP_SPECS", "LAYOUT_OPS", "spec_of", "infer_type"]

#: Ops that move data without computing (resolved to addressing by the scheduler).
LAYOUT_OPS = ("Reshape", "Transpose", "Slice", "Concat")


@dataclass(frozen=True)
class OpSpec:
    """Static rules of one op kind."""

    kind: str
    min_inputs: int
    max_inputs: int
    infer: Callable[[Op, list[TensorType]], tuple[int, ...]]


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


def _attention(op: Op, ins: list[TensorType]) -> tuple[int, ...]:
    from celosia.ir.attention import attention_shapes

    return attention_shapes(op.name, [t.shape for t in ins], op.attrs)


def _moe(op: Op, ins: list[TensorType]) -> tuple[int, ...]:
    from celosia.ir.moe import moe_shapes

    return moe_shapes(op.name, [t.shape for t in ins], op.attrs)


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


OP_SPECS: dict[str, OpSpec] = {
    spec.kind: spec
    for spec in [
        OpSpec("Input", 0, 0, _shape_attr),
        OpSpec("Const", 0, 0, _const),
        OpSpec("Linear", 2, 4, _linear),
        OpSpec("ReLU", 1, 1, _same),
        OpSpec("Add", 2, 2, _add),
        OpSpec("Softmax", 1, 1, _same),
        OpSpec("GELU", 1, 1, _gelu),
        OpSpec("LayerNorm", 3, 3, _norm),
        OpSpec("RMSNorm", 2, 2, _norm),
        OpSpec("Output", 1, 1, _same),
        OpSpec("MatMul", 2, 2, _matmul),
        OpSpec("Mul", 2, 2, _broadcast),
        OpSpec("SiLU", 1, 1, _same),
        OpSpec("Embedding", 2, 2, _embedding),
        OpSpec("Attention", 3, 4, _attention),
        OpSpec("MoE", 7, 7, _moe),
        OpSpec("Reshape", 1, 1, _reshape),
        OpSpec("Transpose", 1, 1, _transpose),
        OpSpec("Slice", 1, 1, _slice),
        OpSpec("Concat", 1, 64, _concat),
    ]
}


def spec_of(op: Op) -> OpSpec:
    """The :class:`OpSpec` of ``op``, or a GraphError naming the node."""
    try:
        return OP_SPECS[op.kind]
    except KeyError:
        raise GraphError(
            f"op '{op.name}' has unknown kind '{op.kind}'",
            hint=f"supported ops: {', '.join(OP_SPECS)}",
        ) from None


def infer_type(op: Op, input_types: list[TensorType]) -> TensorType:
    """The output type of ``op`` given its operand types (format kept if already set)."""
    spec = spec_of(op)
    if not spec.min_inputs <= len(input_types) <= spec.max_inputs:
        raise GraphError(
            f"{op.kind} '{op.name}' takes {spec.min_inputs}..{spec.max_inputs} operands, got {len(input_types)}"
        )
    shape = spec.infer(op, input_types)
    return TensorType(shape, op.type.fmt if op.type else None)
