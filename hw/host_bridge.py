"""UART host bridge: lets a host read and write the accelerator scratchpad, start it and read
its cycle counter over a serial line.

The byte protocol is documented in ``docs/uart_protocol.md``; :mod:`celosia.boards.uart_protocol`
holds the matching host-side encoders and decoders. In short (multi-byte fields little-endian,
``W = ceil(word_bits / 8)``):

=========================  ==========================================================
request                    reply
=========================  ==========================================================
``'W' addr[2] data[W]``    ``'K'`` after the word was written
``'R' addr[2]``            ``data[W]``
``'S'``                    ``'D'`` once ``busy`` has fallen again after the start pulse
``'C'``                    ``cycles[4]``
``'I'``                    ``word_bits[1] addr_bits[1] 'C' 'E' 'L' 'O'``
any other byte             ``'?'``
=========================  ==========================================================
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Signal, Value
from amaranth.lib import fifo, wiring
from amaranth.lib.wiring import In, Out

from celosia.hw.host_port import HostPortSignature
from celosia.hw.host_protocol import (CMD_CYCLES, CMD_IDENT, CMD_READ, CMD_START, CMD_WRITE, IDENT_MAGIC,
                                      REPLY_DONE, REPLY_OK, REPLY_UNKNOWN)
from celosia.errors import HardwareGenerationError
from celosia.hw.uart import UartRx, UartTx, check_divisor

__all__ = ["UartBridge"]


class UartBridge(wiring.Component):
    """Serial host bridge to an accelerator's host port.

    Parameters
    ----------
    word_bits : int
        Width of a scratchpad word (1..255; it is reported in one byte by ``'I'``).
    addr_bits : int
        Width of a scratchpad address (1..16; addresses travel as two bytes).
    divisor : int
        ``sync`` clock cycles per UART bit, ``round(f_clk / baud)`` (at least 4).
    rx_fifo_depth : int, optional
        Depth of a receive FIFO in front of the command decoder. With the default ``0`` the
        receiver holds a single byte, which is enough when the host waits for each reply (and
        for streams of ``'W'`` commands, whose replies are shorter than the requests). A FIFO
        lets the host pipeline other commands too.

    Attributes
    ----------
    rx : In(1)
        Serial input pin (from the host).
    tx : Out(1)
        Serial output pin (to the host).
    addr : Out(addr_bits)
        Scratchpad address. Held between commands; the read data must be valid on ``rdata`` the
        cycle after ``addr`` is presented and stay valid while it is held.
    wdata : Out(word_bits)
        Word to write, valid with ``we``.
    we : Out(1)
        One-cycle write strobe.
    rdata : In(word_bits)
        Scratchpad read data (synchronous read).
    start : Out(1)
        One-cycle start pulse.
    busy : In(1)
        The accelerator is running. It must be high by the second cycle after the ``start``
        pulse (i.e. the core may register ``start`` once before setting ``busy``) and stay high
        until the work is done; the bridge replies ``'D'`` at the first low ``busy`` from then on.
    cycles : In(32)
        The accelerator's cycle counter, reported by ``'C'``.
    """

    def __init__(self, word_bits: int, addr_bits: int, divisor: int, *, rx_fifo_depth: int = 0):
        if not isinstance(word_bits, int) or not 1 <= word_bits <= 255:
            raise HardwareGenerationError(
                f"UartBridge: word_bits must be in 1..255, not {word_bits!r}",
                hint="the 'I' reply carries word_bits in one byte; split wider words")
        if not isinstance(addr_bits, int) or not 1 <= addr_bits <= 16:
            raise HardwareGenerationError(
                f"UartBridge: addr_bits must be in 1..16, not {addr_bits!r}",
                hint="the protocol carries a two-byte address (64 Ki words)")
        if not isinstance(rx_fifo_depth, int) or rx_fifo_depth < 0:
            raise HardwareGenerationError(
                f"UartBridge: rx_fifo_depth must be a non-negative integer, not {rx_fifo_depth!r}",
                hint="use 0 (no FIFO) or a small depth such as 8")
        self.word_bits = word_bits
        self.addr_bits = addr_bits
        self.divisor = check_divisor(divisor, "UartBridge")
        self.rx_fifo_depth = rx_fifo_depth
        self.word_bytes = (word_bits + 7) // 8
        super().__init__({
            "rx": In(1, init=1),
            "tx": Out(1, init=1),
            "host": Out(HostPortSignature(addr_bits, word_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        nbytes = self.word_bytes

        m.submodules.uart_rx = uart_rx = UartRx(self.divisor)
        m.submodules.uart_tx = uart_tx = UartTx(self.divisor)
        m.d.comb += [uart_rx.rx.eq(self.rx), self.tx.eq(uart_tx.tx)]

        if self.rx_fifo_depth:
            m.submodules.rx_fifo = rx_fifo = fifo.SyncFIFOBuffered(
                width=8, depth=self.rx_fifo_depth)
            m.d.comb += [
                rx_fifo.w_data.eq(uart_rx.data.payload),
                rx_fifo.w_en.eq(uart_rx.data.valid),
                uart_rx.data.ready.eq(rx_fifo.w_rdy),
            ]
            in_valid, in_byte, in_ready = rx_fifo.r_rdy, rx_fifo.r_data, rx_fifo.r_en
        else:
            in_valid = uart_rx.data.valid
            in_byte = uart_rx.data.payload
            in_ready = uart_rx.data.ready

        # Request fields, shifted in from the top so that the first byte ends up lowest.
        addr_reg = Signal(16)
        data_reg = Signal(8 * nbytes)
        count = Signal(range(max(nbytes, 6) + 1))
        m.d.comb += [self.host.addr.eq(addr_reg), self.host.wdata.eq(data_reg)]

        # Reply bytes, sent from the bottom.
        reply_len = max(nbytes, 6, 4)
        reply = Signal(8 * reply_len)
        m.d.comb += uart_tx.data.payload.eq(reply[:8])

        ident = (Const(self.word_bits, 8), Const(self.addr_bits, 8),
                 *(Const(b, 8) for b in IDENT_MAGIC))

        def send(*parts, n):
            # Load the reply shift register (first byte lowest) and go and send ``n`` bytes.
            m.d.sync += [reply.eq(Cat(*parts)), count.eq(n)]
            m.next = "SEND"

        with m.FSM(name="bridge"):
            with m.State("CMD"):
                m.d.comb += in_ready.eq(1)
                with m.If(in_valid):
                    m.d.sync += count.eq(0)
                    with m.Switch(in_byte):
                        with m.Case(CMD_WRITE):
                            m.next = "W_ADDR"
                        with m.Case(CMD_READ):
                            m.next = "R_ADDR"
                        with m.Case(CMD_START):
                            m.next = "START"
                        with m.Case(CMD_CYCLES):
                            send(self.host.cycles, n=4)
                        with m.Case(CMD_IDENT):
                            send(*ident, n=6)
                        with m.Default():
                            send(Const(REPLY_UNKNOWN, 8), n=1)

            with m.State("W_ADDR"):
                m.d.comb += in_ready.eq(1)
                with m.If(in_valid):
                    m.d.sync += [addr_reg.eq(_shift_in(addr_reg, in_byte)), count.eq(count + 1)]
                    with m.If(count == 1):
                        m.d.sync += count.eq(0)
                        m.next = "W_DATA"

            with m.State("W_DATA"):
                m.d.comb += in_ready.eq(1)
                with m.If(in_valid):
                    m.d.sync += [data_reg.eq(_shift_in(data_reg, in_byte)), count.eq(count + 1)]
                    with m.If(count == nbytes - 1):
                        m.next = "WRITE"

            with m.State("WRITE"):
                m.d.comb += self.host.we.eq(1)
                send(Const(REPLY_OK, 8), n=1)

            with m.State("R_ADDR"):
                m.d.comb += in_ready.eq(1)
                with m.If(in_valid):
                    m.d.sync += [addr_reg.eq(_shift_in(addr_reg, in_byte)), count.eq(count + 1)]
                    with m.If(count == 1):
                        m.next = "R_WAIT"

            with m.State("R_WAIT"):
                # addr_reg was updated at the end of the last cycle: the memory sees the address
                # now and its output is valid in the next cycle.
                m.next = "R_LATCH"

            with m.State("R_LATCH"):
                send(self.host.rdata, n=nbytes)

            with m.State("START"):
                m.d.comb += self.host.start.eq(1)
                m.next = "START_GAP"

            with m.State("START_GAP"):
                m.next = "WAIT_DONE"

            with m.State("WAIT_DONE"):
                with m.If(~self.host.busy):
                    send(Const(REPLY_DONE, 8), n=1)

            with m.State("SEND"):
                m.d.comb += uart_tx.data.valid.eq(1)
                with m.If(uart_tx.data.ready):
                    m.d.sync += [reply.eq(reply >> 8), count.eq(count - 1)]
                    with m.If(count == 1):
                        m.next = "CMD"
        return m


def _shift_in(reg: Signal, byte) -> Value:
    """Shift ``byte`` in at the top of ``reg`` (little-endian reception)."""
    return Cat(reg[8:], byte)
