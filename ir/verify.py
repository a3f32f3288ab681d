"""The graph verifier, run between pipeline stages; it names the node at fault."""

from __future__ import annotations

from celosia.errors import GraphError
from celosia.ir.graph import Graph
from celosia.ir.registry import infer_type, op_def

__all__ = ["verify"]


def verify(graph: Graph, *, quantized: bool = False) -> Graph:
    """Check that ``graph`` is well formed; return it unchanged.

    Checks: the graph is acyclic, has at least one Input and one Output, every op
    kind is known with a legal number of operands, every op is typed and its type
    agrees with shape inference, Output ops feed nothing, and (if ``quantized``)
    every tensor carries a fixed-point format.

    Raises
    ------
    GraphError
        Naming the first offending node.
    """
    if graph.has_cycle():
        list(graph)  # raises a GraphError naming the cycle
    for op in graph:
        op_def(op)
        if op.type is None:
            raise GraphError(f"op '{op.name}' ({op.kind}) has no type", hint="run infer_shapes first")
        expected = infer_type(op, [graph.op(i).type for i in op.inputs])
        if expected.shape != op.type.shape:
            raise GraphError(
                f"op '{op.name}' ({op.kind}) is typed {op.type.shape} but its operands give {expected.shape}"
            )
        if op.kind == "Output" and graph.consumers(op.name):
            raise GraphError(f"Output '{op.name}' is read by {graph.consumers(op.name)}")
        if quantized and op.type.fmt is None:
            raise GraphError(f"op '{op.name}' ({op.kind}) has no fixed-point format", hint="run quantize first")
    if not graph.inputs:
        raise GraphError(f"graph '{graph.name}' has no Input op")
    if not graph.outputs:
        raise GraphError(f"graph '{graph.name}' has no Output op")
    return graph
