"""Celosia: compile transformer and MoE models to FPGA hardware.

The Python API mirrors the CLI::

    import celosia
    report = celosia.compile("mlp-tiny", board="ulx3s-85f", out_dir="build/mlp-tiny")
    print(report["cycles"], report["fmax_mhz"])

:func:`compile` runs the whole flow (lower, schedule, generate RTL, simulate it on
Verilator bit-exact against the golden model, build the bitstream) and writes
everything to ``out_dir``, atomically: on error nothing is left behind.
"""

from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import numpy as np

from celosia.errors import CelosiaError, OutputExistsError, SimulationError

__all__ = ["check", "compile", "prepare", "simulate", "CelosiaError", "__version__"]

__version__ = "0.1.0"

Progress = Callable[[str], None]



@contextmanager
def staged_output(out: Path):
    """Work in a hidden ``.<name>.partial`` folder next to ``out``; it replaces ``out`` only if the
    block succeeds and is removed otherwise, so nothing half-written is ever left in ``out``."""
    staging = out.parent / f".{out.name}.partial"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)

def _quiet(_: str) -> None:
    pass


def check(model, example_inputs=None, *, batch: int = 1):
    """List every op of ``model`` Celosia cannot compile, before any other work.

    Parameters
    ----------
    model : str, Graph, torch.nn.Module or path
        A zoo name, an ``.onnx`` file, a builder graph, or a PyTorch module (with
        ``example_inputs``).
    example_inputs : tuple, optional
        Example inputs of a PyTorch module (static shapes).
    batch : int
        Rows per inference (zoo models only).

    Returns
    -------
    celosia.frontend.check.CheckReport
        ``.ok`` and ``.items`` (node, op type, reason, hint and, for PyTorch, the source
        line of every unsupported op).
    """
    from celosia.frontend.check import check_model

    return check_model(model, example_inputs, batch=batch)


def prepare(model, board="ulx3s-85f", *, quant: str = "w8a16", batch: int = 1, calibration: int = 32):
    """Lower and schedule a model for a board; no files written.

    Parameters
    ----------
    model : str or Graph
        A zoo name (see ``celosia zoo``) or a float graph from the builder.
    board : str or Board
        A board name (see ``celosia boards``).
    quant : str
        Precision preset, e.g. ``"w8a16"``.
    batch : int
        Rows per inference (zoo models only).
    calibration : int
        Number of calibration samples.

    Returns
    -------
    dict
        ``graph`` (float), ``qgraph`` (quantized), ``program``, ``board``,
        ``sampler`` (callable(count, seed) -> list of input dicts), ``scratch_depth``,
        ``estimate``.
    """
    from celosia.boards.registry import get_board
    from celosia.frontend.zoo import get_model
    from celosia.hw.budget import check_fit, choose_lanes
    from celosia.ir.pipeline import lower
    from celosia.ir.quantize import Precision
    from celosia.ir.schedule import schedule

    board = get_board(board)
    precision = Precision.parse(quant)
    if precision.per_channel:
        from celosia.errors import ScheduleError

        raise ScheduleError(
            f"precision '{quant}' uses per-channel weight formats, which the linear unit does not take yet",
            hint="compile with a per-tensor preset (e.g. w8a16); per-channel graphs run in the golden simulator "
            "(celosia.ir.pipeline.lower + celosia.sim.golden.run_int)",
        )
    if isinstance(model, str) and not model.endswith(".onnx"):
        zoo = get_model(model)
        graph = zoo.build(batch)

        def sampler(count: int, seed: int) -> list[dict]:
            return zoo.samples(count, batch, seed)

    else:
        from celosia.frontend.check import resolve_model

        graph = resolve_model(model)[1]

        def sampler(count: int, seed: int) -> list[dict]:
            rng = np.random.default_rng(seed)
            return [{op.name: rng.uniform(-1, 1, op.type.shape) for op in graph.inputs} for _ in range(count)]

    qgraph = lower(graph, sampler(calibration, 0), precision)
    program = schedule(qgraph, choose_lanes(board))
    scratch_depth = 1 << max(1, (max(program.scratch_words, 2) - 1).bit_length())
    estimate = check_fit(program, board, scratch_depth)
    return {
        "graph": graph, "qgraph": qgraph, "program": program, "board": board,
        "sampler": sampler, "scratch_depth": scratch_depth, "estimate": estimate,
    }


def simulate(prepared: dict, build_dir: Path, *, samples: int = 8, seed: int = 1) -> dict:
    """Run the generated RTL on Verilator against the golden model on ``samples`` inputs.

    Returns a dict with ``rtl_matches_golden``, ``mismatches``, ``cycles`` (per
    run, the hardware counter), ``max_abs_err_vs_float`` and ``samples``.
    """
    from celosia.ir.numerics import dequantize, quantize
    from celosia.sim.accel_sim import AcceleratorSim
    from celosia.sim.golden import run_float, run_int

    graph, qgraph, program = prepared["graph"], prepared["qgraph"], prepared["program"]
    sim = AcceleratorSim(program, build_dir, scratch_depth=prepared["scratch_depth"])
    mismatches, cycles, max_err = [], [], 0.0
    try:
        for i, sample in enumerate(prepared["sampler"](samples, seed)):
            codes = {op.name: quantize(sample[op.name], op.type.fmt) for op in qgraph.inputs}
            golden = run_int(qgraph, sample)
            rtl, n = sim.infer(codes)
            cycles.append(n)
            reference = run_float(graph, sample)
            for name, want in golden.items():
                got = rtl[name]
                if not np.array_equal(got, want):
                    bad = int(np.count_nonzero(got != want))
                    mismatches.append(f"sample {i}, output '{name}': {bad} of {want.size} values differ")
                err = np.abs(dequantize(want, qgraph.op(name).type.fmt) - reference[name])
                max_err = max(max_err, float(err.max()))
    finally:
        sim.close()
    return {
        "rtl_matches_golden": not mismatches,
        "mismatches": mismatches,
        "cycles": max(cycles),
        "cycles_all": cycles,
        "max_abs_err_vs_float": max_err,
        "samples": samples,
        "verilog": str(sim.verilog_path),
    }


def compile(
    model,
    board="ulx3s-85f",
    out_dir: str | os.PathLike = "build",
    *,
    quant: str = "w8a16",
    bitstream: bool = True,
    force: bool = False,
    batch: int = 1,
    samples: int = 8,
    progress: Progress | None = None,
) -> dict:
    """Compile a model to a verified accelerator and (optionally) a bitstream.

    Parameters
    ----------
    model : str or Graph
        Zoo name or float graph.
    board : str
        Board name.
    out_dir : path
        Output folder; must not exist unless ``force``.
    quant : str
        Precision preset.
    bitstream : bool
        Run synthesis, place and route and bitstream packing.
    force : bool
        Replace an existing ``out_dir``.
    batch : int
        Rows per inference.
    samples : int
        Test inputs simulated on the RTL and compared with the golden model.
    progress : callable(str), optional
        Receives a message as each stage starts.

    Returns
    -------
    dict
        The report, also written to ``out_dir/report.json``.

    Raises
    ------
    CelosiaError
        On any user-facing failure; ``out_dir`` is then left as it was.
    """
    from celosia.boards.flow import build_bitstream, check_toolchain
    from celosia.boards.top import BoardTop
    from celosia.hw.accelerator import Accelerator
    from celosia.sim.perf import predict_cycles

    say = progress or _quiet
    out = Path(out_dir)
    if out.exists() and not force:
        raise OutputExistsError(f"output folder '{out}' already exists", hint="pass --force to replace it")
    say("checking the model's ops")
    check(model, batch=batch).raise_if_unsupported()  # every unsupported op, before any other work
    if bitstream:
        check_toolchain(board)  # before minutes of work, not after
    with staged_output(out) as staging:
        say("lowering and quantizing")
        prep = prepare(model, board, quant=quant, batch=batch)
        program, b = prep["program"], prep["board"]
        (staging / "program.txt").write_text(program.listing() + "\n")
        (staging / "graph.txt").write_text(str(prep["qgraph"]) + "\n")
        say(f"simulating the RTL on Verilator ({samples} samples)")
        sim = simulate(prep, staging / "sim", samples=samples)
        if not sim["rtl_matches_golden"]:
            raise SimulationError(
                "RTL disagrees with the golden model: " + "; ".join(sim["mismatches"][:3]),
                hint="this is a Celosia bug: please report it with the model, board and precision",
            )
        report = {
            "model": program.name,
            "board": b.name,
            "quant": quant,
            "batch": batch,
            "lanes": program.lanes,
            "cycles": sim["cycles"],
            "ideal_cycles": program.ideal_cycles,
            "predicted_cycles": predict_cycles(program),
            "cycles_over_ideal": sim["cycles"] / program.ideal_cycles,
            "macs": program.macs,
            "rtl_matches_golden": sim["rtl_matches_golden"],
            "samples": samples,
            "max_abs_err_vs_float": sim["max_abs_err_vs_float"],
            "fmax_mhz": None,
            "target_mhz": b.target_mhz,
            "timing_met": None,
            "resources": {
                k: {"used": prep["estimate"][k], "available": getattr(b.resources, k), "source": "estimate"}
                for k in ("dsp", "bram")
            },
            "memory_map": {
                "word_bits": program.lanes * program.act_bits,
                "inputs": {n: {"addr": p.addr, "words": p.words, "format": str(p.fmt)} for n, p in program.inputs.items()},
                "outputs": {n: {"addr": p.addr, "words": p.words, "format": str(p.fmt)} for n, p in program.outputs.items()},
            },
            "files": {"verilog": "sim/celosia_accel.v", "program": "program.txt", "graph": "graph.txt"},
        }
        if bitstream:
            say(f"building the {b.name} bitstream (yosys, nextpnr)")
            core = Accelerator(program, prep["scratch_depth"])
            built = build_bitstream(BoardTop(core, b), b, staging / "bitstream", progress=say)
            report.update(
                fmax_mhz=built.fmax_mhz,
                timing_met=built.timing_met,
                resources=built.resources,
            )
            report["files"]["bitstream"] = str(built.bitstream.relative_to(staging))
        (staging / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return report
