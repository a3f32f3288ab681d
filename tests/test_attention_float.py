"""Attention, level 3: the float executor against the onnx wheel's Attention node test cases,
and the canonicalization of decomposed attention (MatMul → scale → mask → Softmax → MatMul).

Every case of ``onnx/backend/test/case/node/attention.py`` is collected through its own
``expect`` calls. Cases the IR represents (MHA, GQA, 3-D packed and 4-D split layouts, a value
head size different from the key's, scale, causal, boolean key-padding masks) must import and match both the case's stored outputs (at the
tolerance of its dtype) and ``onnx.reference.ReferenceEvaluator`` run in float64 (1e-12); every
other case (per-query or additive masks, softcap, local windows, KV cache, extra outputs) must
be refused with a CelosiaError naming the node.
"""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

from celosia.errors import CelosiaError  # noqa: E402
from celosia.frontend import onnx as onnx_frontend  # noqa: E402
from celosia.frontend.builder import GraphBuilder  # noqa: E402
from celosia.ir.passes import fuse_attention  # noqa: E402
from celosia.ir.golden import run_float  # noqa: E402

OPSET = 23


def _node_cases() -> list[tuple[str, object, list, list, int]]:
    import onnx.backend.test.case.node.attention as cases_module

    found = []
    original = cases_module.expect
    def collect(node, inputs, outputs, name, opset_imports=(), **_):
        opset = max((o.version for o in opset_imports if o.domain in ("", "ai.onnx")), default=OPSET)
        found.append((name, node, inputs, outputs, opset))

    cases_module.expect = collect
    try:
        for attr, fn in vars(cases_module.Attention).items():
            if attr.startswith("export"):
                fn()
    finally:
        cases_module.expect = original
    return found


CASES = _node_cases()


def _is_representable(node, inputs) -> bool:
    """What the IR's Attention op covers (see celosia.ir.attention)."""
    at = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    present = [i for i in node.input if i]
    windowed = at.get("left_window_size", -1) != -1 or at.get("right_window_size", -1) != -1
    return (len(present) == 3 and len([o for o in node.output if o]) == 1 and not at.get("softcap")
            and not at.get("qk_matmul_output_mode") and not windowed)


def _float64_model(node, inputs, outputs, opset=OPSET):
    """The case's node with every float input and output declared float64."""
    names = [i for i in node.input if i]
    feeds, vis = {}, []
    for name, arr in zip(names, inputs):
        arr = np.asarray(arr)
        if arr.dtype == bool:
            feeds[name], elem = arr, TensorProto.BOOL
        elif arr.dtype.kind in "iu":
            feeds[name], elem = arr.astype(np.int64), TensorProto.INT64
        else:
            feeds[name], elem = arr.astype(np.float64), TensorProto.DOUBLE
        vis.append(helper.make_tensor_value_info(name, elem, arr.shape))
    outs = [helper.make_tensor_value_info(o, TensorProto.DOUBLE, np.shape(arr))
            for o, arr in zip([o for o in node.output if o], outputs)]
    node = helper.make_node(node.op_type, list(node.input), list(node.output), name="attn",
                            **{a.name: helper.get_attribute_value(a) for a in node.attribute})
    model = helper.make_model(helper.make_graph([node], "case", vis, outs),
                              opset_imports=[helper.make_opsetid("", opset)])
    return model, feeds


def _tolerance(dtype) -> float:
    return {"float32": 1e-5, "float16": 2e-3}.get(str(np.dtype(dtype)), 2e-2)  # bfloat16: 8 mantissa bits


def test_the_node_cases_cover_the_issue_families():
    names = {name for name, *_ in CASES}
    representable = {name for name, node, ins, *_ in CASES if _is_representable(node, ins)}
    assert len(CASES) >= 60
    for family in ("test_attention_4d", "test_attention_4d_gqa", "test_attention_4d_causal",
                   "test_attention_4d_gqa_causal", "test_attention_3d_gqa_scaled", "test_attention_3d_causal"):
        assert family in representable
    assert "test_attention_4d_attn_mask_bool" in names - representable  # a per-query mask: refused


@pytest.mark.parametrize("name,node,inputs,outputs,opset", CASES, ids=[c[0] for c in CASES])
def test_onnx_attention_node_case(name, node, inputs, outputs, opset):
    model, feeds = _float64_model(node, inputs, outputs, opset)
    if not _is_representable(node, inputs):
        with pytest.raises(CelosiaError, match="attn"):
            onnx_frontend.load(model)
        return
    graph = onnx_frontend.load(model)
    ours = run_float(graph, feeds)[graph.outputs[0].name]
    ref64 = ReferenceEvaluator(model).run(None, feeds)[0]
    # onnx.reference takes sqrt(scale) of the float32 attribute in float32: ~1e-10 relative
    np.testing.assert_allclose(ours, ref64, rtol=1e-8, atol=1e-12)
    stored = np.asarray(outputs[0]).astype(np.float64)
    tol = _tolerance(np.asarray(inputs[0]).dtype)
    np.testing.assert_allclose(ours, stored, rtol=tol, atol=tol)


@pytest.mark.parametrize("causal", [False, True])
def test_onnx_attention_with_a_boolean_key_padding_mask(causal):
    mask_shape = (2, 1, 1, 6)
    rng = np.random.default_rng(5)
    q, k, v = rng.normal(size=(2, 4, 5, 8)), rng.normal(size=(2, 2, 6, 8)), rng.normal(size=(2, 2, 6, 8))
    keep = np.ones((2, 6), bool)
    keep[0, 4:] = False
    keep[1, :2] = False
    feeds = {"q": q, "k": k, "v": v, "m": keep.reshape(mask_shape)}
    vis = [helper.make_tensor_value_info(n, TensorProto.DOUBLE, a.shape) for n, a in list(feeds.items())[:3]]
    vis.append(helper.make_tensor_value_info("m", TensorProto.BOOL, mask_shape))
    node = helper.make_node("Attention", ["q", "k", "v", "m"], ["y"], name="attn", is_causal=int(causal))
    model = helper.make_model(helper.make_graph([node], "kp", vis, [helper.make_tensor_value_info(
        "y", TensorProto.DOUBLE, (2, 4, 5, 8))]), opset_imports=[helper.make_opsetid("", OPSET)])
    graph = onnx_frontend.load(model)
    assert [op.kind for op in graph if op.kind == "Attention"] == ["Attention"]
    ours = run_float(graph, feeds)[graph.outputs[0].name]
    # onnx.reference applies is_causal over the mask's own query axis (size 1 here), so the
    # reference model gets the same mask broadcast over the queries: identical semantics
    full = (2, 1, 5, 6)
    vis[3] = helper.make_tensor_value_info("m", TensorProto.BOOL, full)
    ref_model = helper.make_model(helper.make_graph([node], "kp", vis, list(model.graph.output)),
                                  opset_imports=[helper.make_opsetid("", OPSET)])
    want = ReferenceEvaluator(ref_model).run(None, {**feeds, "m": np.broadcast_to(feeds["m"], full).copy()})[0]
    if causal:  # row 0 of batch 1 sees only masked keys: both give 0 there
        assert (want[1, :, 0] == 0).all() and (ours[1, :, 0] == 0).all()
    np.testing.assert_allclose(ours, want, rtol=1e-12, atol=1e-12)


def test_onnx_per_query_float_mask_is_refused_naming_the_node():
    vis = [helper.make_tensor_value_info(n, TensorProto.FLOAT, (1, 2, 4, 8)) for n in "qkv"]
    vis.append(helper.make_tensor_value_info("bias", TensorProto.FLOAT, (4, 4)))
    node = helper.make_node("Attention", ["q", "k", "v", "bias"], ["y"], name="attn_biased")
    model = helper.make_model(helper.make_graph([node], "g", vis, [helper.make_tensor_value_info(
        "y", TensorProto.FLOAT, (1, 2, 4, 8))]), opset_imports=[helper.make_opsetid("", OPSET)])
    with pytest.raises(CelosiaError, match="attn_biased") as err:
        onnx_frontend.load(model)
    assert "key-padding" in str(err.value)


# ----------------------------------------------------------------------------- canonicalization


def _decomposed(mask_add: np.ndarray | None, b=2, h=2, t=5, e=4):
    """MatMul → Mul(scale) → [Add(mask)] → Softmax → MatMul on (B, H, T, E) inputs."""
    g = GraphBuilder("decomposed")
    q, k, v = (g.input(n, (b, h, t, e)) for n in "qkv")
    s = g.mul(g.matmul(q, g.transpose(k, (0, 1, 3, 2))), g.const([0.5]))
    if mask_add is not None:
        s = g.add(s, g.const(np.broadcast_to(mask_add, (b, h, t, t)).copy(), name="mask"))
    g.output(g.matmul(g.softmax(s), v, name="pv"), "y")
    return g.build()


def _feeds(rng, b=2, h=2, t=5, e=4):
    return {n: rng.normal(size=(b, h, t, e)) for n in "qkv"}


def _masks(t=5):
    causal = np.where(np.triu(np.ones((t, t), bool), 1), -np.inf, 0.0)
    pad = np.zeros((2, 1, 1, t))
    pad[0, ..., 3:] = -np.inf
    pad[1, ..., :1] = -np.inf
    return causal, pad


@pytest.mark.parametrize("which", ["none", "causal", "padding", "causal+padding"])
def test_fuse_attention_recognises_constant_masks(which):
    causal, pad = _masks()
    mask = {"none": None, "causal": causal, "padding": pad, "causal+padding": causal + pad}[which]
    graph = _decomposed(mask)
    fused = fuse_attention(graph)
    assert not fused.ops("Softmax") and len(fused.ops("Attention")) == 1
    att = fused.ops("Attention")[0]
    assert att.attrs["causal"] == ("causal" in which)
    assert att.attrs["scale"] == pytest.approx(0.5)
    assert (len(att.inputs) == 4) == ("padding" in which)
    feed = _feeds(np.random.default_rng(7))
    ours, before = run_float(fused, feed)["y"], run_float(graph, feed)["y"]
    dead = np.isnan(before).all(-1)  # rows the mask covers entirely: NaN before, 0 after (documented)
    assert (ours[dead] == 0).all() and dead.sum() == (2 if which == "causal+padding" else 0)
    np.testing.assert_allclose(ours[~dead], before[~dead], rtol=1e-12)


@pytest.mark.parametrize("which", ["per-query", "finite-penalty", "bottom-right-causal"])
def test_fuse_attention_leaves_other_masks_alone(which):
    rng = np.random.default_rng(3)
    mask = {"per-query": np.where(rng.random((5, 5)) < 0.3, -np.inf, 0.0) * np.eye(5)[::-1].clip(0, 1),
            "finite-penalty": np.where(np.triu(np.ones((5, 5)), 1) > 0, -1e4, 0.0),
            "bottom-right-causal": np.where(np.triu(np.ones((5, 5)), 2) > 0, -np.inf, 0.0)}[which]
    mask = np.nan_to_num(mask, nan=0.0)
    graph = _decomposed(mask)
    fused = fuse_attention(graph)
    assert fused.ops("Softmax") and not fused.ops("Attention")


def test_torch_masked_fill_causal_attention_becomes_one_attention_op():
    torch = pytest.importorskip("torch")
    from celosia.frontend import torch as torch_frontend

    class CausalSelfAttention(torch.nn.Module):  # the nanoGPT formulation: a tril buffer and masked_fill
        def __init__(self, t=6, d=16, heads=2):
            super().__init__()
            torch.manual_seed(0)
            self.qkv, self.heads = torch.nn.Linear(d, 3 * d), heads
            self.register_buffer("tril", torch.tril(torch.ones(t, t)).view(1, 1, t, t))

        def forward(self, x):
            b, t, d = x.shape
            q, k, v = self.qkv(x).split(d, dim=2)
            q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
            att = (q @ k.transpose(-2, -1)) * (1.0 / (d // self.heads) ** 0.5)
            att = att.masked_fill(self.tril[:, :, :t, :t] == 0, float("-inf"))
            return (torch.softmax(att, dim=-1) @ v).transpose(1, 2).reshape(b, t, d)

    model = CausalSelfAttention().double().eval()
    x = torch.randn(2, 6, 16, dtype=torch.float64)
    graph = fuse_attention(torch_frontend.load(model, (x,)))
    atts = graph.ops("Attention")
    assert len(atts) == 1 and atts[0].attrs["causal"] is True and not graph.ops("Softmax")
    ours = run_float(graph, {graph.inputs[0].name: x.numpy()})[graph.outputs[0].name]
    np.testing.assert_allclose(ours, model(x).detach().numpy(), rtol=1e-10, atol=1e-12)


def test_onnx_where_mask_before_softmax_is_canonicalized():
    t, e = 5, 4
    keep = np.tril(np.ones((t, t), bool))
    inits = [onnx.numpy_helper.from_array(keep, "keep"), onnx.numpy_helper.from_array(np.array(-np.inf), "ninf"),
             onnx.numpy_helper.from_array(np.array(0.5), "c")]
    nodes = [helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
             helper.make_node("MatMul", ["q", "kt"], ["s"]),
             helper.make_node("Mul", ["s", "c"], ["ss"]),
             helper.make_node("Where", ["keep", "ss", "ninf"], ["sm"], name="masked"),
             helper.make_node("Softmax", ["sm"], ["p"], axis=-1),
             helper.make_node("MatMul", ["p", "v"], ["y"])]
    vis = [helper.make_tensor_value_info(n, TensorProto.DOUBLE, (1, 2, t, e)) for n in "qkv"]
    model = helper.make_model(helper.make_graph(nodes, "g", vis, [helper.make_tensor_value_info(
        "y", TensorProto.DOUBLE, (1, 2, t, e))], inits), opset_imports=[helper.make_opsetid("", OPSET)])
    graph = onnx_frontend.load(model)
    assert [op.attrs["causal"] for op in graph.ops("Attention")] == [True] and not graph.ops("Softmax")
    feeds = _feeds(np.random.default_rng(1), b=1, t=t, e=e)
    np.testing.assert_allclose(run_float(graph, feeds)[graph.outputs[0].name],
                               ReferenceEvaluator(model).run(None, feeds)[0], rtol=1e-12)


@pytest.mark.parametrize("packed", [False, True])
def test_value_head_size_may_differ_from_the_key_head_size(packed):
    """F != E: float vs an explicit formula, and the bit-exact cascade within its stated bound."""
    from celosia.ir.attention import attention_error_bound, attention_float, attention_int, prob_format
    from celosia.ir.numerics import Fixed, dequantize, quantize

    rng = np.random.default_rng(8)
    b, h, hkv, t, e, f = 2, 4, 2, 9, 8, 5
    q, k, v = rng.normal(size=(b, h, t, e)), rng.normal(size=(b, hkv, t, e)), rng.normal(size=(b, hkv, t, f))
    attrs = {"causal": True}
    if packed:
        pack = lambda x: x.transpose(0, 2, 1, 3).reshape(b, t, -1)  # noqa: E731
        q, k, v = pack(q), pack(k), pack(v)
        attrs.update(heads=h, kv_heads=hkv)
    y = attention_float(q, k, v, None, attrs)
    assert y.shape == ((b, t, h * f) if packed else (b, h, t, f))
    g = GraphBuilder("fe")
    ins = [g.input(n, x.shape) for n, x in zip("qkv", (q, k, v))]
    g.output(g.attention(*ins, causal=True, **({"heads": h, "kv_heads": hkv} if packed else {})), "y")
    assert run_float(g.build(), dict(zip("qkv", (q, k, v))))["y"].shape == y.shape
    fq = fk = fv = Fixed(16, 12)
    out = Fixed(16, 13)
    attrs.update(score_fmt=Fixed(16, 11), prob_fmt=prob_format(16))
    codes = [quantize(x, fq) for x in (q, k, v)]
    got = dequantize(attention_int(*codes, None, attrs, fq, fk, fv, out), out)
    ref = attention_float(*(dequantize(c, fq) for c in codes), None, attrs)
    assert np.all(np.abs(got - ref) <= attention_error_bound(*codes, None, attrs, fq, fk, fv, out))
