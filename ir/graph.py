"""The dataflow graph: named ops connected by tensors.

A :class:`Graph` is a DAG of :class:`Op`; each op produces one tensor named like the
op. networkx holds the structure underneath but never leaks through the API.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from typing import Any, Iterator

import networkx as nx

from celosia.errors import GraphError
from celosia.ir.types import TensorType

__all__ = ["Op", "Graph"]


@dataclass
class Op:
    """One node of the graph.

    Parameters
    ----------
    name : str
        Unique name; also the name of the tensor the op produces.
    kind : str
        Op type (``"Linear"``, ``"ReLU"``, ...); see :mod:`celosia.ir.ops`.
    inputs : tuple of str
        Names of the ops whose outputs this op consumes, in operand order.
    attrs : dict
        Op attributes (constant values, activation, ...).
    type : TensorType or None
        Type of the produced tensor; set by ``infer_shapes``.
    """

    name: str
    kind: str
    inputs: tuple[str, ...] = ()
    attrs: dict[str, Any] = field(default_factory=dict)
    type: TensorType | None = None

    def evolve(self, **changes) -> "Op":
        """A copy of this op with some fields replaced (attrs are copied, not shared)."""
        changes.setdefault("attrs", dict(self.attrs))
        return replace(self, **changes)

    def __str__(self) -> str:
        args = ", ".join(self.inputs)
        return f"{self.name} = {self.kind}({args}) : {self.type if self.type else '?'}"


class Graph:
    """A directed acyclic dataflow graph of :class:`Op`.

    Parameters
    ----------
    name : str
        Model name, used in reports and generated file names.
    """

    def __init__(self, name: str = "model"):
        self.name = name
        self._g = nx.DiGraph()
        self._order = 0

    # -- construction -------------------------------------------------------------
    def add(self, op: Op) -> Op:
        """Add ``op``; its inputs must already be in the graph."""
        if op.name in self._g:
            raise GraphError(f"duplicate op name '{op.name}'", hint="give every op a unique name")
        for src in op.inputs:
            if src not in self._g:
                raise GraphError(
                    f"op '{op.name}' ({op.kind}) reads '{src}', which is not in graph '{self.name}'",
                    hint="add producers before their consumers",
                )
        self._g.add_node(op.name, op=op, order=self._order)
        self._order += 1
        for index, src in enumerate(op.inputs):
            self._add_edge(src, op.name, index)
        return op

    def _add_edge(self, src: str, dst: str, index: int) -> None:
        if self._g.has_edge(src, dst):
            self._g.edges[src, dst]["indices"].append(index)
        else:
            self._g.add_edge(src, dst, indices=[index])

    def replace(self, op: Op) -> None:
        """Replace the op of the same name (its inputs may change)."""
        if op.name not in self._g:
            raise GraphError(f"cannot replace unknown op '{op.name}'")
        for src in list(self._g.predecessors(op.name)):
            self._g.remove_edge(src, op.name)
        self._g.nodes[op.name]["op"] = op
        for index, src in enumerate(op.inputs):
            if src not in self._g:
                raise GraphError(f"op '{op.name}' ({op.kind}) reads unknown '{src}'")
            self._add_edge(src, op.name, index)

    def rewire(self, old: str, new: str) -> None:
        """Make every consumer of ``old`` read ``new`` instead."""
        for dst in list(self.consumers(old)):
            op = self.op(dst)
            self.replace(op.evolve(inputs=tuple(new if s == old else s for s in op.inputs)))

    def remove(self, name: str) -> None:
        """Remove an op that nothing consumes any more."""
        if list(self._g.successors(name)):
            raise GraphError(f"cannot remove op '{name}': {self.consumers(name)} still read it")
        self._g.remove_node(name)

    def copy(self) -> "Graph":
        """A deep copy (ops and their attributes are not shared)."""
        g = Graph(self.name)
        g._g = copy.deepcopy(self._g)
        g._order = self._order
        return g

    # -- queries --------------------------------------------------------------------
    def op(self, name: str) -> Op:
        """The op called ``name``."""
        try:
            return self._g.nodes[name]["op"]
        except KeyError:
            raise GraphError(f"no op named '{name}' in graph '{self.name}'") from None

    def __contains__(self, name: str) -> bool:
        return name in self._g

    def __len__(self) -> int:
        return self._g.number_of_nodes()

    def __iter__(self) -> Iterator[Op]:
        """Ops in a deterministic topological order (ties broken by insertion order)."""
        try:
            order = nx.lexicographical_topological_sort(self._g, key=lambda n: self._g.nodes[n]["order"])
            return iter([self._g.nodes[n]["op"] for n in order])
        except nx.NetworkXUnfeasible:
            cycle = nx.find_cycle(self._g)
            raise GraphError(f"graph '{self.name}' has a cycle through {[e[0] for e in cycle]}") from None

    def ops(self, kind: str | None = None) -> list[Op]:
        """Ops in topological order, optionally only those of one kind."""
        return [op for op in self if kind is None or op.kind == kind]

    def consumers(self, name: str) -> list[str]:
        """Names of the ops that read ``name``, in insertion order."""
        return sorted(self._g.successors(name), key=lambda n: self._g.nodes[n]["order"])

    @property
    def inputs(self) -> list[Op]:
        """The graph's Input ops."""
        return self.ops("Input")

    @property
    def outputs(self) -> list[Op]:
        """The graph's Output ops."""
        return self.ops("Output")

    def has_cycle(self) -> bool:
        """True if the graph is not a DAG."""
        return not nx.is_directed_acyclic_graph(self._g)

    def __str__(self) -> str:
        lines = [f"graph {self.name}:"] + [f"  {op}" for op in self]
        return "\n".join(lines)
