"""Configuration of the oblivious map unit: commands, statuses, parameters, schedule.

:class:`OmapConfig` validates one unit's parameters and derives its sizes (bins, pages, index,
HBM footprint); :class:`Schedule` is the fixed per-command timing every implementation (the
golden model :mod:`celosia.omap.golden`, the RTL :mod:`celosia.omap.rtl`) follows. Layout and
terms are those of ``shared/specs/omap.md`` (see also ``docs/omap.md``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import IntEnum
from typing import NamedTuple

from celosia.errors import HardwareGenerationError
from celosia.omap.memory import MemoryTiming

__all__ = ["Op", "OmapConfig", "Response", "Schedule", "Status", "default_p_cap"]


class Op(IntEnum):
    """Command opcodes."""

    GET = 0
    PUT = 1
    DELETE = 2


class Status(IntEnum):
    """Response status codes. ``FATAL_*`` halt the unit (fail closed)."""

    OK = 0
    NOT_FOUND = 1
    FULL = 2  # map holds N items, or the key's index bucket is full: PUT refused
    BAD_COMMAND = 3
    FATAL_CAPACITY = 4
    FATAL_INTEGRITY = 5

    @property
    def fatal(self) -> bool:
        return self >= Status.FATAL_CAPACITY


class Response(NamedTuple):
    """Fixed-size response: status and exactly ``value_bytes`` bytes (zeros unless a GET hit)."""

    status: Status
    value: bytes


def default_p_cap(n: int, c: int) -> int:
    """The spec's page capacity ``ceil(c + log2 log2 N + 1)`` (13 for N <= 2**16, c = 8)."""
    return math.ceil(c + math.log2(max(math.log2(max(n, 4)), 1.0)) + 1)


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _valid_n(n, c: int) -> list[int]:
    """The valid capacities nearest ``n``: multiples of ``c`` giving at least two bins."""
    lo = n - n % c if _is_int(n) else 0
    near = [x for x in (lo, lo + c) if x >= 2 * c and x != n]
    return near or [2 * c]


def _next_pow2(x: int) -> int:
    return 1 << max(0, (x - 1).bit_length())


@dataclass(frozen=True)
class OmapConfig:
    """Parameters of one oblivious-map unit; validated on construction.

    Parameters
    ----------
    n : int
        Capacity N (items). Must be a multiple of ``c``.
    value_bytes : int
        Value length V in bytes.
    c : int
        Mean items per bin (default 8).
    alpha : float
        Fraction of bins kept in HBM (default 0.2); K = floor(alpha * B).
    p_cap : int, optional
        Slots per host page; default ``ceil(c + log2 log2 N + 1)``. Must exceed ``c``.
    key_bits : int
        Key width (default 64).
    bucket_width : int
        Index entries per bucket, always scanned in full (default 32).
    index_load : int
        Mean keys per bucket at full load; buckets = next_pow2(ceil(N / index_load)).
    hbm_items : int, optional
        Most items held in HBM at once (values of HBM bins + eviction queues); default
        ``ceil((alpha + 1/12) * N)`` (297,097 at N = 2**20, alpha = 0.2, within 0.13 % of the
        spec's bound 296,720). Exceeding it is fatal.
    queue_items : int, optional
        Most items queued for host pages at once; default ``hbm_items``.
    bin_block : int, optional
        Slots of each bin's HBM block (the whole bin of an HBM bin, the eviction queue of a
        host page); default ``2 * P_cap``. A placement into a full block is fatal: with two
        choices a bin's load stays within c + log2 log2 B + O(1) (12 measured at N = 2^16
        under churn, P_cap = 13), so twice P_cap is never reached in practice.
    hbm_bytes : int
        HBM budget of the unit (default 16 GiB, an Alveo U55C).
    timing : MemoryTiming
        Clock and memory latencies.
    host_base : int
        Byte address of page 0 in host memory.
    """

    n: int
    value_bytes: int = 8
    c: int = 8
    alpha: float = 0.2
    p_cap: int | None = None
    key_bits: int = 64
    bucket_width: int = 32
    index_load: int = 8
    hbm_items: int | None = None
    queue_items: int | None = None
    bin_block: int | None = None
    hbm_bytes: int = 16 << 30
    timing: MemoryTiming = field(default_factory=MemoryTiming)
    host_base: int = 0

    def __post_init__(self):
        n, c = self.n, self.c
        if not _is_int(n) or n <= 0 or not _is_int(c) or c <= 0:
            raise HardwareGenerationError(
                f"capacity N={n} and c={c} must be positive integers",
                hint="c is the mean number of items per bin, a positive integer (default 8)"
                if not _is_int(c) or c <= 0 else f"use N={' or N='.join(map(str, _valid_n(n, c)))}",
            )
        if n % c or n // c < 2:
            what = (f"capacity N={n} is not a multiple of c={c} (bins B = N/c must be whole)" if n % c else
                    f"capacity N={n} with c={c} gives B={n // c} bin; a distinct pair of bins needs B >= 2")
            raise HardwareGenerationError(what, hint=f"use N={' or N='.join(map(str, _valid_n(n, c)))}")
        if not 0.0 <= self.alpha < 1.0:
            raise HardwareGenerationError(f"alpha={self.alpha} must be in [0, 1)", hint="alpha is the HBM fraction of bins, e.g. 0.2")
        if not _is_int(self.value_bytes) or self.value_bytes < 1:
            raise HardwareGenerationError(f"value_bytes={self.value_bytes} must be a positive integer",
                                          hint="every value is exactly this many bytes, e.g. 8")
        if not _is_int(self.key_bits) or not 1 <= self.key_bits <= 128:
            raise HardwareGenerationError(f"key_bits={self.key_bits} must be an integer in [1, 128]",
                                          hint="keys are unsigned integers of this width (default 64)")
        if self.p_cap is None:
            object.__setattr__(self, "p_cap", default_p_cap(n, c))
        if self.p_cap <= c:
            raise HardwareGenerationError(
                f"P_cap={self.p_cap} slots per page is too small: it must exceed c={c}, the mean bin load, "
                f"or the eviction queues grow without bound",
                hint=f"use the default P_cap = ceil(c + log2 log2 N + 1) = {default_p_cap(n, c)}",
            )
        if self.bucket_width < 1 or self.index_load < 1:
            raise HardwareGenerationError(f"bucket_width={self.bucket_width} and index_load={self.index_load} must be >= 1")
        if self.hbm_items is None:
            object.__setattr__(self, "hbm_items", math.ceil((self.alpha + 1 / 12) * n))
        if self.queue_items is None:
            object.__setattr__(self, "queue_items", self.hbm_items)
        if self.bin_block is None:
            object.__setattr__(self, "bin_block", 2 * self.p_cap)
        if self.hbm_items < 1 or self.queue_items < 1 or self.bin_block < 1:
            raise HardwareGenerationError(f"hbm_items={self.hbm_items}, queue_items={self.queue_items} and "
                                          f"bin_block={self.bin_block} must be >= 1")
        need = self.hbm_footprint()
        if need["total"] > self.hbm_bytes:
            parts = ", ".join(f"{k} {v}" for k, v in need.items() if k != "total")
            raise HardwareGenerationError(
                f"HBM budget too small: N={n} needs {need['total']} bytes ({parts}) but hbm_bytes={self.hbm_bytes}",
                hint="raise hbm_bytes, lower N, or lower hbm_items / bucket_width",
            )

    # -- derived sizes -------------------------------------------------------------
    @property
    def bins(self) -> int:
        """B = N / c."""
        return self.n // self.c

    @property
    def hbm_bins(self) -> int:
        """K = floor(alpha * B) bins held in HBM (bins [0, K))."""
        return int(self.alpha * self.bins)

    @property
    def host_pages(self) -> int:
        """M = B - K host pages (bins [K, B))."""
        return self.bins - self.hbm_bins

    @property
    def key_bytes(self) -> int:
        return (self.key_bits + 7) // 8

    @property
    def slot_bytes(self) -> int:
        """valid (1) + key + value."""
        return 1 + self.key_bytes + self.value_bytes

    @property
    def ct_bytes(self) -> int:
        """Ciphertext bytes of one page."""
        return self.p_cap * self.slot_bytes

    @property
    def page_bytes(self) -> int:
        """version (8) + ciphertext + tag (8), padded to the host link width."""
        w = self.timing.host_bytes_per_cycle
        return -(-(16 + self.ct_bytes) // w) * w

    @property
    def buckets(self) -> int:
        return _next_pow2(-(-self.n // self.index_load))

    @property
    def entry_bytes(self) -> int:
        """Index entry: valid + key + d1, d2, bin (u32 each), rounded to 8 bytes."""
        return -(-(1 + self.key_bytes + 12) // 8) * 8

    @property
    def bucket_bytes(self) -> int:
        return self.bucket_width * self.entry_bytes

    @property
    def host_bytes(self) -> int:
        """Host memory the pages occupy."""
        return self.host_pages * self.page_bytes

    def hbm_footprint(self) -> dict:
        """HBM bytes per region (the bin blocks also stage host-bound items during initialisation)."""
        f = {
            "index": self.buckets * self.bucket_bytes,
            "bin_blocks": self.bins * self.bin_block * self.slot_bytes,
            "loads": self.bins * 8,  # load and block fill, u32 each
            "versions": self.host_pages * 8,
        }
        f["total"] = sum(f.values())
        return f

    @property
    def schedule(self) -> Schedule:
        return Schedule.of(self)

    def summary(self) -> dict:
        """Parameters, derived sizes and the schedule, JSON-ready."""
        s = self.schedule
        return {
            "n": self.n, "c": self.c, "alpha": self.alpha, "p_cap": self.p_cap, "key_bits": self.key_bits,
            "value_bytes": self.value_bytes, "bins": self.bins, "hbm_bins": self.hbm_bins,
            "host_pages": self.host_pages, "page_bytes": self.page_bytes, "slot_bytes": self.slot_bytes,
            "bucket_width": self.bucket_width, "buckets": self.buckets, "hbm_items": self.hbm_items,
            "queue_items": self.queue_items, "bin_block": self.bin_block, "hbm_footprint": self.hbm_footprint(), "host_bytes": self.host_bytes,
            "clock_mhz": self.timing.clock_mhz, "host_latency_cycles": self.timing.host_latency,
            "hbm_latency_cycles": self.timing.hbm_latency, "schedule": s._asdict(),
            "latency_us": s.latency / self.timing.clock_mhz,
            "blocks_per_query_expected": self.expected_blocks(), "blocks_per_query_worst": 4 * self.p_cap,
        }

    def expected_blocks(self) -> float:
        """Expected host blocks (slots) moved per query: 2*P_cap per host bin of a uniform distinct pair."""
        b, m = self.bins, self.host_pages
        return 2 * self.p_cap * 2 * m / b


class Schedule(NamedTuple):
    """Cycle offsets of one command, from the cycle it is accepted (fixed per config).

    ``read1``/``read2``: host page read issue; ``verify``: both pages authenticated;
    ``write1``/``write2``: write-back issue; ``respond``: response valid; ``latency``: cycles
    until the next command is accepted. ``ingest`` and ``init_page`` are the initialisation
    pass's cycles per input slot and per page written.

    The windows are those of the RTL datapath (:mod:`celosia.omap.rtl.unit`): SipHash-2-4 absorbs one word per
    cycle and finalizes in two, the ChaCha20 core makes a 64-byte block every 24 cycles, the
    index bucket is scanned one entry per cycle, the eviction queue moves one item per three
    cycles, the two bins' HBM blocks stream in one slot per cycle once the pair is known (after
    the previous command's write-backs are acknowledged). Each window is the larger of what the
    modelled memories and the datapath need.
    """

    index_read: int
    read1: int
    read2: int
    verify: int
    write1: int
    write2: int
    respond: int
    latency: int
    ingest: int
    init_page: int

    @staticmethod
    def of(cfg: OmapConfig) -> Schedule:
        t = cfg.timing
        pb = t.host_beats(cfg.page_bytes)
        mac = (12 + cfg.ct_bytes) // 8 + 1 + 2 + 3  # words + finalization + handshakes
        hash_ = cfg.key_bytes // 8 + 1 + 2 + 3
        ks_blocks = -(-cfg.ct_bytes // 64)
        chacha = 24  # a block every 22 cycles plus the request and store handshakes
        pairs = 2 * (chacha + 4)  # the sampler may need a refill for the second pair
        front = hash_ + pairs + cfg.bucket_width + 8  # hash, two pairs, full bucket scan, decide
        # the key's bucket is fetched once its hash is known (one entry per beat from HBM) and
        # scanned as it streams in
        idx_done = hash_ + t.hbm_latency + cfg.bucket_width + 8
        read1 = max(idx_done, front) + 1
        read2 = read1 + pb  # issued so the two pages' data beats do not overlap on the link
        # the keystreams start once both page versions are back from HBM
        ks_start = read1 + t.hbm_latency + 6
        data_end = max(read2 + t.host_latency + pb, ks_start + 2 * ks_blocks * chacha + 4)
        # both bins' blocks (2q slots) are fetched with the versions, once the previous
        # command's block write-backs (issued before its response) are acknowledged; a block
        # of the other region (value store / eviction queues) starts after the first has arrived
        q = cfg.bin_block
        prev_writes = 2 * q + t.hbm_latency + 4
        blocks = max(read1, prev_writes) + 2 * (t.hbm_latency + q) + 8
        verify = max(data_end + mac + 4, blocks)  # both MACs in parallel, then compare and decrypt
        # take + flush of both pages, then encrypt (keystream of the next version precomputed
        # during the read wait) and MAC the new ciphertext: the tag closes the page.
        merged = verify + 2 * (3 * cfg.p_cap + 12)
        write1 = max(merged, ks_start + 4 * ks_blocks * chacha + 4) + mac + 4
        write2 = write1 + pb
        respond = write2 + pb + 16  # placement: loads, pool, queue, index
        # a repeated initial key drops its earlier copy from its bin's block (fetch, rewrite)
        ingest = hash_ + max(pairs // 2, t.hbm_latency + 2) + cfg.bucket_width + 24 + t.hbm_latency + q + 8
        # a page is built from its block: fetch, flush, keystream, encrypt, MAC
        init_page = max(pb, t.hbm_latency + q + 4 + 3 * cfg.p_cap + 8 + ks_blocks * chacha + mac + 8)
        return Schedule(0, read1, read2, verify, write1, write2, respond, respond + 1, ingest, init_page)
