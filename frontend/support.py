"""What the frontends cannot import, reported up front: one record per unsupported node.

:class:`UnsupportedOpsError` lists every offending node of a model at once (not just the
first), with its op type, the Python source line for PyTorch models, and what would work
instead. ``celosia check`` prints the same records.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from celosia.errors import GraphError

__all__ = ["Unsupported", "UnsupportedKind", "UnsupportedOpsError", "format_unsupported", "group_unsupported"]


@dataclass(frozen=True)
class Unsupported:
    """One node Celosia cannot compile.

    Attributes
    ----------
    node : str
        Node name in the source model (FX node, ONNX node or IR op name).
    op : str
        Its op type (ATen target, ONNX op type or IR op kind).
    reason : str
        Why it cannot be compiled.
    hint : str
        What would work instead.
    source : str or None
        ``file:line`` of the PyTorch code that created it.
    stage : str
        ``"import"`` (the frontend has no mapping) or ``"hardware"`` (imported, but no
        generated unit runs it yet).
    """

    node: str
    op: str
    reason: str
    hint: str = ""
    source: str | None = None
    stage: str = "import"

    def to_dict(self) -> dict:
        """A JSON-friendly copy."""
        return asdict(self)

    def __str__(self) -> str:
        where = f" at {self.source}" if self.source else ""
        return f"{self.node} ({self.op}){where}: {self.reason}"


@dataclass
class UnsupportedKind:
    """Every unsupported node of one op type: what ``celosia check`` prints as one row.

    Attributes
    ----------
    op, stage, reason, hint : str
        As in :class:`Unsupported` (the first node's reason and hint).
    nodes : list of str
        The nodes, each with its source line when it has one (``"name (file:line)"``).
    """

    op: str
    stage: str
    reason: str
    hint: str
    nodes: list[str]

    def to_dict(self) -> dict:
        return asdict(self)


def group_unsupported(items: list[Unsupported]) -> list[UnsupportedKind]:
    """The records grouped by (stage, op type), in order of first appearance."""
    groups: dict[tuple[str, str], UnsupportedKind] = {}
    for u in items:
        g = groups.setdefault((u.stage, u.op), UnsupportedKind(u.op, u.stage, u.reason, u.hint, []))
        g.nodes.append(f"{u.node} ({u.source})" if u.source else u.node)
    return list(groups.values())


def format_unsupported(items: list[Unsupported], limit: int = 8) -> str:
    """One line per op type with its nodes (at most ``limit`` named, then a count of the rest)."""
    lines = []
    for g in group_unsupported(items):
        named = ", ".join(g.nodes[:limit]) + (f" and {len(g.nodes) - limit} more" if len(g.nodes) > limit else "")
        lines.append(f"  - {g.op} ({len(g.nodes)}): {g.reason}: {named}")
    return "\n".join(lines)


class UnsupportedOpsError(GraphError):
    """A model holds nodes Celosia cannot import; ``items`` lists every one of them."""

    def __init__(self, model: str, items: list[Unsupported]):
        self.items = list(items)
        hints = sorted({u.hint for u in items if u.hint})
        super().__init__(
            f"model '{model}' has {len(items)} unsupported node(s):\n" + format_unsupported(items),
            hint="; ".join(hints[:3]) or "run `celosia check` for the full list",
        )
