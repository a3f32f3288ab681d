"""cocotb testbench of the oblivious map's AXI4 top (:class:`celosia.omap.rtl.OmapUnitAxi`),
loaded by :func:`celosia.omap.run_rtl_axi`.

One test, ``unit_axi_trace``, parameterised through ``CELOSIA_TB_PARAMS`` (``unit_file``: a JSON
file written by :func:`celosia.omap.run_rtl_axi`):

* provisions the keys through the ``key`` port (random gaps), checks that no command is
  accepted before the last key word and that the port refuses further beats afterwards;
* drives the initialisation beats and commands back to back (the unit paces them);
* plays an AXI4 slave over a byte array for host memory and one per HBM port (``hbm``:
  ``[[port, bytes, beat bytes], ...]``, answering within ``hbm_latency``): every AR/AW handshake is logged as
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
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge

from celosia.omap.tb.common import dump_regions
from celosia.sim.cocotb_runner import tb_params


class _Slave:
    """AXI4 slave state over ``mem`` on the port ``prefix``: pending read beats, write bursts,
    B responses. Read data starts within ``lat`` cycles of the request being presented."""

    def __init__(self, dut, prefix, p, mem, rng, data_bytes, lat):
        self.dut, self.mem, self.rng, self.prefix = dut, mem, rng, prefix
        self.db = data_bytes
        self.lat = lat
        self.p_addr, self.p_w, self.p_gap = float(p["p_addr_stall"]), float(p["p_w_stall"]), float(p["p_r_gap"])
        self.beats = []  # read beats: [earliest cycle, data, last]
        self.r_free = 0  # first cycle the R channel is free
        self.aw = []  # accepted write addresses awaiting data: [address, beats]
        self.wdata = []  # W beats of the burst in progress
        self.wbursts = []  # complete W bursts awaiting an address
        self.b_due = []  # cycles a B response becomes valid
        self.ar_seen = None  # cycle the pending AR was first presented
        self.faults = []
        self.sig = _Port(dut, prefix)

    def drive(self, cyc):
        r = self.rng
        self.sig.arready.value = int(r.random() >= self.p_addr)
        self.sig.awready.value = int(r.random() >= self.p_addr)
        self.sig.wready.value = int(r.random() >= self.p_w)
        if self.beats and self.beats[0][0] <= cyc:
            _, data, last = self.beats[0]
            self.sig.rvalid.value, self.sig.rdata.value, self.sig.rlast.value = 1, data, last
        else:
            self.sig.rvalid.value, self.sig.rlast.value = 0, 0
        self.sig.rresp.value = 0
        self.sig.bvalid.value = int(bool(self.b_due) and self.b_due[0] <= cyc)
        self.sig.bresp.value = 0

    def _burst(self, ch):
        ln, size, burst = (int(getattr(self.sig, f"{ch}{f}").value) for f in ("len", "size", "burst"))
        if burst != 1 or (1 << size) != self.db:
            self.faults.append(f"{ch}: burst {burst} size {size}")
        return int(getattr(self.sig, f"{ch}addr").value), ln + 1

    def sample(self, cyc, rel, log):
        """After ReadOnly: handshakes of this cycle."""
        r = self.rng
        if int(self.sig.arvalid.value):
            if self.ar_seen is None:
                self.ar_seen = cyc
            if int(self.sig.arready.value):
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
        if int(self.sig.rvalid.value):
            if not int(self.sig.rready.value):
                self.faults.append("rready low")
            self.beats.pop(0)
        if int(self.sig.awvalid.value) and int(self.sig.awready.value):
            addr, n = self._burst("aw")
            log.append([rel, "W", addr, n * self.db])
            self.aw.append([addr, n])
        if int(self.sig.wvalid.value) and int(self.sig.wready.value):
            if int(self.sig.wstrb.value) != (1 << self.db) - 1:
                self.faults.append("partial wstrb")
            self.wdata.append(int(self.sig.wdata.value))
            if int(self.sig.wlast.value):
                self.wbursts.append(self.wdata)
                self.wdata = []
        while self.aw and self.wbursts:
            (addr, n), data = self.aw.pop(0), self.wbursts.pop(0)
            if len(data) != n:
                self.faults.append(f"W burst of {len(data)} beats for AWLEN+1 = {n}")
            for k, w in enumerate(data):
                self.mem[addr + k * self.db:addr + (k + 1) * self.db] = w.to_bytes(self.db, "little")
            self.b_due.append(max([cyc + r.randint(1, 12)] + self.b_due[-1:]))
        if int(self.sig.bvalid.value):
            if not int(self.sig.bready.value):
                self.faults.append("bready low")
            self.b_due.pop(0)


class _Port:
    """``port.awaddr`` for the flattened Verilog signal ``<prefix>__awaddr``."""

    def __init__(self, dut, prefix):
        self._dut, self._prefix = dut, prefix

    def __getattr__(self, name):
        return getattr(self._dut, f"{self._prefix}__{name}")


@cocotb.test()
async def unit_axi_trace(dut):
    with open(tb_params()["unit_file"]) as f:
        p = json.load(f)
    rng = random.Random(int(p["seed"]))
    beats = [int(b) for b in p["cmds"]]
    keys = [int(k) for k in p["key_words"]]
    mem = bytearray(int(p["host_bytes"]))
    tamper = {int(k): v for k, v in p.get("tamper", {}).items()}
    slave = _Slave(dut, "host", p, mem, rng, int(p["data_bytes"]), int(p["host_latency"]))
    hbm = {name: _Slave(dut, name, p, bytearray(int(size)), rng, int(beat), int(p["hbm_latency"]))
           for name, size, beat in p["hbm"]}
    hlog = {name: [] for name in hbm}
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    for sig in ("cmd__valid", "key__valid", "host__rvalid", "host__bvalid"):
        getattr(dut, sig).value = 0
    for name in hbm:
        getattr(dut, f"{name}__rvalid").value = 0
        getattr(dut, f"{name}__bvalid").value = 0
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
        for x in hbm.values():
            x.drive(cyc)
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
        for name, x in hbm.items():
            x.sample(cyc, rel, hlog[name])
        cyc += 1
    for _ in range(40):  # let the last write bursts and B responses drain
        await FallingEdge(dut.clk)
        slave.drive(cyc)
        for x in hbm.values():
            x.drive(cyc)
        await ReadOnly()
        slave.sample(cyc, cyc - c0, log)
        for name, x in hbm.items():
            x.sample(cyc, cyc - c0, hlog[name])
        cyc += 1
    dumps = await dump_regions(dut, p["dump"])
    await RisingEdge(dut.clk)
    result = {"accepts": acc, "responses": resps, "host_log": log, "host_mem": mem.hex(), "dumps": dumps,
              "late": int(dut.late.value), "halted": int(dut.halted.value), "cycles": cyc,
              "host_fault": int(dut.host_fault.value) | 2 * int(dut.hbm_fault.value),
              "slave_faults": slave.faults + [f for x in hbm.values() for f in x.faults],
              "key_refused": refused, "hbm_mem": {name: x.mem.hex() for name, x in hbm.items()}, "hbm_log": hlog,
              "pending": [len(x.beats) + len(x.aw) + len(x.wbursts) + len(x.b_due) for x in (slave, *hbm.values())]}
    with open(p["out"], "w") as f:
        json.dump(result, f)
    assert len(resps) == int(p["n_resp"]), f"{len(resps)} of {p['n_resp']} responses in {cyc} cycles"
