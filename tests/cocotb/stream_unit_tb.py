"""Generic cocotb testbench of a one-in / one-out stream unit (run through ``run_cocotb``).

Also for row-based units (``rows`` below): the outputs are compared in order, bit for bit.

For any ``wiring.Component`` with one input ``lib.stream`` port and one output stream port and a
fixed pipeline latency (GELU, ExpNeg, Reciprocal, Rsqrt, ...). The stimulus and the expected
outputs are computed in pytest from the golden model and passed in ``CELOSIA_TB_PARAMS``:

``in_port``, ``out_port``
    Port names (``"i"``/``"o"`` for GELU, ``"x"``/``"y"`` for the primitives).
``inputs``, ``expected``
    Lists of payload words as non-negative integers (the payload bits, lanes packed LSB first);
    ``expected[k]`` is the output for ``inputs[k]``. Compared bit for bit, no tolerance.
``latency``
    The unit's documented latency: an input accepted in cycle ``c`` must be on the output in
    cycle ``c + latency`` when the output is always ready.
``lane_bits``, ``out_signed`` (optional)
    Only for readable mismatch messages (the words are split into lanes and sign-extended).
``seed``, ``p_gap``, ``p_stall`` (optional)
    Random seed, probability of an input valid gap and of output backpressure in the random
    phase (default 0.3 and 0.4); the random phase also has bursty stalls.
``rows``, ``full_rate`` (optional, row-based units such as Softmax and LayerNorm)
    Beats per row, in order. Then ``latency`` is counted from a row's last input beat to its
    first output beat, and the no-gap test checks it for every row (a row whose output directly
    follows the previous row's last output beat may come later); with ``full_rate`` it also checks
    that the input was accepted one beat per cycle.

Tests:

* ``no_gap_throughput``: every input back to back with the output always ready: the unit must
  accept one beat per cycle, and every output must appear exactly ``latency`` cycles after its
  input was accepted, in consecutive cycles.
* ``random_gaps_backpressure``: random valid gaps (an offered beat is held until accepted; junk
  payload while not valid) and random plus bursty output backpressure; every output is compared,
  and the output must hold its valid and payload while stalled (stream rules).
"""

from __future__ import annotations

import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge

from celosia.sim.cocotb_runner import tb_params


class _Prm:
    def __init__(self, p: dict):
        self.i = p.get("in_port", "x")
        self.o = p.get("out_port", "y")
        self.inputs = [int(v) for v in p["inputs"]]
        self.expected = [int(v) for v in p["expected"]]
        assert len(self.inputs) == len(self.expected), "testbench bug: inputs/expected lengths"
        self.latency = int(p["latency"])
        self.lane_bits = p.get("lane_bits")
        self.out_signed = bool(p.get("out_signed", True))
        self.seed = int(p.get("seed", 1))
        self.p_gap = float(p.get("p_gap", 0.3))
        self.p_stall = float(p.get("p_stall", 0.4))
        self.rows = [int(r) for r in p["rows"]] if "rows" in p else None
        self.full_rate = bool(p.get("full_rate", self.rows is None))


class _Bench:
    def __init__(self, dut, prm: _Prm):
        self.dut = dut
        self.prm = prm
        self.iv = getattr(dut, f"{prm.i}__valid")
        self.ir = getattr(dut, f"{prm.i}__ready")
        self.ip = getattr(dut, f"{prm.i}__payload")
        self.ov = getattr(dut, f"{prm.o}__valid")
        self.orr = getattr(dut, f"{prm.o}__ready")
        self.op = getattr(dut, f"{prm.o}__payload")
        self.in_width = len(self.ip)

    def decode(self, word: int):
        lb = self.prm.lane_bits
        if not lb:
            return hex(word)
        lanes = []
        n = max(1, len(self.op) // lb)
        for k in range(n):
            v = (word >> (k * lb)) & ((1 << lb) - 1)
            if self.prm.out_signed and v >> (lb - 1):
                v -= 1 << lb
            lanes.append(v)
        return lanes if n > 1 else lanes[0]

    async def reset(self):
        self.iv.value = 0
        self.ip.value = 0
        self.orr.value = 0
        self.dut.rst.value = 1
        for _ in range(3):
            await RisingEdge(self.dut.clk)
        self.dut.rst.value = 0
        await RisingEdge(self.dut.clk)

    async def run(self, gap_fn, ready_fn, max_cycles: int, trace: dict | None = None) -> int:
        """Send every input, check every output. Returns the cycles used."""
        prm, rnd = self.prm, self.rnd
        n = len(prm.inputs)
        i = got = cyc = 0
        offered = fired = False
        stalled_prev = None  # (payload) when the output was valid and not ready last cycle
        accept_cycle: list[int] = []
        while got < n:
            await RisingEdge(self.dut.clk)
            cyc += 1
            if cyc > max_cycles:
                raise AssertionError(f"timeout after {max_cycles} cycles: sent {i}/{n}, "
                                     f"received {got}/{n}")
            if fired:
                i += 1
                offered = False
            if i < n and not offered:
                offered = not gap_fn(cyc)
            valid = offered and i < n
            self.iv.value = int(valid)
            self.ip.value = prm.inputs[i] if valid else rnd.getrandbits(self.in_width)
            ready = bool(ready_fn(cyc))
            self.orr.value = int(ready)

            await ReadOnly()
            in_ready = bool(self.ir.value)
            fired = valid and in_ready
            if fired:
                accept_cycle.append(cyc)
            if trace is not None and valid and not in_ready:
                trace["in_stalls"] = trace.get("in_stalls", 0) + 1
            ov = bool(self.ov.value)
            if stalled_prev is not None:
                assert ov, f"cycle {cyc}: output valid dropped while stalled (beat {got})"
                assert self.op.value.to_unsigned() == stalled_prev, (
                    f"cycle {cyc}: output payload changed while stalled (beat {got})")
            stalled_prev = None
            if ov:
                word = self.op.value.to_unsigned()
                if ready:
                    assert got < n, f"cycle {cyc}: extra output {self.decode(word)}"
                    exp = prm.expected[got]
                    assert word == exp, (
                        f"cycle {cyc}: output {got} (input {prm.inputs[got]:#x}) mismatch: got "
                        f"{self.decode(word)}, expected {self.decode(exp)}")
                    if trace is not None:
                        trace.setdefault("out_cycles", []).append(cyc)
                    got += 1
                else:
                    stalled_prev = word
        if trace is not None:
            trace["accept_cycles"] = accept_cycle
        # Drain: nothing more may come out.
        await RisingEdge(self.dut.clk)
        self.iv.value = 0
        self.orr.value = 1
        for _ in range(prm.latency + 4):
            await ReadOnly()
            assert not bool(self.ov.value), "extra output beat after the last expected one"
            await RisingEdge(self.dut.clk)
        return cyc


async def _setup(dut, seed_offset: int) -> _Bench:
    prm = _Prm(tb_params())
    Clock(dut.clk, 10, unit="ns").start()
    bench = _Bench(dut, prm)
    bench.rnd = random.Random(prm.seed + seed_offset)
    await bench.reset()
    return bench


@cocotb.test()
async def no_gap_throughput(dut):
    """No input gaps, output always ready: one beat per cycle at the documented latency."""
    bench = await _setup(dut, 0)
    prm = bench.prm
    n = len(prm.inputs)
    trace: dict = {}
    limit = n + prm.latency + 20 if prm.rows is None else 4 * n + (prm.latency + 20) * len(prm.rows)
    await bench.run(lambda c: False, lambda c: True, max_cycles=limit, trace=trace)
    acc, out = trace["accept_cycles"], trace["out_cycles"]
    if prm.full_rate:
        assert trace.get("in_stalls", 0) == 0, f"the unit stalled its input {trace['in_stalls']} times"
        assert acc == list(range(acc[0], acc[0] + n)), "inputs not accepted one per cycle"
    if prm.rows is None:
        lat = [o - a for a, o in zip(acc, out)]
    else:  # per row: last beat in -> first beat out, unless the output was still busy with the
        # previous row (then the row follows it back to back)
        ends = [sum(prm.rows[:k + 1]) for k in range(len(prm.rows))]
        lat = [out[e - r] - acc[e - 1] for e, r in zip(ends, prm.rows)]
        lat = [prm.latency if k and out[e - r] == out[e - r - 1] + 1 and lt > prm.latency else lt
               for k, (e, r, lt) in enumerate(zip(ends, prm.rows, lat))]
    assert set(lat) == {prm.latency}, (
        f"measured latency {sorted(set(lat))} != documented latency {prm.latency}")
    dut._log.info("%d beats back to back, latency %d", n, prm.latency)


@cocotb.test()
async def random_gaps_backpressure(dut):
    """Random valid gaps and random / bursty output backpressure; every output checked."""
    bench = await _setup(dut, 1000)
    prm, rnd = bench.prm, bench.rnd
    n = len(prm.inputs)

    def ready_fn(c):
        if (c // 53) % 4 == 3:  # bursty: a long stall fills the pipeline
            return False
        return rnd.random() >= prm.p_stall

    cycles = await bench.run(lambda c: rnd.random() < prm.p_gap, ready_fn,
                             max_cycles=20 * n + 10 * prm.latency + 200)
    dut._log.info("%d beats with gaps and backpressure in %d cycles", n, cycles)
