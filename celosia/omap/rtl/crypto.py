"""On-chip crypto of the oblivious map unit: ChaCha20 block core, SipHash-2-4 core, pair sampler.

All three are ARX only (32/64-bit add, rotate, xor) and match the pure-Python reference of
:mod:`celosia.omap.crypto` bit for bit:

* :class:`ChaCha20Core` — one ChaCha20 block (RFC 8439) per request: one round per cycle
  (the four quarter rounds of a column or diagonal round in parallel), 20 rounds, then the
  feed-forward add; a block every 22 cycles.
* :class:`SipHash24Core` — SipHash-2-4 over a stream of 64-bit message words (the caller
  supplies the final word with the length byte, as in the spec): both compression rounds of a
  word in one cycle, the four finalization rounds in two.
* :class:`PairSampler` — the unit's CSPRNG: the ChaCha20 keystream under the RNG key (nonce 0,
  counter 0, 1, ...) read as u32 words in order, the spec's rejection-sampled ``uniform(n)``
  and distinct pair ``d1 = uniform(B), t = uniform(B-1), d2 = t + (t >= d1)``; it keeps the
  next pair ready on its output stream.

Bit conventions: a 512-bit block holds word i in bits [32i, 32i+32), i.e. the little-endian
integer of the 64 keystream bytes; keys are the little-endian integers of their bytes.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["ChaCha20Core", "PairSampler", "SipHash24Core", "chacha_round", "sip_round"]

_M32 = 0xFFFFFFFF
_M64 = 0xFFFFFFFFFFFFFFFF
_SIGMA = (0x61707865, 0x3320646E, 0x79622D32, 0x6B206574)


def _rotl(x, n: int, width: int):
    return Cat(x[width - n:], x[:width - n])


def _qr(a, b, c, d):
    """One ChaCha quarter round on 32-bit values (combinational)."""
    a = (a + b)[:32]
    d = _rotl(d ^ a, 16, 32)
    c = (c + d)[:32]
    b = _rotl(b ^ c, 12, 32)
    a = (a + b)[:32]
    d = _rotl(d ^ a, 8, 32)
    c = (c + d)[:32]
    b = _rotl(b ^ c, 7, 32)
    return a, b, c, d


_COLUMNS = ((0, 4, 8, 12), (1, 5, 9, 13), (2, 6, 10, 14), (3, 7, 11, 15))
_DIAGONALS = ((0, 5, 10, 15), (1, 6, 11, 12), (2, 7, 8, 13), (3, 4, 9, 14))


def chacha_round(words: list, diagonal: bool) -> list:
    """A column (or diagonal) round of the 16-word ChaCha state (combinational)."""
    out = list(words)
    for idx in _DIAGONALS if diagonal else _COLUMNS:
        for i, v in zip(idx, _qr(*(words[i] for i in idx))):
            out[i] = v
    return out


def sip_round(v0, v1, v2, v3):
    """One SipRound on 64-bit values (combinational)."""
    v0 = (v0 + v1)[:64]
    v1 = _rotl(v1, 13, 64) ^ v0
    v0 = _rotl(v0, 32, 64)
    v2 = (v2 + v3)[:64]
    v3 = _rotl(v3, 16, 64) ^ v2
    v0 = (v0 + v3)[:64]
    v3 = _rotl(v3, 21, 64) ^ v0
    v2 = (v2 + v1)[:64]
    v1 = _rotl(v1, 17, 64) ^ v2
    v2 = _rotl(v2, 32, 64)
    return v0, v1, v2, v3


class ChaCha20Core(wiring.Component):
    """ChaCha20 block function, one round per cycle.

    Ports
    -----
    key : In(256)
        Held stable while a block is computed.
    req : In(stream(128))
        Payload = counter (bits 0..31) ‖ nonce (bits 32..127, little-endian bytes).
    blk : Out(stream(512))
        The keystream block, word i in bits [32i, 32i+32).

    Notes
    -----
    ``latency`` = 21 cycles from request acceptance to ``blk.valid``; one request at a time.
    """

    latency = 21

    def __init__(self):
        super().__init__({
            "key": In(256),
            "req": In(stream.Signature(128)),
            "blk": Out(stream.Signature(512)),
        })

    def elaborate(self, platform):
        m = Module()
        init = [Signal(32, name=f"init{i}") for i in range(16)]
        x = [Signal(32, name=f"x{i}") for i in range(16)]
        rnd = Signal(range(21))
        busy = Signal()
        diag = rnd[0]  # rounds alternate column, diagonal, ...
        col = chacha_round(x, diagonal=False)
        dia = chacha_round(x, diagonal=True)
        m.d.comb += self.req.ready.eq(~busy & ~self.blk.valid)
        with m.If(self.req.valid & self.req.ready):
            words = [Const(s, 32) for s in _SIGMA] + [self.key[32 * i:32 * i + 32] for i in range(8)] + \
                    [self.req.payload[32 * i:32 * i + 32] for i in range(4)]
            for i in range(16):
                m.d.sync += [init[i].eq(words[i]), x[i].eq(words[i])]
            m.d.sync += [busy.eq(1), rnd.eq(0)]
        with m.If(busy):
            with m.If(rnd == 20):
                m.d.sync += [busy.eq(0), self.blk.valid.eq(1),
                             self.blk.payload.eq(Cat(*[(x[i] + init[i])[:32] for i in range(16)]))]
            with m.Else():
                for i in range(16):
                    with m.If(diag):
                        m.d.sync += x[i].eq(dia[i])
                    with m.Else():
                        m.d.sync += x[i].eq(col[i])
                m.d.sync += rnd.eq(rnd + 1)
        with m.If(self.blk.valid & self.blk.ready):
            m.d.sync += self.blk.valid.eq(0)
        return m


class SipHash24Core(wiring.Component):
    """SipHash-2-4 over a stream of 64-bit words; the word flagged ``last`` must be the final
    word (remaining bytes with the message length mod 256 in its top byte).

    Ports
    -----
    key : In(128)
        Little-endian integer of the 16 key bytes.
    msg : In(stream(65))
        Payload = word (bits 0..63) ‖ last (bit 64). One word per cycle.
    tag : Out(stream(64))
        The 64-bit tag, 2 cycles after the last word.
    """

    def __init__(self):
        super().__init__({
            "key": In(128),
            "msg": In(stream.Signature(65)),
            "tag": Out(stream.Signature(64)),
        })

    def elaborate(self, platform):
        m = Module()
        v = [Signal(64, name=f"v{i}") for i in range(4)]
        started = Signal()
        fin = Signal(2)  # finalization step: 0 idle, 1 first two rounds, 2 last two rounds
        k0, k1 = self.key[:64], self.key[64:]
        iv = [k0 ^ 0x736F6D6570736575, k1 ^ 0x646F72616E646F6D, k0 ^ 0x6C7967656E657261, k1 ^ 0x7465646279746573]
        cur = [Signal(64, name=f"cur{i}") for i in range(4)]
        for i in range(4):
            m.d.comb += cur[i].eq(Mux(started, v[i], iv[i]))
        word, last = self.msg.payload[:64], self.msg.payload[64]
        a = sip_round(cur[0], cur[1], cur[2], cur[3] ^ word)
        a = sip_round(*a)
        absorbed = [a[0] ^ word, a[1], a[2], a[3]]
        f = sip_round(v[0], v[1], v[2], v[3])
        f = sip_round(*f)
        m.d.comb += self.msg.ready.eq((fin == 0) & ~self.tag.valid)
        with m.If(self.msg.valid & self.msg.ready):
            for i in range(4):
                m.d.sync += v[i].eq(absorbed[i])
            with m.If(last):
                m.d.sync += [v[2].eq(absorbed[2] ^ 0xFF), fin.eq(1), started.eq(0)]
            with m.Else():
                m.d.sync += started.eq(1)
        with m.If(fin == 1):
            m.d.sync += [v[i].eq(f[i]) for i in range(4)]
            m.d.sync += fin.eq(2)
        with m.If(fin == 2):
            m.d.sync += [fin.eq(0), self.tag.valid.eq(1), self.tag.payload.eq(f[0] ^ f[1] ^ f[2] ^ f[3])]
        with m.If(self.tag.valid & self.tag.ready):
            m.d.sync += self.tag.valid.eq(0)
        return m


class PairSampler(wiring.Component):
    """The CSPRNG's distinct-pair stream for ``bins`` bins.

    Parameters
    ----------
    bins : int
        B >= 2.

    Ports
    -----
    key : In(256)
        The RNG key.
    pair : Out(stream(2 * w))
        Payload = d1 (bits 0..w-1) ‖ d2 (bits w..2w-1), w = bits of B-1.
    """

    def __init__(self, bins: int):
        if bins < 2:
            raise ValueError("PairSampler needs at least 2 bins")
        self.bins = bins
        self.w = max(1, (bins - 1).bit_length())
        super().__init__({"key": In(256), "pair": Out(stream.Signature(2 * self.w))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.core = core = ChaCha20Core()
        b, w = self.bins, self.w
        lim_b = ((1 << 32) // b) * b
        lim_b1 = ((1 << 32) // (b - 1)) * (b - 1)
        buf = Signal(512)
        left = Signal(range(17))  # words left in buf
        counter = Signal(32)
        req_sent = Signal()
        have_d1 = Signal()
        d1 = Signal(w)
        m.d.comb += [core.key.eq(self.key), core.req.payload.eq(Cat(counter, Const(0, 96))),
                     core.blk.ready.eq(1)]
        word = buf[:32]
        # refill: request the next block when the buffer is empty
        m.d.comb += core.req.valid.eq((left == 0) & ~req_sent)
        with m.If(core.req.valid & core.req.ready):
            m.d.sync += [req_sent.eq(1), counter.eq(counter + 1)]
        with m.If(core.blk.valid):
            m.d.sync += [buf.eq(core.blk.payload), left.eq(16), req_sent.eq(0)]
        with m.If(self.pair.valid & self.pair.ready):
            m.d.sync += self.pair.valid.eq(0)
        # consume one word per cycle while the output register is free
        with m.Elif((left != 0) & ~self.pair.valid):
            m.d.sync += [buf.eq(buf >> 32), left.eq(left - 1)]
            with m.If(~have_d1), m.If(word < lim_b):
                m.d.sync += [d1.eq(word % b), have_d1.eq(1)]
            with m.Else(), m.If(word < lim_b1):
                t = Signal(w)
                m.d.comb += t.eq(word % (b - 1))
                m.d.sync += [self.pair.payload.eq(Cat(d1, Mux(t >= d1, t + 1, t)[:w])),
                             self.pair.valid.eq(1), have_d1.eq(0)]
        return m
