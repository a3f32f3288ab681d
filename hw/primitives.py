"""Pipelined nonlinear primitives shared by the softmax and LayerNorm/RMSNorm units.

:class:`ExpNeg` (``e^x`` for ``x <= 0``), :class:`Reciprocal` (``1/x``) and :class:`Rsqrt`
(``1/√x``) each take one input code per cycle on a ``lib.stream`` port ``x`` and produce one
output code per input on ``y``, bit-exact against :func:`celosia.ir.approx.exp_neg_int`,
:func:`~celosia.ir.approx.reciprocal_int` and :func:`~celosia.ir.approx.rsqrt_int`. Their tables
are built at elaboration time by the same functions the golden models use
(:func:`~celosia.ir.approx.exp_neg_table`, …) and held in ``lib.memory.Memory`` ROMs.

**Handshake.** Every unit is a linear pipeline of ``latency`` register stages that advances as a
whole in a cycle where the output can accept (``~y.valid | y.ready``); ``x.ready`` is that
advance signal. With ``y.ready`` held high the unit accepts one input per cycle (II = 1) and an
input accepted in cycle ``c`` is presented on ``y`` in cycle ``c + latency``. Every multiplier has
a register on each input and on its output (ECP5 DSP packing).
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from celosia.ir import approx
from celosia.ir.numerics import Fixed

__all__ = ["ExpNeg", "Reciprocal", "Rsqrt"]


def _shape(fmt: Fixed):
    return signed(fmt.bits) if fmt.signed else unsigned(fmt.bits)


class _Pipe:
    """Registers that load only when the pipeline advances."""

    def __init__(self, m: Module, adv):
        self.m = m
        self.adv = adv

    def reg(self, value, shape, name: str) -> Signal:
        r = Signal(shape, name=name, reset_less=True)
        with self.m.If(self.adv):
            self.m.d.sync += r.eq(value)
        return r


def _shr(v, k: int):
    """``v`` shifted right by the constant ``k`` (left when ``k < 0``), as a value."""
    return v >> k if k >= 0 else v << -k


def _clz(m: Module, v, n: int, name: str) -> Signal:
    """Leading zeros of the ``n``-bit unsigned ``v`` (``n`` for zero), combinational."""
    lz = Signal(range(n + 1), name=name)
    m.d.comb += lz.eq(n)
    for k in range(n):  # the highest set bit assigns last and wins
        with m.If(v[k]):
            m.d.comb += lz.eq(n - 1 - k)
    return lz


class _Unit(wiring.Component):
    """Common ports, handshake and valid chain of the three primitives."""

    def __init__(self, in_fmt: Fixed, out_fmt: Fixed):
        self.in_fmt = in_fmt
        self.out_fmt = out_fmt
        super().__init__({
            "x": In(stream.Signature(_shape(in_fmt))),
            "y": Out(stream.Signature(_shape(out_fmt))),
        })

    def _begin(self, m: Module) -> _Pipe:
        adv = Signal(name="adv")
        m.d.comb += [adv.eq(~self.y.valid | self.y.ready), self.x.ready.eq(adv)]
        valid = self.x.valid
        for k in range(self.latency):
            v = Signal(name=f"valid_s{k + 1}")
            with m.If(adv):
                m.d.sync += v.eq(valid)
            valid = v
        m.d.comb += self.y.valid.eq(valid)
        return _Pipe(m, adv)

    def _rom(self, m: Module, pipe: _Pipe, words: list[int], width: int, addr):
        m.submodules.rom = rom = Memory(shape=unsigned(width), depth=len(words), init=words)
        rp = rom.read_port(domain="sync")
        m.d.comb += [rp.addr.eq(addr), rp.en.eq(pipe.adv)]
        return rp.data


class ExpNeg(_Unit):
    """``y = exp(x)`` for ``x <= 0`` (inputs > 0 are treated as 0), bit-exact with
    :func:`celosia.ir.approx.exp_neg_int`.

    Parameters
    ----------
    in_fmt : Fixed
        Signed input format.
    out_fmt : Fixed
        Output format, e.g. ``Fixed(24, 22, signed=False)``.
    table_bits : int
        Index bits of the ``2^-f`` table (``2^table_bits`` entries of ``out.frac + guard + 1``
        bits).
    guard_bits : int
        Internal guard bits beyond ``out_fmt.frac``.

    Attributes
    ----------
    x : In(stream.Signature(in shape))
    y : Out(stream.Signature(out shape))
    latency : int
        9 register stages: input, ``x·log2 e``, split ``i``/``f`` (ROM address), ``fl·ln 2``
        (ROM data), ``y²``, polynomial, ``table·poly``, shift by ``i``, round/saturate.
    rom_bits : int
        ROM size in bits.
    params : celosia.ir.approx.ExpNegParams
    """

    latency = 9

    def __init__(self, in_fmt: Fixed, out_fmt: Fixed, table_bits: int = 7, guard_bits: int = 3):
        self.params = approx.exp_neg_params(in_fmt, out_fmt, table_bits, guard_bits)
        self.rom_bits = self.params.rom_bits
        super().__init__(in_fmt, out_fmt)

    def elaborate(self, platform):
        m = Module()
        p = self.params
        W, F, D, Ft = p.W, p.F, p.D, p.Ft
        pipe = self._begin(m)
        R = pipe.reg
        n = self.in_fmt.bits
        # S1: |x| (0 for positive x)
        x = self.x.payload
        xa = R(Mux(x < 0, -x, 0), unsigned(n), "xa")
        # S2: t = |x|·L
        t = R(xa * p.L, unsigned(n + p.L.bit_length()), "t")
        # S3: i (clamped), f split into fh (ROM address) and fl
        tt = Cat(t, Const(0, Ft + 1))
        ih = tt[Ft:]
        iw = max(1, p.i_max.bit_length())
        i3 = R(Mux(ih > p.i_max, p.i_max, ih), unsigned(iw), "i3")
        f = tt[Ft - F:Ft]
        fh3 = R(f[D:F], unsigned(p.table_bits), "fh3")
        fl3 = R(f[:D], unsigned(D), "fl3")
        E4 = self._rom(m, pipe, approx.exp_neg_table(p), W + 1, fh3)
        # S4: y = fl·LN2 (ROM data arrives)
        y4 = R(fl3 * p.LN2, unsigned(D + p.LN2.bit_length()), "y4")
        i4 = R(i3, unsigned(iw), "i4")
        # S5: y² ; carry y, E
        yw = max(1, len(y4) - (F + 1))
        yq = (y4 >> (F + 1))[:yw]
        yq5 = R(yq, unsigned(yw), "yq5")
        sq5 = R(yq * yq, unsigned(2 * yw), "sq5")
        E5 = R(E4, unsigned(W + 1), "E5")
        i5 = R(i4, unsigned(iw), "i5")
        # S6: P = 2^W - y + y²/2
        P6 = R((1 << W) - yq5 + (sq5 >> (W + 1)), unsigned(W + 1), "P6")
        E6 = R(E5, unsigned(W + 1), "E6")
        i6 = R(i5, unsigned(iw), "i6")
        # S7: table·poly
        prod7 = R(E6 * P6, unsigned(2 * W + 2), "prod7")
        i7 = R(i6, unsigned(iw), "i7")
        # S8: shift by S0 - 1 + i (S0 = 2W - out.frac >= 2)
        s0 = 2 * W - self.out_fmt.frac
        sh8 = R((prod7 >> (s0 - 1)) >> i7, unsigned(2 * W + 3 - s0), "sh8")
        # S9: round half up, saturate
        v = (sh8 + 1) >> 1
        out = R(Mux(v > self.out_fmt.max_int, self.out_fmt.max_int, v), _shape(self.out_fmt), "out")
        m.d.comb += self.y.payload.eq(out)
        return m


class _NewtonUnit(_Unit):
    """Front end shared by :class:`Reciprocal` and :class:`Rsqrt`: input, clz, normalise."""

    def _front(self, m: Module, pipe: _Pipe, amounts: list[int]):
        p = self.params
        n = p.n
        R = pipe.reg
        x = self.x.payload
        # S1: input
        pos1 = R(x > 0, 1, "pos1")
        mag1 = R(x[:n], unsigned(n), "mag1")
        # S2: leading zeros
        lz2 = R(_clz(m, mag1, n, "lz"), range(n + 1), "lz2")
        mag2 = R(mag1, unsigned(n), "mag2")
        pos2 = R(pos1, 1, "pos2")
        # S3: normalise; the output shift amount (a function of lz only) from a small mux
        m3 = R((mag2 << lz2)[:n], unsigned(n), "m3")
        aw = max(1, max(amounts).bit_length())
        lzc = Mux(lz2 >= n, n - 1, lz2)
        amt3 = R(Array(Const(a, aw) for a in amounts)[lzc], unsigned(aw), "amt3")
        pos3 = R(pos2, 1, "pos3")
        par3 = R((p.c & 1) ^ lz2[0], 1, "par3") if hasattr(p, "Wsq") else None
        return m3, amt3, pos3, par3

    def _seed(self, m, pipe, words, m3, par3, delay):
        """S4..S6: table lookup and linear interpolation; returns r0 at S6 and delayed regs."""
        p = self.params
        D, Ws = p.D, p.Ws
        R = pipe.reg
        addr = m3[D:p.n - 1] if par3 is None else Cat(m3[D:p.n - 1], par3)
        rw = Ws + 1
        word4 = self._rom(m, pipe, words, rw + p.dbits, addr)
        d4 = R(m3[:D], unsigned(max(D, 1)), "d4") if D > 0 else Const(0, 1)
        regs = {k: R(v, len(v), f"{k}4") for k, v in delay.items()}
        # S5: slope·d
        pd5 = R(word4[rw:] * d4, unsigned(p.dbits + max(D, 1)), "pd5")
        r5 = R(word4[:rw], unsigned(rw), "r5")
        regs = {k: R(v, len(v), f"{k}5") for k, v in regs.items()}
        # S6: r0
        r06 = R(r5 - (pd5 >> D), unsigned(rw), "r06")
        regs = {k: R(v, len(v), f"{k}6") for k, v in regs.items()}
        return r06, regs

    def _back(self, m, pipe, r1full, shift_r1: int, amt, pos):
        """Denormalise (round half up) and saturate: two stages."""
        p = self.params
        R = pipe.reg
        r1 = (r1full >> shift_r1)[:p.Wr + 2]
        wide = Cat(Const(0, p.lpad), r1) if p.lpad else r1
        sh = R(wide >> amt, unsigned(len(wide)), "sh")
        posd = R(pos, 1, "posd")
        v = (sh + 1) >> 1
        mx = self.out_fmt.max_int
        out = R(Mux(~posd | (v > mx), mx, v), _shape(self.out_fmt), "out")
        m.d.comb += self.y.payload.eq(out)


class Reciprocal(_NewtonUnit):
    """``y = 1/x`` (``x <= 0`` gives ``out_fmt.max_int``; large results saturate), bit-exact with
    :func:`celosia.ir.approx.reciprocal_int`.

    Parameters
    ----------
    in_fmt, out_fmt : Fixed
        Input and output formats (signed or unsigned).
    table_bits : int
        Seed table segments ``2^table_bits`` over [1, 2); must be ≤ magnitude bits − 1 of the input.
    guard_bits : int
        Result mantissa bits beyond ``out_fmt.bits``.

    Attributes
    ----------
    latency : int
        11 stages: input, clz, normalise, ROM, slope·d, seed, ``a·r0``, ``e``, ``r0·e``, shift,
        round/saturate.
    rom_bits : int
    params : celosia.ir.approx.RecipParams
    """

    latency = 11

    def __init__(self, in_fmt: Fixed, out_fmt: Fixed, table_bits: int = 6, guard_bits: int = 4):
        self.params = approx.reciprocal_params(in_fmt, out_fmt, table_bits, guard_bits)
        self.rom_bits = self.params.rom_bits
        super().__init__(in_fmt, out_fmt)

    def elaborate(self, platform):
        m = Module()
        p = self.params
        n, Ws, We, Wr = p.n, p.Ws, p.We, p.Wr
        pipe = self._begin(m)
        R = pipe.reg
        amounts = [p.s_const + p.lpad - 1 - lz for lz in range(n)]
        m3, amt3, pos3, _ = self._front(m, pipe, amounts)
        words = [r | (s << (Ws + 1)) for r, s in approx.reciprocal_table(p)]
        r06, d = self._seed(m, pipe, words, m3, None, {"m": m3, "amt": amt3, "pos": pos3})
        # S7: a·r0
        pm7 = R(d["m"] * r06, unsigned(n + Ws + 1), "pm7")
        r07 = R(r06, unsigned(Ws + 1), "r07")
        d7 = {k: R(d[k], len(d[k]), f"{k}7") for k in ("amt", "pos")}
        # S8: e = 2 - a·r0
        e8 = R(_shr((1 << (n + Ws)) - pm7, n - 1 + Ws - We), unsigned(We + 2), "e8")
        r08 = R(r07, unsigned(Ws + 1), "r08")
        d8 = {k: R(d7[k], len(d7[k]), f"{k}8") for k in d7}
        # S9: r0·e
        r19 = R(r08 * e8, unsigned(Ws + We + 3), "r19")
        d9 = {k: R(d8[k], len(d8[k]), f"{k}9") for k in d8}
        # S10, S11
        self._back(m, pipe, r19, Ws + We - Wr, d9["amt"], d9["pos"])
        return m


class Rsqrt(_NewtonUnit):
    """``y = 1/√x`` (``x <= 0`` gives ``out_fmt.max_int``; large results saturate), bit-exact with
    :func:`celosia.ir.approx.rsqrt_int`.

    Parameters
    ----------
    in_fmt, out_fmt : Fixed
        Input and output formats (signed or unsigned).
    table_bits : int
        Seed table segments per octave ``2^table_bits`` (two octaves, [1, 2) and [2, 4)); must be
        ≤ magnitude bits − 1 of the input.
    guard_bits : int
        Result mantissa bits beyond ``out_fmt.bits``.

    Attributes
    ----------
    latency : int
        12 stages: input, clz, normalise, ROM, slope·d, seed, ``r0²``, ``a·r0²``, ``e``,
        ``r0·e``, shift, round/saturate.
    rom_bits : int
    params : celosia.ir.approx.RsqrtParams
    """

    latency = 12

    def __init__(self, in_fmt: Fixed, out_fmt: Fixed, table_bits: int = 6, guard_bits: int = 4):
        self.params = approx.rsqrt_params(in_fmt, out_fmt, table_bits, guard_bits)
        self.rom_bits = self.params.rom_bits
        super().__init__(in_fmt, out_fmt)

    def elaborate(self, platform):
        m = Module()
        p = self.params
        n, Ws, Wsq, We, Wr = p.n, p.Ws, p.Wsq, p.We, p.Wr
        pipe = self._begin(m)
        R = pipe.reg
        amounts = [int(p.shift(lz)) + p.lpad - 1 for lz in range(n)]
        m3, amt3, pos3, par3 = self._front(m, pipe, amounts)
        words = [r | (s << (Ws + 1)) for r, s in approx.rsqrt_table(p)]
        r06, d = self._seed(m, pipe, words, m3, par3, {"m": m3, "par": par3, "amt": amt3, "pos": pos3})
        # S7: r0²
        sq7 = R(r06 * r06, unsigned(2 * Ws + 2), "sq7")
        r07 = R(r06, unsigned(Ws + 1), "r07")
        d7 = {k: R(d[k], len(d[k]), f"{k}7") for k in d}
        # S8: a·r0² (par applied in S9)
        s = (sq7 >> (2 * Ws - Wsq))[:Wsq + 2]
        pm8 = R(d7["m"] * s, unsigned(n + Wsq + 2), "pm8")
        r08 = R(r07, unsigned(Ws + 1), "r08")
        d8 = {k: R(d7[k], len(d7[k]), f"{k}8") for k in ("par", "amt", "pos")}
        # S9: e = 3 - a·r0²
        pp = Mux(d8["par"], pm8 << 1, pm8)
        e9 = R(_shr((3 << (n - 1 + Wsq)) - pp, n - 1 + Wsq - We), unsigned(We + 3), "e9")
        r09 = R(r08, unsigned(Ws + 1), "r09")
        d9 = {k: R(d8[k], len(d8[k]), f"{k}9") for k in ("amt", "pos")}
        # S10: r0·e
        r110 = R(r09 * e9, unsigned(Ws + We + 4), "r110")
        d10 = {k: R(d9[k], len(d9[k]), f"{k}10") for k in d9}
        # S11, S12
        self._back(m, pipe, r110, Ws + We + 1 - Wr, d10["amt"], d10["pos"])
        return m
