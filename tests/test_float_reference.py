"""Level 3: the float executor agrees with onnx.reference.ReferenceEvaluator (≤ 1e-5 relative)."""

import numpy as np
import pytest

import onnx
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from celosia.frontend.builder import GraphBuilder
from celosia.frontend.zoo import get_model
from celosia.sim.golden import run_float


def to_onnx(graph):
    """Translate a builder graph (Linear/ReLU/Add) into an ONNX model op by op."""
    nodes, inits = [], []
    for op in graph:
        if op.kind == "Const":
            inits.append(numpy_helper.from_array(op.attrs["value"].astype(np.float64), op.name))
        elif op.kind == "Linear":
            nodes.append(helper.make_node("Gemm", list(op.inputs), [op.name], transB=1))
        elif op.kind == "ReLU":
            nodes.append(helper.make_node("Relu", list(op.inputs), [op.name]))
        elif op.kind == "Add":
            nodes.append(helper.make_node("Add", list(op.inputs), [op.name]))
        elif op.kind == "Output":
            nodes.append(helper.make_node("Identity", list(op.inputs), [op.name]))
    inputs = [helper.make_tensor_value_info(op.name, TensorProto.DOUBLE, op.type.shape) for op in graph.inputs]
    outputs = [helper.make_tensor_value_info(op.name, TensorProto.DOUBLE, op.type.shape) for op in graph.outputs]
    g = helper.make_graph(nodes, graph.name, inputs, outputs, inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def residual_graph():
    rng = np.random.default_rng(3)
    b = GraphBuilder("res")
    x = b.input("x", (4, 12))
    h = b.relu(b.linear(x, rng.normal(size=(12, 12)), rng.normal(size=12)))
    h = b.add(h, x)
    b.output(b.linear(h, rng.normal(size=(3, 12))), "y")
    return b.build()


@pytest.mark.parametrize("graph", [residual_graph(), get_model("mlp-tiny").build(2)], ids=["residual", "mlp-tiny"])
def test_float_matches_onnx_reference(graph):
    model = to_onnx(graph)
    onnx.checker.check_model(model)
    ref = ReferenceEvaluator(model)
    rng = np.random.default_rng(0)
    for _ in range(5):
        feeds = {op.name: rng.uniform(-1, 1, op.type.shape) for op in graph.inputs}
        want = ref.run(None, feeds)
        got = run_float(graph, feeds)
        for out, w in zip(graph.outputs, want):
            np.testing.assert_allclose(got[out.name], w, rtol=1e-5, atol=1e-12)
