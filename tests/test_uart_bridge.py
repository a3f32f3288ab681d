"""UART, UART bridge and host protocol: Amaranth simulation with a bit-level UART host model."""

from __future__ import annotations

import gc
import warnings

import pytest
from amaranth.hdl import Module, Signal, UnusedElaboratable
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from celosia.boards import uart_protocol as up
from celosia.boards.top import ScratchpadCore, SimTop, attach_bridge
from celosia.errors import CelosiaError, HardwareGenerationError
from celosia.hw.host_port import HostPortSignature
from celosia.hw.host_bridge import UartBridge
from celosia.hw.uart import UartRx, UartTx

DIVISOR = 4


class MockCore(wiring.Component):
    """Host-port contract with a scratchpad, a fixed-length run and a counter of start pulses."""

    def __init__(self, word_bits, addr_bits, *, run_cycles=100, cycles_base=0x12345600,
                 busy_latency=1):
        self.busy_latency = busy_latency
        self.word_bits = word_bits
        self.addr_bits = addr_bits
        self.run_cycles = run_cycles
        self.cycles_base = cycles_base
        super().__init__({"host": In(HostPortSignature(addr_bits, word_bits)), "starts": Out(8)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = memory.Memory(shape=self.word_bits, depth=2**self.addr_bits,
                                               init=[])
        rd, wr = mem.read_port(), mem.write_port()
        host = self.host
        m.d.comb += [rd.addr.eq(host.addr), host.rdata.eq(rd.data),
                     wr.addr.eq(host.addr), wr.data.eq(host.wdata),
                     wr.en.eq(host.we & ~host.busy)]
        left = Signal(range(self.run_cycles + 1))
        start = host.start
        for _ in range(self.busy_latency - 1):  # a core that registers start first
            delayed = Signal()
            m.d.sync += delayed.eq(start)
            start = delayed
        with m.If(start):
            m.d.sync += [host.busy.eq(1), left.eq(self.run_cycles - 1),
                         host.cycles.eq(self.cycles_base), self.starts.eq(self.starts + 1)]
        with m.Elif(host.busy):
            m.d.sync += [left.eq(left - 1), host.cycles.eq(host.cycles + 1)]
            with m.If(left == 0):
                m.d.sync += host.busy.eq(0)
        return m


class UartHostModel:
    """Drives ``rx`` bit by bit and decodes ``tx`` (runs as two Amaranth testbenches)."""

    def __init__(self, rx, tx, divisor=DIVISOR):
        self.rx, self.tx, self.divisor = rx, tx, divisor
        self.replies: list[tuple[int, int]] = []  # (cycle of the start bit, byte)
        self.cycle = 0
        self.errors: list[str] = []

    async def monitor(self, ctx):
        d = self.divisor
        while True:
            while ctx.get(self.tx):
                await ctx.tick()
                self.cycle += 1
            t0 = self.cycle
            await ctx.tick().repeat(d // 2)
            self.cycle += d // 2
            if ctx.get(self.tx):
                self.errors.append(f"glitch on tx at cycle {t0}")
                continue
            byte = 0
            for i in range(8):
                await ctx.tick().repeat(d)
                self.cycle += d
                byte |= ctx.get(self.tx) << i
            await ctx.tick().repeat(d)
            self.cycle += d
            if not ctx.get(self.tx):
                self.errors.append(f"framing error on tx at cycle {t0}")
            self.replies.append((t0, byte))

    async def send(self, ctx, data: bytes, *, gap: int = 0, bit_cycles: int | None = None):
        bit_cycles = bit_cycles or self.divisor
        for byte in data:
            for level in up.frame_bits(byte):
                ctx.set(self.rx, level)
                await ctx.tick().repeat(bit_cycles)
            if gap:
                await ctx.tick().repeat(gap)

    async def receive(self, ctx, n: int, *, timeout: int = 20000) -> bytes:
        """Wait for ``n`` more reply bytes (counted from the ones already taken)."""
        want = self.taken + n
        for _ in range(timeout):
            if len(self.replies) >= want:
                break
            await ctx.tick()
        got = bytes(b for _, b in self.replies[self.taken:want])
        self.taken = min(want, len(self.replies))
        return got

    taken = 0

    async def transact(self, ctx, request: bytes, n: int) -> bytes:
        await self.send(ctx, request)
        return await self.receive(ctx, n)


def run_top(core, bench, *, divisor=DIVISOR, rx_fifo_depth=0, vcd=None):
    """Simulate ``SimTop(core)`` with ``bench(ctx, host, top)`` as the main testbench."""
    top = SimTop(core, divisor, rx_fifo_depth=rx_fifo_depth)
    host = UartHostModel(top.uart_rx, top.uart_tx, divisor)
    sim = Simulator(top)
    sim.add_clock(1e-6)
    sim.add_testbench(host.monitor, background=True)

    async def main(ctx):
        await ctx.tick().repeat(5)
        await bench(ctx, host, top)

    sim.add_testbench(main)
    sim.run()
    assert host.errors == []
    return host


# --- protocol helpers -------------------------------------------------------------------------


def test_encoders():
    assert up.encode_write(0x0102, 0xAABBCC, 24) == b"W\x02\x01\xcc\xbb\xaa"
    assert up.encode_write(3, -1, 12) == b"W\x03\x00\xff\x0f"
    assert up.encode_read(0xBEEF) == b"R\xef\xbe"
    assert up.encode_start() == b"S"
    assert up.encode_cycles() == b"C"
    assert up.encode_ident() == b"I"
    assert [up.reply_length(c, 20) for c in b"WRSCI?"] == [1, 3, 1, 4, 6, 1]
    assert up.reply_length(up.encode_read(1), 64) == 8
    assert up.word_bytes(1) == 1 and up.word_bytes(8) == 1 and up.word_bytes(9) == 2
    # The examples in docs/uart_protocol.md.
    assert up.encode_write(0x1234, 0x023456, 20).hex() == "573412563402"
    assert up.encode_read(0x1234).hex() == "523412"
    assert up.decode_ident_reply(bytes.fromhex("140a43454c4f")) == up.Ident(20, 10)
    assert up.decode_cycles_reply(bytes.fromhex("10270000")) == 10000


def test_decoders():
    assert up.decode_read_reply(b"\xff\x7f", 16) == 0x7FFF
    assert up.decode_read_reply(b"\xff\xff\x0f", 20, signed=True) == -1
    assert up.decode_read_reply(b"\xff\xff\xff", 20) == 0xFFFFF  # bits above word_bits dropped
    assert up.decode_cycles_reply(b"\x78\x56\x34\x12") == 0x12345678
    assert up.decode_ident_reply(b"\x20\x0aCELO") == up.Ident(32, 10)
    assert up.Ident(20, 6).word_bytes == 3
    up.decode_write_reply(b"K")
    up.decode_start_reply(b"D")
    assert up.frame_bits(0x53) == [0, 1, 1, 0, 0, 1, 0, 1, 0, 1]


@pytest.mark.parametrize("call", [
    lambda: up.encode_write(0x10000, 0, 8),
    lambda: up.encode_write(0, 256, 8),
    lambda: up.encode_write(0, -129, 8),
    lambda: up.encode_read(-1),
    lambda: up.word_bytes(0),
    lambda: up.decode_write_reply(b"?"),
    lambda: up.decode_write_reply(b""),
    lambda: up.decode_start_reply(b"K"),
    lambda: up.decode_read_reply(b"\x00", 16),
    lambda: up.decode_ident_reply(b"\x08\x08CELX"),
    lambda: up.frame_bits(256),
])
def test_protocol_errors(call):
    with pytest.raises(up.UartProtocolError) as info:
        call()
    assert isinstance(info.value, CelosiaError)


class FakePort:
    """A byte-level model of the bridge, for the host driver."""

    def __init__(self, word_bits=16, addr_bits=8):
        self.word_bits, self.addr_bits = word_bits, addr_bits
        self.mem = {}
        self.out = bytearray()
        self.cycles = 0

    def write(self, data):
        data = bytes(data)
        w = up.word_bytes(self.word_bits)
        i = 0
        while i < len(data):
            c = data[i]
            if c == up.CMD_WRITE:
                addr = int.from_bytes(data[i + 1:i + 3], "little")
                self.mem[addr] = int.from_bytes(data[i + 3:i + 3 + w], "little")
                self.out += b"K"
                i += 3 + w
            elif c == up.CMD_READ:
                addr = int.from_bytes(data[i + 1:i + 3], "little")
                self.out += self.mem.get(addr, 0).to_bytes(w, "little")
                i += 3
            elif c == up.CMD_START:
                self.mem = {a: v + 1 for a, v in self.mem.items()}
                self.cycles = 77
                self.out += b"D"
                i += 1
            elif c == up.CMD_CYCLES:
                self.out += self.cycles.to_bytes(4, "little")
                i += 1
            elif c == up.CMD_IDENT:
                self.out += bytes([self.word_bits, self.addr_bits]) + b"CELO"
                i += 1
            else:
                self.out += b"?"
                i += 1
        return len(data)

    def read(self, n):
        data, self.out = bytes(self.out[:n]), self.out[n:]
        return data


def test_uart_host_driver():
    port = FakePort(word_bits=12)
    host = up.UartHost(port)
    assert host.word_bits == 12
    assert host.ident() == up.Ident(12, 8)
    host.write_words(4, [1, 2, -3])
    assert host.read_words(4, 3, signed=True) == [1, 2, -3]
    host.write_word(9, 100)
    assert host.read_word(9) == 100
    assert host.run([(0, [5])]) == 77
    assert host.read_word(0) == 6
    # A board that answers '?' to everything.
    port = FakePort()
    host = up.UartHost(port, word_bits=16)
    port.write = lambda data: port.out.extend(b"?" * len(data))
    with pytest.raises(up.UartProtocolError, match="did not recognise"):
        host.write_word(0, 1)
    with pytest.raises(up.UartProtocolError, match="'K' replies"):
        host.write_words(0, [1, 2])


# --- generator parameter checks ---------------------------------------------------------------


@pytest.mark.parametrize("kwargs", [
    dict(word_bits=0, addr_bits=8, divisor=8),
    dict(word_bits=256, addr_bits=8, divisor=8),
    dict(word_bits=16, addr_bits=17, divisor=8),
    dict(word_bits=16, addr_bits=8, divisor=2),
    dict(word_bits=16, addr_bits=8, divisor=8, rx_fifo_depth=-1),
])
def test_bridge_rejects_bad_parameters(kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)  # the half-built object
        with pytest.raises(HardwareGenerationError) as info:
            UartBridge(**kwargs)
        assert info.value.hint
        del info
        gc.collect()


def test_attach_bridge_checks_core():
    class NotACore:
        word_bits = 8
        addr_bits = 4

    m = Module()
    with pytest.raises(HardwareGenerationError, match="host-port member"):
        attach_bridge(m, NotACore(), DIVISOR)
    m._MustUse__silence = True


# --- UART units -------------------------------------------------------------------------------


@pytest.mark.parametrize("divisor,bit_cycles", [(4, 4), (5, 5), (100, 100), (100, 97), (100, 103)])
def test_uart_loopback(divisor, bit_cycles):
    """Bytes sent into UartRx (at a slightly wrong baud rate, too) come out of UartTx."""
    m = Module()
    m.submodules.rx = rx = UartRx(divisor)
    m.submodules.tx = tx = UartTx(divisor)
    wiring.connect(m, rx.data, tx.data)
    host = UartHostModel(rx.rx, tx.tx, divisor)
    data = bytes([0x00, 0xFF, 0x55, 0xAA, 0x01, 0x80, 0x3C])
    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(host.monitor, background=True)

    async def bench(ctx):
        await ctx.tick().repeat(3)
        await host.send(ctx, data, bit_cycles=bit_cycles)
        assert await host.receive(ctx, len(data), timeout=20 * divisor) == data

    sim.add_testbench(bench)
    sim.run()
    assert host.errors == []


def test_uart_rx_glitch_frame_error_and_overrun():
    d = 8
    dut = UartRx(d)
    host = UartHostModel(dut.rx, Signal(init=1), d)
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    seen = {"bytes": [], "frame_error": 0, "overrun": 0}

    async def watch(ctx):
        async for _, _, valid, payload, fe, ov in ctx.tick().sample(
                dut.data.valid, dut.data.payload, dut.frame_error, dut.overrun):
            if valid and ctx.get(dut.data.ready):
                seen["bytes"].append(payload)
            seen["frame_error"] += fe
            seen["overrun"] += ov

    async def bench(ctx):
        ctx.set(dut.data.ready, 1)
        await ctx.tick().repeat(3)
        # A two-cycle glitch is not a start bit.
        ctx.set(dut.rx, 0)
        await ctx.tick().repeat(2)
        ctx.set(dut.rx, 1)
        await ctx.tick().repeat(3 * d)
        assert seen["bytes"] == []
        # A frame with a 0 stop bit is dropped and reported.
        for level in up.frame_bits(0x42)[:-1] + [0]:
            ctx.set(dut.rx, level)
            await ctx.tick().repeat(d)
        ctx.set(dut.rx, 1)
        await ctx.tick().repeat(3 * d)
        assert seen["bytes"] == [] and seen["frame_error"] == 1
        # A good byte after it is received.
        await host.send(ctx, b"\x42")
        await ctx.tick().repeat(d)
        assert seen["bytes"] == [0x42]
        # Two bytes nobody takes: the second replaces the first and is flagged.
        ctx.set(dut.data.ready, 0)
        await host.send(ctx, b"\x01\x02")
        await ctx.tick().repeat(d)
        assert seen["overrun"] == 1
        assert ctx.get(dut.data.valid) and ctx.get(dut.data.payload) == 0x02

    sim.add_testbench(watch, background=True)
    sim.add_testbench(bench)
    sim.run()


# --- the bridge ---------------------------------------------------------------------------------


@pytest.mark.parametrize("word_bits,addr_bits", [(20, 6), (8, 4), (32, 10)])
def test_bridge_commands(word_bits, addr_bits):
    core = MockCore(word_bits, addr_bits, run_cycles=150)
    w = up.word_bytes(word_bits)
    mask = (1 << word_bits) - 1
    top_addr = 2**addr_bits - 1
    values = {0: 0x5A5A5A5A & mask, 1: mask, top_addr: 0x89ABCDEF & mask, 3: 0}

    async def bench(ctx, host, top):
        # Identification.
        reply = await host.transact(ctx, up.encode_ident(), 6)
        assert up.decode_ident_reply(reply) == up.Ident(word_bits, addr_bits)
        # Writes, then reads in another order.
        for addr, value in values.items():
            assert await host.transact(ctx, up.encode_write(addr, value, word_bits), 1) == b"K"
        for addr in sorted(values, reverse=True):
            reply = await host.transact(ctx, up.encode_read(addr), w)
            assert up.decode_read_reply(reply, word_bits) == values[addr], addr
        # Data bits above word_bits are ignored; address bits above addr_bits too.
        raw = b"W" + (top_addr | 0x8000 if addr_bits < 16 else top_addr).to_bytes(2, "little")
        assert await host.transact(ctx, raw + b"\xff" * w, 1) == b"K"
        reply = await host.transact(ctx, up.encode_read(top_addr), w)
        assert int.from_bytes(reply, "little") == mask
        # Unknown bytes, including a lower-case command letter and the reply letters.
        for byte in (0x00, 0xFF, ord("w"), ord("K"), ord("D"), ord("?")):
            assert await host.transact(ctx, bytes([byte]), 1) == b"?"
        # Start: one pulse, 'D' only after busy has fallen.
        assert ctx.get(core.starts) == 0
        await host.send(ctx, up.encode_start())
        sent_at = host.cycle
        await ctx.tick().repeat(2 * DIVISOR)  # the receiver samples mid stop bit, + synchroniser
        assert ctx.get(core.host.busy)
        assert await host.receive(ctx, 1) == b"D"
        assert host.replies[-1][0] >= sent_at + 150 - 1
        assert ctx.get(core.starts) == 1 and not ctx.get(core.host.busy)
        # Cycle counter, little-endian.
        reply = await host.transact(ctx, up.encode_cycles(), 4)
        assert up.decode_cycles_reply(reply) == 0x12345600 + 150
        # Everything still works after all that.
        reply = await host.transact(ctx, up.encode_read(0), w)
        assert up.decode_read_reply(reply, word_bits) == values[0]

    run_top(core, bench)


@pytest.mark.parametrize("busy_latency", [1, 2])
@pytest.mark.parametrize("run_cycles", [1, 2, 300])
def test_bridge_start_waits_for_busy(busy_latency, run_cycles):
    """'D' comes after busy falls, for short runs and for busy rising two cycles after start."""
    core = MockCore(8, 4, run_cycles=run_cycles, busy_latency=busy_latency)

    async def bench(ctx, host, top):
        for n in range(1, 4):
            await host.send(ctx, b"S")
            sent_at = host.cycle
            assert await host.receive(ctx, 1) == b"D"
            assert host.replies[-1][0] >= sent_at + run_cycles
            assert ctx.get(core.starts) == n
            reply = await host.transact(ctx, b"C", 4)
            assert up.decode_cycles_reply(reply) == 0x12345600 + run_cycles

    run_top(core, bench)


def test_bridge_back_to_back_without_fifo():
    """Streamed 'W' requests with no idle time, then each command right after its reply."""
    core = MockCore(16, 6)
    data = {a: (a * 0x1111 + 7) & 0xFFFF for a in range(12)}

    async def bench(ctx, host, top):
        await host.send(ctx, b"".join(up.encode_write(a, v, 16) for a, v in data.items()))
        assert await host.receive(ctx, len(data)) == b"K" * len(data)
        for a, v in data.items():
            assert up.decode_read_reply(await host.transact(ctx, up.encode_read(a), 2), 16) == v
        assert await host.transact(ctx, b"?", 1) == b"?"
        assert await host.transact(ctx, b"I", 6) == b"\x10\x06CELO"

    run_top(core, bench)


def test_bridge_pipelined_with_fifo():
    """With a receive FIFO the host may send a burst of mixed commands without waiting."""
    core = MockCore(24, 8, run_cycles=40)

    async def bench(ctx, host, top):
        burst = (up.encode_write(5, 0xABCDEF, 24) + up.encode_read(5) + b"I" + b"\x00"
                 + up.encode_write(6, 1, 24) + up.encode_read(6) + b"S" + b"C"
                 + up.encode_read(5))
        expected = (b"K" + bytes.fromhex("efcdab") + b"\x18\x08CELO" + b"?" + b"K"
                    + b"\x01\x00\x00" + b"D" + (0x12345600 + 40).to_bytes(4, "little")
                    + bytes.fromhex("efcdab"))
        await host.send(ctx, burst)
        assert await host.receive(ctx, len(expected)) == expected

    run_top(core, bench, rx_fifo_depth=16)


@pytest.mark.parametrize("square", [False, True])
def test_bridge_with_scratchpad_core(square):
    """End to end with the bring-up core used by the board builds."""
    core = ScratchpadCore(word_bits=12, addr_bits=4, square=square)

    def after(x):
        return ((x * x if square else x) + 1) & 0xFFF

    async def bench(ctx, host, top):
        assert await host.transact(ctx, b"I", 6) == b"\x0c\x04CELO"
        for a in range(16):
            assert await host.transact(ctx, up.encode_write(a, 100 * a, 12), 1) == b"K"
        assert await host.transact(ctx, b"S", 1) == b"D"
        cycles = up.decode_cycles_reply(await host.transact(ctx, b"C", 4))
        assert cycles == core.run_cycles == (64 if square else 32)
        for a in range(16):
            reply = await host.transact(ctx, up.encode_read(a), 2)
            assert up.decode_read_reply(reply, 12) == after(100 * a)
        assert ctx.get(top.busy) == 0

    run_top(core, bench)
