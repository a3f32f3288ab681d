# amaranth: UnusedElaboratable=no
"""Tests of celosia.hw.linear: parameter validation, and the cocotb testbench on Verilator."""

from __future__ import annotations

import pytest

from celosia.errors import HardwareGenerationError
from celosia.hw.linear import LinearArray, LinearConfig, x_beat_layout
from celosia.sim.cocotb_runner import run_cocotb

# name: (rows, cols, act_bits, weight_bits, acc_bits, extra generator kwargs, seed, jobs)
CONFIGS = {
    "4x4_a16w8": (4, 4, 16, 8, 40, {}, 11, 250),
    "8x8_a16w8": (8, 8, 16, 8, 40, {}, 12, 200),
    "3x5_a8w6": (3, 5, 8, 6, 24, {}, 13, 250),
    "2x3_a12w16": (2, 3, 12, 16, 48, {}, 14, 250),
    # one row (no adder tree), and a tree registered every other level with odd node counts
    "1x4_a18w18": (1, 4, 18, 18, 44, {}, 15, 250),
    "5x2_a10w10_tree2": (5, 2, 10, 10, 32, {"tree_levels_per_stage": 2}, 16, 250),
    "4x4_a16w8_mult1": (4, 4, 16, 8, 40, {"mult_regs": 1}, 17, 200),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CONFIGS))
def test_linear_array_cocotb(name, tmp_path_factory):
    rows, cols, a, w, acc, kwargs, seed, jobs = CONFIGS[name]
    dut = LinearArray(rows, cols, a, w, acc, **kwargs)
    build_dir = tmp_path_factory.mktemp(f"linear_{name}")
    result = run_cocotb(
        dut,
        "linear_array_top",
        "linear_tb",
        build_dir,
        params={
            "rows": rows,
            "cols": cols,
            "act_bits": a,
            "weight_bits": w,
            "acc_bits": acc,
            "latency": dut.latency,
            "fifo_depth": dut.fifo_depth,
            "seed": seed,
            "jobs": jobs,
        },
    )
    assert sorted(result.tests) == ["full_throughput", "random_backpressure"]


def test_interface_shapes():
    dut = LinearArray(4, 3, 16, 8, 40)
    assert dut.x_layout == x_beat_layout(4, 3, 16, 40)
    assert dut.x_layout.size == 4 * 16 + 3 * 40 + 3 * 16 + 2
    assert dut.w_layout.size == 4 * 3 * 8
    assert dut.y_layout.size == 3 * 16
    assert LinearConfig.size == 6 + 6 + 2 + 1 + 1 + 5 + 1  # shift, res_shift, rounding, relu, residual, out_bits, gelu
    assert dut.latency >= 10 and dut.fifo_depth == dut.latency + 1
    assert dut.latency == LinearArray.pipeline_latency(4)
    # A deeper tree is one more pipeline stage per level once it is the longest path.
    assert LinearArray.pipeline_latency(16) == LinearArray.pipeline_latency(4) + 2
    assert LinearArray(16, 16).latency == LinearArray.pipeline_latency(16)
    assert LinearArray.pipeline_latency(16, 2) == LinearArray.pipeline_latency(4)
    # With one register per multiplier side the addend path dominates small trees ...
    assert LinearArray.pipeline_latency(1, mult_regs=1) == LinearArray.pipeline_latency(3, mult_regs=1)
    # ... and each extra multiplier register stage adds one cycle on each side.
    assert LinearArray.pipeline_latency(8, mult_regs=2) == LinearArray.pipeline_latency(8, mult_regs=1) + 2
    assert dut.macs_per_cycle == 12


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(rows=0, cols=4), "rows=0"),
        (dict(rows=4, cols=0), "cols=0"),
        (dict(rows=4.0, cols=4), "rows must be an integer"),
        (dict(rows=4, cols=4, act_bits=19), "act_bits=19 is out of range 2..18"),
        (dict(rows=4, cols=4, act_bits=1), "act_bits=1"),
        (dict(rows=4, cols=4, weight_bits=24), "weight_bits=24 is out of range 2..18"),
        (dict(rows=4, cols=4, act_bits=16, weight_bits=8, acc_bits=23), "acc_bits=23"),
        (dict(rows=4, cols=4, act_bits=18, weight_bits=18, acc_bits=49), "acc_bits=49 exceeds"),
        (dict(rows=4, cols=4, tree_levels_per_stage=0), "tree_levels_per_stage=0"),
        (dict(rows=4, cols=4, fifo_depth=1), "fifo_depth=1"),
    ],
)
def test_parameter_validation(kwargs, fragment):
    with pytest.raises(HardwareGenerationError) as info:
        LinearArray(**kwargs)
    assert fragment in str(info.value)
    assert info.value.hint


def test_acc_bits_message_names_the_product_width():
    with pytest.raises(HardwareGenerationError) as info:
        LinearArray(4, 4, act_bits=16, weight_bits=8, acc_bits=20)
    msg = str(info.value)
    assert "16 + 8 = 24" in msg and "acc_bits >= 24" in msg


class _Ecp5Target:
    """Just enough of a platform for the generator to pick the ECP5 DSP primitive."""

    family = "ecp5"


@pytest.mark.slow
def test_ecp5_dsp_variant_matches_golden(tmp_path):
    """The ECP5 variant (MULT18X18D with its own registers) against a behavioural model of
    the block: same latency, same bits, same testbench."""
    from pathlib import Path

    from amaranth.back import verilog

    dut = LinearArray(4, 3, 16, 8, 40)
    text = verilog.convert(dut, name="linear_array_top", platform=_Ecp5Target())
    assert text.count("MULT18X18D #(") == 12
    model = (Path(__file__).parent / "data" / "mult18x18d_model.v").read_text()
    result = run_cocotb(
        text + "\n" + model, "linear_array_top", "linear_tb", tmp_path,
        params={"rows": 4, "cols": 3, "act_bits": 16, "weight_bits": 8, "acc_bits": 40,
                "latency": dut.latency, "fifo_depth": dut.fifo_depth, "seed": 21, "jobs": 150},
    )
    assert sorted(result.tests) == ["full_throughput", "random_backpressure"]


@pytest.mark.slow
def test_gelu_epilogue_matches_golden(tmp_path):
    """The GELU epilogue (``gelu_frac``): jobs with and without cfg.gelu, random backpressure;
    every output equals gelu_int(linear_int(...)) in Fixed(act_bits, gelu_frac), bit for bit."""
    dut = LinearArray(4, 3, 16, 8, 40, gelu_frac=12)
    assert dut.latency == LinearArray.pipeline_latency(4) + dut.gelu.latency
    result = run_cocotb(
        dut, "linear_gelu_top", "linear_tb", tmp_path,
        params={"rows": 4, "cols": 3, "act_bits": 16, "weight_bits": 8, "acc_bits": 40,
                "latency": dut.latency, "fifo_depth": dut.fifo_depth, "seed": 5, "jobs": 120,
                "gelu_frac": 12},
    )
    assert sorted(result.tests) == ["full_throughput", "random_backpressure"]


def test_gelu_epilogue_rejects_bad_format():
    with pytest.raises(HardwareGenerationError, match="gelu_frac"):
        LinearArray(4, 3, 16, 8, 40, gelu_frac=15)
