"""Elementwise math, reductions, selection and casts: shape rules and float (and a few integer) semantics.

These ops come from the frontends (ONNX and PyTorch graphs use them around the transformer
blocks: decomposed norms, rotary embeddings, masks, pooling); their declarations are the last
section of :mod:`celosia.ir.ops`. Every one has float64 reference semantics; only the exact ones
have integer semantics, the others run in the float executor only (``int_fn`` and ``quant`` are
None: :func:`celosia.ir.quantize.quantize` refuses them naming the op, and ``celosia check``
lists them as having no hardware unit).

=============  ===================  ===============================================================
op             operands             float semantics (numpy broadcasting where there are two or more)
=============  ===================  ===============================================================
Sub, Div, Pow  (a, b)               ``a − b``, ``a / b``, ``a ** b`` (IEEE: x/0 = ±inf, (−1)**0.5 = NaN)
Exp, Tanh,     (x)                  ``e^x``, ``tanh x``, ``1/(1 + e^−x)``, ``√x``, ``1/x``, ``−x``,
Sigmoid, Sqrt,                      ``erf x``
Reciprocal,
Neg, Erf
Where          (cond, x, y)         ``x`` where ``cond ≠ 0``, else ``y`` (cond holds 0/1)
Expand         (x)                  broadcast to ``attrs shape`` (numpy rules, as ONNX Expand)
ReduceSum,     (x)                  sum / max over ``attrs axis`` (``keepdims``)
ReduceMax
Gather         (data, indices)      ``take(data, indices, axis)``; negative indices count from the
                                    end; an index out of range is a SimulationError
TopK           (x)                  the ``k`` largest (``largest``) or smallest values along ``axis``,
                                    sorted, ties to the lower index; ``output`` "values" or "indices"
Cast           (x)                  rounds to ``attrs to`` (see :func:`cast_float`)
=============  ===================  ===============================================================

Integer semantics (bit-exact, round half to even and saturate like every requantization):

* **Expand** broadcasts the codes and keeps the operand's format: exact.
* **ReduceSum** sums the codes exactly (int64) and requantizes once to the calibrated output
  format: stated bound ``lsb_out/2`` against the float sum of the dequantized codes.
* **ReduceMax** takes the largest code and keeps the operand's format: exact.
"""

from __future__ import annotations

import math

import numpy as np

from celosia.errors import GraphError, SimulationError
from celosia.ir import numerics as nx_

__all__ = [
    "broadcast_shape", "axis_of", "reduce_shape", "gather_shape", "topk_shape", "expand_shape", "cast_shape",
    "UNARY", "BINARY", "where_float", "reduce_float", "reduce_sum_int", "reduce_max_int", "gather_float",
    "topk_float", "expand_float", "cast_float", "CAST_TARGETS",
]


# ---- shape rules -------------------------------------------------------------------------------

def broadcast_shape(op, ins) -> tuple[int, ...]:
    """Numpy broadcasting of every operand (Sub, Div, Pow, Where)."""
    try:
        return tuple(np.broadcast_shapes(*(t.shape for t in ins)))
    except ValueError:
        shapes = ", ".join(f"'{n}' {t.shape}" for n, t in zip(op.inputs, ins))
        raise GraphError(f"{op.kind} '{op.name}': operands {shapes} do not broadcast",
                         hint="shapes must agree or be 1 in every trailing dimension") from None


def axis_of(op, rank: int) -> int:
    """``attrs axis`` of ``op`` normalized to ``0 .. rank-1`` (GraphError if out of range)."""
    axis = int(op.attrs.get("axis", 0))
    if not -rank <= axis < max(rank, 1):
        raise GraphError(f"{op.kind} '{op.name}': axis {axis} is out of range for rank {rank}")
    return axis % max(rank, 1)


def reduce_shape(op, ins) -> tuple[int, ...]:
    """ReduceSum / ReduceMax: the operand's shape with ``axis`` removed (kept as 1 with keepdims)."""
    shape = ins[0].shape
    axis = axis_of(op, len(shape))
    if op.attrs.get("keepdims", False):
        return shape[:axis] + (1,) + shape[axis + 1:]
    return shape[:axis] + shape[axis + 1:]


def gather_shape(op, ins) -> tuple[int, ...]:
    """``data.shape[:axis] + indices.shape + data.shape[axis+1:]``."""
    data, idx = ins[0].shape, ins[1].shape
    axis = axis_of(op, len(data))
    return data[:axis] + idx + data[axis + 1:]


def topk_shape(op, ins) -> tuple[int, ...]:
    """The operand's shape with ``k`` along ``axis``."""
    shape = ins[0].shape
    axis, k = axis_of(op, len(shape)), int(op.attrs.get("k", 0))
    if not 0 < k <= shape[axis]:
        raise GraphError(f"TopK '{op.name}': k = {k} is not in 1..{shape[axis]} (axis {axis} of {shape})")
    if op.attrs.get("output", "values") not in ("values", "indices"):
        raise GraphError(f"TopK '{op.name}': output must be 'values' or 'indices', got {op.attrs['output']!r}")
    return shape[:axis] + (k,) + shape[axis + 1:]


def expand_shape(op, ins) -> tuple[int, ...]:
    """Numpy broadcasting of the operand against ``attrs shape``."""
    target = tuple(int(d) for d in op.attrs.get("shape", ()))
    try:
        out = tuple(np.broadcast_shapes(ins[0].shape, target))
    except ValueError:
        raise GraphError(f"Expand '{op.name}': '{op.inputs[0]}' {ins[0].shape} does not broadcast to {target}",
                         hint="each dimension must equal the target's or be 1") from None
    if any(d <= 0 for d in out):
        raise GraphError(f"Expand '{op.name}': the result {out} has an empty dimension")
    return out


def cast_shape(op, ins) -> tuple[int, ...]:
    """The operand's shape; ``attrs to`` must be a known target."""
    if op.attrs.get("to") not in CAST_TARGETS:
        raise GraphError(f"Cast '{op.name}': unknown target type {op.attrs.get('to')!r}",
                         hint=f"targets: {', '.join(CAST_TARGETS)}")
    return ins[0].shape


# ---- float semantics ---------------------------------------------------------------------------

_erf = np.vectorize(math.erf, otypes=[np.float64])


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # e^-|x| never overflows; both branches are the same function
    z = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + z), z / (1.0 + z))


#: Float semantics of the one-operand ops, by kind.
UNARY = {
    "Exp": np.exp,
    "Tanh": np.tanh,
    "Sigmoid": _sigmoid,
    "Sqrt": np.sqrt,
    "Reciprocal": lambda x: 1.0 / x,
    "Neg": np.negative,
    "Erf": _erf,
}

#: Float semantics of the two-operand broadcasting ops, by kind.
BINARY = {
    "Sub": np.subtract,
    "Div": np.divide,
    "Pow": np.power,
}


def where_float(cond, x, y) -> np.ndarray:
    """``x`` where ``cond`` is nonzero, else ``y`` (broadcasting)."""
    return np.where(np.asarray(cond) != 0, x, y).astype(np.float64)


def reduce_float(kind: str, x: np.ndarray, axis: int, keepdims: bool) -> np.ndarray:
    """Float64 ReduceSum / ReduceMax over one axis."""
    fn = np.sum if kind == "ReduceSum" else np.max
    return np.asarray(fn(np.asarray(x, np.float64), axis=axis, keepdims=keepdims), np.float64)


def reduce_sum_int(codes, in_fmt, out_fmt, axis: int, keepdims: bool) -> np.ndarray:
    """Bit-exact ReduceSum: the exact int64 sum of the codes, requantized once to ``out_fmt``."""
    total = np.asarray(codes, np.int64).sum(axis=axis, keepdims=keepdims)
    return nx_.requantize(total, in_fmt.frac, out_fmt)


def reduce_max_int(codes, in_fmt, out_fmt, axis: int, keepdims: bool) -> np.ndarray:
    """Bit-exact ReduceMax: the largest code, requantized to ``out_fmt`` (exact when it is ``in_fmt``)."""
    top = np.asarray(codes, np.int64).max(axis=axis, keepdims=keepdims)
    return nx_.requantize(top, in_fmt.frac, out_fmt)


def _indices(name: str, idx, size: int) -> np.ndarray:
    idx = np.asarray(idx, np.float64)
    if not np.all(np.isfinite(idx)) or np.any(idx != np.trunc(idx)):
        raise SimulationError(f"{name}: indices must be integers")
    idx = idx.astype(np.int64)
    if np.any((idx < -size) | (idx >= size)):
        bad = idx[(idx < -size) | (idx >= size)].ravel()[0]
        raise SimulationError(f"{name}: index {bad} is out of range for an axis of {size}",
                              hint=f"indices must lie in -{size}..{size - 1}")
    return np.where(idx < 0, idx + size, idx)


def gather_float(name: str, data, indices, axis: int) -> np.ndarray:
    """``numpy.take(data, indices, axis)`` with ONNX index rules (negative from the end)."""
    data = np.asarray(data, np.float64)
    return np.take(data, _indices(f"Gather '{name}'", indices, data.shape[axis]), axis=axis)


def topk_float(x, k: int, axis: int, largest: bool, output: str) -> np.ndarray:
    """TopK values or indices (as floats): sorted, ties broken by the lower index."""
    x = np.asarray(x, np.float64)
    key = -x if largest else x
    order = np.argsort(key, axis=axis, kind="stable")
    order = np.take(order, np.arange(k), axis=axis)
    if output == "indices":
        return order.astype(np.float64)
    return np.take_along_axis(x, order, axis=axis)


def expand_float(x, shape) -> np.ndarray:
    """``x`` broadcast against ``shape`` (a copy)."""
    x = np.asarray(x, np.float64)
    return np.broadcast_to(x, np.broadcast_shapes(x.shape, tuple(shape))).copy()


# ---- Cast --------------------------------------------------------------------------------------

# (mantissa bits, smallest normal exponent, largest finite value, has inf, has negative zero)
_FLOATS = {
    "float16": (10, -14, 65504.0, True, True),
    "bfloat16": (7, -126, (2 - 2.0**-7) * 2.0**127, True, True),
    "float8_e4m3fn": (3, -6, 448.0, False, True),
    "float8_e4m3fnuz": (3, -7, 240.0, False, False),
    "float8_e5m2": (2, -14, 57344.0, True, True),
    "float8_e5m2fnuz": (2, -15, 57344.0, False, False),
    "float4_e2m1fn": (1, 0, 6.0, False, True),
}
_INTS = {f"{s}int{b}": (b, s == "") for b in (2, 4, 8, 16, 32, 64) for s in ("", "u")}
#: Every ``to`` a Cast op takes: float formats, the exponent-only float8_e8m0fnu, integers, bool.
CAST_TARGETS = ("float64", "float32", *_FLOATS, "float8_e8m0fnu", *_INTS, "bool")


def _round_float(x: np.ndarray, to: str, saturate: bool) -> np.ndarray:
    """Round-to-nearest-even of float64 values onto a binary float format, in one rounding.

    Out of range (after rounding): IEEE formats give ±inf; float8 formats follow the ONNX Cast
    tables (``saturate``: ±max, also for ±inf; otherwise inf for E5M2, NaN for the others);
    FLOAT4E2M1 (no inf or NaN) always saturates. NaN stays NaN.
    """
    mant, emin, top, has_inf, neg_zero = _FLOATS[to]
    ieee = to in ("float16", "bfloat16")
    with np.errstate(all="ignore"):
        mag = np.abs(x)
        e = np.floor(np.log2(np.where((mag > 0) & np.isfinite(mag), mag, 1.0)))
        q = np.exp2(np.maximum(e, emin) - mant)
        y = np.where(np.isfinite(x), np.round(x / q) * q, x)
        over = np.abs(y) > top
        if ieee:
            y = np.where(over, np.copysign(np.inf, x), y)
        elif saturate or to == "float4_e2m1fn":
            y = np.where(over, np.copysign(top, x), y)
        else:
            y = np.where(over, np.copysign(np.inf, x) if has_inf else np.nan, y)
    if not neg_zero:
        y = np.where(y == 0, 0.0, y)
    return y


def _round_e8m0(x: np.ndarray, saturate: bool, mode: str) -> np.ndarray:
    """FLOAT8E8M0 (powers of two 2^-127 .. 2^127): ``up`` away from zero, ``down`` toward zero,
    ``nearest`` with ties up; out of range (0, inf included) clamps with ``saturate``, else NaN."""
    with np.errstate(all="ignore"):
        mag = np.abs(x)
        m, e = np.frexp(np.where(np.isfinite(mag) & (mag > 0), mag, 1.0))  # mag = m·2^e, m in [0.5, 1)
        exact = m == 0.5
        if mode == "up":
            k = np.where(exact, e - 1, e)
        elif mode == "down":
            k = e - 1
        else:
            k = np.where(m >= 0.75, e, e - 1)
        k = np.where(mag == 0, -np.inf, np.where(np.isinf(mag), np.inf, k))
        inside = (k >= -127) & (k <= 127)
        k = np.clip(k, -127, 127) if saturate else np.where(inside, k, np.nan)
        return np.where(np.isnan(x), np.nan, np.exp2(k))


def cast_float(x, to: str, saturate: bool = True, round_mode: str = "up") -> np.ndarray:
    """ONNX Cast of float64 values: the value the target type holds, as a float64.

    ``float64``/``float32`` round to that precision; the narrow float formats round to nearest
    even in one step (:func:`_round_float`); ``float8_e8m0fnu`` by ``round_mode``; integers
    truncate toward zero and wrap around (two's complement; ONNX leaves a float out of range
    undefined, so the wrap is Celosia's choice; NaN and ±inf become 0); ``bool`` is 1 for every
    nonzero value (NaN included), else 0.
    """
    x = np.asarray(x, np.float64)
    if to == "float64":
        return x.copy()
    if to == "float32":
        with np.errstate(over="ignore"):
            return x.astype(np.float32).astype(np.float64)
    if to in _FLOATS:
        return _round_float(x, to, saturate)
    if to == "float8_e8m0fnu":
        return _round_e8m0(x, saturate, round_mode)
    if to == "bool":
        return (x != 0).astype(np.float64)
    bits, signed = _INTS[to]
    v = np.where(np.isfinite(x), np.trunc(x), 0.0)
    if bits < 64:
        lo = -(2.0 ** (bits - 1)) if signed else 0.0
        v = np.mod(v - lo, 2.0**bits) + lo
    return v
