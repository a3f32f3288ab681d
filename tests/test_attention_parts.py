# amaranth: UnusedElaboratable=no
"""The attention engine's stages alone (Amaranth simulator), each against its stated contract.

The whole engine is checked bit for bit against the golden model in ``test_attention_rtl.py``;
these tests pin the contracts the engine composes: the Q buffer's banks and per-lane read, the
sequencer's pass order and beats (with and without k/v gaps), the score path's scaling, masks
and tile maxima, the online softmax's ``m_new``/``PRM``/``SLN``/``Σ SLN`` over two tiles, the
rescale recurrence and its output-bank interlock, and the output stage under backpressure.
"""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.hdl import Array, Const, Module, Signal, signed, unsigned
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import connect
from amaranth.sim import Simulator
from celosia.hw.attention import AttentionEngine
from celosia.hw.attention_mac import QBuffer, Sequencer, TileDescriptors
from celosia.hw.attention_softmax import OnlineSoftmax, OutputStage, Rescale, ScorePath
from celosia.ir import approx


def _geom(e, **kw):
    return AttentionEngine(e, **kw).geom


def _run(m, *benches):
    sim = Simulator(m)
    sim.add_clock(1e-8)
    for b in benches:
        sim.add_testbench(b)
    sim.run()


def _signed(w: int, bits: int) -> int:
    w &= (1 << bits) - 1
    return w - (1 << bits) if w >> (bits - 1) else w


def _round_half_even(x: int, sh: int) -> int:
    if sh <= 0:
        return x << -sh
    q, rem, half = x >> sh, x & ((1 << sh) - 1), 1 << (sh - 1)
    return q + (rem > half or (rem == half and q & 1))


def _sat(x: int, fmt) -> int:
    return max(fmt.min_int, min(fmt.max_int, x))


# ============================================================================ Q buffer
def test_qbuffer_two_banks_per_lane_read_and_release():
    g = _geom(16, lanes=4, rows=2)
    dut = QBuffer(g)
    rng = np.random.default_rng(1)
    blocks = [rng.integers(-2**15, 2**15, (g.block, g.e)) for _ in range(3)]

    async def push(ctx, blk):
        for i in range(g.block):
            for e in range(g.e):
                ctx.set(dut.q.valid, 0)
                while rng.random() < 0.3:
                    await ctx.tick()
                ctx.set(dut.q.valid, 1)
                ctx.set(dut.q.payload, int(blk[i, e]))
                await ctx.tick().until(dut.q.ready)
        ctx.set(dut.q.valid, 0)

    async def check_bank(ctx, bank, blk):
        for row in range(g.rows):
            for e in range(g.e):
                ctx.set(dut.read.addr, e | row << g.eb | bank << (g.eb + g.rowb))
                await ctx.tick()
                assert [ctx.get(dut.read.data[l]) for l in range(g.lanes)] == \
                    [blk[row * g.lanes + l, e] for l in range(g.lanes)]

    async def tb(ctx):
        await push(ctx, blocks[0])
        assert ctx.get(dut.full) == 0b01
        await push(ctx, blocks[1])
        assert ctx.get(dut.full) == 0b11
        ctx.set(dut.q.valid, 1)
        for _ in range(5):                       # both banks full: nothing is accepted
            assert not ctx.get(dut.q.ready)
            await ctx.tick()
        ctx.set(dut.q.valid, 0)
        await check_bank(ctx, 0, blocks[0])
        await check_bank(ctx, 1, blocks[1])
        ctx.set(dut.release, 0b01)
        await ctx.tick()
        ctx.set(dut.release, 0)
        assert ctx.get(dut.full) == 0b10
        await push(ctx, blocks[2])               # the next block goes to the freed bank
        assert ctx.get(dut.full) == 0b11
        await check_bank(ctx, 0, blocks[2])
        await check_bank(ctx, 1, blocks[1])

    _run(dut, tb)


# ============================================================================ sequencer + K/V feed
@pytest.mark.parametrize("gap", [0.0, 0.4])
def test_sequencer_pass_order_and_beats(gap):
    """QK(0) QK(1) SV(0) QK(2) SV(1) SV(2) for a block of 10 keys in tiles of 4, every k/v
    element held for ``rows`` beats; k/v gaps only stall the beats."""
    g = _geom(4, f=8, lanes=2, rows=2, tile=4, max_len=32)
    E, F, R, T, n = g.e, g.f, g.rows, g.tile, 10
    m = Module()
    m.submodules.dut = dut = Sequencer(g)
    m.submodules.ring = ring = TileDescriptors(g, readers=1)     # SV reads its tile's key count back
    connect(m, dut.tile_w, ring.write)
    connect(m, ring.read[0], dut.tile_r)
    rng = np.random.default_rng(7)
    keep = [int(j % 3 != 1) for j in range(n)]
    beats, tiles, pulses = [], [], {"sv_start": 0, "sv_end": 0, "q_release": [], "score_claim": []}

    async def source(ctx, port, words, pack):
        for w in words:
            ctx.set(port.valid, 0)
            while rng.random() < gap:
                await ctx.tick()
            ctx.set(port.valid, 1)
            ctx.set(port.payload, pack(w))
            await ctx.tick().until(port.ready)
        ctx.set(port.valid, 0)

    async def k_src(ctx):
        await source(ctx, dut.k, range(n * E), lambda w: {"data": w, "keep": keep[w // E]})

    async def v_src(ctx):
        await source(ctx, dut.v, range(n * F), lambda w: 1000 + w)

    async def tb(ctx):
        ctx.set(dut.q_full, 0b11)
        ctx.set(dut.sln_ready, 1)
        ctx.set(dut.acc_free, 1)
        ctx.set(dut.cfg.valid, 1)
        ctx.set(dut.cfg.payload, {"n_keys": n, "causal": 1, "pos0": 3, "pos_mask": 1,
                                         "n_rows": g.block})
        cfg_taken = 0
        b, tw = dut.beat, dut.tile_w
        fields = ("qk", "b", "j", "idx", "r", "first", "dlast", "last", "rlast", "keep", "slot")
        watch = [dut.cfg.valid, dut.cfg.ready, b.valid, *(getattr(b, k) for k in fields), tw.en, tw.slot, tw.desc,
                 dut.sv_start, dut.sv_end, dut.q_release, dut.score_claim]
        for _ in range(2000):
            # values sampled at the clock edge: no race with the k/v sources
            _, _, cv, cr, bv, *rest = await ctx.tick().sample(*watch)
            vals, (we, slot, d, sv_start, sv_end, q_release, claim) = rest[:len(fields)], rest[len(fields):]
            if cv and cr:
                cfg_taken += 1
                ctx.set(dut.cfg.valid, 0)
            if bv:
                beats.append(dict(zip(fields, vals)))
            if we:
                tiles.append((slot, d.nt, d.first, d.last, d.kb, d.rb, d.causal, d.pos0, d.pmask))
            pulses["sv_start"] += sv_start
            pulses["sv_end"] += sv_end
            pulses["q_release"] += [q_release] if q_release else []
            pulses["score_claim"] += [claim] if claim else []
        assert cfg_taken == 1

    _run(m, tb, k_src, v_src)
    assert tiles == [(0, 4, 1, 0, 0, 0, 1, 3, 1), (1, 4, 0, 0, 4, 0, 1, 3, 1), (2, 2, 0, 1, 8, 0, 1, 3, 1)]
    assert pulses == {"sv_start": 3, "sv_end": 3, "q_release": [0b01], "score_claim": [0b01, 0b10, 0b01]}
    # the beats of each pass, in order
    passes = []
    for bt in beats:
        if not passes or passes[-1][-1]["last"]:
            passes.append([])
        passes[-1].append(bt)
    order = [("QK" if p[0]["qk"] else "SV", p[0]["slot"] if p[0]["qk"] else None) for p in passes]
    assert [o[0] for o in order] == ["QK", "QK", "SV", "QK", "SV", "SV"]
    nts, sv_tile = [4, 4, 2], iter(range(3))
    for p, (kind, slot) in zip(passes, order):
        x = slot if kind == "QK" else next(sv_tile)
        dim = E if kind == "QK" else F
        want = [(j, i, r) for j in range(nts[x]) for i in range(dim) for r in range(R)]
        assert [(bt["j"], bt["idx"], bt["r"]) for bt in p] == want
        for bt in p:
            key = x * T + bt["j"]
            assert bt["b"] == (key * E + bt["idx"] if kind == "QK" else 1000 + key * F + bt["idx"])
            assert bt["first"] == ((bt["idx"] == 0) if kind == "QK" else (bt["j"] == 0))
            assert bt["dlast"] == (bt["idx"] == dim - 1) and bt["rlast"] == (bt["r"] == R - 1)
            assert bt["last"] == (bt is p[-1])
            if kind == "QK":
                assert bt["keep"] == keep[key]


# ============================================================================ score path
def test_score_path_scales_masks_and_tracks_tile_max():
    g = _geom(16, lanes=4, rows=2, tile=4, max_len=64)
    fs, VL = g.score_fmt, g.block
    dut = ScorePath(g)
    rng = np.random.default_rng(3)
    nt, kb, pos0, pmask = 3, 8, 9, 3
    S = rng.integers(-(1 << 26), 1 << 26, (nt, VL))
    S[1, 2] = 1 << 30                                     # saturates
    keep = [1, 0, 1]
    sh = g.q_fmt.frac + g.k_fmt.frac + g.scale_frac - fs.frac

    async def tb(ctx):
        ctx.set(dut.tile.desc, g.tile_layout.const({"nt": nt, "first": 1, "last": 1, "kb": kb, "rb": 0,
                                                       "causal": 1, "pos0": pos0, "pmask": pmask,
                                                       "nr": g.block}))
        ctx.set(dut.claim, 0b10)
        await ctx.tick()
        ctx.set(dut.claim, 0)
        assert ctx.get(dut.busy) == 0b10
        for j in range(nt):
            for i in range(VL):
                for name, val in (("valid", 1), ("s", int(S[j, i])), ("row", i), ("j", j), ("keep", keep[j]),
                                  ("slot", 1), ("last", int(j == nt - 1 and i == VL - 1))):
                    ctx.set(getattr(dut.item, name), val)
                await ctx.tick()
            ctx.set(dut.item.valid, 0)
            await ctx.tick()
        for _ in range(10):
            await ctx.tick()
        assert ctx.get(dut.done) == 0b10
        for i in range(VL):
            tm = fs.min_int
            for j in range(nt):
                ctx.set(dut.read.addr, j | i << g.tb | 1 << (g.tb + g.vb))
                await ctx.tick()
                w = ctx.get(dut.read.data)
                s = _sat(_round_half_even(int(S[j, i]) * g.scale_code, sh), fs)
                masked = (not keep[j]) or (kb + j > pos0 + (i & pmask))
                assert (_signed(w, fs.bits), w >> fs.bits) == (s, masked)
                if not masked:
                    tm = max(tm, s)
            ctx.set(dut.tmax.index, i | 1 << g.vb)
            assert ctx.get(dut.tmax.max) == tm
        ctx.set(dut.taken, 0b10)
        ctx.set(dut.freed, 0b10)
        await ctx.tick()
        assert (ctx.get(dut.done), ctx.get(dut.busy)) == (0, 0)

    _run(dut, tb)


# ============================================================================ online softmax
def test_online_softmax_two_tiles_match_the_recurrence():
    g = _geom(16, lanes=4, rows=2, tile=4, max_len=64)
    num, fs, VL, T = g.num, g.score_fmt, g.block, g.tile
    rng = np.random.default_rng(5)
    tiles = []   # (nt, first, scores[row][j], masked[row][j])
    for nt, first, shift in ((4, 1, 0), (3, 0, 700)):
        s = rng.integers(-900, 900, (VL, nt)) + shift
        s[0] -= 2 * shift                              # row 0: the maximum does not move
        mk = rng.random((VL, nt)) < 0.3
        mk[3] = True                                   # row 3: every key masked
        tiles.append((nt, first, s, mk))
    words = [0] * (2 * VL * (1 << g.tb))
    tmax = [fs.min_int] * (2 * VL)
    for bank, (nt, _first, s, mk) in enumerate(tiles):
        for i in range(VL):
            for j in range(nt):
                code = int(s[i, j]) & ((1 << fs.bits) - 1)
                words[j | i << g.tb | bank << (g.tb + g.vb)] = code | int(mk[i, j]) << fs.bits
            if (~mk[i]).any():
                tmax[i | bank << g.vb] = int(s[i][~mk[i]].max())

    m = Module()
    m.submodules.dut = dut = OnlineSoftmax(g)
    m.submodules.smem = smem = Memory(shape=unsigned(fs.bits + 1), depth=len(words), init=words)
    connect(m, smem.read_port(), dut.scores)
    m.d.comb += dut.tmax.max.eq(Array(Const(t, signed(fs.bits)) for t in tmax)[dut.tmax.index])

    moved = 0

    async def tb(ctx):
        nonlocal moved
        mrun = [fs.min_int] * VL
        for bank, (nt, first, s, mk) in enumerate(tiles):
            ctx.set(dut.tile.desc, g.tile_layout.const({"nt": nt, "first": first, "last": 0, "kb": 0, "rb": 0,
                                                           "causal": 0, "pos0": 0, "pmask": 0,
                                                           "nr": g.block}))
            ctx.set(dut.score_done, 1 << bank)
            taken = freed = 0
            for _ in range(500):
                taken |= ctx.get(dut.score_taken)
                freed |= ctx.get(dut.score_freed)
                await ctx.tick()
                if taken:
                    ctx.set(dut.score_done, 0)
                if ctx.get(dut.sln_ready):
                    break
            assert ctx.get(dut.tile.slot) == bank + 1 and (taken, freed) == (1 << bank, 1 << bank)
            for i in range(VL):
                m_old = fs.min_int if first else mrun[i]
                m_new = max(m_old, tmax[i | bank << g.vb])
                moved += bank == 1 and m_new > m_old
                sln = [0 if mk[i, j] else int(num.expneg(int(s[i, j]) - m_new)) for j in range(nt)]
                ctx.set(dut.sums.index, i | bank << g.vb)
                assert ctx.get(dut.sums.prm) == int(num.expneg(m_old - m_new))
                assert ctx.get(dut.sums.ssum) == sum(sln)
                for j in range(nt):
                    ctx.set(dut.sln.addr, j | (i // g.lanes) << (T - 1).bit_length())
                    await ctx.tick()
                    assert ctx.get(dut.sln.data[i % g.lanes]) == sln[j], (bank, i, j)
                mrun[i] = m_new
            for pulse in (dut.sv_start, dut.sv_end):   # SV uses the SLN values, then frees them
                ctx.set(pulse, 1)
                await ctx.tick()
                ctx.set(pulse, 0)
            assert not ctx.get(dut.sln_ready)

    _run(m, tb)
    assert 0 < moved < VL - 1        # the second tile moves the maximum of some rows, not of rows 0 and 3


# ============================================================================ rescale
def test_rescale_recurrence_and_output_bank_interlock():
    g = _geom(16, f=4, lanes=2, rows=2, tile=4, max_len=64)
    F, VL, L, Fe = g.f, g.block, g.lanes, g.num.Fe
    rng = np.random.default_rng(11)
    m = Module()
    m.submodules.dut = dut = Rescale(g)
    prm = [Signal(unsigned(g.num.efmt.bits), name=f"prm{i}") for i in range(2 * VL)]
    ssum = [Signal(unsigned(g.rd_fmt.bits), name=f"ssum{i}") for i in range(2 * VL)]
    m.d.comb += [dut.sums.prm.eq(Array(prm)[dut.sums.index]), dut.sums.ssum.eq(Array(ssum)[dut.sums.index])]
    acc_we, acc_addr, acc_data = Signal(L), Signal(g.fb + g.rowb), Signal(signed(g.acc_bits))
    for l in range(L):
        mem = Memory(shape=signed(g.acc_bits), depth=F * g.rows, init=[])
        m.submodules[f"acc{l}"] = mem
        wp, rp = mem.write_port(), mem.read_port()
        m.d.comb += [wp.addr.eq(acc_addr), wp.data.eq(acc_data), wp.en.eq(acc_we[l]),
                     rp.addr.eq(dut.acc.addr), dut.acc.data[l].eq(rp.data)]

    async def tb(ctx):
        rnv, rd = np.zeros((VL, F), np.int64), np.zeros(VL, np.int64)
        for x, (first, last) in enumerate(((1, 0), (0, 1), (1, 1))):
            acc = rng.integers(-(1 << 20), 1 << 20, (VL, F))
            sums = rng.integers(0, 5 << Fe, VL)
            p = rng.integers(0, (1 << Fe) + 1, VL)
            for i in range(VL):
                for f in range(F):
                    ctx.set(acc_addr, f | (i // L) << g.fb)
                    ctx.set(acc_data, int(acc[i, f]))
                    ctx.set(acc_we, 1 << (i % L))
                    await ctx.tick()
                ctx.set(prm[i | (x & 1) << g.vb], int(p[i]))
                ctx.set(ssum[i | (x & 1) << g.vb], int(sums[i]))
            ctx.set(acc_we, 0)
            ctx.set(dut.tile.desc, g.tile_layout.const({"nt": 4, "first": first, "last": last, "kb": 0, "rb": 0,
                                                           "causal": 0, "pos0": 0, "pmask": 0,
                                                           "nr": g.block}))
            ctx.set(dut.acc_full, 1)
            if x == 2:      # a block's first tile waits until its RNV/RD bank has been output
                for _ in range(20):
                    assert not ctx.get(dut.acc_drain)
                    await ctx.tick()
                ctx.set(dut.out_taken, 0b01)
                await ctx.tick()
                ctx.set(dut.out_taken, 0)
            await ctx.tick().until(dut.acc_drain)
            ctx.set(dut.acc_full, 0)
            await ctx.tick().until(dut.acc_release)
            await ctx.tick()
            old_n, old_d = (np.zeros_like(rnv), np.zeros_like(rd)) if first else (rnv, rd)
            rnv = ((p[:, None] * old_n) >> Fe) + acc
            rd = ((p * old_d) >> Fe) + sums
            assert ctx.get(dut.out_full) == (0b01 if last else 0)
            for i in range(VL):
                ctx.set(dut.rd.index, i)
                assert ctx.get(dut.rd.rd) == rd[i]
                for f in range(F):
                    ctx.set(dut.rnv.addr, f | i << g.fb)
                    await ctx.tick()
                    assert ctx.get(dut.rnv.data) == rnv[i, f], (x, i, f)

    _run(m, tb)


# ============================================================================ output stage
def test_output_stage_normalises_in_row_order_under_backpressure():
    g = _geom(16, f=4, lanes=2, rows=2, tile=4, max_len=64)
    F, VL, num = g.f, g.block, g.num
    rng = np.random.default_rng(13)
    rd = rng.integers(1 << num.Fe, 40 << num.Fe, 2 * VL)
    rd[3] = 0                                              # every key masked: y = 0
    rnv = [int(rng.integers(-int(r) * 2000, int(r) * 2000 + 1)) for r in rd for _ in range(F)]
    rnv = np.array(rnv).reshape(2, VL, F)                 # [bank][row][f]
    rnv[0, 3] = 0
    words = [int(rnv[b, i, f]) for b in range(2) for i in range(VL) for f in range(F)]
    rd2 = rd.reshape(2, VL)
    m = Module()
    m.submodules.dut = dut = OutputStage(g)
    m.d.comb += [dut.rows[b].eq(VL) for b in range(2)]   # full blocks
    m.submodules.rnvm = rnvm = Memory(shape=signed(g.rnv_bits), depth=2 * VL * F, init=words)
    connect(m, rnvm.read_port(), dut.rnv)
    m.d.comb += dut.rd.rd.eq(Array(Const(int(r), g.rd_fmt.bits) for b in range(2) for r in rd2[b])[dut.rd.index])
    recip = approx.reciprocal_int(rd, g.rd_fmt, num.rfmt, num.recip_table_bits, num.recip_guard_bits).reshape(2, VL)
    osh = num.Fe + g.v_fmt.frac + num.Fr - g.out_fmt.frac
    want = [[_sat(_round_half_even(int(rnv[b, i, f]) * int(recip[b, i]), osh), g.out_fmt)
             for i in range(VL) for f in range(F)] for b in range(2)]

    async def tb(ctx):
        for b in range(2):
            ctx.set(dut.full, 1 << b)
            got, held, taken = [], None, 0
            for _ in range(400):
                ready = int(rng.random() < 0.6)
                ctx.set(dut.o.ready, ready)
                if ctx.get(dut.o.valid):
                    y = ctx.get(dut.o.payload)
                    if held is not None:
                        assert y == held, "o changed while stalled"
                    held = None if ready else y
                    if ready:
                        got.append(y)
                taken |= ctx.get(dut.taken)
                await ctx.tick()
                if taken:
                    ctx.set(dut.full, 0)
            assert got == want[b] and taken == 1 << b

    _run(m, tb)
