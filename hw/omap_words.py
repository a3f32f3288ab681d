"""The page-version region of the oblivious map unit behind a word port: on chip or AXI4.

Each host page has a 64-bit version in HBM (the trusted copy that catches replays). A command
reads the versions of its two pages once the pair is decided and writes the incremented ones
after re-encryption; initialisation writes version 1 of every page. The unit reaches the region
through a *word port* with two implementations of one interface:

:class:`VersionsOnChip`
    a ``lib.memory`` array, answering a read one cycle later.
:class:`VersionsAxi`
    an AXI4 master with 64-bit data and single-beat bursts (page ``p`` at byte ``8p``), so the
    region can sit on its own HBM pseudo-channel.

Interface (both): a ``rd`` strobe with ``rd_page`` requests a version; answers come back in
request order on ``rdata`` (always accepted). A ``wr`` strobe with ``wr_page`` and ``wr_data``
posts a write. Reads are held back while a write is unacknowledged, so a read never overtakes
the write of the same page (the next command may read the page the last one wrote). At most two
requests of each kind are in flight (the two pages of a command); ``fault`` is sticky (a request
into a full queue, an AXI error response).

HBM is unobservable in the threat model: only the unit's schedule has to cover the round trip
(the keystream of a page starts once its version is in; see ``Schedule`` in
:mod:`celosia.sim.omap`).
"""

from __future__ import annotations

from amaranth.hdl import Const, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from celosia.hw.omap_axi_bus import (
    BURST_INCR,
    RESP_OKAY,
    FallThroughQueue,
    axi4_signature,
)

from celosia.errors import HardwareGenerationError

__all__ = ["VersionsAxi", "VersionsOnChip"]


def _members(pages: int):
    pw = max(1, (pages - 1).bit_length())
    return {"rd": In(1), "rd_page": In(pw), "rdata": Out(stream.Signature(64)),
            "wr": In(1), "wr_page": In(pw), "wr_data": In(64),
            "fault": Out(1), "dbg_addr": In(32), "dbg_data": Out(64)}


class VersionsOnChip(wiring.Component):
    """Page versions in an on-chip memory behind the word port (see the module docstring).

    Parameters
    ----------
    pages : int
        M, the number of host pages.
    """

    def __init__(self, pages: int):
        self.pages = pages
        super().__init__(_members(pages))

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = Memory(shape=64, depth=max(1, self.pages), init=[])
        rp, wp, dp = mem.read_port(domain="comb"), mem.write_port(), mem.read_port(domain="comb")
        m.d.comb += [dp.addr.eq(self.dbg_addr), self.dbg_data.eq(dp.data), rp.addr.eq(self.rd_page),
                     wp.en.eq(self.wr), wp.addr.eq(self.wr_page), wp.data.eq(self.wr_data)]
        # a write and a read of the same page in one cycle: the read sees the old value, as
        # the combinational port reads before the clock edge that writes
        m.d.sync += [self.rdata.valid.eq(self.rd), self.rdata.payload.eq(rp.data)]
        return m


class VersionsAxi(wiring.Component):
    """Page versions behind an AXI4 master, one single-beat burst per access.

    Parameters
    ----------
    pages : int
        M, the number of host pages; page ``p``'s version is the u64 at ``base + 8p``.
    addr_width : int
        AXI address width.
    base : int
        Byte address of page 0's version on the port (8-byte aligned).
    """

    data_width = 64

    def __init__(self, pages: int, addr_width: int = 64, base: int = 0):
        if base % 8:
            raise HardwareGenerationError(f"versions base {base:#x} is not 8-byte aligned")
        if base + 8 * pages > 1 << addr_width:
            raise HardwareGenerationError(f"versions region ends beyond a {addr_width}-bit address")
        self.pages, self.base, self.addr_width = pages, base, addr_width
        super().__init__({**_members(pages), "axi": Out(axi4_signature(addr_width, 64))})

    @property
    def region_bytes(self) -> int:
        """Bytes of the versions region on the port."""
        return 8 * self.pages

    def elaborate(self, platform):
        m = Module()
        a = self.axi
        fault = Signal()
        m.d.comb += [self.fault.eq(fault), self.dbg_data.eq(0)]  # the region lives in HBM, not here
        for ch in ("ar", "aw"):
            m.d.comb += [getattr(a, f"{ch}len").eq(0), getattr(a, f"{ch}size").eq(3),
                         getattr(a, f"{ch}burst").eq(BURST_INCR), getattr(a, f"{ch}cache").eq(0b0011),
                         getattr(a, f"{ch}prot").eq(0b010)]

        def addr(page):
            return self.base + page * 8

        w_out = Signal(range(5))  # writes posted and not yet acknowledged
        b_fire = a.bvalid & a.bready
        m.d.comb += a.bready.eq(1)
        m.d.sync += w_out.eq(w_out + self.wr - b_fire)
        with m.If(b_fire & (a.bresp != RESP_OKAY)):
            m.d.sync += fault.eq(1)

        arq = FallThroughQueue(m, "ver_ar", 2, self.addr_width, self.rd, addr(self.rd_page),
                               hold=(w_out != 0) | self.wr)
        awq = FallThroughQueue(m, "ver_aw", 2, self.addr_width, self.wr, addr(self.wr_page), hold=Const(0))
        wq = FallThroughQueue(m, "ver_w", 2, 64, self.wr, self.wr_data, hold=Const(0))
        m.d.comb += [a.arvalid.eq(arq.valid), a.araddr.eq(arq.addr), arq.ready.eq(a.arready),
                     a.awvalid.eq(awq.valid), a.awaddr.eq(awq.addr), awq.ready.eq(a.awready),
                     a.wvalid.eq(wq.valid), a.wdata.eq(wq.addr), a.wstrb.eq(0xFF), a.wlast.eq(1),
                     wq.ready.eq(a.wready)]
        with m.If(arq.overflow | awq.overflow | wq.overflow):
            m.d.sync += fault.eq(1)
        m.d.comb += [a.rready.eq(1), self.rdata.valid.eq(a.rvalid), self.rdata.payload.eq(a.rdata)]
        with m.If(a.rvalid & ((a.rresp != RESP_OKAY) | ~a.rlast)):
            m.d.sync += fault.eq(1)
        return m
