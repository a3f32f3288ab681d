# amaranth: UnusedElaboratable=no
# (the sub-ports of BlockAxiSplit are built here; an unused BlockAxiSplit is reported where it is built)
"""The bin-block region of the oblivious map unit behind a block port: on chip or AXI4.

Every bin ``b`` in ``[0, bins)`` owns a block of ``q`` slots in HBM (a slot is ``slot_w`` bits,
valid | key | value, opaque here): the whole value store of an HBM bin, the eviction queue of a
host page. A command fetches the blocks of its two bins (two fetches, in order), edits them on
chip and writes both back whole; it may also append one slot to a third bin's block (a put).
Initialisation appends single slots and fetches and writes back one block at a time. The unit
reaches the region through a *block port* with three implementations of one interface:

:class:`BlockOnChip`
    a ``lib.memory`` array (simulation sizes; one slot per cycle each way).
:class:`BlockAxi`
    an AXI4 master: a block is one INCR burst of ``q`` beats, one slot per beat (the data width
    is the slot rounded up to a power of two, at least 64), a put one single-beat burst, so the
    region can sit on its own HBM pseudo-channel.
:class:`BlockAxiSplit`
    two :class:`BlockAxi` masters, one for the HBM bins' blocks (the value store) and one for
    the host pages' (the eviction queues): two HBM regions, each on its own pseudo-channel.

Interface (all three):

``fetch``, ``fetch_bin``
    a one-cycle strobe requests the whole block of ``fetch_bin``. At most two fetches may be
    outstanding (requested and not fully delivered); they are served in request order.
``ent`` (out stream, always accepted: ``ready`` is ignored)
    the slots of the fetched blocks, ``q`` beats per fetch, slot 0 first, fetch after fetch.
``wb``, ``wb_bin0``, ``wb_bin1``, ``wb_data0``, ``wb_data1``
    a strobe with bit ``i`` of the mask ``wb`` set snapshots block ``i`` (its bin and its
    data, slot ``k`` in bits ``[k*slot_w, (k+1)*slot_w)``) into buffer ``i`` and writes it back
    whole in the background; mask ``0b11`` writes both.
``put``, ``put_bin``, ``put_pos``, ``put_data``
    a strobe writes the single slot ``put_pos`` of ``put_bin``'s block from a snapshot.
``idle``
    no fetch outstanding and no write pending or unacknowledged (registered: it drops the cycle
    after a strobe).
``fault``
    sticky: a write into a buffer that is still busy (the request is dropped), a third
    outstanding fetch (dropped), an AXI error response, an RLAST off the last beat of a block.
``dbg_addr``, ``dbg_data``
    read-only view of slot ``bin * q + pos`` for the testbench (:class:`BlockOnChip` only).

Ordering: a fetch observes every write (wb or put) strobed before it or in the same cycle; it
may or may not observe a later one. The port is conservative about it: a fetch starts (its AR
is shown, or its first slot read) only while no write at all is pending, so it waits for the
write-backs and puts ahead of it to complete (the B response, on AXI). Writes among themselves
are not ordered (the unit never has two in flight to the same slot). A write buffer is free
again once its write is issued (every beat handed over), the cycle after; the unit sees that
through ``idle``, or through a later fetch's last slot (which waited for every earlier write;
:class:`BlockAxiSplit` has a set of buffers per sub-port, and there a fetch waits only for the
earlier writes of its own sub-port).

HBM is unobservable in the threat model, so nothing here needs a fixed schedule; the unit's
schedule only needs the round trips to fit in their windows.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from celosia.omap.rtl.axi_bus import (
    BURST_INCR,
    RESP_OKAY,
    FallThroughQueue,
    axi4_signature,
)
from celosia.omap.rtl.index import entry_slot_bits

from celosia.errors import HardwareGenerationError

__all__ = ["BlockAxi", "BlockAxiSplit", "BlockOnChip"]

#: fetches that may be outstanding at once (the two blocks of a command)
FETCH_DEPTH = 2


def _members(slot_w: int, q: int, bins: int):
    bb = max(1, (bins - 1).bit_length())
    return {"fetch": In(1), "fetch_bin": In(bb), "ent": Out(stream.Signature(slot_w)),
            "wb": In(2), "wb_bin0": In(bb), "wb_bin1": In(bb), "wb_data0": In(q * slot_w),
            "wb_data1": In(q * slot_w),
            "put": In(1), "put_bin": In(bb), "put_pos": In(range(q)), "put_data": In(slot_w),
            "idle": Out(1), "fault": Out(1), "dbg_addr": In(32), "dbg_data": Out(slot_w)}


def _check(q: int, bins: int):
    if not 1 <= q <= 256:
        raise HardwareGenerationError(f"bin_block={q}: a block is one AXI4 burst of 1 to 256 slots",
                                      hint="use a bin_block between 1 and 256")
    if bins < 1:
        raise HardwareGenerationError(f"bins={bins}: the block region needs at least one bin")


class _Buffers:
    """The write snapshots both ports share: block buffers 0 and 1 and the put buffer, each with
    a ``busy`` flag (set by the strobe, cleared by the port once the write is issued). A strobe
    into a busy buffer is dropped and raises ``fault``; ``accepted`` counts the writes taken in
    this cycle, ``strobe`` is any write request in this cycle."""

    def __init__(self, m: Module, port, fault: Signal):
        self.busy = [Signal(name=f"wb{i}_busy") for i in range(2)] + [Signal(name="put_busy")]
        self.bin = [Signal.like(port.wb_bin0, name=f"wb{i}_bin") for i in range(2)] + \
            [Signal.like(port.put_bin, name="put_bin_q")]
        self.data = [Signal.like(port.wb_data0, name=f"wb{i}_data") for i in range(2)]
        self.pos = Signal.like(port.put_pos, name="put_pos_q")
        self.pdata = Signal.like(port.put_data, name="put_data_q")
        reqs = [(port.wb[0], [self.bin[0].eq(port.wb_bin0), self.data[0].eq(port.wb_data0)]),
                (port.wb[1], [self.bin[1].eq(port.wb_bin1), self.data[1].eq(port.wb_data1)]),
                (port.put, [self.bin[2].eq(port.put_bin), self.pos.eq(port.put_pos),
                            self.pdata.eq(port.put_data)])]
        self.accepted = sum((req & ~busy for (req, _), busy in zip(reqs, self.busy)), start=Const(0, 2))
        self.strobe = port.wb.any() | port.put
        for (req, snapshot), busy in zip(reqs, self.busy):
            with m.If(req):
                with m.If(busy):
                    m.d.sync += fault.eq(1)
                with m.Else():
                    m.d.sync += [busy.eq(1), *snapshot]

    @property
    def pending(self):
        return self.busy[0] | self.busy[1] | self.busy[2]


def _fetch_count(m: Module, port, done, fault: Signal):
    """Fetches outstanding, from the strobe to the last slot delivered (``done``, that cycle
    included); returns the count and whether this cycle's strobe is taken (not a third)."""
    n = Signal(range(FETCH_DEPTH + 1), name="fetches")
    take = port.fetch & (n != FETCH_DEPTH)
    m.d.sync += n.eq(n + take - done)
    with m.If(port.fetch & ~take):
        m.d.sync += fault.eq(1)
    return n, take


class BlockOnChip(wiring.Component):
    """The bin-block region as an on-chip memory behind the block port (see the module
    docstring).

    Slot ``pos`` of bin ``b`` is memory word ``b * q + pos`` (zero after reset). A fetch
    streams one slot per cycle, from the cycle after its strobe at the earliest; a write-back
    writes one slot per cycle and a put takes one cycle (puts first, then buffer 0, then 1, on
    the one write port).

    Parameters
    ----------
    slot_w : int
        Bits per slot.
    q : int
        Slots per block (1 to 256).
    bins : int
        Bins.
    """

    def __init__(self, slot_w: int, q: int, bins: int):
        _check(q, bins)
        self.slot_w, self.q, self.bins = slot_w, q, bins
        super().__init__(_members(slot_w, q, bins))

    def elaborate(self, platform):
        m = Module()
        q, sw = self.q, self.slot_w
        fault = Signal()
        m.d.comb += self.fault.eq(fault)
        m.submodules.mem = mem = Memory(shape=sw, depth=self.bins * q, init=[])
        rp, wp, dp = mem.read_port(domain="comb"), mem.write_port(), mem.read_port(domain="comb")
        m.d.comb += [dp.addr.eq(self.dbg_addr), self.dbg_data.eq(dp.data)]
        bufs = _Buffers(m, self, fault)

        # ---- fetch: a queue of bins; the head streams one slot per cycle ------------------------
        i = Signal(range(q), name="slot")
        last = i == q - 1
        done = Signal()
        n, take = _fetch_count(m, self, done, fault)
        # the strobe is registered, so no combinational path runs from fetch to ent; a block
        # starts only while no write is pending or strobed (the ordering rule) and, once
        # started, streams to its end
        push, push_bin = Signal(), Signal.like(self.fetch_bin)
        m.d.sync += [push.eq(take), push_bin.eq(self.fetch_bin)]
        fq = FallThroughQueue(m, "fetch", FETCH_DEPTH, len(self.fetch_bin), push, push_bin,
                              hold=(i == 0) & (bufs.pending | bufs.strobe))
        m.d.comb += [fq.ready.eq(last), done.eq(fq.fire), rp.addr.eq(fq.addr * q + i),
                     self.ent.valid.eq(fq.valid), self.ent.payload.eq(rp.data)]
        with m.If(fq.valid):
            m.d.sync += i.eq(Mux(last, 0, i + 1))

        # ---- writes: one slot per cycle on the write port ---------------------------------------
        j = [Signal(range(q), name=f"wb{k}_slot") for k in range(2)]
        with m.If(bufs.busy[2]):
            m.d.comb += [wp.en.eq(1), wp.addr.eq(bufs.bin[2] * q + bufs.pos), wp.data.eq(bufs.pdata)]
            m.d.sync += bufs.busy[2].eq(0)
        for k in range(2):
            with m.Elif(bufs.busy[k]):
                m.d.comb += [wp.en.eq(1), wp.addr.eq(bufs.bin[k] * q + j[k]),
                             wp.data.eq(bufs.data[k].word_select(j[k], sw))]
                m.d.sync += j[k].eq(Mux(j[k] == q - 1, 0, j[k] + 1))
                with m.If(j[k] == q - 1):
                    m.d.sync += bufs.busy[k].eq(0)
        m.d.comb += self.idle.eq((n == 0) & ~bufs.pending)
        return m


class BlockAxi(wiring.Component):
    """The bin-block region behind an AXI4 master: one burst per block (see the module
    docstring).

    Slot ``k`` of bin ``b`` is at byte ``base + b * block_stride + k * slot_bytes``. Fetches
    are AR bursts of ``q`` beats (``len = q - 1``), kept in request order and shown only while
    no write is requested and unacknowledged (the ordering rule: AXI orders nothing between
    the read and write channels); the R beats go straight to ``ent``. Writes leave one at a time
    (block buffer 0, then 1, then the put), AW and W shown together: a block is an AW burst of
    ``q`` beats, a put one beat at the slot's address. The slot sits in the low bits of a beat,
    the rest zero, all strobes set. BREADY and RREADY are always high. Besides the faults of
    the module docstring, more than 60 writes unacknowledged raise ``fault``.

    Parameters
    ----------
    slot_w : int
        Bits per slot; the AXI data width is :func:`~celosia.omap.rtl.index.entry_slot_bits` of
        it (a power of two, at least 64, at most 1024).
    q : int
        Slots per block (beats per burst, 1 to 256).
    bins : int
        Bins.
    addr_width : int
        AXI address width.
    base : int
        Byte address of bin 0's block on the port (aligned to ``block_stride``).
    """

    def __init__(self, slot_w: int, q: int, bins: int, addr_width: int = 64, base: int = 0):
        _check(q, bins)
        self.slot_w, self.q, self.bins, self.addr_width, self.base = slot_w, q, bins, addr_width, base
        if self.data_width > 1024:
            raise HardwareGenerationError(f"bin slot of {slot_w} bits needs a {self.data_width}-bit AXI port "
                                          f"(AXI4 allows 1024)", hint="use narrower keys or values")
        if self.block_stride > 4096:
            raise HardwareGenerationError(
                f"bin blocks of {q} x {self.slot_bytes} bytes take {self.block_stride} bytes: a block burst "
                f"would cross a 4 KiB boundary",
                hint=f"use a bin_block of at most {4096 // self.slot_bytes} slots of this width")
        if base % self.block_stride:
            raise HardwareGenerationError(
                f"bin block region base {base:#x} is not aligned to the {self.block_stride}-byte block stride",
                hint=f"place the region at a multiple of {self.block_stride:#x}")
        if base + self.region_bytes > 1 << addr_width:
            raise HardwareGenerationError(
                f"bin block region {base:#x} + {self.region_bytes:#x} ends beyond a {addr_width}-bit address",
                hint="use fewer bins or a wider address")
        super().__init__({**_members(slot_w, q, bins), "axi": Out(axi4_signature(addr_width, self.data_width))})

    @property
    def data_width(self) -> int:
        """AXI data width: bits of a slot in HBM."""
        return entry_slot_bits(self.slot_w)

    @property
    def slot_bytes(self) -> int:
        """Bytes of a slot in HBM (one beat)."""
        return self.data_width // 8

    @property
    def block_stride(self) -> int:
        """Bytes between the blocks of consecutive bins: ``q * slot_bytes`` rounded up to a power
        of two, so no block burst crosses a 4 KiB boundary."""
        return 1 << (self.q * self.slot_bytes - 1).bit_length()

    @property
    def region_bytes(self) -> int:
        """Bytes of the region on the port."""
        return self.bins * self.block_stride

    def elaborate(self, platform):
        m = Module()
        a, q, sw, dw = self.axi, self.q, self.slot_w, self.data_width
        fault = Signal()
        m.d.comb += [self.fault.eq(fault), self.dbg_data.eq(0)]  # the region lives in HBM, not here
        size = self.slot_bytes.bit_length() - 1
        for ch in ("ar", "aw"):
            m.d.comb += [getattr(a, f"{ch}size").eq(size), getattr(a, f"{ch}burst").eq(BURST_INCR),
                         getattr(a, f"{ch}cache").eq(0b0011), getattr(a, f"{ch}prot").eq(0b010)]

        def block_addr(b):
            return self.base + b * self.block_stride

        bufs = _Buffers(m, self, fault)

        # writes requested and not yet acknowledged (strobe to B); a slave holding back B for
        # dozens of writes would wrap the count and break the ordering rule: fault instead
        w_out = Signal(6)
        b_fire = a.bvalid & a.bready
        w_next = w_out + bufs.accepted - b_fire
        m.d.comb += a.bready.eq(1)
        m.d.sync += w_out.eq(w_next)
        with m.If((b_fire & (a.bresp != RESP_OKAY)) | (w_next > 60)):
            m.d.sync += fault.eq(1)

        # ---- fetch: AR in request order, the R beats straight to ent ----------------------------
        rbeat = Signal(range(q), name="rbeat")
        done = a.rvalid & a.rready & (rbeat == q - 1)
        n, take = _fetch_count(m, self, done, fault)
        # hold a new AR while a write is unacknowledged or strobed; an AR already shown stays
        # (AXI: VALID stays up until READY), it belongs to a fetch older than that write
        ar_shown = Signal()
        arq = FallThroughQueue(m, "blk_ar", FETCH_DEPTH, self.addr_width, take, block_addr(self.fetch_bin),
                               hold=((w_out != 0) | bufs.strobe) & ~ar_shown)
        m.d.comb += [a.arvalid.eq(arq.valid), a.araddr.eq(arq.addr), a.arlen.eq(q - 1), arq.ready.eq(a.arready)]
        m.d.sync += ar_shown.eq(a.arvalid & ~a.arready)
        m.d.comb += [a.rready.eq(1), self.ent.valid.eq(a.rvalid), self.ent.payload.eq(a.rdata[:sw])]
        with m.If(a.rvalid):
            m.d.sync += rbeat.eq(Mux(rbeat == q - 1, 0, rbeat + 1))
            with m.If((a.rresp != RESP_OKAY) | (a.rlast != (rbeat == q - 1))):
                m.d.sync += fault.eq(1)

        # ---- writes: one job at a time (block 0, block 1, put), AW and W together -------------
        # AXI4 W beats follow the AW order, so both channels serve the same job; W is shown
        # with AW, not after it, as a slave may wait for WVALID before raising AWREADY
        active, job = Signal(), Signal(2)  # job locked once shown, until AW and W are through
        aw_sent, w_sent, j = Signal(), Signal(), Signal(range(q), name="wbeat")
        pick = Mux(bufs.busy[0], 0, Mux(bufs.busy[1], 1, 2))
        cur = Mux(active, job, pick)
        is_put = cur == 2
        last = Mux(is_put, 1, j == q - 1)
        slot = Mux(is_put, bufs.pdata, Mux(cur == 0, bufs.data[0], bufs.data[1]).word_select(j, sw))
        showing = bufs.pending  # the locked job is still busy
        cur_bin = Mux(cur == 0, bufs.bin[0], Mux(cur == 1, bufs.bin[1], bufs.bin[2]))
        m.d.comb += [a.awvalid.eq(showing & ~aw_sent), a.wvalid.eq(showing & ~w_sent),
                     a.awaddr.eq(block_addr(cur_bin) + Mux(is_put, bufs.pos * self.slot_bytes, 0)),
                     a.awlen.eq(Mux(is_put, 0, q - 1)),
                     a.wdata.eq(Cat(slot, Const(0, dw - sw)) if dw > sw else slot),
                     a.wstrb.eq(-1), a.wlast.eq(last)]
        aw_fire, w_fire = a.awvalid & a.awready, a.wvalid & a.wready
        finish = showing & (aw_sent | aw_fire) & (w_sent | (w_fire & last))
        with m.If(finish):
            m.d.sync += [active.eq(0), aw_sent.eq(0), w_sent.eq(0), j.eq(0)]
            for k in range(3):
                with m.If(cur == k):
                    m.d.sync += bufs.busy[k].eq(0)
        with m.Elif(showing):
            m.d.sync += [active.eq(1), job.eq(cur)]
            with m.If(aw_fire):
                m.d.sync += aw_sent.eq(1)
            with m.If(w_fire):
                with m.If(last):
                    m.d.sync += w_sent.eq(1)
                with m.Else():
                    m.d.sync += j.eq(j + 1)
        m.d.comb += self.idle.eq((n == 0) & (w_out == 0) & ~bufs.pending)
        return m


class BlockAxiSplit(wiring.Component):
    """The bin-block region behind two AXI4 masters: the HBM bins' blocks on one, the host
    pages' on the other (see the module docstring; the interface is the same as the other
    ports').

    Bins ``[0, split)`` are the HBM bins, whose block is the bin's value store; bins
    ``[split, bins)`` are the host pages, whose block is the page's eviction queue. These are
    two HBM regions, and each gets its own AXI4 master so it can sit on its own pseudo-channel:
    two :class:`BlockAxi` sub-ports, ``values`` for bin ``b < split`` (local bin ``b``, on
    ``axi_values``) and ``queues`` for bin ``b >= split`` (local bin ``b - split``, on
    ``axi_queues``). With ``split = 0`` there are no HBM bins: only ``queues`` and
    ``axi_queues`` exist.

    Writes go straight to the sub-port of their bin: a put with its local bin, write-back
    block ``j`` into buffer ``j`` of the sub-port of ``wb_bin{j}`` (both into one sub-port if
    both bins are there). Each sub-port has its own buffers, and its own ``busy`` faults.

    Fetches keep the request order on ``ent`` across the two sub-ports. A fetch goes to its
    sub-port at once if no fetch is outstanding or the outstanding one targets the same
    sub-port (which keeps the two in order). Otherwise it waits here, in one held-fetch
    register, and goes to its sub-port the cycle after the other sub-port has delivered the
    last slot of the fetch ahead of it (registered, so no path runs from one master's RVALID
    to the other's ARVALID). So the two sub-ports never deliver at the same time, and ``ent``
    is whichever one is delivering. The cost: when a command's two blocks are in different
    regions, the second block's burst starts only after the first one is in, one HBM round trip
    plus ``q`` beats (and a cycle) after the first; the unit's schedule budgets
    ``2 x (latency + q)`` for the two blocks, so it fits. At most two fetches may be outstanding,
    a held one included; a third raises ``fault`` and is dropped.

    The ordering rule holds per sub-port, and a bin always lives in the same sub-port. A held
    fetch also sees every write strobed before its own (original) strobe: those writes reached
    its sub-port then, before the fetch does, and the sub-port holds a fetch behind its
    unacknowledged writes. It waits only for its own sub-port's writes, though: a fetch's last
    slot says nothing about the other sub-port's write buffers (the unit learns those are free
    through ``idle``, or a later fetch in that sub-port).

    ``idle`` is: no fetch held or outstanding, both sub-ports idle. ``fault`` is the sub-ports'
    faults, a third outstanding fetch, a slot with no fetch outstanding or both sub-ports
    delivering at once (an AXI slave answering reads it was not asked for). ``dbg_data`` is
    zero.

    Parameters
    ----------
    slot_w : int
        Bits per slot (the data width of both masters, as in :class:`BlockAxi`).
    q : int
        Slots per block (1 to 256).
    bins : int
        Bins: HBM bins and host pages.
    split : int
        HBM bins (``0 <= split < bins``): bins below it are the value store's, the rest the
        eviction queues'.
    addr_width : int
        AXI address width of both masters.
    values_base, queues_base : int
        Byte address of local bin 0's block on ``axi_values`` / ``axi_queues`` (each aligned to
        ``block_stride``).
    """

    def __init__(self, slot_w: int, q: int, bins: int, split: int, addr_width: int = 64,
                 values_base: int = 0, queues_base: int = 0):
        _check(q, bins)
        if not 0 <= split < bins:
            raise HardwareGenerationError(
                f"split={split} with bins={bins}: the HBM bins are [0, split) and the host pages "
                f"[split, bins), so the split must lie in [0, {bins - 1}]",
                hint="pass the number of HBM bins as split, and at least one host page")
        self.slot_w, self.q, self.bins, self.split, self.addr_width = slot_w, q, bins, split, addr_width
        self._subs = {}
        if split:
            self._subs["values"] = BlockAxi(slot_w, q, split, addr_width, values_base)
        self._subs["queues"] = BlockAxi(slot_w, q, bins - split, addr_width, queues_base)
        sig = axi4_signature(addr_width, self.data_width)
        super().__init__({**_members(slot_w, q, bins), **{f"axi_{name}": Out(sig) for name in self._subs}})

    @property
    def sub_ports(self) -> dict:
        """The sub-ports by name (``"values"`` only if ``split > 0``, ``"queues"``), in bin
        order; each master is the member ``axi_<name>``, its layout the sub-port's."""
        return dict(self._subs)

    @property
    def data_width(self) -> int:
        """AXI data width of both masters: bits of a slot in HBM."""
        return entry_slot_bits(self.slot_w)

    @property
    def slot_bytes(self) -> int:
        """Bytes of a slot in HBM (one beat)."""
        return self._subs["queues"].slot_bytes

    @property
    def block_stride(self) -> int:
        """Bytes between the blocks of consecutive bins, in either region."""
        return self._subs["queues"].block_stride

    @property
    def values_region_bytes(self) -> int:
        """Bytes of the value store on ``axi_values`` (0 without HBM bins)."""
        return self._subs["values"].region_bytes if self.split else 0

    @property
    def queues_region_bytes(self) -> int:
        """Bytes of the eviction queues on ``axi_queues``."""
        return self._subs["queues"].region_bytes

    def elaborate(self, platform):
        m = Module()
        fault = Signal()
        subs = []  # (sub-port, first global bin), in bin order
        for name, port in self._subs.items():
            m.submodules[name] = port
            wiring.connect(m, port.axi, wiring.flipped(getattr(self, f"axi_{name}")))
            subs.append((port, self.split if name == "queues" else 0))

        def side(b):  # index into subs of bin b's sub-port
            return b >= self.split if self.split else Const(0, 1)

        # ---- ent: whichever sub-port delivers; the slot count finds each fetch's last slot ----
        valid = [p.ent.valid for p, _ in subs]
        payload = subs[-1][0].ent.payload
        for p, _ in subs[:-1]:
            payload = Mux(p.ent.valid, p.ent.payload, payload)
        m.d.comb += [self.ent.valid.eq(Cat(*valid).any()), self.ent.payload.eq(payload), self.dbg_data.eq(0)]
        beat = Signal(range(self.q), name="beat")
        with m.If(self.ent.valid):
            m.d.sync += beat.eq(Mux(beat == self.q - 1, 0, beat + 1))
        done = self.ent.valid & (beat == self.q - 1)

        # ---- fetches: outstanding ones (held one included) and their sub-ports, oldest first --
        n, take = _fetch_count(m, self, done, fault)
        s0, s1 = Signal(name="fetch0_side"), Signal(name="fetch1_side")
        held, held_bin = Signal(), Signal.like(self.fetch_bin, name="held_bin")
        new_side = side(self.fetch_bin)
        with m.If(done):
            m.d.sync += s0.eq(s1)
        with m.If(take):
            with m.If((n == 0) | ((n == 1) & done)):
                m.d.sync += s0.eq(new_side)
            with m.Else():
                m.d.sync += s1.eq(new_side)
        # the held fetch (always the younger one) goes once it is the only one outstanding, the
        # cycle after the older one's last slot; or, if both are in one sub-port, at once (it
        # was held only because it came in the cycle its predecessor was released)
        release = held & ((n == 1) | (s0 == s1))
        now = take & ((n == 0) | ((n == 1) & ~held & (new_side == s0)))
        with m.If(release):
            m.d.sync += held.eq(0)
        with m.If(take & ~now):  # never over a held fetch that stays (n would be 2: no take)
            m.d.sync += [held.eq(1), held_bin.eq(self.fetch_bin)]
        fwd_bin = Mux(release, held_bin, self.fetch_bin)
        # a held fetch sees the writes strobed before its own strobe: they went to its sub-port
        # then (a bin's writes and fetches always go to the same one), before the fetch does,
        # and the sub-port starts a fetch only once its earlier writes are acknowledged
        both = valid[0] & valid[1] if len(valid) == 2 else Const(0, 1)
        with m.If((self.ent.valid & (n == 0)) | both):  # a slave answering reads it was not asked for
            m.d.sync += fault.eq(1)

        # ---- each sub-port gets the strobes of its bins, with local bin indices ---------------
        for k, (p, lo) in enumerate(subs):
            m.d.comb += [
                p.fetch.eq((release | now) & (side(fwd_bin) == k)), p.fetch_bin.eq(fwd_bin - lo),
                p.wb.eq(Cat(self.wb[0] & (side(self.wb_bin0) == k), self.wb[1] & (side(self.wb_bin1) == k))),
                p.wb_bin0.eq(self.wb_bin0 - lo), p.wb_bin1.eq(self.wb_bin1 - lo),
                p.wb_data0.eq(self.wb_data0), p.wb_data1.eq(self.wb_data1),
                p.put.eq(self.put & (side(self.put_bin) == k)), p.put_bin.eq(self.put_bin - lo),
                p.put_pos.eq(self.put_pos), p.put_data.eq(self.put_data), p.ent.ready.eq(1)]
        m.d.comb += [self.idle.eq((n == 0) & Cat(*(p.idle for p, _ in subs)).all()),
                     self.fault.eq(fault | Cat(*(p.fault for p, _ in subs)).any())]
        return m
