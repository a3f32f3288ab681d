"""RTL of the oblivious map (Amaranth): the unit, its AXI4 top and their building blocks.

* :mod:`~celosia.omap.rtl.unit`: :class:`OmapUnit`, the unit with a page-wide host port (the
  core the tests and the benchmark simulate), and the key-port helpers;
* :mod:`~celosia.omap.rtl.axi`: :class:`OmapUnitAxi`, the deployable top with an AXI4 host
  master (what ``celosia omap`` writes), :class:`Axi4PageMaster`, :func:`check_axi_pages` and
  :func:`axi_widths`;
* :mod:`~celosia.omap.rtl.axi_bus`: the AXI4 signature and a fall-through queue;
* :mod:`~celosia.omap.rtl.index`, :mod:`~celosia.omap.rtl.blocks`, :mod:`~celosia.omap.rtl.words`:
  the HBM-side region ports (key index buckets, bin blocks, per-bin and per-page words), each
  on chip or behind its own AXI4 master;
* :mod:`~celosia.omap.rtl.crypto`: ChaCha20, SipHash-2-4 and the CSPRNG pair sampler.
"""

from __future__ import annotations

from celosia.omap.rtl.axi import Axi4PageMaster, OmapUnitAxi, axi_widths, check_axi_pages
from celosia.omap.rtl.unit import DBG, HBM_AXI_REGIONS, KEY_WORDS, OmapUnit, key_words

__all__ = ["DBG", "HBM_AXI_REGIONS", "KEY_WORDS", "Axi4PageMaster", "OmapUnit", "OmapUnitAxi", "axi_widths",
           "check_axi_pages", "key_words"]
