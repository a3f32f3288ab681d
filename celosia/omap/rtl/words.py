"""Word regions of the oblivious map unit (page versions, bin loads) behind a word port.

Each host page has a 64-bit version in HBM (the trusted copy that catches replays); each bin a
32-bit load counter. A command reads the versions of its two pages once the pair is decided and
writes the incremented ones after re-encryption, and reads the loads of the bins it may touch
(the pair and the placement pair) into a small cache, writing them back at its end. The unit
reaches each region through a *word port* with two implementations of one interface:

:class:`WordOnChip`
    a ``lib.memory`` array, answering a read one cycle later.
:class:`WordAxi`
    an AXI4 master with single-beat bursts (word ``p`` at byte ``p * width / 8``), so the region
    can sit on its own HBM pseudo-channel.

Interface (both): a ``rd`` strobe with ``rd_page`` (the word index) requests a word; answers come
back in request order on ``rdata`` (always accepted). A ``wr`` strobe with ``wr_page`` and
``wr_data`` posts a write. Reads are held back while a write is unacknowledged, so a read never
overtakes the write of the same word (the next command may read what the last one wrote). At
most ``depth`` requests of each kind are in flight; ``fault`` is sticky (a request into a full
queue, an AXI error response).

HBM is unobservable in the threat model: only the unit's schedule has to cover the round trip
(the keystream of a page starts once its version is in; see ``Schedule`` in
:mod:`celosia.omap.golden`).
"""

from __future__ import annotations

from amaranth.hdl import Const, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from celosia.omap.rtl.axi_bus import (
    BURST_INCR,
    RESP_OKAY,
    FallThroughQueue,
    axi4_signature,
)

from celosia.errors import HardwareGenerationError

__all__ = ["WordAxi", "WordOnChip"]


def _members(pages: int, width: int):
    pw = max(1, (pages - 1).bit_length())
    return {"rd": In(1), "rd_page": In(pw), "rdata": Out(stream.Signature(width)),
            "wr": In(1), "wr_page": In(pw), "wr_data": In(width),
            "fault": Out(1), "dbg_addr": In(32), "dbg_data": Out(width)}


class WordOnChip(wiring.Component):
    """A word region in an on-chip memory behind the word port (see the module docstring).

    Parameters
    ----------
    pages : int
        Words in the region.
    width : int
        Bits per word.
    """

    def __init__(self, pages: int, width: int = 64):
        self.pages, self.width = pages, width
        super().__init__(_members(pages, width))

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = Memory(shape=self.width, depth=max(1, self.pages), init=[])
        rp, wp, dp = mem.read_port(domain="comb"), mem.write_port(), mem.read_port(domain="comb")
        m.d.comb += [dp.addr.eq(self.dbg_addr), self.dbg_data.eq(dp.data), rp.addr.eq(self.rd_page),
                     wp.en.eq(self.wr), wp.addr.eq(self.wr_page), wp.data.eq(self.wr_data)]
        # a write and a read of the same page in one cycle: the read sees the old value, as
        # the combinational port reads before the clock edge that writes
        m.d.sync += [self.rdata.valid.eq(self.rd), self.rdata.payload.eq(rp.data)]
        return m


class WordAxi(wiring.Component):
    """A word region behind an AXI4 master, one single-beat burst per access.

    Parameters
    ----------
    pages : int
        Words in the region; word ``p`` is at ``base + p * width / 8``.
    width : int
        Bits per word and AXI data width (32 or 64 here).
    addr_width : int
        AXI address width.
    base : int
        Byte address of word 0 on the port (aligned to the word).
    depth : int
        Requests of each kind that may be queued.
    """

    def __init__(self, pages: int, width: int = 64, addr_width: int = 64, base: int = 0, depth: int = 2):
        if width not in (32, 64):
            raise HardwareGenerationError(f"word width {width}: the word port takes 32 or 64 bits")
        wb = width // 8
        if base % wb:
            raise HardwareGenerationError(f"word region base {base:#x} is not {wb}-byte aligned")
        if base + wb * pages > 1 << addr_width:
            raise HardwareGenerationError(f"word region ends beyond a {addr_width}-bit address")
        self.pages, self.width, self.base, self.addr_width, self.depth = pages, width, base, addr_width, depth
        self.data_width = width
        super().__init__({**_members(pages, width), "axi": Out(axi4_signature(addr_width, width))})

    @property
    def region_bytes(self) -> int:
        """Bytes of the region on the port."""
        return self.width // 8 * self.pages

    def elaborate(self, platform):
        m = Module()
        a = self.axi
        fault = Signal()
        m.d.comb += [self.fault.eq(fault), self.dbg_data.eq(0)]  # the region lives in HBM, not here
        wb = self.width // 8
        for ch in ("ar", "aw"):
            m.d.comb += [getattr(a, f"{ch}len").eq(0), getattr(a, f"{ch}size").eq(wb.bit_length() - 1),
                         getattr(a, f"{ch}burst").eq(BURST_INCR), getattr(a, f"{ch}cache").eq(0b0011),
                         getattr(a, f"{ch}prot").eq(0b010)]

        def addr(page):
            return self.base + page * wb

        w_out = Signal(range(2 * self.depth + 2))  # writes posted and not yet acknowledged
        b_fire = a.bvalid & a.bready
        m.d.comb += a.bready.eq(1)
        m.d.sync += w_out.eq(w_out + self.wr - b_fire)
        with m.If(b_fire & (a.bresp != RESP_OKAY)):
            m.d.sync += fault.eq(1)

        d = self.depth
        arq = FallThroughQueue(m, "word_ar", d, self.addr_width, self.rd, addr(self.rd_page),
                               hold=(w_out != 0) | self.wr)
        awq = FallThroughQueue(m, "word_aw", d, self.addr_width, self.wr, addr(self.wr_page), hold=Const(0))
        wq = FallThroughQueue(m, "word_w", d, self.width, self.wr, self.wr_data, hold=Const(0))
        m.d.comb += [a.arvalid.eq(arq.valid), a.araddr.eq(arq.addr), arq.ready.eq(a.arready),
                     a.awvalid.eq(awq.valid), a.awaddr.eq(awq.addr), awq.ready.eq(a.awready),
                     a.wvalid.eq(wq.valid), a.wdata.eq(wq.addr), a.wstrb.eq((1 << wb) - 1), a.wlast.eq(1),
                     wq.ready.eq(a.wready)]
        with m.If(arq.overflow | awq.overflow | wq.overflow):
            m.d.sync += fault.eq(1)
        m.d.comb += [a.rready.eq(1), self.rdata.valid.eq(a.rvalid), self.rdata.payload.eq(a.rdata)]
        with m.If(a.rvalid & ((a.rresp != RESP_OKAY) | ~a.rlast)):
            m.d.sync += fault.eq(1)
        return m
