"""The accelerator: controller, scratchpad, weight/bias memories and the linear array.

The controller runs a compiled :class:`~celosia.ir.program.Program` from an on-chip
instruction memory. For a LINEAR instruction it walks ``for n in NT: for m in M:
for k in KT`` and issues one read per cycle of the scratchpad (X row tile), the
weight memory (one whole ``lanes x lanes`` tile), the bias memory and, for fused
residuals, the scratchpad's second read port. The reads land in a short staging
FIFO that feeds the array's ``x`` and ``w`` streams; issue is throttled by credits
(FIFO level + reads in flight), so the memories never see backpressure and the
array receives one beat per cycle. Output beats are written back to the
scratchpad in ``(n, m)`` order as they leave the array, by a write-back unit with
a one-job queue, so the next instruction is fetched and starts issuing while the
previous one drains; the issue gate keeps the data dependencies (docs/isa.md).

Host port ``host`` (:func:`celosia.hw.host_port.HostPortSignature`; the UART bridge on boards,
the ctypes harness in simulation): while idle, ``addr``/``wdata``/``we`` write the scratchpad and
``rdata`` returns the word at ``addr`` one cycle later. A ``start`` pulse runs the program;
``busy`` is high until HALT; ``cycles`` holds the length of the last run in clock cycles (start
to HALT, inclusive).
"""

from __future__ import annotations

import math

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import data, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from celosia.errors import HardwareGenerationError
from celosia.hw.linear import LinearArray
from celosia.hw.host_port import HostPortSignature
from celosia.hw.spad import InstructionLayout
from celosia.ir.program import FIELDS, INSTR_BITS, Opcode, Program

__all__ = ["Accelerator", "InstructionLayout", "scratchpad_units"]


def scratchpad_units(program: Program, addr_bits: int) -> list[tuple[tuple[int, ...], wiring.Component]]:
    """The units a program needs besides the linear array, each with the opcodes it runs.

    A unit is generated only when the program uses one of its opcodes (so a Linear-only model
    builds the same hardware as before the units existed).
    """
    from celosia.hw.vector import VectorUnit

    used = {ins.opcode for ins in program.instructions}
    units = []
    vector_ops = (Opcode.ADD, Opcode.COPY, Opcode.MEAN)
    if used & set(vector_ops):
        rows = max((ins.m for ins in program.instructions if ins.opcode == Opcode.MEAN), default=1)
        units.append((vector_ops, VectorUnit(program.lanes, program.act_bits, addr_bits, InstructionLayout,
                                             program.mean_consts, rows)))
    if Opcode.NORM in used:
        from celosia.hw.rowunit import RowUnit

        units.append(((Opcode.NORM,), RowUnit(program.lanes, program.act_bits, addr_bits, InstructionLayout,
                                              program.norm_records, unit_lanes=program.norm_lanes)))
    if Opcode.ATTENTION in used:
        from celosia.hw.attention_unit import AttentionUnit

        units.append(((Opcode.ATTENTION,), AttentionUnit(program.lanes, program.act_bits, addr_bits, InstructionLayout,
                                                         program.attention_records, program.attention)))
    return units


_STAGING_DEPTH = 4


class Accelerator(wiring.Component):
    """The generated accelerator for one compiled program.

    Parameters
    ----------
    program : Program
        The compiled model; its memories become ROM contents.
    scratch_depth : int, optional
        Scratchpad words (default: what the program needs, rounded up to a power of two).

    Attributes
    ----------
    word_bits : int
        Width of a scratchpad word (``lanes * act_bits``).
    addr_bits : int
        Width of a scratchpad address.
    """

    def __init__(self, program: Program, scratch_depth: int | None = None):
        self.program = program
        lanes = program.lanes
        need = max(program.scratch_words, 2)
        depth = scratch_depth or 1 << math.ceil(math.log2(need))
        if depth < program.scratch_words:
            raise HardwareGenerationError(
                f"scratchpad of {depth} words is smaller than the {program.scratch_words} words "
                f"program '{program.name}' needs"
            )
        if depth > 1 << 16:
            raise HardwareGenerationError(
                f"program '{program.name}' needs {depth} scratchpad words; the address space has 65536",
                hint="use a smaller batch",
            )
        self.scratch_depth = depth
        self.word_bits = lanes * program.act_bits
        self.addr_bits = max(1, math.ceil(math.log2(depth)))
        self.linear = LinearArray(lanes, lanes, program.act_bits, program.weight_bits, program.acc_bits,
                                  gelu_frac=program.gelu_frac)
        self.units = scratchpad_units(program, self.addr_bits)
        super().__init__({"host": In(HostPortSignature(self.addr_bits, self.word_bits))})

    def elaborate(self, platform):
        m = Module()
        prog = self.program
        lanes = prog.lanes
        m.submodules.linear = linear = self.linear

        # ---- memories -----------------------------------------------------------------
        m.submodules.imem = imem = Memory(
            shape=INSTR_BITS, depth=len(prog.instructions), init=[i.encode() for i in prog.instructions]
        )
        m.submodules.wmem = wmem = Memory(
            shape=lanes * lanes * prog.weight_bits, depth=max(len(prog.weight_words), 1), init=prog.weight_words
        )
        m.submodules.bmem = bmem = Memory(
            shape=lanes * prog.acc_bits, depth=max(len(prog.bias_words), 1), init=prog.bias_words
        )
        init = [0] * (max(prog.scratch_init, default=-1) + 1)
        for addr, word in prog.scratch_init.items():  # constant tensors, never overwritten
            init[addr] = word
        m.submodules.scratch = scratch = Memory(shape=self.word_bits, depth=self.scratch_depth, init=init)
        i_rd = imem.read_port()
        w_rd = wmem.read_port()
        b_rd = bmem.read_port()
        x_rd = scratch.read_port()  # X tiles while running, host reads while idle
        r_rd = scratch.read_port()  # residual tiles
        s_wr = scratch.write_port(granularity=prog.act_bits)  # Y tiles, unit results; host writes while idle

        # ---- controller state ----------------------------------------------------------
        pc = Signal(range(max(len(prog.instructions), 2)))
        ins = Signal(InstructionLayout)
        busy = Signal()
        cycles = Signal(32)
        m.d.comb += [self.host.busy.eq(busy), self.host.cycles.eq(cycles)]
        with m.If(busy):
            m.d.sync += cycles.eq(cycles + 1)

        # issue loop counters and running addresses
        k = Signal(10)
        mi = Signal(16)
        n = Signal(10)
        x_row = Signal(16)  # x_addr + m*kt
        w_row = Signal(16)  # w_addr + n*kt
        r_ptr = Signal(16)  # r_addr + m*r_stride + n
        issuing = Signal()
        req = Signal(26)  # write position of the previous instruction this read needs: k*m + row
        # write-back: the job being written, and the next one (decoded while this drains)
        job_layout = data.StructLayout({"y_addr": 16, "m": 16, "nt": 10, "y_stride": 16})
        wjob = Signal(job_layout)
        next_job = Signal(job_layout)
        next_valid = Signal()  # the issuing instruction's outputs wait behind the current job
        wm = Signal(16)
        wn = Signal(10)
        y_ptr = Signal(16)  # y_addr + wm*y_stride + wn
        writing = Signal()
        written = Signal(26)  # words the current write-back job has written

        # ---- staging FIFO between the memories and the array ---------------------------
        entry = data.StructLayout({"x": linear.x.payload.shape(), "w": linear.w.payload.shape()})
        m.submodules.staging = staging = SyncFIFO(width=entry.size, depth=_STAGING_DEPTH)
        pending = Signal()  # a read issued last cycle lands in the FIFO this cycle
        pend_first = Signal()
        pend_last = Signal()
        can_issue = Signal()
        issue = Signal()
        # A chained instruction reads the previous one's output while it is still being
        # written: a read may go once the word it needs has been written (req < written).
        # An unchained one waits until the previous instruction's write-back is complete,
        # unless it reads nothing that instruction writes (indep).
        operands_ready = Signal()
        m.d.comb += [
            operands_ready.eq(~next_valid | ins.indep | (ins.chain & (req < written))),
            can_issue.eq(staging.level + pending < _STAGING_DEPTH),
            issue.eq(issuing & can_issue & operands_ready),
        ]
        m.d.sync += [pending.eq(issue), pend_first.eq(k == 0), pend_last.eq(k == ins.kt - 1)]

        incoming = Signal(entry)
        m.d.comb += [
            incoming.x.x.eq(x_rd.data),
            incoming.x.bias.eq(b_rd.data),
            incoming.x.res.eq(r_rd.data),
            incoming.x.first.eq(pend_first),
            incoming.x.last.eq(pend_last),
            incoming.w.eq(w_rd.data),
            staging.w_data.eq(incoming),
            staging.w_en.eq(pending),
        ]
        outgoing = data.View(entry, staging.r_data)
        m.d.comb += [
            linear.x.payload.eq(outgoing.x),
            linear.w.payload.eq(outgoing.w),
            linear.x.valid.eq(staging.r_rdy),
            linear.w.valid.eq(staging.r_rdy),
            staging.r_en.eq(staging.r_rdy & linear.x.ready & linear.w.ready),
        ]
        m.d.comb += [
            linear.cfg.shift.eq(ins.shift),
            linear.cfg.res_shift.eq(ins.res_shift),
            linear.cfg.rounding.eq(ins.rounding),
            linear.cfg.relu.eq(ins.relu),
            linear.cfg.gelu.eq(ins.gelu),
            linear.cfg.residual.eq(ins.residual),
            linear.cfg.out_bits.eq(ins.out_bits),
        ]

        # ---- memory addressing -----------------------------------------------------------
        m.d.comb += [
            i_rd.addr.eq(pc),
            w_rd.addr.eq(w_row + k),
            b_rd.addr.eq(ins.b_addr + n),
            r_rd.addr.eq(r_ptr),
        ]
        with m.If(busy):
            m.d.comb += x_rd.addr.eq(x_row + k)
        with m.Else():
            m.d.comb += x_rd.addr.eq(self.host.addr)
        m.d.comb += self.host.rdata.eq(x_rd.data)

        # ---- issue loop: for n: for m: for k --------------------------------------------
        with m.If(issue):
            with m.If(k == ins.kt - 1):
                m.d.sync += k.eq(0)
                with m.If(mi == ins.m - 1):
                    m.d.sync += [mi.eq(0), x_row.eq(ins.x_addr), r_ptr.eq(ins.r_addr + n + 1), req.eq(0)]
                    m.d.sync += [n.eq(n + 1), w_row.eq(w_row + ins.kt)]
                    with m.If(n == ins.nt - 1):
                        m.d.sync += issuing.eq(0)
                with m.Else():
                    m.d.sync += [mi.eq(mi + 1), x_row.eq(x_row + ins.x_stride), r_ptr.eq(r_ptr + ins.r_stride)]
                    m.d.sync += req.eq(mi + 1)
            with m.Else():
                m.d.sync += [k.eq(k + 1), req.eq(req + ins.m)]

        # ---- write-back: Y tiles in (n, m) order -----------------------------------------
        m.d.comb += linear.y.ready.eq(1)
        with m.If(busy):
            m.d.comb += [
                s_wr.addr.eq(y_ptr),
                s_wr.data.eq(linear.y.payload),
                s_wr.en.eq((linear.y.valid & writing).replicate(lanes)),
            ]
        with m.Else():
            m.d.comb += [s_wr.addr.eq(self.host.addr), s_wr.data.eq(self.host.wdata),
                         s_wr.en.eq(self.host.we.replicate(lanes))]
        start_job = Signal()  # load `new_job` as the write-back job this cycle
        new_job = Signal(job_layout)
        with m.If(start_job):
            m.d.sync += [wjob.eq(new_job), wm.eq(0), wn.eq(0), y_ptr.eq(new_job.y_addr),
                         written.eq(0), writing.eq(1)]
        with m.Elif(linear.y.valid & writing):
            m.d.sync += written.eq(written + 1)
            with m.If(wm == wjob.m - 1):
                m.d.sync += [wm.eq(0), wn.eq(wn + 1), y_ptr.eq(wjob.y_addr + wn + 1)]
                with m.If(wn == wjob.nt - 1):
                    m.d.sync += writing.eq(0)
            with m.Else():
                m.d.sync += [wm.eq(wm + 1), y_ptr.eq(y_ptr + wjob.y_stride)]
        # The queued job starts the cycle after the current one's last write.
        with m.If(next_valid & ~writing):
            m.d.comb += [start_job.eq(1), new_job.eq(next_job)]
            m.d.sync += next_valid.eq(0)

        # ---- scratchpad units (vector, row, attention): one runs at a time ---------------
        for index, (_, unit) in enumerate(self.units):
            m.submodules[f"unit{index}"] = unit
        unit_opcodes = [op for opcodes, _ in self.units for op in opcodes] or [Opcode.HALT + 15]
        active = Signal(range(max(len(self.units), 2)))
        unit_started = Signal()  # the active unit was started last cycle (its busy rises now)
        m.d.sync += unit_started.eq(Cat(*(u.job.start for _, u in self.units)).any() if self.units else 0)

        # ---- sequencing ----------------------------------------------------------------
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.host.start):
                    m.d.sync += [busy.eq(1), pc.eq(0), cycles.eq(0)]
                    m.next = "FETCH"
            with m.State("FETCH"):  # i_rd.addr = pc; the word arrives next cycle
                m.next = "DECODE"
            with m.State("DECODE"):
                word = data.View(InstructionLayout, i_rd.data[: InstructionLayout.size])
                job = Signal(job_layout)
                m.d.comb += [job.y_addr.eq(word.y_addr), job.m.eq(word.m), job.nt.eq(word.nt),
                             job.y_stride.eq(word.y_stride)]
                with m.If(word.opcode == Opcode.LINEAR):
                    with m.If(~next_valid):  # at most one job queued behind the writer
                        m.d.sync += [
                            ins.eq(word),
                            k.eq(0), mi.eq(0), n.eq(0), req.eq(0),
                            x_row.eq(word.x_addr), w_row.eq(word.w_addr), r_ptr.eq(word.r_addr),
                            issuing.eq(1),
                        ]
                        with m.If(writing):
                            m.d.sync += [next_job.eq(job), next_valid.eq(1)]
                        with m.Else():
                            m.d.comb += [start_job.eq(1), new_job.eq(job)]
                        m.next = "RUN"
                with m.Elif(~writing & ~next_valid):  # every earlier instruction has finished
                    for index, (opcodes, unit) in enumerate(self.units):
                        with m.If(word.opcode.matches(*opcodes)):
                            m.d.comb += [unit.job.start.eq(1), unit.job.ins.eq(word)]
                            m.d.sync += active.eq(index)
                            m.next = "UNIT"
                    with m.If(~word.opcode.matches(*unit_opcodes)):  # HALT (or unknown): stop
                        m.d.sync += busy.eq(0)
                        m.next = "IDLE"
            with m.State("RUN"):  # the next instruction is read while this one issues: decoded once it has
                m.d.comb += i_rd.addr.eq(pc + 1)
                with m.If(~issuing):
                    m.d.sync += pc.eq(pc + 1)
                    m.next = "DECODE"
            with m.State("UNIT"):  # a scratchpad unit runs alone; it owns the scratchpad ports
                m.d.comb += i_rd.addr.eq(pc + 1)  # the next instruction, decoded when the unit is done
                for index, (_, unit) in enumerate(self.units):
                    with m.If(active == index):
                        m.d.comb += [
                            x_rd.addr.eq(unit.rd0.addr), r_rd.addr.eq(unit.rd1.addr),
                            unit.rd0.data.eq(x_rd.data), unit.rd1.data.eq(r_rd.data),
                            s_wr.addr.eq(unit.wr.addr), s_wr.data.eq(unit.wr.data),
                            s_wr.en.eq(unit.wr.en.replicate(lanes)
                                       & (unit.wr.lane_en if hasattr(unit.wr, "lane_en") else -1)),
                        ]
                        with m.If(~unit.job.busy & ~unit_started):
                            m.d.sync += pc.eq(pc + 1)
                            m.next = "DECODE"
        return m
