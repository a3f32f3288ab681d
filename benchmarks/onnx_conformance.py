"""ONNX conformance: the onnx wheel's own backend node test cases through the importer and the float executor.

Every single-node case (``onnx.backend.test.case.node.collect_testcases()``) of the ops a
transformer or MoE export uses (:data:`OPS`) is imported with :func:`celosia.frontend.onnx.load`
and run with :func:`celosia.ir.golden.run_float`; each output is compared with the case's stored
output. Graph inputs that fix a shape (a Reshape's shape, Slice bounds, axes, TopK's k: the
ones :func:`celosia.frontend.onnx.shape_inputs` lists) are bound to the case's values with
``constant_inputs``, since Celosia compiles static shapes.

Outcomes: ``passed`` (every output within tolerance), ``refused`` (a CelosiaError, with its
reason), ``wrong`` (imported and ran, an output is off) and ``crashed`` (any other exception).

Tolerance, by the stored output's type: float32 1e-5 relative (atol 1e-5 · max|expected|, the
float-vs-framework figure of DESIGN.md; the references are float32 computations), float64
1e-12, float16 1e-3 and bfloat16 1e-2 (their own rounding: 2^-11 and 2^-8 relative), and
exact equality for the 8/4-bit float formats, integers and bools (a Cast rounds exactly).
Elements whose value the ONNX specification leaves undefined are not compared: a Cast of a
float out of an integer type's range, and of NaN to FLOAT4E2M1 (which has no NaN).

    python benchmarks/onnx_conformance.py [--json] [--all]
"""

from __future__ import annotations

import argparse
import re
import sys
import traceback
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

#: The ops a transformer / MoE export uses (issue 18).
OPS = ("MatMul", "Gemm", "Add", "Sub", "Mul", "Div", "Relu", "Gelu", "Erf", "Tanh", "Sigmoid", "Exp", "Sqrt", "Pow",
       "Reciprocal", "Neg", "Where", "Softmax", "LayerNormalization", "RMSNormalization", "Attention", "ReduceMean",
       "ReduceSum", "ReduceMax", "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Concat", "Split",
       "Slice", "Gather", "TopK", "Expand", "Cast", "RotaryEmbedding")

_INTEGER_NAMES = re.compile(r"^u?int\d+$")


@dataclass
class Case:
    """One single-node test case: the model and its input/output arrays (by graph input/output name)."""

    name: str
    op: str
    opset: int
    model: object
    inputs: dict
    outputs: dict


@dataclass
class Result:
    """The outcome of one case."""

    name: str
    op: str
    opset: int
    status: str
    reason: str = ""
    max_rel_err: float | None = None
    details: list = field(default_factory=list)


def _array(x) -> np.ndarray:
    from onnx import TensorProto, numpy_helper

    return numpy_helper.to_array(x) if isinstance(x, TensorProto) else np.asarray(x)


def collect(ops=OPS) -> list[Case]:
    """The single-node cases of ``ops`` the installed onnx package ships, sorted by name
    (``ops=None``: every case, multi-node ones included, except those with sequence data)."""
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        found = collect_testcases()
    cases = []
    for c in found:
        g = c.model.graph
        single = len(g.node) == 1 and g.node[0].domain in ("", "ai.onnx")
        if ops is not None and (not single or g.node[0].op_type not in ops):
            continue
        ins, outs = c.data_sets[0]
        names_in = [i.name for i in g.input]
        names_out = [o.name for o in g.output]
        versions = {o.domain: o.version for o in c.model.opset_import}
        try:
            inputs = {n: _array(a) for n, a in zip(names_in, ins)}
            outputs = {n: _array(a) for n, a in zip(names_out, outs)}
        except ValueError:  # sequence / optional data: no tensor arrays
            continue
        cases.append(Case(c.name, g.node[0].op_type if single else "(several nodes)",
                          versions.get("", versions.get("ai.onnx", 0)), c.model, inputs, outputs))
    return sorted(cases, key=lambda c: c.name)


def tolerance(dtype: np.dtype) -> float | None:
    """Relative tolerance for an output of this type (None: exact)."""
    return {"float32": 1e-5, "float64": 1e-12, "float16": 1e-3, "bfloat16": 1e-2}.get(np.dtype(dtype).name)


def _defined(case: Case) -> np.ndarray | None:
    """Elements whose value ONNX defines (None: all): a Cast of an out-of-range float to an
    integer type and of NaN to FLOAT4E2M1 are undefined."""
    if case.op != "Cast":
        return None
    x = next(iter(case.inputs.values()))
    y = next(iter(case.outputs.values()))
    if x.dtype.kind in "iub" or "int" in x.dtype.name or x.dtype == bool:
        return None
    xf = x.astype(np.float64)
    if _INTEGER_NAMES.match(y.dtype.name):
        info = _int_range(y.dtype.name)
        return np.isfinite(xf) & (np.trunc(xf) >= info[0]) & (np.trunc(xf) <= info[1])
    if y.dtype.name == "float4_e2m1fn":
        return ~np.isnan(xf)
    return None


def _int_range(name: str) -> tuple[int, int]:
    bits = int(re.sub(r"\D", "", name))
    return (0, 2**bits - 1) if name.startswith("u") else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)


def run_case(case: Case) -> Result:
    """Import ``case`` and run it with the float executor; compare with its stored outputs."""
    from celosia.errors import CelosiaError
    from celosia.frontend.onnx import load, shape_inputs
    from celosia.frontend.onnx_import import safe_name
    from celosia.ir.golden import run_float

    res = Result(case.name, case.op, case.opset, "passed")
    try:
        bound = {n: case.inputs[n] for n in shape_inputs(case.model) if n in case.inputs}
        with np.errstate(all="ignore"):
            graph = load(case.model, constant_inputs=bound)
            ir_inputs = {op.name for op in graph.inputs}
            feeds = {safe_name(n): np.asarray(a).astype(np.float64) for n, a in case.inputs.items()
                     if n not in bound and safe_name(n) in ir_inputs}
            got = run_float(graph, feeds)
    except CelosiaError as exc:
        res.status, res.reason = "refused", str(exc).splitlines()[0]
        if getattr(exc, "items", None):
            res.reason = "; ".join(f"{u.op}: {u.reason}" for u in exc.items)
        return res
    except Exception as exc:  # noqa: BLE001 - a crash is what this counts
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        res.status = "crashed"
        res.reason = f"{type(exc).__name__}: {str(exc)[:200]} ({Path(frame.filename).name}:{frame.lineno})"
        return res
    mask = _defined(case)
    worst = 0.0
    for name, want in case.outputs.items():
        out = safe_name(name)
        mine = got.get(out, got.get(f"{out}.out"))
        want64 = want.astype(np.float64)
        if mine is None or np.shape(mine) != want.shape:
            res.status = "wrong"
            res.details.append(f"{name}: shape {np.shape(mine)} vs {want.shape}")
            continue
        m = np.ones(want.shape, bool) if mask is None or mask.shape != want.shape else mask
        a, b = np.asarray(mine, np.float64)[m], want64[m]
        special = ~np.isfinite(b)
        same_special = np.array_equal(np.isnan(a), np.isnan(b)) and np.array_equal(a[special & ~np.isnan(b)],
                                                                                  b[special & ~np.isnan(b)])
        fa, fb = a[~special], b[~special]
        rtol = tolerance(want.dtype)
        err = np.abs(fa - fb)
        scale = float(np.max(np.abs(fb))) if fb.size else 0.0
        rel = float(np.max(err / np.maximum(np.abs(fb), 1e-300))) if fb.size else 0.0
        if rtol is None:
            ok = same_special and np.array_equal(fa, fb)
        else:
            ok = same_special and bool(np.all(err <= rtol * np.abs(fb) + rtol * scale))
            worst = max(worst, float(np.max(err / max(scale, 1e-300))) if fb.size else 0.0)
        if not ok:
            res.status = "wrong"
            res.details.append(f"{name}: max abs err {float(err.max()) if err.size else 0:.3g} "
                               f"(max rel {rel:.3g}), special values {'agree' if same_special else 'differ'}")
    res.max_rel_err = worst
    return res


def summarize(results: list[Result]) -> dict:
    """Totals, per-op counts and refusal reasons (grouped)."""
    totals = Counter(r.status for r in results)
    per_op: dict[str, Counter] = {}
    for r in results:
        per_op.setdefault(r.op, Counter())[r.status] += 1
    reasons = Counter(_reason_key(r.reason) for r in results if r.status == "refused")
    return {
        "tried": len(results),
        **{k: totals.get(k, 0) for k in ("passed", "refused", "wrong", "crashed")},
        "refused_for_opset": sum(1 for r in results if r.status == "refused" and "opset" in r.reason),
        "per_op": {op: {"tried": sum(c.values()), **{k: c.get(k, 0) for k in ("passed", "refused", "wrong",
                                                                              "crashed")}}
                   for op, c in sorted(per_op.items())},
        "refusal_reasons": dict(reasons.most_common()),
        "cases": [{"name": r.name, "op": r.op, "opset": r.opset, "status": r.status, "reason": r.reason,
                   "max_rel_err": r.max_rel_err, "details": r.details} for r in results],
    }


def _reason_key(reason: str) -> str:
    """A refusal reason without node names and numbers, for grouping."""
    return re.sub(r"'[^']*'|\d+", "…", reason)[:160]


def main(argv=None) -> int:
    from _common import emit

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print the JSON payload as the last line")
    ap.add_argument("--all", action="store_true",
                    help="every node case of every op (multi-node ones too): a crash sweep, written to "
                         "results/onnx_conformance_all.json")
    args = ap.parse_args(argv)
    import onnx

    results = [run_case(c) for c in collect(None if args.all else OPS)]
    payload = {"onnx": onnx.__version__, "ops": "all" if args.all else list(OPS), **summarize(results)}
    rows = [{"op": op, **counts} for op, counts in payload["per_op"].items()]
    rows.append({"op": "total", "tried": payload["tried"], **{k: payload[k] for k in
                                                                ("passed", "refused", "wrong", "crashed")}})
    for reason, n in payload["refusal_reasons"].items():
        print(f"refused {n:3d}: {reason}")
    for r in results:
        if r.status in ("wrong", "crashed"):
            print(f"{r.status}: {r.name}: {r.reason or '; '.join(r.details)}")
    if args.all:  # one row per outcome: the per-op table would list ~200 ops
        rows = [rows[-1]]
    emit("onnx_conformance_all" if args.all else "onnx_conformance", rows, ["op", "tried", "passed", "refused", "wrong", "crashed"], args.json, payload)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
