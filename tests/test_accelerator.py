"""Whole accelerator on Verilator (ctypes harness) vs the bit-exact golden model."""

import numpy as np
import pytest

from celosia.frontend.builder import GraphBuilder
from celosia.ir.numerics import Rounding, quantize
from celosia.ir.pipeline import lower
from celosia.ir.quantize import Precision
from celosia.ir.schedule import schedule
from celosia.sim.accel_sim import AcceleratorSim
from celosia.ir.golden import run_int
from celosia.sim.perf import predict_cycles

pytestmark = pytest.mark.slow


def residual_model(batch, dims, seed):
    """Linear layers of odd sizes with a fused residual + ReLU and a plain last layer."""
    rng = np.random.default_rng(seed)
    b = GraphBuilder("resnet-ish")
    x = b.input("x", (batch, dims[0]))
    h = b.linear(x, rng.normal(0, 0.4, (dims[1], dims[0])), rng.normal(0, 0.2, dims[1]), name="fc1")
    h = b.relu(h, name="r1")
    r = b.linear(h, rng.normal(0, 0.4, (dims[1], dims[1])), rng.normal(0, 0.2, dims[1]), name="fc2")
    h = b.relu(b.add(r, h, name="skip"), name="r2")
    b.output(b.linear(h, rng.normal(0, 0.4, (dims[2], dims[1])), name="head"), "y")
    return b.build()


@pytest.mark.parametrize(
    "lanes, batch, dims, quant, rounding",
    [
        (4, 3, (13, 22, 7), "w8a16", Rounding.HALF_EVEN),
        (2, 1, (5, 9, 3), "w16a16", Rounding.HALF_UP),
        (4, 5, (16, 32, 8), "w6a10", Rounding.FLOOR),
    ],
)
def test_rtl_matches_golden(tmp_path, lanes, batch, dims, quant, rounding):
    graph = residual_model(batch, dims, seed=lanes + batch)
    rng = np.random.default_rng(0)
    calib = [{"x": rng.uniform(-1, 1, (batch, dims[0]))} for _ in range(4)]
    p = Precision.parse(quant)
    precision = Precision(p.weight_bits, p.act_bits, rounding=rounding)
    q = lower(graph, calib, precision)
    assert len(q.ops("Linear")) == 3 and not q.ops("Add") and not q.ops("ReLU")  # fused
    prog = schedule(q, lanes)
    sim = AcceleratorSim(prog, tmp_path)
    try:
        # calibration range x 3 so some inputs saturate the input format and the accumulators run hot
        for scale in (1.0, 3.0, 50.0):
            sample = {"x": rng.uniform(-scale, scale, (batch, dims[0]))}
            want = run_int(q, sample)["y"]
            got, cycles = sim.infer({"x": quantize(sample["x"], q.op("x").type.fmt)})
            np.testing.assert_array_equal(got["y"], want)
            assert cycles == predict_cycles(prog)  # the performance model is exact
    finally:
        sim.close()


def test_host_port_roundtrip_and_idle_counter(tmp_path):
    graph = residual_model(1, (4, 4, 4), seed=1)
    q = lower(graph, [{"x": np.ones((1, 4))}], Precision())
    sim = AcceleratorSim(schedule(q, 2), tmp_path)
    try:
        words = [0x1234_5678, 0xFFFF_0001, 0, 0x8000_7FFF]
        sim.write_words(0, words)
        assert sim.read_words(0, 4) == words
        assert sim.dut.get("host__busy") == 0
        first = sim.run()
        assert sim.run() == first  # the counter restarts on every run
    finally:
        sim.close()


def gelu_mlp(batch, dims, seed):
    """A transformer-style MLP: Linear → GELU → Linear → GELU → Linear (GELUs fused into the array)."""
    rng = np.random.default_rng(seed)
    b = GraphBuilder("gelu-mlp")
    h = b.input("x", (batch, dims[0]))
    for i, (k, n) in enumerate(zip(dims[:-2], dims[1:-1])):
        h = b.gelu(b.linear(h, rng.normal(0, 0.6, (n, k)), rng.normal(0, 0.3, n), name=f"fc{i}"), name=f"g{i}")
    b.output(b.linear(h, rng.normal(0, 0.4, (dims[-1], dims[-2])), name="head"), "y")
    return b.build()


@pytest.mark.parametrize("lanes, batch, dims, quant", [(4, 3, (13, 22, 9, 5), "w8a16"), (2, 2, (6, 7, 5, 3), "w8a12")])
def test_gelu_epilogue_on_the_accelerator_matches_golden(tmp_path, lanes, batch, dims, quant):
    graph = gelu_mlp(batch, dims, seed=lanes)
    rng = np.random.default_rng(2)
    q = lower(graph, [{"x": rng.uniform(-1, 1, (batch, dims[0]))} for _ in range(4)], Precision.parse(quant))
    assert not q.ops("GELU") and [op.attrs.get("activation") for op in q.ops("Linear")] == ["gelu", "gelu", None]
    prog = schedule(q, lanes)
    assert prog.gelu_frac == q.op("fc0").type.fmt.frac == q.op("fc1").type.fmt.frac
    assert [ins.gelu for ins in prog.instructions[:-1]] == [1, 1, 0]
    sim = AcceleratorSim(prog, tmp_path)
    try:
        for scale in (1.0, 4.0, 40.0):  # 40x the calibration range: the pre-activations saturate
            sample = {"x": rng.uniform(-scale, scale, (batch, dims[0]))}
            codes = run_int(q, sample, keep_all=True)
            got, cycles = sim.infer({"x": quantize(sample["x"], q.op("x").type.fmt)})
            np.testing.assert_array_equal(got["y"], codes["y"])
            assert cycles == predict_cycles(prog)
        assert np.any(codes["fc0"] < 0)  # the GELU's negative lobe was exercised
    finally:
        sim.close()


def test_independent_linears_overlap_and_stay_exact(tmp_path):
    """Three short LINEARs reading the same input (``indep``: each issues while the one before
    drains, the third waiting in decode for the write-back queue), then one reading all three:
    bit-exact, and the cycle counter equals the model."""
    rng = np.random.default_rng(5)
    b = GraphBuilder("fan-out")
    x = b.input("x", (1, 8))
    heads = [b.linear(x, rng.normal(0, 0.4, (4, 8)), rng.normal(0, 0.2, 4), name=f"p{i}") for i in range(3)]
    b.output(b.linear(b.concat(heads, axis=-1, name="cat"), rng.normal(0, 0.4, (5, 12)), name="head"), "y")
    q = lower(b.build(), [{"x": rng.uniform(-1, 1, (1, 8))} for _ in range(4)], Precision.parse("w8a16"))
    prog = schedule(q, 4)
    assert [i.indep for i in prog.instructions if i.opcode == 1][:3] == [0, 1, 1]
    sim = AcceleratorSim(prog, tmp_path)
    try:
        for _ in range(3):
            sample = {"x": rng.uniform(-1, 1, (1, 8))}
            got, cycles = sim.infer({"x": quantize(sample["x"], q.op("x").type.fmt)})
            np.testing.assert_array_equal(got["y"], run_int(q, sample)["y"])
            assert cycles == predict_cycles(prog)
    finally:
        sim.close()
