# amaranth: UnusedElaboratable=no
"""The oblivious map's AXI4 top on Verilator: AXI4 host master, HBM masters, key port.

One Verilator build of :class:`celosia.omap.rtl.axi.OmapUnitAxi` (64-bit host AXI; the key index,
the bin blocks, the bin loads and the page versions behind their own AXI4 masters; keys loaded
through the ``key`` port: the bitstream holds none), several runs against the bench's AXI4
slaves (celosia/omap/tb/omap_axi_tb.py; the HBM slaves answer within the modelled HBM latency with
random gaps and stalls as well):

* random read latency within the modelled round trip, random gaps between R beats, WREADY
  stalls, B delays: responses, accept and response cycles, the AR/AW log (address, burst bytes,
  handshake cycle), host memory and HBM state identical to the golden model;
* ARREADY/AWREADY stalls as well: same transactions in the same order, never issued early, same
  responses, memory and state;
* a tampered page: both halt with ``FATAL_INTEGRITY`` on the same command;
* keys from another seed through the port: the run differs from the golden model (the keys
  really come from the port), and the port refuses beats once loaded.

Configuration errors of the AXI top are checked without a build.
"""

from __future__ import annotations

import pytest
from celosia.omap import OmapConfig, Status
from celosia.omap.crypto import derive_keys
from celosia.omap.memory import MemoryTiming
from test_omap_rtl import UNIT_CFG, UNIT_SEED, golden_run, unit_workload

from celosia.errors import HardwareGenerationError

pytestmark = pytest.mark.slow  # one Verilator build

AXI_CFG = dict(UNIT_CFG, timing=MemoryTiming(host_bytes_per_cycle=8))  # 64-bit AXI: 48-byte pages, 6 beats


@pytest.fixture(scope="module")
def axi_build(tmp_path_factory):
    return tmp_path_factory.mktemp("omap_axi")


def test_axi_top_matches_golden_model(axi_build):
    from celosia.omap import compare_rtl, run_rtl_axi

    cfg = OmapConfig(**AXI_CFG)
    assert cfg.page_bytes == 48
    keys = derive_keys(UNIT_SEED)
    items, cmds = unit_workload()
    gold, expected = golden_run(cfg, keys, items, cmds)
    run = run_rtl_axi(cfg, keys, items, cmds, axi_build, slave_seed=3, tag="exact")
    assert compare_rtl(gold, run, expected) == []
    assert len(run.host_log) == len(gold.host.log) > cfg.host_pages
    assert run.extra["key_refused"] > 0  # junk beats offered after loading were refused
    # the index region on its own AXI4 master: whole buckets only, read and written back
    from celosia.omap.rtl import OmapUnitAxi
    from celosia.omap.rtl.index import entry_slot_bits

    unit = OmapUnitAxi(cfg, data_width=64).unit
    slot = entry_slot_bits(unit.entry_w) // 8
    bucket_bytes = cfg.bucket_width * slot
    ilog = run.hbm_log["hbm_index"]
    assert {t[3] for t in ilog} == {bucket_bytes} and all(t[2] % bucket_bytes == 0 for t in ilog)
    reads, writes = sum(t[1] == "R" for t in ilog), sum(t[1] == "W" for t in ilog)
    assert writes == len(cmds) + len(items) and 0 < reads <= writes  # repeated buckets are reused
    # the versions on theirs: one 8-byte beat per access; every page written once at
    # initialisation, then read and rewritten once per host page a command touches
    vlog = run.hbm_log["hbm_versions"]
    assert {t[3] for t in vlog} == {8} and all(t[2] < 8 * cfg.host_pages for t in vlog)
    host_reads = sum(t[1] == "R" for t in gold.host.log)
    assert sum(t[1] == "R" for t in vlog) == host_reads
    assert sum(t[1] == "W" for t in vlog) == cfg.host_pages + host_reads
    # the loads on theirs: one 8-byte beat (load | fill) per access; four bins read and written
    # back per command, two (the placement pair) per initial item plus two for the repeated key,
    # one per page built
    llog = run.hbm_log["hbm_loads"]
    assert {t[3] for t in llog} == {8} and all(t[2] < 8 * cfg.bins for t in llog)
    per_item = 2 * len(items) + 2 + cfg.host_pages
    assert sum(t[1] == "R" for t in llog) == sum(t[1] == "W" for t in llog) == 4 * len(cmds) + per_item
    # the bin blocks on theirs (value store: HBM bins, eviction queues: pages): whole aligned
    # blocks, fetched and written back for both bins of every command, every page built and the
    # repeated key; one-slot appends for the rest
    bp = unit.blocks_port
    assert set(bp.sub_ports) == {"values", "queues"}
    blog = run.hbm_log["hbm_values"] + run.hbm_log["hbm_queues"]
    assert all(t[2] < bp.sub_ports["values"].region_bytes for t in run.hbm_log["hbm_values"])
    block = cfg.bin_block * bp.slot_bytes
    bursts = [t for t in blog if t[3] == block]
    puts = [t for t in blog if t[3] == bp.slot_bytes]
    assert len(bursts) + len(puts) == len(blog) and all(t[2] % bp.block_stride == 0 for t in bursts)
    fetched = 2 * len(cmds) + cfg.host_pages + 1
    assert sum(t[1] == "R" for t in bursts) == sum(t[1] == "W" for t in bursts) == fetched
    assert all(t[1] == "W" for t in puts) and len(items) <= len(puts) < len(items) + len(cmds)

    # address channels stalled too: the slave can delay transactions, never reorder or advance them
    run = run_rtl_axi(cfg, keys, items, cmds[:40], axi_build, slave_seed=4, p_addr_stall=0.3, p_w_stall=0.5,
                      tag="stall")
    gold, expected = golden_run(cfg, keys, items, cmds[:40])
    assert compare_rtl(gold, run, expected, host_cycles="not_before") == []
    assert any(r[0] > g[0] for r, g in zip(run.host_log, gold.host.log))  # the stalls did bite


def test_axi_top_integrity_and_key_port(axi_build):
    from celosia.omap import compare_rtl, run_rtl_axi

    cfg = OmapConfig(**AXI_CFG)
    keys = derive_keys(UNIT_SEED)
    items, cmds = unit_workload()
    tamper = {6: [(cfg.host_base + 2 * cfg.page_bytes + 9, 0x10)]}
    gold, expected = golden_run(cfg, keys, items, cmds[:20], tamper)
    assert expected[-1].status == Status.FATAL_INTEGRITY
    run = run_rtl_axi(cfg, keys, items, cmds[:20], axi_build, slave_seed=5, tamper=tamper, tag="tamper")
    assert compare_rtl(gold, run, expected) == []
    # other keys through the port: the same build encrypts, hashes and samples differently
    gold, expected = golden_run(cfg, keys, items, cmds[:10])
    run = run_rtl_axi(cfg, keys, items, cmds[:10], axi_build, load_keys=derive_keys(UNIT_SEED + 1),
                      tag="otherkeys")
    diffs = compare_rtl(gold, run, expected)
    assert "host memory differs" in diffs and "host transaction logs differ" in diffs
    other, other_exp = golden_run(cfg, derive_keys(UNIT_SEED + 1), items, cmds[:10])
    assert compare_rtl(other, run, other_exp) == []


def test_axi_configuration_errors():
    from celosia.omap.rtl import OmapUnit, key_words
    from celosia.omap.rtl import OmapUnitAxi, check_axi_pages

    cfg = OmapConfig(**AXI_CFG)
    assert check_axi_pages(cfg, 64) == 6
    with pytest.raises(HardwareGenerationError, match="power of two"):
        OmapUnitAxi(cfg, data_width=96)
    with pytest.raises(HardwareGenerationError, match="whole number"):
        OmapUnitAxi(cfg, data_width=256)  # 48-byte pages are not whole 32-byte beats
    with pytest.raises(HardwareGenerationError, match="schedule assumes a 64 B/cycle"):
        OmapUnitAxi(OmapConfig(**UNIT_CFG), data_width=64)  # pages would arrive after their window
    with pytest.raises(HardwareGenerationError, match="at most 256"):
        check_axi_pages(OmapConfig(n=64, value_bytes=200, timing=MemoryTiming(host_bytes_per_cycle=8)), 64)
    with pytest.raises(HardwareGenerationError, match="4 KiB boundary"):
        check_axi_pages(OmapConfig(n=1024, value_bytes=8, timing=MemoryTiming(host_bytes_per_cycle=8),
                                   host_base=4096 - 64), 64)
    assert check_axi_pages(OmapConfig(**UNIT_CFG), 512) == 1  # one 512-bit beat per 64-byte page
    # the key port exists only without constant keys; its words are rng | enc | mac | index
    assert "key" in OmapUnit(cfg).signature.members and "key" not in OmapUnit(cfg, derive_keys(1)).signature.members
    k = derive_keys(2)
    w = key_words(k)
    assert len(w) == 12 and w[0] == int.from_bytes(k.rng[:8], "little") and w[11] == int.from_bytes(k.index[8:], "little")
