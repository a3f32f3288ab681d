"""The op registry: every IR op declared once, with everything the compiler needs to know of it.

An :class:`OpDef` carries an op's arity and shape rule, its float semantics (the reference),
its integer semantics (bit-exact, what the RTL is checked against), its quantization rule and,
when a generated unit runs it, its hardware :class:`Binding` (unit, opcodes, how the scheduler
places it, its cycle cost). The golden executors (:mod:`celosia.ir.golden`), the quantize pass,
``celosia check`` and the scheduler look ops up here instead of branching on ``op.kind``.

The declarations themselves live in :mod:`celosia.ir.ops`; docs/adding_an_op.md is the recipe.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from celosia.errors import GraphError

if TYPE_CHECKING:  # only for annotations: the registry imports nothing above the IR
    from celosia.ir.graph import Graph, Op
    from celosia.ir.numerics import Fixed
    from celosia.ir.types import TensorType

__all__ = ["OpDef", "Binding", "register", "op_def", "registered", "infer_type"]

#: ``shape(op, operand_types) -> output shape``; raises GraphError naming the node.
ShapeRule = Callable[["Op", "list[TensorType]"], tuple]
#: ``float_fn(op, operands) -> output`` in float64.
FloatFn = Callable[["Op", "list[np.ndarray]"], np.ndarray]
#: ``int_fn(op, operand_codes, operand_ops) -> output codes``; formats are ``op.type.fmt`` and
#: ``operand_ops[i].type.fmt``.
IntFn = Callable[["Op", "list[np.ndarray]", "list[Op]"], np.ndarray]
#: ``quant(ctx, op, override) -> Fixed or None``; ``ctx`` is a :class:`celosia.ir.quantize.QuantContext`;
#: ``None`` leaves the op to be formatted by the op that owns it (a bias Const).
QuantRule = Callable[[Any, "Op", "Fixed | None"], "Fixed | None"]
#: ``calibrate(op, operands) -> {internal name: max |value|}``: ranges of an op's internal tensors.
CalibrateFn = Callable[["Op", "list[np.ndarray]"], "dict[str, float]"]
#: ``operand_format(graph, op, index) -> Fixed or None``: the format an Input must take when it
#: feeds operand ``index`` of ``op`` (token ids, masks), or None for an ordinary activation.
OperandFormatFn = Callable[["Graph", "Op", int], "Fixed | None"]


@dataclass(frozen=True)
class Binding:
    """How a generated unit runs an op.

    Attributes
    ----------
    unit : str
        The unit that runs it (``"linear"``; ``"host"`` for the ops that only place tensors:
        Input, Const, Output).
    opcodes : tuple of int
        The :class:`celosia.ir.program.Opcode` values its instructions use (empty for ``"host"``).
    emit : callable(binder, op)
        Places the op: allocates its output in the scratchpad and appends its instructions
        (``binder`` is the scheduler's :class:`celosia.ir.schedule.Binder`).
    cost : callable(instruction, program) -> int, optional
        Issue cycles of one of its instructions when nothing stalls (the performance model's
        base cost; dependency stalls and pipeline latency come on top).
    check : callable(graph, op) -> str or None, optional
        Why this particular op cannot run on the unit (shape or format limits), or None.
    shared_formats : callable(op) -> dict of str to str, optional
        For a unit generated with one format per operand role: ``{role: tensor}`` of the op
        (``"<op>:<attr>"`` names an internal format attribute, e.g. ``"att:score_fmt"``); the quantize pass gives every op of the unit the coarsest format of
        each role.
    """

    unit: str
    opcodes: tuple[int, ...]
    emit: Callable[[Any, "Op"], None]
    cost: Callable[[Any, int], int] | None = None
    check: Callable[["Graph", "Op"], "str | None"] | None = None
    shared_formats: Callable[["Op"], "dict[str, str]"] | None = None


@dataclass(frozen=True)
class OpDef:
    """Everything the compiler knows of one op kind.

    Attributes
    ----------
    kind : str
        The op's name in the IR (``"Linear"``, ``"Softmax"``, ...).
    arity : (int, int)
        Least and most operands.
    shape : ShapeRule
        Output shape from the operand types.
    float_fn : FloatFn
        Float64 reference semantics.
    int_fn : IntFn or None
        Bit-exact integer semantics of the quantized op (None: the op cannot be quantized).
    quant : QuantRule or None
        The output format the quantize pass gives the op.
    calibrate : CalibrateFn, optional
        Ranges of internal tensors the quantization rule needs (keyed ``"<op>:<name>"``).
    weights, biases : tuple of int
        Operand positions that hold weights (quantized at the weight width) and biases (stored
        in the accumulator format, set by the owner's quantization rule).
    operand_format : OperandFormatFn, optional
        Formats of Inputs that carry indices or masks rather than activations.
    hw : Binding, optional
        The unit that runs the op; None means no generated unit runs it yet.
    keeps_operand_format : bool
        Its output always has its first operand's format (layout ops, ReLU, Output): a format
        the quantize pass must force on it is forced on that operand instead.
    summary : str
        One line for listings and error hints.
    """

    kind: str
    arity: tuple[int, int]
    shape: ShapeRule
    float_fn: FloatFn
    int_fn: IntFn | None = None
    quant: QuantRule | None = None
    calibrate: CalibrateFn | None = None
    weights: tuple[int, ...] = ()
    biases: tuple[int, ...] = ()
    operand_format: OperandFormatFn | None = None
    hw: Binding | None = None
    keeps_operand_format: bool = False
    summary: str = ""


_OPS: dict[str, OpDef] = {}


def register(definition: OpDef) -> OpDef:
    """Add an op kind to the registry (once; a second declaration of a kind is an error)."""
    if definition.kind in _OPS:
        raise GraphError(f"op kind '{definition.kind}' is declared twice",
                         hint="each op is declared once, in celosia.ir.ops")
    _OPS[definition.kind] = definition
    return definition


def _load() -> dict[str, OpDef]:
    if not _OPS:
        import celosia.ir.ops  # noqa: F401  (the declarations register themselves)
    return _OPS


def registered() -> dict[str, OpDef]:
    """Every declared op kind, in declaration order."""
    return dict(_load())


def op_def(op: "Op | str") -> OpDef:
    """The :class:`OpDef` of an op (or an op kind); GraphError naming the node if unknown."""
    kind = op if isinstance(op, str) else op.kind
    ops = _load()
    try:
        return ops[kind]
    except KeyError:
        what = f"unknown op kind '{kind}'" if isinstance(op, str) else f"op '{op.name}' has unknown kind '{kind}'"
        raise GraphError(what, hint=f"supported ops: {', '.join(ops)}") from None


def infer_type(op: "Op", input_types: "list[TensorType]") -> "TensorType":
    """The output type of ``op`` given its operand types (a format already set is kept)."""
    from celosia.ir.types import TensorType

    d = op_def(op)
    lo, hi = d.arity
    if not lo <= len(input_types) <= hi:
        raise GraphError(f"{op.kind} '{op.name}' takes {lo}..{hi} operands, got {len(input_types)}")
    return TensorType(d.shape(op, input_types), op.type.fmt if op.type else None)
