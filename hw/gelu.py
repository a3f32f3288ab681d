"""The GELU unit (erf form): a pipelined piecewise-quadratic evaluator of ReLU(x) − δ(|x|).

Each lane computes exactly :func:`celosia.ir.gelu.gelu_int` (see :mod:`celosia.ir.gelu` for the
arithmetic and the stated error bound). The segment coefficients come from
:func:`celosia.ir.gelu.gelu_table`, computed from the formula at build time, and live in one
:class:`amaranth.lib.memory.Memory` ROM with one synchronous read port per lane.

Pipeline (one beat per cycle; the whole pipeline stalls while the output is held), built with
:class:`celosia.hw.pipeline.Pipeline` so every stage holds at most one DSP or one carry chain::

    |x| and ReLU(x) registered; segment index -> ROM address, t = low bits of |x|
    ROM word (c0, c1, c2): block RAM register, then a fabric register
    p1 = c2 · t                                    (registered DSP slices, summed if split)
    s1 = c1 + (p1 >> sh1)
    p2 = s1 · t
    d  = c0 + (p2 >> sh2)        (0 outside the table)
    y  = ReLU(x)·2^(Fw−Fin) − d·2^(Fw−F0)
    r  = round_half_even(y >> (Fw − Fout));  out = saturate(r)   -> o.payload, o.valid
"""

from __future__ import annotations

from amaranth.hdl import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from celosia.hw.dsp import is_ecp5
from celosia.hw.pipeline import Pipeline, Tap
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
        self.latency = self._datapath(Pipeline(None), Signal(signed(in_fmt.bits)), None).stage
        super().__init__(
            {
                "i": In(stream.Signature(self.in_layout)),
                "o": Out(stream.Signature(self.out_layout)),
            }
        )

    def _datapath(self, pipe: Pipeline, x, rom) -> Tap:
        """One lane: ``gelu_int`` of the input code ``x`` (see the module docstring)."""
        tab = self.table
        fin, fout = self.in_fmt, self.out_fmt
        tb = tab.tb
        (w0, sg0), (w1, sg1), (w2, sg2) = tab.widths
        xin = Tap(x, 0)
        a = pipe.reg("a", lambda v: Mux(v < 0, -v, v), xin, shape=unsigned(fin.bits))
        relu = pipe.reg("relu", lambda v: Mux(v < 0, 0, v), xin, shape=unsigned(fin.bits - 1))
        inside = a.map(lambda v: (v >> tb) < tab.n_seg)
        addr = a.map(lambda v: Mux((v >> tb) < tab.n_seg, v >> tb, 0))
        t = a.map(lambda v: v[:tb] if tb > 0 else Const(0, 1))
        word = pipe.read("word", rom, w0 + w1 + w2, addr)

        def field(lo, width, sg):
            return word.map(lambda w: w[lo:lo + width].as_signed() if sg else w[lo:lo + width])
        c0, c1, c2 = field(0, w0, sg0), field(w0, w1, sg1), field(w0 + w1, w2, sg2)
        p1 = pipe.mul("p1", c2, t)
        s1 = pipe.reg("s1", lambda c, v: c + _shift(v, tab.sh1), c1, p1)
        p2 = pipe.mul("p2", s1, t)
        d = pipe.reg("d", lambda c, v, ins: Mux(ins, c + _shift(v, tab.sh2), 0), c0, p2, inside)
        y = pipe.reg("y", lambda r, v: (r << (tab.fw - fin.frac)) - (v << (tab.fw - tab.f0)), relu, d)
        r = pipe.reg("r", lambda v: _round_half_even(v, tab.fw - fout.frac), y)
        return pipe.reg("out", lambda v: Mux(v > fout.max_int, fout.max_int, Mux(v < fout.min_int, fout.min_int, v)),
                        r, shape=signed(fout.bits))

    def elaborate(self, platform):
        m = Module()
        tab = self.table
        (w0, _), (w1, _), (w2, _) = tab.widths
        m.submodules.rom = rom = Memory(shape=unsigned(w0 + w1 + w2), depth=tab.n_seg, init=tab.words())
        adv = Signal()  # the whole pipeline moves this cycle
        m.d.comb += [adv.eq(~self.o.valid | self.o.ready), self.i.ready.eq(adv)]
        m.d.comb += self.o.valid.eq(Pipeline(m, adv).valid_chain(self.i.valid, self.latency))
        for lane in range(self.lanes):
            out = self._datapath(Pipeline(m, adv, prefix=f"l{lane}_", ecp5=is_ecp5(platform)), self.i.payload[lane], rom)
            m.d.comb += self.o.payload[lane].eq(out.value)
        return m
