"""ONNX frontend: zoo transformers round-trip through ONNX (opset 23), float vs onnx.reference, bad files."""

import numpy as np
import pytest

import onnx
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from celosia.errors import CelosiaError, GraphError
from celosia.frontend.onnx import check, load
from celosia.frontend.support import UnsupportedOpsError
from celosia.frontend.transformers import digits_calibration, load_weights, text_windows
from celosia.frontend.zoo import get_model
from celosia.ir.golden import run_float

OPSET = 23


def to_onnx(graph, opset=OPSET):
    """Write an IR graph as ONNX with standard ops (the way an exporter would)."""
    nodes, inits = [], []

    def const(name, value):
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    for op in graph:
        a, n = list(op.inputs), op.name
        k = op.kind
        if k == "Const":
            const(n, op.attrs["value"])
        elif k == "Linear":
            w = graph.op(a[1]).attrs["value"]
            wt = const(f"{n}.wT", w.T.copy())
            nodes.append(helper.make_node("MatMul", [a[0], wt], [f"{n}.mm"], name=f"{n}.matmul"))
            nodes.append(helper.make_node("Add", [f"{n}.mm", a[2]], [n], name=n))
        elif k == "Attention":
            at = op.attrs
            nodes.append(helper.make_node("Attention", a[:3], [n], name=n, is_causal=int(at.get("causal", False)),
                                          q_num_heads=at["heads"], kv_num_heads=at["kv_heads"]))
        elif k == "LayerNorm":
            nodes.append(helper.make_node("LayerNormalization", a, [n], name=n, axis=-1, epsilon=op.attrs["eps"]))
        elif k == "RMSNorm":
            nodes.append(helper.make_node("RMSNormalization", a, [n], name=n, axis=-1, epsilon=op.attrs["eps"]))
        elif k == "ReLU":
            nodes.append(helper.make_node("Relu", a, [n], name=n))
        elif k == "GELU":
            nodes.append(helper.make_node("Gelu", a, [n], name=n))
        elif k == "SiLU":
            nodes.append(helper.make_node("Sigmoid", a, [f"{n}.sig"], name=f"{n}.sigmoid"))
            nodes.append(helper.make_node("Mul", [a[0], f"{n}.sig"], [n], name=n))
        elif k == "Add":
            nodes.append(helper.make_node("Add", a, [n], name=n))
        elif k == "Embedding":
            nodes.append(helper.make_node("Cast", [a[0]], [f"{n}.ids"], name=f"{n}.cast", to=TensorProto.INT64))
            nodes.append(helper.make_node("Gather", [a[1], f"{n}.ids"], [n], name=n, axis=0))
        elif k == "Reshape":
            nodes.append(helper.make_node("Reshape", [a[0], const(f"{n}.shape", np.array(op.attrs["shape"]))], [n], name=n))
        elif k == "Transpose":
            nodes.append(helper.make_node("Transpose", a, [n], name=n, perm=list(op.attrs["perm"])))
        elif k == "Slice":
            at = op.attrs
            ins = [a[0]] + [const(f"{n}.{s}", np.array([at[s]])) for s in ("start", "stop", "axis")]
            nodes.append(helper.make_node("Slice", ins, [n], name=n))
        elif k == "Concat":
            nodes.append(helper.make_node("Concat", a, [n], name=n, axis=op.attrs["axis"]))
        elif k == "Output":
            nodes.append(helper.make_node("Identity", a, [n], name=f"{n}.identity"))
        elif k != "Input":
            raise NotImplementedError(k)
    ins = [helper.make_tensor_value_info(o.name, TensorProto.DOUBLE, o.type.shape) for o in graph.inputs]
    outs = [helper.make_tensor_value_info(o.name, TensorProto.DOUBLE, o.type.shape) for o in graph.outputs]
    model = helper.make_model(helper.make_graph(nodes, graph.name, ins, outs, inits),
                              opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    return model


def _close(got, want):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


@pytest.mark.parametrize("name", ["vit-digits", "gpt-tiny"])
def test_zoo_model_round_trips_and_matches_onnx_reference(name, tmp_path):
    zoo = get_model(name).build(2)
    model = to_onnx(zoo)
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, path)
    if name == "gpt-tiny":
        meta = load_weights(name)[1]
        feed = {"ids": text_windows(meta["vocab"], meta["config"]["ctx"])[0][:2].astype(np.float64)}
    else:
        feed = {"x": digits_calibration()[:2]}
    want = ReferenceEvaluator(model).run(None, feed)[0]
    g = load(path)
    assert {op.kind for op in g} >= {"Attention", "Linear"}
    got = run_float(g, feed)[g.outputs[0].name]
    _close(got, want)  # level 3: float golden vs onnx.reference
    _close(run_float(zoo, feed)["logits"], want)
    if name == "gpt-tiny":
        assert "SiLU" in {op.kind for op in g} and "Embedding" in {op.kind for op in g}
        att = g.ops("Attention")[0].attrs
        assert att["causal"] and (att["heads"], att["kv_heads"]) == (4, 2)


def test_gemm_and_split_attention_layout_against_reference():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(8, 16))
    nodes = [
        helper.make_node("Gemm", ["x", "w", "b"], ["h"], name="fc", transB=1),
        helper.make_node("Reshape", ["h", "shape4"], ["h4"], name="split_heads"),
        helper.make_node("Transpose", ["h4"], ["q"], name="bhte", perm=[0, 2, 1, 3]),
        helper.make_node("Attention", ["q", "q", "q"], ["a"], name="attn", is_causal=1),
        helper.make_node("Transpose", ["a"], ["a2"], name="bthe", perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["a2", "shape2"], ["a3"], name="merge"),
        helper.make_node("Gelu", ["a3"], ["y"], name="act", approximate="tanh"),
    ]
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(rng.normal(size=8), "b"),
             numpy_helper.from_array(np.array([1, 5, 2, 4]), "shape4"), numpy_helper.from_array(np.array([5, 8]), "shape2")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.DOUBLE, (5, 16))],
                          [helper.make_tensor_value_info("y", TensorProto.DOUBLE, (5, 8))], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)])
    x = rng.normal(size=(5, 16))
    graph = load(model)
    assert graph.ops("GELU")[0].attrs["approximate"] == "tanh"
    _close(run_float(graph, {"x": x})["y"], ReferenceEvaluator(model).run(None, {"x": x})[0])


def test_truncated_and_corrupt_files(tmp_path):
    good = to_onnx(get_model("mlp-tiny").build(1), opset=17).SerializeToString()
    trunc = tmp_path / "trunc.onnx"
    trunc.write_bytes(good[: len(good) // 3])
    with pytest.raises(GraphError, match="corrupt or truncated"):
        load(trunc)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00not an onnx file at all" * 10)
    with pytest.raises(GraphError, match="trunc.onnx|junk.onnx"):
        load(junk)
    with pytest.raises(CelosiaError, match="does not exist"):
        load(tmp_path / "missing.onnx")


def test_old_opsets_are_upgraded():
    model = to_onnx(get_model("mlp-micro").build(1), opset=17)
    model.opset_import[0].version = 13
    x = np.random.default_rng(3).normal(size=(1, 16))
    _close(run_float(load(model), {"x": x})["logits"], run_float(get_model("mlp-micro").build(1), {"x": x})["logits"])
    # opset 11 Softmax coerces its input to 2-D at `axis`: the upgrade keeps that meaning
    nodes = [helper.make_node("Softmax", ["x"], ["y"], name="sm", axis=1)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.DOUBLE, (2, 3, 4))],
                          [helper.make_tensor_value_info("y", TensorProto.DOUBLE, (2, 3, 4))])
    old = helper.make_model(g, opset_imports=[helper.make_opsetid("", 11)])
    x = np.random.default_rng(4).normal(size=(2, 3, 4))
    z = np.exp(x.reshape(2, 12))  # (onnx.reference applies the opset-13 meaning to this model)
    _close(run_float(load(old), {"x": x})["y"], (z / z.sum(1, keepdims=True)).reshape(2, 3, 4))


def test_opsets_below_11_are_refused_with_conversion_hint():
    model = to_onnx(get_model("mlp-micro").build(1), opset=17)
    model.opset_import[0].version = 9
    with pytest.raises(GraphError, match="opset 9") as info:
        load(model)
    assert "convert_version" in info.value.hint


def test_float_only_ops_import_but_quantize_refuses_them_and_check_lists_them(tmp_path):
    import celosia
    from celosia.errors import QuantizationError
    from celosia.ir.pipeline import lower
    from celosia.ir.quantize import Precision

    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="fc"), helper.make_node("Exp", ["h"], ["y"], name="exp")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.DOUBLE, (2, 4))],
                          [helper.make_tensor_value_info("y", TensorProto.DOUBLE, (2, 3))],
                          [numpy_helper.from_array(np.linspace(-1, 1, 12).reshape(4, 3), "w")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    graph = load(model)
    x = np.random.default_rng(5).normal(size=(2, 4))
    _close(run_float(graph, {"x": x})["y"], ReferenceEvaluator(model).run(None, {"x": x})[0])
    with pytest.raises(QuantizationError, match="Exp 'exp'"):
        lower(graph, [{"x": x}], Precision())
    path = tmp_path / "exp.onnx"
    onnx.save(model, path)
    report = celosia.check(str(path))
    assert [(u.node, u.op, u.stage) for u in report.items] == [("exp", "Exp", "hardware")]


def test_shape_operands_given_as_inputs_need_constant_inputs():
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["y"], name="flat")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, (2, 3, 4)),
                                       helper.make_tensor_value_info("shape", TensorProto.INT64, (2,))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, (6, 4))])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(UnsupportedOpsError, match="operand 1 \\('shape'\\) fixes a shape") as info:
        load(model)
    assert "constant_inputs" in info.value.hint
    from celosia.frontend.onnx import shape_inputs

    assert shape_inputs(model) == ["shape"]
    graph = load(model, constant_inputs={"shape": np.array([6, -1])})
    assert [op.name for op in graph.inputs] == ["x"] and graph.outputs[0].type.shape == (6, 4)
    with pytest.raises(GraphError, match="not inputs"):
        load(model, constant_inputs={"shapes": np.array([6, 4])})


def test_integer_arithmetic_is_refused_naming_the_node():
    nodes = [helper.make_node("Add", ["a", "b"], ["y"], name="int_add")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, TensorProto.INT8, (3,)) for n in "ab"],
                          [helper.make_tensor_value_info("y", TensorProto.INT8, (3,))])
    items = check(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    assert [(i.node, i.op) for i in items] == [("int_add", "Add")] and "integer" in items[0].reason


def test_dynamic_input_needs_bounds():
    model = to_onnx(get_model("mlp-micro").build(1), opset=17)
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    with pytest.raises(GraphError, match="'x' has dynamic shape"):
        load(model)
    g = load(model, input_shapes={"x": (4, 16)})
    assert g.op("x").type.shape == (4, 16)


def test_unsupported_ops_are_all_listed():
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("Conv", ["r", "w"], ["c"], name="conv1"),
        helper.make_node("CumSum", ["c", "axis"], ["v"], name="scan"),
    ]
    inits = [numpy_helper.from_array(np.ones((2, 1, 3, 3)), "w"), numpy_helper.from_array(np.array(3), "axis")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.DOUBLE, (1, 1, 8, 8))],
                          [helper.make_tensor_value_info("v", TensorProto.DOUBLE, (1, 2, 6, 6))], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    items = check(model)
    assert [(i.node, i.op) for i in items] == [("conv1", "Conv"), ("scan", "CumSum")]
    assert "stride equal to its kernel" in items[0].hint and "supported ops" in items[1].hint
    with pytest.raises(UnsupportedOpsError, match="2 unsupported node"):
        load(model)


def _export(model, args, opset=17):
    torch = pytest.importorskip("torch")
    import io
    import warnings

    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, args, f, dynamo=False, opset_version=opset, input_names=["x"],
                          output_names=["logits"])
    return f.getvalue()


@pytest.mark.parametrize("name", ["vit-digits", "moe-vit-digits"])
def test_pytorch_exported_vits_import_and_match(name):
    """The TorchScript exporter's own output: Conv patch embedding, Shape/Expand class token, erf GELU,
    decomposed attention (MatMul, Mul, Softmax: fused back into Attention), MatMul + Add, LayerNormalization,
    and the dense MoE routing (Softmax, TopK, ScatterElements, Concat, ReduceSum: fused into one MoE op)."""
    torch = pytest.importorskip("torch")
    from celosia.frontend.training.models import ViTDigits, load_numpy_state

    arrays, meta = load_weights(name)
    model = load_numpy_state(ViTDigits(**meta["config"]), arrays)
    data = _export(model, (torch.rand(2, 64),))
    assert check(data) == []
    g = load(data, name=f"{name}-exported")
    compute = lambda gr: sorted(op.kind for op in gr if op.kind in  # noqa: E731
                                ("Linear", "Attention", "LayerNorm", "GELU", "Add", "MatMul", "Mul", "Softmax", "MoE"))
    assert compute(g) == compute(get_model(name).build(2))
    x = digits_calibration()[:2]
    want = model.double()(torch.from_numpy(x)).detach().numpy()
    _close(run_float(g, {"x": x})["logits"], want)
    proto = onnx.load_from_string(data)
    _close(run_float(g, {"x": x})["logits"], ReferenceEvaluator(proto).run(None, {"x": x.astype(np.float32)})[0])


def test_empty_split_parts_are_dropped_by_concat_and_refused_elsewhere():
    """The ONNX RotaryEmbedding function splits off a zero-length 'not rotated' part and concatenates it back."""
    sizes = numpy_helper.from_array(np.array([4, 0]), "sizes")
    nodes = [helper.make_node("Split", ["x", "sizes"], ["a", "b"], name="split", axis=1),
             helper.make_node("Neg", ["a"], ["n"], name="neg"),
             helper.make_node("Concat", ["n", "b"], ["y"], name="cat", axis=1)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.DOUBLE, (2, 4))],
                          [helper.make_tensor_value_info("y", TensorProto.DOUBLE, (2, 4))], [sizes])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    x = np.arange(8.0).reshape(2, 4)
    np.testing.assert_array_equal(run_float(load(model), {"x": x})["y"], -x)
    model.graph.node[1].input[0] = "b"
    with pytest.raises(UnsupportedOpsError, match="reads the empty tensor 'b'"):
        load(model)
