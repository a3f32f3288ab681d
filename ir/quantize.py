"""The quantize pass: calibrate on sample inputs and give every tensor a fixed-point format."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping

import numpy as np

from celosia.errors import QuantizationError, UnknownNameError
from celosia.ir import numerics as nx_
from celosia.ir.graph import Graph
from celosia.ir.attention import attention_scores_float, prob_format
from celosia.ir.moe import moe_float
from celosia.ir.perchannel import channel_fracs, quantize_rows
from celosia.sim.golden import linear_preactivation_float, run_float

__all__ = ["Precision", "quantize", "calibrate"]

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

    A Linear with a fused GELU is ranged on its pre-activation (the GELU lanes read the
    saturated pre-activation in the Linear's format, so that is what the format must hold).
    Ops with internal tensors also get ranges for those, keyed ``"<op>:<internal>"``:
    an Attention's scaled scores (``:scores``), a MoE's gate logits, expert
    pre-activations, activations and expert outputs (``:logits``, ``:hidden``, ``:act``,
    ``:expert``; dense over every expert).
    """
    ranges: dict[str, float] = {}
    count = 0

    def see(key: str, value: float) -> None:
        ranges[key] = max(ranges.get(key, 0.0), value)

    for sample in samples:
        count += 1
        env = run_float(graph, sample, keep_all=True)
        for name, value in env.items():
            see(name, float(np.max(np.abs(value))) if value.size else 0.0)
        for op in graph.ops("Linear"):
            if op.attrs.get("activation") == "gelu":
                pre = linear_preactivation_float(op, [env[i] for i in op.inputs])
                see(op.name, float(np.max(np.abs(pre))) if pre.size else 0.0)
        for op in graph.ops("Attention"):
            args = [env[i] for i in op.inputs]
            scores = attention_scores_float(*args[:3], args[3] if len(args) == 4 else None, op.attrs)
            see(f"{op.name}:scores", float(np.abs(scores).max()))
        for op in graph.ops("MoE"):
            _, stats = moe_float(*[env[i] for i in op.inputs], op.attrs, internals=True)
            for key, value in stats.items():
                see(f"{op.name}:{key}", value)
    if count == 0:
        raise QuantizationError(f"no calibration samples were given for '{graph.name}'")
    return ranges


def quantize(graph: Graph, samples: Iterable[Mapping[str, np.ndarray]], precision: Precision) -> Graph:
    """Assign a fixed-point format to every tensor and integer codes to every Const.

    Guarantees: every op's type has a format; weights use ``weight_bits`` with the
    finest scale holding their largest magnitude; activations use ``act_bits``
    calibrated the same way on ``samples``; a Linear's output never has more
    fractional bits than its accumulator (``frac_x + frac_w``), so its
    requantization is a right shift; biases are stored in the accumulator format;
    Output and unfused ReLU keep their operand's format; Softmax outputs hold [0, 1]; every
    GELU-fused Linear gets the same format (:func:`gelu_linear_frac`). Each Const gets
    ``attrs["codes"]``; each Linear gets ``attrs["rounding"]``.
    """
    ranges = calibrate(graph, samples)
    out = graph.copy()
    gelu_frac = gelu_linear_frac(out, ranges, precision)

    def act(key: str, max_frac: int | None = None) -> nx_.Fixed:
        frac = nx_.frac_for_range(ranges[key], precision.act_bits)
        return nx_.Fixed(precision.act_bits, frac if max_frac is None else min(frac, max_frac))

    _check_override_names(out, precision)
    for op in out:
        fmt = precision.overrides.get(op.name) or precision.overrides.get(op.attrs.get("activation_op"))
        fins = [out.op(i).type.fmt for i in op.inputs]
        if op.kind == "Const":
            role = _const_role(out, op.name)
            if role == "bias":
                continue  # set with its Linear / MoE, which fixes the accumulator format
            bits = precision.weight_bits if role == "weight" else precision.act_bits
            if fmt is None and role == "weight" and precision.per_channel and _linear_weight(out, op.name):
                fracs = channel_fracs(op.attrs["value"], bits)
                op.attrs["channel_frac"] = tuple(int(f) for f in fracs)
                op.attrs["codes"] = quantize_rows(op.attrs["value"], bits, fracs, precision.rounding)
                out.replace(op.evolve(type=op.type.with_fmt(nx_.Fixed(bits, int(fracs.min())))))
                continue
            fmt = fmt or nx_.Fixed(bits, nx_.frac_for_range(ranges[op.name], bits))
            op.attrs["codes"] = nx_.quantize(op.attrs["value"], fmt, precision.rounding)
        elif op.kind == "Input" and _input_role(out, op.name) is not None:
            fmt = fmt or _input_role(out, op.name)
        elif op.kind in ("Output", "ReLU", "Reshape", "Transpose", "Slice"):
            fmt = fins[0]
        elif op.kind == "Embedding":
            fmt = fmt or fins[1]
        elif op.kind == "Concat":
            fmt = fmt or nx_.Fixed(max(precision.act_bits, *(f.bits for f in fins)), min(f.frac for f in fins))
        elif op.kind == "Softmax":  # probabilities: [0, 1] whatever calibration saw
            fmt = fmt or nx_.Fixed(precision.act_bits, nx_.frac_for_range(1.0, precision.act_bits))
        elif op.kind == "Linear":
            calibrated = _linear_format(out, op, ranges, precision, gelu_frac)  # also sets the bias format
            fmt = fmt or calibrated
            op.attrs["rounding"] = precision.rounding
        elif op.kind in ("MatMul", "Mul"):
            fmt = fmt or act(op.name, fins[0].frac + fins[1].frac)
        elif op.kind == "Attention":
            op.attrs["score_fmt"] = precision.overrides.get(f"{op.name}:scores") or act(f"{op.name}:scores")
            op.attrs["prob_fmt"] = prob_format(precision.act_bits)
            fmt = fmt or act(op.name, op.attrs["prob_fmt"].frac + fins[2].frac)
        elif op.kind == "MoE":
            fmt = fmt or _moe_formats(out, op, ranges, precision, act)
        else:  # Input, Add, GELU, SiLU, LayerNorm, RMSNorm
            fmt = fmt or act(op.name)
        out.replace(op.evolve(type=op.type.with_fmt(fmt)))
    return out


def _check_override_names(graph: Graph, precision: Precision) -> None:
    known = {op.name for op in graph} | {op.attrs["activation_op"] for op in graph if "activation_op" in op.attrs}
    unknown = sorted(k for k in precision.overrides if k.split(":")[0] not in known)
    if unknown:
        raise QuantizationError(
            f"format overrides name no tensor of '{graph.name}': {', '.join(unknown)}",
            hint="key overrides by op name (an activation fused into a Linear keeps its own name), "
                 "or '<attention op>:scores'",
        )


_BIAS_OF = {"Linear": (2,), "MoE": (2, 4, 6)}
_WEIGHT_OF = {"Linear": (1,), "MoE": (1, 3, 5), "MatMul": (0, 1), "Embedding": (1,)}


def _const_role(graph: Graph, name: str) -> str:
    for user in graph.consumers(name):
        op = graph.op(user)
        idx = [i for i, src in enumerate(op.inputs) if src == name]
        if any(i in _BIAS_OF.get(op.kind, ()) for i in idx):
            return "bias"
        if any(i in _WEIGHT_OF.get(op.kind, ()) for i in idx):
            return "weight"
    return "data"


def _input_role(graph: Graph, name: str) -> nx_.Fixed | None:
    """Integer formats for inputs that carry indices or masks rather than activations."""
    for user in graph.consumers(name):
        op = graph.op(user)
        if op.kind == "Embedding" and op.inputs[0] == name:
            vocab = graph.op(op.inputs[1]).type.shape[0]
            return nx_.Fixed(max(2, (vocab - 1).bit_length() + 1), 0)
        if op.kind == "Attention" and len(op.inputs) == 4 and op.inputs[3] == name:
            return nx_.Fixed(2, 0)
    return None


def _bias_codes(graph: Graph, name: str, acc_fmt: nx_.Fixed, owner: str, precision: Precision) -> None:
    bias = graph.op(name)
    top = float(np.max(np.abs(bias.attrs["value"]))) if bias.attrs["value"].size else 0.0
    if top > acc_fmt.max_value:
        raise QuantizationError(
            f"{owner}: bias '{name}' reaches {top:.4g}, beyond the accumulator format {acc_fmt}",
            hint="use wider accumulators or rescale the layer",
        )
    bias.attrs["codes"] = nx_.quantize(bias.attrs["value"], acc_fmt, precision.rounding)
    graph.replace(bias.evolve(type=bias.type.with_fmt(acc_fmt)))


def _moe_formats(graph: Graph, op, ranges, precision: Precision, act) -> nx_.Fixed:
    fx, fgw, fw1, fw2 = (graph.op(op.inputs[i]).type.fmt for i in (0, 1, 3, 5))
    acc = precision.acc_bits
    owner = f"MoE '{op.name}'"
    _bias_codes(graph, op.inputs[2], nx_.Fixed(acc, fx.frac + fgw.frac), owner, precision)
    _bias_codes(graph, op.inputs[4], nx_.Fixed(acc, fx.frac + fw1.frac), owner, precision)
    op.attrs["logit_fmt"] = act(f"{op.name}:logits", fx.frac + fgw.frac)
    op.attrs["prob_fmt"] = prob_format(precision.act_bits)
    op.attrs["hidden_fmt"] = act(f"{op.name}:hidden", fx.frac + fw1.frac)
    op.attrs["act_fmt"] = act(f"{op.name}:act")
    _bias_codes(graph, op.inputs[6], nx_.Fixed(acc, op.attrs["act_fmt"].frac + fw2.frac), owner, precision)
    op.attrs["expert_fmt"] = act(f"{op.name}:expert", op.attrs["act_fmt"].frac + fw2.frac)
    return act(op.name, op.attrs["prob_fmt"].frac + op.attrs["expert_fmt"].frac)


def _linear_weight(graph: Graph, name: str) -> bool:
    """True if every reader of ``name`` uses it as a Linear weight (per-channel applies)."""
    users = [graph.op(u) for u in graph.consumers(name)]
    return bool(users) and all(u.kind == "Linear" and u.inputs[1] == name and name not in u.inputs[2:] for u in users)


def _linear_format(graph: Graph, op, ranges: dict[str, float], precision: Precision,
                   gelu_frac: int | None) -> nx_.Fixed:
    fmt = _linear_format_unfused(graph, op, ranges, precision)
    if op.attrs.get("activation") == "gelu":
        fmt = nx_.Fixed(fmt.bits, _gelu_frac(op, fmt.frac, gelu_frac))
    return fmt


def _linear_format_unfused(graph: Graph, op, ranges: dict[str, float], precision: Precision) -> nx_.Fixed:
    fx = graph.op(op.inputs[0]).type.fmt
    w = graph.op(op.inputs[1])
    if "channel_frac" in w.attrs:
        return _linear_format_per_channel(graph, op, ranges, precision, fx, w)
    fw = w.type.fmt
    acc_frac = fx.frac + fw.frac
    acc_fmt = nx_.Fixed(precision.acc_bits, acc_frac)
    bias = graph.op(op.inputs[2])
    bias_max = float(np.max(np.abs(bias.attrs["value"]))) if bias.attrs["value"].size else 0.0
    if bias_max > acc_fmt.max_value:
        raise QuantizationError(
            f"Linear '{op.name}': bias '{bias.name}' reaches {bias_max:.4g}, beyond the accumulator "
            f"format {acc_fmt} (max {acc_fmt.max_value:.4g})",
            hint="use wider accumulators or rescale the layer",
        )
    bias.attrs["codes"] = nx_.quantize(bias.attrs["value"], acc_fmt, precision.rounding)
    graph.replace(bias.evolve(type=bias.type.with_fmt(acc_fmt)))
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
