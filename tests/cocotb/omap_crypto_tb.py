"""cocotb testbench of the oblivious map's on-chip crypto cores (run through ``run_cocotb``).

The benches of the whole unit, which :func:`celosia.omap.run_rtl` and
:func:`celosia.omap.run_rtl_axi` load, ship with the package (:mod:`celosia.omap.tb`).

Parameters (``CELOSIA_TB_PARAMS``), computed in pytest from :mod:`celosia.omap.crypto`:

``key``
    The key as a little-endian integer (256 bits for ChaCha20 / the sampler, 128 for SipHash).
``requests``, ``expected``
    ChaCha20: ``requests`` = [counter | nonce << 32] and ``expected`` = 512-bit blocks.
    SipHash: ``requests`` = messages as lists of 64-bit words (the last one carries the length
    byte) and ``expected`` = tags. Pair sampler: ``expected`` = [[d1, d2], ...] in order.
``seed``
    Random valid gaps and backpressure.

Each section of the parameters (``chacha``, ``siphash``, ``pairs``: a list) names the ports it
drives through ``prefix`` (e.g. ``cc`` for ``cc_key``, ``cc_req``, ``cc_blk``), so one Verilator
build of a wrapper holding every core runs all tests: ``chacha_blocks``, ``siphash_tags``,
``sampler_pairs``. Every output is compared exactly and must arrive.
"""

from __future__ import annotations

import random

import cocotb
from celosia.sim.cocotb_runner import tb_params
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge


def _port(dut, prefix, name):
    return getattr(dut, f"{prefix}_{name}" if prefix else name)


async def _reset(dut, clock=True):
    if clock:
        cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    await RisingEdge(dut.clk)
    await RisingEdge(dut.clk)
    dut.rst.value = 0


async def _drive(dut, prefix, beats, rng, p_gap=0.3):
    valid, ready, payload = (getattr(dut, f"{prefix}__{s}") for s in ("valid", "ready", "payload"))
    for b in beats:
        while rng.random() < p_gap:
            valid.value = 0
            await RisingEdge(dut.clk)
        valid.value = 1
        payload.value = b
        while True:
            await ReadOnly()
            accepted = int(ready.value)
            await RisingEdge(dut.clk)
            if accepted:
                break
    valid.value = 0


async def _collect(dut, prefix, n, rng, p_stall=0.4, timeout=200000):
    valid, ready, payload = (getattr(dut, f"{prefix}__{s}") for s in ("valid", "ready", "payload"))
    got = []
    for _ in range(timeout):
        r = int(rng.random() >= p_stall)
        ready.value = r
        await ReadOnly()
        if r and int(valid.value):
            got.append(int(payload.value))
        await RisingEdge(dut.clk)
        if len(got) == n:
            break
    ready.value = 0
    return got


@cocotb.test()
async def chacha_blocks(dut):
    p = tb_params()["chacha"]
    rng = random.Random(p.get("seed", 1))
    _port(dut, p["prefix"], "key").value = int(p["key"])
    await _reset(dut)
    cocotb.start_soon(_drive(dut, f"{p['prefix']}_req", [int(r) for r in p["requests"]], rng))
    got = await _collect(dut, f"{p['prefix']}_blk", len(p["expected"]), rng)
    exp = [int(e) for e in p["expected"]]
    assert len(got) == len(exp), f"{len(got)} of {len(exp)} blocks"
    for i, (g, e) in enumerate(zip(got, exp)):
        assert g == e, f"block {i}: {g:#x} != {e:#x}"


@cocotb.test()
async def siphash_tags(dut):
    p = tb_params()["siphash"]
    rng = random.Random(p.get("seed", 1))
    _port(dut, p["prefix"], "key").value = int(p["key"])
    await _reset(dut)
    beats = []
    for msg in p["requests"]:
        beats += [int(w) | ((i == len(msg) - 1) << 64) for i, w in enumerate(msg)]
    cocotb.start_soon(_drive(dut, f"{p['prefix']}_msg", beats, rng))
    got = await _collect(dut, f"{p['prefix']}_tag", len(p["expected"]), rng)
    exp = [int(e) for e in p["expected"]]
    assert got == exp, f"tags differ: {[hex(g) for g in got]} != {[hex(e) for e in exp]}"


@cocotb.test()
async def sampler_pairs(dut):
    for i, p in enumerate(tb_params()["pairs"]):
        rng = random.Random(p.get("seed", 1))
        _port(dut, p["prefix"], "key").value = int(p["key"])
        await _reset(dut, clock=i == 0)
        w = int(p["w"])
        got = await _collect(dut, f"{p['prefix']}_pair", len(p["expected"]), rng)
        pairs = [[g & ((1 << w) - 1), g >> w] for g in got]
        assert pairs == p["expected"], f"{p['prefix']}: first pairs {pairs[:8]} != {p['expected'][:8]}"
