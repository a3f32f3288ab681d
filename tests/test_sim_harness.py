"""Tests of celosia.sim.harness: the generated Verilator harness driven through ctypes."""


# No `from __future__ import annotations`: Amaranth reads the signature annotations.
import random
import time
from pathlib import Path

import numpy as np
import pytest
from amaranth import Module, signed
from amaranth.back import verilog
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from celosia.errors import SimulationError, ToolchainError
from celosia.sim import harness
from celosia.sim.harness import Port, VerilatedDesign, parse_verilog_ports

# --------------------------------------------------------------------------------------
# Designs
# --------------------------------------------------------------------------------------


class Counter(wiring.Component):
    """16-bit counter with enable; ``neg`` is ``-count`` as a signed byte."""

    en: In(1)
    count: Out(16)
    neg: Out(signed(8))

    def elaborate(self, platform):
        m = Module()
        with m.If(self.en):
            m.d.sync += self.count.eq(self.count + 1)
        m.d.comb += self.neg.eq(-self.count)
        return m


class WideAdder(wiring.Component):
    """Registered 100-bit adder, a 40-bit combinational output, a signed 70-bit output."""

    a: In(100)
    b: In(100)
    sum: Out(101)
    mix: Out(40)
    neg: Out(signed(70))

    def elaborate(self, platform):
        m = Module()
        m.d.sync += self.sum.eq(self.a + self.b)
        m.d.comb += self.mix.eq(self.a[:40] ^ self.b[60:])
        m.d.comb += self.neg.eq(-self.a[:64])
        return m


class Accumulator(wiring.Component):
    """acc += x every cycle (32 bits, wraps); ``big`` flags acc >= 1000."""

    x: In(16)
    acc: Out(32)
    big: Out(1)

    def elaborate(self, platform):
        m = Module()
        m.d.sync += self.acc.eq(self.acc + self.x)
        m.d.comb += self.big.eq(self.acc >= 1000)
        return m


def _write(folder: Path, component: wiring.Component, name: str) -> Path:
    path = folder / f"{name}.v"
    path.write_text(verilog.convert(component, name=name))
    return path


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory) -> Path:
    """One build folder for the module: the Verilator runtime is compiled once."""
    return tmp_path_factory.mktemp("verilated")


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("verilog")
    return {
        "counter": _write(folder, Counter(), "counter_top"),
        "wide": _write(folder, WideAdder(), "wide_top"),
        "acc": _write(folder, Accumulator(), "acc_top"),
    }


@pytest.fixture(scope="module")
def counter(sources, build_dir):
    with VerilatedDesign.build(sources["counter"], "counter_top", build_dir) as dut:
        yield dut


@pytest.fixture(scope="module")
def wide(sources, build_dir):
    with VerilatedDesign.build([sources["wide"]], "wide_top", build_dir) as dut:
        yield dut


# --------------------------------------------------------------------------------------
# Port parsing (no toolchain)
# --------------------------------------------------------------------------------------


def test_parse_yosys_style(sources):
    ports = parse_verilog_ports(sources["counter"].read_text(), "counter_top")
    assert sorted(ports) == sorted([
        ("clk", "in", 1), ("rst", "in", 1), ("en", "in", 1), ("count", "out", 16), ("neg", "out", 8),
    ])


def test_parse_ansi_and_escaped():
    src = """
    // module decoy(input x);
    module other(input q); endmodule
    (* keep *) module m #(parameter W = 4) (
        input wire clk, input [W-1:0] a, b,   /* b inherits */
        output reg signed [7:0] q = 8'h00,
        output logic [3:0][7:0] z
    );
      always @(*) begin end
    endmodule
    module n(a, \\b.c , d); input [3:0] a; input \\b.c ; output [9:0] d;
      function f; input [3:0] x; f = x; endfunction
    endmodule
    """
    assert parse_verilog_ports(src, "m") == [
        ("clk", "in", 1), ("a", "in", None), ("b", "in", None), ("q", "out", 8), ("z", "out", 32),
    ]
    assert parse_verilog_ports(src, "n") == [("a", "in", 4), ("b.c", "in", 1), ("d", "out", 10)]
    with pytest.raises(KeyError):
        parse_verilog_ports(src, "decoy")


def test_encode_name():
    assert harness._encode_name("bus__x") == "bus___05Fx"
    assert harness._encode_name("a.b") == "a__02Eb"
    assert harness._encode_name("plain_name1") == "plain_name1"


# --------------------------------------------------------------------------------------
# Simulation
# --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_ports(counter, wide):
    assert counter.ports["count"] == Port("count", 16, "out")
    assert counter.ports["en"] == Port("en", 1, "in")
    assert set(counter.ports) == {"clk", "rst", "en", "count", "neg"}
    assert wide.ports["a"] == Port("a", 100, "in")
    assert wide.ports["sum"] == Port("sum", 101, "out")
    assert wide.ports["mix"] == Port("mix", 40, "out")


@pytest.mark.slow
def test_counter_set_get_tick_reset(counter):
    counter.reset()
    assert counter.get("count") == 0
    start = counter.cycle
    expected = 0
    rng = random.Random(1)
    for _ in range(200):
        en = rng.randrange(2)
        counter.set("en", en)
        counter.tick()
        expected = (expected + en) % 2**16
        assert counter.get("count") == expected
        assert counter.get("en") == en
    counter.set("en", 1)
    counter.tick(70_000)  # wraps around
    expected = (expected + 70_000) % 2**16
    assert counter.get("count") == expected
    assert counter.cycle == start + 200 + 70_000
    counter.reset(3)
    assert counter.get("count") == 0
    assert counter.cycle == start + 200 + 70_000 + 3


@pytest.mark.slow
def test_signed_read(counter):
    counter.reset()
    counter.set("en", 1)
    assert counter.get_signed("neg") == 0
    counter.tick(5)
    assert counter.get("neg") == 256 - 5
    assert counter.get_signed("neg") == -5
    counter.tick(130)  # count = 135, -135 mod 256 = 121
    assert counter.get_signed("neg") == 121


@pytest.mark.slow
def test_run_until(counter):
    counter.reset()
    counter.set("en", 1)
    assert counter.run_until("count", 1234, max_cycles=10_000) == 1234
    assert counter.get("count") == 1234
    assert counter.run_until("count", 1234, max_cycles=10) == 0  # already there
    counter.set("en", 0)
    before = counter.cycle
    with pytest.raises(SimulationError, match=r"port 'count'.*1300.*within 50 cycles"):
        counter.run_until("count", 1300, max_cycles=50)
    assert counter.cycle == before + 50
    counter.set("en", 1)
    # combinational output, negative target value wraps to the port width
    assert counter.run_until("neg", -1240, max_cycles=100) == 6


@pytest.mark.slow
def test_port_errors(counter):
    with pytest.raises(SimulationError, match="no port 'cnt'") as info:
        counter.get("cnt")
    assert "count" in info.value.hint and "en" in info.value.hint
    with pytest.raises(SimulationError, match="no port 'enable'"):
        counter.set("enable", 1)
    with pytest.raises(SimulationError, match="is an output"):
        counter.set("count", 3)
    with pytest.raises(SimulationError, match="is the clock"):
        counter.set("clk", 1)
    with pytest.raises(SimulationError, match="does not fit"):
        counter.set("en", 2)
    with pytest.raises(SimulationError, match="no port 'nope'"):
        counter.run_until("nope", 1, 10)


@pytest.mark.slow
def test_wide_ports(wide):
    rng = random.Random(7)
    mask64 = 2**64 - 1
    values = [(0, 0), (2**100 - 1, 2**100 - 1), (2**100 - 1, 1), (1 << 99, 1 << 99)]
    values += [(rng.getrandbits(100), rng.getrandbits(100)) for _ in range(50)]
    for a, b in values:
        wide.set("a", a)
        wide.set("b", b)
        assert wide.get("a") == a and wide.get("b") == b
        assert wide.get("mix") == (a ^ (b >> 60)) & (2**40 - 1)  # 40 bits, combinational
        assert wide.get_signed("neg") == -(a & mask64)
        wide.tick()
        assert wide.get("sum") == a + b
    wide.set("a", -1)  # modulo 2**100
    assert wide.get("a") == 2**100 - 1
    wide.set("a", -(2**99))
    assert wide.get("a") == 2**99
    with pytest.raises(SimulationError, match="does not fit"):
        wide.set("b", 2**100)


@pytest.mark.slow
def test_run_vectors_matches_calls(sources, build_dir):
    rng = np.random.default_rng(3)
    xs = rng.integers(0, 2**16, size=500)
    with VerilatedDesign.build(sources["acc"], "acc_top", build_dir) as dut:
        dut.reset()
        out = dut.run_vectors({"x": xs}, ["acc", "big"])
        assert out["acc"].dtype == np.uint64 and out["acc"].shape == (500,)
        expected = np.concatenate([[0], np.cumsum(xs)[:-1]]) % 2**32
        np.testing.assert_array_equal(out["acc"], expected)
        np.testing.assert_array_equal(out["big"], (expected >= 1000).astype(np.uint64))
        assert dut.get("acc") == int(np.sum(xs)) % 2**32
        # a scalar holds its value; negative stimulus wraps to the port width
        dut.reset()
        out = dut.run_vectors({"x": -1}, ["acc"], n_cycles=3)
        np.testing.assert_array_equal(out["acc"], [0, 0xFFFF, 0x1FFFE])


@pytest.mark.slow
def test_independent_instances(sources, build_dir, counter):
    # a second instance of the same library, and a different design, side by side
    with VerilatedDesign.build(sources["counter"], "counter_top", build_dir) as other, \
            VerilatedDesign.build(sources["acc"], "acc_top", build_dir) as acc:
        assert other.cached and other.library == counter.library
        counter.reset()
        other.reset()
        acc.reset()
        counter.set("en", 1)
        other.set("en", 0)
        acc.set("x", 3)
        counter.tick(10)
        other.tick(4)
        acc.tick(5)
        assert counter.get("count") == 10
        assert other.get("count") == 0
        assert acc.get("acc") == 15


@pytest.mark.slow
def test_build_cache(sources, build_dir, counter):
    library = counter.library
    mtime = library.stat().st_mtime_ns
    t0 = time.perf_counter()
    with VerilatedDesign.build(sources["counter"], "counter_top", build_dir) as again:
        elapsed = time.perf_counter() - t0
        assert again.cached and again.build_seconds == 0.0
        assert again.library == library
    assert library.stat().st_mtime_ns == mtime
    assert elapsed < 2.0, f"a cached build took {elapsed:.2f} s"
    assert not list(build_dir.glob("obj_libcelosia_counter_top_*")), "object folders are removed"
    libs = {p.name for p in build_dir.glob("libcelosia_counter_top_*.so")}
    assert library.name in libs


@pytest.mark.slow
def test_closed_design(sources, build_dir):
    dut = VerilatedDesign.build(sources["counter"], "counter_top", build_dir)
    dut.close()
    dut.close()  # idempotent
    with pytest.raises(SimulationError, match="closed"):
        dut.tick()
    with pytest.raises(SimulationError, match="closed"):
        dut.get("count")


@pytest.mark.slow
def test_counter_speed(counter):
    """Not a timed assertion: prints the cycles per second of tick() in C++."""
    counter.reset()
    counter.set("en", 1)
    t0 = time.perf_counter()
    counter.tick(1_000_000)
    dt = time.perf_counter() - t0
    assert counter.get("count") == 1_000_000 % 2**16
    print(f"\ncounter: {1_000_000 / dt / 1e6:.1f} M cycles/s with tick(1_000_000)")


@pytest.mark.slow
def test_trace(sources, build_dir, tmp_path):
    vcd = tmp_path / "counter.vcd"
    with VerilatedDesign.build(sources["counter"], "counter_top", build_dir, trace=True, trace_path=vcd) as dut:
        assert dut.trace_path == vcd
        dut.reset()
        dut.set("en", 1)
        dut.tick(5)
        assert dut.get("count") == 5
    text = vcd.read_text()
    assert "$enddefinitions" in text and " count " in text
    assert "#55" in text  # cycle 5 rising edge at 10 * 5 + 5


@pytest.mark.slow
def test_combinational_ansi_design_and_runtime_error(build_dir, tmp_path):
    src = tmp_path / "loop_top.v"
    src.write_text(
        "module loop_top(input wire [7:0] a, input wire go, output wire [7:0] y, output wire z);\n"
        "  wire b;\n"
        "  assign b = go ? ~b : 1'b0;  // oscillates when go = 1\n"
        "  assign y = ~a;\n"
        "  assign z = b;\n"
        "endmodule\n")
    with VerilatedDesign.build(src, "loop_top", build_dir, clock=None, reset=None) as dut:
        assert dut.ports["y"] == Port("y", 8, "out")
        dut.set("a", 0x0F)
        assert dut.get("y") == 0xF0  # settled lazily, no eval() needed
        dut.eval()
        with pytest.raises(SimulationError, match="without a clock"):
            dut.tick()
        with pytest.raises(SimulationError, match="without a reset"):
            dut.reset()
        dut.set("go", 1)
        with pytest.raises(SimulationError, match="did not converge"):
            dut.eval()  # a Verilator fatal error is reported, not exit()


# --------------------------------------------------------------------------------------
# Toolchain errors
# --------------------------------------------------------------------------------------


def test_missing_module_and_ports(sources, tmp_path):
    with pytest.raises(ToolchainError, match="'nope' is not defined") as info:
        VerilatedDesign.build(sources["counter"], "nope", tmp_path)
    assert "counter_top" in info.value.hint
    with pytest.raises(ToolchainError, match="no clock port 'clock'"):
        VerilatedDesign.build(sources["counter"], "counter_top", tmp_path, clock="clock")
    with pytest.raises(ToolchainError, match="no reset port 'reset'"):
        VerilatedDesign.build(sources["counter"], "counter_top", tmp_path, reset="reset")
    same = tmp_path / "count.v"
    same.write_text("module count(clk, count); input clk; output [3:0] count; assign count = 0; endmodule\n")
    with pytest.raises(ToolchainError, match="same name as the module"):
        VerilatedDesign.build(same, "count", tmp_path, reset=None)


@pytest.mark.slow
def test_verilator_error(tmp_path):
    bad = tmp_path / "bad.v"
    bad.write_text("module bad_top(input clk, input [3:0] a, output [3:0] y);\n"
                   "  assign y = a + ;\nendmodule\n")
    with pytest.raises(ToolchainError, match=r"Verilator failed on module 'bad_top'") as info:
        VerilatedDesign.build(bad, "bad_top", tmp_path, reset=None)
    assert "bad.v:2" in str(info.value) and info.value.hint
    assert not list(tmp_path.glob("*.so"))


@pytest.mark.slow
def test_compiler_error(sources, build_dir, monkeypatch):
    monkeypatch.setattr(harness, "_CXX_STD", "-std=c++celosia")
    with pytest.raises(ToolchainError, match=r"C\+\+ compiler failed") as info:
        VerilatedDesign.build(sources["acc"], "acc_top", build_dir)
    assert "c++celosia" in str(info.value)
