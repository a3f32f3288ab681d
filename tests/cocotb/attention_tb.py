"""cocotb testbench of :class:`celosia.hw.attention.AttentionEngine` (run through ``run_cocotb``).

The stimulus comes from :func:`celosia.hw.attention.schedule` in pytest and the expected output
words from :func:`celosia.ir.attention.attention_int`; both reach this module as JSON in
``CELOSIA_TB_PARAMS``:

``file`` (optional)
    A JSON file holding the parameters below (the stimulus is too big for an environment
    variable).
``cfg``, ``q``, ``k``, ``v``, ``expected``
    Payload words (non-negative integers) of the four input streams and of ``o``, in order; a
    negative expected word is a don't-care (a padding lane past the last query).
``p_gap``, ``p_stall``, ``seed``
    Probability that a source withholds ``valid`` in a cycle, that the sink withholds ``ready``
    (the random test also has bursty stalls every 97 cycles), and the random seed.

Tests:

* ``full_rate``: sources always valid, sink always ready: every output checked bit for bit;
  logs the cycle count.
* ``random_backpressure``: random valid gaps on cfg, q, k and v (an offered beat is held until
  accepted, junk payload while not valid) and random plus bursty ready on o; every output
  checked bit for bit, and ``o`` must hold valid and payload while stalled.
"""

from __future__ import annotations

import json
import random

import cocotb
from celosia.sim.cocotb_runner import tb_params
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge

_SOURCES = ("cfg", "q", "k", "v")


def _params() -> dict:
    p = tb_params()
    if "file" in p:
        with open(p["file"]) as fh:
            p.update(json.load(fh))
    return p


async def _run(dut, p: dict, gap: float, stall: float, seed: int) -> int:
    rnd = random.Random(seed)
    Clock(dut.clk, 10, unit="ns").start()
    src = {n: [int(w) for w in p[n]] for n in _SOURCES}
    exp = [int(w) for w in p["expected"]]
    ports = {n: (getattr(dut, f"{n}__valid"), getattr(dut, f"{n}__ready"), getattr(dut, f"{n}__payload"))
             for n in _SOURCES}
    ov, orr, op = dut.o__valid, dut.o__ready, dut.o__payload
    for n in _SOURCES:
        ports[n][0].value = 0
        ports[n][2].value = 0
    orr.value = 0
    dut.rst.value = 1
    for _ in range(3):
        await RisingEdge(dut.clk)
    dut.rst.value = 0
    pos = dict.fromkeys(_SOURCES, 0)
    offered = dict.fromkeys(_SOURCES, False)
    got = cyc = 0
    stalled = None
    limit = 50 * (sum(len(v) for v in src.values()) + len(exp)) + 5000
    while got < len(exp):
        await RisingEdge(dut.clk)
        cyc += 1
        assert cyc < limit, f"timeout after {cyc} cycles: sent {pos}, received {got}/{len(exp)}"
        for n in _SOURCES:
            valid, _ready, payload = ports[n]
            if pos[n] < len(src[n]) and not offered[n]:
                offered[n] = rnd.random() >= gap
            on = offered[n] and pos[n] < len(src[n])
            valid.value = int(on)
            payload.value = src[n][pos[n]] if on else rnd.getrandbits(len(payload))
        ready = rnd.random() >= stall and not (stall and (cyc // 97) % 5 == 4)
        orr.value = int(ready)
        await ReadOnly()
        for n in _SOURCES:
            valid, rdy, _payload = ports[n]
            if valid.value and rdy.value:
                pos[n] += 1
                offered[n] = False
        o_valid = bool(ov.value)
        if stalled is not None:
            assert o_valid and op.value.to_unsigned() == stalled, f"cycle {cyc}: o changed while stalled"
        stalled = None
        if o_valid:
            w = op.value.to_unsigned()
            if ready:
                assert got < len(exp), f"cycle {cyc}: extra output beat {w:#x}"
                assert exp[got] < 0 or w == exp[got], f"cycle {cyc}: output beat {got}: got {w:#x}, expected {exp[got]:#x}"
                got += 1
            else:
                stalled = w
    assert all(pos[n] == len(src[n]) for n in _SOURCES), f"inputs left unread: {pos}"
    await RisingEdge(dut.clk)
    orr.value = 1
    for _ in range(30):
        await ReadOnly()
        assert not ov.value, "extra output beat after the last expected one"
        await RisingEdge(dut.clk)
    return cyc


@cocotb.test()
async def full_rate(dut):
    """Sources always valid, sink always ready."""
    p = _params()
    cyc = await _run(dut, p, 0.0, 0.0, int(p.get("seed", 1)))
    dut._log.info("CYCLES %d for %d output beats", cyc, len(p["expected"]))


@cocotb.test()
async def random_backpressure(dut):
    """Random valid gaps on every input, random and bursty backpressure on the output."""
    p = _params()
    cyc = await _run(dut, p, float(p.get("p_gap", 0.2)), float(p.get("p_stall", 0.3)), int(p.get("seed", 1)) + 7)
    dut._log.info("%d output beats with backpressure in %d cycles", len(p["expected"]), cyc)
