# amaranth: UnusedElaboratable=no
"""The bin-block port of the oblivious map alone, on Amaranth's simulator (no Verilator build).

:class:`celosia.hw.omap_blocks.BlockOnChip`, and :class:`~celosia.hw.omap_blocks.BlockAxi`
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
from celosia.hw.omap_blocks import BlockAxi, BlockOnChip

from celosia.errors import HardwareGenerationError

_SAMPLED = ("arvalid", "arready", "araddr", "arlen", "arsize", "arburst",
            "awvalid", "awready", "awaddr", "awlen", "awsize", "awburst",
            "wvalid", "wready", "wdata", "wstrb", "wlast", "rvalid", "rready", "bvalid", "bready")


class AxiSlave:
    """A memory of slots (byte address -> int) on the DUT's AXI4 master port.

    ``rerr_beat``/``berr``: the R beat / B response (counted from 0) answered SLVERR;
    ``bad_rlast``: RLAST one beat early on every burst.
    """

    def __init__(self, dut, rng, rerr_beat=None, berr=None, bad_rlast=False):
        self.dut, self.a, self.rng = dut, dut.axi, rng
        self.sb = dut.slot_bytes
        self.rerr_beat, self.berr, self.bad_rlast = rerr_beat, berr, bad_rlast
        self.mem = {}
        self.log = []  # ("R" | "W", address, len) in handshake order per channel
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
            ctx.set(a.arready, rng.random() < 0.6)
            ctx.set(a.awready, rng.random() < 0.6)
            ctx.set(a.wready, rng.random() < 0.7)
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
                t = max([cyc + 1 + rng.randrange(4)] + [self.r[-1][0] + 1 for _ in self.r[-1:]])
                for k in range(n + 1):
                    t += rng.random() < 0.3  # a gap
                    resp = 2 if self.nr + len(self.r) == self.rerr_beat else 0
                    last = k == (n - 1 if self.bad_rlast else n)
                    self.r.append([t, self.mem.get(addr + k * self.sb, 0), last, resp])
                    t += 1
            if head is not None and s["rready"]:
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
    strobed with or after it has delivered its last slot (it waited for the write).
    """

    def __init__(self, dut, ctx, rng):
        self.dut, self.ctx, self.rng = dut, ctx, rng
        self.q, self.bins, self.sw = dut.q, dut.bins, dut.slot_w
        self.model = [[0] * self.q for _ in range(self.bins)]
        self.expect, self.beats = [], []
        self.fetches, self.writes = [], []  # bins fetched in order; (bin, pos or None) written
        self.busy_until = {}  # buffer (0, 1, 2 = put) -> fetches requested before its strobe
        self.fault = False
        self.cycles = 0  # steps taken; a beat sampled in step c is recorded as cycle c
        self.beat_cycles = []

    @property
    def delivered(self):
        return len(self.beats) // self.q

    def free(self, k):
        return k not in self.busy_until

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
        for k, before in list(self.busy_until.items()):
            if (idle and not strobed) or self.delivered > before:
                del self.busy_until[k]
        return idle

    async def issue(self, fetch=None, wb=None, put=None, force=False):
        """One cycle of strobes: ``fetch`` a bin, ``wb`` a list of (buffer, bin, slots), ``put``
        (bin, pos, slot). The writes land in the model before the fetch reads it."""
        sets = {}
        for k, b, slots in wb or []:
            assert force or self.free(k), f"test bug: write-back buffer {k} busy"
            sets.update({"wb": sets.get("wb", 0) | 1 << k, f"wb_bin{k}": b,
                         f"wb_data{k}": sum(v << i * self.sw for i, v in enumerate(slots))})
            self.model[b] = list(slots)
            self.writes.append((b, None))
            self.busy_until[k] = len(self.fetches)
        if put is not None:
            b, pos, v = put
            assert force or self.free(2), "test bug: put buffer busy"
            sets.update(put=1, put_bin=b, put_pos=pos, put_data=v)
            self.model[b][pos] = v
            self.writes.append((b, pos))
            self.busy_until[2] = len(self.fetches)
        if fetch is not None:
            assert force or len(self.fetches) - self.delivered < 2, "test bug: third fetch"
            sets.update(fetch=1, fetch_bin=fetch)
            self.expect += self.model[fetch]
            self.fetches.append(fetch)
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
        await drv.wait(lambda: drv.free(2))
        await drv.issue(put=(rng.randrange(bins), rng.randrange(q), rng.getrandbits(drv.sw)))
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
        pre_bins = [x for x in (a, b) if x not in [y for _, y, _ in tail.get("wb", [])]]  # writes never overlap
        if pre_bins and not tail.get("put") and drv.free(2) and rng.random() < 0.5:
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
        if rng.random() < 0.5:  # append to a third bin
            c = rng.choice([x for x in range(bins) if x not in (a, b)])
            tail["put"] = (c, rng.randrange(q), rng.getrandbits(drv.sw))
            recent.append(c)
        for _ in range(rng.randrange(3)):
            await drv.step()
    await drv.issue(**tail)
    await drv.issue(fetch=recent[0])
    await drv.wait_idle()


def _simulate(dut, script, slave=None):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
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
