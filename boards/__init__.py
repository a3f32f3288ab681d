"""Celosia boards: registry, board tops, the open bitstream flow and the UART host protocol.

=====================================  ======================================================
name                                   what
=====================================  ======================================================
:func:`get_board`, :func:`list_boards`  board records (:class:`Board`, :data:`BOARDS`)
:class:`BoardTop`, :class:`SimTop`      clock / reset / UART bridge around an accelerator core
:func:`build_bitstream`                 yosys + nextpnr + ecppack / icepack (YoWASP)
:func:`parse_nextpnr_report`            Fmax and utilisation from nextpnr ``--report`` JSON
:class:`UartHost`                       host driver for the UART bridge protocol
=====================================  ======================================================

The registry and the protocol module are imported eagerly; the names from
:mod:`celosia.boards.top` and :mod:`celosia.boards.flow` are loaded on first use (they import
the hardware generators, which themselves use :mod:`celosia.boards.uart_protocol`).
"""

from __future__ import annotations

import importlib

from celosia.boards.registry import BOARDS, Board, Resources, get_board, list_boards
from celosia.boards.uart_protocol import UartHost, UartProtocolError

__all__ = [
    "BOARDS", "Board", "Resources", "get_board", "list_boards",
    "UartHost", "UartProtocolError",
    "BoardTop", "SimTop", "ScratchpadCore", "attach_bridge", "ecp5_pll_config",
    "BuildResult", "build_bitstream", "parse_nextpnr_report",
]

_LAZY = {
    "BoardTop": "celosia.boards.top",
    "SimTop": "celosia.boards.top",
    "ScratchpadCore": "celosia.boards.top",
    "attach_bridge": "celosia.boards.top",
    "ecp5_pll_config": "celosia.boards.top",
    "BuildResult": "celosia.boards.flow",
    "build_bitstream": "celosia.boards.flow",
    "parse_nextpnr_report": "celosia.boards.flow",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'celosia.boards' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
