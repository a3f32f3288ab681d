"""Memory model of the oblivious map: untrusted host memory and HBM channels.

Every transaction is recorded as a :class:`Transaction` ``(cycle, rw, address, length)``
in issue order. The host log is exactly what the threat model lets the adversary see
(plus ciphertext, which :class:`HostMemory` keeps so tests can tamper with it); the HBM
logs are for debugging and bandwidth accounting only (HBM is on package, unobservable).

Timing: a channel has a round-trip ``latency`` (cycles from issuing a read to its first
data beat) and ``bytes_per_cycle`` (one beat per cycle). The unit's schedule is fixed in
advance from these numbers (see :class:`celosia.omap.config.OmapConfig`), so the model
only needs the constants; it does not arbitrate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

__all__ = ["Channel", "HbmChannel", "HostMemory", "MemoryTiming", "Transaction"]


class Transaction(NamedTuple):
    """One memory transaction as the bus sees it."""

    cycle: int
    rw: str  # "R" or "W"
    address: int
    length: int


@dataclass(frozen=True)
class MemoryTiming:
    """Latency and bandwidth of the modelled memories, in cycles of the unit's clock.

    Parameters
    ----------
    clock_mhz : float
        Unit clock (default 300 MHz).
    host_latency_ns : float
        Host read round trip over PCIe (default 1000 ns).
    host_bytes_per_cycle : int
        Host link width per cycle (default 64 B: 19.2 GB/s at 300 MHz, PCIe Gen4 x16 class).
    hbm_latency_ns : float
        HBM read round trip (default 100 ns).
    hbm_bytes_per_cycle : int
        Per pseudo-channel AXI width (default 32 B, a 256-bit port).
    """

    clock_mhz: float = 300.0
    host_latency_ns: float = 1000.0
    host_bytes_per_cycle: int = 64
    hbm_latency_ns: float = 100.0
    hbm_bytes_per_cycle: int = 32

    @property
    def host_latency(self) -> int:
        """Host round trip in cycles."""
        return math.ceil(self.host_latency_ns * self.clock_mhz / 1000.0)

    @property
    def hbm_latency(self) -> int:
        """HBM round trip in cycles."""
        return math.ceil(self.hbm_latency_ns * self.clock_mhz / 1000.0)

    def host_beats(self, nbytes: int) -> int:
        """Cycles the host link is busy moving ``nbytes``."""
        return max(1, math.ceil(nbytes / self.host_bytes_per_cycle))


class Channel:
    """A byte-addressed memory that records every transaction.

    Parameters
    ----------
    name : str
        Shown in logs.
    size : int
        Bytes.
    latency : int
        Read round trip in cycles.
    bytes_per_cycle : int
        Beat width.
    """

    def __init__(self, name: str, size: int, latency: int, bytes_per_cycle: int):
        self.name = name
        self.data = bytearray(size)
        self.latency = latency
        self.bytes_per_cycle = bytes_per_cycle
        self.log: list[Transaction] = []

    def _check(self, address: int, length: int) -> None:
        if address < 0 or length <= 0 or address + length > len(self.data):
            raise IndexError(f"{self.name}: access [{address}, {address + length}) outside {len(self.data)} bytes")

    def read(self, cycle: int, address: int, length: int) -> bytes:
        """Record and perform a read issued at ``cycle``."""
        self._check(address, length)
        self.log.append(Transaction(cycle, "R", address, length))
        return bytes(self.data[address:address + length])

    def write(self, cycle: int, address: int, payload: bytes) -> None:
        """Record and perform a write issued at ``cycle``."""
        self._check(address, len(payload))
        self.log.append(Transaction(cycle, "W", address, len(payload)))
        self.data[address:address + len(payload)] = payload

    def record(self, cycle: int, rw: str, address: int, length: int) -> None:
        """Record a transaction whose data the model keeps elsewhere (HBM-side state)."""
        self.log.append(Transaction(cycle, rw, address, length))


class HostMemory(Channel):
    """Untrusted host memory holding the encrypted pages.

    The ``tamper_*`` methods are the adversary's moves used by the integrity tests.
    """

    def __init__(self, size: int, timing: MemoryTiming | None = None):
        t = timing or MemoryTiming()
        super().__init__("host", size, t.host_latency, t.host_bytes_per_cycle)

    def tamper_flip(self, address: int, bit: int = 0) -> None:
        """Flip one bit of one byte (no transaction is logged: the adversary's own write)."""
        self.data[address] ^= 1 << bit

    def snapshot(self, address: int, length: int) -> bytes:
        """Copy bytes without logging (to replay later)."""
        return bytes(self.data[address:address + length])

    def tamper_write(self, address: int, payload: bytes) -> None:
        """Overwrite bytes without logging (replay, swap)."""
        self.data[address:address + len(payload)] = payload


class HbmChannel(Channel):
    """One HBM pseudo-channel region (index, item pool, counters, versions).

    The model keeps HBM-side state in Python structures, so HBM channels only record
    transactions (:meth:`Channel.record`) for bandwidth accounting.
    """

    def __init__(self, name: str, timing: MemoryTiming | None = None):
        t = timing or MemoryTiming()
        super().__init__(name, 0, t.hbm_latency, t.hbm_bytes_per_cycle)
