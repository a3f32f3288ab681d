"""GELU (erf form): piecewise-quadratic table, bit-exact integer golden model and float reference.

GELU(x) = x·Φ(x) = ReLU(x) − δ(|x|), with δ(a) = a·Φ(−a) ≥ 0 (an even correction, largest
≈ 0.17 at a ≈ 0.75, below 1e-8 beyond a ≈ 6). The unit tabulates δ on ``[0, a_max)`` in uniform
segments of width ``h = 2**-seg_bits``; each segment stores three coefficients of a quadratic in
the local coordinate ``u = (a − k·h)/h ∈ [0, 1)``, and ``δ = 0`` (pure ReLU) beyond ``a_max``.

Integer evaluation (the spec of :class:`celosia.hw.gelu.Gelu`, exact, all shifts are floors)::

    a  = |x|                       (F_in fractional bits, one bit wider than x)
    k  = a >> tb,  t = a & (2**tb − 1)        tb = F_in − seg_bits
    if k >= n_seg:  d = 0
    else:
        s1 = c1[k] + ((c2[k]·t) >> sh1)      sh1 = F2 + tb − F1
        d  = c0[k] + ((s1·t)    >> sh2)      sh2 = F1 + tb − F0
    y  = (max(x, 0) << (Fw − F_in)) − (d << (Fw − F0))       Fw = max(F_in, F0)
    out = saturate(shift_round(y, Fw − F_out, HALF_EVEN), out_fmt)

(a negative shift is an exact left shift.) The coefficients are fitted at build time from the
formula (``math.erfc``): Chebyshev-node interpolation, ``c2`` then ``c1`` rounded with the lower
coefficient refitted after each rounding, and ``c0`` chosen to centre the residual including the
bias of the two floor shifts. The segment width and the coefficient precisions (``F0``, ``F1``,
``F2``) are the coarsest that keep the approximation error within a target, so the ROM is as
small as the bound allows; each coefficient is stored in the fewest bits that hold its range.

**Stated bound.** For every input code whose exact GELU lies in the output range,
``|dequantize(gelu_int(q)) − gelu_float(dequantize(q))| ≤ table.error_bound`` where::

    error_bound = max_k max_u |residual_k(u)|   (incl. the floor bias, measured on 2049 points/segment, +1 %)
                + δ(a_max)                        (the ReLU bypass beyond the table)
                + lsb_out / 2                     (output rounding; 0 when it is exact)

At 22 fractional bits (s32.22 → s32.22, i.e. Q10.22) this is 1.15e-5 with a 1932-bit ROM (46
segments of 1/8, 42-bit words; Edge-MoE's linear table: 9.76e-5 with 177 × 22 = 3894 bits); the grid ±8 step 2**-14 is tested exhaustively against it. At 16-bit
formats the approximation target is at most half an output LSB, so the bound is ≤ 1 LSB.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from celosia.ir.numerics import Fixed, Rounding, saturate, shift_round

from celosia.errors import HardwareGenerationError

__all__ = [
    "GOAL_MAX_ABS_ERROR_22",
    "GeluTable",
    "delta_float",
    "gelu_float",
    "gelu_int",
    "gelu_table",
]

#: The goal of the unit at 22 fractional bits (docs/numerics.md, units spec): max abs error.
GOAL_MAX_ABS_ERROR_22 = 2.5e-5

_SQRT1_2 = 1.0 / math.sqrt(2.0)
_erfc = np.vectorize(math.erfc, otypes=[np.float64])
_SAMPLES = 2049  # residual sample points per segment (u = i / 2048)
_MAX_SEG_BITS = 8
_MAX_INTERMEDIATE_BITS = 62
_LSB_CAP = 2.0**-17  # outputs with an LSB of 2**-16 or coarser get ≤ 1 LSB of total error


def gelu_float(x) -> np.ndarray:
    """Float64 reference ``x·Φ(x) = x·erfc(−x/√2)/2`` (the ONNX ``Gelu``, ``approximate="none"``)."""
    x = np.asarray(x, dtype=np.float64)
    return 0.5 * x * _erfc(-x * _SQRT1_2)


def delta_float(a) -> np.ndarray:
    """Float64 ``δ(a) = a·Φ(−a) = ReLU(a) − GELU(a)`` for ``a ≥ 0`` (used for the table)."""
    a = np.asarray(a, dtype=np.float64)
    return 0.5 * a * _erfc(a * _SQRT1_2)


def _bits_for(lo: int, hi: int) -> tuple[int, bool]:
    """Fewest bits holding every integer in ``[lo, hi]``: ``(width, signed)``."""
    if lo >= 0:
        return max(1, int(hi).bit_length()), False
    width = max(int(hi).bit_length(), int(-lo - 1).bit_length()) + 1
    return width, True


@dataclass(frozen=True)
class GeluTable:
    """Per-segment quadratic coefficients of δ for one (input, output) format pair.

    Build it with :func:`gelu_table` (cached) or :meth:`build`.

    Attributes
    ----------
    in_fmt, out_fmt : Fixed
        Signed input and output formats.
    seg_bits : int
        Segment width ``h = 2**-seg_bits``.
    n_seg : int
        Number of segments; the table covers ``[0, a_max)``, ``a_max = n_seg·h``.
    f0, f1, f2 : int
        Fractional bits of ``c0``, ``c1`` (per unit of ``u``) and ``c2`` (per unit of ``u²``).
    c0, c1, c2 : tuple of int
        Coefficient codes, one per segment.
    widths : tuple of (int, bool)
        Stored ``(bits, signed)`` of ``c0``, ``c1``, ``c2`` (fewest bits holding each range).
    approx_error : float
        Max |quantized polynomial − δ| over all segments incl. floor bias (sampled, +1 %).
    error_bound : float
        Stated max abs error of :func:`gelu_int` against :func:`gelu_float` (see module doc).
    target : float
        The approximation-error target the table was sized for.
    """

    in_fmt: Fixed
    out_fmt: Fixed
    seg_bits: int
    n_seg: int
    f0: int
    f1: int
    f2: int
    c0: tuple[int, ...] = field(repr=False)
    c1: tuple[int, ...] = field(repr=False)
    c2: tuple[int, ...] = field(repr=False)
    widths: tuple[tuple[int, bool], ...]
    approx_error: float
    error_bound: float
    target: float

    # ------------------------------------------------------------------ derived quantities
    @property
    def tb(self) -> int:
        """Bits of the in-segment offset ``t`` (``F_in − seg_bits``)."""
        return self.in_fmt.frac - self.seg_bits

    @property
    def sh1(self) -> int:
        """Right shift after ``c2·t`` (negative: left shift)."""
        return self.f2 + self.tb - self.f1

    @property
    def sh2(self) -> int:
        """Right shift after ``s1·t`` (negative: left shift)."""
        return self.f1 + self.tb - self.f0

    @property
    def fw(self) -> int:
        """Fractional bits of the wide result ``ReLU(x) − δ`` before output rounding."""
        return max(self.in_fmt.frac, self.f0)

    @property
    def a_max(self) -> float:
        """End of the tabulated range (δ is taken as 0 from here on)."""
        return self.n_seg * math.ldexp(1.0, -self.seg_bits)

    @property
    def word_bits(self) -> int:
        """Bits of one ROM word (``c0``, ``c1``, ``c2`` packed)."""
        return sum(w for w, _ in self.widths)

    @property
    def rom_bits(self) -> int:
        """Total ROM size in bits (``n_seg × word_bits``)."""
        return self.n_seg * self.word_bits

    def words(self) -> list[int]:
        """ROM words: ``c0 | c1 << w0 | c2 << (w0 + w1)``, each field in two's complement."""
        (w0, _), (w1, _), (w2, _) = self.widths
        out = []
        for a, b, c in zip(self.c0, self.c1, self.c2):
            out.append((a & ((1 << w0) - 1)) | ((b & ((1 << w1) - 1)) << w0) | ((c & ((1 << w2) - 1)) << (w0 + w1)))
        return out

    def to_dict(self) -> dict:
        """A JSON-friendly summary (no coefficients)."""
        return {
            "in_fmt": str(self.in_fmt),
            "out_fmt": str(self.out_fmt),
            "seg_bits": self.seg_bits,
            "n_seg": self.n_seg,
            "a_max": self.a_max,
            "f0": self.f0,
            "f1": self.f1,
            "f2": self.f2,
            "widths": [list(w) for w in self.widths],
            "rom_bits": self.rom_bits,
            "approx_error": self.approx_error,
            "error_bound": self.error_bound,
        }

    # ------------------------------------------------------------------ construction
    @classmethod
    def build(cls, in_fmt: Fixed, out_fmt: Fixed, target: float | None = None) -> GeluTable:
        """Fit the table for ``in_fmt → out_fmt``.

        Parameters
        ----------
        in_fmt, out_fmt : Fixed
            Signed formats. ``in_fmt.frac`` must be at least the chosen ``seg_bits``.
        target : float, optional
            Approximation-error target (excluding output rounding). Default
            ``max(lsb_out/4, 1.25e-5)``, capped at ``lsb_out/2`` when the output has at most 16
            fractional bits: 1.25e-5 at 22 fractional bits (so the total stays within
            :data:`GOAL_MAX_ABS_ERROR_22`), and a total ≤ 1 output LSB at coarser outputs.

        Raises
        ------
        HardwareGenerationError
            Unsigned formats, an input with too few fractional bits to address the segments, or
            intermediates wider than 62 bits.
        """
        for name, fmt in (("input", in_fmt), ("output", out_fmt)):
            if not fmt.signed:
                raise HardwareGenerationError(
                    f"gelu: the {name} format {fmt} is unsigned; GELU needs signed formats "
                    f"(its output reaches −0.17)",
                    hint="use a signed Fixed format (signed=True)",
                )
        lsb = out_fmt.lsb
        if target is None:
            target = max(lsb / 4, 1.25e-5)
            if lsb / 2 >= _LSB_CAP:
                target = min(target, lsb / 2)
        for seg_bits in range(1, _MAX_SEG_BITS + 1):
            fit = _fit_uniform(in_fmt, seg_bits, lsb)
            if fit is None or fit["interp"] > 0.7 * target:
                continue
            if in_fmt.frac < seg_bits:
                raise HardwareGenerationError(
                    f"gelu: input format {in_fmt} has {in_fmt.frac} fractional bits but the table "
                    f"needs segments of width 2**-{seg_bits} (≥ {seg_bits} fractional bits) to reach "
                    f"an approximation error of {target:.3g} for output {out_fmt}",
                    hint=f"give the input at least {seg_bits} fractional bits, or pass a larger target",
                )
            return _finish(in_fmt, out_fmt, seg_bits, fit, target)
        raise HardwareGenerationError(
            f"gelu: no table with segments down to 2**-{_MAX_SEG_BITS} reaches an approximation error "
            f"of {target:.3g} for output {out_fmt} (lsb {lsb:.3g})",
            hint="use an output format with fewer fractional bits, or pass a larger target",
        )


def _n_segments(in_fmt: Fixed, seg_bits: int, lsb_out: float) -> int:
    """Segments needed: up to where δ ≤ lsb_out/8, and no further than the largest |x|."""
    h = math.ldexp(1.0, -seg_bits)
    n = 1
    while n < (1 << (seg_bits + 6)) and float(delta_float(max(n * h, 1.0))) > lsb_out / 8:
        n += 1
    max_mag = -in_fmt.min_value  # 2**(bits-1) * lsb_in
    reach = math.floor(max_mag / h) + 1
    return max(1, min(n, reach))


def _fit_uniform(in_fmt: Fixed, seg_bits: int, lsb_out: float):
    """Float Chebyshev-node quadratics for every segment and their interpolation error."""
    n = _n_segments(in_fmt, seg_bits, lsb_out)
    h = math.ldexp(1.0, -seg_bits)
    u = np.linspace(0.0, 1.0, _SAMPLES)
    k = np.arange(n)[:, None]
    target_vals = delta_float((k + u[None, :]) * h)  # (n, S)
    nodes = 0.5 + 0.5 * np.cos(np.pi * (2 * np.arange(3) + 1) / 6)  # Chebyshev nodes on [0, 1]
    vand = np.vander(nodes, 3, increasing=True)  # rows [1, u, u^2]
    fvals = delta_float((k + nodes[None, :]) * h)  # (n, 3)
    coef = np.linalg.solve(vand, fvals.T).T  # (n, 3): c0, c1, c2 (float)
    poly = coef[:, [0]] + coef[:, [1]] * u + coef[:, [2]] * u**2
    interp = float(np.max(np.abs(poly - target_vals)))
    return {"n": n, "u": u, "delta": target_vals, "coef": coef, "interp": interp}


def _quantize_coefs(fit, tb: int, f0: int, f1: int, f2: int):
    """Round c2, refit c1, round c1, centre and round c0. Returns (c0, c1, c2, err)."""
    u, dv, coef = fit["u"], fit["delta"], fit["coef"]
    c2 = np.round(np.ldexp(coef[:, 2], f2))
    c2v = np.ldexp(c2, -f2)
    # Move c2's rounding error onto c1 (u² ≈ u − 1/8 is the minimax line on [0, 1]; c0 takes the rest).
    c1f = coef[:, 1] + (coef[:, 2] - c2v)
    c1 = np.round(np.ldexp(c1f, f1))
    c1v = np.ldexp(c1, -f1)
    r0 = c1v[:, None] * u + c2v[:, None] * u**2 - dv  # residual without c0
    e1 = math.ldexp(1.0, -f1) if f2 + tb - f1 > 0 else 0.0
    e2 = math.ldexp(1.0, -f0) if f1 + tb - f0 > 0 else 0.0
    ebias = e1 + e2  # integer evaluation = float polynomial − e, e ∈ [0, ebias)
    hi, lo = r0.max(axis=1), r0.min(axis=1)
    c0 = np.round(np.ldexp(-(hi + lo - ebias) / 2, f0))
    c0v = np.ldexp(c0, -f0)
    err = np.maximum(hi + c0v, ebias - (lo + c0v))
    return c0.astype(np.int64), c1.astype(np.int64), c2.astype(np.int64), float(err.max()) * 1.01


def _word_bits(c0, c1, c2) -> int:
    return sum(_bits_for(int(c.min()), int(c.max()))[0] for c in (c0, c1, c2))


def _finish(in_fmt: Fixed, out_fmt: Fixed, seg_bits: int, fit, target: float) -> GeluTable:
    tb = in_fmt.frac - seg_bits
    base = max(out_fmt.frac, 8) + 6
    f = [base, base, base]
    best = _quantize_coefs(fit, tb, *f)
    if best[3] > target:
        raise HardwareGenerationError(
            f"gelu: coefficients at {base} fractional bits miss the target {target:.3g} "
            f"(error {best[3]:.3g}) for {in_fmt} → {out_fmt}",
            hint="pass a larger target",
        )
    # Greedy: drop one fractional bit from the coefficient that saves the most ROM bits while
    # the approximation error stays within the target.
    while True:
        cands = []
        for i in range(3):
            g = list(f)
            g[i] -= 1
            if g[i] < -4:
                continue
            q = _quantize_coefs(fit, tb, *g)
            if q[3] <= target:
                cands.append((_word_bits(*q[:3]), q[3], i, g, q))
        if not cands:
            break
        cands.sort(key=lambda c: (c[0], c[1], c[2]))
        _, _, _, f, best = cands[0]
    c0, c1, c2, approx = best
    widths = tuple(_bits_for(int(c.min()), int(c.max())) for c in (c0, c1, c2))
    n = fit["n"]
    h = math.ldexp(1.0, -seg_bits)
    tail = float(delta_float(n * h))
    fw = max(in_fmt.frac, f[0])
    rounding = out_fmt.lsb / 2 if fw > out_fmt.frac else 0.0
    # The bypass only applies to |x| >= a_max; if the input range ends inside the table, no tail.
    if n * h > -in_fmt.min_value:
        tail = 0.0
    bound = approx + tail + rounding
    # Intermediate widths: s1·t and the wide result must stay well inside int64.
    s1_bits = max(int(np.abs(c1).max()), 1).bit_length() + 2
    if s1_bits + max(tb, 0) + 1 > _MAX_INTERMEDIATE_BITS or in_fmt.bits + abs(fw - in_fmt.frac) + 2 > _MAX_INTERMEDIATE_BITS:
        raise HardwareGenerationError(
            f"gelu: {in_fmt} → {out_fmt} needs intermediates wider than {_MAX_INTERMEDIATE_BITS} bits "
            f"(t has {tb} bits, c1 {s1_bits} bits)",
            hint="use formats with at most ~40 fractional bits",
        )
    return GeluTable(
        in_fmt=in_fmt,
        out_fmt=out_fmt,
        seg_bits=seg_bits,
        n_seg=n,
        f0=f[0],
        f1=f[1],
        f2=f[2],
        c0=tuple(int(v) for v in c0),
        c1=tuple(int(v) for v in c1),
        c2=tuple(int(v) for v in c2),
        widths=widths,
        approx_error=approx,
        error_bound=bound,
        target=target,
    )


@lru_cache(maxsize=64)
def gelu_table(in_fmt: Fixed, out_fmt: Fixed, target: float | None = None) -> GeluTable:
    """Cached :meth:`GeluTable.build`."""
    return GeluTable.build(in_fmt, out_fmt, target)


def gelu_int(codes, in_fmt: Fixed, out_fmt: Fixed, table: GeluTable | None = None) -> np.ndarray:
    """Bit-exact GELU of integer codes (the hardware unit's spec; see the module docstring).

    Parameters
    ----------
    codes : array_like of int
        Input codes in ``in_fmt``.
    in_fmt, out_fmt : Fixed
        Input and output formats.
    table : GeluTable, optional
        Defaults to ``gelu_table(in_fmt, out_fmt)``.

    Returns
    -------
    numpy.ndarray of int64
        Output codes in ``out_fmt`` (saturated).
    """
    if table is None:
        table = gelu_table(in_fmt, out_fmt)
    if table.in_fmt != in_fmt or table.out_fmt != out_fmt:
        raise HardwareGenerationError(
            f"gelu: table built for {table.in_fmt} → {table.out_fmt}, used with {in_fmt} → {out_fmt}",
            hint="build the table with gelu_table(in_fmt, out_fmt)",
        )
    x = np.asarray(codes).astype(np.int64)
    if x.size and (x.min() < in_fmt.min_int or x.max() > in_fmt.max_int):
        raise HardwareGenerationError(
            f"gelu: input codes outside {in_fmt} ([{in_fmt.min_int}, {in_fmt.max_int}]): "
            f"min {int(x.min())}, max {int(x.max())}",
            hint="quantize/saturate the input to its format first",
        )
    a = np.abs(x)
    tb = table.tb
    k = a >> np.int64(tb)
    t = a & np.int64((1 << tb) - 1)
    inside = k < table.n_seg
    kk = np.where(inside, k, 0)
    c0 = np.asarray(table.c0, dtype=np.int64)[kk]
    c1 = np.asarray(table.c1, dtype=np.int64)[kk]
    c2 = np.asarray(table.c2, dtype=np.int64)[kk]
    s1 = c1 + shift_round(c2 * t, table.sh1, Rounding.FLOOR)
    d = c0 + shift_round(s1 * t, table.sh2, Rounding.FLOOR)
    d = np.where(inside, d, 0)
    fw = table.fw
    y = (np.maximum(x, 0) << np.int64(fw - in_fmt.frac)) - (d << np.int64(fw - table.f0))
    return saturate(shift_round(y, fw - out_fmt.frac, Rounding.HALF_EVEN), out_fmt)
