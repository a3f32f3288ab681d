"""The linear array: an R×C multiply-accumulate array with a fused requantizing epilogue.

One instance of :class:`LinearArray` serves every matrix product of a model (Q/K/V/O projections,
MLPs, expert FFNs). The controller streams, for each output tile and each activation row, the K
tiles of that row in order; the array accumulates them and, on the row's last tile, applies the
epilogue (bias, residual, requantizing shift with rounding, saturation, ReLU) and emits one output
beat. The arithmetic is exactly :func:`celosia.ir.numerics.linear_int`, row by row.

The module exposes the stream payload layouts as functions (:func:`x_beat_layout`,
:func:`w_tile_layout`, :func:`y_beat_layout`) and the configuration layout :data:`LinearConfig`, so
controllers and testbenches can build payloads without instantiating the array.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from celosia.errors import HardwareGenerationError
from celosia.hw.dsp import ecp5_registered_multiplier as _ecp5_registered_multiplier
from celosia.hw.gelu import Gelu
from celosia.ir.numerics import Fixed

__all__ = [
    "LinearConfig",
    "OUT_BITS_WIDTH",
    "MAX_OPERAND_BITS",
    "MAX_ACC_BITS",
    "x_beat_layout",
    "w_tile_layout",
    "y_beat_layout",
    "LinearArray",
]

#: Widest activation or weight operand: one product must map onto one 18×18 DSP multiplier.
MAX_OPERAND_BITS = 18

#: Widest accumulator (the width of a DSP cascade accumulator on ECP5 / Xilinx parts).
MAX_ACC_BITS = 48

#: Width of :data:`LinearConfig`'s ``out_bits`` field (enough for any ``act_bits`` ≤ 18).
OUT_BITS_WIDTH = 5

#: Per-job configuration of the array's epilogue (a plain struct, not a stream).
#:
#: ``shift``
#:     Requantizing right shift of the accumulator, 0..63 (``frac_x + frac_w - frac_out``).
#: ``res_shift``
#:     Left shift applied to the residual before it is added to the accumulator, 0..63.
#: ``rounding``
#:     :attr:`celosia.ir.numerics.Rounding.code` of the requantizing shift: 0 floor, 1 half-up,
#:     2 half-even; 3 is reserved and behaves like 0.
#: ``relu``
#:     Apply ``max(y, 0)`` after saturation.
#: ``residual``
#:     Add ``res << res_shift`` (from the row's ``last`` beat) to the accumulator.
#: ``out_bits``
#:     Saturate to the signed ``out_bits``-bit range; values outside ``2..act_bits`` are clamped
#:     into it.
#: ``gelu``
#:     Apply GELU (erf form, :func:`celosia.ir.gelu.gelu_int` in the array's ``gelu_fmt``) after
#:     saturation and ReLU; ignored by an array generated without ``gelu_frac``.
LinearConfig = data.StructLayout(
    {
        "shift": unsigned(6),
        "res_shift": unsigned(6),
        "rounding": unsigned(2),
        "relu": unsigned(1),
        "residual": unsigned(1),
        "out_bits": unsigned(OUT_BITS_WIDTH),
        "gelu": unsigned(1),
    }
)


def x_beat_layout(rows: int, cols: int, act_bits: int, acc_bits: int) -> data.StructLayout:
    """The payload layout of the activation stream ``x``.

    Parameters
    ----------
    rows, cols : int
        Array dimensions (``rows`` is the reduction dimension K of one tile, ``cols`` is N).
    act_bits : int
        Activation (and residual) width.
    acc_bits : int
        Accumulator (and bias) width.

    Returns
    -------
    amaranth.lib.data.StructLayout
        Fields ``x`` (``rows`` signed activations, one K tile of a row), ``bias`` (``cols`` signed
        accumulator-format biases, read on ``first``), ``res`` (``cols`` signed residual codes, read
        on ``last`` when ``cfg.residual`` is set), ``first`` and ``last`` (1 bit each).
    """
    return data.StructLayout(
        {
            "x": data.ArrayLayout(signed(act_bits), rows),
            "bias": data.ArrayLayout(signed(acc_bits), cols),
            "res": data.ArrayLayout(signed(act_bits), cols),
            "first": unsigned(1),
            "last": unsigned(1),
        }
    )


def w_tile_layout(rows: int, cols: int, weight_bits: int) -> data.ArrayLayout:
    """The payload layout of the weight stream ``w``: one whole weight tile per beat.

    Element ``r * cols + c`` is ``W[k=r][n=c]`` of the tile.
    """
    return data.ArrayLayout(signed(weight_bits), rows * cols)


def y_beat_layout(cols: int, act_bits: int) -> data.ArrayLayout:
    """The payload layout of the output stream ``y``: one output row tile (``cols`` codes)."""
    return data.ArrayLayout(signed(act_bits), cols)


def _check_int(name: str, value, lo: int, hi: int | None, hint: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise HardwareGenerationError(
            f"linear array: {name} must be an integer, got {value!r}", hint=hint
        )
    if value < lo or (hi is not None and value > hi):
        rng = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise HardwareGenerationError(
            f"linear array: {name}={value} is out of range {rng}", hint=hint
        )
    return value


def _asr_const(v, k: int):
    """Arithmetic right shift of the bits of ``v`` by a constant, keeping the width."""
    width = len(v)
    if k == 0:
        return v
    if k >= width:
        return v[-1].replicate(width)
    return Cat(v[k:], v[-1].replicate(k))


def _shl_const(v, k: int):
    """Left shift of the bits of ``v`` by a constant, keeping the width (drops high bits)."""
    width = len(v)
    if k == 0:
        return v
    if k >= width:
        return Const(0, width)
    return Cat(Const(0, k), v[: width - k])


class LinearArray(wiring.Component):
    """An R×C multiply-accumulate array with a fused bias/residual/requantize/ReLU epilogue.

    Each beat multiplies one K tile of one activation row (``rows`` values) by one weight tile
    (``rows × cols``) and accumulates the ``cols`` partial sums; the row's ``last`` beat finishes
    the row through the epilogue and emits one output beat. For a job of M rows, K = KT·rows and
    N = NT·cols, the controller sends, for each output tile ``nt`` and each row ``m``, the KT beats
    ``kt = 0..KT-1`` (``first`` on ``kt == 0``, ``last`` on ``kt == KT-1``; both on one beat when
    KT = 1); the ``y`` beats then come out in the same (nt, m) order and equal
    ``linear_int(x, w, bias, Fixed(out_bits, ·), shift, rounding, relu, residual, res_shift)``
    bit for bit.

    Parameters
    ----------
    rows : int
        Rows of the array: the K extent of one tile (reduction dimension), ≥ 1.
    cols : int
        Columns of the array: the N extent of one tile (output channels per beat), ≥ 1.
    act_bits : int
        Activation, residual and output code width, 2..18.
    weight_bits : int
        Weight code width, 2..18 (with ``act_bits`` ≤ 18 every product maps onto one 18×18 DSP).
    acc_bits : int
        Accumulator width, ``act_bits + weight_bits`` .. 48. Accumulation is two's complement
        modulo ``2**acc_bits``: intermediate overflow is harmless, but the final
        ``bias + x·w + (res << res_shift)`` of each output must fit in ``acc_bits`` signed bits.
        The array does not detect overflow; the compiler's format selection guarantees it.
    mult_regs : int, optional
        Registers on each side of every multiplier (1..3). Default 2: with one, the 8×8 array
        on ECP5-85F reached 91.5 MHz in the full accelerator because the placer left long
        routes on both sides of each ``MULT18X18D``; each extra stage adds 2 cycles of latency.
    tree_levels_per_stage : int, optional
        Adder-tree levels between pipeline registers (1 registers every level, 2 every other
        level). Default 1. Measured on ECP5-85F (yosys + nextpnr, 8×8, 16-bit activations, 8-bit
        weights, 40-bit accumulator): 110 MHz with 1, 104 MHz with 2 (about 1.1k fewer
        flip-flops); both are limited by the multiplier itself (register → ``MULT18X18D`` →
        register, about 4 ns of DSP delay plus routing), not by the tree.
    fifo_depth : int, optional
        Entries of the output FIFO, ≥ 2. The default, ``latency + 1``, is the smallest depth that
        sustains one beat per cycle while ``y.ready`` is held high.
    gelu_frac : int, optional
        Generate the GELU epilogue: ``cols`` lanes of :class:`celosia.hw.gelu.Gelu` in
        ``Fixed(act_bits, gelu_frac)`` (3 ≤ gelu_frac ≤ act_bits − 2), applied to a job's outputs
        when its ``cfg.gelu`` is set (``gelu_int(linear_int(...))``); adds the GELU latency.

    Attributes
    ----------
    x : In(stream.Signature(x_layout))
        Activation beats: fields ``x``, ``bias``, ``res``, ``first``, ``last`` (see
        :func:`x_beat_layout`). ``bias`` is read only on ``first`` beats, ``res`` only on ``last``
        beats with ``cfg.residual`` set; otherwise they are don't-care.
    w : In(stream.Signature(w_layout))
        Weight tiles, one whole tile per beat (see :func:`w_tile_layout`).
    y : Out(stream.Signature(y_layout))
        Output rows, one beat per ``last`` input beat.
    cfg : In(LinearConfig)
        Epilogue configuration (see :data:`LinearConfig`). It is sampled together with each input
        beat and travels down the pipeline with it, so it only has to be stable while a job's beats
        are being accepted: the controller may change it for the next job without draining the
        array. A row's epilogue uses the ``cfg`` sampled with its ``last`` beat.
    x_layout, w_layout, y_layout : Layout
        The payload layouts of the three streams.
    latency : int
        Cycles from the cycle a ``last`` beat is accepted (``x.valid & x.ready``) to the cycle its
        output is presented on ``y`` (``y.valid``), when the output FIFO is empty.
    fifo_depth : int
        Entries of the output FIFO (the number of credits).

    Notes
    -----
    **Handshake.** ``x`` and ``w`` are joined: a beat is consumed in a cycle where both are valid
    and the array has a credit; ``x.ready`` and ``w.ready`` are then both high, so one is never
    consumed without the other.

    **Pipeline** (one beat per cycle, II = 1; times in cycles after acceptance):

    1. input registers: activation row, weight tile, bias, residual, flags and ``cfg`` (the
       registers directly before every multiplier);
    2. ``rows·cols`` multipliers ``x[r]·w[r][c]`` into registers (directly after every
       multiplier; yosys does not pack fabric registers into ECP5 ``MULT18X18D``, so these two
       register ranks are what lets the DSPs run at full speed); in parallel the residual is
       shifted left by ``res_shift`` (two stages of 8-way shifts) and added to the bias into a
       per-column *addend* ``(first ? bias : 0) + (last & residual ? res << res_shift : 0)``;
    3. a pipelined adder tree per column, ``ceil(log2(rows))`` levels, a register rank every
       ``tree_levels_per_stage`` levels; widths grow one bit per level up to ``acc_bits``;
    4. one stage adding the addend to the tree output;
    5. the accumulator: ``acc = (first ? 0 : acc) + sum`` (the only feedback loop, one
       ``acc_bits`` adder per column);
    6. the epilogue, five register stages on ``last`` rows: coarse arithmetic right shift by
       ``8·(shift >> 3)`` with the sticky bit of the dropped bits; fine shift by ``shift & 7``;
       rounding increment (floor / half-up / half-even); comparison with the saturation bounds
       of ``out_bits`` (lower bound 0 under ReLU, which equals ``max(saturate(·), 0)``);
       selection;
    7. the output FIFO (:class:`~amaranth.lib.fifo.SyncFIFOBuffered`, 2 cycles).

    **Backpressure without a global stall.** No pipeline register has a stall enable: the
    pipeline always advances and every finished row is written into the output FIFO. The input is
    accepted only while a credit is available; a credit is taken by each accepted ``last`` beat and
    returned when its row leaves the FIFO on ``y``, so the FIFO can always hold every row in
    flight. With ``fifo_depth ≥ latency + 1`` the array sustains one beat per cycle while
    ``y.ready`` is held high.

    **Double-buffered weights.** The weight stream delivers one whole ``rows × cols`` tile per
    beat, and the tile is captured in the input registers on the edge that accepts it. While tile
    *t* multiplies out of those registers, tile *t + 1* is already presented on ``w`` and is
    captured on the same edge that retires tile *t*: the input register and the producer's output
    register form the two buffers, so weight loads overlap compute completely and never stall the
    array (cycles = beats, no reload bubbles).
    """

    def __init__(
        self,
        rows: int,
        cols: int,
        act_bits: int = 16,
        weight_bits: int = 8,
        acc_bits: int = 40,
        *,
        tree_levels_per_stage: int = 1,
        mult_regs: int = 2,
        fifo_depth: int | None = None,
        gelu_frac: int | None = None,
    ):
        _check_int("rows", rows, 1, None, "the array needs at least one row (K tile of 1 or more)")
        _check_int("cols", cols, 1, None, "the array needs at least one column (N tile of 1 or more)")
        dsp_hint = (
            f"each product must fit one 18×18 DSP multiplier: use 2..{MAX_OPERAND_BITS}-bit "
            "activations and weights (quantize to narrower formats)"
        )
        _check_int("act_bits", act_bits, 2, MAX_OPERAND_BITS, dsp_hint)
        _check_int("weight_bits", weight_bits, 2, MAX_OPERAND_BITS, dsp_hint)
        if isinstance(acc_bits, bool) or not isinstance(acc_bits, int):
            raise HardwareGenerationError(
                f"linear array: acc_bits must be an integer, got {acc_bits!r}",
                hint="choose an accumulator width between act_bits + weight_bits and 48",
            )
        if acc_bits < act_bits + weight_bits:
            raise HardwareGenerationError(
                f"linear array: acc_bits={acc_bits} is narrower than one product "
                f"(act_bits + weight_bits = {act_bits} + {weight_bits} = {act_bits + weight_bits})",
                hint=f"use acc_bits >= {act_bits + weight_bits} (plus log2 of the reduction length "
                "so sums cannot overflow)",
            )
        if acc_bits > MAX_ACC_BITS:
            raise HardwareGenerationError(
                f"linear array: acc_bits={acc_bits} exceeds the maximum of {MAX_ACC_BITS}",
                hint=f"use acc_bits <= {MAX_ACC_BITS} (narrower activations/weights, or split the "
                "reduction)",
            )
        _check_int(
            "tree_levels_per_stage", tree_levels_per_stage, 1, None,
            "use 1 (a register after every adder level) or 2 (after every other level)",
        )

        _check_int(
            "mult_regs", mult_regs, 1, 3,
            "use 1 (one register before and after each multiplier) or 2 (two: lets the placer "
            "put one register next to the DSP, which ECP5 needs for 100 MHz)",
        )
        self.mult_regs = mult_regs
        self.rows = rows
        self.cols = cols
        self.act_bits = act_bits
        self.weight_bits = weight_bits
        self.acc_bits = acc_bits
        self.tree_levels_per_stage = tree_levels_per_stage

        self.x_layout = x_beat_layout(rows, cols, act_bits, acc_bits)
        self.w_layout = w_tile_layout(rows, cols, weight_bits)
        self.y_layout = y_beat_layout(cols, act_bits)

        # Pipeline timing (register times in cycles after the accepting cycle).
        self.tree_levels = (rows - 1).bit_length()  # ceil(log2(rows))
        self._t_tree, self._t_addend, self._t_fin, self._t_out, self.latency = self._timing(
            rows, tree_levels_per_stage, mult_regs
        )

        # optional GELU epilogue: one lane per column, in and out format Fixed(act_bits, gelu_frac)
        self.gelu = None
        if gelu_frac is not None:
            _check_int("gelu_frac", gelu_frac, 3, act_bits - 2,
                       "GELU needs a signed format with at least 3 fractional bits and 2 integer bits")
            self.gelu_fmt = Fixed(act_bits, gelu_frac)
            self.gelu = Gelu(self.gelu_fmt, self.gelu_fmt, lanes=cols)
            self.gelu._MustUse__silence = True  # elaborated as a submodule; silence if never built
            self._t_out += self.gelu.latency
            self.latency += self.gelu.latency

        if fifo_depth is None:
            fifo_depth = self.latency + 1
        _check_int(
            "fifo_depth", fifo_depth, 2, None,
            f"use at least latency + 1 = {self.latency + 1} entries for full throughput",
        )
        self.fifo_depth = fifo_depth

        super().__init__(
            {
                "x": In(stream.Signature(self.x_layout)),
                "w": In(stream.Signature(self.w_layout)),
                "y": Out(stream.Signature(self.y_layout)),
                "cfg": In(LinearConfig),
            }
        )

    @staticmethod
    def _timing(rows: int, tree_levels_per_stage: int, mult_regs: int = 2) -> tuple[int, int, int, int, int]:
        levels = (rows - 1).bit_length()  # ceil(log2(rows))
        # input regs (1) + extra input/product regs + product reg (1) + tree levels
        t_tree = 2 + 2 * (mult_regs - 1) + -(-levels // tree_levels_per_stage)  # adder-tree output
        t_addend = 4  # input regs (1) -> residual shift lo (2) -> hi (3) -> bias + residual (4)
        t_fin = max(t_tree, t_addend) + 1  # tree sum + addend
        t_out = t_fin + 6  # accumulator, coarse shift, fine shift, round, compare, select
        latency = t_out + 2  # SyncFIFOBuffered: write -> r_rdy in 2 cycles
        return t_tree, t_addend, t_fin, t_out, latency

    @staticmethod
    def pipeline_latency(rows: int, tree_levels_per_stage: int = 1, mult_regs: int = 2) -> int:
        """The :attr:`latency` of an array with ``rows`` rows, without building one.

        For performance models and controllers: it depends only on ``rows`` (through the adder
        tree depth) and ``tree_levels_per_stage``.
        """
        _check_int("rows", rows, 1, None, "the array needs at least one row")
        _check_int("tree_levels_per_stage", tree_levels_per_stage, 1, None,
                   "use 1 or 2")
        return LinearArray._timing(rows, tree_levels_per_stage, mult_regs)[-1]

    @property
    def macs_per_cycle(self) -> int:
        """Multiply-accumulates per cycle at full throughput (``rows * cols``)."""
        return self.rows * self.cols

    def elaborate(self, platform):
        m = Module()
        R, C = self.rows, self.cols
        A, W, P = self.act_bits, self.weight_bits, self.acc_bits

        info_layout = data.StructLayout(
            {"first": unsigned(1), "last": unsigned(1), "cfg": LinearConfig}
        )

        # ---- credits and the input join --------------------------------------------------
        D = self.fifo_depth
        m.submodules.fifo = fifo = SyncFIFOBuffered(width=C * A, depth=D)
        credits = Signal(range(D + 1), init=D)
        has_credit = Signal()
        fire = Signal()
        m.d.comb += [
            has_credit.eq(credits != 0),
            fire.eq(self.x.valid & self.w.valid & has_credit),
            self.x.ready.eq(self.w.valid & has_credit),
            self.w.ready.eq(self.x.valid & has_credit),
        ]
        take = fire & self.x.payload.last
        give = fifo.r_rdy & self.y.ready
        m.d.sync += credits.eq(credits - take + give)

        # ---- stage 1: input registers (before the multipliers) ---------------------------
        s0_valid = Signal(name="s0_valid")
        s0_info = Signal(info_layout, reset_less=True, name="s0_info")
        s0_x = Signal(self.x_layout, reset_less=True, name="s0_x")
        s0_w = Signal(self.w_layout, reset_less=True, name="s0_w")
        m.d.sync += [
            s0_valid.eq(fire),
            s0_info.first.eq(self.x.payload.first),
            s0_info.last.eq(self.x.payload.last),
            s0_info.cfg.eq(self.cfg),
            s0_x.eq(self.x.payload),
            s0_w.eq(self.w.payload),
        ]

        # Control (valid + flags + cfg) delayed to any time; each beat's control travels with it.
        valid_at = {1: s0_valid}
        info_at = {1: s0_info}

        def ctrl(t):
            if t not in valid_at:
                pv, pi = ctrl(t - 1)
                v = Signal(name=f"valid_t{t}")
                i = Signal(info_layout, reset_less=True, name=f"info_t{t}")
                m.d.sync += [v.eq(pv), i.eq(pi)]
                valid_at[t], info_at[t] = v, i
            return valid_at[t], info_at[t]

        def delay(value, n, shape, name):
            for k in range(n):
                r = Signal(shape, reset_less=True, name=f"{name}_d{k + 1}")
                m.d.sync += r.eq(value)
                value = r
            return value

        # ---- stage 2: multipliers (registered outputs) -----------------------------------
        # With mult_regs = 2 each multiplier gets its own extra register on both sides, so
        # the placer can put one next to the DSP block and the long routes run register to
        # register (on ECP5 the DSP-to-fabric routing otherwise eats the 10 ns budget).
        # On ECP5 (a platform whose family is "ecp5") the registers nearest the multiplier
        # are the MULT18X18D's own input and output registers, which yosys cannot pack:
        # same latency, but no fabric route inside the multiplier's cycle.
        extra = self.mult_regs - 1
        ecp5 = extra >= 1 and getattr(platform, "family", None) == "ecp5"
        prods = [[None] * C for _ in range(R)]
        for r in range(R):
            for c in range(C):
                pre = 2 * extra - 1 if ecp5 else extra
                a = delay(s0_x.x[r], pre, signed(A), f"mul_a_r{r}_c{c}")
                b = delay(s0_w[r * C + c], pre, signed(W), f"mul_b_r{r}_c{c}")
                p = Signal(signed(A + W), reset_less=True, name=f"prod_r{r}_c{c}")
                if ecp5:
                    m.submodules[f"mul_r{r}_c{c}"] = _ecp5_registered_multiplier(a, b, p)
                    prods[r][c] = p
                else:
                    m.d.sync += p.eq(a * b)
                    prods[r][c] = delay(p, extra, signed(A + W), f"prod_r{r}_c{c}")

        # ---- addend path: residual shift (2 stages) and bias + residual (1 stage) --------
        _, info1 = ctrl(1)
        _, info2 = ctrl(2)
        _, info3 = ctrl(3)
        rs = info1.cfg.res_shift  # beat's res_shift at time 1 (== at time 2, same beat later)
        addends = []
        for c in range(C):
            # time 2: sign-extend to P bits and shift by res_shift[0:3]
            res_ext = Signal(signed(P), name=f"res_ext_c{c}")
            m.d.comb += res_ext.eq(s0_x.res[c])
            lo = Signal(unsigned(P), reset_less=True, name=f"res_shl_lo_c{c}")
            m.d.sync += lo.eq(Array(_shl_const(res_ext, k) for k in range(8))[rs[0:3]])
            # time 3: shift by 8 * res_shift[3:6], gate by last & residual
            hi = Signal(unsigned(P), reset_less=True, name=f"res_shl_c{c}")
            use_res = info2.last & info2.cfg.residual
            shifted = Array(_shl_const(lo, 8 * k) for k in range(8))[info2.cfg.res_shift[3:6]]
            m.d.sync += hi.eq(Mux(use_res, shifted, 0))
            bias2 = delay(s0_x.bias[c], 2, signed(P), f"bias_c{c}")  # time 3
            # time 4: addend
            add = Signal(unsigned(P), reset_less=True, name=f"addend_c{c}")
            m.d.sync += add.eq(Mux(info3.first, bias2, 0) + hi)
            addends.append(add)

        # ---- adder trees (one per column) ------------------------------------------------
        sums = []
        for c in range(C):
            items = [prods[r][c] for r in range(R)]
            level = 0
            while len(items) > 1:
                level += 1
                register = (
                    level % self.tree_levels_per_stage == 0 or level == self.tree_levels
                )
                nxt = []
                for i in range(0, len(items) - 1, 2):
                    a, b = items[i], items[i + 1]
                    width = min(max(len(a), len(b)) + 1, P)
                    s = Signal(signed(width), reset_less=True, name=f"tree_l{level}_c{c}_{i // 2}")
                    if register:
                        m.d.sync += s.eq(a + b)
                    else:
                        m.d.comb += s.eq(a + b)
                    nxt.append(s)
                if len(items) % 2:
                    odd = items[-1]
                    if register:
                        d = Signal(odd.shape(), reset_less=True, name=f"tree_l{level}_c{c}_odd")
                        m.d.sync += d.eq(odd)
                        odd = d
                    nxt.append(odd)
                items = nxt
            sums.append(items[0])

        # ---- sum + addend ----------------------------------------------------------------
        t_fin = self._t_fin
        fins = []
        for c in range(C):
            tree_out = delay(sums[c], t_fin - 1 - self._t_tree, sums[c].shape(), f"sum_c{c}")
            addend = delay(addends[c], t_fin - 1 - self._t_addend, unsigned(P), f"addend_c{c}")
            f = Signal(signed(P), reset_less=True, name=f"fin_c{c}")
            m.d.sync += f.eq(tree_out + addend)
            fins.append(f)

        # ---- accumulator -----------------------------------------------------------------
        v_f, info_f = ctrl(t_fin)
        accs = []
        for c in range(C):
            acc = Signal(signed(P), reset_less=True, name=f"acc_c{c}")
            with m.If(v_f):
                m.d.sync += acc.eq(Mux(info_f.first, 0, acc) + fins[c])
            accs.append(acc)

        # ---- epilogue --------------------------------------------------------------------
        t_acc = t_fin + 1
        _, info_a = ctrl(t_acc)          # cfg of the row whose acc is ready (valid & last)
        _, info_c = ctrl(t_acc + 1)      # after the coarse shift
        _, info_r = ctrl(t_acc + 2)      # after the fine shift

        # Decoded cfg, registered one stage ahead of its use.
        mask = Signal(P, reset_less=True, name="sticky_mask")  # bit i: i < shift - 1
        _, info_m = ctrl(t_fin)
        m.d.sync += mask.eq(Cat(*(info_m.cfg.shift > i + 1 for i in range(P))))
        hi_tab = []
        for ob in range(1 << OUT_BITS_WIDTH):
            obc = min(max(ob, 2), A)
            hi_tab.append(Const((1 << (obc - 1)) - 1, signed(A + 1)))
        bound_hi = Signal(signed(A + 1), reset_less=True, name="bound_hi")
        bound_lo = Signal(signed(A + 1), reset_less=True, name="bound_lo")
        _, info_b = ctrl(t_acc + 2)
        hi_val = Array(hi_tab)[info_b.cfg.out_bits]
        m.d.sync += [
            bound_hi.eq(hi_val),  # time t_acc + 3 (== info_q)
            bound_lo.eq(Mux(info_b.cfg.relu, 0, -hi_val - 1)),
        ]
        bound_hi2 = delay(bound_hi, 1, signed(A + 1), "bound_hi")
        bound_lo2 = delay(bound_lo, 1, signed(A + 1), "bound_lo")

        outs = []
        for c in range(C):
            acc = accs[c]
            # time t_acc + 1: {acc, 0} >>> 8*shift[3:6]; sticky = OR(acc[i] for i < shift-1)
            u0 = Cat(Const(0, 1), acc)  # P + 1 bits: acc * 2
            u1 = Signal(P + 1, reset_less=True, name=f"shr_hi_c{c}")
            m.d.sync += u1.eq(Array(_asr_const(u0, 8 * k) for k in range(8))[info_a.cfg.shift[3:6]])
            sticky1 = Signal(reset_less=True, name=f"sticky_c{c}")
            m.d.sync += sticky1.eq((acc.as_unsigned() & mask).any())
            # time t_acc + 2: >>> shift[0:3]
            u2 = Signal(P + 1, reset_less=True, name=f"shr_c{c}")
            m.d.sync += u2.eq(Array(_asr_const(u1, k) for k in range(8))[info_c.cfg.shift[0:3]])
            sticky2 = delay(sticky1, 1, unsigned(1), f"sticky_c{c}")
            # time t_acc + 3: floor + rounding increment
            floor = u2[1:].as_signed()
            rbit = u2[0]
            lsb = u2[1]
            rnd = info_r.cfg.rounding
            up = Mux(rnd == 1, rbit, Mux(rnd == 2, rbit & (sticky2 | lsb), 0))
            y0 = Signal(signed(P + 1), reset_less=True, name=f"rounded_c{c}")
            m.d.sync += y0.eq(floor + up)
            # time t_acc + 4: compare with the saturation bounds
            gt = Signal(reset_less=True, name=f"sat_hi_c{c}")
            lt = Signal(reset_less=True, name=f"sat_lo_c{c}")
            y0d = Signal(signed(A), reset_less=True, name=f"rounded_lo_c{c}")
            m.d.sync += [gt.eq(y0 > bound_hi), lt.eq(y0 < bound_lo), y0d.eq(y0[:A])]
            # time t_acc + 5: select
            ys = Signal(signed(A), reset_less=True, name=f"y_c{c}")
            m.d.sync += ys.eq(Mux(gt, bound_hi2[:A], Mux(lt, bound_lo2[:A], y0d)))
            outs.append(ys)

        t_y = self._t_out - (self.gelu.latency if self.gelu is not None else 0)
        if self.gelu is not None:
            # GELU lanes never stall (o.ready = 1): a fixed delay, matched on the bypass path
            v_y, info_y = ctrl(t_y)
            m.submodules.gelu = g = self.gelu
            m.d.comb += [g.i.valid.eq(v_y & info_y.last), g.o.ready.eq(1)]
            m.d.comb += [g.i.payload[c].eq(outs[c]) for c in range(C)]
            _, info_o = ctrl(self._t_out)
            outs = [Mux(info_o.cfg.gelu, g.o.payload[c], delay(outs[c], g.latency, signed(A), f"y_bypass_c{c}"))
                    for c in range(C)]
        v_o, info_o = ctrl(self._t_out)
        m.d.comb += [
            fifo.w_en.eq(v_o & info_o.last),
            fifo.w_data.eq(Cat(*outs)),
            self.y.valid.eq(fifo.r_rdy),
            self.y.payload.eq(fifo.r_data),
            fifo.r_en.eq(self.y.ready),
        ]
        return m
