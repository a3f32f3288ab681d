# amaranth: UnusedElaboratable=no
"""The oblivious map's on-chip crypto on Verilator through cocotb, bit for bit against the
pure-Python reference (:mod:`celosia.sim.omap_crypto`), with random valid gaps and backpressure.

Only the crypto cores exist as RTL so far (ChaCha20 block, SipHash-2-4, the CSPRNG pair
sampler); the unit's top level is not generated yet (see docs/omap.md), so spec tier 1
(whole-unit RTL vs golden) is not covered here.
"""

from __future__ import annotations

import random
import struct

from amaranth.hdl import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from celosia.hw.omap_crypto import ChaCha20Core, PairSampler, SipHash24Core
from celosia.sim.cocotb_runner import run_cocotb
from celosia.sim.omap_crypto import ChaChaRNG, chacha20_block, derive_keys, distinct_pair, siphash24

KEYS = derive_keys(5)


def _words(msg: bytes) -> list[int]:
    """SipHash message words, the last one with the length byte on top."""
    full = len(msg) - len(msg) % 8
    words = [struct.unpack_from("<Q", msg, i)[0] for i in range(0, full, 8)]
    return words + [int.from_bytes(msg[full:], "little") | ((len(msg) & 0xFF) << 56)]


class CryptoCores(wiring.Component):
    """Test wrapper: every crypto core in one design, so one Verilator build tests them all."""

    def __init__(self, sampler_bins):
        self.samplers = {f"ps{b}": PairSampler(b) for b in sampler_bins}
        members = {"cc_key": In(256), "cc_req": In(stream.Signature(128)), "cc_blk": Out(stream.Signature(512)),
                   "sh_key": In(128), "sh_msg": In(stream.Signature(65)), "sh_tag": Out(stream.Signature(64))}
        for name, s in self.samplers.items():
            members[f"{name}_key"] = In(256)
            members[f"{name}_pair"] = Out(stream.Signature(2 * s.w))
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
        for name, s in self.samplers.items():
            m.submodules[name] = s
            m.d.comb += s.key.eq(getattr(self, f"{name}_key"))
            wiring.connect(m, s.pair, wiring.flipped(getattr(self, f"{name}_pair")))
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
    dut = CryptoCores((3, 128))
    pairs = []
    for name, s in dut.samplers.items():
        rng = ChaChaRNG(KEYS.rng)
        pairs.append({"prefix": name, "key": int.from_bytes(KEYS.rng, "little"), "w": s.w, "seed": s.bins,
                      "expected": [list(distinct_pair(rng, s.bins)) for _ in range(100)]})
    res = run_cocotb(dut, "omap_crypto_top", "omap_tb", tmp_path, testcase=["chacha_blocks", "siphash_tags", "sampler_pairs"],
                     params={"chacha": chacha, "siphash": siphash, "pairs": pairs})
    assert sorted(res.tests) == ["chacha_blocks", "sampler_pairs", "siphash_tags"]


# =====================================================================================
# tier 1: the whole unit against the golden model
# =====================================================================================
def encode(cmd, cfg) -> int:
    """A Python command as the unit's command beat (op | key_len | key | value_len | value)."""
    V, kb = cfg.value_bytes, cfg.key_bytes
    try:
        op, key, value = cmd
    except (TypeError, ValueError):
        op, key, value = 0xFF, 0, None
    op = op if isinstance(op, int) and not isinstance(op, bool) and 0 <= op < 255 else 0xFF
    if isinstance(key, (bytes, bytearray)):
        klen, kv = len(key), int.from_bytes(key, "little") if len(key) <= 8 else 0
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


def init_beats(items, cfg):
    beats = [3 | cfg.key_bytes << 8 | k << 16 | cfg.value_bytes << 80 | int.from_bytes(v, "little") << 88
             for k, v in items]
    return beats + [4] * (cfg.n - len(items))


def run_unit(tmp_path, cfg, keys, items, cmds, name="omap_unit_top", tamper=None, tag="run"):
    """Run golden and RTL on the same init items and commands; ``tamper`` = {command index:
    [(host address, xor mask)]} is applied to host memory just before that command, as the
    adversary would. Returns (golden model, responses, RTL result, unit, dump names)."""
    import json

    from celosia.hw.omap import OmapUnit
    from celosia.sim.omap import OmapModel

    tamper = tamper or {}
    gold = OmapModel(cfg, keys=keys)
    gold.initialise(items)
    expected = []
    for k, c in enumerate(cmds):
        for addr, x in tamper.get(k, ()):
            gold.host.tamper_write(addr, bytes([gold.host.data[addr] ^ x]))
        expected.append(gold.execute(c))
    unit = OmapUnit(cfg, keys)
    depth = {"index": cfg.buckets * cfg.bucket_width, "item": unit.pool_depth, "loads": cfg.bins,
             "versions": cfg.host_pages, "qhead": cfg.host_pages, "qtail": cfg.host_pages,
             "next": unit.pool_depth, "prev": unit.pool_depth, "counters": 1}
    dbg_names = ["index", "item", "loads", "versions", "qhead", "qtail", "next", "prev", "counters"]
    out = tmp_path / f"unit_result_{tag}.json"
    params = {"unit": {
        "cmds": init_beats(items, cfg) + [encode(c, cfg) for c in cmds], "host_latency": cfg.timing.host_latency,
        "page_bytes": cfg.page_bytes, "host_bytes": cfg.host_base + cfg.host_bytes, "n_resp": len(cmds),
        "max_cycles": gold.cycle + 1000, "out": str(out),
        "dump": [[k, depth[nm]] for k, nm in enumerate(dbg_names)],
        "tamper": {str(cfg.n + k): v for k, v in tamper.items()},
    }}
    run_cocotb(unit, name, "omap_tb", tmp_path, testcase="unit_trace", params=params)
    return gold, expected, json.loads(out.read_text()), unit, dbg_names


def _fields(word, layout):
    out, o = {}, 0
    for name, w in layout:
        out[name] = (word >> o) & ((1 << w) - 1)
        o += w
    return out


def rtl_state(res, unit, names, cfg):
    """The logical HBM state (as the golden model keeps it) from the RTL's region dump."""
    dump = {nm: res["dumps"][str(k)] for k, nm in enumerate(names)}
    f = unit.fields()
    null = 1 << unit.pw
    index = {}
    for a, wv in enumerate(dump["index"]):
        x = _fields(wv, f["entry"])
        if x["valid"]:
            index[x["key"]] = (x["d1"], x["d2"], x["bin"], a // cfg.bucket_width)
    items = [_fields(wv, f["item"]) for wv in dump["item"]]
    hbm = {x["key"]: x["val"].to_bytes(cfg.value_bytes, "little") for x in items if x["valid"] and x["bin"] < cfg.hbm_bins}
    queues = {}
    for mm in range(cfg.host_pages):
        q, h = [], dump["qhead"][mm]
        while not h & null and len(q) <= unit.pool_depth:
            q.append((items[h]["key"], items[h]["val"].to_bytes(cfg.value_bytes, "little")))
            h = dump["next"][h]
        if q:
            queues[cfg.hbm_bins + mm] = q
    c = dump["counters"][0]
    return {"index": index, "hbm": hbm, "queues": queues, "loads": dump["loads"], "versions": dump["versions"],
            "count": c & 0xFFFFFFFF, "queued": (c >> 32) & 0xFFFFFFFF, "hbm_count": c >> 64}


def golden_state(g):
    return {"index": {k: (e.d1, e.d2, e.bin, e.bucket) for k, e in g.index.items()}, "hbm": dict(g.hbm_store),
            "queues": {b: list(q) for b, q in g.queues.items() if q}, "loads": list(g.loads),
            "versions": list(g.versions), "count": len(g.index), "queued": g.queued, "hbm_count": len(g.hbm_store)}


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


def assert_same(cfg, gold, expected, res, unit, names):
    assert res["late"] == 0, "the RTL missed a window of the schedule"
    # identical responses
    got = [(x & 0xFF, (x >> 8).to_bytes(cfg.value_bytes, "little")) for _, x in res["responses"]]
    assert got == [(int(e.status), e.value) for e in expected]
    # identical per-command cycles: accepted at the model's start cycle, answered on schedule
    assert res["accepts"][cfg.n:] == [q.start for q in gold.queries]
    assert [c for c, _ in res["responses"]] == [
        q.start + (cfg.schedule.respond if q.cycles == cfg.schedule.latency else q.cycles - 1) for q in gold.queries]
    # identical host transaction log (initialisation included) and host memory (ciphertext and tags)
    assert [tuple(t) for t in res["host_log"]] == [tuple(t) for t in gold.host.log]
    assert bytes.fromhex(res["host_mem"]) == bytes(gold.host.data)
    # identical final HBM state
    assert rtl_state(res, unit, names, cfg) == golden_state(gold)


def test_unit_matches_golden_model(tmp_path):
    from celosia.sim.omap import OmapConfig, Status

    cfg = OmapConfig(**UNIT_CFG)
    keys = derive_keys(21)
    items, cmds = unit_workload()
    gold, expected, res, unit, names = run_unit(tmp_path, cfg, keys, items, cmds)
    cases = set()
    for q in gold.queries:
        h = q.hidden
        cases |= {"bad"} if h["bad"] else {(h["op"], h["hit"]), ("in", h["where"])}
        cases |= {("flush", f > 0) for f in h.get("flushed", ())}
    need = {(o, hit) for o in (0, 1, 2) for hit in (True, False)} | {("in", w) for w in ("hbm", "queue", "page")}
    need |= {"bad", ("flush", True), ("flush", False)}
    assert need <= cases, f"workload misses {need - cases}"
    assert_same(cfg, gold, expected, res, unit, names)
    # same build, second run: the adversary flips a ciphertext byte of one page before command 6;
    # both halt with FATAL_INTEGRITY on the same command, then answer every command fail-closed
    page = cfg.host_base + 2 * cfg.page_bytes
    gold, expected, res, unit, names = run_unit(tmp_path, cfg, keys, items, cmds[:30], tamper={6: [(page + 9, 0x10)]},
                                                tag="tamper")
    assert Status.FATAL_INTEGRITY in [e.status for e in expected] and expected[-1].status == Status.FATAL_INTEGRITY
    assert_same(cfg, gold, expected, res, unit, names)
