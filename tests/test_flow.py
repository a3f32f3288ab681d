"""celosia.flow: the compile as one ordered list of named stages with typed results."""

import ast
import json
import subprocess
import sys
from dataclasses import is_dataclass
from pathlib import Path

import numpy as np
import pytest

import celosia
import celosia.flow as flow
from celosia.errors import OptionError, UnknownNameError
from celosia.progress import Progress

STAGE_NAMES = ["import", "check", "lower", "schedule", "generate", "simulate", "bitstream", "report"]

REPORT_FIELDS = {  # report.json before the flow moved out of celosia/__init__.py: every name stays
    "model", "board", "quant", "batch", "lanes", "cycles", "ideal_cycles", "predicted_cycles",
    "cycles_over_ideal", "macs", "rtl_matches_golden", "samples", "max_abs_err_vs_float", "fmax_mhz",
    "target_mhz", "timing_met", "resources", "memory_map", "files",
} | {  # added with the encoder on the accelerator
    "roofline_cycles", "cycles_over_roofline", "op_cycles", "scratchpad", "rtl_accuracy", "golden_accuracy",
    "float_accuracy", "test_size", "inferences_per_s", "ops_per_dsp_per_cycle",
}


def test_stage_list_prints():
    cmd = "import celosia.flow as f; print([s.name for s in f.STAGES])"
    out = subprocess.run([sys.executable, "-c", cmd], capture_output=True, text=True, check=True).stdout
    assert out.strip() == repr(STAGE_NAMES)


def test_stages_are_typed_functions():
    for stage in flow.STAGES:
        assert callable(stage.run) and stage.title
        hints = stage.run.__annotations__
        assert "return" in hints and hints["return"] not in ("dict", "None"), stage.name
    for cls in (flow.Imported, flow.Lowered, flow.Prepared, flow.Generated, flow.Simulated, flow.Report):
        assert is_dataclass(cls)


def test_package_init_only_reexports():
    tree = ast.parse(Path(celosia.__file__).read_text())
    assert not [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    for name in ("compile", "prepare", "simulate", "check"):
        assert getattr(celosia, name) is getattr(flow, name)


def test_stages_run_one_by_one():
    from celosia.boards.registry import get_board
    from celosia.ir.pipeline import FLOAT_PASSES
    from celosia.ir.quantize import Precision

    imported = flow.import_model("mlp-micro")
    assert imported.name == "mlp-micro" and imported.graph.inputs
    assert flow.check_ops(imported).ok
    lowered = flow.lower_model(imported, Precision.parse("w8a16"), quant="w8a16")
    assert lowered.passes == [name for name, _ in FLOAT_PASSES] + ["quantize"]
    prep = flow.schedule_model(lowered, get_board("icebreaker"))
    assert isinstance(prep, flow.Prepared) and prep.program.lanes == 2 and prep.quant == "w8a16"
    again = celosia.prepare("mlp-micro", "icebreaker")
    assert again.program.listing() == prep.program.listing() and again.scratch_depth == prep.scratch_depth


def test_prepare_reports_its_stages():
    seen = []

    class Recorder(Progress):
        def stage_done(self, name, seconds):
            seen.append(name)

    celosia.prepare("mlp-micro", "icebreaker", progress=Recorder())
    assert seen == ["import", "lower", "schedule"]


@pytest.mark.parametrize("call", [
    lambda: celosia.prepare("mlp-micro", "icebreaker", batch=0),
    lambda: celosia.prepare("mlp-micro", "icebreaker", calibration=-1),
    lambda: celosia.compile("mlp-micro", "icebreaker", "never", samples=0),
    lambda: celosia.compile("mlp-micro", "icebreaker", "never", batch=True),
    lambda: celosia.check("mlp-micro", batch=0),
])
def test_counts_are_checked_first(call, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OptionError, match="must be"):
        call()
    assert not list(tmp_path.iterdir())


def test_unknown_board_hint_names_the_command():
    with pytest.raises(UnknownNameError, match="unknown board 'de10'") as info:
        celosia.prepare("mlp-micro", "de10")
    assert "`celosia boards`" in info.value.hint


def _torch_mlp():
    torch = pytest.importorskip("torch")

    class Mlp(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Linear(16, 32)
            self.b = torch.nn.Linear(32, 8)

        def forward(self, x):
            return self.b(torch.relu(self.a(x)))

    torch.manual_seed(0)
    return Mlp(), (torch.randn(1, 16),)


def test_pytorch_module_through_check_and_prepare():
    model, example = _torch_mlp()
    assert celosia.check(model, example).ok
    prep = celosia.prepare(model, "icebreaker", example_inputs=example)
    assert prep.program.name == "Mlp" and prep.qgraph.ops("Linear")
    sample = prep.sampler(2, 0)
    assert len(sample) == 2 and sample[0]["x"].shape == (1, 16)


def test_torch_import_prints_no_future_warning():
    code = (
        "import torch, celosia\n"
        "m = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU())\n"
        "assert celosia.check(m, (torch.randn(1, 4),)).ok\n"
    )
    proc = subprocess.run([sys.executable, "-W", "default", "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "FutureWarning" not in proc.stderr and "LeafSpec" not in proc.stderr


@pytest.mark.slow
def test_compile_a_pytorch_module_with_the_default_folder(tmp_path, monkeypatch):
    """compile(nn_module, example_inputs=..., board=...) from another cwd: default out_dir 'build'."""
    model, example = _torch_mlp()
    monkeypatch.chdir(tmp_path)
    steps, done, details = [], [], []

    class Recorder(Progress):
        def step(self, message):
            steps.append(message)

        def detail(self, text):
            details.append(text)

        def stage_done(self, name, seconds):
            done.append(name)

    report = celosia.compile(model, example_inputs=example, board="icebreaker", bitstream=False, samples=2,
                             progress=Recorder())
    out = tmp_path / "build"
    assert isinstance(report, flow.Report) and report.out_dir == out
    assert report.rtl_matches_golden and report.cycles == report.predicted_cycles
    assert done == [n for n in STAGE_NAMES if n != "bitstream"] == list(report.stage_seconds)
    assert len(steps) == len(done) and "sample 2/2" in details and any("compiling C++" in d for d in details)
    on_disk = json.loads((out / "report.json").read_text())
    assert set(on_disk) == REPORT_FIELDS and on_disk == report.to_dict()
    assert (out / on_disk["files"]["verilog"]).exists() and (out / "program.txt").exists()
    sim = celosia.simulate(celosia.prepare(model, "icebreaker", example_inputs=example), "sim here", samples=1)
    assert sim.rtl_matches_golden and sim.verilog == tmp_path / "sim here" / "celosia_accel.v"
    assert sim.to_dict()["cycles"] == sim.cycles and np.isfinite(sim.max_abs_err_vs_float)
