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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from celosia.errors import GraphError
from celosia.ir.graph import Op
from celosia.ir.types import TensorType

__all__ = ["OpSpec", "OP_SPECS", "spec_of", "infer_type"]


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


OP_SPECS: dict[str, OpSpec] = {
    spec.kind: spec
    for spec in [
        OpSpec("Input", 0, 0, _shape_attr),
        OpSpec("Const", 0, 0, _const),
        OpSpec("Linear", 2, 4, _linear),
        OpSpec("ReLU", 1, 1, _same),
        OpSpec("Add", 2, 2, _add),
        OpSpec("Softmax", 1, 1, _same),
        OpSpec("GELU", 1, 1, _same),
        OpSpec("LayerNorm", 3, 3, _norm),
        OpSpec("RMSNorm", 2, 2, _norm),
        OpSpec("Output", 1, 1, _same),
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
