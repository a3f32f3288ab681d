"""The 1-pass attention engine: FuseMax-style cascade with the 1D work hidden under the MACs.

:class:`AttentionEngine` computes :func:`celosia.ir.attention.attention_int` bit for bit for one
*block* of ``lanes·rows`` query rows at a time (for grouped-query attention: the query heads of one
KV group × consecutive positions), streaming the block's keys and values once.

Dataflow (one MAC per lane and cycle; ``x`` counts key tiles over all blocks)::

    MAC array:  QK(0) QK(1) SV(0) QK(2) SV(1) ... QK(x+1) SV(x) ...
    QK(x):   per key j, E·rows cycles: k_j[e] is broadcast (and held for the rows of a lane),
             lane l accumulates q·k_j for each of its rows
    scores:  the block's finished dot products of a key are shifted out one per cycle:
             ×scale constant, round, saturate → tile score buffer (2 banks) and tile max
    1D(x):   during QK(x+1): per lane m_new, PRM, SLN_j (one ExpNeg, one input per cycle),
             Σ SLN_j → per-lane SLN memories
    SV(x):   per key j, F·rows cycles: v_j[f] is broadcast, each row accumulates SLN_j·v_j[f]
             into its tile accumulator (a per-lane rows·F-word memory, read-modify-write)
    rescale(x): during QK(x+2): RNV[i][f] ← (PRM_i·RNV[i][f] >> Fe) + acc[i][f] and the same
             for RD, on one shared multiplier (block·(F+1) cycles)
    output:  after the block's last rescale: one Reciprocal per row, then y = RNV·r rounded
             (block·F beats), overlapped with the next block (RNV/RD are double-banked)

The MAC array only waits when the streams do, or for the 1D work of the very last tile. On-chip
storage does not depend on the sequence length. Interlocks (flags, not timing assumptions) keep
every buffer correct under any backpressure.

Interfaces (``lib.stream``; payload fields in amaranth layout order)
-----------------------------------------------------------------
``cfg``
    One beat per block: ``n_keys`` (keys streamed for the block, ``1..max_len``), ``causal``,
    ``pos0`` (query position of lane 0) and ``pos_mask``: lane ``l`` holds position
    ``pos0 + (i & pos_mask)`` for row ``i`` of the block (``pos_mask = P − 1`` for ``P``
    positions per block); with ``causal`` key ``j`` is masked for row ``i`` when
    ``j > pos0 + (i & pos_mask)``. Row ``i`` lives in lane ``i mod lanes``.
``q``
    ``block·E`` beats per block, row-major (``q_i[e]``); loaded into the second bank while the
    previous block runs.
``k``
    ``n_keys·E`` beats per block, key-major: ``data`` and ``keep`` (key-padding mask bit, 1 =
    take part; sampled on the key's last beat).
``v``
    ``n_keys·F`` beats per block, key-major.
``o``
    ``block·F`` beats per block, row-major, in the output format.

With ``causal`` the driver skips the keys after the block's last query (``n_keys =
min(Tk, pos_max + 1)``): those are key tiles above the diagonal, and skipping them does not
change a bit of the result (see :mod:`celosia.ir.attention`).
"""

from __future__ import annotations

import math

import numpy as np
from amaranth.hdl import Array, Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from celosia.hw.dsp import is_ecp5
from celosia.hw.pipeline import Pipeline, Tap
from celosia.hw.primitives import ExpNeg, Reciprocal
from celosia.ir.attention import EXP_FRAC, TILE, attention_numerics, scale_constant
from celosia.ir.numerics import Fixed

from celosia.errors import GraphError, HardwareGenerationError

__all__ = ["AttentionEngine", "schedule", "unpack_output"]


#: Default formats: 16-bit data (s16.12) and scores (s16.10).
_DATA = Fixed(16, 12)
_SCORE = Fixed(16, 10)


def _fail(msg: str, hint: str):
    raise HardwareGenerationError(f"attention engine: {msg}", hint=hint)


def _int(name, v, lo, hi, hint):
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        _fail(f"{name}={v!r} is out of range {lo}..{hi}", hint)
    return v


def _round(pipe: Pipeline, name: str, x: Tap, sh: int) -> Tap:
    """``round_half_even(x·2^-sh)`` over two stages: floor and round bit, then their sum."""
    if sh <= 0:
        return pipe.reg(name, lambda v: v << -sh, x)
    fl = pipe.reg(f"{name}_fl", lambda v: v >> sh, x)
    up = pipe.reg(f"{name}_up", lambda v: (v[:sh] > (1 << (sh - 1))) | ((v[:sh] == (1 << (sh - 1))) & v[sh]), x)
    return pipe.reg(name, lambda a, b: a + b, fl, up)


def _sat(x, fmt: Fixed):
    return Mux(x > fmt.max_int, fmt.max_int, Mux(x < fmt.min_int, fmt.min_int, x))


class AttentionEngine(wiring.Component):
    """1-pass attention over key tiles with ``lanes·rows`` query rows per block.

    Parameters
    ----------
    e : int
        Head dimension ``E`` (query/key width), 1..256.
    f : int, optional
        Value dimension ``F`` (default ``E``).
    lanes : int
        MAC lanes (one multiplier each), a power of two, 2..min(E, 64) (below E when
        ``rows > 1``).
    rows : int
        Query rows per lane (a power of two, 1..64): each k/v element is held for ``rows``
        cycles. The query-block size is ``block = lanes·rows``: K and V are read once per block.
    tile : int
        Key-tile size ``T`` (a power of two): changes the bits exactly as ``tile`` of
        :func:`~celosia.ir.attention.attention_int`.
    q_fmt, k_fmt, v_fmt : Fixed
        Input formats (signed, at most 18 bits).
    score_fmt : Fixed
        Scaled score format (``attrs["score_fmt"]``).
    out_fmt : Fixed
        Output format.
    scale : float, optional
        Score scale (default ``1/√E``).
    max_len : int
        Addressing limit: most keys per block (and query positions), 1..65536.
    exp_frac, recip_frac : int
        ``Fe`` and ``Fr`` of :func:`~celosia.ir.attention.attention_numerics`.

    Raises
    ------
    HardwareGenerationError
        Any parameter out of range (with the numbers), before any RTL is built.
    """

    def __init__(self, e: int, f: int | None = None, lanes: int = 8, rows: int = 1, tile: int = TILE,
                 q_fmt: Fixed = _DATA, k_fmt: Fixed = _DATA, v_fmt: Fixed = _DATA,
                 score_fmt: Fixed = _SCORE, out_fmt: Fixed = _DATA, scale: float | None = None,
                 max_len: int = 4096, exp_frac: int = EXP_FRAC, recip_frac: int = EXP_FRAC + 4):
        f = e if f is None else f
        _int("e", e, 1, 256, "the head dimension E must be 1..256")
        _int("f", f, 2, 256, "the value dimension F must be 2..256")
        _int("lanes", lanes, 2, max(2, min(e, 64)), f"lanes must be 2..min(E={e}, 64): the scores of one key are "
             "shifted out one per cycle during the E cycles of the next key")
        _int("rows", rows, 1, 64, "use 1..64 query rows per lane")
        if rows > 1 and lanes >= e:
            _fail(f"lanes={lanes} with rows={rows} needs lanes < E={e}",
                  "the lanes·rows scores of one key are shifted out during the E·rows cycles of the next key")
        _int("tile", tile, 2, 1024, "use a key tile of 2..1024 keys")
        for name, val in (("e", e), ("f", f), ("tile", tile), ("lanes", lanes), ("rows", rows)):
            if val & (val - 1):
                _fail(f"{name}={val} is not a power of two", "the buffers are addressed by bit fields: use 16, 32, 64, ...")
        _int("max_len", max_len, 1, 1 << 16, "the addressing limit is 1..65536 keys")
        for name, fmt in (("q_fmt", q_fmt), ("k_fmt", k_fmt), ("v_fmt", v_fmt)):
            if not isinstance(fmt, Fixed) or not fmt.signed or fmt.bits > 18:
                _fail(f"{name}={fmt!r} must be a signed Fixed of at most 18 bits", "one DSP operand per MAC")
        if not isinstance(out_fmt, Fixed):
            _fail(f"out_fmt={out_fmt!r} is not a Fixed", "e.g. Fixed(16, 12)")
        self.num = attention_numerics(score_fmt, tile, exp_frac, recip_frac)
        self.e, self.f, self.lanes, self.rows, self.tile, self.max_len = e, f, lanes, rows, tile, max_len
        self.block = lanes * rows
        self.q_fmt, self.k_fmt, self.v_fmt, self.score_fmt, self.out_fmt = q_fmt, k_fmt, v_fmt, score_fmt, out_fmt
        self.scale = float(scale) if scale else 1.0 / math.sqrt(e)
        self.scale_code, self.scale_frac = scale_constant(self.scale)
        Fe = self.num.Fe
        lb = max_len.bit_length()
        self.s_bits = q_fmt.bits + k_fmt.bits + (e - 1).bit_length() + 1   # q·k over E
        self.acc_bits = self.num.efmt.bits + 1 + v_fmt.bits + (tile - 1).bit_length() + 1  # Σ SLN·v over a tile
        self.rd_fmt = Fixed(Fe + lb + 1, Fe, signed=False)   # RD <= n·2^Fe
        self.rnv_bits = Fe + v_fmt.bits + lb + 2              # |RNV| <= RD·max|v|
        self.pos_bits = max(1, lb)
        super().__init__({
            "cfg": In(stream.Signature(data.StructLayout({
                "n_keys": unsigned(lb), "causal": 1, "pos0": unsigned(self.pos_bits),
                "pos_mask": unsigned(max(1, (lanes * rows - 1).bit_length()))}))),
            "q": In(stream.Signature(signed(q_fmt.bits))),
            "k": In(stream.Signature(data.StructLayout({"data": signed(k_fmt.bits), "keep": 1}))),
            "v": In(stream.Signature(signed(v_fmt.bits))),
            "o": Out(stream.Signature(signed(out_fmt.bits) if out_fmt.signed else unsigned(out_fmt.bits))),
        })

    # ------------------------------------------------------------------ public helpers
    @property
    def onchip_bits(self) -> int:
        """Bits of on-chip state (memories and per-lane registers): independent of the sequence."""
        L, E, F, T = self.block, self.e, self.f, self.tile
        n = self.num
        return (L * 2 * E * self.q_fmt.bits              # Q, two banks
                + 2 * L * T * (self.score_fmt.bits + 1)  # tile scores + mask, two banks
                + L * T * n.efmt.bits                    # SLN
                + L * F * self.acc_bits                  # tile accumulators
                + 2 * L * F * self.rnv_bits              # RNV, two banks
                + 2 * L * self.rd_fmt.bits               # RD, two banks
                + 2 * L * (n.efmt.bits + self.rd_fmt.bits)  # PRM, Σ SLN, two banks
                + 3 * L * self.score_fmt.bits            # m, tile max (two banks)
                + L * n.rfmt.bits                        # reciprocals
                + L * self.s_bits                        # QK accumulators
                + L * self.s_bits)                       # score capture

    def check_job(self, heads: int, kv_heads: int, e: int, f: int, seq_q: int, seq_k: int) -> None:
        """Reject a job this engine cannot run (before any stimulus is built).

        Raises
        ------
        GraphError
            ``heads`` not a multiple of ``kv_heads``, a group larger than the lanes or not
            dividing them.
        HardwareGenerationError
            ``e``/``f`` not the generated ``E``/``F``, or a sequence above ``max_len``.
        """
        if kv_heads < 1 or heads % kv_heads:
            raise GraphError(f"attention engine: {heads} query heads are not a multiple of {kv_heads} key/value heads",
                             hint="grouped-query attention needs heads % kv_heads == 0")
        g = heads // kv_heads
        if g > self.block or self.block % g:
            raise GraphError(f"attention engine: a group of {g} query heads does not divide the block of "
                             f"{self.block} queries ({self.lanes} lanes × {self.rows} rows)",
                             hint="generate the engine with lanes·rows a multiple of heads // kv_heads")
        if e != self.e or f != self.f:
            raise HardwareGenerationError(
                f"attention engine: head dims E={e}, F={f} do not match the generated unit (E={self.e}, F={self.f})",
                hint=f"generate AttentionEngine(e={e}, f={f})")
        if max(seq_q, seq_k) > self.max_len or min(seq_q, seq_k) < 1:
            raise HardwareGenerationError(
                f"attention engine: sequence lengths {seq_q} (queries) / {seq_k} (keys) are outside 1..{self.max_len}, "
                "the generated addressing limit", hint=f"generate AttentionEngine(max_len={max(seq_q, seq_k)}) or more")

    # ------------------------------------------------------------------ elaboration
    def elaborate(self, platform):
        m = Module()
        ecp5 = is_ecp5(platform)
        L, R, E, F, T = self.lanes, self.rows, self.e, self.f, self.tile
        VL = L * R                            # query rows of a block ("virtual lanes")
        num = self.num
        Fe = num.Fe
        fs = self.score_fmt
        lb = self.max_len.bit_length()
        tb = max(1, (T - 1).bit_length())
        T_ = 1 << tb                          # address stride of a lane in the score buffer
        fb = (F - 1).bit_length()
        lnb = (L - 1).bit_length()            # lane = low bits of a row index, row-in-lane = high bits
        vb = (VL - 1).bit_length()
        L_ = VL
        MIN = fs.min_int

        # ============================================================ per-lane memories
        qmem = [Memory(shape=signed(self.q_fmt.bits), depth=2 * E * R, init=[]) for _ in range(L)]
        slnm = [Memory(shape=unsigned(num.efmt.bits), depth=T * R, init=[]) for _ in range(L)]
        accm = [Memory(shape=signed(self.acc_bits), depth=F * R, init=[]) for _ in range(L)]
        for l in range(L):
            m.submodules[f"qmem{l}"] = qmem[l]
            m.submodules[f"slnm{l}"] = slnm[l]
            m.submodules[f"accm{l}"] = accm[l]
        sbuf = Memory(shape=unsigned(fs.bits + 1), depth=2 * L_ * T_, init=[])
        rnvm = Memory(shape=signed(self.rnv_bits), depth=2 * L_ * F, init=[])
        m.submodules.sbuf, m.submodules.rnvm = sbuf, rnvm

        # ============================================================ Q loader (two banks)
        q_full = Signal(2)
        qw = Signal()                       # bank being loaded
        ql, qe = Signal(range(VL)), Signal(range(E))     # row of the block, element
        m.d.comb += self.q.ready.eq(~q_full.bit_select(qw, 1))
        q_fire = self.q.valid & self.q.ready
        qwp = [mem.write_port() for mem in qmem]
        for l in range(L):
            m.d.comb += [qwp[l].addr.eq(Cat(qe[:(E - 1).bit_length()], ql[lnb:], qw)),
                         qwp[l].data.eq(self.q.payload), qwp[l].en.eq(q_fire & (ql[:lnb] == l))]
        q_clear = Signal(2)                 # from the issuer: bank no longer read
        q_set = Signal(2)
        with m.If(q_fire):
            with m.If(qe == E - 1):
                m.d.sync += qe.eq(0)
                with m.If(ql == VL - 1):
                    m.d.sync += [ql.eq(0), qw.eq(~qw)]
                    m.d.comb += q_set.eq(Mux(qw, 2, 1))
                with m.Else():
                    m.d.sync += ql.eq(ql + 1)
            with m.Else():
                m.d.sync += qe.eq(qe + 1)
        m.d.sync += q_full.eq((q_full | q_set) & ~q_clear)

        # ============================================================ tile descriptor ring
        def ring(shape, name):
            return Array(Signal(shape, name=f"{name}{i}") for i in range(4))
        d_nt = ring(range(T + 1), "d_nt")
        d_first, d_last, d_causal = ring(1, "d_first"), ring(1, "d_last"), ring(1, "d_causal")
        d_pos0 = ring(unsigned(self.pos_bits), "d_pos0")
        d_pmask = ring(len(self.cfg.payload.pos_mask), "d_pmask")
        d_kb = ring(unsigned(lb), "d_kb")
        d_rb = ring(1, "d_rb")

        # ============================================================ flags between engines
        sbusy = Signal(2)     # score bank claimed by QK(x), freed when 1D(x) is done
        sdone = Signal(2)     # score bank holds a complete tile (set by the score path)
        SLN_FREE, SLN_FILL, SLN_READY, SLN_USE = range(4)
        sln_st = Signal(2, init=SLN_FREE)
        acc_free = Signal(init=1)
        acc_full = Signal()
        ofull = Signal(2)     # RNV/RD bank holds a finished block not yet output
        sbusy_set, sbusy_clr, sdone_set, sdone_clr = (Signal(2, name=n) for n in ("sbusy_set", "sbusy_clr",
                                                                                 "sdone_set", "sdone_clr"))
        ofull_set, ofull_clr = Signal(2), Signal(2)
        m.d.sync += [sbusy.eq((sbusy | sbusy_set) & ~sbusy_clr), sdone.eq((sdone | sdone_set) & ~sdone_clr),
                     ofull.eq((ofull | ofull_set) & ~ofull_clr)]

        # ============================================================ issuer (MAC array schedule)
        xq = Signal(2)        # next QK tile (mod 4)
        xs = Signal(2)        # next SV tile (mod 4)
        outstanding = Signal(range(3))
        blk_on = Signal()
        blk_kb = Signal(lb + 1)
        blk_n = Signal(lb)
        blk_causal, blk_pos0, blk_pmask = Signal(), Signal(self.pos_bits), Signal(len(self.cfg.payload.pos_mask))
        qb, rb = Signal(), Signal(init=1)   # rb: the first block gets RNV bank 0          # Q bank of the QK block, RNV bank of the QK block
        IDLE, QK, SV = range(3)
        st = Signal(range(3))
        cur_nt = Signal(range(T + 1))
        cur_last = Signal()                  # QK: last tile of the block
        cur_qb = Signal()
        j = Signal(range(T))
        idx = Signal(range(max(E, F)))
        r = Signal(range(R))                 # row within the lane: fastest counter, one beat per R cycles
        hold = Signal(signed(max(self.k_fmt.bits, self.v_fmt.bits)))
        hold_keep = Signal()

        new_blk = ~blk_on
        qk_avail = Mux(new_blk, self.cfg.valid & q_full.bit_select(qb, 1), 1)
        qk_ok = ~sbusy.bit_select(xq[0], 1)
        sv_ok = (sln_st == SLN_READY) & acc_free
        n_src = Mux(new_blk, self.cfg.payload.n_keys, blk_n)
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
        with m.If(go_qk):
            i = xq
            m.d.sync += [st.eq(QK), j.eq(0), idx.eq(0), r.eq(0), cur_nt.eq(nt_new), cur_last.eq(kb_src + T >= n_src),
                         cur_qb.eq(qb),
                         d_nt[i].eq(nt_new), d_first[i].eq(kb_src == 0), d_last[i].eq(kb_src + T >= n_src),
                         d_kb[i].eq(kb_src), d_rb[i].eq(Mux(new_blk, ~rb, rb)),
                         d_causal[i].eq(Mux(new_blk, self.cfg.payload.causal, blk_causal)),
                         d_pos0[i].eq(Mux(new_blk, self.cfg.payload.pos0, blk_pos0)),
                         d_pmask[i].eq(Mux(new_blk, self.cfg.payload.pos_mask, blk_pmask)),
                         blk_kb.eq(kb_src + T), blk_on.eq(kb_src + T < n_src)]
            m.d.comb += sbusy_set.eq(Mux(xq[0], 2, 1))
            with m.If(new_blk):
                m.d.sync += [blk_n.eq(self.cfg.payload.n_keys), blk_causal.eq(self.cfg.payload.causal),
                             blk_pos0.eq(self.cfg.payload.pos0), blk_pmask.eq(self.cfg.payload.pos_mask),
                             rb.eq(~rb)]
        with m.If(go_sv):
            m.d.sync += [st.eq(SV), j.eq(0), idx.eq(0), r.eq(0), cur_nt.eq(d_nt[xs]), sln_st.eq(SLN_USE), acc_free.eq(0)]

        # a k/v beat is accepted at r == 0 and held for the other R − 1 rows of every lane
        m.d.comb += [self.k.ready.eq((st == QK) & (r == 0)), self.v.ready.eq((st == SV) & (r == 0))]
        k_fire = self.k.valid & self.k.ready
        v_fire = self.v.valid & self.v.ready
        fire = Signal()
        m.d.comb += fire.eq(k_fire | v_fire | ((r != 0) & (st != IDLE)))
        with m.If(k_fire | v_fire):
            m.d.sync += [hold.eq(Mux(st == QK, self.k.payload.data, self.v.payload)), hold_keep.eq(self.k.payload.keep)]
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
                        m.d.comb += q_clear.eq(Mux(cur_qb, 2, 1))
                with m.Else():
                    m.d.sync += [xs.eq(xs + 1), outstanding.eq(outstanding - 1),
                                 sln_st.eq(SLN_FREE)]

        # ============================================================ MAC lanes
        mp = Pipeline(m, prefix="mac_", ecp5=ecp5)
        is_qk0 = st == QK
        tag = {
            "valid": Tap(fire, 0), "qk": Tap(is_qk0, 0), "idx": Tap(idx, 0), "j": Tap(j, 0),
            "first": Tap(Mux(is_qk0, idx == 0, j == 0), 0), "dlast": Tap(idx == dim_last, 0),
            "last": Tap(last_beat, 0), "keep": Tap(Mux(r == 0, self.k.payload.keep, hold_keep), 0),
            "slot": Tap(xq, 0), "r": Tap(r, 0), "rlast": Tap(r_last, 0),
        }
        bval = Tap(Mux(r != 0, hold, Mux(is_qk0, self.k.payload.data, self.v.payload)), 0)
        b1 = mp.reg("b", lambda x: x, bval)
        qrp = [mem.read_port() for mem in qmem]
        srp = [mem.read_port() for mem in slnm]
        arp = [mem.read_port() for mem in accm]      # RMW read of the tile accumulator
        awp = [mem.write_port() for mem in accm]
        qk1 = mp.at(tag["qk"], 1)
        S3 = []
        v3 = mp.at(tag["valid"], 3)
        qk3 = mp.at(tag["qk"], 3)
        first3 = mp.at(tag["first"], 3)
        for l in range(L):
            m.d.comb += [qrp[l].addr.eq(Cat(idx[:(E - 1).bit_length()], r, cur_qb)),
                         srp[l].addr.eq(Cat(j, r))]
            a1 = Signal(signed(18), name=f"a1_{l}")
            m.d.comb += a1.eq(Mux(qk1, qrp[l].data, srp[l].data))
            prod = mp.mul(f"lane{l}", Tap(a1, 1), b1)
            assert prod.stage == 3
            # R accumulators in a ring that turns once per QK beat: its head is the current row
            acc = [Signal(signed(self.s_bits), name=f"qkacc{l}_{i}") for i in range(R)]
            s_now = Signal(signed(self.s_bits), name=f"qks{l}")
            m.d.comb += s_now.eq(Mux(first3, 0, acc[0]) + prod.value)
            with m.If(v3 & qk3):
                m.d.sync += [a.eq(b) for a, b in zip(acc, acc[1:] + [s_now])]
            S3.append(s_now)
            # SV: tile accumulator read at stage 2, written at stage 3
            m.d.comb += [arp[l].addr.eq(Cat(mp.at(tag["idx"], 2)[:fb], mp.at(tag["r"], 2))),
                         awp[l].addr.eq(Cat(mp.at(tag["idx"], 3)[:fb], mp.at(tag["r"], 3))),
                         awp[l].data.eq(Mux(first3, 0, arp[l].data) + prod.value),
                         awp[l].en.eq(v3 & ~qk3)]
        # end of an SV tile: the last accumulator write happens at stage 3
        sv_done = v3 & ~qk3 & mp.at(tag["last"], 3)
        with m.If(sv_done):
            m.d.sync += acc_full.eq(1)

        # ============================================================ score capture + score path
        # the R beats of a key's last element each shift the L finished dot products in (row r of
        # every lane lands at index r·L + l); the last one starts the shift-out, one row per cycle
        capv = v3 & qk3 & mp.at(tag["dlast"], 3)
        cap = [Signal(signed(self.s_bits), name=f"cap{i}") for i in range(VL)]
        cnt = Signal(range(VL + 1))
        c_j, c_keep, c_slot, c_last = Signal(range(T)), Signal(), Signal(2), Signal()
        c_l = Signal(range(VL))
        # (pipeline taps are built outside any m.If: their registers must load every cycle)
        j3, keep3, slot3, last3, rl3 = (mp.at(tag[n], 3) for n in ("j", "keep", "slot", "last", "rlast"))
        with m.If(capv):
            m.d.sync += [c.eq(s) for c, s in zip(cap, cap[L:] + S3)]
            with m.If(rl3):
                m.d.sync += [cnt.eq(VL), c_l.eq(0), c_j.eq(j3), c_keep.eq(keep3), c_slot.eq(slot3),
                             c_last.eq(last3)]
        with m.Elif(cnt != 0):
            m.d.sync += [c.eq(n) for c, n in zip(cap, cap[1:] + [cap[-1]])]
            m.d.sync += [cnt.eq(cnt - 1), c_l.eq(c_l + 1)]
        sp = Pipeline(m, prefix="sc_", ecp5=ecp5)
        it_v = Tap(cnt != 0, 0)
        # mask of the item: key past the query's position (causal) or padded; two stages (timing)
        pos_r = sp.reg("pos", d_pos0[c_slot] + (c_l & d_pmask[c_slot]), stage=0)
        kabs_r = sp.reg("kabs", d_kb[c_slot] + c_j, stage=0)
        mflags = sp.reg("mflags", Cat(~c_keep, d_causal[c_slot]), stage=0)
        masked = sp.reg("masked", lambda p, k, fl: fl[0] | (fl[1] & (k > p)), pos_r, kabs_r, mflags)
        it = {"l": Tap(c_l, 0), "j": Tap(c_j, 0), "bank": Tap(c_slot[0], 0),
              "last": Tap(c_last & (c_l == VL - 1), 0)}
        sc = sp.mul("scale", Tap(cap[0], 0), self.scale_code)
        sh = self.q_fmt.frac + self.k_fmt.frac + self.scale_frac - fs.frac
        rnd = _round(sp, "rnd", sc, sh)
        s_t = sp.reg("sat", lambda x: _sat(x, fs), rnd, shape=signed(fs.bits))
        ss = s_t.stage
        s_v, s_l, s_j, s_b = (sp.at(t, ss) for t in (it_v, it["l"], it["j"], it["bank"]))
        s_m, s_last = sp.at(masked, ss), sp.at(it["last"], ss)
        swp = sbuf.write_port()
        m.d.comb += [swp.addr.eq(Cat(s_j[:tb], s_l[:vb], s_b)),
                     swp.data.eq(Cat(s_t.value, s_m)), swp.en.eq(s_v)]
        # tile maxima: per bank a ring of VL registers that turns once per score (rows arrive in
        # order), so the head is always the current row's maximum: no index decoding
        rings = [[Signal(signed(fs.bits), name=f"tmax{b}_{i}") for i in range(VL)] for b in range(2)]
        cand = Mux(s_m, MIN, s_t.value)
        for b in range(2):
            ring_b = rings[b]
            with m.If(s_v & (s_b == b)):
                new_max = Mux((s_j == 0) | (cand > ring_b[0]), cand, ring_b[0])
                m.d.sync += [x.eq(y) for x, y in zip(ring_b, ring_b[1:] + [new_max])]
        with m.If(s_v & s_last):
            m.d.comb += sdone_set.eq(Mux(s_b, 2, 1))
        tmax = Array(rings[0] + rings[1])      # read by the 1D engine at Cat(row, bank)

        # ============================================================ 1D engine (exp, PRM, Σ SLN)
        x1 = Signal(2)
        on1 = Signal()
        l1 = Signal(range(VL))
        k1 = Signal(range(T + 1))
        nt1 = Signal(range(T + 1))
        first1 = Signal()
        mrun = Array(Signal(signed(fs.bits), name=f"mrun{i}") for i in range(VL))
        with m.If(~on1 & (sln_st == SLN_FREE) & sdone.bit_select(x1[0], 1)):
            m.d.sync += [on1.eq(1), l1.eq(0), k1.eq(0), nt1.eq(d_nt[x1]), first1.eq(d_first[x1]),
                         sln_st.eq(SLN_FILL)]
            m.d.comb += sdone_clr.eq(Mux(x1[0], 2, 1))
        b1x = x1[0]
        iss = on1
        srp1 = sbuf.read_port()
        m.d.comb += srp1.addr.eq(Cat((k1 - 1)[:tb], l1[:vb], b1x))
        lane_end = k1 == nt1
        with m.If(iss):
            with m.If(lane_end):
                m.d.sync += k1.eq(0)
                with m.If(l1 == VL - 1):
                    m.d.sync += [on1.eq(0), x1.eq(x1 + 1)]
                    m.d.comb += sbusy_clr.eq(Mux(b1x, 2, 1))  # last sbuf read issued this cycle
                with m.Else():
                    m.d.sync += l1.eq(l1 + 1)
            with m.Else():
                m.d.sync += k1.eq(k1 + 1)
        # stage 1: sbuf data; argument of the exponential
        ep = Pipeline(m, prefix="od_", ecp5=ecp5)
        t_v, t_l, t_k, t_end, t_b = (Tap(x, 0) for x in (iss, l1, k1, lane_end & (l1 == VL - 1), b1x))
        t_lend = Tap(lane_end, 0)
        # m_old and the tile max at stage 1, m_new at stage 2; mrun is written at stage 2 (a row's
        # items all compute the same m_new from the old or the new mrun)
        mo = ep.reg("mold", Mux(first1, MIN, mrun[l1]), stage=0)
        tx = ep.reg("tmx", tmax[Cat(l1[:vb], b1x)], stage=0)
        mn = ep.reg("mnew", lambda a, b: Mux(b > a, b, a), mo, tx)
        mw_v, mw_k, mw_l = ep.at(t_v, 2), ep.at(t_k, 2), ep.at(t_l, 2)
        with m.If(mw_v & (mw_k == 0)):
            m.d.sync += mrun[mw_l].eq(mn.value)
        sdat = Tap(srp1.data, 1)
        dfmt = num.dfmt
        arg = ep.reg("arg", lambda k, a, b, s: Mux(k == 0, a - b, s[:fs.bits].as_signed() - b), t_k, mo, mn, sdat)
        argc = ep.reg("argc", lambda a: Mux(a < dfmt.min_int, dfmt.min_int, a), arg, shape=signed(dfmt.bits))
        smask = ep.reg("smask", lambda s: s[fs.bits], sdat)
        expu = ExpNeg(dfmt, num.efmt, num.exp_table_bits, num.exp_guard_bits)
        m.submodules.expneg = expu
        es = argc.stage
        m.d.comb += [expu.x.valid.eq(ep.at(t_v, es)), expu.x.payload.eq(argc.value), expu.y.ready.eq(1)]
        ys = es + expu.latency
        y_v, y_l, y_k, y_b = (ep.at(t, ys) for t in (t_v, t_l, t_k, t_b))
        y_m, y_lend, y_end = ep.at(smask, ys), ep.at(t_lend, ys), ep.at(t_end, ys)
        prm = Array(Signal(unsigned(num.efmt.bits), name=f"prm{i}") for i in range(2 * L_))
        ssum = Array(Signal(unsigned(self.rd_fmt.bits), name=f"ssum{i}") for i in range(2 * L_))
        run = Signal(unsigned(self.rd_fmt.bits))
        yv = Mux(y_m, 0, expu.y.payload)
        swps = [mem.write_port() for mem in slnm]
        pi = Cat(y_l[:vb], y_b)
        for l in range(L):
            m.d.comb += [swps[l].addr.eq(Cat((y_k - 1)[:tb], y_l[lnb:vb])), swps[l].data.eq(yv),
                         swps[l].en.eq(y_v & (y_k != 0) & (y_l[:lnb] == l))]
        with m.If(y_v):
            with m.If(y_k == 0):
                m.d.sync += [prm[pi].eq(expu.y.payload), run.eq(0)]
            with m.Else():
                m.d.sync += run.eq(run + yv)
            with m.If(y_lend):
                m.d.sync += ssum[pi].eq(Mux(y_k == 0, 0, run + yv))
            with m.If(y_end):
                m.d.sync += sln_st.eq(SLN_READY)

        # ============================================================ rescale (RNV and RD)
        xr = Signal(2)
        onr = Signal()
        lr = Signal(range(VL))
        fr = Signal(range(F + 1))
        r_first, r_last, r_rb = Signal(), Signal(), Signal()
        rd = Array(Signal(unsigned(self.rd_fmt.bits), name=f"rd{i}") for i in range(2 * L_))
        start_r = ~onr & acc_full & (~d_first[xr] | ~ofull.bit_select(d_rb[xr], 1))
        with m.If(start_r):
            m.d.sync += [onr.eq(1), lr.eq(0), fr.eq(0), r_first.eq(d_first[xr]), r_last.eq(d_last[xr]),
                         r_rb.eq(d_rb[xr]), acc_full.eq(0)]
        with m.If(onr):
            with m.If(fr == F):
                m.d.sync += fr.eq(0)
                with m.If(lr == VL - 1):
                    m.d.sync += onr.eq(0)
                with m.Else():
                    m.d.sync += lr.eq(lr + 1)
            with m.Else():
                m.d.sync += fr.eq(fr + 1)
        rp = Pipeline(m, prefix="rs_", ecp5=ecp5)
        r_v = Tap(onr, 0)
        r_l, r_f, r_isrd = Tap(lr, 0), Tap(fr, 0), Tap(fr == F, 0)
        r_endt = Tap(onr & (fr == F) & (lr == VL - 1), 0)
        rxb = Signal(2)  # PRM / Σ SLN bank of the tile being rescaled
        m.d.comb += rxb.eq(xr)
        rrd = rnvm.read_port()
        m.d.comb += rrd.addr.eq(Cat(fr[:fb], lr[:vb], r_rb))
        arp2 = [mem.read_port() for mem in accm]
        for l in range(L):
            m.d.comb += arp2[l].addr.eq(Cat(fr[:fb], lr[lnb:vb]))
        bank_i = Cat(lr[:vb], xr[0])
        rdi = Cat(lr[:vb], r_rb)
        p_prm = rp.reg("prm", prm[bank_i], stage=0)
        p_sum = rp.reg("sum", ssum[bank_i], stage=0)
        p_rdo = rp.reg("rdo", rd[rdi], stage=0)
        lsel = rp.at(r_l, 1)
        accd = Array(p.data for p in arp2)[lsel[:lnb]]
        isrd1 = rp.at(r_isrd, 1)
        first_t = Tap(r_first, 0)
        old = rp.reg("old", lambda rdo, fst: Mux(fst, 0, Mux(isrd1, rdo.as_signed(), rrd.data)), p_rdo, first_t,
                     shape=signed(self.rnv_bits))
        add = rp.reg("add", lambda sm: Mux(isrd1, sm.as_signed(), accd), p_sum, shape=signed(self.rnv_bits))
        pr = rp.mul("resc", old, p_prm)
        new = rp.reg("new", lambda p, a: (p >> Fe) + a, pr, add, shape=signed(self.rnv_bits))
        ns = new.stage
        w_v, w_l, w_f, w_rd = (rp.at(t, ns) for t in (r_v, r_l, r_f, r_isrd))
        w_end = rp.at(r_endt, ns)
        # r_rb is constant during a pass: the next pass needs acc_full, which needs the SV that
        # waits for this pass's acc_free
        rwp = rnvm.write_port()
        m.d.comb += [rwp.addr.eq(Cat(w_f[:fb], w_l[:vb], r_rb)),
                     rwp.data.eq(new.value), rwp.en.eq(w_v & ~w_rd)]
        with m.If(w_v & w_rd):
            m.d.sync += rd[Cat(w_l[:vb], r_rb)].eq(new.value[:self.rd_fmt.bits])
        with m.If(w_end):
            m.d.sync += [acc_free.eq(1), xr.eq(xr + 1)]
            with m.If(r_last):
                m.d.comb += ofull_set.eq(Mux(r_rb, 2, 1))

        # ============================================================ output (reciprocal, y = RNV·r)
        ob = Signal()
        o_ph = Signal(2)     # 0 wait, 1 reciprocals, 2 products
        o_l = Signal(range(VL + 1))
        o_f = Signal(range(F))
        o_got = Signal(range(VL + 1))
        recu = Reciprocal(self.rd_fmt, num.rfmt, num.recip_table_bits, num.recip_guard_bits)
        m.submodules.recip = recu
        rr = Array(Signal(unsigned(num.rfmt.bits), name=f"recip{i}") for i in range(L_))
        rtag = Signal(range(VL + 1))
        rec_v, rec_x = Signal(), Signal(self.rd_fmt.bits)   # a register in front of the unit (timing)
        m.d.sync += [rec_v.eq((o_ph == 1) & (o_l < VL)), rec_x.eq(rd[Cat(o_l[:vb], ob)])]
        m.d.comb += [recu.y.ready.eq(1), recu.x.valid.eq(rec_v), recu.x.payload.eq(rec_x)]
        with m.If((o_ph == 0) & ofull.bit_select(ob, 1)):
            m.d.sync += [o_ph.eq(1), o_l.eq(0), o_got.eq(0), rtag.eq(0)]
        with m.If((o_ph == 1) & (o_l < VL)):
            m.d.sync += o_l.eq(o_l + 1)
        with m.If(recu.y.valid):
            m.d.sync += [rr[rtag[:vb]].eq(recu.y.payload), rtag.eq(rtag + 1)]
            with m.If(rtag == VL - 1):
                m.d.sync += [o_ph.eq(2), o_l.eq(0), o_f.eq(0)]
        adv = ~self.o.valid | self.o.ready
        op = Pipeline(m, en=adv, prefix="out_", ecp5=ecp5)
        o_iss = (o_ph == 2) & (o_l < VL)
        with m.If(adv & o_iss):
            with m.If(o_f == F - 1):
                m.d.sync += [o_f.eq(0), o_l.eq(o_l + 1)]
            with m.Else():
                m.d.sync += o_f.eq(o_f + 1)
        oaddr = Cat(o_f[:fb], o_l[:vb], ob)
        a_t = op.reg("addr", oaddr, stage=0)
        rnv_t = op.read("rnv", rnvm, self.rnv_bits, a_t)
        rnv_t = Tap(rnv_t.value.as_signed(), rnv_t.stage)
        r_t = op.reg("r", rr[o_l[:vb]], stage=0)
        yp = op.mul("y", rnv_t, r_t)
        osh = Fe + self.v_fmt.frac + num.Fr - self.out_fmt.frac
        yr = _round(op, "yr", yp, osh)
        ys_ = op.reg("ys", lambda x: _sat(x, self.out_fmt), yr, shape=self.o.payload.shape())
        o_last = Tap(o_iss & (o_f == F - 1) & (o_l == VL - 1), 0)
        ov = op.valid_chain(o_iss, ys_.stage)
        olast = op.at(o_last, ys_.stage)
        m.d.comb += [self.o.valid.eq(ov), self.o.payload.eq(ys_.value)]
        with m.If(self.o.valid & self.o.ready & olast):
            m.d.sync += [o_ph.eq(0), ob.eq(~ob)]
            m.d.comb += ofull_clr.eq(Mux(ob, 2, 1))
        return m


def _pack(fields) -> int:
    """Pack ``(value, bits)`` pairs, the first in the low bits (amaranth layout order)."""
    w, pos = 0, 0
    for v, bits in fields:
        w |= (int(v) & ((1 << bits) - 1)) << pos
        pos += bits
    return w


def schedule(engine: AttentionEngine, q, k, v, mask=None, causal: bool = False, blocks=None) -> dict:
    """The stream beats of a whole attention job for ``engine`` (what a DMA would send).

    Parameters
    ----------
    engine : AttentionEngine
    q : ndarray (B, H, Tq, E) of int codes
    k, v : ndarray (B, Hkv, Tk, E) / (B, Hkv, Tk, F)
    mask : ndarray (B, Tk) or None
        Key-padding mask (1 = take part).
    causal : bool
    blocks : iterable of int, optional
        Run only these blocks (indices into the job's block list, default all).

    Returns
    -------
    dict
        ``cfg``, ``q``, ``k``, ``v``: lists of payload words; ``out``: for each output beat the
        index ``(b, h, t, f)`` it holds, or ``None`` for a padding lane; ``n_blocks``;
        ``traffic_bytes`` (every beat of q, k, v, o at its format's byte width).
    """
    q, k, v = (np.asarray(a, dtype=np.int64) for a in (q, k, v))
    B, H, Tq, E = q.shape
    Hkv, Tk, F = k.shape[1], k.shape[2], v.shape[3]
    engine.check_job(H, Hkv, E, F, Tq, Tk)
    L = engine.block
    G = H // Hkv
    P = L // G
    lb = engine.max_len.bit_length()
    pmb = len(engine.cfg.payload.pos_mask)
    keep = np.ones((B, Tk), np.int64) if mask is None else (np.asarray(mask) != 0).astype(np.int64)
    job = [(b, g, p0) for b in range(B) for g in range(Hkv) for p0 in range(0, Tq, P)]
    sel = range(len(job)) if blocks is None else blocks
    out = {"cfg": [], "q": [], "k": [], "v": [], "out": []}
    kb, vb = engine.k_fmt.bits, engine.v_fmt.bits
    for i in sel:
        b, g, p0 = job[i]
        n_keys = min(Tk, p0 + P) if causal else Tk
        out["cfg"].append(_pack([(n_keys, lb), (causal, 1), (p0, engine.pos_bits), (P - 1, pmb)]))
        for lane in range(L):
            h, t = g * G + lane // P, p0 + lane % P
            row = q[b, h, t] if t < Tq else np.zeros(E, np.int64)
            out["q"] += [int(x) & ((1 << engine.q_fmt.bits) - 1) for x in row]
            out["out"] += [(b, h, t, f) if t < Tq else None for f in range(F)]
        for j in range(n_keys):
            out["k"] += [_pack([(x, kb), (keep[b, j], 1)]) for x in k[b, g, j]]
            out["v"] += [int(x) & ((1 << vb) - 1) for x in v[b, g, j]]
    out["n_blocks"] = len(sel)
    byte = lambda fmt: (fmt.bits + 7) // 8
    out["traffic_bytes"] = (len(out["q"]) * byte(engine.q_fmt) + len(out["k"]) * byte(engine.k_fmt)
                            + len(out["v"]) * byte(engine.v_fmt) + len(out["out"]) * byte(engine.out_fmt))
    return out


def unpack_output(engine: AttentionEngine, words, index, shape) -> np.ndarray:
    """Scatter output beats (payload words) into an array of ``shape`` using ``schedule()["out"]``.

    Entries no beat wrote are ``np.iinfo(np.int64).min``.
    """
    y = np.full(shape, np.iinfo(np.int64).min, np.int64)
    bits = engine.out_fmt.bits
    for w, ix in zip(words, index):
        if ix is not None:
            w = int(w)
            y[ix] = w - (1 << bits) if engine.out_fmt.signed and w >> (bits - 1) else w
    return y
