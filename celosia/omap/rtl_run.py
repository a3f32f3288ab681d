"""The oblivious map's RTL on Verilator, checked against the golden model.

:func:`run_rtl` simulates the unit with its page-wide host port
(:class:`celosia.omap.rtl.OmapUnit`), :func:`run_rtl_axi` the deployable AXI4 top
(:class:`celosia.omap.rtl.OmapUnitAxi`) against AXI4 slave models; both run the cocotb benches
shipped in :mod:`celosia.omap.tb` and return an :class:`RtlRun`, which :func:`compare_rtl` holds
against a golden-model run of the same commands. :func:`encode_command` is the command beat on
the wire.
"""

from __future__ import annotations

import json
from pathlib import Path

from celosia.errors import SimulationError
from celosia.omap.config import OmapConfig, Response, Status
from celosia.omap.crypto import OmapKeys
from celosia.omap.golden import OmapModel
from celosia.omap.tb import TB_DIR

__all__ = ["RtlRun", "compare_rtl", "encode_command", "golden_state", "run_rtl", "run_rtl_axi"]


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
    tag : str
        Names this run's parameter and result files in ``build_dir``.
    max_cycles : int, optional
        Simulation limit; default the initialisation pass plus two schedules per command.

    Returns
    -------
    RtlRun
        What the RTL did; compare it with a golden-model run by :func:`compare_rtl`.

    Notes
    -----
    The cocotb bench is ``celosia/omap/tb/omap_unit_tb.py``, shipped with the package.
    """
    from celosia.omap.rtl import OmapUnit
    from celosia.sim.cocotb_runner import run_cocotb

    build_dir = Path(build_dir)
    unit = OmapUnit(cfg, keys)
    params, pfile, out = _unit_params(cfg, unit, items, cmds, build_dir, tamper, tag, max_cycles)
    params.update({"host_latency": cfg.timing.host_latency, "page_bytes": cfg.page_bytes})
    pfile.write_text(json.dumps(params))
    run_cocotb(unit, "omap_unit_top", "omap_unit_tb", build_dir, testcase="unit_trace",
               params={"unit_file": str(pfile)}, test_dir=TB_DIR)
    return RtlRun(cfg, json.loads(out.read_text()), unit, _DUMP_NAMES)


_DUMP_NAMES = ["index", "blocks", "loads", "versions", "counters"]  # in DBG order (celosia.omap.rtl.unit)


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
    """Simulate the AXI4 top (:class:`~celosia.omap.rtl.OmapUnitAxi`, keys provisioned through
    its key port, every HBM region behind its own AXI4 master) against AXI4 slave models with
    random timing (host memory and every HBM port; the bench ``celosia/omap/tb/omap_axi_tb.py``
    ships with the package).

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
    from celosia.omap.rtl import DBG, OmapUnitAxi, key_words
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
               params={"unit_file": str(pfile)}, test_dir=TB_DIR)
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
