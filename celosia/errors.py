"""Errors raised by Celosia.

Every error a user can cause is a :class:`CelosiaError`: it names what is at fault
(a node, an op, a board, a file) and carries a hint. The CLI prints them without a
traceback and exits non-zero.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "CelosiaError",
    "GraphError",
    "QuantizationError",
    "ScheduleError",
    "ResourceError",
    "HardwareGenerationError",
    "ToolchainError",
    "SimulationError",
    "UnknownNameError",
    "OutputExistsError",
    "OutputPathError",
    "OptionError",
]


class CelosiaError(Exception):
    """Base class of all errors Celosia reports to users.

    Parameters
    ----------
    message : str
        What went wrong, naming the node / op / board at fault.
    hint : str, optional
        What the user can do about it.
    log : path-like, optional
        A log file with the full details (a tool's output). The message names it; whoever
        deletes the folder it is in first moves it and calls :meth:`moved_log`.

    Attributes
    ----------
    message, hint : str
    log : Path or None
    """

    def __init__(self, message: str, hint: str | None = None, *, log: str | os.PathLike | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.log = Path(log) if log is not None else None

    def moved_log(self, new: str | os.PathLike) -> None:
        """Record that :attr:`log` now lives at ``new``; the message and hint follow it."""
        new = Path(new)
        if self.log is not None:
            old = str(self.log)
            self.message = self.message.replace(old, str(new))
            if self.hint:
                self.hint = self.hint.replace(old, str(new))
            self.args = (self.message,)
        self.log = new

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message


class GraphError(CelosiaError):
    """A malformed graph: bad arity, unknown input, shape mismatch, cycle."""


class QuantizationError(CelosiaError):
    """A tensor or op cannot be represented in the requested fixed-point formats."""


class ScheduleError(CelosiaError):
    """The program cannot be mapped onto the generated units."""


class ResourceError(CelosiaError):
    """The design needs more of a resource than the board has."""


class HardwareGenerationError(CelosiaError):
    """A hardware generator was given parameters it cannot build."""


class ToolchainError(CelosiaError):
    """An external tool (Verilator, yosys, nextpnr, ...) is missing or failed."""


class SimulationError(CelosiaError):
    """An RTL simulation failed or disagreed with the golden model."""


class UnknownNameError(CelosiaError):
    """An unknown model, board or preset name."""


class OutputExistsError(CelosiaError):
    """The output folder exists and ``--force`` was not given, or the path is a file."""


class OutputPathError(CelosiaError):
    """The output folder cannot be created or written (permissions, a file in the way, ...)."""


class OptionError(CelosiaError):
    """An option or argument has a value outside its range (e.g. ``--samples 0``)."""
