"""A small builder for stall-as-a-whole datapath pipelines, with automatic stage alignment.

The nonlinear units are linear pipelines whose registers all load in a cycle where the pipeline
advances (``en``). Writing them by hand means carrying every side value through every stage; a
:class:`Pipeline` does that bookkeeping instead: every value is a :class:`Tap` that knows its
stage, :meth:`Pipeline.reg` registers a function of taps after delaying the earlier ones to the
latest one's stage, and :meth:`Pipeline.mul` / :meth:`Pipeline.rom` build the two blocks that
need more than one stage to close timing on ECP5:

* a product is split into partial products of at most 18×18 signed bits (one ``MULT18X18D``
  each, with a register on every operand, since taps are registers, and on its output), then
  summed by a registered binary tree: ``1 + ceil(log2(partials))`` stages;
* a ROM read is the block RAM's own read register plus one fabric register (the ECP5 block RAM
  output without its optional output register has a 5.8 ns clock-to-out): 2 stages.

The same datapath function runs twice: once with ``Pipeline(None)`` (planning: no module, only
shapes and stage counts) in the unit's constructor, so ``latency`` is known before elaboration,
and once with the real module in ``elaborate``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from amaranth.hdl import Const, Module, Shape, Signal, Value, unsigned
from amaranth.lib.memory import Memory
from celosia.hw.dsp import ecp5_registered_multiplier

__all__ = ["Tap", "Pipeline", "CHUNK"]

#: Bits of one unsigned operand slice: an 18×18 signed DSP multiplies 17-bit unsigned slices.
CHUNK = 17


@dataclass(frozen=True)
class Tap:
    """A value available at the output of pipeline stage ``stage`` (0 = the unit's input)."""

    value: Value
    stage: int

    @property
    def shape(self) -> Shape:
        return Value.cast(self.value).shape()

    def map(self, fn: Callable) -> "Tap":
        """``fn(value)`` at the same stage: wiring only (slices, constant shifts), no logic."""
        return Tap(fn(self.value), self.stage)


def _slices(v: Value) -> list[tuple[Value, int]]:
    """``v`` as ``[(slice, shift), ...]`` with every slice at most 17 bits unsigned or 18 signed."""
    shape = v.shape()
    width, sgn = shape.width, shape.signed
    if width <= CHUNK + (1 if sgn else 0):
        return [(v, 0)]
    out = []
    pos = 0
    while width - pos > CHUNK + (1 if sgn else 0):
        out.append((v[pos:pos + CHUNK], pos))
        pos += CHUNK
    top = v[pos:]
    out.append((top.as_signed() if sgn else top, pos))
    return out


def _const_slices(c: int) -> list[tuple[Value, int]]:
    """A constant multiplier as 17-bit unsigned slices (the top slice signed if ``c < 0``)."""
    if -(1 << CHUNK) <= c < (1 << CHUNK):
        return [(Const(c), 0)]
    out, pos = [], 0
    while not -(1 << CHUNK) <= (c >> pos) < (1 << CHUNK):
        piece = (c >> pos) & ((1 << CHUNK) - 1)
        if piece:
            out.append((Const(piece, unsigned(CHUNK)), pos))
        pos += CHUNK
    out.append((Const(c >> pos), pos))
    return out


def _factor_pairs(a: Value, b) -> list[tuple[Value, Value, int]]:
    """``(a_i, b_j, shift)`` with ``a·b = Σ a_i·b_j·2^shift`` and each pair fitting one 18×18 DSP."""
    bs = _const_slices(b) if isinstance(b, int) else _slices(Value.cast(b))
    return [(x, y, sx + sy) for x, sx in _slices(Value.cast(a)) for y, sy in bs]



class Pipeline:
    """Registers of one stall-as-a-whole pipeline.

    Parameters
    ----------
    m : Module or None
        The module to add registers to; ``None`` plans only (shapes and stages, no hardware).
    en : Value, optional
        Load enable of every register (the pipeline's advance signal); default always.
    prefix : str
        Prefix of the register names.
    ecp5 : bool
        Build each partial product as an ECP5 ``MULT18X18D`` with its own input and output
        registers (:func:`celosia.hw.dsp.ecp5_registered_multiplier`); otherwise fabric registers
        on the operands and the product. Same stages either way.
    """

    def __init__(self, m: Module | None, en=None, prefix: str = "", ecp5: bool = False):
        self.m = m
        self.en = Const(1) if en is None else en
        self.prefix = prefix
        self.ecp5 = ecp5
        self._delayed: dict[int, list[Signal]] = {}
        self._names: dict[str, int] = {}

    # ---------------------------------------------------------------- plumbing
    def _signal(self, shape, name: str) -> Signal:
        n = self._names.get(name, 0)
        self._names[name] = n + 1
        return Signal(shape, name=f"{self.prefix}{name}" + (f"_{n}" if n else ""), reset_less=True)

    def _load(self, reg: Signal, value) -> None:
        if self.m is not None:
            with self.m.If(self.en):
                self.m.d.sync += reg.eq(value)

    def valid_chain(self, valid, stages: int, name: str = "valid") -> Value:
        """``valid`` delayed by ``stages`` enabled registers (with reset, unlike the datapath)."""
        for k in range(stages):
            v = Signal(name=f"{self.prefix}{name}_s{k + 1}")
            if self.m is not None:
                with self.m.If(self.en):
                    self.m.d.sync += v.eq(valid)
            valid = v
        return valid

    def input(self, value, stage: int = 0) -> Tap:
        """A value the unit presents at ``stage`` (default: the accepted input)."""
        return Tap(value, stage)

    def at(self, tap: Tap, stage: int) -> Value:
        """``tap``'s value delayed to ``stage`` (one shared chain of registers per tap)."""
        if stage < tap.stage:
            raise ValueError(f"cannot move a stage-{tap.stage} value back to stage {stage}")
        _, chain = self._delayed.setdefault(id(tap), (tap, []))  # holding tap keeps its id unique
        while tap.stage + len(chain) < stage:
            r = self._signal(Value.cast(tap.value).shape(), "d")
            self._load(r, chain[-1] if chain else tap.value)
            chain.append(r)
        return tap.value if stage == tap.stage else chain[stage - tap.stage - 1]

    # ---------------------------------------------------------------- stages
    def reg(self, name: str, fn: Callable | Value, *taps: Tap, stage: int | None = None, shape=None) -> Tap:
        """Register ``fn(*values)`` one stage after the latest of ``taps``.

        ``fn`` gets the tap values aligned to one stage. A plain value (no taps) is registered
        after ``stage`` (default 0): the caller states the stage the value belongs to. ``shape``
        overrides the register's shape (the value must fit it).
        """
        if stage is None:
            stage = max((t.stage for t in taps), default=0)
        value = fn(*(self.at(t, stage) for t in taps)) if callable(fn) else fn
        r = self._signal(Value.cast(value).shape() if shape is None else shape, name)
        self._load(r, value)
        return Tap(r, stage + 1)

    def mul(self, name: str, a: Tap, b: Tap | int) -> Tap:
        """``a·b`` (``b`` a tap or an integer constant), exact, through registered DSP slices.

        Stages ``s + 1`` and ``s + 2`` (``s`` the later operand's stage) register every partial
        product's operands and the partial product itself; each further stage adds pairs, so the
        product is ready at ``s + 2 + ceil(log2(partials))``.
        """
        stage = max(a.stage, b.stage) if isinstance(b, Tap) else a.stage
        av = self.at(a, stage)
        bv = self.at(b, stage) if isinstance(b, Tap) else b
        full = Value.cast(av * (bv if isinstance(b, Tap) else Const(b))).shape()
        # (tap, shift) pairs; a sum is registered at the smaller shift of its two terms
        level = [(self._partial(f"{name}_pp", x, y, stage), sh) for x, y, sh in _factor_pairs(av, bv)]
        while len(level) > 1:
            nxt = []
            for (x, sx), (y, sy) in zip(level[0::2], level[1::2]):
                lo = min(sx, sy)
                nxt.append((self.reg(f"{name}_sum", lambda u, v: (u << (sx - lo)) + (v << (sy - lo)), x, y), lo))
            if len(level) % 2:
                t, sh = level[-1]
                nxt.append((self.reg(f"{name}_sum", lambda u: u, t), sh))
            level = nxt
        t, sh = level[0]
        v = Value.cast(t.value) << sh
        v = v[:full.width]  # the exact product fits its natural shape
        return Tap(v.as_signed() if full.signed else v, t.stage)

    def _partial(self, name: str, x: Value, y: Value, stage: int) -> Tap:
        """``x·y`` (one DSP) two stages after ``stage``: operand registers, product register."""
        shape = Value.cast(x * y).shape()
        if self.ecp5 and self.m is not None:
            p = self._signal(shape, name)
            self.m.submodules[p.name] = ecp5_registered_multiplier(x, y, p, ce=self.en)
            return Tap(p, stage + 2)
        xr = self.reg(f"{name}_a", x, stage=stage)
        yv = y if isinstance(y, Const) else self.reg(f"{name}_b", y, stage=stage).value
        return self.reg(name, lambda u: u * yv, xr)

    def rom(self, name: str, words: list[int], width: int, addr: Tap) -> Tap:
        """``words[addr]`` two stages after ``addr``: block RAM read register, then a fabric register."""
        mem = None
        if self.m is not None:
            mem = Memory(shape=unsigned(width), depth=len(words), init=words)
            self.m.submodules[f"{self.prefix}{name}"] = mem
        return self.read(name, mem, width, addr)

    def read(self, name: str, mem: Memory | None, width: int, addr: Tap) -> Tap:
        """A new synchronous read port of ``mem`` at ``addr``, plus a fabric register (2 stages).

        Lanes share one ROM this way (``mem`` is ``None`` when planning).
        """
        if self.m is None:
            data = Signal(unsigned(width))
        else:
            rp = mem.read_port(domain="sync")
            self.m.d.comb += [rp.addr.eq(addr.value), rp.en.eq(self.en)]
            data = rp.data
        return self.reg(name, lambda d: d, Tap(data, addr.stage + 1))
