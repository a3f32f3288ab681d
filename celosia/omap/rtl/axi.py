# amaranth: UnusedElaboratable=no
"""AXI4 side of the oblivious map unit: the signature, a page-burst master, the AXI top.

:class:`OmapUnit` talks to host memory through a page-wide request/response pair
(``host_req`` / ``host_rdata``). :class:`Axi4PageMaster` turns that into AXI4 (full): every
request becomes one INCR burst covering exactly one page (AR/R for reads, AW/W/B for writes),
and :class:`OmapUnitAxi` is the unit with that master on its host port, the top a host or PCIe
bridge connects to.

Obliviousness on the bus. The unit raises ``host_req`` at the cycles of its fixed schedule,
so the master presents ARVALID/AWVALID *in that same cycle* (the address queues fall through
when empty): the address, burst length and issue cycle of every transaction are the
schedule's, whatever the data. What the slave does afterwards (when it raises ARREADY/AWREADY,
WREADY, its read latency, gaps between R beats, when B comes back) is the adversary's own
behaviour and can only delay what it sees next by what it did itself; the response path absorbs
it (queued addresses, a page buffer per pending write, a page assembler for reads). The unit
needs each page back within the modelled host round trip (``MemoryTiming.host_latency``
cycles from issue to the first beat, then one beat per cycle); a slower host makes the unit
flag ``late``, never changes what it issues.

A read is held back while a write is still unacknowledged (no B yet): AXI does not order
reads after writes, and the next command may read the page the last one wrote. Within the
schedule every write is acknowledged long before the next read is due.

Faults (``host_fault``, sticky): a non-OKAY RRESP or BRESP, a read burst whose RLAST does not
match its length, or a request arriving while the master's queues are full (the host held
the bus for a whole command). They are diagnostics only: a lost or corrupted page is caught by
the page MAC and version check anyway (``FATAL_INTEGRITY``, fail closed).
"""

from __future__ import annotations

import math

from amaranth.hdl import Cat, Const, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from celosia.omap.rtl.unit import HBM_AXI_REGIONS, OmapUnit
from celosia.omap.rtl.axi_bus import (
    BURST_INCR,
    RESP_OKAY,
    FallThroughQueue,
    axi4_signature,
)
from celosia.omap.config import OmapConfig
from celosia.omap.crypto import OmapKeys

from celosia.errors import HardwareGenerationError

__all__ = ["AXI_DATA_WIDTHS", "Axi4PageMaster", "OmapUnitAxi", "axi4_signature", "axi_widths", "check_axi_pages",
           "check_axi_placement", "check_axi_width"]


#: The data widths AXI4 allows, in bits.
AXI_DATA_WIDTHS = (8, 16, 32, 64, 128, 256, 512, 1024)


def check_axi_pages(cfg: OmapConfig, data_width: int, addr_width: int = 64) -> int:
    """Check that every page of ``cfg`` is one legal AXI4 INCR burst of ``data_width`` bits.

    Returns
    -------
    int
        Beats per page.

    Raises
    ------
    HardwareGenerationError
        Data width not a power of two in [8, 1024], a port narrower than the host link the
        schedule assumes, a page not a whole number of beats, more than 256 beats, ``host_base``
        not aligned to a beat (:func:`check_axi_width`); a page crossing a 4 KiB boundary or an
        address width too small (:func:`check_axi_placement`).
    """
    beats = check_axi_width(cfg, data_width)
    check_axi_placement(cfg, addr_width)
    return beats


def check_axi_width(cfg: OmapConfig, data_width: int) -> int:
    """The rules of :func:`check_axi_pages` that depend on the data width; returns beats per page."""
    if (not isinstance(data_width, int) or isinstance(data_width, bool) or data_width not in AXI_DATA_WIDTHS):
        raise HardwareGenerationError(f"AXI data width {data_width} bits: AXI4 needs a power of two in [8, 1024]")
    db, pb = data_width // 8, cfg.page_bytes
    link = cfg.timing.host_bytes_per_cycle
    if db < link:
        raise HardwareGenerationError(
            f"AXI data width {data_width} bits moves {db} B/cycle but the schedule assumes a {link} B/cycle host "
            f"link: pages would arrive after their window",
            hint=f"use data_width={8 * link} or MemoryTiming(host_bytes_per_cycle={db}) in the config")
    if pb % db:
        raise HardwareGenerationError(f"page of {pb} bytes is not a whole number of {db}-byte AXI beats",
                                      hint=f"use MemoryTiming(host_bytes_per_cycle={db}) so pages pad to the beat")
    beats = pb // db
    if beats > 256:
        raise HardwareGenerationError(f"page of {pb} bytes is {beats} beats of {db} bytes; an AXI4 INCR burst has "
                                      f"at most 256", hint=f"use a data width of at least {8 * -(-pb // 256)} bits")
    if cfg.host_base % db:
        raise HardwareGenerationError(f"host_base={cfg.host_base:#x} is not aligned to the {db}-byte AXI beat")
    return beats


def check_axi_placement(cfg: OmapConfig, addr_width: int = 64) -> None:
    """The rules of :func:`check_axi_pages` that do not depend on the data width: no page
    crosses a 4 KiB boundary (an INCR burst must not), every page is addressable."""
    base, pb = cfg.host_base, cfg.page_bytes
    # where a page starts within its 4 KiB repeats every 4096 / gcd(pb, 4096) pages
    period = 4096 // math.gcd(pb, 4096)
    for m in range(min(cfg.host_pages, period)):
        a = base + m * pb
        if a // 4096 != (a + pb - 1) // 4096:
            raise HardwareGenerationError(
                f"page {m} at {a:#x}..{a + pb - 1:#x} ({pb} bytes) crosses a 4 KiB boundary: not one AXI4 burst",
                hint="page_bytes must divide 4096 with host_base aligned to it (e.g. a value size giving "
                     "64/128/256-byte pages)")
    if base + cfg.host_bytes > 1 << addr_width:
        raise HardwareGenerationError(f"host pages end at {base + cfg.host_bytes:#x}, beyond a {addr_width}-bit "
                                      f"AXI address")


def axi_widths(cfg: OmapConfig) -> list[int]:
    """The AXI4 data widths (bits) at which every page of ``cfg`` is one legal burst as far as
    the width goes (:func:`check_axi_width`), narrowest first."""
    ok = []
    for w in AXI_DATA_WIDTHS:
        try:
            check_axi_width(cfg, w)
        except HardwareGenerationError:
            continue
        ok.append(w)
    return ok


class Axi4PageMaster(wiring.Component):
    """Page-wide requests to AXI4 bursts of one page each (see the module docstring).

    Parameters
    ----------
    page_bytes : int
        Bytes per request (the unit's ``page_bytes``); a whole number of beats.
    data_width : int
        AXI data width in bits (e.g. 64 or 512).
    addr_width : int
        AXI address width.
    depth : int
        Queued requests per direction (2: the two pages of a command).

    Ports
    -----
    req : In(stream)
        write (1) | address (64) | length (32, ignored: always one page) | page data.
        Always accepted (``ready`` is high); a request into full queues sets ``fault``.
    rdata : Out(stream)
        One page-wide beat per read, in issue order, one cycle after its last R beat.
    axi : Out(axi4_signature)
        The master port.
    fault : Out(1)
        Sticky: non-OKAY response, RLAST mismatch or queue overflow.
    """

    def __init__(self, page_bytes: int, data_width: int = 64, addr_width: int = 64, depth: int = 2):
        db = data_width // 8
        if page_bytes % db or not 1 <= page_bytes // db <= 256:
            raise HardwareGenerationError(f"page of {page_bytes} bytes is not 1..256 whole {db}-byte AXI beats")
        self.page_bytes, self.dw, self.aw, self.depth = page_bytes, data_width, addr_width, depth
        self.beats = page_bytes // db
        self.size = db.bit_length() - 1
        super().__init__({
            "req": In(stream.Signature(1 + 64 + 32 + 8 * page_bytes)),
            "rdata": Out(stream.Signature(8 * page_bytes)),
            "axi": Out(axi4_signature(addr_width, data_width)),
            "fault": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        a, dw, nb = self.axi, self.dw, self.beats
        pbits = 8 * self.page_bytes
        p = self.req.payload
        is_w, addr, data = p[0], p[1:1 + self.aw], p[97:97 + pbits]
        m.d.comb += self.req.ready.eq(1)
        fault = Signal()
        m.d.comb += self.fault.eq(fault)

        # writes in flight: counted from the request to its B response
        w_out = Signal(range(2 * self.depth + 2))
        b_fire = a.bvalid & a.bready
        new_w = self.req.valid & is_w
        m.d.sync += w_out.eq(w_out + new_w - b_fire)
        m.d.comb += a.bready.eq(1)
        with m.If(b_fire & (a.bresp != RESP_OKAY)):
            m.d.sync += fault.eq(1)

        # ---- address channels ---------------------------------------------------------------
        arq = FallThroughQueue(m, "ar", self.depth, self.aw, self.req.valid & ~is_w, addr, hold=w_out != 0)
        awq = FallThroughQueue(m, "aw", self.depth, self.aw, new_w, addr, hold=Const(0))
        for ch, q in (("ar", arq), ("aw", awq)):
            m.d.comb += [getattr(a, f"{ch}valid").eq(q.valid), getattr(a, f"{ch}addr").eq(q.addr),
                         getattr(a, f"{ch}len").eq(nb - 1), getattr(a, f"{ch}size").eq(self.size),
                         getattr(a, f"{ch}burst").eq(BURST_INCR), getattr(a, f"{ch}id").eq(0),
                         getattr(a, f"{ch}cache").eq(0b0011),  # normal non-cacheable bufferable
                         getattr(a, f"{ch}prot").eq(0b010),  # unprivileged, non-secure, data
                         q.ready.eq(getattr(a, f"{ch}ready"))]
            with m.If(q.overflow):
                m.d.sync += fault.eq(1)

        # ---- write data: a page buffer per queued write, streamed out a beat at a time -------
        wq = [Signal(pbits, name=f"wq{i}") for i in range(self.depth)]
        wcnt = Signal(range(self.depth + 1))
        wsr = Signal(pbits)
        wbeat = Signal(range(nb + 1))
        wbusy = Signal()
        m.d.comb += [a.wvalid.eq(wbusy), a.wdata.eq(wsr[:dw]), a.wstrb.eq(-1), a.wlast.eq(wbeat == nb - 1)]
        w_fire = a.wvalid & a.wready
        load = ~wbusy & (wcnt != 0)
        with m.If(w_fire):
            m.d.sync += [wsr.eq(wsr >> dw), wbeat.eq(wbeat + 1)]
            with m.If(wbeat == nb - 1):
                m.d.sync += [wbusy.eq(0), wbeat.eq(0)]
        with m.If(load):
            m.d.sync += [wsr.eq(wq[0]), wbusy.eq(1), wbeat.eq(0)]
            for i in range(self.depth - 1):
                m.d.sync += wq[i].eq(wq[i + 1])
        with m.If(new_w):
            for i in range(self.depth):
                with m.If(wcnt - load == i):
                    m.d.sync += wq[i].eq(data)
        w_over = new_w & (wcnt == self.depth) & ~load
        with m.If(w_over):
            m.d.sync += fault.eq(1)
        with m.Else():
            m.d.sync += wcnt.eq(wcnt + new_w - load)

        # ---- read data: assemble a page, little-endian (first beat = lowest bytes) -----------
        rbuf = Signal(pbits)
        rbeat = Signal(range(nb + 1))
        m.d.comb += a.rready.eq(1)
        with m.If(self.rdata.valid & self.rdata.ready):
            m.d.sync += self.rdata.valid.eq(0)
        with m.If(a.rvalid):
            word = Cat(rbuf[dw:], a.rdata) if nb > 1 else a.rdata
            m.d.sync += [rbuf.eq(word), rbeat.eq(rbeat + 1)]
            with m.If(a.rresp != RESP_OKAY):
                m.d.sync += fault.eq(1)
            with m.If(rbeat == nb - 1):
                m.d.sync += [self.rdata.payload.eq(word), self.rdata.valid.eq(1), rbeat.eq(0)]
                with m.If(~a.rlast):
                    m.d.sync += fault.eq(1)
            with m.Elif(a.rlast):
                m.d.sync += fault.eq(1)
        return m


class OmapUnitAxi(wiring.Component):
    """The oblivious map unit with an AXI4 master to host memory (the deployable top).

    Parameters
    ----------
    cfg : OmapConfig
        The unit's parameters; ``cfg.timing.host_bytes_per_cycle`` must not exceed the AXI
        data width in bytes (the schedule's link rate) and every page must be one legal burst
        (see :func:`check_axi_pages`).
    keys : OmapKeys or None
        ``None`` (default): keys are provisioned through the ``key`` port after reset, the
        bitstream holds none. ``OmapKeys``: elaboration-time constants (evaluation only).
    data_width : int
        AXI data width in bits (64 or 512 typical).
    addr_width : int
        AXI address width.
    hbm_axi : iterable of str
        HBM-side regions behind their own AXI4 master (default all of
        :data:`~celosia.omap.rtl.unit.HBM_AXI_REGIONS`: ports ``hbm_index``, ``hbm_values``,
        ``hbm_queues``, ``hbm_versions`` and ``hbm_loads``); the others stay on chip (simulation
        sizes only).

    Ports
    -----
    cmd, resp, key, keys_loaded, initialised, halted, late, dbg_sel, dbg_addr, dbg_data
        As :class:`~celosia.omap.rtl.unit.OmapUnit` (``key``/``keys_loaded`` only with ``keys=None``).
    host : Out(axi4_signature)
        AXI4 master to host memory: one INCR burst of one page per transaction.
    hbm_index, hbm_values, hbm_queues, hbm_versions, hbm_loads : Out(axi4_signature)
        AXI4 masters to the index region (one burst per bucket,
        :class:`~celosia.omap.rtl.index.IndexAxi`), the value store and the eviction queues (the
        HBM bins' and the pages' blocks: one burst per block, one beat per append,
        :class:`~celosia.omap.rtl.blocks.BlockAxiSplit`), the page versions and the
        bin loads and fills (one beat per access, :class:`~celosia.omap.rtl.words.WordAxi`), each
        for its own HBM pseudo-channel.
    host_fault : Out(1)
        Sticky AXI fault (see :class:`Axi4PageMaster`).
    """

    def __init__(self, cfg: OmapConfig, keys: OmapKeys | None = None, *, data_width: int = 512,
                 addr_width: int = 64, hbm_axi=HBM_AXI_REGIONS):
        self.beats = check_axi_pages(cfg, data_width, addr_width)
        self.cfg, self.keys, self.data_width, self.addr_width = cfg, keys, data_width, addr_width
        self.unit = OmapUnit(cfg, keys, hbm_axi=hbm_axi)
        members = {}
        for name, member in self.unit.signature.members.items():
            if name not in ("host_req", "host_rdata"):
                members[name] = member
        members["host"] = Out(axi4_signature(addr_width, data_width))
        members["host_fault"] = Out(1)
        super().__init__(members)

    def fields(self):
        """Bit layout of the dumped regions (as :meth:`OmapUnit.fields`)."""
        return self.unit.fields()

    def elaborate(self, platform):
        m = Module()
        m.submodules.unit = unit = self.unit
        m.submodules.axi = axi = Axi4PageMaster(self.cfg.page_bytes, self.data_width, self.addr_width)
        wiring.connect(m, unit.host_req, axi.req)
        wiring.connect(m, axi.rdata, unit.host_rdata)
        wiring.connect(m, axi.axi, wiring.flipped(self.host))
        m.d.comb += self.host_fault.eq(axi.fault)
        for name, member in self.signature.members.items():  # everything else passes through
            if name in ("host", "host_fault"):
                continue
            ours, theirs = getattr(self, name), getattr(unit, name)
            if not member.is_port:  # a stream
                if member.flow == wiring.In:
                    wiring.connect(m, wiring.flipped(ours), theirs)
                else:
                    wiring.connect(m, theirs, wiring.flipped(ours))
            elif member.flow == wiring.In:
                m.d.comb += theirs.eq(ours)
            else:
                m.d.comb += ours.eq(theirs)
        return m
