"""The attention unit: ``Opcode.ATTENTION`` on scratchpad tensors, through one attention engine.

One :class:`AttentionUnit` runs every ATTENTION instruction of a program. Each Attention op of
one batch element is a :class:`celosia.ir.attention.AttentionRecord` (heads, sequence lengths,
causal flag and the :class:`~celosia.ir.attention.OperandLayout` of q, k, v and the output); the
instruction's ``p_addr`` selects the record, whose fields live in small constant tables. The
unit reads the operands in place (heads are address offsets: packed ``(T, H·E)`` or split
``(H, T, E)`` layouts), drives one :class:`celosia.hw.attention.AttentionEngine` with exactly the
beats :func:`celosia.hw.attention.schedule` lists, and writes the output back in place, so
every element is bit-exact with :func:`celosia.ir.attention.attention_int`.

Element ``e`` of head ``h`` at position ``t`` of an operand laid out as ``(addr, stride,
head_rows, head_cols)`` is lane ``c mod lanes`` of word ``addr + (t + h·head_rows)·stride +
c div lanes``, ``c = h·head_cols + e``. A *chunk* is the run of one segment (the ``E`` or ``F``
elements of one head row) that lies in one word; a word may hold several heads (``E < lanes``),
and a segment may span several words (``E > lanes``).

Datapath::

    record tables      fields of record p_addr, registered at start
    cfg                one beat per query block (n_keys, causal, pos0, pos_mask = P - 1)
    q  <- rd0          walker (block, head in group, position, chunk) -> 4-entry word FIFO
                       -> serializer (one element a cycle) -> output register
    k, v <- rd1        the same per key; k has priority on the shared port (k and v are never
                       consumed in the same cycle: the MAC array runs QK or SV)
    o  -> wr           walker over the output chunks; each chunk is written with lane_en set
                       to its own lanes (and, in the tensor's last word of a row, the lanes past
                       its width, as zero); rows past the last query are dropped

Blocks are ``(kv group g, first position p0)`` for ``g < Hkv`` and ``p0 = 0, P, 2P, … < Tq``
with ``P = block·Hkv/H`` positions per block; block row ``i`` is head ``g·H/Hkv + i div P`` at
position ``p0 + i mod P``; with ``causal`` a block streams ``min(Tk, p0 + P)`` keys.

**Timing.** Every stream runs ahead of the engine from the start of the instruction (the word
FIFOs refill at one word a cycle, while the engine takes at most one element a cycle per port),
and ``o`` is never back-pressured, so the engine runs as it does with all streams at full rate.
At a block boundary where the engine's pass order would then depend on its latencies (a block
of few keys), the unit holds the next ``cfg`` beat until the engine has taken the last ``v``
beat so far (a *gated* boundary). With the pass order fixed, the run is a max-plus function of
the record, the engine's parameters and four engine latencies
(:mod:`celosia.ir.attention_timing`); ``busy`` stays high for exactly
:func:`celosia.ir.attention.attention_unit_cycles` cycles, that function at the latencies'
upper bounds, which the engine meets (the last output write, or its slot for a padding row,
comes no later; :attr:`AttentionUnit.overrun` records the contrary).

**Measured** (before the engine's second SLN bank and its skipping of padding rows; vit-digits'
unit: 8 lanes of 16 bits, E = F = 8, engine 8 lanes × 1 row, two
records): yosys ``synth_ecp5`` 5304 LUT4, 8304 FF, 34 MULT18X18D, 6 DP16KD, 328 TRELLIS_DPR16X4,
of which the engine alone is 4035 LUT4, 7717 FF, all the DSPs and block RAMs and 232 DPR16X4
(the unit's own: ~1270 LUT4, ~590 FF, 96 DPR16X4 for the three word FIFOs); alone on the
ULX3S-85F (``celosia.boards.unit_build``, nextpnr seed 1, harness included): 108.3 MHz
post-route, 9429 LUT, 7275 FF, 37 DSP, 6 block RAMs. Cycles: a 17 × 17, 4-head vit-digits
layer took 5659 cycles at key tile 16 (5592 at the engine's own latencies: the bound costs
1.2 %); with those changes 5110 cycles, and 3563 at the model's key tile (32).
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from celosia.errors import CelosiaError, HardwareGenerationError
from celosia.hw.attention import AttentionEngine
from celosia.hw.spad import JobSignature, ReadPortSignature, WritePortSignature
from celosia.ir.attention import AttentionConfig, AttentionRecord, attention_unit_cycles
from celosia.ir.attention_timing import MAX_SCORE_BITS

__all__ = ["AttentionUnit", "FIFO_DEPTH"]

#: Words each input stream's FIFO holds (a read returns a cycle after it is issued and is
#: registered into the FIFO: three entries keep one chunk a cycle flowing, four for margin).
FIFO_DEPTH = 4

#: Fields of the per-operand table (``X`` is q, k, v or o).
_OPERAND_FIELDS = ("base", "stride", "hw", "hl", "gw", "gl", "bstep")


def _fail(msg: str, hint: str):
    raise HardwareGenerationError(f"attention unit: {msg}", hint=hint)


def _table(m: Module, load, sel, name: str, values: list[int], shape) -> Signal:
    """A register holding ``values[sel]``, loaded when ``load`` is high (a constant if all agree)."""
    sig = Signal(shape, name=f"rc_{name}")
    if len(set(values)) == 1:
        m.d.comb += sig.eq(values[0])
    else:
        with m.If(load):
            m.d.sync += sig.eq(Array(Const(v, shape) for v in values)[sel])
    return sig


class _Blocks(wiring.Component):
    """Walks the query blocks of a record: ``for g < groups: for p0 in 0, P, 2P, … < tq``.

    ``start`` loads the walk (the count inputs must hold while it runs); every cycle with
    ``step`` moves to the next block. ``n_keys`` is the current block's key count,
    ``last_p`` marks the last block of a group, ``last`` the last block, ``done`` the end.
    """

    def __init__(self, len_bits: int, head_bits: int):
        super().__init__({
            "start": In(1), "step": In(1),
            "groups": In(head_bits), "P": In(len_bits + 1), "tq": In(len_bits + 1), "tk": In(len_bits + 1),
            "causal": In(1),
            "g": Out(head_bits), "p0": Out(len_bits + 1), "n_keys": Out(len_bits + 1),
            "last_p": Out(1), "last": Out(1), "done": Out(1, init=1),
        })

    def elaborate(self, platform):
        m = Module()
        nxt = Signal.like(self.p0, name="p_next")
        m.d.comb += [
            nxt.eq(self.p0 + self.P),
            self.last_p.eq(nxt >= self.tq),
            self.last.eq(self.last_p & (self.g == self.groups - 1)),
            self.n_keys.eq(Mux(self.causal & (nxt < self.tk), nxt, self.tk)),
        ]
        with m.If(self.start):
            m.d.sync += [self.g.eq(0), self.p0.eq(0), self.done.eq(0)]
        with m.Elif(self.step & ~self.done):
            with m.If(self.last_p):
                m.d.sync += [self.p0.eq(0), self.g.eq(self.g + 1)]
                with m.If(self.last):
                    m.d.sync += self.done.eq(1)
            with m.Else():
                m.d.sync += self.p0.eq(nxt)
        return m


class _Walker(wiring.Component):
    """The chunks of one operand in stream order, one per ``next``.

    Rows mode (q, out): per block, ``for a < outer (head in group): for b < P (position):`` the
    segment of head ``g·outer + a`` at position ``p0 + b``; ``zero`` marks positions at or past
    ``tq`` (padding rows). With ``trim`` (out) the last head of a block stops at position
    ``tq − 1``: the engine outputs no rows after the block's last query. Keys mode (k, v): per
    block, ``for b < n_keys:`` the segment of head ``g`` at position ``b``. A segment is ``width`` elements from lane ``hl`` of the head's first
    word, split into chunks at word boundaries: ``addr``, first ``lane``, ``n`` elements;
    ``seg_last`` marks a segment's last chunk, ``final`` the walk's last chunk.

    Operand constants (held while the walk runs): ``base``, ``stride``; one head step
    ``hw`` words + ``hl`` lanes, one group step ``gw`` words + ``gl`` lanes and (rows mode) one
    block step ``bstep`` words (``P`` rows).
    """

    def __init__(self, lanes: int, addr_bits: int, width: int, len_bits: int, head_bits: int, keys: bool,
                 trim: bool = False):
        self.lanes, self.width, self.keys, self.trim = lanes, width, keys, trim
        lane_shape = range(max(lanes, 2))
        super().__init__({
            "start": In(1), "next": In(1),
            "base": In(addr_bits), "stride": In(addr_bits), "hw": In(addr_bits), "hl": In(lane_shape),
            "gw": In(addr_bits), "gl": In(lane_shape), "bstep": In(addr_bits), "outer": In(head_bits),
            "groups": In(head_bits), "P": In(len_bits + 1), "tq": In(len_bits + 1), "tk": In(len_bits + 1),
            "causal": In(1),
            "valid": Out(1), "addr": Out(addr_bits), "lane": Out(lane_shape), "n": Out(range(lanes + 1)),
            "zero": Out(1), "seg_last": Out(1), "head_last": Out(1), "final": Out(1),
            "g": Out(head_bits), "p0": Out(len_bits + 1), "n_keys": Out(len_bits + 1),
        })
        self._len_bits, self._head_bits = len_bits, head_bits

    def elaborate(self, platform):
        m = Module()
        L, W = self.lanes, self.width
        m.submodules.blocks = blk = _Blocks(self._len_bits, self._head_bits)
        m.d.comb += [blk.start.eq(self.start), blk.groups.eq(self.groups), blk.P.eq(self.P), blk.tq.eq(self.tq),
                     blk.tk.eq(self.tk), blk.causal.eq(self.causal),
                     self.g.eq(blk.g), self.p0.eq(blk.p0), self.n_keys.eq(blk.n_keys)]
        ab = len(self.base)
        gw, gl = Signal(ab), Signal.like(self.lane)        # group base: word, lane
        hw, hl = Signal(ab), Signal.like(self.lane)        # head base
        boff = Signal(ab)                                  # p0·stride (rows mode)
        rptr = Signal(ab)                                  # first word of the segment
        cw = Signal(range(W + 1))                          # word of the chunk in the segment
        cl = Signal.like(self.lane)                        # first lane of the chunk
        rem = Signal(range(W + 1))                         # elements of the segment left
        a = Signal(self._head_bits)
        b = Signal(self._len_bits + 1)

        def carry(w, lane, dw, dl):
            """``(w, lane) + (dw, dl)`` with the lane carried into the word."""
            s = Signal(range(2 * L + 1), name="lane_sum")
            m.d.comb += s.eq(lane + dl)
            over = s >= L
            return (w + dw + over)[:ab], Mux(over, s - L, s)[:len(cl)]

        room = Signal(range(L + 1))
        m.d.comb += [
            room.eq(L - cl),
            self.n.eq(Mux(rem < room, rem, room)),
            self.seg_last.eq(rem <= room),
            self.addr.eq(rptr + cw),
            self.lane.eq(cl),
            self.valid.eq(~blk.done),
        ]
        inner = blk.n_keys if self.keys else self.P
        outer_last = Const(1) if self.keys else (a == self.outer - 1)
        inner_last = Signal()
        m.d.comb += inner_last.eq(b == inner - 1)
        if self.trim:  # the last head of a block ends at its last query (the engine skips the padding rows)
            with m.If(outer_last & (blk.p0 + b + 1 >= self.tq)):
                m.d.comb += inner_last.eq(1)
        m.d.comb += [
            self.zero.eq(0 if self.keys else (blk.p0 + b >= self.tq)),
            self.head_last.eq(outer_last & (blk.g == self.groups - 1)),
            self.final.eq(blk.last & outer_last & inner_last & self.seg_last),
        ]
        with m.If(self.start):
            m.d.sync += [gw.eq(self.base), gl.eq(0), hw.eq(self.base), hl.eq(0), boff.eq(0), rptr.eq(self.base),
                         cw.eq(0), cl.eq(0), rem.eq(W), a.eq(0), b.eq(0)]
        with m.Elif(self.next & self.valid):
            with m.If(self.seg_last):
                m.d.sync += [rem.eq(W), cw.eq(0)]
                with m.If(inner_last):
                    m.d.sync += b.eq(0)
                    with m.If(outer_last):
                        m.d.sync += a.eq(0)
                        m.d.comb += blk.step.eq(1)
                        with m.If(blk.last_p):             # next group
                            nw, nl = carry(gw, gl, self.gw, self.gl)
                            m.d.sync += [gw.eq(nw), gl.eq(nl), hw.eq(nw), hl.eq(nl), boff.eq(0), rptr.eq(nw),
                                         cl.eq(nl)]
                        with m.Else():                     # next block of positions
                            nb = 0 if self.keys else (boff + self.bstep)[:ab]
                            m.d.sync += [hw.eq(gw), hl.eq(gl), boff.eq(nb), rptr.eq(gw + nb), cl.eq(gl)]
                    with m.Else():                         # next head of the group
                        nw, nl = carry(hw, hl, self.hw, self.hl)
                        m.d.sync += [a.eq(a + 1), hw.eq(nw), hl.eq(nl), rptr.eq(nw + boff), cl.eq(nl)]
                with m.Else():                             # next position
                    m.d.sync += [b.eq(b + 1), rptr.eq(rptr + self.stride), cl.eq(hl)]
            with m.Else():                                 # next word of the segment
                m.d.sync += [cw.eq(cw + 1), cl.eq(0), rem.eq(rem - self.n)]
        return m


class _Feed(wiring.Component):
    """Reads a walker's chunks into a small word FIFO and serializes them into an element stream.

    ``req`` asks for the read port (the chunk is valid and the FIFO has room); the chunk is read
    in a cycle with ``grant`` (a padding chunk needs no read). The element stream ``out`` has a
    registered ``valid``/``payload``; its ``ready`` may be anything.
    """

    def __init__(self, lanes: int, act_bits: int, addr_bits: int, out_bits: int):
        self.lanes, self.act_bits = lanes, act_bits
        lane_shape = range(max(lanes, 2))
        super().__init__({
            "c_valid": In(1), "c_addr": In(addr_bits), "c_lane": In(lane_shape), "c_n": In(range(lanes + 1)),
            "c_zero": In(1), "c_next": Out(1),
            "req": Out(1), "grant": In(1),
            "rd_addr": Out(addr_bits), "rd_en": Out(1), "rd_data": In(lanes * act_bits),
            "out": Out(stream.Signature(signed(out_bits))),
            "start": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        L, A, D = self.lanes, self.act_bits, FIFO_DEPTH
        lanes_of = data.ArrayLayout(signed(A), L)
        count = Signal(range(D + 1))
        inflight = Signal()
        p_lane, p_n, p_zero = Signal.like(self.c_lane), Signal.like(self.c_n), Signal()
        m.submodules.words = words = Memory(shape=unsigned(L * A), depth=D, init=[])  # distributed RAM
        w_port, r_port = words.write_port(), words.read_port(domain="comb")
        f_lane = Array(Signal.like(self.c_lane, name=f"fl{i}") for i in range(D))
        f_n = Array(Signal.like(self.c_n, name=f"fn{i}") for i in range(D))
        wp, rp = Signal(range(D)), Signal(range(D))
        k = Signal(range(L + 1))                          # element of the head chunk

        room = (count + inflight) < D
        m.d.comb += self.req.eq(self.c_valid & room & ~self.c_zero)
        issue = self.c_valid & room & (self.grant | self.c_zero)
        m.d.comb += [self.c_next.eq(issue), self.rd_addr.eq(self.c_addr), self.rd_en.eq(issue & ~self.c_zero)]
        m.d.sync += inflight.eq(issue)
        with m.If(issue):
            m.d.sync += [p_lane.eq(self.c_lane), p_n.eq(self.c_n), p_zero.eq(self.c_zero)]
        push = inflight
        m.d.comb += [w_port.addr.eq(wp), w_port.data.eq(Mux(p_zero, 0, self.rd_data)), w_port.en.eq(push),
                     r_port.addr.eq(rp)]
        with m.If(push):
            m.d.sync += [f_lane[wp].eq(p_lane), f_n[wp].eq(p_n), wp.eq(wp + 1)]

        # serializer -> output register
        head = data.View(lanes_of, r_port.data)
        elem = Signal(signed(A))
        m.d.comb += elem.eq(Array(head[i] for i in range(L))[(f_lane[rp] + k)[:max(1, (L - 1).bit_length())]]
                            if L > 1 else head[0])
        load = ~self.out.valid | self.out.ready
        take = load & (count != 0)
        pop = Signal()
        with m.If(take):
            m.d.sync += [self.out.valid.eq(1), self.out.payload.eq(elem)]
            with m.If(k == f_n[rp] - 1):
                m.d.sync += [k.eq(0), rp.eq(rp + 1)]
                m.d.comb += pop.eq(1)
            with m.Else():
                m.d.sync += k.eq(k + 1)
        with m.Elif(load):
            m.d.sync += self.out.valid.eq(0)
        m.d.sync += count.eq(count + push - pop)
        with m.If(self.start):
            m.d.sync += [count.eq(0), wp.eq(0), rp.eq(0), k.eq(0), self.out.valid.eq(0), inflight.eq(0)]
        return m


class AttentionUnit(wiring.Component):
    """``Opcode.ATTENTION`` on the scratchpad for every attention record of a program.

    Parameters
    ----------
    lanes, act_bits : int
        Scratchpad word: ``lanes`` signed ``act_bits``-bit codes.
    addr_bits : int
        Scratchpad address width.
    ins_layout : Layout
        The controller's decoded instruction layout (:data:`celosia.hw.spad.InstructionLayout`).
    records : sequence of celosia.ir.attention.AttentionRecord
        The attention ops (one per batch element), indexed by the instruction's ``p_addr``. The
        instruction's other fields are not read: the record holds every address.
    config : celosia.ir.attention.AttentionConfig
        The one engine every record runs on (head sizes, lanes × rows, tile, formats, scale,
        ``max_len``).

    Attributes
    ----------
    job : In(JobSignature)
    rd0, rd1 : Out(ReadPortSignature)
        rd0 reads q, rd1 reads k and v.
    wr : Out(WritePortSignature)
        With ``lane_en``: each write touches only its chunk's lanes.
    engine : AttentionEngine

    Raises
    ------
    HardwareGenerationError
        No records, formats wider than ``act_bits``, a record the engine cannot run (head sizes,
        sequence lengths above ``max_len``), an address or count that does not fit.
    celosia.errors.GraphError
        A record whose heads are not a multiple of its kv heads, or whose group does not divide
        the engine's block.
    """

    def __init__(self, lanes: int, act_bits: int, addr_bits: int, ins_layout, records, config: AttentionConfig):
        if isinstance(lanes, bool) or not isinstance(lanes, int) or lanes < 1:
            _fail(f"lanes={lanes!r} must be an integer >= 1", "use the scratchpad's lanes")
        if not isinstance(config, AttentionConfig):
            _fail(f"config is a {type(config).__name__}, not an AttentionConfig", "pass program.attention")
        self.lanes, self.act_bits, self.addr_bits = lanes, act_bits, addr_bits
        self.config = c = config
        for name in ("q_fmt", "k_fmt", "v_fmt", "out_fmt"):
            if getattr(c, name).bits > act_bits:
                _fail(f"{name}={getattr(c, name)} is wider than act_bits={act_bits}", "use narrower formats")
        if c.score_fmt.bits > MAX_SCORE_BITS:
            _fail(f"score_fmt={c.score_fmt} is wider than {MAX_SCORE_BITS} bits, beyond the timing contract's "
                  "latency bounds", f"use a score format of at most {MAX_SCORE_BITS} bits")
        self.records = tuple(records)
        if not self.records:
            _fail("no attention records", "build the unit only for programs with ATTENTION instructions")
        if len(self.records) > 1 << 12:
            _fail(f"{len(self.records)} records do not fit the 12-bit p_addr field", "split the program")
        for i, r in enumerate(self.records):
            if not isinstance(r, AttentionRecord):
                _fail(f"record {i} is a {type(r).__name__}, not an AttentionRecord",
                      "pass celosia.ir.attention.AttentionRecord per attention op and batch element")
        self.engine = AttentionEngine(c.e, c.f, lanes=c.lanes, rows=c.rows, tile=c.tile, q_fmt=c.q_fmt, k_fmt=c.k_fmt,
                                      v_fmt=c.v_fmt, score_fmt=c.score_fmt, out_fmt=c.out_fmt, scale=c.scale,
                                      max_len=c.max_len)
        try:
            for r in self.records:
                self.engine.check_job(r.heads, r.kv_heads, c.e, c.f, r.seq_q, r.seq_k)
            self._tables = self._derive()
        except CelosiaError:
            self.engine._MustUse__silence = True  # never elaborated: no unused-elaboratable warning
            raise
        self._budgets = [attention_unit_cycles(r, c) for r in self.records]
        #: Sticky: an instruction's last write came after its budget (the timing contract broke).
        self.overrun = Signal()
        word = lanes * act_bits
        super().__init__({
            "job": In(JobSignature(ins_layout)),
            "rd0": Out(ReadPortSignature(addr_bits, word)),
            "rd1": Out(ReadPortSignature(addr_bits, word)),
            "wr": Out(WritePortSignature(addr_bits, word, lanes)),
        })

    # ---- timing (what the performance model adds up) --------------------------------------------
    def cycles(self, ins) -> int:
        """Cycles ``busy`` stays high for instruction ``ins`` (start pulse excluded)."""
        return attention_unit_cycles(self.records[ins.p_addr], self.config)

    # ---- record tables ---------------------------------------------------------------------------
    def _derive(self) -> dict[str, tuple[object, list[int]]]:
        """Per-record constants: ``name -> (shape, values)``."""
        L, c, ab = self.lanes, self.config, self.addr_bits
        block = self.engine.block
        lb = c.max_len.bit_length()
        t = {n: [] for n in ("groups", "outer", "P", "tq", "tk", "causal", "pad", "pad_split")}
        for op in "qkvo":
            for f in _OPERAND_FIELDS:
                t[f"{op}_{f}"] = []
        for i, r in enumerate(self.records):
            who = f"record {i}" + (f" ('{r.name}')" if r.name else "")
            G = r.heads // r.kv_heads
            P = block // G
            t["groups"].append(r.kv_heads)
            t["outer"].append(G)
            t["P"].append(P)
            t["tq"].append(r.seq_q)
            t["tk"].append(r.seq_k)
            t["causal"].append(int(bool(r.causal)))
            for op, lay, width, per in (("q", r.q, c.e, G), ("k", r.k, c.e, 1), ("v", r.v, c.f, 1),
                                        ("o", r.out, c.f, G)):
                if lay.head_rows and lay.head_cols:
                    _fail(f"{who}: operand {op} steps heads by both rows and columns", "use a packed or a split layout")
                rows = lay.head_rows * lay.stride
                heads, seq = (r.heads, r.seq_q) if op in "qo" else (r.kv_heads, r.seq_k)
                last = lay.addr + (seq - 1 + (heads - 1) * lay.head_rows) * lay.stride \
                    + ((heads - 1) * lay.head_cols + width - 1) // L
                if last >= 1 << ab or lay.addr < 0 or lay.stride < 0:
                    _fail(f"{who}: operand {op} reaches word {last}, past the {ab}-bit scratchpad address",
                          "use a larger scratchpad address")
                vals = {"base": lay.addr, "stride": lay.stride,
                        "hw": rows + lay.head_cols // L, "hl": lay.head_cols % L,
                        "gw": per * rows + (per * lay.head_cols) // L, "gl": (per * lay.head_cols) % L,
                        "bstep": P * lay.stride if op in "qo" else 0}
                for f, v in vals.items():
                    t[f"{op}_{f}"].append(v % (1 << ab))
            # the output tensor's width: its last column is the last head's last element
            width_out = (r.heads - 1) * r.out.head_cols + c.f if r.out.head_cols else c.f
            spare = width_out % L
            t["pad"].append(((1 << L) - 1) & ~((1 << spare) - 1) if spare else 0)
            t["pad_split"].append(int(not r.out.head_cols))
        hb = max(r.kv_heads for r in self.records).bit_length() + max(
            r.heads // r.kv_heads for r in self.records).bit_length()
        shapes = {"groups": unsigned(hb), "outer": unsigned(hb), "P": unsigned(lb + 1), "tq": unsigned(lb + 1),
                  "tk": unsigned(lb + 1), "causal": unsigned(1), "pad": unsigned(L), "pad_split": unsigned(1)}
        self._head_bits, self._len_bits = hb, lb
        out = {}
        for name, vals in t.items():
            shape = shapes.get(name)
            if shape is None:
                shape = unsigned(max(1, (L - 1).bit_length())) if name.endswith(("_hl", "_gl")) else unsigned(ab)
            out[name] = (shape, vals)
        return out

    # ---- hardware --------------------------------------------------------------------------------
    def elaborate(self, platform):
        m = Module()
        L, A, ab = self.lanes, self.act_bits, self.addr_bits
        c, eng = self.config, self.engine
        m.submodules.engine = eng
        job = self.job
        busy = Signal()
        go = Signal()                                     # the record's constants are loaded
        m.d.comb += job.busy.eq(busy)
        m.d.sync += go.eq(job.start)
        with m.If(job.start):
            m.d.sync += busy.eq(1)
        rc = {name: _table(m, job.start, job.ins.p_addr, name, vals, shape)
              for name, (shape, vals) in self._tables.items()}

        lb, hb = self._len_bits, self._head_bits

        def walker(name, op, width, keys, trim=False):
            w = _Walker(L, ab, width, lb, hb, keys, trim)
            m.submodules[f"walk_{name}"] = w
            m.d.comb += [w.start.eq(go), w.groups.eq(rc["groups"]), w.outer.eq(rc["outer"]), w.P.eq(rc["P"]),
                         w.tq.eq(rc["tq"]), w.tk.eq(rc["tk"]), w.causal.eq(rc["causal"])]
            for f in _OPERAND_FIELDS:
                m.d.comb += getattr(w, f).eq(rc[f"{op}_{f}"])
            return w

        # ---- cfg: one beat per block ---------------------------------------------------------------
        m.submodules.cfg_blocks = cb = _Blocks(lb, hb)
        m.d.comb += [cb.start.eq(go), cb.groups.eq(rc["groups"]), cb.P.eq(rc["P"]), cb.tq.eq(rc["tq"]),
                     cb.tk.eq(rc["tk"]), cb.causal.eq(rc["causal"])]
        cfg = eng.cfg
        # a gated boundary holds the next block's cfg until the engine has taken every v beat of
        # the blocks accepted so far (celosia.ir.attention_timing: the pass order is then fixed)
        m.submodules.v_blocks = vb = _Blocks(lb, hb)
        m.d.comb += [vb.start.eq(go), vb.groups.eq(rc["groups"]), vb.P.eq(rc["P"]), vb.tq.eq(rc["tq"]),
                     vb.tk.eq(rc["tk"]), vb.causal.eq(rc["causal"])]
        v_beat = Signal(lb + (c.f - 1).bit_length() + 1)
        v_done = Signal()
        with m.If(eng.v.valid & eng.v.ready):
            with m.If(v_beat == (vb.n_keys << (c.f - 1).bit_length()) - 1):
                m.d.sync += v_beat.eq(0)
                m.d.comb += [v_done.eq(1), vb.step.eq(1)]
            with m.Else():
                m.d.sync += v_beat.eq(v_beat + 1)
        pending = Signal(range(8))                        # blocks accepted whose v is not all taken
        natural_last = Signal()                           # the last accepted block ends naturally
        fire_cfg = cfg.valid & cfg.ready
        m.d.sync += pending.eq(pending + fire_cfg - v_done)
        n = cb.n_keys
        er = c.e * c.rows
        natural = ((n << (er.bit_length() - 1)) + ((n + c.tile - 1) >> (c.tile.bit_length() - 1))
                   > eng.block * c.e)
        with m.If(fire_cfg):
            m.d.sync += natural_last.eq(natural)
        with m.If(go):
            m.d.sync += [pending.eq(0), natural_last.eq(0), v_beat.eq(0)]
        m.d.comb += [cfg.valid.eq(busy & ~go & ~cb.done & (natural_last | (pending == 0))),
                     cfg.payload.n_keys.eq(cb.n_keys), cfg.payload.causal.eq(rc["causal"]),
                     cfg.payload.pos0.eq(cb.p0), cfg.payload.pos_mask.eq(rc["P"] - 1), cb.step.eq(fire_cfg)]
        live = Signal.like(rc["tq"], name="live_positions")   # query positions in the block, at most P
        m.d.comb += [live.eq(Mux(rc["tq"] - cb.p0 >= rc["P"], rc["P"], rc["tq"] - cb.p0)),
                     cfg.payload.n_rows.eq(eng.block - rc["P"] + live)]

        # ---- q, k, v: walkers -> word FIFOs -> element streams ---------------------------------------
        feeds = {}
        for name, width, keys, bits in (("q", c.e, False, c.q_fmt.bits), ("k", c.e, True, c.k_fmt.bits),
                                        ("v", c.f, True, c.v_fmt.bits)):
            w = walker(name, name, width, keys)
            f = _Feed(L, A, ab, bits)
            m.submodules[f"feed_{name}"] = f
            m.d.comb += [f.start.eq(go), f.c_valid.eq(w.valid & ~go), f.c_addr.eq(w.addr), f.c_lane.eq(w.lane),
                         f.c_n.eq(w.n), f.c_zero.eq(w.zero), w.next.eq(f.c_next)]
            feeds[name] = f
        fq, fk, fv = feeds["q"], feeds["k"], feeds["v"]
        m.d.comb += [
            fq.grant.eq(1), self.rd0.addr.eq(fq.rd_addr), self.rd0.en.eq(fq.rd_en), fq.rd_data.eq(self.rd0.data),
            fk.grant.eq(1), fv.grant.eq(~fk.req),
            self.rd1.addr.eq(Mux(fk.req, fk.rd_addr, fv.rd_addr)), self.rd1.en.eq(fk.rd_en | fv.rd_en),
            fk.rd_data.eq(self.rd1.data), fv.rd_data.eq(self.rd1.data),
        ]
        wiring.connect(m, fq.out, eng.q)
        m.d.comb += [eng.k.valid.eq(fk.out.valid), eng.k.payload.data.eq(fk.out.payload), eng.k.payload.keep.eq(1),
                     fk.out.ready.eq(eng.k.ready)]
        wiring.connect(m, fv.out, eng.v)

        # ---- o: collect the output chunks and write them back ------------------------------------------
        ow = walker("o", "o", c.f, False, trim=True)
        m.d.comb += eng.o.ready.eq(1)
        k = Signal(range(L + 1))
        wbuf = Signal(data.ArrayLayout(signed(A), L))
        fire = eng.o.valid & ~go
        lane = (ow.lane + k)[:max(1, (L - 1).bit_length())] if L > 1 else 0
        wr_en, wr_addr, wr_mask, wr_pad = Signal(), Signal(ab), Signal(L), Signal(L)
        done = Signal()
        m.d.sync += [wr_en.eq(0), done.eq(0)]
        chunk_end = k == ow.n - 1
        m.d.comb += ow.next.eq(fire & chunk_end)
        with m.If(fire):
            m.d.sync += wbuf[lane].eq(eng.o.payload)
            with m.If(chunk_end):
                mask = ((Const(1, L + 1) << ow.n) - 1)[:L] << ow.lane
                pad = Mux(ow.seg_last & (rc["pad_split"] | ow.head_last), rc["pad"], 0)
                m.d.sync += [k.eq(0), wr_en.eq(~ow.zero), wr_addr.eq(ow.addr), wr_mask.eq((mask | pad)[:L]),
                             wr_pad.eq(pad), done.eq(ow.final)]
            with m.Else():
                m.d.sync += k.eq(k + 1)
        with m.If(go):
            m.d.sync += k.eq(0)
        m.d.comb += [self.wr.en.eq(wr_en), self.wr.addr.eq(wr_addr), self.wr.lane_en.eq(wr_mask),
                     self.wr.data.eq(Cat(*(Mux(wr_pad[i], 0, wbuf[i]) for i in range(L))))]
        # busy falls on the cycle after the budget (attention_unit_cycles) or the last write's
        # slot, whichever is later; the engine finishing late is an overrun
        left = Signal(len(Const(max(self._budgets))))
        finished = Signal()
        with m.If(job.start):
            m.d.sync += [left.eq(Array(Const(b, len(left)) for b in self._budgets)[job.ins.p_addr]), finished.eq(0)]
        with m.Elif(left != 0):
            m.d.sync += left.eq(left - 1)
        with m.If(done):
            m.d.sync += finished.eq(1)
            with m.If(left == 0):
                m.d.sync += self.overrun.eq(1)
        with m.If(busy & (done | finished) & (left <= 1)):
            m.d.sync += busy.eq(0)
        return m
