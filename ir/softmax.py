"""Softmax: bit-exact integer golden model of :class:`celosia.hw.softmax.Softmax` and its error bound.

The unit computes ``p_j = exp(s_j − m) / Σ_k exp(s_k − m)`` over one row of scores with an online
(single pass) statistics recurrence, one reciprocal per row and one multiply per element. All
exponentials and the reciprocal are the shared primitives :func:`celosia.ir.approx.exp_neg_int`
and :func:`celosia.ir.approx.reciprocal_int`, so the hardware and this model share their arithmetic.

Integer steps (see :func:`softmax_params` for the formats; ``Fe`` = fractional bits of an
exponential, ``Fr`` of the reciprocal; shifts of non-negative values floor)::

    P = phases (8) interleaved accumulators (m_k, l_k), k = 0..P−1, start at (in_fmt.min_int, 0);
    per beat b of `lanes` elements (masked elements are skipped), with k = b mod P:
        m_new = max(m_k, max of the unmasked s_j in the beat)    (m_new = m_k if all are masked)
        c     = exp_neg(clip(m_k − m_new, dfmt.min_int, 0))     (exactly 2^Fe when m_new = m_k)
        l_k   = ((l_k·c) >> Fe) + Σ_unmasked exp_neg(clip(s_j − m_new, dfmt.min_int, 0))
        m_k   = m_new
    merge, once per row:
        m = max_k m_k;   l = Σ_k ((l_k · exp_neg(clip(m_k − m, dfmt.min_int, 0))) >> Fe)
    r   = reciprocal(l)                       (l in lfmt, r in rfmt; 1 <= l <= max_len, r <= 1)
    p_j = 0 if masked else min(round_half_up(exp_neg(clip(s_j − m, dfmt.min_int, 0))·r·2^-(Fe+Fr−out.frac)), cap)

with ``cap = min(out_fmt.max_int, 2^out.frac)`` so an output never exceeds 1.0. The clip of the
exponential's argument to ``dfmt`` (``-2^ib`` with ``2^ib >= (Fe+3)·ln 2``) is exact: both the
clipped and the unclipped argument give an exponential of 0 (``exp_neg`` flushes from
``i >= Fe + 2``).

The interleaving exists for the hardware: the running-sum recurrence ``l·c`` (a 37×27-bit product
at the defaults) gets P cycles per update instead of one, so it is pipelined like every other
product; the merge costs one more rescale per phase (covered by the bound below).

A fully masked row gives all zeros. The maximum ``m`` and every numerator ``exp(s_j − m)`` are
order independent bit for bit; only ``l`` (hence ``r``) depends on the order of arrival through
the rounding of the rescale ``l·c``, so a rotated row gives outputs that agree within the stated
bound (not bit-exactly): see :func:`softmax_error_bound`. Measured at s32.22 → u24.22, n = 129, 200 random rotations
per σ: bit-identical for 100 % (σ = 1), 96 % (σ = 3), 94 % (σ = 8) of rows, otherwise at most 1 LSB apart.

Measured (``python benchmarks/softmax_error.py``; s32.22 → u24.22, n = 129, N(0, σ²), σ ∈ {1, 3, 8}):
max |p − p_ref| ≤ 2.03e-7 (0.85 LSB), max |Σp − 1| ≤ 3.1e-6; stated bound ≤ 5.5e-6 per element and
≤ 2.6e-5 on the sum, against the goals 1.2e-5 and 2.6e-5. ROM 13312 bits at lanes = 1.

**Stated bound** (per element, against float64 softmax of the dequantized scores): with
``δ = exp_neg_error_bound·2^-Fe`` the absolute error of one exponential, the recurrence keeps an
upper bound ``A`` of ``|l − Σ exp(s_k − m)|`` per phase: a rescale (only when the max moves, and
once at the merge for every phase not holding the row maximum) adds ``A·(ĉ − 1) + (l + A)·δ +
2^-Fe`` (the product's floor), each unmasked element adds ``δ``; the phases' bounds add up.
Then, with ``|r − 1/l| <= 2^-(Fr+1) + rel/l`` (:func:`celosia.ir.approx.reciprocal_error_bound`)::

    |p̂_j − p_j| <= 2^-(out.frac+1) + δ·r + e_j·(2^-(Fr+1) + rel/l) + e_j·A/(l·(l − A))

with ``e_j = exp(s_j − m) <= 1``; masked entries are exact (0). ``Σ|p̂ − p|`` bounds ``|Σp̂ − 1|``.
The bound depends on the row (like :func:`celosia.ir.numerics.linear_error_bound`): the rescale
terms depend on how often, and by how much, the maximum moved.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from celosia.ir import approx
from celosia.ir.numerics import Fixed

from celosia.errors import HardwareGenerationError

__all__ = [
    "GOAL_MAX_ABS_ERROR_22",
    "GOAL_MAX_SUM_ERROR_22",
    "SoftmaxParams",
    "softmax_error_bound",
    "softmax_float",
    "softmax_int",
    "softmax_params",
    "softmax_stats_int",
]

#: Goals at 22 fractional output bits, row length 129 (units spec, Edge-MoE figures).
GOAL_MAX_ABS_ERROR_22 = 1.2e-5
GOAL_MAX_SUM_ERROR_22 = 2.6e-5

_LIMIT = 62


def _fail(msg: str, hint: str):
    raise HardwareGenerationError(f"softmax: {msg}", hint=hint)


def _check_int(name: str, v, lo: int, hi: int, hint: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        _fail(f"{name}={v!r} is out of range {lo}..{hi}", hint)
    return v


@dataclass(frozen=True)
class SoftmaxParams:
    """Validated parameters and derived internal formats of the softmax unit.

    Attributes
    ----------
    in_fmt, out_fmt : Fixed
        Score (signed) and probability formats.
    lanes, max_len : int
        Elements per beat; longest row in elements (the on-chip buffer holds ``ceil(max_len/lanes)``
        beats).
    dfmt : Fixed
        Argument of every exponential: ``s − m`` clipped to ``[dfmt.min_int, 0]``.
    efmt : Fixed
        Exponential output ``Fixed(Fe + 1, Fe, unsigned)`` (holds 1.0 exactly).
    lfmt : Fixed
        Running sum ``Fixed(Fe + bit_length(max_len), Fe, unsigned)``.
    rfmt : Fixed
        Reciprocal ``Fixed(Fr + 1, Fr, unsigned)``.
    exp_table_bits, exp_guard_bits, recip_table_bits, recip_guard_bits : int
        Parameters of the two primitives.
    phases : int
        Interleaved statistics accumulators: beat ``b`` of a row updates accumulator
        ``b mod phases`` (so the hardware's multiply in the running-sum recurrence has ``phases``
        cycles instead of one); the accumulators are merged once per row.
    """

    in_fmt: Fixed
    out_fmt: Fixed
    lanes: int
    max_len: int
    dfmt: Fixed
    efmt: Fixed
    lfmt: Fixed
    rfmt: Fixed
    exp_table_bits: int
    exp_guard_bits: int
    recip_table_bits: int
    recip_guard_bits: int
    phases: int = 8

    @property
    def Fe(self) -> int:
        return self.efmt.frac

    @property
    def Fr(self) -> int:
        return self.rfmt.frac

    @property
    def out_shift(self) -> int:
        """Right shift of ``e·r`` to the output format (``Fe + Fr − out.frac``, >= 1)."""
        return self.Fe + self.Fr - self.out_fmt.frac

    @property
    def cap(self) -> int:
        """Largest output code: 1.0, or ``out_fmt.max_int`` if 1.0 is not representable."""
        return min(self.out_fmt.max_int, 1 << self.out_fmt.frac)

    @property
    def depth(self) -> int:
        """Beats held by the row buffer."""
        return -(-self.max_len // self.lanes)

    @property
    def rom_bits(self) -> int:
        """ROM of the hardware unit: ``2·lanes + 1`` exponential units (statistics lanes, rescale factor,
        replay lanes, and the merge of the phase accumulators) and one reciprocal."""
        e = approx.exp_neg_params(self.dfmt, self.efmt, self.exp_table_bits, self.exp_guard_bits).rom_bits
        r = approx.reciprocal_params(self.lfmt, self.rfmt, self.recip_table_bits, self.recip_guard_bits).rom_bits
        return (2 * self.lanes + 2) * e + r

    @property
    def buffer_bits(self) -> int:
        """One row buffer: ``depth`` beats of ``lanes·(in.bits + 1)`` bits (score and mask)."""
        return self.depth * self.lanes * (self.in_fmt.bits + 1)


def softmax_params(
    in_fmt: Fixed,
    out_fmt: Fixed,
    lanes: int = 1,
    max_len: int = 1024,
    exp_extra_bits: int = 4,
    recip_extra_bits: int = 4,
    exp_table_bits: int = 7,
    exp_guard_bits: int = 3,
    recip_table_bits: int = 6,
    recip_guard_bits: int = 4,
    phases: int = 8,
) -> SoftmaxParams:
    """Validate the softmax parameters and derive its internal formats.

    Parameters
    ----------
    in_fmt : Fixed
        Signed score format.
    out_fmt : Fixed
        Probability format (signed or unsigned) with at least 1 fractional bit.
    lanes : int
        Elements per beat (1..64).
    max_len : int
        Longest row in elements (1..65536).
    exp_extra_bits, recip_extra_bits : int
        Fractional bits of the exponentials (``Fe``) and of the reciprocal (``Fr``) beyond
        ``out_fmt.frac`` (0..8).
    exp_table_bits, exp_guard_bits, recip_table_bits, recip_guard_bits : int
        Passed to :func:`celosia.ir.approx.exp_neg_params` / :func:`~celosia.ir.approx.reciprocal_params`.
    phases : int
        Interleaved statistics accumulators (a power of two, 1..64; the hardware needs 8).

    Raises
    ------
    HardwareGenerationError
        Zero lanes or max_len, an unsigned or non-Fixed score format, an output format without
        fractional bits, or intermediate products wider than 62 bits.
    """
    if not isinstance(in_fmt, Fixed) or not isinstance(out_fmt, Fixed):
        _fail(f"formats must be celosia.ir.numerics.Fixed, got {in_fmt!r} and {out_fmt!r}",
              "e.g. Softmax(Fixed(32, 22), Fixed(24, 22, signed=False))")
    _check_int("lanes", lanes, 1, 64, "use lanes >= 1 (elements per beat)")
    _check_int("max_len", max_len, 1, 1 << 16, "use a row length of at least 1 element")
    _check_int("exp_extra_bits", exp_extra_bits, 0, 8, "use 0..8 (4 is the default)")
    _check_int("recip_extra_bits", recip_extra_bits, 0, 8, "use 0..8 (4 is the default)")
    _check_int("phases", phases, 1, 64, "use 8 interleaved accumulators (the hardware's default)")
    if phases & (phases - 1):
        _fail(f"phases={phases} is not a power of two", "use 1, 2, 4, 8, ...")
    if not in_fmt.signed:
        _fail(f"score format {in_fmt} is unsigned", "use a signed score format (scores may be negative)")
    if out_fmt.frac < 1 or out_fmt.bits - (1 if out_fmt.signed else 0) < 2:
        _fail(f"output format {out_fmt} is too narrow: {out_fmt.frac} fractional bits, "
              f"{out_fmt.bits} bits in all",
              "probabilities need at least 1 fractional bit and 2 magnitude bits, e.g. Fixed(24, 22, signed=False)")
    Fe = out_fmt.frac + exp_extra_bits
    Fr = out_fmt.frac + recip_extra_bits
    ib = max(1, math.ceil(math.log2((Fe + 3) * math.log(2))))
    dbits = min(in_fmt.bits + 1, ib + in_fmt.frac + 1)
    if dbits < 2:
        _fail(f"score format {in_fmt} has {in_fmt.frac} fractional bits: the exponent argument would have "
              f"{dbits} bits", "use a score format with more fractional bits")
    dfmt = Fixed(dbits, in_fmt.frac)
    efmt = Fixed(Fe + 1, Fe, signed=False)
    lfmt = Fixed(Fe + max_len.bit_length(), Fe, signed=False)
    rfmt = Fixed(Fr + 1, Fr, signed=False)
    if Fe + Fr + 2 > _LIMIT:  # e·r (numpy int64); l·c is held in Python integers by the golden model
        _fail(f"the product e·r needs {Fe + Fr + 2} bits (output {out_fmt}, Fe={Fe}, Fr={Fr}), more than {_LIMIT}",
              "use fewer output fractional bits or fewer extra bits")
    # the primitives check their own widths and raise with numbers
    approx.exp_neg_params(dfmt, efmt, exp_table_bits, exp_guard_bits)
    approx.reciprocal_params(lfmt, rfmt, recip_table_bits, recip_guard_bits)
    return SoftmaxParams(in_fmt, out_fmt, lanes, max_len, dfmt, efmt, lfmt, rfmt,
                         exp_table_bits, exp_guard_bits, recip_table_bits, recip_guard_bits, phases)


def _exp(p: SoftmaxParams, diff) -> np.ndarray:
    d = np.clip(np.asarray(diff, dtype=np.int64), p.dfmt.min_int, 0)
    return approx.exp_neg_int(d, p.dfmt, p.efmt, p.exp_table_bits, p.exp_guard_bits)


def _row(codes, mask, p: SoftmaxParams):
    s = np.asarray(codes, dtype=np.int64).reshape(-1)
    mk = np.zeros(s.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool).reshape(-1)
    if s.shape != mk.shape:
        _fail(f"codes ({s.size}) and mask ({mk.size}) differ in length", "pass one mask bit per score")
    if not 1 <= s.size <= p.max_len:
        _fail(f"row length {s.size} is out of range 1..{p.max_len}", "raise max_len or split the row")
    if s.size % p.lanes:
        _fail(f"row length {s.size} is not a multiple of lanes={p.lanes}",
              "pad the row with masked elements to a multiple of lanes")
    if s.size and (s.min() < p.in_fmt.min_int or s.max() > p.in_fmt.max_int):
        _fail(f"score codes outside {p.in_fmt}", "quantize the scores to in_fmt first")
    return s, mk


def softmax_stats_int(codes, mask, p: SoftmaxParams):
    """The statistics pass: returns ``(m, l, merge)``.

    ``merge`` lists, per phase, ``(trace, l_phase, c_merge)``: the phase's per-beat
    ``(m_changed, c, l_before)`` trace, its final sum and its merge factor (used by
    :func:`softmax_error_bound`).
    """
    s, mk = _row(codes, mask, p)
    L, P, Fe = p.lanes, p.phases, p.Fe
    lo = p.in_fmt.min_int
    sb = s.reshape(-1, L)
    vb = ~mk.reshape(-1, L)
    bmax = np.where(vb.any(axis=1), np.where(vb, sb, lo).max(axis=1), lo)
    m_ph, l_ph, traces = [], [], []
    for ph in range(P):
        beats = np.arange(ph, sb.shape[0], P)
        m_new = np.maximum.accumulate(bmax[beats]) if beats.size else np.zeros(0, np.int64)
        m_old = np.concatenate([[lo], m_new[:-1]])
        c = _exp(p, m_old - m_new)
        e = np.where(vb[beats], _exp(p, sb[beats] - m_new[:, None]), 0).sum(axis=1)
        l, trace = 0, []
        for k in range(beats.size):
            trace.append((bool(m_new[k] != m_old[k]), int(c[k]), l))
            l = ((l * int(c[k])) >> Fe) + int(e[k])
        m_ph.append(int(m_new[-1]) if beats.size else lo)
        l_ph.append(l)
        traces.append(trace)
    m = max(m_ph)
    c_merge = [int(v) for v in _exp(p, np.array(m_ph, dtype=np.int64) - m)]
    l = sum((lp * c) >> Fe for lp, c in zip(l_ph, c_merge))
    return m, l, list(zip(traces, l_ph, c_merge))


def softmax_int(codes, mask, in_fmt: Fixed, out_fmt: Fixed, lanes: int = 1, max_len: int | None = None,
                **kw) -> np.ndarray:
    """Bit-exact softmax of one row (the golden model of :class:`celosia.hw.softmax.Softmax`).

    Parameters
    ----------
    codes : array_like of int, shape (n,) or (rows, n)
        Score codes in ``in_fmt``; ``n`` a multiple of ``lanes`` (pad with masked elements).
    mask : array_like of bool, same shape, or None
        True marks a masked (−∞) score: it contributes 0 to the sum and its output is 0.
    in_fmt, out_fmt : Fixed
    lanes : int
        Elements per beat: the statistics recurrence runs per beat, so the result depends on it.
    max_len : int, optional
        The unit's ``max_len`` (defaults to ``n``); only its bit length matters (``lfmt``).
    **kw
        Further :func:`softmax_params` arguments.

    Returns
    -------
    numpy.ndarray of int64
        Output codes in ``out_fmt``, same shape as ``codes``; all zeros for a fully masked row.
    """
    codes = np.asarray(codes, dtype=np.int64)
    if codes.ndim == 2:
        mask = np.zeros(codes.shape, bool) if mask is None else np.asarray(mask, bool)
        return np.stack([softmax_int(c, k, in_fmt, out_fmt, lanes, max_len, **kw) for c, k in zip(codes, mask)])
    p = softmax_params(in_fmt, out_fmt, lanes, max_len if max_len is not None else max(codes.size, 1), **kw)
    return _softmax_row(codes, mask, p)


def _softmax_row(codes, mask, p: SoftmaxParams) -> np.ndarray:
    s, mk = _row(codes, mask, p)
    m, l, _ = softmax_stats_int(s, mk, p)
    r = int(approx.reciprocal_int(np.array([l]), p.lfmt, p.rfmt, p.recip_table_bits, p.recip_guard_bits)[0])
    e = _exp(p, s - m)
    prod = e * np.int64(r)
    sh = p.out_shift
    out = ((prod >> np.int64(sh - 1)) + 1) >> np.int64(1)
    out = np.minimum(out, p.cap)
    return np.where(mk, 0, out)


def softmax_float(values, mask=None) -> np.ndarray:
    """Float64 softmax over the last axis; masked entries are −∞ (output 0; all-masked rows give 0)."""
    v = np.asarray(values, dtype=np.float64)
    mk = np.zeros(v.shape, bool) if mask is None else np.asarray(mask, bool)
    vm = np.where(mk, -np.inf, v)
    mx = np.max(vm, axis=-1, keepdims=True)
    mx = np.where(np.isfinite(mx), mx, 0.0)
    e = np.where(mk, 0.0, np.exp(vm - mx))
    s = e.sum(axis=-1, keepdims=True)
    return np.where(s > 0, e / np.where(s > 0, s, 1.0), 0.0)


def softmax_error_bound(codes, mask, in_fmt: Fixed, out_fmt: Fixed, lanes: int = 1, max_len: int | None = None,
                        **kw) -> np.ndarray:
    """Stated per-element bound on ``|dequantize(softmax_int(...)) − softmax_float(dequantize(codes))|``.

    Parameters and shapes as :func:`softmax_int`. The bound of the row sum ``|Σp̂ − 1|`` is the
    sum of the per-element bounds of the row. See the module docstring for the derivation.
    """
    codes = np.asarray(codes, dtype=np.int64)
    if codes.ndim == 2:
        mask = np.zeros(codes.shape, bool) if mask is None else np.asarray(mask, bool)
        return np.stack([softmax_error_bound(c, k, in_fmt, out_fmt, lanes, max_len, **kw)
                         for c, k in zip(codes, mask)])
    p = softmax_params(in_fmt, out_fmt, lanes, max_len if max_len is not None else max(codes.size, 1), **kw)
    s, mk = _row(codes, mask, p)
    if mk.all():
        return np.zeros(s.shape)
    m, l_int, merge = softmax_stats_int(s, mk, p)
    ulp_e = 2.0**-p.Fe
    delta = approx.exp_neg_error_bound(p.dfmt, p.efmt, p.exp_table_bits, p.exp_guard_bits) * ulp_e
    vb = ~mk.reshape(-1, p.lanes)

    def rescale(A, c, l_before):  # error after l <- (l·c) >> Fe with c within delta of its value
        return A * (c * ulp_e) + (l_before * ulp_e + A) * delta + ulp_e
    A = 0.0
    for ph, (trace, l_ph, c_merge) in enumerate(merge):
        Ap = 0.0
        for k, (moved, c, l_before) in enumerate(trace):
            if moved and l_before:
                Ap = rescale(Ap, c, l_before)
            Ap += delta * int(vb[ph + k * p.phases].sum())
        if c_merge != 1 << p.Fe and l_ph:  # the phase holding the maximum merges exactly
            Ap = rescale(Ap, c_merge, l_ph)
        A += Ap
    A *= 1.0 + 1e-9
    l = l_int * ulp_e
    _lsb, rel = approx.reciprocal_error_bound(p.lfmt, p.rfmt, p.recip_table_bits, p.recip_guard_bits)
    r = 1.0 / l + 2.0 ** -(p.Fr + 1) + rel / l
    ej = np.exp(np.ldexp((s - m).astype(np.float64), -p.in_fmt.frac))
    if A >= l:
        return np.where(mk, 0.0, 1.0)
    b = (2.0 ** -(p.out_fmt.frac + 1) + delta * r + ej * (2.0 ** -(p.Fr + 1) + rel / l)
         + ej * A / (l * (l - A)))
    if p.cap < (1 << p.out_fmt.frac):  # 1.0 not representable: saturation of the largest outputs
        b = b + np.maximum(ej / max(l - A, 1e-300) - p.out_fmt.max_value, 0.0)
    return np.where(mk, 0.0, b * (1.0 + 1e-9))
