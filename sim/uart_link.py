"""A serial port made of a Verilated design's UART pins, for driving board tops in simulation.

:class:`SimSerial` has the ``write(bytes)`` / ``read(n)`` interface of a serial port,
so the same :class:`~celosia.boards.uart_protocol.UartHost` driver that talks to a real
board talks to the simulated one: every byte is shifted into ``uart_rx`` bit by bit and
every reply is decoded from ``uart_tx`` by sampling mid-bit.
"""

from __future__ import annotations

from celosia.boards.uart_protocol import frame_bits
from celosia.errors import SimulationError
from celosia.sim.harness import VerilatedDesign

__all__ = ["SimSerial"]


class SimSerial:
    """Serial-port view of a design with ``uart_rx``/``uart_tx`` pins.

    Parameters
    ----------
    dut : VerilatedDesign
        The simulated top (e.g. :class:`celosia.boards.top.SimTop`).
    divisor : int
        Clock cycles per bit, as generated.
    timeout_cycles : int
        ``read`` gives up after this many cycles without the requested bytes.
    """

    def __init__(self, dut: VerilatedDesign, divisor: int, *, rx: str = "uart_rx", tx: str = "uart_tx",
                 timeout_cycles: int = 1_000_000):
        self.dut, self.divisor, self.rx, self.tx = dut, divisor, rx, tx
        self.timeout_cycles = timeout_cycles
        self.received = bytearray()
        self._phase = None  # None while idle, else cycles since the start bit's falling edge
        self._shift = 0
        dut.set(rx, 1)

    def _tick(self) -> None:
        """One clock cycle, with the receiver decoding ``uart_tx``."""
        self.dut.tick()
        level = self.dut.get(self.tx)
        d = self.divisor
        if self._phase is None:
            if level == 0:
                self._phase, self._shift = 0, 0
            return
        self._phase += 1
        if self._phase % d != d // 2:
            return
        bit = self._phase // d  # 0 start, 1..8 data, 9 stop
        if bit == 0 and level != 0:
            self._phase = None  # a glitch, not a start bit
        elif 1 <= bit <= 8:
            self._shift |= level << (bit - 1)
        elif bit == 9:
            if level != 1:
                raise SimulationError("UART framing error on uart_tx (stop bit low)")
            self.received.append(self._shift)
            self._phase = None

    def write(self, data: bytes) -> int:
        """Shift ``data`` into ``uart_rx`` (8N1), decoding replies meanwhile."""
        for byte in data:
            for level in frame_bits(byte):
                self.dut.set(self.rx, level)
                for _ in range(self.divisor):
                    self._tick()
        return len(data)

    def read(self, n: int) -> bytes:
        """Return the next ``n`` reply bytes, simulating until they arrive."""
        waited = 0
        while len(self.received) < n:
            self._tick()
            waited += 1
            if waited > self.timeout_cycles:
                raise SimulationError(
                    f"no UART reply after {waited} cycles (got {bytes(self.received)!r}, wanted {n} bytes)"
                )
        out, self.received = bytes(self.received[:n]), self.received[n:]
        return out
