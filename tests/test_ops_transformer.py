"""Transformer/MoE IR ops: shape rules, float semantics, and integer semantics within their stated bounds."""

import numpy as np
import pytest

from celosia.errors import GraphError
from celosia.frontend.builder import GraphBuilder
from celosia.ir import numerics as nx_
from celosia.ir.attention import attention_error_bound, attention_float, attention_int, prob_format
from celosia.ir.moe import moe_float, moe_int, top_k_mask
from celosia.ir.numerics import Fixed, dequantize, quantize
from celosia.ir.pipeline import lower
from celosia.ir.quantize import Precision
from celosia.ir.silu import silu_error_bound, silu_float, silu_int
from celosia.ir.golden import run_float, run_int


def _codes(rng, shape, fmt, scale=1.0):
    return quantize(rng.normal(0, scale, shape), fmt)


@pytest.mark.parametrize("fi,fo", [(Fixed(16, 11), Fixed(16, 12)), (Fixed(16, 8), Fixed(16, 10)), (Fixed(12, 6), Fixed(12, 8))])
def test_silu_int_within_stated_bound_on_every_code(fi, fo):
    x = np.arange(fi.min_int, fi.max_int + 1)
    y = dequantize(silu_int(x, fi, fo), fo)
    ref = silu_float(dequantize(x, fi))
    ok = np.abs(ref) <= fo.max_value
    err = np.abs(y - ref)[ok]
    assert err.max() <= silu_error_bound(fi, fo)
    assert err.max() > 0  # a real approximation, not a float pass-through


def _attn_case(rng, causal, packed, gqa, with_mask):
    b, h, t, e = 2, 4, 6, 8
    hk = 2 if gqa else h
    fq = fk = fv = Fixed(16, 12)
    if packed:
        q = _codes(rng, (b, t, h * e), fq)
        k = _codes(rng, (b, t, hk * e), fk)
        v = _codes(rng, (b, t, hk * e), fv)
        attrs = {"heads": h, "kv_heads": hk, "causal": causal}
    else:
        q, k, v = _codes(rng, (b, h, t, e), fq), _codes(rng, (b, hk, t, e), fk), _codes(rng, (b, hk, t, e), fv)
        attrs = {"causal": causal}
    mask = None
    if with_mask:
        mask = np.ones((b, t))
        mask[0, -2:] = 0
    attrs.update(score_fmt=Fixed(16, 11), prob_fmt=prob_format(16))
    return q, k, v, mask, attrs, (fq, fk, fv, Fixed(16, 12))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("gqa", [False, True])
def test_attention_int_within_stated_bound(causal, packed, gqa):
    rng = np.random.default_rng(7)
    q, k, v, mask, attrs, fmts = _attn_case(rng, causal, packed, gqa, with_mask=not causal)
    y = dequantize(attention_int(q, k, v, mask, attrs, *fmts), fmts[3])
    ref = attention_float(*(dequantize(a, f) for a, f in zip((q, k, v), fmts)), mask, attrs)
    bound = attention_error_bound(q, k, v, mask, attrs, *fmts)
    assert np.all(np.abs(y - ref) <= bound)
    assert np.abs(y - ref).max() > 0


def test_attention_float_matches_explicit_formula_with_gqa_and_causal_mask():
    rng = np.random.default_rng(0)
    q, k, v = rng.normal(size=(1, 4, 5, 8)), rng.normal(size=(1, 2, 5, 8)), rng.normal(size=(1, 2, 5, 8))
    y = attention_float(q, k, v, None, {"causal": True})
    for hq in range(4):
        kh, vh = k[0, hq // 2], v[0, hq // 2]
        s = q[0, hq] @ kh.T / np.sqrt(8)
        s[np.triu_indices(5, 1)] = -np.inf
        p = np.exp(s - s.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        np.testing.assert_allclose(y[0, hq], p @ vh, rtol=1e-12)


def test_attention_shape_errors_name_the_node():
    b = GraphBuilder("bad")
    q = b.input("q", (1, 4, 12))
    with pytest.raises(GraphError, match="Attention 'att'.*heads"):
        b.attention(q, q, q, heads=5, name="att")


def test_moe_routes_top_k_and_int_tracks_float():
    rng = np.random.default_rng(3)
    E, D, H, N = 4, 8, 16, 12
    gw, gb = rng.normal(size=(E, D)), rng.normal(size=E) * 0.1
    w1, b1 = rng.normal(size=(E, H, D)) / np.sqrt(D), rng.normal(size=(E, H)) * 0.1
    w2, b2 = rng.normal(size=(E, D, H)) / np.sqrt(H), rng.normal(size=(E, D)) * 0.1
    x = rng.normal(size=(N, D))
    attrs = {"top_k": 2, "activation": "gelu"}
    y = moe_float(x, gw, gb, w1, b1, w2, b2, attrs)
    # explicit dense reference
    logits = x @ gw.T + gb
    g = np.exp(logits - logits.max(-1, keepdims=True))
    g /= g.sum(-1, keepdims=True)
    keep = top_k_mask(g, 2)
    assert keep.sum(-1).tolist() == [2] * N
    b = GraphBuilder("moe")
    xi = b.input("x", (N, D))
    b.output(b.moe(xi, gw, gb, w1, b1, w2, b2, top_k=2), "y")
    graph = b.build()
    np.testing.assert_allclose(run_float(graph, {"x": x})["y"], y, rtol=1e-12)
    q = lower(graph, [{"x": rng.normal(size=(N, D))} for _ in range(8)], Precision.parse("w16a16"))
    yq = dequantize(run_int(q, {"x": x})["y"], q.op("y").type.fmt)
    assert np.abs(yq - y).max() < 5e-3


def test_matmul_mul_layout_ops_float_and_int():
    rng = np.random.default_rng(1)
    b = GraphBuilder("misc")
    a = b.input("a", (2, 3, 4))
    c = b.input("c", (2, 4, 5))
    m = b.matmul(a, c)
    t = b.transpose(m, (0, 2, 1))
    r = b.reshape(t, (2, 15))
    s = b.slice(r, 1, 5, 10)
    k = b.concat([s, s], axis=1)
    w = b.mul(k, b.const(rng.normal(size=(10,))))
    b.output(b.silu(w), "y")
    graph = b.build()
    x = {"a": rng.normal(size=(2, 3, 4)), "c": rng.normal(size=(2, 4, 5))}
    ref = np.matmul(x["a"], x["c"]).transpose(0, 2, 1).reshape(2, 15)[:, 5:10]
    ref = np.concatenate([ref, ref], 1) * graph.op("const0").attrs["value"]
    np.testing.assert_allclose(run_float(graph, x)["y"], silu_float(ref), rtol=1e-12)
    q = lower(graph, [x], Precision.parse("w16a16"))
    yq = dequantize(run_int(q, x)["y"], q.op("y").type.fmt)
    assert np.abs(yq - silu_float(ref)).max() < 2e-3
    for kind in ("Reshape", "Transpose", "Slice"):
        op = q.ops(kind)[0]
        assert op.type.fmt == q.op(op.inputs[0]).type.fmt  # layout ops are exact: no requantization


def test_embedding_int_is_exact_gather():
    rng = np.random.default_rng(2)
    table = rng.normal(size=(11, 6))
    b = GraphBuilder("emb")
    ids = b.input("ids", (2, 5))
    b.output(b.embedding(ids, table), "y")
    graph = b.build()
    x = {"ids": rng.integers(0, 11, size=(2, 5)).astype(float)}
    np.testing.assert_array_equal(run_float(graph, x)["y"], table[x["ids"].astype(int)])
    q = lower(graph, [x], Precision.parse("w8a16"))
    assert q.op("ids").type.fmt == Fixed(5, 0)
    tf = q.op("embedding0.weight").type.fmt
    np.testing.assert_array_equal(run_int(q, x)["y"], quantize(table, tf)[x["ids"].astype(int)])


def test_mul_broadcast_error_names_operands():
    b = GraphBuilder("m")
    a = b.input("a", (2, 3))
    with pytest.raises(GraphError, match="Mul 'm0'.*do not broadcast"):
        b.mul(a, b.const(np.ones(4)), name="m0")


def test_rounding_is_half_even_in_mul():
    f = Fixed(8, 1)
    # 3 * 1 at frac 2 -> frac 1: 0.75 -> 1.0 (half to even: code 1.5 -> 2)
    assert nx_.requantize(np.array([3]), 2, f)[0] == 2
    from celosia.ir.elementwise import mul_int
    assert mul_int(np.array([3]), np.array([1]), Fixed(8, 1), Fixed(8, 1), f)[0] == 2


def test_attention_key_padding_mask_through_the_pipeline():
    rng = np.random.default_rng(5)
    b = GraphBuilder("masked")
    x = b.input("x", (2, 5, 8))
    m = b.input("keep", (2, 5))
    q = b.linear(x, rng.normal(size=(8, 8)) / 3, name="q")
    b.output(b.attention(q, x, x, heads=2, mask=m, name="att"), "y")
    graph = b.build()
    keep = np.ones((2, 5))
    keep[1, 3:] = 0
    feed = {"x": rng.normal(size=(2, 5, 8)), "keep": keep}
    ref = run_float(graph, feed)["y"]
    # masked keys do not influence the output: moving their keys/values changes nothing
    moved = feed["x"][1:].copy()
    moved[0, 3:] += 5.0
    qv = feed["x"][1:] @ graph.op("q.weight").attrs["value"].T
    attrs = {"heads": 2, "kv_heads": 2}
    np.testing.assert_allclose(attention_float(qv, moved, moved, keep[1:], attrs),
                               attention_float(qv, feed["x"][1:], feed["x"][1:], keep[1:], attrs), rtol=1e-12)
    np.testing.assert_allclose(attention_float(qv, feed["x"][1:], feed["x"][1:], keep[1:], attrs), ref[1:], rtol=1e-12)
    assert not np.allclose(attention_float(qv, moved, moved, None, attrs), ref[1:])
    qg = lower(graph, [feed], Precision.parse("w16a16"))
    assert qg.op("keep").type.fmt == Fixed(2, 0)
    yq = dequantize(run_int(qg, feed)["y"], qg.op("y").type.fmt)
    assert np.abs(yq - ref).max() < 5e-3


@pytest.mark.parametrize("preset,activation", [("w8a16", "gelu"), ("w16a16", "silu"), ("w8a16", "relu")])
def test_moe_int_within_stated_bound_where_routing_agrees(preset, activation):
    from celosia.ir.moe import moe_error_bound, routing_agrees

    rng = np.random.default_rng(11)
    E, D, H, N = 4, 8, 16, 64
    params = [rng.normal(size=(E, D)), rng.normal(size=E) * 0.1, rng.normal(size=(E, H, D)) / np.sqrt(D),
              rng.normal(size=(E, H)) * 0.1, rng.normal(size=(E, D, H)) / np.sqrt(H), rng.normal(size=(E, D)) * 0.1]
    b = GraphBuilder("moe")
    xi = b.input("x", (N, D))
    b.output(b.moe(xi, *params, top_k=2, activation=activation, name="moe"), "y")
    graph = b.build()
    x = rng.normal(size=(N, D))
    q = lower(graph, [{"x": rng.normal(size=(N, D))} for _ in range(4)], Precision.parse(preset))
    op = q.op("moe")
    fmts = [q.op(i).type.fmt for i in op.inputs]
    codes = run_int(q, {"x": x}, keep_all=True)
    xq = codes["x"]
    y = dequantize(codes["moe"], op.type.fmt)
    xd = dequantize(xq, fmts[0])
    ref = moe_float(xd, *params, op.attrs)
    bound = moe_error_bound(xq, *params, op.attrs, fmts[0], fmts[1], fmts[3], fmts[5], op.type.fmt)
    agree = routing_agrees(xd, params[0], params[1], xq, codes[op.inputs[1]], codes[op.inputs[2]], op.attrs,
                           fmts[0], fmts[1])
    assert agree.mean() > 0.9
    err = np.abs(y - ref)[agree]
    assert np.all(err <= bound[agree])
    assert err.max() > 0 and bound[agree].max() < 100 * err.max()  # not vacuous


def test_fuse_attention_and_fold_bias_add_keep_semantics():
    from celosia.ir.passes import fold_bias_add, fuse_attention

    rng = np.random.default_rng(4)
    b = GraphBuilder("decomposed")
    x = b.input("x", (2, 5, 8))
    h = b.linear(x, rng.normal(size=(8, 8)), name="proj")
    h = b.add(h, b.const(np.broadcast_to(rng.normal(size=8), (2, 5, 8)).copy(), name="bias"), name="proj.add")
    q = b.transpose(b.reshape(h, (2, 5, 2, 4)), (0, 2, 1, 3), name="q")
    kt = b.transpose(b.reshape(x, (2, 5, 2, 4)), (0, 2, 3, 1), name="kt")
    v = b.transpose(b.reshape(x, (2, 5, 2, 4)), (0, 2, 1, 3), name="v")
    s = b.matmul(b.mul(q, b.const([0.7])), b.mul(kt, b.const([0.5 / 0.7])))
    y = b.matmul(b.softmax(s), v, name="pv")
    b.output(y, "y")
    graph = b.build()
    fused = fuse_attention(fold_bias_add(graph))
    kinds = [op.kind for op in fused]
    assert "Softmax" not in kinds and "MatMul" not in kinds and "Add" not in kinds
    att = fused.ops("Attention")[0]
    assert att.attrs["scale"] == pytest.approx(0.5)
    assert len(fused.op("proj").inputs) == 3
    feed = {"x": rng.normal(size=(2, 5, 8))}
    np.testing.assert_allclose(run_float(fused, feed)["y"], run_float(graph, feed)["y"], rtol=1e-12)
