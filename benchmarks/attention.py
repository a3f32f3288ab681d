# amaranth: UnusedElaboratable=no
"""Attention engine: MAC utilisation from Verilator cycle counts, traffic, on-chip bits, ECP5 Fmax.

Cycles: :class:`celosia.hw.attention.AttentionEngine` (E = F = 64, 8 lanes × 8 rows = blocks of 64
queries, tile 16) inside a
small driver (:class:`_Bench`) that plays the DMA: it sends one ``cfg`` beat per query block
(kv head × block of positions, causal blocks stop at their last query, as
:func:`celosia.hw.attention.schedule` does), keeps ``q``, ``k`` and ``v`` valid every cycle and
``o`` ready, and counts cycles from reset until the last output beat. The design is verilated
once and run through the ctypes harness (:class:`celosia.sim.harness.VerilatedDesign`); the
run-until loop stays in C++. Every cycle of the whole job is simulated (no extrapolation). The
engine's control does not look at data values, so the streams carry zeros.

``utilization`` = useful MACs / (lanes × cycles), useful MACs = (E + F) per unmasked
(query, key) pair. ``traffic_bytes`` counts every beat the engine reads or writes (Q once, K/V once
per query block, the key-padding bit, O once); ``min_traffic_bytes`` reads Q, K, V once per layer
and writes O once. ``onchip_bits`` is the engine's state (memories and per-lane registers).

Fmax / resources: a small configuration (E = F = 16, 4 lanes × 2 rows) built alone in
:class:`celosia.boards.unit_build.UnitTop` on the ULX3S-85F (YoWASP yosys + nextpnr-ecp5,
post-route, 100 MHz target); the figures include UnitTop's harness (``harness_ff`` /
``harness_lut``).

    python benchmarks/attention.py [--json] [--seqs 64 128 ...] [--no-fpga] [--build-dir DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from amaranth.back import verilog
from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit
from celosia.hw.attention import AttentionEngine
from celosia.sim.harness import VerilatedDesign

E = F = 64
LANES, ROWS = 8, 8          # 8 MAC lanes × 8 query rows per lane: blocks of 64 queries
SEQS = [64, 128, 256, 512, 1024, 2048, 4096]
FPGA_E, FPGA_LANES, FPGA_ROWS = 16, 4, 2


class _Bench(wiring.Component):
    """The engine plus a cycle-level DMA stand-in (see the module docstring)."""

    def __init__(self, eng: AttentionEngine):
        self.eng = eng
        super().__init__({
            "seq": In(16), "per_block": In(8), "kv_heads": In(8), "causal": In(1), "total_out": In(40),
            "done": Out(1), "cycles": Out(40),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.eng = eng = self.eng
        g, p0, sent = Signal(8), Signal(16), Signal()
        nk = Mux(self.causal & (p0 + self.per_block < self.seq), p0 + self.per_block, self.seq)
        c = eng.cfg
        m.d.comb += [c.valid.eq(~sent), c.payload.n_keys.eq(nk), c.payload.causal.eq(self.causal),
                     c.payload.pos0.eq(p0), c.payload.pos_mask.eq(self.per_block - 1),
                     eng.q.valid.eq(1), eng.k.valid.eq(1), eng.k.payload.keep.eq(1), eng.v.valid.eq(1),
                     eng.o.ready.eq(1)]
        with m.If(c.valid & c.ready):
            with m.If(p0 + self.per_block >= self.seq):
                m.d.sync += [p0.eq(0), g.eq(g + 1)]
                with m.If(g + 1 == self.kv_heads):
                    m.d.sync += sent.eq(1)
            with m.Else():
                m.d.sync += p0.eq(p0 + self.per_block)
        got = Signal(40)
        with m.If(eng.o.valid):
            m.d.sync += got.eq(got + 1)
        m.d.comb += self.done.eq(got == self.total_out)
        with m.If(~self.done):
            m.d.sync += self.cycles.eq(self.cycles + 1)
        return m


def _case_figures(eng: AttentionEngine, seq: int, heads: int, kv_heads: int, causal: bool) -> dict:
    G = heads // kv_heads
    P = eng.block // G
    blocks = [(g, p0) for g in range(kv_heads) for p0 in range(0, seq, P)]
    n_keys = [min(seq, p0 + P) if causal else seq for _g, p0 in blocks]
    pairs = heads * (seq * (seq + 1) // 2 if causal else seq * seq)
    byte = lambda fmt: (fmt.bits + 7) // 8
    traffic = (len(blocks) * eng.block * (eng.e * byte(eng.q_fmt) + eng.f * byte(eng.out_fmt))
               + sum(n_keys) * (eng.e * byte(eng.k_fmt) + eng.f * byte(eng.v_fmt)) + (sum(n_keys) + 7) // 8)
    minimum = (heads * seq * (eng.e * byte(eng.q_fmt) + eng.f * byte(eng.out_fmt))
               + kv_heads * seq * (eng.e * byte(eng.k_fmt) + eng.f * byte(eng.v_fmt)) + (seq + 7) // 8)
    return {"blocks": len(blocks), "per_block": P, "macs": pairs * (eng.e + eng.f),
            "traffic_bytes": traffic, "min_traffic_bytes": minimum,
            "total_out": len(blocks) * eng.block * eng.f}


def cycles(cases, build_dir: Path) -> list[dict]:
    """Verilator cycle counts of ``cases`` = [(seq, heads, kv_heads, causal), ...]."""
    eng = AttentionEngine(E, F, lanes=LANES, rows=ROWS, max_len=max(SEQS))
    bench = _Bench(eng)
    build_dir.mkdir(parents=True, exist_ok=True)
    src = build_dir / "attn_bench.v"
    src.write_text(verilog.convert(bench, name="attn_bench"))
    rows = []
    with VerilatedDesign.build(src, "attn_bench", build_dir) as dut:
        for seq, heads, kv_heads, causal in cases:
            fig = _case_figures(eng, seq, heads, kv_heads, causal)
            for name, val in (("seq", seq), ("per_block", fig["per_block"]), ("kv_heads", kv_heads),
                              ("causal", int(causal)), ("total_out", fig["total_out"])):
                dut.set(name, val)
            dut.reset()
            t0 = time.monotonic()
            ideal = fig["macs"] // LANES
            dut.run_until("done", 1, max_cycles=4 * ideal + 100_000)
            cyc = dut.get("cycles")
            rows.append({"seq": seq, "e": E, "f": F, "heads": heads, "kv_heads": kv_heads, "causal": causal,
                         "cycles": cyc, "ideal_cycles": ideal, "macs": fig["macs"], "mac_lanes": LANES,
                         "query_block": eng.block,
                         "utilization": round(fig["macs"] / (LANES * cyc), 5), "onchip_bits": eng.onchip_bits,
                         "traffic_bytes": fig["traffic_bytes"], "min_traffic_bytes": fig["min_traffic_bytes"],
                         "traffic_ratio": round(fig["traffic_bytes"] / fig["min_traffic_bytes"], 3),
                         "sim_s": round(time.monotonic() - t0, 1)})
            print(f"seq {seq} heads {heads}/{kv_heads} causal {causal}: {cyc} cycles, "
                  f"utilisation {rows[-1]['utilization']:.4f}", flush=True)
    return rows


def fpga(build_dir: Path) -> dict:
    """Post-route Fmax and resources of the small configuration on the ULX3S-85F."""
    from celosia.boards.flow import build_bitstream
    from celosia.boards.unit_build import UnitTop

    eng = AttentionEngine(FPGA_E, lanes=FPGA_LANES, rows=FPGA_ROWS, max_len=1024)
    top = UnitTop(eng, "ulx3s-85f")
    t0 = time.monotonic()
    res = build_bitstream(top, top.board, build_dir, name="unit")
    r = res.resources
    return {"fmax_mhz": round(res.fmax_mhz, 2), "target_mhz": res.target_mhz,
            "resources": {k: r[k]["used"] for k in ("lut", "ff", "dsp", "bram")},
            "available": {k: r[k]["available"] for k in ("lut", "ff", "dsp", "bram")},
            "config": {"e": FPGA_E, "f": FPGA_E, "lanes": FPGA_LANES, "rows": FPGA_ROWS, "tile": eng.tile, "max_len": 1024,
                       "onchip_bits": eng.onchip_bits},
            "harness_ff": top.harness_ff, "harness_lut": top.harness_lut,
            "build_s": round(time.monotonic() - t0, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print the results as JSON on the last line")
    ap.add_argument("--seqs", nargs="+", type=int, default=SEQS, help="sequence lengths (E = F = 64)")
    ap.add_argument("--no-fpga", action="store_true", help="skip the ECP5 build")
    ap.add_argument("--build-dir", help="keep the build folders here (default: a temp folder)")
    args = ap.parse_args(argv)
    cases = []
    for s in args.seqs:
        cases.append((s, 4, 1, False))
        if s <= 1024:
            cases.append((s, 4, 1, True))
        if s in (128, 512):
            cases.append((s, 4, 4, False))
    with tempfile.TemporaryDirectory(prefix="celosia_attention_") as tmp:
        base = Path(args.build_dir) if args.build_dir else Path(tmp)
        rows = cycles(cases, base / "verilator")
        hw = None if args.no_fpga else fpga(base / "ecp5")
    payload = {
        "engine": {"e": E, "f": F, "lanes": LANES, "rows": ROWS, "query_block": LANES * ROWS, "tile": 16,
                   "max_len": max(SEQS)},
        "cases": rows,
        "fmax_mhz": hw["fmax_mhz"] if hw else None,
        "resources": hw["resources"] if hw else None,
        "fpga": hw,
        "command": "python benchmarks/attention.py --json",
    }
    emit("attention", rows, ["seq", "heads", "kv_heads", "causal", "cycles", "ideal_cycles", "utilization",
                             "onchip_bits", "traffic_bytes", "min_traffic_bytes", "traffic_ratio"],
         args.json, payload)
    if hw:
        print(f"ECP5-85F (E=F={FPGA_E}, {FPGA_LANES} lanes x {FPGA_ROWS} rows): {hw['fmax_mhz']} MHz, "
              f"{hw['resources']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
