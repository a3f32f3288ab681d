"""ONNX conformance: every single-node backend test case of the transformer/MoE ops through the importer.

The cases come from the onnx wheel (``collect_testcases``; see benchmarks/onnx_conformance.py for
the comparison and its tolerances). Each case must either match its stored outputs or, if it is
in the explicit list of expected refusals below, raise a CelosiaError giving that reason. No case
may be wrong or crash, and no case may be refused for its opset (opsets 11 to 16 are upgraded).
"""

from __future__ import annotations

import re
import sys
from functools import lru_cache
from pathlib import Path

import pytest

pytest.importorskip("onnx")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import onnx_conformance as conf  # noqa: E402
from onnx import helper  # noqa: E402

CASES = {c.name: c for c in conf.collect()}

#: Cases the IR does not represent: case-name pattern -> (text the refusal names, why).
EXPECTED_REFUSALS = {
    r"test_(add|sub|mul|div)_u?int\d+$|test_div_int32_trunc$":
        ("integer tensors", "integer arithmetic (wraparound, truncating division) is not float semantics"),
    r"test_pow_types_int(32|64)_(int|float)(32|64)$":
        ("integer tensors", "an integer base makes Pow integer arithmetic"),
    r"_empty_set(_bool|_non_reduced_axis_zero)?$|_zero_size_splits_opset1[38]$|test_reshape_allowzero_reordered$":
        ("empty dimension", "a zero-size tensor: every IR tensor holds at least one element"),
    r"test_slice_start_out_of_bounds$": ("is empty", "the slice selects nothing"),
    r"test_gemm_default_scalar_bias$|test_pow_bcast_scalar$":
        ("scalar", "a scalar graph input: IR inputs have at least one dimension"),
}


def _attention_refusal(case) -> str | None:
    """Attention beyond the IR's op: masks other than (B, 1, 1, Tk) booleans (none in the suite),
    softcap, qk output modes, local windows, KV cache inputs/outputs, extra outputs
    (the same rule as tests/test_attention_float.py)."""
    node = case.model.graph.node[0]
    at = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    windowed = at.get("left_window_size", -1) != -1 or at.get("right_window_size", -1) != -1
    if (len([i for i in node.input if i]) > 3 or len([o for o in node.output if o]) > 1 or at.get("softcap")
            or at.get("qk_matmul_output_mode") or windowed):
        return "Attention"
    return None


def expected_refusal(case) -> str | None:
    """The text the refusal of ``case`` must contain, or None if it must pass."""
    if case.op == "Attention":
        return _attention_refusal(case)
    for pattern, (text, _why) in EXPECTED_REFUSALS.items():
        if re.search(pattern, case.name):
            return text
    return None


@lru_cache(maxsize=None)
def result(name: str) -> conf.Result:
    return conf.run_case(CASES[name])


def test_the_suite_covers_every_op_of_the_issue():
    ops = {c.op for c in CASES.values()}
    assert ops == set(conf.OPS)
    assert len(CASES) >= 450
    assert min(c.opset for c in CASES.values()) <= 13  # old opsets are in it: they must be upgraded


@pytest.mark.parametrize("name", sorted(CASES))
def test_onnx_node_case(name):
    case, res = CASES[name], result(name)
    assert res.status not in ("crashed", "wrong"), f"{res.status}: {res.reason or res.details}"
    assert "opset" not in res.reason
    want = expected_refusal(case)
    if want is None:
        assert res.status == "passed", res.reason
    else:
        assert res.status == "refused" and want in res.reason, (res.status, res.reason)


def test_the_refusal_list_names_real_cases():
    for pattern in EXPECTED_REFUSALS:
        assert any(re.search(pattern, n) for n in CASES), pattern


def test_conformance_totals():
    results = [result(n) for n in sorted(CASES)]
    summary = conf.summarize(results)
    assert summary["crashed"] == 0 and summary["wrong"] == 0 and summary["refused_for_opset"] == 0
    assert summary["passed"] >= 250
