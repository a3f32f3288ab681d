"""cocotb testbench: run the accelerator's program repeatedly and time the simulation.

Used by benchmarks/sim_speed.py to compare cocotb with the ctypes harness on the same
design. Parameters (CELOSIA_TB_PARAMS): ``runs``, ``result_path``, ``input_words``
(list of [addr, word]).
"""

import json
import time

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, RisingEdge

from celosia.sim.cocotb_runner import tb_params


@cocotb.test()
async def run_program_repeatedly(dut):
    params = tb_params()
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    dut.start.value = 0
    dut.host_we.value = 0
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0
    for addr, word in params["input_words"]:
        await FallingEdge(dut.clk)
        dut.host_addr.value = addr
        dut.host_wdata.value = word
        dut.host_we.value = 1
    await FallingEdge(dut.clk)
    dut.host_we.value = 0

    simulated = 0
    t0 = time.perf_counter()
    for _ in range(params["runs"]):
        await FallingEdge(dut.clk)
        dut.start.value = 1
        await FallingEdge(dut.clk)
        dut.start.value = 0
        simulated += 1
        while int(dut.busy.value):
            await RisingEdge(dut.clk)
            simulated += 1
    wall = time.perf_counter() - t0
    cycles = int(dut.cycles.value)
    assert cycles > 0
    with open(params["result_path"], "w") as f:
        json.dump({"simulated_cycles": simulated, "seconds": wall, "cycles_per_run": cycles}, f)
