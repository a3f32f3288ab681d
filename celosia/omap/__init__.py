"""The oblivious map (BOLT-style): configuration, golden model, crypto, RTL and host API.

An oblivious map hides which entry a query touches from an adversary who sees every host-memory
transaction (``docs/omap.md``, ``shared/specs/omap.md``). Everything about it lives here:

=============================  ===============================================================
:mod:`celosia.omap.config`     :class:`OmapConfig` (parameters, sizes), :class:`Schedule`, commands
                               (:class:`Op`) and statuses (:class:`Status`, :class:`Response`)
:mod:`celosia.omap.golden`     :class:`OmapModel`, the cycle-level golden model
:mod:`celosia.omap.crypto`     ChaCha20, SipHash-2-4, the CSPRNG and the keys in pure Python
:mod:`celosia.omap.memory`     host memory and HBM channel models, :class:`MemoryTiming`
:mod:`celosia.omap.rtl`        the Amaranth RTL: ``OmapUnit``, the AXI4 top ``OmapUnitAxi``
:mod:`celosia.omap.rtl_run`    :func:`run_rtl` / :func:`run_rtl_axi` (Verilator) and :func:`compare_rtl`
:mod:`celosia.omap.tb`         the cocotb testbenches those runners load (shipped with the package)
:mod:`celosia.omap.client`     :class:`Client`: get / put / delete / batch, ``verify_rtl``
:mod:`celosia.omap.generator`  :func:`generate`, behind ``celosia omap``
=============================  ===============================================================

Importing this package does not import Amaranth; :mod:`celosia.omap.rtl` does.
"""

from __future__ import annotations

from celosia.omap.client import Client, OmapStatusError
from celosia.omap.config import OmapConfig, Op, Response, Schedule, Status, default_p_cap
from celosia.omap.crypto import OmapKeys, derive_keys
from celosia.omap.generator import generate
from celosia.omap.golden import FastRNG, OmapModel, QueryRecord
from celosia.omap.memory import MemoryTiming
from celosia.omap.rtl_run import RtlRun, compare_rtl, encode_command, golden_state, run_rtl, run_rtl_axi

__all__ = [
    "Client",
    "FastRNG",
    "MemoryTiming",
    "OmapConfig",
    "OmapKeys",
    "OmapModel",
    "OmapStatusError",
    "Op",
    "QueryRecord",
    "Response",
    "RtlRun",
    "Schedule",
    "Status",
    "compare_rtl",
    "default_p_cap",
    "derive_keys",
    "encode_command",
    "generate",
    "golden_state",
    "run_rtl",
    "run_rtl_axi",
]
