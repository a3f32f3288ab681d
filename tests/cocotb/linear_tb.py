"""cocotb testbench of :class:`celosia.hw.linear.LinearArray` (run through ``run_cocotb``).

Parameters come as JSON in ``CELOSIA_TB_PARAMS``: ``rows``, ``cols``, ``act_bits``,
``weight_bits``, ``acc_bits``, ``latency``, ``fifo_depth``, ``seed`` and optionally ``jobs``
(random jobs in the backpressure test).

Every ``y`` beat is compared bit for bit with :func:`celosia.ir.numerics.linear_int`; there is
no tolerance.
"""

from __future__ import annotations

import random

import cocotb
import numpy as np
from amaranth.hdl import Shape
from amaranth.lib import data
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge

from celosia.hw.linear import x_beat_layout, w_tile_layout, y_beat_layout
from celosia.ir.gelu import gelu_int
from celosia.ir.numerics import Fixed, Rounding, linear_int, shift_round
from celosia.sim.cocotb_runner import tb_params

ROUNDINGS = {0: Rounding.FLOOR, 1: Rounding.HALF_UP, 2: Rounding.HALF_EVEN}


# --------------------------------------------------------------------------- packing helpers


def _width(shape) -> int:
    return Shape.cast(shape).width


def pack(layout, value) -> int:
    """Pack a nested dict / list / int ``value`` into the bits of ``layout`` (non-negative int)."""
    if isinstance(layout, data.StructLayout):
        out = 0
        for name, fld in layout:
            out |= pack(fld.shape, value[name]) << fld.offset
        return out
    if isinstance(layout, data.ArrayLayout):
        stride = _width(layout.elem_shape)
        assert len(value) == layout.length, (len(value), layout.length)
        out = 0
        for i, v in enumerate(value):
            out |= pack(layout.elem_shape, v) << (i * stride)
        return out
    shape = Shape.cast(layout)
    v = int(value)
    lo = -(1 << (shape.width - 1)) if shape.signed else 0
    hi = (1 << (shape.width - 1)) - 1 if shape.signed else (1 << shape.width) - 1
    assert lo <= v <= hi, f"value {v} does not fit {shape}"
    return v & ((1 << shape.width) - 1)


def unpack_signed_array(bits: int, width: int, length: int) -> list[int]:
    out = []
    for i in range(length):
        v = (bits >> (i * width)) & ((1 << width) - 1)
        if v >> (width - 1):
            v -= 1 << width
        out.append(v)
    return out


# --------------------------------------------------------------------------- stimulus


class Params:
    def __init__(self, p: dict):
        self.R = p["rows"]
        self.C = p["cols"]
        self.A = p["act_bits"]
        self.W = p["weight_bits"]
        self.P = p["acc_bits"]
        self.latency = p["latency"]
        self.fifo_depth = p["fifo_depth"]
        self.seed = p.get("seed", 1)
        self.jobs = p.get("jobs", 20)
        self.gelu_frac = p.get("gelu_frac")  # the array's GELU epilogue format, if generated
        self.x_layout = x_beat_layout(self.R, self.C, self.A, self.P)
        self.w_layout = w_tile_layout(self.R, self.C, self.W)
        self.y_layout = y_beat_layout(self.C, self.A)


def _rand_codes(rng: np.random.Generator, bits: int, shape, mag_bits: int | None = None,
                p_extreme: float = 0.1) -> np.ndarray:
    """Signed ``bits``-bit codes: uniform within ``mag_bits`` bits, with a share of extremes."""
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if mag_bits is None or mag_bits >= bits:
        v = rng.integers(lo, hi + 1, size=shape)
    else:
        m = 1 << mag_bits
        v = rng.integers(-m, m, size=shape)
    ext = rng.random(shape) < p_extreme
    v = np.where(ext, rng.choice([lo, hi], size=shape), v)
    return v.astype(np.int64)


class Job:
    """One random job: shapes, cfg, data, the beats to send and the expected outputs."""

    def __init__(self, prm: Params, rng: np.random.Generator, M: int, KT: int, NT: int,
                 small: bool = False, rounding: int | None = None):
        R, C, A, W, P = prm.R, prm.C, prm.A, prm.W, prm.P
        K, N = KT * R, NT * C
        self.M, self.KT, self.NT = M, KT, NT
        if small:  # small magnitudes: many rounding ties, few saturations
            x = _rand_codes(rng, A, (M, K), mag_bits=int(rng.integers(1, 4)), p_extreme=0.0)
            w = _rand_codes(rng, W, (K, N), mag_bits=int(rng.integers(1, 3)), p_extreme=0.0)
            bias = rng.integers(-64, 64, size=N).astype(np.int64)
        else:
            x = _rand_codes(rng, A, (M, K), mag_bits=int(rng.integers(1, A + 1)),
                            p_extreme=float(rng.choice([0.0, 0.1, 0.5])))
            w = _rand_codes(rng, W, (K, N), mag_bits=int(rng.integers(1, W + 1)),
                            p_extreme=float(rng.choice([0.0, 0.1, 0.5])))
            bias_bits = int(rng.integers(0, P - 3))  # |bias| <= 2**(P-4)
            bias = rng.integers(-(1 << bias_bits), (1 << bias_bits), size=N).astype(np.int64)
            if rng.random() < 0.2:
                bias[rng.integers(0, N)] = rng.choice([-(1 << (P - 4)), (1 << (P - 4)) - 1])
        residual = bool(rng.random() < 0.5)
        res = _rand_codes(rng, A, (M, N), mag_bits=int(rng.integers(1, A + 1)), p_extreme=0.1)
        res_shift = int(rng.integers(0, P - A - 1))  # |res << res_shift| <= 2**(P-3)
        if small and rng.random() < 0.7:
            res_shift = int(rng.integers(0, 3))
        if not residual and rng.random() < 0.5:
            res_shift = int(rng.integers(0, 64))  # ignored: any value must be harmless

        acc = x @ w + bias + ((res << res_shift) if residual else 0)
        assert np.all(np.abs(acc) < (1 << (P - 1))), "testbench bug: accumulator overflow"

        out_bits = A if (small and rng.random() < 0.7) else int(rng.integers(2, A + 1))
        mag = int(np.max(np.abs(acc))).bit_length()
        u = rng.random()
        if small:
            shift = int(rng.integers(0, 4))
        elif u < 0.1:
            shift = int(rng.integers(0, 64))  # includes shifts beyond the accumulator width
        elif u < 0.15:
            shift = int(rng.choice([0, 63, P - 1, P, P + 1]))
        else:
            shift = int(np.clip(mag - out_bits + int(rng.integers(-3, 4)), 0, 63))
        if rounding is None:
            rounding = int(rng.integers(0, 3))
        relu = bool(rng.random() < 0.4)

        gelu = prm.gelu_frac is not None and bool(rng.random() < 0.5)
        self.cfg = dict(shift=shift, res_shift=res_shift, rounding=rounding, relu=int(relu),
                        residual=int(residual), out_bits=out_bits, gelu=int(gelu))
        y = linear_int(x, w, bias, Fixed(out_bits, 0), shift, ROUNDINGS[rounding], relu,
                       res if residual else None, res_shift)
        if gelu:  # the epilogue's GELU works in Fixed(act_bits, gelu_frac)
            g = Fixed(A, prm.gelu_frac)
            y = gelu_int(y, g, g)

        # Coverage statistics of the epilogue corner cases.
        rounded = shift_round(acc, shift, ROUNDINGS[rounding])
        lo, hi = -(1 << (out_bits - 1)), (1 << (out_bits - 1)) - 1
        ties = 0
        if 0 < shift <= 62:
            rem = acc - ((acc >> shift) << shift)
            ties = int(np.sum(rem == (1 << (shift - 1))))
        self.stats = {
            "ties": ties,
            "sat_hi": int(np.sum(rounded > hi)),
            "sat_lo": int(np.sum(rounded < lo)),
            "relu_clamp": int(np.sum(relu & (rounded < 0))),
        }

        self.beats: list[tuple[int, int]] = []  # (x payload bits, w payload bits)
        self.expected: list[list[int]] = []
        for nt in range(NT):
            ncols = slice(nt * C, (nt + 1) * C)
            for m in range(M):
                for kt in range(KT):
                    first, last = kt == 0, kt == KT - 1
                    xb = {
                        "x": x[m, kt * R:(kt + 1) * R].tolist(),
                        # bias / res are don't-care unless first / (last & residual): send junk
                        "bias": bias[ncols].tolist() if first
                        else _rand_codes(rng, P, C).tolist(),
                        "res": res[m, ncols].tolist() if (last and residual)
                        else _rand_codes(rng, A, C).tolist(),
                        "first": int(first),
                        "last": int(last),
                    }
                    wt = w[kt * R:(kt + 1) * R, ncols].reshape(-1).tolist()  # r * C + c
                    self.beats.append((pack(prm.x_layout, xb), pack(prm.w_layout, wt)))
                self.expected.append(y[m, ncols].tolist())

    def cfg_bits(self) -> int:
        from celosia.hw.linear import LinearConfig

        return pack(LinearConfig, self.cfg)


# --------------------------------------------------------------------------- the driver


class Bench:
    def __init__(self, dut, prm: Params, rnd: random.Random):
        self.dut = dut
        self.prm = prm
        self.rnd = rnd
        self.cycle = 0

    async def reset(self):
        dut = self.dut
        dut.x__valid.value = 0
        dut.w__valid.value = 0
        dut.y__ready.value = 0
        dut.rst.value = 1
        for _ in range(3):
            await RisingEdge(dut.clk)
        dut.rst.value = 0
        await RisingEdge(dut.clk)

    async def run(self, jobs: list[Job], p_x_gap: float, p_w_gap: float, ready_fn,
                  max_cycles: int, trace: dict | None = None):
        """Send every beat of ``jobs`` and check every output beat. Returns cycles used."""
        dut, prm = self.dut, self.prm
        beats, cfgs, expected = [], [], []
        for j in jobs:
            beats += j.beats
            cfgs += [j.cfg_bits()] * len(j.beats)
            expected += j.expected
        x_width = len(dut.x__payload)
        w_width = len(dut.w__payload)
        i = 0           # next beat to present
        got = 0         # outputs received
        xv = wv = False
        fired = False
        outstanding = 0  # accepted last beats not yet out
        last_mask = [bool((b[0] >> prm.x_layout["last"].offset) & 1) for b in beats]
        cyc = 0
        while got < len(expected) or i < len(beats):
            await RisingEdge(dut.clk)
            cyc += 1
            if cyc > max_cycles:
                raise AssertionError(
                    f"timeout after {max_cycles} cycles: sent {i}/{len(beats)} beats, "
                    f"received {got}/{len(expected)} outputs"
                )
            if fired:
                i += 1
                xv = wv = False
            if i < len(beats):
                if not xv:
                    xv = self.rnd.random() >= p_x_gap
                if not wv:
                    wv = self.rnd.random() >= p_w_gap
                xbits, wbits = beats[i]
                dut.cfg.value = cfgs[i]
            else:
                xv = wv = False
            if not xv:  # junk payload while not valid
                xbits = self.rnd.getrandbits(x_width)
            if not wv:
                wbits = self.rnd.getrandbits(w_width)
            dut.x__valid.value = int(xv)
            dut.w__valid.value = int(wv)
            dut.x__payload.value = xbits
            dut.w__payload.value = wbits
            ready = bool(ready_fn(cyc))
            dut.y__ready.value = int(ready)

            await ReadOnly()
            x_ready = bool(dut.x__ready.value)
            w_ready = bool(dut.w__ready.value)
            x_fire = xv and x_ready
            w_fire = wv and w_ready
            assert x_fire == w_fire, f"cycle {cyc}: x and w not consumed together ({x_fire}, {w_fire})"
            fired = x_fire
            if trace is not None:
                trace.setdefault("x_stall", 0)
                if xv and wv and not x_ready:
                    trace["x_stall"] += 1
                if fired and trace.get("first_fire") is None:
                    trace["first_fire"] = cyc
                if fired and last_mask[i] and trace.get("first_last_fire") is None:
                    trace["first_last_fire"] = cyc
            if fired and last_mask[i]:
                outstanding += 1
            if bool(dut.y__valid.value):
                if trace is not None and trace.get("first_y_valid") is None:
                    trace["first_y_valid"] = cyc
                if ready:
                    bits = dut.y__payload.value.to_unsigned()
                    y = unpack_signed_array(bits, prm.A, prm.C)
                    assert got < len(expected), f"cycle {cyc}: unexpected extra output {y}"
                    exp = expected[got]
                    assert y == exp, (
                        f"cycle {cyc}: output beat {got} mismatch: got {y}, expected {exp}"
                    )
                    got += 1
                    outstanding -= 1
                    if trace is not None:
                        trace["last_y"] = cyc
            assert outstanding <= prm.fifo_depth, (
                f"cycle {cyc}: {outstanding} rows in flight exceed the FIFO depth {prm.fifo_depth}"
            )
        # Drain: nothing more may come out.
        await RisingEdge(dut.clk)
        dut.x__valid.value = 0
        dut.w__valid.value = 0
        dut.y__ready.value = 1
        for _ in range(prm.latency + 4):
            await ReadOnly()
            assert not bool(dut.y__valid.value), "extra output beat after the last expected one"
            await RisingEdge(dut.clk)
        return cyc


def _setup(dut):
    prm = Params(tb_params())
    Clock(dut.clk, 10, unit="ns").start()
    return prm


@cocotb.test()
async def random_backpressure(dut):
    """Random shapes/cfg/values, random valid gaps on x and w, random and bursty y backpressure."""
    prm = _setup(dut)
    rng = np.random.default_rng(prm.seed)
    rnd = random.Random(prm.seed)
    bench = Bench(dut, prm, rnd)
    await bench.reset()

    totals = {"ties": {0: 0, 1: 0, 2: 0}, "sat_hi": 0, "sat_lo": 0, "relu_clamp": 0}
    n_jobs = prm.jobs
    jobs = []
    for k in range(n_jobs):
        job = Job(prm, rng, M=int(rng.integers(1, 6)), KT=int(rng.integers(1, 5)),
                  NT=int(rng.integers(1, 4)), small=(k % 4 == 3),
                  rounding=(k // 4) % 3 if k % 4 == 3 else None)
        jobs.append(job)
        totals["ties"][job.cfg["rounding"]] += job.stats["ties"]
        for key in ("sat_hi", "sat_lo", "relu_clamp"):
            totals[key] += job.stats[key]

    # Jobs go in groups with different traffic; cfg changes between jobs without draining.
    modes = [
        (0.3, 0.3, lambda c: rnd.random() < 0.7),
        (0.0, 0.5, lambda c: rnd.random() < 0.3),
        (0.5, 0.0, lambda c: True),
        (0.1, 0.1, lambda c: (c // 37) % 2 == 0),  # bursty: long stalls fill the FIFO
        (0.0, 0.0, lambda c: rnd.random() < 0.9),
    ]
    groups = [jobs[g::len(modes)] for g in range(len(modes))]
    cycles = 0
    for (pxg, pwg, ready_fn), group in zip(modes, groups):
        if not group:
            continue
        n_beats = sum(len(j.beats) for j in group)
        cycles += await bench.run(group, pxg, pwg, ready_fn, max_cycles=40 * n_beats + 500)
    dut._log.info(
        "checked %d jobs, %d output beats in %d cycles; coverage %s",
        len(jobs), sum(len(j.expected) for j in jobs), cycles, totals,
    )
    assert totals["ties"][1] > 0 and totals["ties"][2] > 0, f"no rounding ties exercised: {totals}"
    assert totals["sat_hi"] > 0 and totals["sat_lo"] > 0, f"no saturation exercised: {totals}"
    assert totals["relu_clamp"] > 0, f"no ReLU clamping exercised: {totals}"


@cocotb.test()
async def full_throughput(dut):
    """No gaps and y.ready held high: one beat per cycle, and the documented latency."""
    prm = _setup(dut)
    rng = np.random.default_rng(prm.seed + 1000)
    rnd = random.Random(prm.seed + 1000)
    bench = Bench(dut, prm, rnd)
    await bench.reset()
    # KT = 1 (every beat finishes a row: the worst case for the credit loop), then KT = 3.
    jobs = [Job(prm, rng, M=12, KT=1, NT=3), Job(prm, rng, M=5, KT=3, NT=2)]
    n_beats = sum(len(j.beats) for j in jobs)
    trace: dict = {}
    await bench.run(jobs, 0.0, 0.0, lambda c: True, max_cycles=n_beats + 4 * prm.latency + 50,
                    trace=trace)
    assert trace["x_stall"] == 0, f"the array stalled its input {trace['x_stall']} times"
    lat = trace["first_y_valid"] - trace["first_last_fire"]
    assert lat == prm.latency, f"measured latency {lat} != documented latency {prm.latency}"
    span = trace["last_y"] - trace["first_fire"] + 1
    # Last beat accepted at first_fire + n_beats - 1, its row out `latency` cycles later.
    assert span == n_beats + prm.latency, (
        f"{n_beats} beats took {span} cycles (ideal {n_beats + prm.latency})"
    )
    dut._log.info("throughput: %d beats in %d cycles incl. latency %d", n_beats, span, lat)
