# amaranth: UnusedElaboratable=no
"""AttentionEngine on Verilator through cocotb (``tests/cocotb/attention_tb.py``): RTL == golden.

One engine per head dimension E ∈ {16, 32, 64} (three Verilator builds, 16×1, 8×2 and 8×4
lanes × rows per lane); every build runs many
jobs back to back, since sequence length, causal masking, the (heads, kv_heads) grouping and the
key-padding mask are all per-block stream inputs. The expected words come from
:func:`celosia.ir.attention.attention_int` with the engine's parameters and are compared bit for
bit, once with every stream at full rate and once with random valid gaps on cfg/q/k/v and random
plus bursty backpressure on o.

Jobs per build: sequence 1, T−1, T+1 and a random length; (4,4), (4,2), (4,1); causal on and
off; random key-padding masks; a batch with every key masked but one and a batch with every key
masked; a long row whose last key has a huge score (the running maximum moves late: the
rescale path); and (E = 16) two query blocks of a 512-long causal sequence.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from celosia.hw.attention import AttentionEngine, schedule
from celosia.ir.attention import attention_int
from celosia.sim.cocotb_runner import run_cocotb

from celosia.errors import CelosiaError, GraphError, HardwareGenerationError

T = 16
#: (lanes, rows per lane) of each build: blocks of 16, 16 and 32 queries (16 lanes at E = 16: the
#: scores of a key exactly fill the E cycles of the next one).
CONFIGS = {16: (16, 1), 32: (8, 2), 64: (8, 4)}


def _codes(rng, shape, lo=-3000, hi=3000):
    return rng.integers(lo, hi, shape)


def _jobs(e: int, rng):
    """(q, k, v, mask, causal, blocks) for one build."""
    jobs = []

    def add(b, h, hk, t, causal, mask=None, blocks=None, q=None, k=None, v=None):
        q = _codes(rng, (b, h, t, e)) if q is None else q
        k = _codes(rng, (b, hk, t, e)) if k is None else k
        v = _codes(rng, (b, hk, t, e), -4000, 4000) if v is None else v
        jobs.append((q, k, v, mask, causal, blocks))

    add(1, 4, 4, 1, False)                                        # sequence 1
    add(1, 4, 2, T - 1, True)                                     # T − 1, GQA, causal
    m = (rng.random((1, T + 1)) > 0.3).astype(int)
    m[0, 0] = 1
    add(1, 4, 1, T + 1, False, mask=m)                            # T + 1, MQA, padding mask
    t = int(rng.integers(20, 48))
    add(1, 4, 4, t, True, mask=(rng.random((1, t)) > 0.2).astype(int))  # random length, causal + mask
    m = np.zeros((2, 9), int)
    m[0, 5] = 1                                                   # batch 0: all masked but one
    add(2, 4, 4, 9, False, mask=m)                                # batch 1: every key masked
    t = 100                                                       # late huge score: rescale path
    q = rng.integers(0, 3000, (1, 4, t, e))
    k = _codes(rng, (1, 1, t, e))
    k[0, 0, -1] = 6000
    add(1, 4, 1, t, False, blocks=[0, -1], q=q, k=k)
    if e == 16:                                                   # two blocks of a long causal sequence
        add(1, 4, 1, 512, True, blocks=[100, -1])
    return jobs


def _stimulus(eng: AttentionEngine, jobs) -> dict:
    words = {"cfg": [], "q": [], "k": [], "v": [], "expected": []}
    ob = eng.out_fmt.bits
    for q, k, v, mask, causal, blocks in jobs:
        attrs = {"causal": causal, "score_fmt": eng.score_fmt}
        y = attention_int(q, k, v, mask, attrs, eng.q_fmt, eng.k_fmt, eng.v_fmt, eng.out_fmt, tile=eng.tile)
        sch = schedule(eng, q, k, v, mask, causal, blocks)
        for n in ("cfg", "q", "k", "v"):
            words[n] += sch[n]
        # padding lanes (past the last query) are don't-care: -1
        words["expected"] += [int(y[ix]) & ((1 << ob) - 1) if ix is not None else -1 for ix in sch["out"]]
    return words


@pytest.mark.slow
@pytest.mark.parametrize("e", [16, 32, 64])
def test_attention_engine_matches_golden(e, tmp_path):
    lanes, rows = CONFIGS[e]
    eng = AttentionEngine(e, lanes=lanes, rows=rows, tile=T, max_len=512)
    words = _stimulus(eng, _jobs(e, np.random.default_rng(e)))
    stim = tmp_path / "stimulus.json"
    stim.write_text(json.dumps(words))
    result = run_cocotb(eng, "attention_top", "attention_tb", tmp_path,
                        params={"file": str(stim), "seed": e, "p_gap": 0.2, "p_stall": 0.3})
    assert sorted(result.tests) == ["full_rate", "random_backpressure"]


# ---------------------------------------------------------------------------- bad input (no RTL)
def test_rejects_bad_parameters_before_rtl():
    with pytest.raises(HardwareGenerationError, match="lanes=32 is out of range 2..16"):
        AttentionEngine(16, lanes=32)
    with pytest.raises(HardwareGenerationError, match="e=24 is not a power of two"):
        AttentionEngine(24)
    with pytest.raises(HardwareGenerationError, match="tile=12 is not a power of two"):
        AttentionEngine(16, tile=12)
    with pytest.raises(HardwareGenerationError, match="max_len=0"):
        AttentionEngine(16, max_len=0)
    with pytest.raises(HardwareGenerationError, match="lanes=16 with rows=2 needs lanes < E=16"):
        AttentionEngine(16, lanes=16, rows=2)


def test_rejects_bad_jobs_with_numbers():
    eng = AttentionEngine(16, lanes=8, max_len=64)
    rng = np.random.default_rng(0)
    q, kv = _codes(rng, (1, 6, 4, 16)), _codes(rng, (1, 4, 4, 16))
    with pytest.raises(GraphError, match="6 query heads are not a multiple of 4 key/value heads"):
        schedule(eng, q, kv, kv)
    with pytest.raises(HardwareGenerationError, match=r"E=32, F=32 do not match the generated unit \(E=16, F=16\)"):
        schedule(eng, _codes(rng, (1, 4, 4, 32)), _codes(rng, (1, 4, 4, 32)), _codes(rng, (1, 4, 4, 32)))
    long = _codes(rng, (1, 4, 65, 16))
    with pytest.raises(HardwareGenerationError, match="65 .* outside 1..64"):
        schedule(eng, long, long, long)
    with pytest.raises(GraphError, match=r"group of 16 query heads does not divide the block of 8 queries"):
        schedule(eng, _codes(rng, (1, 16, 4, 16)), _codes(rng, (1, 1, 4, 16)), _codes(rng, (1, 1, 4, 16)))
    for exc in (GraphError, HardwareGenerationError):
        assert issubclass(exc, CelosiaError)
