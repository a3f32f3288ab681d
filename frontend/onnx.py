"""ONNX frontend: an ``.onnx`` file (opset 11 or newer) -> float IR graph.

Models below opset 17 are first upgraded with ``onnx.version_converter``; the mappings
(:mod:`celosia.frontend.onnx_import`) read opset 17 and newer forms.

=====================================  ==================================================
ONNX                                   IR
=====================================  ==================================================
Gemm, MatMul by a 2-D constant         Linear (Gemm's alpha, beta, transA/B, any C)
MatMul, Gemm of computed tensors       MatMul (1-D operands as numpy), Transpose, Mul, Add
Attention (opset 23: q/kv_num_heads,   Attention (packed or split layout, GQA, causal,
is_causal, scale)                      boolean key-padding mask)
Softmax (any axis), Relu, Gelu         Softmax (Transposes around it off the last axis),
(none/tanh), x·Sigmoid(x)              ReLU, GELU (``approximate`` kept), SiLU
x·0.5·(1 + Erf(x/√2))                  GELU (the exporters' erf form, any operand order)
Conv (stride = kernel, no padding)     Reshape/Transpose + Linear (patch embedding)
LayerNormalization (any axis, Mean /   LayerNorm / RMSNorm over the flattened axes; the
InvStdDev outputs), RMSNormalization   statistics as Mean, Sub, Mul, Sqrt, Reciprocal
Add (broadcasting), Mul, Sub, Div,     Add (operands expanded: the IR's Add does not
Pow                                    broadcast), Mul; Sub/Div by constants as Add/Mul;
                                       Sub, Div, Pow ops otherwise (Pow 2 is a Mul)
Exp, Tanh, Sigmoid, Sqrt, Reciprocal,  the ops of the same names (float only)
Neg, Erf, Where, Expand, Cast, CastLike
ReduceMean / ReduceSum / ReduceMax     one Mean / ReduceSum / ReduceMax per axis
TopK                                   TopK values and indices (two ops)
Gather                                 Embedding (constant 2-D table, axis 0); Slice/Concat
                                       for constant indices; Gather otherwise
RotaryEmbedding                        Embedding/Gather of the caches, Slice, Mul, Add, Concat
Reshape, Transpose, Flatten, Squeeze,  Reshape, Transpose, Slice, Concat (strided slices
Unsqueeze, Slice, Split, Concat        as Slice/Concat; composed, no-ops dropped)
Softmax -> TopK -> ScatterElements ->  MoE (the dense V-MoE routing as torch.onnx.export writes it)
Concat of experts · weights, ReduceSum
Identity, Dropout, Cast to float       removed (the IR computes every float in float64)
Shape (static)                         a constant
Where(constant cond, x, −∞) and the    Add of a constant 0/−∞ mask (exact); before a
mirrored form                          Softmax it becomes Attention's causal/padding mask
=====================================  ==================================================

Everything computed from initializers alone is folded with ``onnx.reference`` at import.
Operands that fix a shape (a Reshape's shape, Slice bounds, Split sizes, axes, TopK's k,
Expand's shape) must be constants; graph inputs in those places can be bound with
``constant_inputs``. A corrupt or truncated file, an opset below 11 or one the converter
cannot upgrade, a symbolic (unbounded) input dimension without ``input_shapes``, an empty
tensor, and unsupported ops (all listed at once) raise a :class:`~celosia.errors.CelosiaError`
naming the node and what would work instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from celosia.errors import CelosiaError, GraphError
from celosia.frontend.onnx_import import CONV_HINT, STATIC_OPERANDS, Importer, Unmapped
from celosia.frontend.support import Unsupported, UnsupportedOpsError
from celosia.ir.graph import Graph

__all__ = ["load", "check", "read", "shape_inputs", "SUPPORTED_ONNX", "MIN_OPSET", "OLDEST_OPSET"]

#: The opset the mappings read; older models are upgraded to it first.
MIN_OPSET = 17
#: The oldest opset read (through ``onnx.version_converter``).
OLDEST_OPSET = 11
_DOMAIN = "ai.celosia"  # the fused MoE node the routing pattern is rewritten into before import
SUPPORTED_ONNX = frozenset({
    "Identity", "Dropout", "Cast", "CastLike", "Constant", "Shape",
    "Gemm", "MatMul", "Attention", "Softmax", "Relu", "Gelu", "Sigmoid", "LayerNormalization", "RMSNormalization",
    "Add", "Sub", "Mul", "Div", "Pow", "Exp", "Tanh", "Sqrt", "Reciprocal", "Neg", "Erf", "Where",
    "ReduceMean", "ReduceSum", "ReduceMax", "TopK", "Gather", "Expand", "RotaryEmbedding", "Conv",
    "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Slice", "Split", "Concat",
})
_HINTS = {"Conv": CONV_HINT}


def _onnx():
    try:
        import onnx
    except ImportError:
        raise CelosiaError("the ONNX frontend needs the onnx package", hint="pip install onnx") from None
    return onnx


def _opset(proto) -> int | None:
    versions = {o.domain: o.version for o in proto.opset_import}
    return versions.get("", None) or versions.get("ai.onnx")


def read(model, *, constant_inputs: dict | None = None):
    """Load and validate an ONNX model from a path, bytes or a ``ModelProto``.

    Models of opsets 11 to 16 are upgraded to :data:`MIN_OPSET` with ``onnx.version_converter``.
    ``constant_inputs`` (graph input name -> array) turns those inputs into initializers.
    """
    onnx = _onnx()
    if isinstance(model, onnx.ModelProto):
        proto, where = model, model.graph.name or "model"
    else:
        where = str(model) if isinstance(model, (str, os.PathLike)) else "<bytes>"
        if isinstance(model, (str, os.PathLike)) and not Path(model).is_file():
            raise CelosiaError(f"ONNX file '{model}' does not exist", hint="check the path")
        try:
            data = Path(model).read_bytes() if isinstance(model, (str, os.PathLike)) else bytes(model)
            proto = onnx.load_from_string(data)
        except Exception as exc:
            raise GraphError(
                f"'{where}' is not a readable ONNX model (corrupt or truncated file: {type(exc).__name__})",
                hint="re-export the model (torch.onnx.export / onnx.save) and check the file was copied whole",
            ) from None
        if not proto.graph.node and not proto.graph.output:
            raise GraphError(f"'{where}' holds no ONNX graph (empty, corrupt or truncated file)",
                             hint="re-export the model and check the file was copied whole")
    opset = _opset(proto)
    if opset is None or opset < OLDEST_OPSET:
        raise GraphError(
            f"ONNX model '{where}' uses opset {opset}; Celosia reads opset {OLDEST_OPSET} or newer",
            hint=f"re-export with opset_version>={MIN_OPSET}, or convert it: "
                 f"onnx.version_converter.convert_version(model, {MIN_OPSET})",
        )
    if constant_inputs:
        proto = _bind_inputs(proto, constant_inputs, where)
    if opset < MIN_OPSET:
        proto = _upgrade(proto, opset, where)
    try:
        onnx.checker.check_model(proto)
    except Exception as exc:
        raise GraphError(f"ONNX model '{where}' is invalid: {str(exc).splitlines()[0][:300]}",
                         hint="fix the exporter output; onnx.checker.check_model shows the details") from None
    return proto


def _upgrade(proto, opset: int, where: str):
    from onnx import version_converter

    try:
        return version_converter.convert_version(proto, MIN_OPSET)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise GraphError(f"ONNX model '{where}' uses opset {opset}; converting it to opset {MIN_OPSET} failed: {first}",
                         hint=f"re-export the model with opset_version>={MIN_OPSET}") from None


def _bind_inputs(proto, values: dict, where: str):
    """A copy of ``proto`` whose inputs named in ``values`` are initializers holding those values."""
    from onnx import helper, numpy_helper

    names = {vi.name: vi for vi in proto.graph.input}
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise GraphError(f"constant_inputs names {unknown}, which are not inputs of '{where}'",
                         hint=f"its inputs are {sorted(names)}")
    out = type(proto)()
    out.CopyFrom(proto)
    keep = [vi for vi in out.graph.input if vi.name not in values]
    del out.graph.input[:]
    out.graph.input.extend(keep)
    for name, value in values.items():
        elem = names[name].type.tensor_type.elem_type
        arr = np.asarray(value)
        if elem:
            arr = arr.astype(helper.tensor_dtype_to_np_dtype(elem))
        out.graph.initializer.append(numpy_helper.from_array(arr, name))
    return out


def shape_inputs(model) -> list[str]:
    """Graph inputs that feed an operand the importer needs as a constant (a Reshape's shape, Slice
    bounds, Split sizes, axes, TopK's k, Expand's shape): bind them with ``constant_inputs``."""
    onnx = _onnx()
    proto = model if isinstance(model, onnx.ModelProto) else read(model)
    inputs = {vi.name for vi in proto.graph.input} - {i.name for i in proto.graph.initializer}
    found = []
    for node in proto.graph.node:
        for index in STATIC_OPERANDS.get(node.op_type, ()):
            if index < len(node.input) and node.input[index] in inputs and node.input[index] not in found:
                found.append(node.input[index])
    return found


def _elem_types(proto) -> dict[str, int]:
    """ONNX element type of every tensor name (shape inference fills in the intermediate ones)."""
    from onnx import shape_inference

    try:
        inferred = shape_inference.infer_shapes(proto)
    except Exception:
        inferred = proto
    g = inferred.graph
    types = {vi.name: vi.type.tensor_type.elem_type for vi in (*g.input, *g.value_info, *g.output)}
    types.update({i.name: i.data_type for i in proto.graph.initializer})
    return types


def _scan(proto) -> list[Unsupported]:
    """Nodes without a mapping that are not foldable (computed from constants and shapes only)."""
    out = []
    const = {i.name for i in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type in ("Constant", "Shape") or all(i in const for i in node.input if i):
            const.update(node.output)
            continue
        if node.op_type == "Conv" and not _conv_ok(node, proto):
            out.append(Unsupported(node.name or node.output[0], "Conv", "overlapping or padded convolution",
                                   _HINTS["Conv"]))
            continue
        if node.domain == _DOMAIN and node.op_type == "MoE":
            continue
        if node.op_type not in SUPPORTED_ONNX or node.domain not in ("", "ai.onnx"):
            out.append(Unsupported(
                node.name or node.output[0], node.op_type if not node.domain else f"{node.domain}.{node.op_type}",
                f"no IR mapping for ONNX {node.op_type}",
                _HINTS.get(node.op_type, "supported ops: " + ", ".join(sorted(SUPPORTED_ONNX))),
            ))
    return out


def _conv_ok(node, proto) -> bool:
    """True if a Conv is a patch embedding: stride = kernel, no padding, dilation 1, one group."""
    from onnx import helper

    at = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    k = at.get("kernel_shape")
    if k is None:
        w = next((i for i in proto.graph.initializer if i.name == node.input[1]), None)
        k = list(w.dims[2:]) if w is not None else None
    return (k is not None and len(k) == 2 and list(at.get("strides", [1, 1])) == list(k)
            and not any(at.get("pads", [0, 0, 0, 0])) and at.get("group", 1) == 1
            and list(at.get("dilations", [1, 1])) == [1, 1])


def _fuse_erf_gelu(proto):
    """Rewrite the exporters' erf GELU, ``x·0.5·(1 + erf(x/√2))`` in any operand order, into one Gelu."""
    from onnx import helper, numpy_helper

    g = proto.graph
    consts = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    for n in g.node:
        if n.op_type == "Constant":
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t) if n.attribute[0].t.dims or \
                n.attribute[0].type == 4 else None
    producer = {o: n for n in g.node for o in n.output}
    users: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            users.setdefault(i, []).append(n)

    def scalar(name):
        v = consts.get(name)
        return float(np.asarray(v).ravel()[0]) if v is not None and np.asarray(v).size == 1 else None

    def other(n, name):
        return n.input[1] if n.input[0] == name else n.input[0]

    dead, new_nodes = set(), {}
    for erf in [n for n in g.node if n.op_type == "Erf"]:
        pre = producer.get(erf.input[0])
        if pre is None or pre.op_type not in ("Div", "Mul"):
            continue
        c = scalar(pre.input[1])
        if c is None or not np.isclose(c if pre.op_type == "Div" else 1 / c, np.sqrt(2), rtol=1e-6):
            continue
        x = pre.input[0]
        chain = [pre, erf]
        cur = erf.output[0]
        ok, seen_x, seen_half, seen_one = True, False, False, False
        while ok and not (seen_x and seen_half and seen_one):
            us = users.get(cur, [])
            if len(us) != 1:
                ok = False
                break
            n = us[0]
            o = other(n, cur)
            if n.op_type == "Add" and not seen_one and scalar(o) == 1.0:
                seen_one = True
            elif n.op_type == "Mul" and not seen_half and scalar(o) == 0.5:
                seen_half = True
            elif n.op_type == "Mul" and not seen_x and o == x:
                seen_x = True
            else:
                ok = False
                break
            chain.append(n)
            cur = n.output[0]
        if not ok:
            continue
        dead.update(id(n) for n in chain)
        new_nodes[id(chain[0])] = helper.make_node("Gelu", [x], [cur], name=(erf.name or cur) + ".gelu")
    return _rewritten(proto, {k: (node, []) for k, node in new_nodes.items()}, dead)


def _fuse_moe(proto):
    """Rewrite the exported dense V-MoE routing into one fused MoE node (domain ``ai.celosia``).

    Pattern (``torch.onnx.export`` of :class:`celosia.frontend.training.models.MoEMLP`)::

        g = Softmax(x·Wg + bg);  v, i = TopK(g, k);  w = ScatterElements(zeros, i, v)
        y = ReduceSum(Concat_e(Unsqueeze(expert_e(x), -1)) · Unsqueeze(w, -2), -1)
        expert_e(x) = act(x·W1_e + b1_e)·W2_e + b2_e        act: Gelu, Relu or x·Sigmoid(x)
    """
    from onnx import helper, numpy_helper

    g = proto.graph
    consts = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    for n in g.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    producer = {o: n for n in g.node for o in n.output}
    users: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            users.setdefault(i, []).append(n)

    def sole(name, op_type):
        us = users.get(name, [])
        return us[0] if len(us) == 1 and us[0].op_type == op_type else None

    def linear(out):
        """``(x, w (out, in), b)`` of ``MatMul(x, W) + b`` or ``Gemm``, else None."""
        n = producer.get(out)
        if n is None:
            return None
        if n.op_type == "Gemm":
            at = {a.name: helper.get_attribute_value(a) for a in n.attribute}
            if len(n.input) < 3 or n.input[1] not in consts or n.input[2] not in consts or at.get("transA", 0):
                return None
            w = consts[n.input[1]] * at.get("alpha", 1.0)
            return n.input[0], (w if at.get("transB", 0) else w.T), consts[n.input[2]] * at.get("beta", 1.0)
        if n.op_type != "Add":
            return None
        for b, m in ((n.input[0], n.input[1]), (n.input[1], n.input[0])):
            mm = producer.get(m)
            if b in consts and mm is not None and mm.op_type == "MatMul" and mm.input[1] in consts:
                return mm.input[0], consts[mm.input[1]].T, consts[b]
        return None

    fused, dead = {}, set()
    for topk in [n for n in g.node if n.op_type == "TopK"]:
        try:
            sm = producer[topk.input[0]]
            gate = linear(sm.input[0]) if sm.op_type == "Softmax" else None
            if gate is None:
                continue
            x, gw, gb = gate
            k = int(np.asarray(consts[topk.input[1]]).ravel()[0])
            scat = sole(topk.output[1], "ScatterElements")
            if scat is None or scat.input[2] != topk.output[0] or np.any(consts.get(scat.input[0], 1) != 0):
                continue
            unsq = sole(scat.output[0], "Unsqueeze")
            mul = sole(unsq.output[0], "Mul") if unsq else None
            rsum = sole(mul.output[0], "ReduceSum") if mul else None
            cat = producer[mul.input[0] if mul.input[1] == unsq.output[0] else mul.input[1]] if rsum else None
            if cat is None or cat.op_type != "Concat":
                continue
            experts, acts, chain = [], set(), [topk, scat, unsq, mul, rsum, cat]
            for part in cat.input:
                u = producer[part]
                fc2 = linear(u.input[0]) if u.op_type == "Unsqueeze" else None
                act = producer.get(fc2[0]) if fc2 else None
                if act is None:
                    raise KeyError
                if act.op_type in ("Gelu", "Relu"):
                    kind, pre = ("gelu" if act.op_type == "Gelu" else "relu"), act.input[0]
                    at = {a.name: helper.get_attribute_value(a) for a in act.attribute}
                    if at.get("approximate", b"none") not in (b"none", "none"):
                        raise KeyError
                elif act.op_type == "Mul" and any(producer.get(i) is not None and producer[i].op_type == "Sigmoid"
                                                  for i in act.input):
                    sig = next(producer[i] for i in act.input if producer.get(i) is not None
                               and producer[i].op_type == "Sigmoid")
                    kind, pre = "silu", sig.input[0]
                else:
                    raise KeyError
                fc1 = linear(pre)
                if fc1 is None or fc1[0] != x:
                    raise KeyError
                acts.add(kind)
                experts.append((fc1[1], fc1[2], fc2[1], fc2[2]))
                chain.append(u)
            if len(acts) != 1:
                continue
        except (KeyError, AttributeError, IndexError, TypeError):
            continue
        name = rsum.name or rsum.output[0]
        stacked = {"gate_w": gw, "gate_b": gb}
        for j, key in enumerate(("w1", "b1", "w2", "b2")):
            stacked[key] = np.stack([e[j] for e in experts])
        inits = []
        for key, value in stacked.items():
            inits.append(numpy_helper.from_array(np.asarray(value, dtype=np.float64), f"{name}.{key}"))
        fused[id(rsum)] = (helper.make_node("MoE", [x] + [t.name for t in inits], [rsum.output[0]], name=name,
                                            domain=_DOMAIN, top_k=k, activation=acts.pop()), inits)
        dead.update(id(n) for n in chain)
    return _rewritten(proto, fused, dead)


def _rewritten(proto, replace: dict, dead: set):
    """A copy of ``proto`` where node ``n`` with ``id(n)`` in ``replace`` becomes ``replace[id(n)] =
    (node, initializers)`` and nodes with ids in ``dead`` are dropped (``proto`` itself if nothing
    is replaced)."""
    if not replace:
        return proto
    out = type(proto)()
    out.CopyFrom(proto)
    del out.graph.node[:]
    for n in proto.graph.node:
        if id(n) in replace:
            node, inits = replace[id(n)]
            out.graph.node.append(node)
            out.graph.initializer.extend(inits)
        elif id(n) not in dead:
            out.graph.node.append(n)
    return out


def _translate(proto, name, input_shapes):
    proto = _fuse_moe(_fuse_erf_gelu(proto))
    items = _scan(proto)
    if items:
        return None, items
    imp = Importer(proto, name, input_shapes, _elem_types(proto))
    try:
        return imp.run(), []
    except Unmapped as exc:
        node = imp.current
        return None, [Unsupported(node.name or node.output[0], node.op_type, exc.reason, exc.hint)]


def _name(model, proto, name):
    return name or (Path(model).stem if isinstance(model, (str, os.PathLike)) else proto.graph.name or "model")


def load(model, *, name: str | None = None, input_shapes: dict | None = None,
         constant_inputs: dict | None = None) -> Graph:
    """Import an ONNX model as a float IR graph.

    Parameters
    ----------
    model : path, bytes or onnx.ModelProto
    name : str, optional
        Graph name (default: the file's stem or the ONNX graph name).
    input_shapes : dict of str to tuple, optional
        Static shapes for inputs with symbolic dimensions.
    constant_inputs : dict of str to array, optional
        Graph inputs whose values are fixed at compile time (they become initializers): the
        inputs :func:`shape_inputs` lists, such as a Reshape's target shape or a TopK's k.

    Raises
    ------
    GraphError
        Corrupt/truncated file, opset below 11 or not convertible, unbounded dynamic shapes,
        empty tensors.
    UnsupportedOpsError
        Listing every node without a mapping.
    """
    proto = read(model, constant_inputs=constant_inputs)
    name = _name(model, proto, name)
    graph, items = _translate(proto, name, input_shapes)
    if items:
        raise UnsupportedOpsError(name, items)
    return graph


def check(model, *, name: str | None = None, input_shapes: dict | None = None,
          constant_inputs: dict | None = None) -> list[Unsupported]:
    """Every node of the ONNX model that cannot be imported (empty if it imports)."""
    proto = read(model, constant_inputs=constant_inputs)
    return _translate(proto, _name(model, proto, name), input_shapes)[1]
