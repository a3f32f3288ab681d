"""Graph-to-graph passes. Each returns a new graph and leaves its input untouched.

The order they run in is listed once, in :mod:`celosia.ir.pipeline`.
"""

from __future__ import annotations

import numpy as np

from celosia.ir.graph import Graph, Op
from celosia.ir.ops import infer_type
from celosia.ir.types import TensorType

__all__ = ["infer_shapes", "canonicalize", "fuse_epilogues"]


def infer_shapes(graph: Graph) -> Graph:
    """Type every op from its operands.

    Guarantees: every op has a :class:`TensorType` whose shape follows the op's
    shape rule; formats already assigned are kept. Raises GraphError naming the
    first op whose operands do not fit (e.g. a Linear whose input and weight
    disagree, naming both tensors).
    """
    out = graph.copy()
    for op in out:
        ins = [out.op(i).type for i in op.inputs]
        out.replace(op.evolve(type=infer_type(op, ins)))
    return out


def canonicalize(graph: Graph) -> Graph:
    """Bring ops into the canonical form later passes expect.

    Guarantees: every Linear has a bias operand (a zero Const is added where the
    model had none), so the linear unit's epilogue has one form.
    """
    out = graph.copy()
    for op in out.ops("Linear"):
        if len(op.inputs) == 2:
            n = out.op(op.inputs[1]).type.shape[0]
            bias = Op(f"{op.name}.bias", "Const", attrs={"value": np.zeros(n)}, type=TensorType((n,)))
            out.add(bias)
            out.replace(op.evolve(inputs=op.inputs + (bias.name,)))
    return out


def _sole_consumer(graph: Graph, name: str, kind: str) -> Op | None:
    users = graph.consumers(name)
    if len(users) == 1 and graph.op(users[0]).kind == kind:
        return graph.op(users[0])
    return None


def fuse_epilogues(graph: Graph) -> Graph:
    """Fold residual Adds and ReLUs into the epilogue of the Linear before them.

    ``Add(Linear(x), r)`` becomes ``Linear(x, w, b, r)`` (the residual joins the
    accumulator before requantization) and ``ReLU(Linear(...))`` becomes a Linear
    with ``activation="relu"``, when the Linear's output has no other reader.
    Guarantees: the fused Linear keeps its name and takes the type of the op it
    absorbed; float semantics are unchanged (the epilogue order is residual,
    then activation, matching the hardware).
    """
    out = graph.copy()
    for lin in out.ops("Linear"):
        lin = out.op(lin.name)
        add = _sole_consumer(out, lin.name, "Add")
        if add is not None and len(lin.inputs) == 3 and not lin.attrs.get("activation"):
            other = add.inputs[1] if add.inputs[0] == lin.name else add.inputs[0]
            if other != lin.name:
                lin = lin.evolve(inputs=lin.inputs + (other,), type=add.type)
                out.replace(lin)
                out.rewire(add.name, lin.name)
                out.remove(add.name)
        relu = _sole_consumer(out, lin.name, "ReLU")
        if relu is not None and not lin.attrs.get("activation"):
            lin = lin.evolve(type=relu.type)
            lin.attrs["activation"] = "relu"
            out.replace(lin)
            out.rewire(relu.name, lin.name)
            out.remove(relu.name)
    return out
