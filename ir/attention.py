"""Attention: float reference and the bit-exact integer specification of the attention engine.

Layouts
-------
The op takes ``q, k, v`` either *packed* as ``(B, T, H·E)`` (the output of the q/k/v
projections, ``attrs["heads"]`` and ``attrs["kv_heads"]`` give ``H`` and ``Hkv``) or *split*
as ``(B, H, T, E)`` (what ``scaled_dot_product_attention`` takes); the output has the
layout of ``q``. Grouped-query attention: query head ``h`` reads key/value head
``h // (H / Hkv)``. Values may have their own head size ``F`` (``v`` is ``(B, Tk, Hkv·F)`` or
``(B, Hkv, Tk, F)``), which the output then has. An optional fourth operand is a key-padding mask ``(B, Tk)`` with 1
for keys that take part and 0 for masked keys; ``attrs["causal"]`` masks key ``j > i``
(top-left aligned, as PyTorch's ``is_causal``). The scale is
``attrs["scale"]`` (default ``1/√E``).

Integer semantics (the spec the attention RTL matches bit for bit)
-----------------------------------------------------------------
One pass over the keys in tiles of ``T`` (``tile``, default :data:`TILE`) keys, tile ``t``
holding keys ``t·T .. t·T+T−1`` (the last one may be shorter). With ``q, k, v`` codes in
``fq, fk, fv`` and the formats of :func:`attention_numerics` (``Fe`` fractional bits of an
exponential, ``Fr`` of the reciprocal; every shift of a signed value floors)::

    S_j    = q · k_j                              exact int64 MAC over E, frac fq+fk
    c      = round_half_even(scale · 2^Fs)        scale constant in Fixed(18, Fs), Fs the finest
                                                  frac that holds it
    s_j    = requantize(S_j · c, fq+fk+Fs, score_fmt)        round half even, saturate
    per query row:  m = score_fmt.min_int,  RD = 0,  RNV[f] = 0
    per key tile (masked keys: causal j > i, or key-padding 0):
        m_new  = max(m, max of the unmasked s_j of the tile)   (= m if all are masked)
        PRM    = expneg(clip(m − m_new, dfmt))                 (exactly 2^Fe when m_new = m)
        SLN_j  = expneg(clip(s_j − m_new, dfmt)), 0 if masked   (efmt: unsigned, Fe frac bits)
        RD     = ((PRM · RD) >> Fe) + Σ_j SLN_j                exact sum, floor of the rescale
        RNV[f] = ((PRM · RNV[f]) >> Fe) + Σ_j SLN_j · v_j[f]   frac Fe+fv, floor of the rescale
        m      = m_new
    r      = reciprocal(RD)                       RD in Fixed(Fe+17, Fe), r in Fixed(Fr+1, Fr)
    y[f]   = requantize(RNV[f] · r, Fe+fv+Fr, out_fmt)         round half even, saturate

``expneg`` and ``reciprocal`` are the shared primitives :func:`celosia.ir.approx.exp_neg_int`
and :func:`celosia.ir.approx.reciprocal_int` (the RTL uses :class:`celosia.hw.primitives.ExpNeg`
and :class:`~celosia.hw.primitives.Reciprocal`). A tile whose keys are all masked leaves the
state unchanged bit for bit (``PRM = 2^Fe`` and ``(2^Fe·x) >> Fe = x``), so skipping the key
tiles above the causal diagonal, or ending the key stream early once every query of a block is
past it, does not change a bit; the result does depend on ``T`` (the tile boundaries decide
when the running maximum moves). A row with every key masked gives ``RD = 0``, ``RNV = 0``,
hence ``y = 0``. ``score_fmt`` (signed, activation width, calibrated on the scaled scores) is
set by the quantize pass, as is ``prob_fmt`` (which only sets the calibration of ``out_fmt``).

Error bound (golden vs float on the same dequantized ``q, k, v``)
-----------------------------------------------------------------
``|s − scale·qkᵀ| ≤ εs = |scale − c·2^-Fs|·|qkᵀ| + lsb_s/2``; perturbing every score of a row
by at most ``εs`` moves ``Σ_j p_j v_j`` by at most ``(e^2εs − 1)·max_j|v_j|``. Against the exact
softmax of the quantized scores, in real units (``D = RD·2^-Fe``, ``N = RNV·2^-(Fe+fv)``,
``δ`` = the bound of one exponential), the recurrence keeps upper bounds ``A_D ≥ |D − D*|`` and
``A_N ≥ |N − N*|`` of the distance to the exact running sums ``D* = Σ e^(s_j − m)``,
``N* = Σ e^(s_j − m)·v_j``. A tile whose maximum moves rescales by ``ĉ = PRM·2^-Fe`` with
``|ĉ − c| ≤ δ`` and floors once::

    A_D ← ĉ·A_D + δ·(D + A_D) + 2^-Fe             + n_t·δ
    A_N ← ĉ·A_N + δ·(|N| + A_N) + 2^-(Fe+fv)      + n_t·δ·max_j|v_j|

(a tile whose maximum does not move only adds the ``n_t·δ`` terms; ``n_t`` unmasked keys).
With ``|r − 1/D| ≤ 2^-(Fr+1) + rel/D`` (:func:`celosia.ir.approx.reciprocal_error_bound`)::

    |y − y_ref| ≤ (e^2εs − 1)·max|v| + (A_N + max|v|·A_D)/D + |N|·(2^-(Fr+1) + rel/D) + lsb_y/2

:func:`attention_error_bound` evaluates it per output element (valid unless a score or an
output saturates).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from celosia.ir import approx
from celosia.ir import numerics as nx_
from celosia.ir.numerics import Fixed
from celosia.ir.softmax import softmax_float

from celosia.errors import GraphError, HardwareGenerationError

__all__ = [
    "AttentionConfig",
    "AttentionRecord",
    "attention_unit_cycles",
    "OperandLayout",
    "EXP_FRAC",
    "TILE",
    "AttentionNumerics",
    "attention_error_bound",
    "attention_float",
    "attention_int",
    "attention_numerics",
    "attention_scores_float",
    "attention_shapes",
    "key_count",
    "prob_format",
    "scale_constant",
]

SCALE_BITS = 18
#: Default key-tile size ``T`` (the zoo models and the default engine use it).
TILE = 16
#: Default fractional bits ``Fe`` of the exponentials: ``1.0`` then needs 17 unsigned bits, one
#: DSP operand slice, so ``SLN·v`` is one 18×18 multiply per MAC lane.
EXP_FRAC = 16
#: Bits of the running-denominator format given to the reciprocal beyond ``Fe`` (its result does
#: not depend on the width, only the hardware's addressing limit does).
_RD_INT_BITS = 17


def attention_shapes(name: str, shapes: list[tuple[int, ...]], attrs: dict) -> tuple[int, ...]:
    """Check operand shapes and return the output shape (``q``'s, with the value head size F)."""
    q, k, v = shapes[:3]
    if len(q) not in (3, 4) or len(k) != len(q) or len(v) != len(q):
        raise GraphError(
            f"Attention '{name}': q {q}, k {k}, v {v} must all be (B, T, H*E) or all (B, H, T, E)",
            hint="reshape q, k and v to the same layout",
        )
    heads, kv_heads, _e, tk = _dims(name, q, k, attrs)
    if k[:-1] != v[:-1] or (len(v) == 3 and v[2] % kv_heads):
        raise GraphError(
            f"Attention '{name}': k {k} and v {v} must agree in everything but the head size",
            hint="v holds one value vector (any size F) per key and key/value head")
    if heads % kv_heads:
        raise GraphError(
            f"Attention '{name}': {heads} query heads are not a multiple of {kv_heads} key/value heads",
            hint="grouped-query attention needs heads % kv_heads == 0",
        )
    if q[0] != k[0]:
        raise GraphError(f"Attention '{name}': q batch {q[0]} differs from k batch {k[0]}")
    if len(shapes) == 4 and shapes[3] != (q[0], tk):
        raise GraphError(
            f"Attention '{name}': key-padding mask has shape {shapes[3]}, expected {(q[0], tk)}",
            hint="the mask is (batch, keys) with 1 for keys that take part",
        )
    f = v[-1] // kv_heads if len(v) == 3 else v[-1]  # the value head size F may differ from E
    return q[:-1] + (heads * f if len(q) == 3 else f,)


def key_count(k_shape: tuple[int, ...]) -> int:
    """Keys of an Attention's K operand: packed ``(B, T, H·E)`` or split ``(B, H, T, E)``."""
    return k_shape[-2] if len(k_shape) == 4 else k_shape[1]


def _dims(name, q, k, attrs):
    if len(q) == 4:
        return q[1], k[1], q[3], k[2]
    heads = int(attrs.get("heads", 1))
    kv_heads = int(attrs.get("kv_heads", heads))
    if q[2] % heads or k[2] % kv_heads or q[2] // heads != k[2] // kv_heads:
        raise GraphError(
            f"Attention '{name}': widths q {q[2]} / k {k[2]} do not split into {heads} / {kv_heads} heads "
            "of one size",
            hint="set attrs heads and kv_heads so that q width / heads == k width / kv_heads",
        )
    return heads, kv_heads, q[2] // heads, k[1]


def _split(x: np.ndarray, heads: int, packed: bool) -> np.ndarray:
    if not packed:
        return x
    b, t, d = x.shape
    return x.reshape(b, t, heads, d // heads).transpose(0, 2, 1, 3)


def _merge(y: np.ndarray, packed: bool) -> np.ndarray:
    if not packed:
        return y
    b, h, t, e = y.shape
    return y.transpose(0, 2, 1, 3).reshape(b, t, h * e)


def _prepare(q, k, v, mask, attrs):
    packed = q.ndim == 3
    heads = q.shape[1] if not packed else int(attrs.get("heads", 1))
    kv_heads = k.shape[1] if not packed else int(attrs.get("kv_heads", heads))
    qs, ks, vs = _split(q, heads, packed), _split(k, kv_heads, packed), _split(v, kv_heads, packed)
    group = heads // kv_heads
    ks, vs = np.repeat(ks, group, axis=1), np.repeat(vs, group, axis=1)
    b, h, tq, e = qs.shape
    tk = ks.shape[2]
    masked = np.zeros((b, h, tq, tk), bool)
    if attrs.get("causal"):
        masked |= np.arange(tk)[None, :] > np.arange(tq)[:, None]
    if mask is not None:
        masked |= (np.asarray(mask) == 0)[:, None, None, :]
    scale = float(attrs.get("scale") or 1.0 / math.sqrt(e))
    return packed, qs, ks, vs, masked, scale


def attention_scores_float(q, k, v, mask=None, attrs: dict | None = None) -> np.ndarray:
    """Scaled scores ``scale·q·kᵀ`` (B, H, Tq, Tk) in float64 (masked entries included)."""
    _, qs, ks, _, _, scale = _prepare(np.asarray(q, float), np.asarray(k, float), np.asarray(v, float), mask, attrs or {})
    return scale * (qs @ ks.transpose(0, 1, 3, 2))


def attention_float(q, k, v, mask=None, attrs: dict | None = None) -> np.ndarray:
    """Float64 multi-head attention ``softmax(scale·q·kᵀ + mask)·v``; fully masked rows give 0."""
    attrs = attrs or {}
    packed, qs, ks, vs, masked, scale = _prepare(
        np.asarray(q, float), np.asarray(k, float), np.asarray(v, float), mask, attrs
    )
    p = softmax_float(scale * (qs @ ks.transpose(0, 1, 3, 2)), masked)
    return _merge(p @ vs, packed)


def scale_constant(scale: float) -> tuple[int, int]:
    """``(code, frac)``: the scale as a :data:`SCALE_BITS`-bit unsigned fixed-point constant."""
    frac = nx_.frac_for_range(scale, SCALE_BITS, signed=False)
    return int(nx_.quantize(scale, Fixed(SCALE_BITS, frac, signed=False))), frac


def prob_format(act_bits: int) -> Fixed:
    """The probability format of the attention softmax: unsigned, ``act_bits − 1`` fractional bits."""
    return Fixed(act_bits, act_bits - 1, signed=False)


@dataclass(frozen=True)
class AttentionNumerics:
    """Derived formats of the 1-pass cascade (see the module docstring).

    Attributes
    ----------
    score_fmt : Fixed
        Scaled score format (signed).
    tile : int
        Key-tile size ``T``.
    dfmt : Fixed
        Argument of every exponential (``s − m`` clipped to ``[dfmt.min_int, 0]``).
    efmt : Fixed
        Exponentials ``SLN`` and ``PRM``: ``Fixed(Fe + 1, Fe, unsigned)``.
    lfmt : Fixed
        Running denominator as given to the reciprocal: ``Fixed(Fe + 17, Fe, unsigned)``.
    rfmt : Fixed
        Reciprocal ``Fixed(Fr + 1, Fr, unsigned)``.
    exp_table_bits, exp_guard_bits, recip_table_bits, recip_guard_bits : int
        Parameters of the two primitives.
    """

    score_fmt: Fixed
    tile: int
    dfmt: Fixed
    efmt: Fixed
    lfmt: Fixed
    rfmt: Fixed
    exp_table_bits: int = 7
    exp_guard_bits: int = 3
    recip_table_bits: int = 6
    recip_guard_bits: int = 4

    @property
    def Fe(self) -> int:
        return self.efmt.frac

    @property
    def Fr(self) -> int:
        return self.rfmt.frac

    def expneg(self, diff) -> np.ndarray:
        """``expneg(clip(diff, dfmt))`` in ``efmt``."""
        d = np.clip(np.asarray(diff, dtype=np.int64), self.dfmt.min_int, 0)
        return approx.exp_neg_int(d, self.dfmt, self.efmt, self.exp_table_bits, self.exp_guard_bits)

    def recip(self, rd) -> np.ndarray:
        """``reciprocal(RD)`` in ``rfmt`` (``rfmt.max_int`` for ``RD = 0``)."""
        return approx.reciprocal_int(np.asarray(rd, dtype=np.int64), self.lfmt, self.rfmt,
                                     self.recip_table_bits, self.recip_guard_bits)


def attention_numerics(score_fmt: Fixed, tile: int = TILE, exp_frac: int = EXP_FRAC,
                       recip_frac: int = EXP_FRAC + 4) -> AttentionNumerics:
    """Validate the parameters that change the bits of :func:`attention_int` and derive its formats.

    Parameters
    ----------
    score_fmt : Fixed
        Signed score format (``attrs["score_fmt"]``).
    tile : int
        Key-tile size ``T`` (1..4096).
    exp_frac : int
        Fractional bits ``Fe`` of the exponentials (4..16: ``1.0`` must fit one 17-bit DSP slice).
    recip_frac : int
        Fractional bits ``Fr`` of the reciprocal (4..30).

    Raises
    ------
    HardwareGenerationError
        A parameter out of range, with the numbers.
    """
    if not isinstance(score_fmt, Fixed) or not score_fmt.signed:
        raise HardwareGenerationError(f"attention: score format {score_fmt!r} must be a signed Fixed",
                                      hint="the quantize pass sets attrs['score_fmt'], e.g. Fixed(16, 11)")
    for name, val, lo, hi in (("tile", tile, 1, 4096), ("exp_frac", exp_frac, 4, 16),
                              ("recip_frac", recip_frac, 4, 30)):
        if isinstance(val, bool) or not isinstance(val, int) or not lo <= val <= hi:
            raise HardwareGenerationError(f"attention: {name}={val!r} is out of range {lo}..{hi}",
                                          hint=f"use {name} in {lo}..{hi}")
    ib = max(1, math.ceil(math.log2((exp_frac + 3) * math.log(2))))  # exp flushes to 0 below -2^ib
    dbits = min(score_fmt.bits + 1, ib + score_fmt.frac + 1)
    dfmt = Fixed(dbits, score_fmt.frac)
    efmt = Fixed(exp_frac + 1, exp_frac, signed=False)
    lfmt = Fixed(exp_frac + _RD_INT_BITS, exp_frac, signed=False)
    rfmt = Fixed(recip_frac + 1, recip_frac, signed=False)
    num = AttentionNumerics(score_fmt, tile, dfmt, efmt, lfmt, rfmt)
    approx.exp_neg_params(dfmt, efmt, num.exp_table_bits, num.exp_guard_bits)  # raise with numbers
    approx.reciprocal_params(lfmt, rfmt, num.recip_table_bits, num.recip_guard_bits)
    return num


def _scores_int(qs, ks, scale, fq: Fixed, fk: Fixed, score_fmt: Fixed):
    code, fs = scale_constant(scale)
    S = np.einsum("bhqe,bhke->bhqk", qs.astype(np.int64), ks.astype(np.int64))
    return S, nx_.requantize(S * np.int64(code), fq.frac + fk.frac + fs, score_fmt)


def _cascade(s, masked, vs, num: AttentionNumerics, trace: bool = False):
    """The tile recurrence over all rows at once: returns ``(RD, RNV)`` (and the per-tile trace)."""
    b, h, tq, tk = s.shape
    T, Fe = num.tile, num.Fe
    m = np.full((b, h, tq), num.score_fmt.min_int, np.int64)
    rd = np.zeros((b, h, tq), np.int64)
    rnv = np.zeros((b, h, tq, vs.shape[-1]), np.int64)
    steps = []
    for t0 in range(0, tk, T):
        st, mk = s[..., t0:t0 + T], masked[..., t0:t0 + T]
        m_new = np.maximum(m, np.where(mk, num.score_fmt.min_int, st).max(-1))
        prm = num.expneg(m - m_new)
        sln = np.where(mk, 0, num.expneg(st - m_new[..., None]))
        if trace:
            steps.append((m_new != m, prm, rd.copy(), rnv.copy(), (~mk).sum(-1)))
        rd = ((prm * rd) >> np.int64(Fe)) + sln.sum(-1)
        rnv = ((prm[..., None] * rnv) >> np.int64(Fe)) + np.einsum("bhqk,bhkf->bhqf", sln, vs[..., t0:t0 + T, :])
        m = m_new
    return (rd, rnv, steps) if trace else (rd, rnv)


def attention_int(q, k, v, mask, attrs: dict, fq: Fixed, fk: Fixed, fv: Fixed, out_fmt: Fixed,
                  tile: int = TILE, exp_frac: int = EXP_FRAC, recip_frac: int = EXP_FRAC + 4) -> np.ndarray:
    """Bit-exact 1-pass attention of integer codes (the golden model of :class:`celosia.hw.attention.AttentionEngine`).

    Parameters
    ----------
    q, k, v : ndarray of int64
        Codes in ``fq``, ``fk``, ``fv``; layouts as in the module docstring.
    mask : ndarray or None
        Key-padding mask (1 = take part).
    attrs : dict
        ``heads``, ``kv_heads``, ``causal``, ``scale`` and the quantize pass's ``score_fmt``.
    out_fmt : Fixed
        Output format.
    tile, exp_frac, recip_frac : int
        The parameters that change the bits (see :func:`attention_numerics`); the defaults are
        the engine's defaults.

    Returns
    -------
    numpy.ndarray of int64
        Output codes in ``out_fmt``, in ``q``'s layout.
    """
    packed, qs, ks, vs, masked, scale = _prepare(q, k, v, mask, attrs)
    num = attention_numerics(attrs["score_fmt"], tile, exp_frac, recip_frac)
    _, s = _scores_int(qs, ks, scale, fq, fk, num.score_fmt)
    rd, rnv = _cascade(s, masked, vs.astype(np.int64), num)
    r = num.recip(rd)
    # |RNV·r| <= max|v|·2^(Fe+fv+Fr)·(1 + tiny): fits int64 for the formats attention_numerics admits
    y = nx_.requantize(rnv * r[..., None], num.Fe + fv.frac + num.Fr, out_fmt)
    return _merge(y, packed)


def attention_error_bound(q, k, v, mask, attrs: dict, fq: Fixed, fk: Fixed, fv: Fixed, out_fmt: Fixed,
                          tile: int = TILE, exp_frac: int = EXP_FRAC, recip_frac: int = EXP_FRAC + 4) -> np.ndarray:
    """Stated bound on ``|dequantize(attention_int(...)) − attention_float(dequantized q, k, v)|``.

    Same parameters as :func:`attention_int`; shape of the output. Valid when no score or output
    saturates. See the module docstring for the derivation.
    """
    packed, qs, ks, vs, masked, scale = _prepare(q, k, v, mask, attrs)
    num = attention_numerics(attrs["score_fmt"], tile, exp_frac, recip_frac)
    code, fs = scale_constant(scale)
    S, s = _scores_int(qs, ks, scale, fq, fk, num.score_fmt)
    sf = np.ldexp(S.astype(float), -(fq.frac + fk.frac))
    eps_s = abs(scale - code * 2.0**-fs) * np.abs(sf) + num.score_fmt.lsb / 2
    eps_s = np.where(masked, 0.0, eps_s).max(-1)
    vsi = vs.astype(np.int64)
    rd, rnv, steps = _cascade(s, masked, vsi, num, trace=True)
    vabs = np.abs(np.ldexp(vsi.astype(float), -fv.frac))  # (B, H, Tk, F)
    vmax = vabs.max(axis=2)[:, :, None, :]  # per column, over every key (masked too: an upper bound)
    ue, uv = 2.0**-num.Fe, 2.0 ** -(num.Fe + fv.frac)
    delta = approx.exp_neg_error_bound(num.dfmt, num.efmt, num.exp_table_bits, num.exp_guard_bits) * ue
    a_d = np.zeros(rd.shape)
    a_n = np.zeros(rnv.shape)
    for moved, prm, rd0, rnv0, n_t in steps:
        c = prm * ue
        d0 = rd0 * ue
        n0 = np.abs(rnv0 * uv)
        mv = moved & (rd0 > 0)  # a rescale of an empty state is exact (0)
        a_d = np.where(mv, c * a_d + delta * (d0 + a_d) + ue, a_d) + n_t * delta
        a_n = np.where(mv[..., None], c[..., None] * a_n + delta * (n0 + a_n) + uv, a_n) + (n_t * delta)[..., None] * vmax
    a_d *= 1.0 + 1e-9
    a_n *= 1.0 + 1e-9
    d = rd * ue
    _lsb, rel = approx.reciprocal_error_bound(num.lfmt, num.rfmt, num.recip_table_bits, num.recip_guard_bits)
    live = d > 0
    dd = np.where(live, d, 1.0)
    nabs = np.abs(rnv * uv)
    b = (np.expm1(2 * eps_s)[..., None] * vmax + (a_n + vmax * a_d[..., None]) / dd[..., None]
         + nabs * (2.0 ** -(num.Fr + 1) + rel / dd[..., None]))
    bound = np.where(live[..., None], b, 0.0) + out_fmt.lsb / 2
    return _merge(bound * (1 + 1e-9), packed)


@dataclass(frozen=True)
class OperandLayout:
    """Where head ``h``, position ``t``, element ``e`` of an attention operand lies in the scratchpad:
    row ``t + h·head_rows`` and column ``h·head_cols + e`` of a tensor placed from ``addr`` with row
    stride ``stride`` words (a split ``(B, H, T, E)`` layout steps heads by rows, a packed
    ``(B, T, H·E)`` one by columns; a column step of whole words also covers heads taken from a
    wider tensor, such as one third of a fused QKV projection). No head is ever copied."""

    addr: int
    stride: int
    head_rows: int
    head_cols: int

    @classmethod
    def from_slots(cls, first: int, t_step: int, h_step: int, lanes: int) -> "OperandLayout":
        """From slot (``word·lanes + lane``) offsets: of element (0, 0, 0), per position, per head."""
        stride = t_step // lanes
        rows_step = stride * lanes
        if stride and h_step % rows_step == 0 and h_step:
            return cls(first // lanes, stride, h_step // rows_step, 0)
        return cls(first // lanes, stride, 0, h_step)


@dataclass(frozen=True)
class AttentionRecord:
    """One Attention op of one batch element as the attention unit runs it (instruction ``p_addr``).

    Attributes
    ----------
    heads, kv_heads, seq_q, seq_k : int
    causal : bool
    q, k, v, out : OperandLayout
    name : str
    """

    heads: int
    kv_heads: int
    seq_q: int
    seq_k: int
    causal: bool
    q: OperandLayout
    k: OperandLayout
    v: OperandLayout
    out: OperandLayout
    name: str = ""


@dataclass(frozen=True)
class AttentionConfig:
    """The generation parameters of a program's one attention engine
    (:class:`celosia.hw.attention.AttentionEngine`); formats are shared by all its ops."""

    e: int
    f: int
    lanes: int
    rows: int
    q_fmt: Fixed
    k_fmt: Fixed
    v_fmt: Fixed
    score_fmt: Fixed
    out_fmt: Fixed
    scale: float
    max_len: int
    tile: int = TILE


def attention_unit_cycles(record: AttentionRecord, config: AttentionConfig) -> int:
    """Cycles the attention unit is busy for one ATTENTION instruction (its timing contract).

    A pure function of the record and the engine's parameters, derived in
    :mod:`celosia.ir.attention_timing` (the engine's pass-by-pass schedule at its latency
    bounds; the unit holds ``busy`` until that count).
    """
    from celosia.ir.attention_timing import attention_unit_cycles as cycles

    return cycles(record, config)
