"""Attention: float reference and the bit-exact integer specification of the attention engine.

Layouts
-------
The op takes ``q, k, v`` either *packed* as ``(B, T, H·E)`` (the output of the q/k/v
projections, ``attrs["heads"]`` and ``attrs["kv_heads"]`` give ``H`` and ``Hkv``) or *split*
as ``(B, H, T, E)`` (what ``scaled_dot_product_attention`` takes); the output has the
layout of ``q``. Grouped-query attention: query head ``h`` reads key/value head
``h // (H / Hkv)``. An optional fourth operand is a key-padding mask ``(B, Tk)`` with 1
for keys that take part and 0 for masked keys; ``attrs["causal"]`` masks key ``j > i``
(top-left aligned, as PyTorch's ``is_causal``). The scale is
``attrs["scale"]`` (default ``1/√E``).

Integer semantics (the spec the attention RTL must match)
---------------------------------------------------------
With ``q, k, v`` codes in formats ``fq, fk, fv``::

    S      = q · kᵀ                               exact int64 MAC, frac fq+fk
    c      = round_half_even(scale · 2^Fs)        scale constant in Fixed(18, Fs), Fs the finest
                                                  frac that holds it
    s      = requantize(S · c, fq+fk+Fs, score_fmt)          round half even, saturate
    p      = softmax_int(s, masked, score_fmt, prob_fmt)     rows of length Tk, lanes 1
    A      = p · v                                exact int64 MAC, frac prob.frac+fv
    y      = requantize(A, prob.frac+fv, out_fmt)            round half even, saturate

``score_fmt`` (signed, activation width, calibrated on the scaled scores) and
``prob_fmt`` (unsigned, activation width, ``bits − 1`` fractional bits: 1.0 is
representable) are attributes set by the quantize pass.

Error bound (golden vs float on the same dequantized ``q, k, v``)
-----------------------------------------------------------------
``|s − scale·qkᵀ| ≤ εs = |scale − c·2^-Fs|·|qkᵀ| + lsb_s/2``; perturbing every score of a row
by at most ``εs`` scales each probability by a factor in ``[e^-2εs, e^2εs]``, so
``Σ_j |p̂_j − p_j| ≤ (e^2εs − 1) + Σ_j b_j`` with ``b`` the softmax bound
(:func:`celosia.ir.softmax.softmax_error_bound`); hence::

    |y − y_ref| ≤ ((e^2εs − 1) + Σ_j b_j)·max_j|v_j| + lsb_y/2

:func:`attention_error_bound` evaluates it per output element (unless saturated).
"""

from __future__ import annotations

import math

import numpy as np

from celosia.errors import GraphError
from celosia.ir import numerics as nx_
from celosia.ir.numerics import Fixed
from celosia.ir.softmax import softmax_error_bound, softmax_float, softmax_int

__all__ = [
    "attention_shapes",
    "attention_float",
    "attention_scores_float",
    "attention_int",
    "attention_error_bound",
    "scale_constant",
    "prob_format",
]

SCALE_BITS = 18


def attention_shapes(name: str, shapes: list[tuple[int, ...]], attrs: dict) -> tuple[int, ...]:
    """Check operand shapes and return the output shape (``q``'s shape)."""
    q, k, v = shapes[:3]
    if len(q) not in (3, 4) or len(k) != len(q) or len(v) != len(q):
        raise GraphError(
            f"Attention '{name}': q {q}, k {k}, v {v} must all be (B, T, H*E) or all (B, H, T, E)",
            hint="reshape q, k and v to the same layout",
        )
    heads, kv_heads, e, tk = _dims(name, q, k, attrs)
    if k != v:
        raise GraphError(f"Attention '{name}': k {k} and v {v} differ in shape", hint="k and v must match")
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
    return q


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


def attention_int(q, k, v, mask, attrs: dict, fq: Fixed, fk: Fixed, fv: Fixed, out_fmt: Fixed) -> np.ndarray:
    """Bit-exact attention of integer codes (see the module docstring for the steps).

    Parameters
    ----------
    q, k, v : ndarray of int64
        Codes in ``fq``, ``fk``, ``fv``; layouts as in the module docstring.
    mask : ndarray or None
        Key-padding mask (1 = take part).
    attrs : dict
        ``heads``, ``kv_heads``, ``causal``, ``scale`` and the quantize pass's
        ``score_fmt`` and ``prob_fmt``.
    out_fmt : Fixed
        Output format.
    """
    packed, qs, ks, vs, masked, scale = _prepare(q, k, v, mask, attrs)
    score_fmt, prob_fmt = attrs["score_fmt"], attrs["prob_fmt"]
    code, fs = scale_constant(scale)
    S = np.einsum("bhqe,bhke->bhqk", qs.astype(np.int64), ks.astype(np.int64))
    s = nx_.requantize(S * np.int64(code), fq.frac + fk.frac + fs, score_fmt)
    tk = s.shape[-1]
    p = softmax_int(s.reshape(-1, tk), masked.reshape(-1, tk), score_fmt, prob_fmt).reshape(s.shape)
    acc = np.einsum("bhqk,bhke->bhqe", p, vs.astype(np.int64))
    y = nx_.requantize(acc, prob_fmt.frac + fv.frac, out_fmt)
    return _merge(y, packed)


def attention_error_bound(q, k, v, mask, attrs: dict, fq: Fixed, fk: Fixed, fv: Fixed, out_fmt: Fixed) -> np.ndarray:
    """Stated bound on ``|dequantize(attention_int(...)) − attention_float(dequantized q, k, v)|``.

    Shape of the output; valid when no score or output saturates.
    """
    packed, qs, ks, vs, masked, scale = _prepare(q, k, v, mask, attrs)
    score_fmt, prob_fmt = attrs["score_fmt"], attrs["prob_fmt"]
    code, fs = scale_constant(scale)
    S = np.einsum("bhqe,bhke->bhqk", qs.astype(np.int64), ks.astype(np.int64))
    sf = np.ldexp(S.astype(float), -(fq.frac + fk.frac))
    eps_s = abs(scale - code * 2.0**-fs) * np.abs(sf) + score_fmt.lsb / 2
    eps_s = np.where(masked, 0.0, eps_s).max(-1)
    s = nx_.requantize(S * np.int64(code), fq.frac + fk.frac + fs, score_fmt)
    tk = s.shape[-1]
    b = softmax_error_bound(s.reshape(-1, tk), masked.reshape(-1, tk), score_fmt, prob_fmt).reshape(s.shape).sum(-1)
    vmax = np.abs(np.ldexp(vs.astype(float), -fv.frac)).max(axis=2)  # (B, H, E)
    bound = (np.expm1(2 * eps_s) + b)[..., None] * vmax[:, :, None, :] + out_fmt.lsb / 2
    return _merge(bound * (1 + 1e-9), packed)
