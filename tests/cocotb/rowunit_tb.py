"""cocotb testbench of :class:`celosia.hw.rowunit.RowUnit` with its scratchpad (run through ``run_cocotb``).

The design is the unit wired to a scratchpad memory whose initial contents hold the input rows
(``tests/test_rowunit.py`` builds it); ports ``start``, ``ins``, ``busy`` of the job hand-off and
a ``dump_addr`` / ``dump_data`` read port to read the scratchpad back. Parameters (JSON in
``CELOSIA_TB_PARAMS``, or in the JSON file named by its ``file`` key):

``jobs``
    Encoded instruction words (``ins``), run one after another, each started on the cycle after
    the previous one's ``busy`` fell.
``cycles``
    The expected busy cycles of each job (``RowUnit.cycles``).
``expected``
    ``[address, word]`` pairs the scratchpad must hold at the end.
"""

from __future__ import annotations

import json

import cocotb
from celosia.sim.cocotb_runner import tb_params
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge


def _params() -> dict:
    p = tb_params()
    if "file" in p:
        with open(p["file"]) as fh:
            p.update(json.load(fh))
    return p


@cocotb.test()
async def norm_jobs(dut):
    p = _params()
    Clock(dut.clk, 10, unit="ns").start()
    dut.start.value = 0
    dut.ins.value = 0
    dut.dump_addr.value = 0
    dut.rst.value = 1
    for _ in range(3):
        await RisingEdge(dut.clk)
    await FallingEdge(dut.clk)
    dut.rst.value = 0
    for k, (word, want) in enumerate(zip(p["jobs"], p["cycles"])):
        dut.ins.value = int(word)
        dut.start.value = 1
        await RisingEdge(dut.clk)
        await FallingEdge(dut.clk)
        dut.start.value = 0
        n = 0
        while True:
            await RisingEdge(dut.clk)
            await ReadOnly()
            if not int(dut.busy.value):
                break
            n += 1
            assert n < 10 * want, f"job {k}: busy for more than {10 * want} cycles"
        assert n + 1 == want, f"job {k}: busy for {n + 1} cycles, RowUnit.cycles says {want}"
        await FallingEdge(dut.clk)
    bad = []
    for addr, word in p["expected"]:
        dut.dump_addr.value = int(addr)
        await RisingEdge(dut.clk)
        await ReadOnly()
        got = int(dut.dump_data.value)
        if got != int(word):
            bad.append((addr, hex(got), hex(int(word))))
        await FallingEdge(dut.clk)
    assert not bad, f"{len(bad)} scratchpad words differ (addr, got, expected): {bad[:8]}"
