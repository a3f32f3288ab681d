"""Celosia: compile transformer and MoE models to FPGA hardware.

The Python API mirrors the CLI::

    import celosia
    report = celosia.compile("mlp-tiny", board="ulx3s-85f", out_dir="build/mlp-tiny")
    print(report.cycles, report.fmax_mhz)

:func:`compile` runs the whole flow (:mod:`celosia.flow`: import, check, lower, schedule,
generate the RTL, simulate it on Verilator bit-exact against the golden model, build the
bitstream, report) and writes everything to ``out_dir``, atomically: on error nothing is left
behind. :func:`prepare` (import, lower, schedule), :func:`simulate` (RTL vs golden) and
:func:`check` (every op Celosia cannot compile) run parts of it. This module only re-exports.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version as _version

from celosia.errors import CelosiaError
from celosia.flow import STAGES, Prepared, Report, Simulated, check, compile, prepare, simulate
from celosia.output import staged_output
from celosia.progress import Progress

__all__ = [
    "check", "compile", "prepare", "simulate", "STAGES", "Prepared", "Simulated", "Report", "Progress",
    "CelosiaError", "staged_output", "__version__",
]

try:
    __version__ = _version("celosia")
except PackageNotFoundError:  # pragma: no cover - running from a source tree that is not installed
    __version__ = "0.1.0"
