"""The softmax unit: online statistics over one streamed row, a buffered replay for normalisation.

Each output is exactly :func:`celosia.ir.softmax.softmax_int` (see :mod:`celosia.ir.softmax` for
the arithmetic and the stated error bound). The exponentials and the reciprocal are the shared
primitives :class:`celosia.hw.primitives.ExpNeg` and :class:`~celosia.hw.primitives.Reciprocal`.

Two independent pipelines run concurrently on different rows; the input stream is read once::

    statistics  accept one beat per cycle into a free row buffer (scores + mask), update the
                running max m, send s_j − m_new (``lanes`` ExpNeg units) and m_old − m_new (one
                more ExpNeg); ``ExpNeg.latency`` cycles later the running sum
                l ← ((l·c) >> Fe) + Σ e_j is updated (one beat per cycle). After the row's last
                beat, l goes through the Reciprocal pipeline; r is stored with the row's buffer.
    replay      when the oldest buffered row has its r: read it back one beat per cycle,
                e_j = exp(s_j − m) (``lanes`` more ExpNeg units), p_j = round(e_j·r), masked → 0,
                into an output FIFO. Reads stall on FIFO credits only: backpressure never loses data.

``buffers`` row buffers (default 3, one ``lib.memory.Memory`` of ``buffers·ceil(max_len/lanes)``
beats) hold a row from its first beat until its last replay read. Cycle counts with ``B`` beats per
row and no stalls: ``latency = 2·ExpNeg.latency + Reciprocal.latency + 7 = 36`` cycles from a row's
last beat in to its first beat out, so a lone row takes ``2·B + 35`` cycles from first beat in to last
beat out. A row holds its buffer ``2·B + 21`` cycles (``row_overhead = 21``); back to back, rows are
accepted every ``max(B, (2·B + 21)/buffers)`` cycles on average: with 3 buffers and ``B >= 21``
that is every ``B`` cycles, one element per lane per cycle with input and output both continuous
(measured: B = 64 → period 64; B = 8 → 8, 8, 21 repeating; 1 buffer, B = 32 → 85).

Timing caveat: the running-sum update ``l·c`` (``lfmt.bits × (Fe + 1)`` bits, 37 × 27 at the
default max_len = 1024 and 22 output fractional bits) closes a one-cycle loop, so its product is
not registered (the one exception to the register-around-every-multiplier rule); the beat maximum
and the ``s − m_new`` subtraction also sit in front of the ExpNeg input register. Not yet measured
with nextpnr.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
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
        A row of ``B`` beats holds its buffer ``2·B + row_overhead`` cycles (21) with no stalls, so
        back-to-back rows are accepted every ``max(B, (2·B + row_overhead)/buffers)`` cycles on
        average.
    rom_bits : int
        ROM of the ``2·lanes + 1`` exponential units and the reciprocal.
    buffer_bits : int
        Row buffer RAM (one ``lib.memory.Memory`` for all ``buffers``).

    Raises
    ------
    HardwareGenerationError
        Zero lanes or max_len, buffers outside 1..8, or formats too narrow (with the numbers).
    params : celosia.ir.softmax.SoftmaxParams
    """

    def __init__(self, in_fmt: Fixed, out_fmt: Fixed, lanes: int = 1, max_len: int = 1024, buffers: int = 3, **kw):
        self.params: SoftmaxParams = softmax_params(in_fmt, out_fmt, lanes, max_len, **kw)
        if isinstance(buffers, bool) or not isinstance(buffers, int) or not 1 <= buffers <= 8:
            raise HardwareGenerationError(f"softmax: buffers={buffers!r} is out of range 1..8",
                                          hint="use 3 row buffers for full throughput at rows of >= 21 beats")
        p = self.params
        self.in_fmt, self.out_fmt, self.lanes, self.max_len = in_fmt, out_fmt, lanes, max_len
        self.buffers = buffers
        self.rom_bits = p.rom_bits
        self.buffer_bits = buffers * p.buffer_bits
        self._exp_lat = ExpNeg.latency
        self._rec_lat = Reciprocal.latency
        # last beat accepted at t: exp result at t+E, l_fin at t+E+1, recip result at t+E+1+R,
        # r/ready at +1, read data +1, exp +E, product +1, rounded +1 (FIFO write), FIFO out +1
        self.latency = 2 * self._exp_lat + self._rec_lat + 7
        self.row_overhead = self._exp_lat + self._rec_lat + 1
        self.fifo_depth = self._exp_lat + 7
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
        super().__init__({
            "i": In(stream.Signature(self.in_layout)),
            "o": Out(stream.Signature(self.out_layout)),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        L, Fe = p.lanes, p.Fe
        fi, dfmt = p.in_fmt, p.dfmt
        E, D, NB, FD = self._exp_lat, p.depth, self.buffers, self.fifo_depth

        def new_exp(name):
            u = ExpNeg(dfmt, p.efmt, p.exp_table_bits, p.exp_guard_bits)
            m.submodules[name] = u
            m.d.comb += u.y.ready.eq(1)  # always advances: one argument per cycle
            return u

        sexp = [new_exp(f"stat_exp{j}") for j in range(L)]
        cexp = new_exp("rescale_exp")
        rexp = [new_exp(f"replay_exp{j}") for j in range(L)]
        m.submodules.recip = rec = Reciprocal(p.lfmt, p.rfmt, p.recip_table_bits, p.recip_guard_bits)
        m.d.comb += rec.y.ready.eq(1)

        m.submodules.buf = buf = Memory(shape=unsigned(L * fi.bits + L), depth=NB * D, init=[])
        wp = buf.write_port()
        rp = buf.read_port(domain="sync")
        base = Array(Const(b * D, range(NB * D + 1)) for b in range(NB))

        ob = p.out_fmt.bits
        m.submodules.fifo = fifo = SyncFIFOBuffered(width=L * ob + 2, depth=FD)
        m.d.comb += [self.o.valid.eq(fifo.r_rdy), self.o.payload.eq(fifo.r_data), fifo.r_en.eq(self.o.ready)]

        def clip(v):
            return Mux(v < dfmt.min_int, dfmt.min_int, Mux(v > 0, 0, v))

        def delay(value, n, name):
            for k in range(n):
                r = Signal(len(value), name=f"{name}{k + 1}")
                m.d.sync += r.eq(value)
                value = r
            return value

        # ------------------------------------------------------------ per-buffer state
        busy = Signal(NB)  # holds a row whose replay has not been fully issued
        ready = Signal(NB)  # its reciprocal is known
        m_row = Array(Signal(signed(fi.bits), name=f"m_row{b}") for b in range(NB))
        n_row = Array(Signal(range(D + 1), name=f"beats{b}") for b in range(NB))
        r_row = Array(Signal(unsigned(p.rfmt.bits), name=f"r_row{b}") for b in range(NB))

        def nxt(b):
            return Mux(b == NB - 1, 0, b + 1)

        # ------------------------------------------------------------ statistics: accept, buffer, max
        wr_buf = Signal(range(NB))
        wr_ptr = Signal(range(D + 1))
        m_stat = Signal(signed(fi.bits), init=fi.min_int)
        s_in = [self.i.payload.s[j] for j in range(L)]
        mk_in = self.i.payload.mask
        accept = Signal()
        m.d.comb += [self.i.ready.eq(~busy.bit_select(wr_buf, 1)), accept.eq(self.i.valid & self.i.ready)]
        bmax = Const(fi.min_int, signed(fi.bits))
        for j in range(L):
            cand = Mux(mk_in[j], fi.min_int, s_in[j])
            bmax = Mux(cand > bmax, cand, bmax)
        m_new = Signal(signed(fi.bits))
        m.d.comb += m_new.eq(Mux(bmax > m_stat, bmax, m_stat))
        m.d.comb += [
            wp.addr.eq(base[wr_buf] + wr_ptr),
            wp.data.eq(Cat(*s_in, mk_in)),
            wp.en.eq(accept & (wr_ptr < D)),
        ]
        with m.If(accept):
            with m.If(self.i.payload.last):
                m.d.sync += [m_stat.eq(fi.min_int), m_row[wr_buf].eq(m_new), wr_ptr.eq(0), wr_buf.eq(nxt(wr_buf)),
                             n_row[wr_buf].eq(Mux(wr_ptr < D, wr_ptr + 1, D))]
            with m.Else():
                m.d.sync += [m_stat.eq(m_new), wr_ptr.eq(Mux(wr_ptr < D, wr_ptr + 1, wr_ptr))]
        for j in range(L):
            m.d.comb += [sexp[j].x.valid.eq(accept), sexp[j].x.payload.eq(clip(s_in[j] - m_new))]
        m.d.comb += [cexp.x.valid.eq(accept), cexp.x.payload.eq(clip(m_stat - m_new))]
        ssb = delay(Cat(accept, mk_in, self.i.payload.last, wr_buf), E, "stat_sb")
        s_valid, s_mask, s_last, s_buf = ssb[0], ssb[1:1 + L], ssb[1 + L], ssb[2 + L:]

        # running sum (one beat per cycle), then the reciprocal of the row's l
        l_acc = Signal(unsigned(p.lfmt.bits))
        l_fin = Signal(unsigned(p.lfmt.bits))
        rec_go = Signal()
        rec_buf = Signal(range(NB))
        esum = sum((Mux(s_mask[j], 0, sexp[j].y.payload) for j in range(L)), Const(0, 1))
        l_next = ((l_acc * cexp.y.payload) >> Fe) + esum
        m.d.sync += rec_go.eq(0)
        with m.If(s_valid):
            with m.If(s_last):
                m.d.sync += [l_acc.eq(0), l_fin.eq(l_next), rec_go.eq(1), rec_buf.eq(s_buf)]
            with m.Else():
                m.d.sync += l_acc.eq(l_next)
        m.d.comb += [rec.x.valid.eq(rec_go), rec.x.payload.eq(l_fin)]
        r_buf = delay(rec_buf, Reciprocal.latency, "rec_buf")
        with m.If(rec.y.valid):
            m.d.sync += r_row[r_buf].eq(rec.y.payload)

        # ------------------------------------------------------------ replay: issue reads on credits
        rd_buf = Signal(range(NB))
        rd_ptr = Signal(range(D + 1))
        rd_v, rd_first, rd_last = Signal(), Signal(), Signal()
        rd_bufd = Signal(range(NB))
        credits = Signal(range(FD + 1))  # replayed beats issued and not yet popped from the FIFO
        issue, pop = Signal(), Signal()
        is_last = rd_ptr + 1 >= n_row[rd_buf]
        m.d.comb += [pop.eq(self.o.valid & self.o.ready),
                     issue.eq(ready.bit_select(rd_buf, 1) & (credits < FD)),
                     rp.addr.eq(base[rd_buf] + rd_ptr), rp.en.eq(issue)]
        m.d.sync += [rd_v.eq(issue), credits.eq(credits + issue - pop)]
        with m.If(issue):
            m.d.sync += [rd_first.eq(rd_ptr == 0), rd_last.eq(is_last), rd_bufd.eq(rd_buf)]
            with m.If(is_last):
                m.d.sync += [rd_ptr.eq(0), rd_buf.eq(nxt(rd_buf))]
            with m.Else():
                m.d.sync += rd_ptr.eq(rd_ptr + 1)
        # busy / ready bits: set and clear never hit the same bit in one cycle
        for b in range(NB):
            with m.If(accept & self.i.payload.last & (wr_buf == b)):
                m.d.sync += busy[b].eq(1)
            with m.Elif(issue & is_last & (rd_buf == b)):
                m.d.sync += busy[b].eq(0)
            with m.If(rec.y.valid & (r_buf == b)):
                m.d.sync += ready[b].eq(1)
            with m.Elif(issue & is_last & (rd_buf == b)):
                m.d.sync += ready[b].eq(0)

        s_rd = [rp.data[j * fi.bits:(j + 1) * fi.bits].as_signed() for j in range(L)]
        mk_rd = rp.data[L * fi.bits:]
        for j in range(L):
            m.d.comb += [rexp[j].x.valid.eq(rd_v), rexp[j].x.payload.eq(clip(s_rd[j] - m_row[rd_bufd]))]
        rsb = delay(Cat(rd_v, mk_rd, rd_first, rd_last, rd_bufd), E, "replay_sb")
        r_valid, r_mask, r_first, r_last, r_rbuf = rsb[0], rsb[1:1 + L], rsb[1 + L], rsb[2 + L], rsb[3 + L:]

        # normalisation: registered operands (exp output register, r register), registered product
        r_op = Signal(unsigned(p.rfmt.bits))
        m.d.comb += r_op.eq(r_row[r_rbuf])
        ew = p.efmt.bits + p.rfmt.bits
        prod = [Signal(unsigned(ew), name=f"prod{j}") for j in range(L)]
        v1, mk1, f1, la1 = Signal(), Signal(L), Signal(), Signal()
        m.d.sync += [v1.eq(r_valid), mk1.eq(r_mask), f1.eq(r_first), la1.eq(r_last)]
        for j in range(L):
            m.d.sync += prod[j].eq(rexp[j].y.payload * r_op)
        outs = [Signal(unsigned(ob), name=f"out{j}") for j in range(L)]
        v2, f2, la2 = Signal(), Signal(), Signal()
        sh = p.out_shift
        for j in range(L):
            rnd = ((prod[j] >> (sh - 1)) + 1) >> 1
            m.d.sync += outs[j].eq(Mux(mk1[j], 0, Mux(rnd > p.cap, p.cap, rnd)))
        m.d.sync += [v2.eq(v1), f2.eq(f1), la2.eq(la1)]
        m.d.comb += [fifo.w_en.eq(v2), fifo.w_data.eq(Cat(*outs, f2, la2))]
        return m
