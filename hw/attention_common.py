"""Shared numbers, interfaces and datapath helpers of the attention engine's stages.

:class:`AttentionGeometry` holds every size the stages of :class:`celosia.hw.attention.AttentionEngine`
derive from its parameters (widths, address fields, formats); the signatures below are the
contracts between the stages (see :mod:`celosia.hw.attention_mac` and
:mod:`celosia.hw.attention_softmax`). Every signature is written from the side that produces the
data (a buffer's read ports are ``Out`` members of the buffer, ``In`` members of the reader, as
with ``lib.memory.ReadPort.Signature``). None of them has a handshake unless it is a
``lib.stream``: the stages are interlocked by occupancy flags kept by the owner of each buffer, so
a port that carries a beat is valid for exactly the cycle its ``valid`` is high.

Row ``i`` of a query block (``0 <= i < block = lanes·rows``) lives in lane ``i mod lanes`` as
that lane's row ``i // lanes``: the lane is the low ``lnb`` bits of ``i``, the row in the lane the
high bits.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import Mux, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out
from celosia.hw.pipeline import Pipeline, Tap
from celosia.ir.attention import AttentionNumerics
from celosia.ir.numerics import Fixed

__all__ = ["AttentionGeometry", "IDLE", "QK", "SV", "LaneRead", "IndexedRead", "TileRead", "TileWrite",
           "MacBeat", "ProductBeat", "ScoreItem", "round_half_even", "saturate"]

#: Sequencer modes (what the MAC array does in a cycle).
IDLE, QK, SV = range(3)


def _log2(n: int) -> int:
    return (n - 1).bit_length()


@dataclass(frozen=True)
class AttentionGeometry:
    """Sizes of one generated attention engine (already validated by its constructor).

    Attributes
    ----------
    e, f, lanes, rows, tile, max_len : int
        ``E``, ``F``, MAC lanes ``L``, rows per lane ``R``, key tile ``T`` and the addressing limit.
    q_fmt, k_fmt, v_fmt, score_fmt, out_fmt : Fixed
        Stream and score formats.
    num : AttentionNumerics
        Exponential / reciprocal formats (:func:`celosia.ir.attention.attention_numerics`).
    scale_code, scale_frac : int
        The score scale as an unsigned fixed-point constant.
    """

    e: int
    f: int
    lanes: int
    rows: int
    tile: int
    max_len: int
    q_fmt: Fixed
    k_fmt: Fixed
    v_fmt: Fixed
    score_fmt: Fixed
    out_fmt: Fixed
    num: AttentionNumerics
    scale_code: int
    scale_frac: int

    # ------------------------------------------------------------ sizes
    @property
    def block(self) -> int:
        """Query rows of a block, ``lanes·rows``."""
        return self.lanes * self.rows

    @property
    def lb(self) -> int:
        """Bits of a key count (``n_keys``, ``1..max_len``)."""
        return self.max_len.bit_length()

    @property
    def pos_bits(self) -> int:
        return max(1, self.lb)

    @property
    def pos_mask_bits(self) -> int:
        return max(1, _log2(self.block))

    @property
    def nrb(self) -> int:
        """Bits of a block's live-row count (``n_rows``, ``1..block``)."""
        return self.block.bit_length()

    @property
    def tb(self) -> int:
        """Bits of a key index in a tile (at least 1): the score buffer's stride per row is ``2^tb``."""
        return max(1, _log2(self.tile))

    @property
    def eb(self) -> int:
        return _log2(self.e)

    @property
    def fb(self) -> int:
        return _log2(self.f)

    @property
    def lnb(self) -> int:
        """Bits of a lane index: the low bits of a row index."""
        return _log2(self.lanes)

    @property
    def rowb(self) -> int:
        """Bits of a row index in a lane."""
        return _log2(self.rows)

    @property
    def vb(self) -> int:
        """Bits of a row index in the block."""
        return _log2(self.block)

    @property
    def operand_bits(self) -> int:
        """Width of the broadcast k/v operand."""
        return max(self.k_fmt.bits, self.v_fmt.bits)

    @property
    def product_bits(self) -> int:
        """Width of a lane product: an 18-bit Q/SLN operand times the k/v operand."""
        return 18 + self.operand_bits

    @property
    def s_bits(self) -> int:
        """Width of an exact dot product ``q·k`` over ``E``."""
        return self.q_fmt.bits + self.k_fmt.bits + _log2(self.e) + 1

    @property
    def acc_bits(self) -> int:
        """Width of a tile accumulator ``Σ SLN·v`` over a tile."""
        return self.num.efmt.bits + 1 + self.v_fmt.bits + _log2(self.tile) + 1

    @property
    def rd_fmt(self) -> Fixed:
        """Running denominator ``RD <= n·2^Fe``."""
        return Fixed(self.num.Fe + self.lb + 1, self.num.Fe, signed=False)

    @property
    def rnv_bits(self) -> int:
        """Width of a running numerator, ``|RNV| <= RD·max|v|``."""
        return self.num.Fe + self.v_fmt.bits + self.lb + 2

    # ------------------------------------------------------------ layouts
    @property
    def cfg_layout(self) -> data.StructLayout:
        """Payload of the ``cfg`` stream (one beat per block)."""
        return data.StructLayout({"n_keys": unsigned(self.lb), "causal": 1, "pos0": unsigned(self.pos_bits),
                                  "pos_mask": unsigned(self.pos_mask_bits), "n_rows": unsigned(self.nrb)})

    @property
    def k_layout(self) -> data.StructLayout:
        """Payload of the ``k`` stream: an element and the key-padding bit."""
        return data.StructLayout({"data": signed(self.k_fmt.bits), "keep": 1})

    @property
    def tile_layout(self) -> data.StructLayout:
        """Descriptor of one key tile (see :class:`celosia.hw.attention_mac.TileDescriptors`)."""
        return data.StructLayout({
            "nt": range(self.tile + 1),       # keys in the tile, 1..T
            "first": 1,                       # first tile of its block
            "last": 1,                        # last tile of its block
            "kb": unsigned(self.lb),          # index of the tile's first key in the block
            "rb": 1,                          # RNV/RD bank of the block
            "causal": 1, "pos0": unsigned(self.pos_bits), "pmask": unsigned(self.pos_mask_bits),
            "nr": unsigned(self.nrb),         # live rows of the block (the rest are not computed)
        })


# ================================================================ interfaces
class LaneRead(wiring.Signature):
    """Synchronous read of a per-lane buffer, seen from the buffer (reader: ``In(LaneRead(...))``).

    The reader drives one ``addr`` for every lane; ``data[l]`` is lane ``l``'s word at that
    address one cycle later (block RAM read register, always enabled).
    """

    def __init__(self, addr_width: int, shape, lanes: int):
        super().__init__({"addr": In(addr_width), "data": Out(shape).array(lanes)})


class IndexedRead(wiring.Signature):
    """Combinational read of a register file, seen from the file: ``word = file[index]``.

    Every keyword gives one word (name and shape) read at the same index.
    """

    def __init__(self, index_width: int, **words):
        super().__init__({"index": In(index_width), **{n: Out(s) for n, s in words.items()}})


class TileRead(wiring.Signature):
    """Read port of the tile descriptor ring, seen from the ring: ``desc`` is the descriptor in ``slot``."""

    def __init__(self, geom: AttentionGeometry):
        super().__init__({"slot": In(2), "desc": Out(geom.tile_layout)})


class TileWrite(wiring.Signature):
    """Write port of the tile descriptor ring, seen from the writer: ``desc`` is stored in ``slot`` when ``en``."""

    def __init__(self, geom: AttentionGeometry):
        super().__init__({"en": Out(1), "slot": Out(2), "desc": Out(geom.tile_layout)})


class MacBeat(wiring.Signature):
    """One cycle of the MAC array schedule (sequencer → MAC lanes), valid when ``valid``.

    Members
    -------
    valid, qk
        A beat; QK (``q·k``) when ``qk``, else SV (``SLN·v``).
    b
        The k or v element broadcast to every lane.
    j, idx, r
        Key in the tile, element (``e`` or ``f``), row in the lane: lane ``l`` multiplies ``b``
        by ``q[row]`` element ``idx`` of Q bank ``qbank`` (QK) or by ``SLN_j`` of that row (SV).
    first
        First beat of an accumulation (``idx == 0`` in QK: a new dot product; ``j == 0`` in
        SV: a new tile accumulator word).
    dlast, last, rlast
        Last element of the key, last beat of the pass, last row of the lane.
    keep, slot
        Key-padding bit of the key; descriptor slot of the QK tile.
    """

    def __init__(self, geom: AttentionGeometry):
        super().__init__({
            "valid": Out(1), "qk": Out(1), "b": Out(signed(geom.operand_bits)),
            "j": Out(range(geom.tile)), "idx": Out(range(max(geom.e, geom.f))), "r": Out(range(geom.rows)),
            "first": Out(1), "dlast": Out(1), "last": Out(1), "rlast": Out(1), "keep": Out(1),
            "slot": Out(2), "qbank": Out(1),
        })


class ProductBeat(wiring.Signature):
    """The lane products of a :class:`MacBeat` three cycles later (MAC lanes → accumulators).

    ``p[l]`` is lane ``l``'s exact product; the other members are the beat's. ``ahead_idx`` /
    ``ahead_r`` are ``idx`` / ``r`` of the beat one cycle *before* it reaches this port, so a
    read-modify-write buffer can issue its read in time.
    """

    def __init__(self, geom: AttentionGeometry):
        super().__init__({
            "valid": Out(1), "qk": Out(1), "p": Out(signed(geom.product_bits)).array(geom.lanes),
            "j": Out(range(geom.tile)), "idx": Out(range(max(geom.e, geom.f))), "r": Out(range(geom.rows)),
            "first": Out(1), "dlast": Out(1), "last": Out(1), "rlast": Out(1), "keep": Out(1),
            "slot": Out(2),
            "ahead_idx": Out(range(max(geom.e, geom.f))), "ahead_r": Out(range(geom.rows)),
        })


class ScoreItem(wiring.Signature):
    """One finished dot product ``q_row·k_j`` per cycle (score accumulators → score path).

    ``row`` is the block row, ``j`` the key in the tile, ``slot`` the tile's descriptor slot,
    ``keep`` the key-padding bit and ``last`` marks the tile's last item (last key, last row).
    """

    def __init__(self, geom: AttentionGeometry):
        super().__init__({
            "valid": Out(1), "s": Out(signed(geom.s_bits)), "row": Out(range(geom.block)),
            "j": Out(range(geom.tile)), "keep": Out(1), "slot": Out(2), "last": Out(1),
        })


# ================================================================ datapath helpers
def round_half_even(pipe: Pipeline, name: str, x: Tap, sh: int) -> Tap:
    """``round_half_even(x·2^-sh)`` over two stages: floor and round bit, then their sum."""
    if sh <= 0:
        return pipe.reg(name, lambda v: v << -sh, x)
    fl = pipe.reg(f"{name}_fl", lambda v: v >> sh, x)
    up = pipe.reg(f"{name}_up", lambda v: (v[:sh] > (1 << (sh - 1))) | ((v[:sh] == (1 << (sh - 1))) & v[sh]), x)
    return pipe.reg(name, lambda a, b: a + b, fl, up)


def saturate(x, fmt: Fixed):
    """``x`` clipped to ``fmt``'s code range."""
    return Mux(x > fmt.max_int, fmt.max_int, Mux(x < fmt.min_int, fmt.min_int, x))
