"""cocotb testbench of the oblivious map's AXI4 top (:class:`celosia.hw.omap_axi.OmapUnitAxi`).

One test, ``unit_axi_trace``, parameterised through ``CELOSIA_TB_PARAMS`` (``unit_file``: a JSON
file written by :func:`celosia.omap.run_rtl_axi`):

* provisions the keys through the ``key`` port (random gaps), checks that no command is
  accepted before the last key word and that the port refuses further beats afterwards;
* drives the initialisation beats and commands back to back (the unit paces them);
* plays an AXI4 slave over a byte array: every AR/AW handshake is logged as
  ``[cycle, R/W, address, bytes]`` and checked (INCR burst, full-width beats, length); read data
  comes back after a random latency within the modelled host round trip with random gaps
  between beats, W beats are accepted with random WREADY stalls and B comes back after a random
  delay; with ``p_addr_stall > 0`` ARREADY/AWREADY stall too;
* dumps the HBM-side state through the debug port and writes everything to ``out`` for pytest
  to compare with the golden model (cycles relative to the first accepted command beat).
"""

from __future__ import annotations

import json
import random

import cocotb
from celosia.sim.cocotb_runner import tb_params
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge


class _Slave:
    """AXI4 slave state over ``mem``: pending read beats, write bursts, B responses."""

    def __init__(self, dut, p, mem, rng):
        self.dut, self.mem, self.rng = dut, mem, rng
        self.db = int(p["data_bytes"])
        self.lat = int(p["host_latency"])
        self.p_addr, self.p_w, self.p_gap = float(p["p_addr_stall"]), float(p["p_w_stall"]), float(p["p_r_gap"])
        self.beats = []  # read beats: [earliest cycle, data, last]
        self.r_free = 0  # first cycle the R channel is free
        self.aw = []  # accepted write addresses awaiting data: [address, beats]
        self.wdata = []  # W beats of the burst in progress
        self.wbursts = []  # complete W bursts awaiting an address
        self.b_due = []  # cycles a B response becomes valid
        self.ar_seen = None  # cycle the pending AR was first presented
        self.faults = []

    def drive(self, cyc):
        d, r = self.dut, self.rng
        d.host__arready.value = int(r.random() >= self.p_addr)
        d.host__awready.value = int(r.random() >= self.p_addr)
        d.host__wready.value = int(r.random() >= self.p_w)
        if self.beats and self.beats[0][0] <= cyc:
            _, data, last = self.beats[0]
            d.host__rvalid.value, d.host__rdata.value, d.host__rlast.value = 1, data, last
        else:
            d.host__rvalid.value, d.host__rlast.value = 0, 0
        d.host__rresp.value = 0
        d.host__bvalid.value = int(bool(self.b_due) and self.b_due[0] <= cyc)
        d.host__bresp.value = 0

    def _burst(self, ch):
        d = self.dut
        ln, size, burst = (int(getattr(d, f"host__{ch}{f}").value) for f in ("len", "size", "burst"))
        if burst != 1 or (1 << size) != self.db:
            self.faults.append(f"{ch}: burst {burst} size {size}")
        return int(getattr(d, f"host__{ch}addr").value), ln + 1

    def sample(self, cyc, rel, log):
        """After ReadOnly: handshakes of this cycle."""
        d, r = self.dut, self.rng
        if int(d.host__arvalid.value):
            if self.ar_seen is None:
                self.ar_seen = cyc
            if int(d.host__arready.value):
                addr, n = self._burst("ar")
                log.append([rel, "R", addr, n * self.db])
                # first beat within the modelled round trip from the request's presentation,
                # leaving room for random gaps; the R channel serialises bursts
                first = max(cyc + 1, self.ar_seen + r.randint(self.lat // 2, self.lat - 1), self.r_free)
                slack = max(0, self.ar_seen + self.lat - 1 - first)
                t = first
                for k in range(n):
                    while slack and r.random() < self.p_gap:
                        t, slack = t + 1, slack - 1
                    a = addr + k * self.db
                    self.beats.append([t, int.from_bytes(self.mem[a:a + self.db], "little"), int(k == n - 1)])
                    t += 1
                self.r_free = t
                self.ar_seen = None
        if int(d.host__rvalid.value):
            if not int(d.host__rready.value):
                self.faults.append("rready low")
            self.beats.pop(0)
        if int(d.host__awvalid.value) and int(d.host__awready.value):
            addr, n = self._burst("aw")
            log.append([rel, "W", addr, n * self.db])
            self.aw.append([addr, n])
        if int(d.host__wvalid.value) and int(d.host__wready.value):
            if int(d.host__wstrb.value) != (1 << self.db) - 1:
                self.faults.append("partial wstrb")
            self.wdata.append(int(d.host__wdata.value))
            if int(d.host__wlast.value):
                self.wbursts.append(self.wdata)
                self.wdata = []
        while self.aw and self.wbursts:
            (addr, n), data = self.aw.pop(0), self.wbursts.pop(0)
            if len(data) != n:
                self.faults.append(f"W burst of {len(data)} beats for AWLEN+1 = {n}")
            for k, w in enumerate(data):
                self.mem[addr + k * self.db:addr + (k + 1) * self.db] = w.to_bytes(self.db, "little")
            self.b_due.append(max([cyc + r.randint(1, 12)] + self.b_due[-1:]))
        if int(d.host__bvalid.value):
            if not int(d.host__bready.value):
                self.faults.append("bready low")
            self.b_due.pop(0)


@cocotb.test()
async def unit_axi_trace(dut):
    with open(tb_params()["unit_file"]) as f:
        p = json.load(f)
    rng = random.Random(int(p["seed"]))
    beats = [int(b) for b in p["cmds"]]
    keys = [int(k) for k in p["key_words"]]
    mem = bytearray(int(p["host_bytes"]))
    tamper = {int(k): v for k, v in p.get("tamper", {}).items()}
    slave = _Slave(dut, p, mem, rng)
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    for sig in ("cmd__valid", "key__valid", "host__rvalid", "host__bvalid"):
        getattr(dut, sig).value = 0
    dut.resp__ready.value = 1
    await RisingEdge(dut.clk)
    await RisingEdge(dut.clk)
    dut.rst.value = 0
    acc, resps, log = [], [], []
    nxt, kn, cyc, c0, refused = 0, 0, 0, None, 0
    limit = int(p["max_cycles"])
    while cyc < limit and (len(resps) < int(p["n_resp"]) or nxt < len(beats) or not int(dut.initialised.value)):
        await FallingEdge(dut.clk)
        # key words with random gaps; afterwards keep offering junk to see it refused
        dut.key__valid.value = int(kn < len(keys) and rng.random() < 0.6) or int(kn >= len(keys) and cyc < 200)
        dut.key__payload.value = keys[kn] if kn < len(keys) else 0xDEAD_BEEF
        dut.cmd__valid.value = int(nxt < len(beats))
        if nxt < len(beats):
            dut.cmd__payload.value = beats[nxt]
        slave.drive(cyc)
        await ReadOnly()
        rel = cyc - c0 if c0 is not None else cyc
        assert int(dut.keys_loaded.value) == (kn == len(keys)), f"keys_loaded wrong after {kn} key words"
        if int(dut.key__valid.value):
            if int(dut.key__ready.value):
                assert kn < len(keys), "the key port accepted a beat after the keys were loaded"
                kn += 1
            elif kn >= len(keys):
                refused += 1
        if nxt < len(beats) and int(dut.cmd__ready.value):
            assert kn == len(keys), "a command beat was accepted before the keys were loaded"
            if c0 is None:
                c0, rel = cyc, 0
            acc.append(rel)
            for addr, x in tamper.get(nxt, ()):
                mem[addr] ^= x
            nxt += 1
        if int(dut.resp__valid.value):
            resps.append([rel, int(dut.resp__payload.value)])
        slave.sample(cyc, rel, log)
        cyc += 1
    for _ in range(40):  # let the last write bursts and B responses drain
        await FallingEdge(dut.clk)
        slave.drive(cyc)
        await ReadOnly()
        slave.sample(cyc, cyc - c0, log)
        cyc += 1
    dumps = {}
    for sel, depth in p["dump"]:
        vals = []
        for a in range(depth):
            await FallingEdge(dut.clk)
            dut.dbg_sel.value = sel
            dut.dbg_addr.value = a
            await ReadOnly()
            vals.append(int(dut.dbg_data.value))
        dumps[str(sel)] = vals
    await RisingEdge(dut.clk)
    result = {"accepts": acc, "responses": resps, "host_log": log, "host_mem": mem.hex(), "dumps": dumps,
              "late": int(dut.late.value), "halted": int(dut.halted.value), "cycles": cyc,
              "host_fault": int(dut.host_fault.value), "slave_faults": slave.faults, "key_refused": refused,
              "pending": [len(slave.beats), len(slave.aw), len(slave.wbursts), len(slave.b_due)]}
    with open(p["out"], "w") as f:
        json.dump(result, f)
    assert len(resps) == int(p["n_resp"]), f"{len(resps)} of {p['n_resp']} responses in {cyc} cycles"
