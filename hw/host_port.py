"""The host port: how a host (the UART bridge on a board, the ctypes harness in simulation) reaches
an accelerator core.

:func:`HostPortSignature` is written from the host's side; a core takes it flipped
(``"host": In(HostPortSignature(...))``) and the bridge drives it (``Out``), so
``wiring.connect(m, bridge.host, core.host)`` wires the two. Members:

====================  ==============  ==============================================================
member                host -> core    meaning
====================  ==============  ==============================================================
``addr``              yes             scratchpad address (``addr_bits`` wide)
``wdata``             yes             word to write (``word_bits`` wide)
``we``                yes             write strobe
``rdata``             no              read data, valid the cycle after ``addr`` (synchronous)
``start``             yes             one-cycle start pulse
``busy``              no              high while running (high by the 2nd cycle after ``start``)
``cycles``            no              32-bit cycle counter of the last run
====================  ==============  ==============================================================

The host owns the scratchpad only while ``busy`` is low. In Verilog the members are the ports
``host__addr``, ``host__wdata``, ...
"""

from __future__ import annotations

from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["HostPortSignature"]


def HostPortSignature(addr_bits: int, word_bits: int) -> wiring.Signature:
    """The host port as the host drives it (cores take it ``In``)."""
    return wiring.Signature({
        "addr": Out(addr_bits), "wdata": Out(word_bits), "we": Out(1), "rdata": In(word_bits),
        "start": Out(1), "busy": In(1), "cycles": In(32),
    })
