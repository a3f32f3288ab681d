"""celosia.check / `celosia check`: every unsupported op listed up front; compile runs it first."""

import json

import numpy as np
import pytest

import celosia
from celosia.cli import main
from celosia.errors import ScheduleError
from celosia.frontend.support import UnsupportedOpsError


def test_supported_model_is_ok():
    report = celosia.check("mlp-tiny")
    assert report.ok and report.items == []


def test_transformer_lists_every_op_without_a_unit():
    report = celosia.check("moe-vit-digits")
    assert not report.ok
    kinds = {u.op for u in report.items}
    assert kinds == {"MoE"}
    # the MLP's GELU runs fused into the Linear array's epilogue; the class token's Concat, the
    # positional Add and the class-token Slice run on the vector unit, the norms on the row unit,
    # attention on the attention unit and all(u.stage == "hardware" for u in report.items)
    assert [u.node for u in report.items] == ["blocks.1.mlp"]


def test_torch_module_check_names_source_lines():
    torch = pytest.importorskip("torch")

    class Net(torch.nn.Module):
        def forward(self, x):
            return torch.cumsum(torch.relu(x), dim=-1).flip(-1)

    report = celosia.check(Net(), (torch.randn(2, 4),))
    assert [u.op for u in report.items] == ["aten.cumsum", "aten.flip"]
    assert all(u.stage == "import" and "test_frontend_check.py" in u.source for u in report.items)
    with pytest.raises(UnsupportedOpsError):
        report.raise_if_unsupported()


def test_cli_check_exit_codes_and_json(capsys):
    assert main(["check", "mlp-tiny"]) == 0
    capsys.readouterr()
    assert main(["check", "gpt-tiny", "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is False and any(u["op"] == "Embedding" for u in data["unsupported"])
    assert main(["check", "no-such-model"]) == 2


def test_cli_check_onnx_file(tmp_path, capsys):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Relu", ["x"], ["r"], name="relu"),
                           helper.make_node("Erf", ["r"], ["y"], name="erf1")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.DOUBLE, (1, 4))],
                          [helper.make_tensor_value_info("y", TensorProto.DOUBLE, (1, 4))])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    assert main(["check", str(path)]) == 1
    text = capsys.readouterr().out
    assert "erf1" in text and "Erf" in text


def test_compile_runs_the_check_first(tmp_path):
    out = tmp_path / "build"
    with pytest.raises(ScheduleError, match="no hardware unit") as info:
        celosia.compile("moe-vit-digits", out_dir=out, bitstream=False)
    assert "MoE" in str(info.value) and "blocks.1.mlp" in str(info.value)
    assert not out.exists() and not (tmp_path / ".build.partial").exists()


def test_prepare_quantizes_an_onnx_file(tmp_path):
    from test_float_reference import to_onnx

    from celosia.frontend.zoo import get_model

    path = tmp_path / "mlp.onnx"
    import onnx

    onnx.save(to_onnx(get_model("mlp-micro").build(1)), path)
    prep = celosia.prepare(str(path), "ulx3s-85f", quant="w8a16")
    assert prep.qgraph.ops("Linear") and np.isfinite(prep.estimate["dsp"])


def test_check_groups_nodes_by_op_kind_with_one_hint(capsys):
    from celosia.cli import main

    report = celosia.check("gpt-tiny")
    groups = {g.op: g for g in report.by_kind()}
    assert groups["SiLU"].nodes == ["blocks.0.mlp.act", "blocks.1.mlp.act"]
    assert main(["check", "gpt-tiny"]) == 1
    text = capsys.readouterr().out
    assert text.count("the accelerator runs") == 1 and text.count("SiLU") >= 1
    assert [g["op"] for g in report.to_dict()["by_op"]] == list(groups)
