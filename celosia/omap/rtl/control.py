# amaranth: UnusedElaboratable=no
"""Control of the oblivious map unit: the command registers, the schedule and the FSM.

:class:`Control` holds what one command works on (the latched command, the revealed pair, the
two pages, the item taken, the response) and builds the unit's FSM in named groups of states,
in the order a command runs through them:

* :meth:`~Control.initialise`: the initialisation pass, one input slot at a time (an item is
  hashed, its placement pair drawn, a repeated key's earlier copy dropped);
* :meth:`~Control.build_pages`: the pass's end, every host page built from its bin block,
  encrypted and written;
* :meth:`~Control.accept`: a command is accepted, its key hashed, its bucket fetched;
* :meth:`~Control.draw_pairs`: both pairs are drawn, the placement pair's bin words fetched;
* :meth:`~Control.scan_and_decide`: the key's bucket is scanned and the revealed pair decided;
* :meth:`~Control.fetch_and_verify`: the pair's page versions, bin words and blocks are fetched,
  its pages arrive, their keystreams run, their MACs and versions are checked and they decrypt;
* :meth:`~Control.take_and_flush`: the item is taken from its page or block, and each page
  takes the head of its eviction queue while it has room;
* :meth:`~Control.reencrypt`: both pages encrypt at version + 1 and get their tags;
* :meth:`~Control.apply`: the op is applied;
* :meth:`~Control.place_item`: the kept item is placed in the less loaded bin of the placement pair
  and indexed;
* :meth:`~Control.respond`: everything is written back and the response leaves on schedule.

The host transactions do not come from the FSM: :meth:`~Control.host_schedule` issues them at
the schedule's cycles (:class:`celosia.omap.config.Schedule`), whatever state the FSM is in, and
flags any window the datapath missed.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal

from celosia.omap.config import Status
from celosia.omap.rtl.datapath import Mac, entry_fields, slot_fields, zext

__all__ = ["Control"]


class Control:
    """The registers and FSM of one :class:`~celosia.omap.rtl.unit.OmapUnit` (see the module).

    Parameters
    ----------
    unit : OmapUnit
        The component (ports, configuration, derived widths).
    m : Module
        Its module.
    bucket : BucketCopy
    blocks : BlockCopies
    loads : LoadCache
    counters : tuple of Signal
        ``(count, queued, hbm_count)``: items in the map, in the eviction queues, in HBM bins.
    crypto : CryptoCores
    streams : Keystreams
    keys_ok : Value
        The keys are loaded (constant 1 with elaboration-time keys).
    """

    def __init__(self, unit, m: Module, bucket, blocks, loads, counters, crypto, streams, keys_ok):
        self.u, self.m = unit, m
        self.ix, self.bk, self.lc, self.cr, self.ks = bucket, blocks, loads, crypto, streams
        self.count, self.queued, self.hbm_count = counters
        self.keys_ok = keys_ok
        cfg = unit.cfg
        self.cfg, self.s = cfg, unit.sched
        self.K, self.N, self.M = cfg.hbm_bins, cfg.n, cfg.host_pages
        self.W, self.P, self.Q = cfg.bucket_width, cfg.p_cap, unit.Q
        self.V, self.kb, self.kbits, self.sb = unit.V, unit.kb, cfg.key_bits, cfg.slot_bytes
        self.bw, self.sw = unit.bw, crypto.sampler.w
        self.ct_bits = 8 * cfg.ct_bytes
        self._registers()
        self._pair_views()
        self._host_schedule()
        self._command_decode()

    # ---- registers and views -------------------------------------------------------------
    def _registers(self):
        """The command's registers, and the answers caught whatever state the FSM is in."""
        m, u, cfg, V, W, bw, sw = self.m, self.u, self.cfg, self.V, self.W, self.bw, self.sw
        ct_bits, N, M = self.ct_bits, self.N, self.M
        self.t = Signal(32)
        self.t_init = Signal(64)
        m.d.sync += [self.t.eq(self.t + 1), self.t_init.eq(self.t_init + 1)]
        self.op, self.key, self.val = Signal(8), Signal(64), Signal(8 * V)
        self.bad, self.in_init, self.init_item = Signal(), Signal(), Signal(name="init_item")
        self.bucket = Signal(range(cfg.buckets))
        self.miss, self.place = Signal(2 * sw), Signal(2 * sw, name="place")
        self.n1, self.n2 = self.place[:sw], self.place[sw:]
        self.hit = Signal()
        self.hit_e = Signal(range(W))
        self.free_e = Signal(range(W + 1))
        self.fill = Signal(range(W + 1))
        self.ent = Signal(u.entry_w)
        self.e = entry_fields(self.ent, self.kbits, bw)
        self.scan_i = Signal(range(W + 1))
        self.d = [Signal(bw, name=f"d{k}") for k in range(2)]
        self.host = [Signal(name=f"host{k}") for k in range(2)]
        self.ver = [Signal(64, name=f"ver{k}") for k in range(2)]
        self.vgot = Signal(2)  # versions received for this command (page 0's first if it is a host page)
        self.pg = [Signal(u.page_bits, name=f"pg{k}") for k in range(2)]
        self.pt = [Signal(ct_bits, name=f"pt{k}") for k in range(2)]
        self.cte = [Signal(ct_bits, name=f"cte{k}") for k in range(2)]
        self.out = [Signal(u.page_bits, name=f"out{k}") for k in range(2)]
        self.taken, self.tval = Signal(), Signal(8 * V)
        self.status, self.rval, self.fatal = Signal(8), Signal(8 * V), Signal(8, name="fatal")
        self.keep, self.keep_v = Signal(), Signal(8 * V, name="keep_v")
        self.halted = Signal()
        self.l1 = Signal(32)
        self.dest = Signal(bw)
        self.init_over = Signal()  # an initial item found its bin's block full (dropped; fatal at the end)
        self.i = Signal()
        self.rd_n = Signal(2)
        self.active, self.pair_ok, self.built, self.integrity_ok, self.responded = (
            Signal(), Signal(), Signal(), Signal(), Signal())
        self.slot_n = Signal(range(N + 1))
        self.page_i = Signal(range(M + 1))
        self.init_write = Signal()
        # the keystream jobs' nonces (page, version) and enables, set as the pair becomes known
        self.ks_m = [Signal(32, name=f"ks_m{j}") for j in range(4)]
        self.ks_v = [Signal(64, name=f"ks_v{j}") for j in range(4)]
        self.ks_en = Signal(4)
        ks = self.ks
        m.d.comb += [*(ks.page[j].eq(self.ks_m[j]) for j in range(4)),
                     *(ks.version[j].eq(self.ks_v[j]) for j in range(4)), ks.enable.eq(self.ks_en)]
        m.d.comb += [u.halted.eq(self.halted), u.host_rdata.ready.eq(1)]
        self._catch_pair(u.versions_port.rdata, self.vgot, self.ver)

    def _catch_pair(self, answer, got, regs):
        """Answers for the pair's host pages, in request order (page 0's first if it is a host
        page), caught whatever state the FSM is in; ``got`` counts them."""
        m = self.m
        with m.If(answer.valid):
            with m.If((got == 0) & self.host[0]):
                m.d.sync += regs[0].eq(answer.payload)
            with m.Else():
                m.d.sync += regs[1].eq(answer.payload)
            m.d.sync += got.eq(got + 1)

    def page_m(self, x):
        """Host page number of bin ``x`` (bins ``[K, B)`` are pages ``[0, M)``)."""
        return zext((x - self.K)[:len(x)], 32)

    def slot(self, vec, k):
        """Slot ``k`` of a page's plaintext."""
        return vec[8 * self.sb * k:8 * self.sb * (k + 1)]

    def _pair_views(self):
        """The current page (``i``) and block of the take and flush steps, the page's first free
        slot and the key's slot in the block."""
        m, P = self.m, self.P
        self.cur_pt = Signal(self.ct_bits)
        m.d.comb += self.cur_pt.eq(Mux(self.i, self.pt[1], self.pt[0]))
        self.first_free, self.has_free = Signal(range(P + 1)), Signal(name="has_free")
        for k in reversed(range(P)):
            with m.If(self.slot(self.cur_pt, k)[:8] == 0):
                m.d.comb += [self.first_free.eq(k), self.has_free.eq(1)]
        self.bk.select(m, self.i, self.key, self.kbits, 8 * self.V)

    def block_take(self, bin_):
        """Take the key's item out of the current block (that of bin ``bin_``)."""
        m, bk = self.m, self.bk
        m.d.sync += [self.tval.eq(slot_fields(bk.cur(bk.bhit_j), self.kbits, 8 * self.V)["val"]), self.taken.eq(1)]
        bk.remove(m, bk.bhit_j)
        self.lc.add(m, bin_, -1, -1)
        with m.If(bin_ < self.K):
            m.d.sync += self.hbm_count.eq(self.hbm_count - 1)
        with m.Else():
            m.d.sync += self.queued.eq(self.queued - 1)

    def set_pt(self, vec_expr):
        """Replace the current page's plaintext."""
        m = self.m
        with m.If(self.i):
            m.d.sync += self.pt[1].eq(vec_expr)
        with m.Else():
            m.d.sync += self.pt[0].eq(vec_expr)

    # ---- the schedule --------------------------------------------------------------------
    def _host_schedule(self):
        """The scheduled host transactions (the schedule is the contract), the pages' answers,
        and the ``late`` flag of a window the datapath missed."""
        m, u, cfg, s = self.m, self.u, self.cfg, self.s
        req_w, req_a, req_l, req_d = Signal(), Signal(64), Signal(32), Signal(u.page_bits)
        m.d.comb += u.host_req.payload.eq(Cat(req_w, req_a, req_l, req_d))
        t, host = self.t, self.host
        with m.If(self.active & self.pair_ok):
            for k, (tr, tw) in enumerate(((s.read1, s.write1), (s.read2, s.write2))):
                addr = cfg.host_base + self.page_m(self.d[k]) * cfg.page_bytes
                with m.If((t == tr) & host[k]):
                    m.d.comb += [u.host_req.valid.eq(1), req_w.eq(0), req_a.eq(addr), req_l.eq(cfg.page_bytes)]
                with m.If((t == tw) & host[k] & self.integrity_ok):
                    m.d.comb += [u.host_req.valid.eq(1), req_w.eq(1), req_a.eq(addr), req_l.eq(cfg.page_bytes),
                                 req_d.eq(self.out[k])]
        with m.If(self.init_write):
            m.d.comb += [u.host_req.valid.eq(1), req_w.eq(1), req_l.eq(cfg.page_bytes), req_d.eq(self.out[0]),
                         req_a.eq(cfg.host_base + self.page_i * cfg.page_bytes)]
        self._catch_pair(u.host_rdata, self.rd_n, self.pg)
        late = (self.active & (((t == s.read1) & ~self.pair_ok) | ((t == s.write1) & ~self.built & self.integrity_ok)
                               | ((t == s.respond) & ~self.responded)))
        with m.If(late):
            m.d.sync += u.late.eq(1)

    def _command_decode(self):
        """The command beat's fields and whether it is a bad command."""
        V, kb, kbits = self.V, self.kb, self.kbits
        c = self.u.cmd.payload
        self.c_op, self.c_klen, self.c_key, self.c_vlen, self.c_val = (
            c[:8], c[8:16], c[16:80], c[80:88], c[88:88 + 8 * V])
        c_bad = (self.c_op > 2) | (self.c_klen != kb) | (self.c_vlen != Mux(self.c_op == 1, V, 0))
        if kbits < 64:
            c_bad = c_bad | (self.c_key[kbits:] != 0)
        self.c_bad = c_bad

    def latch(self):
        """Latch the command beat."""
        return [self.op.eq(self.c_op), self.key.eq(self.c_key), self.val.eq(self.c_val)]

    # ---- the FSM -------------------------------------------------------------------------
    def build(self):
        """The FSM, its states grouped by step."""
        with self.m.FSM(name="omap"):
            self.initialise()
            self.build_pages()
            self.accept()
            self.draw_pairs()
            self.scan_and_decide()
            self.fetch_and_verify()
            self.take_and_flush()
            self.reencrypt()
            self.apply()
            self.place_item()
            self.respond()

    def initialise(self):
        """The initialisation pass: exactly N input slots, one every ``ingest`` cycles."""
        m, u, s, N, Q = self.m, self.u, self.s, self.N, self.Q
        bk, lc, e = self.bk, self.lc, self.e
        with m.State("INIT_WAIT"):
            m.d.comb += u.cmd.ready.eq(self.keys_ok)
            m.d.sync += self.in_init.eq(1)
            with m.If(u.cmd.valid & self.keys_ok):
                m.d.sync += [self.t_init.eq(1), self.slot_n.eq(1), *self.latch()]
                m.next = "I_ITEM"
        with m.State("I_NEXT"):
            with m.If(self.slot_n == N):
                m.d.sync += self.page_i.eq(0)
                m.next = "P_BUILD"
            with m.Elif(self.t_init == self.slot_n * s.ingest):
                m.d.comb += u.cmd.ready.eq(1)
                with m.If(u.cmd.valid):
                    m.d.sync += [self.slot_n.eq(self.slot_n + 1), *self.latch()]
                    m.next = "I_ITEM"
                with m.Else():
                    m.d.sync += u.late.eq(1)
        with m.State("I_ITEM"):
            with m.If(self.op == 3):
                m.d.comb += [self.cr.hmac.start.eq(1), self.cr.hmac.data.eq(Mac.pad(self.key, self.kb))]
                m.d.sync += [self.init_item.eq(1), self.bad.eq(0), bk.blk_on.eq(0), bk.bgot.eq(0)]
                m.next = "HASH_WAIT"
            with m.Else():
                m.next = "I_NEXT"
        with m.State("LD_DUP0"):  # a repeated initial key: its earlier pair's loads, its bin's block
            lc.fetch(m, 0, e["d1"])
            bk.fetch(m, 0, e["bin"])
            m.d.sync += self.i.eq(0)
            m.next = "LD_DUP1"
        with m.State("LD_DUP1"):
            lc.fetch(m, 1, e["d2"])
            m.next = "DUP_WAIT"
        with m.State("DUP_WAIT"), m.If(bk.bgot == Q):
            with m.If(bk.bhit):  # drop the earlier copy (always there)
                self.block_take(e["bin"])
            m.next = "I_DUP"
        with m.State("I_DUP"):
            m.d.sync += [self.keep.eq(1), self.keep_v.eq(self.val)]
            m.next = "PLACE0"

    def build_pages(self):
        """The end of the pass: each host page built from its block, encrypted, written."""
        m, u, s, cfg, N, M, K, Q = self.m, self.u, self.s, self.cfg, self.N, self.M, self.K, self.Q
        bk, lc, ks, mac0 = self.bk, self.lc, self.ks, self.cr.macs[0]
        vp = u.versions_port
        page_i = self.page_i
        with m.State("P_BUILD"), m.If(lc.idle):  # the empty page, its bin's word and block
            m.d.sync += [self.pt[0].eq(0), self.i.eq(0), self.d[0].eq((K + page_i)[:self.bw]), self.host[0].eq(1),
                         lc.lc_used.eq(0), bk.bgot.eq(0), bk.blk_on.eq(0)]
            m.next = "P_FETCH0"
        with m.State("P_FETCH0"):
            lc.fetch(m, 0, self.d[0])
            bk.fetch(m, 0, self.d[0])
            m.next = "P_FETCH"
        with m.State("P_FETCH"), m.If(bk.bgot == Q):
            m.next = "FLUSH"
        with m.State("P_KS"):
            m.d.sync += [self.ks_m[2].eq(page_i), self.ks_v[2].eq(1), self.ks_en.eq(0b0100)]
            m.d.comb += ks.go.eq(1)
            m.next = "P_ENC"
        with m.State("P_ENC"), m.If(ks.done[2] & ~ks.go):
            m.d.sync += self.cte[0].eq(self.pt[0] ^ ks.stream(2))
            m.next = "P_MAC"
        with m.State("P_MAC"):
            m.d.comb += [mac0.start.eq(1), mac0.data.eq(self.cr.mac_msg(page_i, Const(1, 64), self.cte[0]))]
            m.d.comb += [vp.wr.eq(1), vp.wr_page.eq(page_i), vp.wr_data.eq(1)]
            m.next = "P_TAG"
        with m.State("P_TAG"), m.If(mac0.done):
            m.d.sync += self.out[0].eq(Cat(Const(1, 64), self.cte[0], mac0.tag))
            m.next = "P_WRITE"
        with m.State("P_WRITE"):
            with m.If(self.t_init >= N * s.ingest + (page_i + 1) * s.init_page):  # '>' only if late
                m.d.comb += self.init_write.eq(1)
                m.d.sync += page_i.eq(page_i + 1)
                with m.If(page_i == M - 1):  # the pass ends with the last page: check capacity
                    with m.If((self.hbm_count + self.queued > cfg.hbm_items) | (self.queued > cfg.queue_items)
                              | self.init_over):
                        m.d.sync += [self.halted.eq(1), self.fatal.eq(Status.FATAL_CAPACITY)]
                    m.d.sync += [self.in_init.eq(0), u.initialised.eq(1), self.init_item.eq(0)]
                    m.next = "IDLE"
                with m.Else():
                    m.next = "P_BUILD"
                with m.If(self.t_init > N * s.ingest + (page_i + 1) * s.init_page):
                    m.d.sync += u.late.eq(1)

    def accept(self):
        """Accept a command (or answer it fatal once halted), hash its key, fetch its bucket."""
        m, u, cfg, V, W = self.m, self.u, self.cfg, self.V, self.W
        bk, hmac = self.bk, self.cr.hmac
        with m.State("IDLE"):
            m.d.comb += u.cmd.ready.eq(1)
            m.d.sync += [self.active.eq(0), self.pair_ok.eq(0), self.built.eq(0), self.responded.eq(0)]
            with m.If(u.cmd.valid):
                m.d.sync += [self.t.eq(1), *self.latch(), self.bad.eq(self.c_bad), self.hit.eq(0), self.taken.eq(0),
                             self.tval.eq(0), bk.blk_on.eq(0),
                             bk.bgot.eq(0),
                             self.rval.eq(0), self.keep.eq(0), self.integrity_ok.eq(1), self.host[0].eq(0),
                             self.host[1].eq(0),
                             self.rd_n.eq(0), self.status.eq(0)]
                with m.If(self.halted):
                    m.next = "HALT_RESP"
                with m.Else():
                    m.d.sync += self.active.eq(1)
                    m.d.comb += [hmac.start.eq(1), hmac.data.eq(Mac.pad(self.c_key, self.kb))]
                    m.next = "HASH_WAIT"
        with m.State("HALT_RESP"):
            m.d.comb += [u.resp.valid.eq(1), u.resp.payload.eq(Cat(self.fatal, Const(0, 8 * V)))]
            m.next = "IDLE"
        with m.State("HASH_WAIT"):
            with m.If(hmac.done):
                new_b = hmac.tag[:len(self.bucket)] if cfg.buckets > 1 else Const(0, 1)
                m.d.sync += [self.bucket.eq(new_b), self.scan_i.eq(0), self.hit.eq(0), self.free_e.eq(W),
                             self.fill.eq(0)]
                self.ix.fetch_or_reuse(m, new_b)
                m.next = "PAIR0"

    def draw_pairs(self):
        """Draw the miss pair and the placement pair (always both, in this order: the RNG stream
        is consumed the same way whatever the data), fetch the placement pair's bin words."""
        m, lc, sampler = self.m, self.lc, self.cr.sampler
        with m.State("PAIR0"):
            m.d.comb += sampler.pair.ready.eq(1)
            with m.If(sampler.pair.valid):
                with m.If(self.init_item):
                    m.d.sync += self.place.eq(sampler.pair.payload)
                    m.next = "LD_N1"
                with m.Else():
                    m.d.sync += self.miss.eq(sampler.pair.payload)
                    m.next = "PAIR1"
        with m.State("PAIR1"):
            m.d.comb += sampler.pair.ready.eq(1)
            with m.If(sampler.pair.valid):
                m.d.sync += self.place.eq(sampler.pair.payload)
                m.next = "LD_N1"
        with m.State("LD_N1"):  # the placement pair's loads (after the last write-back)
            with m.If(lc.idle):
                m.d.sync += lc.lc_used.eq(0)
                lc.fetch(m, 2, self.n1)
                m.next = "LD_N2"
        with m.State("LD_N2"):
            lc.fetch(m, 3, self.n2)
            m.next = "SCAN"

    def scan_and_decide(self):
        """Scan the key's bucket as it streams in (hit, its entry, the first free entry, the
        fill), then decide the revealed pair: the key's two choices on a hit, else the miss pair."""
        m, W, K, sw, kbits, ix, e = self.m, self.W, self.K, self.sw, self.kbits, self.ix, self.e
        with m.State("SCAN"):
            scan_i = self.scan_i
            cur_e = ix.bkt[scan_i]
            r = entry_fields(cur_e, kbits, self.bw)
            with m.If(scan_i == W):
                m.next = "DECIDE"
            with m.Elif(scan_i < ix.have):  # entries are scanned as they arrive
                m.d.sync += scan_i.eq(scan_i + 1)
                with m.If(r["valid"]):
                    m.d.sync += self.fill.eq(self.fill + 1)
                    with m.If((r["key"] == self.key[:kbits]) & ~self.bad):
                        m.d.sync += [self.hit.eq(1), self.hit_e.eq(scan_i), self.ent.eq(cur_e)]
                with m.Elif(self.free_e == W):
                    m.d.sync += self.free_e.eq(scan_i)
        with m.State("DECIDE"):
            with m.If(self.init_item):
                with m.If(self.hit):
                    m.next = "LD_DUP0"
                with m.Else():
                    m.next = "I_DUP"
            with m.Else():
                d0 = Mux(self.hit, e["d1"], self.miss[:sw])
                d1 = Mux(self.hit, e["d2"], self.miss[sw:])
                m.d.sync += [self.d[0].eq(d0), self.d[1].eq(d1), self.host[0].eq(d0 >= K), self.host[1].eq(d1 >= K)]
                m.next = "VER0"

    def fetch_and_verify(self):
        """Fetch the pair's versions, bin words and blocks; wait for the pages and keystreams;
        check both MACs and versions, then decrypt."""
        m, u, Q, ct_bits = self.m, self.u, self.Q, self.ct_bits
        bk, lc, ks, cr = self.bk, self.lc, self.ks, self.cr
        vp, macs, d, host, ver, pg = u.versions_port, cr.macs, self.d, self.host, self.ver, self.pg
        mac0, mac1 = macs
        with m.State("VER0"):  # request the versions of the pair's host pages, both loads and blocks
            m.d.comb += [vp.rd.eq(host[0]), vp.rd_page.eq(self.page_m(d[0]))]
            lc.fetch(m, 0, d[0])
            bk.fetch(m, 0, d[0])
            m.d.sync += [ver[0].eq(0), ver[1].eq(0), self.vgot.eq(0), self.pair_ok.eq(1),
                         self.ks_m[0].eq(self.page_m(d[0])), self.ks_m[2].eq(self.page_m(d[0]))]
            m.next = "VER1"
        with m.State("VER1"):
            m.d.comb += [vp.rd.eq(host[1]), vp.rd_page.eq(self.page_m(d[1]))]
            lc.fetch(m, 1, d[1])
            bk.fetch(m, 1, d[1])
            m.d.sync += [self.ks_m[1].eq(self.page_m(d[1])), self.ks_m[3].eq(self.page_m(d[1]))]
            m.next = "VER_WAIT"
        with m.State("VER_WAIT"):  # both in: the keystreams of this and the next version
            with m.If(self.vgot == host[0] + host[1]):
                m.d.sync += [self.ks_v[0].eq(ver[0]), self.ks_v[2].eq(ver[0] + 1), self.ks_v[1].eq(ver[1]),
                             self.ks_v[3].eq(ver[1] + 1), self.ks_en.eq(Cat(host[0], host[1], host[0], host[1]))]
                m.next = "VER_GO"
        with m.State("VER_GO"):
            m.d.comb += ks.go.eq(1)
            m.next = "WAIT_DATA"
        with m.State("WAIT_DATA"):  # the pages, their keystreams and both blocks
            with m.If((self.rd_n == host[0] + host[1]) & ~ks.go & ks.done[0] & ks.done[1]
                      & (bk.bgot == 2 * Q)):
                for k in range(2):
                    m.d.comb += [macs[k].start.eq(host[k]),
                                 macs[k].data.eq(cr.mac_msg(self.page_m(d[k]), pg[k][:64], pg[k][64:64 + ct_bits]))]
                m.next = "VERIFY"
        with m.State("VERIFY"):
            with m.If((mac0.done | ~host[0]) & (mac1.done | ~host[1])):
                bad_pg = []
                for k in range(2):
                    tag = pg[k][64 + ct_bits:128 + ct_bits]
                    bad_pg.append(host[k] & ((pg[k][:64] != ver[k]) | (tag != macs[k].tag)))
                with m.If(bad_pg[0] | bad_pg[1]):
                    m.d.sync += [self.integrity_ok.eq(0), self.fatal.eq(Status.FATAL_INTEGRITY), self.halted.eq(1),
                                 self.status.eq(Status.FATAL_INTEGRITY)]
                    m.next = "WAIT_RESP"
                with m.Else():
                    m.d.sync += [self.pt[0].eq(pg[0][64:64 + ct_bits] ^ ks.stream(0)),
                                 self.pt[1].eq(pg[1][64:64 + ct_bits] ^ ks.stream(1)), self.i.eq(0)]
                    m.next = "TAKE"

    def take_and_flush(self):
        """Per page of the pair: take the key's item (from the page or the bin's block), then move
        the block's head into the page's first free slot while both last."""
        m, P, kb, kbits, sb = self.m, self.P, self.kb, self.kbits, self.sb
        bk, lc, e, i, d, host = self.bk, self.lc, self.e, self.i, self.d, self.host
        cur_pt = self.cur_pt
        with m.State("TAKE"):  # the item, from the page (host bin) or the bin's block
            di = Mux(i, d[1], d[0])
            hi = Mux(i, host[1], host[0])
            m.next = "FLUSH"
            with m.If(self.hit & (e["bin"] == di) & ~self.taken):
                found = Signal(P + 1)
                for k in range(P):
                    sk = self.slot(cur_pt, k)
                    m.d.comb += found[k + 1].eq(found[k] | ((sk[:8] != 0) & (sk[8:8 + 8 * kb] == self.key[:8 * kb])))
                    with m.If(hi & ~found[k] & (sk[:8] != 0) & (sk[8:8 + 8 * kb] == self.key[:8 * kb])):
                        m.d.sync += [self.tval.eq(sk[8 + 8 * kb:8 * sb]), self.taken.eq(1)]
                        self.set_pt(cur_pt & ~Const(((1 << (8 * sb)) - 1) << (8 * sb * k), self.ct_bits))
                with m.If(hi & found[P]):
                    lc.add(m, di, -1, 0)
                with m.Elif(bk.bhit):
                    self.block_take(di)
        with m.State("FLUSH"):  # the block's head into the page's first free slot, in order
            head = slot_fields(bk.cur(0), kbits, 8 * self.V)
            with m.If(Mux(i, host[1], host[0]) & head["valid"] & self.has_free):
                for k in range(P):
                    with m.If(self.first_free == k):
                        lo = 8 * sb * k
                        newslot = Cat(Const(1, 8), head["key"], Const(0, 8 * kb - kbits), head["val"])
                        self.set_pt(Cat(cur_pt[:lo], newslot, cur_pt[lo + 8 * sb:]))
                bk.remove(m, 0)
                lc.add(m, Mux(i, d[1], d[0]), 0, -1)
                m.d.sync += self.queued.eq(self.queued - 1)
            with m.Elif(self.in_init):  # the page is built: its block and word go back
                m.d.sync += [bk.blk_wb.eq(0b01), lc.lw_req.eq(1)]
                m.next = "P_KS"
            with m.Else():
                m.next = "NEXT_PAGE"
        with m.State("NEXT_PAGE"):
            with m.If(i == 0):
                m.d.sync += i.eq(1)
                m.next = "TAKE"
            with m.Else():
                m.next = "ENC"

    def reencrypt(self):
        """Encrypt both pages at version + 1, write the new versions, MAC the ciphertexts."""
        m, u, ks, cr = self.m, self.u, self.ks, self.cr
        vp, macs, d, host, ver, cte = u.versions_port, cr.macs, self.d, self.host, self.ver, self.cte
        mac0, mac1 = macs
        with m.State("ENC"):
            with m.If(ks.done[2] & ks.done[3]):
                m.d.sync += [cte[0].eq(self.pt[0] ^ ks.stream(2)), cte[1].eq(self.pt[1] ^ ks.stream(3))]
                m.next = "ENC_MAC"
        with m.State("ENC_MAC"):
            for k in range(2):
                m.d.comb += [macs[k].start.eq(host[k]),
                             macs[k].data.eq(cr.mac_msg(self.page_m(d[k]), ver[k] + 1, cte[k]))]
            m.d.comb += [vp.wr.eq(host[0]), vp.wr_page.eq(self.page_m(d[0])), vp.wr_data.eq(ver[0] + 1)]
            m.next = "ENC_VER"
        with m.State("ENC_VER"):
            m.d.comb += [vp.wr.eq(host[1]), vp.wr_page.eq(self.page_m(d[1])), vp.wr_data.eq(ver[1] + 1)]
            m.next = "ENC_TAG"
        with m.State("ENC_TAG"):
            with m.If((mac0.done | ~host[0]) & (mac1.done | ~host[1])):
                for k in range(2):
                    m.d.sync += self.out[k].eq(Cat((ver[k] + 1)[:64], cte[k], macs[k].tag))
                m.d.sync += self.built.eq(1)
                m.next = "APPLY"

    def apply(self):
        """Step 3: apply the op to the item taken (answer, keep it, or drop it)."""
        m, N, W, ix, hit, count = self.m, self.N, self.W, self.ix, self.hit, self.count
        with m.State("APPLY"):  # step 3: apply the op
            m.next = "WAIT_RESP"
            with m.If(self.bad):
                m.d.sync += self.status.eq(Status.BAD_COMMAND)
            with m.Elif(self.op == 0):
                with m.If(hit):
                    m.d.sync += [self.status.eq(Status.OK), self.rval.eq(self.tval), self.keep.eq(1),
                                 self.keep_v.eq(self.tval)]
                    m.next = "PLACE0"
                with m.Else():
                    m.d.sync += self.status.eq(Status.NOT_FOUND)
            with m.Elif(self.op == 1):
                with m.If(~hit & ((count >= N) | (self.fill >= W))):
                    m.d.sync += self.status.eq(Status.FULL)
                with m.Else():
                    m.d.sync += [self.status.eq(Status.OK), self.keep.eq(1), self.keep_v.eq(self.val)]
                    m.next = "PLACE0"
            with m.Else():
                with m.If(hit):
                    m.d.sync += ix.bkt[self.hit_e].eq(0)
                    m.d.sync += [self.status.eq(Status.OK), count.eq(count - 1)]
                with m.Else():
                    m.d.sync += self.status.eq(Status.NOT_FOUND)

    def place_item(self):
        """Place the kept item in the less loaded bin of the placement pair (fail closed on the
        HBM, queue or block bound), then index it."""
        m, cfg, W, K, Q, kbits = self.m, self.cfg, self.W, self.K, self.Q, self.kbits
        bk, lc, ix = self.bk, self.lc, self.ix
        hit, hit_e, n1, n2, dest = self.hit, self.hit_e, self.n1, self.n2, self.dest
        count, queued, hbm_count = self.count, self.queued, self.hbm_count
        with m.State("PLACE0"):
            with m.If(lc.lc_have[2] & lc.lc_have[3]):  # fetched long before (the window covers it)
                m.d.sync += self.l1.eq(lc.eff(2))
                m.next = "PLACE1"
        with m.State("PLACE1"):
            m.d.sync += dest.eq(Mux(self.l1 <= lc.eff(3), n1, n2))
            m.next = "PLACE2"
        with m.State("PLACE2"):
            used = hbm_count + queued
            over = Mux(dest < K, used + 1 > cfg.hbm_items,
                       (used + 1 > cfg.hbm_items) | (queued + 1 > cfg.queue_items))
            bfill = Mux(dest == n1, lc.fill(2), lc.fill(3))
            full = bfill >= Q
            with m.If(full & self.in_init):  # the item is dropped, the pass ends fatal (as the model)
                m.d.sync += [self.init_over.eq(1), ix.wb_req.eq(1), lc.lw_req.eq(1), bk.blk_wb.eq(bk.blk_on)]
                with m.If(hit):
                    m.d.sync += [ix.bkt[hit_e].eq(0), count.eq(count - 1)]
                m.next = "I_NEXT"
            with m.Elif((over & ~self.in_init) | full):  # fail closed: the fixed-size response carries no value
                m.d.sync += [self.fatal.eq(Status.FATAL_CAPACITY), self.halted.eq(1),
                             self.status.eq(Status.FATAL_CAPACITY), self.rval.eq(0)]
                m.next = "WAIT_RESP"
            with m.Else():  # append to the bin's block: the copy here if fetched, else one slot write
                item = Cat(Const(1, 1), self.key[:kbits], self.keep_v)
                bk.store(m, dest, bfill, item)
                lc.add(m, dest, 1, 1)
                with m.If(dest >= K):
                    m.d.sync += queued.eq(queued + 1)
                with m.Else():
                    m.d.sync += hbm_count.eq(hbm_count + 1)
                m.next = "IDX"
        with m.State("IDX"):
            new = Cat(Const(1, 1), self.key[:kbits], n1, n2, dest)
            with m.If(hit):
                m.d.sync += ix.bkt[hit_e].eq(new)
            with m.Else():
                m.d.sync += count.eq(count + 1)
                with m.If(self.free_e == W):  # only reachable during initialisation (the model raises)
                    m.d.sync += [self.halted.eq(1), self.fatal.eq(Status.FATAL_CAPACITY)]
                with m.Else():
                    m.d.sync += ix.bkt[self.free_e].eq(new)
            with m.If(self.init_item):
                # write the bucket, the loads and a fetched block back (next cycle, once updated)
                m.d.sync += [ix.wb_req.eq(1), lc.lw_req.eq(1), bk.blk_wb.eq(bk.blk_on)]
                m.next = "I_NEXT"
            with m.Else():
                m.next = "WAIT_RESP"

    def respond(self):
        """Write the bucket, the bin words and both blocks back, answer at ``respond``."""
        m, u, s = self.m, self.u, self.s
        with m.State("WAIT_RESP"):
            m.d.sync += self.responded.eq(1)
            with m.If(~self.responded):  # every command writes its bucket, loads and blocks back, changed or not
                m.d.sync += [self.ix.wb_req.eq(1), self.lc.lw_req.eq(1), self.bk.blk_wb.eq(self.bk.blk_on)]
            with m.If(self.t >= s.respond):  # '>' only if late (flagged), never a hang
                m.d.comb += [u.resp.valid.eq(1), u.resp.payload.eq(Cat(self.status, self.rval))]
                m.d.sync += self.active.eq(0)
                m.next = "IDLE"
