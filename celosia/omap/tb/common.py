"""Helpers shared by the oblivious map's testbenches (not a cocotb test module)."""

from __future__ import annotations

from cocotb.triggers import FallingEdge, ReadOnly


async def dump_regions(dut, regions) -> dict[str, list[int]]:
    """Read whole HBM-side regions through the unit's debug port.

    ``regions`` lists ``(dbg_sel, depth)`` pairs; returns ``{str(dbg_sel): [word, ...]}``.
    """
    dumps = {}
    for sel, depth in regions:
        values = []
        for addr in range(depth):
            await FallingEdge(dut.clk)
            dut.dbg_sel.value = sel
            dut.dbg_addr.value = addr
            await ReadOnly()
            values.append(int(dut.dbg_data.value))
        dumps[str(sel)] = values
    return dumps
