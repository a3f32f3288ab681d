"""cocotb testbenches of the oblivious map unit, shipped with the package.

:func:`celosia.omap.run_rtl` and :func:`celosia.omap.run_rtl_axi` run these modules on Verilator
through :func:`celosia.sim.cocotb_runner.run_cocotb` (``test_dir`` = :data:`TB_DIR`), so the
library needs nothing from a source checkout's ``tests/`` folder. The modules import cocotb and
only run inside a cocotb simulation: ``omap_unit_tb`` (test ``unit_trace``: the unit with its
page-wide host port) and ``omap_axi_tb`` (test ``unit_axi_trace``: the AXI4 top against AXI4
slave models); ``common`` holds what both share.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["TB_DIR"]

#: The folder holding the testbench modules (passed to ``run_cocotb`` as ``test_dir``).
TB_DIR = Path(__file__).resolve().parent
