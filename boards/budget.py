"""Sizing the accelerator to a board: array size and a resource estimate before any build.

The estimate is what the fit check uses to refuse a model early (needed vs
available DSP and block RAM); the place-and-route report gives the real figures.
"""

from __future__ import annotations

import math

from celosia.boards.registry import Board
from celosia.errors import ResourceError
from celosia.ir.program import INSTR_BITS, Opcode, Program

__all__ = ["choose_lanes", "estimate_resources", "check_fit", "bram_blocks"]

# Block-RAM aspect ratios (width, depth) per family: ECP5 DP16KD, iCE40 EBR.
_BRAM_SHAPES = {
    "ecp5": [(36, 512), (18, 1024), (9, 2048), (4, 4096), (2, 8192), (1, 16384)],
    "ice40": [(16, 256), (8, 512), (4, 1024), (2, 2048)],
}
_DSP_HEADROOM = 0.9  # leave a few multipliers for the rest of the design
_MAX_LANES = 8


def choose_lanes(board: Board) -> int:
    """The largest square array (power of two, at most 8x8) whose multipliers fit the board."""
    lanes = _MAX_LANES
    while lanes > 1 and lanes * lanes > board.resources.dsp * _DSP_HEADROOM:
        lanes //= 2
    return lanes


_LUT_MEMORY_DEPTH = 32  # yosys maps memories this shallow to logic, not block RAM


def bram_blocks(width: int, depth: int, family: str) -> int:
    """Blocks needed for a ``width x depth`` memory in the cheapest aspect ratio."""
    if depth <= _LUT_MEMORY_DEPTH:
        return 0
    return min(math.ceil(width / w) * math.ceil(depth / d) for w, d in _BRAM_SHAPES[family])


def unit_dsps(program: Program) -> dict[str, int]:
    """Multipliers (18×18 DSP slices) of each generated unit, from the units' measured counts
    (hw/linear.py, hw/gelu.py, hw/vector.py, hw/rowunit.py, docs/attention.md)."""
    lanes = program.lanes
    used = {ins.opcode for ins in program.instructions}
    dsps = {"linear": lanes * lanes}
    if program.gelu_frac is not None:
        dsps["gelu epilogue"] = 2 * lanes  # 2 per lane at 16-bit formats
    if Opcode.MEAN in used:
        dsps["vector"] = 2  # one acc x constant multiplier shared by the lanes
    if Opcode.NORM in used:
        dsps["row"] = 5 * program.norm_lanes + 27  # 5 per unit lane + shared statistics and rsqrt
    if program.attention is not None:
        dsps["attention"] = program.attention.lanes + 27  # one MAC per lane + exp, reciprocal, rescale
    return dsps


def estimate_resources(program: Program, board: Board, scratch_depth: int) -> dict:
    """DSP and block-RAM needs of the accelerator for ``program``.

    Every memory is counted in block RAM (the scratchpad twice: it has two read
    ports), so the estimate errs on the safe side.
    """
    lanes, fam = program.lanes, board.family
    word = lanes * program.act_bits
    memories = {
        "weights": (lanes * lanes * program.weight_bits, len(program.weight_words)),
        "biases": (lanes * program.acc_bits, len(program.bias_words)),
        "instructions": (INSTR_BITS, len(program.instructions)),
        "scratchpad": (word, scratch_depth),
    }
    blocks = {name: bram_blocks(w, d, fam) for name, (w, d) in memories.items()}
    blocks["scratchpad"] *= 2
    return {
        "dsp": sum(unit_dsps(program).values()),
        "dsp_by_unit": unit_dsps(program),
        "bram": sum(blocks.values()),
        "bram_by_memory": blocks,
        "weight_bits": lanes * lanes * program.weight_bits * len(program.weight_words),
    }


def check_fit(program: Program, board: Board, scratch_depth: int) -> dict:
    """Raise ResourceError if the design needs more DSP or block RAM than ``board`` has."""
    need = estimate_resources(program, board, scratch_depth)
    have = board.resources
    for what, used, avail, parts in (("DSP", need["dsp"], have.dsp, need["dsp_by_unit"]),
                                     ("BRAM", need["bram"], have.bram, need["bram_by_memory"])):
        if used > avail:
            detail = ", ".join(f"{k} {v}" for k, v in parts.items())
            biggest = max(parts, key=parts.get)
            raise ResourceError(
                f"model '{program.name}' does not fit board {board.name}: needs {used} {what} blocks, the "
                f"{board.device} has {avail} ({used - avail} too many; by {'memory' if what == 'BRAM' else 'unit'}: "
                f"{detail}; the largest is the {biggest}"
                + (f", {need['weight_bits'] / 1024:.0f} kbit of weights" if biggest == "weights" else "") + ")",
                hint="choose a larger board (see `celosia boards`) or a smaller model / narrower weights",
            )
    return need
