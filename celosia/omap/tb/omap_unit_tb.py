"""cocotb testbench of the oblivious map unit with its page-wide host port
(:class:`celosia.omap.rtl.OmapUnit`), loaded by :func:`celosia.omap.run_rtl`.

One test, ``unit_trace``, parameterised through ``CELOSIA_TB_PARAMS`` (``unit_file``: a JSON file
written by :func:`~celosia.omap.run_rtl`; or the parameters themselves under ``unit``):

``cmds``
    The initialisation beats, then the command beats (:func:`celosia.omap.encode_command`).
``host_bytes``, ``host_latency``, ``page_bytes``
    Size of the modelled host memory, its round trip in cycles, bytes per page.
``n_resp``, ``max_cycles``
    Responses to wait for, and the cycle limit.
``tamper``
    ``{accept index: [[host address, xor mask], ...]}``: edits applied when that beat is accepted.
``dump``, ``out``
    The ``(dbg_sel, depth)`` regions to dump at the end, and the JSON file the results go to.

Spec tier 1 (``shared/specs/omap.md``): everything the unit does is recorded with its cycle and
compared with the golden model by the caller.
"""

from __future__ import annotations

import json

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge

from celosia.omap.tb.common import dump_regions
from celosia.sim.cocotb_runner import tb_params


async def _reset(dut):
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    await RisingEdge(dut.clk)
    await RisingEdge(dut.clk)
    dut.rst.value = 0


@cocotb.test()
async def unit_trace(dut):
    """Drive the init beats and commands back to back (the unit sets the pace through
    ``cmd.ready``), model host memory with its latency, record every accepted command,
    response and host transaction with its cycle (relative to the first init beat), then
    dump the HBM-side regions; everything goes to ``out`` (JSON) for pytest to compare with
    the golden model."""
    p = tb_params()
    if "unit_file" in p:  # large runs: the environment cannot carry the command list
        with open(p["unit_file"]) as f:
            p = json.load(f)
    else:
        p = p["unit"]
    beats = [int(b) for b in p["cmds"]]
    lat, page_bytes = int(p["host_latency"]), int(p["page_bytes"])
    mem = bytearray(int(p["host_bytes"]))
    tamper = {int(k): v for k, v in p.get("tamper", {}).items()}  # after accept #k: [(addr, xor)]
    await _reset(dut)
    dut.cmd__valid.value = 0
    dut.host_rdata__valid.value = 0
    dut.resp__ready.value = 1
    dut.host_req__ready.value = 1
    acc, resps, log, reads = [], [], [], {}
    nxt, cyc, c0 = 0, 0, None
    limit = int(p["max_cycles"])
    while cyc < limit and (len(resps) < int(p["n_resp"]) or nxt < len(beats) or not int(dut.initialised.value)):
        await FallingEdge(dut.clk)
        if nxt < len(beats):
            dut.cmd__valid.value = 1
            dut.cmd__payload.value = beats[nxt]
        else:
            dut.cmd__valid.value = 0
        if cyc in reads:
            dut.host_rdata__valid.value = 1
            dut.host_rdata__payload.value = reads.pop(cyc)
        else:
            dut.host_rdata__valid.value = 0
        await ReadOnly()
        if nxt < len(beats) and int(dut.cmd__ready.value):
            if c0 is None:
                c0 = cyc
            acc.append(cyc - c0)
            if nxt in tamper:
                for addr, x in tamper[nxt]:
                    mem[addr] ^= x
            nxt += 1
        if int(dut.resp__valid.value):
            resps.append([cyc - c0, int(dut.resp__payload.value)])
        if int(dut.host_req__valid.value):
            word = int(dut.host_req__payload.value)
            w, addr, ln = word & 1, (word >> 1) & (2**64 - 1), (word >> 65) & (2**32 - 1)
            log.append([cyc - c0, "W" if w else "R", addr, ln])
            if w:
                mem[addr:addr + ln] = ((word >> 97) & ((1 << (8 * page_bytes)) - 1)).to_bytes(page_bytes, "little")[:ln]
            else:
                reads[cyc + lat] = int.from_bytes(bytes(mem[addr:addr + ln]), "little")
        cyc += 1
    for _ in range(4):
        await RisingEdge(dut.clk)
    dumps = await dump_regions(dut, p["dump"])
    await RisingEdge(dut.clk)
    result = {"accepts": acc, "responses": resps, "host_log": log, "host_mem": mem.hex(), "dumps": dumps,
              "late": int(dut.late.value), "halted": int(dut.halted.value), "cycles": cyc}
    with open(p["out"], "w") as f:
        json.dump(result, f)
    assert len(resps) == int(p["n_resp"]), f"{len(resps)} of {p['n_resp']} responses in {cyc} cycles"
