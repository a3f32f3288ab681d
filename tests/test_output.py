"""Output folders (celosia.output), tool progress lines, and tools run from relative folders."""

import os
from pathlib import Path

import pytest

from celosia.errors import CelosiaError, OutputExistsError, OutputPathError, ToolchainError
from celosia.output import check_output, failed_log_path, resolve_path, staged_output
from celosia.progress import as_progress, format_seconds


def test_resolve_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_path("build/x") == tmp_path / "build" / "x"
    assert resolve_path("~/out dir") == tmp_path / "home" / "out dir"
    assert resolve_path("a/../b") == tmp_path / "b"
    assert resolve_path(tmp_path / "abs") == tmp_path / "abs"


def test_staged_output_publishes_and_replaces(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with staged_output("new/deep/out") as staging:
        assert staging == tmp_path / "new" / "deep" / ".out.partial"
        (staging / "a.txt").write_text("1")
    assert (tmp_path / "new/deep/out/a.txt").read_text() == "1"
    with staged_output("new/deep/out") as staging:
        (staging / "b.txt").write_text("2")
    assert sorted(os.listdir(tmp_path / "new/deep")) == ["out"]
    assert sorted(os.listdir(tmp_path / "new/deep/out")) == ["b.txt"]


def test_staged_output_failure_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CelosiaError, match="boom"):
        with staged_output("build/x") as staging:
            (staging / "half.txt").write_text("half")
            raise CelosiaError("boom")
    assert not list(tmp_path.iterdir())  # the staging folder and the 'build' parent it made are gone


def test_failed_tool_log_is_copied_next_to_the_output(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ToolchainError) as info:
        with staged_output(out) as staging:
            log = staging / "tool" / "run.log"
            log.parent.mkdir()
            log.write_text("line 1\nthe real error\n")
            raise ToolchainError(f"the tool failed; log: {log}", hint=f"read {log}", log=log)
    kept = failed_log_path(out)
    assert kept == tmp_path / "out-failed.log" and "the real error" in kept.read_text()
    assert info.value.log == kept and str(kept) in info.value.message and info.value.hint == f"read {kept}"
    assert str(kept) in str(info.value) and ".partial" not in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out-failed.log"]


def test_check_output_refusals(tmp_path):
    (tmp_path / "file").write_text("x")
    (tmp_path / "folder").mkdir()
    with pytest.raises(OutputExistsError, match="is a file, not a folder"):
        check_output(tmp_path / "file", force=True)
    with pytest.raises(OutputExistsError, match="already exists"):
        check_output(tmp_path / "folder")
    assert check_output(tmp_path / "folder", force=True) == tmp_path / "folder"
    with pytest.raises(OutputPathError, match="'.*file' is a file, not a folder"):
        check_output(tmp_path / "file" / "a" / "b")
    with pytest.raises(OutputExistsError):
        with staged_output(tmp_path / "file"):
            pass
    assert (tmp_path / "file").read_text() == "x"


def test_progress_helpers():
    seen = []
    p = as_progress(seen.append)
    p.step("one")
    p.detail("ignored")
    p.stage_done("x", 1.0)
    assert seen == ["one"]
    assert format_seconds(0.42) == "0.4 s" and format_seconds(42) == "42 s" and format_seconds(125) == "2 min 05 s"
    with pytest.raises(TypeError):
        as_progress(42)


@pytest.mark.parametrize("tool, line, status", [
    ("yosys", "2.24. Executing ABC pass (technology mapping using ABC).", "2.24 ABC pass (technology mapping using ABC)"),
    ("yosys", "   Number of cells:  1234", None),
    ("nextpnr-ecp5", "Info: Packing LUTs...", "Packing LUTs"),
    ("nextpnr-ecp5", "Info:     at initial placer iter 3, wirelen = 5162", "placing: initial placement 3"),
    ("nextpnr-ecp5", "Info:     at iteration #17, type ALL: wirelen solved = 40809", "placing: iteration 17"),
    ("nextpnr-ecp5", "Info:      19000 |     5578      13421 |  162   838 |     35998|       1.05      38.70|",
     "routing: 35998 arcs left (iteration 19000)"),
    ("nextpnr-ice40", "Info: Routing 46618 arcs.", "Routing 46618 arcs"),
    ("ecppack", "Preparing to run yowasp-ecppack. This might take a while...", None),
])
def test_tool_status_lines(tool, line, status):
    from celosia.boards.flow import tool_status

    assert tool_status(tool, line) == status


@pytest.mark.slow
def test_open_flow_from_a_relative_folder(tmp_path, monkeypatch):
    """build_bitstream with a relative folder holding a space: the failing tool's log is where it says."""
    from test_boards import _UnknownCell

    from celosia.boards.flow import build_bitstream

    monkeypatch.chdir(tmp_path)
    status = []
    with pytest.raises(ToolchainError) as info:
        build_bitstream(_UnknownCell(), "icebreaker", "rel dir/b", on_status=status.append)
    log = tmp_path / "rel dir" / "b" / "top.yosys.log"
    assert info.value.log == log and str(log) in info.value.message and "NO_SUCH_CELL" in log.read_text()
    assert status and all(s.startswith("yosys: ") for s in status)


@pytest.mark.slow
def test_harness_builds_in_a_relative_folder(tmp_path, monkeypatch):
    """The bug of the README quick start: Verilator ran in another cwd with a relative -Mdir."""
    from amaranth.back import verilog
    from test_sim_harness import Counter

    from celosia.sim.harness import VerilatedDesign

    monkeypatch.chdir(tmp_path)
    Path("src dir").mkdir()
    Path("src dir/counter_top.v").write_text(verilog.convert(Counter(), name="counter_top"))
    status = []
    with VerilatedDesign.build("src dir/counter_top.v", "counter_top", "build dir/v", progress=status.append) as dut:
        assert dut.library.is_absolute() and dut.library.parent == tmp_path / "build dir" / "v"
        dut.reset()
        dut.set("en", 1)
        dut.tick(5)
        assert dut.get("count") == 5
    assert status[0] == "verilating counter_top" and "linking" in status
    assert any(s.startswith("compiling C++: ") for s in status)
