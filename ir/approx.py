"""Bit-exact integer models of the nonlinear primitives: ``exp(x)`` for ``x <= 0``, ``1/x`` and ``1/sqrt(x)``.

These are the golden models of :mod:`celosia.hw.primitives`: the generators there build their
tables with the ``*_table`` functions below and implement exactly the integer steps of the
``*_int`` functions, so the RTL is bit-exact against them. Each primitive also has a stated
error bound against float64 (``*_error_bound``), tested in ``tests/test_primitives.py`` and
documented in ``docs/primitives.md``.

All arithmetic is on ``numpy.int64``; every intermediate width is checked to stay below 62 bits
when the parameters are validated (:class:`~celosia.errors.HardwareGenerationError` otherwise).

Algorithms
----------
``exp_neg``
    ``t = -x·log2(e) = i + f`` (``i`` integer, ``f`` in [0, 1) truncated to ``F`` bits);
    ``2^-f = 2^-fh · e^-y`` with ``fh`` the top ``table_bits`` bits of ``f`` (table lookup) and
    ``y = fl·ln 2`` for the remaining low bits ``fl``, ``e^-y ≈ 1 - y + y²/2``; the product is
    shifted right by ``i`` with round-half-up (flushes to 0 for ``i >= out.frac + 2``).
``reciprocal``
    Normalise ``x = a·2^E`` with ``a`` in [1, 2) (leading-zero count); seed ``r0 ≈ 1/a`` by linear
    interpolation in a ``2^table_bits``-segment table; one Newton–Raphson step
    ``r1 = r0·(2 - a·r0)``; denormalise with round-half-up and saturation.
``rsqrt``
    Normalise ``x = a·2^E`` with ``a`` in [1, 4) and ``E`` even; seed ``r0 ≈ 1/√a`` by linear
    interpolation (``2^table_bits`` segments per octave, two octaves); one Newton step
    ``r1 = r0·(3 - a·r0²)/2``; denormalise with round-half-up and saturation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from celosia.ir.numerics import Fixed

from celosia.errors import HardwareGenerationError

__all__ = [
    "ExpNegParams",
    "RecipParams",
    "RsqrtParams",
    "exp_neg_error_bound",
    "exp_neg_int",
    "exp_neg_params",
    "exp_neg_table",
    "reciprocal_error_bound",
    "reciprocal_int",
    "reciprocal_params",
    "reciprocal_table",
    "rsqrt_error_bound",
    "rsqrt_int",
    "rsqrt_params",
    "rsqrt_table",
]

_LIMIT = 62  # widest intermediate allowed (numpy int64 headroom)


def _fail(unit: str, msg: str, hint: str):
    raise HardwareGenerationError(f"{unit}: {msg}", hint=hint)


def _check_fmt(unit: str, name: str, fmt) -> Fixed:
    if not isinstance(fmt, Fixed):
        _fail(unit, f"{name} must be a celosia.ir.numerics.Fixed, got {fmt!r}", "pass Fixed(bits, frac, signed)")
    return fmt


def _check_int(unit: str, name: str, v, lo: int, hi: int, hint: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        _fail(unit, f"{name}={v!r} is out of range {lo}..{hi}", hint)
    return v


def _shr(x: np.ndarray, k: int) -> np.ndarray:
    """``floor(x·2^-k)`` for a constant ``k`` of either sign (a left shift when ``k < 0``)."""
    return x >> np.int64(k) if k >= 0 else x << np.int64(-k)


def _round_half_up_shift(r: np.ndarray, s: np.ndarray, width: int, out_fmt: Fixed) -> np.ndarray:
    """``saturate(floor(r·2^-s + 1/2), out_fmt)`` for ``r >= 0`` of at most ``width`` bits, per-element ``s``."""
    r = r.astype(np.int64)
    s = np.asarray(s, dtype=np.int64)
    right = np.maximum(s - 1, 0)
    rs = np.where(right >= 63, 0, r >> np.minimum(right, 62))
    down = (rs + 1) >> 1
    cap = _LIMIT - width
    ls = np.clip(-s, 0, cap)
    up = r << ls
    over = (-s) > cap
    res = np.where(s >= 1, down, up)
    res = np.where(over & (r > 0), np.int64(out_fmt.max_int), res)
    return np.clip(res, 0, out_fmt.max_int)


# ----------------------------------------------------------------------------------------- exp
@dataclass(frozen=True)
class ExpNegParams:
    """Derived internal precisions of ``exp_neg`` (see :func:`exp_neg_params`)."""

    in_fmt: Fixed
    out_fmt: Fixed
    table_bits: int  # T: index bits of 2^-fh
    W: int  # fractional bits of the table entries, of y and of the polynomial
    F: int  # fractional bits kept of f
    K: int  # fractional bits of the log2(e) constant
    L: int  # round(log2(e)·2^K)
    LN2: int  # round(ln 2·2^(W+1)), fractional bits W + 1
    i_max: int  # i is clamped to this (output is 0 from here on)

    @property
    def Ft(self) -> int:
        return self.in_fmt.frac + self.K

    @property
    def D(self) -> int:
        return self.F - self.table_bits

    @property
    def rom_bits(self) -> int:
        return (1 << self.table_bits) * (self.W + 1)


def exp_neg_params(in_fmt: Fixed, out_fmt: Fixed, table_bits: int = 7, guard_bits: int = 3) -> ExpNegParams:
    """Validate the parameters of ``exp_neg`` and derive its internal precisions.

    Parameters
    ----------
    in_fmt : Fixed
        Signed input format (inputs > 0 are treated as 0).
    out_fmt : Fixed
        Output format (unsigned or signed); ``1.0`` saturates to ``max_int`` if not representable.
    table_bits : int
        Index bits of the ``2^-f`` table (2..12): ``2^table_bits`` entries.
    guard_bits : int
        Extra fractional bits carried internally beyond ``out_fmt.frac`` (1..8).
    """
    u = "exp_neg"
    _check_fmt(u, "in_fmt", in_fmt)
    _check_fmt(u, "out_fmt", out_fmt)
    if not in_fmt.signed:
        _fail(u, f"input format {in_fmt} is unsigned; exp_neg takes x <= 0", "use a signed input format")
    _check_int(u, "table_bits", table_bits, 2, 12, "use 2..12 index bits (7 gives ~1 LSB at 22 fractional bits)")
    _check_int(u, "guard_bits", guard_bits, 1, 8, "use 1..8 guard bits (3 is the default)")
    if out_fmt.frac < 1:
        _fail(u, f"output format {out_fmt} has {out_fmt.frac} fractional bits", "exp_neg outputs values in [0, 1]: use >= 1 fractional bit")
    W = out_fmt.frac + guard_bits
    F = W
    if table_bits >= F:
        _fail(u, f"table_bits={table_bits} is not below the {F} fractional bits of f (out frac {out_fmt.frac} + guard {guard_bits})",
              f"use table_bits <= {F - 1}")
    K = max(W + 1, F - in_fmt.frac)
    L = round(math.log2(math.e) * 2**K)
    widths = {
        "x·log2(e)": in_fmt.bits + L.bit_length(),
        "table·poly": 2 * (W + 1),
        "fl·ln2": (F - table_bits) + W + 2,
    }
    for what, w in widths.items():
        if w > _LIMIT:
            _fail(u, f"the {what} product needs {w} bits (input {in_fmt}, output {out_fmt}), more than {_LIMIT}",
                  "use narrower input/output formats or fewer guard bits")
    LN2 = round(math.log(2) * 2 ** (W + 1))
    return ExpNegParams(in_fmt, out_fmt, table_bits, W, F, K, L, LN2, out_fmt.frac + 2)


def exp_neg_table(p: ExpNegParams) -> list[int]:
    """``round(2^(-k/2^T)·2^W)`` for ``k = 0..2^T-1`` (exact integer rounding of the float64 value)."""
    T = p.table_bits
    return [math.floor(2.0 ** (-k / 2**T) * 2**p.W + 0.5) for k in range(1 << T)]


def exp_neg_int(codes, in_fmt: Fixed, out_fmt: Fixed, table_bits: int = 7, guard_bits: int = 3) -> np.ndarray:
    """Bit-exact ``exp(x)`` for ``x <= 0`` (the golden model of :class:`celosia.hw.primitives.ExpNeg`).

    Parameters
    ----------
    codes : array_like of int
        Input codes in ``in_fmt``; positive inputs are treated as 0 (output 1.0).
    in_fmt, out_fmt : Fixed
    table_bits, guard_bits : int
        See :func:`exp_neg_params`.

    Returns
    -------
    numpy.ndarray of int64
        Output codes in ``out_fmt``.

    Notes
    -----
    Integer steps (``W = F = out.frac + guard``; all shifts of non-negative values floor)::

        xa = max(-x, 0);  t = xa·L  (L = round(log2 e·2^K));  i = min(t >> Ft, out.frac + 2)
        f = (t mod 2^Ft) >> (Ft - F);  fh = f >> D;  fl = f mod 2^D        (D = F - T)
        y = (fl·LN2) >> (F + 1)            (LN2 = round(ln2·2^(W+1)); y has W fractional bits)
        P = 2^W - y + (y² >> (W + 1))
        out = saturate(round_half_up((E[fh]·P)·2^-(W + W - out.frac + i)))
    """
    p = exp_neg_params(in_fmt, out_fmt, table_bits, guard_bits)
    x = np.asarray(codes, dtype=np.int64)
    xa = np.maximum(-x, 0)
    t = xa * np.int64(p.L)
    i = np.minimum(t >> np.int64(p.Ft), p.i_max)
    f = (t & np.int64((1 << p.Ft) - 1)) >> np.int64(p.Ft - p.F)
    fh = f >> np.int64(p.D)
    fl = f & np.int64((1 << p.D) - 1)
    y = (fl * np.int64(p.LN2)) >> np.int64(p.F + 1)
    P = np.int64(1 << p.W) - y + ((y * y) >> np.int64(p.W + 1))
    E = np.asarray(exp_neg_table(p), dtype=np.int64)[fh]
    prod = E * P
    s = 2 * p.W - out_fmt.frac + i
    return _round_half_up_shift(prod, s, 2 * p.W + 2, out_fmt)


def exp_neg_error_bound(in_fmt: Fixed, out_fmt: Fixed, table_bits: int = 7, guard_bits: int = 3) -> float:
    """Stated bound on ``|exp_neg_int(x) - exp(x)|`` in output LSBs, for every ``x <= 0`` whose
    ``exp`` is representable (``out_fmt`` holds 1.0; otherwise add the saturation).

    Terms (in real units, then divided by the output LSB): the ``log2 e`` constant
    ``(ln2/e)·2^-(K+1)``; truncation of ``f`` ``ln2·2^-F``; table rounding ``2^-(W+1)``; the
    polynomial: ``y`` truncation and ``ln 2`` rounding ``2^-W + 2^-(T+W+2)``, ``y²/2`` floor
    ``2^-W``, Taylor remainder ``(ln2·2^-T)³/6``; final rounding half an LSB. A factor 1.01 covers
    the second-order effects (``2^-t`` evaluated at a slightly perturbed ``t``).
    """
    p = exp_neg_params(in_fmt, out_fmt, table_bits, guard_bits)
    T, W = p.table_bits, p.W
    e = (
        math.log(2) / math.e * 2.0 ** -(p.K + 1)
        + math.log(2) * 2.0**-p.F
        + 2.0 ** -(W + 1)
        + 2.0**-W + 2.0 ** -(T + W + 2) + 2.0**-W
        + (math.log(2) * 2.0**-T) ** 3 / 6
    )
    return 0.5 + 1.01 * e * 2.0**out_fmt.frac


# ---------------------------------------------------------------------- reciprocal / rsqrt
@dataclass(frozen=True)
class RecipParams:
    """Derived internal precisions of ``reciprocal`` (see :func:`reciprocal_params`)."""

    in_fmt: Fixed
    out_fmt: Fixed
    table_bits: int  # T: segments 2^T over [1, 2)
    n: int  # magnitude bits of the input
    Ws: int  # fractional bits of the seed r0 / the table
    We: int  # fractional bits of e = 2 - a·r0
    Wr: int  # fractional bits of r1
    dbits: int  # width of the table's slope field

    @property
    def D(self) -> int:
        return self.n - 1 - self.table_bits

    @property
    def entries(self) -> int:
        return 1 << self.table_bits

    @property
    def rom_bits(self) -> int:
        return self.entries * (self.Ws + 1 + self.dbits)

    @property
    def s_const(self) -> int:
        """Output right shift is ``s_const - lz``."""
        return self.Wr - self.out_fmt.frac - self.in_fmt.frac + self.n - 1

    @property
    def lpad(self) -> int:
        return max(0, 1 - (self.s_const - (self.n - 1)))


def _common_checks(u, in_fmt, out_fmt, table_bits, guard_bits, tb_hi):
    _check_fmt(u, "in_fmt", in_fmt)
    _check_fmt(u, "out_fmt", out_fmt)
    _check_int(u, "table_bits", table_bits, 2, tb_hi, f"use 2..{tb_hi} table index bits")
    _check_int(u, "guard_bits", guard_bits, 1, 8, "use 1..8 guard bits (4 is the default)")
    n = in_fmt.bits - (1 if in_fmt.signed else 0)
    if n - 1 < table_bits:
        _fail(u, f"input format {in_fmt} has {n} magnitude bits, too narrow for table_bits={table_bits} "
                 f"(needs at least table_bits + 1 = {table_bits + 1})",
              f"use table_bits <= {n - 1} or a wider input format")
    return n


def reciprocal_params(in_fmt: Fixed, out_fmt: Fixed, table_bits: int = 6, guard_bits: int = 4) -> RecipParams:
    """Validate the parameters of ``reciprocal`` and derive its internal precisions.

    ``Ws = 2·table_bits + 4`` (seed), ``Wr = out_fmt.bits + guard_bits`` (result mantissa),
    ``We = Wr + 1``. Requires ``table_bits <= n - 1`` for the ``n`` magnitude bits of the input.
    """
    u = "reciprocal"
    n = _common_checks(u, in_fmt, out_fmt, table_bits, guard_bits, 10)
    Ws = 2 * table_bits + 4
    Wr = out_fmt.bits + guard_bits
    We = Wr + 1
    # slope field: R[k] - R[k+1] <= 2^Ws·2^-T (derivative of 1/a is <= 1 on [1, 2)) + 1
    dbits = (((1 << Ws) >> table_bits) + 1).bit_length()
    p = RecipParams(in_fmt, out_fmt, table_bits, n, Ws, We, Wr, dbits)
    widths = {"a·r0": n + Ws + 2, "r0·e": Ws + 1 + We + 2, "slope·d": dbits + p.D,
              "denormalised result": Wr + 2 + p.lpad}
    for what, w in widths.items():
        if w > _LIMIT:
            _fail(u, f"the {what} term needs {w} bits (input {in_fmt}, output {out_fmt}), more than {_LIMIT}",
                  "use narrower formats or fewer guard bits")
    return p


def reciprocal_table(p: RecipParams) -> list[tuple[int, int]]:
    """``(R[k], R[k] - R[k+1])`` with ``R[k] = round(2^Ws / (1 + k/2^T))``, ``k = 0..2^T-1``."""
    T = p.table_bits
    R = [((1 << (p.Ws + T)) * 2 + (2**T + k)) // (2 * (2**T + k)) for k in range((1 << T) + 1)]  # exact rounding
    return [(R[k], R[k] - R[k + 1]) for k in range(1 << T)]


def _clz(q: np.ndarray, n: int) -> np.ndarray:
    lz = np.full(q.shape, n, dtype=np.int64)
    for k in range(n):  # msb wins: later (higher) k overwrite
        lz = np.where((q >> np.int64(k)) & 1 == 1, n - 1 - k, lz)
    return lz


def _normalise(codes, n: int):
    q = np.asarray(codes, dtype=np.int64)
    pos = q > 0
    mag = np.where(pos, q, 1)  # non-positive inputs are handled separately
    lz = _clz(mag, n)
    m = mag << lz
    return q, pos, lz, m


def reciprocal_int(codes, in_fmt: Fixed, out_fmt: Fixed, table_bits: int = 6, guard_bits: int = 4) -> np.ndarray:
    """Bit-exact ``1/x`` (the golden model of :class:`celosia.hw.primitives.Reciprocal`).

    Inputs ``x <= 0`` give ``out_fmt.max_int`` (the saturated "infinity"); results beyond the
    output range saturate.

    Notes
    -----
    Integer steps (``n`` magnitude bits, ``D = n - 1 - T``; shifts of non-negative values floor)::

        lz = clz_n(x);  m = x << lz                       (a = m·2^-(n-1) in [1, 2))
        k = (m >> D) - 2^T;  d = m mod 2^D;  r0 = R[k] - ((S[k]·d) >> D)      (Ws frac bits)
        e = (2^(n+Ws) - m·r0) >> (n - 1 + Ws - We)
        r1 = (r0·e) >> (Ws + We - Wr)
        out = saturate(round_half_up(r1·2^-(Wr - out.frac - in.frac + n - 1 - lz)))
    """
    p = reciprocal_params(in_fmt, out_fmt, table_bits, guard_bits)
    _q, pos, lz, m = _normalise(codes, p.n)
    tab = reciprocal_table(p)
    R = np.asarray([t[0] for t in tab], dtype=np.int64)
    S = np.asarray([t[1] for t in tab], dtype=np.int64)
    D = p.D
    k = (m >> np.int64(D)) - (1 << p.table_bits)
    d = m & np.int64((1 << D) - 1)
    r0 = R[k] - ((S[k] * d) >> np.int64(D))
    e = _shr(np.int64(1 << (p.n + p.Ws)) - m * r0, p.n - 1 + p.Ws - p.We)
    r1 = (r0 * e) >> np.int64(p.Ws + p.We - p.Wr)
    out = _round_half_up_shift(r1, p.s_const - lz, p.Wr + 2, out_fmt)
    return np.where(pos, out, np.int64(out_fmt.max_int))


def _seed_abs_err(T: int, Ws: int, curvature: float) -> float:
    # linear interpolation h²/8·max|g''| + table rounding + interpolation floor
    return 2.0 ** (-2 * T) / 8 * curvature + 2.0 ** -(Ws + 1) + 2.0**-Ws


def reciprocal_error_bound(in_fmt: Fixed, out_fmt: Fixed, table_bits: int = 6, guard_bits: int = 4) -> tuple[float, float]:
    """Stated bound of ``reciprocal_int`` against float64, for inputs whose ``1/x`` does not saturate.

    Returns
    -------
    (lsb, rel) : tuple of float
        ``|out - 1/x| <= 0.5·lsb_out + rel·(1/x)`` for every ``x > 0`` with
        ``1/x <= out_fmt.max_value``; and ``lsb`` is that bound expressed in output LSBs at the
        worst case ``1/x = max_value``, i.e. a bound for all non-saturating inputs.

    Notes
    -----
    Seed: ``r0 = (1/a)(1 - δ)``, ``|δ| <= 2·(2^-2T/4 + 1.5·2^-Ws)``. Newton:
    ``r1 = (1/a)(1 - δ²) - η·r0 - ρ`` with ``η < 2^-We`` (floor of ``e``), ``ρ < 2^-Wr`` (floor
    of ``r1``), so ``|r1 - 1/a| <= δ² + (1 + δ)·2^-We + 2^-Wr`` and the relative error is at most
    twice that (``1/a >= 1/2``).
    """
    p = reciprocal_params(in_fmt, out_fmt, table_bits, guard_bits)
    delta = 2 * _seed_abs_err(p.table_bits, p.Ws, 2.0)
    eabs = delta**2 + (1 + delta) * 2.0**-p.We + 2.0**-p.Wr
    rel = 2 * eabs
    lsb = 0.5 + rel * (out_fmt.max_int + 0.5)
    return lsb, rel


@dataclass(frozen=True)
class RsqrtParams:
    """Derived internal precisions of ``rsqrt`` (see :func:`rsqrt_params`)."""

    in_fmt: Fixed
    out_fmt: Fixed
    table_bits: int  # T: segments 2^T per octave, two octaves
    n: int
    Ws: int
    Wsq: int  # fractional bits of r0²
    We: int
    Wr: int
    dbits: int

    @property
    def D(self) -> int:
        return self.n - 1 - self.table_bits

    @property
    def entries(self) -> int:
        return 2 << self.table_bits

    @property
    def rom_bits(self) -> int:
        return self.entries * (self.Ws + 1 + self.dbits)

    @property
    def c(self) -> int:
        """``n - 1 - in.frac``: the exponent of ``x`` is ``c - lz``."""
        return self.n - 1 - self.in_fmt.frac

    def shift(self, lz):
        """Output right shift for leading-zero count ``lz`` (``Wr - out.frac + (c - lz - par)/2``)."""
        e = self.c - lz
        par = e & 1
        return self.Wr - self.out_fmt.frac + ((e - par) >> 1)

    @property
    def lpad(self) -> int:
        smin = min(int(self.shift(np.int64(lz))) for lz in range(self.n))
        return max(0, 1 - smin)


def rsqrt_params(in_fmt: Fixed, out_fmt: Fixed, table_bits: int = 6, guard_bits: int = 4) -> RsqrtParams:
    """Validate the parameters of ``rsqrt`` and derive its internal precisions.

    ``Ws = 2·table_bits + 5``, ``Wr = out_fmt.bits + guard_bits``, ``We = Wr + 1``,
    ``Wsq = min(2·Ws, Wr + 2)``. Requires ``table_bits <= n - 1``.
    """
    u = "rsqrt"
    n = _common_checks(u, in_fmt, out_fmt, table_bits, guard_bits, 10)
    Ws = 2 * table_bits + 5
    Wr = out_fmt.bits + guard_bits
    We = Wr + 1
    Wsq = min(2 * Ws, Wr + 2)
    # slope: |d(a^-1/2)/da| <= 1/2 on [1, 2) with step 2^-T; on [2, 4) 2^-2.5 with step 2^(1-T)
    dbits = (((1 << Ws) >> (table_bits + 1)) + 2).bit_length()
    p = RsqrtParams(in_fmt, out_fmt, table_bits, n, Ws, Wsq, We, Wr, dbits)
    widths = {"a·r0²": n + Wsq + 3, "r0·e": Ws + 1 + We + 3, "slope·d": dbits + p.D,
              "denormalised result": Wr + 2 + p.lpad}
    for what, w in widths.items():
        if w > _LIMIT:
            _fail(u, f"the {what} term needs {w} bits (input {in_fmt}, output {out_fmt}), more than {_LIMIT}",
                  "use narrower formats or fewer guard bits")
    return p


def _isqrt_round(num: int, den: int) -> int:
    """``round(sqrt(num/den))`` exactly, for positive integers (ties cannot occur for irrationals)."""
    # round(sqrt(v)) = floor(sqrt(v) + 1/2) = floor((sqrt(4v) + 1)/2) = (isqrt(4v) + 1) // 2 for v = num/den
    return (math.isqrt((4 * num) // den) + 1) // 2


def rsqrt_table(p: RsqrtParams) -> list[tuple[int, int]]:
    """``(R[j], R[j] - R[j+1])``, ``R`` = ``round(2^Ws/√a)`` at ``a = 2^o·(1 + k/2^T)``,
    ``j = o·2^T + k`` for octaves ``o`` in {0, 1}; the last end point is ``a = 4``."""
    T = p.table_bits

    def r(o: int, k: int) -> int:
        # 2^Ws / sqrt(2^o (2^T + k) / 2^T) = sqrt(2^(2Ws + T) / (2^o (2^T + k)))
        return _isqrt_round(1 << (2 * p.Ws + T), (1 << o) * ((1 << T) + k))

    R = [r(o, k) for o in (0, 1) for k in range(1 << T)] + [1 << (p.Ws - 1)]
    return [(R[j], R[j] - R[j + 1]) for j in range(2 << T)]


def rsqrt_int(codes, in_fmt: Fixed, out_fmt: Fixed, table_bits: int = 6, guard_bits: int = 4) -> np.ndarray:
    """Bit-exact ``1/sqrt(x)`` (the golden model of :class:`celosia.hw.primitives.Rsqrt`).

    Inputs ``x <= 0`` give ``out_fmt.max_int``; results beyond the output range saturate.

    Notes
    -----
    Integer steps (``c = n - 1 - in.frac``; shifts of non-negative values floor)::

        lz = clz_n(x);  m = x << lz;  par = (c - lz) mod 2       (a = m·2^(par-(n-1)) in [1, 4))
        j = par·2^T + (m >> D) - 2^T;  d = m mod 2^D;  r0 = R[j] - ((S[j]·d) >> D)
        s = r0² >> (2Ws - Wsq);  p = (m·s) << par
        e = (3·2^(n-1+Wsq) - p) >> (n - 1 + Wsq - We)
        r1 = (r0·e) >> (Ws + We + 1 - Wr)
        out = saturate(round_half_up(r1·2^-(Wr - out.frac + (c - lz - par)/2)))
    """
    p = rsqrt_params(in_fmt, out_fmt, table_bits, guard_bits)
    _q, pos, lz, m = _normalise(codes, p.n)
    tab = rsqrt_table(p)
    R = np.asarray([t[0] for t in tab], dtype=np.int64)
    S = np.asarray([t[1] for t in tab], dtype=np.int64)
    D = p.D
    par = (p.c - lz) & 1
    j = (par << np.int64(p.table_bits)) + (m >> np.int64(D)) - (1 << p.table_bits)
    d = m & np.int64((1 << D) - 1)
    r0 = R[j] - ((S[j] * d) >> np.int64(D))
    s = (r0 * r0) >> np.int64(2 * p.Ws - p.Wsq)
    pr = (m * s) << par
    e = _shr(np.int64(3 << (p.n - 1 + p.Wsq)) - pr, p.n - 1 + p.Wsq - p.We)
    r1 = (r0 * e) >> np.int64(p.Ws + p.We + 1 - p.Wr)
    out = _round_half_up_shift(r1, p.shift(lz), p.Wr + 2, out_fmt)
    return np.where(pos, out, np.int64(out_fmt.max_int))


def rsqrt_error_bound(in_fmt: Fixed, out_fmt: Fixed, table_bits: int = 6, guard_bits: int = 4) -> tuple[float, float]:
    """Stated bound of ``rsqrt_int`` against float64, for inputs whose ``1/√x`` does not saturate.

    Returns ``(lsb, rel)`` with the same meaning as :func:`reciprocal_error_bound`.

    Notes
    -----
    Seed ``r0 = (1-δ)/√a``, ``|δ| <= 2·(2^-2T·0.75/8 + 1.5·2^-Ws)`` (``|g''| <= 3/4`` on [1, 2),
    the [2, 4) octave is smaller). Newton: ``r1 = (1/√a)(1 - 1.5δ² + 0.5δ³) + r0·(a·σ - η)/2 - ρ``
    with ``σ < 2^-Wsq`` (floor of ``r0²``), ``η < 2^-We``, ``ρ < 2^-Wr``; so
    ``|r1 - 1/√a| <= 1.5δ² + 0.5|δ|³ + (1 + δ)(4σ + η)/2 + ρ``, relative error twice that.
    """
    p = rsqrt_params(in_fmt, out_fmt, table_bits, guard_bits)
    delta = 2 * _seed_abs_err(p.table_bits, p.Ws, 0.75)
    sig = 2.0**-p.Wsq if p.Wsq < 2 * p.Ws else 0.0
    eabs = 1.5 * delta**2 + 0.5 * delta**3 + (1 + delta) * (4 * sig + 2.0**-p.We) / 2 + 2.0**-p.Wr
    rel = 2 * eabs
    lsb = 0.5 + rel * (out_fmt.max_int + 0.5)
    return lsb, rel
