"""The accelerator's instruction set and the compiled program.

A :class:`Program` is what the scheduler emits and the controller runs: a list of
fixed-width instructions plus the contents of the weight and bias memories and a
map of where every tensor lives in the scratchpad. The encoding is defined once,
here, as an ordered field list; the hardware decoder builds its layout from
:data:`FIELDS`, so the two cannot drift apart. docs/isa.md describes it for users.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from enum import IntEnum

import numpy as np

from celosia.errors import ScheduleError
from celosia.ir.numerics import Fixed

__all__ = ["Opcode", "FIELDS", "INSTR_BITS", "Instruction", "TensorPlacement", "Program", "pack_lanes", "pack_words",
           "unpack_words"]


class Opcode(IntEnum):
    """Instruction opcodes. New units add opcodes here."""

    HALT = 0  # stop; the controller drops busy and the cycle counter freezes
    LINEAR = 1  # Y = epilogue(X @ W + b [+ R]) on the linear array
    ADD = 2  # Y = requantize((X << x_shift) + (R << res_shift)) on the vector unit
    COPY = 3  # Y = requantize(X << x_shift): moves, slices and concatenations, on the vector unit
    MEAN = 4  # Y[t] = requantize(sum over rows of X[r, t] * c): mean over rows, on the vector unit
    NORM = 5  # Y = LayerNorm / RMSNorm of the rows of X (record p_addr), on the row unit
    ATTENTION = 6  # Y = attention(Q = X, K = R, V = V) (record p_addr), on the attention unit


#: Instruction fields, least significant first: (name, bits).
FIELDS: list[tuple[str, int]] = [
    ("opcode", 4),
    ("x_addr", 16),  # scratchpad word address of the input X (M x KT words)
    ("y_addr", 16),  # scratchpad word address of the output Y (M x NT words)
    ("r_addr", 16),  # scratchpad word address of the residual R (M x NT words)
    ("w_addr", 16),  # weight memory address of the first weight tile (NT x KT tiles)
    ("b_addr", 16),  # bias memory address of the first bias word (NT words)
    ("m", 16),  # rows
    ("kt", 10),  # input tiles (ceil(K / lanes))
    ("nt", 10),  # output tiles (ceil(N / lanes))
    ("shift", 6),  # requantizing right shift: frac_x + frac_w - frac_y
    ("res_shift", 6),  # residual left shift: frac_x + frac_w - frac_r
    ("rounding", 2),  # Rounding.code
    ("relu", 1),
    ("gelu", 1),  # GELU epilogue after saturation (Program.gelu_frac gives its format)
    ("residual", 1),
    ("out_bits", 5),  # saturate to a signed out_bits-bit range
    ("chain", 1),  # X is the previous instruction's Y: start reading it as it is written
    ("x_stride", 16),  # words from one row of X to the next (kt for a dense tensor)
    ("r_stride", 16),  # words from one row of R to the next
    ("y_stride", 16),  # words from one row of Y to the next (nt for a dense tensor)
    ("v_addr", 16),  # a fourth operand (attention values)
    ("v_stride", 16),
    ("p_addr", 12),  # the unit's parameter record (constants of this instruction)
    ("x_shift", 6),  # left shift of X before the vector unit's sum
    ("y_lanes", 6),  # lanes of Y's last tile that hold data (0: all); the others are written as zero
    ("indep", 1),  # LINEAR: reads nothing the previous LINEAR writes: issue while it drains
]

#: Width of one encoded instruction (fields padded to a multiple of 32 bits).
INSTR_BITS = 32 * math.ceil(sum(b for _, b in FIELDS) / 32)


@dataclass(frozen=True)
class Instruction:
    """One decoded instruction; every field of :data:`FIELDS` as an int."""

    opcode: int = Opcode.HALT
    x_addr: int = 0
    y_addr: int = 0
    r_addr: int = 0
    w_addr: int = 0
    b_addr: int = 0
    m: int = 0
    kt: int = 0
    nt: int = 0
    shift: int = 0
    res_shift: int = 0
    rounding: int = 0
    relu: int = 0
    gelu: int = 0
    residual: int = 0
    out_bits: int = 0
    chain: int = 0
    x_stride: int = 0
    r_stride: int = 0
    y_stride: int = 0
    v_addr: int = 0
    v_stride: int = 0
    p_addr: int = 0
    x_shift: int = 0
    y_lanes: int = 0
    indep: int = 0
    comment: str = field(default="", compare=False)

    def encode(self) -> int:
        """The instruction as an integer of :data:`INSTR_BITS` bits."""
        word, pos = 0, 0
        for name, bits in FIELDS:
            value = int(getattr(self, name))
            if not 0 <= value < (1 << bits):
                raise ScheduleError(
                    f"instruction field {name}={value} does not fit in {bits} bits ({self.comment})",
                    hint="the layer is too large for the instruction format; split it or use a larger board",
                )
            word |= value << pos
            pos += bits
        return word

    @classmethod
    def decode(cls, word: int) -> "Instruction":
        """Inverse of :meth:`encode`."""
        values, pos = {}, 0
        for name, bits in FIELDS:
            values[name] = (word >> pos) & ((1 << bits) - 1)
            pos += bits
        return cls(**values)

    def __str__(self) -> str:
        op = Opcode(self.opcode).name
        if self.opcode == Opcode.HALT:
            return "HALT"
        parts = [f"{f.name}={getattr(self, f.name)}" for f in fields(self)[1:] if f.name != "comment"]
        return f"{op:<10}{' '.join(parts)}" + (f"  ; {self.comment}" if self.comment else "")


@dataclass(frozen=True)
class TensorPlacement:
    """Where a tensor lives in the scratchpad: ``rows x tiles`` words from ``addr``.

    Element ``(m, d)`` is lane ``d % lanes`` of word ``addr + m * stride + d // lanes``; ``stride``
    (words from one row to the next) is ``tiles`` for a dense tensor and more for a view into a
    wider one (a slice of columns, one part of a concatenation).
    """

    name: str
    addr: int
    rows: int
    tiles: int
    shape: tuple[int, ...]
    fmt: Fixed
    stride: int = 0  # 0: dense (= tiles)

    @property
    def row_stride(self) -> int:
        """Words from one row to the next."""
        return self.stride or self.tiles

    @property
    def words(self) -> int:
        """Words spanned from ``addr`` to the end of the last row."""
        return (self.rows - 1) * self.row_stride + self.tiles if self.rows else 0

    @property
    def dense(self) -> bool:
        return self.row_stride == self.tiles


@dataclass
class Program:
    """A compiled model: instructions, memory images and the tensor map."""

    name: str
    lanes: int
    act_bits: int
    weight_bits: int
    acc_bits: int
    instructions: list[Instruction]
    weight_words: list[int]
    bias_words: list[int]
    scratch_words: int
    inputs: dict[str, TensorPlacement]
    outputs: dict[str, TensorPlacement]
    macs: int  # useful multiply-accumulates per run (unpadded shapes)
    padded_macs: int  # MACs the array performs, padding included
    gelu_frac: int | None = None  # the GELU epilogue's Fixed(act_bits, gelu_frac); None: no epilogue
    scratch_init: dict[int, int] = field(default_factory=dict)  # constant tensors' words, preloaded
    mean_consts: list[int] = field(default_factory=list)  # the vector unit's MEAN constants (p_addr)
    norm_records: list = field(default_factory=list)  # the row unit's NormRecord per NORM (p_addr)
    norm_lanes: int = 2  # elements the row unit normalizes per cycle
    attention_records: list = field(default_factory=list)  # AttentionRecord per ATTENTION (p_addr)
    attention: object | None = None  # celosia.ir.attention.AttentionConfig of the attention engine
    op_instructions: dict[str, list[int]] = field(default_factory=dict)  # op name -> its instructions
    bounds: list[float] = field(default_factory=list)  # roofline cycles of each instruction
    op_kinds: dict[str, str] = field(default_factory=dict)  # op name -> kind, for op_instructions
    # Input name -> flat source index of each element the host writes (a layout transform such as
    # image -> patches, done by the host instead of an instruction); absent: written as is.
    input_layouts: dict[str, np.ndarray] = field(default_factory=dict)

    def host_input(self, name: str, codes: np.ndarray) -> np.ndarray:
        """Input ``name``'s codes in the layout the host writes them (:attr:`input_layouts`)."""
        codes = np.asarray(codes)
        if name in self.input_layouts:
            return codes.reshape(-1)[self.input_layouts[name]].reshape(self.inputs[name].shape)
        return codes

    @property
    def ideal_cycles(self) -> float:
        """Useful MACs divided by the array's MACs per cycle."""
        return self.macs / (self.lanes * self.lanes)

    @property
    def roofline_cycles(self) -> float:
        """Σ of every instruction's roofline bound (the units run one at a time, so every
        instruction is on the critical path)."""
        return float(sum(self.bounds))

    def listing(self) -> str:
        """A human-readable assembly listing."""
        return "\n".join(f"{i:4d}: {ins}" for i, ins in enumerate(self.instructions))


def pack_lanes(values, bits: int) -> int:
    """Pack integer codes into one word, element i at bits [i*bits, (i+1)*bits)."""
    mask = (1 << bits) - 1
    word = 0
    for i, v in enumerate(values):
        word |= (int(v) & mask) << (i * bits)
    return word


def pack_words(codes: np.ndarray, placement: TensorPlacement, lanes: int, bits: int) -> list[int]:
    """Pack a tensor's integer codes into scratchpad words (two's complement lanes)."""
    rows, tiles = placement.rows, placement.tiles
    flat = np.zeros((rows, tiles * lanes), dtype=np.int64)
    codes = np.asarray(codes, dtype=np.int64).reshape(rows, -1)
    flat[:, : codes.shape[1]] = codes
    return [pack_lanes(flat[r, t * lanes:(t + 1) * lanes], bits) for r in range(rows) for t in range(tiles)]


def unpack_words(words: list[int], placement: TensorPlacement, lanes: int, bits: int) -> np.ndarray:
    """Inverse of :func:`pack_words`: signed codes shaped like the tensor."""
    mask = (1 << bits) - 1
    out = np.zeros((placement.rows, placement.tiles * lanes), dtype=np.int64)
    for i, word in enumerate(words):
        r, t = divmod(i, placement.tiles)
        for lane in range(lanes):
            v = (word >> (lane * bits)) & mask
            out[r, t * lanes + lane] = v - (1 << bits) if v >> (bits - 1) else v
    n = placement.shape[-1]
    return out[:, :n].reshape(placement.shape)
