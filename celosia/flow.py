"""The compile flow: every stage of ``celosia compile``, in order, in one place.

=========  ==================================================  ===============================
stage      what it does                                        input -> output
=========  ==================================================  ===============================
import     zoo name, builder graph, ``.onnx`` file or PyTorch  model -> :class:`Imported`
           module -> float graph (``celosia.frontend``)
check      every op importable and run by a hardware unit      Imported -> ``CheckReport``
           (``celosia.frontend.check.check_model``)
lower      the float passes, then quantize (calibration,       Imported -> :class:`Lowered`
           per-tensor formats): ``celosia.ir.pipeline.lower``
schedule   bind to the board's array, allocate the scratchpad, Lowered -> :class:`Prepared`
           emit the ``Program`` (``celosia.ir.schedule``)
generate   the Amaranth accelerator as Verilog                 Prepared -> :class:`Generated`
simulate   Verilator build, RTL vs bit-exact golden (and vs    Prepared, Generated ->
           float) on sample inputs                             :class:`Simulated`
bitstream  yosys, nextpnr, ecppack / icepack                   Prepared -> ``BuildResult``
report     the figures; ``report.json``, ``program.txt``,      ... -> :class:`Report`
           ``graph.txt``
=========  ==================================================  ===============================

:data:`STAGES` lists them (``[s.name for s in STAGES]``); each stage is a plain function
with typed inputs and outputs, usable on its own. :func:`compile` runs them all in that
order inside a staged output folder (nothing half-written is left on error),
:func:`prepare` runs import, lower and schedule, :func:`simulate` generate and simulate.
Arguments are checked before any work; paths are resolved once, here (``~`` and
relative paths work from any working directory).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from celosia.errors import OptionError, ScheduleError, SimulationError, UnknownNameError
from celosia.output import check_output, resolve_path, staged_output
from celosia.progress import Progress, as_progress, format_seconds

if TYPE_CHECKING:
    from celosia.boards.flow import BuildResult
    from celosia.boards.registry import Board
    from celosia.frontend.check import CheckReport
    from celosia.ir.graph import Graph
    from celosia.ir.program import Program
    from celosia.ir.quantize import Precision

__all__ = [
    "STAGES", "Stage", "Imported", "Lowered", "Prepared", "Generated", "Simulated", "Report",
    "import_model", "check_ops", "lower_model", "schedule_model", "generate_rtl", "simulate_rtl",
    "build_bitstream", "make_report", "check", "prepare", "simulate", "compile", "check_count",
    "resolve_board",
]

#: Sampler of model inputs: ``(count, seed) -> [ {input name: array}, ... ]``.
Sampler = Callable[[int, int], list]

TOP_FILES = {"verilog": "sim/celosia_accel.v", "program": "program.txt", "graph": "graph.txt"}


# --------------------------------------------------------------------------------------
# Stage results
# --------------------------------------------------------------------------------------


@dataclass
class Imported:
    """The float model, as a frontend produced it.

    Attributes
    ----------
    name : str
        Model name (zoo name, file stem or module class).
    graph : Graph
        The float graph.
    sampler : callable(count, seed) -> list of dict
        Input samples: the zoo's test set, or uniform in [-1, 1] for other models.
    batch : int
        Rows per inference.
    test_set : callable(batch) -> (list of dict, ndarray), optional
        The model's labelled test set (zoo models that have one), see ``ZooModel.test_set``.
    """

    name: str
    graph: Graph
    sampler: Sampler
    batch: int = 1
    test_set: Callable | None = None


@dataclass
class Lowered:
    """The quantized graph, ready for the scheduler.

    Attributes
    ----------
    imported : Imported
    qgraph : Graph
        The graph after the float passes and quantization (a Fixed format on every tensor).
    precision : Precision
    quant : str
        The preset it came from (``"w8a16"``).
    passes : list of str
        The pipeline's stages as they ran (``celosia.ir.pipeline``).
    """

    imported: Imported
    qgraph: Graph
    precision: Precision
    quant: str
    passes: list[str] = field(default_factory=list)


@dataclass
class Prepared:
    """A model lowered and scheduled for a board: everything needed to generate hardware.

    Attributes
    ----------
    graph, qgraph : Graph
        Float and quantized graphs.
    program : Program
        The compiled program (instructions, memory map, lanes).
    board : Board
    sampler : callable(count, seed) -> list of dict
        Input samples (see :class:`Imported`).
    scratch_depth : int
        Scratchpad words (a power of two).
    estimate : dict
        DSP / BRAM use estimated before synthesis (``celosia.boards.budget.check_fit``).
    quant : str
        The precision preset.
    batch : int
        Rows per inference.
    test_set : callable(batch) -> (list of dict, ndarray), optional
        The model's labelled test set, if it has one.
    """

    graph: Graph
    qgraph: Graph
    program: Program
    board: Board
    sampler: Sampler
    scratch_depth: int
    estimate: dict
    quant: str = "w8a16"
    batch: int = 1
    test_set: Callable | None = None


@dataclass
class Generated:
    """The accelerator's Verilog.

    Attributes
    ----------
    folder : Path
        Where it was written (the simulator is built in ``folder / "verilator"``).
    verilog : Path
        The Verilog file (top module :attr:`top`).
    top : str
    """

    folder: Path
    verilog: Path
    top: str


@dataclass
class Simulated:
    """RTL run on Verilator against the bit-exact golden model.

    Attributes
    ----------
    rtl_matches_golden : bool
        Every output of every sample identical, bit for bit.
    mismatches : list of str
        One line per differing output.
    cycles : int
        The worst run's hardware cycle counter.
    cycles_all : list of int
        The counter of each run.
    max_abs_err_vs_float : float
        Largest error of the golden model's outputs against the float reference.
    samples : int
    verilog : Path
    test : dict or None
        With a labelled test set run on the RTL: ``test_size``, ``rtl_accuracy``,
        ``golden_accuracy``, ``float_accuracy`` (top-1 of the first output against the labels).
    """

    rtl_matches_golden: bool
    mismatches: list[str]
    cycles: int
    cycles_all: list[int]
    max_abs_err_vs_float: float
    samples: int
    verilog: Path
    test: dict | None = None

    def to_dict(self) -> dict:
        """A JSON-friendly dict (``verilog`` as a string)."""
        d = asdict(self)
        d["verilog"] = str(self.verilog)
        return d


def _not_in_json(**kw):
    return field(metadata={"json": False}, **kw)


@dataclass
class Report:
    """What ``compile`` produced. :meth:`to_dict` is ``report.json`` (same field names).

    Attributes
    ----------
    model, board, quant : str
    batch, lanes : int
    cycles : int
        Hardware cycles per inference (the worst sample), from the RTL's counter.
    ideal_cycles : float
        MACs / array size.
    predicted_cycles : int
        The performance model's prediction (``celosia.sim.perf``).
    cycles_over_ideal : float
    macs : int
    rtl_matches_golden : bool
    samples : int
    max_abs_err_vs_float : float
    fmax_mhz : float or None
        Post-route Fmax (None without a bitstream).
    target_mhz : float
    timing_met : bool or None
    resources : dict
        ``{"lut": {"used", "available"}, ...}``; estimates (``"source": "estimate"``) without a
        bitstream.
    memory_map : dict
        Word width and the scratchpad address, words and format of every input and output.
    files : dict
        Files in the output folder, relative to it.
    roofline_cycles : float
        Σ over instructions of max(useful work at the unit's peak rate, words at the memories'
        bandwidth); the units run one at a time, so every instruction is on the critical path.
    cycles_over_roofline : float
    op_cycles : list of dict
        Per op, in program order: ``op``, ``kind``, ``unit``, ``instructions``, ``cycles`` (from
        the end of the previous op's last write to the end of its own, performance model) and
        ``roofline``.
    scratchpad : dict
        ``peak_words`` (liveness allocation) and ``words`` (generated depth).
    rtl_accuracy, golden_accuracy, float_accuracy : float or None
        Top-1 accuracy on the model's labelled test set (``test_size`` inputs, all run on the RTL).
    test_size : int or None
    inferences_per_s : float
        At the post-route Fmax (the target clock without a bitstream).
    ops_per_dsp_per_cycle : float
        2·MACs per inference / DSPs / cycles (the figure FPGA accelerator papers quote).
    out_dir : Path or None
        The output folder (not in ``report.json``).
    stage_seconds : dict of str to float
        Wall time of each stage, in :data:`STAGES` order (not in ``report.json``, which stays
        identical from run to run).
    """

    model: str
    board: str
    quant: str
    batch: int
    lanes: int
    cycles: int
    ideal_cycles: float
    predicted_cycles: int
    cycles_over_ideal: float
    macs: int
    rtl_matches_golden: bool
    samples: int
    max_abs_err_vs_float: float
    target_mhz: float
    resources: dict
    memory_map: dict
    files: dict
    fmax_mhz: float | None = None
    timing_met: bool | None = None
    roofline_cycles: float = 0.0
    cycles_over_roofline: float = 0.0
    op_cycles: list = field(default_factory=list)
    scratchpad: dict = field(default_factory=dict)
    rtl_accuracy: float | None = None
    golden_accuracy: float | None = None
    float_accuracy: float | None = None
    test_size: int | None = None
    inferences_per_s: float = 0.0
    ops_per_dsp_per_cycle: float = 0.0
    out_dir: Path | None = _not_in_json(default=None)
    stage_seconds: dict = _not_in_json(default_factory=dict)

    def to_dict(self) -> dict:
        """The ``report.json`` content: every field except ``out_dir`` and ``stage_seconds``."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self) if f.metadata.get("json", True)}

    @property
    def stage_times(self) -> str:
        """``"import 0.1 s, check 0.2 s, ..., total 2 min 05 s"``."""
        parts = [f"{name} {format_seconds(s)}" for name, s in self.stage_seconds.items()]
        parts.append(f"total {format_seconds(sum(self.stage_seconds.values()))}")
        return ", ".join(parts)


def _plain(value):
    """JSON-friendly copy (numpy scalars to Python numbers)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


# --------------------------------------------------------------------------------------
# The stages
# --------------------------------------------------------------------------------------


def _model_path(model):
    """``~`` and relative ``.onnx`` paths made absolute; other models unchanged."""
    if isinstance(model, (str, os.PathLike)) and str(model).endswith(".onnx"):
        return resolve_path(model)
    return model


def import_model(model, example_inputs=None, *, batch: int = 1) -> Imported:
    """Stage ``import``: load a model as a float graph.

    Parameters
    ----------
    model : str, Graph, os.PathLike or torch.nn.Module
        A zoo name, a builder graph, an ``.onnx`` file, or a PyTorch module.
    example_inputs : tuple, optional
        Example inputs of a PyTorch module (their shapes are the graph's).
    batch : int
        Rows per inference (zoo models).

    Returns
    -------
    Imported
    """
    from celosia.frontend.check import resolve_model

    if isinstance(model, str) and not model.endswith(".onnx"):
        from celosia.frontend.zoo import get_model

        zoo = get_model(model)
        graph = zoo.build(batch)

        def sampler(count: int, seed: int) -> list[dict]:
            return zoo.samples(count, batch, seed)

        return Imported(model, graph, sampler, batch, zoo.test_set)

    name, graph = resolve_model(_model_path(model), example_inputs, batch=batch)

    def sampler(count: int, seed: int) -> list[dict]:
        rng = np.random.default_rng(seed)
        return [{op.name: rng.uniform(-1, 1, op.type.shape) for op in graph.inputs} for _ in range(count)]

    return Imported(name, graph, sampler, batch)


def check_ops(imported: Imported) -> CheckReport:
    """Stage ``check``: every op must be importable and run by a hardware unit.

    Returns
    -------
    CheckReport
        With ``ok`` true.

    Raises
    ------
    UnsupportedOpsError, ScheduleError
        Listing every op that blocks compilation, before any other work.
    """
    from celosia.frontend.check import check_model

    report = check_model(imported.graph, batch=imported.batch)
    report.model = imported.name
    report.raise_if_unsupported()
    return report


def lower_model(imported: Imported, precision: Precision, *, quant: str = "", calibration: int = 32) -> Lowered:
    """Stage ``lower``: the float passes, then quantization on ``calibration`` samples.

    Runs ``celosia.ir.pipeline.lower`` (the one list of passes); :attr:`Lowered.passes`
    records the passes as they ran.
    """
    from celosia.ir.pipeline import lower

    ran: list[str] = []
    qgraph = lower(imported.graph, imported.sampler(calibration, 0), precision,
                   on_stage=lambda name, _graph: ran.append(name))
    return Lowered(imported, qgraph, precision, quant or str(precision), ran)


def schedule_model(lowered: Lowered, board: Board) -> Prepared:
    """Stage ``schedule``: size the array for ``board``, allocate the scratchpad, emit the Program.

    Raises
    ------
    ScheduleError
        If an op cannot be placed on the units.
    ResourceError
        If the design needs more DSP or block RAM than the board has.
    """
    from celosia.boards.budget import check_fit, choose_lanes
    from celosia.ir.schedule import schedule

    # the 16-bit scratchpad address is the hard limit (a tensor past it is refused, naming it);
    # whether the scratchpad and the weights fit the board's block RAM is check_fit's question
    program = schedule(lowered.qgraph, choose_lanes(board), capacity=1 << 16)
    scratch_depth = 1 << max(1, (max(program.scratch_words, 2) - 1).bit_length())
    estimate = check_fit(program, board, scratch_depth)
    imp = lowered.imported
    return Prepared(imp.graph, lowered.qgraph, program, board, imp.sampler, scratch_depth, estimate,
                    lowered.quant, imp.batch, imp.test_set)


def generate_rtl(prepared: Prepared, folder: str | os.PathLike) -> Generated:
    """Stage ``generate``: write the accelerator's Verilog into ``folder``."""
    from celosia.hw.accelerator import Accelerator
    from celosia.hw.verilog import write_verilog
    from celosia.sim.accel_sim import TOP_NAME

    folder = resolve_path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    accel = Accelerator(prepared.program, prepared.scratch_depth)
    verilog = write_verilog(accel, folder / f"{TOP_NAME}.v", TOP_NAME)
    return Generated(folder, Path(verilog), TOP_NAME)


def simulate_rtl(prepared: Prepared, generated: Generated, *, samples: int = 8, seed: int = 1,
                 test_set: bool = True, progress: Progress | None = None) -> Simulated:
    """Stage ``simulate``: build the Verilator model, run ``samples`` inputs, compare with golden.

    Every output must equal the bit-exact golden executor's; the golden outputs are also
    compared with the float reference (``max_abs_err_vs_float``). With ``test_set`` and a model
    that has one, every test input also runs on the RTL (compared with golden the same way) and
    the top-1 accuracies of the RTL, the golden model and the float reference are reported.
    """
    from celosia.ir.numerics import dequantize, quantize
    from celosia.sim.accel_sim import AcceleratorSim
    from celosia.ir.golden import run_float, run_int

    progress = progress or Progress()
    graph, qgraph, program = prepared.graph, prepared.qgraph, prepared.program
    progress.detail("building the simulator")
    sim = AcceleratorSim(program, generated.folder, scratch_depth=prepared.scratch_depth,
                         verilog=generated.verilog, progress=progress.detail)
    mismatches, cycles, max_err = [], [], 0.0
    test = None
    try:
        if test_set and prepared.test_set is not None:
            test = _run_test_set(prepared, sim, mismatches, progress)
        for i, sample in enumerate(prepared.sampler(samples, seed)):
            progress.detail(f"sample {i + 1}/{samples}")
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
    return Simulated(not mismatches, mismatches, max(cycles), cycles, max_err, samples, sim.verilog_path, test)


def _user_test_set(imported: Imported, inputs, labels) -> Callable:
    """A ``test_set(batch)`` callable over a user's labelled inputs (one per inference)."""
    labels = np.asarray(labels).reshape(len(labels), -1)
    if isinstance(inputs, np.ndarray):
        if len(imported.graph.inputs) != 1:
            raise OptionError("an array of test inputs needs a model with one input",
                              hint="pass a list of {input name: array} dicts instead")
        name, shape = imported.graph.inputs[0].name, imported.graph.inputs[0].type.shape
        try:
            samples = [{name: np.asarray(x, dtype=np.float64).reshape(shape)} for x in inputs]
        except ValueError:
            raise OptionError(f"test inputs of shape {inputs.shape[1:]} do not fit input '{name}' {shape}",
                              hint="pass one test input per row of the array, shaped like the model's input") from None
    else:
        samples = list(inputs)
    if len(samples) != len(labels):
        raise OptionError(f"{len(samples)} test inputs but {len(labels)} labels", hint="pass one label per input")
    return lambda batch: (samples, labels)


def _run_test_set(prepared: Prepared, sim, mismatches: list[str], progress: Progress) -> dict:
    """Every test input on the RTL, the golden model and the float reference: top-1 accuracies."""
    from celosia.ir.golden import run_float, run_int
    from celosia.ir.numerics import quantize

    graph, qgraph = prepared.graph, prepared.qgraph
    inputs, labels = prepared.test_set(prepared.batch)
    output = qgraph.outputs[0].name
    hits = {"rtl": 0, "golden": 0, "float": 0}
    for i, (sample, label) in enumerate(zip(inputs, labels)):
        if i % 20 == 0:
            progress.detail(f"test input {i + 1}/{len(inputs)}")
        codes = {op.name: quantize(sample[op.name], op.type.fmt) for op in qgraph.inputs}
        rtl = sim.infer(codes)[0][output]
        golden = run_int(qgraph, sample)[output]
        if not np.array_equal(rtl, golden):
            mismatches.append(f"test input {i}, output '{output}': {int(np.count_nonzero(rtl != golden))} "
                              f"of {golden.size} values differ")
        for key, value in (("rtl", rtl), ("golden", golden), ("float", run_float(graph, sample)[output])):
            hits[key] += int(np.count_nonzero(np.asarray(value).reshape(len(label), -1).argmax(-1) == label))
    total = int(labels.size)
    return {"test_size": total, **{f"{k}_accuracy": v / total for k, v in hits.items()}}


def build_bitstream(prepared: Prepared, folder: str | os.PathLike, *,
                    progress: Progress | None = None) -> BuildResult:
    """Stage ``bitstream``: synthesis, place and route and packing for the prepared board."""
    from celosia.boards.flow import build_bitstream as run_open_flow
    from celosia.boards.top import BoardTop
    from celosia.hw.accelerator import Accelerator

    progress = progress or Progress()
    core = Accelerator(prepared.program, prepared.scratch_depth)
    return run_open_flow(BoardTop(core, prepared.board), prepared.board, resolve_path(folder),
                         progress=progress.detail, on_status=progress.detail)


def make_report(prepared: Prepared, simulated: Simulated, built: BuildResult | None = None, *,
                out_dir: Path | None = None) -> Report:
    """Stage ``report``: the figures of a compile; with ``out_dir`` also write its text files.

    ``out_dir`` receives ``report.json`` (:meth:`Report.to_dict`), ``program.txt`` (the
    instruction listing) and ``graph.txt`` (the quantized graph).
    """
    from celosia.sim.perf import predict_cycles

    program, b = prepared.program, prepared.board
    resources = {k: {"used": prepared.estimate[k], "available": getattr(b.resources, k), "source": "estimate"}
                 for k in ("dsp", "bram")}
    files = dict(TOP_FILES)
    place = lambda p: {"addr": p.addr, "words": p.words, "format": str(p.fmt)}  # noqa: E731
    report = Report(
        model=program.name, board=b.name, quant=prepared.quant, batch=prepared.batch, lanes=program.lanes,
        cycles=simulated.cycles, ideal_cycles=program.ideal_cycles, predicted_cycles=predict_cycles(program),
        cycles_over_ideal=simulated.cycles / program.ideal_cycles, macs=program.macs,
        rtl_matches_golden=simulated.rtl_matches_golden, samples=simulated.samples,
        max_abs_err_vs_float=simulated.max_abs_err_vs_float, target_mhz=b.target_mhz, resources=resources,
        memory_map={
            "word_bits": program.lanes * program.act_bits,
            "inputs": {n: place(p) for n, p in program.inputs.items()},
            "outputs": {n: place(p) for n, p in program.outputs.items()},
        },
        files=files, out_dir=out_dir,
    )
    report.roofline_cycles = program.roofline_cycles
    report.cycles_over_roofline = simulated.cycles / max(program.roofline_cycles, 1.0)
    report.op_cycles = op_cycles(program)
    report.scratchpad = {"peak_words": program.scratch_words, "words": prepared.scratch_depth}
    if simulated.test is not None:
        for key in ("rtl_accuracy", "golden_accuracy", "float_accuracy", "test_size"):
            setattr(report, key, simulated.test[key])
    if built is not None:
        report.fmax_mhz, report.timing_met, report.resources = built.fmax_mhz, built.timing_met, built.resources
    clock = report.fmax_mhz or b.target_mhz
    report.inferences_per_s = clock * 1e6 / simulated.cycles
    dsp = report.resources.get("dsp", {}).get("used") or 1
    report.ops_per_dsp_per_cycle = 2 * program.macs / dsp / simulated.cycles
    if built is not None:
        if out_dir is not None:
            files["bitstream"] = str(Path(built.bitstream).relative_to(out_dir))
    if out_dir is not None:
        (out_dir / files["program"]).write_text(program.listing() + "\n")
        (out_dir / files["graph"]).write_text(str(prepared.qgraph) + "\n")
        (out_dir / "report.json").write_text(json.dumps(report.to_dict(), indent=2, sort_keys=True) + "\n")
    return report


def op_cycles(program: Program) -> list[dict]:
    """Where the cycles go, per op (see :attr:`Report.op_cycles`)."""
    from celosia.ir.registry import op_def
    from celosia.sim.perf import timeline

    spans = timeline(program)
    rows, done = [], 0
    for name, indices in sorted(program.op_instructions.items(), key=lambda kv: kv[1][0]):
        end = max(spans[i][1] for i in indices)
        kind = program.op_kinds.get(name, "")
        rows.append({"op": name, "kind": kind, "unit": op_def(kind).hw.unit if kind else "",
                     "instructions": len(indices), "cycles": end - done,
                     "roofline": round(sum(program.bounds[i] for i in indices), 1)})
        done = end
    return rows


@dataclass(frozen=True)
class Stage:
    """One named stage of the flow.

    Attributes
    ----------
    name : str
        Short name (``"lower"``), used for progress and the per-stage times.
    run : callable
        The stage function (typed inputs and output).
    title : str
        What it does, as the progress line shows it.
    """

    name: str
    run: Callable[..., Any]
    title: str


IMPORT = Stage("import", import_model, "importing the model")
CHECK = Stage("check", check_ops, "checking the model's ops")
LOWER = Stage("lower", lower_model, "lowering and quantizing")
SCHEDULE = Stage("schedule", schedule_model, "scheduling onto the board")
GENERATE = Stage("generate", generate_rtl, "generating the accelerator's Verilog")
SIMULATE = Stage("simulate", simulate_rtl, "simulating the RTL on Verilator")
BITSTREAM = Stage("bitstream", build_bitstream, "building the bitstream (yosys, nextpnr)")
REPORT = Stage("report", make_report, "writing the report")

#: Every stage of :func:`compile`, in the order it runs them.
STAGES: tuple[Stage, ...] = (IMPORT, CHECK, LOWER, SCHEDULE, GENERATE, SIMULATE, BITSTREAM, REPORT)


class _Runner:
    """Runs stages in :data:`STAGES` order, announcing and timing each."""

    def __init__(self, progress: Progress):
        self.progress = progress
        self.seconds: dict[str, float] = {}
        self._next = 0

    def __call__(self, stage: Stage, *args, message: str | None = None, **kwargs):
        index = STAGES.index(stage)
        if index < self._next:
            raise RuntimeError(f"stage {stage.name!r} runs after {STAGES[self._next - 1].name!r}")
        self._next = index + 1
        self.progress.step(message or stage.title)
        t0 = time.monotonic()
        result = stage.run(*args, **kwargs)
        self.seconds[stage.name] = time.monotonic() - t0
        self.progress.stage_done(stage.name, self.seconds[stage.name])
        return result


# --------------------------------------------------------------------------------------
# Argument checks (before any work)
# --------------------------------------------------------------------------------------


def check_count(value, name: str, *, what: str = "") -> int:
    """``value`` as a count of at least 1, or an :class:`OptionError` naming ``name``.

    ``name`` is how the user wrote the option (``"--samples"`` on the command line,
    ``"samples"`` in Python).
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise OptionError(f"{name} must be a whole number, not {value!r}",
                          hint=f"pass {name} as a count of at least 1")
    if value < 1:
        raise OptionError(f"{name} must be at least 1 (got {value})",
                          hint=f"pass {name} N with N >= 1{' ' + what if what else ''}")
    return int(value)


def resolve_board(board) -> Board:
    """The :class:`Board` of a name (or a Board); unknown names list the boards."""
    from celosia.boards.registry import get_board

    try:
        return get_board(board)
    except UnknownNameError as exc:
        raise UnknownNameError(exc.message, hint="run `celosia boards` to see every board with its resources "
                               "(Python: celosia.boards.list_boards())") from None


def _precision(quant: str) -> Precision:
    from celosia.ir.quantize import Precision

    precision = Precision.parse(quant)
    if precision.per_channel:
        raise ScheduleError(
            f"precision '{quant}' uses per-channel weight formats, which the linear unit does not take yet",
            hint="compile with a per-tensor preset (e.g. w8a16); per-channel graphs run in the golden simulator "
            "(celosia.ir.pipeline.lower + celosia.ir.golden.run_int)",
        )
    return precision


# --------------------------------------------------------------------------------------
# The public API
# --------------------------------------------------------------------------------------


def check(model, example_inputs=None, *, batch: int = 1) -> CheckReport:
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

    batch = check_count(batch, "batch")
    return check_model(_model_path(model), example_inputs, batch=batch)


def prepare(model, board="ulx3s-85f", *, example_inputs=None, quant: str = "w8a16", batch: int = 1,
            calibration: int = 32, progress: Progress | Callable[[str], None] | None = None) -> Prepared:
    """Import, lower and schedule a model for a board; no files written.

    Parameters
    ----------
    model : str, Graph, os.PathLike or torch.nn.Module
        A zoo name (see ``celosia zoo``), a float graph from the builder, an ``.onnx`` file
        or a PyTorch module (with ``example_inputs``).
    board : str or Board
        A board name (see ``celosia boards``).
    example_inputs : tuple, optional
        Example inputs of a PyTorch module.
    quant : str
        Precision preset, e.g. ``"w8a16"``.
    batch : int
        Rows per inference (zoo models only).
    calibration : int
        Number of calibration samples.
    progress : Progress or callable(str), optional
        Receives a message as each stage starts.

    Returns
    -------
    Prepared
        ``graph`` (float), ``qgraph`` (quantized), ``program``, ``board``, ``sampler``
        (callable(count, seed) -> list of input dicts), ``scratch_depth``, ``estimate``.
    """
    board = resolve_board(board)
    precision = _precision(quant)
    batch = check_count(batch, "batch")
    calibration = check_count(calibration, "calibration")
    run = _Runner(as_progress(progress))
    imported = run(IMPORT, model, example_inputs, batch=batch)
    lowered = run(LOWER, imported, precision, quant=quant, calibration=calibration)
    return run(SCHEDULE, lowered, board)


def simulate(prepared: Prepared, build_dir: str | os.PathLike, *, samples: int = 8, seed: int = 1,
             test_set: bool = False, progress: Progress | Callable[[str], None] | None = None) -> Simulated:
    """Generate the RTL and run it on Verilator against the golden model on ``samples`` inputs.

    Parameters
    ----------
    prepared : Prepared
        From :func:`prepare`.
    build_dir : path-like
        Folder for the Verilog and the simulator (reused if the design is unchanged).
    samples : int
        Inputs to run.
    seed : int
        Seed of the inputs (the zoo's test set order, or the random inputs).
    test_set : bool
        Also run the model's whole labelled test set (if it has one) and report accuracies.
    progress : Progress or callable(str), optional

    Returns
    -------
    Simulated
    """
    samples = check_count(samples, "samples")
    run = _Runner(as_progress(progress))
    generated = run(GENERATE, prepared, resolve_path(build_dir))
    return run(SIMULATE, prepared, generated, samples=samples, seed=seed, test_set=test_set, progress=run.progress,
               message=f"{SIMULATE.title} ({samples} samples)")


def compile(
    model,
    board="ulx3s-85f",
    out_dir: str | os.PathLike = "build",
    *,
    example_inputs=None,
    quant: str = "w8a16",
    bitstream: bool = True,
    force: bool = False,
    batch: int = 1,
    samples: int = 8,
    test_set: bool | tuple = True,
    progress: Progress | Callable[[str], None] | None = None,
) -> Report:
    """Compile a model to a verified accelerator and (optionally) a bitstream.

    Runs every stage of :data:`STAGES`; see the module docstring.

    Parameters
    ----------
    model : str, Graph, os.PathLike or torch.nn.Module
        Zoo name, float graph, ``.onnx`` file, or PyTorch module (with ``example_inputs``).
    board : str or Board
        Board name (see ``celosia boards``).
    out_dir : path-like
        Output folder (relative to the current directory, or absolute; ``~`` works); must not
        exist unless ``force``.
    example_inputs : tuple, optional
        Example inputs of a PyTorch module (static shapes).
    quant : str
        Precision preset.
    bitstream : bool
        Run synthesis, place and route and bitstream packing.
    force : bool
        Replace an existing ``out_dir`` folder (never a file).
    batch : int
        Rows per inference.
    samples : int
        Test inputs simulated on the RTL and compared with the golden model.
    test_set : bool or (inputs, labels)
        Also run a labelled test set on the RTL and report ``rtl_accuracy`` beside the golden and
        float accuracies: True takes the model's own (zoo models that have one); or pass your own,
        ``inputs`` an array whose first axis indexes test inputs (each shaped like the model's one
        input) or a list of input dicts, ``labels`` their class indices.
    progress : Progress or callable(str), optional
        Receives a message as each stage starts (a :class:`~celosia.progress.Progress` also
        gets live details and each stage's time).

    Returns
    -------
    Report
        The figures (``report.cycles``, ``report.fmax_mhz``, ...); ``report.to_dict()`` is
        ``out_dir/report.json``.

    Raises
    ------
    CelosiaError
        On any user-facing failure; ``out_dir`` is then left as it was. If a tool failed,
        its log is kept as ``<out_dir>-failed.log`` and the message names it.
    """
    # Everything a user can get wrong is checked before any work.
    board = resolve_board(board)
    precision = _precision(quant)
    batch = check_count(batch, "batch")
    samples = check_count(samples, "samples", what="(test inputs run on the RTL)")
    out = check_output(out_dir, force=force)
    if bitstream:
        from celosia.boards.flow import check_toolchain

        check_toolchain(board)  # before minutes of work, not after
    run = _Runner(as_progress(progress))
    with staged_output(out) as staging:
        imported = run(IMPORT, model, example_inputs, batch=batch)
        if isinstance(test_set, tuple):
            imported.test_set = _user_test_set(imported, *test_set)
        run(CHECK, imported)
        lowered = run(LOWER, imported, precision, quant=quant)
        prep = run(SCHEDULE, lowered, board)
        generated = run(GENERATE, prep, staging / Path(TOP_FILES["verilog"]).parent)
        sim = run(SIMULATE, prep, generated, samples=samples, test_set=bool(test_set), progress=run.progress,
                  message=f"{SIMULATE.title} ({samples} samples)")
        if not sim.rtl_matches_golden:
            raise SimulationError(
                "RTL disagrees with the golden model: " + "; ".join(sim.mismatches[:3]),
                hint="this is a Celosia bug: please report it with the model, board and precision",
            )
        built = None
        if bitstream:
            built = run(BITSTREAM, prep, staging / "bitstream", progress=run.progress,
                        message=f"building the {board.name} bitstream (yosys, nextpnr)")
        report = run(REPORT, prep, sim, built, out_dir=staging)
    report.out_dir = out
    report.stage_seconds = dict(run.seconds)
    return report
