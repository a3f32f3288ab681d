"""The accelerator with its scratchpad units on Verilator (one build): the host's input-layout
transform (image -> patches), a class-token Concat written in place, a positional Add from the
preloaded constant pool, LayerNorm and RMSNorm on the row unit, a residual Add, a class-token Slice
(a view), mean pooling over tokens and a feature Concat; RTL == golden bit for bit and the cycle
counter == the performance model."""

import numpy as np
import pytest

from celosia.frontend.builder import GraphBuilder
from celosia.ir import numerics as nx
from celosia.ir.golden import run_int
from celosia.ir.pipeline import lower
from celosia.ir.program import Opcode
from celosia.ir.quantize import Precision
from celosia.ir.schedule import schedule
from celosia.sim.accel_sim import AcceleratorSim
from celosia.sim.perf import predict_cycles


def _encoder_tail(rng, dim=16):
    b = GraphBuilder("unit-ops")
    x = b.input("x", (1, 64))
    p = b.reshape(x, (1, 4, 2, 4, 2))
    p = b.reshape(b.transpose(p, (0, 1, 3, 2, 4)), (1, 16, 4))
    e = b.linear(p, rng.normal(0, 0.5, (dim, 4)), rng.normal(0, 0.1, dim))
    t = b.concat([b.const(rng.normal(0, 1, (1, 1, dim)), "cls"), e], 1)
    t = b.add(t, b.const(rng.normal(0, 1, (1, 17, dim)), "pos"))
    n = b.layernorm(t, rng.normal(1, 0.2, dim), rng.normal(0, 0.2, dim))
    h = b.add(b.linear(n, rng.normal(0, 0.3, (dim, dim)), rng.normal(0, 0.1, dim)), t)
    h = b.rmsnorm(h, rng.normal(1, 0.2, dim))
    cls = b.reshape(b.slice(h, 1, 0, 1), (1, dim))
    pooled = b.op("Mean", h, axis=1)
    b.output(b.linear(b.concat([cls, pooled], 1), rng.normal(0, 0.3, (10, 2 * dim))), "y")
    return b.build()


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    rng = np.random.default_rng(0)
    graph = _encoder_tail(rng)
    samples = [{"x": rng.uniform(-1, 1, (1, 64))} for _ in range(6)]
    qgraph = lower(graph, samples, Precision.parse("w8a16"))
    program = schedule(qgraph, 8)
    sim = AcceleratorSim(program, tmp_path_factory.mktemp("units"))
    yield qgraph, program, sim, samples
    sim.close()


def test_program_uses_the_vector_unit_and_views(compiled):
    _, program, _, _ = compiled
    ops = [ins.opcode for ins in program.instructions]
    assert {Opcode.ADD, Opcode.COPY, Opcode.MEAN, Opcode.NORM} <= set(ops)
    # the patch layout is the host's, the embedding is written into the token buffer in place,
    # the class-token slice and its reshape are views: only the class token itself is copied in
    assert "x" in program.input_layouts and ops.count(Opcode.LINEAR) == 3
    assert program.scratch_init  # cls and pos, preloaded


def test_rtl_matches_golden_and_the_cycle_model(compiled):
    qgraph, program, sim, samples = compiled
    for s in samples:
        out, cycles = sim.infer({"x": nx.quantize(s["x"], qgraph.op("x").type.fmt)})
        np.testing.assert_array_equal(out["y"], run_int(qgraph, s)["y"])
        assert cycles == predict_cycles(program)
