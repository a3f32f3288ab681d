"""A pipelined requantizer with run-time shift, rounding and saturation (one lane).

``y = saturate_out_bits(shift_round(v, shift, rounding))``, exactly
:func:`celosia.ir.numerics.shift_round` followed by :func:`~celosia.ir.numerics.saturate` to a signed
``out_bits``-bit range, with all three chosen per value at run time. Three register stages: the
coarse shift (by a multiple of 8) with its sticky bit, the fine shift, then the rounding increment
and the saturation; :data:`REQUANT_LATENCY` cycles from ``v`` to ``y``.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["Requantizer", "REQUANT_LATENCY"]

#: Cycles from an input to its result.
REQUANT_LATENCY = 3


def _asr(v, k: int):
    """Arithmetic right shift by a constant, same width."""
    width = len(v)
    if k == 0:
        return v
    if k >= width:
        return v[-1].replicate(width)
    return Cat(v[k:], v[-1].replicate(k))


class Requantizer(wiring.Component):
    """One lane of run-time requantization.

    Parameters
    ----------
    in_bits : int
        Signed width of ``v``.
    out_bits_max : int
        Widest output (the ``y`` port's width); ``out_bits`` at run time is 2..out_bits_max.

    Attributes
    ----------
    v : In(signed(in_bits))
    shift : In(6)
        Right shift, 0..63.
    rounding : In(2)
        :attr:`celosia.ir.numerics.Rounding.code`: 0 floor, 1 half-up, 2 half-even.
    out_bits : In(5)
    y : Out(signed(out_bits_max))
        The result, :data:`REQUANT_LATENCY` cycles after ``v`` (the control inputs travel with it).
    """

    def __init__(self, in_bits: int, out_bits_max: int):
        self.in_bits = in_bits
        self.out_bits_max = out_bits_max
        super().__init__({
            "v": In(signed(in_bits)), "shift": In(6), "rounding": In(2), "out_bits": In(5),
            "y": Out(signed(out_bits_max)),
        })

    def elaborate(self, platform):
        m = Module()
        W = self.in_bits + 1  # one guard bit below: the value is carried as v·2 (round bit at 0)
        # stage 1: coarse shift by 8·(s >> 3) of v·2 keeping the bit below the cut, sticky below it
        s = self.shift
        v2 = Signal(signed(W))
        m.d.comb += v2.eq(self.v << 1)
        c1 = Signal(signed(W))
        st1 = Signal()
        fine1, rnd1, ob1 = Signal(3), Signal(2), Signal(5)
        coarse = s[3:6]
        m.d.sync += [
            c1.eq(Array(_asr(v2, 8 * k) for k in range(8))[coarse]),
            st1.eq(Array((v2[:min(8 * k, W)] != 0) if k else Const(0) for k in range(8))[coarse]),
            fine1.eq(s[0:3]), rnd1.eq(self.rounding), ob1.eq(self.out_bits),
        ]
        # stage 2: fine shift; the LSB of the result is now the round bit, sticky the bits below
        c2 = Signal(signed(W))
        st2 = Signal()
        rnd2, ob2 = Signal(2), Signal(5)
        m.d.sync += [
            c2.eq(Array(_asr(c1, k) for k in range(8))[fine1]),
            st2.eq(st1 | Array((c1[:k] != 0) if k else Const(0) for k in range(8))[fine1]),
            rnd2.eq(rnd1), ob2.eq(ob1),
        ]
        # stage 3: floor + rounding increment, then saturation to out_bits
        floor = Signal(signed(W))
        m.d.comb += floor.eq(c2 >> 1)
        rbit = c2[0]
        up = Signal()
        with m.Switch(rnd2):
            with m.Case(1):
                m.d.comb += up.eq(rbit)
            with m.Case(2):
                m.d.comb += up.eq(rbit & (st2 | floor[0]))
        total = Signal(signed(W + 1))
        m.d.comb += total.eq(floor + up)
        widths = [min(max(b, 2), self.out_bits_max) for b in range(32)]  # out_bits outside 2..max: clamped
        hi = Array(Const((1 << (b - 1)) - 1, signed(self.out_bits_max + 1)) for b in widths)[ob2]
        lo = Array(Const(-(1 << (b - 1)), signed(self.out_bits_max + 1)) for b in widths)[ob2]
        m.d.sync += self.y.eq(Mux(total > hi, hi, Mux(total < lo, lo, total)))
        return m
