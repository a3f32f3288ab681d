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

Structure: :meth:`OmapUnit.elaborate` only assembles the parts. The region ports and the debug
view are here; the on-chip working state is built by :mod:`celosia.omap.rtl.datapath` (the
bucket copy, the two block copies, the bin-word cache, the crypto cores, the keystream jobs) and
the command registers, the host schedule and the FSM (in named groups of states: initialise,
build pages, accept, draw pairs, scan and decide, fetch and verify, take and flush, re-encrypt,
apply, place item, respond) by :class:`celosia.omap.rtl.control.Control`.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from celosia.errors import HardwareGenerationError
from celosia.omap.config import OmapConfig
from celosia.omap.crypto import OmapKeys
from celosia.omap.rtl.blocks import BlockAxiSplit, BlockOnChip
from celosia.omap.rtl.control import Control
from celosia.omap.rtl.datapath import BlockCopies, BucketCopy, CryptoCores, Keystreams, LoadCache
from celosia.omap.rtl.index import IndexAxi, IndexOnChip
from celosia.omap.rtl.words import WordAxi, WordOnChip

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


def _le(b: bytes) -> int:
    return int.from_bytes(b, "little")


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
        m = Module()
        ports = self._region_ports(m)
        # the working copies of one bucket and two bin blocks, the page versions' answers (caught
        # by the control whatever state the FSM is in), the cache of four bin words
        bucket = BucketCopy(m, self.index_port, self.entry_w, self.cfg.bucket_width)
        blocks = BlockCopies(m, self.blocks_port, self.slot_w, self.Q, self.bw)
        m.d.comb += self.versions_port.rdata.ready.eq(1)
        loads = LoadCache(m, self.loads_port, self.bw)
        count = Signal(32)
        queued = Signal(32)
        hbm_count = Signal(32)
        self._debug_port(m, ports, Cat(count, queued, hbm_count))
        keys = self._keys(m)
        crypto = CryptoCores(m, self.cfg.bins, self.kb, self.cfg.ct_bytes, keys, key_port=self.keys is None)
        m.submodules.keystreams = streams = Keystreams(self.nb, 8 * self.cfg.ct_bytes)
        wiring.connect(m, streams.req, crypto.chacha.req)
        wiring.connect(m, crypto.chacha.blk, streams.blk)
        Control(self, m, bucket, blocks, loads, (count, queued, hbm_count), crypto, streams, keys[4]).build()
        return m

    def _region_ports(self, m):
        """The HBM-side regions, each behind a port (on chip, or AXI4 on its own pseudo-channel)."""
        m.submodules.index = ix = self.index_port
        m.submodules.blocks = bp = self.blocks_port
        m.submodules.versions = vp = self.versions_port
        m.submodules.loads = lp = self.loads_port
        for name, port, attr in self.hbm_masters():
            wiring.connect(m, getattr(port, attr), wiring.flipped(getattr(self, name)))
        for port in (ix, bp, vp, lp):
            m.d.comb += port.dbg_addr.eq(self.dbg_addr)
        m.d.comb += self.hbm_fault.eq(ix.fault | bp.fault | vp.fault | lp.fault)
        return {"index": ix, "blocks": bp, "loads": lp, "versions": vp}

    def _debug_port(self, m, ports, counters):
        """``dbg_data``: word ``dbg_addr`` of the region ``dbg_sel`` names, or the counters."""
        with m.Switch(self.dbg_sel):
            for name, port in ports.items():
                with m.Case(DBG[name]):
                    m.d.comb += self.dbg_data.eq(port.dbg_data)
            with m.Case(DBG["counters"]):
                m.d.comb += self.dbg_data.eq(counters)

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
