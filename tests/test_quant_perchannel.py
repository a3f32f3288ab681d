"""Quantization: presets, per-output-channel weight formats (bit-exact spec + bound), overrides."""

import numpy as np
import pytest

import celosia
from celosia.errors import QuantizationError, ScheduleError, UnknownNameError
from celosia.frontend.builder import GraphBuilder
from celosia.frontend.zoo import get_model
from celosia.ir import numerics as nx_
from celosia.ir.numerics import Fixed, dequantize
from celosia.ir.pipeline import lower
from celosia.ir.quantize import Precision
from celosia.ir.golden import run_float, run_int


def _graph(rng, scales):
    """One Linear whose output rows have very different magnitudes (per-channel helps)."""
    w = rng.normal(size=(len(scales), 12)) * np.asarray(scales)[:, None]
    b = GraphBuilder("pc")
    x = b.input("x", (6, 12))
    b.output(b.linear(x, w, rng.normal(size=len(scales)) * 0.1, name="fc"), "y")
    return b.build(), w


def test_preset_parsing():
    p = Precision.parse("w8a16-pc")
    assert (p.weight_bits, p.act_bits, p.per_channel, p.name) == (8, 16, True, "w8a16-pc")
    assert Precision.parse("W16A16").per_channel is False
    with pytest.raises(UnknownNameError, match="w8a16-pc"):
        Precision.parse("int8")


def test_per_channel_codes_and_bit_exact_spec():
    rng = np.random.default_rng(0)
    graph, w = _graph(rng, [4.0, 1.0, 0.05, 0.01])
    x = rng.uniform(-1, 1, (6, 12))
    q = lower(graph, [{"x": x}], Precision.parse("w8a16-pc"))
    wop = q.op("fc.weight")
    fracs = wop.attrs["channel_frac"]
    assert len(set(fracs)) == 4 and fracs[3] > fracs[0]  # small rows get finer formats
    assert np.abs(wop.attrs["codes"]).max(axis=1).min() >= 64  # every row uses its 8 bits
    # independent reference of the integer spec, column by column
    fx, fy = q.op("x").type.fmt, q.op("fc").type.fmt
    xq = nx_.quantize(x, fx)
    bias = q.op("fc.bias").attrs["codes"]
    want = np.empty((6, 4), dtype=np.int64)
    for n in range(4):
        acc = xq @ wop.attrs["codes"][n] + bias[n]
        want[:, n] = nx_.saturate(nx_.shift_round(acc, fx.frac + fracs[n] - fy.frac), fy)
    got = run_int(q, {"x": x}, keep_all=True)["fc"]
    np.testing.assert_array_equal(got, want)
    # stated bound: linear_error_bound with each column's weight LSB
    ref = run_float(graph, {"x": x})["y"]
    err = np.abs(dequantize(got, fy) - ref)
    xv = dequantize(xq, fx)
    for n in range(4):
        bound = nx_.linear_error_bound(xv, w[n:n + 1].T, fx, Fixed(8, fracs[n]), fy, nx_.Rounding.HALF_EVEN)
        # x was quantized: the bound is against float on the quantized x plus the input rounding term
        extra = np.abs(w[n]).sum() * fx.lsb / 2
        assert np.all(err[:, n] <= bound[:, 0] + extra)


def test_per_channel_beats_per_tensor_at_4_bits():
    rng = np.random.default_rng(1)
    graph, _ = _graph(rng, [4.0, 1.0, 0.05, 0.01])
    x = rng.uniform(-1, 1, (6, 12))
    ref = run_float(graph, {"x": x})["y"]
    errs = {}
    for preset in ("w4a16", "w4a16-pc"):
        q = lower(graph, [{"x": x}], Precision.parse(preset))
        errs[preset] = np.abs(dequantize(run_int(q, {"x": x})["y"], q.op("y").type.fmt) - ref)[:, 2:].max()
    assert errs["w4a16-pc"] < errs["w4a16"] / 4


def test_per_channel_on_a_transformer_tracks_float():
    zoo = get_model("vit-digits")
    graph = zoo.build(4)
    sample = zoo.samples(1, 4, seed=2)[0]
    q = lower(graph, zoo.samples(2, 4), Precision.parse("w8a16-pc"))
    assert all("channel_frac" in q.op(op.inputs[1]).attrs for op in q.ops("Linear"))
    ref = run_float(graph, sample)["logits"]
    got = dequantize(run_int(q, sample)["logits"], q.op("logits").type.fmt)
    assert np.abs(got - ref).max() < 0.1 * np.abs(ref).max()


def test_overrides_set_formats_including_attention_scores():
    zoo = get_model("vit-digits")
    graph = zoo.build(2)
    over = {"blocks.0.mlp.act": Fixed(16, 9), "blocks.0.attn.sdpa:scores": Fixed(16, 10)}
    q = lower(graph, zoo.samples(2, 2), Precision(weight_bits=8, act_bits=16, overrides=over))
    assert q.op("blocks.0.mlp.fc1").attrs["activation_op"] == "blocks.0.mlp.act"  # GELU fused into fc1
    assert q.op("blocks.0.mlp.fc1").type.fmt == Fixed(16, 9)
    assert q.op("blocks.0.attn.sdpa").attrs["score_fmt"] == Fixed(16, 10)
    with pytest.raises(QuantizationError, match="blocks.0.mlp.typo"):
        lower(graph, zoo.samples(2, 2), Precision(overrides={"blocks.0.mlp.typo": Fixed(16, 9)}))


def test_prepare_refuses_per_channel_for_hardware():
    with pytest.raises(ScheduleError, match="per-channel"):
        celosia.prepare("mlp-tiny", quant="w8a16-pc")
