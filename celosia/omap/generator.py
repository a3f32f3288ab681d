"""``celosia omap``: validate an oblivious-map configuration, write its Verilog and report.

:func:`generate` checks every parameter before any work (a refused configuration leaves nothing
behind), runs a short golden-model self-check whose trace figures go into the report, and writes
the Verilog of the AXI4 top (:class:`celosia.omap.rtl.OmapUnitAxi`) when the RTL supports the
configuration's page shape.
"""

from __future__ import annotations

import json
import random
from dataclasses import fields

from celosia.errors import HardwareGenerationError, SimulationError
from celosia.omap.config import OmapConfig, Op, Status
from celosia.omap.crypto import derive_keys
from celosia.omap.golden import OmapModel
from celosia.output import check_output, staged_output

__all__ = ["generate"]


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


def _rtl_plan(cfg: OmapConfig, axi_width) -> str | None:
    """Before any work: ``None`` if the AXI4 top can be written at ``axi_width``, else why the
    RTL does not support this configuration's page shape (the report is written without
    Verilog then).

    Raises
    ------
    HardwareGenerationError
        ``axi_width`` is not one of the widths at which this configuration's pages are legal
        AXI4 bursts (a user error on ``--axi-width``, refused rather than reported).
    """
    from celosia.omap.rtl.axi import axi_widths, check_axi_placement, check_axi_width

    try:
        check_axi_placement(cfg)
    except HardwareGenerationError as exc:  # no width helps: the page shape itself
        return _no_verilog(exc)
    widths = axi_widths(cfg)
    try:
        check_axi_width(cfg, axi_width)
    except HardwareGenerationError as exc:
        if not widths:
            return _no_verilog(exc)
        allowed = ", ".join(map(str, widths))
        raise HardwareGenerationError(
            f"--axi-width {axi_width} (axi_width, the AXI4 host data width) refused: {exc.message}",
            hint=f"use --axi-width {512 if 512 in widths else widths[0]}; the widths that give "
                 f"{cfg.page_bytes}-byte pages as legal bursts on the schedule's "
                 f"{cfg.timing.host_bytes_per_cycle} B/cycle host link are {allowed} bits") from None
    return None


def _build_top(cfg: OmapConfig, axi_width: int, constant_keys: bool, seed: int):
    """The AXI4 top, or ``(None, why not)`` if the RTL refuses the configuration (e.g. keys wider
    than 64 bits)."""
    from celosia.omap.rtl.axi import OmapUnitAxi

    try:
        return OmapUnitAxi(cfg, derive_keys(seed) if constant_keys else None, data_width=axi_width), None
    except HardwareGenerationError as exc:
        return None, _no_verilog(exc)


def _no_verilog(exc: HardwareGenerationError) -> str:
    return f"no Verilog: {exc.message}" + (f" ({exc.hint})" if exc.hint else "")


def _write_rtl(cfg: OmapConfig, top, seed: int, folder, say, axi_width: int, constant_keys: bool):
    """Write the Verilog of ``top`` (the AXI4 top) to ``folder``; (rtl info, note)."""
    from celosia.hw.verilog import to_verilog
    from celosia.omap.rtl.unit import KEY_WORDS

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
        ports["key"] = f"{KEY_WORDS} x 64-bit beats after reset: rng | enc | mac | index (celosia.omap.rtl.key_words)"
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
        :class:`~celosia.omap.config.OmapConfig` parameters; impossible ones raise
        :class:`~celosia.errors.HardwareGenerationError` naming the numbers.
    output : str or pathlib.Path
        Folder to create (``~`` and relative paths resolved; staged as ``.<name>.partial`` and
        renamed on success).
    force : bool
        Replace an existing folder.
    check_queries : int
        Commands of the golden-model self-check whose trace figures go into the report.
    seed : int
        Seed of the self-check; with ``constant_keys`` it also derives the keys the RTL embeds.
    axi_width : int
        Data width of the AXI4 host master in bits: a power of two no narrower than the
        schedule's host link (``timing.host_bytes_per_cycle``, default 64 B), at which a page is
        a whole number of beats, at most 256 (:func:`celosia.omap.rtl.axi_widths`; 512 or 1024
        at the defaults, 512 whenever pages are 64 bytes).
    constant_keys : bool
        Embed keys derived from ``seed`` in the Verilog (evaluation only). Default: the unit has
        a key port and the Verilog holds no key.

    Returns
    -------
    dict
        The report (also written as ``report.json``; the configuration as ``config.json``).
        ``report["rtl"]`` is ``None`` (and ``report["rtl_note"]`` says which rule failed) when
        the RTL does not support the configuration's page shape (e.g. pages straddling 4 KiB).

    Raises
    ------
    HardwareGenerationError
        An impossible configuration, an ``axi_width`` the configuration's pages cannot use, or
        ``check_queries`` < 1, all before anything is written.
    OutputExistsError, OutputPathError
        ``output`` exists (without ``force``), is a file, or cannot be created.
    """
    say = progress or (lambda _m: None)
    say("validating the configuration")
    params = [f.name for f in fields(OmapConfig) if f.name != "n"]
    unknown = sorted(k for k in config if k not in params)
    if unknown:
        raise HardwareGenerationError(f"unknown oblivious-map parameter(s) {unknown}",
                                      hint=f"the parameters are {params}; the capacity is the first argument")
    if not isinstance(check_queries, int) or isinstance(check_queries, bool) or check_queries < 1:
        raise HardwareGenerationError(f"check_queries={check_queries!r}: the self-check needs at least one command",
                                      hint="use the default, 200")
    cfg = OmapConfig(n=capacity, value_bytes=value_bytes, alpha=alpha, **config)
    no_rtl = _rtl_plan(cfg, axi_width)
    out = check_output(output, force=force)
    top = None
    if no_rtl is None:
        top, no_rtl = _build_top(cfg, axi_width, constant_keys, seed)
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
        if top is None:
            report["rtl"], report["rtl_note"] = None, no_rtl
        else:
            report["rtl"], report["rtl_note"] = _write_rtl(cfg, top, seed, staging, say, axi_width, constant_keys)
        if report["rtl"]:
            report["files"]["verilog"] = report["rtl"]["verilog"]
        (staging / "config.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        (staging / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return report
