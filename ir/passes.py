"""Graph-to-graph passes. Each returns a new graph and leaves its input untouched.

The order they run in is listed once, in :mod:`celosia.ir.pipeline`.
"""

from __future__ import annotations

import numpy as np

from celosia.ir.graph import Graph, Op
from celosia.ir.registry import infer_type
from celosia.ir.types import TensorType

__all__ = ["infer_shapes", "canonicalize", "fuse_epilogues", "prune", "fold_layout", "fold_bias_add", "fuse_attention",
           "pack_attention"]


def infer_shapes(graph: Graph) -> Graph:
    """Type every op from its operands.

    Guarantees: every op has a :class:`TensorType` whose shape follows the op's
    shape rule; formats already assigned are kept. Raises GraphError naming the
    first op whose operands do not fit (e.g. a Linear whose input and weight
    disagree, naming both tensors).
    """
    out = graph.copy()
    for op in out:
        ins = [out.op(i).type for i in op.inputs]
        out.replace(op.evolve(type=infer_type(op, ins)))
    return out


def canonicalize(graph: Graph) -> Graph:
    """Bring ops into the canonical form later passes expect.

    Guarantees: every Linear has a bias operand (a zero Const is added where the
    model had none), so the linear unit's epilogue has one form.
    """
    out = graph.copy()
    for op in out.ops("Linear"):
        if len(op.inputs) == 2:
            n = out.op(op.inputs[1]).type.shape[0]
            bias = Op(f"{op.name}.bias", "Const", attrs={"value": np.zeros(n)}, type=TensorType((n,)))
            out.add(bias)
            out.replace(op.evolve(inputs=op.inputs + (bias.name,)))
    return out


def _sole_consumer(graph: Graph, name: str, kind: str) -> Op | None:
    users = graph.consumers(name)
    if len(users) == 1 and graph.op(users[0]).kind == kind:
        return graph.op(users[0])
    return None


def fuse_epilogues(graph: Graph) -> Graph:
    """Fold residual Adds, ReLUs and GELUs into the epilogue of the Linear before them.

    ``Add(Linear(x), r)`` becomes ``Linear(x, w, b, r)`` (the residual joins the
    accumulator before requantization) and ``ReLU(Linear(...))`` / ``GELU(Linear(...))``
    (erf form) become a Linear with ``activation="relu"`` / ``"gelu"``, when the Linear's
    output has no other reader.
    Guarantees: the fused Linear keeps its name and takes the type of the op it
    absorbed; float semantics are unchanged (the epilogue order is residual,
    then activation, matching the hardware).
    """
    out = graph.copy()
    for lin in out.ops("Linear"):
        lin = out.op(lin.name)
        add = _sole_consumer(out, lin.name, "Add")
        if add is not None and len(lin.inputs) == 3 and not lin.attrs.get("activation"):
            other = add.inputs[1] if add.inputs[0] == lin.name else add.inputs[0]
            if other != lin.name:
                lin = lin.evolve(inputs=lin.inputs + (other,), type=add.type)
                out.replace(lin)
                out.rewire(add.name, lin.name)
                out.remove(add.name)
        for kind in ("ReLU", "GELU"):
            act = _sole_consumer(out, lin.name, kind)
            if act is None or lin.attrs.get("activation") or act.attrs.get("approximate", "none") != "none":
                continue
            lin = lin.evolve(type=act.type)
            lin.attrs["activation"] = kind.lower()
            lin.attrs["activation_op"] = act.name  # so a format override of the activation still applies
            out.replace(lin)
            out.rewire(act.name, lin.name)
            out.remove(act.name)
    return out


def prune(graph: Graph) -> Graph:
    """Remove every op no Output depends on (dead code left by frontends and folding).

    Guarantees: every remaining op reaches an Output; Inputs are kept even if unused
    (they are part of the model's interface).
    """
    out = graph.copy()
    live: set[str] = set()
    stack = [op.name for op in out.outputs]
    while stack:
        name = stack.pop()
        if name not in live:
            live.add(name)
            stack.extend(out.op(name).inputs)
    for op in reversed(list(out)):
        if op.name not in live and op.kind != "Input":
            out.remove(op.name)
    return out


def _layout_index(shape: tuple[int, ...], ops: list[Op]) -> np.ndarray:
    from celosia.ir.layout import layout_apply

    idx = np.arange(int(np.prod(shape))).reshape(shape)
    for op in ops:
        idx = layout_apply(op.kind, op.attrs, idx)
    return idx


def fold_layout(graph: Graph) -> Graph:
    """Compose chains of Reshape/Transpose and drop those that move nothing.

    Two consecutive layout ops whose combined effect keeps the element order become one
    Reshape; two Transposes become one; a Reshape to its operand's shape and a Transpose
    by the identity permutation are removed (their readers read the operand). Guarantees:
    float and integer semantics are unchanged (layout ops are exact); dead ops are pruned.
    """
    out = graph.copy()
    changed = True
    while changed:
        changed = False
        for op in out:
            if op.kind not in ("Reshape", "Transpose") or op.name not in out:
                continue
            src = out.op(op.inputs[0])
            if tuple(op.type.shape) == tuple(src.type.shape) and (
                op.kind == "Reshape" or tuple(op.attrs["perm"]) == tuple(range(len(op.type.shape)))
            ):
                out.rewire(op.name, src.name)
                changed = True
                continue
            if src.kind not in ("Reshape", "Transpose"):
                continue
            base = out.op(src.inputs[0])
            idx = _layout_index(base.type.shape, [src, op])
            if np.array_equal(idx.ravel(), np.arange(idx.size)):
                new = op.evolve(kind="Reshape", inputs=(base.name,), attrs={"shape": tuple(op.type.shape)})
            elif src.kind == op.kind == "Transpose":
                perm = tuple(src.attrs["perm"][p] for p in op.attrs["perm"])
                new = op.evolve(inputs=(base.name,), attrs={"perm": perm})
            else:
                continue
            out.replace(new)
            changed = True
        out = prune(out)
    return out


def _scalar_const(graph: Graph, name: str) -> float | None:
    op = graph.op(name)
    if op.kind == "Const" and np.asarray(op.attrs["value"]).size == 1:
        return float(np.asarray(op.attrs["value"]).ravel()[0])
    return None


def _other(op: Op, name: str) -> str:
    return op.inputs[1] if op.inputs[0] == name else op.inputs[0]


def fold_bias_add(graph: Graph) -> Graph:
    """Fold ``Add(Linear(x, w), c)`` into the Linear's bias when ``c`` is a constant that only
    varies along the last axis (exporters write MatMul + Add for a biased Linear).

    Guarantees: float semantics unchanged; the Linear keeps its name and now has a bias;
    only done when the Linear had no bias and the Add is its sole reader.
    """
    out = graph.copy()
    for lin in out.ops("Linear"):
        if len(lin.inputs) != 2:
            continue
        add = _sole_consumer(out, lin.name, "Add")
        if add is None or add.inputs[0] == add.inputs[1]:
            continue
        c = out.op(_other(add, lin.name))
        if c.kind != "Const":
            continue
        value = np.asarray(c.attrs["value"], dtype=np.float64)
        row = value.reshape(-1, value.shape[-1])[0]
        if value.shape[-1] != lin.type.shape[-1] or not np.array_equal(value, np.broadcast_to(row, value.shape)):
            continue
        bias = Op(f"{lin.name}.bias", "Const", attrs={"value": row.copy()}, type=TensorType(row.shape))
        if bias.name in out:
            continue
        out.add(bias)
        out.replace(lin.evolve(inputs=lin.inputs + (bias.name,)))
        out.rewire(add.name, lin.name)
        out.remove(add.name)
    return prune(out)


def fuse_attention(graph: Graph) -> Graph:
    """Recognise decomposed attention and make it one Attention op (split (B, H, T, E) layout).

    Pattern (what exporters write for scaled dot-product attention)::

        MatMul(Softmax([Add(] [Mul(] MatMul([Mul(]q, c1[)], [Mul(]kᵀ, c2[)]) [, c3)] [, M)]), v)

    with scalar constants ``c1, c2, c3`` (absent = 1), ``kᵀ`` the last-two-axes transpose
    of ``k`` and ``M`` an optional constant additive mask of 0 and −∞ entries (a causal
    triangle, a key-padding mask, or both; see :func:`_attention_mask`). Guarantees: float
    semantics unchanged (``scale = c1·c2·c3``) except on rows that ``M`` masks entirely,
    which become 0 instead of NaN; the Attention is named ``<final MatMul>.attention``; only
    applied when every intermediate has one reader; any other mask leaves the graph as it is.
    """
    out = graph.copy()
    for sm in out.ops("Softmax"):
        if sm.name not in out:
            continue
        pv = _sole_consumer(out, sm.name, "MatMul")
        if pv is None or pv.inputs[0] != sm.name or len(pv.type.shape) != 4:
            continue
        scale = 1.0
        s = out.op(sm.inputs[0])
        causal, pad = False, None
        if s.kind == "Add" and len(out.consumers(s.name)) == 1:
            found = _attention_mask(out, s)
            if found is None:
                continue
            causal, pad, score = found
            s = out.op(score)
        if s.kind == "Mul" and len(out.consumers(s.name)) == 1:
            c = _scalar_const(out, s.inputs[1])
            if c is None:
                continue
            scale *= c
            s = out.op(s.inputs[0])
        if s.kind != "MatMul" or len(out.consumers(s.name)) != 1:
            continue
        ends = []
        for side in s.inputs:
            t = out.op(side)
            if t.kind == "Mul" and len(out.consumers(t.name)) == 1 and _scalar_const(out, t.inputs[1]) is not None:
                scale *= _scalar_const(out, t.inputs[1])
                t = out.op(t.inputs[0])
            ends.append(t)
        q, kt = ends
        if scale <= 0 or len(q.type.shape) != 4:
            continue
        rank = len(kt.type.shape)
        swap = tuple(range(rank - 2)) + (rank - 1, rank - 2)
        if kt.kind == "Transpose":
            perm = tuple(kt.attrs["perm"][p] for p in swap)
            k = Op(f"{pv.name}.k", "Transpose", (kt.inputs[0],), {"perm": perm})
        else:
            k = Op(f"{pv.name}.k", "Transpose", (kt.name,), {"perm": swap})
        if k.name in out:
            continue
        k.type = infer_type(k, [out.op(k.inputs[0]).type])
        out.add(k)
        inputs = (q.name, k.name, pv.inputs[1])
        if pad is not None:
            keep = Op(f"{pv.name}.keep", "Const", attrs={"value": (~pad).astype(np.float64)}, type=TensorType(pad.shape))
            out.add(keep)
            inputs += (keep.name,)
        att = Op(f"{pv.name}.attention", "Attention", inputs, {"causal": causal, "scale": scale})
        att.type = infer_type(att, [out.op(i).type for i in att.inputs])
        if att.type.shape != pv.type.shape:
            continue
        out.add(att)
        out.rewire(pv.name, att.name)
        out = prune(out)
    return fold_layout(out)


def _attention_mask(graph: Graph, add: Op) -> tuple[bool, np.ndarray | None, str] | None:
    """``(causal, pad, score)`` when ``add`` adds a constant 0/−∞ mask to a (B, H, Tq, Tk) score.

    The mask must be exactly ``causal ∨ pad``: ``causal`` the top-left aligned triangle
    ``j > i`` (PyTorch's ``is_causal``) or nothing, ``pad`` a (B, Tk) key-padding mask shared
    by every head and query (True = masked; ``None`` when no key is masked). Anything else
    (a general per-query mask, finite penalties) returns ``None``.
    """
    for score, other in ((add.inputs[0], add.inputs[1]), (add.inputs[1], add.inputs[0])):
        c = graph.op(other)
        if c.kind != "Const" or graph.op(score).kind == "Const":
            continue
        shape = graph.op(score).type.shape
        m = np.asarray(c.attrs["value"], dtype=np.float64)
        if len(shape) != 4 or m.shape != tuple(shape) or not np.all((m == 0) | (m == -np.inf)):
            return None
        masked = m == -np.inf
        tq, tk = shape[2:]
        tri = np.arange(tk)[None, :] > np.arange(tq)[:, None]
        for causal in (False, True):
            tri_c = tri if causal else np.zeros_like(tri)
            # the last query row sees every key the triangle allows, so it reveals the padding
            row = masked[:, 0, -1 if causal else 0, :] & ~tri_c[-1]
            if np.all(masked == (tri_c[None, None] | row[:, None, None, :])):
                return causal, (row if row.any() else None), score
        return None
    return None


def _unsplit_heads(graph: Graph, name: str) -> str | None:
    """``x`` when ``name`` is ``Transpose(Reshape(x, (B, T, H, E)), (0, 2, 1, 3))`` with ``x`` a
    ``(B, T, H·E)`` tensor: the packed tensor a split-layout attention operand was cut from."""
    t = graph.op(name)
    if t.kind != "Transpose" or tuple(t.attrs["perm"]) != (0, 2, 1, 3):
        return None
    r = graph.op(t.inputs[0])
    if r.kind != "Reshape":
        return None
    x = graph.op(r.inputs[0])
    b, tt, h, e = r.type.shape
    return x.name if tuple(x.type.shape) == (b, tt, h * e) else None


def pack_attention(graph: Graph) -> Graph:
    """Give split-layout attention its packed form: heads as column ranges, not as a transposed copy.

    ``Attention(split(q), split(k), split(v))`` with ``split(x) = Transpose(Reshape(x, (B, T, H,
    E)), (0, 2, 1, 3))`` (what PyTorch and ONNX exports write) becomes ``Attention(q, k, v)`` with
    attrs ``heads``/``kv_heads`` on the ``(B, T, H·E)`` tensors, followed by the split of its
    output back into ``(B, H, T, F)`` for its readers (``fold_layout`` then cancels that split
    against a merge of the heads, the usual next step). Guarantees: float and integer semantics
    unchanged (heads are the same columns); applied only when all three operands are splits.
    """
    out = graph.copy()
    for att in out.ops("Attention"):
        if len(att.type.shape) != 4:
            continue
        packed = [_unsplit_heads(out, i) for i in att.inputs[:3]]
        if None in packed:
            continue
        b, heads, tq, f = att.type.shape
        kv_heads = out.op(att.inputs[1]).type.shape[1]
        name = f"{att.name}.packed"
        if name in out:
            continue
        attrs = {**att.attrs, "heads": heads, "kv_heads": kv_heads}
        new = Op(name, "Attention", tuple(packed) + tuple(att.inputs[3:]), attrs)
        new.type = infer_type(new, [out.op(i).type for i in new.inputs])
        out.add(new)
        split = Op(f"{name}.split", "Reshape", (name,), {"shape": (b, tq, heads, f)})
        split.type = infer_type(split, [new.type])
        out.add(split)
        heads_first = Op(f"{name}.heads", "Transpose", (split.name,), {"perm": (0, 2, 1, 3)})
        heads_first.type = infer_type(heads_first, [split.type])
        out.add(heads_first)
        out.rewire(att.name, heads_first.name)
        out = prune(out)
    return fold_layout(out)
