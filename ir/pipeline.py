"""The compiler's pass pipeline: the one place that lists passes, in order.

* :data:`IMPORT_PASSES` tidy what a frontend built (dead code, no-op layout, decomposed
  attention, bias adds); the frontends call :func:`tidy`.
* :data:`FLOAT_PASSES` bring any float graph into the form quantization and the scheduler
  expect; :func:`lower_float` runs them (``celosia check`` uses it, so it sees exactly what
  ``compile`` sees).
* :func:`lower` runs the float passes and then ``quantize``.

The verifier runs after every stage, so a broken pass is caught at the stage that broke the graph.
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
    pack_attention,
    prune,
)
from celosia.ir.quantize import Precision, quantize
from celosia.ir.verify import verify

__all__ = ["IMPORT_PASSES", "FLOAT_PASSES", "tidy", "lower_float", "lower"]

Stage = Callable[[Graph], Graph]
OnStage = Callable[[str, Graph], None]

#: Passes a frontend's raw graph goes through, in order.
IMPORT_PASSES: list[tuple[str, Stage]] = [
    ("prune", prune),
    ("fold_layout", fold_layout),
    ("fuse_attention", fuse_attention),
    ("pack_attention", pack_attention),
    ("fold_bias_add", fold_bias_add),
]

#: Passes on the float graph, in order. Quantization follows them.
FLOAT_PASSES: list[tuple[str, Stage]] = [
    ("infer_shapes", infer_shapes),
    *IMPORT_PASSES,
    ("canonicalize", canonicalize),
    ("fuse_epilogues", fuse_epilogues),
]


def _run(passes: list[tuple[str, Stage]], graph: Graph, on_stage: OnStage | None) -> Graph:
    for name, stage in passes:
        graph = verify(stage(graph))
        if on_stage:
            on_stage(name, graph)
    return graph


def tidy(graph: Graph) -> Graph:
    """Run :data:`IMPORT_PASSES` on a frontend's graph (typed, float)."""
    return _run(IMPORT_PASSES, graph, None)


def lower_float(graph: Graph, *, on_stage: OnStage | None = None) -> Graph:
    """Run :data:`FLOAT_PASSES`: the float graph the quantizer and ``celosia check`` see."""
    return _run(FLOAT_PASSES, graph, on_stage)


def lower(
    graph: Graph,
    samples: Iterable[Mapping[str, np.ndarray]],
    precision: Precision,
    *,
    on_stage: OnStage | None = None,
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
    graph = lower_float(graph, on_stage=on_stage)
    graph = verify(quantize(graph, list(samples), precision), quantized=True)
    if on_stage:
        on_stage("quantize", graph)
    return graph
