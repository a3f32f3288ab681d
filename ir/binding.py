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

__all__ = ["HOST_BINDING", "LINEAR_BINDING"]


def _emit_host(binder, op: Op) -> None:
    """Inputs get pinned scratchpad space (the host writes them); Outputs alias their operand;
    Consts are read from ROM by the op that uses them."""
    if op.kind == "Input":
        binder.place(op, pinned=True)
    elif op.kind == "Output":
        binder.alias_output(op)


HOST_BINDING = Binding(unit="host", opcodes=(), emit=_emit_host)


def _overlaps(a: int, a_words: int, b: int, b_words: int) -> bool:
    return a < b + b_words and b < a + a_words


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
        and (r is None or not _overlaps(r.addr, r.words, prev.y_addr, prev.m * prev.nt))
    )
    binder.emit(
        Instruction(
            opcode=Opcode.LINEAR,
            x_addr=x.addr,
            y_addr=y.addr,
            r_addr=r.addr if r else 0,
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
            comment=f"{op.name}: {x.rows}x{k} @ {k}x{n}",
        ),
        macs=x.rows * k * n,
        padded_macs=x.rows * kt * nt * lanes * lanes,
    )


def _linear_cost(ins: Instruction, lanes: int) -> int:
    return ins.m * ins.kt * ins.nt


def _linear_unsupported(graph, op: Op) -> str | None:
    if "channel_frac" in graph.op(op.inputs[1]).attrs:
        return "per-channel weight formats are not taken by the linear unit yet (golden executor only)"
    return None


LINEAR_BINDING = Binding(unit="linear", opcodes=(Opcode.LINEAR,), emit=_emit_linear, cost=_linear_cost,
                         check=_linear_unsupported)
