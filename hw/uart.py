"""8N1 UART receiver and transmitter.

Both units are parameterised by ``divisor``, the number of ``sync`` clock cycles per bit
(``round(f_clk / baud)``), and move bytes through :mod:`amaranth.lib.stream` interfaces:

* :class:`UartRx` synchronises the ``rx`` pin with two flip-flops, detects the falling edge of the
  start bit, re-checks the line in the middle of the start bit (a glitch shorter than half a bit
  is ignored) and samples every data bit and the stop bit in the middle of the bit. A received
  byte is offered on ``data`` until it is taken; a byte whose stop bit is ``0`` is dropped and
  reported on ``frame_error``; a byte that arrives while the previous one has not been taken
  replaces it and is reported on ``overrun``.
* :class:`UartTx` takes a byte from ``data`` whenever it is idle and shifts out a start bit,
  the eight data bits LSB first and one stop bit. ``tx`` is a registered output, high when idle.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Signal
from amaranth.lib import cdc, stream, wiring
from amaranth.lib.wiring import In, Out

from celosia.errors import HardwareGenerationError

__all__ = ["UartRx", "UartTx", "check_divisor"]

#: The smallest supported number of clock cycles per bit.
MIN_DIVISOR = 4


def check_divisor(divisor: int, unit: str) -> int:
    """Validate a UART clock divisor.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit.
    unit : str
        Name of the unit being built, for the error message.

    Returns
    -------
    int
        ``divisor`` unchanged.

    Raises
    ------
    HardwareGenerationError
        If ``divisor`` is not an integer of at least 4.
    """
    if not isinstance(divisor, int) or isinstance(divisor, bool) or divisor < MIN_DIVISOR:
        raise HardwareGenerationError(
            f"{unit}: divisor must be an integer >= {MIN_DIVISOR} clock cycles per bit, "
            f"not {divisor!r}",
            hint="use divisor = round(clock_hz / baud_rate), e.g. 868 for 100 MHz at 115200 baud",
        )
    return divisor


class UartRx(wiring.Component):
    """8N1 UART receiver.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit (at least 4).

    Attributes
    ----------
    rx : In(1)
        The serial input pin (asynchronous; idles high).
    data : Out(stream.Signature(8))
        Received bytes.
    frame_error : Out(1)
        One-cycle pulse when a byte with a ``0`` stop bit was dropped.
    overrun : Out(1)
        One-cycle pulse when a received byte replaced one that had not been taken yet.
    """

    def __init__(self, divisor: int):
        self.divisor = check_divisor(divisor, "UartRx")
        super().__init__({
            "rx": In(1, init=1),
            "data": Out(stream.Signature(8)),
            "frame_error": Out(1),
            "overrun": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        divisor = self.divisor

        rx = Signal(init=1)
        m.submodules.sync_rx = cdc.FFSynchronizer(self.rx, rx, init=1, stages=2)

        timer = Signal(range(divisor))
        bits = Signal(range(8))
        shreg = Signal(8)

        with m.If(self.data.ready):
            m.d.sync += self.data.valid.eq(0)

        with m.FSM(name="uart_rx"):
            with m.State("IDLE"):
                with m.If(~rx):
                    # Wait half a bit: land in the middle of the start bit.
                    m.d.sync += timer.eq(divisor // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(rx):
                    m.next = "IDLE"  # a glitch, not a start bit
                with m.Else():
                    m.d.sync += [timer.eq(divisor - 1), bits.eq(0)]
                    m.next = "DATA"
            with m.State("DATA"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Else():
                    m.d.sync += [
                        shreg.eq(Cat(shreg[1:], rx)),
                        timer.eq(divisor - 1),
                        bits.eq(bits + 1),
                    ]
                    with m.If(bits == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Else():
                    with m.If(rx):
                        m.d.sync += [self.data.payload.eq(shreg), self.data.valid.eq(1)]
                        m.d.sync += self.overrun.eq(self.data.valid & ~self.data.ready)
                    with m.Else():
                        m.d.sync += self.frame_error.eq(1)
                    m.next = "IDLE"

        # frame_error and overrun are one-cycle pulses.
        with m.If(self.frame_error):
            m.d.sync += self.frame_error.eq(0)
        with m.If(self.overrun):
            m.d.sync += self.overrun.eq(0)
        return m


class UartTx(wiring.Component):
    """8N1 UART transmitter.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit (at least 4).

    Attributes
    ----------
    data : In(stream.Signature(8))
        Bytes to send; ``ready`` is high while the transmitter is idle.
    tx : Out(1)
        The serial output pin (registered; idles high).
    busy : Out(1)
        High while a byte is being shifted out.
    """

    def __init__(self, divisor: int):
        self.divisor = check_divisor(divisor, "UartTx")
        super().__init__({
            "data": In(stream.Signature(8)),
            "tx": Out(1, init=1),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        divisor = self.divisor

        timer = Signal(range(divisor))
        bits = Signal(range(10))
        # stop bit, data LSB first, start bit -- shifted out from bit 0.
        shreg = Signal(10, init=0x3FF)

        m.d.comb += self.data.ready.eq(~self.busy)
        m.d.comb += self.tx.eq(shreg[0])

        with m.If(~self.busy):
            with m.If(self.data.valid):
                m.d.sync += [
                    shreg.eq(Cat(Const(0, 1), self.data.payload, Const(1, 1))),
                    timer.eq(divisor - 1),
                    bits.eq(9),
                    self.busy.eq(1),
                ]
        with m.Elif(timer != 0):
            m.d.sync += timer.eq(timer - 1)
        with m.Else():
            m.d.sync += [shreg.eq(Cat(shreg[1:], Const(1, 1))), timer.eq(divisor - 1)]
            m.d.sync += bits.eq(bits - 1)
            with m.If(bits == 0):
                m.d.sync += self.busy.eq(0)
        return m
