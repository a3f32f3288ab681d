"""Whole-accelerator simulation on Verilator through the generated ctypes harness."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from celosia.errors import SimulationError
from celosia.hw.accelerator import Accelerator
from celosia.hw.verilog import write_verilog
from celosia.ir.program import Program, pack_words, unpack_words
from celosia.sim.harness import VerilatedDesign

__all__ = ["AcceleratorSim", "TOP_NAME"]

TOP_NAME = "celosia_accel"


class AcceleratorSim:
    """Runs a compiled :class:`Program` on the Verilated accelerator.

    Parameters
    ----------
    program : Program
        The compiled model.
    build_dir : Path
        Where the Verilog and the simulator library go (reused if unchanged); relative
        paths and ``~`` are allowed.
    scratch_depth : int, optional
        Scratchpad words (default: the program's need).
    verilog : Path, optional
        Verilog of this program's accelerator (top ``celosia_accel``) written before, e.g. by
        the flow's generate stage; by default it is generated into ``build_dir``.
    progress : callable(str), optional
        Receives status texts while the simulator library is built.
    """

    def __init__(self, program: Program, build_dir: Path, *, scratch_depth: int | None = None,
                 verilog: Path | None = None, progress: Callable[[str], None] | None = None):
        self.program = program
        build_dir = Path(os.path.abspath(os.path.expanduser(build_dir)))
        if verilog is None:
            accel = Accelerator(program, scratch_depth)
            verilog = write_verilog(accel, build_dir / f"{TOP_NAME}.v", TOP_NAME)
        self.verilog_path = Path(os.path.abspath(verilog))
        self.dut = VerilatedDesign.build([self.verilog_path], TOP_NAME, build_dir / "verilator",
                                         progress=progress)
        self.dut.reset()

    def write_words(self, addr: int, words: list[int]) -> None:
        """Write scratchpad words through the host port."""
        dut = self.dut
        dut.set("host__we", 1)
        for i, word in enumerate(words):
            dut.set("host__addr", addr + i)
            dut.set("host__wdata", word)
            dut.tick()
        dut.set("host__we", 0)

    def read_words(self, addr: int, count: int) -> list[int]:
        """Read scratchpad words through the host port."""
        dut = self.dut
        out = []
        for i in range(count):
            dut.set("host__addr", addr + i)
            dut.tick()
            out.append(dut.get("host__rdata"))
        return out

    def run(self, max_cycles: int = 10_000_000) -> int:
        """Pulse start, wait for busy to fall; return the accelerator's cycle counter."""
        dut = self.dut
        dut.set("host__start", 1)
        dut.tick()
        dut.set("host__start", 0)
        dut.run_until("host__busy", 0, max_cycles)
        return dut.get("host__cycles")

    def infer(self, codes: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], int]:
        """Load input codes, run the program, read the outputs.

        Returns
        -------
        (dict of output name to int64 codes, cycles)
        """
        prog = self.program
        for name, place in prog.inputs.items():
            if name not in codes:
                raise SimulationError(f"no value for input '{name}' of '{prog.name}'")
            self.write_words(place.addr, pack_words(prog.host_input(name, codes[name]), place, prog.lanes, prog.act_bits))
        cycles = self.run()
        outputs = {
            name: unpack_words(self.read_words(place.addr, place.words), place, prog.lanes, prog.act_bits)
            for name, place in prog.outputs.items()
        }
        return outputs, cycles

    def close(self) -> None:
        """Release the simulator."""
        self.dut.close()
