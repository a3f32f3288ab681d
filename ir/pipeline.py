"""The compiler's pass pipeline: one explicit, ordered list of named stages.

``lower(graph, samples, precision)`` runs every stage in order with the verifier
between stages, so a broken pass is caught at the stage that broke the graph.
"""

from __future__ import annotations

from typing import Callable, Iterable, Mapping

import numpy as np

from celosia.ir.graph import Graph
from celosia.ir.passes import (
    canonicalize,
    fold_bias_add,
    fold_layout,
    fuse_attention,
    fuse_epilogues,
    infer_shapes,
)
from celosia.ir.quantize import Precision, quantize
from celosia.ir.verify import verify

__all__ = ["FLOAT_PASSES", "lower"]

#: Passes on the float graph, in order. Quantization follows them.
FLOAT_PASSES: list[tuple[str, Callable[[Graph], Graph]]] = [
    ("infer_shapes", infer_shapes),
    ("fold_layout", fold_layout),
    ("fuse_attention", fuse_attention),
    ("fold_bias_add", fold_bias_add),
    ("canonicalize", canonicalize),
    ("fuse_epilogues", fuse_epilogues),
]


def lower(
    graph: Graph,
    samples: Iterable[Mapping[str, np.ndarray]],
    precision: Precision,
    *,
    on_stage: Callable[[str, Graph], None] | None = None,
) -> Graph:
    """Run the float passes, then ``quantize``; verify after every stage.

    Parameters
    ----------
    graph : Graph
        The float model as the frontend produced it (untouched).
    samples : iterable of dict
        Calibration inputs, one dict of input name to array per sample.
    precision : Precision
        Bit widths and rounding.
    on_stage : callable, optional
        Called with each stage's name and result (for dumps and progress).

    Returns
    -------
    Graph
        The quantized graph, ready for the scheduler.
    """
    for name, stage in FLOAT_PASSES:
        graph = verify(stage(graph))
        if on_stage:
            on_stage(name, graph)
    graph = verify(quantize(graph, list(samples), precision), quantized=True)
    if on_stage:
        on_stage("quantize", graph)
    return graph
