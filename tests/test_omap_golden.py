"""Oblivious map golden model: crypto vectors, map semantics, schedule, configuration errors,
initialisation, bad commands, capacity (tier 6) and integrity (tier 7) of shared/specs/omap.md."""

import random

import pytest
from celosia.omap import OmapConfig, OmapModel, Op, Response, Status, default_p_cap
from celosia.omap.crypto import (
    ChaChaRNG,
    chacha20_block,
    derive_keys,
    distinct_pair,
    page_keystream,
    siphash24,
)

from celosia.errors import HardwareGenerationError

KEYS = derive_keys(7)


# -- primitives -----------------------------------------------------------------------
def test_chacha20_rfc8439_block_vector():
    # RFC 8439 §2.3.2
    key = bytes(range(32))
    nonce = bytes.fromhex("000000090000004a00000000")
    assert chacha20_block(key, 1, nonce).hex() == (
        "10f1e7e4d13b5915500fdd1fa32071c4c7d1f4c733c068030422aa9ac3d46c4e"
        "d2826446079faa0914c2d705d98b02a2b5129cd1de164eb9cbd083e8a2503c4e")


def test_chacha20_matches_independent_implementation():
    algorithms = pytest.importorskip("cryptography.hazmat.primitives.ciphers.algorithms")
    from cryptography.hazmat.primitives.ciphers import Cipher

    key = bytes(range(7, 39))
    ks = page_keystream(key, 12345, 678, 300)
    nonce16 = (0).to_bytes(4, "little") + (12345).to_bytes(4, "little") + (678).to_bytes(8, "little")
    ref = Cipher(algorithms.ChaCha20(key, nonce16), None).encryptor().update(bytes(300))
    assert ks == ref


def test_siphash24_reference_vector():
    # SipHash paper, appendix A: key 00..0f, message 00..0e
    assert siphash24(bytes(range(16)), bytes(range(15))) == 0xA129CA6149BE45E5


class _Words:
    """A u32 source with a fixed script, to check rejection sampling."""

    def __init__(self, words):
        self.words = list(words)

    def u32(self):
        return self.words.pop(0)

    uniform = ChaChaRNG.uniform


def test_uniform_rejects_the_biased_tail_and_pair_convention():
    n = 3
    limit = (2**32 // n) * n  # 4294967295 -> the single word 2**32-1 is rejected
    r = _Words([limit, limit + 0, 7])
    assert r.uniform(n) == 7 % 3 and r.words == []
    # d1 = uniform(B), t = uniform(B-1), d2 = t + (t >= d1)
    assert distinct_pair(_Words([2, 2]), 5) == (2, 3)
    assert distinct_pair(_Words([2, 1]), 5) == (2, 1)
    rng = ChaChaRNG(KEYS.rng)
    pairs = [distinct_pair(rng, 4) for _ in range(2000)]
    assert all(a != b and 0 <= a < 4 and 0 <= b < 4 for a, b in pairs)
    assert len(set(pairs)) == 12


# -- configuration ------------------------------------------------------------------------
def test_default_p_cap_matches_spec():
    assert default_p_cap(2**10, 8) == 13 and default_p_cap(2**16, 8) == 13
    assert default_p_cap(2**17, 8) == 14 and default_p_cap(2**20, 8) == 14 and default_p_cap(2**24, 8) == 14


@pytest.mark.parametrize("kwargs, words", [
    (dict(n=1001), ["N=1001", "c=8", "1000", "1008"]),
    (dict(n=1024, p_cap=8), ["P_cap=8", "c=8", "13"]),
    (dict(n=2**20, hbm_bytes=1 << 20), ["HBM budget too small", "N=1048576", "hbm_bytes=1048576"]),
    (dict(n=1024, alpha=1.0), ["alpha=1.0"]),
])
def test_configuration_errors_name_the_numbers(kwargs, words):
    with pytest.raises(HardwareGenerationError) as e:
        OmapConfig(**kwargs)
    for w in words:
        assert w in str(e.value)


def test_schedule_meets_latency_goal_at_one_million():
    cfg = OmapConfig(n=2**20, value_bytes=8)
    assert cfg.p_cap == 14 and abs(cfg.hbm_items - 296_720) / 296_720 < 0.002  # the spec's HBM bound
    s = cfg.schedule
    assert s.latency / cfg.timing.clock_mhz < 2.5  # microseconds
    assert cfg.expected_blocks() == pytest.approx(4 * (1 - 0.2) * 14, rel=0.01)


# -- map semantics ---------------------------------------------------------------------------
def _random_run(model, n_ops, key_space, seed, ref):
    r = random.Random(seed)
    v = model.cfg.value_bytes
    for _ in range(n_ops):
        k = r.choice(key_space)
        op = r.choice((Op.GET, Op.PUT, Op.DELETE))
        val = r.randbytes(v) if op == Op.PUT else None
        resp = model.execute((op, k, val))
        assert len(resp.value) == v
        if op == Op.GET:
            assert resp == (Response(Status.OK, ref[k]) if k in ref else Response(Status.NOT_FOUND, bytes(v)))
        elif op == Op.PUT:
            if resp.status == Status.OK:
                ref[k] = val
            else:
                assert resp.status == Status.FULL and k not in ref
        else:
            assert resp.status == (Status.OK if k in ref else Status.NOT_FOUND)
            ref.pop(k, None)


@pytest.mark.parametrize("crypto", [True, False])
def test_behaves_like_a_dict(crypto):
    cfg = OmapConfig(n=256, value_bytes=5, c=4, p_cap=6, bucket_width=8, index_load=4)
    m = OmapModel(cfg, keys=KEYS, crypto=crypto)
    r = random.Random(3)
    init = {r.randrange(2**64): r.randbytes(5) for _ in range(150)}
    assert m.initialise(init.items()) == Status.OK
    assert m.contents() == init
    ref = dict(init)
    _random_run(m, 600 if crypto else 3000, list(init) + [r.randrange(2**64) for _ in range(80)], 5, ref)
    assert m.contents() == ref and m.halted is None
    assert {q.cycles for q in m.queries} == {cfg.schedule.latency}
    # load counters agree with where the items are
    assert sum(m.loads) == len(ref) == len(m.index)


def test_full_map_refuses_inserts_but_updates():
    cfg = OmapConfig(n=16, c=4, p_cap=6, value_bytes=2, hbm_items=16, queue_items=16)
    m = OmapModel(cfg, keys=KEYS)
    m.initialise((k, b"ab") for k in range(16))
    assert m.execute((Op.PUT, 99, b"xy")).status == Status.FULL
    assert m.execute((Op.PUT, 3, b"xy")).status == Status.OK
    assert m.execute((Op.GET, 3, None)) == Response(Status.OK, b"xy")
    assert m.execute((Op.GET, 99, None)).status == Status.NOT_FOUND


# -- initialisation ----------------------------------------------------------------------------
def test_initialisation_host_trace_depends_only_on_n():
    cfg = OmapConfig(n=128, c=8, value_bytes=4)
    logs = []
    for items in ([], [(k, b"\0\0\0\0") for k in range(128)], [(k * 7919 + 1, b"abcd") for k in range(60)]):
        m = OmapModel(cfg, keys=KEYS)
        m.initialise(items)
        logs.append((list(m.host.log), m.cycle))
        # one sequential pass: each page written once, in address order
        assert [t.address for t in m.host.log] == [m.page_address(b) for b in range(m.K, m.B)]
        assert all(t.rw == "W" and t.length == cfg.page_bytes for t in m.host.log)
    assert logs[0] == logs[1] == logs[2]


# -- bad commands --------------------------------------------------------------------------------
BAD = [
    (Op.GET, 2**64, None),            # key wider than key_bits
    (Op.GET, b"\1\2\3", None),        # wrong key width as bytes
    (Op.PUT, 5, b"abc"),              # wrong value length
    (Op.PUT, 5, None),                # missing value
    (Op.GET, 5, b"\0" * 8),           # value on a GET
    (7, 5, None),                     # unknown opcode
    ("get", 5, None),                 # malformed opcode
    (Op.GET, 5),                      # malformed command
    None,
    (Op.DELETE, -1, None),
]


def test_bad_commands_get_fixed_size_error_on_the_same_schedule():
    cfg = OmapConfig(n=64, c=8, value_bytes=8)
    m = OmapModel(cfg, keys=KEYS)
    m.initialise([(5, b"12345678")])
    for cmd in BAD:
        q0 = len(m.queries)
        assert m.execute(cmd) == Response(Status.BAD_COMMAND, bytes(8))
        q = m.queries[q0]
        assert q.cycles == cfg.schedule.latency
        tr = m.host_trace(q)
        assert [t.rw for t in tr] in (["R", "R", "W", "W"], ["R", "W"], [])
    assert m.execute((Op.GET, 5, None)) == Response(Status.OK, b"12345678")


# -- tier 6: capacity ---------------------------------------------------------------------------
def _churn(m, n_ops, seed, live):
    r = random.Random(seed)
    nxt = max(live, default=0) + 1
    for _ in range(n_ops):
        if r.random() < 0.5 and live:
            k = live.pop(r.randrange(len(live)))
            m.execute((Op.DELETE, k, None))
        else:
            st = m.execute((Op.PUT, nxt, b"v" * m.cfg.value_bytes)).status
            if st == Status.OK:
                live.append(nxt)
            nxt += 1
        if m.halted:
            return


def test_long_churn_stays_within_bounds():
    cfg = OmapConfig(n=1024, value_bytes=4)
    m = OmapModel(cfg, keys=KEYS, crypto=False)
    live = list(range(1, 1001))
    m.initialise((k, b"abcd") for k in live)
    _churn(m, 12000, 1, live)
    assert m.halted is None
    assert m.peak_page_load <= cfg.p_cap
    assert m.peak_queued <= cfg.queue_items and m.peak_hbm_items <= cfg.hbm_items
    assert m.peak_block_fill < cfg.bin_block  # a bin's HBM block never came close to full
    assert all(m.block_fill(b) == (m.loads[b] if b < m.K else len(m.queues.get(b, ()))) for b in range(m.B))
    # the spec's footprint: about a quarter of the items in HBM, below (alpha + 1/12) N
    assert m.peak_hbm_items <= cfg.hbm_items
    assert sum(m.loads) == len(m.index)


@pytest.mark.parametrize("limits", [dict(queue_items=2, hbm_items=64), dict(hbm_items=3), dict(bin_block=2)])
def test_capacity_exhaustion_fails_closed(limits):
    cfg = OmapConfig(n=64, c=8, value_bytes=4, **limits)
    m = OmapModel(cfg, keys=KEYS, crypto=False)
    assert m.initialise() == Status.OK
    _churn(m, 500, 2, [])
    assert m.halted == Status.FATAL_CAPACITY
    fatal = next(i for i, q in enumerate(m.queries) if q.hidden.get("status") == Status.FATAL_CAPACITY)
    # the failing command itself ran the normal schedule (no data-dependent spill) ...
    assert m.queries[fatal].cycles == cfg.schedule.latency
    # ... and afterwards nothing touches memory and every answer is the fatal status
    n_log = len(m.host.log)
    for k in range(5):
        assert m.execute((Op.GET, k, None)) == Response(Status.FATAL_CAPACITY, bytes(4))
    assert len(m.host.log) == n_log


def test_full_bin_block_at_initialisation_fails_closed():
    """More initial items than the bins' blocks hold: the overflowing items are dropped and the
    pass ends with FATAL_CAPACITY (the host trace of the pass is unchanged); every command after
    is answered fail-closed without memory traffic."""
    cfg = OmapConfig(n=64, c=8, value_bytes=4, bin_block=3)  # 8 bins of 3 slots: 24 < 40 items
    m = OmapModel(cfg, keys=KEYS, crypto=False)
    ok = OmapModel(OmapConfig(n=64, c=8, value_bytes=4), keys=KEYS, crypto=False)
    items = [(k, b"abcd") for k in range(40)]
    assert m.initialise(items) == Status.FATAL_CAPACITY and ok.initialise(items) == Status.OK
    # the same writes as a pass that fits (its pace differs only because its schedule has other windows)
    assert [t[1:] for t in m.host.log] == [t[1:] for t in ok.host.log]
    assert len(m.index) == sum(m.loads) <= cfg.bins * cfg.bin_block
    n_log = len(m.host.log)
    assert m.execute((Op.GET, 1, None)) == Response(Status.FATAL_CAPACITY, bytes(4))
    assert len(m.host.log) == n_log


# -- tier 7: integrity ----------------------------------------------------------------------
def _until_page_touched(m, page_addr, seed):
    """Run GETs until a command reads ``page_addr`` (or the unit halts); return its response and record."""
    r = random.Random(seed)
    for _ in range(2000):
        q0 = len(m.queries)
        resp = m.execute((Op.GET, r.randrange(1000), None))
        if m.halted or any(t.address == page_addr and t.rw == "R" for t in m.host_trace(m.queries[q0])):
            return resp, m.queries[q0]
    raise AssertionError("page never touched")


def _fresh():
    cfg = OmapConfig(n=64, c=8, value_bytes=4)
    m = OmapModel(cfg, keys=KEYS)
    m.initialise((k, b"%04d" % k) for k in range(40))
    return m


@pytest.mark.parametrize("where", ["ciphertext", "tag", "version"])
def test_flipped_page_byte_is_detected(where):
    m = _fresh()
    addr = m.page_address(m.K + 1)
    off = {"ciphertext": 8 + 3, "tag": 8 + m.cfg.ct_bytes + 2, "version": 0}[where]
    m.host.tamper_flip(addr + off, 5)
    resp, q = _until_page_touched(m, addr, 1)
    assert resp.status == Status.FATAL_INTEGRITY and m.halted == Status.FATAL_INTEGRITY
    assert all(t.rw == "R" for t in m.host_trace(q))  # nothing written after a failed check


def test_replayed_page_version_is_detected():
    m = _fresh()
    addr = m.page_address(m.K)
    old = m.host.snapshot(addr, m.cfg.page_bytes)
    resp, _ = _until_page_touched(m, addr, 2)  # rewrites the page with a fresh version
    assert resp.status in (Status.OK, Status.NOT_FOUND)
    assert m.host.snapshot(addr, m.cfg.page_bytes) != old
    m.host.tamper_write(addr, old)  # replay the old, validly tagged page
    resp, _ = _until_page_touched(m, addr, 3)
    assert resp.status == Status.FATAL_INTEGRITY


def test_swapped_pages_are_detected():
    m = _fresh()
    a, b = m.page_address(m.K), m.page_address(m.K + 1)
    pa, pb = m.host.snapshot(a, m.cfg.page_bytes), m.host.snapshot(b, m.cfg.page_bytes)
    m.host.tamper_write(a, pb)
    m.host.tamper_write(b, pa)  # same versions (both 1): only the page id in the MAC catches it
    resp, q = _until_page_touched(m, a, 4)  # whichever of the two is read first fails
    assert resp.status == Status.FATAL_INTEGRITY
    assert {t.address for t in m.host_trace(q)} & {a, b}


def test_untampered_run_never_reports_integrity_failure():
    m = _fresh()
    r = random.Random(9)
    for _ in range(150):
        assert not m.execute((Op.GET, r.randrange(64), None)).status.fatal


# -- public API and CLI ------------------------------------------------------------------------
def test_client_get_put_delete_batch():
    from celosia.omap import Client, OmapStatusError

    c = Client(64, value_bytes=4, items=[(1, b"one!")], seed=3)
    assert c.get(1) == b"one!" and c.get(2) is None
    c.put(2, b"two!")
    assert c.get(2) == b"two!"
    assert c.delete(1) is True and c.delete(1) is False and c.get(1) is None
    with pytest.raises(OmapStatusError, match="BAD_COMMAND"):
        c.put(3, b"too long")
    rs = c.batch([(Op.GET, 2, None), (Op.PUT, 5, b"five"), (Op.GET, 5, None), (9, 0, None)])
    assert [r.status for r in rs] == [Status.OK, Status.OK, Status.OK, Status.BAD_COMMAND]
    assert rs[2].value == b"five"
    assert c.cycles > 0 and all(t.rw in "RW" for t in c.host_log)


def test_generate_and_cli(tmp_path, capsys):
    import json

    from celosia.cli import main

    out = tmp_path / "unit"
    assert main(["omap", "--capacity", "256", "--value-bytes", "8", "-o", str(out)]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["config"]["p_cap"] == 12 and rep["self_check"]["blocks_per_query_max"] <= 48
    assert rep["self_check"]["cycles_per_query"] == [rep["config"]["schedule"]["latency"]]
    v = (out / "omap_unit.v").read_text()
    assert rep["rtl"]["top"] == "omap_unit" and "module omap_unit" in v
    # the AXI4 top: host master ports and the key port (no key in the Verilog)
    assert "host__awaddr" in v and "host__rlast" in v and "key__payload" in v and "key" in rep["rtl"]["ports"]
    from celosia.omap import generate
    from celosia.omap.crypto import derive_keys

    rep = generate(256, 8, tmp_path / "const", constant_keys=True, axi_width=512)
    assert "key" not in rep["rtl"]["ports"] and rep["rtl"]["keys"].startswith("constant")
    enc = format(int.from_bytes(derive_keys(0).enc, "little"), "x")  # how Verilog spells the constant
    assert enc in (tmp_path / "const" / "omap_unit.v").read_text() and enc not in v
    rep = generate(256, 16, tmp_path / "v16", check_queries=10)  # 384-byte pages straddle 4 KiB
    assert rep["rtl"] is None and "4 KiB" in rep["rtl_note"]
    assert main(["omap", "--capacity", "256", "--value-bytes", "8", "-o", str(out)]) == 2
    bad = tmp_path / "bad"
    assert main(["omap", "--capacity", "1020", "--value-bytes", "8", "--alpha", "0.2", "-o", str(bad)]) == 2
    assert "N=1020" in " ".join(capsys.readouterr().err.split())
    assert not bad.exists() and not (tmp_path / ".bad.partial").exists()
