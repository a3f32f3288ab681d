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
from celosia.hw.primitives import Rsqrt
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
        self.latency = 15 + self.rsqrt.latency
        self.cycles_per_row = self.beats + 8 + self.rsqrt.latency
        self.rom_bits = self.params.rom_bits
        self.buffer_bits = 2 * D * in_fmt.bits
        super().__init__({
            "i": In(stream.Signature(data.ArrayLayout(signed(in_fmt.bits), lanes))),
            "o": Out(stream.Signature(data.ArrayLayout(signed(out_fmt.bits), lanes))),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        L, NB, D = self.lanes, self.beats, self.D
        B = self.in_fmt.bits
        m.submodules.rsqrt = rs = self.rsqrt

        # ---- exact widths
        qmax = 1 << (B - 1)
        s1max = D * qmax
        s2max = D * qmax * qmax
        vmax = D * s2max
        zmax = (vmax << (2 * p.k)) + p.eps_term
        zw = zmax.bit_length()
        amax = 2 * D * qmax
        Wz = p.z_bits
        Lz = -2 * p.s_min  # left pre-shift of Z so the normalising shift is >= 0
        sh_min = p.sh_const + p.s_min
        L0 = max(0, 1 - sh_min)  # left pre-shift of A·r so the rounding shift is >= 1
        gw, ow = self.gamma_fmt.bits, self.out_fmt.bits
        bw = 0 if self.rms else self.beta_fmt.bits

        # ---- memories: row buffer, γ / β ROMs (one word per beat, lanes packed)
        m.submodules.buf = buf = Memory(shape=unsigned(L * B), depth=2 * NB, init=[])  # two row banks
        wp = buf.write_port()
        rp = buf.read_port(domain="sync")

        def pack(codes, w):
            words = []
            for j in range(NB):
                v = 0
                for ln in range(L):
                    v |= (int(codes[j * L + ln]) & ((1 << w) - 1)) << (ln * w)
                words.append(v)
            return words

        m.submodules.grom = grom = Memory(shape=unsigned(L * gw), depth=NB, init=pack(self.gamma_codes, gw))
        gp = grom.read_port(domain="sync")
        if not self.rms:
            m.submodules.brom = brom = Memory(shape=unsigned(L * bw), depth=NB, init=pack(self.beta_codes, bw))
            bp = brom.read_port(domain="sync")

        # ---- statistics pass
        cw = (NB + 1).bit_length()
        wcnt = Signal(cw)
        rcnt = Signal(cw)
        ocnt = Signal(cw)
        S1 = Signal(signed(_sbits(s1max)))
        S2 = Signal(unsigned(s2max.bit_length()))
        fire = Signal()
        in_acc = Signal()
        m.d.comb += [self.i.ready.eq(in_acc), fire.eq(self.i.valid & in_acc)]
        wbank, obank, obusy = Signal(), Signal(), Signal()
        m.d.comb += [wp.addr.eq(Mux(wbank, wcnt + NB, wcnt)), wp.data.eq(self.i.payload.as_value()), wp.en.eq(fire)]
        v1, v2 = Signal(), Signal()
        q1 = [Signal(signed(B), name=f"q1_{ln}") for ln in range(L)]
        sq1 = Signal(signed(_sbits(L * qmax)))
        sqs = [Signal(unsigned((qmax * qmax).bit_length()), name=f"sq2_{ln}") for ln in range(L)]
        m.d.sync += [v1.eq(fire), v2.eq(v1)]
        m.d.sync += [q1[ln].eq(self.i.payload[ln]) for ln in range(L)]
        m.d.sync += [sqs[ln].eq(q1[ln] * q1[ln]) for ln in range(L)]
        m.d.sync += sq1.eq(sum(q1[1:], q1[0]))
        sum_sq = sum(sqs[1:], sqs[0])
        clear = Signal()
        with m.If(clear):
            m.d.sync += [S1.eq(0), S2.eq(0)]
        with m.Elif(v2):
            m.d.sync += [S1.eq(S1 + sq1), S2.eq(S2 + sum_sq)]
        # (sq1 is registered one cycle after q1, aligned with sqs: both reflect the beat of v2)

        nS2 = Signal(unsigned(vmax.bit_length()))
        S1sq = Signal(unsigned(vmax.bit_length()))
        Z = Signal(unsigned(zw))
        ztab_bits = range(zw + 1)
        zsh_vals, tsh_vals = [], []
        for bl in ztab_bits:
            s = -((Wz - max(bl, 1)) // 2)
            zsh_vals.append(2 * s + Lz)
            tsh_vals.append(p.sh_const + s + L0 - 1)  # stored minus one
        zsh = Signal(range(max(zsh_vals) + 1))
        tsh = Signal(range(max(tsh_vals) + 1))
        Zm = Signal(unsigned(Wz))
        r = Signal(unsigned(p.rsqrt_frac + 2))  # row constants of the row being output
        otsh = Signal.like(tsh)
        oS1 = Signal.like(S1)
        bl = Signal(range(zw + 1))
        m.d.comb += bl.eq(0)
        for kb in range(zw):
            with m.If(Z[kb]):
                m.d.comb += bl.eq(kb + 1)

        # ---- output pipeline
        adv = Signal()
        m.d.comb += adv.eq(~self.o.valid | self.o.ready)
        iss = Signal()
        vs = [Signal(name=f"vo{k}") for k in range(1, 7)]
        with m.If(adv):
            m.d.sync += vs[0].eq(iss)
            m.d.sync += [vs[k].eq(vs[k - 1]) for k in range(1, 6)]
        m.d.comb += self.o.valid.eq(vs[5])
        m.d.comb += [rp.addr.eq(Mux(obank, rcnt + NB, rcnt)), rp.en.eq(adv)]
        for port in ([gp] if self.rms else [gp, bp]):
            m.d.comb += [port.addr.eq(rcnt), port.en.eq(adv)]
        m.d.comb += iss.eq(obusy & (rcnt < NB))
        with m.If(adv & iss):
            m.d.sync += rcnt.eq(rcnt + 1)
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += ocnt.eq(ocnt + 1)
            with m.If(ocnt == NB - 1):
                m.d.sync += obusy.eq(0)

        aw = _sbits(amax)
        rw = p.rsqrt_frac + 2
        tw = p.t_bits
        for ln in range(L):
            n_ = f"l{ln}_"
            q = rp.data[ln * B:(ln + 1) * B].as_signed()
            g1 = gp.data[ln * gw:(ln + 1) * gw].as_signed()
            A2 = Signal(signed(aw), name=n_ + "A2")
            g2, g3, g4 = (Signal(signed(gw), name=n_ + f"g{k}") for k in (2, 3, 4))
            P3 = Signal(signed(aw + rw + 1), name=n_ + "P3")
            t4 = Signal(signed(tw), name=n_ + "t4")
            u5 = Signal(signed(tw + gw), name=n_ + "u5")
            out6 = Signal(signed(ow), name=n_ + "out6")
            aval = q * D if self.rms else q * D - oS1
            with m.If(adv):
                m.d.sync += [A2.eq(aval), g2.eq(g1), g3.eq(g2), g4.eq(g3)]
                m.d.sync += P3.eq(A2 * r)
                # t = round_half_even((P3·2^L0)·2^-(tsh+1)); tsh holds the shift minus one
                pw = P3 << L0 if L0 else P3
                hi = pw >> otsh  # floor(P·2^-(shift-1))
                fl = hi >> 1
                guard = hi[0]
                sticky = (pw - (hi << otsh)) != 0
                m.d.sync += t4.eq(fl + (guard & (sticky | fl[0])))
                m.d.sync += u5.eq(t4 * g4)
            if self.rms:
                acc = u5
            else:
                b1 = bp.data[ln * bw:(ln + 1) * bw].as_signed()
                b2, b3, b4, b5 = (Signal(signed(bw), name=n_ + f"b{k}") for k in (2, 3, 4, 5))
                with m.If(adv):
                    m.d.sync += [b2.eq(b1), b3.eq(b2), b4.eq(b3), b5.eq(b4)]
                acc = u5 + (b5 << p.beta_shift) if p.beta_shift else u5 + b5
            ps = p.prod_shift
            if ps > 0:
                fl2 = acc >> ps
                rem = acc[:ps]
                half = 1 << (ps - 1)
                rnd = fl2 + ((rem > half) | ((rem == half) & fl2[0]))
            else:
                rnd = acc << -ps if ps < 0 else acc
            fo = self.out_fmt
            with m.If(adv):
                m.d.sync += out6.eq(Mux(rnd > fo.max_int, fo.max_int, Mux(rnd < fo.min_int, fo.min_int, rnd)))
            m.d.comb += self.o.payload[ln].eq(out6)

        # ---- control
        with m.FSM(name="norm"):
            with m.State("ACC"):
                m.d.comb += in_acc.eq(1)
                with m.If(fire):
                    m.d.sync += wcnt.eq(wcnt + 1)
                    with m.If(wcnt == NB - 1):
                        m.next = "DRAIN"
            with m.State("DRAIN"), m.If(~v1 & ~v2):
                m.next = "ST0"
            with m.State("ST0"):
                m.d.sync += nS2.eq(S2 * D)
                if not self.rms:
                    m.d.sync += S1sq.eq(S1 * S1)
                m.next = "ST1"
            with m.State("ST1"):
                vv = nS2 - S1sq if not self.rms else nS2
                v = Mux(nS2 < S1sq, 0, vv) if not self.rms else vv
                m.d.sync += Z.eq((v << (2 * p.k)) + p.eps_term)
                m.next = "ST2"
            with m.State("ST2"):
                m.d.sync += zsh.eq(Array(Const(x, len(zsh)) for x in zsh_vals)[bl])
                m.d.sync += tsh.eq(Array(Const(x, len(tsh)) for x in tsh_vals)[bl])
                m.next = "ST3"
            with m.State("ST3"):
                zl = Cat(Const(0, Lz), Z) if Lz else Z
                m.d.sync += Zm.eq((zl >> zsh)[:Wz])
                m.next = "SEND"
            with m.State("SEND"):
                m.d.comb += [rs.x.valid.eq(1), rs.x.payload.eq(Zm)]
                with m.If(rs.x.ready):
                    m.next = "WAIT"
            with m.State("WAIT"):
                # hand the row to the output side once it is idle; then accept the next row
                m.d.comb += rs.y.ready.eq(~obusy)
                with m.If(rs.y.valid & ~obusy):
                    m.d.sync += [r.eq(rs.y.payload), otsh.eq(tsh), oS1.eq(S1), obank.eq(wbank), obusy.eq(1),
                                 rcnt.eq(0), ocnt.eq(0), wbank.eq(~wbank), wcnt.eq(0)]
                    m.d.comb += clear.eq(1)
                    m.next = "ACC"
        return m


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
