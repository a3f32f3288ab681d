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
input accepted in cycle ``c`` is presented on ``y`` in cycle ``c + latency``.

**Timing.** The datapaths are written with :class:`celosia.hw.pipeline.Pipeline`: every product
is split into registered 18×18 DSP slices summed by a registered tree, every ROM read has a fabric
register after the block RAM, and every variable shift is split over two stages, so each stage
holds at most one DSP, one carry chain or a few LUT levels (≥ 100 MHz on ECP5-85F alone, see
``benchmarks/nonlinear_fpga.py``). ``latency`` follows from the formats.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from celosia.hw.dsp import is_ecp5
from celosia.hw.pipeline import Pipeline, Tap
from celosia.ir import approx
from celosia.ir.numerics import Fixed

__all__ = ["ExpNeg", "Reciprocal", "Rsqrt"]


def _shape(fmt: Fixed):
    return signed(fmt.bits) if fmt.signed else unsigned(fmt.bits)


def _shr(v, k: int):
    """``v`` shifted right by the constant ``k`` (left when ``k < 0``), as a value."""
    return v >> k if k >= 0 else v << -k


def _clz(v, n: int):
    """Leading zeros of the ``n``-bit unsigned ``v`` (``n`` for zero), as an expression."""
    lz = Const(n, range(n + 1))
    for k in range(n):  # the highest set bit is applied last and wins
        lz = Mux(v[k], n - 1 - k, lz)
    return lz


def _split_amount(a, coarse: int):
    """``a`` as (its multiple of ``coarse``, the rest); ``coarse`` a power of two."""
    lo = (coarse - 1).bit_length()
    if len(a) <= lo:
        return Const(0, 1), a
    return Cat(Const(0, lo), a[lo:]), a[:lo]


def shift_right(p: Pipeline, name: str, v: Tap, amount: Tap, coarse: int = 8) -> Tap:
    """``v >> amount`` (floor) over two stages: multiples of ``coarse`` first, then the rest."""
    hi = p.reg(f"{name}_hi", lambda x, a: x >> _split_amount(a, coarse)[0], v, amount)
    return p.reg(name, lambda x, a: x >> _split_amount(a, coarse)[1], hi, amount)


class _Unit(wiring.Component):
    """Common ports, handshake and valid chain of the three primitives.

    Subclasses define ``_datapath(pipe, x) -> Tap`` using only ``pipe``; it runs once at
    construction without hardware (``Pipeline(None)``) to fix ``latency``.
    """

    def __init__(self, in_fmt: Fixed, out_fmt: Fixed):
        self.in_fmt = in_fmt
        self.out_fmt = out_fmt
        self.latency = self._datapath(Pipeline(None), Signal(_shape(in_fmt))).stage
        super().__init__({
            "x": In(stream.Signature(_shape(in_fmt))),
            "y": Out(stream.Signature(_shape(out_fmt))),
        })

    def elaborate(self, platform):
        m = Module()
        adv = Signal(name="adv")
        m.d.comb += [adv.eq(~self.y.valid | self.y.ready), self.x.ready.eq(adv)]
        pipe = Pipeline(m, adv, ecp5=is_ecp5(platform))
        out = self._datapath(pipe, self.x.payload)
        assert out.stage == self.latency
        m.d.comb += [self.y.valid.eq(pipe.valid_chain(self.x.valid, self.latency)), self.y.payload.eq(out.value)]
        return m

    def _saturate_round(self, p: Pipeline, sh: Tap, pos: Tap | None = None) -> Tap:
        """``min(round_half_up(sh / 2), out max)`` (``out max`` too where ``pos`` is low)."""
        mx = self.out_fmt.max_int

        def fn(v, *ps):
            r = (v + 1) >> 1
            bad = r > mx
            if ps:
                bad = bad | ~ps[0]
            return Mux(bad, mx, r)
        return p.reg("out", fn, sh, *([pos] if pos is not None else []), shape=_shape(self.out_fmt))


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
        Register stages: input, ``|x|·log2 e``, split ``i``/``f``, table read ‖ ``fl·ln 2`` and
        ``y²``, polynomial, ``table·poly``, shift by ``i`` (two stages), round/saturate (16 at
        s24.16 → u24.22).
    rom_bits : int
        ROM size in bits.
    params : celosia.ir.approx.ExpNegParams
    """

    def __init__(self, in_fmt: Fixed, out_fmt: Fixed, table_bits: int = 7, guard_bits: int = 3):
        self.params = approx.exp_neg_params(in_fmt, out_fmt, table_bits, guard_bits)
        self.rom_bits = self.params.rom_bits
        super().__init__(in_fmt, out_fmt)

    def _datapath(self, pipe: Pipeline, x) -> Tap:
        p = self.params
        W, F, D, Ft = p.W, p.F, p.D, p.Ft
        n = self.in_fmt.bits
        xa = pipe.reg("xa", lambda v: Mux(v < 0, -v, 0), Tap(x, 0), shape=unsigned(n))
        t = pipe.mul("t", xa, p.L)
        tt = t.map(lambda v: Cat(v, Const(0, Ft + 1)))
        iw = max(1, p.i_max.bit_length())
        i = pipe.reg("i", lambda v: Mux(v[Ft:] > p.i_max, p.i_max, v[Ft:]), tt, shape=unsigned(iw))
        fh = pipe.reg("fh", lambda v: v[Ft - F:Ft][D:F], tt, shape=unsigned(p.table_bits))
        fl = pipe.reg("fl", lambda v: v[Ft - F:Ft][:D], tt, shape=unsigned(D))
        E = pipe.rom("exp_table", approx.exp_neg_table(p), W + 1, fh)
        y = pipe.mul("y", fl, p.LN2)
        yw = max(1, len(y.value) - (F + 1))
        yq = pipe.reg("yq", lambda v: (v >> (F + 1))[:yw], y, shape=unsigned(yw))
        sq = pipe.mul("sq", yq, yq)
        P = pipe.reg("P", lambda a, b: (1 << W) - a + (b >> (W + 1)), yq, sq, shape=unsigned(W + 1))
        prod = pipe.mul("prod", E, P)
        s0 = 2 * W - self.out_fmt.frac  # shift by S0 - 1 + i, then round half up (S0 >= 2)
        pre = prod.map(lambda v: (v >> (s0 - 1))[:2 * W + 3 - s0])
        sh = shift_right(pipe, "sh", pre, i)
        return self._saturate_round(pipe, sh)


class _NewtonUnit(_Unit):
    """Front end shared by :class:`Reciprocal` and :class:`Rsqrt`: input, clz, normalise, seed."""

    def _front(self, pipe: Pipeline, x, amounts: list[int], parity: bool):
        """Input, leading zeros, normalised mantissa ``m`` and the output shift amount."""
        p = self.params
        n = p.n
        xin = Tap(x, 0)
        pos = pipe.reg("pos", lambda v: v > 0, xin, shape=1)
        mag = pipe.reg("mag", lambda v: v[:n], xin, shape=unsigned(n))
        lz = pipe.reg("lz", lambda v: _clz(v, n), mag, shape=range(n + 1))
        mn = shift_left(pipe, "m", mag, lz, n)
        aw = max(1, max(amounts).bit_length())
        amt = pipe.reg("amt", lambda z: Array(Const(a, aw) for a in amounts)[Mux(z >= n, n - 1, z)], lz,
                       shape=unsigned(aw))
        par = pipe.reg("par", lambda z: (p.c & 1) ^ z[0], lz, shape=1) if parity else None
        return mn, amt, pos, par

    def _seed(self, pipe: Pipeline, words: list[int], mn: Tap, par: Tap | None) -> Tap:
        """Table lookup and linear interpolation: ``r0 = r - (slope·d >> D)``."""
        p = self.params
        D, Ws = p.D, p.Ws
        rw = Ws + 1
        addr = mn.map(lambda v: v[D:p.n - 1])
        if par is not None:
            addr = pipe.reg("addr", lambda a, b: Cat(a, b), addr, par)
        word = pipe.rom("seed_table", words, rw + p.dbits, addr)
        if D == 0:
            return word.map(lambda w: w[:rw])
        d = mn.map(lambda v: v[:D])
        pd = pipe.mul("pd", word.map(lambda w: w[rw:]), d)
        return pipe.reg("r0", lambda w, v: w[:rw] - (v >> D), word, pd, shape=unsigned(rw))

    def _back(self, pipe: Pipeline, r1full: Tap, shift_r1: int, amt: Tap, pos: Tap) -> Tap:
        """Denormalise (two-stage shift, then round half up) and saturate."""
        p = self.params

        def widen(v):
            r1 = (v >> shift_r1)[:p.Wr + 2]
            return Cat(Const(0, p.lpad), r1) if p.lpad else r1
        sh = shift_right(pipe, "sh", r1full.map(widen), amt)
        return self._saturate_round(pipe, sh, pos)


def shift_left(p: Pipeline, name: str, v: Tap, amount: Tap, width: int, coarse: int = 8) -> Tap:
    """``(v << amount)[:width]`` over two stages: multiples of ``coarse`` first, then the rest."""
    hi = p.reg(f"{name}_hi", lambda x, a: (x << _split_amount(a, coarse)[0])[:width], v, amount,
               shape=unsigned(width))
    return p.reg(name, lambda x, a: (x << _split_amount(a, coarse)[1])[:width], hi, amount,
                 shape=unsigned(width))


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
        Register stages: input, clz, normalise (two), table read, slope·d, seed, ``a·r0``, ``e``,
        ``r0·e``, shift (two), round/saturate; each product as :meth:`Pipeline.mul` builds it.
    rom_bits : int
    params : celosia.ir.approx.RecipParams
    """

    def __init__(self, in_fmt: Fixed, out_fmt: Fixed, table_bits: int = 6, guard_bits: int = 4):
        self.params = approx.reciprocal_params(in_fmt, out_fmt, table_bits, guard_bits)
        self.rom_bits = self.params.rom_bits
        super().__init__(in_fmt, out_fmt)

    def _datapath(self, pipe: Pipeline, x) -> Tap:
        p = self.params
        n, Ws, We, Wr = p.n, p.Ws, p.We, p.Wr
        amounts = [p.s_const + p.lpad - 1 - lz for lz in range(n)]
        mn, amt, pos, _ = self._front(pipe, x, amounts, parity=False)
        words = [r | (s << (Ws + 1)) for r, s in approx.reciprocal_table(p)]
        r0 = self._seed(pipe, words, mn, None)
        pm = pipe.mul("pm", mn, r0)  # a·r0
        e = pipe.reg("e", lambda v: _shr((1 << (n + Ws)) - v, n - 1 + Ws - We), pm, shape=unsigned(We + 2))
        r1 = pipe.mul("r1", r0, e)  # r0·(2 - a·r0)
        return self._back(pipe, r1, Ws + We - Wr, amt, pos)


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
        Register stages: input, clz, normalise (two), table read, slope·d, seed, ``r0²``,
        ``a·r0²``, ``e``, ``r0·e``, shift (two), round/saturate; each product as
        :meth:`Pipeline.mul` builds it.
    rom_bits : int
    params : celosia.ir.approx.RsqrtParams
    """

    def __init__(self, in_fmt: Fixed, out_fmt: Fixed, table_bits: int = 6, guard_bits: int = 4):
        self.params = approx.rsqrt_params(in_fmt, out_fmt, table_bits, guard_bits)
        self.rom_bits = self.params.rom_bits
        super().__init__(in_fmt, out_fmt)

    def _datapath(self, pipe: Pipeline, x) -> Tap:
        p = self.params
        n, Ws, Wsq, We, Wr = p.n, p.Ws, p.Wsq, p.We, p.Wr
        amounts = [int(p.shift(lz)) + p.lpad - 1 for lz in range(n)]
        mn, amt, pos, par = self._front(pipe, x, amounts, parity=True)
        words = [r | (s << (Ws + 1)) for r, s in approx.rsqrt_table(p)]
        r0 = self._seed(pipe, words, mn, par)
        sq = pipe.mul("sq", r0, r0)
        s = sq.map(lambda v: (v >> (2 * Ws - Wsq))[:Wsq + 2])
        pm = pipe.mul("pm", mn, s)  # a·r0² (the parity doubles it below)
        e = pipe.reg("e", lambda v, q: _shr((3 << (n - 1 + Wsq)) - Mux(q, v << 1, v), n - 1 + Wsq - We),
                     pm, par, shape=unsigned(We + 3))
        r1 = pipe.mul("r1", r0, e)  # r0·(3 - a·r0²)
        return self._back(pipe, r1, Ws + We + 1 - Wr, amt, pos)
