"""Performance model: cycles of a Program on the generated accelerator, per instruction.

The controller's timing is deterministic (the memories never stall and the array
accepts one beat per cycle), so the model is exact; tests hold the RTL's cycle
counter to it with no tolerance. A LINEAR of ``m x kt x nt`` beats costs

    fetch + decode (2) + beats + staging FIFO and hand-off (3) + array latency + write-back (0)

and HALT costs its fetch and decode (2).
"""

from __future__ import annotations

from celosia.hw.linear import LinearArray
from celosia.ir.program import Instruction, Opcode, Program

__all__ = ["instruction_cycles", "predict_cycles"]

_FETCH_DECODE = 2
_HANDOFF = 3  # read -> staging FIFO -> array input; writing done -> next fetch


def instruction_cycles(ins: Instruction, lanes: int) -> int:
    """Cycles the controller spends on one instruction."""
    if ins.opcode == Opcode.LINEAR:
        beats = ins.m * ins.kt * ins.nt
        return _FETCH_DECODE + beats + _HANDOFF + LinearArray.pipeline_latency(lanes)
    return _FETCH_DECODE


def predict_cycles(program: Program) -> int:
    """Predicted value of the accelerator's cycle counter for one run of ``program``."""
    return sum(instruction_cycles(ins, program.lanes) for ins in program.instructions)
