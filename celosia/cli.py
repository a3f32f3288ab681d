"""The ``celosia`` command line: compile | sim | boards | zoo.

Errors a user can cause are printed as one message with a hint, without a
traceback, and the exit status is non-zero.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from contextlib import contextmanager

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from celosia.errors import CelosiaError

__all__ = ["main"]

console = Console(stderr=True)
out = Console()


@contextmanager
def _status():
    """A rich spinner whose text follows the flow's progress messages."""
    with console.status("starting") as status:
        def say(message: str) -> None:
            console.print("[dim]•[/] " + escape(message), highlight=False)
            status.update(message)
        yield say


def _fmt(v, spec=".3g"):
    return "—" if v is None else format(v, spec)


def _summary(report: dict) -> None:
    t = Table(title=f"{report['model']} on {report['board']} ({report['quant']}, {report['lanes']}x{report['lanes']} array)")
    t.add_column("figure")
    t.add_column("value", justify="right")
    t.add_row("cycles per inference", f"{report['cycles']} (ideal {report['ideal_cycles']:.0f}, x{report['cycles_over_ideal']:.2f})")
    t.add_row("RTL == golden (bit-exact)", f"{report['rtl_matches_golden']} on {report['samples']} samples")
    t.add_row("max abs error vs float", _fmt(report["max_abs_err_vs_float"]))
    fmax = report["fmax_mhz"]
    t.add_row("Fmax (post-route)", "not built" if fmax is None else f"{fmax:.1f} MHz (target {report['target_mhz']:.0f} MHz, {'met' if report['timing_met'] else 'MISSED'})")
    for name, r in report["resources"].items():
        if isinstance(r, dict) and "used" in r:
            pct = 100 * r["used"] / r["available"] if r["available"] else 0
            src = " (estimate)" if r.get("source") == "estimate" else ""
            t.add_row(name.upper(), f"{r['used']} / {r['available']} ({pct:.1f} %){src}")
    out.print(t)


def _cmd_compile(args) -> int:
    import celosia

    with _status() as say:
        report = celosia.compile(
            args.model, args.board, args.output, quant=args.quant, bitstream=not args.no_bitstream,
            force=args.force, batch=args.batch, samples=args.samples, progress=say,
        )
    _summary(report)
    out.print(f"report: {args.output}/report.json")
    return 0


def _cmd_sim(args) -> int:
    import tempfile
    from pathlib import Path

    import celosia

    with _status() as say:
        say("lowering and quantizing")
        prep = celosia.prepare(args.model, args.board, quant=args.quant, batch=args.batch)
        say(f"simulating the RTL on Verilator ({args.samples} samples)")
        with tempfile.TemporaryDirectory() as tmp:
            result = celosia.simulate(prep, Path(tmp), samples=args.samples)
    prog = prep["program"]
    result.update(ideal_cycles=prog.ideal_cycles, model=prog.name, board=prep["board"].name, lanes=prog.lanes)
    result.pop("verilog")
    out.print_json(json.dumps(result))
    return 0 if result["rtl_matches_golden"] else 1


def _cmd_boards(args) -> int:
    from celosia.boards.registry import list_boards

    t = Table(title="boards")
    for col in ("name", "device", "LUT", "FF", "DSP", "BRAM", "clock", "toolchain"):
        t.add_column(col)
    for b in list_boards():
        r = b.resources
        t.add_row(b.name, b.device, str(r.lut), str(r.ff), str(r.dsp), str(r.bram), f"{b.target_mhz:g} MHz", b.toolchain)
    out.print(t)
    return 0


def _cmd_check(args) -> int:
    import celosia

    report = celosia.check(args.model, batch=args.batch)
    if args.json:
        out.print_json(json.dumps(report.to_dict()))
    elif report.ok:
        out.print(f"{report.model}: every op is supported (import and hardware)")
    else:
        t = Table(title=f"{report.model}: {len(report.items)} unsupported op(s)")
        for col in ("node", "op", "stage", "source", "reason / what works instead"):
            t.add_column(col)
        for u in report.items:
            t.add_row(u.node, u.op, u.stage, u.source or "—", f"{u.reason}; {u.hint}" if u.hint else u.reason)
        out.print(t)
    return 0 if report.ok else 1


def _cmd_zoo(args) -> int:
    from celosia.frontend.zoo import list_models

    t = Table(title="model zoo")
    t.add_column("name")
    t.add_column("description")
    for m in list_models():
        t.add_row(m.name, m.description)
    out.print(t)
    return 0


def _cmd_omap(args) -> int:
    from celosia.omap import generate

    with _status() as say:
        report = generate(args.capacity, args.value_bytes, args.output, alpha=args.alpha, force=args.force,
                          axi_width=args.axi_width, constant_keys=args.constant_keys, progress=say)
    c = report["config"]
    t = Table(title=f"oblivious map N={c['n']}, {c['value_bytes']} B values, alpha={c['alpha']}")
    t.add_column("figure")
    t.add_column("value", justify="right")
    t.add_row("bins (HBM / host pages)", f"{c['bins']} ({c['hbm_bins']} / {c['host_pages']}), P_cap {c['p_cap']}")
    t.add_row("host blocks per query", f"{c['blocks_per_query_expected']:.1f} expected, {c['blocks_per_query_worst']} worst")
    t.add_row("latency per query", f"{c['schedule']['latency']} cycles = {c['latency_us']:.2f} us at {c['clock_mhz']:g} MHz")
    t.add_row("HBM footprint", f"{c['hbm_footprint']['total']} bytes")
    rtl = report["rtl"]
    t.add_row("RTL", f"{report['files']['verilog']} (top {rtl['top']})" if rtl else report["rtl_note"])
    out.print(t)
    out.print(f"report: {args.output}/report.json")
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="celosia", description="Compile ML models to FPGA accelerators.")
    sub = p.add_subparsers(dest="command", required=True)

    def model_args(sp):
        sp.add_argument("model", help="zoo model name (see `celosia zoo`) or .onnx file")
        sp.add_argument("--board", default="ulx3s-85f", help="target board (see `celosia boards`)")
        sp.add_argument("--quant", default="w8a16", help="precision preset, e.g. w8a16, w16a16")
        sp.add_argument("--batch", type=int, default=1, help="rows per inference")
        sp.add_argument("--samples", type=int, default=8, help="test inputs checked RTL vs golden")

    c = sub.add_parser("compile", help="model -> verified RTL -> bitstream")
    model_args(c)
    c.add_argument("-o", "--output", required=True, help="output folder (must not exist)")
    c.add_argument("--no-bitstream", action="store_true", help="stop after RTL simulation")
    c.add_argument("--force", action="store_true", help="replace an existing output folder")
    c.set_defaults(run=_cmd_compile)
    s = sub.add_parser("sim", help="simulate the generated RTL against the golden model")
    model_args(s)
    s.set_defaults(run=_cmd_sim)
    sub.add_parser("boards", help="list supported boards").set_defaults(run=_cmd_boards)
    sub.add_parser("zoo", help="list built-in models").set_defaults(run=_cmd_zoo)
    k = sub.add_parser("check", help="list every op of a model Celosia cannot compile (exit 1 if any)")
    k.add_argument("model", help="zoo model name or .onnx file")
    k.add_argument("--batch", type=int, default=1, help="rows per inference (zoo models)")
    k.add_argument("--json", action="store_true", help="print the report as JSON")
    k.set_defaults(run=_cmd_check)
    o = sub.add_parser("omap", help="oblivious-map unit: Verilog and report for a configuration")
    o.add_argument("--capacity", type=int, required=True, help="N, the most items held (multiple of c=8)")
    o.add_argument("--value-bytes", type=int, required=True, help="value length in bytes")
    o.add_argument("--alpha", type=float, default=0.2, help="fraction of bins kept in HBM")
    o.add_argument("--axi-width", type=int, default=512, help="AXI4 host master data width in bits")
    o.add_argument("--constant-keys", action="store_true",
                   help="embed evaluation keys in the Verilog instead of generating the key port")
    o.add_argument("-o", "--output", required=True, help="output folder (must not exist)")
    o.add_argument("--force", action="store_true", help="replace an existing output folder")
    o.set_defaults(run=_cmd_omap)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``celosia`` command; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        return args.run(args)
    except CelosiaError as exc:
        _say("[bold red]error:[/] " + escape(exc.message))
        if exc.hint:
            _say("  [bold]hint:[/] " + escape(exc.hint))
        return 2
    except KeyboardInterrupt:
        console.print("interrupted")
        return 130
    except Exception as exc:  # a bug, not a user error: still no traceback unless asked for
        if os.environ.get("CELOSIA_DEBUG"):
            raise
        _say(f"[bold red]internal error:[/] {type(exc).__name__}: " + escape(str(exc)))
        _say("  [bold]hint:[/] rerun with CELOSIA_DEBUG=1 for a traceback and report it")
        return 3


def _say(markup: str) -> None:
    """An error line on stderr: never re-wrapped (paths and node names stay whole for grep)."""
    console.print(markup, highlight=False, soft_wrap=True)


if __name__ == "__main__":
    sys.exit(main())
