"""The attention engine's front half: Q buffer, sequencer, K/V feed, MAC lanes and their accumulators.

The MAC array runs ``QK(0) QK(1) SV(0) QK(2) SV(1) ... QK(x+1) SV(x) ...``: the
:class:`Sequencer` decides which pass runs next (from the occupancy flags of the buffers), the
:class:`KVFeed` broadcasts each k/v element for ``rows`` cycles, the :class:`MacLanes` multiply it
by a Q element (QK) or an ``SLN`` (SV) on one DSP per lane, and the products go to the
:class:`ScoreAccumulators` (``q·k`` per row, shifted out one finished dot product per cycle) or
to the :class:`NumeratorAccumulators` (``Σ SLN·v`` of a tile, a read-modify-write memory per lane).
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from celosia.hw.attention_common import (IDLE, QK, SV, AttentionGeometry, LaneRead, MacBeat, ProductBeat,
                                         ScoreItem, TileRead, TileWrite)
from celosia.hw.dsp import is_ecp5
from celosia.hw.pipeline import Pipeline, Tap

__all__ = ["QBuffer", "TileDescriptors", "KVFeed", "Sequencer", "MacLanes", "ScoreAccumulators",
           "NumeratorAccumulators"]


def _log2(n: int) -> int:
    return (n - 1).bit_length()


def _bank(bit) -> Value:
    """One-hot pulse of bank ``bit`` (a 2-bit flag mask)."""
    return Mux(bit, 2, 1)


class QBuffer(wiring.Component):
    """Q loader and the resident query block, two banks (the next block loads while one is used).

    Parameters
    ----------
    geom : AttentionGeometry

    Attributes
    ----------
    q : In(stream)
        ``block·E`` beats per block, row-major (``q_i[e]``); written into the bank after the last
        one loaded. ``ready`` is low while that bank is still full.
    full : Out(2)
        Bank ``b`` holds a complete block (set the cycle after its last beat).
    release : In(2)
        Pulse: the bank is no longer read; ``full`` drops the next cycle.
    read : Out(LaneRead)
        Address ``Cat(e, row in lane, bank)``; lane ``l``'s word is ``q`` of block row
        ``row·lanes + l``.
    """

    def __init__(self, geom: AttentionGeometry):
        self.geom = geom
        g = geom
        super().__init__({
            "q": In(stream.Signature(signed(g.q_fmt.bits))),
            "full": Out(2), "release": In(2),
            "read": Out(LaneRead(g.eb + g.rowb + 1, signed(g.q_fmt.bits), g.lanes)),
        })

    def elaborate(self, platform):
        m = Module()
        g = self.geom
        L, E, VL = g.lanes, g.e, g.block
        full = Signal(2)
        bank = Signal()                                 # bank being loaded
        row, el = Signal(range(VL)), Signal(range(E))   # row of the block, element
        m.d.comb += [self.q.ready.eq(~full.bit_select(bank, 1)), self.full.eq(full)]
        fire = self.q.valid & self.q.ready
        done = Signal(2)
        for l in range(L):
            mem = Memory(shape=signed(g.q_fmt.bits), depth=2 * E * g.rows, init=[])
            m.submodules[f"qmem{l}"] = mem
            wp, rp = mem.write_port(), mem.read_port()
            m.d.comb += [wp.addr.eq(Cat(el[:g.eb], row[g.lnb:], bank)), wp.data.eq(self.q.payload),
                         wp.en.eq(fire & (row[:g.lnb] == l)),
                         rp.addr.eq(self.read.addr), self.read.data[l].eq(rp.data)]
        with m.If(fire):
            with m.If(el == E - 1):
                m.d.sync += el.eq(0)
                with m.If(row == VL - 1):
                    m.d.sync += [row.eq(0), bank.eq(~bank)]
                    m.d.comb += done.eq(Mux(bank, 2, 1))
                with m.Else():
                    m.d.sync += row.eq(row + 1)
            with m.Else():
                m.d.sync += el.eq(el + 1)
        m.d.sync += full.eq((full | done) & ~self.release)
        return m


class TileDescriptors(wiring.Component):
    """Ring of the four key tiles in flight (QK(x+1) … rescale(x−1)), indexed by the tile count mod 4.

    The sequencer writes a tile's descriptor (:attr:`AttentionGeometry.tile_layout`) when it
    issues QK of that tile; every later stage reads it at its own tile count. A slot is rewritten
    four tiles later, after its rescale (the sequencer runs at most two tiles ahead of SV, and
    SV waits for the previous rescale).

    Parameters
    ----------
    geom : AttentionGeometry
    readers : int
        Number of read ports.

    Attributes
    ----------
    write : In(TileWrite)
    read : Out(TileRead) array
        One combinational read port per reader.
    """

    def __init__(self, geom: AttentionGeometry, readers: int):
        self.geom = geom
        super().__init__({"write": In(TileWrite(geom)), "read": Out(TileRead(geom)).array(readers)})

    def elaborate(self, platform):
        m = Module()
        ring = Array(Value.cast(Signal(self.geom.tile_layout, name=f"tile{i}")) for i in range(4))
        with m.If(self.write.en):
            m.d.sync += ring[self.write.slot].eq(self.write.desc)
        for rd in self.read:
            m.d.comb += rd.desc.eq(ring[rd.slot])
        return m


class KVFeed(wiring.Component):
    """K/V operand feed: one element every ``rows`` cycles, broadcast to the lanes for ``rows`` cycles.

    Parameters
    ----------
    geom : AttentionGeometry

    Attributes
    ----------
    k, v : In(stream)
        The engine's ``k`` and ``v`` streams. A beat is accepted when ``mode`` is QK (``k``) or
        SV (``v``) and ``row0`` (the lanes start on their first row).
    mode : In(2)
        :data:`~celosia.hw.attention_common.IDLE`, ``QK`` or ``SV``.
    row0 : In(1)
        The current beat serves row 0 of every lane.
    fire : Out(1)
        A MAC beat happens this cycle: an element was accepted (``row0``) or is held (other rows).
    b, keep : Out
        The element (the accepted payload in its cycle, then the held copy) and, in QK, the
        key-padding bit.
    """

    def __init__(self, geom: AttentionGeometry):
        g = geom
        super().__init__({
            "k": In(stream.Signature(g.k_layout)), "v": In(stream.Signature(signed(g.v_fmt.bits))),
            "mode": In(2), "row0": In(1),
            "fire": Out(1), "b": Out(signed(g.operand_bits)), "keep": Out(1),
        })
        self.geom = geom

    def elaborate(self, platform):
        m = Module()
        g = self.geom
        k, v, mode = self.k, self.v, self.mode
        m.d.comb += [k.ready.eq((mode == QK) & self.row0), v.ready.eq((mode == SV) & self.row0)]
        k_fire = k.valid & k.ready
        v_fire = v.valid & v.ready
        hold = Signal(signed(g.operand_bits))
        hold_keep = Signal()
        new = Mux(mode == QK, k.payload.data, v.payload)
        with m.If(k_fire | v_fire):
            m.d.sync += [hold.eq(new), hold_keep.eq(k.payload.keep)]
        m.d.comb += [self.fire.eq(k_fire | v_fire | (~self.row0 & (mode != IDLE))),
                     self.b.eq(Mux(~self.row0, hold, new)),
                     self.keep.eq(Mux(self.row0, k.payload.keep, hold_keep))]
        return m


class Sequencer(wiring.Component):
    """The MAC array schedule: ``QK(x+1)`` before ``SV(x)``, at most two QK tiles ahead.

    In IDLE it starts, in this order of preference: QK of the next key tile when fewer than two
    QK tiles await their SV, the tile's Q bank is full (a new block also needs its ``cfg``
    beat) and its score bank is not busy (it then waits for that bank rather than run SV); else
    SV of the oldest QK tile when its ``SLN`` values are ready and the tile accumulators are free.
    A pass is ``nt`` keys × ``E`` (QK) or ``F`` (SV) elements × ``rows`` beats; it stalls only
    while the k/v stream has no beat.

    Parameters
    ----------
    geom : AttentionGeometry

    Attributes
    ----------
    cfg, k, v : In(stream)
        The engine's streams (``cfg`` is accepted when the first QK tile of its block starts).
    q_full : In(2)
        Q banks holding a complete block (:class:`QBuffer`); ``q_release`` pulses when the last
        QK tile of a block ends.
    score_busy : In(2)
        Score banks still in use (:class:`~celosia.hw.attention_softmax.ScorePath`);
        ``score_claim`` pulses when a QK tile starts on a bank.
    sln_ready, acc_free : In(1)
        SLN values of the oldest QK tile written; tile accumulators free. ``sv_start`` pulses
        when SV starts (SLN in use, accumulators taken), ``sv_end`` on its last beat.
    tile_w : Out(TileWrite)
        Descriptor of each QK tile, written when it starts, in slot ``x mod 4``.
    tile_r : In(TileRead)
        Read at the SV tile's slot (its key count).
    beat : Out(MacBeat)
        The MAC beat of every cycle.
    """

    def __init__(self, geom: AttentionGeometry):
        g = geom
        super().__init__({
            "cfg": In(stream.Signature(g.cfg_layout)),
            "k": In(stream.Signature(g.k_layout)), "v": In(stream.Signature(signed(g.v_fmt.bits))),
            "q_full": In(2), "q_release": Out(2),
            "score_busy": In(2), "score_claim": Out(2),
            "sln_ready": In(1), "acc_free": In(1), "sv_start": Out(1), "sv_end": Out(1),
            "tile_w": Out(TileWrite(g)), "tile_r": In(TileRead(g)),
            "beat": Out(MacBeat(g)),
        })
        self.geom = geom

    def elaborate(self, platform):
        m = Module()
        g = self.geom
        E, F, T, R = g.e, g.f, g.tile, g.rows
        m.submodules.feed = feed = KVFeed(g)
        wiring.connect(m, wiring.flipped(self.k), feed.k)
        wiring.connect(m, wiring.flipped(self.v), feed.v)
        cfg = self.cfg.payload

        xq = Signal(2)        # next QK tile (mod 4)
        xs = Signal(2)        # next SV tile (mod 4)
        outstanding = Signal(range(3))
        blk_on = Signal()     # a block is open: its next tile needs no cfg beat
        blk_kb = Signal(g.lb + 1)
        blk_n = Signal(g.lb)
        blk_causal, blk_pos0, blk_pmask = Signal(), Signal(g.pos_bits), Signal(g.pos_mask_bits)
        blk_nr = Signal(g.nrb)
        qb, rb = Signal(), Signal(init=1)   # Q bank and RNV bank of the QK block (the first block gets RNV bank 0)
        st = Signal(range(3))
        cur_nt = Signal(range(T + 1))
        cur_last = Signal()                  # QK: last tile of the block
        cur_qb = Signal()
        j = Signal(range(T))
        idx = Signal(range(max(E, F)))
        r = Signal(range(R))                 # row within the lane: fastest counter, one element per R beats

        # ---------------------------------------------------------------- what runs next
        new_blk = ~blk_on
        qk_avail = Mux(new_blk, self.cfg.valid & self.q_full.bit_select(qb, 1), 1)
        qk_ok = ~self.score_busy.bit_select(xq[0], 1)
        sv_ok = self.sln_ready & self.acc_free
        n_src = Mux(new_blk, cfg.n_keys, blk_n)
        kb_src = Mux(new_blk, 0, blk_kb)
        rem = n_src - kb_src
        nt_new = Mux(rem >= T, T, rem)
        go_qk, go_sv = Signal(), Signal()
        with m.If(st == IDLE):
            with m.If((outstanding < 2) & qk_avail):
                m.d.comb += go_qk.eq(qk_ok)
            with m.Elif(outstanding != 0):
                m.d.comb += go_sv.eq(sv_ok)
        m.d.comb += self.cfg.ready.eq(go_qk & new_blk)
        tw = self.tile_w
        m.d.comb += [tw.en.eq(go_qk), tw.slot.eq(xq),
                     tw.desc.nt.eq(nt_new), tw.desc.first.eq(kb_src == 0), tw.desc.last.eq(kb_src + T >= n_src),
                     tw.desc.kb.eq(kb_src), tw.desc.rb.eq(Mux(new_blk, ~rb, rb)),
                     tw.desc.causal.eq(Mux(new_blk, cfg.causal, blk_causal)),
                     tw.desc.pos0.eq(Mux(new_blk, cfg.pos0, blk_pos0)),
                     tw.desc.pmask.eq(Mux(new_blk, cfg.pos_mask, blk_pmask)),
                     tw.desc.nr.eq(Mux(new_blk, cfg.n_rows, blk_nr))]
        with m.If(go_qk):
            m.d.sync += [st.eq(QK), j.eq(0), idx.eq(0), r.eq(0), cur_nt.eq(nt_new), cur_last.eq(kb_src + T >= n_src),
                         cur_qb.eq(qb), blk_kb.eq(kb_src + T), blk_on.eq(kb_src + T < n_src)]
            m.d.comb += self.score_claim.eq(_bank(xq[0]))
            with m.If(new_blk):
                m.d.sync += [blk_n.eq(cfg.n_keys), blk_causal.eq(cfg.causal), blk_pos0.eq(cfg.pos0),
                             blk_pmask.eq(cfg.pos_mask), blk_nr.eq(cfg.n_rows), rb.eq(~rb)]
        m.d.comb += self.tile_r.slot.eq(xs)
        with m.If(go_sv):
            m.d.sync += [st.eq(SV), j.eq(0), idx.eq(0), r.eq(0), cur_nt.eq(self.tile_r.desc.nt)]
            m.d.comb += self.sv_start.eq(1)

        # ---------------------------------------------------------------- the pass: keys × elements × rows
        m.d.comb += [feed.mode.eq(st), feed.row0.eq(r == 0)]
        fire = feed.fire
        dim_last = Mux(st == QK, E - 1, F - 1)
        r_last = r == R - 1
        last_beat = r_last & (idx == dim_last) & (j == cur_nt - 1)
        with m.If(fire):
            m.d.sync += r.eq(Mux(r_last, 0, r + 1))
            with m.If(r_last & (idx == dim_last)):
                m.d.sync += [idx.eq(0), j.eq(j + 1)]
            with m.Elif(r_last):
                m.d.sync += idx.eq(idx + 1)
            with m.If(last_beat):
                m.d.sync += st.eq(IDLE)
                with m.If(st == QK):
                    m.d.sync += [xq.eq(xq + 1), outstanding.eq(outstanding + 1)]
                    with m.If(cur_last):
                        m.d.sync += qb.eq(~qb)
                        m.d.comb += self.q_release.eq(_bank(cur_qb))
                with m.Else():
                    m.d.sync += [xs.eq(xs + 1), outstanding.eq(outstanding - 1)]
                    m.d.comb += self.sv_end.eq(1)

        bt = self.beat
        is_qk = st == QK
        m.d.comb += [bt.valid.eq(fire), bt.qk.eq(is_qk), bt.b.eq(feed.b), bt.keep.eq(feed.keep),
                     bt.j.eq(j), bt.idx.eq(idx), bt.r.eq(r), bt.first.eq(Mux(is_qk, idx == 0, j == 0)),
                     bt.dlast.eq(idx == dim_last), bt.last.eq(last_beat), bt.rlast.eq(r_last),
                     bt.slot.eq(xq), bt.qbank.eq(cur_qb)]
        return m


class MacLanes(wiring.Component):
    """One multiplier per lane (registered DSP slices): ``b·q`` (QK) or ``b·SLN`` (SV).

    The lane operand is read at the beat's address from the Q buffer or the SLN buffer (stage 1),
    the product is ready at stage 3 and leaves with the beat's fields on ``prod``.

    Parameters
    ----------
    geom : AttentionGeometry

    Attributes
    ----------
    beat : In(MacBeat)
    q : In(LaneRead)
        Q buffer, address ``Cat(idx, r, qbank)``.
    sln : In(LaneRead)
        SLN buffer, address ``Cat(j, r)``.
    prod : Out(ProductBeat)
        The beat three cycles later with every lane's product.
    """

    LATENCY = 3

    def __init__(self, geom: AttentionGeometry):
        g = geom
        super().__init__({
            "beat": In(MacBeat(g)),
            "q": In(LaneRead(g.eb + g.rowb + 1, signed(g.q_fmt.bits), g.lanes)),
            "sln": In(LaneRead(_log2(g.tile) + g.rowb, unsigned(g.num.efmt.bits), g.lanes)),
            "prod": Out(ProductBeat(g)),
        })
        self.geom = geom

    def elaborate(self, platform):
        m = Module()
        g = self.geom
        mp = Pipeline(m, prefix="mac_", ecp5=is_ecp5(platform))
        bt, pb = self.beat, self.prod
        names = ("valid", "qk", "idx", "j", "first", "dlast", "last", "keep", "slot", "r", "rlast")
        tag = {n: Tap(getattr(bt, n), 0) for n in names}
        b1 = mp.reg("b", lambda x: x, Tap(bt.b, 0))
        qk1 = mp.at(tag["qk"], 1)
        m.d.comb += [self.q.addr.eq(Cat(bt.idx[:g.eb], bt.r, bt.qbank)), self.sln.addr.eq(Cat(bt.j, bt.r))]
        for l in range(g.lanes):
            a1 = Signal(signed(18), name=f"a1_{l}")
            m.d.comb += a1.eq(Mux(qk1, self.q.data[l], self.sln.data[l]))
            prod = mp.mul(f"lane{l}", Tap(a1, 1), b1)
            assert prod.stage == self.LATENCY
            m.d.comb += pb.p[l].eq(prod.value)
        for n in names:
            m.d.comb += getattr(pb, n).eq(mp.at(tag[n], self.LATENCY))
        m.d.comb += [pb.ahead_idx.eq(mp.at(tag["idx"], self.LATENCY - 1)),
                     pb.ahead_r.eq(mp.at(tag["r"], self.LATENCY - 1))]
        return m


class ScoreAccumulators(wiring.Component):
    """``q·k`` of every block row, and the capture register that shifts the finished ones out.

    Each lane keeps ``rows`` accumulators in a ring that turns once per QK product, so its head
    is the current row's. The ``rows`` products of a key's last element each shift the lanes'
    finished dot products into the capture register (row ``r`` of lane ``l`` lands at index
    ``r·lanes + l``, the block row); the last one starts the shift-out, one row per cycle, which
    ends before the next key's dot products are finished (``lanes·rows <= E·rows``).

    Parameters
    ----------
    geom : AttentionGeometry

    Attributes
    ----------
    prod : In(ProductBeat)
    item : Out(ScoreItem)
        The dot products of each key in row order, one per cycle.
    """

    def __init__(self, geom: AttentionGeometry):
        super().__init__({"prod": In(ProductBeat(geom)), "item": Out(ScoreItem(geom))})
        self.geom = geom

    def elaborate(self, platform):
        m = Module()
        g = self.geom
        L, R, VL = g.lanes, g.rows, g.block
        pb = self.prod
        finished = []
        for l in range(L):
            acc = [Signal(signed(g.s_bits), name=f"qkacc{l}_{i}") for i in range(R)]
            s_now = Signal(signed(g.s_bits), name=f"qks{l}")
            m.d.comb += s_now.eq(Mux(pb.first, 0, acc[0]) + pb.p[l])
            with m.If(pb.valid & pb.qk):
                m.d.sync += [a.eq(b) for a, b in zip(acc, acc[1:] + [s_now])]
            finished.append(s_now)
        cap = [Signal(signed(g.s_bits), name=f"cap{i}") for i in range(VL)]
        cnt = Signal(range(VL + 1))
        c_l, c_j, c_keep, c_slot, c_last = Signal(range(VL)), Signal(range(g.tile)), Signal(), Signal(2), Signal()
        with m.If(pb.valid & pb.qk & pb.dlast):
            m.d.sync += [c.eq(s) for c, s in zip(cap, cap[L:] + finished)]
            with m.If(pb.rlast):
                m.d.sync += [cnt.eq(VL), c_l.eq(0), c_j.eq(pb.j), c_keep.eq(pb.keep), c_slot.eq(pb.slot),
                             c_last.eq(pb.last)]
        with m.Elif(cnt != 0):
            m.d.sync += [c.eq(n) for c, n in zip(cap, cap[1:] + [cap[-1]])]
            m.d.sync += [cnt.eq(cnt - 1), c_l.eq(c_l + 1)]
        it = self.item
        m.d.comb += [it.valid.eq(cnt != 0), it.s.eq(cap[0]), it.row.eq(c_l), it.j.eq(c_j), it.keep.eq(c_keep),
                     it.slot.eq(c_slot), it.last.eq(c_last & (c_l == VL - 1))]
        return m


class NumeratorAccumulators(wiring.Component):
    """The tile accumulators ``acc[i][f] = Σ_j SLN_ij·v_j[f]``: a ``rows·F``-word memory per lane.

    Every SV product is added to its word (read at the product's ``ahead`` address, written
    back at stage 3; the first key of the tile overwrites). The accumulators are *free* until
    an SV pass takes them, *full* from its last write until the rescale drains them, and free
    again when the rescale has read them all.

    Parameters
    ----------
    geom : AttentionGeometry

    Attributes
    ----------
    prod : In(ProductBeat)
    read : Out(LaneRead)
        Address ``Cat(f, row in lane)``, for the rescale.
    take, drain, release : In(1)
        Pulses: SV starts (not free), the rescale starts (not full), the rescale is done (free).
    free, full : Out(1)
    """

    def __init__(self, geom: AttentionGeometry):
        g = geom
        super().__init__({
            "prod": In(ProductBeat(g)),
            "read": Out(LaneRead(g.fb + g.rowb, signed(g.acc_bits), g.lanes)),
            "take": In(1), "drain": In(1), "release": In(1), "free": Out(1), "full": Out(1),
        })
        self.geom = geom

    def elaborate(self, platform):
        m = Module()
        g = self.geom
        pb = self.prod
        for l in range(g.lanes):
            mem = Memory(shape=signed(g.acc_bits), depth=g.f * g.rows, init=[])
            m.submodules[f"accm{l}"] = mem
            old, wp, rd = mem.read_port(), mem.write_port(), mem.read_port()
            m.d.comb += [old.addr.eq(Cat(pb.ahead_idx[:g.fb], pb.ahead_r)),
                         wp.addr.eq(Cat(pb.idx[:g.fb], pb.r)),
                         wp.data.eq(Mux(pb.first, 0, old.data) + pb.p[l]), wp.en.eq(pb.valid & ~pb.qk),
                         rd.addr.eq(self.read.addr), self.read.data[l].eq(rd.data)]
        free, full = Signal(init=1), Signal()
        with m.If(self.take):
            m.d.sync += free.eq(0)
        with m.If(pb.valid & ~pb.qk & pb.last):     # the tile's last write
            m.d.sync += full.eq(1)
        with m.If(self.drain):
            m.d.sync += full.eq(0)
        with m.If(self.release):
            m.d.sync += free.eq(1)
        m.d.comb += [self.free.eq(free), self.full.eq(full)]
        return m
