# amaranth: UnusedElaboratable=no
"""The bin-block port of the oblivious map alone, on Amaranth's simulator (no Verilator build).

:class:`celosia.omap.rtl.blocks.BlockOnChip`, and :class:`~celosia.omap.rtl.blocks.BlockAxi`
against a small AXI4 slave written here (random READY stalls, R gaps and B delays; it checks
INCR bursts of the slot size, full strobes, WLAST/RLAST, no 4 KiB crossing, VALID held until
READY; a write becomes visible when its B response is sent, so a read that overtook a write
would see the old data). A random unit-like sequence of fetches, write-backs and puts is
checked against a Python model of the region: every fetch sees all earlier writes (also a
fetch strobed right after, or with, a write of the same bin), the slots come in order, ``q``
per fetch, ``idle`` returns and ``fault`` stays low. Then the fault cases and the constructor
errors.
"""

from __future__ import annotations

import random

import pytest
from amaranth.sim import Simulator
from celosia.omap.rtl.blocks import BlockAxi, BlockAxiSplit, BlockOnChip

from celosia.errors import HardwareGenerationError

_SAMPLED = ("arvalid", "arready", "araddr", "arlen", "arsize", "arburst",
            "awvalid", "awready", "awaddr", "awlen", "awsize", "awburst",
            "wvalid", "wready", "wdata", "wstrb", "wlast", "rvalid", "rready", "bvalid", "bready")


class AxiSlave:
    """A memory of slots (byte address -> int) on the DUT's AXI4 master port.

    ``rerr_beat``/``berr``: the R beat / B response (counted from 0) answered SLVERR;
    ``bad_rlast``: RLAST one beat early on every burst. ``axi``: the master port (default
    ``dut.axi``); ``lat(cycle, rng)``: cycles from an AR to its first R beat beyond the first
    (default 0 to 3); ``ready``: probabilities of ARREADY, AWREADY, WREADY; ``gap``: of a cycle
    without R between two beats.
    """

    def __init__(self, dut, rng, rerr_beat=None, berr=None, bad_rlast=False, axi=None, lat=None,
                 ready=(0.6, 0.6, 0.7), gap=0.3):
        self.dut, self.a, self.rng = dut, dut.axi if axi is None else axi, rng
        self.sb = dut.slot_bytes
        self.rerr_beat, self.berr, self.bad_rlast = rerr_beat, berr, bad_rlast
        self.lat = lat or (lambda cyc, rng: rng.randrange(4))
        self.ready, self.gap = ready, gap
        self.mem = {}
        self.log = []  # ("R" | "W", address, len) in handshake order per channel
        self.ar_cycles, self.rlast_cycles = [], []  # cycles of the AR handshakes, of the last R beats
        self.r = []  # [due cycle, data, last, resp] in order
        self.aw = []  # (address, len) waiting for their W beats
        self.wbeats = []  # (data, last) not yet matched to an AW
        self.b = []  # [due cycle, [(address, data), ...]] in order
        self.nr = self.nb = 0

    def _check_burst(self, addr, length, size, burst):
        assert burst == 1 and 1 << size == self.sb, (burst, size)
        assert addr % self.sb == 0
        assert addr % 4096 + (length + 1) * self.sb <= 4096, f"burst at {addr:#x} crosses 4 KiB"

    async def run(self, ctx):
        a, rng, cyc, prev = self.a, self.rng, 0, None
        mask = (1 << self.dut.slot_w) - 1
        while True:
            ctx.set(a.arready, rng.random() < self.ready[0])
            ctx.set(a.awready, rng.random() < self.ready[1])
            ctx.set(a.wready, rng.random() < self.ready[2])
            head = self.r[0] if self.r and self.r[0][0] <= cyc else None
            ctx.set(a.rvalid, head is not None)
            ctx.set(a.rdata, head[1] if head else 0)
            ctx.set(a.rlast, head[2] if head else 0)
            ctx.set(a.rresp, head[3] if head else 0)
            bhead = self.b[0] if self.b and self.b[0][0] <= cyc else None
            ctx.set(a.bvalid, bhead is not None)
            ctx.set(a.bresp, 2 if bhead and self.nb == self.berr else 0)
            _, _, *vals = await ctx.tick().sample(*(getattr(a, n) for n in _SAMPLED))
            s = dict(zip(_SAMPLED, vals))
            if prev is not None:  # VALID stays up, with the same payload, until READY
                for ch, keep in (("ar", ("araddr", "arlen")), ("aw", ("awaddr", "awlen")), ("w", ("wdata", "wlast"))):
                    if prev[f"{ch}valid"] and not prev[f"{ch}ready"]:
                        assert s[f"{ch}valid"] and all(s[k] == prev[k] for k in keep), f"{ch} dropped at {cyc}"
            prev = s
            if s["arvalid"] and s["arready"]:
                addr, n = s["araddr"], s["arlen"]
                self._check_burst(addr, n, s["arsize"], s["arburst"])
                self.log.append(("R", addr, n))
                self.ar_cycles.append(cyc)
                t = max([cyc + 1 + self.lat(cyc, rng)] + [self.r[-1][0] + 1 for _ in self.r[-1:]])
                for k in range(n + 1):
                    t += rng.random() < self.gap
                    resp = 2 if self.nr + len(self.r) == self.rerr_beat else 0
                    last = k == (n - 1 if self.bad_rlast else n)
                    self.r.append([t, self.mem.get(addr + k * self.sb, 0), last, resp])
                    t += 1
            if head is not None and s["rready"]:
                if head[2]:
                    self.rlast_cycles.append(cyc)
                self.r.pop(0)
                self.nr += 1
            if s["awvalid"] and s["awready"]:
                self._check_burst(s["awaddr"], s["awlen"], s["awsize"], s["awburst"])
                self.log.append(("W", s["awaddr"], s["awlen"]))
                self.aw.append((s["awaddr"], s["awlen"]))
            if s["wvalid"] and s["wready"]:
                assert s["wstrb"] == (1 << self.sb) - 1 and s["wdata"] & ~mask == 0
                self.wbeats.append((s["wdata"], s["wlast"]))
            ends = [i for i, (_, last) in enumerate(self.wbeats) if last]
            if self.aw and ends:  # a whole burst: its B a little later, the data visible then
                addr, n = self.aw.pop(0)
                assert ends[0] == n, f"WLAST after {ends[0] + 1} beats of a {n + 1}-beat burst"
                beats, self.wbeats = self.wbeats[:n + 1], self.wbeats[n + 1:]
                due = max([cyc + 1 + rng.randrange(6)] + [self.b[-1][0] for _ in self.b[-1:]])
                self.b.append([due, [(addr + k * self.sb, d) for k, (d, _) in enumerate(beats)]])
            if bhead is not None and s["bready"]:
                self.mem.update(self.b.pop(0)[1])
                self.nb += 1
            cyc += 1


class Driver:
    """Strobes the block port like the unit does and keeps a model of the region.

    A write buffer is known free once ``idle`` was seen after its strobe, or once a fetch
    strobed with or after it has delivered its last slot (it waited for the write). ``side``
    maps a bin to its sub-port (:class:`~celosia.omap.rtl.blocks.BlockAxiSplit`): each has its
    own buffers, and a fetch waits only for the writes of its own.
    """

    def __init__(self, dut, ctx, rng, side=lambda b: 0):
        self.dut, self.ctx, self.rng = dut, ctx, rng
        self.q, self.bins, self.sw = dut.q, dut.bins, dut.slot_w
        self.model = [[0] * self.q for _ in range(self.bins)]
        self.expect, self.beats = [], []
        self.fetches, self.writes = [], []  # bins fetched in order; (bin, pos or None) written
        self.side = side
        self.busy_until = {}  # (buffer (0, 1, 2 = put), sub-port) -> fetches requested before its strobe
        self.fault = False
        self.cycles = 0  # steps taken; a beat sampled in step c is recorded as cycle c
        self.beat_cycles = []
        self.fetch_cycles = []  # steps taken before each fetch's strobe (the slave's cycle of it)

    @property
    def delivered(self):
        return len(self.beats) // self.q

    def free(self, k, b=0):
        """Whether buffer ``k`` of bin ``b``'s sub-port is known free."""
        return (k, self.side(b)) not in self.busy_until

    async def step(self, **sets):
        ctx, dut = self.ctx, self.dut
        for name, v in sets.items():
            ctx.set(getattr(dut, name), v)
        _, _, valid, payload, idle, fault = await ctx.tick().sample(dut.ent.valid, dut.ent.payload, dut.idle,
                                                                    dut.fault)
        for name in ("fetch", "wb", "put"):
            ctx.set(getattr(dut, name), 0)
        self.cycles += 1
        if valid:
            self.beats.append(payload)
            self.beat_cycles.append(self.cycles)
        self.fault |= bool(fault)
        strobed = any(k in sets for k in ("wb", "put"))
        for (k, sub), before in list(self.busy_until.items()):
            if (idle and not strobed) or any(self.side(b) == sub for b in self.fetches[before:self.delivered]):
                del self.busy_until[k, sub]
        return idle

    async def issue(self, fetch=None, wb=None, put=None, force=False):
        """One cycle of strobes: ``fetch`` a bin, ``wb`` a list of (buffer, bin, slots), ``put``
        (bin, pos, slot). The writes land in the model before the fetch reads it."""
        sets = {}
        for k, b, slots in wb or []:
            assert force or self.free(k, b), f"test bug: write-back buffer {k} busy"
            sets.update({"wb": sets.get("wb", 0) | 1 << k, f"wb_bin{k}": b,
                         f"wb_data{k}": sum(v << i * self.sw for i, v in enumerate(slots))})
            self.model[b] = list(slots)
            self.writes.append((b, None))
            self.busy_until[k, self.side(b)] = len(self.fetches)
        if put is not None:
            b, pos, v = put
            assert force or self.free(2, b), "test bug: put buffer busy"
            sets.update(put=1, put_bin=b, put_pos=pos, put_data=v)
            self.model[b][pos] = v
            self.writes.append((b, pos))
            self.busy_until[2, self.side(b)] = len(self.fetches)
        if fetch is not None:
            assert force or len(self.fetches) - self.delivered < 2, "test bug: third fetch"
            sets.update(fetch=1, fetch_bin=fetch)
            self.expect += self.model[fetch]
            self.fetches.append(fetch)
            self.fetch_cycles.append(self.cycles)
        return await self.step(**sets)

    async def wait(self, cond, limit=2000):
        for _ in range(limit):
            if cond():
                return
            await self.step()
        raise AssertionError("timed out")

    async def wait_idle(self, limit=2000):
        await self.step()  # idle is registered: the first sample after a strobe is stale
        for _ in range(limit):
            if await self.step():
                return
        raise AssertionError("never idle")

    def slots(self):
        return [self.rng.getrandbits(self.sw) for _ in range(self.q)]


async def unit_like(drv: Driver, commands: int):
    """Commands as the unit issues them, plus an initialisation-like burst of puts."""
    rng, q, bins = drv.rng, drv.q, drv.bins
    for _ in range(6):  # initialisation: single-slot appends, then one block at a time
        b = rng.randrange(bins)
        await drv.wait(lambda b=b: drv.free(2, b))
        await drv.issue(put=(b, rng.randrange(q), rng.getrandbits(drv.sw)))
        await drv.wait_idle()
    b = rng.randrange(bins)
    await drv.issue(fetch=b)
    await drv.wait(lambda: drv.delivered == len(drv.fetches))
    await drv.issue(wb=[(1, b, drv.slots())])
    await drv.issue(fetch=b)  # right after the write-back of its bin
    await drv.wait(lambda: drv.delivered == len(drv.fetches))

    tail, recent = {}, [b]
    for _ in range(commands):
        a, b = rng.sample(range(bins), 2)
        if rng.random() < 0.6:  # a bin just written
            a = rng.choice(recent)
            b = rng.choice([x for x in range(bins) if x != a])
        pre = None
        pre_bins = [x for x in (a, b) if x not in [y for _, y, _ in tail.get("wb", [])]  # writes never overlap
                    and drv.free(2, x)]
        if pre_bins and not tail.get("put") and rng.random() < 0.5:
            pre = (rng.choice(pre_bins), rng.randrange(q), rng.getrandbits(drv.sw))
        if tail and rng.random() < 0.3:  # the last command's writes in the cycle of this fetch
            await drv.issue(fetch=a, **tail)
        else:
            if tail:
                await drv.issue(**tail)
            if pre and rng.random() < 0.5:
                await drv.issue(put=pre)
                pre = None
            await drv.issue(fetch=a, put=pre)
        for _ in range(rng.randrange(3)):
            await drv.step()
        await drv.issue(fetch=b)
        n = len(drv.fetches)
        wb = []
        if rng.random() < 0.3:  # block 0 back while block 1 still streams
            await drv.wait(lambda n=n: drv.delivered >= n - 1)
            await drv.issue(wb=[(0, a, drv.slots())])
            wb = [(1, b, drv.slots())]
        await drv.wait(lambda n=n: drv.delivered == n)
        if not wb:
            mask = rng.choice([1, 2, 3, 3])
            wb = [(k, x, drv.slots()) for k, x in ((0, a), (1, b)) if mask >> k & 1]
        tail = {"wb": wb}
        recent = [x for _, x, _ in wb]
        third = [x for x in range(bins) if x not in (a, b) and drv.free(2, x)]
        if third and rng.random() < 0.5:  # append to a third bin
            c = rng.choice(third)
            tail["put"] = (c, rng.randrange(q), rng.getrandbits(drv.sw))
            recent.append(c)
        for _ in range(rng.randrange(3)):
            await drv.step()
    await drv.issue(**tail)
    await drv.issue(fetch=recent[0])
    await drv.wait_idle()


def _simulate(dut, script, *slaves):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    for slave in slaves:
        if slave is not None:
            sim.add_testbench(slave.run, background=True)
    out = {}

    async def tb(ctx):
        await script(ctx, out)

    sim.add_testbench(tb)
    sim.run()
    return out


CONFIGS = [(137, 6, 8, 0x2000), (40, 5, 6, 0x1000), (64, 1, 3, 0x40)]


@pytest.mark.parametrize("kind", ["onchip", "axi"])
@pytest.mark.parametrize("slot_w,q,bins,base", CONFIGS)
def test_block_port_random(kind, slot_w, q, bins, base):
    dut = BlockAxi(slot_w, q, bins, addr_width=32, base=base) if kind == "axi" else BlockOnChip(slot_w, q, bins)
    rng = random.Random(slot_w * 1000 + q)
    slave = AxiSlave(dut, random.Random(q)) if kind == "axi" else None

    async def script(ctx, out):
        drv = Driver(dut, ctx, rng)
        await unit_like(drv, 80)
        if kind == "onchip":
            mem = []
            for addr in range(bins * q):
                ctx.set(dut.dbg_addr, addr)
                mem.append(ctx.get(dut.dbg_data))
        else:
            mem = [slave.mem.get(base + b * dut.block_stride + k * dut.slot_bytes, 0)
                   for b in range(bins) for k in range(q)]
        out.update(drv=drv, mem=mem)

    out = _simulate(dut, script, slave)
    drv = out["drv"]
    assert len(drv.beats) == len(drv.expect) == q * len(drv.fetches)
    assert drv.beats == drv.expect  # in order, each fetch with every earlier write
    assert out["mem"] == [v for blk in drv.model for v in blk]
    assert not drv.fault
    if kind == "axi":
        sb, stride = dut.slot_bytes, dut.block_stride
        reads = [(addr, n) for ch, addr, n in slave.log if ch == "R"]
        writes = [(addr, n) for ch, addr, n in slave.log if ch == "W"]
        assert reads == [(base + b * stride, q - 1) for b in drv.fetches]
        assert sorted(writes) == sorted((base + b * stride, q - 1) if pos is None else (base + b * stride + pos * sb, 0)
                                        for b, pos in drv.writes)


def test_axi_layout():
    dut = BlockAxi(137, 6, 8, base=0x4000)
    assert (dut.data_width, dut.slot_bytes, dut.block_stride, dut.region_bytes) == (256, 32, 256, 2048)
    dut = BlockAxi(40, 5, 6)
    assert (dut.data_width, dut.slot_bytes, dut.block_stride, dut.region_bytes) == (64, 8, 64, 384)
    assert len(dut.axi.wdata) == 64 and len(dut.wb_data0) == 200 and len(dut.fetch_bin) == 3
    assert len(BlockOnChip(40, 1, 1).fetch_bin) == 1


@pytest.mark.parametrize("case", ["clean", "rerr", "berr", "rlast"])
def test_axi_fault_responses(case):
    dut = BlockAxi(137, 6, 8)
    slave = AxiSlave(dut, random.Random(1), rerr_beat=3 if case == "rerr" else None,
                     berr=0 if case == "berr" else None, bad_rlast=case == "rlast")

    async def script(ctx, out):
        drv = Driver(dut, ctx, random.Random(2))
        await drv.issue(put=(3, 2, 5))
        await drv.issue(fetch=3)
        await drv.wait_idle()
        out["drv"] = drv

    drv = _simulate(dut, script, slave)["drv"]
    assert drv.fault == (case != "clean")
    if case == "clean":
        assert drv.beats == [0, 0, 5, 0, 0, 0]


@pytest.mark.parametrize("kind", ["onchip", "axi"])
@pytest.mark.parametrize("case", ["clean", "wb", "put", "fetch"])
def test_busy_faults(kind, case):
    dut = BlockAxi(137, 6, 8) if kind == "axi" else BlockOnChip(137, 6, 8)
    slave = AxiSlave(dut, random.Random(3)) if kind == "axi" else None

    async def script(ctx, out):
        drv = Driver(dut, ctx, random.Random(4))
        blk = [(0, 1, drv.slots())]
        await drv.issue(wb=blk)
        await drv.issue(put=(2, 0, 1))
        if case == "wb":  # buffer 0 still writing its six slots
            await drv.issue(wb=blk, force=True)
        if case == "put":
            await drv.issue(put=(2, 1, 1), force=True)
        for b in range(3 if case == "fetch" else 2):
            await drv.issue(fetch=b, force=True)
        await drv.wait_idle()
        out["drv"] = drv

    drv = _simulate(dut, script, slave)["drv"]
    assert drv.fault == (case != "clean")
    if case == "clean":
        assert drv.beats == drv.expect


def test_onchip_fetch_timing():
    """Slots stream from the cycle after the strobe, one per cycle, two fetches back to back;
    a fetch behind a write-back waits for its q slot writes."""
    dut = BlockOnChip(40, 5, 6)

    async def script(ctx, out):
        drv = Driver(dut, ctx, random.Random(5))
        await drv.issue(fetch=1)  # step 1
        await drv.issue(fetch=2)
        await drv.wait(lambda: drv.delivered == 2)
        await drv.issue(wb=[(0, 3, drv.slots())])  # step 12: slots written in steps 13..17
        await drv.issue(fetch=3)  # step 13
        await drv.wait_idle()
        out["drv"] = drv

    drv = _simulate(dut, script)["drv"]
    assert drv.beat_cycles[:10] == list(range(2, 12))
    assert drv.beat_cycles[10:] == list(range(18, 23))
    assert drv.beats == drv.expect and not drv.fault


# ---- BlockAxiSplit: value store and eviction queues on two masters ----------------------------

SPLIT_CONFIGS = [(137, 6, 8, 3, 0x4000, 0x800), (40, 5, 6, 4, 0x1000, 0x1000), (64, 1, 3, 1, 0x40, 0),
                 (40, 5, 6, 0, 0, 0x2000)]


def _phased(slow_phase, period=150):
    """R latency of a slave: 15 to 39 cycles in every other ``period`` cycles, 0 or 1 in the
    others; the two slaves are slow in turns, so each is sometimes far ahead of the other."""
    def lat(cyc, rng):
        return rng.randrange(15, 40) if (cyc // period) % 2 == slow_phase else rng.randrange(2)
    return lat


class Split:
    """The sub-ports of a :class:`BlockAxiSplit` as the testbench sees them: a slave on each
    master, and where each bin's block lives."""

    def __init__(self, dut, bases, seed, **slave_kwargs):
        self.dut, self.names = dut, list(dut.sub_ports)
        self.bases = bases
        self.lo = {"values": 0, "queues": dut.split}
        self.slaves = {name: AxiSlave(dut, random.Random(seed + k), axi=getattr(dut, f"axi_{name}"),
                                      **({"lat": _phased(k)} | slave_kwargs))
                       for k, name in enumerate(self.names)}

    def side(self, b):
        """Index of bin ``b``'s sub-port in ``names``."""
        return int(b >= self.dut.split) if self.dut.split else 0

    def block_addr(self, b):
        name = self.names[self.side(b)]
        return self.bases[name] + (b - self.lo[name]) * self.dut.block_stride

    def per_fetch(self, fetches):
        """(AR cycle, last R beat cycle) of each fetch, in request order."""
        seen, out = {name: 0 for name in self.names}, []
        for b in fetches:
            name = self.names[self.side(b)]
            sl, i = self.slaves[name], seen[name]
            out.append((sl.ar_cycles[i], sl.rlast_cycles[i]))
            seen[name] += 1
        return out


@pytest.mark.parametrize("slot_w,q,bins,split,vbase,qbase", SPLIT_CONFIGS)
def test_split_random(slot_w, q, bins, split, vbase, qbase):
    dut = BlockAxiSplit(slot_w, q, bins, split, addr_width=32, values_base=vbase, queues_base=qbase)
    sp = Split(dut, {"values": vbase, "queues": qbase}, seed=q)
    assert list(sp.slaves) == (["values", "queues"] if split else ["queues"])
    rng = random.Random(slot_w * 1000 + q + split)

    async def script(ctx, out):
        drv = Driver(dut, ctx, rng, side=sp.side)
        await unit_like(drv, 60)
        out["drv"] = drv

    drv = _simulate(dut, script, *sp.slaves.values())["drv"]
    sb = dut.slot_bytes
    assert len(drv.beats) == len(drv.expect) == q * len(drv.fetches)
    assert drv.beats == drv.expect  # in request order, q per fetch, each with every earlier write
    assert not drv.fault
    for k, name in enumerate(sp.names):
        sl = sp.slaves[name]
        mine = [b for b in range(bins) if sp.side(b) == k]
        assert [sl.mem.get(sp.block_addr(b) + i * sb, 0) for b in mine for i in range(q)] == \
            [v for b in mine for v in drv.model[b]]
        reads = [(addr, n) for ch, addr, n in sl.log if ch == "R"]
        writes = [(addr, n) for ch, addr, n in sl.log if ch == "W"]
        assert reads == [(sp.block_addr(b), q - 1) for b in drv.fetches if sp.side(b) == k]
        assert sorted(writes) == sorted((sp.block_addr(b), q - 1) if pos is None else (sp.block_addr(b) + pos * sb, 0)
                                        for b, pos in drv.writes if sp.side(b) == k)
    # a fetch of the other sub-port shows its AR only after the fetch ahead of it is all in
    times = sp.per_fetch(drv.fetches)
    held = {(0, 1): 0, (1, 0): 0}
    for i in range(1, len(drv.fetches)):
        prev, cur = sp.side(drv.fetches[i - 1]), sp.side(drv.fetches[i])
        if prev != cur:
            assert times[i][0] > times[i - 1][1], f"fetch {i} overlaps fetch {i - 1}"
            held[prev, cur] += drv.fetch_cycles[i] <= times[i - 1][1]  # strobed while the other one streamed
    if split:  # both orders were held back, often
        assert min(held.values()) >= 5, held


def test_split_fetch_order_directed():
    """Steady slaves (always ready, values 20 cycles slower than queues): a fetch behind one of
    the other sub-port shows its AR the cycle after that one's last beat; a fetch strobed in that
    very cycle goes a cycle later (same sub-port) or after the released one (other sub-port)."""
    dut = BlockAxiSplit(40, 5, 6, 3, addr_width=32)
    lats = {"values": 20, "queues": 0}
    sp = Split(dut, {"values": 0, "queues": 0}, seed=7, ready=(1, 1, 1), gap=0)
    for name, sl in sp.slaves.items():
        sl.lat = lambda cyc, rng, n=lats[name]: n

    async def script(ctx, out):
        drv = Driver(dut, ctx, random.Random(8), side=sp.side)
        await drv.issue(put=(4, 1, 9))
        await drv.wait_idle()
        for first, second, third in ((1, 4, 5), (3, 0, 4)):
            start = len(drv.fetches)
            await drv.issue(fetch=first)
            await drv.issue(fetch=second)  # held: the first streams from the other sub-port
            await drv.wait(lambda s=start: drv.delivered == s + 1)
            await drv.issue(fetch=third)  # the cycle the second is released
            await drv.wait_idle()
        out["drv"] = drv

    drv = _simulate(dut, script, *sp.slaves.values())["drv"]
    assert drv.beats == drv.expect and drv.expect[5:10] == [0, 9, 0, 0, 0] and not drv.fault
    (ar0, last0), (ar1, _), (ar2, _), (ar3, last3), (ar4, last4), (ar5, _) = sp.per_fetch(drv.fetches)
    assert ar0 == drv.fetch_cycles[0] and last0 == ar0 + 1 + 20 + 4
    assert ar1 == last0 + 1 and ar2 == ar1 + 1  # Q behind V; Q strobed in Q's release cycle
    assert ar3 == drv.fetch_cycles[3] and ar4 == last3 + 1  # V behind Q
    assert ar5 == last4 + 1  # Q strobed in V's release cycle waits for V


@pytest.mark.parametrize("case", ["clean", "third"])
def test_split_third_fetch_fault(case):
    dut = BlockAxiSplit(137, 6, 8, 3)
    sp = Split(dut, {"values": 0, "queues": 0}, seed=3)

    async def script(ctx, out):
        drv = Driver(dut, ctx, random.Random(4), side=sp.side)
        for b in (1, 5, 2) if case == "third" else (1, 5):  # the held one counts
            await drv.issue(fetch=b, force=True)
        await drv.wait_idle()
        out["drv"] = drv

    drv = _simulate(dut, script, *sp.slaves.values())["drv"]
    assert drv.fault == (case == "third")
    assert drv.beats == drv.expect[:12]


def test_split_layout():
    dut = BlockAxiSplit(137, 6, 8, 3, values_base=0x4000, queues_base=0x800)
    assert (dut.data_width, dut.slot_bytes, dut.block_stride) == (256, 32, 256)
    assert (dut.values_region_bytes, dut.queues_region_bytes) == (3 * 256, 5 * 256)
    assert list(dut.sub_ports) == ["values", "queues"]
    v, q = dut.sub_ports["values"], dut.sub_ports["queues"]
    assert (v.bins, v.base, q.bins, q.base) == (3, 0x4000, 5, 0x800)
    assert set(dut.signature.members) == set(BlockAxi(137, 6, 8).signature.members) - {"axi"} | {"axi_values",
                                                                                               "axi_queues"}
    assert len(dut.axi_values.rdata) == len(dut.axi_queues.rdata) == 256 and len(dut.fetch_bin) == 3
    dut = BlockAxiSplit(40, 5, 6, 0)
    assert list(dut.sub_ports) == ["queues"] and "axi_values" not in dut.signature.members
    assert (dut.values_region_bytes, dut.queues_region_bytes) == (0, 6 * 64)


@pytest.mark.parametrize("kwargs,msg", [
    ({"split": 8}, "split=8 with bins=8"),
    ({"split": 9}, "split=9 with bins=8"),
    ({"split": -1}, "split=-1"),
    ({"split": 3, "queues_base": 0x80}, "not aligned"),
    ({"split": 3, "q": 0}, "bin_block=0"),
])
def test_split_constructor_errors(kwargs, msg):
    with pytest.raises(HardwareGenerationError, match=msg) as e:
        BlockAxiSplit(**{"slot_w": 137, "q": 6, "bins": 8, **kwargs})
    assert e.value.hint


@pytest.mark.parametrize("kwargs,msg", [
    ({"slot_w": 64, "q": 257, "bins": 4}, "257"),
    ({"slot_w": 64, "q": 0, "bins": 4}, "bin_block=0"),
    ({"slot_w": 137, "q": 200, "bins": 4}, "4 KiB"),
    ({"slot_w": 1100, "q": 2, "bins": 4}, "2048-bit"),
    ({"slot_w": 137, "q": 6, "bins": 8, "base": 0x80}, "not aligned"),
    ({"slot_w": 64, "q": 8, "bins": 65, "addr_width": 12}, "12-bit"),
])
def test_axi_constructor_errors(kwargs, msg):
    with pytest.raises(HardwareGenerationError, match=msg) as e:
        BlockAxi(**kwargs)
    assert e.value.hint
