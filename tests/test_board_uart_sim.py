"""The whole board design (accelerator behind the UART bridge) driven through its UART pins on Verilator."""

import numpy as np
import pytest

import celosia
from celosia.boards.top import SimTop
from celosia.boards.uart_protocol import UartHost
from celosia.hw.accelerator import Accelerator
from celosia.hw.verilog import write_verilog
from celosia.ir.numerics import quantize
from celosia.ir.program import pack_words, unpack_words
from celosia.ir.golden import run_int
from celosia.sim.harness import VerilatedDesign
from celosia.sim.uart_link import SimSerial

DIVISOR = 8


@pytest.mark.slow
def test_inference_over_uart_matches_golden(tmp_path):
    prep = celosia.prepare("mlp-micro", "icebreaker")
    prog, q = prep.program, prep.qgraph
    top = SimTop(Accelerator(prog, prep.scratch_depth), DIVISOR)
    path = write_verilog(top, tmp_path / "board_sim.v", "board_sim")
    with VerilatedDesign.build([path], "board_sim", tmp_path / "v") as dut:
        dut.reset()
        host = UartHost(SimSerial(dut, DIVISOR))
        ident = host.ident()
        assert ident.word_bits == prog.lanes * prog.act_bits
        xin, xout = prog.inputs["x"], prog.outputs["logits"]
        for seed in range(3):
            sample = prep.sampler(1, seed + 10)[0]
            codes = quantize(sample["x"], q.op("x").type.fmt)
            cycles = host.run([(xin.addr, pack_words(codes, xin, prog.lanes, prog.act_bits))])
            got = unpack_words(host.read_words(xout.addr, xout.words), xout, prog.lanes, prog.act_bits)
            np.testing.assert_array_equal(got, run_int(q, sample)["logits"])
            assert cycles >= prog.ideal_cycles
