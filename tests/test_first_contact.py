"""First contact: the README's quick start and Python API, run as written, from a fresh clone.

The commands and code are read from README.md, so these tests break when the README changes
in a way that no longer works. They run from a scratch working directory (a fresh ``git
clone`` of this checkout, or an empty folder for the Python API), with the relative paths the
README uses: the case the test suite missed before (every other test passes absolute paths).
"""

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def _section(text: str, heading: str) -> str:
    """The body of the Markdown section ``heading`` (up to the next heading of its level or above)."""
    level = len(heading) - len(heading.lstrip("#"))
    lines = text.splitlines()
    start = lines.index(heading) + 1
    end = next((i for i in range(start, len(lines))
                if re.match(r"#{1,%d} " % level, lines[i])), len(lines))
    return "\n".join(lines[start:end])


def _code_blocks(text: str, lang: str) -> list[str]:
    return re.findall(r"^```" + lang + r"\n(.*?)^```", text, re.MULTILINE | re.DOTALL)


def quick_start_commands() -> list[str]:
    """The shell lines of the README's quick start, verbatim."""
    (block,) = _code_blocks(_section(README.read_text(), "## Quick start"), "sh")
    return [line for line in block.splitlines() if line.strip()]


def python_api_examples() -> list[str]:
    return _code_blocks(_section(README.read_text(), "### Python API"), "python")


def _env() -> dict:
    """This interpreter's scripts (``celosia``, ``pytest``) first on PATH."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.pop("CELOSIA_DEBUG", None)
    return env


def run_verbatim(command: str, cwd: Path, *, extra: str = "") -> subprocess.CompletedProcess:
    """Run a README command line from ``cwd`` through the shell, as a user pastes it.

    ``pip install -e ...`` steps are skipped when celosia is already importable (it is
    installed in editable mode in the test environment; installing again would only reinstall
    the same checkout); every other step runs exactly as written, ``extra`` appended to the last.
    """
    steps = [step.strip() for step in command.split("&&")]
    assert steps, command
    run = []
    for step in steps:
        if step.startswith("pip install"):
            assert importlib.util.find_spec("celosia") is not None, "celosia is not installed: run " + step
            continue
        run.append(step)
    line = " && ".join(run) + extra
    return subprocess.run(line, shell=True, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=3600)


@pytest.fixture(scope="module")
def fresh_clone(tmp_path_factory) -> Path:
    """A fresh ``git clone`` of this checkout (its committed state: no build folders, no caches)."""
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        pytest.skip("needs git and a git checkout to clone")
    clone = tmp_path_factory.mktemp("first contact") / "clone"
    subprocess.run([git, "clone", "-q", str(ROOT), str(clone)], check=True, capture_output=True)
    return clone


def test_readme_has_the_two_quick_start_commands():
    commands = quick_start_commands()
    assert len(commands) == 2
    assert "celosia compile" in commands[0] and "pytest" in commands[1]


def test_readme_test_command_collects_the_suite():
    """The second command, `pytest`, from the checkout's root: collected only (running the whole
    suite inside one of its own tests would recurse); it must find the tests and import every
    module. It runs in this checkout, not in the clone: the installed package is this checkout's,
    and a clone's tests match it only once everything is committed."""
    proc = run_verbatim(quick_start_commands()[1], ROOT, extra=" --collect-only -q")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    count = int(re.search(r"(\d+) tests? collected", proc.stdout).group(1))
    assert count > 100 and "test_first_contact.py" in proc.stdout


@pytest.mark.slow
def test_readme_quick_start_compile(fresh_clone):
    """The README's main command, verbatim, in the clone: mlp-tiny to a verified ECP5-85F bitstream."""
    command = quick_start_commands()[0]
    out = fresh_clone / re.search(r"-o (\S+)", command).group(1)
    proc = run_verbatim(command, fresh_clone)
    assert proc.returncode == 0, proc.stderr[-5000:]
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
    assert not list(out.parent.glob(".*partial*"))
    stdout = proc.stdout.strip().splitlines()
    assert "Fmax (post-route)" in proc.stdout and f"report: {out / 'report.json'}" in proc.stdout
    assert stdout[-1].startswith("time: import") and "bitstream" in stdout[-1]


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(python_api_examples())))
def test_readme_python_api_example(tmp_path, index):
    """Each Python example of the README, verbatim, from an empty working directory."""
    code = python_api_examples()[index]
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    proc = subprocess.run([sys.executable, "-c", code], cwd=scratch, env=_env(), capture_output=True, text=True,
                          timeout=1800)
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert "Warning" not in proc.stderr, proc.stderr
    out = scratch / re.search(r'out_dir="([^"]+)"', code).group(1)
    report = json.loads((out / "report.json").read_text())
    assert report["rtl_matches_golden"] is True and report["cycles"] == report["predicted_cycles"]
