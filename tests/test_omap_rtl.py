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
    res = run_cocotb(dut, "omap_crypto_top", "omap_tb", tmp_path,
                     params={"chacha": chacha, "siphash": siphash, "pairs": pairs})
    assert sorted(res.tests) == ["chacha_blocks", "sampler_pairs", "siphash_tags"]
