"""The frontend math ops (celosia.ir.mathops): Cast rounding, the integer forms of Expand/ReduceSum/
ReduceMax, and the float-only ops refused by quantize."""

import numpy as np
import pytest

from celosia.errors import QuantizationError, SimulationError
from celosia.frontend.builder import GraphBuilder
from celosia.ir import mathops
from celosia.ir.golden import run_float, run_int
from celosia.ir.numerics import dequantize
from celosia.ir.pipeline import lower
from celosia.ir.quantize import Precision

ml_dtypes = pytest.importorskip("ml_dtypes")


@pytest.mark.parametrize("to", ["float16", "bfloat16", "float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2",
                                "float8_e5m2fnuz", "float4_e2m1fn"])
def test_cast_rounds_like_ml_dtypes_inside_the_range(to):
    """Round-to-nearest-even in one step, subnormals included (ml_dtypes from float32 as the reference)."""
    top = float(ml_dtypes.finfo(getattr(ml_dtypes, to, np.float16)).max) if to != "float16" else 65504.0
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, top / 8, 4000), rng.normal(0, 1e-3, 2000), np.linspace(-top, top, 999)])
    x = x.astype(np.float32).astype(np.float64)
    dtype = np.float16 if to == "float16" else getattr(ml_dtypes, to)
    want = x.astype(np.float32).astype(dtype).astype(np.float64)
    np.testing.assert_array_equal(mathops.cast_float(x, to), want)


def test_cast_out_of_range_follows_the_onnx_tables():
    x = np.array([1e6, -1e6, np.inf, -np.inf, np.nan])
    np.testing.assert_array_equal(mathops.cast_float(x, "float8_e4m3fn"), [448, -448, 448, -448, np.nan])
    np.testing.assert_array_equal(mathops.cast_float(x, "float8_e4m3fn", saturate=False),
                                  [np.nan, np.nan, np.nan, np.nan, np.nan])
    np.testing.assert_array_equal(mathops.cast_float(x, "float8_e5m2", saturate=False),
                                  [np.inf, -np.inf, np.inf, -np.inf, np.nan])
    np.testing.assert_array_equal(mathops.cast_float(x, "float16"), [np.inf, -np.inf, np.inf, -np.inf, np.nan])
    np.testing.assert_array_equal(mathops.cast_float(np.array([-0.0]), "float8_e4m3fnuz"), [0.0])
    assert np.signbit(mathops.cast_float(np.array([-0.0]), "float8_e4m3fnuz"))[0] == np.False_


def test_cast_to_integers_truncates_and_wraps_and_bool_tests_nonzero():
    x = np.array([-2.7, -0.5, 0.0, 1.9, 130.0, 255.5])
    np.testing.assert_array_equal(mathops.cast_float(x, "int8"), [-2, 0, 0, 1, -126, -1])
    np.testing.assert_array_equal(mathops.cast_float(x, "uint8"), [254, 0, 0, 1, 130, 255])
    np.testing.assert_array_equal(mathops.cast_float(np.array([0.0, -0.0, 2.0, np.nan]), "bool"), [0, 0, 1, 1])


def test_cast_to_e8m0_rounding_modes():
    x = np.array([0.0, 0.124, 0.25, 1.1, 3.0, 2.0**130])
    np.testing.assert_array_equal(mathops.cast_float(x, "float8_e8m0fnu"), [2.0**-127, 0.125, 0.25, 2, 4, 2.0**127])
    np.testing.assert_array_equal(mathops.cast_float(x[1:5], "float8_e8m0fnu", round_mode="down"), [0.0625, 0.25, 1, 2])
    np.testing.assert_array_equal(mathops.cast_float(x[1:5], "float8_e8m0fnu", round_mode="nearest"),
                                  [0.125, 0.25, 1, 4])
    assert np.isnan(mathops.cast_float(np.array([0.0]), "float8_e8m0fnu", saturate=False, round_mode="nearest"))[0]


def _quantized(build, shape=(4, 6), seed=0):
    b = GraphBuilder("g")
    x = b.input("x", shape)
    b.output(build(b, x), "y")
    graph = b.build()
    rng = np.random.default_rng(seed)
    samples = [{"x": rng.normal(size=shape)} for _ in range(4)]
    return graph, lower(graph, samples, Precision.parse("w8a16")), samples


@pytest.mark.parametrize("kind", ["ReduceSum", "ReduceMax"])
def test_reductions_are_bit_exact_within_half_an_lsb(kind):
    graph, q, samples = _quantized(lambda b, x: b.op(kind, x, axis=1, keepdims=False))
    fmt = q.outputs[0].type.fmt
    for s in samples:
        codes = run_int(q, s)["y"]
        xq = dequantize(run_int(q, s, keep_all=True)["x"], q.op("x").type.fmt)
        want = mathops.reduce_float(kind, xq, 1, False)
        assert np.max(np.abs(dequantize(codes, fmt) - want)) <= fmt.lsb / 2 + 1e-12
        if kind == "ReduceMax":  # exact: the largest code, in the operand's format
            assert fmt == q.op("x").type.fmt and np.array_equal(dequantize(codes, fmt), want)


def test_expand_keeps_the_codes():
    graph, q, samples = _quantized(lambda b, x: b.op("Expand", b.slice(x, 1, 0, 1), shape=(4, 6)))
    s = samples[0]
    codes = run_int(q, s, keep_all=True)
    np.testing.assert_array_equal(codes["y"], np.broadcast_to(codes["x"][:, :1], (4, 6)))
    np.testing.assert_allclose(run_float(graph, s)["y"], np.broadcast_to(s["x"][:, :1], (4, 6)))


@pytest.mark.parametrize("kind", ["Exp", "Sub", "Gather", "TopK", "Cast", "Where"])
def test_float_only_ops_are_refused_by_quantize_naming_the_op(kind):
    def build(b, x):
        if kind == "Sub":
            return b.op("Sub", x, b.relu(x))
        if kind == "Where":
            return b.op("Where", b.relu(x), x, b.relu(x))
        if kind == "Gather":
            return b.op("Gather", x, b.const(np.array([2.0, 0.0])), axis=1)
        if kind == "TopK":
            return b.op("TopK", x, k=2, axis=1)
        if kind == "Cast":
            return b.op("Cast", x, to="float16")
        return b.op(kind, x, name="the_op")

    with pytest.raises(QuantizationError, match=f"{kind} '[^']+' has no quantization rule"):
        _quantized(build)


def test_gather_refuses_out_of_range_indices_at_run_time():
    b = GraphBuilder("g")
    x, i = b.input("x", (2, 3)), b.input("i", (2,))
    b.output(b.op("Gather", x, i, axis=1), "y")
    g = b.build()
    np.testing.assert_array_equal(run_float(g, {"x": np.arange(6.0).reshape(2, 3), "i": np.array([-1, 0])})["y"],
                                  [[2, 0], [5, 3]])
    with pytest.raises(SimulationError, match="index 3 is out of range"):
        run_float(g, {"x": np.zeros((2, 3)), "i": np.array([3, 0])})


def test_topk_breaks_ties_by_the_lower_index():
    x = np.array([[1.0, 3.0, 3.0, 2.0, 3.0]])
    np.testing.assert_array_equal(mathops.topk_float(x, 3, 1, True, "indices"), [[1, 2, 4]])
    np.testing.assert_array_equal(mathops.topk_float(x, 2, 1, False, "values"), [[1, 2]])
