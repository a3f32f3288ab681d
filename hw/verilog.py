"""Verilog emission for generated components (deterministic: same design, same bytes)."""

from __future__ import annotations

from pathlib import Path

from amaranth.back import verilog
from amaranth.lib import wiring

from celosia.errors import HardwareGenerationError

__all__ = ["to_verilog", "write_verilog"]


def to_verilog(component: wiring.Component, name: str) -> str:
    """Convert ``component`` to Verilog with top module ``name``.

    The top module must not share a name with one of its ports (Verilator rejects it).
    """
    ports = set(component.signature.members.keys()) | {"clk", "rst"}
    if name in ports:
        raise HardwareGenerationError(
            f"top module name '{name}' equals one of its ports", hint="choose another top module name"
        )
    return verilog.convert(component, name=name, emit_src=False)


def write_verilog(component: wiring.Component, path: Path, name: str) -> Path:
    """Write ``component`` as Verilog to ``path`` and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_verilog(component, name))
    return path
