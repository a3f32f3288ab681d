"""Performance model: cycles of a Program on the generated accelerator.

The controller's timing is deterministic (the memories never stall, the array
accepts one beat per cycle and its output is never back-pressured), so the model
is exact; tests hold the RTL's cycle counter to it with no tolerance. It follows
the controller beat by beat:

* an instruction is read while the previous one runs, decoded 2 cycles after that one
  issued its last read, and issues from the cycle after;
* the output row whose last beat issues at cycle ``t`` is written at ``t + L + 2``
  (``L`` = :attr:`LinearArray.latency`, GELU epilogue included when the program has one);
* a *chained* instruction (``chain = 1``: it reads the previous one's output)
  issues a read of the word at write position ``p`` no earlier than one cycle
  after that word was written; an *independent* one (``indep = 1``: it reads
  nothing the previous one writes) issues at once; any other waits until 2 cycles
  after the previous instruction's last write, when that write-back is done;
* the write-back queues one job behind the one being written: a LINEAR is decoded
  only once the job ahead of the previous one is written (2 cycles after its last
  write);
* HALT retires once every output is written;
* any other instruction runs on a scratchpad unit (vector, row, attention) alone: it starts once every
  earlier write is done (as HALT retires), keeps its unit busy for the cycles its binding states
  (:func:`celosia.ir.binding.instruction_cycles`), and the next instruction is decoded the cycle
  after the unit's busy falls.
"""

from __future__ import annotations

from celosia.hw.gelu import Gelu
from celosia.hw.linear import LinearArray
from celosia.ir.binding import instruction_cycles
from celosia.ir.numerics import Fixed
from celosia.ir.program import Opcode, Program

__all__ = ["predict_cycles", "timeline"]


def predict_cycles(program: Program) -> int:
    """Predicted value of the accelerator's cycle counter for one run of ``program``."""
    return timeline(program)[-1][1]


def timeline(program: Program) -> list[tuple[int, int]]:
    """``(start, done)`` cycle of every instruction: its first issue (or its unit's start) and the
    cycle after its last write; HALT's ``done`` is the run's cycle count."""
    to_write = _array_latency(program) + 2
    fetch = 0  # cycle of the current instruction's fetch (the run's first cycle is 0)
    prev_writes: list[int] = []  # write cycles of the previous LINEAR, in write order
    ahead = -1  # last write of the job the previous LINEAR's job queued behind (-1: none)
    spans: list[tuple[int, int]] = []
    for ins in program.instructions:
        decode = fetch + 1
        if ins.opcode == Opcode.HALT:
            last = prev_writes[-1] if prev_writes else -1
            end = max(decode, last + 1) + 1
            spans.append((end, end))
            return spans
        if ins.opcode != Opcode.LINEAR:
            start = max(decode, (prev_writes[-1] if prev_writes else -1) + 1)
            busy = instruction_cycles(ins, program)
            spans.append((start, start + busy + 1))
            fetch = start + busy + 1
            prev_writes, ahead = [], -1
            continue
        decode = max(decode, ahead + 2)
        queued = bool(prev_writes) and prev_writes[-1] >= decode
        t = decode  # cycle of the last issue so far
        first = None
        writes = []
        for n in range(ins.nt):
            for m in range(ins.m):
                for k in range(ins.kt):
                    t += 1
                    if queued and ins.chain and n == 0:
                        t = max(t, prev_writes[k * ins.m + m] + 1)
                    elif queued and not ins.indep:
                        t = max(t, prev_writes[-1] + 2)
                    first = t if first is None else first
                writes.append(t + to_write)
        spans.append((first, writes[-1] + 1))
        ahead = prev_writes[-1] if queued else -1
        prev_writes = writes
        fetch = t + 1
    raise ValueError(f"program '{program.name}' has no HALT")


def _array_latency(program: Program) -> int:
    """:attr:`LinearArray.latency` of the program's array, without elaborating it."""
    latency = LinearArray.pipeline_latency(program.lanes)
    if program.gelu_frac is not None:
        fmt = Fixed(program.act_bits, program.gelu_frac)
        gelu = Gelu(fmt, fmt)
        gelu._MustUse__silence = True  # built only to read its latency
        latency += gelu.latency
    return latency
