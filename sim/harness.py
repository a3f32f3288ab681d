"""A generated Verilator C++ harness driven through :mod:`ctypes`.

The PyPI ``pyverilator`` does not work with Verilator 5, so Celosia generates its own
harness: :meth:`VerilatedDesign.build` parses the top module's ports from the
Verilog, verilates it with ``--cc``, renders ``rtl_templates/harness.cpp.j2`` into a
small C ABI around the model, compiles everything into a shared library and loads it
with :mod:`ctypes`.

Every call crosses into C with an integer port id resolved once at load time; loops
(:meth:`VerilatedDesign.tick`, :meth:`VerilatedDesign.run_until`,
:meth:`VerilatedDesign.run_vectors`) run entirely in C++.

Libraries are cached in the build folder under a name that contains a hash of the
sources, the options, the harness template, the Verilator installation and the C++
compiler: building the same design again only loads the library. Several designs
(and several instances of one design) may be loaded in one process.

Example
-------
>>> with VerilatedDesign.build("counter.v", "counter", Path("build")) as dut:  # doctest: +SKIP
...     dut.reset()
...     dut.set("en", 1)
...     dut.tick(10)
...     dut.get("count")
10
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import json
import operator
import os
import re
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Callable, Iterator, Literal

import numpy as np
from numpy.typing import ArrayLike

from celosia.errors import SimulationError, ToolchainError
from celosia.sim.tools import verilator_exe, verilator_root

__all__ = ["Port", "VerilatedDesign", "parse_verilog_ports"]

#: Bumped whenever the generated C ABI or the build recipe changes (part of the cache key).
_HARNESS_ABI = 1
#: Class name of the verilated model (``--prefix``); every library has its own copy.
_PREFIX = "Vmodel"
_TEMPLATE = "harness.cpp.j2"

# Optimisation levels. Verilator splits the model into "fast" (evaluation) and "slow"
# (construction, initial blocks, settling: run once) code. Measured with g++ 12: for
# small models -O2 evaluates ~20 % faster than -O1/-Os; from a few hundred KB of fast
# code on the three are within noise, and for a 3 MB model -O1 both compiles ~1.5x
# faster than -O2 and evaluates faster (the code is instruction-cache bound). Slow code
# uses -O0 like Verilator's own makefiles (-O1 costs 4x the compile time).
_OPT_FAST = "-O2"
_OPT_FAST_LARGE = "-O1"
_FAST_OPT_LARGE_BYTES = 1_000_000
_OPT_SLOW = "-O0"
#: Models with less generated C++ than this compile as one translation unit.
_UNITY_BYTES = 512_000
_OPT_RUNTIME = "-O2"
_OPT_HARNESS = "-O2"
_CXX_STD = "-std=c++17"
_VERILATOR_FLAGS = (
    "--cc",
    "--no-timing",
    "-Wno-fatal",
    "-Wno-WIDTH",
    "-Wno-UNOPTFLAT",
    "-Wno-UNUSED",
    "-Wno-DECLFILENAME",
)

# Status codes of the C ABI (see harness.cpp.j2).
_OK, _BAD_PORT, _FATAL, _FINISHED, _TIMEOUT = 0, -1, -2, -3, -4


@dataclass(frozen=True)
class Port:
    """One port of the top module.

    Parameters
    ----------
    name : str
        The Verilog name of the port.
    width : int
        Width in bits.
    direction : {'in', 'out'}
        ``'in'`` for inputs, ``'out'`` for outputs.
    """

    name: str
    width: int
    direction: Literal["in", "out"]


# --------------------------------------------------------------------------------------
# Verilog port parsing
# --------------------------------------------------------------------------------------

_IDENT = r"(?:\\\S+|[A-Za-z_][A-Za-z0-9_$]*)"
_DIRECTIONS = {"input": "in", "output": "out", "inout": "inout"}
_TYPE_WORDS = {
    "wire", "reg", "logic", "var", "tri", "tri0", "tri1", "wand", "wor", "triand",
    "trior", "supply0", "supply1", "uwire", "signed", "unsigned", "bit",
}
_FIXED_WIDTH_TYPES = {"integer": 32, "int": 32, "byte": 8, "shortint": 16, "longint": 64, "time": 64}


_STRIP_RE = re.compile(
    r'(\\\S+)'                                   # escaped identifier: kept verbatim
    r'|("(?:\\.|[^"\\\n])*")'                     # string: emptied
    r'|//[^\n]*|/\*.*?\*/'                          # comments
    r'|\(\*(?!\s*\))(?:"(?:\\.|[^"\\])*"|.)*?\*\)',  # attributes, but not @(*)
    re.S,
)


def _strip_verilog(text: str) -> str:
    """Remove comments, attributes and string contents, keeping escaped identifiers."""

    def repl(m: re.Match) -> str:
        if m.group(1):
            return m.group(1)
        return '""' if m.group(2) else " "

    return _STRIP_RE.sub(repl, text)


def _split_top(text: str, sep: str) -> list[str]:
    """Split ``text`` at ``sep`` outside (), [] and {}."""
    parts, depth, start = [], 0, 0
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\":
            while i < len(text) and not text[i].isspace():
                i += 1
            continue
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif c == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    parts.append(text[start:])
    return parts


def _balanced(text: str, start: int) -> int:
    """Index just past the parenthesis group opening at ``text[start] == '('``."""
    depth = 0
    i = start
    while i < len(text):
        c = text[i]
        if c == "\\":
            while i < len(text) and not text[i].isspace():
                i += 1
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise ValueError("unbalanced parentheses")


def _unescape(name: str) -> str:
    return name[1:] if name.startswith("\\") else name


def _range_width(rng: str) -> int | None:
    m = re.fullmatch(r"\[\s*(-?\d+)\s*:\s*(-?\d+)\s*\]", rng)
    if m is None:
        return None
    return abs(int(m.group(1)) - int(m.group(2))) + 1


def _parse_decl(decl: str, inherit: tuple[str, int | None] | None, where: str
                ) -> tuple[str | None, str, int | None, tuple[str, int | None]]:
    """Parse ``[direction] [type] [ranges] name [= init]``.

    Returns (direction, name, width, (direction, width) to inherit).
    """
    decl = _split_top(decl, "=")[0].strip()
    tokens = re.findall(r"\\\S+|\[[^\]]*\]|[A-Za-z_][A-Za-z0-9_$]*|\S", decl)
    if not tokens:
        raise ValueError(f"empty port declaration in {where}")
    direction = None
    if tokens[0] in _DIRECTIONS:
        direction = _DIRECTIONS[tokens[0]]
        tokens = tokens[1:]
    name_pos = max((k for k, t in enumerate(tokens) if re.fullmatch(_IDENT, t)), default=None)
    if name_pos is None:
        raise ValueError(f"cannot find the port name in '{decl}' ({where})")
    if any(t.startswith("[") for t in tokens[name_pos + 1 :]):
        raise ValueError(f"unpacked array port '{decl}' is not supported ({where})")
    name = _unescape(tokens[name_pos])
    head = tokens[:name_pos]
    if direction is None and not head and inherit is not None:
        return inherit[0], name, inherit[1], inherit
    width: int | None = 1
    for tok in head:
        if tok.startswith("["):
            w = _range_width(tok)
            width = None if (w is None or width is None) else width * w
        elif tok in _FIXED_WIDTH_TYPES:
            width = _FIXED_WIDTH_TYPES[tok] if width is not None else None
        elif tok not in _TYPE_WORDS:
            width = None  # a user type or parameter: Verilator's header tells the width
    if direction is None and inherit is not None:
        direction = inherit[0]
    return direction, name, width, (direction, width)


def parse_verilog_ports(source: str, top: str) -> list[tuple[str, str, int | None]]:
    """Parse the ports of module ``top`` from Verilog source text.

    Understands the non-ANSI style written by yosys / Amaranth (``module top(clk,
    a); input [15:0] a; ...``) and ANSI headers (``module top(input clk, output
    [3:0] q);``).

    Parameters
    ----------
    source : str
        Verilog text, possibly holding several modules.
    top : str
        Name of the module to parse.

    Returns
    -------
    list of (name, direction, width)
        In header order. ``direction`` is ``'in'``, ``'out'`` or ``'inout'``;
        ``width`` is ``None`` when it depends on parameters or types.

    Raises
    ------
    KeyError
        If the module is not in ``source``.
    ValueError
        If the header cannot be parsed.
    """
    text = _strip_verilog(source)
    mod_re = re.compile(r"\b(?:macro)?module\s+(?:(?:static|automatic)\s+)?(" + _IDENT + r")")
    for m in mod_re.finditer(text):
        if _unescape(m.group(1)) == top:
            break
    else:
        raise KeyError(top)
    pos = m.end()
    where = f"module {top}"
    # optional package imports and parameter port list
    while True:
        rest = text[pos:]
        stripped = rest.lstrip()
        pos += len(rest) - len(stripped)
        if stripped.startswith("import"):
            pos = text.index(";", pos) + 1
        elif stripped.startswith("#"):
            pos = _balanced(text, text.index("(", pos))
        else:
            break
    port_list = ""
    if text[pos] == "(":
        end = _balanced(text, pos)
        port_list = text[pos + 1 : end - 1]
        pos = end
    semi = text.index(";", pos)
    end_m = re.compile(r"\bendmodule\b").search(text, semi)
    body = text[semi + 1 : end_m.start() if end_m else len(text)]

    items = [p.strip() for p in _split_top(port_list, ",")] if port_list.strip() else []
    ansi = any(re.match(r"(input|output|inout|ref)\b", it) for it in items)
    ports: list[tuple[str, str, int | None]] = []
    if ansi:
        inherit = None
        for it in items:
            if it.startswith("."):
                raise ValueError(f"port expression '{it}' is not supported ({where})")
            direction, name, width, inherit = _parse_decl(it, inherit, where)
            if direction is None:
                raise ValueError(f"port '{name}' has no direction ({where})")
            ports.append((name, direction, width))
        return ports

    names = []
    for it in items:
        if not re.fullmatch(_IDENT, it):
            raise ValueError(f"port expression '{it}' is not supported ({where})")
        names.append(_unescape(it))
    # Declarations inside functions and tasks are not ports.
    body = re.sub(r"\bfunction\b.*?\bendfunction\b", " ", body, flags=re.S)
    body = re.sub(r"\btask\b.*?\bendtask\b", " ", body, flags=re.S)
    decls: dict[str, tuple[str, int | None]] = {}
    for stmt in _split_top(body, ";"):
        stmt = stmt.strip()
        if not re.match(r"(input|output|inout)\b", stmt):
            continue
        inherit = None
        for part in _split_top(stmt, ","):
            direction, name, width, inherit = _parse_decl(part, inherit, where)
            decls[name] = (direction, width)  # type: ignore[assignment]
    for name in names:
        if name not in decls:
            raise ValueError(f"port '{name}' has no input/output declaration ({where})")
        ports.append((name, *decls[name]))
    return ports


def _encode_name(name: str) -> str:
    """The C++ member name Verilator gives a port (``AstNode::encodeName``)."""
    out = []
    i = 0
    while i < len(name):
        c = name[i]
        if (c.isascii() and c.isalpha()) if i == 0 else (c.isascii() and c.isalnum()):
            out.append(c)
        elif c == "_":
            if i + 1 < len(name) and name[i + 1] == "_":
                out.append("___05F")
                i += 1
            else:
                out.append("_")
        else:
            out.append("__0%02X" % (ord(c) & 0xFF))
        i += 1
    return "".join(out)


_HEADER_PORT = re.compile(
    r"VL_(IN|OUT|INOUT)(8|16|64|W)?\(\s*&?\s*(\w+)\s*,\s*(-?\d+)\s*,\s*(-?\d+)\s*(?:,\s*(\d+)\s*)?\)"
)
_CTYPES = {"8": "CData", "16": "SData", "": "IData", "64": "QData", "W": "VlWide"}


def _header_ports(header: str) -> dict[str, tuple[str, int, str, int]]:
    """C++ name -> (direction, width, ctype, words) from the model's header."""
    result = {}
    for m in _HEADER_PORT.finditer(header):
        kind, suffix, cname, msb, lsb, words = m.groups()
        width = abs(int(msb) - int(lsb)) + 1
        direction = {"IN": "in", "OUT": "out", "INOUT": "inout"}[kind]
        result[cname] = (direction, width, _CTYPES[suffix or ""], int(words or 0))
    return result


# --------------------------------------------------------------------------------------
# Toolchain helpers
# --------------------------------------------------------------------------------------


def _absolute(path: str | os.PathLike) -> Path:
    """``path`` with ``~`` expanded, made absolute against the current directory."""
    return Path(os.path.abspath(os.path.expanduser(os.fspath(path))))


@lru_cache(maxsize=None)
def _cxx() -> tuple[str, str]:
    """(path, identity) of the C++ compiler."""
    candidates = [os.environ.get("CXX"), "c++", "g++", "clang++"]
    for cand in candidates:
        if cand and (exe := shutil.which(cand)):
            try:
                ver = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60)
            except OSError:
                continue
            return exe, (ver.stdout.splitlines() or [""])[0]
    raise ToolchainError(
        "no C++ compiler found (tried $CXX, c++, g++, clang++) to build the Verilator harness",
        hint="install a C++ compiler, e.g. 'apt-get install g++', or set CXX",
    )


@lru_cache(maxsize=None)
def _verilator_identity() -> str:
    root = verilator_root()
    parts = []
    try:
        import verilator  # noqa: PLC0415

        parts.append(str(getattr(verilator, "__version__", "")))
    except ImportError:  # pragma: no cover
        pass
    for rel in ("bin/verilator_bin", "include/verilated_config.h"):
        p = root / rel
        if p.exists():
            st = p.stat()
            parts.append(f"{rel}:{st.st_size}:{int(st.st_mtime)}")
    return f"{root}|" + "|".join(parts)


def _relevant_lines(text: str, pattern: str, limit: int = 12) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    picked = [ln for ln in lines if re.search(pattern, ln)]
    if picked:
        # keep a line of context after each hit (compiler notes, source excerpts)
        keep = []
        for k, ln in enumerate(lines):
            if re.search(pattern, ln) or (k > 0 and re.search(pattern, lines[k - 1])):
                keep.append(ln)
        picked = keep
    else:
        picked = lines[-limit:]
    out = picked[:limit]
    if len(picked) > limit:
        out.append(f"... ({len(picked) - limit} more lines)")
    return "\n".join("    " + ln for ln in out)


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _parse_classes_mk(text: str) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Lists (``VAR += a b``) and scalars (``VAR = x``) of a ``*_classes.mk``."""
    text = text.replace("\\\n", " ")
    lists: dict[str, list[str]] = {}
    scalars: dict[str, str] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if m := re.match(r"(\w+)\s*\+=\s*(.*)", line):
            lists.setdefault(m.group(1), []).extend(m.group(2).split())
        elif m := re.match(r"(\w+)\s*=\s*(.*)", line):
            scalars[m.group(1)] = m.group(2).strip()
    return lists, scalars


def _run_compiles(jobs: list[tuple[list[str], Path, str]], n_jobs: int,
                  progress: Callable[[str], None] | None = None) -> None:
    """Run compiler commands ``(argv, output, label)``, ``n_jobs`` at a time.

    ``progress`` receives ``"compiling C++: k/n"`` as the jobs finish.
    """

    def run(job: tuple[list[str], Path, str]) -> tuple[str, str, Path] | None:
        argv, out, label = job
        proc = subprocess.run(argv, capture_output=True, text=True)
        if proc.returncode == 0:
            return None
        log = out.with_name(out.name + ".log")
        log.write_text(" ".join(argv) + "\n" + proc.stdout + proc.stderr)
        return label, proc.stderr or proc.stdout, log

    failures = []
    if progress and jobs:
        progress(f"compiling C++: 0/{len(jobs)}")
    with ThreadPoolExecutor(max_workers=max(1, n_jobs)) as pool:
        futures = [pool.submit(run, job) for job in jobs]
        for done, future in enumerate(as_completed(futures), 1):
            if (failure := future.result()) is not None:
                failures.append(failure)
            if progress:
                progress(f"compiling C++: {done}/{len(jobs)}")
    if failures:
        label, text, log = failures[0]
        raise ToolchainError(
            f"the C++ compiler failed on {label}:\n{_relevant_lines(text, r'error|Error')}",
            hint=f"the Verilog may use a construct this Verilator or compiler cannot handle; "
            f"the full log is {log}",
            log=log,
        )


# --------------------------------------------------------------------------------------
# The design
# --------------------------------------------------------------------------------------


class VerilatedDesign:
    """A verilated design loaded into this process.

    Build it with :meth:`build`; the constructor loads an already built library.
    Ports are read and written by name; values of any width are Python ints
    (unsigned). Outputs read after :meth:`set` see the new inputs: the model is
    settled lazily on the first read. Every instance owns its own model state, so
    several instances of one library (or of different libraries) can run side by side.

    Parameters
    ----------
    library : Path
        A ``libcelosia_*.so`` made by :meth:`build`.
    top : str
        Name of the top module (for messages).
    clock, reset : str or None
        The clock and reset inputs, as given to :meth:`build`.
    trace_path : Path, optional
        Where to write the VCD if the library was built with tracing; defaults to
        ``<library folder>/<top>.vcd``.
    build_seconds : float, optional
        Reported as :attr:`build_seconds`.
    cached : bool, optional
        Reported as :attr:`cached`.

    Attributes
    ----------
    ports : dict of str to Port
        The ports of the top module, in header order.
    top : str
        Name of the top module.
    library : Path
        The shared library holding the model and the harness.
    trace_path : Path or None
        Where the VCD goes when the design was built with ``trace=True``.
    build_seconds : float
        Time :meth:`build` spent verilating and compiling (0 on a cache hit).
    cached : bool
        True if :meth:`build` reused a library from the build folder.
    clock, reset_port : str or None
        The clock driven by :meth:`tick` and the reset driven by :meth:`reset`.
    """

    ports: dict[str, Port]

    def __init__(self, library: Path, top: str, *, clock: str | None, reset: str | None,
                 trace_path: Path | None = None, build_seconds: float = 0.0, cached: bool = False):
        self.top = top
        self.library = Path(os.path.abspath(os.path.expanduser(library)))
        self.build_seconds = build_seconds
        self.cached = cached
        self._h: int | None = None
        lib = ctypes.CDLL(str(self.library), mode=os.RTLD_LOCAL | os.RTLD_NOW)
        self._lib = lib
        vp, c_int, u64 = ctypes.c_void_p, ctypes.c_int, ctypes.c_uint64
        sig = {
            "celosia_num_ports": (c_int, []),
            "celosia_port_name": (ctypes.c_char_p, [c_int]),
            "celosia_port_width": (c_int, [c_int]),
            "celosia_port_dir": (c_int, [c_int]),
            "celosia_clock_port": (c_int, []),
            "celosia_trace_enabled": (c_int, []),
            "celosia_new": (vp, [ctypes.c_char_p]),
            "celosia_free": (None, [vp]),
            "celosia_last_error": (ctypes.c_char_p, [vp]),
            "celosia_cycle": (u64, [vp]),
            "celosia_eval": (c_int, [vp]),
            "celosia_tick": (c_int, [vp, u64]),
            "celosia_run_until": (c_int, [vp, c_int, u64, u64, ctypes.POINTER(u64)]),
            "celosia_set_u64": (c_int, [vp, c_int, u64]),
            "celosia_get_u64": (u64, [vp, c_int]),
            "celosia_set_wide": (c_int, [vp, c_int, ctypes.c_char_p]),
            "celosia_get_wide": (c_int, [vp, c_int, ctypes.c_char_p]),
            "celosia_run_vectors": (c_int, [vp, u64, c_int, vp, vp, c_int, vp, vp, ctypes.POINTER(u64)]),
        }
        for fname, (restype, argtypes) in sig.items():
            fn = getattr(lib, fname)
            fn.restype = restype
            fn.argtypes = argtypes

        self.ports = {}
        self._index: dict[str, int] = {}
        for i in range(lib.celosia_num_ports()):
            name = lib.celosia_port_name(i).decode()
            direction = "in" if lib.celosia_port_dir(i) == 0 else "out"
            self.ports[name] = Port(name, lib.celosia_port_width(i), direction)
            self._index[name] = i
        # name -> (index, width, limit) for the fast paths
        self._inputs = {
            p.name: (self._index[p.name], p.width, 1 << p.width)
            for p in self.ports.values() if p.direction == "in"
        }
        self._readable = {p.name: (self._index[p.name], p.width) for p in self.ports.values()}
        self._wide_buf = {
            p.name: ctypes.create_string_buffer(4 * ((p.width + 31) // 32))
            for p in self.ports.values() if p.width > 64
        }
        self.clock = clock
        self.reset_port = reset
        if clock is not None:
            self._inputs.pop(clock, None)  # tick() drives the clock
        self.trace_path: Path | None = None
        if lib.celosia_trace_enabled():
            self.trace_path = (Path(os.path.abspath(os.path.expanduser(trace_path))) if trace_path
                               else self.library.parent / f"{top}.vcd")

        h = lib.celosia_new(str(self.trace_path).encode() if self.trace_path else None)
        if not h:
            raise SimulationError(
                f"could not instantiate the verilated model of '{top}'",
                hint="out of memory, or the trace file could not be opened",
            )
        self._h = h
        self._set_u64 = lib.celosia_set_u64
        self._get_u64 = lib.celosia_get_u64
        self._set_wide = lib.celosia_set_wide
        self._get_wide = lib.celosia_get_wide
        self._tick = lib.celosia_tick

    # ------------------------------------------------------------------ building

    @classmethod
    def build(
        cls,
        verilog_files: list[Path] | Path,
        top: str,
        build_dir: Path,
        *,
        clock: str | None = "clk",
        reset: str | None = "rst",
        trace: bool = False,
        trace_path: Path | None = None,
        jobs: int | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> "VerilatedDesign":
        """Verilate, compile and load ``top`` (or reuse a cached library).

        Parameters
        ----------
        verilog_files : Path or list of Path
            Verilog sources; one of them defines ``top``.
        top : str
            Name of the top module. It must not equal one of its port names.
        build_dir : Path
            Folder for the library (created if missing). Libraries are named
            ``libcelosia_<top>_<hash>.so``; a build of identical sources and options
            is reused without rebuilding (the key covers the files' contents, not
            files they `include). Verilator runtime objects are cached here too and
            shared by all designs built in the folder.
        clock : str or None, optional
            The clock input driven by :meth:`tick`; ``None`` for a combinational design.
        reset : str or None, optional
            The synchronous reset input driven by :meth:`reset`; ``None`` if there is none.
        trace : bool, optional
            Build with VCD tracing (``--trace``); slower. Off by default.
        trace_path : Path, optional
            Where to write the VCD; defaults to ``build_dir / f"{top}.vcd"``.
        jobs : int, optional
            Parallel compiler processes; defaults to ``min(2, cpu count)``.
        progress : callable(str), optional
            Receives short status texts while a library is built ("verilating",
            "compiling C++: 2/5", "linking"); not called on a cache hit.

        Paths may be relative (to the current directory) or start with ``~``; they are made
        absolute here, since Verilator and the compiler run in other working directories.

        Returns
        -------
        VerilatedDesign

        Raises
        ------
        ToolchainError
            If the Verilog cannot be parsed, the module or the clock / reset port is
            missing, or Verilator or the C++ compiler fails.
        """
        if isinstance(verilog_files, (str, os.PathLike)):
            verilog_files = [verilog_files]
        files = [_absolute(f) for f in verilog_files]
        if not files:
            raise ToolchainError(f"no Verilog files given for module '{top}'", hint="pass at least one .v file")
        sources = []
        for f in files:
            try:
                sources.append(f.read_text(errors="replace"))
            except OSError as exc:
                raise ToolchainError(f"cannot read Verilog file {f}: {exc.strerror}",
                                     hint="check the path passed to VerilatedDesign.build") from exc
        parsed = cls._parse_top(files, sources, top)
        names = [p[0] for p in parsed]
        if top in names:
            raise ToolchainError(
                f"module '{top}' has a port with the same name as the module",
                hint="Verilator cannot build it; rename the top module "
                "(e.g. verilog.convert(..., name='top_' + name))",
            )
        cls._check_port(top, names, parsed, clock, "clock", "clock=None")
        cls._check_port(top, names, parsed, reset, "reset", "reset=None")

        build_dir = _absolute(build_dir)
        try:
            build_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ToolchainError(f"cannot create the Verilator build folder {build_dir}: {exc.strerror}",
                                 hint="pass a build folder you can write to") from None
        verilator_exe()  # sets PATH / VERILATOR_ROOT, fails early if missing
        cxx, cxx_id = _cxx()
        template = resources.files("celosia.rtl_templates").joinpath(_TEMPLATE).read_text()
        key = {
            "abi": _HARNESS_ABI,
            "sources": [hashlib.sha256(s.encode()).hexdigest() for s in sources],
            "names": [f.name for f in files],
            "top": top,
            "clock": clock,
            "reset": reset,
            "trace": bool(trace),
            "template": hashlib.sha256(template.encode()).hexdigest(),
            "verilator": _verilator_identity(),
            "verilator_flags": _VERILATOR_FLAGS,
            "cxx": [cxx, cxx_id, _CXX_STD, _OPT_FAST, _OPT_FAST_LARGE, _FAST_OPT_LARGE_BYTES,
                    _OPT_SLOW, _UNITY_BYTES, _OPT_RUNTIME, _OPT_HARNESS],
        }
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        safe_top = re.sub(r"[^A-Za-z0-9_]", "_", top)[:48]
        library = build_dir / f"libcelosia_{safe_top}_{digest}.so"
        if trace_path is None and trace:
            trace_path = build_dir / f"{top}.vcd"
        elif trace_path is not None:
            trace_path = _absolute(trace_path)

        cached = True
        t0 = time.perf_counter()
        with _file_lock(build_dir / f".libcelosia_{safe_top}_{digest}.lock"):
            if not library.exists():
                cached = False
                cls._build_library(
                    files, top, build_dir, library, parsed, clock, trace, template,
                    cxx, cxx_id, jobs or max(1, min(2, os.cpu_count() or 1)), progress,
                )
        seconds = 0.0 if cached else time.perf_counter() - t0
        return cls(library, top, clock=clock, reset=reset, trace_path=trace_path,
                   build_seconds=seconds, cached=cached)

    @staticmethod
    def _parse_top(files: list[Path], sources: list[str], top: str) -> list[tuple[str, str, int | None]]:
        for f, src in zip(files, sources):
            try:
                return parse_verilog_ports(src, top)
            except KeyError:
                continue
            except (ValueError, IndexError) as exc:
                raise ToolchainError(f"cannot parse the ports of module '{top}' in {f}: {exc}",
                                     hint="use plain input/output declarations on the top module") from exc
        found = sorted({_unescape(m) for src in sources
                        for m in re.findall(r"\bmodule\s+(" + _IDENT + ")", _strip_verilog(src))})
        raise ToolchainError(
            f"module '{top}' is not defined in {', '.join(str(f) for f in files)}",
            hint=f"modules found: {', '.join(found) or 'none'}; pass one of them as top",
        )

    @staticmethod
    def _check_port(top, names, parsed, port, role, none_hint) -> None:
        if port is None:
            return
        for name, direction, width in parsed:
            if name == port:
                if direction != "in" or (width is not None and width != 1):
                    raise ToolchainError(
                        f"{role} port '{port}' of module '{top}' must be a 1-bit input",
                        hint=f"pass the right {role} port name, or {none_hint}",
                    )
                return
        raise ToolchainError(
            f"module '{top}' has no {role} port '{port}'",
            hint=f"ports: {', '.join(names)}; pass {role}=<name>, or {none_hint}",
        )

    @classmethod
    def _build_library(cls, files, top, build_dir, library, parsed, clock, trace, template,
                       cxx, cxx_id, jobs, progress=None) -> None:
        import jinja2  # noqa: PLC0415

        say = progress or (lambda _text: None)

        obj = build_dir / f"obj_{library.stem}"
        shutil.rmtree(obj, ignore_errors=True)
        obj.mkdir(parents=True)

        # 1. verilate
        argv = [verilator_exe(), *_VERILATOR_FLAGS, "--prefix", _PREFIX, "--top-module", top,
                "-Mdir", str(obj)]
        if trace:
            argv.append("--trace")
        argv += [str(f.resolve()) for f in files]
        say(f"verilating {top}")
        proc = subprocess.run(argv, capture_output=True, text=True, cwd=obj)
        log = obj / "verilator.log"
        log.write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            raise ToolchainError(
                f"Verilator failed on module '{top}':\n{_relevant_lines(proc.stderr + proc.stdout, r'%Error')}",
                hint=f"fix the Verilog; the full log is {log}",
                log=log,
            )

        # 2. the port table, checked against the model's header
        header = _header_ports((obj / f"{_PREFIX}.h").read_text())
        ports = []
        for index, (name, direction, width) in enumerate(parsed):
            cname = _encode_name(name)
            if cname not in header:
                raise ToolchainError(
                    f"port '{name}' of module '{top}' is not in the verilated model {obj / (_PREFIX + '.h')}",
                    hint="rename the port to a plain identifier of moderate length",
                )
            hdir, hwidth, ctype, words = header[cname]
            if hdir == "inout" or direction == "inout":
                raise ToolchainError(f"inout port '{name}' of module '{top}' is not supported",
                                     hint="simulate a wrapper with separate input and output ports")
            if width is not None and width != hwidth:
                raise ToolchainError(
                    f"port '{name}' of module '{top}' parsed as {width} bits but Verilator made it {hwidth}",
                    hint="report this as a bug in celosia.sim.harness",
                )
            words = words or (hwidth + 31) // 32
            top_bits = hwidth - 32 * (words - 1)
            ports.append({
                "index": index,
                "name": name,
                "c_string": json.dumps(name),  # ASCII-only JSON strings are valid C strings
                "cname": cname,
                "width": hwidth,
                "direction": direction,
                "ctype": ctype,
                "words": words,
                "mask": f"0x{(1 << min(hwidth, 64)) - 1:X}ULL",
                "top_mask": f"0x{(1 << top_bits) - 1:X}U",
            })
        clock_port = next((p for p in ports if p["name"] == clock), None)

        # 3. the harness
        env = jinja2.Environment(undefined=jinja2.StrictUndefined, trim_blocks=True,
                                 lstrip_blocks=True, keep_trailing_newline=True)
        harness = env.from_string(template).render(
            top_c_string=json.dumps(top), prefix=_PREFIX, ports=ports, clock=clock_port, trace=trace)
        (obj / "celosia_harness.cpp").write_text(harness)

        # 4. compile: runtime (shared by all designs in build_dir), model, harness
        lists, scalars = _parse_classes_mk((obj / f"{_PREFIX}_classes.mk").read_text())
        root = verilator_root()
        vm = {v: scalars.get(v, "0") or "0" for v in (
            "VM_COVERAGE", "VM_SC", "VM_TIMING", "VM_TRACE", "VM_TRACE_FST", "VM_TRACE_VCD", "VM_TRACE_SAIF")}
        base = [cxx, _CXX_STD, "-fPIC", "-fvisibility=hidden", "-pthread", "-DVERILATOR=1",
                "-DVL_USER_FATAL", f"-I{root / 'include'}", f"-I{root / 'include' / 'vltstd'}"]
        common = [*base, *(f"-D{k}={v}" for k, v in vm.items())]
        # The runtime is shared by every design built in build_dir, keyed by its exact
        # flags. Its sources do not read the VM_TRACE* switches (only verilated.h's
        # WAVES compatibility macro does), so the core runtime is compiled with tracing
        # off and is shared by trace and non-trace builds; only the tracer itself
        # (verilated_vcd_c.cpp, ...) gets the design's switches.
        no_trace = {**vm, **{k: "0" for k in vm if k.startswith("VM_TRACE")}}
        rt_dir = build_dir / "_verilated_runtime"
        rt_dir.mkdir(exist_ok=True)
        compile_jobs: list[tuple[list[str], Path, str]] = []
        objects: list[Path] = []
        tmp_runtime: list[tuple[Path, Path]] = []
        for name in lists.get("VM_GLOBAL_FAST", []) + lists.get("VM_GLOBAL_SLOW", []):
            switches = vm if re.match(r"verilated_(vcd|fst|saif)", name) else no_trace
            argv = [*base, *(f"-D{k}={v}" for k, v in switches.items()), _OPT_RUNTIME,
                    "-c", str(root / "include" / f"{name}.cpp")]
            key = hashlib.sha256(json.dumps([argv, cxx_id, _verilator_identity()]).encode()).hexdigest()[:16]
            dst = rt_dir / f"{name}-{key}.o"
            objects.append(dst)
            if not dst.exists():
                tmp = obj / f"rt_{name}.o"
                compile_jobs.append(([*argv, "-o", str(tmp)], tmp, f"the Verilator runtime ({name}.cpp)"))
                tmp_runtime.append((tmp, dst))
        # Every Verilator .cpp re-parses verilated.h (~0.5 s of CPU), so the model is
        # compiled as a few "unity" translation units that #include the generated files:
        # one for a small model, else the fast code spread over `jobs` units plus one
        # for the slow code.
        size = {c: (obj / f"{c}.cpp").stat().st_size
                for c in lists.get("VM_CLASSES_FAST", []) + lists.get("VM_SUPPORT_FAST", [])
                + lists.get("VM_CLASSES_SLOW", []) + lists.get("VM_SUPPORT_SLOW", [])}
        fast = lists.get("VM_CLASSES_FAST", []) + lists.get("VM_SUPPORT_FAST", [])
        slow = lists.get("VM_CLASSES_SLOW", []) + lists.get("VM_SUPPORT_SLOW", [])
        fast_bytes = sum(size[c] for c in fast)
        opt_fast = _OPT_FAST_LARGE if fast_bytes > _FAST_OPT_LARGE_BYTES else _OPT_FAST
        groups: list[tuple[list[str], str]]
        if sum(size.values()) <= _UNITY_BYTES:
            groups = [(fast + slow, opt_fast)]
        else:
            bins: list[list[str]] = [[] for _ in range(max(1, min(jobs, len(fast))))]
            for c in sorted(fast, key=lambda c: -size[c]):
                min(bins, key=lambda b: sum(size[x] for x in b)).append(c)
            groups = [(b, opt_fast) for b in bins if b] + ([(slow, _OPT_SLOW)] if slow else [])
        units = []
        for k, (members, opt) in enumerate(groups):
            unit = obj / f"celosia_model_{k}.cpp"
            unit.write_text("".join(f'#include "{c}.cpp"\n' for c in members))
            units.append((unit, opt, sum(size[c] for c in members), ", ".join(f"{c}.cpp" for c in members)))
        harness_cpp = obj / "celosia_harness.cpp"
        units.append((harness_cpp, _OPT_HARNESS, harness_cpp.stat().st_size, harness_cpp.name))
        units.sort(key=lambda u: -u[2])  # biggest first, so the jobs finish together
        model_flags = [*common, f"-I{obj}"]
        for unit, opt, _, label in units:
            out = unit.with_suffix(".o")
            objects.append(out)
            compile_jobs.append(([*model_flags, opt, "-c", str(unit), "-o", str(out)],
                                 out, f"module '{top}' ({label})"))
        _run_compiles(compile_jobs, jobs, progress)
        for tmp, dst in tmp_runtime:
            os.replace(tmp, dst)

        # 5. link, then publish atomically
        tmp_lib = obj / library.name
        link = [cxx, "-shared", "-fPIC", "-pthread", "-Wl,-z,defs", "-o", str(tmp_lib),
                *map(str, objects)]
        say("linking")
        proc = subprocess.run(link, capture_output=True, text=True)
        if proc.returncode != 0:
            log = obj / "link.log"
            log.write_text(proc.stdout + proc.stderr)
            raise ToolchainError(
                f"linking the harness of module '{top}' failed:\n{_relevant_lines(proc.stderr, r'error|undefined')}",
                hint=f"the full log is {log}",
                log=log,
            )
        os.replace(tmp_lib, library)
        shutil.rmtree(obj, ignore_errors=True)

    # ------------------------------------------------------------------ access

    def _handle(self) -> int:
        h = self._h
        if h is None:
            raise SimulationError(f"the simulation of '{self.top}' is closed",
                                  hint="build or load the design again")
        return h

    def _unknown(self, name: str, want: str) -> SimulationError:
        if name in self.ports:
            port = self.ports[name]
            if want == "input" and name == self.clock:
                return SimulationError(f"port '{name}' of '{self.top}' is the clock",
                                       hint="tick() drives the clock")
            if want == "input":
                return SimulationError(f"port '{name}' of '{self.top}' is an output",
                                       hint=f"inputs: {', '.join(self._inputs) or 'none'}")
            return SimulationError(
                f"port '{name}' of '{self.top}' is {port.width} bits wide; this needs at most 64",
                hint="read it with get() after tick()")
        return SimulationError(f"design '{self.top}' has no port '{name}'",
                               hint=f"valid ports: {', '.join(self.ports)}")

    def _fail(self, status: int, what: str) -> SimulationError:
        msg = (self._lib.celosia_last_error(self._h) or b"").decode(errors="replace")
        if status == _FINISHED:
            return SimulationError(f"{what}: {msg} at cycle {self.cycle}",
                                   hint="the design stopped itself; check its $finish/$stop/assertions")
        if status == _FATAL:
            return SimulationError(f"{what}: {msg} at cycle {self.cycle}",
                                   hint="a combinational loop or a runtime error in the design")
        return SimulationError(f"{what}: {msg or f'error {status}'}", hint="report this as a bug in celosia.sim.harness")

    def set(self, name: str, value: int) -> None:
        """Drive input ``name`` with ``value``.

        Parameters
        ----------
        name : str
            An input port other than the clock.
        value : int
            Any width; negative values are taken modulo ``2**width``.

        Raises
        ------
        SimulationError
            If ``name`` is not an input, or ``value`` does not fit in the port.
        """
        h = self._h
        try:
            index, width, limit = self._inputs[name]
        except KeyError:
            raise self._unknown(name, "input") from None
        if h is None:
            self._handle()
        value = operator.index(value)
        if value < 0:
            value %= limit
        elif value >= limit:
            raise SimulationError(f"value {value} does not fit in the {width}-bit port '{name}' of '{self.top}'",
                                  hint=f"values must be below 2**{width}")
        if width <= 64:
            self._set_u64(h, index, value)
        else:
            self._set_wide(h, index, value.to_bytes(len(self._wide_buf[name]), "little"))

    def get(self, name: str) -> int:
        """Return the unsigned value of port ``name`` (inputs read back what was set)."""
        h = self._h
        try:
            index, width = self._readable[name]
        except KeyError:
            raise self._unknown(name, "port") from None
        if h is None:
            self._handle()
        if width <= 64:
            return self._get_u64(h, index)
        buf = self._wide_buf[name]
        self._get_wide(h, index, buf)
        return int.from_bytes(buf.raw, "little")

    def get_signed(self, name: str) -> int:
        """Return the value of port ``name`` read as two's complement."""
        value = self.get(name)
        width = self.ports[name].width
        return value - (1 << width) if value >> (width - 1) else value

    def eval(self) -> None:
        """Settle combinational logic after inputs changed (reads do this lazily too)."""
        status = self._lib.celosia_eval(self._handle())
        if status:
            raise self._fail(status, f"eval of '{self.top}' failed")

    def _need_clock(self) -> None:
        if self.clock is None:
            raise SimulationError(f"design '{self.top}' was built without a clock",
                                  hint="pass clock=<port> to VerilatedDesign.build")

    def tick(self, n: int = 1) -> None:
        """Run ``n`` full clock cycles (rising then falling edge), looping in C++."""
        h = self._h or self._handle()
        n = operator.index(n)
        if n <= 0:
            if n < 0:
                raise SimulationError(f"tick({n}): the number of cycles must be >= 0", hint="pass n >= 0")
            return
        status = self._tick(h, n)
        if status:
            self._need_clock()
            raise self._fail(status, f"tick of '{self.top}' stopped")

    def run_until(self, name: str, value: int, max_cycles: int) -> int:
        """Tick until port ``name`` equals ``value``.

        Parameters
        ----------
        name : str
            A port of at most 64 bits (usually an output).
        value : int
            The value to wait for; negative values are taken modulo ``2**width``.
        max_cycles : int
            Give up after this many cycles.

        Returns
        -------
        int
            Cycles ticked (0 if the port already held ``value``).

        Raises
        ------
        SimulationError
            If the value did not show up within ``max_cycles`` (naming the port).
        """
        h = self._handle()
        self._need_clock()
        try:
            index, width = self._readable[name]
        except KeyError:
            raise self._unknown(name, "port") from None
        if width > 64:
            raise self._unknown(name, "narrow")
        value = operator.index(value) % (1 << width)
        ticked = ctypes.c_uint64(0)
        status = self._lib.celosia_run_until(h, index, value, operator.index(max_cycles), ctypes.byref(ticked))
        if status == _TIMEOUT:
            raise SimulationError(
                f"port '{name}' of '{self.top}' did not reach {value} within {max_cycles} cycles "
                f"(it is {self.get(name)} at cycle {self.cycle})",
                hint="raise max_cycles, or check the stimulus and the reset",
            )
        if status:
            raise self._fail(status, f"run_until('{name}') on '{self.top}' stopped")
        return ticked.value

    def reset(self, cycles: int = 2) -> None:
        """Hold the reset input high for ``cycles`` ticks, then release it."""
        if self.reset_port is None:
            raise SimulationError(f"design '{self.top}' was built without a reset port",
                                  hint="pass reset=<port> to VerilatedDesign.build")
        self.set(self.reset_port, 1)
        self.tick(cycles)
        self.set(self.reset_port, 0)
        self.eval()

    @property
    def cycle(self) -> int:
        """Total clock cycles ticked since construction."""
        return self._lib.celosia_cycle(self._handle())

    def run_vectors(self, inputs: Mapping[str, ArrayLike], outputs: Sequence[str],
                    n_cycles: int | None = None) -> dict[str, np.ndarray]:
        """Drive per-cycle stimulus and record outputs, all in C++.

        For each cycle ``c``: apply ``inputs[name][c]``, settle, sample every port in
        ``outputs`` (the values the registers see at the rising edge), tick once.

        Parameters
        ----------
        inputs : mapping of str to array_like
            Input ports (at most 64 bits) to 1-D integer arrays of one value per cycle,
            or scalars held for the whole run. Negative values wrap modulo ``2**width``.
        outputs : sequence of str
            Ports (at most 64 bits) to sample.
        n_cycles : int, optional
            Number of cycles; defaults to the length of the input arrays.

        Returns
        -------
        dict of str to numpy.ndarray
            One ``uint64`` array of ``n_cycles`` samples per output port.
        """
        h = self._handle()
        self._need_clock()
        in_names = list(inputs)
        columns = []
        for name in in_names:
            if name not in self._inputs:
                raise self._unknown(name, "input")
            if self._inputs[name][1] > 64:
                raise self._unknown(name, "narrow")
            arr = np.asarray(inputs[name])
            if arr.ndim > 1:
                raise SimulationError(f"stimulus for '{name}' must be 1-D, got shape {arr.shape}",
                                      hint="pass one value per cycle")
            if arr.dtype.kind not in "iub":
                raise SimulationError(f"stimulus for '{name}' must be integers, got {arr.dtype}",
                                      hint="convert with .astype(np.int64)")
            columns.append(arr.astype(np.int64).view(np.uint64) if arr.dtype.kind == "i" else arr.astype(np.uint64))
        lengths = {len(c) for c in columns if c.ndim == 1}
        if n_cycles is None:
            if len(lengths) != 1:
                raise SimulationError(f"stimulus arrays have lengths {sorted(lengths) or 'none'}",
                                      hint="give arrays of equal length or pass n_cycles")
            n_cycles = lengths.pop()
        elif lengths - {n_cycles}:
            raise SimulationError(f"stimulus arrays have lengths {sorted(lengths)}, expected {n_cycles}",
                                  hint="give one value per cycle")
        for name in outputs:
            if name not in self._readable:
                raise self._unknown(name, "port")
            if self._readable[name][1] > 64:
                raise self._unknown(name, "narrow")
        in_data = np.empty((n_cycles, len(in_names)), dtype=np.uint64)
        for j, col in enumerate(columns):
            in_data[:, j] = col
        out_data = np.zeros((n_cycles, len(outputs)), dtype=np.uint64)
        in_ids = np.array([self._index[n] for n in in_names], dtype=np.intc)
        out_ids = np.array([self._index[n] for n in outputs], dtype=np.intc)
        done = ctypes.c_uint64(0)
        status = self._lib.celosia_run_vectors(
            h, n_cycles, len(in_names), in_ids.ctypes.data, in_data.ctypes.data,
            len(outputs), out_ids.ctypes.data, out_data.ctypes.data, ctypes.byref(done))
        if status:
            raise self._fail(status, f"run_vectors on '{self.top}' stopped after {done.value} cycles")
        return {name: np.ascontiguousarray(out_data[:, j]) for j, name in enumerate(outputs)}

    # ------------------------------------------------------------------ lifetime

    def close(self) -> None:
        """Free the model (and flush the VCD). Further calls raise SimulationError."""
        h, self._h = self._h, None
        if h is not None:
            self._lib.celosia_free(h)

    def __enter__(self) -> "VerilatedDesign":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass

    def __repr__(self) -> str:
        state = "closed" if self._h is None else f"cycle {self.cycle}"
        return f"<VerilatedDesign {self.top} ({len(self.ports)} ports, {state})>"
