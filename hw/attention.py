"""The 1-pass attention engine: FuseMax-style cascade with the 1D work hidden under the MACs.

:class:`AttentionEngine` computes :func:`celosia.ir.attention.attention_int` bit for bit for one
*block* of ``block = lanes·rows`` query rows at a time (for grouped-query attention: the query
heads of one KV group × consecutive positions), streaming the block's keys and values once.

Dataflow (one MAC per lane and cycle; ``x`` counts key tiles over all blocks)::

    MAC array:  QK(0) QK(1) SV(0) QK(2) SV(1) ... QK(x+1) SV(x) ...
    QK(x):   per key j, E·rows cycles: k_j[e] is broadcast (and held for the rows of a lane),
             lane l accumulates q·k_j for each of its rows
    scores:  the block's finished dot products of a key are shifted out one per cycle:
             ×scale constant, round, saturate → tile score buffer (2 banks) and tile max
    1D(x):   during SV(x-1) and QK(x+1): per row m_new, PRM, SLN_j (one ExpNeg, one input
             per cycle), Σ SLN_j → SLN buffer (2 banks: SV(x-1) reads the other one)
    SV(x):   per key j, F·rows cycles: v_j[f] is broadcast, each row accumulates SLN_j·v_j[f]
             into its tile accumulator (a per-lane rows·F-word memory, read-modify-write)
    rescale(x): after SV(x): RNV[i][f] ← (PRM_i·RNV[i][f] >> Fe) + acc[i][f] and the same
             for RD, on one shared multiplier (n_rows·(F+1) cycles: padding rows after the
             block's last query are skipped here, in 1D and in the output)
    output:  after the block's last rescale: one Reciprocal per row, then y = RNV·r rounded
             (n_rows·F beats), overlapped with the next block (RNV/RD are double-banked)

Structure: :meth:`AttentionEngine.elaborate` only composes the stages and wires their
interlocks; each stage is a ``wiring.Component`` with its own signature —
:class:`~celosia.hw.attention_mac.QBuffer`, :class:`~celosia.hw.attention_mac.Sequencer` (with
its :class:`~celosia.hw.attention_mac.KVFeed`), :class:`~celosia.hw.attention_mac.TileDescriptors`,
:class:`~celosia.hw.attention_mac.MacLanes`, :class:`~celosia.hw.attention_mac.ScoreAccumulators`,
:class:`~celosia.hw.attention_mac.NumeratorAccumulators` (in :mod:`celosia.hw.attention_mac`),
:class:`~celosia.hw.attention_softmax.ScorePath`, :class:`~celosia.hw.attention_softmax.OnlineSoftmax`,
:class:`~celosia.hw.attention_softmax.Rescale` and :class:`~celosia.hw.attention_softmax.OutputStage`
(in :mod:`celosia.hw.attention_softmax`); shared sizes and signatures are in
:mod:`celosia.hw.attention_common`. Every buffer's owner keeps its occupancy flags (flags, not
timing assumptions), so every stream may stall at any time.

External port contract
----------------------
Five ``lib.stream`` ports (``valid``/``ready``/``payload``; a beat moves in a cycle where both
``valid`` and ``ready`` are high; payload fields in amaranth layout order, first field in the low
bits, see :func:`schedule`). ``q.ready``, ``k.ready`` and ``v.ready`` depend on no ``valid``;
``cfg.ready`` depends on ``cfg.valid`` (as ``lib.stream`` allows: a source raises ``valid``
without waiting for ``ready``). ``o.valid`` is registered. Row ``i`` of a block lives in lane
``i mod lanes``.

``cfg`` (in), one beat per block: ``n_keys`` (``lb = max_len.bit_length()`` bits, the keys
    streamed for the block, ``1..max_len``), ``causal`` (1 bit), ``pos0`` (``max(1, lb)`` bits:
    query position of block row 0) and ``pos_mask`` (``max(1, log2(block))`` bits): row ``i``
    holds position ``pos0 + (i & pos_mask)`` (``pos_mask = P − 1`` for ``P`` positions per
    block); with ``causal`` key ``j`` is masked for row ``i`` when ``j > pos0 + (i & pos_mask)``;
    ``n_rows`` (``1..block``): rows ``i >= n_rows`` are padding and get no 1D, rescale or output
    work (a block past the last query position ends early).
    The beat is accepted when the block's first QK tile starts, which needs its Q block
    completely loaded (at the earliest the cycle after its last ``q`` beat), fewer than two QK
    tiles awaiting their SV and the tile's score bank free.
``q`` (in, ``q_fmt``), ``block·E`` beats per block, row-major (``q_i[e]``), one per cycle. Two
    banks: the next block loads while one is used, so Q of block ``n + 1`` may be sent right
    after Q of block ``n``; a third block waits (``ready`` low) until block ``n``'s last QK tile
    has ended. Q of a block must precede its ``cfg`` beat's acceptance (the engine waits for it).
``k`` (in), ``n_keys·E`` beats per block, key-major (``k_j[e]``): ``data`` (``k_fmt``) and
    ``keep`` (key-padding bit, 1 = take part; sampled on the key's last beat). Accepted during
    QK passes only, **one beat every ``rows`` cycles** (each element is held for the ``rows``
    rows of every lane), in tiles of ``T`` keys.
``v`` (in, ``v_fmt``), ``n_keys·F`` beats per block, key-major, during SV passes, one beat every
    ``rows`` cycles. The passes interleave ``QK(x+1)`` before ``SV(x)``: the engine reads ``k``
    up to two tiles (``2·T·E`` beats) ahead of ``v``, so ``k`` and ``v`` must be independent
    streams (a source that sends all of a block's ``k`` before its ``v`` deadlocks when
    ``n_keys > 2T``); across blocks ``k`` of the next block follows the last QK tile of the
    previous one, before that block's last ``v`` tile.
``o`` (out, ``out_fmt``), ``n_rows·F`` beats per block, row-major (``y_i[f]``), blocks in ``cfg``
    order; one beat per cycle while ``ready`` is high; ``valid`` and ``payload`` are held while
    ``ready`` is low. Rows past the job's last query (padding of :func:`schedule`) are
    don't-care. Two output banks: if ``o`` is not drained, the rescale of the block after next
    waits, and through the interlocks the whole engine.

**Latency** (all streams at full rate): the first ``k`` beat is taken the cycle after
``cfg``; the first ``o`` beat of a block comes ``block·(F + 1) + block + c`` cycles after its last
``v`` beat (rescale of the last tile, reciprocals, pipelines; ``c`` ≈ 50, measured: 190 cycles
for E = F = 16 with 4 lanes × 2 rows, 4276 for E = F = 64 with 8 × 8), then one beat per cycle. A block of ``n_keys`` keys keeps the MAC array busy for about
``n_keys·(E + F)·rows`` cycles; the MAC array only waits when a stream does, or for the 1D work
of the very last tile of the job. On-chip storage does not depend on the sequence length.

With ``causal`` the driver skips the keys after the block's last query (``n_keys =
min(Tk, pos_max + 1)``): those are key tiles above the diagonal, and skipping them does not
change a bit of the result (see :mod:`celosia.ir.attention`). :func:`schedule` produces the beats
of a whole job (what a DMA sends) and the output index of every beat.
"""

from __future__ import annotations

import math

import numpy as np
from amaranth.hdl import Module, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out, connect, flipped
from celosia.hw.attention_common import AttentionGeometry
from celosia.hw.attention_mac import (MacLanes, NumeratorAccumulators, QBuffer, ScoreAccumulators, Sequencer,
                                      TileDescriptors)
from celosia.hw.attention_softmax import OnlineSoftmax, OutputStage, Rescale, ScorePath
from celosia.ir.attention import EXP_FRAC, TILE, attention_numerics, scale_constant
from celosia.ir.numerics import Fixed

from celosia.errors import GraphError, HardwareGenerationError

__all__ = ["AttentionEngine", "schedule", "unpack_output"]


#: Default formats: 16-bit data (s16.12) and scores (s16.10).
_DATA = Fixed(16, 12)
_SCORE = Fixed(16, 10)


def _fail(msg: str, hint: str):
    raise HardwareGenerationError(f"attention engine: {msg}", hint=hint)


def _int(name, v, lo, hi, hint):
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        _fail(f"{name}={v!r} is out of range {lo}..{hi}", hint)
    return v


class AttentionEngine(wiring.Component):
    """1-pass attention over key tiles with ``lanes·rows`` query rows per block.

    Parameters
    ----------
    e : int
        Head dimension ``E`` (query/key width), 1..256.
    f : int, optional
        Value dimension ``F`` (default ``E``).
    lanes : int
        MAC lanes (one multiplier each), a power of two, 2..min(E, 64) (below E when
        ``rows > 1``).
    rows : int
        Query rows per lane (a power of two, 1..64): each k/v element is held for ``rows``
        cycles. The query-block size is ``block = lanes·rows``: K and V are read once per block.
    tile : int
        Key-tile size ``T`` (a power of two): changes the bits exactly as ``tile`` of
        :func:`~celosia.ir.attention.attention_int`.
    q_fmt, k_fmt, v_fmt : Fixed
        Input formats (signed, at most 18 bits).
    score_fmt : Fixed
        Scaled score format (``attrs["score_fmt"]``).
    out_fmt : Fixed
        Output format.
    scale : float, optional
        Score scale (default ``1/√E``).
    max_len : int
        Addressing limit: most keys per block (and query positions), 1..65536.
    exp_frac, recip_frac : int
        ``Fe`` and ``Fr`` of :func:`~celosia.ir.attention.attention_numerics`.

    Attributes
    ----------
    geom : AttentionGeometry
        The sizes every stage derives from these parameters (widths, address fields, formats).
    block : int
        ``lanes·rows``.

    Raises
    ------
    HardwareGenerationError
        Any parameter out of range (with the numbers), before any RTL is built.
    """

    def __init__(self, e: int, f: int | None = None, lanes: int = 8, rows: int = 1, tile: int = TILE,
                 q_fmt: Fixed = _DATA, k_fmt: Fixed = _DATA, v_fmt: Fixed = _DATA,
                 score_fmt: Fixed = _SCORE, out_fmt: Fixed = _DATA, scale: float | None = None,
                 max_len: int = 4096, exp_frac: int = EXP_FRAC, recip_frac: int = EXP_FRAC + 4):
        f = e if f is None else f
        _int("e", e, 1, 256, "the head dimension E must be 1..256")
        _int("f", f, 2, 256, "the value dimension F must be 2..256")
        _int("lanes", lanes, 2, max(2, min(e, 64)), f"lanes must be 2..min(E={e}, 64): the scores of one key are "
             "shifted out one per cycle during the E cycles of the next key")
        _int("rows", rows, 1, 64, "use 1..64 query rows per lane")
        if rows > 1 and lanes >= e:
            _fail(f"lanes={lanes} with rows={rows} needs lanes < E={e}",
                  "the lanes·rows scores of one key are shifted out during the E·rows cycles of the next key")
        _int("tile", tile, 2, 1024, "use a key tile of 2..1024 keys")
        for name, val in (("e", e), ("f", f), ("tile", tile), ("lanes", lanes), ("rows", rows)):
            if val & (val - 1):
                _fail(f"{name}={val} is not a power of two", "the buffers are addressed by bit fields: use 16, 32, 64, ...")
        _int("max_len", max_len, 1, 1 << 16, "the addressing limit is 1..65536 keys")
        for name, fmt in (("q_fmt", q_fmt), ("k_fmt", k_fmt), ("v_fmt", v_fmt)):
            if not isinstance(fmt, Fixed) or not fmt.signed or fmt.bits > 18:
                _fail(f"{name}={fmt!r} must be a signed Fixed of at most 18 bits", "one DSP operand per MAC")
        if not isinstance(out_fmt, Fixed):
            _fail(f"out_fmt={out_fmt!r} is not a Fixed", "e.g. Fixed(16, 12)")
        num = attention_numerics(score_fmt, tile, exp_frac, recip_frac)
        self.scale = float(scale) if scale else 1.0 / math.sqrt(e)
        code, frac = scale_constant(self.scale)
        self.geom = g = AttentionGeometry(e, f, lanes, rows, tile, max_len, q_fmt, k_fmt, v_fmt, score_fmt, out_fmt,
                                          num, code, frac)
        self.num = num
        self.e, self.f, self.lanes, self.rows, self.tile, self.max_len = e, f, lanes, rows, tile, max_len
        self.block = g.block
        self.q_fmt, self.k_fmt, self.v_fmt, self.score_fmt, self.out_fmt = q_fmt, k_fmt, v_fmt, score_fmt, out_fmt
        self.scale_code, self.scale_frac = code, frac
        self.s_bits = g.s_bits          # q·k over E
        self.acc_bits = g.acc_bits      # Σ SLN·v over a tile
        self.rd_fmt = g.rd_fmt          # RD <= n·2^Fe
        self.rnv_bits = g.rnv_bits      # |RNV| <= RD·max|v|
        self.pos_bits = g.pos_bits
        super().__init__({
            "cfg": In(stream.Signature(g.cfg_layout)),
            "q": In(stream.Signature(signed(q_fmt.bits))),
            "k": In(stream.Signature(g.k_layout)),
            "v": In(stream.Signature(signed(v_fmt.bits))),
            "o": Out(stream.Signature(signed(out_fmt.bits) if out_fmt.signed else unsigned(out_fmt.bits))),
        })

    # ------------------------------------------------------------------ public helpers
    @property
    def onchip_bits(self) -> int:
        """Bits of on-chip state (memories and per-lane registers): independent of the sequence."""
        L, E, F, T = self.block, self.e, self.f, self.tile
        n = self.num
        return (L * 2 * E * self.q_fmt.bits              # Q, two banks
                + 2 * L * T * (self.score_fmt.bits + 1)  # tile scores + mask, two banks
                + 2 * L * T * n.efmt.bits                # SLN, two banks
                + L * F * self.acc_bits                  # tile accumulators
                + 2 * L * F * self.rnv_bits              # RNV, two banks
                + 2 * L * self.rd_fmt.bits               # RD, two banks
                + 2 * L * (n.efmt.bits + self.rd_fmt.bits)  # PRM, Σ SLN, two banks
                + 3 * L * self.score_fmt.bits            # m, tile max (two banks)
                + L * n.rfmt.bits                        # reciprocals
                + L * self.s_bits                        # QK accumulators
                + L * self.s_bits)                       # score capture

    def check_job(self, heads: int, kv_heads: int, e: int, f: int, seq_q: int, seq_k: int) -> None:
        """Reject a job this engine cannot run (before any stimulus is built).

        Raises
        ------
        GraphError
            ``heads`` not a multiple of ``kv_heads``, a group larger than the lanes or not
            dividing them.
        HardwareGenerationError
            ``e``/``f`` not the generated ``E``/``F``, or a sequence above ``max_len``.
        """
        if kv_heads < 1 or heads % kv_heads:
            raise GraphError(f"attention engine: {heads} query heads are not a multiple of {kv_heads} key/value heads",
                             hint="grouped-query attention needs heads % kv_heads == 0")
        g = heads // kv_heads
        if g > self.block or self.block % g:
            raise GraphError(f"attention engine: a group of {g} query heads does not divide the block of "
                             f"{self.block} queries ({self.lanes} lanes × {self.rows} rows)",
                             hint="generate the engine with lanes·rows a multiple of heads // kv_heads")
        if e != self.e or f != self.f:
            raise HardwareGenerationError(
                f"attention engine: head dims E={e}, F={f} do not match the generated unit (E={self.e}, F={self.f})",
                hint=f"generate AttentionEngine(e={e}, f={f})")
        if max(seq_q, seq_k) > self.max_len or min(seq_q, seq_k) < 1:
            raise HardwareGenerationError(
                f"attention engine: sequence lengths {seq_q} (queries) / {seq_k} (keys) are outside 1..{self.max_len}, "
                "the generated addressing limit", hint=f"generate AttentionEngine(max_len={max(seq_q, seq_k)}) or more")

    # ------------------------------------------------------------------ elaboration
    def elaborate(self, platform):
        m = Module()
        g = self.geom
        # the buffers and stages of the cascade, in the order a key tile x meets them
        m.submodules.qbuf = qbuf = QBuffer(g)                     # Q loader, two banks
        m.submodules.seq = seq = Sequencer(g)                     # MAC schedule QK(x+1) SV(x), K/V feed
        m.submodules.tiles = tiles = TileDescriptors(g, readers=4)
        m.submodules.mac = mac = MacLanes(g)                      # one DSP per lane: q·k or SLN·v
        m.submodules.qk = qk = ScoreAccumulators(g)               # S = q·k per row, shifted out
        m.submodules.scores = scores = ScorePath(g)               # s = sat(round(S·c)), mask, tile max
        m.submodules.softmax = soft = OnlineSoftmax(g)            # 1D(x): m_new, PRM, SLN, Σ SLN
        m.submodules.sv = sv = NumeratorAccumulators(g)           # acc = Σ SLN·v of the tile
        m.submodules.rescale = resc = Rescale(g)                  # RNV, RD <- (PRM·old >> Fe) + acc, Σ SLN
        m.submodules.output = out = OutputStage(g)                # y = RNV·reciprocal(RD)

        # external streams
        connect(m, flipped(self.cfg), seq.cfg)
        connect(m, flipped(self.q), qbuf.q)
        connect(m, flipped(self.k), seq.k)
        connect(m, flipped(self.v), seq.v)
        connect(m, out.o, flipped(self.o))

        # data between the stages
        connect(m, seq.tile_w, tiles.write)
        for reader, port in zip((seq.tile_r, scores.tile, soft.tile, resc.tile), tiles.read):
            connect(m, port, reader)
        connect(m, seq.beat, mac.beat)
        connect(m, qbuf.read, mac.q)                # QK operand
        connect(m, soft.sln, mac.sln)               # SV operand
        connect(m, mac.prod, qk.prod, sv.prod)
        connect(m, qk.item, scores.item)
        connect(m, scores.read, soft.scores)
        connect(m, scores.tmax, soft.tmax)
        connect(m, soft.sums, resc.sums)
        connect(m, sv.read, resc.acc)
        connect(m, resc.rnv, out.rnv)
        connect(m, resc.rd, out.rd)

        # interlocks: each buffer's owner keeps its flags, its producer and consumer pulse them
        m.d.comb += [
            # Q banks: loaded by the Q stream, released after the block's last QK tile
            seq.q_full.eq(qbuf.full), qbuf.release.eq(seq.q_release),
            # score banks: busy from QK(x) to the end of 1D(x); done from the last score to 1D(x)
            seq.score_busy.eq(scores.busy), scores.claim.eq(seq.score_claim),
            soft.score_done.eq(scores.done), scores.taken.eq(soft.score_taken), scores.freed.eq(soft.score_freed),
            # SLN banks: written by 1D(x), read by SV(x); PRM/Σ SLN banks: read by rescale(x)
            seq.sln_ready.eq(soft.sln_ready), soft.sv_start.eq(seq.sv_start), soft.sv_end.eq(seq.sv_end),
            soft.resc_count.eq(resc.count),
            # tile accumulators: taken by SV(x), full until rescale(x) starts, free when it is done
            seq.acc_free.eq(sv.free), sv.take.eq(seq.sv_start),
            resc.acc_full.eq(sv.full), sv.drain.eq(resc.acc_drain), sv.release.eq(resc.acc_release),
            # RNV/RD banks: a finished block until its last output beat
            out.full.eq(resc.out_full), resc.out_taken.eq(out.taken),
            *(out.rows[b].eq(resc.out_rows[b]) for b in range(2)),
        ]
        return m


def _pack(fields) -> int:
    """Pack ``(value, bits)`` pairs, the first in the low bits (amaranth layout order)."""
    w, pos = 0, 0
    for v, bits in fields:
        w |= (int(v) & ((1 << bits) - 1)) << pos
        pos += bits
    return w


def schedule(engine: AttentionEngine, q, k, v, mask=None, causal: bool = False, blocks=None) -> dict:
    """The stream beats of a whole attention job for ``engine`` (what a DMA would send).

    Parameters
    ----------
    engine : AttentionEngine
    q : ndarray (B, H, Tq, E) of int codes
    k, v : ndarray (B, Hkv, Tk, E) / (B, Hkv, Tk, F)
    mask : ndarray (B, Tk) or None
        Key-padding mask (1 = take part).
    causal : bool
    blocks : iterable of int, optional
        Run only these blocks (indices into the job's block list, default all).

    Returns
    -------
    dict
        ``cfg``, ``q``, ``k``, ``v``: lists of payload words; ``out``: for each output beat the
        index ``(b, h, t, f)`` it holds, or ``None`` for a padding lane; ``n_blocks``;
        ``traffic_bytes`` (every beat of q, k, v, o at its format's byte width).
    """
    q, k, v = (np.asarray(a, dtype=np.int64) for a in (q, k, v))
    B, H, Tq, E = q.shape
    Hkv, Tk, F = k.shape[1], k.shape[2], v.shape[3]
    engine.check_job(H, Hkv, E, F, Tq, Tk)
    L = engine.block
    G = H // Hkv
    P = L // G
    lb = engine.max_len.bit_length()
    pmb = len(engine.cfg.payload.pos_mask)
    keep = np.ones((B, Tk), np.int64) if mask is None else (np.asarray(mask) != 0).astype(np.int64)
    job = [(b, g, p0) for b in range(B) for g in range(Hkv) for p0 in range(0, Tq, P)]
    sel = range(len(job)) if blocks is None else blocks
    out = {"cfg": [], "q": [], "k": [], "v": [], "out": []}
    kb, vb = engine.k_fmt.bits, engine.v_fmt.bits
    for i in sel:
        b, g, p0 = job[i]
        n_keys = min(Tk, p0 + P) if causal else Tk
        n_rows = L - P + min(P, Tq - p0)  # through the last live row (padding after it is skipped)
        out["cfg"].append(_pack([(n_keys, lb), (causal, 1), (p0, engine.pos_bits), (P - 1, pmb),
                                 (n_rows, engine.geom.nrb)]))
        for lane in range(L):
            h, t = g * G + lane // P, p0 + lane % P
            row = q[b, h, t] if t < Tq else np.zeros(E, np.int64)
            out["q"] += [int(x) & ((1 << engine.q_fmt.bits) - 1) for x in row]
            if lane < n_rows:
                out["out"] += [(b, h, t, f) if t < Tq else None for f in range(F)]
        for j in range(n_keys):
            out["k"] += [_pack([(x, kb), (keep[b, j], 1)]) for x in k[b, g, j]]
            out["v"] += [int(x) & ((1 << vb) - 1) for x in v[b, g, j]]
    out["n_blocks"] = len(sel)
    byte = lambda fmt: (fmt.bits + 7) // 8
    out["traffic_bytes"] = (len(out["q"]) * byte(engine.q_fmt) + len(out["k"]) * byte(engine.k_fmt)
                            + len(out["v"]) * byte(engine.v_fmt) + len(out["out"]) * byte(engine.out_fmt))
    return out


def unpack_output(engine: AttentionEngine, words, index, shape) -> np.ndarray:
    """Scatter output beats (payload words) into an array of ``shape`` using ``schedule()["out"]``.

    Entries no beat wrote are ``np.iinfo(np.int64).min``.
    """
    y = np.full(shape, np.iinfo(np.int64).min, np.int64)
    bits = engine.out_fmt.bits
    for w, ix in zip(words, index):
        if ix is not None:
            w = int(w)
            y[ix] = w - (1 << bits) if engine.out_fmt.signed and w >> (bits - 1) else w
    return y
