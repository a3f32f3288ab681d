"""The GELU unit (erf form): a pipelined piecewise-quadratic evaluator of ReLU(x) − δ(|x|).

Each lane computes exactly :func:`celosia.ir.gelu.gelu_int` (see :mod:`celosia.ir.gelu` for the
arithmetic and the stated error bound). The segment coefficients come from
:func:`celosia.ir.gelu.gelu_table`, computed from the formula at build time, and live in one
:class:`amaranth.lib.memory.Memory` ROM with one synchronous read port per lane.

Pipeline (one beat per cycle; the whole pipeline stalls while the output is held)::

    accept   |x|, segment index -> ROM address; register t, ReLU(x), in-table flag
    stage 1  ROM word (c0, c1, c2) out of the read port's register
    stage 2  p1 = c2 · t                           (registered multiplier output)
    stage 3  s1 = c1 + (p1 >> sh1)                 (register before the second multiplier)
    stage 4  p2 = s1 · t                           (registered multiplier output)
    stage 5  y  = ReLU(x)·2^(Fw−Fin) − (c0 + (p2 >> sh2))·2^(Fw−F0)
    stage 6  out = saturate(round_half_even(y >> (Fw − Fout)))   -> o.payload, o.valid
"""

from __future__ import annotations

from amaranth.hdl import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from celosia.ir.gelu import GeluTable, gelu_table
from celosia.ir.numerics import Fixed

from celosia.errors import HardwareGenerationError

__all__ = ["Gelu"]


def _shift(v, sh: int):
    """``v · 2**-sh`` with floor (arithmetic right shift) for ``sh > 0``, exact left shift otherwise."""
    if sh > 0:
        return v >> sh
    if sh < 0:
        return v << -sh
    return v


def _round_half_even(v, sh: int):
    """``v · 2**-sh`` rounded to nearest, ties to even (``celosia.ir.numerics.shift_round``)."""
    if sh <= 0:
        return v << -sh if sh < 0 else v
    floor = v >> sh
    rem = v[:sh]
    half = 1 << (sh - 1)
    up = (rem > half) | ((rem == half) & floor[0])
    return floor + up


class Gelu(wiring.Component):
    """GELU(x) = x·Φ(x) on ``lanes`` parallel fixed-point inputs, one beat per cycle.

    Parameters
    ----------
    in_fmt : Fixed
        Signed input format (at least the table's ``seg_bits`` fractional bits, usually 3).
    out_fmt : Fixed
        Signed output format; results saturate to its range.
    lanes : int
        Elements per beat (≥ 1). Each lane has its own read port on the shared coefficient ROM.
    table : GeluTable, optional
        Defaults to ``gelu_table(in_fmt, out_fmt)``.

    Attributes
    ----------
    i : In(stream.Signature(ArrayLayout(signed(in_fmt.bits), lanes)))
        Input codes.
    o : Out(stream.Signature(ArrayLayout(signed(out_fmt.bits), lanes)))
        Output codes, equal to ``gelu_int(i, in_fmt, out_fmt, table)`` lane by lane.
    latency : int
        Cycles from a beat's acceptance (``i.valid & i.ready``) to ``o.valid`` with ``o`` ready.
    rom_bits : int
        Coefficient ROM size in bits (one copy; a vendor tool may duplicate it per pair of ports).
    table : GeluTable
        The coefficients and the stated error bound.

    Notes
    -----
    ``i.ready = ~o.valid | o.ready``: the pipeline advances whenever the output register is free
    or being read, so it sustains one beat per cycle while ``o.ready`` is high and holds every
    stage (ROM read enable included) while it is low.

    Raises
    ------
    HardwareGenerationError
        ``lanes`` < 1, unsigned formats, or an input with too few fractional bits for the table.
    """

    latency = 6

    def __init__(self, in_fmt: Fixed, out_fmt: Fixed, lanes: int = 1, table: GeluTable | None = None):
        if isinstance(lanes, bool) or not isinstance(lanes, int) or lanes < 1:
            raise HardwareGenerationError(
                f"gelu unit: lanes={lanes!r} must be an integer >= 1",
                hint="use lanes=1 for a scalar unit",
            )
        if not isinstance(in_fmt, Fixed) or not isinstance(out_fmt, Fixed):
            raise HardwareGenerationError(
                f"gelu unit: formats must be celosia.ir.numerics.Fixed, got {in_fmt!r} and {out_fmt!r}",
                hint="e.g. Gelu(Fixed(32, 22), Fixed(32, 22))",
            )
        self.table = table if table is not None else gelu_table(in_fmt, out_fmt)
        if self.table.in_fmt != in_fmt or self.table.out_fmt != out_fmt:
            raise HardwareGenerationError(
                f"gelu unit: table built for {self.table.in_fmt} → {self.table.out_fmt}, "
                f"unit is {in_fmt} → {out_fmt}",
                hint="build the table with gelu_table(in_fmt, out_fmt)",
            )
        self.in_fmt = in_fmt
        self.out_fmt = out_fmt
        self.lanes = lanes
        self.rom_bits = self.table.rom_bits
        self.in_layout = data.ArrayLayout(signed(in_fmt.bits), lanes)
        self.out_layout = data.ArrayLayout(signed(out_fmt.bits), lanes)
        super().__init__(
            {
                "i": In(stream.Signature(self.in_layout)),
                "o": Out(stream.Signature(self.out_layout)),
            }
        )

    def elaborate(self, platform):
        m = Module()
        tab = self.table
        fin, fout = self.in_fmt, self.out_fmt
        tb = tab.tb
        (w0, sg0), (w1, sg1), (w2, sg2) = tab.widths
        word_bits = w0 + w1 + w2

        m.submodules.rom = rom = Memory(shape=unsigned(word_bits), depth=tab.n_seg, init=tab.words())

        adv = Signal()  # the whole pipeline moves this cycle
        valid = [Signal(name=f"v{s}") for s in range(1, 7)]
        m.d.comb += [adv.eq(~self.o.valid | self.o.ready), self.i.ready.eq(adv)]
        with m.If(adv):
            m.d.sync += valid[0].eq(self.i.valid)
            m.d.sync += [valid[s].eq(valid[s - 1]) for s in range(1, 6)]
        m.d.comb += self.o.valid.eq(valid[5])

        def field(word, lo, width, sg):
            v = word[lo : lo + width]
            return v.as_signed() if sg else v

        for lane in range(self.lanes):
            x = self.i.payload[lane]
            rp = rom.read_port(domain="sync")
            n = f"l{lane}_"

            # accept: magnitude, segment index, in-segment offset
            a = Signal(unsigned(fin.bits), name=n + "a")
            m.d.comb += a.eq(Mux(x < 0, -x, x))
            k = a >> tb
            inside = k < tab.n_seg
            m.d.comb += [rp.addr.eq(Mux(inside, k, 0)), rp.en.eq(adv)]
            t_shape = unsigned(max(tb, 1))
            t_val = a[:tb] if tb > 0 else Const(0, 1)
            relu_shape = unsigned(fin.bits - 1)

            t1 = Signal(t_shape, name=n + "t1")
            relu1 = Signal(relu_shape, name=n + "relu1")
            in1 = Signal(name=n + "in1")
            with m.If(adv):
                m.d.sync += [t1.eq(t_val), relu1.eq(Mux(x < 0, 0, x)), in1.eq(inside)]

            # stage 1 -> 2: first multiplier (inputs: ROM register, t1 register)
            word = rp.data
            c0 = field(word, 0, w0, sg0)
            c1 = field(word, w0, w1, sg1)
            c2 = field(word, w0 + w1, w2, sg2)
            prod1 = c2 * t1
            p1 = Signal(prod1.shape(), name=n + "p1")
            c1_2 = Signal(c1.shape(), name=n + "c1_2")
            c0_2 = Signal(c0.shape(), name=n + "c0_2")
            t2 = Signal(t_shape, name=n + "t2")
            relu2 = Signal(relu_shape, name=n + "relu2")
            in2 = Signal(name=n + "in2")
            with m.If(adv):
                m.d.sync += [p1.eq(prod1), c1_2.eq(c1), c0_2.eq(c0), t2.eq(t1), relu2.eq(relu1), in2.eq(in1)]

            # stage 2 -> 3: s1 = c1 + (p1 >> sh1), registered before the second multiplier
            sum1 = c1_2 + _shift(p1, tab.sh1)
            s1 = Signal(sum1.shape(), name=n + "s1")
            c0_3 = Signal(c0.shape(), name=n + "c0_3")
            t3 = Signal(t_shape, name=n + "t3")
            relu3 = Signal(relu_shape, name=n + "relu3")
            in3 = Signal(name=n + "in3")
            with m.If(adv):
                m.d.sync += [s1.eq(sum1), c0_3.eq(c0_2), t3.eq(t2), relu3.eq(relu2), in3.eq(in2)]

            # stage 3 -> 4: second multiplier
            prod2 = s1 * t3
            p2 = Signal(prod2.shape(), name=n + "p2")
            c0_4 = Signal(c0.shape(), name=n + "c0_4")
            relu4 = Signal(relu_shape, name=n + "relu4")
            in4 = Signal(name=n + "in4")
            with m.If(adv):
                m.d.sync += [p2.eq(prod2), c0_4.eq(c0_3), relu4.eq(relu3), in4.eq(in3)]

            # stage 4 -> 5: d = c0 + (p2 >> sh2); y = ReLU(x) − d at Fw fractional bits
            d = c0_4 + _shift(p2, tab.sh2)
            d_w = Mux(in4, d, 0) << (tab.fw - tab.f0)
            relu_w = relu4 << (tab.fw - fin.frac)
            y_expr = relu_w - d_w
            y = Signal(y_expr.shape(), name=n + "y")
            with m.If(adv):
                m.d.sync += y.eq(y_expr)

            # stage 5 -> 6: round half-even to the output format and saturate
            r = _round_half_even(y, tab.fw - fout.frac)
            out = Signal(signed(fout.bits), name=n + "out")
            with m.If(adv):
                with m.If(r > fout.max_int):
                    m.d.sync += out.eq(fout.max_int)
                with m.Elif(r < fout.min_int):
                    m.d.sync += out.eq(fout.min_int)
                with m.Else():
                    m.d.sync += out.eq(r)
            m.d.comb += self.o.payload[lane].eq(out)

        return m
