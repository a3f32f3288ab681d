# amaranth: UnusedElaboratable=no
"""The oblivious map unit (BOLT-style) as a ``wiring.Component``.

One command at a time on the fixed schedule of :class:`celosia.omap.config.Schedule`: a cycle
counter ``t`` starts at 0 in the cycle a command is accepted, host transactions are issued
exactly at ``read1``/``read2``/``write1``/``write2``, the response is valid at ``respond`` and
the next command is accepted at ``latency``. The datapath works as fast as it can in between;
the schedule's windows are sized for it, and a sticky ``late`` output flags a missed window
(never expected; the testbench checks it).

Interfaces (host memory through a page-wide request/response pair here; the deployable top
:class:`celosia.omap.rtl.axi.OmapUnitAxi` puts an AXI4 master on it):

``cmd`` (in stream)
    op (8) | key_len (8) | key (64) | value_len (8) | value (8V), LSB first. op 0 GET, 1 PUT,
    2 DELETE; anything else, a key_len other than ``key_bytes``, a key wider than ``key_bits``,
    a PUT value_len other than V or a non-zero value_len on GET/DELETE is a bad command. During
    initialisation exactly N beats with op 3 (item: key, value) or op 4 (empty slot).
``resp`` (out stream, always accepted by the host)
    status (8) | value (8V).
``host_req`` (out stream, always accepted)
    write (1) | address (64) | length (32) | page data (8 * page_bytes) for writes.
``host_rdata`` (in stream)
    one page-wide beat per read, in issue order.
``key`` (in stream, only with ``keys=None``)
    ``KEY_WORDS`` 64-bit beats after reset (:func:`key_words`); refused once loaded (ready
    low), never readable; no command is accepted before. ``keys_loaded`` shows the state.
``hbm_index``, ``hbm_values``, ``hbm_queues``, ``hbm_loads``, ``hbm_versions`` (AXI4 masters,
the regions named in ``hbm_axi``)
    one HBM pseudo-channel per region: the key index (one INCR burst per bucket,
    :mod:`celosia.omap.rtl.index`), the value store (the HBM bins' blocks) and the eviction
    queues (the host pages' blocks; one burst per block, single-slot appends,
    :mod:`celosia.omap.rtl.blocks`), the bin loads and block fills, the page versions (one beat
    per word, :mod:`celosia.omap.rtl.words`).
``dbg_sel``/``dbg_addr``/``dbg_data``
    read-only view of the HBM-side regions kept on chip, and of the counters, for the testbench.
``hbm_fault``
    sticky error of an HBM port (AXI error response, a request into a busy buffer; never seen).

Every HBM-side region sits behind a port with an on-chip and an AXI4 implementation of one
interface, so the unit is simulated small with on-chip memories and deployed with every region
in HBM (any N). Each bin owns a block of ``bin_block`` slots in HBM: the whole value store of an
HBM bin, the FIFO eviction queue of a host page, kept compact in insertion order. A command
fetches the blocks of its two bins in one burst each while the host pages are on their way,
takes and flushes on chip, appends the placed item (on chip if its bin was fetched, else one
single-slot write at the fill kept beside the bin's load) and writes both blocks back whole, so
no HBM access depends on another and the HBM round trips hide under the host's.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, ResetInserter, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from celosia.omap.rtl.blocks import BlockAxiSplit, BlockOnChip
from celosia.omap.rtl.crypto import ChaCha20Core, PairSampler, SipHash24Core
from celosia.omap.rtl.index import IndexAxi, IndexOnChip
from celosia.omap.rtl.words import WordAxi, WordOnChip
from celosia.omap.config import OmapConfig, Status
from celosia.omap.crypto import OmapKeys

from celosia.errors import HardwareGenerationError

__all__ = ["DBG", "HBM_AXI_REGIONS", "KEY_WORDS", "OmapUnit", "key_words"]

#: HBM-side regions that can sit behind their own AXI4 master (``OmapUnit(hbm_axi=...)``)
HBM_AXI_REGIONS = ("index", "blocks", "versions", "loads")

#: 64-bit beats of the key port: rng (256 bits) | enc (256) | mac (128) | index (128)
KEY_WORDS = 12


def key_words(keys: OmapKeys) -> list[int]:
    """The ``key`` port beats that provision ``keys``, in order.

    Parameters
    ----------
    keys : OmapKeys
        The unit's four keys.

    Returns
    -------
    list of int
        ``KEY_WORDS`` little-endian u64 words of rng ‖ enc ‖ mac ‖ index (96 bytes).
    """
    blob = keys.rng + keys.enc + keys.mac + keys.index
    if len(blob) != 8 * KEY_WORDS:
        raise HardwareGenerationError(f"keys are {len(blob)} bytes, the key port takes {8 * KEY_WORDS}",
                                      hint="rng and enc are 32 bytes, mac and index 16")
    return [_le(blob[8 * i:8 * i + 8]) for i in range(KEY_WORDS)]

#: dbg_sel values
DBG = {"index": 0, "blocks": 1, "loads": 2, "versions": 3, "counters": 4}


def _u(x, width: int):
    """``x`` zero-extended (or truncated) to ``width`` bits."""
    x = x[:min(len(x), width)]
    return x if len(x) == width else Cat(x, Const(0, width - len(x)))


def _le(b: bytes) -> int:
    return int.from_bytes(b, "little")


class _Mac(wiring.Component):
    """SipHash-2-4 of a fixed-length message held in a register: ``start`` loads ``data``
    (already padded with the length byte), the tag is in ``tag`` when ``done`` rises. The
    128-bit ``key`` is an input so it can come from a constant or from the key registers."""

    def __init__(self, nbytes: int):
        self.nbytes = nbytes
        self.words = nbytes // 8 + 1
        super().__init__({"key": In(128), "start": In(1), "data": In(64 * self.words), "done": Out(1),
                          "tag": Out(64)})

    @staticmethod
    def pad(msg, nbytes: int):
        """The message bits padded to whole words with the length byte on top."""
        words = nbytes // 8 + 1
        return Cat(msg[:8 * nbytes], Const(0, 64 * words - 8 - 8 * nbytes), Const(nbytes & 0xFF, 8))

    def elaborate(self, platform):
        m = Module()
        m.submodules.core = core = SipHash24Core()
        sr = Signal(64 * self.words)
        left = Signal(range(self.words + 1))
        m.d.comb += [core.key.eq(self.key), core.msg.valid.eq(left != 0),
                     core.msg.payload.eq(Cat(sr[:64], left == 1)), core.tag.ready.eq(1)]
        with m.If(self.start):
            m.d.sync += [sr.eq(self.data), left.eq(self.words), self.done.eq(0)]
        with m.Elif(core.msg.valid & core.msg.ready):
            m.d.sync += [sr.eq(sr >> 64), left.eq(left - 1)]
        with m.If(core.tag.valid):
            m.d.sync += [self.tag.eq(core.tag.payload), self.done.eq(1)]
        return m


class OmapUnit(wiring.Component):
    """Oblivious map unit for one :class:`~celosia.omap.config.OmapConfig`.

    Parameters
    ----------
    cfg : OmapConfig
        Validated parameters. Regions not in ``hbm_axi`` are on-chip memories, which limits
        N to 16384 (simulation sizes); with all four regions on AXI4 any N elaborates.
    keys : OmapKeys or None
        ``OmapKeys``: the keys are elaboration-time constants (simulation and evaluation; the
        bitstream embeds them). ``None``: the unit gets a ``key`` port and loads its keys from
        it after reset (see :func:`key_words`); nothing else happens until they are loaded.
    hbm_axi : iterable of str
        Regions behind their own AXI4 master (an HBM pseudo-channel each), out of
        ``HBM_AXI_REGIONS``: ``"index"`` (port ``hbm_index``, one burst per bucket,
        :class:`~celosia.omap.rtl.index.IndexAxi`), ``"blocks"`` (ports ``hbm_values`` for the
        HBM bins' blocks and ``hbm_queues`` for the pages', one burst per bin block,
        :class:`~celosia.omap.rtl.blocks.BlockAxiSplit`), ``"versions"`` (port
        ``hbm_versions``) and ``"loads"`` (port ``hbm_loads``, load and block fill of each bin),
        one beat per access (:class:`~celosia.omap.rtl.words.WordAxi`). The others are on-chip
        memories behind the same ports.
    """

    def __init__(self, cfg: OmapConfig, keys: OmapKeys | None = None, *, hbm_axi=()):
        if cfg.key_bits > 64:
            raise HardwareGenerationError(f"key_bits={cfg.key_bits}: the RTL unit supports keys up to 64 bits")
        self.hbm_axi = frozenset(hbm_axi)
        if not self.hbm_axi <= set(HBM_AXI_REGIONS):
            raise HardwareGenerationError(f"hbm_axi={sorted(self.hbm_axi)}: the HBM regions are "
                                          f"{list(HBM_AXI_REGIONS)}", hint="name regions out of HBM_AXI_REGIONS")
        on_chip = sorted(set(HBM_AXI_REGIONS) - self.hbm_axi)
        if cfg.n > 1 << 14 and on_chip:
            raise HardwareGenerationError(
                f"N={cfg.n}: the regions {on_chip} would be on-chip memories, which the unit allows up to "
                f"N = 16384 (simulation sizes)", hint=f"put every region on AXI4: hbm_axi={list(HBM_AXI_REGIONS)}")
        self.cfg, self.keys, self.sched = cfg, keys, cfg.schedule
        self.V, self.kb = cfg.value_bytes, cfg.key_bytes
        self.bw = max(1, (cfg.bins - 1).bit_length())
        self.Q = cfg.bin_block
        self.nb = -(-cfg.ct_bytes // 64)
        self.cmd_w = 8 + 8 + 64 + 8 + 8 * self.V
        self.page_bits = 8 * cfg.page_bytes
        self.entry_w = 1 + cfg.key_bits + 3 * self.bw
        self.slot_w = 1 + cfg.key_bits + 8 * self.V
        self.dbg_w = max(self.entry_w, self.slot_w, 64, 96)
        idx_args = (self.entry_w, cfg.bucket_width, cfg.buckets)
        self.index_port = IndexAxi(*idx_args) if "index" in self.hbm_axi else IndexOnChip(*idx_args)
        M, B = cfg.host_pages, cfg.bins
        blk_args = (self.slot_w, self.Q, B)
        # in HBM the HBM bins' blocks (value store) and the pages' (eviction queues) are two regions
        self.blocks_port = (BlockAxiSplit(*blk_args, split=cfg.hbm_bins) if "blocks" in self.hbm_axi
                            else BlockOnChip(*blk_args))
        self.versions_port = WordAxi(M, 64) if "versions" in self.hbm_axi else WordOnChip(M, 64)
        # a bin's word: load (low 32 bits) | block fill (high 32 bits)
        self.loads_port = WordAxi(B, 64, depth=4) if "loads" in self.hbm_axi else WordOnChip(B, 64)
        members = {name: Out(getattr(port, attr).signature) for name, port, attr in self.hbm_masters()}
        if keys is None:
            # provisioning: KEY_WORDS 64-bit beats, accepted only until all are in (then
            # refused, ready low); the key registers have no path to any output
            members["key"] = In(stream.Signature(64))
            members["keys_loaded"] = Out(1)
        super().__init__({
            **members,
            "cmd": In(stream.Signature(self.cmd_w)),
            "resp": Out(stream.Signature(8 + 8 * self.V)),
            "host_req": Out(stream.Signature(1 + 64 + 32 + self.page_bits)),
            "host_rdata": In(stream.Signature(self.page_bits)),
            "initialised": Out(1),
            "halted": Out(1),
            "late": Out(1),
            "hbm_fault": Out(1),
            "dbg_sel": In(4),
            "dbg_addr": In(32),
            "dbg_data": Out(self.dbg_w),
        })

    def hbm_masters(self):
        """The unit's HBM AXI4 masters as ``(member name, port component, its AXI member)``: one
        per region in ``hbm_axi``, the bin blocks as two (value store, eviction queues)."""
        out = []
        for region, port in (("index", self.index_port), ("blocks", self.blocks_port),
                             ("versions", self.versions_port), ("loads", self.loads_port)):
            if region not in self.hbm_axi:
                continue
            if region == "blocks":
                out += [(f"hbm_{sub}", port, f"axi_{sub}") for sub in port.sub_ports]
            else:
                out.append((f"hbm_{region}", port, "axi"))
        return out

    def fields(self):
        """Bit layout of the dumped regions (for the testbench)."""
        kbits, bw, V = self.cfg.key_bits, self.bw, self.V
        return {"entry": [("valid", 1), ("key", kbits), ("d1", bw), ("d2", bw), ("bin", bw)],
                "slot": [("valid", 1), ("key", kbits), ("val", 8 * V)], "loads": [("load", 32), ("fill", 32)]}

    def elaborate(self, platform):
        cfg, s, V, kb = self.cfg, self.sched, self.V, self.kb
        K, B, M, N = cfg.hbm_bins, cfg.bins, cfg.host_pages, cfg.n
        W, P = cfg.bucket_width, cfg.p_cap
        bw, nb, Q = self.bw, self.nb, self.Q
        kbits, sb = cfg.key_bits, cfg.slot_bytes
        ct_bits = 8 * cfg.ct_bytes
        m = Module()

        # ---- HBM-side regions, each behind a port (on chip, or AXI4 on its own pseudo-channel) --
        # the key index: scanned from the unit's copy of the current bucket (bkt); the last
        # bucket stays there and is reused, not refetched
        m.submodules.index = ix = self.index_port
        m.submodules.blocks = bp = self.blocks_port
        m.submodules.versions = vp = self.versions_port
        m.submodules.loads = lp = self.loads_port
        for name, port, attr in self.hbm_masters():
            wiring.connect(m, getattr(port, attr), wiring.flipped(getattr(self, name)))
        for port in (ix, bp, vp, lp):
            m.d.comb += port.dbg_addr.eq(self.dbg_addr)
        m.d.comb += self.hbm_fault.eq(ix.fault | bp.fault | vp.fault | lp.fault)
        bkt = Array(Signal(self.entry_w, name=f"bkt{k}") for k in range(W))
        have = Signal(range(W + 1))
        bkt_id, bkt_ok, wb_req = Signal(len(ix.bucket)), Signal(), Signal()
        m.d.comb += [ix.ent.ready.eq(1), ix.wb.eq(wb_req), ix.wb_bucket.eq(bkt_id), ix.wb_data.eq(Cat(*bkt))]
        with m.If(ix.ent.valid):
            m.d.sync += [bkt[have].eq(ix.ent.payload), have.eq(have + 1)]
        with m.If(wb_req):
            m.d.sync += wb_req.eq(0)

        # bin blocks: the unit's copies of (up to) two blocks, filled slot by slot as the fetched
        # bursts stream in (block 0 first), edited in place, written back whole
        blk = [Array(Signal(self.slot_w, name=f"blk{j}_{k}") for k in range(Q)) for j in range(2)]
        blk_bin = [Signal(bw, name=f"blk_bin{j}") for j in range(2)]
        blk_on = Signal(2)  # which copies hold a fetched block this command
        bgot = Signal(range(2 * Q + 1))
        blk_wb = Signal(2)
        m.d.comb += [bp.ent.ready.eq(1), bp.wb.eq(blk_wb), bp.wb_bin0.eq(blk_bin[0]), bp.wb_bin1.eq(blk_bin[1]),
                     bp.wb_data0.eq(Cat(*blk[0])), bp.wb_data1.eq(Cat(*blk[1]))]
        with m.If(bp.ent.valid):
            with m.If(bgot < Q):
                m.d.sync += blk[0][bgot].eq(bp.ent.payload)
            with m.Else():
                m.d.sync += blk[1][(bgot - Q)[:len(bgot)]].eq(bp.ent.payload)
            m.d.sync += bgot.eq(bgot + 1)
        with m.If(blk_wb != 0):
            m.d.sync += blk_wb.eq(0)

        def block_fetch(j, bin_):
            m.d.comb += [bp.fetch.eq(1), bp.fetch_bin.eq(bin_)]
            m.d.sync += [blk_bin[j].eq(bin_), blk_on.bit_select(j, 1).eq(1)]

        # page versions: answers arrive a cycle or an HBM round trip after the request and are
        # caught here whatever state the FSM is in
        m.d.comb += vp.rdata.ready.eq(1)
        # bin words (load | block fill): a command works on a cache of the four bins it may touch
        # (slots 0/1: the revealed pair, a repeated initial key's pair or the page being built,
        # 2/3: the placement pair), fetched early, adjusted in place, written back at its end
        m.d.comb += lp.rdata.ready.eq(1)
        lc_bin = [Signal(self.bw, name=f"lc_bin{k}") for k in range(4)]
        lc_val = [Signal(64, name=f"lc_val{k}") for k in range(4)]
        lc_dlt = [Signal(8, name=f"lc_dlt{k}") for k in range(4)]  # two's complement adjustments
        lc_fdl = [Signal(8, name=f"lc_fdl{k}") for k in range(4)]
        lc_have, lc_used, lc_pend = Signal(4), Signal(4), Signal(4)
        lq = Signal(8)  # slot ids of the reads in flight, oldest in the low bits
        lq_n = Signal(range(5))
        lq_push, lq_slot = Signal(), Signal(2)

        def lc_eff(k):
            return (lc_val[k][:32] + lc_dlt[k].as_signed())[:32]

        def lc_fill(k):
            return (lc_val[k][32:] + lc_fdl[k].as_signed())[:32]

        def load_fetch(k, bin_):
            m.d.comb += [lp.rd.eq(1), lp.rd_page.eq(bin_), lq_push.eq(1), lq_slot.eq(k)]
            m.d.sync += [lc_bin[k].eq(bin_), lc_dlt[k].eq(0), lc_fdl[k].eq(0), lc_have.bit_select(k, 1).eq(0),
                         lc_used.bit_select(k, 1).eq(1)]

        lq_pop = lp.rdata.valid
        with m.If(lq_pop):
            for k in range(4):
                with m.If(lq[:2] == k):
                    m.d.sync += [lc_val[k].eq(lp.rdata.payload), lc_have.bit_select(k, 1).eq(1)]
        lq_base = Signal(8)
        m.d.comb += lq_base.eq(Mux(lq_pop, lq >> 2, lq))
        with m.If(lq_push):
            m.d.sync += lq.eq(lq_base | (lq_slot << Cat(Const(0, 1), (lq_n - lq_pop).as_unsigned()[:3])))
        with m.Else():
            m.d.sync += lq.eq(lq_base)
        m.d.sync += lq_n.eq(lq_n + lq_push - lq_pop)
        # write-back: one used slot per cycle once its value is in
        wb_sel = Signal(range(5), init=4)
        for k in reversed(range(4)):
            with m.If(lc_pend[k] & lc_have[k]):
                m.d.comb += wb_sel.eq(k)
        for k in range(4):
            with m.If(wb_sel == k):
                m.d.comb += [lp.wr.eq(1), lp.wr_page.eq(lc_bin[k]), lp.wr_data.eq(Cat(lc_eff(k), lc_fill(k)))]
                m.d.sync += lc_pend.bit_select(k, 1).eq(0)
        lw_req = Signal()  # the FSM asks for the write-back (set with the last adjustment)
        with m.If(lw_req):
            m.d.sync += [lc_pend.eq(lc_used), lw_req.eq(0)]
        lc_idle = (lc_pend == 0) & ~lw_req

        def ef(v):
            o = 1 + kbits
            return {"valid": v[0], "key": v[1:o], "d1": v[o:o + bw], "d2": v[o + bw:o + 2 * bw],
                    "bin": v[o + 2 * bw:o + 3 * bw]}

        def slot_of(v):
            return {"valid": v[0], "key": v[1:1 + kbits], "val": v[1 + kbits:1 + kbits + 8 * V]}

        count = Signal(32)
        queued = Signal(32)
        hbm_count = Signal(32)
        with m.Switch(self.dbg_sel):
            for name, port in (("index", ix), ("blocks", bp), ("loads", lp), ("versions", vp)):
                with m.Case(DBG[name]):
                    m.d.comb += self.dbg_data.eq(port.dbg_data)
            with m.Case(DBG["counters"]):
                m.d.comb += self.dbg_data.eq(Cat(count, queued, hbm_count))

        def bin_add(bin_, load, fill):
            # every cached copy of the bin (the slots may repeat a bin) moves together
            for k in range(4):
                with m.If(lc_used[k] & (lc_bin[k] == bin_)):
                    if load:
                        m.d.sync += lc_dlt[k].eq(lc_dlt[k] + load)
                    if fill:
                        m.d.sync += lc_fdl[k].eq(lc_fdl[k] + fill)

        # ---- keys ---------------------------------------------------------------------------
        k_rng, k_enc, k_mac, k_idx, keys_ok = self._keys(m)

        # ---- crypto -----------------------------------------------------------------------
        sampler = PairSampler(B)
        sw = sampler.w
        if self.keys is None:
            # the CSPRNG starts filling its pair buffer at reset: hold it in reset until its
            # key is loaded, so its stream is the keystream of the provisioned key from word 0
            m.submodules.sampler = ResetInserter(~keys_ok)(sampler)
        else:
            m.submodules.sampler = sampler
        m.d.comb += sampler.key.eq(k_rng)
        m.submodules.hmac = hmac = _Mac(kb)
        m.submodules.mac0 = mac0 = _Mac(12 + cfg.ct_bytes)
        m.submodules.mac1 = mac1 = _Mac(12 + cfg.ct_bytes)
        macs = (mac0, mac1)
        m.d.comb += [hmac.key.eq(k_idx), mac0.key.eq(k_mac), mac1.key.eq(k_mac)]
        m.submodules.chacha = chacha = ChaCha20Core()
        m.d.comb += [chacha.key.eq(k_enc), chacha.blk.ready.eq(1)]

        # keystream jobs: 0/1 decrypt pages 0/1 at their versions, 2/3 encrypt at version + 1
        ks = Signal(4 * nb * 512)
        ks_m = [Signal(32, name=f"ks_m{j}") for j in range(4)]
        ks_v = [Signal(64, name=f"ks_v{j}") for j in range(4)]
        ks_en, ks_done = Signal(4), Signal(4)
        ks_go, ks_busy, ks_wait = Signal(), Signal(), Signal()
        ks_job = Signal(2)
        ks_blk = Signal(range(nb + 1))
        m.d.comb += chacha.req.payload.eq(Cat(ks_blk.as_unsigned(), Const(0, 32 - len(ks_blk)),
                                              Array(ks_m)[ks_job], Array(ks_v)[ks_job]))
        with m.If(ks_go):
            m.d.sync += [ks_busy.eq(1), ks_job.eq(0), ks_blk.eq(0), ks_wait.eq(0), ks_done.eq(0)]
        with m.Elif(ks_busy):
            with m.If(~ks_en.bit_select(ks_job, 1) | (ks_blk == nb)):
                m.d.sync += [ks_done.bit_select(ks_job, 1).eq(1), ks_blk.eq(0)]
                with m.If(ks_job == 3):
                    m.d.sync += ks_busy.eq(0)
                with m.Else():
                    m.d.sync += ks_job.eq(ks_job + 1)
            with m.Elif(~ks_wait):
                m.d.comb += chacha.req.valid.eq(1)
                with m.If(chacha.req.ready):
                    m.d.sync += ks_wait.eq(1)
            with m.Elif(chacha.blk.valid):
                for j in range(4):
                    for b in range(nb):
                        with m.If((ks_job == j) & (ks_blk == b)):
                            k = j * nb + b
                            m.d.sync += ks[512 * k:512 * (k + 1)].eq(chacha.blk.payload)
                m.d.sync += [ks_wait.eq(0), ks_blk.eq(ks_blk + 1)]

        def keystream(j):
            return ks[512 * nb * j:512 * nb * j + ct_bits]

        def mac_msg(page, version, ct):
            return _Mac.pad(Cat(_u(page, 32), _u(version, 64), ct), 12 + cfg.ct_bytes)

        # ---- state ----------------------------------------------------------------------------
        t = Signal(32)
        t_init = Signal(64)
        m.d.sync += [t.eq(t + 1), t_init.eq(t_init + 1)]
        op, key, val = Signal(8), Signal(64), Signal(8 * V)
        bad, in_init, init_item = Signal(), Signal(), Signal()
        bucket = Signal(range(cfg.buckets))
        miss, place = Signal(2 * sw), Signal(2 * sw)
        n1, n2 = place[:sw], place[sw:]
        hit = Signal()
        hit_e = Signal(range(W))
        free_e = Signal(range(W + 1))
        fill = Signal(range(W + 1))
        ent = Signal(self.entry_w)
        e = ef(ent)
        scan_i = Signal(range(W + 1))
        d = [Signal(bw, name=f"d{k}") for k in range(2)]
        host = [Signal(name=f"host{k}") for k in range(2)]
        ver = [Signal(64, name=f"ver{k}") for k in range(2)]
        vgot = Signal(2)  # versions received for this command (page 0's first if it is a host page)
        pg = [Signal(self.page_bits, name=f"pg{k}") for k in range(2)]
        pt = [Signal(ct_bits, name=f"pt{k}") for k in range(2)]
        cte = [Signal(ct_bits, name=f"cte{k}") for k in range(2)]
        out = [Signal(self.page_bits, name=f"out{k}") for k in range(2)]
        taken, tval = Signal(), Signal(8 * V)
        status, rval, fatal = Signal(8), Signal(8 * V), Signal(8)
        keep, keep_v = Signal(), Signal(8 * V)
        halted = Signal()
        l1 = Signal(32)
        dest = Signal(bw)
        init_over = Signal()  # an initial item found its bin's block full (dropped; fatal at the end)
        i = Signal()
        rd_n = Signal(2)
        active, pair_ok, built, integrity_ok, responded = Signal(), Signal(), Signal(), Signal(), Signal()
        slot_n = Signal(range(N + 1))
        page_i = Signal(range(M + 1))
        init_write = Signal()
        m.d.comb += [self.halted.eq(halted), self.host_rdata.ready.eq(1)]

        def catch_pair(answer, got, regs):
            """Answers for the pair's host pages, in request order (page 0's first if it is a host
            page), caught whatever state the FSM is in; ``got`` counts them."""
            with m.If(answer.valid):
                with m.If((got == 0) & host[0]):
                    m.d.sync += regs[0].eq(answer.payload)
                with m.Else():
                    m.d.sync += regs[1].eq(answer.payload)
                m.d.sync += got.eq(got + 1)

        catch_pair(vp.rdata, vgot, ver)

        def page_m(x):
            return _u((x - K)[:len(x)], 32)

        def sl(vec, k):
            return vec[8 * sb * k:8 * sb * (k + 1)]

        # current page (slot vector) and block of the take / flush steps
        cur_pt = Signal(ct_bits)
        m.d.comb += cur_pt.eq(Mux(i, pt[1], pt[0]))
        first_free, has_free = Signal(range(P + 1)), Signal()
        for k in reversed(range(P)):
            with m.If(sl(cur_pt, k)[:8] == 0):
                m.d.comb += [first_free.eq(k), has_free.eq(1)]

        def cur_blk(k):
            if isinstance(k, int) and k >= Q:
                return Const(0, self.slot_w)
            return Mux(i, blk[1][k], blk[0][k])

        def blk_remove(j):
            """Drop slot ``j`` of the current block, keeping it compact and in order."""
            for k in range(Q):
                with m.If(k >= j):
                    with m.If(i):
                        m.d.sync += blk[1][k].eq(cur_blk(k + 1))
                    with m.Else():
                        m.d.sync += blk[0][k].eq(cur_blk(k + 1))

        bhit, bhit_j = Signal(), Signal(range(Q))  # the key's slot in the current block (keys are unique)
        for k in reversed(range(Q)):
            x = slot_of(cur_blk(k))
            with m.If(x["valid"] & (x["key"] == key[:kbits])):
                m.d.comb += [bhit.eq(1), bhit_j.eq(k)]

        def block_take(bin_):
            """Take the key's item out of the current block (that of bin ``bin_``)."""
            m.d.sync += [tval.eq(slot_of(cur_blk(bhit_j))["val"]), taken.eq(1)]
            blk_remove(bhit_j)
            bin_add(bin_, -1, -1)
            with m.If(bin_ < K):
                m.d.sync += hbm_count.eq(hbm_count - 1)
            with m.Else():
                m.d.sync += queued.eq(queued - 1)

        def set_pt(vec_expr):
            with m.If(i):
                m.d.sync += pt[1].eq(vec_expr)
            with m.Else():
                m.d.sync += pt[0].eq(vec_expr)

        # ---- the scheduled host transactions: the schedule is the contract --------------------
        req_w, req_a, req_l, req_d = Signal(), Signal(64), Signal(32), Signal(self.page_bits)
        m.d.comb += self.host_req.payload.eq(Cat(req_w, req_a, req_l, req_d))
        with m.If(active & pair_ok):
            for k, (tr, tw) in enumerate(((s.read1, s.write1), (s.read2, s.write2))):
                addr = cfg.host_base + page_m(d[k]) * cfg.page_bytes
                with m.If((t == tr) & host[k]):
                    m.d.comb += [self.host_req.valid.eq(1), req_w.eq(0), req_a.eq(addr), req_l.eq(cfg.page_bytes)]
                with m.If((t == tw) & host[k] & integrity_ok):
                    m.d.comb += [self.host_req.valid.eq(1), req_w.eq(1), req_a.eq(addr), req_l.eq(cfg.page_bytes),
                                 req_d.eq(out[k])]
        with m.If(init_write):
            m.d.comb += [self.host_req.valid.eq(1), req_w.eq(1), req_l.eq(cfg.page_bytes), req_d.eq(out[0]),
                         req_a.eq(cfg.host_base + page_i * cfg.page_bytes)]
        catch_pair(self.host_rdata, rd_n, pg)
        late = (active & (((t == s.read1) & ~pair_ok) | ((t == s.write1) & ~built & integrity_ok)
                          | ((t == s.respond) & ~responded)))
        with m.If(late):
            m.d.sync += self.late.eq(1)

        c = self.cmd.payload
        c_op, c_klen, c_key, c_vlen, c_val = c[:8], c[8:16], c[16:80], c[80:88], c[88:88 + 8 * V]
        c_bad = (c_op > 2) | (c_klen != kb) | (c_vlen != Mux(c_op == 1, V, 0))
        if kbits < 64:
            c_bad = c_bad | (c_key[kbits:] != 0)

        def latch():
            return [op.eq(c_op), key.eq(c_key), val.eq(c_val)]

        with m.FSM(name="omap"):
            # ======================= initialisation ==========================================
            with m.State("INIT_WAIT"):
                m.d.comb += self.cmd.ready.eq(keys_ok)
                m.d.sync += in_init.eq(1)
                with m.If(self.cmd.valid & keys_ok):
                    m.d.sync += [t_init.eq(1), slot_n.eq(1), *latch()]
                    m.next = "I_ITEM"
            with m.State("I_NEXT"):
                with m.If(slot_n == N):
                    m.d.sync += page_i.eq(0)
                    m.next = "P_BUILD"
                with m.Elif(t_init == slot_n * s.ingest):
                    m.d.comb += self.cmd.ready.eq(1)
                    with m.If(self.cmd.valid):
                        m.d.sync += [slot_n.eq(slot_n + 1), *latch()]
                        m.next = "I_ITEM"
                    with m.Else():
                        m.d.sync += self.late.eq(1)
            with m.State("I_ITEM"):
                with m.If(op == 3):
                    m.d.comb += [hmac.start.eq(1), hmac.data.eq(_Mac.pad(key, kb))]
                    m.d.sync += [init_item.eq(1), bad.eq(0), blk_on.eq(0), bgot.eq(0)]
                    m.next = "HASH_WAIT"
                with m.Else():
                    m.next = "I_NEXT"
            with m.State("LD_DUP0"):  # a repeated initial key: its earlier pair's loads, its bin's block
                load_fetch(0, e["d1"])
                block_fetch(0, e["bin"])
                m.d.sync += i.eq(0)
                m.next = "LD_DUP1"
            with m.State("LD_DUP1"):
                load_fetch(1, e["d2"])
                m.next = "DUP_WAIT"
            with m.State("DUP_WAIT"), m.If(bgot == Q):
                with m.If(bhit):  # drop the earlier copy (always there)
                    block_take(e["bin"])
                m.next = "I_DUP"
            with m.State("I_DUP"):
                m.d.sync += [keep.eq(1), keep_v.eq(val)]
                m.next = "PLACE0"
            with m.State("P_BUILD"), m.If(lc_idle):  # the empty page, its bin's word and block
                m.d.sync += [pt[0].eq(0), i.eq(0), d[0].eq((K + page_i)[:bw]), host[0].eq(1), lc_used.eq(0),
                             bgot.eq(0), blk_on.eq(0)]
                m.next = "P_FETCH0"
            with m.State("P_FETCH0"):
                load_fetch(0, d[0])
                block_fetch(0, d[0])
                m.next = "P_FETCH"
            with m.State("P_FETCH"), m.If(bgot == Q):
                m.next = "FLUSH"
            with m.State("P_KS"):
                m.d.sync += [ks_m[2].eq(page_i), ks_v[2].eq(1), ks_en.eq(0b0100)]
                m.d.comb += ks_go.eq(1)
                m.next = "P_ENC"
            with m.State("P_ENC"), m.If(ks_done[2] & ~ks_go):
                m.d.sync += cte[0].eq(pt[0] ^ keystream(2))
                m.next = "P_MAC"
            with m.State("P_MAC"):
                m.d.comb += [mac0.start.eq(1), mac0.data.eq(mac_msg(page_i, Const(1, 64), cte[0]))]
                m.d.comb += [vp.wr.eq(1), vp.wr_page.eq(page_i), vp.wr_data.eq(1)]
                m.next = "P_TAG"
            with m.State("P_TAG"), m.If(mac0.done):
                m.d.sync += out[0].eq(Cat(Const(1, 64), cte[0], mac0.tag))
                m.next = "P_WRITE"
            with m.State("P_WRITE"):
                with m.If(t_init >= N * s.ingest + (page_i + 1) * s.init_page):  # '>' only if late
                    m.d.comb += init_write.eq(1)
                    m.d.sync += page_i.eq(page_i + 1)
                    with m.If(page_i == M - 1):  # the pass ends with the last page: check capacity
                        with m.If((hbm_count + queued > cfg.hbm_items) | (queued > cfg.queue_items) | init_over):
                            m.d.sync += [halted.eq(1), fatal.eq(Status.FATAL_CAPACITY)]
                        m.d.sync += [in_init.eq(0), self.initialised.eq(1), init_item.eq(0)]
                        m.next = "IDLE"
                    with m.Else():
                        m.next = "P_BUILD"
                    with m.If(t_init > N * s.ingest + (page_i + 1) * s.init_page):
                        m.d.sync += self.late.eq(1)

            # ======================= one command ==============================================
            with m.State("IDLE"):
                m.d.comb += self.cmd.ready.eq(1)
                m.d.sync += [active.eq(0), pair_ok.eq(0), built.eq(0), responded.eq(0)]
                with m.If(self.cmd.valid):
                    m.d.sync += [t.eq(1), *latch(), bad.eq(c_bad), hit.eq(0), taken.eq(0), tval.eq(0), blk_on.eq(0),
                                 bgot.eq(0),
                                 rval.eq(0), keep.eq(0), integrity_ok.eq(1), host[0].eq(0), host[1].eq(0),
                                 rd_n.eq(0), status.eq(0)]
                    with m.If(halted):
                        m.next = "HALT_RESP"
                    with m.Else():
                        m.d.sync += active.eq(1)
                        m.d.comb += [hmac.start.eq(1), hmac.data.eq(_Mac.pad(c_key, kb))]
                        m.next = "HASH_WAIT"
            with m.State("HALT_RESP"):
                m.d.comb += [self.resp.valid.eq(1), self.resp.payload.eq(Cat(fatal, Const(0, 8 * V)))]
                m.next = "IDLE"
            with m.State("HASH_WAIT"):
                with m.If(hmac.done):
                    new_b = hmac.tag[:len(bucket)] if cfg.buckets > 1 else Const(0, 1)
                    m.d.sync += [bucket.eq(new_b), scan_i.eq(0), hit.eq(0), free_e.eq(W), fill.eq(0)]
                    with m.If(bkt_ok & (bkt_id == new_b)):
                        m.d.sync += have.eq(W)  # the bucket of the last command: already here
                    with m.Else():
                        m.d.comb += [ix.fetch.eq(1), ix.bucket.eq(new_b)]
                        m.d.sync += [have.eq(0), bkt_id.eq(new_b), bkt_ok.eq(1)]
                    m.next = "PAIR0"
            with m.State("PAIR0"):
                m.d.comb += sampler.pair.ready.eq(1)
                with m.If(sampler.pair.valid):
                    with m.If(init_item):
                        m.d.sync += place.eq(sampler.pair.payload)
                        m.next = "LD_N1"
                    with m.Else():
                        m.d.sync += miss.eq(sampler.pair.payload)
                        m.next = "PAIR1"
            with m.State("PAIR1"):
                m.d.comb += sampler.pair.ready.eq(1)
                with m.If(sampler.pair.valid):
                    m.d.sync += place.eq(sampler.pair.payload)
                    m.next = "LD_N1"
            with m.State("LD_N1"):  # the placement pair's loads (after the last write-back)
                with m.If(lc_idle):
                    m.d.sync += lc_used.eq(0)
                    load_fetch(2, n1)
                    m.next = "LD_N2"
            with m.State("LD_N2"):
                load_fetch(3, n2)
                m.next = "SCAN"
            with m.State("SCAN"):
                cur_e = bkt[scan_i]
                r = ef(cur_e)
                with m.If(scan_i == W):
                    m.next = "DECIDE"
                with m.Elif(scan_i < have):  # entries are scanned as they arrive
                    m.d.sync += scan_i.eq(scan_i + 1)
                    with m.If(r["valid"]):
                        m.d.sync += fill.eq(fill + 1)
                        with m.If((r["key"] == key[:kbits]) & ~bad):
                            m.d.sync += [hit.eq(1), hit_e.eq(scan_i), ent.eq(cur_e)]
                    with m.Elif(free_e == W):
                        m.d.sync += free_e.eq(scan_i)
            with m.State("DECIDE"):
                with m.If(init_item):
                    with m.If(hit):
                        m.next = "LD_DUP0"
                    with m.Else():
                        m.next = "I_DUP"
                with m.Else():
                    d0 = Mux(hit, e["d1"], miss[:sw])
                    d1 = Mux(hit, e["d2"], miss[sw:])
                    m.d.sync += [d[0].eq(d0), d[1].eq(d1), host[0].eq(d0 >= K), host[1].eq(d1 >= K)]
                    m.next = "VER0"
            with m.State("VER0"):  # request the versions of the pair's host pages, both loads and blocks
                m.d.comb += [vp.rd.eq(host[0]), vp.rd_page.eq(page_m(d[0]))]
                load_fetch(0, d[0])
                block_fetch(0, d[0])
                m.d.sync += [ver[0].eq(0), ver[1].eq(0), vgot.eq(0), pair_ok.eq(1),
                             ks_m[0].eq(page_m(d[0])), ks_m[2].eq(page_m(d[0]))]
                m.next = "VER1"
            with m.State("VER1"):
                m.d.comb += [vp.rd.eq(host[1]), vp.rd_page.eq(page_m(d[1]))]
                load_fetch(1, d[1])
                block_fetch(1, d[1])
                m.d.sync += [ks_m[1].eq(page_m(d[1])), ks_m[3].eq(page_m(d[1]))]
                m.next = "VER_WAIT"
            with m.State("VER_WAIT"):  # both in: the keystreams of this and the next version
                with m.If(vgot == host[0] + host[1]):
                    m.d.sync += [ks_v[0].eq(ver[0]), ks_v[2].eq(ver[0] + 1), ks_v[1].eq(ver[1]),
                                 ks_v[3].eq(ver[1] + 1), ks_en.eq(Cat(host[0], host[1], host[0], host[1]))]
                    m.next = "VER_GO"
            with m.State("VER_GO"):
                m.d.comb += ks_go.eq(1)
                m.next = "WAIT_DATA"
            with m.State("WAIT_DATA"):  # the pages, their keystreams and both blocks
                with m.If((rd_n == host[0] + host[1]) & ~ks_go & ks_done[0] & ks_done[1] & (bgot == 2 * Q)):
                    for k in range(2):
                        m.d.comb += [macs[k].start.eq(host[k]),
                                     macs[k].data.eq(mac_msg(page_m(d[k]), pg[k][:64], pg[k][64:64 + ct_bits]))]
                    m.next = "VERIFY"
            with m.State("VERIFY"):
                with m.If((mac0.done | ~host[0]) & (mac1.done | ~host[1])):
                    bad_pg = []
                    for k in range(2):
                        tag = pg[k][64 + ct_bits:128 + ct_bits]
                        bad_pg.append(host[k] & ((pg[k][:64] != ver[k]) | (tag != macs[k].tag)))
                    with m.If(bad_pg[0] | bad_pg[1]):
                        m.d.sync += [integrity_ok.eq(0), fatal.eq(Status.FATAL_INTEGRITY), halted.eq(1),
                                     status.eq(Status.FATAL_INTEGRITY)]
                        m.next = "WAIT_RESP"
                    with m.Else():
                        m.d.sync += [pt[0].eq(pg[0][64:64 + ct_bits] ^ keystream(0)),
                                     pt[1].eq(pg[1][64:64 + ct_bits] ^ keystream(1)), i.eq(0)]
                        m.next = "TAKE"
            with m.State("TAKE"):  # the item, from the page (host bin) or the bin's block
                di = Mux(i, d[1], d[0])
                hi = Mux(i, host[1], host[0])
                m.next = "FLUSH"
                with m.If(hit & (e["bin"] == di) & ~taken):
                    found = Signal(P + 1)
                    for k in range(P):
                        sk = sl(cur_pt, k)
                        m.d.comb += found[k + 1].eq(found[k] | ((sk[:8] != 0) & (sk[8:8 + 8 * kb] == key[:8 * kb])))
                        with m.If(hi & ~found[k] & (sk[:8] != 0) & (sk[8:8 + 8 * kb] == key[:8 * kb])):
                            m.d.sync += [tval.eq(sk[8 + 8 * kb:8 * sb]), taken.eq(1)]
                            set_pt(cur_pt & ~Const(((1 << (8 * sb)) - 1) << (8 * sb * k), ct_bits))
                    with m.If(hi & found[P]):
                        bin_add(di, -1, 0)
                    with m.Elif(bhit):
                        block_take(di)
            with m.State("FLUSH"):  # the block's head into the page's first free slot, in order
                head = slot_of(cur_blk(0))
                with m.If(Mux(i, host[1], host[0]) & head["valid"] & has_free):
                    for k in range(P):
                        with m.If(first_free == k):
                            lo = 8 * sb * k
                            newslot = Cat(Const(1, 8), head["key"], Const(0, 8 * kb - kbits), head["val"])
                            set_pt(Cat(cur_pt[:lo], newslot, cur_pt[lo + 8 * sb:]))
                    blk_remove(0)
                    bin_add(Mux(i, d[1], d[0]), 0, -1)
                    m.d.sync += queued.eq(queued - 1)
                with m.Elif(in_init):  # the page is built: its block and word go back
                    m.d.sync += [blk_wb.eq(0b01), lw_req.eq(1)]
                    m.next = "P_KS"
                with m.Else():
                    m.next = "NEXT_PAGE"
            with m.State("NEXT_PAGE"):
                with m.If(i == 0):
                    m.d.sync += i.eq(1)
                    m.next = "TAKE"
                with m.Else():
                    m.next = "ENC"
            with m.State("ENC"):
                with m.If(ks_done[2] & ks_done[3]):
                    m.d.sync += [cte[0].eq(pt[0] ^ keystream(2)), cte[1].eq(pt[1] ^ keystream(3))]
                    m.next = "ENC_MAC"
            with m.State("ENC_MAC"):
                for k in range(2):
                    m.d.comb += [macs[k].start.eq(host[k]),
                                 macs[k].data.eq(mac_msg(page_m(d[k]), ver[k] + 1, cte[k]))]
                m.d.comb += [vp.wr.eq(host[0]), vp.wr_page.eq(page_m(d[0])), vp.wr_data.eq(ver[0] + 1)]
                m.next = "ENC_VER"
            with m.State("ENC_VER"):
                m.d.comb += [vp.wr.eq(host[1]), vp.wr_page.eq(page_m(d[1])), vp.wr_data.eq(ver[1] + 1)]
                m.next = "ENC_TAG"
            with m.State("ENC_TAG"):
                with m.If((mac0.done | ~host[0]) & (mac1.done | ~host[1])):
                    for k in range(2):
                        m.d.sync += out[k].eq(Cat((ver[k] + 1)[:64], cte[k], macs[k].tag))
                    m.d.sync += built.eq(1)
                    m.next = "APPLY"
            with m.State("APPLY"):  # step 3: apply the op
                m.next = "WAIT_RESP"
                with m.If(bad):
                    m.d.sync += status.eq(Status.BAD_COMMAND)
                with m.Elif(op == 0):
                    with m.If(hit):
                        m.d.sync += [status.eq(Status.OK), rval.eq(tval), keep.eq(1), keep_v.eq(tval)]
                        m.next = "PLACE0"
                    with m.Else():
                        m.d.sync += status.eq(Status.NOT_FOUND)
                with m.Elif(op == 1):
                    with m.If(~hit & ((count >= N) | (fill >= W))):
                        m.d.sync += status.eq(Status.FULL)
                    with m.Else():
                        m.d.sync += [status.eq(Status.OK), keep.eq(1), keep_v.eq(val)]
                        m.next = "PLACE0"
                with m.Else():
                    with m.If(hit):
                        m.d.sync += bkt[hit_e].eq(0)
                        m.d.sync += [status.eq(Status.OK), count.eq(count - 1)]
                    with m.Else():
                        m.d.sync += status.eq(Status.NOT_FOUND)
            with m.State("PLACE0"):
                with m.If(lc_have[2] & lc_have[3]):  # fetched long before (the window covers it)
                    m.d.sync += l1.eq(lc_eff(2))
                    m.next = "PLACE1"
            with m.State("PLACE1"):
                m.d.sync += dest.eq(Mux(l1 <= lc_eff(3), n1, n2))
                m.next = "PLACE2"
            with m.State("PLACE2"):
                used = hbm_count + queued
                over = Mux(dest < K, used + 1 > cfg.hbm_items,
                           (used + 1 > cfg.hbm_items) | (queued + 1 > cfg.queue_items))
                bfill = Mux(dest == n1, lc_fill(2), lc_fill(3))
                full = bfill >= Q
                with m.If(full & in_init):  # the item is dropped, the pass ends fatal (as the model)
                    m.d.sync += [init_over.eq(1), wb_req.eq(1), lw_req.eq(1), blk_wb.eq(blk_on)]
                    with m.If(hit):
                        m.d.sync += [bkt[hit_e].eq(0), count.eq(count - 1)]
                    m.next = "I_NEXT"
                with m.Elif((over & ~in_init) | full):  # fail closed: the fixed-size response carries no value
                    m.d.sync += [fatal.eq(Status.FATAL_CAPACITY), halted.eq(1), status.eq(Status.FATAL_CAPACITY),
                                 rval.eq(0)]
                    m.next = "WAIT_RESP"
                with m.Else():  # append to the bin's block: the copy here if fetched, else one slot write
                    item = Cat(Const(1, 1), key[:kbits], keep_v)
                    with m.If(blk_on[0] & (blk_bin[0] == dest)):
                        m.d.sync += blk[0][bfill].eq(item)
                    with m.Elif(blk_on[1] & (blk_bin[1] == dest)):
                        m.d.sync += blk[1][bfill].eq(item)
                    with m.Else():
                        m.d.comb += [bp.put.eq(1), bp.put_bin.eq(dest), bp.put_pos.eq(bfill), bp.put_data.eq(item)]
                    bin_add(dest, 1, 1)
                    with m.If(dest >= K):
                        m.d.sync += queued.eq(queued + 1)
                    with m.Else():
                        m.d.sync += hbm_count.eq(hbm_count + 1)
                    m.next = "IDX"
            with m.State("IDX"):
                new = Cat(Const(1, 1), key[:kbits], n1, n2, dest)
                with m.If(hit):
                    m.d.sync += bkt[hit_e].eq(new)
                with m.Else():
                    m.d.sync += count.eq(count + 1)
                    with m.If(free_e == W):  # only reachable during initialisation (the model raises)
                        m.d.sync += [halted.eq(1), fatal.eq(Status.FATAL_CAPACITY)]
                    with m.Else():
                        m.d.sync += bkt[free_e].eq(new)
                with m.If(init_item):
                    # write the bucket, the loads and a fetched block back (next cycle, once updated)
                    m.d.sync += [wb_req.eq(1), lw_req.eq(1), blk_wb.eq(blk_on)]
                    m.next = "I_NEXT"
                with m.Else():
                    m.next = "WAIT_RESP"
            with m.State("WAIT_RESP"):
                m.d.sync += responded.eq(1)
                with m.If(~responded):  # every command writes its bucket, loads and blocks back, changed or not
                    m.d.sync += [wb_req.eq(1), lw_req.eq(1), blk_wb.eq(blk_on)]
                with m.If(t >= s.respond):  # '>' only if late (flagged), never a hang
                    m.d.comb += [self.resp.valid.eq(1), self.resp.payload.eq(Cat(status, rval))]
                    m.d.sync += active.eq(0)
                    m.next = "IDLE"
        return m

    def _keys(self, m):
        """The four keys (rng, enc, mac, index) and a 'keys loaded' signal: constants, or
        registers shifted in from the ``key`` port (zero after reset)."""
        if self.keys is not None:
            k = self.keys
            return (Const(_le(k.rng), 256), Const(_le(k.enc), 256), Const(_le(k.mac), 128),
                    Const(_le(k.index), 128), Const(1, 1))
        reg = Signal(64 * KEY_WORDS)
        n = Signal(range(KEY_WORDS + 1))
        loaded = Signal()
        m.d.comb += [loaded.eq(n == KEY_WORDS), self.key.ready.eq(~loaded), self.keys_loaded.eq(loaded)]
        with m.If(self.key.valid & ~loaded):
            m.d.sync += [reg.eq(Cat(reg[64:], self.key.payload)), n.eq(n + 1)]
        return reg[:256], reg[256:512], reg[512:640], reg[640:768], loaded
