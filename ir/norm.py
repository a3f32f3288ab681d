"""LayerNorm and RMSNorm: bit-exact integer golden models, float references and stated bounds.

These are the golden models of :mod:`celosia.hw.norm`. Both units read a row of ``D`` input codes
once, form the exact integer sums ``S1 = Σq`` and ``S2 = Σq²``, and normalise the buffered row.

Integer algorithm (``F = in_fmt.frac``, ``n = D``; every step is exact unless it says "round")::

    S1 = Σ q_i,  S2 = Σ q_i²                                   (exact integers)
    LayerNorm:  V = max(n·S2 − S1², 0),  A_i = n·q_i − S1       (V = n²·var·2^(2F), exact)
    RMSNorm:    V = n·S2,                A_i = n·q_i            (V = n²·E[x²]·2^(2F))
    Z  = V·2^(2k) + e_q·n²              e_q = quantize(eps, u62.(2F + 2k))  (eps, round half-even)
    s  = ceil((bitlen(Z) − Wz)/2);  Zm = floor(Z·2^(−2s))      (Wz = z_bits; Zm in [2^(Wz−2), 2^Wz))
    r  = rsqrt_int(Zm, u{Wz}.{Wz}, u{P+2}.{P})                 (r ≈ 2^P/√(Zm·2^−Wz) in [2^P, 2^(P+1)])
    t_i = round_half_even(A_i·r · 2^−(P + Wz/2 + s − k − ft))  (t = (x − mean)·rstd with ft frac bits)
    y_i = saturate(round_half_even((t_i·γ_i + β_i·2^(ft+fγ−fβ)) · 2^−(ft + fγ − out.frac)))

Because ``Z / (n²·2^(2F+2k)) = var + e_q`` holds exactly, ``A_i·2^k/√Z`` *is*
``(x_i − mean)/√(var + eps_q)``: there is no division by ``n`` and no cancellation. ``n·S2 − S1²``
is computed exactly in integers, so a row whose ``|mean|`` is ``100·std`` (or ``10^6·std``) loses
nothing; the only relative error on ``rstd`` comes from the 2^(Wz−2)-bit truncation of ``Z``, the
rsqrt primitive and the eps quantization.

**Stated bound** (:func:`norm_error_bound`). Against the float64 reference evaluated on the
dequantized inputs, the quantized ``γ``/``β`` and the real ``eps``, for every output that does not
saturate::

    |y − y*| ≤ |γ|·(ρ·|t*| + 2^−(ft+1)) + lsb_out/2,     |t*| ≤ √n (RMSNorm), √(n−1) (LayerNorm)
    ρ = (1 + ρ_z)(1 + ρ_r)(1 + ρ_e) − 1
    ρ_z = 2^−(Wz−1)                    (Z truncated to Wz bits: ≤ 2^−(Wz−2) relative, halved by √)
    ρ_r = 2^−(P+1) + rel_rsqrt         (rsqrt_error_bound; the result is ≥ 1.0 so its ½ LSB is ≤ 2^−(P+1))
    ρ_e = |e_q·2^−(2F+2k) − eps| / (2·eps)·1.01   (eps quantization, ≤ 2^−(eps_bits+1)·1.01)

``|mean|`` does not appear: the bound is the same for ``|mean| = 100·std`` as for zero-mean rows.
With the defaults (``Wz = 26``, ``P = 24``, ``ft = out.frac + 8``) ``ρ = 9.0·10^-8``; at 16-bit
formats with ``D ≤ 4096`` and ``|γ| ≤ 2`` the worst-case bound is below 1 output LSB (0.52 LSB at
out.frac = 10, 0.55 at 12, 0.88 at 15); in practice ``|t*|`` is a few units, not ``√n``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from celosia.ir import approx
from celosia.ir.numerics import Fixed, quantize

from celosia.errors import HardwareGenerationError

__all__ = [
    "NormParams",
    "NormRecord",
    "layernorm_float",
    "layernorm_int",
    "norm_error_bound",
    "norm_int",
    "norm_params",
    "norm_rel_error",
    "rmsnorm_float",
    "rmsnorm_int",
]


def _fail(unit: str, msg: str, hint: str):
    raise HardwareGenerationError(f"{unit}: {msg}", hint=hint)


@dataclass(frozen=True)
class NormParams:
    """Derived constants of a LayerNorm / RMSNorm unit (see :func:`norm_params`)."""

    rms: bool  # RMSNorm if true, else LayerNorm
    D: int  # row length n
    in_fmt: Fixed
    out_fmt: Fixed
    gamma_fmt: Fixed
    beta_fmt: Fixed | None
    eps: float
    k: int  # V is scaled by 2^(2k) so eps gets eps_bits significant bits
    eps_code: int  # quantize(eps, u62.(2F + 2k))
    z_bits: int  # Wz
    rsqrt_frac: int  # P
    ft: int  # fractional bits of t = (x - mean)·rstd
    table_bits: int
    guard_bits: int
    rsqrt: approx.RsqrtParams

    @property
    def unit(self) -> str:
        return "rmsnorm" if self.rms else "layernorm"

    @property
    def eps_term(self) -> int:
        """The integer ``e_q·n²`` added to ``V·2^(2k)``."""
        return self.eps_code * self.D * self.D

    @property
    def rsqrt_in(self) -> Fixed:
        return Fixed(self.z_bits, self.z_bits, signed=False)

    @property
    def rsqrt_out(self) -> Fixed:
        return Fixed(self.rsqrt_frac + 2, self.rsqrt_frac, signed=False)

    @property
    def sh_const(self) -> int:
        """The right shift of ``A·r`` is ``sh_const + s`` (``s`` per row)."""
        return self.rsqrt_frac + self.z_bits // 2 - self.k - self.ft

    @property
    def s_min(self) -> int:
        """Smallest ``s`` (``Z = 1``)."""
        return -((self.z_bits - 1) // 2)

    @property
    def prod_shift(self) -> int:
        """Final right shift ``ft + fγ − out.frac`` of ``t·γ + β'``."""
        return self.ft + self.gamma_fmt.frac - self.out_fmt.frac

    @property
    def beta_shift(self) -> int:
        """Left shift aligning β to ``t·γ``: ``ft + fγ − fβ``."""
        return 0 if self.beta_fmt is None else self.ft + self.gamma_fmt.frac - self.beta_fmt.frac

    @property
    def rom_bits(self) -> int:
        """γ (and β) ROM bits plus the rsqrt seed table."""
        b = self.D * self.gamma_fmt.bits + (0 if self.beta_fmt is None else self.D * self.beta_fmt.bits)
        return b + self.rsqrt.rom_bits

    @property
    def t_bits(self) -> int:
        """Signed width that holds every ``t`` (``|t| ≤ √n·(1 + ρ) + 1 LSB``)."""
        return self.ft + math.isqrt(self.D).bit_length() + 3


def norm_params(
    D: int,
    in_fmt: Fixed,
    out_fmt: Fixed,
    gamma_fmt: Fixed,
    beta_fmt: Fixed | None,
    eps: float,
    *,
    rms: bool = False,
    z_bits: int = 26,
    rsqrt_frac: int = 24,
    t_guard: int = 8,
    eps_bits: int = 20,
    table_bits: int = 6,
    guard_bits: int = 4,
) -> NormParams:
    """Validate the parameters of a LayerNorm (``rms=False``) or RMSNorm unit and derive its constants.

    Parameters
    ----------
    D : int
        Row length (≥ 1).
    in_fmt, out_fmt, gamma_fmt : Fixed
        Signed formats of the inputs, the outputs and γ.
    beta_fmt : Fixed or None
        Signed format of β (LayerNorm); None for RMSNorm.
    eps : float
        The variance epsilon (> 0), quantized to ``u62.(2F + 2k)`` with round half-even, where
        ``k ≥ 0`` is the smallest giving it at least ``eps_bits`` significant bits.
    z_bits : int
        ``Wz``: significant bits of ``var + eps`` kept for the rsqrt (even, 8..40).
    rsqrt_frac : int
        ``P``: fractional bits of the rsqrt result (which lies in [1, 2]).
    t_guard : int
        Fractional bits of ``t = (x − mean)·rstd`` beyond ``out_fmt.frac`` (0..16).
    eps_bits : int
        Minimum significant bits of the quantized eps (4..40).
    table_bits, guard_bits : int
        Parameters of the rsqrt primitive (:func:`celosia.ir.approx.rsqrt_params`).

    Raises
    ------
    HardwareGenerationError
        With the offending numbers: D < 1, unsigned or non-Fixed formats, eps ≤ 0 or too large,
        or internal widths the rsqrt primitive cannot build.
    """
    u = "rmsnorm" if rms else "layernorm"
    if isinstance(D, bool) or not isinstance(D, int) or D < 1:
        _fail(u, f"row length D={D!r} must be an integer >= 1", "pass γ (and β) with one entry per element of a row")
    fmts = {"in_fmt": in_fmt, "out_fmt": out_fmt, "gamma_fmt": gamma_fmt}
    if not rms:
        fmts["beta_fmt"] = beta_fmt
    for name, f in fmts.items():
        if not isinstance(f, Fixed):
            _fail(u, f"{name} must be a celosia.ir.numerics.Fixed, got {f!r}", "pass Fixed(bits, frac)")
        if not f.signed:
            _fail(u, f"{name} {f} is unsigned", "use a signed format (normalised values and γ/β can be negative)")
        if f.bits < 2:
            _fail(u, f"{name} {f} has {f.bits} bits, too narrow", "use at least 2 bits")
    for name, v, lo, hi in (("z_bits", z_bits, 8, 40), ("rsqrt_frac", rsqrt_frac, 4, 40),
                            ("t_guard", t_guard, 0, 16), ("eps_bits", eps_bits, 4, 40)):
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            _fail(u, f"{name}={v!r} is out of range {lo}..{hi}", "keep the default")
    if z_bits % 2:
        _fail(u, f"z_bits={z_bits} must be even", "use an even number such as 26")
    if not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps <= 0:
        _fail(u, f"eps={eps!r} must be a finite number > 0", "use the model's epsilon, e.g. 1e-5")
    F = in_fmt.frac
    k = 0
    while eps * 2.0 ** (2 * F + 2 * k) < 2.0**eps_bits:
        k += 1
    if eps * 2.0 ** (2 * F + 2 * k) >= 2.0**61:
        _fail(u, f"eps={eps!r} is {eps * 2.0 ** (2 * F):.3g} input LSB², beyond 2^61",
              "use a smaller eps or an input format with fewer fractional bits")
    eps_code = int(quantize(eps, Fixed(62, 2 * F + 2 * k, signed=False))[()])
    ft = max(out_fmt.frac + t_guard, (beta_fmt.frac - gamma_fmt.frac) if (beta_fmt is not None and not rms) else -(1 << 30),
             out_fmt.frac - gamma_fmt.frac)
    rp = approx.rsqrt_params(Fixed(z_bits, z_bits, signed=False), Fixed(rsqrt_frac + 2, rsqrt_frac, signed=False),
                             table_bits, guard_bits)
    return NormParams(rms, D, in_fmt, out_fmt, gamma_fmt, None if rms else beta_fmt, float(eps), k, eps_code,
                      z_bits, rsqrt_frac, ft, table_bits, guard_bits, rp)


def _pyint(a) -> np.ndarray:
    """Codes as an object array of Python ints (unbounded)."""
    arr = np.asarray(a)
    if arr.dtype.kind not in "iuO":
        raise TypeError(f"expected integer codes, got dtype {arr.dtype}")
    return arr.astype(object)


def _shift_round_he(x: np.ndarray, sh) -> np.ndarray:
    """``round_half_even(x·2^−sh)`` on object arrays of Python ints, per-element ``sh``."""
    out = np.empty(x.shape, dtype=object)
    xs = x.ravel()
    shs = np.broadcast_to(np.asarray(sh, dtype=object), x.shape).ravel()
    o = out.ravel()
    for i, (v, s) in enumerate(zip(xs, shs)):
        v, s = int(v), int(s)
        if s <= 0:
            o[i] = v << -s
            continue
        f = v >> s
        rem = v - (f << s)
        half = 1 << (s - 1)
        o[i] = f + (1 if (rem > half or (rem == half and f & 1)) else 0)
    return out


def _row_stats(q: np.ndarray, p: NormParams):
    """Per-row ``A`` (object array like q), ``r`` and ``s`` (object arrays of shape rows)."""
    n = p.D
    S1 = q.sum(axis=-1)
    S2 = (q * q).sum(axis=-1)
    if p.rms:
        V = n * S2
        A = n * q
    else:
        V = np.vectorize(lambda v: max(int(v), 0), otypes=[object])(n * S2 - S1 * S1)
        A = n * q - S1[..., None]
    Z = V * (1 << (2 * p.k)) + p.eps_term
    Wz = p.z_bits
    s = np.vectorize(lambda z: -((Wz - int(z).bit_length()) // 2), otypes=[object])(Z)
    Zm = np.vectorize(lambda z, sv: int(z) >> (2 * sv) if sv >= 0 else int(z) << (-2 * sv), otypes=[object])(Z, s)
    r = approx.rsqrt_int(np.asarray(Zm, dtype=np.int64), p.rsqrt_in, p.rsqrt_out, p.table_bits, p.guard_bits)
    return A, r.astype(object), s, Z


def norm_int(codes, p: NormParams, gamma_codes, beta_codes=None) -> np.ndarray:
    """Bit-exact LayerNorm / RMSNorm of the rows of ``codes`` (last axis, length ``p.D``) with
    parameters ``p`` from :func:`norm_params`; returns int64 codes in ``p.out_fmt``."""
    q = _pyint(codes)
    if q.ndim == 0 or q.shape[-1] != p.D:
        _fail(p.unit, f"rows have length {q.shape[-1] if q.ndim else 0}, the unit was built for D={p.D}",
              "reshape the input to (..., D)")
    for name, f, c in (("input", p.in_fmt, q),):
        if c.size and (min(c.ravel()) < f.min_int or max(c.ravel()) > f.max_int):
            _fail(p.unit, f"{name} codes outside {f} ({f.min_int}..{f.max_int})", "saturate the codes first")
    g = _pyint(gamma_codes).reshape(-1)
    if g.size != p.D:
        _fail(p.unit, f"γ has {g.size} entries for D={p.D}", "pass one γ per element")
    A, r, s, _ = _row_stats(q, p)
    sh = p.sh_const + s
    t = _shift_round_he(A * r[..., None], np.broadcast_to(sh[..., None], A.shape))
    acc = t * g
    if not p.rms:
        b = _pyint(beta_codes).reshape(-1)
        if b.size != p.D:
            _fail(p.unit, f"β has {b.size} entries for D={p.D}", "pass one β per element")
        acc = acc + b * (1 << p.beta_shift)
    y = _shift_round_he(acc, p.prod_shift)
    y = np.clip(y, p.out_fmt.min_int, p.out_fmt.max_int)
    return y.astype(np.int64)


def layernorm_int(codes, in_fmt: Fixed, out_fmt: Fixed, gamma_codes, gamma_fmt: Fixed, beta_codes,
                  beta_fmt: Fixed, eps: float, **kw) -> np.ndarray:
    """Bit-exact LayerNorm over the last axis (the golden model of :class:`celosia.hw.norm.LayerNorm`).

    Parameters
    ----------
    codes : array_like of int, shape (..., D)
        Input codes in ``in_fmt``.
    in_fmt, out_fmt : Fixed
        Signed input and output formats (outputs saturate).
    gamma_codes, beta_codes : array_like of int, shape (D,)
        γ and β codes in ``gamma_fmt`` and ``beta_fmt``.
    gamma_fmt, beta_fmt : Fixed
    eps : float
        Variance epsilon, quantized as described in :func:`norm_params`.
    **kw
        ``z_bits``, ``rsqrt_frac``, ``t_guard``, ``eps_bits``, ``table_bits``, ``guard_bits``.

    Returns
    -------
    numpy.ndarray of int64, shape (..., D)
        Codes in ``out_fmt``. See the module docstring for the integer steps and the bound.
    """
    D = int(np.shape(codes)[-1]) if np.ndim(codes) else 0
    p = norm_params(D, in_fmt, out_fmt, gamma_fmt, beta_fmt, eps, rms=False, **kw)
    return norm_int(codes, p, gamma_codes, beta_codes)


def rmsnorm_int(codes, in_fmt: Fixed, out_fmt: Fixed, gamma_codes, gamma_fmt: Fixed, eps: float, **kw) -> np.ndarray:
    """Bit-exact RMSNorm ``y = x·γ/√(E[x²] + eps)`` over the last axis (the golden model of
    :class:`celosia.hw.norm.RMSNorm`). Parameters as :func:`layernorm_int` without β."""
    D = int(np.shape(codes)[-1]) if np.ndim(codes) else 0
    p = norm_params(D, in_fmt, out_fmt, gamma_fmt, None, eps, rms=True, **kw)
    return norm_int(codes, p, gamma_codes)


def layernorm_float(x, gamma, beta, eps: float) -> np.ndarray:
    """Float64 LayerNorm over the last axis (two-pass mean/variance, population variance)."""
    x = np.asarray(x, dtype=np.float64)
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * np.asarray(gamma, np.float64) + np.asarray(beta, np.float64)


def rmsnorm_float(x, gamma, eps: float) -> np.ndarray:
    """Float64 RMSNorm over the last axis."""
    x = np.asarray(x, dtype=np.float64)
    ms = (x * x).mean(axis=-1, keepdims=True)
    return x / np.sqrt(ms + eps) * np.asarray(gamma, np.float64)


def norm_rel_error(p: NormParams) -> float:
    """``ρ``: the stated bound on the relative error of ``rstd`` (see the module docstring)."""
    rz = 2.0 ** -(p.z_bits - 1)
    rr = 2.0 ** -(p.rsqrt_frac + 1) + approx.rsqrt_error_bound(p.rsqrt_in, p.rsqrt_out, p.table_bits, p.guard_bits)[1]
    eq = p.eps_code * 2.0 ** -(2 * p.in_fmt.frac + 2 * p.k)
    re = abs(eq - p.eps) / (2 * p.eps) * 1.01
    return (1 + rz) * (1 + rr) * (1 + re) - 1


def norm_error_bound(p: NormParams, gamma=None, t=None) -> float | np.ndarray:
    """Stated bound on ``|y − y*|`` (real units) for outputs that do not saturate.

    Parameters
    ----------
    p : NormParams
    gamma : array_like, optional
        Dequantized γ (per element); default: the largest ``|γ|`` the format holds.
    t : array_like, optional
        The exact normalised values ``(x − mean)/√(var + eps)``; default: their worst case
        ``√n`` (RMSNorm) or ``√(n − 1)`` (LayerNorm).

    Returns
    -------
    float or numpy.ndarray
        ``|γ|·(ρ·|t| + 2^−(ft+1)) + lsb_out/2``, broadcast over ``gamma`` and ``t``.
    """
    rho = norm_rel_error(p)
    g = abs(p.gamma_fmt.min_value) if gamma is None else np.abs(np.asarray(gamma, np.float64))
    tt = math.sqrt(p.D if p.rms else max(p.D - 1, 0)) if t is None else np.abs(np.asarray(t, np.float64))
    return g * (rho * tt + 2.0 ** -(p.ft + 1)) + p.out_fmt.lsb / 2



@dataclass(frozen=True)
class NormRecord:
    """One LayerNorm / RMSNorm op as a shared row unit runs it (:class:`celosia.hw.rowunit.RowUnit`).

    Parameters
    ----------
    params : NormParams
        The op's constants (:func:`norm_params`).
    gamma : sequence of int
        ``D`` γ codes in ``params.gamma_fmt``.
    beta : sequence of int or None
        ``D`` β codes in ``params.beta_fmt`` (LayerNorm); None for RMSNorm.
    name : str
        The op's name, used in error messages.

    Raises
    ------
    HardwareGenerationError
        γ/β of the wrong length or with codes outside their formats, β given for an RMSNorm or
        missing for a LayerNorm.
    """

    params: NormParams
    gamma: tuple[int, ...]
    beta: tuple[int, ...] | None = None
    name: str = ""

    def __post_init__(self):
        p = self.params
        if not isinstance(p, NormParams):
            _fail("norm record", f"params must be a NormParams, got {p!r}", "build them with norm_params(...)")
        who = f"{p.unit} '{self.name}'" if self.name else p.unit
        object.__setattr__(self, "gamma", tuple(int(v) for v in np.asarray(self.gamma).reshape(-1)))
        if p.rms and self.beta is not None:
            _fail(who, "an RMSNorm record has no β", "pass beta=None")
        if not p.rms and self.beta is None:
            _fail(who, "a LayerNorm record needs β", "pass the β codes in params.beta_fmt")
        if self.beta is not None:
            object.__setattr__(self, "beta", tuple(int(v) for v in np.asarray(self.beta).reshape(-1)))
        for what, codes, fmt in (("γ", self.gamma, p.gamma_fmt), ("β", self.beta, p.beta_fmt)):
            if codes is None:
                continue
            if len(codes) != p.D:
                _fail(who, f"{what} has {len(codes)} codes for D={p.D}", f"pass one {what} code per element")
            if codes and (min(codes) < fmt.min_int or max(codes) > fmt.max_int):
                _fail(who, f"{what} codes outside {fmt} ({fmt.min_int}..{fmt.max_int})", "quantize them to the format")

    def golden(self, codes) -> np.ndarray:
        """:func:`norm_int` of ``codes`` (rows of ``D`` input codes) with this record's constants."""
        return norm_int(codes, self.params, self.gamma, self.beta)
