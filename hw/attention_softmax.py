"""The attention engine's back half: score path, online softmax, rescale and output.

Per key tile ``x`` (see :mod:`celosia.ir.attention` for the integer semantics):

* :class:`ScorePath` — every finished ``q·k``: ×scale, round, saturate, mask → the tile score
  buffer (two banks) and the tile maxima;
* :class:`OnlineSoftmax` — the "1D" work during ``SV(x-1)`` and ``QK(x+1)``: per row ``m_new``,
  ``PRM``, every ``SLN_j`` (one :class:`~celosia.hw.primitives.ExpNeg`) and ``Σ SLN`` → the SLN
  buffer (two banks);
* :class:`Rescale` — after ``SV(x)``: ``RNV ← (PRM·RNV >> Fe) + acc`` and ``RD`` likewise, on
  one shared multiplier, into the double-banked RNV/RD state;
* :class:`OutputStage` — after a block's last rescale: one
  :class:`~celosia.hw.primitives.Reciprocal` per row, then ``y = RNV·r`` rounded and saturated
  on the ``o`` stream.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory, ReadPort
from amaranth.lib.wiring import In, Out
from celosia.hw.attention_common import (AttentionGeometry, IndexedRead, LaneRead, ScoreItem, TileRead,
                                         round_half_even, saturate)
from celosia.hw.dsp import is_ecp5
from celosia.hw.pipeline import Pipeline, Tap
from celosia.hw.primitives import ExpNeg, Reciprocal

__all__ = ["ScorePath", "OnlineSoftmax", "Rescale", "OutputStage", "SLN_FREE", "SLN_FILL", "SLN_READY",
           "SLN_USE"]

#: States of the SLN buffer (:class:`OnlineSoftmax`).
SLN_FREE, SLN_FILL, SLN_READY, SLN_USE = range(4)


def _bank(bit):
    return Mux(bit, 2, 1)


def score_read_signature(g: AttentionGeometry) -> ReadPort.Signature:
    """Read port of the tile score buffer: address ``Cat(j, row, bank)``, word ``Cat(score, masked)``."""
    return ReadPort.Signature(addr_width=1 + g.vb + g.tb, shape=unsigned(g.score_fmt.bits + 1))


def tmax_read_signature(g: AttentionGeometry) -> IndexedRead:
    """Tile maxima, index ``Cat(row, bank)``."""
    return IndexedRead(g.vb + 1, max=signed(g.score_fmt.bits))


def sums_read_signature(g: AttentionGeometry) -> IndexedRead:
    """``PRM`` and ``Σ SLN`` of a tile, index ``Cat(row, bank)`` (bank = tile count mod 2)."""
    return IndexedRead(g.vb + 1, prm=unsigned(g.num.efmt.bits), ssum=unsigned(g.rd_fmt.bits))


def rnv_read_signature(g: AttentionGeometry) -> ReadPort.Signature:
    """Read port of the running numerators: address ``Cat(f, row, bank)``."""
    return ReadPort.Signature(addr_width=g.fb + g.vb + 1, shape=signed(g.rnv_bits))


def rd_read_signature(g: AttentionGeometry) -> IndexedRead:
    """Running denominators, index ``Cat(row, bank)``."""
    return IndexedRead(g.vb + 1, rd=unsigned(g.rd_fmt.bits))


class ScorePath(wiring.Component):
    """Scaled, masked scores of a key tile → the score buffer and the tile maxima (two banks).

    Each item is multiplied by the scale constant, rounded half to even and saturated to
    ``score_fmt`` (``s_j``); it is masked when its key is padded or, with ``causal``, past the
    row's position (``kb + j > pos0 + (row & pmask)``, from the tile descriptor). The buffer word
    at ``Cat(j, row, bank)`` is ``Cat(s_j, masked)``; the tile maximum of a row is the largest
    unmasked ``s_j`` (``score_fmt.min_int`` if none). Bank = tile count mod 2.

    A bank is *busy* from the start of its QK tile (``claim``) until the online softmax has read
    it (``freed``), and *done* from the tile's last score until the softmax takes it
    (``taken``).

    Parameters
    ----------
    geom : AttentionGeometry

    Attributes
    ----------
    item : In(ScoreItem)
    tile : In(TileRead)
        Read at the item's slot.
    read : Out(ReadPort.Signature)
        :func:`score_read_signature`.
    tmax : Out(IndexedRead)
        :func:`tmax_read_signature`.
    claim, taken, freed : In(2)
    busy, done : Out(2)
    """

    def __init__(self, geom: AttentionGeometry):
        super().__init__({
            "item": In(ScoreItem(geom)), "tile": In(TileRead(geom)),
            "read": Out(score_read_signature(geom)), "tmax": Out(tmax_read_signature(geom)),
            "claim": In(2), "taken": In(2), "freed": In(2), "busy": Out(2), "done": Out(2),
        })
        self.geom = geom

    def elaborate(self, platform):
        m = Module()
        g = self.geom
        fs, VL = g.score_fmt, g.block
        it, d = self.item, self.tile.desc
        m.d.comb += self.tile.slot.eq(it.slot)
        sp = Pipeline(m, prefix="sc_", ecp5=is_ecp5(platform))
        # mask of the item: key past the query's position (causal) or padded; two stages (timing)
        pos_r = sp.reg("pos", d.pos0 + (it.row & d.pmask), stage=0)
        kabs_r = sp.reg("kabs", d.kb + it.j, stage=0)
        mflags = sp.reg("mflags", Cat(~it.keep, d.causal), stage=0)
        masked = sp.reg("masked", lambda p, k, fl: fl[0] | (fl[1] & (k > p)), pos_r, kabs_r, mflags)
        # s_j = sat(round(S·c))
        sc = sp.mul("scale", Tap(it.s, 0), g.scale_code)
        sh = g.q_fmt.frac + g.k_fmt.frac + g.scale_frac - fs.frac
        s_t = sp.reg("sat", lambda x: saturate(x, fs), round_half_even(sp, "rnd", sc, sh), shape=signed(fs.bits))
        ss = s_t.stage
        s_v, s_l, s_j, s_b, s_last = (sp.at(Tap(x, 0), ss) for x in (it.valid, it.row, it.j, it.slot[0], it.last))
        s_m = sp.at(masked, ss)

        sbuf = Memory(shape=unsigned(fs.bits + 1), depth=2 * VL * (1 << g.tb), init=[])
        m.submodules.sbuf = sbuf
        swp = sbuf.write_port()
        m.d.comb += [swp.addr.eq(Cat(s_j[:g.tb], s_l[:g.vb], s_b)), swp.data.eq(Cat(s_t.value, s_m)),
                     swp.en.eq(s_v)]
        wiring.connect(m, wiring.flipped(self.read), sbuf.read_port())
        # tile maxima: per bank a ring of VL registers that turns once per score (rows arrive in
        # order), so the head is always the current row's maximum: no index decoding
        rings = [[Signal(signed(fs.bits), name=f"tmax{b}_{i}") for i in range(VL)] for b in range(2)]
        cand = Mux(s_m, fs.min_int, s_t.value)
        for b in range(2):
            ring_b = rings[b]
            with m.If(s_v & (s_b == b)):
                new_max = Mux((s_j == 0) | (cand > ring_b[0]), cand, ring_b[0])
                m.d.sync += [x.eq(y) for x, y in zip(ring_b, ring_b[1:] + [new_max])]
        m.d.comb += self.tmax.max.eq(Array(rings[0] + rings[1])[self.tmax.index])

        busy, done, done_set = Signal(2), Signal(2), Signal(2)
        with m.If(s_v & s_last):
            m.d.comb += done_set.eq(_bank(s_b))
        m.d.sync += [busy.eq((busy | self.claim) & ~self.freed), done.eq((done | done_set) & ~self.taken)]
        m.d.comb += [self.busy.eq(busy), self.done.eq(done)]
        return m


class OnlineSoftmax(wiring.Component):
    """The 1D work of a key tile: running maximum, ``PRM``, ``SLN_j`` and ``Σ SLN`` of every row.

    When the SLN buffer is free and the next tile's score bank is done, it takes the bank and
    walks the rows in order, ``nt + 1`` items per row (item 0: ``PRM``, items ``1..nt``:
    ``SLN_j``), one per cycle through one :class:`~celosia.hw.primitives.ExpNeg`::

        m_new = max(m, tile max)        (m = score_fmt.min_int on the block's first tile)
        PRM   = expneg(clip(m − m_new)),   SLN_j = 0 if masked else expneg(clip(s_j − m_new))
        Σ SLN = Σ_j SLN_j

    ``SLN_j`` of block row ``i`` goes to lane ``i mod lanes`` of the SLN buffer at
    ``Cat(j, i // lanes)``; ``PRM`` and ``Σ SLN`` to register bank ``tile count mod 2``.

    The SLN buffer has two banks (tile count mod 2), so 1D(x) fills one while SV(x − 1) reads
    the other; each bank goes FREE → FILL (tile taken) → READY (last SLN written) → USE
    (``sv_start``) → FREE (``sv_end``). 1D(x) also waits until the rescale of tile x − 2 is
    done (``resc_count``), the last reader of the ``PRM``/``Σ SLN`` bank it overwrites.

    Parameters
    ----------
    geom : AttentionGeometry

    Attributes
    ----------
    tile : In(TileRead)
        Read at the tile being processed (``nt``, ``first``).
    scores, tmax : In
        The score buffer and tile maxima of :class:`ScorePath`.
    score_done : In(2)
        ``score_taken`` pulses when a tile starts, ``score_freed`` after its last score read.
    sln : Out(LaneRead)
        Address ``Cat(j, row in lane)``.
    sums : Out(IndexedRead)
        :func:`sums_read_signature`.
    sv_start, sv_end : In(1)
        SV of the oldest tile starts (its SLN bank in use) / ends (the bank is free).
    sln_ready : Out(1)
        The oldest tile's SLN bank is written.
    resc_count : In(2)
        Tiles rescaled so far (mod 4), :attr:`Rescale.count`.
    """

    def __init__(self, geom: AttentionGeometry):
        g = geom
        super().__init__({
            "tile": In(TileRead(g)), "scores": In(score_read_signature(g)), "tmax": In(tmax_read_signature(g)),
            "score_done": In(2), "score_taken": Out(2), "score_freed": Out(2),
            "sln": Out(LaneRead((g.tile - 1).bit_length() + g.rowb, unsigned(g.num.efmt.bits), g.lanes)),
            "sums": Out(sums_read_signature(g)),
            "sv_start": In(1), "sv_end": In(1), "sln_ready": Out(1), "resc_count": In(2),
        })
        self.geom = geom
        self.exp = ExpNeg(g.num.dfmt, g.num.efmt, g.num.exp_table_bits, g.num.exp_guard_bits)

    def elaborate(self, platform):
        m = Module()
        g = self.geom
        num, fs, VL, T = g.num, g.score_fmt, g.block, g.tile
        vb, tb, lnb = g.vb, g.tb, g.lnb
        sln_st = Array(Signal(2, init=SLN_FREE, name=f"sln_st{b}") for b in range(2))
        sv_bank = Signal()             # SLN bank of the oldest tile not yet through SV
        with m.If(self.sv_start):
            m.d.sync += sln_st[sv_bank].eq(SLN_USE)
        with m.If(self.sv_end):
            m.d.sync += [sln_st[sv_bank].eq(SLN_FREE), sv_bank.eq(~sv_bank)]
        m.d.comb += self.sln_ready.eq(sln_st[sv_bank] == SLN_READY)

        # ---------------------------------------------------------------- issue: rows × (nt + 1) items
        x1 = Signal(2)                 # tile count (mod 4)
        on = Signal()
        l1 = Signal(range(VL))
        k1 = Signal(range(T + 1))      # item: 0 = PRM, j + 1 = SLN_j
        nt1 = Signal(range(T + 1))
        nr1 = Signal(g.nrb)            # live rows: the block's rows past them are skipped
        first1 = Signal()
        bank = x1[0]
        m.d.comb += self.tile.slot.eq(x1)
        # rescale(x - 2), the last reader of this PRM bank, not done: x - xr = 2 (mod 4)
        resc_pending = (x1 - self.resc_count)[1]
        with m.If(~on & (sln_st[bank] == SLN_FREE) & self.score_done.bit_select(bank, 1) & ~resc_pending):
            m.d.sync += [on.eq(1), l1.eq(0), k1.eq(0), nt1.eq(self.tile.desc.nt), first1.eq(self.tile.desc.first),
                         nr1.eq(self.tile.desc.nr), sln_st[bank].eq(SLN_FILL)]
            m.d.comb += self.score_taken.eq(_bank(bank))
        m.d.comb += self.scores.addr.eq(Cat((k1 - 1)[:tb], l1[:vb], bank))
        lane_end = k1 == nt1
        with m.If(on):
            with m.If(lane_end):
                m.d.sync += k1.eq(0)
                with m.If(l1 == nr1 - 1):
                    m.d.sync += [on.eq(0), x1.eq(x1 + 1)]
                    m.d.comb += self.score_freed.eq(_bank(bank))  # last score read issued this cycle
                with m.Else():
                    m.d.sync += l1.eq(l1 + 1)
            with m.Else():
                m.d.sync += k1.eq(k1 + 1)

        # ---------------------------------------------------------------- m_new and the exponent
        ep = Pipeline(m, prefix="od_", ecp5=is_ecp5(platform))
        t_v, t_l, t_k, t_end, t_b = (Tap(x, 0) for x in (on, l1, k1, lane_end & (l1 == nr1 - 1), bank))
        t_lend = Tap(lane_end, 0)
        # m_old and the tile max at stage 1, m_new at stage 2; mrun is written at stage 2 (a row's
        # items all compute the same m_new from the old or the new mrun)
        mrun = Array(Signal(signed(fs.bits), name=f"mrun{i}") for i in range(VL))
        m.d.comb += self.tmax.index.eq(Cat(l1[:vb], bank))
        mo = ep.reg("mold", Mux(first1, fs.min_int, mrun[l1]), stage=0)
        tx = ep.reg("tmx", self.tmax.max, stage=0)
        mn = ep.reg("mnew", lambda a, b: Mux(b > a, b, a), mo, tx)
        mw_v, mw_k, mw_l = ep.at(t_v, 2), ep.at(t_k, 2), ep.at(t_l, 2)
        with m.If(mw_v & (mw_k == 0)):
            m.d.sync += mrun[mw_l].eq(mn.value)
        sdat = Tap(self.scores.data, 1)
        dfmt = num.dfmt
        arg = ep.reg("arg", lambda k, a, b, s: Mux(k == 0, a - b, s[:fs.bits].as_signed() - b), t_k, mo, mn, sdat)
        argc = ep.reg("argc", lambda a: Mux(a < dfmt.min_int, dfmt.min_int, a), arg, shape=signed(dfmt.bits))
        smask = ep.reg("smask", lambda s: s[fs.bits], sdat)

        # ---------------------------------------------------------------- exp, then SLN / PRM / Σ SLN
        m.submodules.expneg = expu = self.exp
        es = argc.stage
        m.d.comb += [expu.x.valid.eq(ep.at(t_v, es)), expu.x.payload.eq(argc.value), expu.y.ready.eq(1)]
        ys = es + expu.latency
        y_v, y_l, y_k, y_b = (ep.at(t, ys) for t in (t_v, t_l, t_k, t_b))
        y_m, y_lend, y_end = ep.at(smask, ys), ep.at(t_lend, ys), ep.at(t_end, ys)
        prm = Array(Signal(unsigned(num.efmt.bits), name=f"prm{i}") for i in range(2 * VL))
        ssum = Array(Signal(unsigned(g.rd_fmt.bits), name=f"ssum{i}") for i in range(2 * VL))
        run = Signal(unsigned(g.rd_fmt.bits))
        yv = Mux(y_m, 0, expu.y.payload)
        for l in range(g.lanes):
            mem = Memory(shape=unsigned(num.efmt.bits), depth=2 * T * g.rows, init=[])
            m.submodules[f"slnm{l}"] = mem
            wp, rp = mem.write_port(), mem.read_port()
            m.d.comb += [wp.addr.eq(Cat((y_k - 1)[:tb], y_l[lnb:vb], y_b)), wp.data.eq(yv),
                         wp.en.eq(y_v & (y_k != 0) & (y_l[:lnb] == l)),
                         rp.addr.eq(Cat(self.sln.addr, sv_bank)), self.sln.data[l].eq(rp.data)]
        pi = Cat(y_l[:vb], y_b)
        with m.If(y_v):
            with m.If(y_k == 0):
                m.d.sync += [prm[pi].eq(expu.y.payload), run.eq(0)]
            with m.Else():
                m.d.sync += run.eq(run + yv)
            with m.If(y_lend):
                m.d.sync += ssum[pi].eq(Mux(y_k == 0, 0, run + yv))
            with m.If(y_end):
                m.d.sync += sln_st[y_b].eq(SLN_READY)
        m.d.comb += [self.sums.prm.eq(prm[self.sums.index]), self.sums.ssum.eq(ssum[self.sums.index])]
        return m


class Rescale(wiring.Component):
    """``RNV[i][f] ← (PRM_i·RNV[i][f] >> Fe) + acc[i][f]`` and ``RD_i ← (PRM_i·RD_i >> Fe) + Σ SLN_i``.

    One pass per tile, once the tile accumulators are full (and, on a block's first tile, its
    RNV/RD bank has been output): rows in order, ``F + 1`` items per row (the ``F`` numerators,
    then the denominator), one per cycle on one shared multiplier; the first tile of a block
    starts from 0. RNV/RD have two banks (the descriptor's ``rb``), so a block's output overlaps
    the next block.

    Parameters
    ----------
    geom : AttentionGeometry

    Attributes
    ----------
    tile : In(TileRead)
        Read at the tile being rescaled (``first``, ``last``, ``rb``).
    sums : In(IndexedRead)
        ``PRM`` and ``Σ SLN`` of :class:`OnlineSoftmax`.
    acc : In(LaneRead)
        The tile accumulators; ``acc_full`` in, ``acc_drain`` pulses when a pass starts,
        ``acc_release`` when its last word is written.
    rnv : Out(ReadPort.Signature)
        :func:`rnv_read_signature`.
    rd : Out(IndexedRead)
        :func:`rd_read_signature`.
    out_taken : In(2)
        Pulse: the bank has been output; ``out_full`` holds the banks with a finished block.
    count : Out(2)
        Tiles rescaled so far (mod 4): the ``PRM``/``Σ SLN`` bank of a tile is read until it counts.
    out_rows : Out(nrb).array(2)
        Live rows of the block in each RNV/RD bank (valid while it is full).
    """

    def __init__(self, geom: AttentionGeometry):
        g = geom
        super().__init__({
            "tile": In(TileRead(g)), "sums": In(sums_read_signature(g)),
            "acc": In(LaneRead(g.fb + g.rowb, signed(g.acc_bits), g.lanes)),
            "acc_full": In(1), "acc_drain": Out(1), "acc_release": Out(1),
            "rnv": Out(rnv_read_signature(g)), "rd": Out(rd_read_signature(g)),
            "out_taken": In(2), "out_full": Out(2), "count": Out(2), "out_rows": Out(g.nrb).array(2),
        })
        self.geom = geom

    def elaborate(self, platform):
        m = Module()
        g = self.geom
        F, VL, fb, vb, lnb = g.f, g.block, g.fb, g.vb, g.lnb
        Fe = g.num.Fe
        xr = Signal(2)       # tile count (mod 4)
        on = Signal()
        lr = Signal(range(VL))
        fr = Signal(range(F + 1))       # item: f < F numerator, F denominator
        r_first, r_last, r_rb = Signal(), Signal(), Signal()
        r_nr = Signal(g.nrb)            # live rows of the block
        ofull, ofull_set = Signal(2), Signal(2)
        rd = Array(Signal(unsigned(g.rd_fmt.bits), name=f"rd{i}") for i in range(2 * VL))
        d = self.tile.desc
        m.d.comb += [self.tile.slot.eq(xr),
                     self.acc_drain.eq(~on & self.acc_full & (~d.first | ~ofull.bit_select(d.rb, 1)))]
        with m.If(self.acc_drain):
            m.d.sync += [on.eq(1), lr.eq(0), fr.eq(0), r_first.eq(d.first), r_last.eq(d.last), r_rb.eq(d.rb),
                         r_nr.eq(d.nr)]
        with m.If(on):
            with m.If(fr == F):
                m.d.sync += fr.eq(0)
                with m.If(lr == r_nr - 1):
                    m.d.sync += on.eq(0)
                with m.Else():
                    m.d.sync += lr.eq(lr + 1)
            with m.Else():
                m.d.sync += fr.eq(fr + 1)

        rp = Pipeline(m, prefix="rs_", ecp5=is_ecp5(platform))
        r_v = Tap(on, 0)
        r_l, r_f, r_isrd = Tap(lr, 0), Tap(fr, 0), Tap(fr == F, 0)
        r_endt = Tap(on & (fr == F) & (lr == r_nr - 1), 0)
        rnvm = Memory(shape=signed(g.rnv_bits), depth=2 * VL * F, init=[])
        m.submodules.rnvm = rnvm
        rrd = rnvm.read_port()
        m.d.comb += [rrd.addr.eq(Cat(fr[:fb], lr[:vb], r_rb)), self.acc.addr.eq(Cat(fr[:fb], lr[lnb:vb])),
                     self.sums.index.eq(Cat(lr[:vb], xr[0]))]
        p_prm = rp.reg("prm", self.sums.prm, stage=0)
        p_sum = rp.reg("sum", self.sums.ssum, stage=0)
        p_rdo = rp.reg("rdo", rd[Cat(lr[:vb], r_rb)], stage=0)
        lsel = rp.at(r_l, 1)
        accd = Array(self.acc.data)[lsel[:lnb]]
        isrd1 = rp.at(r_isrd, 1)
        first_t = Tap(r_first, 0)
        old = rp.reg("old", lambda rdo, fst: Mux(fst, 0, Mux(isrd1, rdo.as_signed(), rrd.data)), p_rdo, first_t,
                     shape=signed(g.rnv_bits))
        add = rp.reg("add", lambda sm: Mux(isrd1, sm.as_signed(), accd), p_sum, shape=signed(g.rnv_bits))
        pr = rp.mul("resc", old, p_prm)
        new = rp.reg("new", lambda p, a: (p >> Fe) + a, pr, add, shape=signed(g.rnv_bits))
        ns = new.stage
        w_v, w_l, w_f, w_rd = (rp.at(t, ns) for t in (r_v, r_l, r_f, r_isrd))
        w_end = rp.at(r_endt, ns)
        # r_rb is constant during a pass: the next pass needs acc_full, which needs the SV that
        # waits for this pass's acc_release
        rwp = rnvm.write_port()
        m.d.comb += [rwp.addr.eq(Cat(w_f[:fb], w_l[:vb], r_rb)), rwp.data.eq(new.value), rwp.en.eq(w_v & ~w_rd)]
        with m.If(w_v & w_rd):
            m.d.sync += rd[Cat(w_l[:vb], r_rb)].eq(new.value[:g.rd_fmt.bits])
        with m.If(w_end):
            m.d.sync += xr.eq(xr + 1)
            m.d.comb += self.acc_release.eq(1)
            with m.If(r_last):
                m.d.comb += ofull_set.eq(_bank(r_rb))
                m.d.sync += Array(self.out_rows)[r_rb].eq(r_nr)
        m.d.sync += ofull.eq((ofull | ofull_set) & ~self.out_taken)
        wiring.connect(m, wiring.flipped(self.rnv), rnvm.read_port())
        m.d.comb += [self.rd.rd.eq(rd[self.rd.index]), self.out_full.eq(ofull), self.count.eq(xr)]
        return m


class OutputStage(wiring.Component):
    """``y[i][f] = sat(round(RNV[i][f]·reciprocal(RD_i) · 2^-(Fe + fv + Fr − fo)))`` on ``o``.

    When a bank of RNV/RD is full: the reciprocals of the block's ``n_rows`` live rows (one
    :class:`~celosia.hw.primitives.Reciprocal`, one input per cycle), then the ``n_rows·F``
    products in row-major order through a pipeline that stalls as a whole while ``o`` is not
    ready; the bank is released (``taken``) when its last beat is accepted.

    Parameters
    ----------
    geom : AttentionGeometry

    Attributes
    ----------
    o : Out(stream)
        The engine's output stream.
    full : In(2)
        RNV/RD banks holding a finished block.
    rows : In(nrb).array(2)
        Live rows of each bank's block: only they are output.
    taken : Out(2)
    rnv, rd : In
        The running numerators and denominators of :class:`Rescale`.
    """

    def __init__(self, geom: AttentionGeometry):
        g = geom
        fo = g.out_fmt
        super().__init__({
            "o": Out(stream.Signature(signed(fo.bits) if fo.signed else unsigned(fo.bits))),
            "full": In(2), "taken": Out(2), "rows": In(g.nrb).array(2),
            "rnv": In(rnv_read_signature(g)), "rd": In(rd_read_signature(g)),
        })
        self.geom = geom
        self.recip = Reciprocal(g.rd_fmt, g.num.rfmt, g.num.recip_table_bits, g.num.recip_guard_bits)

    def elaborate(self, platform):
        m = Module()
        g = self.geom
        F, VL, fb, vb = g.f, g.block, g.fb, g.vb
        num = g.num
        ob = Signal()        # bank being output
        o_ph = Signal(2)     # 0 wait, 1 reciprocals, 2 products
        o_l = Signal(range(VL + 1))
        o_f = Signal(range(F))
        o_nr = Signal(g.nrb)  # live rows of the bank being output
        m.submodules.recip = recu = self.recip
        rr = Array(Signal(unsigned(num.rfmt.bits), name=f"recip{i}") for i in range(VL))
        rtag = Signal(range(VL + 1))
        rec_v, rec_x = Signal(), Signal(g.rd_fmt.bits)   # a register in front of the unit (timing)
        m.d.comb += self.rd.index.eq(Cat(o_l[:vb], ob))
        m.d.sync += [rec_v.eq((o_ph == 1) & (o_l < o_nr)), rec_x.eq(self.rd.rd)]
        m.d.comb += [recu.y.ready.eq(1), recu.x.valid.eq(rec_v), recu.x.payload.eq(rec_x)]
        with m.If((o_ph == 0) & self.full.bit_select(ob, 1)):
            m.d.sync += [o_ph.eq(1), o_l.eq(0), rtag.eq(0), o_nr.eq(Array(self.rows)[ob])]
        with m.If((o_ph == 1) & (o_l < o_nr)):
            m.d.sync += o_l.eq(o_l + 1)
        with m.If(recu.y.valid):
            m.d.sync += [rr[rtag[:vb]].eq(recu.y.payload), rtag.eq(rtag + 1)]
            with m.If(rtag == o_nr - 1):
                m.d.sync += [o_ph.eq(2), o_l.eq(0), o_f.eq(0)]

        adv = ~self.o.valid | self.o.ready
        op = Pipeline(m, en=adv, prefix="out_", ecp5=is_ecp5(platform))
        o_iss = (o_ph == 2) & (o_l < o_nr)
        with m.If(adv & o_iss):
            with m.If(o_f == F - 1):
                m.d.sync += [o_f.eq(0), o_l.eq(o_l + 1)]
            with m.Else():
                m.d.sync += o_f.eq(o_f + 1)
        a_t = op.reg("addr", Cat(o_f[:fb], o_l[:vb], ob), stage=0)
        m.d.comb += [self.rnv.addr.eq(a_t.value), self.rnv.en.eq(adv)]
        rnv_t = op.reg("rnv", lambda x: x, Tap(self.rnv.data, a_t.stage + 1))
        rnv_t = Tap(rnv_t.value.as_signed(), rnv_t.stage)
        r_t = op.reg("r", rr[o_l[:vb]], stage=0)
        yp = op.mul("y", rnv_t, r_t)
        osh = num.Fe + g.v_fmt.frac + num.Fr - g.out_fmt.frac
        yr = round_half_even(op, "yr", yp, osh)
        ys_ = op.reg("ys", lambda x: saturate(x, g.out_fmt), yr, shape=self.o.payload.shape())
        o_last = Tap(o_iss & (o_f == F - 1) & (o_l == o_nr - 1), 0)
        ov = op.valid_chain(o_iss, ys_.stage)
        olast = op.at(o_last, ys_.stage)
        m.d.comb += [self.o.valid.eq(ov), self.o.payload.eq(ys_.value)]
        with m.If(self.o.valid & self.o.ready & olast):
            m.d.sync += [o_ph.eq(0), ob.eq(~ob)]
            m.d.comb += self.taken.eq(_bank(ob))
        return m
