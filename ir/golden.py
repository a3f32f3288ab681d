"""Golden executors: float64 reference and bit-exact integer execution of a graph.

Both walk the graph in topological order and apply each op's semantics from the registry
(``OpDef.float_fn`` / ``OpDef.int_fn``, declared in :mod:`celosia.ir.ops`). The integer
executor is the specification the RTL is checked against, bit for bit; its arithmetic comes
from :mod:`celosia.ir.numerics` only.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from celosia.errors import GraphError, SimulationError
from celosia.ir import numerics as nx_
from celosia.ir.graph import Graph
from celosia.ir.registry import op_def

__all__ = ["run_float", "run_int", "feed_inputs"]


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
        if op.kind != "Input":
            env[op.name] = op_def(op).float_fn(op, [env[i] for i in op.inputs])
    return env if keep_all else {op.name: env[op.name] for op in graph.outputs}


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
        int_fn = op_def(op).int_fn
        if int_fn is None:
            raise SimulationError(f"op '{op.name}': {op.kind} has no integer semantics",
                                  hint="it runs in the float executor only")
        env[op.name] = int_fn(op, [env[i] for i in op.inputs], [graph.op(i) for i in op.inputs])
    return env if keep_all else {op.name: env[op.name] for op in graph.outputs}
