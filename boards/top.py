"""Board and simulation tops: clocking, reset and the UART host bridge around an accelerator core.

The *core* is any component with a host port ``host: In(HostPortSignature(addr_bits, word_bits))``
(:mod:`celosia.hw.host_port`) and the ``word_bits`` / ``addr_bits`` attributes.

:func:`attach_bridge` builds a :class:`~celosia.hw.host_bridge.UartBridge` and wires it to the
core; :class:`BoardTop` adds the clock (an ECP5 PLL or the iCE40 oscillator directly), the reset
and the board pins, and :class:`SimTop` exposes the UART pins as ports for Verilator or the
Amaranth simulator.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import ClockDomain, Elaboratable, Instance, Module, Signal
from amaranth.lib import cdc, io, memory, wiring
from amaranth.lib.wiring import In, Out

from celosia.boards.registry import Board, get_board
from celosia.errors import HardwareGenerationError
from celosia.hw.host_bridge import UartBridge
from celosia.hw.host_port import HostPortSignature

__all__ = ["attach_bridge", "EcpPllConfig", "ecp5_pll_config", "add_board_clock",
           "BoardTop",
           "SimTop", "ScratchpadCore"]

def attach_bridge(m: Module, core, divisor: int, *, rx_fifo_depth: int = 0) -> UartBridge:
    """Add ``core`` and a UART bridge to ``m`` and connect them.

    Parameters
    ----------
    m : Module
        The module to add both to (as submodules ``core`` and ``bridge``).
    core : Elaboratable
        The accelerator; see the module docstring for the members it must have.
    divisor : int
        Clock cycles per UART bit.
    rx_fifo_depth : int, optional
        Passed to :class:`~celosia.hw.host_bridge.UartBridge`.

    Returns
    -------
    UartBridge
        The bridge; the caller connects its ``rx`` and ``tx`` pins.

    Raises
    ------
    HardwareGenerationError
        If the core lacks a member of the host-port contract.
    """
    missing = [name for name in ("host", "word_bits", "addr_bits") if not hasattr(core, name)]
    if missing:
        raise HardwareGenerationError(
            f"{type(core).__name__} lacks host-port member(s) {', '.join(missing)}",
            hint="the core must have host: In(celosia.hw.host_port.HostPortSignature(addr_bits, word_bits)) "
                 "and the word_bits / addr_bits attributes")
    bridge = UartBridge(int(core.word_bits), int(core.addr_bits), divisor,
                        rx_fifo_depth=rx_fifo_depth)
    m.submodules.core = core
    m.submodules.bridge = bridge
    try:
        wiring.connect(m, bridge.host, core.host)
    except wiring.ConnectionError as exc:
        raise HardwareGenerationError(f"{type(core).__name__}'s host port does not fit the bridge: {exc}",
                                      hint="build it with HostPortSignature(core.addr_bits, core.word_bits)") from None
    return bridge


@dataclass(frozen=True)
class EcpPllConfig:
    """EHXPLLL divider settings (feedback from CLKOP).

    ``f_out = f_in / clki_div * clkfb_div`` and ``f_vco = f_out * clkop_div``.
    """

    clki_div: int
    clkfb_div: int
    clkop_div: int
    clkop_cphase: int
    f_in_mhz: float
    f_pfd_mhz: float
    f_vco_mhz: float
    f_out_mhz: float


def ecp5_pll_config(f_in_mhz: float, f_out_mhz: float) -> EcpPllConfig:
    """Choose EHXPLLL dividers for ``f_out_mhz`` from ``f_in_mhz``.

    The search keeps the phase detector in 3.125..400 MHz and the VCO in 400..800 MHz, and picks
    the closest output frequency, then the largest phase-detector frequency, then the VCO
    closest to 600 MHz (the same choices as Trellis' ``ecppll``).

    Parameters
    ----------
    f_in_mhz : float
        Reference clock.
    f_out_mhz : float
        Wanted output clock (CLKOP).

    Returns
    -------
    EcpPllConfig

    Raises
    ------
    HardwareGenerationError
        If no setting comes within 0.5 % of ``f_out_mhz``.
    """
    best = None
    for clki_div in range(1, 129):
        f_pfd = f_in_mhz / clki_div
        if not 3.125 <= f_pfd <= 400:
            continue
        for clkfb_div in range(1, 81):
            f_out = f_pfd * clkfb_div
            for clkop_div in range(1, 129):
                f_vco = f_out * clkop_div
                if not 400 <= f_vco <= 800:
                    continue
                key = (abs(f_out - f_out_mhz), clki_div, abs(f_vco - 600))
                if best is None or key < best[0]:
                    best = (key, clki_div, clkfb_div, clkop_div, f_pfd, f_vco, f_out)
    if best is None or best[0][0] > 0.005 * f_out_mhz:
        raise HardwareGenerationError(
            f"no ECP5 PLL setting gives {f_out_mhz} MHz from {f_in_mhz} MHz",
            hint="choose a design clock reachable as f_in * N / M with a 400-800 MHz VCO")
    _, clki_div, clkfb_div, clkop_div, f_pfd, f_vco, f_out = best
    return EcpPllConfig(clki_div=clki_div, clkfb_div=clkfb_div, clkop_div=clkop_div,
                        clkop_cphase=(clkop_div - 1) // 2, f_in_mhz=f_in_mhz,
                        f_pfd_mhz=f_pfd, f_vco_mhz=f_vco, f_out_mhz=f_out)


def add_board_clock(m: Module, platform, board: Board, pll: EcpPllConfig | None) -> None:
    """Add the ``sync`` clock domain of a board top to ``m``, with its reset.

    ECP5: an EHXPLLL from the board oscillator with the settings ``pll`` (from
    :func:`ecp5_pll_config`), the design held in reset until the PLL locks. iCE40: the
    oscillator directly (``pll`` is ignored), held in reset for 1024 cycles after power-on.
    Adds the submodules ``clk_buf``, ``pll`` (ECP5) and ``reset_sync`` and, on iCE40, the ``por``
    domain.

    Parameters
    ----------
    m : Module
        The top module.
    platform : amaranth-boards platform
        Supplies the oscillator pin (``platform.default_clk``).
    board : Board
        Selects the family.
    pll : EcpPllConfig or None
        PLL settings; required for ECP5.
    """
    m.domains.sync = cd_sync = ClockDomain("sync")
    m.submodules.clk_buf = clk_buf = io.Buffer(
        "i", platform.request(platform.default_clk, 0, dir="-"))
    clk_in = clk_buf.i

    if board.family == "ecp5":
        if pll is None:
            raise HardwareGenerationError(
                f"board {board.name}: the ECP5 clock needs PLL settings",
                hint="pass ecp5_pll_config(board.clock_mhz, board.target_mhz)")
        locked = Signal()
        m.submodules.pll = Instance(
            "EHXPLLL",
            a_FREQUENCY_PIN_CLKI=f"{pll.f_in_mhz:g}",
            a_FREQUENCY_PIN_CLKOP=f"{pll.f_out_mhz:g}",
            a_ICP_CURRENT="12", a_LPF_RESISTOR="8",
            a_MFG_ENABLE_FILTEROPAMP="1", a_MFG_GMCREF_SEL="2",
            p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED",
            p_STDBY_ENABLE="DISABLED", p_DPHASE_SOURCE="DISABLED",
            p_OUTDIVIDER_MUXA="DIVA", p_OUTDIVIDER_MUXB="DIVB",
            p_OUTDIVIDER_MUXC="DIVC", p_OUTDIVIDER_MUXD="DIVD",
            p_CLKI_DIV=pll.clki_div, p_CLKOP_ENABLE="ENABLED",
            p_CLKOP_DIV=pll.clkop_div, p_CLKOP_CPHASE=pll.clkop_cphase, p_CLKOP_FPHASE=0,
            p_FEEDBK_PATH="CLKOP", p_CLKFB_DIV=pll.clkfb_div,
            i_RST=0, i_STDBY=0, i_CLKI=clk_in, i_CLKFB=cd_sync.clk,
            i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=1, i_PHASESTEP=1, i_PHASELOADREG=1,
            i_PLLWAKESYNC=0, i_ENCLKOP=0,
            o_CLKOP=cd_sync.clk, o_LOCK=locked,
        )
        # No explicit constraint on the output: nextpnr derives it from the oscillator's and
        # the dividers ("Derived frequency constraint of 100.0 MHz").
        # Hold the design in reset until the PLL has locked.
        m.submodules.reset_sync = cdc.ResetSynchronizer(~locked, domain="sync")
    else:
        m.d.comb += cd_sync.clk.eq(clk_in)
        # iCE40 block RAMs read garbage for a few microseconds after configuration: hold the
        # design in reset for 1024 cycles (85 us at 12 MHz) after power-on.
        m.domains.por = cd_por = ClockDomain("por", reset_less=True)
        m.d.comb += cd_por.clk.eq(clk_in)
        por_count = Signal(10)
        por_done = Signal()
        with m.If(~por_done):
            m.d.por += por_count.eq(por_count + 1)
        m.d.por += por_done.eq(por_done | (por_count == 2**10 - 1))
        m.submodules.reset_sync = cdc.ResetSynchronizer(~por_done, domain="sync")


class BoardTop(Elaboratable):
    """Top level for an amaranth-boards platform: clock, reset, UART bridge, busy LED.

    Parameters
    ----------
    core : Elaboratable
        The accelerator (host-port contract, see the module docstring).
    board : Board or str
        The board; selects the clocking (ECP5: EHXPLLL from the oscillator to
        ``board.target_mhz``; iCE40: the oscillator directly, which must equal the target).
    rx_fifo_depth : int, optional
        Passed to the UART bridge.

    Attributes
    ----------
    divisor : int
        UART clock divisor, ``round(target / baud)``.
    pll : EcpPllConfig or None
        The PLL settings (ECP5 only).
    """

    def __init__(self, core, board: Board | str, *, rx_fifo_depth: int = 0):
        self.core = core
        self.board = get_board(board)
        self.rx_fifo_depth = rx_fifo_depth
        self.divisor = self.board.uart_divisor
        self.pll = None
        if self.board.family == "ecp5":
            self.pll = ecp5_pll_config(self.board.clock_mhz, self.board.target_mhz)
        elif self.board.clock_mhz != self.board.target_mhz:
            raise HardwareGenerationError(
                f"board {self.board.name}: the iCE40 top runs from the {self.board.clock_mhz} MHz "
                f"oscillator, but the target is {self.board.target_mhz} MHz",
                hint="set target_mhz equal to clock_mhz for iCE40 boards")

    def elaborate(self, platform):
        if platform is None:
            raise HardwareGenerationError(
                f"BoardTop for {self.board.name} needs an amaranth-boards platform",
                hint="use SimTop for simulation, or build with celosia.boards.build_bitstream")
        m = Module()
        add_board_clock(m, platform, self.board, self.pll)

        bridge = attach_bridge(m, self.core, self.divisor, rx_fifo_depth=self.rx_fifo_depth)
        uart = platform.request("uart", 0, dir="-")
        m.submodules.uart_rx_buf = rx_buf = io.Buffer("i", uart.rx)
        m.submodules.uart_tx_buf = tx_buf = io.Buffer("o", uart.tx)
        m.d.comb += [bridge.rx.eq(rx_buf.i), tx_buf.o.eq(bridge.tx)]
        m.submodules.led_buf = led_buf = io.Buffer("o", platform.request("led", 0, dir="-"))
        m.d.comb += led_buf.o.eq(self.core.host.busy)
        return m


class SimTop(wiring.Component):
    """Simulation top: the core behind a UART bridge, with the UART pins as ports.

    No PLL and no reset logic: the ``sync`` domain is the simulator's clock and reset.

    Parameters
    ----------
    core : Elaboratable
        The accelerator (host-port contract, see the module docstring).
    divisor : int
        Clock cycles per UART bit (small values such as 4..16 keep simulations short).
    rx_fifo_depth : int, optional
        Passed to the UART bridge.

    Attributes
    ----------
    uart_rx : In(1)
        Serial input (host to board); idles high.
    uart_tx : Out(1)
        Serial output (board to host); idles high.
    busy : Out(1)
        The core's busy flag (what the board shows on an LED).
    """

    def __init__(self, core, divisor: int, *, rx_fifo_depth: int = 0):
        self.core = core
        self.divisor = divisor
        self.rx_fifo_depth = rx_fifo_depth
        super().__init__({
            "uart_rx": In(1, init=1),
            "uart_tx": Out(1, init=1),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        bridge = attach_bridge(m, self.core, self.divisor, rx_fifo_depth=self.rx_fifo_depth)
        m.d.comb += [bridge.rx.eq(self.uart_rx), self.uart_tx.eq(bridge.tx),
                     self.busy.eq(self.core.host.busy)]
        return m


class ScratchpadCore(wiring.Component):
    """A tiny core with the host-port contract, for board bring-up and flow tests.

    It holds ``2**addr_bits`` words in a :class:`amaranth.lib.memory.Memory`. On ``start`` it
    walks the whole scratchpad and replaces every word ``x`` by ``x + 1`` (two cycles per word)
    or, with ``square=True``, by ``x * x + 1`` modulo ``2**word_bits`` (four cycles per word,
    with registers before and after the multiplier), then drops ``busy``. ``cycles`` counts the
    cycles of the last run. While busy the host port is ignored.

    Parameters
    ----------
    word_bits : int
        Word width.
    addr_bits : int
        Address width (the scratchpad holds ``2**addr_bits`` words).
    square : bool, optional
        Square the words (uses a hard multiplier) instead of incrementing them.

    Attributes
    ----------
    host : In(HostPortSignature(addr_bits, word_bits))
        The host port (:mod:`celosia.hw.host_port`).
    """

    def __init__(self, word_bits: int = 16, addr_bits: int = 6, *, square: bool = False):
        self.word_bits = word_bits
        self.addr_bits = addr_bits
        self.square = square
        super().__init__({"host": In(HostPortSignature(addr_bits, word_bits))})

    @property
    def run_cycles(self) -> int:
        """Length of a run in cycles."""
        return (4 if self.square else 2) * 2**self.addr_bits

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = memory.Memory(shape=self.word_bits, depth=2**self.addr_bits,
                                               init=[])
        rd = mem.read_port()
        wr = mem.write_port()

        ptr = Signal(self.addr_bits)
        last = 3 if self.square else 1
        # inc:    0: address presented, 1: data back, write x + 1.
        # square: 0: address presented, 1: data back into a register, 2: multiply into a
        #         register, 3: write. Block-RAM outputs are slow (5.6 ns clock-to-out on an
        #         ECP5-6 DP16KD): a register before and after the multiplier keeps 100 MHz.
        phase = Signal(range(last + 1))
        result = Signal(self.word_bits)
        if self.square:
            operand = Signal(self.word_bits)
            m.d.sync += [operand.eq(rd.data), result.eq(operand * operand + 1)]
        else:
            m.d.comb += result.eq(rd.data + 1)

        m.d.comb += self.host.rdata.eq(rd.data)
        with m.If(self.host.busy):
            m.d.comb += [rd.addr.eq(ptr), wr.addr.eq(ptr), wr.data.eq(result),
                         wr.en.eq(phase == last)]
            m.d.sync += [self.host.cycles.eq(self.host.cycles + 1), phase.eq(phase + 1)]
            with m.If(phase == last):
                m.d.sync += [ptr.eq(ptr + 1), phase.eq(0)]
                with m.If(ptr == 2**self.addr_bits - 1):
                    m.d.sync += self.host.busy.eq(0)
        with m.Else():
            m.d.comb += [rd.addr.eq(self.host.addr), wr.addr.eq(self.host.addr),
                         wr.data.eq(self.host.wdata), wr.en.eq(self.host.we)]
            with m.If(self.host.start):
                m.d.sync += [self.host.busy.eq(1), ptr.eq(0), phase.eq(0), self.host.cycles.eq(0)]
        return m
