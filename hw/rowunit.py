"""The row unit: LayerNorm and RMSNorm rows of scratchpad tensors, one unit for every norm op.

One :class:`RowUnit` runs every ``Opcode.NORM`` instruction of a program. Each norm op of the
model is a :class:`celosia.ir.norm.NormRecord` (its :class:`~celosia.ir.norm.NormParams`, γ and
β); the instruction's ``p_addr`` selects the record, so ops with different ``D``, formats, eps,
γ and β share one datapath, sized for the widest record. Every row is bit-exact with
:func:`celosia.ir.norm.norm_int` (see :mod:`celosia.ir.norm` for the integer algorithm).

Instruction fields: ``x_addr``/``x_stride`` (input rows), ``y_addr``/``y_stride`` (output rows),
``m`` rows (≥ 1), ``nt = ceil(D/lanes)`` tiles per row, ``p_addr`` the record. Lanes of the last
tile beyond ``D`` are ignored on input and written as zero.

Datapath (``U = unit_lanes`` elements per cycle, ``W = lanes/U`` cycles per word, a row is
``B = nt·W`` beats)::

    statistics (rd0)  read a row word by word, U lanes a beat: S1 = Σq, S2 = Σq² (one registered
                      square per lane, adder trees, accumulator)
    row constants     free-running pipeline, one row in per B cycles:
                      V = max(n·S2 − S1², 0) (S1 := 0 for RMSNorm), Z = V·2^2k + e_q·n²,
                      bitlen(Z) → per-row shifts, Zm, r = rsqrt(Zm) (shared Rsqrt),
                      R = n·r and C = S1·r
    output (rd1)      read the row again, U lanes a beat: A·r = q·R − C (exact: A = n·q − S1),
                      t = round(A·r >> sh), t·γ + β·2^bs, round(>> ps), saturate → one word
                      written every W beats

Per-op constants (``n``, RMSNorm flag, ``k``, ``e_q·n²``, the shift offsets, the output range and
the γ/β ROM base) are small tables indexed by ``p_addr``, registered once per instruction; γ and
β live in one ROM of ``U`` (γ, β) code pairs per word, one word per beat (per tile when
``U = lanes``), rows of words per record.

**Why the input is read twice.** The unit owns both read ports while it runs, so the output pass
of row k (rd1) overlaps the statistics pass of row k+1 (rd0) at one word per ``W`` cycles on each
port: the same throughput as a row buffer, without one. A buffer would have to hold every row in
flight between the two passes (the row-constant pipeline is ~45 cycles deep, longer than a row
of a small ``D``), i.e. several rows of ``D·act_bits`` bits of RAM, for no gain in cycles.

**Timing** (fixed, :meth:`RowUnit.cycles`): ``(m + 1)·nt·W + NORM_LATENCY + ceil(log2 U)``
cycles. Steady state is one row per ``B = nt·W`` cycles (the statistics of row k+1 overlap the
output of row k; the rsqrt latency never serializes rows); the extra ``B`` is the first row's
statistics pass, which no output can overlap, and the constant is the pipeline depth
(statistics, row constants, output). The depth is the same for every unit the constructor
accepts (a shallower unit spends the spare cycles of the budget before its first read, which
costs no registers), so the cost needs no instance.

DSPs (ECP5 ``MULT18X18D``, registered on both sides, see :mod:`celosia.hw.pipeline`): per unit
lane ``1`` (q²) ``+ ⌈R bits/17⌉`` (q·R; 2 for ``D ≤ 256``) ``+ ⌈t bits/17⌉`` (t·γ; 2 up to
35-bit ``t``, e.g. 16-bit formats), i.e. 5 at 16-bit formats and ``D ≤ 256``; shared by the
lanes: n·S2 (3 at D = 32, 16 bits), S1² (4), n·r (2), S1·r (4) and the rsqrt (14), i.e.
``27 + 5·unit_lanes``. Measured (yosys ``synth_ecp5``, lanes = 8, act_bits = 16, two D = 32
LayerNorm records): 32 / 37 / 67 DSPs at unit_lanes = 1 / 2 / 8; at unit_lanes = 2 alone on the
ULX3S-85F (``celosia.boards.unit_build``, nextpnr seed 1): 124.5 MHz post-route, 3938 LUT, 4544
FF (777 of them the harness's), 37 DSP, 1 block RAM.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from celosia.errors import HardwareGenerationError
from celosia.hw.dsp import is_ecp5
from celosia.hw.norm import _bit_length, _tree
from celosia.hw.pipeline import Pipeline, Tap
from celosia.hw.primitives import Rsqrt, shift_right
from celosia.hw.spad import JobSignature, ReadPortSignature, WritePortSignature
from celosia.ir.norm import NormRecord

__all__ = ["RowUnit", "NORM_LATENCY", "MAX_ACT_BITS", "MAX_D"]

#: Pipeline depth of a NORM instruction beyond ``(m + 1)·nt·W`` cycles, for ``unit_lanes = 1``
#: (``ceil(log2 unit_lanes)`` more: the statistics adder trees).
NORM_LATENCY = 72
#: Widest activations and γ/β codes the fixed latency budget covers.
MAX_ACT_BITS = 24
#: Longest row the fixed latency budget covers.
MAX_D = 4096


def _sbits(maxabs: int) -> int:
    """Signed width holding ``[-maxabs, maxabs]``."""
    return max(int(maxabs).bit_length() + 1, 2)


def _fail(msg: str, hint: str):
    raise HardwareGenerationError(f"row unit: {msg}", hint=hint)


def _ram_delay(m: Module, name: str, value, n: int):
    """``value`` delayed by ``n`` (≥ 2) cycles through a circular RAM instead of ``n`` registers."""
    depth = 1 << (n - 1).bit_length()  # ≥ n: an entry is read before it is overwritten
    v = Value.cast(value)
    m.submodules[name] = mem = Memory(shape=v.shape(), depth=depth, init=[])
    ptr = Signal(range(depth), name=f"{name}_ptr")
    m.d.sync += ptr.eq(ptr + 1)
    wp, rp = mem.write_port(), mem.read_port()
    m.d.comb += [wp.addr.eq(ptr), wp.data.eq(v), wp.en.eq(1), rp.addr.eq(ptr - (n - 1))]
    return rp.data


class _RowBeats(wiring.Component):
    """Counts the beats of one row: ``W`` beats per tile, ``tiles`` tiles.

    ``go`` (re)starts a row; the beat is valid while ``active``: ``j`` is its sub-beat in the
    tile, ``t`` its tile, ``b`` its index in the row and ``e`` the element index of its first
    lane (``b·U``); ``first``/``last`` mark the row's first and last beat. ``go`` in a row's
    last beat starts the next row in the following cycle.
    """

    def __init__(self, beats_per_tile: int, unit_lanes: int, tile_bits: int = 10):
        self.W, self.U = beats_per_tile, unit_lanes
        super().__init__({
            "go": In(1), "tiles": In(tile_bits), "active": Out(1), "j": Out(range(max(beats_per_tile, 2))),
            "t": Out(tile_bits), "b": Out(tile_bits + beats_per_tile.bit_length()),
            "e": Out(tile_bits + (beats_per_tile * unit_lanes).bit_length()), "first": Out(1), "last": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        W = self.W
        m.d.comb += [self.first.eq(self.b == 0), self.last.eq((self.t == self.tiles - 1) & (self.j == W - 1))]
        with m.If(self.go):
            m.d.sync += [self.j.eq(0), self.t.eq(0), self.b.eq(0), self.e.eq(0), self.active.eq(1)]
        with m.Elif(self.active):
            with m.If(self.last):
                m.d.sync += self.active.eq(0)
            with m.Else():
                m.d.sync += [self.b.eq(self.b + 1), self.e.eq(self.e + self.U)]
                with m.If(self.j == W - 1):
                    m.d.sync += [self.j.eq(0), self.t.eq(self.t + 1)]
                with m.Else():
                    m.d.sync += self.j.eq(self.j + 1)
        return m


class RowUnit(wiring.Component):
    """LayerNorm / RMSNorm (``Opcode.NORM``) on scratchpad rows, for every norm record of a program.

    Parameters
    ----------
    lanes, act_bits : int
        Scratchpad word: ``lanes`` signed ``act_bits``-bit codes.
    addr_bits : int
        Scratchpad address width.
    ins_layout : Layout
        The controller's decoded instruction layout (:data:`celosia.hw.spad.InstructionLayout`).
    records : sequence of celosia.ir.norm.NormRecord
        The norm ops, indexed by the instruction's ``p_addr``. They must share the rsqrt
        parameters (``z_bits``, ``rsqrt_frac``, ``table_bits``, ``guard_bits``; the defaults of
        :func:`~celosia.ir.norm.norm_params` do).
    unit_lanes : int, optional
        Elements processed per cycle (default ``lanes``; must divide ``lanes``). A word takes
        ``lanes/unit_lanes`` cycles; the per-lane datapath (5 DSPs at 16-bit formats) is built
        ``unit_lanes`` times.

    Attributes
    ----------
    job : In(JobSignature)
    rd0, rd1 : Out(ReadPortSignature)
        rd0 reads rows for the statistics, rd1 reads them again for the output.
    wr : Out(WritePortSignature)
    latency : int
        ``cycles(ins) − (m + 1)·nt·lanes/unit_lanes``.
    rom_bits : int
        γ/β ROM plus the rsqrt seed table.

    Raises
    ------
    HardwareGenerationError
        No records, ``unit_lanes`` not dividing ``lanes``, formats wider than ``act_bits``,
        records with different rsqrt parameters, or a record beyond the fixed latency budget
        (``D > MAX_D``, γ/β wider than ``MAX_ACT_BITS``).
    """

    def __init__(self, lanes: int, act_bits: int, addr_bits: int, ins_layout, records, *, unit_lanes=None):
        if isinstance(lanes, bool) or not isinstance(lanes, int) or lanes < 1:
            _fail(f"lanes={lanes!r} must be an integer >= 1", "use the scratchpad's lanes")
        U = lanes if unit_lanes is None else unit_lanes
        if isinstance(U, bool) or not isinstance(U, int) or U < 1 or lanes % U:
            _fail(f"unit_lanes={unit_lanes!r} must divide lanes={lanes}",
                  f"use one of {[d for d in range(1, lanes + 1) if lanes % d == 0]}")
        if not 2 <= act_bits <= MAX_ACT_BITS:
            _fail(f"act_bits={act_bits} is outside 2..{MAX_ACT_BITS}", "use 8- or 16-bit activations")
        self.lanes, self.act_bits, self.addr_bits = lanes, act_bits, addr_bits
        self.unit_lanes, self.beats_per_tile = U, lanes // U
        self.records = tuple(records)
        if not self.records:
            _fail("no norm records", "build the unit only for programs with NORM instructions")
        for i, r in enumerate(self.records):
            if not isinstance(r, NormRecord):
                _fail(f"record {i} is a {type(r).__name__}, not a NormRecord",
                      "pass celosia.ir.norm.NormRecord(params, gamma, beta) per norm op")
        if len(self.records) > 1 << 12:
            _fail(f"{len(self.records)} records do not fit the 12-bit p_addr field", "split the program")
        self._derive()
        p0 = self.records[0].params
        self.rsqrt = Rsqrt(p0.rsqrt_in, p0.rsqrt_out, p0.table_bits, p0.guard_bits)
        self._stats_stage, self._row_stage, self._out_stage = self._plan()
        budget = NORM_LATENCY + (U - 1).bit_length()
        # the budget's spare cycles are spent before the first read (no registers needed)
        self._pad = budget - (self._pad_free + self._stats_stage + self._row_stage + self._out_stage)
        if self._pad < 0:
            _fail(f"the widest record needs {budget - self._pad} pipeline cycles, more than the fixed {budget}",
                  f"keep D <= {MAX_D}, formats <= {MAX_ACT_BITS} bits and the default rsqrt parameters")
        self.latency = budget
        self.rom_bits = self._rom_depth * self._rom_width + self.rsqrt.rom_bits
        word = lanes * act_bits
        super().__init__({
            "job": In(JobSignature(ins_layout)),
            "rd0": Out(ReadPortSignature(addr_bits, word)),
            "rd1": Out(ReadPortSignature(addr_bits, word)),
            "wr": Out(WritePortSignature(addr_bits, word)),
        })

    # ---- timing (what the performance model adds up) --------------------------------------------
    def cycles(self, ins) -> int:
        """Cycles ``busy`` stays high for instruction ``ins`` (start pulse excluded)."""
        return self.instruction_cycles(ins, self.lanes, self.unit_lanes)

    @staticmethod
    def instruction_cycles(ins, lanes: int, unit_lanes: int | None = None) -> int:
        """:meth:`cycles` without an instance: ``(m + 1)·nt·W + NORM_LATENCY + ceil(log2 U)``,
        ``U = unit_lanes`` (default ``lanes``), ``W = lanes/U``."""
        U = lanes if unit_lanes is None else unit_lanes
        return (ins.m + 1) * ins.nt * (lanes // U) + NORM_LATENCY + (U - 1).bit_length()

    # ---- constants and widths --------------------------------------------------------------------
    def _derive(self):
        """Per-record table values and the worst-case widths of every datapath value."""
        L, U, W, A = self.lanes, self.unit_lanes, self.beats_per_tile, self.act_bits
        ps = [r.params for r in self.records]
        p0 = ps[0]
        key = lambda p: (p.z_bits, p.rsqrt_frac, p.table_bits, p.guard_bits)  # noqa: E731
        for i, r in enumerate(self.records):
            p = r.params
            who = f"{p.unit} '{r.name}'" if r.name else f"{p.unit} record {i}"
            if key(p) != key(p0):
                _fail(f"{who} has rsqrt parameters {key(p)}, record 0 has {key(p0)}",
                      "give every norm op the same z_bits, rsqrt_frac, table_bits and guard_bits")
            for what, f in (("input", p.in_fmt), ("output", p.out_fmt)):
                if f.bits > A:
                    _fail(f"{who}: {what} format {f} is wider than act_bits={A}", "use narrower formats")
            for what, f in (("γ", p.gamma_fmt), ("β", p.beta_fmt)):
                if f is not None and f.bits > MAX_ACT_BITS:
                    _fail(f"{who}: {what} format {f} is wider than {MAX_ACT_BITS} bits", "use narrower formats")
            if p.D > MAX_D:
                _fail(f"{who}: D={p.D} is longer than {MAX_D}", "split the row")
        Dmax = max(p.D for p in ps)
        qmax = 1 << (A - 1)
        Wz, P = p0.z_bits, p0.rsqrt_frac
        s_of = lambda bl: -((Wz - max(bl, 1)) // 2)  # noqa: E731  (norm_int's per-row s)
        s_min = s_of(1)
        zw = max(((p.D * p.D * qmax * qmax) << (2 * p.k)) + p.eps_term for p in ps).bit_length()
        L0 = max(0, 1 - (min(p.sh_const for p in ps) + s_min))
        offs = [p.sh_const + s_min + L0 - 1 for p in ps]  # tsh = (s − s_min) + off ≥ 0
        tsh_max = max(offs) + s_of(zw) - s_min
        rmax = (1 << (P + 2)) - 1
        self._ks = sorted({2 * p.k for p in ps})
        self._pss = sorted({p.prod_shift for p in ps})
        lns = [p for p in ps if not p.rms]
        self._bss = sorted({p.beta_shift for p in lns}) or [0]
        gw = max(p.gamma_fmt.bits for p in ps)
        bw = max((p.beta_fmt.bits for p in lns), default=0)
        tw = max(p.t_bits for p in ps)
        accw = max(tw + gw, bw + max(self._bss)) + 1 if lns else tw + gw
        self._w = {
            "s1": _sbits(Dmax * qmax), "s2": (Dmax * qmax * qmax).bit_length(), "z": zw,
            "a": _sbits(2 * Dmax * qmax * rmax), "t": tw, "g": gw, "b": bw, "acc": accw,
            "fl": accw + max(0, -min(self._pss)), "tsh": max(tsh_max, 1), "r": P + 2,
        }
        self._Wz, self._s_of, self._s_min, self._L0 = Wz, s_of, s_min, L0
        self._Lz = -2 * s_min  # Z is pre-shifted left so the normalising shift is ≥ 0
        # γ/β ROM: per record nt·W words of U (γ, β) code pairs
        self._rom_width = U * (gw + bw)
        words, bases = [], []
        for r in self.records:
            bases.append(len(words))
            nt = -(-r.params.D // L)
            for t in range(nt):
                for j in range(W):
                    v = 0
                    for u in range(U):
                        d = t * L + j * U + u
                        if d < r.params.D:
                            v |= (r.gamma[d] & ((1 << gw) - 1)) << (u * gw)
                            if r.beta is not None:
                                v |= (r.beta[d] & ((1 << bw) - 1)) << (U * gw + u * bw)
                    words.append(v)
        self._rom_words = words + [0] * max(0, 2 - len(words))
        self._rom_depth = len(self._rom_words)
        abits = max(1, (self._rom_depth - 1).bit_length())
        # the per-record tables: name -> (shape, values)
        self._tables = {
            "n": (unsigned(Dmax.bit_length()), [p.D for p in ps]),
            "rms": (unsigned(1), [int(p.rms) for p in ps]),
            "ksel": (range(len(self._ks)), [self._ks.index(2 * p.k) for p in ps]),
            "eps": (unsigned(max(p.eps_term for p in ps).bit_length()), [p.eps_term for p in ps]),
            "off": (unsigned(max(max(offs).bit_length(), 1)), offs),
            "gbase": (unsigned(abits), bases),
            "bsel": (range(len(self._bss)), [0 if p.rms else self._bss.index(p.beta_shift) for p in ps]),
            "psel": (range(len(self._pss)), [self._pss.index(p.prod_shift) for p in ps]),
            "hi": (signed(A), [p.out_fmt.max_int for p in ps]),
            "lo": (signed(A), [p.out_fmt.min_int for p in ps]),
        }

    def _placeholders(self) -> dict:
        return {name: Signal(shape, name=f"rc_{name}") for name, (shape, _) in self._tables.items()}

    # ---- datapaths (run once without hardware to plan the stages, once in elaborate) -------------
    def _lanes(self, pipe: Pipeline, name: str, word: Tap, j: Tap, e: Tap, n):
        """The beat's ``U`` codes from a word (lanes ``j·U ..``), zero beyond ``D``: stage ``word + 1``.

        Also returns each lane's "element < D" flag (stage ``e + 1``).
        """
        A, U, W = self.act_bits, self.unit_lanes, self.beats_per_tile
        ok = [pipe.reg(f"{name}ok{u}", lambda x, u=u: (x + u) < n, e, shape=1) for u in range(U)]

        def pick(w, jj, k, u):
            lane = [w[(i * U + u) * A:(i * U + u + 1) * A].as_signed() for i in range(W)]
            return Mux(k, lane[0] if W == 1 else Array(lane)[jj], 0)
        q = [pipe.reg(f"{name}{u}", lambda w, jj, k, u=u: pick(w, jj, k, u), word, j, ok[u], shape=signed(A))
             for u in range(U)]
        return q, ok

    def _stats_path(self, pipe: Pipeline, word: Tap, j: Tap, e: Tap, rc) -> tuple[Tap, Tap]:
        """Per beat ``Σq`` and ``Σq²`` over the beat's lanes."""
        q, _ = self._lanes(pipe, "q", word, j, e, rc["n"])
        sq = [pipe.mul(f"sq{u}", x, x) for u, x in enumerate(q)]
        s1, s2 = _tree(pipe, "s1b", q), _tree(pipe, "s2b", sq)
        stage = max(s1.stage, s2.stage)
        return Tap(pipe.at(s1, stage), stage), Tap(pipe.at(s2, stage), stage)

    def _row_path(self, pipe: Pipeline, S1: Tap, S2: Tap, rc) -> dict:
        """Per row: ``Zm`` (the rsqrt input) and the shift ``tsh`` (``sh + L0 − 1``) of ``A·r``."""
        w, Wz, Lz, s_of = self._w, self._Wz, self._Lz, self._s_of
        nS2 = pipe.mul("nS2", S2, Tap(rc["n"], S2.stage))
        S1sq = pipe.mul("S1sq", S1, S1)
        V = pipe.reg("V", lambda a, b: Mux(a < b, 0, a - b), nS2, S1sq, shape=unsigned(len(nS2.value)))

        def scale(v):
            return (v << self._ks[0] if len(self._ks) == 1 else Array(v << k for k in self._ks)[rc["ksel"]]) + rc["eps"]
        Z = pipe.reg("Z", scale, V, shape=unsigned(w["z"]))
        bl = _bit_length(pipe, "bl", Z, w["z"])
        zsh_vals = [2 * s_of(b) + Lz for b in range(w["z"] + 1)]
        f_vals = [s_of(b) - self._s_min for b in range(w["z"] + 1)]
        zsh = pipe.reg("zsh", lambda v: Array(Const(x, range(max(zsh_vals) + 1)) for x in zsh_vals)[v], bl)
        f = pipe.reg("f", lambda v: Array(Const(x, range(max(f_vals) + 1)) for x in f_vals)[v], bl)
        tsh = pipe.reg("tsh", lambda v: v + rc["off"], f, shape=unsigned(w["tsh"].bit_length()))
        zl = Z.map(lambda v: Cat(Const(0, Lz), v) if Lz else v)
        Zm = shift_right(pipe, "Zm", zl, zsh).map(lambda v: v[:Wz])
        return {"Zm": Zm, "tsh": tsh}

    def _row_consts(self, pipe: Pipeline, r: Tap, S1: Tap, tsh: Tap, rc) -> dict:
        """Per row, from ``r`` (and ``S1`` at its stage): ``R = n·r``, ``C = S1·r`` and the shift."""
        R = pipe.mul("R", r, Tap(rc["n"], r.stage))
        C = pipe.mul("C", S1, r)
        stage = max(R.stage, C.stage)
        return {"R": Tap(pipe.at(R, stage), stage), "C": Tap(pipe.at(C, stage), stage),
                "tsh": Tap(pipe.at(tsh, stage), stage)}

    def _out_path(self, pipe: Pipeline, word: Tap, j: Tap, e: Tap, row: dict, rom, gaddr: Tap, rc) -> list[Tap]:
        """The output of a beat's ``U`` lanes (zero beyond ``D``)."""
        w, U, L0 = self._w, self.unit_lanes, self._L0
        q, ok = self._lanes(pipe, "q", word, j, e, rc["n"])
        mw = w["tsh"]

        def rnd(h, st):  # h = x >> tsh: its LSB is the round bit, st the bits below
            fl = h >> 1
            return fl + (h[0] & (st | fl[0]))
        ts, mask = [], None
        for u in range(U):
            qr = pipe.mul(f"qr{u}", q[u], row["R"])
            a = pipe.reg(f"a{u}", lambda x, c: x - c, qr, row["C"], shape=signed(w["a"]))
            pw = a.map(lambda v: v << L0) if L0 else a
            if mask is None:  # the sticky bits below the round bit, from the row's shift (shared by the lanes)
                t1 = Tap(pipe.at(row["tsh"], pw.stage - 1), pw.stage - 1)
                mask = pipe.reg("mask", lambda t: ((Const(1, mw + 1) << t) - 1)[:mw], t1, shape=unsigned(mw))
            st = pipe.reg(f"st{u}", lambda v, mk: (v.as_unsigned()[:min(mw, len(v))] & mk).any(), pw, mask)
            hi = shift_right(pipe, f"hi{u}", pw, row["tsh"])
            ts.append(pipe.reg(f"t{u}", rnd, hi, st, shape=signed(w["t"])))
        s = ts[0].stage
        gb = pipe.read("gb", rom, self._rom_width, Tap(pipe.at(gaddr, s - 2), s - 2))
        gw, bw = w["g"], w["b"]
        out = []
        for u in range(U):
            g = gb.map(lambda v, u=u: v[u * gw:(u + 1) * gw].as_signed())
            acc = pipe.mul(f"tg{u}", ts[u], g)
            if bw:
                b = gb.map(lambda v, u=u: v[U * gw + u * bw:U * gw + (u + 1) * bw].as_signed())
                bss = self._bss

                def add(x, y):
                    return x + (y << bss[0] if len(bss) == 1 else Array(y << k for k in bss)[rc["bsel"]])
                acc = pipe.reg(f"acc{u}", add, acc, b, shape=signed(w["acc"]))
            fl, rb, sk = self._round_parts(pipe, f"p{u}", acc, rc["psel"])
            y = pipe.reg(f"rn{u}", lambda f_, r_, s_: f_ + (r_ & (s_ | f_[0])), fl, rb, sk, shape=signed(w["fl"] + 1))

            def sat(v, k):
                return Mux(k, Mux(v > rc["hi"], rc["hi"], Mux(v < rc["lo"], rc["lo"], v)), 0)
            out.append(pipe.reg(f"y{u}", sat, y, ok[u], shape=signed(self.act_bits)))
        return out

    def _round_parts(self, pipe: Pipeline, name: str, acc: Tap, sel):
        """``acc >> ps`` (floor), its round bit and sticky bit, ``ps`` the record's prod_shift."""
        def floor(v, s):
            return v >> s if s > 0 else v << -s

        def rbit(v, s):
            return v[s - 1] if s > 0 else Const(0, 1)

        def sticky(v, s):
            return v[:s - 1].any() if s > 1 else Const(0, 1)

        def choose(fn):
            def pick(v):
                vals = [fn(v, s) for s in self._pss]
                return vals[0] if len(vals) == 1 else Array(vals)[sel]
            return pick
        fl = pipe.reg(f"{name}fl", choose(floor), acc, shape=signed(self._w["fl"]))
        rb = pipe.reg(f"{name}rb", choose(rbit), acc, shape=1)
        sk = pipe.reg(f"{name}sk", choose(sticky), acc, shape=1)
        return fl, rb, sk

    def _plan(self) -> tuple[int, int, int]:
        """Stages of the three pipelines, from a run without hardware."""
        L, A, W = self.lanes, self.act_bits, self.beats_per_tile
        rc = self._placeholders()
        j, e = Tap(Signal(range(max(W, 2))), 0), Tap(Signal(10 + L.bit_length()), 0)
        s1, _ = self._stats_path(Pipeline(None), Tap(Signal(L * A), 1), j, e, rc)
        rp = Pipeline(None)
        row = self._row_path(rp, Tap(Signal(signed(self._w["s1"])), 0), Tap(Signal(unsigned(self._w["s2"])), 0), rc)
        r = Tap(Signal(unsigned(self._w["r"])), row["Zm"].stage + self.rsqrt.latency)
        consts = self._row_consts(rp, r, Tap(Signal(signed(self._w["s1"])), r.stage), row["tsh"], rc)
        row_stage = consts["R"].stage
        held = {k: Tap(Signal(Value.cast(v.value).shape()), 0) for k, v in consts.items()}
        ys = self._out_path(Pipeline(None), Tap(Signal(L * A), 1), j, e, held, None, Tap(Signal(16), 0), rc)
        return s1.stage, row_stage, ys[0].stage

    #: Cycles of a run outside the three pipelines and the (m + 1)·B beats: the accumulator
    #: register between the statistics sums and the row pipeline.
    _pad_free = 1

    # ---- hardware --------------------------------------------------------------------------------
    def elaborate(self, platform):
        m = Module()
        ecp5 = is_ecp5(platform)
        W, U, A = self.beats_per_tile, self.unit_lanes, self.act_bits
        job = self.job
        ins = Signal.like(job.ins)
        busy = Signal()
        m.d.comb += job.busy.eq(busy)
        with m.If(job.start):
            m.d.sync += [ins.eq(job.ins), busy.eq(1)]

        # per-record constants: loaded with the instruction (valid from the first beat of a run)
        rc = {}
        for name, (shape, values) in self._tables.items():
            sig = Signal(shape, name=f"rc_{name}")
            if len(set(values)) == 1:
                m.d.comb += sig.eq(values[0])
            else:
                with m.If(job.start):
                    m.d.sync += sig.eq(Array(Const(v, shape) for v in values)[job.ins.p_addr])
            rc[name] = sig

        # ---- statistics: rows through rd0, one beat per cycle ------------------------------------
        m.submodules.stat_beats = sb = _RowBeats(W, U)
        srow = Signal(16)
        sx = Signal(self.addr_bits)
        more = srow != ins.m - 1
        kick = job.start  # the first row starts after the budget's spare cycles
        for k in range(self._pad):
            d = Signal(name=f"kick{k + 1}")
            m.d.sync += d.eq(kick)
            kick = d
        m.d.comb += [sb.tiles.eq(ins.nt), sb.go.eq(kick | (sb.active & sb.last & more)),
                     self.rd0.en.eq(sb.active), self.rd0.addr.eq(sx + sb.t)]
        with m.If(job.start):
            m.d.sync += [srow.eq(0), sx.eq(job.ins.x_addr)]
        with m.Elif(sb.active & sb.last):
            m.d.sync += [srow.eq(srow + 1), sx.eq(sx + ins.x_stride)]
        sp = Pipeline(m, prefix="st_", ecp5=ecp5)
        s1b, s2b = self._stats_path(sp, Tap(self.rd0.data, 1), Tap(sb.j, 0), Tap(sb.e, 0), rc)
        X = s1b.stage
        assert X == self._stats_stage
        valid_x = sp.valid_chain(sb.active, X, "v")
        first_x = sp.at(Tap(sb.first, 0), X)
        last_x = sp.at(Tap(sb.last, 0), X)
        S1 = Signal(signed(self._w["s1"]))
        S2 = Signal(unsigned(self._w["s2"]))
        row_v = Signal()  # S1, S2 hold a whole row's sums
        with m.If(valid_x):
            m.d.sync += [S1.eq(Mux(first_x, 0, S1) + s1b.value), S2.eq(Mux(first_x, 0, S2) + s2b.value)]
        m.d.sync += row_v.eq(valid_x & last_x)

        # ---- row constants: a free-running pipeline, one row in every B cycles --------------------
        rp = Pipeline(m, prefix="row_", ecp5=ecp5)
        S1e = Tap(Mux(rc["rms"], 0, S1), 0)
        row = self._row_path(rp, S1e, Tap(S2, 0), rc)
        m.submodules.rsqrt = rs = self.rsqrt
        m.d.comb += [rs.x.valid.eq(1), rs.x.payload.eq(row["Zm"].value), rs.y.ready.eq(1)]
        r = Tap(rs.y.payload, row["Zm"].stage + rs.latency)
        S1late = Tap(_ram_delay(m, "row_s1", S1e.value, r.stage), r.stage)  # S1 meets its row's r
        consts = self._row_consts(rp, r, S1late, row["tsh"], rc)
        assert consts["R"].stage == self._row_stage
        pulse = rp.valid_chain(row_v, self._row_stage, "v")

        # ---- output: rows through rd1 again, started by each row's constants ---------------------
        held = {}
        for k, v in consts.items():
            h = Signal(Value.cast(v.value).shape(), name=f"o_{k}_row")
            with m.If(pulse):
                m.d.sync += h.eq(v.value)
            held[k] = Tap(h, 0)
        m.submodules.out_beats = ob = _RowBeats(W, U)
        ox, ox_next = Signal(self.addr_bits), Signal(self.addr_bits)
        orow_next = Signal(16)
        o_final = Signal()  # the row being output is the instruction's last
        m.d.comb += [ob.tiles.eq(ins.nt), ob.go.eq(pulse), self.rd1.en.eq(ob.active), self.rd1.addr.eq(ox + ob.t)]
        with m.If(job.start):
            m.d.sync += [ox_next.eq(job.ins.x_addr), orow_next.eq(0)]
        with m.Elif(pulse):
            m.d.sync += [ox.eq(ox_next), ox_next.eq(ox_next + ins.x_stride), orow_next.eq(orow_next + 1),
                         o_final.eq(orow_next == ins.m - 1)]
        m.submodules.gbrom = rom = Memory(shape=unsigned(max(self._rom_width, 1)), depth=self._rom_depth,
                                          init=self._rom_words)
        op = Pipeline(m, prefix="o_", ecp5=ecp5)
        ys = self._out_path(op, Tap(self.rd1.data, 1), Tap(ob.j, 0), Tap(ob.e, 0), held, rom,
                            Tap(rc["gbase"] + ob.b, 0), rc)
        S = self._out_stage
        yv = [op.at(y, S) for y in ys]
        wv = op.valid_chain(ob.active, S, "v")
        wj = op.at(Tap(ob.j, 0), S)
        wlast = op.at(Tap(ob.j == W - 1, 0), S)
        wfinal = op.at(Tap(ob.last & o_final, 0), S)
        wt, wrow = Signal(10), Signal(self.addr_bits)  # words are written in order: count them here
        with m.If(job.start):
            m.d.sync += [wt.eq(0), wrow.eq(job.ins.y_addr)]
        with m.Elif(wv & wlast):
            with m.If(wt == ins.nt - 1):
                m.d.sync += [wt.eq(0), wrow.eq(wrow + ins.y_stride)]
            with m.Else():
                m.d.sync += wt.eq(wt + 1)
        parts = []
        for jj in range(W - 1):  # the word's earlier beats wait here for its last one
            h = Signal(U * A, name=f"o_word{jj}")
            with m.If(wv & (wj == jj)):
                m.d.sync += h.eq(Cat(*yv))
            parts.append(h)
        m.d.comb += [self.wr.en.eq(wv & wlast), self.wr.addr.eq(wrow + wt), self.wr.data.eq(Cat(*parts, *yv))]
        with m.If(wv & wlast & wfinal):
            m.d.sync += busy.eq(0)  # busy falls on the cycle after the last write
        return m
