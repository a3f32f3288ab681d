"""Build one stream unit alone on a board, for its Fmax and resource figures.

:class:`UnitTop` wraps any ``wiring.Component`` whose ports are streams (and, optionally, plain
configuration inputs / status outputs) in a top level for an amaranth-boards platform that gives
every port real I/O, so that synthesis cannot optimise any of the unit away, while adding no
logic to the unit's own paths:

* the board clock of :func:`celosia.boards.top.add_board_clock` (on the ULX3S-85F an EHXPLLL to
  100 MHz from the 25 MHz oscillator, held in reset until it locks), exactly as in
  :class:`~celosia.boards.top.BoardTop`;
* a free-running 32-bit LFSR (x^32 + x^22 + x^2 + x + 1) stepping once per cycle;
* every input payload (and every other unit input, e.g. a configuration word) driven from a
  feed register that shifts in the 32 LFSR bits each cycle -- register to unit port, no logic;
* every input ``valid`` and output ``ready`` driven from its own register loaded from its own
  LFSR bit (each is high half the time: random gaps and random backpressure);
* every unit output (payloads, ``o.valid``, ``i.ready``, status) captured in a register and
  XOR-reduced through a pipelined tree of 4-input XORs (one LUT level per stage) into one
  register that drives LED 0.

The harness therefore costs ``32 + (input bits) + (valid/ready bits) + (output bits) +
(XOR-tree registers)`` flip-flops and about ``(output bits) / 3`` LUTs; :attr:`UnitTop.harness_ff`
and :attr:`UnitTop.harness_lut` give those counts so figures can be read net of the harness.

:func:`build_unit` runs :func:`celosia.boards.flow.build_bitstream` on it.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from amaranth.hdl import Cat, Elaboratable, Module, Signal, Value
from amaranth.lib import io
from amaranth.lib.wiring import Flow

from celosia.boards.flow import BuildResult, build_bitstream
from celosia.boards.registry import Board, get_board
from celosia.boards.top import add_board_clock, ecp5_pll_config
from celosia.errors import HardwareGenerationError

__all__ = ["UnitTop", "build_unit", "LFSR_TAPS"]

#: Taps (1-based bit numbers) of the 32-bit Fibonacci LFSR: x^32 + x^22 + x^2 + x + 1.
LFSR_TAPS = (32, 22, 2, 1)
_LFSR_BITS = 32


def _ports(unit):
    """Split ``unit``'s flattened ports into (valids, readies, other inputs, outputs).

    ``valids`` are input-stream ``valid`` signals and ``readies`` output-stream ``ready`` signals
    (the handshake inputs the harness drives from LFSR bits); ``other inputs`` are payloads and
    configuration inputs; ``outputs`` is everything the unit drives.
    """
    signature = getattr(unit, "signature", None)
    if signature is None or not hasattr(signature, "flatten"):
        raise HardwareGenerationError(
            f"{type(unit).__name__} is not a wiring.Component: UnitTop needs its signature",
            hint="build units derived from amaranth.lib.wiring.Component")
    valids, readies, inputs, outputs = [], [], [], []
    for path, member, value in signature.flatten(unit):
        name = "__".join(str(p) for p in path)
        v = Value.cast(value)
        if member.flow == Flow.In:
            if path[-1] == "valid" and len(path) > 1:
                valids.append((name, v))
            elif path[-1] == "ready" and len(path) > 1:
                readies.append((name, v))
            else:
                inputs.append((name, v))
        else:
            outputs.append((name, v))
    if not outputs:
        raise HardwareGenerationError(
            f"{type(unit).__name__} has no outputs: nothing would survive synthesis",
            hint="UnitTop builds units with at least one output stream")
    return valids, readies, inputs, outputs


def _xor_tree_regs(n: int) -> list[int]:
    """Register counts of the XOR tree stages reducing ``n`` bits 4 at a time down to 1."""
    stages = []
    while n > 1:
        n = (n + 3) // 4
        stages.append(n)
    return stages


class UnitTop(Elaboratable):
    """Top level that builds a stream unit alone on a board (see the module docstring).

    Parameters
    ----------
    unit : wiring.Component
        The unit, e.g. :class:`celosia.hw.gelu.Gelu` or :class:`celosia.hw.primitives.ExpNeg`.
    board : Board or str, optional
        The board (default ``"ulx3s-85f"``); ECP5 boards get the PLL of
        :class:`~celosia.boards.top.BoardTop`, iCE40 boards run from the oscillator.

    Attributes
    ----------
    unit : wiring.Component
    board : Board
    pll : EcpPllConfig or None
        The PLL settings (ECP5 only).
    in_bits : int
        Unit input bits driven from the feed register (payloads and configuration).
    out_bits : int
        Unit output bits captured and XOR-reduced.
    harness_ff : int
        Flip-flops the harness adds (LFSR, feed, handshake, capture and XOR-tree registers;
        not counting the reset synchroniser).
    harness_lut : int
        LUTs the harness adds, approximately (LFSR feedback and the XOR tree).
    """

    def __init__(self, unit, board: Board | str = "ulx3s-85f"):
        self.unit = unit
        self.board = get_board(board)
        self.pll = None
        if self.board.family == "ecp5":
            self.pll = ecp5_pll_config(self.board.clock_mhz, self.board.target_mhz)
        elif self.board.clock_mhz != self.board.target_mhz:
            raise HardwareGenerationError(
                f"board {self.board.name}: the iCE40 top runs from the {self.board.clock_mhz} MHz "
                f"oscillator, but the target is {self.board.target_mhz} MHz",
                hint="set target_mhz equal to clock_mhz for iCE40 boards")
        valids, readies, inputs, outputs = _ports(unit)
        self.in_bits = sum(len(v) for _, v in inputs)
        self.out_bits = sum(len(v) for _, v in outputs)
        n_hs = len(valids) + len(readies)
        tree = _xor_tree_regs(self.out_bits)
        self.harness_ff = (_LFSR_BITS + self.in_bits + n_hs + self.out_bits + sum(tree)
                           + (0 if tree else 1))
        self.harness_lut = 1 + sum(tree)

    def elaborate(self, platform):
        if platform is None:
            raise HardwareGenerationError(
                f"UnitTop for {self.board.name} needs an amaranth-boards platform",
                hint="build it with celosia.boards.unit_build.build_unit")
        m = Module()
        add_board_clock(m, platform, self.board, self.pll)
        m.submodules.unit = unit = self.unit
        valids, readies, inputs, outputs = _ports(unit)

        # Free-running LFSR (never all-zero: reset value 1).
        lfsr = Signal(_LFSR_BITS, init=1)
        fb = lfsr[LFSR_TAPS[0] - 1]
        for t in LFSR_TAPS[1:]:
            fb = fb ^ lfsr[t - 1]
        m.d.sync += lfsr.eq(Cat(fb, lfsr[:-1]))

        # Handshake inputs: one register per signal, each from its own LFSR bit.
        for k, (name, v) in enumerate(valids + readies):
            r = Signal(name=f"hs_{name}")
            m.d.sync += r.eq(lfsr[(7 * k + 3) % _LFSR_BITS])
            m.d.comb += v.eq(r)

        # Payloads and other inputs: a feed register shifting in 32 LFSR bits per cycle.
        if self.in_bits:
            feed = Signal(self.in_bits)
            m.d.sync += feed.eq(Cat(lfsr, feed)[:self.in_bits])
            pos = 0
            for name, v in inputs:
                m.d.comb += v.eq(feed[pos:pos + len(v)])
                pos += len(v)

        # Outputs: capture register, then a pipelined XOR tree (4 bits per LUT) to one bit.
        cap = Signal(self.out_bits)
        m.d.sync += cap.eq(Cat(*(v for _, v in outputs)))
        level = cap
        for stage, n in enumerate(_xor_tree_regs(self.out_bits)):
            nxt = Signal(n, name=f"xor_s{stage + 1}")
            m.d.sync += nxt.eq(Cat(*(level[4 * j:4 * j + 4].xor() for j in range(n))))
            level = nxt
        if len(level) == 1 and level is cap:  # a 1-bit output: one more register
            led_reg = Signal()
            m.d.sync += led_reg.eq(cap)
            level = led_reg
        m.submodules.led_buf = led_buf = io.Buffer("o", platform.request("led", 0, dir="-"))
        m.d.comb += led_buf.o.eq(level[0])
        return m


def build_unit(unit, build_dir: str | os.PathLike, *, board: Board | str = "ulx3s-85f",
               name: str = "unit", progress: Callable[[str], None] | None = None) -> BuildResult:
    """Synthesise, place and route ``unit`` alone in a :class:`UnitTop` and write a bitstream.

    Parameters
    ----------
    unit : wiring.Component
        The stream unit.
    build_dir : path-like
        Folder for the intermediate files, logs, the report and the bitstream.
    board : Board or str, optional
        Target board, default ``"ulx3s-85f"``.
    name : str, optional
        Design name (file stem, top module name).
    progress : callable, optional
        Called with a short status message per step (see
        :func:`~celosia.boards.flow.build_bitstream`).

    Returns
    -------
    BuildResult
        ``fmax_mhz`` of the ``sync`` clock and ``resources`` (LUT/FF/DSP/BRAM used and
        available), harness included (see :attr:`UnitTop.harness_ff`).

    Raises
    ------
    ToolchainError, ResourceError, HardwareGenerationError
        As :func:`~celosia.boards.flow.build_bitstream`, or if ``unit`` is not a component.
    """
    board = get_board(board)
    return build_bitstream(UnitTop(unit, board), board, build_dir, name=name, progress=progress)
