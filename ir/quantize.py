"""The quantize pass: calibrate on sample inputs and give every tensor a fixed-point format."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping

import numpy as np

from celosia.errors import QuantizationError, UnknownNameError
from celosia.ir import numerics as nx_
from celosia.ir.graph import Graph
from celosia.ir.attention import prob_format
from celosia.ir.golden import run_float
from celosia.ir.perchannel import channel_fracs, quantize_rows
from celosia.ir.registry import op_def

__all__ = ["Precision", "QuantContext", "quantize", "calibrate", "quantize_const", "linear_format", "moe_formats",
           "gelu_linear_frac"]

_PRESET = re.compile(r"^w(\d+)a(\d+)(-?pc)?$")


@dataclass(frozen=True)
class Precision:
    """Bit widths of a quantized model.

    Parameters
    ----------
    weight_bits, act_bits : int
        Widths of weights and activations (2..18: one product per 18×18 DSP).
    acc_bits : int
        Width of the linear unit's accumulator; biases are stored in it.
    rounding : Rounding
        Rounding of every requantization.
    overrides : dict of str to Fixed
        Per-tensor formats that replace the calibrated choice (keys are tensor names;
        ``"<attention>:scores"`` sets an Attention's score format).
    per_channel : bool
        One weight format per output channel of every Linear (:mod:`celosia.ir.perchannel`)
        instead of one per tensor; preset suffix ``-pc`` (``w8a16-pc``).
    """

    weight_bits: int = 8
    act_bits: int = 16
    acc_bits: int = 40
    rounding: nx_.Rounding = nx_.Rounding.HALF_EVEN
    overrides: Mapping[str, nx_.Fixed] = field(default_factory=dict)
    per_channel: bool = False

    def __post_init__(self) -> None:
        for what, bits in (("weight", self.weight_bits), ("activation", self.act_bits)):
            if not 2 <= bits <= 18:
                raise QuantizationError(
                    f"{what} width {bits} is out of range 2..18",
                    hint="the linear unit maps one product onto one 18x18 DSP multiplier",
                )
        if not self.weight_bits + self.act_bits <= self.acc_bits <= 48:
            raise QuantizationError(
                f"accumulator width {self.acc_bits} must lie in {self.weight_bits + self.act_bits}..48"
            )

    @classmethod
    def parse(cls, preset: str) -> "Precision":
        """Parse a preset such as ``"w8a16"`` (8-bit weights, 16-bit activations)."""
        m = _PRESET.match(preset.strip().lower())
        if not m:
            raise UnknownNameError(
                f"unknown precision preset '{preset}'",
                hint="write it as w<weight bits>a<activation bits>[-pc], e.g. w8a16, w16a16 or w8a16-pc "
                "(per-channel weights)",
            )
        return cls(weight_bits=int(m.group(1)), act_bits=int(m.group(2)), per_channel=bool(m.group(3)))

    @property
    def name(self) -> str:
        """The preset name, e.g. ``"w8a16"``."""
        return f"w{self.weight_bits}a{self.act_bits}" + ("-pc" if self.per_channel else "")


def calibrate(graph: Graph, samples: Iterable[Mapping[str, np.ndarray]]) -> dict[str, float]:
    """Largest absolute value each tensor takes over the calibration samples.

    Ops with internal tensors (an op's ``calibrate`` in the registry) also get ranges for
    those, keyed ``"<op>:<internal>"``: an Attention's scaled scores (``:scores``), a MoE's gate
    logits, expert pre-activations, activations and expert outputs (``:logits``, ``:hidden``,
    ``:act``, ``:expert``; dense over every expert); a Linear with a fused GELU is ranged on its
    pre-activation.
    """
    ranges: dict[str, float] = {}
    count = 0

    def see(key: str, value: float) -> None:
        ranges[key] = max(ranges.get(key, 0.0), value)

    internal = [(op, op_def(op).calibrate) for op in graph if op_def(op).calibrate]
    for sample in samples:
        count += 1
        env = run_float(graph, sample, keep_all=True)
        for name, value in env.items():
            see(name, float(np.max(np.abs(value))) if value.size else 0.0)
        for op, fn in internal:
            for key, value in fn(op, [env[i] for i in op.inputs]).items():
                see(key, value)
    if count == 0:
        raise QuantizationError(f"no calibration samples were given for '{graph.name}'")
    return ranges


@dataclass
class QuantContext:
    """What an op's quantization rule (``OpDef.quant``) sees.

    Attributes
    ----------
    graph : Graph
        The graph being quantized; every op before the current one already has its format.
    ranges : dict of str to float
        Calibrated ranges (:func:`calibrate`).
    precision : Precision
    gelu_frac : int or None
        The one format every GELU-fused Linear shares (:func:`gelu_linear_frac`).
    forced : dict of str to Fixed
        Formats a unit needs shared by all its ops (:func:`shared_formats`); they win over overrides.
    """

    graph: Graph
    ranges: dict[str, float]
    precision: Precision
    gelu_frac: int | None
    forced: dict[str, nx_.Fixed] = field(default_factory=dict)

    def override(self, key: str | None) -> nx_.Fixed | None:
        """The format tensor ``key`` must take (a shared unit format, else the user's override), or None."""
        if key is None:
            return None
        return self.forced.get(key) or self.precision.overrides.get(key)

    def fmt(self, name: str) -> nx_.Fixed:
        """The format already given to tensor ``name``."""
        return self.graph.op(name).type.fmt

    def act(self, key: str, max_frac: int | None = None) -> nx_.Fixed:
        """An activation format (``act_bits`` wide) holding the calibrated range of ``key``."""
        bits = self.precision.act_bits
        frac = nx_.frac_for_range(self.ranges[key], bits)
        return nx_.Fixed(bits, frac if max_frac is None else min(frac, max_frac))

    def input_format(self, name: str) -> nx_.Fixed | None:
        """The integer format of an Input that carries indices or masks (its readers say), or None."""
        for user in self.graph.consumers(name):
            op = self.graph.op(user)
            rule = op_def(op).operand_format
            for index, src in enumerate(op.inputs):
                fmt = rule(self.graph, op, index) if rule and src == name else None
                if fmt is not None:
                    return fmt
        return None

    def const_role(self, name: str) -> str:
        """``"bias"``, ``"weight"`` or ``"data"``: how the readers of Const ``name`` use it."""
        for user in self.graph.consumers(name):
            op = self.graph.op(user)
            d = op_def(op)
            idx = [i for i, src in enumerate(op.inputs) if src == name]
            if any(i in d.biases for i in idx):
                return "bias"
            if any(i in d.weights for i in idx):
                return "weight"
        return "data"

    def set_bias(self, name: str, acc_fmt: nx_.Fixed, owner: str) -> None:
        """Give bias Const ``name`` the accumulator format ``acc_fmt`` and its codes."""
        bias = self.graph.op(name)
        top = float(np.max(np.abs(bias.attrs["value"]))) if bias.attrs["value"].size else 0.0
        if top > acc_fmt.max_value:
            raise QuantizationError(
                f"{owner}: bias '{name}' reaches {top:.4g}, beyond the accumulator format {acc_fmt} "
                f"(max {acc_fmt.max_value:.4g})",
                hint="use wider accumulators or rescale the layer",
            )
        bias.attrs["codes"] = nx_.quantize(bias.attrs["value"], acc_fmt, self.precision.rounding)
        self.graph.replace(bias.evolve(type=bias.type.with_fmt(acc_fmt)))


def quantize(graph: Graph, samples: Iterable[Mapping[str, np.ndarray]], precision: Precision) -> Graph:
    """Assign a fixed-point format to every tensor and integer codes to every Const.

    Each op's format comes from its quantization rule in the registry (``OpDef.quant``).
    Guarantees: every op's type has a format; weights use ``weight_bits`` with the
    finest scale holding their largest magnitude; activations use ``act_bits``
    calibrated the same way on ``samples``; a Linear's output never has more
    fractional bits than its accumulator (``frac_x + frac_w``), so its
    requantization is a right shift; biases are stored in the accumulator format;
    Output and unfused ReLU keep their operand's format; Softmax outputs hold [0, 1]; every
    GELU-fused Linear gets the same format (:func:`gelu_linear_frac`). Each Const gets
    ``attrs["codes"]``; each Linear gets ``attrs["rounding"]``. A format override
    (``Precision.overrides``) replaces the calibrated choice of the tensor it names.
    """
    ranges = calibrate(graph, samples)
    _check_override_names(graph, precision)
    out = _assign(graph, ranges, precision, {})
    shared = shared_formats(out)
    if shared:  # a unit built for one format per operand role: give every op the coarsest
        out = _assign(graph, ranges, precision, shared)
        still = shared_formats(out)
        if still:
            raise QuantizationError(f"formats of {', '.join(sorted(still))} cannot be shared by their unit",
                                    hint="override them to one format (Precision.overrides)")
    return out


def _assign(graph: Graph, ranges: dict[str, float], precision: Precision, forced: dict[str, nx_.Fixed]) -> Graph:
    out = graph.copy()
    ctx = QuantContext(out, ranges, precision, gelu_linear_frac(out, ranges, precision), forced)
    for op in out:
        rule = op_def(op).quant
        if rule is None:
            raise QuantizationError(f"{op.kind} '{op.name}' has no quantization rule",
                                    hint=f"{op.kind} runs in float only; remove it or declare its rule")
        fmt = rule(ctx, op, ctx.override(op.name) or ctx.override(op.attrs.get("activation_op")))
        if fmt is not None:
            out.replace(op.evolve(type=op.type.with_fmt(fmt)))
    return out


def shared_formats(graph: Graph) -> dict[str, nx_.Fixed]:
    """Tensors whose unit is built for one format per operand role (``Binding.shared_formats``) but
    got several, each mapped to the coarsest of its role (the same width, the fewest fractional bits)."""
    def source(key: str) -> str:  # a tensor whose op keeps its operand's format takes it from there
        while ":" not in key and op_def(graph.op(key)).keeps_operand_format:
            key = graph.op(key).inputs[0]
        return key

    def fmt_of(key: str) -> nx_.Fixed:
        name, _, internal = key.partition(":")
        return graph.op(name).attrs[internal] if internal else graph.op(name).type.fmt

    # tensors that must share a format: every member of a unit's role, and each with its source
    group: dict[str, str] = {}

    def find(key: str) -> str:
        while group.setdefault(key, key) != key:
            key = group[key]
        return key

    for op in graph:
        hw = op_def(op).hw
        if hw is None or hw.shared_formats is None:
            continue
        for role, key in hw.shared_formats(op).items():
            group[find(source(key))] = find(f"<{hw.unit}:{role}>")
    members: dict[str, list[str]] = {}
    for key in group:
        if not key.startswith("<"):
            members.setdefault(find(key), []).append(key)
    forced = {}
    for keys in members.values():
        fmts = [fmt_of(k) for k in keys]
        if len(set(fmts)) > 1:
            shared = nx_.Fixed(max(f.bits for f in fmts), min(f.frac for f in fmts))
            forced.update({key: shared for key in keys})
    return forced


def quantize_const(ctx: QuantContext, op, override) -> nx_.Fixed | None:
    """The Const rule: weights at ``weight_bits`` (per channel with ``-pc``), data at ``act_bits``,
    biases left to the op that owns them (None)."""
    precision = ctx.precision
    role = ctx.const_role(op.name)
    if role == "bias":
        return None  # set with its Linear / MoE, which fixes the accumulator format
    bits = precision.weight_bits if role == "weight" else precision.act_bits
    if override is None and role == "weight" and precision.per_channel and _linear_weight(ctx.graph, op.name):
        fracs = channel_fracs(op.attrs["value"], bits)
        op.attrs["channel_frac"] = tuple(int(f) for f in fracs)
        op.attrs["codes"] = quantize_rows(op.attrs["value"], bits, fracs, precision.rounding)
        return nx_.Fixed(bits, int(fracs.min()))
    fmt = override or nx_.Fixed(bits, nx_.frac_for_range(ctx.ranges[op.name], bits))
    op.attrs["codes"] = nx_.quantize(op.attrs["value"], fmt, precision.rounding)
    return fmt


def _check_override_names(graph: Graph, precision: Precision) -> None:
    known = {op.name for op in graph} | {op.attrs["activation_op"] for op in graph if "activation_op" in op.attrs}
    unknown = sorted(k for k in precision.overrides if k.split(":")[0] not in known)
    if unknown:
        raise QuantizationError(
            f"format overrides name no tensor of '{graph.name}': {', '.join(unknown)}",
            hint="key overrides by op name (an activation fused into a Linear keeps its own name), "
                 "or '<attention op>:scores'",
        )


def moe_formats(ctx: QuantContext, op) -> nx_.Fixed:
    """The MoE rule: internal formats (attrs ``logit_fmt``, ``prob_fmt``, ``hidden_fmt``, ``act_fmt``,
    ``expert_fmt``), the three biases in their accumulator formats, and the output format."""
    fx, fgw, fw1, fw2 = (ctx.fmt(op.inputs[i]) for i in (0, 1, 3, 5))
    acc = ctx.precision.acc_bits
    owner = f"MoE '{op.name}'"
    act = ctx.act
    ctx.set_bias(op.inputs[2], nx_.Fixed(acc, fx.frac + fgw.frac), owner)
    ctx.set_bias(op.inputs[4], nx_.Fixed(acc, fx.frac + fw1.frac), owner)
    op.attrs["logit_fmt"] = act(f"{op.name}:logits", fx.frac + fgw.frac)
    op.attrs["prob_fmt"] = prob_format(ctx.precision.act_bits)
    op.attrs["hidden_fmt"] = act(f"{op.name}:hidden", fx.frac + fw1.frac)
    op.attrs["act_fmt"] = act(f"{op.name}:act")
    ctx.set_bias(op.inputs[6], nx_.Fixed(acc, op.attrs["act_fmt"].frac + fw2.frac), owner)
    op.attrs["expert_fmt"] = act(f"{op.name}:expert", op.attrs["act_fmt"].frac + fw2.frac)
    return act(op.name, op.attrs["prob_fmt"].frac + op.attrs["expert_fmt"].frac)


def _linear_weight(graph: Graph, name: str) -> bool:
    """True if every reader of ``name`` uses it as a Linear weight (per-channel applies)."""
    users = [graph.op(u) for u in graph.consumers(name)]
    return bool(users) and all(u.kind == "Linear" and u.inputs[1] == name and name not in u.inputs[2:] for u in users)


def linear_format(ctx: QuantContext, op) -> nx_.Fixed:
    """The Linear rule: the calibrated output format (at most the accumulator's fractional bits;
    the shared GELU format when GELU is fused); gives the bias its accumulator format."""
    fmt = _linear_format_unfused(ctx, op)
    if op.attrs.get("activation") == "gelu":
        fmt = nx_.Fixed(fmt.bits, _gelu_frac(op, fmt.frac, ctx.gelu_frac))
    return fmt


def _linear_format_unfused(ctx: QuantContext, op) -> nx_.Fixed:
    graph, ranges, precision = ctx.graph, ctx.ranges, ctx.precision
    fx = graph.op(op.inputs[0]).type.fmt
    w = graph.op(op.inputs[1])
    if "channel_frac" in w.attrs:
        return _linear_format_per_channel(graph, op, ranges, precision, fx, w)
    acc_frac = fx.frac + w.type.fmt.frac
    ctx.set_bias(op.inputs[2], nx_.Fixed(precision.acc_bits, acc_frac), f"Linear '{op.name}'")
    if len(op.inputs) == 4:
        fr = graph.op(op.inputs[3]).type.fmt
        if fr.frac > acc_frac:
            raise QuantizationError(
                f"Linear '{op.name}': residual '{op.inputs[3]}' ({fr}) is finer than the accumulator "
                f"(frac {acc_frac})",
                hint=f"override the residual's format to at most {acc_frac} fractional bits",
            )
    frac = min(nx_.frac_for_range(ranges[op.name], precision.act_bits), acc_frac)
    return nx_.Fixed(precision.act_bits, frac)


def gelu_linear_frac(graph: Graph, ranges: dict[str, float], precision: Precision) -> int | None:
    """The one format every GELU-fused Linear of ``graph`` shares (the generated array has one
    GELU format): the coarsest any of them needs, at most ``act_bits − 2`` fractional bits."""
    fracs = [nx_.frac_for_range(ranges[op.name], precision.act_bits)
             for op in graph.ops("Linear") if op.attrs.get("activation") == "gelu"]
    return min(min(fracs), precision.act_bits - 2) if fracs else None


def _gelu_frac(op, frac: int, shared: int) -> int:
    frac = min(frac, shared)
    if frac < 3:
        raise QuantizationError(
            f"Linear '{op.name}' with fused GELU needs {frac} fractional bits; the GELU epilogue needs at least 3",
            hint="use wider activations (e.g. a16) or rescale the layer",
        )
    return frac


def _linear_format_per_channel(graph: Graph, op, ranges, precision: Precision, fx: nx_.Fixed, w) -> nx_.Fixed:
    acc_fracs = [fx.frac + f for f in w.attrs["channel_frac"]]
    bias = graph.op(op.inputs[2])
    values = np.asarray(bias.attrs["value"], dtype=np.float64)
    for n, (v, f) in enumerate(zip(values, acc_fracs)):
        if abs(v) > nx_.Fixed(precision.acc_bits, f).max_value:
            raise QuantizationError(
                f"Linear '{op.name}': bias '{bias.name}'[{n}] = {v:.4g} is beyond its channel's accumulator "
                f"format {nx_.Fixed(precision.acc_bits, f)}",
                hint="use wider accumulators or per-tensor weights",
            )
    bias.attrs["codes"] = quantize_rows(values.reshape(-1, 1), precision.acc_bits, acc_fracs,
                                        precision.rounding).reshape(-1)
    bias.attrs["channel_frac"] = tuple(acc_fracs)
    graph.replace(bias.evolve(type=bias.type.with_fmt(nx_.Fixed(precision.acc_bits, min(acc_fracs)))))
    if len(op.inputs) == 4 and graph.op(op.inputs[3]).type.fmt.frac > min(acc_fracs):
        raise QuantizationError(
            f"Linear '{op.name}': residual '{op.inputs[3]}' is finer than the accumulator (frac {min(acc_fracs)})",
            hint=f"override the residual's format to at most {min(acc_fracs)} fractional bits",
        )
    frac = min(nx_.frac_for_range(ranges[op.name], precision.act_bits), min(acc_fracs))
    return nx_.Fixed(precision.act_bits, frac)
