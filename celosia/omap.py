"""Oblivious map (BOLT-style): a host API and the generation entry point of ``celosia omap``.

:class:`Client` drives the unit in simulation with get / put / delete / batch. Today the
only backend is the cycle-level golden model (:mod:`celosia.sim.omap`); the RTL unit is
not generated yet (see docs/omap.md), so :func:`generate` writes the validated unit
configuration and its report (sizes, page layout, schedule, bounds, a measured
self-check run) but no Verilog.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

from celosia.errors import CelosiaError, OutputExistsError, SimulationError
from celosia.sim.omap import OmapConfig, OmapModel, Op, Response, Status

__all__ = ["Client", "OmapStatusError", "generate"]


class OmapStatusError(CelosiaError):
    """The unit answered a command with an error status (bad command, full map, fatal)."""


class Client:
    """Key-value client of an oblivious map unit running in simulation.

    Parameters
    ----------
    capacity : int
        N, the most items the map holds (a multiple of ``c``).
    value_bytes : int
        Value length in bytes; every value is exactly this long.
    alpha : float
        Fraction of bins kept in HBM.
    items : iterable of (int, bytes), optional
        Initial contents, loaded in the unit's one sequential initialisation pass.
    seed : int
        Key-derivation seed of the simulated unit.
    backend : str
        ``"golden"`` (the only one available: the RTL is not generated yet).
    **config
        Further :class:`~celosia.sim.omap.OmapConfig` parameters (``c``, ``p_cap``, ``key_bits``, ...).

    Examples
    --------
    >>> c = Client(1024, value_bytes=4)
    >>> c.put(7, b"abcd"); c.get(7)
    b'abcd'
    """

    def __init__(self, capacity: int, value_bytes: int = 8, *, alpha: float = 0.2, items=(), seed: int = 0,
                 backend: str = "golden", **config):
        if backend != "golden":
            raise CelosiaError(f"unknown oblivious-map backend {backend!r}",
                               hint="only 'golden' exists: the RTL unit is not generated yet")
        self.config = OmapConfig(n=capacity, value_bytes=value_bytes, alpha=alpha, **config)
        self.model = OmapModel(self.config, seed=seed)
        status = self.model.initialise(items)
        if status != Status.OK:
            raise OmapStatusError(f"initialisation failed with {status.name}",
                                  hint="raise hbm_items / queue_items")

    def _run(self, cmd) -> Response:
        resp = self.model.execute(cmd)
        if resp.status in (Status.OK, Status.NOT_FOUND):
            return resp
        hints = {
            Status.BAD_COMMAND: f"keys are ints below 2**{self.config.key_bits}, values exactly "
                                f"{self.config.value_bytes} bytes",
            Status.FULL: f"the map holds N={self.config.n} items or the key's index bucket is full",
        }
        raise OmapStatusError(f"command {cmd!r} answered {resp.status.name}",
                              hint=hints.get(resp.status, "the unit halted (fail closed); create a new one"))

    def get(self, key: int) -> bytes | None:
        """The value of ``key``, or ``None`` if absent."""
        resp = self._run((Op.GET, key, None))
        return resp.value if resp.status == Status.OK else None

    def put(self, key: int, value: bytes) -> None:
        """Insert or update ``key`` (the host cannot tell which)."""
        self._run((Op.PUT, key, value))

    def delete(self, key: int) -> bool:
        """Remove ``key``; True if it was present."""
        return self._run((Op.DELETE, key, None)).status == Status.OK

    def batch(self, commands) -> list[Response]:
        """Run ``(op, key, value)`` commands back to back; raw responses, no exceptions for statuses."""
        return [self.model.execute(cmd) for cmd in commands]

    @property
    def cycles(self) -> int:
        """Unit clock cycles elapsed (initialisation included)."""
        return self.model.cycle

    @property
    def host_log(self):
        """Every host-memory transaction so far: (cycle, R/W, address, length)."""
        return list(self.model.host.log)


def _self_check(cfg: OmapConfig, queries: int, seed: int = 1) -> dict:
    """Run a short mixed workload on the golden model and measure what the host sees."""
    m = OmapModel(cfg, seed=seed, crypto=cfg.n <= 4096)
    live = min(cfg.n // 2, 2048)
    m.initialise((k, bytes(cfg.value_bytes)) for k in range(live))
    r = random.Random(seed)
    ref = {k: bytes(cfg.value_bytes) for k in range(live)}
    for _ in range(queries):
        k, op = r.randrange(2 * live), r.choice((Op.GET, Op.PUT, Op.DELETE))
        v = r.randbytes(cfg.value_bytes) if op == Op.PUT else None
        resp = m.execute((op, k, v))
        if op == Op.GET and resp.value != ref.get(k, bytes(cfg.value_bytes)):
            raise SimulationError(f"golden self-check: GET {k} returned a wrong value")
        if op == Op.PUT and resp.status == Status.OK:
            ref[k] = v
        if op == Op.DELETE:
            ref.pop(k, None)
    blocks = [(q.host_to - q.host_from) * cfg.p_cap for q in m.queries]
    return {
        "queries": queries, "encrypted": m.crypto, "blocks_per_query_mean": sum(blocks) / len(blocks),
        "blocks_per_query_max": max(blocks), "cycles_per_query": sorted({q.cycles for q in m.queries}),
        "peak_hbm_items": m.peak_hbm_items, "halted": m.halted is not None,
    }


def generate(capacity: int, value_bytes: int, output, *, alpha: float = 0.2, force: bool = False,
             check_queries: int = 200, progress=None, **config) -> dict:
    """Validate an oblivious-map configuration and write its report to ``output``.

    Parameters
    ----------
    capacity, value_bytes, alpha, **config
        :class:`~celosia.sim.omap.OmapConfig` parameters; impossible ones raise
        :class:`~celosia.errors.HardwareGenerationError` naming the numbers.
    output : str or pathlib.Path
        Folder to create (staged as ``.<name>.partial`` and renamed on success).
    force : bool
        Replace an existing folder.
    check_queries : int
        Commands of the golden-model self-check whose trace figures go into the report.

    Returns
    -------
    dict
        The report (also written as ``report.json``; the configuration as ``config.json``).
    """
    say = progress or (lambda _m: None)
    out = Path(output)
    if out.exists() and not force:
        raise OutputExistsError(f"output folder '{out}' already exists", hint="pass --force to replace it")
    say("validating the configuration")
    cfg = OmapConfig(n=capacity, value_bytes=value_bytes, alpha=alpha, **config)
    staging = out.parent / f".{out.name}.partial"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        summary = cfg.summary()
        say(f"golden-model self-check ({check_queries} commands)")
        report = {
            "unit": "omap", "config": summary, "self_check": _self_check(cfg, check_queries),
            "crypto": {"page_cipher": "ChaCha20 (RFC 8439), nonce = page id u32 LE || version u64 LE",
                       "page_mac": "SipHash-2-4 over page id || version || ciphertext",
                       "csprng": "ChaCha20 keystream, u32 LE words, rejection-sampled uniform(n)",
                       "index_hash": "SipHash-2-4 of the key under the index key"},
            "rtl": None,
            "rtl_note": "RTL generation of the oblivious-map unit is not implemented yet; the golden model "
                        "(celosia.sim.omap) is the cycle-level reference the RTL must match",
            "files": {"config": "config.json", "report": "report.json"},
        }
        (staging / "config.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        (staging / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    return report
