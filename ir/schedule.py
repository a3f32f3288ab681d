"""The scheduler: bind a quantized graph's ops to the generated units and emit a Program.

Every op is looked up in the registry (:mod:`celosia.ir.registry`): an op without a hardware
binding is refused, naming it; otherwise its binding's ``emit`` places it through the
:class:`Binder`, which owns the scratchpad allocation (first fit with liveness; model inputs and
outputs pinned so the host can write and read them around a run), the weight and bias memory
images and the instruction list.
"""

from __future__ import annotations

import math

import numpy as np

from celosia.errors import ScheduleError
from celosia.ir.graph import Graph, Op
from celosia.ir.program import Instruction, Opcode, Program, TensorPlacement
from celosia.ir.registry import op_def

__all__ = ["schedule", "Binder", "unsupported_ops"]


def _rows_and_dim(shape: tuple[int, ...]) -> tuple[int, int]:
    return (math.prod(shape[:-1]) if len(shape) > 1 else 1), shape[-1]


class _Allocator:
    """First-fit allocation of scratchpad word ranges, with a capacity."""

    def __init__(self, capacity: int | None):
        self.live: dict[str, tuple[int, int]] = {}
        self.high = 0
        self.capacity = capacity

    def alloc(self, name: str, words: int) -> int:
        addr = 0
        for start, size in sorted(self.live.values()):
            if addr + words <= start:
                break
            addr = max(addr, start + size)
        if self.capacity is not None and addr + words > self.capacity:
            raise ScheduleError(
                f"tensor '{name}' ({words} words) does not fit the scratchpad: it would end at word "
                f"{addr + words}, the scratchpad has {self.capacity} ({self.used()} words live)",
                hint="use a smaller batch or a board with more block RAM (see `celosia boards`)",
            )
        self.live[name] = (addr, words)
        self.high = max(self.high, addr + words)
        return addr

    def used(self) -> int:
        return sum(size for _, size in self.live.values())

    def free(self, name: str) -> None:
        self.live.pop(name, None)


class Binder:
    """What an op's binding places things through: tensors, memory images, instructions.

    Tensors are allocated in the scratchpad by liveness; a tensor can also be a *view* of another
    one's words (a slice, a reshape, one part of a concatenation): its words stay allocated while
    any view of them is still to be read. Constant tensors an instruction reads from the
    scratchpad (class tokens, positional tables) live in a pinned pool preloaded with the
    bitstream (``Program.scratch_init``).

    Attributes
    ----------
    graph : Graph
    lanes, act_bits, weight_bits, acc_bits : int
        The generated units' sizes and widths.
    instructions : list of Instruction
    weight_words, bias_words : list of int
        Weight- and bias-memory images.
    mean_consts : list of int
        The vector unit's MEAN constants.
    """

    def __init__(self, graph: Graph, lanes: int, act_bits: int, weight_bits: int, acc_bits: int,
                 capacity: int | None = None, norm_lanes: int | None = None):
        self.graph = graph
        self.lanes = lanes
        self.norm_lanes = norm_lanes or min(lanes, 2)
        self.act_bits, self.weight_bits, self.acc_bits = act_bits, weight_bits, acc_bits
        self.instructions: list[Instruction] = []
        self.bounds: list[float] = []
        self.weight_words: list[int] = []
        self.bias_words: list[int] = []
        self.mean_consts: list[int] = []
        self.norm_records: list = []  # celosia.ir.norm.NormRecord of each NORM instruction
        self.attention_records: list = []  # celosia.ir.attention.AttentionRecord of each ATTENTION
        self.scratch_init: dict[int, int] = {}
        self.input_layouts: dict[str, np.ndarray] = {}
        self.macs = self.padded_macs = 0
        self.outputs: dict[str, TensorPlacement] = {}
        self.op_instructions: dict[str, list[int]] = {}
        self.current: Op | None = None  # the op being placed (instructions are credited to it)
        self._alloc = _Allocator(capacity)
        self._place: dict[str, TensorPlacement] = {}
        self._owner: dict[str, str] = {}  # tensor -> the allocation its words belong to
        self._readers: dict[str, set[str]] = {}  # allocation -> tensors still to be read from it
        self._pinned: set[str] = set()
        self._input_end: dict[str, str] = {}
        self._gathered: dict[str, np.ndarray] = {}
        self.done: set[str] = set()  # ops placed ahead of their turn (an input's layout chain)

    def attention_lanes(self, e: int) -> int:
        """MAC lanes of the attention engine for head size ``e`` (at most E and the word's lanes)."""
        return max(2, min(e, self.lanes))

    # ---- placement -------------------------------------------------------------------------------
    def tiles_of(self, dim: int) -> int:
        return math.ceil(dim / self.lanes)

    def place(self, op: Op, *, pinned: bool = False, name: str | None = None) -> TensorPlacement:
        """Allocate a dense tensor of ``op``'s shape: ``rows x ceil(D / lanes)`` words (docs/isa.md).

        When the op's only reader is a Concatenation that can hold it in place, the op is written
        straight into its part of the concatenation's words instead (no copy).
        """
        if name is None and not pinned:
            slot = self._concat_slot(op)
            if slot is not None:
                return slot
        name = name or op.name
        rows, dim = _rows_and_dim(op.type.shape)
        tiles = self.tiles_of(dim)
        p = TensorPlacement(name, self._alloc.alloc(name, rows * tiles), rows, tiles, op.type.shape, op.type.fmt)
        self._register(name, p, owner=name)
        if pinned:
            self._pinned.add(name)
        return p

    def view(self, name: str, of: TensorPlacement | str, *, addr: int, rows: int, tiles: int, stride: int,
             shape: tuple[int, ...], fmt) -> TensorPlacement:
        """Make tensor ``name`` a view of the words of tensor ``of`` (a placement or a name)."""
        p = TensorPlacement(name, addr, rows, tiles, tuple(shape), fmt, stride if stride != tiles else 0)
        self._register(name, p, owner=self._owner[of if isinstance(of, str) else of.name])
        return p

    def reserve(self, name: str, shape: tuple[int, ...], fmt) -> TensorPlacement:
        """Allocate a tensor before the op that produces it is placed (a concatenation's buffer)."""
        rows, dim = _rows_and_dim(shape)
        tiles = self.tiles_of(dim)
        p = TensorPlacement(name, self._alloc.alloc(name, rows * tiles), rows, tiles, tuple(shape), fmt)
        self._register(name, p, owner=name)
        return p

    def _concat_slot(self, op: Op) -> TensorPlacement | None:
        from celosia.ir.binding import concat_region

        users = self.graph.consumers(op.name)
        if len(users) != 1:
            return None
        cat = self.graph.op(users[0])
        if cat.kind != "Concat" or cat.inputs.count(op.name) != 1 or cat.type.fmt != op.type.fmt:
            return None
        region = concat_region(self, cat, cat.inputs.index(op.name))
        if region is None:
            return None
        buffer = self._place.get(cat.name) or self.reserve(cat.name, cat.type.shape, cat.type.fmt)
        addr, rows, tiles, stride = region
        return self.view(op.name, buffer, addr=buffer.addr + addr, rows=rows, tiles=tiles, stride=stride,
                         shape=op.type.shape, fmt=op.type.fmt)

    def _register(self, name: str, p: TensorPlacement, *, owner: str) -> None:
        self._place[name] = p
        self._owner[name] = owner
        self._readers.setdefault(owner, set()).add(name)

    def owner(self, name: str) -> str:
        """The allocation tensor ``name``'s words belong to."""
        return self._owner[name]

    def has(self, name: str) -> bool:
        return name in self._place or name in self._gathered

    def gather(self, name: str, slots: np.ndarray, of: str) -> None:
        """Make tensor ``name`` a *gathered* view of ``of``'s words: element ``i`` in scratchpad slot
        ``slots[i]`` (``word·lanes + lane``). It costs nothing until an op needs it as rows and
        strides (:meth:`placement` then copies it into place); layout ops and units that address
        heads themselves (attention) read it where it is (:meth:`slots`)."""
        owner = self._owner[of]
        self._gathered[name] = np.asarray(slots)
        self._owner[name] = owner
        self._readers.setdefault(owner, set()).add(name)

    def slots(self, name: str) -> np.ndarray:
        """The scratchpad slot (``word·lanes + lane``) of every element of tensor ``name``."""
        from celosia.ir.binding import element_slots

        if name in self._gathered and name not in self._place:
            return self._gathered[name]
        return element_slots(self.placement(name), self.lanes)

    def placement(self, name: str) -> TensorPlacement:
        """Where tensor ``name`` lives as rows and strides; a constant is put into the preloaded pool
        on first use, a gathered view is copied into a dense tensor on first use."""
        if name not in self._place:
            op = self.graph.op(name)
            if name in self._gathered:
                self._materialize(op)
            elif op.kind == "Const":
                self._place_const(op)
            else:
                raise ScheduleError(f"tensor '{name}' is not in the scratchpad", hint="it was never placed")
        return self._place[name]

    def _materialize(self, op: Op) -> None:
        from celosia.ir.binding import copy_gathered

        source_owner = self._owner[op.name]
        slots = self._gathered[op.name]
        dst = self.place(op, name=op.name)  # its own words now
        copy_gathered(self, slots, dst, self.graph.op(op.inputs[0]).type.fmt if op.inputs else op.type.fmt)
        readers = self._readers.get(source_owner, set())
        readers.discard(op.name)
        if not readers and source_owner not in self._pinned:
            self._alloc.free(source_owner)

    def _place_const(self, op: Op) -> None:
        from celosia.ir.program import pack_words

        p = self.place(op, pinned=True)
        codes = np.asarray(op.attrs["codes"], dtype=np.int64)
        for i, word in enumerate(pack_words(codes, p, self.lanes, self.act_bits)):
            self.scratch_init[p.addr + i] = word

    def alias_output(self, op: Op) -> None:
        """An Output reads its operand's words in place (a dense copy first if it is a strided view)."""
        src = self.placement(op.inputs[0])
        if not src.dense:
            from celosia.ir.binding import emit_copy

            dst = self.place(op, pinned=True, name=f"{op.name}.dense")
            emit_copy(self, src, dst, self.graph.op(op.inputs[0]).type.fmt, op.type.fmt, comment=f"{op.name}: dense")
            src = dst
        self._pinned.add(self._owner[src.name])
        self.outputs[op.name] = TensorPlacement(op.name, src.addr, src.rows, src.tiles, op.type.shape, op.type.fmt)

    # ---- instructions ----------------------------------------------------------------------------
    def emit(self, ins: Instruction, *, bound: float, macs: int = 0, padded_macs: int = 0) -> None:
        """Append an instruction with its roofline ``bound`` (cycles at its unit's peak rate for
        its useful work, or at its memories' bandwidth, whichever is longer; docs/isa.md), and
        count its useful and performed MACs."""
        if self.current is not None:
            self.op_instructions.setdefault(self.current.name, []).append(len(self.instructions))
        self.instructions.append(ins)
        self.bounds.append(float(bound))
        self.macs += macs
        self.padded_macs += padded_macs

    # ---- liveness ----------------------------------------------------------------------------------
    def free_dead(self, op: Op, last_use: dict[str, int], index: int) -> None:
        """Release the words of operands of ``op`` whose last reader it is (once no view needs them)."""
        for src in set(op.inputs) | {op.name}:
            if last_use.get(src, index) != index or src not in self._owner:
                continue
            owner = self._owner[src]
            readers = self._readers.get(owner, set())
            readers.discard(src)
            if not readers and owner not in self._pinned:
                self._alloc.free(owner)

    @property
    def scratch_words(self) -> int:
        """Peak scratchpad words allocated."""
        return self._alloc.high

    @property
    def inputs(self) -> dict[str, TensorPlacement]:
        return {op.name: self._place[self.input_tensor(op.name)] for op in self.graph.inputs}

    def input_tensor(self, name: str) -> str:
        """The tensor the host writes for Input ``name`` (the end of its layout chain)."""
        return self._input_end.get(name, name)

    def place_input(self, op: Op) -> None:
        """Pin an Input; a chain of Reshape/Transpose on it becomes the host's layout transform:
        the host writes the chain's result, so the chain costs no instruction."""
        from celosia.ir.layout import layout_apply

        chain = [op]
        while True:
            users = self.graph.consumers(chain[-1].name)
            if len(users) != 1 or self.graph.op(users[0]).kind not in ("Reshape", "Transpose"):
                break
            chain.append(self.graph.op(users[0]))
        end = chain[-1]
        self.place(end, pinned=True)
        index = np.arange(int(np.prod(op.type.shape))).reshape(op.type.shape)
        for layout in chain[1:]:
            index = layout_apply(layout.kind, layout.attrs, index)
            self.done.add(layout.name)
        if len(chain) > 1:
            self.input_layouts[op.name] = index.reshape(-1)
            self._input_end[op.name] = end.name


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


def schedule(graph: Graph, lanes: int, *, acc_bits: int | None = None, capacity: int | None = None,
             norm_lanes: int | None = None) -> Program:
    """Compile a quantized, fused graph into a :class:`Program` for a ``lanes x lanes`` array.

    Parameters
    ----------
    graph : Graph
        Output of :func:`celosia.ir.pipeline.lower`.
    lanes : int
        Rows and columns of the linear array (also the scratchpad word's lanes).
    acc_bits : int, optional
        Accumulator width; defaults to the bias format's width.
    capacity : int, optional
        Scratchpad words available; a tensor that does not fit is refused, naming it.
    norm_lanes : int, optional
        Elements the row unit normalizes per cycle (a divisor of ``lanes``; default 2).

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

    binder = Binder(graph, lanes, act_bits, weight_bits, acc_bits, capacity, norm_lanes)
    order = list(graph)
    last_use = {src: i for i, op in enumerate(order) for src in op.inputs}
    for i, op in enumerate(order):
        if op.name not in binder.done:
            binder.current = op
            op_def(op).hw.emit(binder, op)
        binder.free_dead(op, last_use, i)
    binder.current = None
    binder.emit(Instruction(opcode=Opcode.HALT, comment="end"), bound=0)
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
        scratch_init=binder.scratch_init,
        bounds=binder.bounds,
        op_kinds={name: graph.op(name).kind for name in binder.op_instructions},
        mean_consts=binder.mean_consts,
        norm_records=binder.norm_records,
        attention_records=binder.attention_records,
        attention=_attention_config(graph, binder) if binder.attention_records else None,
        norm_lanes=binder.norm_lanes,
        op_instructions=binder.op_instructions,
        input_layouts=binder.input_layouts,
    )


def _attention_config(graph: Graph, binder: Binder):
    """The one attention engine every Attention op of ``graph`` runs on (their formats are shared by
    the quantize pass; head sizes and scales must agree)."""
    from celosia.ir.attention import TILE, AttentionConfig, key_count

    ops = graph.ops("Attention")
    shapes = set()
    for op in ops:
        q, k, v = (graph.op(i).type.shape for i in op.inputs[:3])
        packed = len(q) == 3
        heads = int(op.attrs.get("heads", 1)) if packed else q[1]
        kv = int(op.attrs.get("kv_heads", heads)) if packed else k[1]
        e = q[-1] // heads if packed else q[-1]
        f = v[-1] // kv if packed else v[-1]
        scale = float(op.attrs.get("scale") or 1.0 / math.sqrt(e))
        shapes.add((e, f, scale, int(op.attrs.get("tile", TILE))))
    if len(shapes) > 1:
        raise ScheduleError("the Attention ops " + ", ".join(f"'{op.name}'" for op in ops)
                            + f" have different head sizes, scales or key tiles {sorted(shapes)}: the accelerator has "
                            "one engine", hint="use one head size (E, F) and scale for every attention layer")
    (e, f, scale, tile), = shapes
    first = ops[0]
    fmts = [graph.op(i).type.fmt for i in first.inputs[:3]]
    seq = max(max(key_count(graph.op(op.inputs[1]).type.shape) for op in ops), 2)
    return AttentionConfig(e=e, f=f, lanes=binder.attention_lanes(e), rows=1, q_fmt=fmts[0], k_fmt=fmts[1],
                           v_fmt=fmts[2], score_fmt=first.attrs["score_fmt"], out_fmt=first.type.fmt, scale=scale,
                           max_len=1 << (seq - 1).bit_length(), tile=tile)


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
