"""Hardware bindings of the ops a generated unit runs: how the scheduler places each one.

Each binding's ``emit(binder, op)`` allocates the op's output in the scratchpad and appends its
instructions to the :class:`~celosia.ir.schedule.Binder`; ``cost`` is the issue cycles of one of
its instructions when nothing stalls. The registry (:mod:`celosia.ir.ops`) attaches them to ops.
"""

from __future__ import annotations

import math

import numpy as np

from celosia.errors import ScheduleError
from celosia.ir.graph import Op
from celosia.ir.program import Instruction, Opcode, pack_lanes
from celosia.ir.registry import Binding

__all__ = ["HOST_BINDING", "LINEAR_BINDING", "VECTOR_ADD", "VECTOR_LAYOUT", "VECTOR_CONCAT", "VECTOR_MEAN",
           "ROW_NORM", "ATTENTION_UNIT",
           "vector_cycles", "norm_cycles", "instruction_cycles", "emit_copy", "concat_region", "row_runs",
           "element_slots"]

#: The vector unit's timing contract (hw/vector.py is held to it by tests/test_vector_unit.py):
#: ADD/COPY stream one word per cycle plus this pipeline latency; MEAN takes per tile its rows,
#: then one cycle per lane, plus this overhead.
VECTOR_STREAM_LATENCY = 5
VECTOR_MEAN_OVERHEAD = 9


def vector_cycles(ins: Instruction, lanes: int) -> int:
    """Cycles the vector unit is busy for ``ins``: ``m·nt + 5`` (ADD, COPY), ``nt·(m + lanes + 9)`` (MEAN)."""
    if ins.opcode == Opcode.MEAN:
        return ins.nt * (ins.m + lanes + VECTOR_MEAN_OVERHEAD)
    return ins.m * ins.nt + VECTOR_STREAM_LATENCY


def instruction_cycles(ins: Instruction, program) -> int:
    """Busy cycles of a scratchpad-unit instruction of ``program``, from the binding that emits its opcode."""
    from celosia.ir.registry import registered

    for d in registered().values():
        if d.hw is not None and ins.opcode in d.hw.opcodes and d.hw.cost is not None:
            return d.hw.cost(ins, program)
    raise ScheduleError(f"no unit declares the cost of opcode {Opcode(ins.opcode).name}")


def _emit_host(binder, op: Op) -> None:
    """Inputs get pinned scratchpad space (the host writes them, after the layout transform of a
    Reshape/Transpose chain on them); Outputs alias their operand; Consts are read from ROM by
    the op that uses them, or from the preloaded pool (:meth:`Binder.placement`)."""
    if op.kind == "Input":
        binder.place_input(op)
    elif op.kind == "Output":
        binder.alias_output(op)


HOST_BINDING = Binding(unit="host", opcodes=(), emit=_emit_host)


def _overlaps(a: int, a_words: int, b: int, b_words: int) -> bool:
    return a < b + b_words and b < a + a_words


def _y_words(ins: Instruction) -> int:
    """Words from ``ins.y_addr`` to the end of its output (strided rows included)."""
    return (ins.m - 1) * ins.y_stride + ins.nt if ins.m else 0


def _check_linear(binder, op: Op, p: dict) -> None:
    graph = binder.graph
    k = graph.op(op.inputs[0]).type.shape[-1]
    for what, fmt, bits in (
        ("input", graph.op(op.inputs[0]).type.fmt, binder.act_bits),
        ("weight", graph.op(op.inputs[1]).type.fmt, binder.weight_bits),
        ("output", op.type.fmt, binder.act_bits),
    ):
        if fmt.bits > bits:
            raise ScheduleError(f"Linear '{op.name}': {what} format {fmt} is wider than the unit's {bits} bits")
    bias = np.abs(np.asarray(graph.op(op.inputs[2]).attrs["codes"], dtype=np.int64))
    bound = k * (1 << (binder.act_bits - 1)) * (1 << (binder.weight_bits - 1)) + int(bias.max(initial=0))
    if len(op.inputs) == 4:
        bound += (1 << (binder.act_bits - 1)) << p["res_shift"]
    if bound >= 1 << (binder.acc_bits - 1):
        raise ScheduleError(
            f"Linear '{op.name}': the worst-case accumulator magnitude 2^{math.log2(bound):.1f} "
            f"does not fit a {binder.acc_bits}-bit accumulator (K={k})",
            hint="use a wider accumulator (Precision.acc_bits) or narrower formats",
        )


def _emit_linear(binder, op: Op) -> None:
    """One LINEAR instruction: weight tiles and biases packed into ROM, Y placed in the scratchpad;
    ``chain`` set when X is exactly the previous instruction's Y (docs/isa.md)."""
    from celosia.ir.ops import linear_params

    graph, lanes = binder.graph, binder.lanes
    p = linear_params(op, [graph.op(i) for i in op.inputs])
    _check_linear(binder, op, p)
    x = binder.placement(op.inputs[0])
    y = binder.place(op)
    w = np.asarray(graph.op(op.inputs[1]).attrs["codes"], dtype=np.int64)  # (N, K)
    b = np.asarray(graph.op(op.inputs[2]).attrs["codes"], dtype=np.int64)
    n, k = w.shape
    kt, nt = x.tiles, y.tiles
    wk = np.zeros((kt * lanes, nt * lanes), dtype=np.int64)
    wk[:k, :n] = w.T
    bp = np.zeros(nt * lanes, dtype=np.int64)
    bp[:n] = b
    w_addr, b_addr = len(binder.weight_words), len(binder.bias_words)
    for nt_i in range(nt):
        for kt_i in range(kt):
            tile = wk[kt_i * lanes : (kt_i + 1) * lanes, nt_i * lanes : (nt_i + 1) * lanes]
            binder.weight_words.append(pack_lanes(tile.reshape(-1), binder.weight_bits))
        binder.bias_words.append(pack_lanes(bp[nt_i * lanes : (nt_i + 1) * lanes], binder.acc_bits))
    r = binder.placement(op.inputs[3]) if len(op.inputs) == 4 else None
    prev = binder.instructions[-1] if binder.instructions else None
    chain = (
        prev is not None
        and prev.opcode == Opcode.LINEAR
        and prev.y_addr == x.addr
        and prev.m == x.rows
        and prev.nt == kt
        and x.dense
        and prev.y_stride == prev.nt
        and (r is None or not _overlaps(r.addr, r.words, prev.y_addr, prev.m * prev.nt))
    )
    # Reading nothing the previous LINEAR writes (e.g. K after Q, both from the same input), it
    # issues while that one drains instead of waiting for its last write.
    indep = (
        prev is not None
        and prev.opcode == Opcode.LINEAR
        and not chain
        and not _overlaps(x.addr, x.words, prev.y_addr, _y_words(prev))
        and (r is None or not _overlaps(r.addr, r.words, prev.y_addr, _y_words(prev)))
    )
    binder.emit(
        Instruction(
            opcode=Opcode.LINEAR,
            x_addr=x.addr,
            y_addr=y.addr,
            r_addr=r.addr if r else 0,
            x_stride=x.row_stride,
            y_stride=y.row_stride,
            r_stride=r.row_stride if r else 0,
            w_addr=w_addr,
            b_addr=b_addr,
            m=x.rows,
            kt=kt,
            nt=nt,
            shift=p["shift"],
            res_shift=p["res_shift"],
            rounding=p["rounding"].code,
            relu=int(p["relu"]),
            gelu=int(op.attrs.get("activation") == "gelu"),
            residual=int(r is not None),
            out_bits=op.type.fmt.bits,
            chain=int(chain),
            indep=int(indep),
            comment=f"{op.name}: {x.rows}x{k} @ {k}x{n}",
        ),
        macs=x.rows * k * n,
        padded_macs=x.rows * kt * nt * lanes * lanes,
        # MACs at lanes² a cycle, or X in / Y out at one word a cycle (weights: one tile a cycle)
        bound=max(x.rows * k * n / lanes**2, x.rows * k / lanes, x.rows * n / lanes),
    )


def _linear_cost(ins: Instruction, program) -> int:
    return ins.m * ins.kt * ins.nt


def _linear_unsupported(graph, op: Op) -> str | None:
    if "channel_frac" in graph.op(op.inputs[1]).attrs:
        return "per-channel weight formats are not taken by the linear unit yet (golden executor only)"
    return None


LINEAR_BINDING = Binding(unit="linear", opcodes=(Opcode.LINEAR,), emit=_emit_linear, cost=_linear_cost,
                         check=_linear_unsupported)


# ---- the vector unit: elementwise sums, copies, means; layout ops as views ----------------------------

#: Largest left shift the vector unit applies to an ADD/COPY operand (hw.vector.VectorUnit).
VECTOR_MAX_SHIFT = 24


def _shifts(names_fracs: list[tuple[str, int]], out_frac: int, op: Op) -> tuple[list[int], int]:
    """Left shifts aligning the operands, and the right shift to the output, of an exact
    ``requantize(Σ operand·2^(F − frac), F, out)`` with ``F`` the finest operand."""
    finest = max(f for _, f in names_fracs)
    extra = max(out_frac - finest, 0)
    lefts = [finest - f + extra for _, f in names_fracs]
    for (name, _), left in zip(names_fracs, lefts):
        if left > VECTOR_MAX_SHIFT:
            raise ScheduleError(
                f"{op.kind} '{op.name}': operand '{name}' needs a left shift of {left} bits to align it, "
                f"the vector unit shifts at most {VECTOR_MAX_SHIFT}",
                hint="the operands' formats are too far apart; quantize with fewer fractional bits")
    return lefts, max(finest - out_frac, 0)


def emit_copy(binder, src, dst, fin, fout, *, y_lanes: int = 0, comment: str = "") -> None:
    """One COPY instruction: ``dst = requantize(src, fin → fout)`` over ``src``'s rows and tiles."""
    (left,), right = _shifts([(src.name, fin.frac)], fout.frac, binder.current or Op(src.name, "Copy"))
    binder.emit(Instruction(
        opcode=Opcode.COPY, x_addr=src.addr, x_stride=src.row_stride, y_addr=dst.addr, y_stride=dst.row_stride,
        m=src.rows, nt=src.tiles, x_shift=left, shift=right, rounding=2, out_bits=fout.bits, y_lanes=y_lanes,
        comment=comment or f"copy {src.name} -> {dst.name}"), bound=src.rows * src.shape[-1] / binder.lanes)


def row_runs(src_rows) -> list[tuple[int, int, int, int]]:
    """Split a destination-row -> source-row map into runs ``(dst0, src0, count, step)`` in which the
    source row grows by a constant step (each run is one strided view or one COPY)."""
    src_rows = [int(r) for r in np.asarray(src_rows).reshape(-1)]
    runs, i = [], 0
    while i < len(src_rows):
        j = i + 1
        step = src_rows[j] - src_rows[i] if j < len(src_rows) else 1
        if step <= 0:
            step = 1
            j = i + 1
        else:
            while j < len(src_rows) and src_rows[j] - src_rows[j - 1] == step:
                j += 1
        runs.append((i, src_rows[i], j - i, step))
        i = j
    return runs


def _leading(shape) -> tuple[int, ...]:
    return tuple(shape[:-1]) or (1,)


def element_slots(p, lanes: int) -> np.ndarray:
    """Scratchpad slot ``word·lanes + lane`` of every element of placement ``p``, shaped like it."""
    rows, width = int(np.prod(_leading(p.shape))), p.shape[-1]
    col = np.arange(width)
    slots = (p.addr + np.arange(rows)[:, None] * p.row_stride + col[None, :] // lanes) * lanes + col[None, :] % lanes
    return slots.reshape(p.shape)


def _affine_rows(slots: np.ndarray, lanes: int):
    """``(first word of each row, tiles)`` when every row of ``slots`` (..., D) is a run of words
    starting at lane 0 (column c in lane c % lanes of word first + c // lanes); else None."""
    width = slots.shape[-1]
    rows = slots.reshape(-1, width)
    first = rows[:, 0]
    if np.any(first % lanes):
        return None
    col = np.arange(width)
    if not np.array_equal(rows, first[:, None] + (col // lanes * lanes + col % lanes)[None, :]):
        return None
    return first // lanes, -(-width // lanes)


def _emit_layout(binder, op: Op) -> None:
    """Reshape / Transpose / Slice: a view of the operand's words when every row of the result is a
    run of whole words and the rows are evenly spaced; otherwise one COPY per evenly spaced run of
    rows. Moves within a word (lane shifts) are refused: the units move whole words."""
    from celosia.ir.layout import layout_apply

    src = op.inputs[0]
    lanes, shape = binder.lanes, op.type.shape
    slots = layout_apply(op.kind, op.attrs, binder.slots(src))
    rows = _affine_rows(slots, lanes)
    if rows is None:
        raise ScheduleError(
            f"{op.kind} '{op.name}' moves elements within scratchpad words "
            f"({binder.graph.op(src).type.shape} -> {shape}); the "
            f"scratchpad units move whole {lanes}-lane words",
            hint=f"keep the last axis whole (or split it at multiples of {lanes}), or apply the layout change to "
                 "a model input, where the host does it")
    first, tiles = rows
    width = shape[-1]
    # the lanes past the width in a row's last word must be padding (zero), not the next columns
    clean = width % lanes == 0 or _ends_rows(binder.slots(op.inputs[0]), first + tiles - 1, lanes)
    runs = row_runs(first)
    if binder.has(op.name):  # reserved by the op that wrote it in this layout already
        if np.array_equal(element_slots(binder.placement(op.name), lanes), slots):
            return
    if len(runs) == 1 and clean:
        _, first_word, count, step = runs[0]
        binder.view(op.name, src, addr=first_word, rows=count, tiles=tiles, stride=step, shape=shape,
                    fmt=op.type.fmt)
        return
    binder.gather(op.name, slots, src)  # copied into place only if a unit needs it as rows


def _ends_rows(source_slots: np.ndarray, last_words: np.ndarray, lanes: int) -> bool:
    """True when each of ``last_words`` is the last word of a row of the source tensor whose width
    leaves the same lanes as padding (so the lanes past the width hold zero)."""
    source = source_slots.reshape(-1, source_slots.shape[-1])
    return bool(np.isin(last_words, source[:, -1] // lanes).all())


def copy_gathered(binder, slots: np.ndarray, dst, fmt) -> None:
    """COPY a gathered tensor (element slots ``slots``) into the dense placement ``dst``: one COPY
    per evenly spaced run of rows that are whole runs of words, else one per such run of a single
    tile column. Refused when an element would move within its word."""
    lanes, width = binder.lanes, slots.shape[-1]
    flat = slots.reshape(-1, width)
    tiles = dst.tiles
    padded = np.full((flat.shape[0], tiles * lanes), -1, dtype=np.int64)
    padded[:, :width] = flat
    words = padded[:, ::lanes] // lanes  # the source word of each destination word
    lane_ok = all(np.all((padded[:, j * lanes:(j + 1) * lanes] == -1)
                         | (padded[:, j * lanes:(j + 1) * lanes] == (words[:, j:j + 1] * lanes + np.arange(lanes))))
                  for j in range(tiles))
    if not lane_ok:
        raise ScheduleError(f"'{dst.name}' needs elements moved within scratchpad words",
                            hint=f"keep the last axis whole or split it at multiples of {lanes}")
    tail = width % lanes
    whole_rows = np.array_equal(words, words[:, :1] + np.arange(tiles)[None, :])
    columns = [(0, tiles)] if whole_rows else [(j, 1) for j in range(tiles)]
    for j, nt in columns:
        for dst0, first, count, step in row_runs(words[:, j]):
            part = type(dst)(dst.name, first, count, nt, dst.shape, fmt, step)
            target = type(dst)(dst.name, dst.addr + dst0 * dst.row_stride + j, count, nt, dst.shape, dst.fmt,
                               dst.row_stride)
            last = j + nt == tiles
            emit_copy(binder, part, target, fmt, dst.fmt, y_lanes=tail if last else 0,
                      comment=f"{dst.name}: rows {dst0}..{dst0 + count - 1}" + ("" if whole_rows else f", tile {j}"))


def concat_region(binder, cat: Op, index: int) -> tuple[int, int, int, int] | None:
    """Where part ``index`` of Concat ``cat`` lies in its words: ``(word offset, rows, tiles, stride)``,
    or None when it is not one strided block of whole words."""
    graph, lanes = binder.graph, binder.lanes
    shape = cat.type.shape
    axis = int(cat.attrs.get("axis", 0)) % len(shape)
    parts = [graph.op(i).type.shape for i in cat.inputs]
    tiles = binder.tiles_of(shape[-1])
    before = sum(p[axis] for p in parts[:index])
    part = parts[index]
    if axis == len(shape) - 1:
        if before % lanes or (part[-1] % lanes and index != len(parts) - 1):
            return None
        return before // lanes, int(np.prod(_leading(shape))), binder.tiles_of(part[-1]), tiles
    rows = np.arange(int(np.prod(_leading(shape)))).reshape(_leading(shape))
    index_range = [slice(None)] * rows.ndim
    index_range[axis] = slice(before, before + part[axis])
    runs = row_runs(rows[tuple(index_range)].reshape(-1))
    if len(runs) != 1:
        return None
    _, dst0, count, step = runs[0]
    return dst0 * tiles, count, tiles, tiles * step


def _emit_concat(binder, op: Op) -> None:
    """Parts written in place by their producers cost nothing; the others are copied in."""
    dst = binder.placement(op.name) if binder.has(op.name) else binder.place(op)
    for index, name in enumerate(op.inputs):
        region = concat_region(binder, op, index)
        if region is None:
            raise ScheduleError(
                f"Concat '{op.name}': part '{name}' does not fill whole {binder.lanes}-lane words of the result",
                hint=f"concatenate along a leading axis, or along the last axis at multiples of {binder.lanes}")
        addr, rows, tiles, stride = region
        src = binder.placement(name)
        if src.addr == dst.addr + addr and binder.owner(name) == binder.owner(op.name):
            continue  # its producer wrote it in place
        target = type(dst)(f"{op.name}[{index}]", dst.addr + addr, rows, tiles, src.shape, op.type.fmt,
                           stride if stride != tiles else 0)
        emit_copy(binder, src, target, src.fmt, op.type.fmt, comment=f"{op.name}: part {name}")


def _emit_add(binder, op: Op) -> None:
    a, b = (binder.placement(i) for i in op.inputs)
    y = binder.place(op)
    (xs, rs), right = _shifts([(a.name, a.fmt.frac), (b.name, b.fmt.frac)], op.type.fmt.frac, op)
    binder.emit(Instruction(
        opcode=Opcode.ADD, x_addr=a.addr, x_stride=a.row_stride, r_addr=b.addr, r_stride=b.row_stride,
        y_addr=y.addr, y_stride=y.row_stride, m=y.rows, nt=y.tiles, x_shift=xs, res_shift=rs, shift=right,
        rounding=2, out_bits=op.type.fmt.bits, comment=f"{op.name}: {a.name} + {b.name}"),
        bound=y.rows * op.type.shape[-1] / binder.lanes)


def _emit_mean(binder, op: Op) -> None:
    """Mean over a leading axis: one MEAN per output row, summing its strided source rows."""
    from celosia.ir.reduce import mean_constant

    src = binder.placement(op.inputs[0])
    rank = len(src.shape)
    axis = int(op.attrs.get("axis", 0)) % rank
    if axis == rank - 1:
        raise ScheduleError(f"Mean '{op.name}' over the last axis is a row reduction the vector unit does not run",
                            hint="mean over tokens (a leading axis) runs on the vector unit")
    y = binder.place(op)
    n = src.shape[axis]
    lead = _leading(src.shape)
    inner = int(np.prod(lead[axis + 1:]))
    rows = np.arange(int(np.prod(lead))).reshape(lead)
    firsts = np.take(rows, 0, axis=axis).reshape(-1)  # first source row of each output row
    fin, fout = src.fmt, op.type.fmt
    c, r = mean_constant(n)
    shift = fin.frac + r - fout.frac
    if n == 1 or shift < 0:
        raise ScheduleError(f"Mean '{op.name}': a mean over {n} rows into {fout} from {fin} is not a right shift",
                            hint="an axis of length 1 needs no mean (reshape it away)")
    if c not in binder.mean_consts:
        binder.mean_consts.append(c)
    for out_row, first in enumerate(firsts):
        binder.emit(Instruction(
            opcode=Opcode.MEAN, x_addr=src.addr + int(first) * src.row_stride, x_stride=src.row_stride * inner,
            y_addr=y.addr + out_row * y.row_stride, y_stride=y.row_stride, m=n, nt=src.tiles,
            p_addr=binder.mean_consts.index(c), shift=shift, rounding=2, out_bits=fout.bits,
            comment=f"{op.name}: row {out_row}, mean of {n}"), bound=n * src.shape[-1] / binder.lanes)


def _vector_cost(ins: Instruction, program) -> int:
    return vector_cycles(ins, program.lanes)


VECTOR_ADD = Binding(unit="vector", opcodes=(Opcode.ADD,), emit=_emit_add, cost=_vector_cost)
VECTOR_LAYOUT = Binding(unit="vector", opcodes=(Opcode.COPY,), emit=_emit_layout, cost=_vector_cost)
VECTOR_CONCAT = Binding(unit="vector", opcodes=(Opcode.COPY,), emit=_emit_concat, cost=_vector_cost)
VECTOR_MEAN = Binding(unit="vector", opcodes=(Opcode.MEAN,), emit=_emit_mean, cost=_vector_cost)


# ---- the row unit: LayerNorm / RMSNorm ------------------------------------------------------------------

#: The row unit's timing contract (hw/rowunit.py is held to it by tests/test_rowunit.py): a NORM
#: takes ``(m + 1)·nt·W + NORM_LATENCY + ceil(log2 U)`` cycles with ``U`` elements a cycle, ``W = lanes/U``.
NORM_LATENCY = 72


def norm_cycles(ins: Instruction, lanes: int, unit_lanes: int) -> int:
    """Cycles the row unit is busy for a NORM instruction."""
    return (ins.m + 1) * ins.nt * (lanes // unit_lanes) + NORM_LATENCY + (unit_lanes - 1).bit_length()


def _emit_norm(binder, op: Op) -> None:
    """One NORM instruction over every row; the op's constants become row-unit record ``p_addr``."""
    from celosia.ir.norm import NormRecord, norm_params

    graph = binder.graph
    x = binder.placement(op.inputs[0])
    y = binder.place(op)
    gamma = graph.op(op.inputs[1])
    beta = graph.op(op.inputs[2]) if op.kind == "LayerNorm" else None
    params = norm_params(op.type.shape[-1], x.fmt, op.type.fmt, gamma.type.fmt, beta.type.fmt if beta else None,
                         op.attrs.get("eps", 1e-5), rms=op.kind == "RMSNorm")
    binder.norm_records.append(NormRecord(params, gamma.attrs["codes"], beta.attrs["codes"] if beta else None,
                                          name=op.name))
    binder.emit(Instruction(
        opcode=Opcode.NORM, x_addr=x.addr, x_stride=x.row_stride, y_addr=y.addr, y_stride=y.row_stride,
        m=x.rows, nt=x.tiles, p_addr=len(binder.norm_records) - 1, comment=f"{op.name}: {op.kind} of {x.rows} rows"),
        bound=x.rows * op.type.shape[-1] / binder.norm_lanes)


ROW_NORM = Binding(unit="row", opcodes=(Opcode.NORM,), emit=_emit_norm,
                   cost=lambda ins, program: norm_cycles(ins, program.lanes, program.norm_lanes))


# ---- the attention unit ---------------------------------------------------------------------------------

def _attention_dims(op: Op, q, k, v) -> tuple[bool, int, int, int, int, int, int, int]:
    """``(packed, B, H, Hkv, Tq, Tk, E, F)`` of an Attention op from its operand shapes."""
    if len(q.shape) == 3:
        heads = int(op.attrs.get("heads", 1))
        kv = int(op.attrs.get("kv_heads", heads))
        return True, q.shape[0], heads, kv, q.shape[1], k.shape[1], q.shape[2] // heads, v.shape[2] // kv
    return False, q.shape[0], q.shape[1], k.shape[1], q.shape[2], k.shape[2], q.shape[3], v.shape[3]


def _emit_attention(binder, op: Op) -> None:
    """One ATTENTION instruction per batch element; heads are addressed in place (a column offset
    in a packed ``(T, H·E)`` tensor, a row offset in a split ``(H, T, E)`` one), never copied."""
    from celosia.ir.attention import AttentionRecord, OperandLayout

    if len(op.inputs) == 4:
        raise ScheduleError(f"Attention '{op.name}': a key-padding mask is not taken by the attention unit yet",
                            hint="compile without the mask (static padding), or run it in the golden executor")
    graph, lanes = binder.graph, binder.lanes
    q, k, v = (graph.op(i).type for i in op.inputs)
    packed, batch, heads, kv_heads, tq, tk, e, f = _attention_dims(op, q, k, v)
    y_slots = _attention_output_slots(binder, op)

    def layout(slots: np.ndarray, n_heads: int, width: int, b: int, what: str) -> OperandLayout:
        # slots as (heads, positions, width) of batch element b
        s = slots[b].reshape(slots.shape[1], n_heads, width).transpose(1, 0, 2) if packed else slots[b]
        base = s[:, :, 0]
        t_step = int(base[0, 1] - base[0, 0]) if base.shape[1] > 1 else lanes
        h_step = int(base[1, 0] - base[0, 0]) if n_heads > 1 else 0
        want = base[0, 0] + np.arange(s.shape[1])[None, :, None] * t_step \
            + np.arange(n_heads)[:, None, None] * h_step + np.arange(width)[None, None, :]
        if t_step % lanes or base[0, 0] % lanes or not np.array_equal(s, want):
            raise ScheduleError(f"Attention '{op.name}': the {what} heads are not evenly spaced rows of the "
                                "scratchpad", hint="feed attention from a Linear or a reshape of one")
        return OperandLayout.from_slots(int(base[0, 0]), t_step, h_step, lanes)

    # (query, key) pairs that take part: all, or the causal triangle (top-left aligned)
    pairs = sum(min(t + 1, tk) for t in range(tq)) if op.attrs.get("causal") else tq * tk
    slots = [binder.slots(i) for i in op.inputs]
    for b in range(batch):
        rec = AttentionRecord(heads, kv_heads, tq, tk, bool(op.attrs.get("causal")),
                              layout(slots[0], heads, e, b, "query"), layout(slots[1], kv_heads, e, b, "key"),
                              layout(slots[2], kv_heads, f, b, "value"), layout(y_slots, heads, f, b, "output"),
                              name=op.name)
        binder.attention_records.append(rec)
        binder.emit(Instruction(
            opcode=Opcode.ATTENTION, x_addr=rec.q.addr, x_stride=rec.q.stride, r_addr=rec.k.addr,
            r_stride=rec.k.stride, v_addr=rec.v.addr, v_stride=rec.v.stride, y_addr=rec.out.addr,
            y_stride=rec.out.stride, m=tq, nt=binder.tiles_of(op.type.shape[-1]),
            p_addr=len(binder.attention_records) - 1,
            comment=f"{op.name}: {heads}/{kv_heads} heads, {tq}x{tk}, E={e}, F={f}"
                    + (", causal" if rec.causal else "") + (f", batch {b}" if batch > 1 else "")),
            macs=heads * pairs * (e + f), bound=heads * pairs * (e + f) / binder.attention_lanes(e))


def _attention_output_slots(binder, op: Op) -> np.ndarray:
    """Where the attention writes its output: straight into the dense tensor its chain of layout ops
    (merging the heads back, typically) ends in, when that is a plain rearrangement; else densely."""
    from celosia.ir.layout import layout_apply

    graph, chain = binder.graph, []
    name = op.name
    while True:
        users = graph.consumers(name)
        if len(users) != 1 or graph.op(users[0]).kind not in ("Reshape", "Transpose"):
            break
        chain.append(graph.op(users[0]))
        name = users[0]
    if not chain:
        return element_slots(binder.place(op), binder.lanes)
    end = chain[-1]
    index = np.arange(int(np.prod(op.type.shape))).reshape(op.type.shape)
    for layout in chain:
        index = layout_apply(layout.kind, layout.attrs, index)
    buffer = binder.reserve(end.name, end.type.shape, end.type.fmt)
    end_slots = element_slots(buffer, binder.lanes).reshape(-1)
    slots = np.empty(index.size, dtype=np.int64)
    slots[index.reshape(-1)] = end_slots  # element index.flat[j] of the output lands at end slot j
    binder.gather(op.name, slots.reshape(op.type.shape), end.name)
    return binder.slots(op.name)


def _attention_shared(op: Op) -> dict[str, str]:
    """The attention engine is generated for one format per operand (and one score format)."""
    return {"q": op.inputs[0], "k": op.inputs[1], "v": op.inputs[2], "score": f"{op.name}:score_fmt",
            "out": op.name}


def _attention_cost(ins: Instruction, program) -> int:
    from celosia.ir.attention import attention_unit_cycles

    return attention_unit_cycles(program.attention_records[ins.p_addr], program.attention)


ATTENTION_UNIT = Binding(unit="attention", opcodes=(Opcode.ATTENTION,), emit=_emit_attention,
                         cost=_attention_cost, shared_formats=_attention_shared)
