# amaranth: UnusedElaboratable=no
"""The oblivious map RTL on Verilator through cocotb.

* The on-chip crypto cores (ChaCha20 block, SipHash-2-4, the CSPRNG pair sampler) bit for bit
  against the pure-Python reference (:mod:`celosia.omap.crypto`), with random valid gaps
  and backpressure.
* Spec tier 1: the whole unit (:class:`celosia.omap.rtl.unit.OmapUnit`) against the golden model on
  the same seed, initial items and commands: identical responses, accept and response cycles,
  host transaction log (initialisation included), host memory (ciphertexts and tags) and final
  HBM-side state; then a tampered page halts both on the same command.
"""

from __future__ import annotations

import random
import struct

import pytest
from amaranth.hdl import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from celosia.omap.rtl.crypto import ChaCha20Core, PairSampler, SipHash24Core
from celosia.sim.cocotb_runner import run_cocotb
from celosia.omap.crypto import (
    ChaChaRNG,
    chacha20_block,
    derive_keys,
    distinct_pair,
    siphash24,
)

pytestmark = pytest.mark.slow  # Verilator builds; still run by default

KEYS = derive_keys(5)


def _words(msg: bytes) -> list[int]:
    """SipHash message words, the last one with the length byte on top."""
    full = len(msg) - len(msg) % 8
    words = [struct.unpack_from("<Q", msg, i)[0] for i in range(0, full, 8)]
    return words + [int.from_bytes(msg[full:], "little") | ((len(msg) & 0xFF) << 56)]


class CryptoCores(wiring.Component):
    """Test wrapper: the ChaCha20 and SipHash cores in one design (one Verilator build). The
    pair sampler is checked with a small bin count here and, inside the unit, by the tier-1
    test (every revealed pair is in the host log)."""

    def __init__(self, sampler_bins):
        self.samplers = {f"ps{b}": PairSampler(b) for b in sampler_bins}
        members = {"cc_key": In(256), "cc_req": In(stream.Signature(128)), "cc_blk": Out(stream.Signature(512)),
                   "sh_key": In(128), "sh_msg": In(stream.Signature(65)), "sh_tag": Out(stream.Signature(64))}
        for name, smp in self.samplers.items():
            members[f"{name}_key"] = In(256)
            members[f"{name}_pair"] = Out(stream.Signature(2 * smp.w))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        m.submodules.cc = cc = ChaCha20Core()
        m.submodules.sh = sh = SipHash24Core()
        m.d.comb += [cc.key.eq(self.cc_key), sh.key.eq(self.sh_key)]
        wiring.connect(m, wiring.flipped(self.cc_req), cc.req)
        wiring.connect(m, cc.blk, wiring.flipped(self.cc_blk))
        wiring.connect(m, wiring.flipped(self.sh_msg), sh.msg)
        wiring.connect(m, sh.tag, wiring.flipped(self.sh_tag))
        for name, smp in self.samplers.items():
            m.submodules[name] = smp
            m.d.comb += smp.key.eq(getattr(self, f"{name}_key"))
            wiring.connect(m, smp.pair, wiring.flipped(getattr(self, f"{name}_pair")))
        return m


def test_crypto_cores_match_reference(tmp_path):
    r = random.Random(1)
    key = bytes(range(32))
    reqs = [(1, bytes.fromhex("000000090000004a00000000"))]  # RFC 8439 §2.3.2
    reqs += [(r.randrange(2**32), r.randbytes(12)) for _ in range(7)]
    chacha = {
        "prefix": "cc", "key": int.from_bytes(key, "little"), "seed": 2,
        "requests": [c | (int.from_bytes(n, "little") << 32) for c, n in reqs],
        "expected": [int.from_bytes(chacha20_block(key, c, n), "little") for c, n in reqs],
    }
    skey = bytes(range(16))
    msgs = [bytes(range(15)), b"", bytes(8)] + [r.randbytes(r.randrange(1, 80)) for _ in range(8)]
    siphash = {
        "prefix": "sh", "key": int.from_bytes(skey, "little"), "seed": 4,
        "requests": [_words(mm) for mm in msgs], "expected": [siphash24(skey, mm) for mm in msgs],
    }
    assert siphash["expected"][0] == 0xA129CA6149BE45E5  # the SipHash paper's vector
    dut = CryptoCores((3,))
    pairs = []
    for name, smp in dut.samplers.items():
        rng = ChaChaRNG(KEYS.rng)
        pairs.append({"prefix": name, "key": int.from_bytes(KEYS.rng, "little"), "w": smp.w, "seed": smp.bins,
                      "expected": [list(distinct_pair(rng, smp.bins)) for _ in range(100)]})
    res = run_cocotb(dut, "omap_crypto_top", "omap_crypto_tb", tmp_path,
                     testcase=["chacha_blocks", "siphash_tags", "sampler_pairs"],
                     params={"chacha": chacha, "siphash": siphash, "pairs": pairs})
    assert sorted(res.tests) == ["chacha_blocks", "sampler_pairs", "siphash_tags"]


# =====================================================================================
# tier 1: the whole unit against the golden model
# =====================================================================================
UNIT_CFG = dict(n=32, c=4, alpha=0.25, p_cap=6, value_bytes=2, key_bits=16, bucket_width=4, index_load=4)


def unit_workload(seed=8, n_cmds=70):
    r = random.Random(seed)
    items = [(k, r.randbytes(2)) for k in r.sample(range(2**16), 14)] + [(7, b"dp"), (7, b"DP")]  # a repeated key
    space = [k for k, _ in items] + [r.randrange(2**16) for _ in range(12)]
    cmds = []
    for _ in range(n_cmds):
        op = r.choice((0, 0, 1, 1, 2))
        cmds.append((op, r.choice(space), r.randbytes(2) if op == 1 else None))
    cmds[10:10] = [(9, 1, None), (1, 5, b"abc"), (0, 2**16, None), None, (0, 5, b"xx")]  # bad commands
    return items, cmds


def golden_run(cfg, keys, items, cmds, tamper=None):
    from celosia.omap import OmapModel

    gold = OmapModel(cfg, keys=keys)
    gold.initialise(items)
    expected = []
    for k, c in enumerate(cmds):
        for addr, x in (tamper or {}).get(k, ()):
            gold.host.tamper_write(addr, bytes([gold.host.data[addr] ^ x]))
        expected.append(gold.execute(c))
    return gold, expected


@pytest.fixture(scope="module")
def unit_build(tmp_path_factory):
    """One Verilator build of the tier-1 unit, shared by the tests below (same config and keys)."""
    return tmp_path_factory.mktemp("omap_unit")


UNIT_SEED = 21


def test_unit_matches_golden_model(unit_build):
    from celosia.omap import OmapConfig, Status

    from celosia.omap import compare_rtl, run_rtl

    cfg = OmapConfig(**UNIT_CFG)
    keys = derive_keys(UNIT_SEED)
    tmp_path = unit_build
    items, cmds = unit_workload()
    gold, expected = golden_run(cfg, keys, items, cmds)
    cases = set()
    for q in gold.queries:
        h = q.hidden
        cases |= {"bad"} if h["bad"] else {(h["op"], h["hit"]), ("in", h["where"])}
        cases |= {("flush", f > 0) for f in h.get("flushed", ())}
    need = {(o, hit) for o in (0, 1, 2) for hit in (True, False)} | {("in", w) for w in ("hbm", "queue", "page")}
    need |= {"bad", ("flush", True), ("flush", False)}
    assert need <= cases, f"workload misses {need - cases}"
    run = run_rtl(cfg, keys, items, cmds, tmp_path)
    # responses, accept and response cycles, host log, host memory (ciphertexts, tags), HBM state
    assert compare_rtl(gold, run, expected) == []
    assert run.responses == expected and len(run.host_log) == len(gold.host.log) > cfg.host_pages
    # same build, second run: the adversary flips a ciphertext byte of one page before command 6;
    # both halt with FATAL_INTEGRITY on the same command, then answer every command fail-closed
    tamper = {6: [(cfg.host_base + 2 * cfg.page_bytes + 9, 0x10)]}
    gold, expected = golden_run(cfg, keys, items, cmds[:30], tamper)
    assert Status.FATAL_INTEGRITY in [e.status for e in expected] and expected[-1].status == Status.FATAL_INTEGRITY
    run = run_rtl(cfg, keys, items, cmds[:30], tmp_path, tamper=tamper, tag="tamper")
    assert compare_rtl(gold, run, expected) == []
    # the comparison can fail: a run compared with another run's golden model differs
    other, other_exp = golden_run(cfg, keys, items, cmds[:30])
    assert "host memory differs" in compare_rtl(other, run, other_exp)


def churn_workload(seed):
    """12 initial items, then inserts, deletes and reads: fills index buckets and the item pool."""
    r = random.Random(seed)
    items = [(k, r.randbytes(2)) for k in r.sample(range(2**16), 12)]
    live = [k for k, _ in items]
    cmds = []
    for _ in range(120):
        x = r.random()
        if x < 0.35 and live:
            cmds.append((2, live.pop(r.randrange(len(live))), None))
        elif x < 0.75:
            k = r.randrange(2**16)
            cmds.append((1, k, r.randbytes(2)))
            live.append(k)
        else:
            cmds.append((0, r.choice(live) if live else 1, None))
    return items, cmds


def test_unit_full_bucket_and_capacity_fail_closed(unit_build):
    """Same build: a PUT refused by a full index bucket (FULL), and the item pool exhausted
    (FATAL_CAPACITY, then every command answered fail-closed in 2 cycles without memory traffic)."""
    from celosia.omap import compare_rtl, run_rtl
    from celosia.omap import OmapConfig, Status

    cfg = OmapConfig(**UNIT_CFG)
    keys = derive_keys(UNIT_SEED)
    for seed, fatal in ((1, False), (2, True)):
        items, cmds = churn_workload(seed)
        gold, expected = golden_run(cfg, keys, items, cmds)
        assert any(q.hidden.get("bucket_full") and q.hidden.get("op") == 1 for q in gold.queries)
        assert (gold.halted == Status.FATAL_CAPACITY) == fatal
        if fatal:
            assert expected[-1].status == Status.FATAL_CAPACITY and gold.queries[-1].host_from == gold.queries[-1].host_to
        run = run_rtl(cfg, keys, items, cmds, unit_build, tag=f"churn{seed}")
        assert compare_rtl(gold, run, expected) == []


def test_client_verifies_itself_on_the_rtl(unit_build):
    from celosia.omap import Client

    extra = {k: v for k, v in UNIT_CFG.items() if k not in ("n", "value_bytes")}
    c = Client(32, value_bytes=2, items=[(1, b"ab"), (2, b"cd")], seed=UNIT_SEED, **extra)
    c.put(3, b"ef")
    assert c.get(1) == b"ab" and c.delete(2) and c.get(2) is None
    c.batch([(0, 3, None), (7, 0, None)])
    assert c.verify_rtl(unit_build)["rtl_matches_golden"]


def test_unit_full_bin_block_fails_closed(tmp_path_factory):
    """Tier 6 on the RTL with bins' HBM blocks of 3 slots (the item bounds out of the way): a
    placement into a full block halts with FATAL_CAPACITY on the normal schedule, and an
    initialisation with more items than the blocks hold drops the overflowing items and ends
    fatal; the RTL matches the golden model in both (responses, cycles, host log and memory,
    HBM state)."""
    from celosia.omap import OmapConfig, OmapModel, Status

    from celosia.omap import compare_rtl, run_rtl

    cfg = OmapConfig(**dict(UNIT_CFG, bin_block=3, hbm_items=32, queue_items=32))
    keys = derive_keys(UNIT_SEED)
    build = tmp_path_factory.mktemp("omap_block3")
    items, cmds = churn_workload(2)
    gold, expected = golden_run(cfg, keys, items, cmds)
    fatal = [k for k, e in enumerate(expected) if e.status == Status.FATAL_CAPACITY]
    assert fatal and gold.peak_hbm_items < cfg.hbm_items  # the block bound, not the item bound
    assert gold.queries[fatal[0]].cycles == cfg.schedule.latency
    run = run_rtl(cfg, keys, items, cmds, build, tag="command")
    assert compare_rtl(gold, run, expected) == []
    # 26 initial keys that fit the index (4 per bucket) but not 8 blocks of 3 slots
    probe, per_bucket, keys_in = OmapModel(cfg, keys=keys), {}, []
    for k in range(1, 500):
        b = probe._bucket(k)
        if per_bucket.get(b, 0) < cfg.bucket_width and len(keys_in) < 26:
            per_bucket[b] = per_bucket.get(b, 0) + 1
            keys_in.append(k)
    items = [(k, k.to_bytes(2, "little")) for k in keys_in]
    gold, expected = golden_run(cfg, keys, items, cmds[:3])
    assert gold.halted == Status.FATAL_CAPACITY and len(gold.index) < len(items)
    run = run_rtl(cfg, keys, items, cmds[:3], build, tag="init")
    assert compare_rtl(gold, run, expected) == []
