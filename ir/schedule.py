"""The scheduler: bind a quantized graph's ops to the linear array and emit a Program.

Steps: check every op maps onto a unit; place tensors in the scratchpad (first fit
with liveness, model inputs and outputs pinned so the host can read and write them
around a run); tile and pack weights and biases; emit one instruction per op.
"""

from __future__ import annotations

import math

import numpy as np

from celosia.errors import ScheduleError
from celosia.ir.graph import Graph, Op
from celosia.ir.program import Instruction, Opcode, Program, TensorPlacement
from celosia.sim.golden import linear_params

__all__ = ["schedule", "pack_lanes"]

_SCHEDULABLE = {"Input", "Const", "Linear", "Output"}


def pack_lanes(values, bits: int) -> int:
    """Pack integer codes into one word, element i at bits [i*bits, (i+1)*bits)."""
    mask = (1 << bits) - 1
    word = 0
    for i, v in enumerate(values):
        word |= (int(v) & mask) << (i * bits)
    return word


def _rows_and_dim(shape: tuple[int, ...]) -> tuple[int, int]:
    return (math.prod(shape[:-1]) if len(shape) > 1 else 1), shape[-1]


def _overlaps(a: int, a_words: int, b: int, b_words: int) -> bool:
    return a < b + b_words and b < a + a_words


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


def _check_linear(graph: Graph, op: Op, act_bits: int, weight_bits: int, acc_bits: int) -> dict:
    p = linear_params(graph, op)
    k = graph.op(op.inputs[0]).type.shape[-1]
    for what, fmt, bits in (
        ("input", graph.op(op.inputs[0]).type.fmt, act_bits),
        ("weight", graph.op(op.inputs[1]).type.fmt, weight_bits),
        ("output", op.type.fmt, act_bits),
    ):
        if fmt.bits > bits:
            raise ScheduleError(f"Linear '{op.name}': {what} format {fmt} is wider than the unit's {bits} bits")
    bias = np.abs(np.asarray(graph.op(op.inputs[2]).attrs["codes"], dtype=np.int64))
    bound = k * (1 << (act_bits - 1)) * (1 << (weight_bits - 1)) + int(bias.max(initial=0))
    if len(op.inputs) == 4:
        bound += (1 << (act_bits - 1)) << p["res_shift"]
    if bound >= 1 << (acc_bits - 1):
        raise ScheduleError(
            f"Linear '{op.name}': the worst-case accumulator magnitude 2^{math.log2(bound):.1f} "
            f"does not fit a {acc_bits}-bit accumulator (K={k})",
            hint="use a wider accumulator (Precision.acc_bits) or narrower formats",
        )
    return p


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
    for op in graph:
        if op.kind not in _SCHEDULABLE:
            raise ScheduleError(
                f"op '{op.name}' ({op.kind}) cannot be mapped onto the generated units",
                hint="the accelerator runs Linear layers; ReLU, GELU (erf form) and residual Add run fused "
                "into the Linear before them (one whose output feeds nothing else)"
                + ("" if op.kind in ("ReLU", "Add", "GELU") else f"; {op.kind} has no hardware unit yet"),
            )
    linears = graph.ops("Linear")
    if not linears:
        raise ScheduleError(f"graph '{graph.name}' has no Linear op: nothing to accelerate")
    act_bits = max(op.type.fmt.bits for op in graph if op.kind != "Const")
    weight_bits = max(graph.op(op.inputs[1]).type.fmt.bits for op in linears)
    acc_bits = acc_bits or max(graph.op(op.inputs[2]).type.fmt.bits for op in linears)
    gelu_frac = _gelu_frac(linears, act_bits)

    # Which tensors live in the scratchpad: Inputs and Linear outputs. Outputs alias their operand.
    last_use: dict[str, int] = {}
    order = list(graph)
    for i, op in enumerate(order):
        for src in op.inputs:
            last_use[src] = i
    pinned = {op.name for op in graph.inputs} | {op.inputs[0] for op in graph.outputs}
    alloc = _Allocator()
    place: dict[str, TensorPlacement] = {}

    def place_tensor(op: Op) -> TensorPlacement:
        rows, dim = _rows_and_dim(op.type.shape)
        tiles = math.ceil(dim / lanes)
        p = TensorPlacement(op.name, alloc.alloc(op.name, rows * tiles), rows, tiles, op.type.shape, op.type.fmt)
        place[op.name] = p
        return p

    for op in graph.inputs:
        place_tensor(op)

    instructions: list[Instruction] = []
    weight_words: list[int] = []
    bias_words: list[int] = []
    macs = padded = 0
    for i, op in enumerate(order):
        if op.kind != "Linear":
            continue
        p = _check_linear(graph, op, act_bits, weight_bits, acc_bits)
        x = place[op.inputs[0]]
        y = place_tensor(op)
        w = np.asarray(graph.op(op.inputs[1]).attrs["codes"], dtype=np.int64)  # (N, K)
        b = np.asarray(graph.op(op.inputs[2]).attrs["codes"], dtype=np.int64)
        n, k = w.shape
        kt, nt = x.tiles, y.tiles
        wk = np.zeros((kt * lanes, nt * lanes), dtype=np.int64)
        wk[:k, :n] = w.T
        bp = np.zeros(nt * lanes, dtype=np.int64)
        bp[:n] = b
        w_addr, b_addr = len(weight_words), len(bias_words)
        for nt_i in range(nt):
            for kt_i in range(kt):
                tile = wk[kt_i * lanes : (kt_i + 1) * lanes, nt_i * lanes : (nt_i + 1) * lanes]
                weight_words.append(pack_lanes(tile.reshape(-1), weight_bits))
            bias_words.append(pack_lanes(bp[nt_i * lanes : (nt_i + 1) * lanes], acc_bits))
        r = place[op.inputs[3]] if len(op.inputs) == 4 else None
        prev = instructions[-1] if instructions else None
        chain = (
            prev is not None
            and prev.y_addr == x.addr
            and prev.m == x.rows
            and prev.nt == kt
            and (r is None or not _overlaps(r.addr, r.words, prev.y_addr, prev.m * prev.nt))
        )
        instructions.append(
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
            )
        )
        macs += x.rows * k * n
        padded += x.rows * kt * nt * lanes * lanes
        for src in op.inputs:
            if last_use.get(src) == i and src in place and src not in pinned:
                alloc.free(src)
    instructions.append(Instruction(opcode=Opcode.HALT, comment="end"))
    for ins in instructions:
        ins.encode()  # range-check every field now, naming the layer
    outputs = {}
    for op in graph.outputs:
        src = place[op.inputs[0]]
        outputs[op.name] = TensorPlacement(op.name, src.addr, src.rows, src.tiles, op.type.shape, op.type.fmt)
    return Program(
        name=graph.name,
        lanes=lanes,
        act_bits=act_bits,
        weight_bits=weight_bits,
        acc_bits=acc_bits,
        instructions=instructions,
        weight_words=weight_words,
        bias_words=bias_words,
        scratch_words=alloc.high,
        inputs={op.name: place[op.name] for op in graph.inputs},
        outputs=outputs,
        macs=macs,
        padded_macs=padded,
        gelu_frac=gelu_frac,
    )


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
