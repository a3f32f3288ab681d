"""The ``celosia`` command line: compile | sim | check | omap | boards | zoo.

Errors a user can cause are printed as one message with a hint, without a traceback, and the
exit status is 2 (3 for an internal error). Progress goes to stderr with a live elapsed time;
with ``--json`` the result is one JSON object on the last line of stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from celosia.errors import CelosiaError
from celosia.progress import Progress, format_seconds

__all__ = ["main"]

console = Console(stderr=True)
out = Console()


class _LiveProgress(Progress):
    """Prints each step on stderr; a live status line shows its detail and elapsed time."""

    def __init__(self) -> None:
        self.message = "starting"
        self.text = ""
        self.started = time.monotonic()

    def __call__(self, message: str) -> None:  # the plain ``say(message)`` interface
        self.step(message)

    def step(self, message: str) -> None:
        console.print("[dim]•[/] " + escape(message), highlight=False, soft_wrap=True)
        self.message, self.text, self.started = message, "", time.monotonic()

    def detail(self, text: str) -> None:
        self.text = text

    def stage_done(self, name: str, seconds: float) -> None:
        if seconds >= 5:
            console.print(f"  [dim]{escape(name)} took {format_seconds(seconds)}[/]", highlight=False)

    def __rich__(self) -> Text:
        line = Text(self.message)
        if self.text:
            line.append(" · " + self.text, style="dim")
        line.append(f"  {format_seconds(time.monotonic() - self.started)}", style="cyan")
        return line


@contextmanager
def _status():
    """A :class:`~celosia.progress.Progress` drawn as a rich spinner with a live elapsed time."""
    live = _LiveProgress()
    with console.status(live):
        yield live


_COUNTS = {"samples": "(the test inputs run on the RTL and compared with the golden model; default 8)",
           "batch": "(rows per inference; default 1)"}


def _counts(args, *names: str) -> None:
    """``--samples``, ``--batch``: at least 1, checked before any work."""
    from celosia.flow import check_count

    for name in names:
        check_count(getattr(args, name), f"--{name}", what=_COUNTS[name])


def _print_json(value: dict) -> None:
    """The result as one JSON line: always the last line of stdout (keys in the order given)."""
    print(json.dumps(value), flush=True)


def _fmt(v, spec=".3g"):
    return "—" if v is None else format(v, spec)


def _summary(report) -> None:
    t = Table(title=f"{report.model} on {report.board} ({report.quant}, {report.lanes}x{report.lanes} array)")
    t.add_column("figure")
    t.add_column("value", justify="right")
    t.add_row("cycles per inference", f"{report.cycles} (roofline {report.roofline_cycles:.0f}, "
              f"x{report.cycles_over_roofline:.2f}; linear-array ideal {report.ideal_cycles:.0f})")
    t.add_row("inferences per second", f"{report.inferences_per_s:,.0f} at "
              f"{report.fmax_mhz or report.target_mhz:.1f} MHz")
    t.add_row("RTL == golden (bit-exact)", f"{report.rtl_matches_golden} on {report.samples} samples")
    t.add_row("max abs error vs float", _fmt(report.max_abs_err_vs_float))
    if report.test_size:
        t.add_row("test accuracy (RTL / golden / float)",
                  f"{100 * report.rtl_accuracy:.2f} / {100 * report.golden_accuracy:.2f} / "
                  f"{100 * report.float_accuracy:.2f} % on {report.test_size} inputs")
    t.add_row("scratchpad", f"{report.scratchpad['peak_words']} of {report.scratchpad['words']} words")
    fmax = report.fmax_mhz
    t.add_row("Fmax (post-route)", "not built" if fmax is None else f"{fmax:.1f} MHz (target {report.target_mhz:.0f} MHz, {'met' if report.timing_met else 'MISSED'})")
    for name, r in report.resources.items():
        if isinstance(r, dict) and "used" in r:
            pct = 100 * r["used"] / r["available"] if r["available"] else 0
            src = " (estimate)" if r.get("source") == "estimate" else ""
            t.add_row(name.upper(), f"{r['used']} / {r['available']} ({pct:.1f} %){src}")
    out.print(t)


def _cmd_compile(args) -> int:
    import celosia

    _counts(args, "batch", "samples")
    with _status() as live:
        report = celosia.compile(
            args.model, args.board, args.output, quant=args.quant, bitstream=not args.no_bitstream,
            force=args.force, batch=args.batch, samples=args.samples, test_set=not args.no_test_set, progress=live,
        )
    times = f"time: {report.stage_times}"
    if args.json:
        console.print(times, highlight=False, soft_wrap=True)
        _print_json({**report.to_dict(), "report": str(report.out_dir / "report.json"),
                     "stage_seconds": report.stage_seconds})
        return 0
    _summary(report)
    out.print(f"report: {report.out_dir / 'report.json'}", highlight=False, soft_wrap=True)
    out.print(times, highlight=False, soft_wrap=True)
    return 0


def _cmd_sim(args) -> int:
    import celosia

    _counts(args, "batch", "samples")
    with _status() as live:
        prep = celosia.prepare(args.model, args.board, quant=args.quant, batch=args.batch, progress=live)
        # A scratch build folder, removed after a success; kept after a failure so that the log
        # the error names still exists.
        tmp = Path(tempfile.mkdtemp(prefix="celosia-sim-"))
        try:
            sim = celosia.simulate(prep, tmp, samples=args.samples, progress=live)
        except CelosiaError as exc:
            if exc.log is None:
                shutil.rmtree(tmp, ignore_errors=True)
            raise
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    prog = prep.program
    result = sim.to_dict()
    result.pop("verilog")
    result.update(ideal_cycles=prog.ideal_cycles, model=prog.name, board=prep.board.name, lanes=prog.lanes)
    _print_json(result)
    return 0 if sim.rtl_matches_golden else 1


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

    _counts(args, "batch")
    report = celosia.check(args.model, batch=args.batch)
    if args.json:
        _print_json(report.to_dict())
    elif report.ok:
        out.print(f"{report.model}: every op is supported (import and hardware)")
    else:
        groups = report.by_kind()
        t = Table(title=f"{report.model}: {len(report.items)} unsupported node(s) of {len(groups)} op type(s)")
        for col in ("op", "stage", "nodes", "reason"):
            t.add_column(col)
        for g in groups:
            t.add_row(g.op, g.stage, f"{len(g.nodes)}: " + ", ".join(g.nodes), g.reason)
        out.print(t)
        for g in groups:
            if g.hint:
                out.print(f"hint for {g.op}: {g.hint}", highlight=False, soft_wrap=True)
        if any(g.stage == "hardware" for g in groups):
            from celosia.frontend.check import hardware_summary

            out.print(f"hint: {hardware_summary()}; the others run in the bit-exact golden executor only",
                      highlight=False, soft_wrap=True)
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
    from celosia.output import check_output

    output = check_output(args.output, force=args.force)  # ~, relative, a file in the way: before any work
    with _status() as live:
        report = generate(args.capacity, args.value_bytes, output, alpha=args.alpha, force=args.force,
                          axi_width=args.axi_width, constant_keys=args.constant_keys, progress=live)
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
    out.print(f"report: {output / 'report.json'}", highlight=False, soft_wrap=True)
    return 0


def _parser() -> argparse.ArgumentParser:
    from celosia import __version__

    p = argparse.ArgumentParser(prog="celosia", description="Compile ML models to FPGA accelerators.")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def model_args(sp):
        sp.add_argument("model", help="zoo model name (see `celosia zoo`) or .onnx file")
        sp.add_argument("--board", default="ulx3s-85f",
                        help="target board, see `celosia boards` (default: %(default)s)")
        sp.add_argument("--quant", default="w8a16",
                        help="precision preset w<weight bits>a<activation bits>, e.g. w8a16, w16a16 "
                             "(default: %(default)s)")
        sp.add_argument("--batch", type=int, default=1, help="rows per inference (default: %(default)s)")
        sp.add_argument("--samples", type=int, default=8,
                        help="test inputs checked RTL vs golden (default: %(default)s)")

    c = sub.add_parser("compile", help="model -> verified RTL -> bitstream",
                       description="Lower, schedule, generate, verify on Verilator and build the bitstream; "
                                   "writes DIR/report.json.")
    model_args(c)
    c.add_argument("-o", "--output", required=True, metavar="DIR",
                   help="output folder (must not exist; relative to the current directory, or absolute)")
    c.add_argument("--no-bitstream", action="store_true", help="stop after RTL simulation")
    c.add_argument("--no-test-set", action="store_true",
                   help="skip running the model's labelled test set on the RTL (zoo models that have one)")
    c.add_argument("--force", action="store_true", help="replace an existing output folder")
    c.add_argument("--json", action="store_true",
                   help="print the report as one JSON object on the last line of stdout (progress stays on stderr)")
    c.set_defaults(run=_cmd_compile)
    s = sub.add_parser("sim", help="simulate the generated RTL against the golden model (JSON on stdout)")
    model_args(s)
    s.set_defaults(run=_cmd_sim)
    sub.add_parser("boards", help="list supported boards").set_defaults(run=_cmd_boards)
    sub.add_parser("zoo", help="list built-in models").set_defaults(run=_cmd_zoo)
    k = sub.add_parser("check", help="list every op of a model Celosia cannot compile (exit 1 if any)")
    k.add_argument("model", help="zoo model name or .onnx file")
    k.add_argument("--batch", type=int, default=1, help="rows per inference, zoo models (default: %(default)s)")
    k.add_argument("--json", action="store_true", help="print the report as JSON")
    k.set_defaults(run=_cmd_check)
    o = sub.add_parser("omap", help="oblivious-map unit: Verilog and report for a configuration")
    o.add_argument("--capacity", type=int, required=True, help="N, the most items held (multiple of c=8)")
    o.add_argument("--value-bytes", type=int, required=True, help="value length in bytes")
    o.add_argument("--alpha", type=float, default=0.2, help="fraction of bins kept in HBM (default: %(default)s)")
    o.add_argument("--axi-width", type=int, default=512, help="AXI4 host master data width in bits (default: %(default)s)")
    o.add_argument("--constant-keys", action="store_true",
                   help="embed evaluation keys in the Verilog instead of generating the key port")
    o.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder (must not exist)")
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
