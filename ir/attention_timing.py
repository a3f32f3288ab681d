"""The attention unit's timing contract: cycles of one ATTENTION instruction.

:func:`attention_unit_cycles` is what the scheduler and the performance model add up, and what
the RTL is held to exactly. It is a pure function of the record (:class:`AttentionRecord`), the
engine's parameters (:class:`AttentionConfig`) and four engine latencies; it does not import the
hardware.

How the unit makes its time a function of these numbers
-------------------------------------------------------
The unit (:mod:`celosia.hw.attention_unit`) feeds the engine's ``q``, ``k`` and ``v`` streams from
word FIFOs that never run dry and never back-pressures ``o``, so the engine runs at its own pace
and the only timing-dependent choice it makes is its pass order at block boundaries: after a
block's last QK tile it starts QK of the next block if that block's ``cfg`` beat and Q bank are
there, and otherwise the SV tiles still pending. The unit removes that choice:

* **natural** boundary (``n·E·R + ceil(n/T) > block·E`` for the ``n`` keys of the block before
  it): the block's QK passes alone last longer than loading the next Q block, which starts
  no later than the block's first QK pass, so the next Q bank is always full in time and the
  engine starts the next block's first QK tile at its first chance (the pass order of a
  full-rate stream);
* **gated** boundary (otherwise): the unit holds the next block's ``cfg`` beat until the
  engine has taken the last ``v`` beat of the block before, so that block's SV tiles all run
  first.

With the pass order fixed, every event of the run is a max-plus expression of earlier events,
pass lengths (``nt·E·R`` or ``nt·F·R`` beats) and the engine's latencies, and
:func:`attention_timeline` evaluates it pass by pass:

``QK(x)``  starts 1 cycle after the decision cycle ``max(previous pass end + 1, end of the 1D
           issue of tile x-2 + 1 (its score bank), Q of a block's first tile loaded + 1)``;
``SV(x)``  likewise after ``max(previous pass end + 1, SLN of tile x ready, tile accumulators
           free after rescale(x-1))``;
``1D(x)``  issues ``nr·(nt+1)`` items (``nr``: the block's live rows, :func:`block_rows`)
           from ``max(scores of QK(x) done = end + block + score, previous 1D issue end + 1,
           SV(x-2) end + 1 (its SLN bank), accumulators free after rescale(x-2) (its PRM
           bank))``; SLN ready ``softmax`` later;
rescale    of tile x: ``nr·(F+1)`` items from ``max(SV(x) end + 4, previous rescale end +
           1, output of block b-2 done + 1 for a block's first tile)``; the accumulators are
           free ``rescale`` cycles after its last item;
output     of block b from ``max(its last rescale done, output of b-1 done + 1)``: its
           ``nr·F`` beats start ``nr + output`` cycles later;
Q          loads at one beat a cycle from cycle :data:`Q_START`, block ``b`` after block
           ``b-1`` and after block ``b-2``'s last QK tile has released its bank.

The instruction takes until the last output beat's write has been issued (``busy`` falls on
the cycle after).

The latencies are pipeline depths of the engine that depend on its formats (multiplier slices,
the :class:`~celosia.hw.primitives.ExpNeg` and :class:`~celosia.hw.primitives.Reciprocal`
pipelines). The contract uses :data:`LATENCY_BOUND`, their largest values over every engine the
unit accepts (formats of at most 18 bits, ``max_len`` up to 65536) plus a margin, and the unit holds ``busy``
until the cycle count the bound gives, so the count is exactly this function even where the
engine's true latencies are smaller: since the pass order is fixed and every event is a
maximum of sums, shorter latencies only make the engine finish earlier. Tests run the unit at
several configurations, hold ``busy`` to this function exactly and check that the engine
finished within it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["EngineLatencies", "LATENCY_BOUND", "MAX_SCORE_BITS", "Q_START", "attention_blocks", "block_rows",
           "natural_boundary", "attention_timeline", "attention_unit_cycles"]


@dataclass(frozen=True)
class EngineLatencies:
    """Latencies of :class:`celosia.hw.attention.AttentionEngine` the unit's timing depends on.

    Attributes
    ----------
    score : int
        From the last beat of a QK pass to the first cycle its tile's scores are seen as done,
        minus ``block`` (the dot products leave one per cycle).
    softmax : int
        From the last 1D item of a tile to the first cycle its SLN values are seen as ready.
    rescale : int
        From the last rescale item of a tile to the first cycle the tile accumulators are seen
        as free (and, for a block's last tile, its output bank as full).
    output : int
        From the cycle a block's output starts to its first ``o`` beat, minus ``block`` (one
        reciprocal a cycle).
    """

    score: int
    softmax: int
    rescale: int
    output: int


#: Upper bounds of :class:`EngineLatencies` over every engine the attention unit accepts: the
#: largest measured values (score 12: three slices of ``q·k`` times a two-slice scale constant;
#: softmax 25: an :class:`~celosia.hw.primitives.ExpNeg` of 20 stages for 17- and 18-bit score
#: formats, 19 below; rescale 8: four slices of RNV; output 33: a
#: :class:`~celosia.hw.primitives.Reciprocal` of 20 stages from ``max_len`` 1024 on, 19 below,
#: and an eight-slice product) plus 2 cycles each, so a pipeline register more in the engine
#: does not break the contract.
LATENCY_BOUND = EngineLatencies(score=14, softmax=27, rescale=10, output=35)

#: Widest score format the bound covers (the engine's other formats are at most 18 bits).
MAX_SCORE_BITS = 18

#: Cycle (after the start pulse) of the unit's first ``q`` beat.
Q_START = 5


def attention_blocks(record, config) -> list[int]:
    """Keys streamed for each query block of ``record``, in the unit's order.

    Blocks are ``(kv group g, first position p0)`` for ``g < kv_heads`` and ``p0 = 0, P, 2P, …
    < seq_q``, ``P = lanes·rows·kv_heads/heads`` positions per block; a causal block streams
    ``min(seq_k, p0 + P)`` keys.
    """
    P, starts = _block_starts(record, config)
    return [min(record.seq_k, p0 + P) if record.causal else record.seq_k for p0 in starts]


def block_rows(record, config) -> list[int]:
    """Live rows of each block of :func:`attention_blocks`: through the last row whose position is
    a query (``(G−1)·P + min(P, seq_q − p0)``, ``G = heads/kv_heads``); the engine skips the rest."""
    P, starts = _block_starts(record, config)
    return [config.lanes * config.rows - P + min(P, record.seq_q - p0) for p0 in starts]


def _block_starts(record, config) -> tuple[int, list[int]]:
    """``P`` (positions per block) and the first position ``p0`` of every block, in order."""
    P = config.lanes * config.rows * record.kv_heads // record.heads
    return P, [p0 for _ in range(record.kv_heads) for p0 in range(0, record.seq_q, P)]


def natural_boundary(n_keys: int, config) -> bool:
    """Whether the boundary after a block of ``n_keys`` keys keeps the free-running pass order
    (the block's QK passes alone outlast loading the next Q block)."""
    R = config.rows
    return n_keys * config.e * R + math.ceil(n_keys / config.tile) > config.lanes * R * config.e


def attention_timeline(record, config, latency: EngineLatencies = LATENCY_BOUND) -> dict:
    """The engine's passes and the output beats of one instruction, cycle by cycle.

    Returns
    -------
    dict
        ``passes``: ``(kind, tile, first beat, last beat)`` in order (kind ``"QK"`` or
        ``"SV"``); ``o_first``, ``o_last``: per block the cycles of its first and last ``o``
        beat; ``cycles``: the instruction's busy cycles. Cycle 0 is the start pulse.
    """
    E, F, R, T = config.e, config.f, config.rows, config.tile
    VL = config.lanes * R
    ns = attention_blocks(record, config)
    nrs = block_rows(record, config)
    tiles = []                     # (block, keys, first tile of the block, last tile of the block)
    last_tile = []
    for b, n in enumerate(ns):
        k = math.ceil(n / T)
        tiles += [(b, min(T, n - i * T), i == 0, i == k - 1) for i in range(k)]
        last_tile.append(len(tiles) - 1)
    natural = [natural_boundary(n, config) for n in ns]
    e_qk, e_sv, issue_end, ready, free = {}, {}, {}, {}, {}
    q_last, released, o_first, o_last, out_full = {}, {}, {}, {}, {}

    def q_loaded(b):               # last q beat of block b
        if b not in q_last:
            first = Q_START if b == 0 else q_loaded(b - 1) + 1
            if b >= 2:
                first = max(first, released[b - 2] + 1)
            q_last[b] = first + VL * E - 1
        return q_last[b]

    def softmax_1d(x):             # 1D(x): end of its issue, SLN ready
        if x not in issue_end:
            c = e_qk[x] + VL + latency.score
            if x >= 1:
                c = max(c, issue_end[x - 1] + 1)
            if x >= 2:
                c = max(c, e_sv[x - 2] + 1, free[x - 2])
            issue_end[x] = c + nrs[tiles[x][0]] * (tiles[x][1] + 1)
            ready[x] = issue_end[x] + latency.softmax
        return issue_end[x]

    def output(b):
        d = out_full[b] if b == 0 else max(out_full[b], o_last[b - 1] + 1)
        o_first[b] = d + nrs[b] + latency.output
        o_last[b] = o_first[b] + nrs[b] * F - 1

    passes = []
    xq = xs = 0
    e_prev = -2
    rescale_end = -1
    while xs < len(tiles):
        qk = False
        if xq - xs < 2 and xq < len(tiles):
            b, _, first, _ = tiles[xq]
            qk = not first or b == 0 or natural[b - 1] or xs > last_tile[b - 1]
        if qk:
            x = xq
            b, nt, first, last = tiles[x]
            d = e_prev + 1
            if x >= 2:
                d = max(d, softmax_1d(x - 2) + 1)
            if first:
                d = max(d, q_loaded(b) + 1)
            e_qk[x] = e_prev = d + nt * E * R
            if last:
                released[b] = e_prev
            passes.append(("QK", x, d + 1, e_prev))
            xq += 1
            continue
        x = xs
        b, nt, first, last = tiles[x]
        softmax_1d(x)
        d = max(e_prev + 1, ready[x], free.get(x - 1, 0))
        e_sv[x] = e_prev = d + nt * F * R
        passes.append(("SV", x, d + 1, e_prev))
        xs += 1
        r = max(e_prev + 4, rescale_end + 1)
        if first and b >= 2:
            r = max(r, o_last[b - 2] + 1)
        rescale_end = r + nrs[b] * (F + 1)
        free[x] = rescale_end + latency.rescale
        if last:
            out_full[b] = free[x]
            output(b)
    nb = len(ns)
    return {"passes": passes, "o_first": [o_first[b] for b in range(nb)], "o_last": [o_last[b] for b in range(nb)],
            "cycles": o_last[nb - 1] + 1}


def attention_unit_cycles(record, config, latency: EngineLatencies = LATENCY_BOUND) -> int:
    """Cycles the attention unit is busy for one ATTENTION instruction (start pulse excluded)."""
    return attention_timeline(record, config, latency)["cycles"]
