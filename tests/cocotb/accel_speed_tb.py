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


async def _setup(dut, params):
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    dut.host__start.value = 0
    dut.host__we.value = 0
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0
    for addr, word in params["input_words"]:
        await FallingEdge(dut.clk)
        dut.host__addr.value = addr
        dut.host__wdata.value = word
        dut.host__we.value = 1
    await FallingEdge(dut.clk)
    dut.host__we.value = 0


async def _start(dut):
    await FallingEdge(dut.clk)
    dut.host__start.value = 1
    await FallingEdge(dut.clk)
    dut.host__start.value = 0


def _record(dut, params, key, simulated, wall):
    cycles = int(dut.host__cycles.value)
    assert cycles > 0
    path = params["result_path"]
    try:
        with open(path) as f:
            results = json.load(f)
    except FileNotFoundError:
        results = {}
    results[key] = {"simulated_cycles": simulated, "seconds": wall, "cycles_per_run": cycles}
    with open(path, "w") as f:
        json.dump(results, f)


@cocotb.test()
async def poll_every_cycle(dut):
    """The usual testbench style: Python looks at the design on every clock edge."""
    params = tb_params()
    await _setup(dut, params)
    simulated = 0
    t0 = time.perf_counter()
    for _ in range(params["runs"]):
        await _start(dut)
        simulated += 1
        while int(dut.host__busy.value):
            await RisingEdge(dut.clk)
            simulated += 1
    _record(dut, params, "poll_every_cycle", simulated, time.perf_counter() - t0)


@cocotb.test()
async def wait_for_done_edge(dut):
    """The cheapest cocotb style: sleep until busy falls (no Python per cycle)."""
    params = tb_params()
    await _setup(dut, params)
    t0 = time.perf_counter()
    for _ in range(params["runs"]):
        await _start(dut)
        await FallingEdge(dut.busy)
    wall = time.perf_counter() - t0
    simulated = params["runs"] * (int(dut.host__cycles.value) + 2)
    _record(dut, params, "wait_for_done_edge", simulated, wall)
