# amaranth: UnusedElaboratable=no
"""The AXI4 page master of the oblivious map alone, on Amaranth's simulator (no Verilator build).

:class:`celosia.omap.rtl.axi.Axi4PageMaster` at 512-bit (one beat per 64-byte page, the
generated default) and 64-bit data (six beats per 48-byte page, as in the Verilator test):
ARVALID/AWVALID rise in the very cycle of the request with the page's address and burst
length; read beats are assembled into pages in order whatever the gaps; write pages leave as
beats in order under random WREADY stalls; a read waits while a write is unacknowledged; and
the fault flag catches an error response, an RLAST in the wrong place and a request into full
queues.
"""

from __future__ import annotations

import random

import pytest
from amaranth.sim import Simulator
from celosia.omap.rtl import Axi4PageMaster


def _run(dut, script, cycles):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    out = {}

    async def tb(ctx):
        await script(ctx, out)

    sim.add_testbench(tb)
    sim.run_until(cycles * 1e-8)
    return out


@pytest.mark.parametrize("data_width,page_bytes", [(512, 64), (64, 48)])
def test_page_master_reads_and_writes(data_width, page_bytes):
    dut = Axi4PageMaster(page_bytes, data_width)
    a, db, nb = dut.axi, data_width // 8, page_bytes // (data_width // 8)
    rng = random.Random(data_width)
    mem = bytearray(rng.randbytes(4096))
    pages = [rng.randbytes(page_bytes) for _ in range(2)]

    def req(write, addr, data=b""):
        return write | addr << 1 | page_bytes << 65 | int.from_bytes(data, "little") << 97

    # cycle -> request: two reads, later two writes, then a read of the page just written
    plan = {2: req(0, 0x100), 3: req(0, 0x40), 40: req(1, 0x200, pages[0]), 41: req(1, 0x280, pages[1]),
            43: req(0, 0x200)}

    async def script(ctx, out):
        issued, got, beats, wdata, b_due, aw = [], [], [], [], [], []
        for cyc in range(200):
            ctx.set(dut.req.valid, cyc in plan)
            ctx.set(dut.req.payload, plan.get(cyc, 0))
            ctx.set(dut.rdata.ready, 1)
            ctx.set(a.arready, 1)
            ctx.set(a.awready, 1)
            ctx.set(a.wready, rng.random() < 0.6)
            head = beats[0] if beats and beats[0][0] <= cyc else None
            ctx.set(a.rvalid, head is not None)
            ctx.set(a.rdata, head[1] if head else 0)
            ctx.set(a.rlast, head[2] if head else 0)
            ctx.set(a.rresp, 0)
            ctx.set(a.bvalid, bool(b_due) and b_due[0] <= cyc)
            ctx.set(a.bresp, 0)
            if ctx.get(a.arvalid):
                addr = ctx.get(a.araddr)
                assert ctx.get(a.arlen) == nb - 1 and 1 << ctx.get(a.arsize) == db and ctx.get(a.arburst) == 1
                issued.append((cyc, "R", addr))
                t = max([cyc + 5] + [b[0] + 1 for b in beats[-1:]])
                for k in range(nb):
                    t += rng.random() < 0.3  # a gap
                    beats.append((t, int.from_bytes(mem[addr + k * db:addr + (k + 1) * db], "little"), k == nb - 1))
                    t += 1
            if ctx.get(a.awvalid):
                issued.append((cyc, "W", ctx.get(a.awaddr)))
                aw.append(ctx.get(a.awaddr))
            if ctx.get(a.wvalid) and ctx.get(a.wready):
                wdata.append(ctx.get(a.wdata).to_bytes(db, "little"))
                assert ctx.get(a.wlast) == (len(wdata) % nb == 0)
                if len(wdata) % nb == 0:  # a whole page: store it, answer B a little later
                    addr = aw[len(wdata) // nb - 1]
                    mem[addr:addr + page_bytes] = b"".join(wdata[-nb:])
                    b_due.append(cyc + 6)
            if ctx.get(dut.rdata.valid):
                got.append(ctx.get(dut.rdata.payload).to_bytes(page_bytes, "little"))
            if head is not None:
                beats.pop(0)
            if ctx.get(a.bvalid):
                b_due.pop(0)
            await ctx.tick()
        out.update(issued=issued, got=got, fault=ctx.get(dut.fault))

    out = _run(dut, script, 210)
    ref = random.Random(data_width).randbytes(4096)
    # addresses in the cycle of the request; the read after the writes waits for both B responses
    assert out["issued"][:4] == [(2, "R", 0x100), (3, "R", 0x40), (40, "W", 0x200), (41, "W", 0x280)]
    assert out["issued"][4][1:] == ("R", 0x200) and out["issued"][4][0] > 43
    assert out["got"][:2] == [ref[0x100:0x100 + page_bytes], ref[0x40:0x40 + page_bytes]]
    assert out["got"][2] == pages[0]  # read after write: the new page, not the old bytes
    assert not out["fault"]


@pytest.mark.parametrize("case", ["clean", "slverr", "rlast", "overflow"])
def test_page_master_faults(case):
    dut = Axi4PageMaster(64, 64)  # 8 beats per page

    async def script(ctx, out):
        ctx.set(dut.rdata.ready, 1)
        ctx.set(a.wready, 0)
        ctx.set(a.awready, 0)
        ctx.set(a.arready, 1)
        if case in ("overflow", "clean"):  # writes while the host accepts nothing: the queues hold two
            for k in range(3 if case == "overflow" else 2):
                ctx.set(dut.req.valid, 1)
                ctx.set(dut.req.payload, 1 | (k * 64) << 1)
                await ctx.tick()
            ctx.set(dut.req.valid, 0)
        else:
            for k in range(8):
                ctx.set(a.rvalid, 1)
                ctx.set(a.rresp, 2 if case == "slverr" and k == 3 else 0)
                ctx.set(a.rlast, k == (5 if case == "rlast" else 7))
                await ctx.tick()
            ctx.set(a.rvalid, 0)
        await ctx.tick()
        out["fault"] = ctx.get(dut.fault)

    a = dut.axi
    assert _run(dut, script, 20)["fault"] == (case != "clean")
