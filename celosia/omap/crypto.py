"""Keyed primitives of the oblivious map, in pure Python, written from the public specs.

* :func:`chacha20_block` — the ChaCha20 block function of RFC 8439 §2.3 (20 rounds,
  32-byte key, 32-bit block counter, 96-bit nonce). It is ARX only, so the same
  function is cheap to build as round logic in hardware.
* :class:`ChaChaRNG` — the unit's CSPRNG: the ChaCha20 keystream under the RNG key with
  an all-zero nonce, read as little-endian u32 words, counter 0, 1, 2, ... The spec's
  ``uniform(n)`` (rejection: accept ``r < floor(2**32 / n) * n``, return ``r % n``) and
  distinct-pair convention are :meth:`ChaChaRNG.uniform` and :func:`distinct_pair`.
* :func:`page_keystream` — page encryption is ChaCha20 in counter mode with
  nonce = page id (u32, little endian) ‖ version (u64, little endian); a version is
  never reused for a page, so a (key, nonce) pair is never reused.
* :func:`siphash24` — SipHash-2-4 (Aumasson & Bernstein, 2012), a 64-bit keyed PRF.
  The page MAC is SipHash-2-4 over page id ‖ version ‖ ciphertext under the MAC key;
  the index bucket hash is SipHash-2-4 of the key under a separate index key, so an
  adversary who chooses keys cannot aim them at one bucket.
"""

from __future__ import annotations

import hashlib
import struct

__all__ = [
    "ChaChaRNG",
    "OmapKeys",
    "chacha20_block",
    "chacha20_xor",
    "derive_keys",
    "distinct_pair",
    "page_keystream",
    "page_mac",
    "page_nonce",
    "siphash24",
]

_M32 = 0xFFFFFFFF
_M64 = 0xFFFFFFFFFFFFFFFF
_SIGMA = (0x61707865, 0x3320646E, 0x79622D32, 0x6B206574)  # "expand 32-byte k"


def _qr(s: list[int], a: int, b: int, c: int, d: int) -> None:
    """The ChaCha quarter round on state words a, b, c, d (RFC 8439 §2.1)."""
    s[a] = (s[a] + s[b]) & _M32
    x = s[d] ^ s[a]
    s[d] = ((x << 16) | (x >> 16)) & _M32
    s[c] = (s[c] + s[d]) & _M32
    x = s[b] ^ s[c]
    s[b] = ((x << 12) | (x >> 20)) & _M32
    s[a] = (s[a] + s[b]) & _M32
    x = s[d] ^ s[a]
    s[d] = ((x << 8) | (x >> 24)) & _M32
    s[c] = (s[c] + s[d]) & _M32
    x = s[b] ^ s[c]
    s[b] = ((x << 7) | (x >> 25)) & _M32


def chacha20_words(key: bytes, counter: int, nonce: bytes) -> list[int]:
    """The 16 output words of one ChaCha20 block (RFC 8439 §2.3)."""
    if len(key) != 32 or len(nonce) != 12:
        raise ValueError("ChaCha20 needs a 32-byte key and a 12-byte nonce")
    init = [*_SIGMA, *struct.unpack("<8I", key), counter & _M32, *struct.unpack("<3I", nonce)]
    s = list(init)
    for _ in range(10):  # 10 double rounds = 20 rounds
        _qr(s, 0, 4, 8, 12)
        _qr(s, 1, 5, 9, 13)
        _qr(s, 2, 6, 10, 14)
        _qr(s, 3, 7, 11, 15)
        _qr(s, 0, 5, 10, 15)
        _qr(s, 1, 6, 11, 12)
        _qr(s, 2, 7, 8, 13)
        _qr(s, 3, 4, 9, 14)
    return [(x + y) & _M32 for x, y in zip(s, init)]


def chacha20_block(key: bytes, counter: int, nonce: bytes) -> bytes:
    """One 64-byte ChaCha20 keystream block (RFC 8439 §2.3).

    Parameters
    ----------
    key : bytes
        32-byte key.
    counter : int
        32-bit block counter.
    nonce : bytes
        12-byte nonce.
    """
    return struct.pack("<16I", *chacha20_words(key, counter, nonce))


def chacha20_xor(key: bytes, nonce: bytes, data: bytes, counter: int = 0) -> bytes:
    """Encrypt or decrypt ``data`` with the ChaCha20 keystream starting at ``counter``."""
    out = bytearray(len(data))
    for i in range(0, len(data), 64):
        ks = chacha20_block(key, counter + i // 64, nonce)
        chunk = data[i:i + 64]
        out[i:i + len(chunk)] = bytes(a ^ b for a, b in zip(chunk, ks))
    return bytes(out)


def page_nonce(page: int, version: int) -> bytes:
    """The 96-bit page nonce: page id (u32 LE) ‖ version (u64 LE)."""
    return struct.pack("<IQ", page & _M32, version & _M64)


def page_keystream(key: bytes, page: int, version: int, length: int) -> bytes:
    """``length`` bytes of the keystream that encrypts ``page`` at ``version``."""
    return chacha20_xor(key, page_nonce(page, version), bytes(length))


def _rotl64(x: int, b: int) -> int:
    return ((x << b) | (x >> (64 - b))) & _M64


def siphash24(key: bytes, msg: bytes) -> int:
    """SipHash-2-4 of ``msg`` under a 16-byte ``key``; a 64-bit integer.

    Two compression rounds per 8-byte word, four finalization rounds; the last word
    carries the message length mod 256 in its top byte (Aumasson & Bernstein, 2012).
    """
    if len(key) != 16:
        raise ValueError("SipHash needs a 16-byte key")
    k0, k1 = struct.unpack("<QQ", key)
    v0 = k0 ^ 0x736F6D6570736575
    v1 = k1 ^ 0x646F72616E646F6D
    v2 = k0 ^ 0x6C7967656E657261
    v3 = k1 ^ 0x7465646279746573

    def rounds(n: int) -> None:
        nonlocal v0, v1, v2, v3
        for _ in range(n):
            v0 = (v0 + v1) & _M64
            v1 = _rotl64(v1, 13) ^ v0
            v0 = _rotl64(v0, 32)
            v2 = (v2 + v3) & _M64
            v3 = _rotl64(v3, 16) ^ v2
            v0 = (v0 + v3) & _M64
            v3 = _rotl64(v3, 21) ^ v0
            v2 = (v2 + v1) & _M64
            v1 = _rotl64(v1, 17) ^ v2
            v2 = _rotl64(v2, 32)

    full = len(msg) - len(msg) % 8
    for i in range(0, full, 8):
        (m,) = struct.unpack_from("<Q", msg, i)
        v3 ^= m
        rounds(2)
        v0 ^= m
    last = int.from_bytes(msg[full:], "little") | ((len(msg) & 0xFF) << 56)
    v3 ^= last
    rounds(2)
    v0 ^= last
    v2 ^= 0xFF
    rounds(4)
    return v0 ^ v1 ^ v2 ^ v3


def page_mac(key: bytes, page: int, version: int, ciphertext: bytes) -> int:
    """The page tag: SipHash-2-4 over page id (u32 LE) ‖ version (u64 LE) ‖ ciphertext."""
    return siphash24(key, page_nonce(page, version) + ciphertext)


class ChaChaRNG:
    """The unit's counter-mode CSPRNG and the spec's ``uniform(n)``.

    Parameters
    ----------
    key : bytes
        32-byte RNG key (on chip, never leaves the unit).

    Notes
    -----
    Words are consumed strictly in order (block counter 0, 1, ..., word 0..15 in each
    block), so the hardware and this model agree bit for bit given the same key.
    """

    def __init__(self, key: bytes):
        self._key = key
        self._counter = 0
        self._buf: list[int] = []
        self.words_used = 0

    def u32(self) -> int:
        """The next keystream word."""
        if not self._buf:
            self._buf = chacha20_words(self._key, self._counter, bytes(12))[::-1]
            self._counter += 1
        self.words_used += 1
        return self._buf.pop()

    def uniform(self, n: int) -> int:
        """A uniform integer in ``[0, n)`` by rejection sampling of u32 words."""
        if not 0 < n <= 1 << 32:
            raise ValueError(f"uniform(n) needs 0 < n <= 2**32, got {n}")
        limit = ((1 << 32) // n) * n
        while True:
            r = self.u32()
            if r < limit:
                return r % n


def distinct_pair(rng, b: int) -> tuple[int, int]:
    """The spec's distinct pair: d1 = uniform(b), t = uniform(b-1), d2 = t + (t >= d1)."""
    d1 = rng.uniform(b)
    t = rng.uniform(b - 1)
    return d1, t + (t >= d1)


class OmapKeys:
    """The unit's four secret keys.

    Attributes
    ----------
    rng : bytes
        32-byte ChaCha20 key of the CSPRNG.
    enc : bytes
        32-byte ChaCha20 key of page encryption.
    mac : bytes
        16-byte SipHash key of the page MAC.
    index : bytes
        16-byte SipHash key of the index bucket hash.
    """

    def __init__(self, rng: bytes, enc: bytes, mac: bytes, index: bytes):
        self.rng, self.enc, self.mac, self.index = rng, enc, mac, index


def derive_keys(seed: int) -> OmapKeys:
    """Derive the four keys from an integer seed (simulation convenience).

    A deployed unit would take keys from a key-provisioning path; simulation derives
    them deterministically so runs are reproducible: master = SHA-256("celosia-omap" ‖
    seed as u64 LE), and each key is the first bytes of the ChaCha20 block of the master
    key at counter 0 with nonce = the key's label.
    """
    master = hashlib.sha256(b"celosia-omap" + struct.pack("<Q", seed & _M64)).digest()

    def sub(label: bytes, n: int) -> bytes:
        return chacha20_block(master, 0, label.ljust(12, b"\0"))[:n]

    return OmapKeys(sub(b"rng", 32), sub(b"enc", 32), sub(b"mac", 16), sub(b"index", 16))
