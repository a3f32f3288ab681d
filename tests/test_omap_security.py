"""Host-trace security of the oblivious map golden model: tiers 2-5 of shared/specs/omap.md.

Each negative control of tier 5 is a deliberately broken subclass of the model below and is
shown to be caught by the *same* check that passes on the real model:

* ``RealPlusDummy`` reads the item's real bin plus a uniformly random dummy bin;
* ``SkipUnchanged`` does not write back a page whose plaintext did not change;
* ``EarlyExit`` answers an index hit whose item is in HBM (value store or a queue) without
  touching host pages;
* ``NonceReuse`` encrypts every version of a page under the same nonce.

The statistics (chi-square survival function, two-sample Kolmogorov-Smirnov p-value,
logistic-regression distinguisher) are implemented here with numpy and math only.
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from fractions import Fraction

import numpy as np
import pytest
from celosia.omap import OmapConfig, OmapModel, Op
from celosia.omap.crypto import derive_keys

KEYS = derive_keys(11)
FAMILY_ALPHA = 1e-3  # family-wise error rate of the statistical tests (Bonferroni)


# =========================================================================================
# broken variants (negative controls)
# =========================================================================================
class RealPlusDummy(OmapModel):
    def _visit(self, entry, miss_pair):
        if entry is None:
            return miss_pair
        return (entry.bin, miss_pair[0])  # the real bin plus a uniform dummy


class SkipUnchanged(OmapModel):
    def _must_write(self, changed):
        return changed


class EarlyExit(OmapModel):
    def _skip_pages(self, entry):
        if entry is None:
            return False
        if entry.bin < self.K:
            return True
        return any(k == next(iter(()), None) for k in ()) or any(
            it[0] in self.index and self.index[it[0]] is entry for it in self.queues.get(entry.bin, ()))


class NonceReuse(OmapModel):
    def _nonce_version(self, page, version):
        return 0


CONTROLS = {"real+dummy": RealPlusDummy, "skip-unchanged": SkipUnchanged, "early-exit": EarlyExit}


# =========================================================================================
# trace shape (tier 2)
# =========================================================================================
def shape(model, q):
    """A command's host trace with each address replaced by its order of first appearance."""
    seen: dict[int, int] = {}
    return tuple((t.cycle, t.rw, t.length, seen.setdefault(t.address, len(seen))) for t in model.host_trace(q))


def canonical_shapes(cfg):
    """The four shapes a correct unit may show: which of (d1, d2) are host pages."""
    s, L = cfg.schedule, cfg.page_bytes
    return {
        "none": (),
        "d1": ((s.read1, "R", L, 0), (s.write1, "W", L, 0)),
        "d2": ((s.read2, "R", L, 0), (s.write2, "W", L, 0)),
        "both": ((s.read1, "R", L, 0), (s.read2, "R", L, 1), (s.write1, "W", L, 0), (s.write2, "W", L, 1)),
    }


def classify(model, q, canon):
    """Shape class of a command, or None if its shape or cycle count is not canonical."""
    if q.cycles != model.sched.latency:
        return None
    sh = shape(model, q)
    for name, c in canon.items():
        if sh == c:
            return name
    return None


# small pages (P_cap = 3) so that flushes of every size 0..P_cap occur in a short run
TIER2 = OmapConfig(n=64, c=2, alpha=0.25, p_cap=3, value_bytes=4, bucket_width=4, index_load=2,
                   hbm_items=64, queue_items=64)


def tier2_workload(cls):
    """A workload that reaches every hidden case; returns the model."""
    m = cls(TIER2, keys=KEYS)
    r = random.Random(1)
    m.initialise((k, b"init") for k in range(TIER2.n // 2))
    keys = list(range(2 * TIER2.n))
    phases = [(600, (0.3, 0.5, 0.2)), (300, (0.2, 0.1, 0.7)), (600, (0.3, 0.6, 0.1)), (300, (0.1, 0.1, 0.8))]
    for n_ops, weights in phases:
        for _ in range(n_ops):
            op = r.choices((Op.GET, Op.PUT, Op.DELETE), weights)[0]
            k = r.choice(keys)
            m.execute((op, k, b"vvvv" if op == Op.PUT else None))
            if m.halted:
                return m
    for cmd in [(9, 1, None), (Op.PUT, 1, b"x"), (Op.GET, 2**64, None)]:
        m.execute(cmd)
    return m


def hidden_cases(m):
    cases = set()
    for q in m.queries:
        h = q.hidden
        if h.get("bad"):
            cases.add("bad")
            continue
        cases.add((Op(h["op"]).name, "hit" if h["hit"] else "miss"))
        if h["where"]:
            cases.add(("in", h["where"]))
        for f in h["flushed"]:
            cases.add(("flush", f))
        if h["overflow"]:
            cases.add("page overflow")
        if h["bucket_full"] and h["op"] == Op.PUT:
            cases.add("full bucket")
    return cases


def tier2_violations(m):
    canon = canonical_shapes(m.cfg)
    return [q for q in m.queries if classify(m, q, canon) is None]


def test_tier2_every_hidden_case_has_the_same_shape_and_cycles():
    m = tier2_workload(OmapModel)
    assert m.halted is None
    need = {(o, h) for o in ("GET", "PUT", "DELETE") for h in ("hit", "miss")}
    need |= {("in", w) for w in ("hbm", "queue", "page")} | {("flush", f) for f in range(TIER2.p_cap + 1)}
    need |= {"page overflow", "full bucket", "bad"}
    assert need <= hidden_cases(m), f"workload misses {need - hidden_cases(m)}"
    assert tier2_violations(m) == []


@pytest.mark.parametrize("name", sorted(CONTROLS))
def test_tier2_catches_control(name):
    assert tier2_violations(tier2_workload(CONTROLS[name])), f"{name} not caught"


# =========================================================================================
# exact trace distribution (tier 3)
# =========================================================================================
class _Branch(Exception):
    def __init__(self, n):
        self.n = n


class ScriptRNG:
    """Follows a script of uniform(n) outcomes; raises _Branch(n) when it runs out."""

    def __init__(self, script):
        self.script, self.i = script, 0

    def uniform(self, n):
        if self.i == len(self.script):
            raise _Branch(n)
        v = self.script[self.i]
        assert 0 <= v < n
        self.i += 1
        return v


TINY = OmapConfig(n=6, c=2, alpha=0.34, p_cap=3, value_bytes=1, key_bits=8, bucket_width=6, index_load=6,
                  hbm_items=6, queue_items=6)  # B = 3 bins: bin 0 in HBM, bins 1 and 2 host pages


def trace_distribution(cls, seq, cfg=TINY):
    """Exact distribution (Fractions) of the full host trace of ``seq`` over every RNG outcome."""
    dist: dict = defaultdict(Fraction)
    stack = [((), Fraction(1))]
    while stack:
        script, p = stack.pop()
        m = cls(cfg, keys=KEYS, rng=ScriptRNG(script), crypto=False)
        try:
            m.initialise()
            for cmd in seq:
                m.execute(cmd)
        except _Branch as b:
            stack.extend((script + (v,), p / b.n) for v in range(b.n))
            continue
        dist[(tuple(m.host.log), tuple(q.cycles for q in m.queries))] += p
    assert sum(dist.values()) == 1
    return dict(dist)


G, P, D = Op.GET, Op.PUT, Op.DELETE
A, B_, C = 1, 2, 3
V = b"\x07"
PAIRS2 = [
    ([(P, A, V), (G, A, None)], [(P, A, V), (G, B_, None)]),       # GET hit vs miss
    ([(P, A, V), (P, A, V)], [(P, A, V), (P, B_, V)]),             # PUT update vs insert
    ([(P, A, V), (D, A, None)], [(P, A, V), (D, B_, None)]),       # DELETE hit vs miss
    ([(G, A, None), (G, A, None)], [(P, A, V), (D, A, None)]),     # op types
    ([(P, A, V), (9, A, None)], [(P, A, V), (G, A, None)]),        # bad command vs hit
]


@pytest.mark.parametrize("i", range(len(PAIRS2)))
def test_tier3_exact_equality_two_queries(i):
    a, b = PAIRS2[i]
    da, db = trace_distribution(OmapModel, a), trace_distribution(OmapModel, b)
    assert da == db


def test_tier3_exact_equality_three_queries():
    seqs = [
        [(P, A, V), (P, B_, V), (G, A, None)],   # hit on an item that may sit in a queue or HBM
        [(P, A, V), (P, B_, V), (G, C, None)],   # miss
        [(P, A, V), (G, A, None), (G, A, None)],  # repeated key
    ]
    dists = [trace_distribution(OmapModel, s) for s in seqs]
    assert dists[0] == dists[1] == dists[2]
    # and it is the ideal: one uniform distinct pair per query, every host page of it read and written
    assert len(dists[0]) == 6 ** 3 and set(dists[0].values()) == {Fraction(1, 6 ** 3)}


@pytest.mark.parametrize("name", sorted(CONTROLS))
def test_tier3_catches_control(name):
    cls = CONTROLS[name]
    caught = any(trace_distribution(cls, a) != trace_distribution(cls, b) for a, b in PAIRS2[:3])
    assert caught, f"{name} not caught by exact trace distributions"


# =========================================================================================
# statistics at scale (tier 4)
# =========================================================================================
def _gammainc_upper(a: float, x: float) -> float:
    """Regularized upper incomplete gamma Q(a, x): series for x < a+1, else Lentz continued fraction."""
    if x <= 0:
        return 1.0
    lg = math.lgamma(a)
    if x < a + 1:
        term = total = 1.0 / a
        ap = a
        for _ in range(10000):
            ap += 1
            term *= x / ap
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return max(0.0, 1.0 - total * math.exp(-x + a * math.log(x) - lg))
    tiny = 1e-300
    b = x + 1 - a
    c = 1 / tiny
    d = 1 / b
    h = d
    for i in range(1, 10000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-15:
            break
    return math.exp(-x + a * math.log(x) - lg) * h


def chi2_sf(stat: float, df: int) -> float:
    """P(X >= stat) for a chi-square variable with ``df`` degrees of freedom."""
    return _gammainc_upper(df / 2, stat / 2)


def chi2_gof(observed, probs) -> float:
    """Goodness-of-fit p-value of counts against probabilities."""
    obs = np.asarray(observed, float)
    exp = np.asarray(probs, float) * obs.sum()
    return chi2_sf(float(((obs - exp) ** 2 / exp).sum()), len(obs) - 1)


def chi2_two_sample(a: Counter, b: Counter) -> float:
    """Chi-square test of homogeneity of two categorical samples."""
    cats = sorted(set(a) | set(b))
    t = np.array([[a.get(k, 0) for k in cats], [b.get(k, 0) for k in cats]], float)
    if len(cats) < 2:
        return 1.0
    exp = t.sum(1, keepdims=True) * t.sum(0, keepdims=True) / t.sum()
    return chi2_sf(float(((t - exp) ** 2 / exp).sum()), len(cats) - 1)


def ks_two_sample(x, y) -> float:
    """Two-sample Kolmogorov-Smirnov p-value (asymptotic Kolmogorov distribution, Stephens' correction).

    Ties make the test conservative, which is the safe direction for a test that must pass.
    """
    x, y = np.sort(np.asarray(x, float)), np.sort(np.asarray(y, float))
    grid = np.concatenate([x, y])
    d = float(np.max(np.abs(np.searchsorted(x, grid, "right") / len(x) - np.searchsorted(y, grid, "right") / len(y))))
    ne = len(x) * len(y) / (len(x) + len(y))
    lam = (math.sqrt(ne) + 0.12 + 0.11 / math.sqrt(ne)) * d
    if lam < 1e-3:
        return 1.0
    return max(0.0, min(1.0, 2 * sum((-1) ** (j - 1) * math.exp(-2 * j * j * lam * lam) for j in range(1, 101))))


def test_statistics_helpers_against_known_values():
    # chi-square: the 95th percentiles of df 1, 3, 10 (standard tables)
    for x, df in ((3.841459, 1), (7.814728, 3), (18.307038, 10)):
        assert chi2_sf(x, df) == pytest.approx(0.05, abs=1e-5)
    assert chi2_sf(200.0, 150) == pytest.approx(0.00394, rel=0.05)
    assert chi2_sf(0.5, 4) == pytest.approx(math.exp(-0.25) * (1 + 0.25), rel=1e-9)
    rng = np.random.default_rng(0)
    assert ks_two_sample(rng.normal(size=2000), rng.normal(size=2000)) > 0.01
    assert ks_two_sample(rng.normal(size=2000), rng.normal(0.2, 1, size=2000)) < 1e-6
    stats = pytest.importorskip("scipy.stats")  # cross-check when scipy happens to be installed
    a, b = rng.normal(size=500), rng.normal(0.1, 1, size=700)
    assert ks_two_sample(a, b) == pytest.approx(stats.ks_2samp(a, b, method="asymp").pvalue, rel=0.05, abs=1e-4)
    assert chi2_sf(33.3, 17) == pytest.approx(stats.chi2.sf(33.3, 17), rel=1e-9)


STAT = OmapConfig(n=1024, value_bytes=4)
N_QUERIES = 4000


def workload(name, n_q, seed):
    """Commands of one named workload (the map starts with keys 0..511)."""
    r = random.Random(seed)
    if name == "uniform":
        return [(r.choice((G, P, D)), r.randrange(1024), None) for _ in range(n_q)]
    if name == "repeated":
        return [(G, 7, None)] * n_q
    if name == "zipf":
        w = [1 / (i + 1) ** 1.2 for i in range(512)]
        return [(G, k, None) for k in r.choices(range(512), w, k=n_q)]
    if name == "scan":
        return [(G, i % 512, None) for i in range(n_q)]
    if name == "absent":
        return [(G, 10**6 + i, None) for i in range(n_q)]
    if name == "churn":
        out, live, nxt = [], list(range(512)), 512
        for i in range(n_q):
            if i % 2:
                out.append((D, live.pop(0), None))
            else:
                out.append((P, nxt, None))
                live.append(nxt)
                nxt += 1
        return out
    if name == "delay":  # each key read again 64 queries later
        return [(G, (i // 2) % 512 if i % 2 == 0 else ((i // 2) - 32) % 512, None) for i in range(n_q)]
    raise KeyError(name)


WORKLOADS = ["uniform", "repeated", "zipf", "scan", "absent", "churn", "delay"]


def run_workload(cls, name, n_q=N_QUERIES, seed=0, cfg=STAT):
    m = cls(cfg, seed=seed, keys=derive_keys(seed), crypto=False)
    m.initialise((k, b"abcd") for k in range(512))
    for op, k, _ in workload(name, n_q, seed):
        m.execute((op, k, b"wxyz" if op == P else None))
    return m


def features(m):
    """Per-command observables: shape class, pages read, overlap with the previous command."""
    canon = canonical_shapes(m.cfg)
    classes, pages, overlap, prev = [], [], [], frozenset()
    for q in m.queries:
        classes.append(classify(m, q, canon))
        cur = frozenset((t.address - m.cfg.host_base) // m.cfg.page_bytes for t in m.host_trace(q) if t.rw == "R")
        pages.append(cur)
        overlap.append(len(cur & prev))
        prev = cur
    return classes, pages, overlap


def reuse_distances(pages):
    last, out = {}, []
    for i, s in enumerate(pages):
        for p in s:
            if p in last:
                out.append(i - last[p])
            last[p] = i
    return out


def ideal_reference(cfg, n_q, seed):
    """The same observables for iid uniform distinct pairs (what the host should see)."""
    rng = np.random.default_rng(seed)
    b, k = cfg.bins, cfg.hbm_bins
    d1 = rng.integers(0, b, n_q)
    t = rng.integers(0, b - 1, n_q)
    d2 = t + (t >= d1)
    pages, overlap, prev = [], [], frozenset()
    for x, y in zip(d1.tolist(), d2.tolist()):
        cur = frozenset(v - k for v in (x, y) if v >= k)
        pages.append(cur)
        overlap.append(len(cur & prev))
        prev = cur
    return pages, overlap


def pvalues(m, seed=0):
    """The tier-4 tests of one trace; a shape/cycle violation is p = 0."""
    cfg = m.cfg
    classes, pages, overlap = features(m)
    if any(c is None for c in classes):
        return {"shape": 0.0}
    b, k, mm = cfg.bins, cfg.hbm_bins, cfg.host_pages
    tot = b * (b - 1)
    probs = {"none": k * (k - 1) / tot, "d1": mm * k / tot, "d2": k * mm / tot, "both": mm * (mm - 1) / tot}
    cnt = Counter(classes)
    reads = Counter(p for s in pages for p in s)
    ref_pages, ref_overlap = ideal_reference(cfg, len(m.queries), 1000 + seed)
    return {
        "class": chi2_gof([cnt[c] for c in probs], list(probs.values())),
        "page": chi2_gof([reads[p] for p in range(mm)], [1 / mm] * mm),
        "overlap": chi2_two_sample(Counter(overlap), Counter(ref_overlap)),
        "reuse": ks_two_sample(reuse_distances(pages), reuse_distances(ref_pages)),
    }


N_TESTS = len(WORKLOADS) * 4


def test_tier4_statistics_pass_bonferroni_on_every_workload():
    worst = {}
    for i, w in enumerate(WORKLOADS):
        ps = pvalues(run_workload(OmapModel, w, seed=i), seed=i)
        assert "shape" not in ps, f"{w}: non-canonical shape"
        worst[w] = min(ps.items(), key=lambda kv: kv[1])
    bad = {w: v for w, v in worst.items() if v[1] < FAMILY_ALPHA / N_TESTS}
    assert not bad, f"rejected at family alpha {FAMILY_ALPHA}: {bad}"


@pytest.mark.parametrize("name", sorted(CONTROLS))
def test_tier4_statistics_catch_control(name):
    rejected = []
    for i, w in enumerate(("repeated", "uniform", "absent")):
        ps = pvalues(run_workload(CONTROLS[name], w, n_q=2000, seed=i), seed=i)
        if min(ps.values()) < FAMILY_ALPHA / N_TESTS:
            rejected.append(w)
    assert rejected, f"{name} not caught"


# -- a trained distinguisher ----------------------------------------------------------------------
WINDOW = 40


def window_features(m):
    classes, pages, overlap = features(m)
    rows = []
    for s in range(0, len(m.queries) - WINDOW + 1, WINDOW):
        qs = m.queries[s:s + WINDOW]
        log = [t for q in qs for t in m.host_trace(q)]
        cls = Counter(classes[s:s + WINDOW])
        reads = [p for ps in pages[s:s + WINDOW] for p in ps]
        rows.append([
            cls["none"], cls["d1"], cls["d2"], cls["both"], cls[None],
            sum(t.rw == "R" for t in log), sum(t.rw == "W" for t in log),
            sum(q.cycles for q in qs) / WINDOW, np.mean(overlap[s:s + WINDOW]),
            len(reads) - len(set(reads)),
        ])
    return np.array(rows, float)


def distinguisher_accuracy(cls, seed=0):
    """Train logistic regression to tell a hit-only workload (a scan of present keys) from a
    miss-only one (absent keys); return the held-out accuracy and the number of test windows."""
    xa = window_features(run_workload(cls, "scan", n_q=6000, seed=seed))
    xb = window_features(run_workload(cls, "absent", n_q=6000, seed=seed + 1))
    x = np.vstack([xa, xb])
    y = np.r_[np.ones(len(xa)), np.zeros(len(xb))]
    perm = np.random.default_rng(seed).permutation(len(y))
    x, y = x[perm], y[perm]
    mu, sd = x.mean(0), x.std(0) + 1e-9
    x = np.c_[(x - mu) / sd, np.ones(len(x))]
    n_train = len(y) * 2 // 3
    w = np.zeros(x.shape[1])
    for _ in range(2000):  # gradient descent on the L2-regularised logistic loss
        p = 1 / (1 + np.exp(-x[:n_train] @ w))
        w -= 0.5 * (x[:n_train].T @ (p - y[:n_train]) / n_train + 1e-3 * w)
    pred = (x[n_train:] @ w) > 0
    return float(np.mean(pred == y[n_train:])), len(y) - n_train


def test_trained_distinguisher_stays_at_chance():
    acc, n_test = distinguisher_accuracy(OmapModel)
    assert abs(acc - 0.5) <= 3.5 * math.sqrt(0.25 / n_test), f"accuracy {acc:.3f} on {n_test} windows"


@pytest.mark.parametrize("name", ["skip-unchanged", "early-exit"])
def test_trained_distinguisher_catches_control(name):
    acc, n_test = distinguisher_accuracy(CONTROLS[name])
    assert acc - 0.5 > 3.5 * math.sqrt(0.25 / n_test), f"{name}: accuracy only {acc:.3f}"


# =========================================================================================
# ciphertext freshness (nonce reuse)
# =========================================================================================
def equal_byte_fraction(cls):
    """Run a workload with crypto on, as the adversary compare each written page with the
    ciphertext read from the same address in the same command; fraction of equal bytes."""
    cfg = OmapConfig(n=64, c=8, value_bytes=4)
    m = cls(cfg, keys=KEYS)
    m.initialise((k, b"abcd") for k in range(40))
    seen, equal, total = {}, 0, 0
    read, write = m.host.read, m.host.write

    def spy_read(cycle, addr, length):
        data = read(cycle, addr, length)
        seen[addr] = data
        return data

    def spy_write(cycle, addr, payload):
        nonlocal equal, total
        old, body = seen[addr][8:8 + cfg.ct_bytes], payload[8:8 + cfg.ct_bytes]
        equal += sum(a == b for a, b in zip(old, body))
        total += len(body)
        write(cycle, addr, payload)

    m.host.read, m.host.write = spy_read, spy_write
    r = random.Random(5)
    for _ in range(60):
        m.execute((G, r.randrange(200), None))
    return equal, total


def ciphertext_fresh(equal, total):
    """Binomial test: equal bytes between successive ciphertexts are as rare as for random bytes."""
    mean, sd = total / 256, math.sqrt(total * (1 / 256) * (255 / 256))
    return abs(equal - mean) <= 5 * sd


def test_ciphertexts_are_fresh_on_every_write():
    assert ciphertext_fresh(*equal_byte_fraction(OmapModel))


def test_ciphertext_freshness_catches_nonce_reuse():
    equal, total = equal_byte_fraction(NonceReuse)
    assert not ciphertext_fresh(equal, total) and equal > total / 2
