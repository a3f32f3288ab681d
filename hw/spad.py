"""The contract between the controller and the units that work on the shared scratchpad.

Every unit that reads and writes scratchpad tensors (the vector unit, the row unit, the attention
adapter; the linear array is driven by the controller itself) is a ``wiring.Component`` with:

``job``  ``In(JobSignature(...))``
    ``start`` is a one-cycle pulse with the decoded instruction on ``ins``; the unit latches what it
    needs on that cycle (``ins`` is not held). ``busy`` goes high on the cycle after ``start`` and
    falls on the cycle after the unit's last scratchpad write has been issued; the controller
    pulses ``start`` only while ``busy`` is low.
``rd0``, ``rd1``  ``Out(ReadPortSignature(...))``
    Synchronous reads: ``data`` holds the word at the ``addr`` given with ``en`` one cycle
    earlier (and keeps it while ``en`` is low). A unit that needs one read port leaves ``rd1``'s
    ``en`` low.
``wr``  ``Out(WritePortSignature(...))``
    ``en`` writes ``data`` at ``addr`` at the end of the cycle (only the lanes set in ``lane_en``
    when the unit's port has one).

While a unit runs it owns these ports alone (the controller starts an instruction only when every
earlier one has finished, except LINEAR after LINEAR; docs/isa.md), so the scratchpad never stalls a
unit and each unit's run takes a fixed number of cycles that its ``cycles(ins)`` method states; the
performance model (:mod:`celosia.sim.perf`) adds them up and tests hold the RTL to it exactly.

Tensors are addressed as in docs/isa.md: element ``(r, d)`` of an operand is lane ``d % lanes`` of
word ``addr + r·stride + d // lanes``, so slices, concatenations and attention heads are address
offsets and strides, not copies.
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from celosia.ir.program import FIELDS

__all__ = ["InstructionLayout", "ReadPortSignature", "WritePortSignature", "JobSignature", "RowTileWalker"]

#: The instruction word as an Amaranth layout, built from the one field list (celosia.ir.program.FIELDS).
InstructionLayout = data.StructLayout({name: bits for name, bits in FIELDS})


def ReadPortSignature(addr_bits: int, word_bits: int) -> wiring.Signature:
    """A synchronous scratchpad read port, as seen from the unit that drives it."""
    return wiring.Signature({"addr": Out(addr_bits), "en": Out(1), "data": In(word_bits)})


def WritePortSignature(addr_bits: int, word_bits: int, lanes: int | None = None) -> wiring.Signature:
    """A scratchpad write port, as seen from the unit that drives it.

    With ``lanes``, the port also has ``lane_en`` (one bit per lane): only the lanes whose bit is
    set are written (a unit that fills a word in several writes, such as attention heads
    narrower than a word). Without it, ``en`` writes the whole word.
    """
    members = {"addr": Out(addr_bits), "data": Out(word_bits), "en": Out(1)}
    if lanes is not None:
        members["lane_en"] = Out(lanes)
    return wiring.Signature(members)


def JobSignature(ins_layout) -> wiring.Signature:
    """The controller's job hand-off, as seen from the controller (units take it flipped: ``In``)."""
    return wiring.Signature({"start": Out(1), "ins": Out(ins_layout), "busy": In(1)})


class RowTileWalker(wiring.Component):
    """Counts ``for r in rows: for t in tiles`` and gives each operand's word address.

    ``start`` (with ``rows``, ``tiles`` and per operand ``base``/``stride``) loads the walk; every
    cycle with ``step`` high moves to the next (r, t). ``addr[i]`` is ``base_i + r·stride_i + t``;
    ``first_t``/``last_t`` mark the first and last tile of a row, ``last`` the walk's last word, and
    ``running`` stays high from ``start`` until the step past ``last``.

    Parameters
    ----------
    operands : int
        Number of operands (address streams) walked together.
    addr_bits : int
        Width of an address (addresses wrap modulo ``2**addr_bits``).
    """

    def __init__(self, operands: int, addr_bits: int, count_bits: int = 16):
        self.operands = operands
        members = {
            "start": In(1), "rows": In(count_bits), "tiles": In(count_bits), "step": In(1),
            "running": Out(1), "r": Out(count_bits), "t": Out(count_bits),
            "first_t": Out(1), "last_t": Out(1), "last_r": Out(1), "last": Out(1),
        }
        for i in range(operands):
            members[f"base{i}"] = In(addr_bits)
            members[f"stride{i}"] = In(addr_bits)
            members[f"addr{i}"] = Out(addr_bits)
        super().__init__(members)

    def addr(self, i: int):
        """The current word address of operand ``i``."""
        return getattr(self, f"addr{i}")

    def elaborate(self, platform):
        m = Module()
        rows = Signal.like(self.rows)
        tiles = Signal.like(self.tiles)
        row_start = [Signal.like(self.base0, name=f"row_start{i}") for i in range(self.operands)]
        stride = [Signal.like(self.base0, name=f"stride_q{i}") for i in range(self.operands)]
        m.d.comb += [
            self.first_t.eq(self.t == 0),
            self.last_t.eq(self.t == tiles - 1),
            self.last_r.eq(self.r == rows - 1),
            self.last.eq(self.last_t & self.last_r),
        ]
        for i in range(self.operands):
            m.d.comb += self.addr(i).eq(row_start[i] + self.t)
        with m.If(self.start):
            m.d.sync += [rows.eq(self.rows), tiles.eq(self.tiles), self.r.eq(0), self.t.eq(0),
                         self.running.eq(1)]
            for i in range(self.operands):
                m.d.sync += [row_start[i].eq(getattr(self, f"base{i}")), stride[i].eq(getattr(self, f"stride{i}"))]
        with m.Elif(self.step & self.running):
            with m.If(self.last_t):
                m.d.sync += [self.t.eq(0), self.r.eq(self.r + 1)]
                for i in range(self.operands):
                    m.d.sync += row_start[i].eq(row_start[i] + stride[i])
                with m.If(self.last_r):
                    m.d.sync += self.running.eq(0)
            with m.Else():
                m.d.sync += self.t.eq(self.t + 1)
        return m
