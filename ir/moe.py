"""Mixture of experts: float reference and bit-exact integer semantics of the ``MoE`` op.

One op holds the whole V-MoE / M³ViT style block, so routing never leaves the IR as
data-dependent control flow::

    MoE(x, gate_w (E, D), gate_b (E,), w1 (E, H, D), b1 (E, H), w2 (E, D, H), b2 (E, D))
        attrs: top_k, activation ("gelu" | "silu" | "relu")

    g      = softmax(x·gate_wᵀ + gate_b)            over the E experts, per token
    chosen = the top_k largest g (ties: lower expert index first)
    y      = Σ_{e in chosen} g_e · (act(x·w1_eᵀ + b1_e)·w2_eᵀ + b2_e)

The kept gate probabilities are not renormalised (V-MoE). The lowering to hardware is
router (gate linear + softmax + top-k) → per-expert token queues → expert linears →
weighted combine; each active expert's weights are fetched once per layer.

Integer semantics (formats set by the quantize pass in ``attrs``)
-----------------------------------------------------------------
``logit_fmt``, ``hidden_fmt`` (pre-activation), ``act_fmt`` (post-activation) and
``expert_fmt`` are calibrated activation formats; ``prob_fmt`` is unsigned with
``bits − 1`` fractional bits. Biases are stored in their accumulator formats (like a Linear)::

    logits = linear_int(x, gate_w, gate_b → logit_fmt)
    g      = softmax_int(logits → prob_fmt)                  top-k on the integer codes
    for each expert e, only on the tokens routed to it:
        h  = act_int(linear_int(x, w1_e, b1_e → hidden_fmt) → act_fmt)
        o  = linear_int(h, w2_e, b2_e → expert_fmt)
        acc += g_e · o                                        exact, frac prob.frac + expert.frac
    y = requantize(acc → out_fmt)

Every requantization rounds half to even and saturates; ``act_int`` is
:func:`celosia.ir.gelu.gelu_int`, :func:`celosia.ir.silu.silu_int` or ReLU.

**Stated bound** (given that the quantized router chooses the same experts as the float
one, which holds when the k-th and (k+1)-th float probabilities are further apart than
twice the softmax bound): per token,
``|y − y_ref| ≤ Σ_{e chosen} (|ĝ_e − g_e|·|o_e| + ĝ_e·|ô_e − o_e|) + lsb_out/2``, with
``|ĝ − g|`` from :func:`celosia.ir.softmax.softmax_error_bound` plus the logit
error, and ``|ô_e − o_e|`` the composition of the two Linear bounds
(:func:`celosia.ir.numerics.linear_error_bound`) through the activation's bound (GELU and SiLU
are 1.13- and 1.1-Lipschitz). When the router's choice differs at a near tie the
error is that of swapping one expert whose weight is within twice the softmax bound of the
other's; benchmarks/accuracy.py measures the end-to-end effect. :func:`moe_error_bound`
evaluates the bound, :func:`routing_agrees` tells where it applies.
"""

from __future__ import annotations

import numpy as np

from celosia.errors import GraphError
from celosia.ir import numerics as nx_
from celosia.ir.gelu import gelu_float, gelu_int
from celosia.ir.numerics import Fixed
from celosia.ir.silu import silu_float, silu_int
from celosia.ir.softmax import softmax_float, softmax_int

__all__ = ["moe_shapes", "moe_float", "moe_int", "moe_error_bound", "routing_agrees", "top_k_mask", "ACTIVATIONS"]

ACTIVATIONS = ("gelu", "silu", "relu")


def moe_shapes(name: str, shapes: list[tuple[int, ...]], attrs: dict) -> tuple[int, ...]:
    """Check the operand shapes of a MoE op and return its output shape (``x``'s)."""
    x, gw, gb, w1, b1, w2, b2 = shapes
    d = x[-1] if x else None
    e = gw[0] if len(gw) == 2 else None
    hdim = w1[1] if len(w1) == 3 else None
    want = {"gate_w": (e, d), "gate_b": (e,), "w1": (e, hdim, d), "b1": (e, hdim), "w2": (e, d, hdim), "b2": (e, d)}
    got = dict(zip(want, (gw, gb, w1, b1, w2, b2)))
    for key, shape in want.items():
        if None in shape or got[key] != shape:
            raise GraphError(
                f"MoE '{name}': {key} has shape {got[key]}, expected {shape} for input {x}",
                hint="stack the experts' weights: w1 (E, H, D), b1 (E, H), w2 (E, D, H), b2 (E, D)",
            )
    k = attrs.get("top_k", 1)
    if not 1 <= k <= e:
        raise GraphError(f"MoE '{name}': top_k={k} must lie in 1..{e} (the number of experts)")
    if attrs.get("activation", "gelu") not in ACTIVATIONS:
        raise GraphError(f"MoE '{name}': activation {attrs.get('activation')!r} is not one of {ACTIVATIONS}")
    return x


def top_k_mask(probs: np.ndarray, k: int) -> np.ndarray:
    """Boolean mask of the ``k`` largest entries of the last axis (ties: lower index first)."""
    order = np.argsort(-probs, axis=-1, kind="stable")[..., :k]
    mask = np.zeros(probs.shape, bool)
    np.put_along_axis(mask, order, True, axis=-1)
    return mask


def _act_float(kind: str, h):
    return gelu_float(h) if kind == "gelu" else silu_float(h) if kind == "silu" else np.maximum(h, 0.0)


def moe_float(x, gw, gb, w1, b1, w2, b2, attrs: dict, *, internals: bool = False):
    """Float64 MoE forward pass. With ``internals``, also a dict of the largest |value| of
    the logits, expert pre-activations, activations and expert outputs (dense over all
    experts, for calibration)."""
    x = np.asarray(x, np.float64)
    shape = x.shape
    x2 = x.reshape(-1, shape[-1])
    logits = x2 @ gw.T + gb
    g = softmax_float(logits)
    keep = top_k_mask(g, int(attrs.get("top_k", 1)))
    act = attrs.get("activation", "gelu")
    y = np.zeros_like(x2)
    stats = {"logits": float(np.abs(logits).max()), "hidden": 0.0, "act": 0.0, "expert": 0.0}
    for e in range(gw.shape[0]):
        pre = x2 @ w1[e].T + b1[e]
        h = _act_float(act, pre)
        o = h @ w2[e].T + b2[e]
        y += np.where(keep[:, e:e + 1], g[:, e:e + 1], 0.0) * o
        stats["hidden"] = max(stats["hidden"], float(np.abs(pre).max()))
        stats["act"] = max(stats["act"], float(np.abs(h).max()))
        stats["expert"] = max(stats["expert"], float(np.abs(o).max()))
    y = y.reshape(shape)
    return (y, stats) if internals else y


def moe_int(x, gw, gb, w1, b1, w2, b2, attrs: dict, fx: Fixed, fgw: Fixed, fw1: Fixed, fw2: Fixed,
            out_fmt: Fixed) -> np.ndarray:
    """Bit-exact MoE of integer codes (see the module docstring). Biases are codes in their
    accumulator formats (``fx+fgw``, ``fx+fw1``, ``act+fw2`` fractional bits)."""
    rnd = nx_.Rounding.HALF_EVEN
    lf, pf, hf, af, ef = (attrs[k] for k in ("logit_fmt", "prob_fmt", "hidden_fmt", "act_fmt", "expert_fmt"))
    x = np.asarray(x, np.int64)
    shape = x.shape
    x2 = x.reshape(-1, shape[-1])
    logits = nx_.linear_int(x2, gw.T, gb, lf, fx.frac + fgw.frac - lf.frac, rnd)
    g = softmax_int(logits, None, lf, pf)
    keep = top_k_mask(g, int(attrs.get("top_k", 1)))
    act = attrs.get("activation", "gelu")
    acc = np.zeros(x2.shape, np.int64)
    for e in range(gw.shape[0]):
        rows = np.nonzero(keep[:, e])[0]
        if rows.size == 0:
            continue
        pre = nx_.linear_int(x2[rows], w1[e].T, b1[e], hf, fx.frac + fw1.frac - hf.frac, rnd)
        if act == "gelu":
            h = gelu_int(pre, hf, af)
        elif act == "silu":
            h = silu_int(pre, hf, af)
        else:
            h = nx_.requantize(np.maximum(pre, 0), hf.frac, af)
        o = nx_.linear_int(h, w2[e].T, b2[e], ef, af.frac + fw2.frac - ef.frac, rnd)
        acc[rows] += g[rows, e:e + 1] * o
    return nx_.requantize(acc, pf.frac + ef.frac, out_fmt).reshape(shape)


def moe_error_bound(x, gw, gb, w1, b1, w2, b2, attrs: dict, fx: Fixed, fgw: Fixed, fw1: Fixed, fw2: Fixed,
                    out_fmt: Fixed) -> np.ndarray:
    """Stated bound on ``|dequantize(moe_int(...)) − moe_float(...)|`` per output element.

    ``x`` are the input codes (format ``fx``); the weights are the float weights (their
    rounding to ``fgw``, ``fw1``, ``fw2`` is part of the bound). Valid for the tokens whose
    quantized router chose the same experts as the float one (:func:`routing_agrees`) and
    when nothing saturates. Composition, per token and output column::

        εl = linear bound of the gate;   |ĝ_e − g_e| ≤ g_e·(e^{2·max εl} − 1) + b_e  (softmax bound)
        εh = linear bound of w1_e;       εa ≤ L·εh + act bound  (L = 1.13 GELU, 1.1 SiLU, 1 ReLU)
        εo = Σ_h |w2_e[:, h]|·εa_h + linear bound of w2_e
        |y − y_ref| ≤ Σ_{e chosen} (|ĝ_e − g_e|·|o_e| + ĝ_e·εo_e) + lsb_out/2
    """
    from celosia.ir.gelu import gelu_table
    from celosia.ir.silu import silu_error_bound
    from celosia.ir.softmax import softmax_error_bound

    lf, pf, hf, af, ef = (attrs[k] for k in ("logit_fmt", "prob_fmt", "hidden_fmt", "act_fmt", "expert_fmt"))
    rnd = nx_.Rounding.HALF_EVEN
    xq = np.asarray(x, np.int64)
    x2 = nx_.dequantize(xq.reshape(-1, xq.shape[-1]), fx)
    gq = nx_.quantize(gw, fgw)
    logits = nx_.linear_int(xq.reshape(x2.shape), gq.T, nx_.quantize(gb, Fixed(62, fx.frac + fgw.frac)), lf,
                            fx.frac + fgw.frac - lf.frac, rnd)
    g_hat = softmax_int(logits, None, lf, pf)
    keep = top_k_mask(g_hat, int(attrs.get("top_k", 1)))
    el = nx_.linear_error_bound(x2, gw.T, fx, fgw, lf, rnd).max(-1, keepdims=True)
    g_ref = softmax_float(x2 @ gw.T + gb)
    dg = g_ref * np.expm1(2 * el) + softmax_error_bound(logits, None, lf, pf)
    gh = nx_.dequantize(g_hat, pf)
    act = attrs.get("activation", "gelu")
    lip = {"gelu": 1.13, "silu": 1.1, "relu": 1.0}[act]
    act_b = {"gelu": lambda: gelu_table(hf, af).error_bound, "silu": lambda: silu_error_bound(hf, af),
             "relu": lambda: af.lsb / 2 if af.frac < hf.frac else 0.0}[act]()
    bound = np.zeros(x2.shape)
    for e in range(gw.shape[0]):
        eh = nx_.linear_error_bound(x2, w1[e].T, fx, fw1, hf, rnd)
        pre = x2 @ w1[e].T + b1[e]
        a = _act_float(act, pre)
        ea = lip * eh + act_b
        eo = ea @ np.abs(w2[e]).T + nx_.linear_error_bound(np.abs(a) + ea, w2[e].T, af, fw2, ef, rnd)
        o = np.abs(a @ w2[e].T + b2[e])
        term = dg[:, e:e + 1] * o + gh[:, e:e + 1] * eo
        bound += np.where(keep[:, e:e + 1], term, 0.0)
    return ((bound + out_fmt.lsb / 2) * (1 + 1e-9)).reshape(np.shape(x))


def routing_agrees(x_float, gw, gb, x_codes, gw_codes, gb_codes, attrs: dict, fx: Fixed, fgw: Fixed) -> np.ndarray:
    """Per token: True when the quantized router picks the same experts as the float one."""
    lf, pf = attrs["logit_fmt"], attrs["prob_fmt"]
    x2 = np.asarray(x_float, np.float64).reshape(-1, gw.shape[1])
    xq = np.asarray(x_codes, np.int64).reshape(x2.shape)
    logits = nx_.linear_int(xq, np.asarray(gw_codes).T, gb_codes, lf, fx.frac + fgw.frac - lf.frac)
    k = int(attrs.get("top_k", 1))
    return np.all(top_k_mask(softmax_int(logits, None, lf, pf), k) == top_k_mask(softmax_float(x2 @ gw.T + gb), k), -1)
