"""The LayerNorm and RMSNorm units: one statistics pass over a buffered row, then the normalisation.

Each unit computes exactly :func:`celosia.ir.norm.norm_int` (:func:`~celosia.ir.norm.layernorm_int`
/ :func:`~celosia.ir.norm.rmsnorm_int`); see :mod:`celosia.ir.norm` for the integer algorithm and the
stated error bound. The two share one generator (:class:`_Norm`); a flag selects the mode.

Operation, per row of ``D`` elements arriving ``lanes`` per beat (``NB = D / lanes`` beats)::

    ACC     accept NB beats (i.ready = 1), write each to one bank of the row buffer
            (lib.memory.Memory, two banks of NB words of lanes·in.bits) and accumulate S1 = Σq, S2 = Σq² (register → square → add)
    DRAIN   2 cycles: the last beat leaves the square/accumulate registers
    ST0     n·S2 and S1² (registered multipliers)
    ST1     Z = max(n·S2 − S1², 0)·2^(2k) + e_q·n²
    ST2     bitlen(Z) → per-row shift amounts (constant tables)
    ST3     Zm = Z normalised to z_bits bits
    SEND    Zm into the Rsqrt primitive (celosia.hw.primitives.Rsqrt, 12 stages)
    WAIT    r = rsqrt(Zm) handed, with S1, the shift and the bank, to the output side once that is
            idle; the input side flips banks and returns to ACC for the next row
    output  (concurrently with the next row's ACC..WAIT) read the bank back; per lane a 6-stage pipeline (memory read, A = n·q − S1,
            A·r, round(>> per-row shift) = t, t·γ, + β and round/saturate) → o; stalls as a whole
            while o is held (o.ready low)

The input stream is read once; ``i.ready`` is high only in ACC. With no input gaps and ``o.ready``
high the unit takes a new row every ``cycles_per_row = NB + 20`` cycles (the statistics of row k+1
overlap the output of row k; the output side needs only NB + 6); ``latency`` (= 27) is the number of cycles
from the acceptance of a row's last input beat to its first output beat being valid.
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from celosia.hw.dsp import is_ecp5
from celosia.hw.pipeline import Pipeline, Tap
from celosia.hw.primitives import Rsqrt, shift_right
from celosia.ir.norm import NormParams, norm_params
from celosia.ir.numerics import Fixed, frac_for_range, quantize

from celosia.errors import HardwareGenerationError

__all__ = ["LayerNorm", "RMSNorm"]


def _sbits(maxabs: int) -> int:
    """Signed width holding ``[-maxabs, maxabs]``."""
    return max(int(maxabs).bit_length() + 1, 2)


class _Norm(wiring.Component):
    """Shared generator of :class:`LayerNorm` (``rms=False``) and :class:`RMSNorm` (``rms=True``)."""

    def __init__(self, in_fmt, out_fmt, gamma, beta, eps, lanes, gamma_fmt, beta_fmt, rms, **kw):
        u = "rmsnorm" if rms else "layernorm"
        if isinstance(lanes, bool) or not isinstance(lanes, int) or lanes < 1:
            raise HardwareGenerationError(f"{u} unit: lanes={lanes!r} must be an integer >= 1",
                                          hint="use lanes=1 for one element per beat")
        g = np.asarray(gamma, dtype=np.float64).reshape(-1)
        D = int(g.size)
        if D < 1:
            raise HardwareGenerationError(f"{u} unit: γ has {D} entries, so the row length D = 0",
                                          hint="pass γ (and β) with one entry per element of a row")
        if D % lanes:
            raise HardwareGenerationError(f"{u} unit: row length D={D} is not a multiple of lanes={lanes}",
                                          hint=f"use lanes dividing {D}")
        if not isinstance(out_fmt, Fixed):
            raise HardwareGenerationError(f"{u} unit: out_fmt must be a Fixed, got {out_fmt!r}", hint="pass Fixed(bits, frac)")
        if gamma_fmt is None:
            gb = out_fmt.bits
            gamma_fmt = Fixed(gb, frac_for_range(float(np.max(np.abs(g))), gb))
        b = None
        if not rms:
            b = np.asarray(beta, dtype=np.float64).reshape(-1)
            if b.size != D:
                raise HardwareGenerationError(f"{u} unit: β has {b.size} entries, γ has {D}",
                                              hint="pass one β per element of a row")
            if beta_fmt is None:
                beta_fmt = out_fmt
        self.params: NormParams = norm_params(D, in_fmt, out_fmt, gamma_fmt, beta_fmt if not rms else None, eps,
                                              rms=rms, **kw)
        self.rms = rms
        self.D = D
        self.lanes = lanes
        self.beats = D // lanes
        self.in_fmt, self.out_fmt = in_fmt, out_fmt
        self.gamma_fmt, self.beta_fmt = gamma_fmt, (None if rms else beta_fmt)
        self.gamma_codes = quantize(g, gamma_fmt)
        self.beta_codes = None if rms else quantize(b, beta_fmt)
        self.rsqrt = Rsqrt(self.params.rsqrt_in, self.params.rsqrt_out, self.params.table_bits, self.params.guard_bits)
        self.sum_latency, self.row_latency, self.out_latency = self._plan()
        # input side per row: ACC (beats) -> DRAIN (sum pipeline empties) -> CALC (row pipeline)
        # -> SEND -> Rsqrt -> WAIT (hand-off); the output side then reads the row back through
        # its own pipeline. The constants (+3, +2) are the FSM's hand-over cycles, checked against
        # the simulated cycle counts in tests/test_norm.py.
        self.latency = self.sum_latency + self.row_latency + self.rsqrt.latency + self.out_latency + 3
        self.cycles_per_row = self.beats + self.sum_latency + self.row_latency + self.rsqrt.latency + 2
        self.rom_bits = self.params.rom_bits
        self.buffer_bits = 2 * D * in_fmt.bits
        super().__init__({
            "i": In(stream.Signature(data.ArrayLayout(signed(in_fmt.bits), lanes))),
            "o": Out(stream.Signature(data.ArrayLayout(signed(out_fmt.bits), lanes))),
        })

    # ------------------------------------------------------------------ widths
    def _widths(self) -> dict:
        """Exact widths of the row statistics (``S1``, ``S2``, ``Z``, ``A``)."""
        p, D, B = self.params, self.D, self.in_fmt.bits
        qmax = 1 << (B - 1)
        s2max = D * qmax * qmax
        zmax = ((D * s2max) << (2 * p.k)) + p.eps_term
        return {"s1": _sbits(D * qmax), "s2": s2max.bit_length(), "z": zmax.bit_length(),
                "a": _sbits(2 * D * qmax)}

    # ------------------------------------------------------------------ datapaths
    def _sum_path(self, pipe: Pipeline, q: list) -> tuple[Tap, Tap]:
        """Per beat: ``Σ q`` and ``Σ q²`` over the lanes (registered products and adder trees)."""
        qs = [pipe.reg(f"q{ln}", lambda v: v, Tap(v, 0)) for ln, v in enumerate(q)]
        sqs = [pipe.mul(f"sq{ln}", t, t) for ln, t in enumerate(qs)]
        s1b, s2b = _tree(pipe, "s1b", qs), _tree(pipe, "s2b", sqs)
        stage = max(s1b.stage, s2b.stage)
        return Tap(pipe.at(s1b, stage), stage), Tap(pipe.at(s2b, stage), stage)

    def _row_path(self, pipe: Pipeline, S1: Tap, S2: Tap) -> dict[str, Tap]:
        """Per row: ``Z``, its normalised ``Zm``, the output shift (minus one) and the sticky mask."""
        p, D, w = self.params, self.D, self._widths()
        Wz = p.z_bits
        Lz = -2 * p.s_min  # left pre-shift of Z so the normalising shift is >= 0
        L0 = max(0, 1 - (p.sh_const + p.s_min))
        nS2 = pipe.mul("nS2", S2, D)
        if self.rms:
            V = nS2
        else:
            S1sq = pipe.mul("S1sq", S1, S1)
            V = pipe.reg("V", lambda a, b: Mux(a < b, 0, a - b), nS2, S1sq, shape=unsigned(len(nS2.value)))
        Z = pipe.reg("Z", lambda v: (v << (2 * p.k)) + p.eps_term, V, shape=unsigned(w["z"]))
        bl = _bit_length(pipe, "bl", Z, w["z"])
        zsh_vals, tsh_vals = [], []
        for n_bits in range(w["z"] + 1):
            sft = -((Wz - max(n_bits, 1)) // 2)
            zsh_vals.append(2 * sft + Lz)
            tsh_vals.append(p.sh_const + sft + L0 - 1)  # stored minus one
        zsh = pipe.reg("zsh", lambda v: Array(Const(x, range(max(zsh_vals) + 1)) for x in zsh_vals)[v], bl)
        tsh = pipe.reg("tsh", lambda v: Array(Const(x, range(max(tsh_vals) + 1)) for x in tsh_vals)[v], bl)
        zl = Z.map(lambda v: Cat(Const(0, Lz), v) if Lz else v)
        Zm = shift_right(pipe, "Zm", zl, zsh).map(lambda v: v[:Wz])
        mw = max(max(tsh_vals), 1)
        mask = pipe.reg("mask", lambda t: (Const(1, mw + 1) << t) - 1, tsh, shape=unsigned(mw))
        return {"Zm": Zm, "tsh": tsh, "mask": mask}

    def _out_path(self, pipe: Pipeline, ln: int, q: Tap, g: Tap, b: Tap | None, row: dict) -> Tap:
        """One lane of the output side: ``A = n·q − S1``, ``t = round(A·r)``, ``t·γ + β``, round, saturate.

        ``row`` holds the row constants (``S1``, ``r``, ``tsh``, ``mask``) as plain values: they are
        stable while the row is output, so they need no delay registers.
        """
        p, D = self.params, self.D
        L0 = max(0, 1 - (p.sh_const + p.s_min))
        n_ = f"l{ln}_"
        qD = pipe.mul(n_ + "qD", q, D)
        A = qD if self.rms else pipe.reg(n_ + "A", lambda v: v - row["S1"], qD, shape=signed(self._widths()["a"]))
        P = pipe.mul(n_ + "P", A, Tap(row["r"], A.stage))
        pw = P.map(lambda v: (v << L0) if L0 else v)
        # t = round_half_even(pw·2^-(tsh+1)); tsh (the shift minus one) and its mask are per row
        sticky = pipe.reg(n_ + "sticky", lambda v: (v.as_unsigned()[:len(row["mask"])] & row["mask"]).any(), pw)
        hi = shift_right(pipe, n_ + "hi", pw, Tap(row["tsh"], pw.stage))

        def rnd(h, st):
            fl = h >> 1
            return fl + (h[0] & (st | fl[0]))
        t = pipe.reg(n_ + "t", rnd, hi, sticky, shape=signed(p.t_bits))
        u = pipe.mul(n_ + "u", t, g)
        acc = u if b is None else pipe.reg(
            n_ + "acc", lambda x, y: x + ((y << p.beta_shift) if p.beta_shift else y), u, b)
        ps = p.prod_shift
        if ps > 0:
            def he(v):
                fl2 = v >> ps
                rem = v[:ps]
                return fl2 + ((rem > (1 << (ps - 1))) | ((rem == (1 << (ps - 1))) & fl2[0]))
            acc = pipe.reg(n_ + "rnd", he, acc)
        elif ps < 0:
            acc = acc.map(lambda v: v << -ps)
        fo = self.out_fmt
        return pipe.reg(n_ + "out", lambda v: Mux(v > fo.max_int, fo.max_int, Mux(v < fo.min_int, fo.min_int, v)),
                        acc, shape=signed(fo.bits))

    def _plan(self):
        """Latencies of the three datapaths, from a planning run (no hardware)."""
        B, L = self.in_fmt.bits, self.lanes
        w = self._widths()
        s1b, s2b = self._sum_path(Pipeline(None), [Signal(signed(B)) for _ in range(L)])
        row = self._row_path(Pipeline(None), Tap(Signal(signed(w["s1"])), 0), Tap(Signal(unsigned(w["s2"])), 0))
        rowv = {"S1": Signal(signed(w["s1"])), "r": Signal(unsigned(self.params.rsqrt_frac + 2)),
                "tsh": Signal.like(row["tsh"].value), "mask": Signal.like(row["mask"].value)}
        pipe = Pipeline(None)
        q = Tap(Signal(signed(B)), 2)
        g = Tap(Signal(signed(self.gamma_fmt.bits)), 2)
        b = None if self.rms else Tap(Signal(signed(self.beta_fmt.bits)), 2)
        out = self._out_path(pipe, 0, q, g, b, rowv)
        return max(s1b.stage, s2b.stage), max(row["Zm"].stage, row["mask"].stage), out.stage

    def elaborate(self, platform):
        m = Module()
        p = self.params
        L, NB, D = self.lanes, self.beats, self.D
        B = self.in_fmt.bits
        w = self._widths()
        m.submodules.rsqrt = rs = self.rsqrt
        ecp5 = is_ecp5(platform)
        gw = self.gamma_fmt.bits
        bw = 0 if self.rms else self.beta_fmt.bits

        # ---- memories: row buffer (two banks), γ / β ROMs (one word per beat, lanes packed)
        m.submodules.buf = buf = Memory(shape=unsigned(L * B), depth=2 * NB, init=[])
        wp = buf.write_port()

        def pack(codes, width):
            words = []
            for j in range(NB):
                v = 0
                for ln in range(L):
                    v |= (int(codes[j * L + ln]) & ((1 << width) - 1)) << (ln * width)
                words.append(v)
            return words

        m.submodules.grom = grom = Memory(shape=unsigned(L * gw), depth=NB, init=pack(self.gamma_codes, gw))
        if not self.rms:
            m.submodules.brom = brom = Memory(shape=unsigned(L * bw), depth=NB, init=pack(self.beta_codes, bw))

        # ---- statistics pass: accept, buffer, per-beat sums (pipelined), accumulate
        cw = (NB + 1).bit_length()
        wcnt, rcnt, ocnt = Signal(cw), Signal(cw), Signal(cw)
        S1 = Signal(signed(w["s1"]))
        S2 = Signal(unsigned(w["s2"]))
        fire, in_acc, clear = Signal(), Signal(), Signal()
        wbank, obank, obusy = Signal(), Signal(), Signal()
        m.d.comb += [self.i.ready.eq(in_acc), fire.eq(self.i.valid & in_acc)]
        m.d.comb += [wp.addr.eq(Mux(wbank, wcnt + NB, wcnt)), wp.data.eq(self.i.payload.as_value()), wp.en.eq(fire)]
        s1b, s2b = self._sum_path(Pipeline(m, prefix="st_", ecp5=ecp5), [self.i.payload[ln] for ln in range(L)])
        vchain = [fire]
        for k in range(self.sum_latency):
            v = Signal(name=f"sum_v{k + 1}")
            m.d.sync += v.eq(vchain[-1])
            vchain.append(v)
        stats_busy = Cat(*vchain[1:]).any()
        with m.If(clear):
            m.d.sync += [S1.eq(0), S2.eq(0)]
        with m.Elif(vchain[-1]):
            m.d.sync += [S1.eq(S1 + s1b.value), S2.eq(S2 + s2b.value)]

        # ---- per-row constants: a free-running pipeline from S1, S2 (held until the hand-off)
        row = self._row_path(Pipeline(m, prefix="row_", ecp5=ecp5), Tap(S1, 0), Tap(S2, 0))
        r = Signal(unsigned(p.rsqrt_frac + 2))  # row constants of the row being output
        otsh = Signal.like(row["tsh"].value)
        omask = Signal.like(row["mask"].value)
        oS1 = Signal.like(S1)
        tsh_h = Signal.like(otsh)
        mask_h = Signal.like(omask)
        calc = Signal(range(self.row_latency + 1))

        # ---- output side: one stall-as-a-whole pipeline for all lanes
        adv, iss = Signal(), Signal()
        m.d.comb += adv.eq(~self.o.valid | self.o.ready)
        opipe = Pipeline(m, adv, prefix="o_", ecp5=ecp5)
        m.d.comb += iss.eq(obusy & (rcnt < NB))
        addr = Tap(Mux(obank, rcnt + NB, rcnt), 0)
        qw = opipe.read("q", buf, L * B, addr)
        gwd = opipe.read("g", grom, L * gw, Tap(rcnt, 0))
        bwd = None if self.rms else opipe.read("b", brom, L * bw, Tap(rcnt, 0))
        rowv = {"S1": oS1, "r": r, "tsh": otsh, "mask": omask}
        outs = []
        for ln in range(L):
            q = qw.map(lambda v: v[ln * B:(ln + 1) * B].as_signed())
            g = gwd.map(lambda v: v[ln * gw:(ln + 1) * gw].as_signed())
            b = None if bwd is None else bwd.map(lambda v: v[ln * bw:(ln + 1) * bw].as_signed())
            outs.append(self._out_path(opipe, ln, q, g, b, rowv))
        m.d.comb += self.o.valid.eq(opipe.valid_chain(iss, self.out_latency))
        m.d.comb += [self.o.payload[ln].eq(o.value) for ln, o in enumerate(outs)]
        with m.If(adv & iss):
            m.d.sync += rcnt.eq(rcnt + 1)
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += ocnt.eq(ocnt + 1)
            with m.If(ocnt == NB - 1):
                m.d.sync += obusy.eq(0)

        # ---- control
        with m.FSM(name="norm"):
            with m.State("ACC"):
                m.d.comb += in_acc.eq(1)
                with m.If(fire):
                    m.d.sync += wcnt.eq(wcnt + 1)
                    with m.If(wcnt == NB - 1):
                        m.next = "DRAIN"
            with m.State("DRAIN"), m.If(~stats_busy):
                m.d.sync += calc.eq(self.row_latency)
                m.next = "CALC"
            with m.State("CALC"):  # S1, S2 final: wait for the row pipeline to settle
                m.d.sync += calc.eq(calc - 1)
                with m.If(calc == 1):
                    m.d.sync += [tsh_h.eq(row["tsh"].value), mask_h.eq(row["mask"].value)]
                    m.next = "SEND"
            with m.State("SEND"):
                m.d.comb += [rs.x.valid.eq(1), rs.x.payload.eq(row["Zm"].value)]
                with m.If(rs.x.ready):
                    m.next = "WAIT"
            with m.State("WAIT"):
                # hand the row to the output side once it is idle; then accept the next row
                m.d.comb += rs.y.ready.eq(~obusy)
                with m.If(rs.y.valid & ~obusy):
                    m.d.sync += [r.eq(rs.y.payload), otsh.eq(tsh_h), omask.eq(mask_h), oS1.eq(S1), obank.eq(wbank),
                                 obusy.eq(1), rcnt.eq(0), ocnt.eq(0), wbank.eq(~wbank), wcnt.eq(0)]
                    m.d.comb += clear.eq(1)
                    m.next = "ACC"
        return m


def _tree(pipe: Pipeline, name: str, taps: list[Tap]) -> Tap:
    """Sum of ``taps`` by a registered binary adder tree (the tap itself for one)."""
    while len(taps) > 1:
        nxt = [pipe.reg(name, lambda a, b: a + b, x, y) for x, y in zip(taps[0::2], taps[1::2])]
        if len(taps) % 2:
            nxt.append(taps[-1])
        taps = nxt
    return taps[0]


def _bit_length(pipe: Pipeline, name: str, v: Tap, width: int, group: int = 16) -> Tap:
    """``bitlen(v)`` over two stages: per ``group``-bit slice (nonzero, bit length), then the top slice."""
    groups = [(lo, min(group, width - lo)) for lo in range(0, width, group)]
    out_shape = range(width + 1)

    def slice_bl(x, lo, n):
        bl = Const(0, range(n + 1))
        for k in range(n):  # the highest set bit is applied last and wins
            bl = Mux(x[lo + k], k + 1, bl)
        return bl
    per = [pipe.reg(f"{name}_g", lambda x, lo=lo, n=n: slice_bl(x, lo, n), v) for lo, n in groups]
    nz = [pipe.reg(f"{name}_nz", lambda x, lo=lo, n=n: x[lo:lo + n].any(), v) for lo, n in groups]

    def pick(*vals):
        k = len(groups)
        bls, nzs = vals[:k], vals[k:]
        out = Const(0, out_shape)
        for (lo, _), b, z in zip(groups, bls, nzs):  # the highest nonzero slice wins
            out = Mux(z, lo + b, out)
        return out
    return pipe.reg(name, pick, *per, *nz, shape=out_shape)


class LayerNorm(_Norm):
    """LayerNorm over rows of ``D = len(gamma)`` elements, ``lanes`` elements per beat, bit-exact with
    :func:`celosia.ir.norm.layernorm_int`.

    Parameters
    ----------
    in_fmt, out_fmt : Fixed
        Signed input and output formats (outputs saturate).
    gamma, beta : array_like of float, shape (D,)
        The model's scale and shift, quantized (round half-even, saturate) to ``gamma_fmt`` /
        ``beta_fmt`` into ROMs.
    eps : float
        Variance epsilon (> 0), quantized as :func:`celosia.ir.norm.norm_params` describes.
    lanes : int
        Elements per beat; must divide ``D``.
    gamma_fmt : Fixed, optional
        Default: ``out_fmt.bits`` bits with the most fractional bits that hold ``max|γ|``.
    beta_fmt : Fixed, optional
        Default: ``out_fmt``.
    **kw
        ``z_bits``, ``rsqrt_frac``, ``t_guard``, ``eps_bits``, ``table_bits``, ``guard_bits``
        (see :func:`celosia.ir.norm.norm_params`).

    Attributes
    ----------
    i : In(stream.Signature(ArrayLayout(signed(in_fmt.bits), lanes)))
    o : Out(stream.Signature(ArrayLayout(signed(out_fmt.bits), lanes)))
    latency : int
        Cycles from the acceptance of a row's last input beat to its first output beat valid
        (``15 + Rsqrt.latency`` = 27).
    cycles_per_row : int
        ``D/lanes + 20``: steady-state cycles per row with no input gaps and ``o.ready`` high (the
        row buffer has two banks: row k is output while row k+1 is accumulated).
    params : celosia.ir.norm.NormParams
    gamma_codes, beta_codes : numpy.ndarray
        The quantized constants (pass them to the golden model).
    rom_bits : int
        γ/β ROMs plus the rsqrt seed table.
    buffer_bits : int
        Row buffer RAM, ``2·D·in_fmt.bits`` (two banks).

    Raises
    ------
    HardwareGenerationError
        lanes < 1, D = 0, D not a multiple of lanes, unsigned or too narrow formats, eps ≤ 0, and
        the rsqrt primitive's own checks; the message names the numbers.
    """

    def __init__(self, in_fmt: Fixed, out_fmt: Fixed, gamma, beta, eps: float = 1e-5, lanes: int = 1,
                 gamma_fmt: Fixed | None = None, beta_fmt: Fixed | None = None, **kw):
        super().__init__(in_fmt, out_fmt, gamma, beta, eps, lanes, gamma_fmt, beta_fmt, False, **kw)


class RMSNorm(_Norm):
    """RMSNorm ``y = x·γ/√(E[x²] + eps)`` over rows of ``D = len(gamma)`` elements, bit-exact with
    :func:`celosia.ir.norm.rmsnorm_int`. Parameters and attributes as :class:`LayerNorm` without β."""

    def __init__(self, in_fmt: Fixed, out_fmt: Fixed, gamma, eps: float = 1e-5, lanes: int = 1,
                 gamma_fmt: Fixed | None = None, **kw):
        super().__init__(in_fmt, out_fmt, gamma, None, eps, lanes, gamma_fmt, None, True, **kw)
