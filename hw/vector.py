"""The vector unit: elementwise sums, copies and means over rows, on scratchpad tensors.

It runs three instructions (docs/isa.md), each on ``rows x tiles`` words addressed with a base and
a row stride per operand (:mod:`celosia.hw.spad`):

``ADD``   ``Y = sat(shift_round((X << x_shift) + (R << res_shift), shift, rounding))`` per lane,
          one word per cycle through two read ports;
``COPY``  the same without ``R``: format changes, slices, concatenations and strided moves;
``MEAN``  ``Y[t] = sat(shift_round(Σ_r X[r, t] · c, shift, rounding))`` for each tile ``t``, with
          ``c`` the instruction's constant from the unit's parameter ROM (``p_addr``); one
          multiplier serves the lanes one after the other.

Lanes of ``Y``'s last tile beyond ``y_lanes`` (when it is not 0) are written as zero, so a copy of
a column slice keeps the layout's rule that lanes beyond a tensor's width hold zero. Timing is
fixed by the instruction (:meth:`VectorUnit.cycles`): the scratchpad never stalls the unit.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from celosia.errors import HardwareGenerationError
from celosia.hw.requant import REQUANT_LATENCY, Requantizer
from celosia.hw.spad import JobSignature, ReadPortSignature, RowTileWalker, WritePortSignature
from celosia.ir.binding import VECTOR_MAX_SHIFT, VECTOR_MEAN_OVERHEAD, VECTOR_STREAM_LATENCY, vector_cycles
from celosia.ir.program import Opcode

__all__ = ["VectorUnit", "MAX_ADD_SHIFT", "MEAN_CONST_BITS"]

#: Largest ``x_shift`` / ``res_shift`` of an ADD or COPY (operands are aligned, then requantized).
MAX_ADD_SHIFT = VECTOR_MAX_SHIFT
#: Width of a MEAN constant ``c`` (unsigned; one DSP operand).
MEAN_CONST_BITS = 17

# ADD/COPY: read (1) -> sum register (1) -> requantizer -> write
_STREAM_LATENCY = VECTOR_STREAM_LATENCY
assert _STREAM_LATENCY == 2 + REQUANT_LATENCY
# MEAN, per tile: lanes through the multiplier (2 registers) and the requantizer
_MUL_LATENCY = 2
assert VECTOR_MEAN_OVERHEAD == 4 + _MUL_LATENCY + REQUANT_LATENCY


class VectorUnit(wiring.Component):
    """Elementwise ADD / COPY and MEAN over rows on the scratchpad.

    Parameters
    ----------
    lanes, act_bits : int
        Scratchpad word: ``lanes`` signed ``act_bits``-bit codes.
    addr_bits : int
        Scratchpad address width.
    ins_layout : Layout
        The controller's decoded instruction layout (:data:`celosia.hw.accelerator.InstructionLayout`).
    mean_consts : list of int
        The parameter ROM: the MEAN constants, indexed by ``p_addr``.
    max_rows : int
        Most rows a MEAN sums (sizes its accumulators).
    """

    def __init__(self, lanes: int, act_bits: int, addr_bits: int, ins_layout, mean_consts=(), max_rows: int = 1):
        self.lanes, self.act_bits, self.addr_bits = lanes, act_bits, addr_bits
        self.mean_consts = [int(c) for c in mean_consts]
        for c in self.mean_consts:
            if not 0 < c < 1 << MEAN_CONST_BITS:
                raise HardwareGenerationError(f"vector unit: MEAN constant {c} does not fit {MEAN_CONST_BITS} bits",
                                              hint="celosia.ir.reduce.mean_constant gives constants that fit")
        self.acc_bits = act_bits + max(1, max_rows).bit_length() + 1
        word = lanes * act_bits
        super().__init__({
            "job": In(JobSignature(ins_layout)),
            "rd0": Out(ReadPortSignature(addr_bits, word)),
            "rd1": Out(ReadPortSignature(addr_bits, word)),
            "wr": Out(WritePortSignature(addr_bits, word)),
        })

    # ---- timing (what the performance model adds up) --------------------------------------------
    def cycles(self, ins) -> int:
        """Cycles ``busy`` stays high for instruction ``ins`` (start pulse excluded)."""
        return vector_cycles(ins, self.lanes)

    instruction_cycles = staticmethod(vector_cycles)

    def elaborate(self, platform):
        m = Module()
        L, A = self.lanes, self.act_bits
        lanes_of = data.ArrayLayout(signed(A), L)
        job = self.job
        ins = Signal.like(job.ins)
        busy = Signal()
        m.d.comb += job.busy.eq(busy)
        with m.If(job.start):
            m.d.sync += [ins.eq(job.ins), busy.eq(1)]
        is_mean = ins.opcode == Opcode.MEAN
        is_add = ins.opcode == Opcode.ADD

        # ---- ADD / COPY: stream rows x tiles ------------------------------------------------------
        m.submodules.walk = walk = RowTileWalker(3, self.addr_bits)
        m.d.comb += [
            walk.start.eq(job.start & (job.ins.opcode != Opcode.MEAN)),
            walk.rows.eq(job.ins.m), walk.tiles.eq(job.ins.nt),
            walk.base0.eq(job.ins.x_addr), walk.stride0.eq(job.ins.x_stride),
            walk.base1.eq(job.ins.r_addr), walk.stride1.eq(job.ins.r_stride),
            walk.base2.eq(job.ins.y_addr), walk.stride2.eq(job.ins.y_stride),
            walk.step.eq(1),
        ]
        # a valid/address shift register follows each read to its write
        valid = [walk.running]
        waddr = [walk.addr(2)]
        wlast = [walk.last_t]
        for i in range(_STREAM_LATENCY):
            v = Signal(name=f"s_valid{i + 1}")
            a = Signal(self.addr_bits, name=f"s_addr{i + 1}")
            lt = Signal(name=f"s_last_t{i + 1}")
            m.d.sync += [v.eq(valid[-1]), a.eq(waddr[-1]), lt.eq(wlast[-1])]
            valid.append(v)
            waddr.append(a)
            wlast.append(lt)
        x_word = data.View(lanes_of, self.rd0.data)
        r_word = data.View(lanes_of, self.rd1.data)
        sum_bits = A + MAX_ADD_SHIFT + 1
        quant = []
        for lane in range(L):
            s = Signal(signed(sum_bits), name=f"sum{lane}")
            xs = Array(x_word[lane] << k for k in range(MAX_ADD_SHIFT + 1))[ins.x_shift]
            rs = Array(r_word[lane] << k for k in range(MAX_ADD_SHIFT + 1))[ins.res_shift]
            m.d.sync += s.eq(xs + Mux(is_add, rs, 0))
            rq = Requantizer(sum_bits, A)
            m.submodules[f"rq{lane}"] = rq
            m.d.comb += [rq.v.eq(s), rq.shift.eq(ins.shift), rq.rounding.eq(ins.rounding), rq.out_bits.eq(ins.out_bits)]
            quant.append(rq.y)

        # ---- MEAN: per tile, sum the rows, then one lane per cycle through the multiplier ---------
        consts = self.mean_consts or [1]
        m.submodules.crom = crom = Memory(shape=MEAN_CONST_BITS, depth=max(len(consts), 2), init=consts)
        c_rd = crom.read_port()
        m.d.comb += c_rd.addr.eq(ins.p_addr)
        t = Signal(16)
        r = Signal(16)
        acc = [Signal(signed(self.acc_bits), name=f"acc{lane}") for lane in range(L)]
        acc_first = Signal()  # the data arriving now is row 0 of a tile
        acc_valid = Signal()  # a read was issued last cycle
        m.d.sync += acc_valid.eq(0)
        with m.If(acc_valid):
            for lane in range(L):
                m.d.sync += acc[lane].eq(x_word[lane] + Mux(acc_first, 0, acc[lane]))
        hold_lane = Signal(range(L + 1))
        feeding = Signal()
        mul_a = Signal(signed(self.acc_bits))
        mul_b = Signal(unsigned(MEAN_CONST_BITS))
        prod = Signal(signed(self.acc_bits + MEAN_CONST_BITS + 1))
        m.d.sync += [mul_a.eq(Array(acc)[hold_lane]), mul_b.eq(c_rd.data), prod.eq(mul_a * mul_b)]
        m.submodules.mean_rq = mean_rq = Requantizer(len(prod), A)
        m.d.comb += [mean_rq.v.eq(prod), mean_rq.shift.eq(ins.shift), mean_rq.rounding.eq(ins.rounding),
                     mean_rq.out_bits.eq(ins.out_bits)]
        # lane index of the value leaving the requantizer, and the word being assembled
        lane_pipe = [Signal(range(L + 1), name="lane_d0")]
        live_pipe = [Signal(name="live_d0")]
        m.d.comb += [lane_pipe[0].eq(hold_lane), live_pipe[0].eq(feeding)]
        for i in range(_MUL_LATENCY + REQUANT_LATENCY):
            ln = Signal(range(L + 1), name=f"lane_d{i + 1}")
            lv = Signal(name=f"live_d{i + 1}")
            m.d.sync += [ln.eq(lane_pipe[-1]), lv.eq(live_pipe[-1])]
            lane_pipe.append(ln)
            live_pipe.append(lv)
        out_word = Signal(lanes_of)
        with m.If(live_pipe[-1]):
            m.d.sync += out_word[lane_pipe[-1]].eq(mean_rq.y)
        y_ptr = Signal(self.addr_bits)
        mean_write = Signal()
        x_ptr = Signal(self.addr_bits)

        with m.FSM(name="mean"):
            with m.State("IDLE"):
                with m.If(job.start & (job.ins.opcode == Opcode.MEAN)):
                    m.d.sync += [t.eq(0), r.eq(0), x_ptr.eq(job.ins.x_addr), y_ptr.eq(job.ins.y_addr)]
                    m.next = "READ"
            with m.State("READ"):  # rows reads of tile t
                m.d.comb += [self.rd0.en.eq(1), self.rd0.addr.eq(x_ptr + t)]
                m.d.sync += [acc_valid.eq(1), acc_first.eq(r == 0), x_ptr.eq(x_ptr + ins.x_stride), r.eq(r + 1)]
                with m.If(r == ins.m - 1):
                    m.next = "SUM"
            with m.State("SUM"):  # the last row's data lands in the accumulators
                m.next = "SUM2"
            with m.State("SUM2"):
                m.d.sync += [hold_lane.eq(0), feeding.eq(1)]
                m.next = "FEED"
            with m.State("FEED"):  # one lane per cycle into the multiplier
                with m.If(hold_lane == L - 1):
                    m.d.sync += feeding.eq(0)
                    m.next = "DRAIN"
                m.d.sync += hold_lane.eq(hold_lane + 1)
            with m.State("DRAIN"):  # wait for the last lane to leave the requantizer
                with m.If(~Cat(*live_pipe[1:]).any() & ~feeding):
                    m.next = "WRITE"
            with m.State("WRITE"):
                m.d.comb += mean_write.eq(1)
                m.d.sync += [t.eq(t + 1), r.eq(0), x_ptr.eq(ins.x_addr), y_ptr.eq(y_ptr + 1)]
                with m.If(t == ins.nt - 1):
                    m.d.sync += busy.eq(0)
                    m.next = "IDLE"
                with m.Else():
                    m.next = "READ"

        # ---- ports ---------------------------------------------------------------------------------
        # lanes of the last tile beyond the tensor's width are written as zero (y_lanes; 0 = all)
        def masked(lanes_values, last_tile):
            keep = [(ins.y_lanes == 0) | ~last_tile | (ins.y_lanes > lane) for lane in range(L)]
            return Cat(*(Mux(k, v, 0) for k, v in zip(keep, lanes_values)))

        with m.If(~is_mean):
            m.d.comb += [
                self.rd0.en.eq(walk.running), self.rd0.addr.eq(walk.addr(0)),
                self.rd1.en.eq(walk.running & is_add), self.rd1.addr.eq(walk.addr(1)),
                self.wr.en.eq(valid[-1]), self.wr.addr.eq(waddr[-1]), self.wr.data.eq(masked(quant, wlast[-1])),
            ]
            # busy falls on the cycle after the last write
            with m.If(busy & ~job.start & ~walk.running & ~Cat(*valid[1:-1]).any()):
                m.d.sync += busy.eq(0)
        with m.Else():
            m.d.comb += [self.wr.en.eq(mean_write), self.wr.addr.eq(y_ptr),
                         self.wr.data.eq(masked([out_word[lane] for lane in range(L)], t == ins.nt - 1))]
        return m
