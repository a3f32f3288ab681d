"""The Mean op (added through the registry alone): shapes, float vs numpy, integer vs its bound."""

import numpy as np
import pytest

from celosia.errors import GraphError
from celosia.frontend.builder import GraphBuilder
from celosia.ir import numerics as nx_
from celosia.ir.golden import run_float, run_int
from celosia.ir.pipeline import lower
from celosia.ir.quantize import Precision
from celosia.ir.reduce import mean_constant, mean_error_bound, mean_int
from celosia.ir.registry import op_def


def _mean_graph(shape, axis, keepdims):
    b = GraphBuilder("mean")
    x = b.input("x", shape)
    b.output(b.op("Mean", x, axis=axis, keepdims=keepdims), "y")
    return b.build()


@pytest.mark.parametrize("shape, axis, keepdims", [((1, 17, 32), 1, False), ((2, 5, 8), -2, True), ((3, 16), 0, False)])
def test_float_matches_numpy_and_int_within_bound(shape, axis, keepdims):
    g = _mean_graph(shape, axis, keepdims)
    rng = np.random.default_rng(0)
    samples = [{"x": rng.uniform(-2, 2, shape)} for _ in range(6)]
    for s in samples:
        np.testing.assert_allclose(run_float(g, s)["y"], np.mean(s["x"], axis=axis, keepdims=keepdims), rtol=1e-12)
    q = lower(g, samples, Precision.parse("w8a16"))
    fin, fout = q.op("x").type.fmt, q.op("y").type.fmt
    for s in samples:
        codes = nx_.quantize(s["x"], fin)
        got = nx_.dequantize(run_int(q, s)["y"], fout)
        want = np.mean(nx_.dequantize(codes, fin), axis=axis, keepdims=keepdims)
        assert np.max(np.abs(got - want)) <= mean_error_bound(codes, fin, fout, axis % len(shape))


@pytest.mark.parametrize("n", [1, 2, 3, 7, 16, 17, 197, 4096])
def test_constant_fits_one_dsp_operand(n):
    c, r = mean_constant(n)
    assert 0 < c < 1 << 17 and abs(c / 2**r - 1 / n) <= 2 ** -(r + 1)


def test_power_of_two_is_exact_rounding():
    fmt = nx_.Fixed(16, 8)
    codes = np.arange(-64, 64).reshape(8, 16)
    got = mean_int(codes, fmt, fmt, axis=1, keepdims=False)
    want = nx_.quantize(nx_.dequantize(codes, fmt).mean(axis=1), fmt)
    np.testing.assert_array_equal(got, want)


def test_vector_mean_needs_keepdims():
    with pytest.raises(GraphError, match="keepdims"):
        _mean_graph((8,), 0, False)


def test_declared_once_and_bound_to_the_vector_unit():
    d = op_def("Mean")
    assert d.int_fn is not None and d.quant is not None and d.hw.unit == "vector"
