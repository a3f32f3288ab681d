"""``celosia omap`` and :func:`celosia.omap.generate`: every bad option refused before any work.

A refused option exits 2 with one message naming it and a hint that leads somewhere (a value
that is then accepted), and leaves nothing behind: no output folder, no ``.partial`` staging
folder, no self-check run. (The configurations the RTL cannot build, e.g. pages straddling
4 KiB, still get a report without Verilog: tests/test_omap_golden.py.)
"""

from __future__ import annotations

import re

import pytest
from celosia.cli import main
from celosia.omap import OmapConfig, generate
from celosia.omap.rtl import axi_widths

from celosia.errors import CelosiaError, HardwareGenerationError, OutputExistsError


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if the golden-model self-check (the first piece of work) starts."""
    import celosia.omap.generator as gen

    def refuse(*_a, **_k):
        raise AssertionError("the self-check ran: the options were not validated first")

    monkeypatch.setattr(gen, "_self_check", refuse)


def _err(capsys) -> str:
    return " ".join(capsys.readouterr().err.split())


def _nothing_written(tmp_path):
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("width", ["7", "0", "-512", "96", "2048"])
def test_axi_width_not_a_legal_axi4_width_is_refused(tmp_path, capsys, no_work, width):
    rc = main(["omap", "--capacity", "1024", "--value-bytes", "8", "--axi-width", width, "-o", str(tmp_path / "u")])
    err = _err(capsys)
    assert rc == 2
    assert f"--axi-width {width}" in err and "power of two" in err
    assert "512, 1024 bits" in err and "use --axi-width 512" in err  # the widths that work here
    assert "internal error" not in err
    _nothing_written(tmp_path)


def test_axi_width_narrower_than_the_host_link_is_refused(tmp_path, capsys, no_work):
    rc = main(["omap", "--capacity", "1024", "--value-bytes", "8", "--axi-width", "64", "-o", str(tmp_path / "u")])
    err = _err(capsys)
    assert rc == 2
    assert "--axi-width 64" in err and "64 B/cycle host link" in err and "use --axi-width 512" in err
    _nothing_written(tmp_path)


def test_allowed_widths_follow_the_page_shape():
    assert axi_widths(OmapConfig(n=1024, value_bytes=8)) == [512, 1024]  # 256-byte pages
    # 64-byte pages (N = 32, V = 2): one 512-bit beat, half a 1024-bit one
    assert axi_widths(OmapConfig(n=32, c=4, alpha=0.25, p_cap=6, value_bytes=2, key_bits=16)) == [512]


def test_axi_width_refused_by_the_api_too(tmp_path, no_work):
    with pytest.raises(HardwareGenerationError, match=r"axi_width.*power of two") as e:
        generate(1024, 8, tmp_path / "u", axi_width=7)
    assert "512" in e.value.hint
    with pytest.raises(HardwareGenerationError, match=r"not a whole number of 128-byte"):
        generate(32, 2, tmp_path / "u", c=4, alpha=0.25, p_cap=6, key_bits=16, axi_width=1024)
    _nothing_written(tmp_path)


@pytest.mark.parametrize("capacity, hint", [("7", "N=16"), ("8", "N=16"), ("0", "N=16"), ("-3", "N=16"),
                                             ("1001", "N=1000 or N=1008"), ("20", "N=16 or N=24")])
def test_capacity_hint_suggests_a_capacity_that_is_accepted(tmp_path, capsys, no_work, capacity, hint):
    rc = main(["omap", "--capacity", capacity, "--value-bytes", "8", "-o", str(tmp_path / "u")])
    err = _err(capsys)
    assert rc == 2 and f"N={capacity}" in err
    assert f"hint: use {hint}" in err and "N=0" not in err.replace(f"N={capacity}", "")
    for n in re.findall(r"N=(\d+)", err.split("hint:")[1]):
        OmapConfig(n=int(n), value_bytes=8)  # every suggestion is a valid capacity
    _nothing_written(tmp_path)


@pytest.mark.parametrize("c", [2, 3, 4, 8, 16])
def test_every_capacity_hint_is_valid(c):
    for n in range(-2, 5 * c):
        try:
            OmapConfig(n=n, c=c, value_bytes=1, p_cap=c + 1)
        except HardwareGenerationError as exc:
            suggested = [int(x) for x in re.findall(r"N=(-?\d+)", exc.hint)]
            assert suggested, exc.hint
            for s in suggested:
                assert s >= 2 * c and s % c == 0
                OmapConfig(n=s, c=c, value_bytes=1, p_cap=c + 1)


@pytest.mark.parametrize("argv, words", [
    (["--value-bytes", "0"], ["value_bytes=0", "positive"]),
    (["--value-bytes", "8", "--alpha", "1.5"], ["alpha=1.5", "[0, 1)"]),
    (["--value-bytes", "8", "--alpha", "-0.1"], ["alpha=-0.1"]),
])
def test_other_bad_options_exit_2_before_any_work(tmp_path, capsys, no_work, argv, words):
    rc = main(["omap", "--capacity", "1024", *argv, "-o", str(tmp_path / "u")])
    err = _err(capsys)
    assert rc == 2 and all(w in err for w in words) and "hint:" in err
    _nothing_written(tmp_path)


def test_api_parameters_checked_before_any_work(tmp_path, no_work):
    with pytest.raises(HardwareGenerationError, match="check_queries=0"):
        generate(1024, 8, tmp_path / "u", check_queries=0)
    with pytest.raises(HardwareGenerationError, match=r"unknown oblivious-map parameter\(s\) \['pcap'\]") as e:
        generate(1024, 8, tmp_path / "u", pcap=13)
    assert "p_cap" in e.value.hint
    _nothing_written(tmp_path)


def test_output_that_is_a_file_is_refused_even_with_force(tmp_path, no_work):
    f = tmp_path / "taken"
    f.write_text("keep me")
    for force in (False, True):
        with pytest.raises(OutputExistsError, match="is a file"):
            generate(1024, 8, f, force=force)
    assert f.read_text() == "keep me" and sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_errors_are_celosia_errors():
    assert issubclass(HardwareGenerationError, CelosiaError) and issubclass(OutputExistsError, CelosiaError)
