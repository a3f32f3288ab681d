"""Errors raised by Celosia.

Every error a user can cause is a :class:`CelosiaError`: it names what is at fault
(a node, an op, a board, a file) and carries a hint. The CLI prints them without a
traceback and exits non-zero.
"""

from __future__ import annotations

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
]


class CelosiaError(Exception):
    """Base class of all errors Celosia reports to users.

    Parameters
    ----------
    message : str
        What went wrong, naming the node / op / board at fault.
    hint : str, optional
        What the user can do about it.
    """

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

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
    """The output folder exists and ``--force`` was not given."""
