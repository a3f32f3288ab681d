"""The softmax unit: online statistics over one streamed row, a buffered replay for normalisation.

Each output is exactly :func:`celosia.ir.softmax.softmax_int` (see :mod:`celosia.ir.softmax` for
the arithmetic and the stated error bound). The exponentials and the reciprocal are the shared
primitives :class:`celosia.hw.primitives.ExpNeg` and :class:`~celosia.hw.primitives.Reciprocal`.

Three pipelines run concurrently on different rows; the input stream is read once. All are
built with :class:`celosia.hw.pipeline.Pipeline` (every product in registered DSP slices, every
memory read and every subtract/clip registered)::

    statistics  accept one beat per cycle into a free row buffer (scores + mask); beat b updates
                phase k = b mod P (P = ``phases`` = 8): its running max m_k (a 1-cycle loop, as
                is the row maximum m), then s_j − m_new (``lanes`` ExpNeg units) and
                m_old − m_new (one more ExpNeg); ``ExpNeg.latency`` cycles later the phase's
                running sum l_k ← ((l_k·c) >> Fe) + Σ e_j, a pipelined 37×27-bit product with
                P cycles between two updates of one phase (checked at generation time). When
                the row's last beat's update lands, the P phase accumulators are snapshotted.
    merge       one term per cycle for P cycles: l = Σ_k (l_k·exp(m_k − m)) >> Fe (one more
                ExpNeg), then the Reciprocal; r is stored with the row's buffer. Snapshots must be
                >= P + 1 cycles apart, so the last beat of a row of <= P beats may wait.
    replay      when the oldest buffered row has its r: read it back one beat per cycle,
                e_j = exp(s_j − m) (``lanes`` more ExpNeg units), p_j = round(e_j·r), masked → 0,
                into an output FIFO. Reads stall on FIFO credits only: backpressure never loses data.

``buffers`` row buffers (default 4, one ``lib.memory.Memory`` of ``buffers·ceil(max_len/lanes)``
beats) hold a row from its first beat until its last replay read. With ``B`` beats per row and no
stalls a row's first beat leaves ``latency`` cycles after its last beat arrived (117 at 16-bit
formats, max_len 64), and a row holds its buffer ``2·B + row_overhead`` cycles (85 there); back to
back, rows are accepted every ``max(B, (2·B + row_overhead)/buffers)`` cycles on average: with 4
buffers and ``B >= row_overhead/2`` that is every ``B`` cycles, one element per lane per cycle with
input and output both continuous (tests/test_softmax.py measures these).

Timing: ECP5-85F post-route Fmax of the unit alone in ``benchmarks/nonlinear_fpga.py``.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from celosia.hw.dsp import is_ecp5
from celosia.hw.pipeline import Pipeline, Tap
from celosia.hw.primitives import ExpNeg, Reciprocal
from celosia.ir.numerics import Fixed
from celosia.ir.softmax import SoftmaxParams, softmax_params

from celosia.errors import HardwareGenerationError

__all__ = ["Softmax"]


def _shape(fmt: Fixed):
    return signed(fmt.bits) if fmt.signed else unsigned(fmt.bits)


class Softmax(wiring.Component):
    """Softmax over rows of up to ``max_len`` scores, ``lanes`` scores per beat.

    Parameters
    ----------
    in_fmt : Fixed
        Signed score format.
    out_fmt : Fixed
        Probability format (at least 1 fractional bit); outputs never exceed 1.0.
    lanes : int
        Scores per beat (≥ 1).
    max_len : int
        Longest row in scores (≥ 1); the row buffer holds ``ceil(max_len/lanes)`` beats. A row is
        a whole number of beats: pad it with masked scores. Longer rows are not supported (the
        extra beats are not buffered and their outputs are undefined).
    buffers : int
        Row buffers (1..8): a row occupies one from its first beat in to its last replay read.
    **kw
        Further :func:`celosia.ir.softmax.softmax_params` arguments (extra bits, primitive tables).

    Attributes
    ----------
    i : In(stream.Signature(StructLayout({"s": ArrayLayout(signed(in.bits), lanes), "mask": unsigned(lanes), "first": 1, "last": 1})))
        Scores; ``mask`` bit j set marks score j as −∞. ``last`` ends a row; ``first`` is carried
        for the producer's convenience (rows are delimited by ``last``).
    o : Out(stream.Signature(StructLayout({"p": ArrayLayout(out shape, lanes), "first": 1, "last": 1})))
        Probabilities, equal to ``softmax_int`` of the row; masked scores and fully masked rows
        give 0.
    latency : int
        Cycles from the acceptance of a row's last beat to its first output beat on ``o`` (no
        stalls).
    row_overhead : int
        A row of ``B`` beats holds its buffer ``2·B + row_overhead`` cycles with no stalls, so
        back-to-back rows are accepted every ``max(B, (2·B + row_overhead)/buffers)`` cycles on
        average.
    rom_bits : int
        ROM of the ``2·lanes + 2`` exponential units and the reciprocal.
    buffer_bits : int
        Row buffer RAM (one ``lib.memory.Memory`` for all ``buffers``).

    Raises
    ------
    HardwareGenerationError
        Zero lanes or max_len, buffers outside 1..8, or formats too narrow (with the numbers).
    params : celosia.ir.softmax.SoftmaxParams
    """

    def __init__(self, in_fmt: Fixed, out_fmt: Fixed, lanes: int = 1, max_len: int = 1024, buffers: int = 4, **kw):
        self.params: SoftmaxParams = softmax_params(in_fmt, out_fmt, lanes, max_len, **kw)
        if isinstance(buffers, bool) or not isinstance(buffers, int) or not 1 <= buffers <= 8:
            raise HardwareGenerationError(f"softmax: buffers={buffers!r} is out of range 1..8",
                                          hint="use 4 row buffers for full throughput on rows of >= row_overhead/2 beats")
        p = self.params
        self.in_fmt, self.out_fmt, self.lanes, self.max_len = in_fmt, out_fmt, lanes, max_len
        self.buffers = buffers
        self.rom_bits = p.rom_bits
        self.buffer_bits = buffers * p.buffer_bits
        self.in_layout = data.StructLayout({
            "s": data.ArrayLayout(signed(in_fmt.bits), lanes),
            "mask": unsigned(lanes),
            "first": 1,
            "last": 1,
        })
        self.out_layout = data.StructLayout({
            "p": data.ArrayLayout(_shape(out_fmt), lanes),
            "first": 1,
            "last": 1,
        })
        self._exp_lat = _probe(self._new_exp()).latency
        self._rec_lat = _probe(self._new_recip()).latency
        plan = self._paths(None)
        loop = plan["write"] - plan["loop_read"] + 1  # cycles from a phase's read to its write landing
        if loop + 1 > p.phases:
            raise HardwareGenerationError(
                f"softmax: the running-sum update takes {loop} cycles, more than phases={p.phases} allows",
                hint=f"use phases >= {1 << loop.bit_length()}")
        self._plan = plan
        # last beat accepted at 0: its sum written at stage `write`, snapshot +1, P merge terms,
        # merge pipeline, reciprocal, r stored +1, replay read issued +1, replay pipeline, FIFO +1
        self.merge_cycles = p.phases
        self.latency = plan["write"] + 1 + p.phases + plan["merge"] + self._rec_lat + 2 + plan["replay"] + 1
        # the row's buffer is free once its last replay read issues: replay + 3 cycles (pipeline,
        # FIFO write and read registers) before that beat reaches o; checked in tests/test_softmax.py
        self.row_overhead = self.latency - plan["replay"] - 3
        self.fifo_depth = plan["replay"] + 4
        super().__init__({
            "i": In(stream.Signature(self.in_layout)),
            "o": Out(stream.Signature(self.out_layout)),
        })

    def _new_exp(self):
        p = self.params
        return ExpNeg(p.dfmt, p.efmt, p.exp_table_bits, p.exp_guard_bits)

    def _new_recip(self):
        p = self.params
        return Reciprocal(p.lfmt, p.rfmt, p.recip_table_bits, p.recip_guard_bits)

    # ------------------------------------------------------------------ datapaths
    def _paths(self, m: Module | None, io: dict | None = None, ecp5: bool = False) -> dict:
        """Build (``m`` given) or plan (``m`` None) the three pipelines; returns their stage counts.

        ``io`` carries the signals the pipelines connect to (ports, primitives, state registers);
        ``ecp5`` builds the products in ECP5 DSP blocks with their own registers.
        """
        p = self.params
        L, P, Fe = p.lanes, p.phases, p.Fe
        fi, dfmt = p.in_fmt, p.dfmt
        lo = fi.min_int
        E = self._exp_lat
        build = m is not None
        if not build:
            io = _plan_io(self)

        def clip(v):
            return Mux(v < dfmt.min_int, dfmt.min_int, Mux(v > 0, 0, v))

        # ---------------- statistics: beat -> phase max -> exponentials -> phase running sum
        sp = Pipeline(m, prefix="st_", ecp5=ecp5)
        v0, idx0, buf0 = Tap(io["accept"], 0), Tap(io["wr_ptr"], 0), Tap(io["wr_buf"], 0)
        last0, mk0 = Tap(io["last"], 0), Tap(io["mask"], 0)
        s0 = [Tap(v, 0) for v in io["s"]]
        cands = [sp.reg(f"cand{j}", lambda v, k, j=j: Mux(k[j], lo, v), s0[j], mk0) for j in range(L)]
        bmax = _reduce(sp, "bmax", cands, lambda a, b: Mux(a > b, a, b))
        ph = idx0.map(lambda v: v[:max(1, (P - 1).bit_length())] if P > 1 else Const(0, 1))
        first_ph = idx0.map(lambda v: v < P)
        first_row = idx0.map(lambda v: v == 0)
        # the phases' maxima sit in a ring that turns once per beat, so the current beat's phase
        # is always at ring[0] (no read multiplexer in this 1-cycle loop); a row's first P beats
        # start their phase afresh, so the ring needs no reset between rows
        ring, mglob = io["m_phase"], io["m_glob"]

        def upd(b, old, f):
            old = Mux(f, lo, old)
            return Mux(b > old, b, old)
        m_old = sp.reg("m_old", lambda f: Mux(f, lo, ring[0]), first_ph, stage=bmax.stage)
        m_new = sp.reg("m_new", lambda b, f: upd(b, ring[0], f), bmax, first_ph)
        m_row = sp.reg("m_row", lambda b, f: upd(b, mglob, f), bmax, first_row)
        if build:
            vs = sp.at(v0, bmax.stage)
            with m.If(vs):
                m.d.sync += [ring[k].eq(ring[k + 1]) for k in range(P - 1)]
                m.d.sync += ring[P - 1].eq(upd(bmax.value, ring[0], sp.at(first_ph, bmax.stage)))
                m.d.sync += mglob.eq(upd(bmax.value, mglob, sp.at(first_row, bmax.stage)))
        diffs = [sp.reg(f"d{j}", lambda a, b: a - b, s0[j], m_new) for j in range(L)]
        args = [sp.reg(f"arg{j}", clip, d, shape=signed(dfmt.bits)) for j, d in enumerate(diffs)]
        carg = sp.reg("carg", clip, sp.reg("cd", lambda a, b: a - b, m_old, m_new), shape=signed(dfmt.bits))
        if build:
            for j in range(L):
                m.d.comb += [io["sexp"][j].x.valid.eq(sp.at(v0, args[j].stage)), io["sexp"][j].x.payload.eq(args[j].value)]
            m.d.comb += [io["cexp"].x.valid.eq(sp.at(v0, carg.stage)), io["cexp"].x.payload.eq(carg.value)]
        es = [Tap(io["sexp"][j].y.payload, args[j].stage + E) for j in range(L)]
        c = Tap(io["cexp"].y.payload, carg.stage + E)
        es = [sp.reg(f"e{j}", lambda e, k, j=j: Mux(k[j], 0, e), es[j], mk0) for j in range(L)]
        esum = _reduce(sp, "esum", es, lambda a, b: a + b)
        # the phase's running sum: the product's operand registers (the DSP's own on ECP5) are the
        # read of the phase register, so the loop is read -> partial products -> sum -> write back
        lregs = io["l_phase"]
        read_stage = max(esum.stage, c.stage)
        l_rd = Tap(Mux(sp.at(first_ph, read_stage), 0, Array(lregs)[sp.at(ph, read_stage)]), read_stage)
        prod = sp.mul("lc", l_rd, c)
        l_new = sp.reg("l_new", lambda a, b: (a >> Fe) + b, prod, esum, shape=unsigned(p.lfmt.bits))
        w = l_new.stage
        if build:
            vw, kw_, lw = sp.at(v0, w), sp.at(ph, w), sp.at(last0, w)
            mw, mrw, iw, bw = sp.at(m_new, w), sp.at(m_row, w), sp.at(idx0, w), sp.at(buf0, w)
            with m.If(vw):
                m.d.sync += [Array(lregs)[kw_].eq(l_new.value), Array(io["m_fin"])[kw_].eq(mw)]
            # snapshot of the row's phase accumulators when its last beat's update lands
            m.d.sync += io["snap_go"].eq(vw & lw)
            with m.If(vw & lw):
                for k in range(P):
                    here = kw_ == k
                    m.d.sync += [io["snap_l"][k].eq(Mux(iw < k, 0, Mux(here, l_new.value, lregs[k]))),
                                 io["snap_m"][k].eq(Mux(iw < k, lo, Mux(here, mw, io["m_fin"][k])))]
                m.d.sync += [io["snap_row_m"].eq(mrw), io["snap_buf"].eq(bw)]

        # ---------------- merge: P terms (l_k · exp(m_k − m)) >> Fe, one per cycle, summed
        mp = Pipeline(m, prefix="mg_", ecp5=ecp5)
        k0 = Tap(io["merge_k"], 0)
        mv0 = Tap(io["merge_on"], 0)
        mdiff = mp.reg("diff", lambda k: Array(io["snap_m"])[k] - io["snap_row_m"], k0)
        marg = mp.reg("arg", clip, mdiff, shape=signed(dfmt.bits))
        ml = mp.reg("l", lambda k: Array(io["snap_l"])[k], k0)
        if build:
            m.d.comb += [io["mexp"].x.valid.eq(mp.at(mv0, marg.stage)), io["mexp"].x.payload.eq(marg.value)]
        mc = Tap(io["mexp"].y.payload, marg.stage + E)
        term = mp.reg("term", lambda v: v >> Fe, mp.mul("lc", ml, mc), shape=unsigned(p.lfmt.bits))
        t = term.stage
        if build:
            vt, ft, lt = mp.at(mv0, t), mp.at(k0, t) == 0, mp.at(k0, t) == P - 1
            acc = io["merge_acc"]
            with m.If(vt):
                m.d.sync += acc.eq(Mux(ft, term.value, acc + term.value))
            m.d.sync += io["rec_go"].eq(vt & lt)
            m.d.comb += [io["l_fin"].eq(Mux(ft, 0, acc) + term.value),
                         io["merge_buf"].eq(mp.at(Tap(io["snap_buf"], 0), t))]

        # ---------------- replay: read back, exp(s − m), times r, round, cap, mask -> FIFO
        rp_ = Pipeline(m, prefix="rp_", ecp5=ecp5)
        rv0, rb0 = Tap(io["issue"], 0), Tap(io["rd_buf"], 0)
        rfirst0, rlast0 = Tap(io["rd_first"], 0), Tap(io["rd_last"], 0)
        word = rp_.reg("word", lambda d: d, Tap(io["rd_data"], 1))
        mrow = rp_.reg("mrow", lambda b: Array(io["m_rowbuf"])[b], rb0, stage=1)
        rs = [word.map(lambda d, j=j: d[j * fi.bits:(j + 1) * fi.bits].as_signed()) for j in range(L)]
        rmask = word.map(lambda d: d[L * fi.bits:])
        rargs = [rp_.reg(f"arg{j}", clip, rp_.reg(f"d{j}", lambda a, b: a - b, rs[j], mrow), shape=signed(dfmt.bits))
                 for j in range(L)]
        if build:
            for j in range(L):
                m.d.comb += [io["rexp"][j].x.valid.eq(rp_.at(rv0, rargs[j].stage)),
                             io["rexp"][j].x.payload.eq(rargs[j].value)]
        re = [Tap(io["rexp"][j].y.payload, rargs[j].stage + E) for j in range(L)]
        r_op = rp_.reg("r", lambda b: Array(io["r_rowbuf"])[b], rb0, stage=re[0].stage - 1)
        sh = p.out_shift
        outs = []
        for j in range(L):
            pr = rp_.mul(f"er{j}", re[j], r_op)
            rnd = rp_.reg(f"rnd{j}", lambda v: ((v >> (sh - 1)) + 1) >> 1, pr)
            outs.append(rp_.reg(f"out{j}", lambda v, k, j=j: Mux(k[j], 0, Mux(v > p.cap, p.cap, v)), rnd, rmask,
                                shape=_shape(p.out_fmt)))
        o = max(x.stage for x in outs)
        if build:
            m.d.comb += [io["fifo"].w_en.eq(rp_.at(rv0, o)),
                         io["fifo"].w_data.eq(Cat(*(rp_.at(x, o) for x in outs), rp_.at(rfirst0, o), rp_.at(rlast0, o)))]
        return {"loop_read": read_stage, "write": w, "merge": t + 1, "replay": o}

    def elaborate(self, platform):
        m = Module()
        p = self.params
        L, P = p.lanes, p.phases
        fi = p.in_fmt
        D, NB, FD = p.depth, self.buffers, self.fifo_depth

        def new_exp(name):
            u = self._new_exp()
            m.submodules[name] = u
            m.d.comb += u.y.ready.eq(1)  # always advances: one argument per cycle
            return u

        io = {
            "sexp": [new_exp(f"stat_exp{j}") for j in range(L)],
            "cexp": new_exp("rescale_exp"),
            "mexp": new_exp("merge_exp"),
            "rexp": [new_exp(f"replay_exp{j}") for j in range(L)],
        }
        m.submodules.recip = rec = self._new_recip()
        m.d.comb += rec.y.ready.eq(1)

        m.submodules.buf = buf = Memory(shape=unsigned(L * fi.bits + L), depth=NB * D, init=[])
        wp = buf.write_port()
        rp = buf.read_port(domain="sync")
        base = Array(Const(b * D, range(NB * D + 1)) for b in range(NB))
        ob = p.out_fmt.bits
        m.submodules.fifo = fifo = SyncFIFOBuffered(width=L * ob + 2, depth=FD)
        m.d.comb += [self.o.valid.eq(fifo.r_rdy), self.o.payload.eq(fifo.r_data), fifo.r_en.eq(self.o.ready)]

        # ------------------------------------------------------------ per-buffer state
        busy = Signal(NB)  # holds a row whose replay has not been fully issued
        ready = Signal(NB)  # its reciprocal is known
        m_rowbuf = [Signal(signed(fi.bits), name=f"m_row{b}") for b in range(NB)]
        n_row = Array(Signal(range(D + 1), name=f"beats{b}") for b in range(NB))
        r_rowbuf = [Signal(unsigned(p.rfmt.bits), name=f"r_row{b}") for b in range(NB)]

        def nxt(b):
            return Mux(b == NB - 1, 0, b + 1)

        # ------------------------------------------------------------ accept into a free buffer
        wr_buf = Signal(range(NB))
        wr_ptr = Signal(range(D + 1))
        # a row's merge reads its snapshot for P cycles after the snapshot is taken, so two rows'
        # last beats (and snapshots) must be >= P + 1 cycles apart: only the last beat of a row of
        # <= P beats can wait (ready may depend on the payload of a valid beat)
        gap = P + 1
        since_last = Signal(range(gap + 1), init=gap)  # cycles since the last row's last beat (saturating)
        accept = Signal()
        gap_ok = ~self.i.payload.last | (wr_ptr >= gap - 1) | (since_last >= gap)
        m.d.comb += [self.i.ready.eq(~busy.bit_select(wr_buf, 1) & gap_ok), accept.eq(self.i.valid & self.i.ready)]
        s_in = [self.i.payload.s[j] for j in range(L)]
        m.d.comb += [
            wp.addr.eq(base[wr_buf] + wr_ptr),
            wp.data.eq(Cat(*s_in, self.i.payload.mask)),
            wp.en.eq(accept & (wr_ptr < D)),
        ]
        with m.If(accept & self.i.payload.last):
            m.d.sync += [wr_ptr.eq(0), wr_buf.eq(nxt(wr_buf)), n_row[wr_buf].eq(Mux(wr_ptr < D, wr_ptr + 1, D)),
                         since_last.eq(1)]
        with m.Else():
            with m.If(accept):
                m.d.sync += wr_ptr.eq(Mux(wr_ptr < D, wr_ptr + 1, wr_ptr))
            with m.If(since_last < gap):
                m.d.sync += since_last.eq(since_last + 1)

        # ------------------------------------------------------------ statistics and merge state
        lw = p.lfmt.bits
        io.update({
            "accept": accept, "wr_ptr": wr_ptr, "wr_buf": wr_buf, "last": self.i.payload.last,
            "mask": self.i.payload.mask, "s": s_in,
            "m_phase": [Signal(signed(fi.bits), name=f"m_phase{k}") for k in range(P)],
            "m_glob": Signal(signed(fi.bits), name="m_glob"),
            "l_phase": [Signal(unsigned(lw), name=f"l_phase{k}") for k in range(P)],
            "m_fin": [Signal(signed(fi.bits), name=f"m_fin{k}") for k in range(P)],
            "snap_go": Signal(), "snap_l": [Signal(unsigned(lw), name=f"snap_l{k}") for k in range(P)],
            "snap_m": [Signal(signed(fi.bits), name=f"snap_m{k}") for k in range(P)],
            "snap_row_m": Signal(signed(fi.bits)), "snap_buf": Signal(range(NB)),
            "merge_k": Signal(range(P)), "merge_on": Signal(), "merge_acc": Signal(unsigned(lw)),
            "rec_go": Signal(), "l_fin": Signal(unsigned(lw)), "merge_buf": Signal(range(NB)),
        })
        # the merge walks k = 0..P-1 after a snapshot (snapshots are >= P cycles apart)
        with m.If(io["snap_go"]):
            m.d.sync += [io["merge_on"].eq(1), io["merge_k"].eq(0)]
            m.d.sync += Array(m_rowbuf)[io["snap_buf"]].eq(io["snap_row_m"])
        with m.Elif(io["merge_on"]):
            m.d.sync += io["merge_k"].eq(io["merge_k"] + 1)
            with m.If(io["merge_k"] == P - 1):
                m.d.sync += io["merge_on"].eq(0)

        # ------------------------------------------------------------ replay: issue reads on credits
        rd_buf = Signal(range(NB))
        rd_ptr = Signal(range(D + 1))
        credits = Signal(range(FD + 1))  # replayed beats issued and not yet popped from the FIFO
        issue, pop = Signal(), Signal()
        is_last = rd_ptr + 1 >= n_row[rd_buf]
        m.d.comb += [pop.eq(self.o.valid & self.o.ready),
                     issue.eq(ready.bit_select(rd_buf, 1) & (credits < FD)),
                     rp.addr.eq(base[rd_buf] + rd_ptr), rp.en.eq(1)]
        m.d.sync += credits.eq(credits + issue - pop)
        with m.If(issue):
            with m.If(is_last):
                m.d.sync += [rd_ptr.eq(0), rd_buf.eq(nxt(rd_buf))]
            with m.Else():
                m.d.sync += rd_ptr.eq(rd_ptr + 1)
        io.update({"issue": issue, "rd_buf": rd_buf, "rd_first": rd_ptr == 0, "rd_last": is_last,
                   "rd_data": rp.data, "m_rowbuf": m_rowbuf, "r_rowbuf": r_rowbuf, "fifo": fifo})

        plan = self._paths(m, io, is_ecp5(platform))
        assert plan == self._plan

        # ------------------------------------------------------------ reciprocal of the merged sum
        # rec_go, l_fin_r and rec_buf0 are registered at the same edge (the merge's last term)
        m.d.comb += [rec.x.valid.eq(io["rec_go"]), rec.x.payload.eq(_reg(m, io["l_fin"], "l_fin_r"))]
        rbuf = _reg(m, io["merge_buf"], "rec_buf0")
        for k in range(self._rec_lat):
            r = Signal(range(NB), name=f"rec_buf{k + 1}")
            m.d.sync += r.eq(rbuf)
            rbuf = r
        with m.If(rec.y.valid):
            m.d.sync += Array(r_rowbuf)[rbuf].eq(rec.y.payload)

        # busy / ready bits: set and clear never hit the same bit in one cycle
        for b in range(NB):
            with m.If(accept & self.i.payload.last & (wr_buf == b)):
                m.d.sync += busy[b].eq(1)
            with m.Elif(issue & is_last & (rd_buf == b)):
                m.d.sync += busy[b].eq(0)
            with m.If(rec.y.valid & (rbuf == b)):
                m.d.sync += ready[b].eq(1)
            with m.Elif(issue & is_last & (rd_buf == b)):
                m.d.sync += ready[b].eq(0)
        return m


def _probe(unit):
    """A primitive built only to read its ``latency``: not elaborated, so silence the unused warning."""
    unit._MustUse__silence = True
    return unit


def _reg(m: Module, value, name: str) -> Signal:
    r = Signal(len(value), name=name)
    m.d.sync += r.eq(value)
    return r


def _reduce(pipe: Pipeline, name: str, taps: list[Tap], op) -> Tap:
    """``op`` over ``taps`` by a registered binary tree (the tap itself for one)."""
    while len(taps) > 1:
        nxt = [pipe.reg(name, op, x, y) for x, y in zip(taps[0::2], taps[1::2])]
        if len(taps) % 2:
            nxt.append(taps[-1])
        taps = nxt
    return taps[0]


def _plan_io(unit: "Softmax") -> dict:
    """Stand-in signals of the right shapes for a planning run of :meth:`Softmax._paths`."""
    p = unit.params
    L, P, fi, lw, NB = p.lanes, p.phases, p.in_fmt, p.lfmt.bits, unit.buffers

    class _Y:
        def __init__(self, shape):
            self.y = type("y", (), {"payload": Signal(shape)})()
    e = lambda: _Y(unsigned(p.efmt.bits))  # noqa: E731
    return {
        "accept": Signal(), "wr_ptr": Signal(range(p.depth + 1)), "wr_buf": Signal(range(NB)), "last": Signal(),
        "mask": Signal(L), "s": [Signal(signed(fi.bits)) for _ in range(L)],
        "m_phase": [Signal(signed(fi.bits)) for _ in range(P)], "m_glob": Signal(signed(fi.bits)),
        "l_phase": [Signal(unsigned(lw)) for _ in range(P)], "m_fin": [Signal(signed(fi.bits)) for _ in range(P)],
        "snap_l": [Signal(unsigned(lw)) for _ in range(P)], "snap_m": [Signal(signed(fi.bits)) for _ in range(P)],
        "snap_row_m": Signal(signed(fi.bits)), "snap_buf": Signal(range(NB)), "merge_k": Signal(range(P)),
        "merge_on": Signal(),
        "sexp": [e() for _ in range(L)], "cexp": e(), "mexp": e(), "rexp": [e() for _ in range(L)],
        "issue": Signal(), "rd_buf": Signal(range(NB)), "rd_first": Signal(), "rd_last": Signal(),
        "rd_data": Signal(L * fi.bits + L), "m_rowbuf": [Signal(signed(fi.bits)) for _ in range(NB)],
        "r_rowbuf": [Signal(unsigned(p.rfmt.bits)) for _ in range(NB)],
    }
