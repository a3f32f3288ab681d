"""Host API of the oblivious map: get / put / delete / batch on a simulated unit.

:class:`Client` runs its commands on the cycle-level golden model (:mod:`celosia.omap.golden`)
and can replay everything it did on the generated RTL (:class:`celosia.omap.rtl.OmapUnit`) on
Verilator, checking responses, cycles, the host transaction log, host memory and the HBM-side
state (:meth:`Client.verify_rtl`, built on :func:`celosia.omap.run_rtl`).
"""

from __future__ import annotations

from celosia.errors import CelosiaError, SimulationError
from celosia.omap.config import OmapConfig, Op, Response, Status
from celosia.omap.golden import OmapModel
from celosia.omap.rtl_run import compare_rtl, run_rtl

__all__ = ["Client", "OmapStatusError"]


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
        ``"golden"``: commands run on the cycle-level golden model; :meth:`verify_rtl` replays
        them on the RTL.
    **config
        Further :class:`~celosia.omap.config.OmapConfig` parameters (``c``, ``p_cap``, ``key_bits``, ...).

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
                               hint="use 'golden' and check the RTL with verify_rtl()")
        self.config = OmapConfig(n=capacity, value_bytes=value_bytes, alpha=alpha, **config)
        self.seed = seed
        self.items = list(items)
        self.history: list = []
        self.model = OmapModel(self.config, seed=seed)
        status = self.model.initialise(self.items)
        if status != Status.OK:
            raise OmapStatusError(f"initialisation failed with {status.name}",
                                  hint="raise hbm_items / queue_items")

    def _exec(self, cmd) -> Response:
        self.history.append(cmd)
        return self.model.execute(cmd)

    def _run(self, cmd) -> Response:
        resp = self._exec(cmd)
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
        return [self._exec(cmd) for cmd in commands]

    def verify_rtl(self, build_dir) -> dict:
        """Replay the initial items and every command so far on the generated RTL (Verilator)
        and check responses, cycles, host log, host memory and HBM state against the model.

        Raises
        ------
        SimulationError
            On any difference. Returns a summary dict otherwise.
        """
        gold = OmapModel(self.config, seed=self.seed)
        gold.initialise(self.items)
        responses = [gold.execute(c) for c in self.history]
        run = run_rtl(self.config, gold.keys, self.items, self.history, build_dir)
        diffs = compare_rtl(gold, run, responses)
        if diffs:
            raise SimulationError(f"RTL differs from the golden model: {'; '.join(diffs)}", hint=f"see {build_dir}")
        return {"commands": len(self.history), "host_transactions": len(run.host_log),
                "cycles": gold.cycle, "rtl_matches_golden": True}

    @property
    def cycles(self) -> int:
        """Unit clock cycles elapsed (initialisation included)."""
        return self.model.cycle

    @property
    def host_log(self):
        """Every host-memory transaction so far: (cycle, R/W, address, length)."""
        return list(self.model.host.log)
