"""Oblivious map: host blocks moved per query, query latency and HBM occupancy, N = 2^10..2^20.

Each case fills the map with N items (one sequential initialisation pass), runs a uniform
GET/PUT workload and reads, per command, the host transactions of the trace: a block is
one page slot, so a page read or write moves P_cap blocks. Latency is the command's cycle
count on the fixed schedule with the modelled memories (host 1 us round trip, HBM 100 ns,
300 MHz). Peak HBM occupancy (items in HBM bins + eviction queues) is measured under a
uniform workload and under churn (delete a random item, insert a new key; 3N/8 commands, at
most 300,000, so that each page is visited several times), with the fullest bin block seen
(the per-bin HBM block holds ``bin_block`` slots; reaching it would be fatal).

Source: for N = 2^10 and 2^12 at alpha = 0.2 the generated RTL (``celosia.omap.rtl``, Verilator through
cocotb, 300 commands, full map), checked command by command against the golden model
(responses, cycles, host log, host memory, HBM state); otherwise the golden model (``celosia.omap.golden``;
cycle-level, identical to the RTL where both run) with page encryption off (addresses, lengths
and cycles do not depend on it) and, for N >= 2^18, a numpy RNG instead of the ChaCha20 stream
so that initialisation stays in seconds.

Baselines (blocks per query, reads + writes, formulas in docs/omap.md): Path ORAM with the
position map on chip 2Z(L+1); recursive Path ORAM 2Z sum_i (log2(N/chi^i) + 1); AVL-tree
OMAP (Oblix / EnigMap) 1.44 log2(N) Path ORAM accesses. Z = 4, chi = 16.

    python benchmarks/omap.py [--json] [--quick] [--no-rtl]
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit
from celosia.omap import FastRNG, OmapConfig, OmapModel, Op

Z, CHI = 4, 16
SPEC_HBM_BOUND_RATIO = 296_720 / 2**20  # the spec's bound at N = 2^20, alpha = 0.2


def path_oram(n: int) -> int:
    """Path ORAM, position map on chip: read and write one root-to-leaf path of Z-block buckets."""
    return 2 * Z * (math.ceil(math.log2(n)) + 1)


def recursive_path_oram(n: int) -> int:
    """Path ORAM whose position map recurses into ORAMs of N/chi^i entries down to one block."""
    total, size = 0, n
    while True:
        total += 2 * Z * (math.ceil(math.log2(size)) + 1)
        if size <= 1:
            return total
        size = max(1, size // CHI)


def avl_omap(n: int) -> float:
    """Oblivious AVL tree (Oblix / EnigMap): ~1.44 log2 N node visits, one Path ORAM access each."""
    return 1.44 * math.log2(n) * path_oram(n)


def make(n: int, alpha: float, seed: int) -> OmapModel:
    cfg = OmapConfig(n=n, value_bytes=8, alpha=alpha)
    rng = FastRNG(seed) if n >= 2**18 else None
    return OmapModel(cfg, seed=seed, rng=rng, crypto=False)


def run_case(n: int, alpha: float, queries: int, seed: int = 1) -> dict:
    m = make(n, alpha, seed)
    cfg = m.cfg
    t = time.time()
    m.initialise((k, k.to_bytes(8, "little")) for k in range(n))
    init_s = time.time() - t
    init_cycles = m.cycle
    r = random.Random(seed)
    q0 = len(m.queries)
    for _ in range(queries):
        k = r.randrange(n)
        if r.random() < 0.5:
            m.execute((Op.GET, k, None))
        else:
            m.execute((Op.PUT, k, r.randbytes(8)))
    qs = m.queries[q0:]
    blocks = [(q.host_to - q.host_from) * cfg.p_cap for q in qs]
    cycles = [q.cycles for q in qs]
    mhz = cfg.timing.clock_mhz
    return {
        "n": n, "alpha": alpha, "p_cap": cfg.p_cap, "source": "golden", "queries": queries,
        "blocks_per_query_mean": sum(blocks) / len(blocks), "blocks_per_query_max": max(blocks),
        "blocks_expected": cfg.expected_blocks(), "blocks_worst_bound": 4 * cfg.p_cap,
        "latency_cycles_mean": sum(cycles) / len(cycles), "latency_cycles_max": max(cycles),
        "latency_us_max": max(cycles) / mhz, "clock_mhz": mhz,
        "init_cycles": init_cycles, "init_ms_at_clock": init_cycles / mhz / 1000,
        "peak_hbm_items_uniform": m.peak_hbm_items, "halted": m.halted is not None, "model_seconds": init_s,
    }


def run_rtl_case(n: int, alpha: float, queries: int, work: Path, seed: int = 1) -> dict:
    """The same workload on the generated RTL (Verilator), checked against the golden model."""
    from celosia.omap.crypto import derive_keys

    from celosia.omap import compare_rtl, run_rtl

    cfg = OmapConfig(n=n, value_bytes=8, alpha=alpha)
    keys = derive_keys(seed)
    items = [(k, k.to_bytes(8, "little")) for k in range(n)]
    r = random.Random(seed)
    cmds = []
    for _ in range(queries):
        k = r.randrange(n)
        cmds.append((Op.GET, k, None) if r.random() < 0.5 else (Op.PUT, k, r.randbytes(8)))
    gold = OmapModel(cfg, keys=keys)
    gold.initialise(items)
    expected = [gold.execute(c) for c in cmds]
    t = time.time()
    run = run_rtl(cfg, keys, items, cmds, work / f"rtl_{n}_{alpha}")
    diffs = compare_rtl(gold, run, expected)
    if diffs:
        raise SystemExit(f"RTL differs from the golden model at N={n}: {diffs}")
    bounds = run.accepts + [run.accepts[-1] + cfg.schedule.latency]
    blocks = [sum(1 for c, *_ in run.host_log if lo <= c < hi) * cfg.p_cap for lo, hi in zip(bounds, bounds[1:])]
    lat = [rc - a + 1 for a, rc in zip(run.accepts, run.response_cycles)]
    mhz = cfg.timing.clock_mhz
    return {
        "n": n, "alpha": alpha, "p_cap": cfg.p_cap, "source": "rtl", "queries": queries, "rtl_matches_golden": True,
        "blocks_per_query_mean": sum(blocks) / len(blocks), "blocks_per_query_max": max(blocks),
        "blocks_expected": cfg.expected_blocks(), "blocks_worst_bound": 4 * cfg.p_cap,
        "latency_cycles_mean": sum(lat) / len(lat), "latency_cycles_max": max(lat), "latency_us_max": max(lat) / mhz,
        "clock_mhz": mhz, "init_cycles": run.accepts[0], "init_ms_at_clock": run.accepts[0] / mhz / 1000,
        "peak_hbm_items_uniform": gold.peak_hbm_items, "halted": gold.halted is not None,
        "model_seconds": time.time() - t,
    }


def churn_peak(n: int, alpha: float, queries: int, seed: int = 2) -> dict:
    """Peak HBM items under churn at full load: delete a random live key, insert a fresh one."""
    m = make(n, alpha, seed)
    live = list(range(n))
    m.initialise((k, bytes(8)) for k in live)
    r = random.Random(seed)
    nxt = n
    for i in range(queries):
        if i % 2 == 0:
            j = r.randrange(len(live))
            live[j], live[-1] = live[-1], live[j]
            m.execute((Op.DELETE, live.pop(), None))
        else:
            m.execute((Op.PUT, nxt, bytes(8)))
            live.append(nxt)
            nxt += 1
    return {"peak_hbm_items_churn": m.peak_hbm_items, "peak_queued_churn": m.peak_queued,
            "peak_block_fill_churn": m.peak_block_fill, "bin_block": m.cfg.bin_block,
            "halted_churn": m.halted is not None, "hbm_item_bound": m.cfg.hbm_items,
            "spec_hbm_bound": math.ceil(SPEC_HBM_BOUND_RATIO * n)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print the results as JSON on the last line")
    ap.add_argument("--quick", action="store_true", help="N <= 2^14 only")
    ap.add_argument("--no-rtl", action="store_true", help="golden model only (no Verilator builds)")
    args = ap.parse_args()
    exps = [10, 12, 14] if args.quick else [10, 12, 14, 16, 18, 20]
    rtl_exps = () if args.no_rtl else ((10,) if args.quick else (10, 12))
    cases = []
    work = Path(tempfile.gettempdir()) / "celosia_omap_bench"  # kept: reruns reuse the Verilator builds
    for e in exps:
        n = 2**e
        alphas = (0.1, 0.2, 0.3) if e in (10, 16) else (0.2,)
        for a in alphas:
            queries = 4000 if e <= 14 else (2000 if e <= 18 else 1500)
            if e in rtl_exps and a == 0.2:
                row = run_rtl_case(n, a, 300, work)
            else:
                row = run_case(n, a, queries)
            # churn long enough that every page is visited a few times (steady-state queues)
            row.update(churn_peak(n, a, max(2 * queries, min(3 * n // 8, 300_000))))
            row["peak_hbm_fraction"] = max(row["peak_hbm_items_uniform"], row["peak_hbm_items_churn"]) / n
            row.update(path_oram=path_oram(n), recursive_path_oram=recursive_path_oram(n), avl_omap=round(avl_omap(n)))
            cases.append(row)
            print(f"  N=2^{e} alpha={a}: {row['blocks_per_query_mean']:.1f} blocks/query", file=sys.stderr)
    baselines = [{"n": 2**e, "path_oram": path_oram(2**e), "recursive_path_oram": recursive_path_oram(2**e),
                  "avl_omap": round(avl_omap(2**e))} for e in exps]
    payload = {
        "cases": cases, "baselines": baselines,
        "notes": "source rtl = generated RTL on Verilator, checked against the golden model; source golden = "
                 "cycle-level golden model (celosia.omap.golden); block = one page slot; "
                 "host 1000 ns / HBM 100 ns round trip at 300 MHz; baseline formulas in docs/omap.md",
    }
    emit("omap", cases, ["n", "alpha", "p_cap", "blocks_per_query_mean", "blocks_per_query_max", "blocks_expected",
                         "latency_cycles_max", "latency_us_max", "peak_hbm_items_uniform", "peak_hbm_items_churn",
                         "hbm_item_bound", "peak_block_fill_churn", "bin_block", "path_oram", "recursive_path_oram", "avl_omap"], args.json, payload)


if __name__ == "__main__":
    main()
