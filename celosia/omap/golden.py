"""Golden model of the BOLT-style oblivious map unit (shared/specs/omap.md).

The model is cycle-level: every command runs one fixed schedule (:class:`~celosia.omap.config.Schedule`)
whatever its op, key, hit/miss or where the item lives, and every host-memory
transaction is recorded in :attr:`OmapModel.host.log` as ``(cycle, R/W, address,
length)``. The hardware unit must reproduce this log, the responses and the cycle
counts exactly.

Layout (B = N/c bins, K = floor(alpha*B) HBM bins [0, K), M = B-K host pages [K, B)):

* host memory: page ``b`` (bin ``b >= K``) at ``host_base + (b-K)*page_bytes``:
  version (u64 LE) ‖ ChaCha20 ciphertext of P_cap slots ‖ SipHash tag (u64 LE) ‖ zero pad
  to the link width. A slot is valid (u8) ‖ key (LE) ‖ value.
* HBM: key index (buckets of ``bucket_width`` entries, bucket = SipHash(key) under the
  index key; each entry holds d1, d2 and the bin the item is in), one block of
  ``bin_block`` slots per bin (the value store of an HBM bin, the FIFO eviction queue of a
  host page; items in insertion order), per-bin load counters and block fills, per-page
  versions.
* on chip: the ChaCha20 CSPRNG and control.

RNG consumption is data independent: every command draws exactly two distinct pairs, in
this order: the *miss pair* (revealed only if the key is not in the index) and the
*placement pair* (used only if the key exists after the op). Initialisation draws one
placement pair per input item.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Iterable
from typing import NamedTuple

import numpy as np

from celosia.errors import SimulationError
from celosia.omap.config import OmapConfig, Op, Response, Status
from celosia.omap.crypto import (
    ChaChaRNG,
    OmapKeys,
    chacha20_xor,
    derive_keys,
    distinct_pair,
    page_mac,
    page_nonce,
    siphash24,
)
from celosia.omap.memory import HbmChannel, HostMemory, Transaction

__all__ = ["FastRNG", "OmapModel", "QueryRecord"]


class QueryRecord(NamedTuple):
    """One command as the model saw it. ``host`` slices :attr:`OmapModel.host.log`;
    ``hidden`` is the secret-dependent case (for test coverage only, never observable)."""

    start: int
    cycles: int
    host_from: int
    host_to: int
    hidden: dict


class FastRNG:
    """Non-cryptographic RNG with the same ``uniform(n)`` interface (benchmarks at large N only).

    Parameters
    ----------
    seed : int
        numpy PCG64 seed.
    """

    def __init__(self, seed: int):
        self._g = np.random.default_rng(seed)
        self._buf: list[int] = []

    def u32(self) -> int:
        if not self._buf:
            self._buf = self._g.integers(0, 1 << 32, 4096, dtype=np.uint64).tolist()
        return self._buf.pop()

    def uniform(self, n: int) -> int:
        limit = ((1 << 32) // n) * n
        while True:
            r = self.u32()
            if r < limit:
                return r % n


class _Entry:
    """Index entry: candidate bins and the bin holding the item."""

    __slots__ = ("bin", "bucket", "d1", "d2")

    def __init__(self, d1: int, d2: int, bin_: int, bucket: int):
        self.d1, self.d2, self.bin, self.bucket = d1, d2, bin_, bucket


class _Fatal(Exception):
    def __init__(self, status: Status):
        self.status = status


class OmapModel:
    """Cycle-level golden model of the oblivious map unit.

    Parameters
    ----------
    config : OmapConfig
        Validated parameters.
    seed : int
        Derives the four keys (see :func:`celosia.omap.crypto.derive_keys`).
    rng : object, optional
        Anything with ``uniform(n)``; default the ChaCha20 CSPRNG of the keys. Tests inject
        enumerating RNGs here.
    crypto : bool
        ``False`` stores pages in plaintext with a zero tag and uses a cheap index hash:
        trace-only statistics and large benchmarks. Addresses, lengths and cycles are
        identical either way; never for deployment.

    Notes
    -----
    Call :meth:`initialise` before the first command (it writes every page once).
    """

    def __init__(self, config: OmapConfig, seed: int = 0, rng=None, crypto: bool = True,
                 keys: OmapKeys | None = None):
        self.cfg = config
        self.keys = keys or derive_keys(seed)
        self.rng = rng if rng is not None else ChaChaRNG(self.keys.rng)
        self.crypto = crypto
        self.sched = config.schedule
        self.host = HostMemory(config.host_base + config.host_bytes, config.timing)
        self.hbm = {name: HbmChannel(name, config.timing) for name in ("index", "blocks", "meta")}
        k, b = config.hbm_bins, config.bins
        self.K, self.B = k, b
        self.index: dict[int, _Entry] = {}
        self.bucket_fill = [0] * config.buckets
        self.hbm_store: dict[int, bytes] = {}  # values of items in HBM bins
        self.queues: dict[int, deque] = {}  # host bin -> FIFO of (key, value)
        self.queued = 0
        self.loads = [0] * b
        self.versions = [0] * config.host_pages
        self.cycle = 0
        self.halted: Status | None = None
        self.initialised = False
        self.queries: list[QueryRecord] = []
        self.peak_hbm_items = 0
        self.peak_queued = 0
        self.peak_page_load = 0
        self.peak_block_fill = 0
        self._zero = bytes(config.value_bytes)
        self._mul = (siphash24(self.keys.index, b"fast") | 1) & 0xFFFFFFFFFFFFFFFF

    # -- helpers ---------------------------------------------------------------------
    def _bucket(self, key: int) -> int:
        mask = self.cfg.buckets - 1
        if self.crypto:
            return siphash24(self.keys.index, key.to_bytes(self.cfg.key_bytes, "little")) & mask
        return ((key * self._mul) & 0xFFFFFFFFFFFFFFFF) >> 32 & mask

    def page_address(self, b: int) -> int:
        """Host byte address of the page of host bin ``b``."""
        return self.cfg.host_base + (b - self.K) * self.cfg.page_bytes

    def block_fill(self, b: int) -> int:
        """Slots in use in bin ``b``'s HBM block: all its items (HBM bin) or its queue (host page)."""
        return self.loads[b] if b < self.K else len(self.queues.get(b, ()))

    def hbm_items(self) -> int:
        """Items held in HBM now (HBM bins + eviction queues)."""
        return len(self.hbm_store) + self.queued

    def _track(self) -> None:
        self.peak_hbm_items = max(self.peak_hbm_items, self.hbm_items())
        self.peak_queued = max(self.peak_queued, self.queued)

    def _nonce_version(self, page: int, version: int) -> int:
        """The version that enters the page nonce (hook; the nonce-reuse control overrides it)."""
        return version

    def _encode(self, m: int, version: int, slots: list) -> bytes:
        cfg = self.cfg
        pt = bytearray()
        for s in slots:
            if s is None:
                pt += bytes(cfg.slot_bytes)
            else:
                pt += b"\x01" + s[0].to_bytes(cfg.key_bytes, "little") + s[1]
        if self.crypto:
            ct = chacha20_xor(self.keys.enc, page_nonce(m, self._nonce_version(m, version)), bytes(pt))
            tag = page_mac(self.keys.mac, m, version, ct)
        else:
            ct, tag = bytes(pt), 0
        page = struct.pack("<Q", version) + ct + struct.pack("<Q", tag)
        return page + bytes(cfg.page_bytes - len(page))

    def _decode(self, m: int, raw: bytes) -> list:
        """Verify and decrypt a page; raises :class:`_Fatal` on any integrity failure."""
        cfg = self.cfg
        (version,) = struct.unpack_from("<Q", raw, 0)
        ct = raw[8:8 + cfg.ct_bytes]
        (tag,) = struct.unpack_from("<Q", raw, 8 + cfg.ct_bytes)
        if self.crypto:
            # the trusted version in HBM catches replays, the page id in the MAC catches swaps
            if version != self.versions[m] or tag != page_mac(self.keys.mac, m, version, ct):
                raise _Fatal(Status.FATAL_INTEGRITY)
            pt = chacha20_xor(self.keys.enc, page_nonce(m, self._nonce_version(m, version)), ct)
        else:
            pt = ct
        slots = []
        kb, sb = cfg.key_bytes, cfg.slot_bytes
        for i in range(cfg.p_cap):
            s = pt[i * sb:(i + 1) * sb]
            slots.append((int.from_bytes(s[1:1 + kb], "little"), bytes(s[1 + kb:])) if s[0] else None)
        return slots

    def _parse(self, cmd) -> tuple[int, int, bytes | None] | None:
        """Validate a command; ``None`` if malformed (answered BAD_COMMAND on the same schedule)."""
        cfg = self.cfg
        try:
            op, key, value = cmd
        except (TypeError, ValueError):
            return None
        if isinstance(op, bool) or not isinstance(op, int) or op not in (0, 1, 2):
            return None
        if isinstance(key, (bytes, bytearray)):
            if len(key) != cfg.key_bytes:
                return None
            key = int.from_bytes(key, "little")
        if isinstance(key, bool) or not isinstance(key, int) or not 0 <= key < (1 << cfg.key_bits):
            return None
        if op == Op.PUT:
            if not isinstance(value, (bytes, bytearray)) or len(value) != cfg.value_bytes:
                return None
            value = bytes(value)
        elif value not in (None, b""):
            return None
        return int(op), key, value

    # -- initialisation ------------------------------------------------------------
    def initialise(self, items: Iterable[tuple[int, bytes]] = ()) -> Status:
        """Build the layout in one sequential pass; the host trace depends only on N.

        The unit ingests N input slots (``schedule.ingest`` cycles each; the stream is
        padded with empty slots), places each item with two choices (HBM bins directly into
        the pool, host-bound items queued for their page), then writes pages 0..M-1 once
        each in address order, one every ``schedule.init_page`` cycles (flush, keystream,
        encrypt, MAC); items beyond a page's P_cap stay queued.

        Parameters
        ----------
        items : iterable of (int, bytes)
            At most N distinct keys; a repeated key keeps its last value.

        Returns
        -------
        Status
            OK, or FATAL_CAPACITY if the HBM item bound was exceeded or an item found its
            bin's block full (it is dropped; the unit halts at the end of the pass).
        """
        cfg = self.cfg
        if self.initialised:
            raise SimulationError("the oblivious map is already initialised", hint="create a new model")
        staged: dict[int, list] = {}
        status = Status.OK
        count = 0
        for key, value in items:
            parsed = self._parse((Op.PUT, key, value))
            if parsed is None:
                raise SimulationError(
                    f"initial item with key {key!r} does not fit key_bits={cfg.key_bits} / value_bytes={cfg.value_bytes}")
            _, key, value = parsed
            n1, n2 = distinct_pair(self.rng, self.B)
            old = self.index.get(key)
            if old is not None:  # repeated key: drop the earlier copy
                self.loads[old.bin] -= 1
                if old.bin < self.K:
                    del self.hbm_store[key]
                else:
                    staged[old.bin] = [s for s in staged[old.bin] if s[0] != key]
                bucket = old.bucket
            else:
                count += 1
                if count > cfg.n:
                    raise SimulationError(f"more than N={cfg.n} initial items")
                bucket = self._bucket(key)
                if self.bucket_fill[bucket] >= cfg.bucket_width:
                    raise SimulationError(
                        f"index bucket {bucket} full ({cfg.bucket_width} entries) during initialisation",
                        hint="raise bucket_width or lower index_load")
                self.bucket_fill[bucket] += 1
            dest = n1 if self.loads[n1] <= self.loads[n2] else n2
            fill = self.loads[dest] if dest < self.K else len(staged.get(dest, ()))
            if fill >= cfg.bin_block:  # the block is full: the item is dropped, the pass ends fatal
                status = Status.FATAL_CAPACITY
                self.index.pop(key, None)
                self.bucket_fill[bucket] -= 1
                continue
            self.peak_block_fill = max(self.peak_block_fill, fill + 1)
            self.loads[dest] += 1
            self.index[key] = _Entry(n1, n2, dest, bucket)
            if dest < self.K:
                self.hbm_store[key] = value
            else:
                staged.setdefault(dest, []).append((key, value))
        t = self.cycle + cfg.n * self.sched.ingest  # ingest: N slots at a fixed pace
        pb = self.sched.init_page
        for m in range(cfg.host_pages):
            b = self.K + m
            mine = staged.get(b, [])
            slots = mine[:cfg.p_cap] + [None] * max(0, cfg.p_cap - len(mine))
            if len(mine) > cfg.p_cap:
                self.queues[b] = deque(mine[cfg.p_cap:])
                self.queued += len(mine) - cfg.p_cap
            self.peak_page_load = max(self.peak_page_load, min(len(mine), cfg.p_cap))
            self.versions[m] = 1
            # page m is built (flush, keystream, encrypt, MAC) in the slot before its write
            self.host.write(t + (m + 1) * pb, self.page_address(b), self._encode(m, 1, slots))
        self.cycle = t + cfg.host_pages * pb + 1
        self._track()
        if self.hbm_items() > cfg.hbm_items or self.queued > cfg.queue_items:
            status = Status.FATAL_CAPACITY
        if status != Status.OK:
            self.halted = status
        self.initialised = True
        return status

    # -- hooks overridden by the negative controls in the tests --------------------
    def _visit(self, entry: _Entry | None, miss_pair: tuple[int, int]) -> tuple[int, ...]:
        """Bins whose pages / HBM state this command touches: the key's pair, or the miss pair."""
        return (entry.d1, entry.d2) if entry is not None else miss_pair

    def _skip_pages(self, entry: _Entry | None) -> bool:
        """True to answer without touching pages (only the early-exit control says yes)."""
        return False

    def _must_write(self, changed: bool) -> bool:
        """Whether a read page is written back (always: the skip-unchanged control differs)."""
        return True

    # -- one command -----------------------------------------------------------------
    def execute(self, cmd) -> Response:
        """Run one command ``(op, key, value)`` on the fixed schedule and return its response.

        ``value`` is ``None`` for GET and DELETE and ``value_bytes`` bytes for PUT; the key is
        an int below ``2**key_bits`` or ``key_bytes`` little-endian bytes. Anything else is
        answered ``BAD_COMMAND`` after the same host-visible work as a GET miss.
        """
        if not self.initialised:
            raise SimulationError("the oblivious map is not initialised", hint="call initialise() first")
        start, host_from = self.cycle, len(self.host.log)
        if self.halted is not None:  # fail closed: no memory traffic at all
            self.cycle += 2
            self.queries.append(QueryRecord(start, 2, host_from, host_from, {"halted": True}))
            return Response(self.halted, self._zero)
        hidden: dict = {}
        try:
            resp, cycles = self._execute(cmd, start, hidden)
        except _Fatal as f:
            self.halted = f.status
            resp, cycles = Response(f.status, self._zero), self.sched.latency
        hidden["status"] = resp.status
        self.cycle = start + cycles
        self.queries.append(QueryRecord(start, cycles, host_from, len(self.host.log), hidden))
        self._track()
        return resp

    def _execute(self, cmd, t0: int, hidden: dict) -> tuple[Response, int]:
        cfg, s, K = self.cfg, self.sched, self.K
        parsed = self._parse(cmd)
        hidden["bad"] = parsed is None
        op, key, value = parsed if parsed is not None else (None, None, None)
        # step 1: index lookup -- the whole bucket is read (and later written) whatever the key
        bucket = self._bucket(key) if key is not None else 0
        self.hbm["index"].record(t0, "R", bucket * cfg.bucket_bytes, cfg.bucket_bytes)
        miss_pair = distinct_pair(self.rng, self.B)
        place_pair = distinct_pair(self.rng, self.B)
        entry = self.index.get(key) if key is not None else None
        hidden.update(op=op, hit=entry is not None, where=None, flushed=[], overflow=False,
                      bucket_full=entry is None and key is not None and self.bucket_fill[bucket] >= cfg.bucket_width)
        if entry is not None:
            hidden["where"] = "hbm" if entry.bin < K else (
                "queue" if any(k == key for k, _ in self.queues.get(entry.bin, ())) else "page")
        if self._skip_pages(entry):
            taken = self._take_hbm_or_queue(entry, key)
            return self._finish(op, key, value, entry, taken, place_pair, bucket, t0, hidden), s.read1 + 1
        # step 2: both bins of the pair; host pages read whole, then written whole
        bins = self._visit(entry, miss_pair)
        taken = None
        pages = []
        block = cfg.bin_block * cfg.slot_bytes
        for i, d in enumerate(bins):  # both bins' blocks are fetched and written back whole
            self.hbm["blocks"].record(t0 + s.read1, "R", d * block, block)
            self.hbm["blocks"].record(t0 + s.respond, "W", d * block, block)
            if d < K:
                if entry is not None and entry.bin == d and taken is None:
                    taken = self.hbm_store.pop(key)
                    self.loads[d] -= 1
                continue
            m = d - K
            raw = self.host.read(t0 + (s.read1, s.read2)[i], self.page_address(d), cfg.page_bytes)
            pages.append((i, d, m, raw))
        decoded = [(i, d, m, self._decode(m, raw)) for i, d, m, raw in pages]  # all verified before any write
        done: dict[int, list] = {}
        for i, d, m, slots in decoded:
            changed = False
            if d in done:  # only a broken variant visits a page twice: re-write what the first visit left
                slots = done[d]
            elif entry is not None and entry.bin == d:
                for j, sl in enumerate(slots):
                    if sl is not None and sl[0] == key:
                        taken, slots[j], changed = sl[1], None, True
                q = self.queues.get(d)
                if taken is None and q:
                    for it in list(q):
                        if it[0] == key:
                            q.remove(it)
                            self.queued -= 1
                            taken = it[1]
                if taken is not None:
                    self.loads[d] -= 1
            flushed = 0
            q = self.queues.get(d) if d not in done else None
            done[d] = slots
            while q:
                try:
                    j = slots.index(None)
                except ValueError:
                    break
                slots[j] = q.popleft()
                self.queued -= 1
                flushed += 1
                changed = True
            hidden["flushed"].append(flushed)
            hidden["overflow"] |= bool(q)
            self.peak_page_load = max(self.peak_page_load, sum(x is not None for x in slots))
            if self._must_write(changed):
                self.versions[m] += 1
                self.host.write(t0 + (s.write1, s.write2)[i], self.page_address(d),
                                self._encode(m, self.versions[m], slots))
        self.hbm["meta"].record(t0 + s.read1, "R", 0, 8)  # versions and loads of the pair
        return self._finish(op, key, value, entry, taken, place_pair, bucket, t0, hidden), s.latency

    def _take_hbm_or_queue(self, entry, key):
        """Early-exit control only: take the item without touching a page if it is in HBM."""
        if entry is None:
            return None
        if entry.bin < self.K:
            self.loads[entry.bin] -= 1
            return self.hbm_store.pop(key)
        q = self.queues.get(entry.bin) or ()
        for it in list(q):
            if it[0] == key:
                q.remove(it)
                self.queued -= 1
                self.loads[entry.bin] -= 1
                return it[1]
        raise _Fatal(Status.FATAL_CAPACITY)  # in a page: this broken variant cannot proceed

    def _finish(self, op, key, value, entry, taken, place_pair, bucket, t0, hidden) -> Response:
        """Step 3: apply the op, re-place a surviving item with the placement pair, update the index."""
        cfg = self.cfg
        self.hbm["index"].record(t0 + self.sched.write1, "W", bucket * cfg.bucket_bytes, cfg.bucket_bytes)
        if op is None:
            return Response(Status.BAD_COMMAND, self._zero)
        if entry is not None and taken is None:
            raise SimulationError(f"model invariant: key {key} indexed in bin {entry.bin} but not found there")
        out, keep = Response(Status.OK, self._zero), None
        if op == Op.GET:
            if entry is None:
                out = Response(Status.NOT_FOUND, self._zero)
            else:
                out, keep = Response(Status.OK, taken), taken
        elif op == Op.PUT:
            if entry is None and (len(self.index) >= cfg.n or self.bucket_fill[bucket] >= cfg.bucket_width):
                out = Response(Status.FULL, self._zero)
            else:
                keep = value
        else:  # DELETE
            if entry is None:
                out = Response(Status.NOT_FOUND, self._zero)
            else:
                del self.index[key]
                self.bucket_fill[bucket] -= 1
        if keep is None:
            return out
        n1, n2 = place_pair
        dest = n1 if self.loads[n1] <= self.loads[n2] else n2
        if self.block_fill(dest) >= cfg.bin_block:
            raise _Fatal(Status.FATAL_CAPACITY)
        self.peak_block_fill = max(self.peak_block_fill, self.block_fill(dest) + 1)
        if dest < self.K:
            if self.hbm_items() + 1 > cfg.hbm_items:
                raise _Fatal(Status.FATAL_CAPACITY)
            self.hbm_store[key] = keep
        else:
            if self.hbm_items() + 1 > cfg.hbm_items or self.queued + 1 > cfg.queue_items:
                raise _Fatal(Status.FATAL_CAPACITY)
            self.queues.setdefault(dest, deque()).append((key, keep))
            self.queued += 1
        self.loads[dest] += 1
        if entry is None:
            entry = self.index[key] = _Entry(n1, n2, dest, bucket)
            self.bucket_fill[bucket] += 1
        else:
            entry.d1, entry.d2, entry.bin = n1, n2, dest
        return out

    # -- views -------------------------------------------------------------------------
    def host_trace(self, q: QueryRecord, relative: bool = True) -> tuple[Transaction, ...]:
        """The host transactions of one command (cycles relative to its start by default)."""
        log = self.host.log[q.host_from:q.host_to]
        if not relative:
            return tuple(log)
        return tuple(Transaction(t.cycle - q.start, t.rw, t.address, t.length) for t in log)

    def contents(self) -> dict[int, bytes]:
        """All items (key -> value), read from HBM state and by decrypting every page (no trace)."""
        out = dict(self.hbm_store)
        for q in self.queues.values():
            out.update(q)
        for m in range(self.cfg.host_pages):
            raw = self.host.snapshot(self.page_address(self.K + m), self.cfg.page_bytes)
            for s in self._decode(m, raw):
                if s is not None:
                    out[s[0]] = s[1]
        return out
