"""``celosia check``: everything Celosia cannot compile in a model, found before any other work.

Two stages are checked, and every offending node of both is listed (not just the first):

* ``import``: nodes the frontend has no mapping for (PyTorch nodes with their source line);
* ``hardware``: imported ops that no generated unit runs yet, after the float passes
  (so ReLU, GELU and residual Add fused into a Linear do not count).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from celosia.errors import CelosiaError, ScheduleError
from celosia.frontend.support import Unsupported, UnsupportedOpsError, format_unsupported, group_unsupported
from celosia.ir.graph import Graph

__all__ = ["CheckReport", "check_model", "resolve_model", "hardware_ops", "hardware_summary"]


def hardware_ops() -> frozenset[str]:
    """Op kinds a generated unit runs today (those with a hardware binding in the registry)."""
    from celosia.ir.registry import registered

    return frozenset(kind for kind, d in registered().items() if d.hw is not None)


def hardware_summary() -> str:
    """One line naming the ops the accelerator runs (the hint of every hardware-stage refusal)."""
    kinds = sorted(hardware_ops() - {"Input", "Const", "Output"})
    return (f"the accelerator runs {', '.join(kinds)} (ReLU, GELU and residual Adds fused into the Linear "
            "before them)")


@dataclass
class CheckReport:
    """Result of :func:`check_model`.

    Attributes
    ----------
    model : str
    items : list of Unsupported
        Every node that cannot be compiled (empty when the model compiles).
    graph : Graph or None
        The imported float graph (None when the import failed).
    """

    model: str
    items: list[Unsupported] = field(default_factory=list)
    graph: Graph | None = None

    @property
    def ok(self) -> bool:
        """True when nothing blocks compilation."""
        return not self.items

    def by_kind(self) -> list:
        """The items grouped by op type (:class:`celosia.frontend.support.UnsupportedKind`)."""
        return group_unsupported(self.items)

    def to_dict(self) -> dict:
        """A JSON-friendly summary: every node, and the same grouped by op type."""
        return {"model": self.model, "ok": self.ok, "unsupported": [u.to_dict() for u in self.items],
                "by_op": [g.to_dict() for g in self.by_kind()]}

    def raise_if_unsupported(self) -> None:
        """Raise the error ``compile`` reports when anything is unsupported."""
        imported = [u for u in self.items if u.stage == "import"]
        if imported:
            raise UnsupportedOpsError(self.model, imported)
        if self.items:
            kinds = sorted({u.op for u in self.items})
            raise ScheduleError(
                f"model '{self.model}' has {len(self.items)} op(s) no hardware unit runs yet:\n"
                + format_unsupported(self.items),
                hint=f"{hardware_summary()}; {', '.join(kinds)} run in the bit-exact golden executor only "
                     "(celosia.ir.golden.run_int on the quantized graph)",
            )


def resolve_model(model, example_inputs=None, *, batch: int = 1) -> tuple[str, Graph]:
    """``(name, float graph)`` of a zoo name, an ``.onnx`` path, a Graph, or a torch module/program."""
    if isinstance(model, Graph):
        return model.name, model
    if isinstance(model, (str, os.PathLike)) and str(model).endswith(".onnx"):
        from celosia.frontend.onnx import load

        g = load(model)
        return g.name, g
    if isinstance(model, str):
        from celosia.frontend.zoo import get_model

        return model, get_model(model).build(batch)
    if example_inputs is None:
        raise CelosiaError(
            f"cannot import a {type(model).__name__} without example inputs",
            hint="pass example_inputs=(tensor, ...) for PyTorch models",
        )
    from celosia.frontend.torch import load

    g = load(model, example_inputs)
    return g.name, g


def check_model(model, example_inputs=None, *, batch: int = 1) -> CheckReport:
    """List every node of ``model`` Celosia cannot compile (see the module docstring)."""
    from celosia.ir.pipeline import lower_float
    from celosia.ir.registry import op_def

    try:
        name, graph = resolve_model(model, example_inputs, batch=batch)
    except UnsupportedOpsError as exc:
        name = str(model) if isinstance(model, (str, os.PathLike)) else type(model).__name__
        return CheckReport(name, list(exc.items))
    lowered = lower_float(graph)
    items = [
        Unsupported(op.name, op.kind, f"{op.kind} has no hardware unit yet", stage="hardware")
        for op in lowered if op_def(op).hw is None
    ]
    return CheckReport(name, items, graph)
