# amaranth: UnusedElaboratable=no
"""The oblivious map unit's working state on chip, one builder per job.

:class:`~celosia.omap.rtl.unit.OmapUnit` keeps on chip only what the spec allows: working copies
of one index bucket (:class:`BucketCopy`), two bin blocks (:class:`BlockCopies`), the four bin
words a command may touch (:class:`LoadCache`), the keystreams of two pages at two versions
(:class:`Keystreams`, a component of its own) and the crypto cores (:class:`CryptoCores`). The
other builders add their logic to the unit's module when they are created and offer the strobes
and views the control (:mod:`celosia.omap.rtl.control`) drives: every ``fetch``/``add``/...
method emits statements into the FSM state it is called from.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, ResetInserter, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from celosia.omap.rtl.crypto import ChaCha20Core, PairSampler, SipHash24Core

__all__ = ["BlockCopies", "BucketCopy", "CryptoCores", "Keystreams", "LoadCache", "Mac", "entry_fields", "slot_fields",
           "zext"]


def zext(x, width: int):
    """``x`` zero-extended (or truncated) to ``width`` bits."""
    x = x[:min(len(x), width)]
    return x if len(x) == width else Cat(x, Const(0, width - len(x)))


def entry_fields(v, kbits: int, bw: int) -> dict:
    """The fields of an index entry: valid ‖ key ‖ d1 ‖ d2 ‖ bin (the two choices and the item's bin)."""
    o = 1 + kbits
    return {"valid": v[0], "key": v[1:o], "d1": v[o:o + bw], "d2": v[o + bw:o + 2 * bw],
            "bin": v[o + 2 * bw:o + 3 * bw]}


def slot_fields(v, kbits: int, value_bits: int) -> dict:
    """The fields of a bin-block slot: valid ‖ key ‖ value."""
    return {"valid": v[0], "key": v[1:1 + kbits], "val": v[1 + kbits:1 + kbits + value_bits]}


class Mac(wiring.Component):
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


class BucketCopy:
    """The unit's copy of the key's index bucket (``bkt``), filled entry by entry as the fetched
    burst streams in (``have`` entries so far), scanned and edited in place and written back whole
    when ``wb_req`` is set. The last bucket stays and is reused, not refetched (``bkt_id``,
    ``bkt_ok``).

    Parameters
    ----------
    m : Module
        The unit's module.
    port : IndexOnChip or IndexAxi
        The key index region's port.
    entry_w, width : int
        Bits per entry, entries per bucket.
    """

    def __init__(self, m: Module, port, entry_w: int, width: int):
        self.port = port
        self.bkt = Array(Signal(entry_w, name=f"bkt{k}") for k in range(width))
        self.have = Signal(range(width + 1))
        self.bkt_id, self.bkt_ok, self.wb_req = Signal(len(port.bucket)), Signal(), Signal(name="wb_req")
        bkt, have, wb_req = self.bkt, self.have, self.wb_req
        m.d.comb += [port.ent.ready.eq(1), port.wb.eq(wb_req), port.wb_bucket.eq(self.bkt_id),
                     port.wb_data.eq(Cat(*bkt))]
        with m.If(port.ent.valid):
            m.d.sync += [bkt[have].eq(port.ent.payload), have.eq(have + 1)]
        with m.If(wb_req):
            m.d.sync += wb_req.eq(0)

    def fetch_or_reuse(self, m: Module, bucket):
        """Make bucket ``bucket`` current: reuse the copy if it already holds it, else fetch it."""
        with m.If(self.bkt_ok & (self.bkt_id == bucket)):
            m.d.sync += self.have.eq(len(self.bkt))  # the bucket of the last command: already here
        with m.Else():
            m.d.comb += [self.port.fetch.eq(1), self.port.bucket.eq(bucket)]
            m.d.sync += [self.have.eq(0), self.bkt_id.eq(bucket), self.bkt_ok.eq(1)]


class BlockCopies:
    """The unit's copies of (up to) two bin blocks (``blk[0]``, ``blk[1]``), filled slot by slot
    as the fetched bursts stream in (block 0 first, ``bgot`` slots so far), edited in place and
    written back whole (``blk_wb``: one bit per copy). ``blk_on`` marks the copies holding a
    fetched block this command, ``blk_bin`` their bins.

    After :meth:`select` the *current* block is copy ``i``: :meth:`cur`, :meth:`remove` and
    ``bhit``/``bhit_j`` (the key's slot in it, keys being unique) refer to it.

    Parameters
    ----------
    m : Module
        The unit's module.
    port : BlockOnChip or BlockAxiSplit
        The bin blocks' port.
    slot_w, q, bw : int
        Bits per slot, slots per block, bits of a bin number.
    """

    def __init__(self, m: Module, port, slot_w: int, q: int, bw: int):
        self.port, self.slot_w, self.q = port, slot_w, q
        self.blk = [Array(Signal(slot_w, name=f"blk{j}_{k}") for k in range(q)) for j in range(2)]
        self.blk_bin = [Signal(bw, name=f"blk_bin{j}") for j in range(2)]
        self.blk_on = Signal(2)  # which copies hold a fetched block this command
        self.bgot = Signal(range(2 * q + 1))
        self.blk_wb = Signal(2)
        blk, blk_bin, bgot, blk_wb = self.blk, self.blk_bin, self.bgot, self.blk_wb
        m.d.comb += [port.ent.ready.eq(1), port.wb.eq(blk_wb), port.wb_bin0.eq(blk_bin[0]),
                     port.wb_bin1.eq(blk_bin[1]), port.wb_data0.eq(Cat(*blk[0])), port.wb_data1.eq(Cat(*blk[1]))]
        with m.If(port.ent.valid):
            with m.If(bgot < q):
                m.d.sync += blk[0][bgot].eq(port.ent.payload)
            with m.Else():
                m.d.sync += blk[1][(bgot - q)[:len(bgot)]].eq(port.ent.payload)
            m.d.sync += bgot.eq(bgot + 1)
        with m.If(blk_wb != 0):
            m.d.sync += blk_wb.eq(0)

    def fetch(self, m: Module, j: int, bin_):
        """Fetch bin ``bin_``'s block into copy ``j`` (slots arrive in ``bgot`` order)."""
        m.d.comb += [self.port.fetch.eq(1), self.port.fetch_bin.eq(bin_)]
        m.d.sync += [self.blk_bin[j].eq(bin_), self.blk_on.bit_select(j, 1).eq(1)]

    def select(self, m: Module, i, key, kbits: int, value_bits: int):
        """Make copy ``i`` (a 1-bit signal) the current block and look ``key`` up in it."""
        self.i = i
        self.bhit, self.bhit_j = Signal(), Signal(range(self.q))
        for k in reversed(range(self.q)):
            x = slot_fields(self.cur(k), kbits, value_bits)
            with m.If(x["valid"] & (x["key"] == key[:kbits])):
                m.d.comb += [self.bhit.eq(1), self.bhit_j.eq(k)]

    def cur(self, k):
        """Slot ``k`` of the current block (zero past its end)."""
        if isinstance(k, int) and k >= self.q:
            return Const(0, self.slot_w)
        return Mux(self.i, self.blk[1][k], self.blk[0][k])

    def remove(self, m: Module, j):
        """Drop slot ``j`` of the current block, keeping it compact and in order."""
        for k in range(self.q):
            with m.If(k >= j):
                with m.If(self.i):
                    m.d.sync += self.blk[1][k].eq(self.cur(k + 1))
                with m.Else():
                    m.d.sync += self.blk[0][k].eq(self.cur(k + 1))

    def store(self, m: Module, dest, pos, item):
        """Append ``item`` at slot ``pos`` of bin ``dest``'s block: in the copy holding it if one
        does, else as one single-slot write to HBM."""
        blk, blk_on, blk_bin = self.blk, self.blk_on, self.blk_bin
        with m.If(blk_on[0] & (blk_bin[0] == dest)):
            m.d.sync += blk[0][pos].eq(item)
        with m.Elif(blk_on[1] & (blk_bin[1] == dest)):
            m.d.sync += blk[1][pos].eq(item)
        with m.Else():
            m.d.comb += [self.port.put.eq(1), self.port.put_bin.eq(dest), self.port.put_pos.eq(pos),
                         self.port.put_data.eq(item)]


class LoadCache:
    """The bin words (load ‖ block fill, 32 bits each) of the four bins a command may touch:
    slots 0/1 the revealed pair, a repeated initial key's pair or the page being built, 2/3 the
    placement pair. :meth:`fetch` reads a word early, :meth:`add` adjusts every cached copy of a
    bin together (the slots may repeat a bin), ``lw_req`` writes every used slot back, one per
    cycle once its value is in; ``idle`` says no write-back is pending.

    Parameters
    ----------
    m : Module
        The unit's module.
    port : WordOnChip or WordAxi
        The loads region's port (64-bit words, one per bin).
    bw : int
        Bits of a bin number.
    """

    def __init__(self, m: Module, port, bw: int):
        self.port = port
        m.d.comb += port.rdata.ready.eq(1)
        self.lc_bin = [Signal(bw, name=f"lc_bin{k}") for k in range(4)]
        self.lc_val = [Signal(64, name=f"lc_val{k}") for k in range(4)]
        self.lc_dlt = [Signal(8, name=f"lc_dlt{k}") for k in range(4)]  # two's complement adjustments
        self.lc_fdl = [Signal(8, name=f"lc_fdl{k}") for k in range(4)]
        self.lc_have, self.lc_used, self.lc_pend = Signal(4), Signal(4), Signal(4)
        self.lq = Signal(8)  # slot ids of the reads in flight, oldest in the low bits
        self.lq_n = Signal(range(5))
        self.lq_push, self.lq_slot = Signal(), Signal(2)
        self._reads(m)
        self._write_back(m)

    def _reads(self, m: Module):
        """Answers fill their slots in request order (a queue of slot ids)."""
        port, lq, lq_n = self.port, self.lq, self.lq_n
        lq_pop = port.rdata.valid
        with m.If(lq_pop):
            for k in range(4):
                with m.If(lq[:2] == k):
                    m.d.sync += [self.lc_val[k].eq(port.rdata.payload), self.lc_have.bit_select(k, 1).eq(1)]
        self.lq_base = Signal(8)
        m.d.comb += self.lq_base.eq(Mux(lq_pop, lq >> 2, lq))
        with m.If(self.lq_push):
            m.d.sync += lq.eq(self.lq_base | (self.lq_slot << Cat(Const(0, 1), (lq_n - lq_pop).as_unsigned()[:3])))
        with m.Else():
            m.d.sync += lq.eq(self.lq_base)
        m.d.sync += lq_n.eq(lq_n + self.lq_push - lq_pop)

    def _write_back(self, m: Module):
        """One used slot per cycle once its value is in, after ``lw_req``."""
        self.wb_sel = Signal(range(5), init=4)
        for k in reversed(range(4)):
            with m.If(self.lc_pend[k] & self.lc_have[k]):
                m.d.comb += self.wb_sel.eq(k)
        for k in range(4):
            with m.If(self.wb_sel == k):
                m.d.comb += [self.port.wr.eq(1), self.port.wr_page.eq(self.lc_bin[k]),
                             self.port.wr_data.eq(Cat(self.eff(k), self.fill(k)))]
                m.d.sync += self.lc_pend.bit_select(k, 1).eq(0)
        self.lw_req = Signal()  # the FSM asks for the write-back (set with the last adjustment)
        with m.If(self.lw_req):
            m.d.sync += [self.lc_pend.eq(self.lc_used), self.lw_req.eq(0)]
        self.idle = (self.lc_pend == 0) & ~self.lw_req

    def eff(self, k):
        """Slot ``k``'s load with this command's adjustments."""
        return (self.lc_val[k][:32] + self.lc_dlt[k].as_signed())[:32]

    def fill(self, k):
        """Slot ``k``'s block fill with this command's adjustments."""
        return (self.lc_val[k][32:] + self.lc_fdl[k].as_signed())[:32]

    def fetch(self, m: Module, k: int, bin_):
        """Read bin ``bin_``'s word into slot ``k`` (adjustments reset, the slot marked used)."""
        m.d.comb += [self.port.rd.eq(1), self.port.rd_page.eq(bin_), self.lq_push.eq(1), self.lq_slot.eq(k)]
        m.d.sync += [self.lc_bin[k].eq(bin_), self.lc_dlt[k].eq(0), self.lc_fdl[k].eq(0),
                     self.lc_have.bit_select(k, 1).eq(0), self.lc_used.bit_select(k, 1).eq(1)]

    def add(self, m: Module, bin_, load: int, fill: int):
        """Adjust bin ``bin_``'s load and fill by ``load`` and ``fill`` (every cached copy)."""
        for k in range(4):
            with m.If(self.lc_used[k] & (self.lc_bin[k] == bin_)):
                if load:
                    m.d.sync += self.lc_dlt[k].eq(self.lc_dlt[k] + load)
                if fill:
                    m.d.sync += self.lc_fdl[k].eq(self.lc_fdl[k] + fill)


class CryptoCores:
    """The unit's crypto: the CSPRNG pair sampler (``sampler``), SipHash of a key (``hmac``)
    and of two pages (``macs``), the ChaCha20 core (``chacha``, driven by :class:`Keystreams`),
    keyed from ``keys``.

    Parameters
    ----------
    m : Module
        The unit's module.
    bins : int
        B, the range of the sampled pairs.
    key_bytes, ct_bytes : int
        Bytes of a key and of a page's ciphertext.
    keys : tuple
        ``(rng, enc, mac, index, loaded)`` values from the unit's key source.
    key_port : bool
        The keys come from the key port: the sampler is held in reset until they are loaded,
        so its stream is the keystream of the provisioned key from word 0.
    """

    def __init__(self, m: Module, bins: int, key_bytes: int, ct_bytes: int, keys, key_port: bool):
        k_rng, k_enc, k_mac, k_idx, keys_ok = keys
        self.ct_bytes = ct_bytes
        sampler = self.sampler = PairSampler(bins)
        if key_port:
            m.submodules.sampler = ResetInserter(~keys_ok)(sampler)
        else:
            m.submodules.sampler = sampler
        m.d.comb += sampler.key.eq(k_rng)
        m.submodules.hmac = hmac = self.hmac = Mac(key_bytes)
        m.submodules.mac0 = mac0 = Mac(12 + ct_bytes)
        m.submodules.mac1 = mac1 = Mac(12 + ct_bytes)
        self.macs = (mac0, mac1)
        m.d.comb += [hmac.key.eq(k_idx), mac0.key.eq(k_mac), mac1.key.eq(k_mac)]
        m.submodules.chacha = chacha = self.chacha = ChaCha20Core()
        m.d.comb += chacha.key.eq(k_enc)

    def mac_msg(self, page, version, ct):
        """The padded MAC message of a page: page id (u32) ‖ version (u64) ‖ ciphertext."""
        return Mac.pad(Cat(zext(page, 32), zext(version, 64), ct), 12 + self.ct_bytes)


class Keystreams(wiring.Component):
    """Four ChaCha20 keystream jobs run one after the other on one core: 0/1 decrypt pages 0/1
    at their versions, 2/3 encrypt them at version + 1.

    Parameters
    ----------
    blocks : int
        64-byte blocks per page keystream.
    ct_bits : int
        Bits of a page's ciphertext.

    Ports
    -----
    go : In(1)
        Start all four jobs (a one-cycle pulse); ``page``, ``version`` and ``enable`` are read
        while they run.
    page, version : In(32).array(4), In(64).array(4)
        Each job's nonce: page id and version.
    enable : In(4)
        One bit per job; a disabled job finishes at once (its page is not a host page).
    done : Out(4)
        One bit per finished job, cleared by ``go``.
    ks : Out(4 * blocks * 512)
        The keystreams, job after job (see :meth:`stream`).
    req : Out(stream.Signature(128))
        Block requests to the ChaCha20 core: counter (32) ‖ nonce (96).
    blk : In(stream.Signature(512))
        The core's blocks (always accepted).
    """

    def __init__(self, blocks: int, ct_bits: int):
        self.nb, self.ct_bits = blocks, ct_bits
        super().__init__({
            "go": In(1), "page": In(32).array(4), "version": In(64).array(4), "enable": In(4),
            "done": Out(4), "ks": Out(4 * blocks * 512),
            "req": Out(stream.Signature(128)), "blk": In(stream.Signature(512)),
        })

    def elaborate(self, platform):
        m = Module()
        nb = self.nb
        ks, done, go, req, blk = self.ks, self.done, self.go, self.req, self.blk
        busy, wait = Signal(), Signal()
        job = Signal(2)
        n = Signal(range(nb + 1))  # blocks of the current job so far
        m.d.comb += [blk.ready.eq(1),
                     req.payload.eq(Cat(n.as_unsigned(), Const(0, 32 - len(n)), Array(self.page)[job],
                                        Array(self.version)[job]))]
        with m.If(go):
            m.d.sync += [busy.eq(1), job.eq(0), n.eq(0), wait.eq(0), done.eq(0)]
        with m.Elif(busy):
            with m.If(~self.enable.bit_select(job, 1) | (n == nb)):
                m.d.sync += [done.bit_select(job, 1).eq(1), n.eq(0)]
                with m.If(job == 3):
                    m.d.sync += busy.eq(0)
                with m.Else():
                    m.d.sync += job.eq(job + 1)
            with m.Elif(~wait):
                m.d.comb += req.valid.eq(1)
                with m.If(req.ready):
                    m.d.sync += wait.eq(1)
            with m.Elif(blk.valid):
                for j in range(4):
                    for b in range(nb):
                        with m.If((job == j) & (n == b)):
                            k = j * nb + b
                            m.d.sync += ks[512 * k:512 * (k + 1)].eq(blk.payload)
                m.d.sync += [wait.eq(0), n.eq(n + 1)]
        return m

    def stream(self, j: int):
        """Job ``j``'s keystream, as long as a page's ciphertext."""
        return self.ks[512 * self.nb * j:512 * self.nb * j + self.ct_bits]
