"""Fixed-point numerics: the one source of truth for every integer Celosia computes.

The golden executor and the hardware generators both use these functions, so the
hardware is bit-exact against the golden model by construction of its spec:

* a value ``v`` in format ``Fixed(bits, frac, signed)`` is the integer ``q`` with
  ``v = q * 2**-frac`` and ``min_int <= q <= max_int``;
* rounding a right shift is one of :class:`Rounding` (floor, half-up, half-even);
* overflow is one of :class:`Overflow` (saturate to the range, or wrap modulo
  ``2**bits``).

Integers are held in ``numpy.int64`` arrays; every format Celosia generates keeps
intermediate values below 2**62 (checked where formats are chosen), so no numpy
operation here can overflow silently.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

import numpy as np

from celosia.errors import QuantizationError

__all__ = [
    "Rounding",
    "Overflow",
    "Fixed",
    "shift_round",
    "handle_overflow",
    "saturate",
    "wrap",
    "quantize",
    "dequantize",
    "requantize",
    "sat_add",
    "mac",
    "frac_for_range",
    "linear_int",
    "linear_error_bound",
]

_MAX_BITS = 62


class Rounding(str, Enum):
    """How a right shift (or a float-to-fixed conversion) drops bits.

    ``FLOOR`` rounds toward minus infinity (a plain arithmetic shift); ``HALF_UP``
    rounds to nearest with ties toward plus infinity (add half, then shift);
    ``HALF_EVEN`` rounds to nearest with ties to the even neighbour (unbiased).
    """

    FLOOR = "floor"
    HALF_UP = "half_up"
    HALF_EVEN = "half_even"

    @property
    def code(self) -> int:
        """The 2-bit encoding used by the hardware configuration registers."""
        return {Rounding.FLOOR: 0, Rounding.HALF_UP: 1, Rounding.HALF_EVEN: 2}[self]


class Overflow(str, Enum):
    """What happens to a value outside a format's range: clamp it, or wrap it."""

    SATURATE = "saturate"
    WRAP = "wrap"


@dataclass(frozen=True)
class Fixed:
    """A fixed-point format: ``bits`` total bits of which ``frac`` are fractional.

    Parameters
    ----------
    bits : int
        Total width in bits, sign bit included (1..62).
    frac : int
        Number of fractional bits; may be negative (coarser than 1) or exceed
        ``bits`` (all-fractional small values).
    signed : bool
        Two's complement if true, otherwise unsigned.
    """

    bits: int
    frac: int
    signed: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.bits <= _MAX_BITS:
            raise QuantizationError(
                f"fixed-point width {self.bits} is out of range 1..{_MAX_BITS}",
                hint="choose a width between 2 and 32 bits for tensors",
            )
        if self.signed and self.bits < 2:
            raise QuantizationError("a signed fixed-point format needs at least 2 bits")

    @property
    def min_int(self) -> int:
        """Smallest representable integer code."""
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def max_int(self) -> int:
        """Largest representable integer code."""
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1

    @property
    def lsb(self) -> float:
        """The value of one unit in the last place, ``2**-frac``."""
        return math.ldexp(1.0, -self.frac)

    @property
    def min_value(self) -> float:
        """Smallest representable real value."""
        return self.min_int * self.lsb

    @property
    def max_value(self) -> float:
        """Largest representable real value."""
        return self.max_int * self.lsb

    def __str__(self) -> str:
        return f"{'s' if self.signed else 'u'}{self.bits}.{self.frac}"

    def to_dict(self) -> dict:
        """A JSON-friendly description."""
        return {"bits": self.bits, "frac": self.frac, "signed": self.signed}


def _as_int64(x) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype.kind not in "iub":
        raise TypeError(f"expected integer codes, got dtype {arr.dtype}")
    return arr.astype(np.int64)


def shift_round(x, shift: int, rounding: Rounding = Rounding.HALF_EVEN) -> np.ndarray:
    """Compute ``x * 2**-shift`` rounded to an integer.

    Parameters
    ----------
    x : array_like of int
        Integer codes.
    shift : int
        Right-shift amount; zero or negative shifts are exact left shifts.
    rounding : Rounding
        How dropped bits are rounded.

    Returns
    -------
    numpy.ndarray of int64
    """
    x = _as_int64(x)
    if shift <= 0:
        return x << np.int64(-shift)
    floor = x >> np.int64(shift)
    if rounding is Rounding.FLOOR:
        return floor
    rem = x - (floor << np.int64(shift))  # 0 <= rem < 2**shift
    half = np.int64(1) << np.int64(shift - 1)
    if rounding is Rounding.HALF_UP:
        return floor + (rem >= half)
    # HALF_EVEN: above half rounds up; exactly half rounds up only from an odd floor.
    up = (rem > half) | ((rem == half) & ((floor & 1) == 1))
    return floor + up


def saturate(x, fmt: Fixed) -> np.ndarray:
    """Clamp integer codes to the range of ``fmt``."""
    return np.clip(_as_int64(x), fmt.min_int, fmt.max_int)


def wrap(x, fmt: Fixed) -> np.ndarray:
    """Wrap integer codes modulo ``2**fmt.bits`` into the range of ``fmt``."""
    x = _as_int64(x)
    mask = np.int64((1 << fmt.bits) - 1)
    u = x & mask
    if fmt.signed:
        u = np.where(u > fmt.max_int, u - np.int64(1 << fmt.bits), u)
    return u


def handle_overflow(x, fmt: Fixed, overflow: Overflow = Overflow.SATURATE) -> np.ndarray:
    """Bring integer codes into the range of ``fmt`` by saturating or wrapping."""
    return saturate(x, fmt) if overflow is Overflow.SATURATE else wrap(x, fmt)


def quantize(
    values,
    fmt: Fixed,
    rounding: Rounding = Rounding.HALF_EVEN,
    overflow: Overflow = Overflow.SATURATE,
) -> np.ndarray:
    """Convert real values to integer codes of ``fmt``.

    The conversion is exact for every float64 input: the value is first scaled by
    ``2**frac`` (exact for binary floats), then rounded with ``rounding``.
    """
    v = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(v)):
        raise QuantizationError(
            f"cannot quantize non-finite values to {fmt}",
            hint="check the model for inf/nan (masked entries are handled by the units that take masks)",
        )
    scaled = np.ldexp(v, fmt.frac)
    if rounding is Rounding.FLOOR:
        q = np.floor(scaled)
    elif rounding is Rounding.HALF_UP:
        q = np.floor(scaled + 0.5)
        # floor(s + 0.5) can misround when s + 0.5 is inexact; fix with an exact test.
        q = np.where(q - scaled > 0.5, q - 1, q)
    else:
        q = np.round(scaled)  # numpy rounds half to even, exactly
    limit = float(1 << _MAX_BITS)
    q = np.clip(q, -limit, limit)
    return handle_overflow(q.astype(np.int64), fmt, overflow)


def dequantize(codes, fmt: Fixed) -> np.ndarray:
    """Return the real values (float64) of integer codes in ``fmt``."""
    return np.ldexp(_as_int64(codes).astype(np.float64), -fmt.frac)


def requantize(
    codes,
    from_frac: int,
    to_fmt: Fixed,
    rounding: Rounding = Rounding.HALF_EVEN,
    overflow: Overflow = Overflow.SATURATE,
) -> np.ndarray:
    """Change integer codes with ``from_frac`` fractional bits into ``to_fmt``.

    Shift by ``from_frac - to_fmt.frac`` with ``rounding``, then apply ``overflow``.
    """
    return handle_overflow(shift_round(codes, from_frac - to_fmt.frac, rounding), to_fmt, overflow)


def sat_add(a, b, fmt: Fixed) -> np.ndarray:
    """Add two code arrays already in ``fmt``, saturating to its range."""
    return saturate(_as_int64(a) + _as_int64(b), fmt)


def mac(acc, a, b, acc_fmt: Fixed, overflow: Overflow = Overflow.SATURATE) -> np.ndarray:
    """Multiply-accumulate ``acc + a * b`` in the accumulator format ``acc_fmt``.

    The product is exact (``frac(a) + frac(b)`` fractional bits, which must equal
    ``acc_fmt.frac``); the sum is brought into range with ``overflow``.
    """
    return handle_overflow(_as_int64(acc) + _as_int64(a) * _as_int64(b), acc_fmt, overflow)


def frac_for_range(max_abs: float, bits: int, signed: bool = True) -> int:
    """The largest ``frac`` such that ``max_abs`` fits in ``Fixed(bits, frac, signed)``.

    Used by calibration: it keeps every observed value representable while
    spending the remaining bits on resolution. A zero range gets ``bits - 1``
    fractional bits.
    """
    if not math.isfinite(max_abs):
        raise QuantizationError(f"cannot pick a format for a range of {max_abs}")
    mag_bits = bits - 1 if signed else bits
    if max_abs <= 0:
        return mag_bits
    # Need max_abs <= (2**mag_bits - 1) * 2**-frac (after rounding to nearest code).
    frac = mag_bits - math.ceil(math.log2(max_abs))
    while (2**mag_bits - 1) * 2.0**-frac < max_abs:
        frac -= 1
    while (2**mag_bits - 1) * 2.0 ** -(frac + 1) >= max_abs:
        frac += 1
    return frac


def linear_int(
    x,
    w,
    bias,
    out_fmt: Fixed,
    shift: int,
    rounding: Rounding = Rounding.HALF_EVEN,
    relu: bool = False,
    residual=None,
    res_shift: int = 0,
) -> np.ndarray:
    """Integer semantics of a Linear op with its fused epilogue (the linear unit's spec).

    ``acc = bias + x @ w (+ residual << res_shift)`` exactly, in the accumulator
    format (``frac_x + frac_w`` fractional bits); then ``y = saturate(shift_round(acc,
    shift, rounding), out_fmt)``; then ``max(y, 0)`` if ``relu``.

    Parameters
    ----------
    x : array_like of int, shape (M, K)
        Activation codes.
    w : array_like of int, shape (K, N)
        Weight codes.
    bias : array_like of int, shape (N,)
        Bias codes already aligned to the accumulator format.
    out_fmt : Fixed
        Output format (its ``bits`` set the saturation range).
    shift : int
        ``frac_x + frac_w - out_fmt.frac``; must be >= 0.
    rounding : Rounding
        Rounding of the requantizing shift.
    relu : bool
        Apply ReLU after requantization.
    residual : array_like of int, shape (M, N), optional
        Residual codes, added to the accumulator after a left shift by ``res_shift``.
    res_shift : int
        ``frac_x + frac_w - frac_residual``; must be >= 0.
    """
    if shift < 0 or res_shift < 0:
        raise QuantizationError(
            f"linear requantization needs non-negative shifts, got shift={shift}, res_shift={res_shift}",
            hint="the output/residual format may not have more fractional bits than the accumulator",
        )
    acc = _as_int64(x) @ _as_int64(w) + _as_int64(bias)
    if residual is not None:
        acc = acc + (_as_int64(residual) << np.int64(res_shift))
    y = saturate(shift_round(acc, shift, rounding), out_fmt)
    return np.maximum(y, 0) if relu else y


def linear_error_bound(x, w, x_fmt: Fixed, w_fmt: Fixed, out_fmt: Fixed, rounding: Rounding) -> np.ndarray:
    """Worst-case |quantized - float| of a Linear whose float inputs are ``x`` and ``w``.

    With ``x``, ``w`` and the bias each rounded to nearest (error ≤ half an LSB of
    their format; the bias is held in the accumulator format), and no saturation::

        |err| ≤ r·lsb_y + Σ_k (|x_k|·lsb_w/2 + |w_k|·lsb_x/2 + lsb_x·lsb_w/4) + lsb_x·lsb_w/2

    where ``r`` is 1/2 for the round-to-nearest modes and 1 for floor. ReLU and a
    residual already in its format do not add to it. This is the stated bound of
    level 2 (golden vs float) for the linear unit.

    Parameters
    ----------
    x : ndarray, shape (M, K)
    w : ndarray, shape (K, N)

    Returns
    -------
    ndarray, shape (M, N)
    """
    x = np.abs(np.asarray(x, dtype=np.float64))
    w = np.abs(np.asarray(w, dtype=np.float64))
    k = x.shape[-1]
    r = 1.0 if rounding is Rounding.FLOOR else 0.5
    lx, lw = x_fmt.lsb, w_fmt.lsb
    return r * out_fmt.lsb + (x.sum(-1, keepdims=True) * lw / 2) + (w.sum(0) * lx / 2) + k * lx * lw / 4 + lx * lw / 2
