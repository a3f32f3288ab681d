"""The key-index region of the oblivious map unit behind a bucket port: on chip or AXI4.

The index is only ever moved a whole bucket at a time (read at the start of a command, written
back at its end), so the unit reaches it through a *bucket port* with two implementations of
one interface:

:class:`IndexOnChip`
    a ``lib.memory`` array (simulation sizes; one entry per cycle each way).
:class:`IndexAxi`
    an AXI4 master: a bucket is one INCR burst of ``bucket_width`` beats, one entry per beat
    (the data width is the entry slot: the entry's bits rounded up to a power of two, at least
    64), so the region can sit on its own HBM pseudo-channel.

Interface (both): a ``fetch`` strobe with ``bucket`` starts a read; the entries come back in
order on ``ent`` (always accepted) as they arrive, so the unit scans them while the burst is
still streaming. A ``wb`` strobe with ``wb_bucket`` and ``wb_data`` (the whole bucket, entry
``k`` in bits ``[k*entry_w, (k+1)*entry_w)``) snapshots the bucket and writes it back in the
background; a fetch may start right away (the unit never fetches the bucket it is writing
back: it keeps that one and reuses it). ``fault`` is sticky (a write-back started while the
previous one is still streaming, or an AXI error response).

HBM is unobservable in the threat model, so nothing here needs a fixed schedule; the unit's
schedule only needs the fetch to finish in its window (``hbm_latency`` to the first entry, then
one entry per cycle).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from celosia.omap.rtl.axi_bus import BURST_INCR, RESP_OKAY, axi4_signature

from celosia.errors import HardwareGenerationError

__all__ = ["IndexAxi", "IndexOnChip", "entry_slot_bits"]


def entry_slot_bits(entry_w: int) -> int:
    """Bits an index entry occupies in HBM: ``entry_w`` rounded up to a power of two, >= 64."""
    return max(64, 1 << (entry_w - 1).bit_length())


def _members(entry_w: int, width: int, buckets: int):
    bb = max(1, (buckets - 1).bit_length())
    return {"fetch": In(1), "bucket": In(bb), "wb": In(1), "wb_bucket": In(bb), "wb_data": In(width * entry_w),
            "ent": Out(stream.Signature(entry_w)), "fault": Out(1), "dbg_addr": In(32), "dbg_data": Out(entry_w)}


class IndexOnChip(wiring.Component):
    """The index region as an on-chip memory behind the bucket port (see the module docstring).

    Parameters
    ----------
    entry_w : int
        Bits per entry.
    width : int
        Entries per bucket.
    buckets : int
        Buckets.
    """

    def __init__(self, entry_w: int, width: int, buckets: int):
        self.entry_w, self.width, self.buckets = entry_w, width, buckets
        super().__init__(_members(entry_w, width, buckets))

    def elaborate(self, platform):
        m = Module()
        W, ew = self.width, self.entry_w
        m.submodules.mem = mem = Memory(shape=ew, depth=self.buckets * W, init=[])
        rp, wp, dp = mem.read_port(domain="comb"), mem.write_port(), mem.read_port(domain="comb")
        m.d.comb += [dp.addr.eq(self.dbg_addr), self.dbg_data.eq(dp.data)]
        # fetch: one entry per cycle
        busy, i, b = Signal(), Signal(range(W + 1)), Signal.like(self.bucket)
        with m.If(self.fetch):
            m.d.sync += [busy.eq(1), i.eq(0), b.eq(self.bucket)]
        with m.Elif(busy):
            m.d.comb += [rp.addr.eq(b * W + i), self.ent.valid.eq(1), self.ent.payload.eq(rp.data)]
            m.d.sync += i.eq(i + 1)
            with m.If(i == W - 1):
                m.d.sync += busy.eq(0)
        # write-back from a snapshot
        wbuf = Signal(W * ew)
        wbusy, j, wb_b = Signal(), Signal(range(W + 1)), Signal.like(self.bucket)
        with m.If(self.wb):
            m.d.sync += [wbuf.eq(self.wb_data), wbusy.eq(1), j.eq(0), wb_b.eq(self.wb_bucket)]
            with m.If(wbusy):
                m.d.sync += self.fault.eq(1)
        with m.Elif(wbusy):
            m.d.comb += [wp.en.eq(1), wp.addr.eq(wb_b * W + j), wp.data.eq(wbuf.word_select(j, ew))]
            m.d.sync += j.eq(j + 1)
            with m.If(j == W - 1):
                m.d.sync += wbusy.eq(0)
        return m


class IndexAxi(wiring.Component):
    """The index region behind an AXI4 master: one burst per bucket (see the module docstring).

    Parameters
    ----------
    entry_w : int
        Bits per entry; the AXI data width is :func:`entry_slot_bits` of it.
    width : int
        Entries per bucket (beats per burst, at most 256).
    buckets : int
        Buckets; bucket ``b`` is at byte ``base + b * width * slot_bytes``.
    addr_width : int
        AXI address width.
    base : int
        Byte address of bucket 0 on the port.
    """

    def __init__(self, entry_w: int, width: int, buckets: int, addr_width: int = 64, base: int = 0):
        self.entry_w, self.width, self.buckets, self.base = entry_w, width, buckets, base
        self.data_width = entry_slot_bits(entry_w)
        self.slot_bytes = self.data_width // 8
        self.bucket_bytes = width * self.slot_bytes
        if width > 256:
            raise HardwareGenerationError(f"bucket_width={width}: a bucket is one AXI4 burst of at most 256 beats")
        if self.data_width > 1024:
            raise HardwareGenerationError(f"index entry of {entry_w} bits needs a {self.data_width}-bit AXI port "
                                          f"(AXI4 allows 1024)", hint="use narrower keys or fewer bins")
        if 4096 % self.bucket_bytes or base % self.bucket_bytes:
            raise HardwareGenerationError(
                f"index buckets of {self.bucket_bytes} bytes ({width} x {self.slot_bytes}) at base {base:#x}: a "
                f"bucket burst would cross a 4 KiB boundary",
                hint="use a power-of-two bucket_width (at most 4096 / slot bytes) and a base aligned to the bucket")
        if base + buckets * self.bucket_bytes > 1 << addr_width:
            raise HardwareGenerationError(f"index region ends beyond a {addr_width}-bit address")
        self.addr_width = addr_width
        super().__init__({**_members(entry_w, width, buckets), "axi": Out(axi4_signature(addr_width, self.data_width))})

    @property
    def region_bytes(self) -> int:
        """Bytes of the index region on the port."""
        return self.buckets * self.bucket_bytes

    def elaborate(self, platform):
        m = Module()
        a, W, ew, dw = self.axi, self.width, self.entry_w, self.data_width
        size = (self.slot_bytes).bit_length() - 1
        fault = Signal()
        m.d.comb += [self.fault.eq(fault), self.dbg_data.eq(0)]  # the region lives in HBM, not here
        for ch in ("ar", "aw"):
            m.d.comb += [getattr(a, f"{ch}len").eq(W - 1), getattr(a, f"{ch}size").eq(size),
                         getattr(a, f"{ch}burst").eq(BURST_INCR), getattr(a, f"{ch}cache").eq(0b0011),
                         getattr(a, f"{ch}prot").eq(0b010)]

        def addr(bucket):
            return self.base + bucket * self.bucket_bytes

        # writes in flight (request to B): a fetch waits while an older write-back is unanswered,
        # the last one never aliases the fetch (the unit reuses that bucket instead)
        w_out = Signal(range(4))
        b_fire = a.bvalid & a.bready
        m.d.comb += a.bready.eq(1)
        m.d.sync += w_out.eq(w_out + self.wb - b_fire)
        with m.If(b_fire & (a.bresp != RESP_OKAY)):
            m.d.sync += fault.eq(1)

        # ---- fetch: AR, then the entries as the R beats arrive ----------------------------------
        ar_pend = Signal()
        m.d.comb += [a.arvalid.eq(ar_pend & (w_out < 2)), a.rready.eq(1)]
        with m.If(self.fetch):
            m.d.sync += [ar_pend.eq(1), a.araddr.eq(addr(self.bucket))]
        with m.Elif(a.arvalid & a.arready):
            m.d.sync += ar_pend.eq(0)
        rbeat = Signal(range(W + 1))
        m.d.comb += [self.ent.valid.eq(a.rvalid), self.ent.payload.eq(a.rdata[:ew])]
        with m.If(a.rvalid):
            m.d.sync += rbeat.eq(rbeat + 1)
            with m.If((a.rresp != RESP_OKAY) | (a.rlast != (rbeat == W - 1))):
                m.d.sync += fault.eq(1)
            with m.If(rbeat == W - 1):
                m.d.sync += rbeat.eq(0)

        # ---- write-back: AW and W from a snapshot of the bucket ---------------------------------
        aw_pend = Signal()
        wbuf = Signal(W * ew)
        wbusy, j = Signal(), Signal(range(W + 1))
        m.d.comb += [a.awvalid.eq(aw_pend), a.wvalid.eq(wbusy), a.wstrb.eq(-1), a.wlast.eq(j == W - 1),
                     a.wdata.eq(Cat(wbuf.word_select(j, ew), Const(0, dw - ew)) if dw > ew
                                else wbuf.word_select(j, ew))]
        with m.If(a.awvalid & a.awready):
            m.d.sync += aw_pend.eq(0)
        with m.If(a.wvalid & a.wready):
            m.d.sync += j.eq(j + 1)
            with m.If(j == W - 1):
                m.d.sync += wbusy.eq(0)
        with m.If(self.wb):
            m.d.sync += [wbuf.eq(self.wb_data), wbusy.eq(1), j.eq(0), aw_pend.eq(1),
                         a.awaddr.eq(addr(self.wb_bucket))]
            with m.If(wbusy | aw_pend):
                m.d.sync += fault.eq(1)
        return m
