"""The scheduler: bind a quantized graph's ops to the generated units and emit a Program.

Every op is looked up in the registry (:mod:`celosia.ir.registry`): an op without a hardware
binding is refused, naming it; otherwise its binding's ``emit`` places it through the
:class:`Binder`, which owns the scratchpad allocation (first fit with liveness; model inputs and
outputs pinned so the host can write and read them around a run), the weight and bias memory
images and the instruction list.
"""

from __future__ import annotations

import math

from celosia.errors import ScheduleError
from celosia.ir.graph import Graph, Op
from celosia.ir.program import Instruction, Opcode, Program, TensorPlacement
from celosia.ir.registry import op_def

__all__ = ["schedule", "Binder", "unsupported_ops"]


def _rows_and_dim(shape: tuple[int, ...]) -> tuple[int, int]:
    return (math.prod(shape[:-1]) if len(shape) > 1 else 1), shape[-1]


class _Allocator:
    """First-fit allocation of scratchpad word ranges."""

    def __init__(self):
        self.live: dict[str, tuple[int, int]] = {}
        self.high = 0

    def alloc(self, name: str, words: int) -> int:
        addr = 0
        for start, size in sorted(self.live.values()):
            if addr + words <= start:
                break
            addr = max(addr, start + size)
        self.live[name] = (addr, words)
        self.high = max(self.high, addr + words)
        return addr

    def free(self, name: str) -> None:
        self.live.pop(name, None)


class Binder:
    """What an op's binding places things through: tensors, memory images, instructions.

    Attributes
    ----------
    graph : Graph
    lanes, act_bits, weight_bits, acc_bits : int
        The generated units' sizes and widths.
    instructions : list of Instruction
    weight_words, bias_words : list of int
        Weight- and bias-memory images.
    """

    def __init__(self, graph: Graph, lanes: int, act_bits: int, weight_bits: int, acc_bits: int):
        self.graph = graph
        self.lanes = lanes
        self.act_bits, self.weight_bits, self.acc_bits = act_bits, weight_bits, acc_bits
        self.instructions: list[Instruction] = []
        self.weight_words: list[int] = []
        self.bias_words: list[int] = []
        self.macs = self.padded_macs = 0
        self.outputs: dict[str, TensorPlacement] = {}
        self._alloc = _Allocator()
        self._place: dict[str, TensorPlacement] = {}
        self._pinned: set[str] = {op.inputs[0] for op in graph.outputs}

    def place(self, op: Op, *, pinned: bool = False) -> TensorPlacement:
        """Allocate ``op``'s output: ``rows x ceil(D / lanes)`` words (docs/isa.md)."""
        rows, dim = _rows_and_dim(op.type.shape)
        tiles = math.ceil(dim / self.lanes)
        p = TensorPlacement(op.name, self._alloc.alloc(op.name, rows * tiles), rows, tiles, op.type.shape, op.type.fmt)
        self._place[op.name] = p
        if pinned:
            self._pinned.add(op.name)
        return p

    def placement(self, name: str) -> TensorPlacement:
        """Where tensor ``name`` lives (it must have been placed by an earlier op)."""
        try:
            return self._place[name]
        except KeyError:
            raise ScheduleError(f"tensor '{name}' is not in the scratchpad",
                                hint="it is a constant or was never placed; only activations are") from None

    def alias_output(self, op: Op) -> None:
        """An Output reads its operand's words in place."""
        src = self.placement(op.inputs[0])
        self.outputs[op.name] = TensorPlacement(op.name, src.addr, src.rows, src.tiles, op.type.shape, op.type.fmt)

    def emit(self, ins: Instruction, *, macs: int = 0, padded_macs: int = 0) -> None:
        """Append an instruction (and count its useful and performed MACs)."""
        self.instructions.append(ins)
        self.macs += macs
        self.padded_macs += padded_macs

    def free_dead(self, op: Op, last_use: dict[str, int], index: int) -> None:
        """Release the operands of ``op`` whose last reader it is."""
        for src in op.inputs:
            if last_use.get(src) == index and src in self._place and src not in self._pinned:
                self._alloc.free(src)

    @property
    def scratch_words(self) -> int:
        """Peak scratchpad words allocated."""
        return self._alloc.high

    @property
    def inputs(self) -> dict[str, TensorPlacement]:
        return {op.name: self._place[op.name] for op in self.graph.inputs}


def unsupported_ops(graph: Graph) -> list[tuple[Op, str]]:
    """``(op, reason)`` for every op of ``graph`` no generated unit runs."""
    found = []
    for op in graph:
        hw = op_def(op).hw
        if hw is None:
            found.append((op, f"{op.kind} has no hardware unit yet"))
        elif hw.check is not None and op.type is not None and op.type.fmt is not None:
            reason = hw.check(graph, op)
            if reason:
                found.append((op, reason))
    return found


def schedule(graph: Graph, lanes: int, *, acc_bits: int | None = None) -> Program:
    """Compile a quantized, fused graph into a :class:`Program` for a ``lanes x lanes`` array.

    Parameters
    ----------
    graph : Graph
        Output of :func:`celosia.ir.pipeline.lower`.
    lanes : int
        Rows and columns of the linear array (also the scratchpad word's lanes).
    acc_bits : int, optional
        Accumulator width; defaults to the bias format's width.

    Raises
    ------
    ScheduleError
        Naming an op no unit can run, or a layer that does not fit the formats.
    """
    for op, reason in unsupported_ops(graph):
        raise ScheduleError(
            f"op '{op.name}' ({op.kind}) cannot be mapped onto the generated units: {reason}",
            hint="`celosia check MODEL` lists every such op; the accelerator runs "
            + ", ".join(k for k, d in _hardware_kinds().items() if d != "host")
            + " (ReLU, GELU and a residual Add run fused into the Linear before them when it feeds nothing else)",
        )
    linears = graph.ops("Linear")
    if not linears:
        raise ScheduleError(f"graph '{graph.name}' has no Linear op: nothing to accelerate")
    act_bits = max(op.type.fmt.bits for op in graph if op.kind != "Const")
    weight_bits = max(graph.op(op.inputs[1]).type.fmt.bits for op in linears)
    acc_bits = acc_bits or max(graph.op(op.inputs[2]).type.fmt.bits for op in linears)
    gelu_frac = _gelu_frac(linears, act_bits)

    binder = Binder(graph, lanes, act_bits, weight_bits, acc_bits)
    order = list(graph)
    last_use = {src: i for i, op in enumerate(order) for src in op.inputs}
    for i, op in enumerate(order):
        op_def(op).hw.emit(binder, op)
        binder.free_dead(op, last_use, i)
    binder.emit(Instruction(opcode=Opcode.HALT, comment="end"))
    for ins in binder.instructions:
        ins.encode()  # range-check every field now, naming the layer
    return Program(
        name=graph.name,
        lanes=lanes,
        act_bits=act_bits,
        weight_bits=weight_bits,
        acc_bits=acc_bits,
        instructions=binder.instructions,
        weight_words=binder.weight_words,
        bias_words=binder.bias_words,
        scratch_words=binder.scratch_words,
        inputs=binder.inputs,
        outputs=binder.outputs,
        macs=binder.macs,
        padded_macs=binder.padded_macs,
        gelu_frac=gelu_frac,
    )


def _hardware_kinds() -> dict[str, str]:
    from celosia.ir.registry import registered

    return {kind: d.hw.unit for kind, d in registered().items() if d.hw is not None}


def _gelu_frac(linears: list[Op], act_bits: int) -> int | None:
    """The GELU epilogue's format (``Fixed(act_bits, frac)``): one per generated array."""
    gelu = [op for op in linears if op.attrs.get("activation") == "gelu"]
    formats = {op.type.fmt for op in gelu}
    if len(formats) > 1 or any(f.bits != act_bits for f in formats):
        raise ScheduleError(
            "the GELU-fused Linears " + ", ".join(f"'{op.name}' ({op.type.fmt})" for op in gelu)
            + f" need one format of {act_bits} bits: the array has one GELU epilogue format",
            hint="quantize with celosia.ir.pipeline.lower (it gives them one format) and no per-layer override",
        )
    return next(iter(formats)).frac if formats else None
