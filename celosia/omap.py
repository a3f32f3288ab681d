"""Oblivious map (BOLT-style): host API, RTL simulation and the ``celosia omap`` entry point.

:class:`Client` drives the unit with get / put / delete / batch on the cycle-level golden model
(:mod:`celosia.sim.omap`) and can replay everything it did on the generated RTL
(:class:`celosia.hw.omap.OmapUnit`) on Verilator, checking responses, cycles, the host
transaction log, host memory and the HBM-side state (:meth:`Client.verify_rtl`,
:func:`run_rtl`). :func:`generate` validates a configuration and writes the Verilog (when the
RTL supports the size) and a report.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from celosia import staged_output
from celosia.errors import CelosiaError, OutputExistsError, SimulationError
from celosia.sim.omap import OmapConfig, OmapModel, Op, Response, Status
from celosia.sim.omap_crypto import OmapKeys, derive_keys

__all__ = [
    "Client",
    "OmapStatusError",
    "RtlRun",
    "compare_rtl",
    "encode_command",
    "generate",
    "golden_state",
    "run_rtl",
    "run_rtl_axi",
]


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


def encode_command(cmd, cfg: OmapConfig) -> int:
    """A Python command ``(op, key, value)`` as the unit's command beat
    (op | key_len | key | value_len | value, LSB first); malformed commands get op 0xFF."""
    V, kb = cfg.value_bytes, cfg.key_bytes
    try:
        op, key, value = cmd
    except (TypeError, ValueError):
        op, key, value = 0xFF, 0, None
    op = op if isinstance(op, int) and not isinstance(op, bool) and 0 <= op < 255 else 0xFF
    if isinstance(key, (bytes, bytearray)):
        klen, kv = min(len(key), 255), int.from_bytes(key, "little") if len(key) <= 8 else 0
    elif isinstance(key, int) and not isinstance(key, bool) and 0 <= key < 2**64:
        klen, kv = kb, key
    else:
        klen, kv = 0xFF, 0
    if value is None or value == b"":
        vlen, vv = 0, 0
    elif isinstance(value, (bytes, bytearray)):
        vlen, vv = min(len(value), 255), int.from_bytes(value, "little") if len(value) <= V else 0
    else:
        vlen, vv = 0xFF, 0
    return op | klen << 8 | kv << 16 | vlen << 80 | vv << 88


def _init_beats(items, cfg: OmapConfig) -> list[int]:
    beats = []
    for k, v in items:
        k = int.from_bytes(k, "little") if isinstance(k, (bytes, bytearray)) else k
        beats.append(3 | cfg.key_bytes << 8 | k << 16 | cfg.value_bytes << 80 | int.from_bytes(v, "little") << 88)
    if len(beats) > cfg.n:
        raise SimulationError(f"{len(beats)} initial items for capacity N={cfg.n}")
    return beats + [4] * (cfg.n - len(beats))


class RtlRun:
    """What the RTL did: responses, accept/response cycles, host log, host memory, HBM state.

    Attributes
    ----------
    responses : list of Response
    accepts : list of int
        Cycle each command was accepted (relative to the first initialisation beat).
    response_cycles : list of int
    host_log : list of tuple
        ``(cycle, "R"/"W", address, length)``.
    host_mem : bytes
    state : dict
        The logical HBM-side state (index, HBM values, queues, loads, versions, counters).
    late : bool
        The RTL missed a window of the schedule (never expected).
    """

    def __init__(self, cfg, raw: dict, unit, names):
        self.cfg = cfg
        self.responses = [Response(Status(x & 0xFF), (x >> 8).to_bytes(cfg.value_bytes, "little"))
                          for _, x in raw["responses"]]
        self.response_cycles = [c for c, _ in raw["responses"]]
        self.accepts = raw["accepts"][cfg.n:]
        self.host_log = [tuple(t) for t in raw["host_log"]]
        self.host_mem = bytes.fromhex(raw["host_mem"])
        self.late = bool(raw["late"])
        self.state = _rtl_state(raw, unit, names, cfg)
        self.extra: dict = {}  # AXI diagnostics (run_rtl_axi)


def _fields(word: int, layout) -> dict:
    out, o = {}, 0
    for name, w in layout:
        out[name] = (word >> o) & ((1 << w) - 1)
        o += w
    return out


def _rtl_state(raw, unit, names, cfg) -> dict:
    dump = {nm: raw["dumps"][str(k)] for k, nm in enumerate(names)}
    f = unit.fields()
    index = {}
    for a, wv in enumerate(dump["index"]):
        x = _fields(wv, f["entry"])
        if x["valid"]:
            index[x["key"]] = (x["d1"], x["d2"], x["bin"], a // cfg.bucket_width)
    q = cfg.bin_block
    hbm, queues = {}, {}
    for b in range(cfg.bins):  # a block is compact: its valid slots first, in insertion order
        slots = [_fields(wv, f["slot"]) for wv in dump["blocks"][b * q:(b + 1) * q]]
        items = [(x["key"], x["val"].to_bytes(cfg.value_bytes, "little")) for x in slots if x["valid"]]
        if [x["valid"] for x in slots] != [1] * len(items) + [0] * (q - len(items)):
            items.append(("not compact", b))
        if b < cfg.hbm_bins:
            hbm.update(items)
        elif items:
            queues[b] = items
    words = [_fields(wv, f["loads"]) for wv in dump["loads"]]
    c = dump["counters"][0]
    return {"index": index, "hbm": hbm, "queues": queues, "loads": [w["load"] for w in words],
            "fills": [w["fill"] for w in words], "versions": dump["versions"],
            "count": c & 0xFFFFFFFF, "queued": (c >> 32) & 0xFFFFFFFF, "hbm_count": c >> 64}


def golden_state(model: OmapModel) -> dict:
    """The golden model's HBM-side state in the form of :attr:`RtlRun.state`."""
    return {"index": {k: (e.d1, e.d2, e.bin, e.bucket) for k, e in model.index.items()},
            "hbm": dict(model.hbm_store), "queues": {b: list(q) for b, q in model.queues.items() if q},
            "loads": list(model.loads), "fills": [model.block_fill(b) for b in range(model.cfg.bins)],
            "versions": list(model.versions), "count": len(model.index),
            "queued": model.queued, "hbm_count": len(model.hbm_store)}


def run_rtl(cfg: OmapConfig, keys: OmapKeys, items, cmds, build_dir, *, tamper=None, tag: str = "run",
            max_cycles: int | None = None) -> RtlRun:
    """Simulate the generated unit on Verilator (cocotb): initialise with ``items``, run ``cmds``.

    Parameters
    ----------
    cfg, keys
        The unit (keys are elaboration-time constants).
    items : list of (int, bytes)
        Initial contents (the initialisation pass).
    cmds : list
        Commands ``(op, key, value)`` (malformed ones included), back to back.
    build_dir : path
        Verilator build folder; a second call with the same unit reuses the build.
    tamper : dict, optional
        ``{command index: [(host address, xor mask)]}``: the adversary's edits of host memory,
        applied just before that command is accepted.
    """
    import json
    from pathlib import Path

    from celosia.hw.omap import OmapUnit
    from celosia.sim.cocotb_runner import run_cocotb

    build_dir = Path(build_dir)
    unit = OmapUnit(cfg, keys)
    params, pfile, out = _unit_params(cfg, unit, items, cmds, build_dir, tamper, tag, max_cycles)
    params.update({"host_latency": cfg.timing.host_latency, "page_bytes": cfg.page_bytes})
    pfile.write_text(json.dumps(params))
    run_cocotb(unit, "omap_unit_top", "omap_tb", build_dir, testcase="unit_trace",
               params={"unit_file": str(pfile)})
    return RtlRun(cfg, json.loads(out.read_text()), unit, _DUMP_NAMES)


_DUMP_NAMES = ["index", "blocks", "loads", "versions", "counters"]  # in DBG order (celosia.hw.omap)


def _unit_params(cfg, unit, items, cmds, build_dir, tamper, tag, max_cycles):
    """The testbench parameters shared by both benches (commands, dump plan, output file)."""
    tamper = tamper or {}
    depth = {"index": cfg.buckets * cfg.bucket_width, "blocks": cfg.bins * cfg.bin_block, "loads": cfg.bins,
             "versions": cfg.host_pages, "counters": 1}
    s = cfg.schedule
    if max_cycles is None:
        max_cycles = cfg.n * s.ingest + cfg.host_pages * s.init_page + (len(cmds) + 2) * s.latency + 1000
    out = build_dir / f"unit_result_{tag}.json"
    params = {
        "cmds": _init_beats(items, cfg) + [encode_command(c, cfg) for c in cmds],
        "host_bytes": cfg.host_base + cfg.host_bytes, "n_resp": len(cmds), "max_cycles": max_cycles,
        "out": str(out), "dump": [[k, depth[nm]] for k, nm in enumerate(_DUMP_NAMES)],
        "tamper": {str(cfg.n + k): v for k, v in tamper.items()},
    }
    build_dir.mkdir(parents=True, exist_ok=True)
    # the environment cannot carry large command lists: they go through a file
    return params, build_dir / f"unit_params_{tag}.json", out


def run_rtl_axi(cfg: OmapConfig, keys: OmapKeys, items, cmds, build_dir, *, data_width: int = 64,
                slave_seed: int = 1, p_addr_stall: float = 0.0, p_w_stall: float = 0.3, p_r_gap: float = 0.2,
                load_keys: OmapKeys | None = None, tamper=None, tag: str = "axi",
                max_cycles: int | None = None) -> RtlRun:
    """Simulate the AXI4 top (:class:`~celosia.hw.omap_axi.OmapUnitAxi`, keys provisioned
    through its key port, the index and the versions behind their HBM AXI4 masters) against
    AXI4 slave models with random timing (host memory and both HBM regions).

    Parameters
    ----------
    cfg : OmapConfig
        The unit; its pages must be legal bursts of ``data_width`` bits.
    keys : OmapKeys
        Unused by the hardware (the build holds no keys); kept for symmetry with :func:`run_rtl`.
    items, cmds, build_dir, tamper, tag, max_cycles
        As :func:`run_rtl`.
    data_width : int
        AXI data width in bits.
    slave_seed : int
        Seed of the slave's random timing (and of the key-port gaps).
    p_addr_stall, p_w_stall, p_r_gap : float
        Per-cycle probability of ARREADY/AWREADY low, of WREADY low, and of a gap between R
        beats (read data always arrives within the modelled host round trip).
    load_keys : OmapKeys, optional
        The keys provisioned through the port; default ``keys``.

    Returns
    -------
    RtlRun
        ``host_log`` holds the AR/AW handshakes as ``(cycle, R/W, address, burst bytes)``;
        ``extra`` the AXI diagnostics (``host_fault``, the slaves' protocol findings, refused
        key beats, undrained transactions); ``hbm_log`` the HBM ports' bursts by port name.
    """
    from celosia.hw.omap import DBG, key_words
    from celosia.hw.omap_axi import OmapUnitAxi
    from celosia.sim.cocotb_runner import run_cocotb

    build_dir = Path(build_dir)
    top = OmapUnitAxi(cfg, None, data_width=data_width)
    params, pfile, out = _unit_params(cfg, top, items, cmds, build_dir, tamper, tag, max_cycles)
    ix, bp = top.unit.index_port, top.unit.blocks_port
    vp, lp = top.unit.versions_port, top.unit.loads_port
    params.update({"host_latency": cfg.timing.host_latency, "data_bytes": data_width // 8, "seed": slave_seed,
                   "hbm_latency": cfg.timing.hbm_latency,
                   "hbm": [["hbm_index", ix.region_bytes, ix.slot_bytes], ["hbm_versions", vp.region_bytes, 8],
                           ["hbm_loads", lp.region_bytes, 8]]
                   + [[f"hbm_{sub}", p.region_bytes, p.slot_bytes] for sub, p in bp.sub_ports.items()],
                   "p_addr_stall": p_addr_stall, "p_w_stall": p_w_stall, "p_r_gap": p_r_gap,
                   "key_words": key_words(load_keys or keys)})
    pfile.write_text(json.dumps(params))
    run_cocotb(top, "omap_axi_top", "omap_axi_tb", build_dir, testcase="unit_axi_trace",
               params={"unit_file": str(pfile)})
    raw = json.loads(out.read_text())
    # every region lives in its slave's memory (HBM), not behind the debug port
    mems = {sub: bytes.fromhex(raw["hbm_mem"][f"hbm_{sub}"]) for sub in bp.sub_ports}
    K = cfg.hbm_bins

    def block_slot(b, k):  # HBM bins' blocks in the value store, the pages' in the queue region
        mem, local = (mems["values"], b) if b < K else (mems["queues"], b - K)
        a = local * bp.block_stride + k * bp.slot_bytes
        return int.from_bytes(mem[a:a + bp.slot_bytes], "little") & ((1 << top.unit.slot_w) - 1)

    raw["dumps"][str(DBG["blocks"])] = [block_slot(b, k) for b in range(cfg.bins) for k in range(cfg.bin_block)]
    for name, sb, width in (("index", ix.slot_bytes, ix.entry_w), ("versions", 8, 64), ("loads", 8, 64)):
        mem = bytes.fromhex(raw["hbm_mem"][f"hbm_{name}"])
        raw["dumps"][str(DBG[name])] = [int.from_bytes(mem[a:a + sb], "little") & ((1 << width) - 1)
                                        for a in range(0, len(mem), sb)]
    run = RtlRun(cfg, raw, top, _DUMP_NAMES)
    run.extra = {k: raw[k] for k in ("host_fault", "slave_faults", "key_refused", "pending")}
    run.hbm_log = {k: [tuple(t) for t in v] for k, v in raw["hbm_log"].items()}
    return run


def compare_rtl(model: OmapModel, run: RtlRun, responses, *, host_cycles: str = "exact") -> list[str]:
    """Differences between a golden-model run and an RTL run of the same commands (empty if none).

    ``host_cycles="exact"``: every host transaction at the model's cycle. ``"not_before"`` (an
    AXI slave that stalls the address channels): same transactions in the same order, none
    issued before the model's cycle."""
    s = model.cfg.schedule
    diffs = []
    if run.late:
        diffs.append("the RTL missed a window of the schedule")
    if run.responses != list(responses):
        diffs.append("responses differ")
    if run.accepts != [q.start for q in model.queries]:
        diffs.append("command accept cycles differ")
    exp_rc = [q.start + (s.respond if q.cycles == s.latency else q.cycles - 1) for q in model.queries]
    if run.response_cycles != exp_rc:
        diffs.append("response cycles differ")
    gold_log = [tuple(t) for t in model.host.log]
    if host_cycles == "exact":
        if run.host_log != gold_log:
            diffs.append("host transaction logs differ")
    elif ([t[1:] for t in run.host_log] != [t[1:] for t in gold_log]
          or any(r[0] < g[0] for r, g in zip(run.host_log, gold_log))):
        diffs.append("host transactions differ (addresses, lengths, order or early issue)")
    x = run.extra
    if x.get("host_fault") or x.get("slave_faults") or any(x.get("pending", ()) or ()):
        diffs.append(f"AXI protocol: fault {x.get('host_fault')}, slave findings {x.get('slave_faults')}, "
                     f"undrained {x.get('pending')}")
    if run.host_mem != bytes(model.host.data):
        diffs.append("host memory differs")
    if run.state != golden_state(model):
        diffs.append("HBM-side state differs")
    return diffs


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


def _write_rtl(cfg: OmapConfig, seed: int, folder, say, axi_width: int, constant_keys: bool):
    """Write the unit's Verilog (the AXI4 top) if the RTL supports this size; (rtl info or None, note)."""
    from celosia.errors import HardwareGenerationError
    from celosia.hw.omap import KEY_WORDS
    from celosia.hw.omap_axi import OmapUnitAxi, check_axi_pages
    from celosia.hw.verilog import to_verilog

    try:
        check_axi_pages(cfg, axi_width)  # before building anything: a refused config leaves no half-made unit
        top = OmapUnitAxi(cfg, derive_keys(seed) if constant_keys else None, data_width=axi_width)
    except HardwareGenerationError as exc:
        return None, f"no Verilog: {exc.message}" + (f" ({exc.hint})" if getattr(exc, "hint", None) else "")
    say("writing the Verilog")
    (folder / "omap_unit.v").write_text(to_verilog(top, "omap_unit"))
    s = cfg.schedule
    ports = {"cmd": top.unit.cmd_w, "resp": 8 + 8 * cfg.value_bytes,
             "host": f"AXI4 master, {axi_width}-bit data, 64-bit address, one INCR burst of "
                     f"{top.beats} beats per page"}
    u = top.unit
    ports["hbm_loads"] = (f"AXI4 master, 64-bit data: one beat per bin (load | block fill), "
                          f"{u.loads_port.region_bytes} bytes")
    ports["hbm_index"] = (f"AXI4 master, {u.index_port.data_width}-bit data: one burst of {cfg.bucket_width} beats "
                          f"per bucket, {u.index_port.region_bytes} bytes")
    for sub, what in (("values", "value store: the HBM bins' blocks"), ("queues", "eviction queues: the pages' blocks")):
        if sub in u.blocks_port.sub_ports:
            ports[f"hbm_{sub}"] = (f"AXI4 master, {u.blocks_port.data_width}-bit data, {what}: one burst of "
                                   f"{cfg.bin_block} beats per block, one beat per append, "
                                   f"{u.blocks_port.sub_ports[sub].region_bytes} bytes")
    ports["hbm_versions"] = f"AXI4 master, 64-bit data: one beat per page version, {u.versions_port.region_bytes} bytes"
    if not constant_keys:
        ports["key"] = f"{KEY_WORDS} x 64-bit beats after reset: rng | enc | mac | index (celosia.hw.omap.key_words)"
    info = {"verilog": "omap_unit.v", "top": "omap_unit", "ports": ports, "axi_data_width": axi_width,
            "keys": f"constant, derived from key_seed {seed}" if constant_keys else "key port (none in the bitstream)",
            "latency_cycles": s.latency, "init_cycles": cfg.n * s.ingest + cfg.host_pages * s.init_page + 1}
    note = ("host memory and every HBM region (key index, value store, eviction queues, bin loads and fills, "
            "page versions) through AXI4 masters of their own"
            + ("; keys are elaboration-time constants (evaluation only)" if constant_keys else ""))
    return info, note


def generate(capacity: int, value_bytes: int, output, *, alpha: float = 0.2, force: bool = False,
             check_queries: int = 200, seed: int = 0, axi_width: int = 512, constant_keys: bool = False,
             progress=None, **config) -> dict:
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
    seed : int
        Seed of the self-check; with ``constant_keys`` it also derives the keys the RTL embeds.
    axi_width : int
        Data width of the AXI4 host master in bits; the schedule's host link
        (``timing.host_bytes_per_cycle``, default 64 B) must not be wider.
    constant_keys : bool
        Embed keys derived from ``seed`` in the Verilog (evaluation only). Default: the unit has
        a key port and the Verilog holds no key.

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
    with staged_output(out) as staging:
        summary = cfg.summary()
        say(f"golden-model self-check ({check_queries} commands)")
        report = {
            "unit": "omap", "config": summary, "self_check": _self_check(cfg, check_queries),
            "crypto": {"page_cipher": "ChaCha20 (RFC 8439), nonce = page id u32 LE || version u64 LE",
                       "page_mac": "SipHash-2-4 over page id || version || ciphertext",
                       "csprng": "ChaCha20 keystream, u32 LE words, rejection-sampled uniform(n)",
                       "index_hash": "SipHash-2-4 of the key under the index key"},
            "files": {"config": "config.json", "report": "report.json"},
        }
        report["rtl"], report["rtl_note"] = _write_rtl(cfg, seed, staging, say, axi_width, constant_keys)
        if report["rtl"]:
            report["files"]["verilog"] = report["rtl"]["verilog"]
        (staging / "config.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        (staging / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return report
