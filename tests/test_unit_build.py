# amaranth: UnusedElaboratable=no
"""Tests of celosia.boards.unit_build: a stream unit alone in a board top, built for real."""

from __future__ import annotations

import time

import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring

from celosia.boards.unit_build import UnitTop, build_unit
from celosia.errors import HardwareGenerationError
from celosia.hw.gelu import Gelu
from celosia.hw.primitives import ExpNeg
from celosia.ir.numerics import Fixed


def _exp16():
    return ExpNeg(Fixed(16, 10), Fixed(16, 15, signed=False))


def test_harness_counts():
    top = UnitTop(_exp16(), "ulx3s-85f")
    assert top.pll is not None and top.pll.f_out_mhz == pytest.approx(100.0)
    # inputs: x.payload (16); outputs: x.ready, y.payload (16), y.valid
    assert (top.in_bits, top.out_bits) == (16, 18)
    # LFSR 32 + feed 16 + x.valid/y.ready 2 + capture 18 + XOR tree 5 + 2 + 1
    assert top.harness_ff == 32 + 16 + 2 + 18 + 8
    gelu2 = UnitTop(Gelu(Fixed(16, 13), Fixed(16, 13), lanes=2))
    assert (gelu2.in_bits, gelu2.out_bits) == (32, 34)


def test_requires_platform_and_component():
    with pytest.raises(HardwareGenerationError, match="platform"):
        UnitTop(_exp16()).elaborate(None)
    with pytest.raises(HardwareGenerationError, match="wiring.Component"):
        UnitTop(Module())

    class NoOutputs(wiring.Component):
        def __init__(self):
            super().__init__({"a": wiring.In(4)})

        def elaborate(self, platform):
            return Module()

    with pytest.raises(HardwareGenerationError, match="no outputs"):
        UnitTop(NoOutputs())


@pytest.mark.slow
def test_build_expneg_ulx3s(tmp_path):
    t0 = time.monotonic()
    result = build_unit(_exp16(), tmp_path, name="expneg16")
    assert time.monotonic() - t0 < 180
    assert result.bitstream.exists() and result.bitstream.stat().st_size > 0
    assert result.fmax_mhz > 0
    assert result.target_mhz == 100
    res = result.resources
    assert {"lut", "ff", "dsp", "bram"} <= set(res)
    for kind in ("lut", "ff", "dsp", "bram"):
        assert set(res[kind]) >= {"used", "available"}
        assert 0 <= res[kind]["used"] <= res[kind]["available"]
    assert res["lut"]["available"] == 83640 and res["dsp"]["available"] == 156
    # Nothing optimised away: the unit's multipliers, its ROM and its pipeline registers stay.
    assert res["dsp"]["used"] >= 1
    assert res["bram"]["used"] + res["lut"]["used"] > 0
    assert res["ff"]["used"] > UnitTop(_exp16()).harness_ff + 9 * 16
