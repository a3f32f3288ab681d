"""ECP5 DSP blocks with their own registers (yosys does not pack fabric registers into them).

On ECP5 a fabric register in front of and behind a ``MULT18X18D`` still leaves the routes to and
from the block inside the multiplier's cycle; the block's own input and output registers take them
out. :func:`ecp5_registered_multiplier` instantiates one block so configured; ``tests/data/
mult18x18d_model.v`` is a behavioural model of exactly this configuration for simulation.
"""

from __future__ import annotations

from amaranth.hdl import ClockSignal, Const, Instance, Module, Signal, signed

__all__ = ["ecp5_registered_multiplier", "is_ecp5"]


def is_ecp5(platform) -> bool:
    """Whether ``platform`` is a Lattice ECP5 platform (amaranth-boards sets ``family``)."""
    return getattr(platform, "family", None) == "ecp5"


def ecp5_registered_multiplier(a, b, p: Signal, ce=None) -> Module:
    """``p = a * b`` two enabled clock edges later, in one ECP5 MULT18X18D with input and output
    registers.

    Signed 18×18 mode (SIGNEDA = SIGNEDB = 1); ``a`` and ``b`` are extended to 18 signed bits (an
    unsigned operand must have at most 17 bits) and ``p`` takes the low bits of the 36-bit product.
    ``ce`` (default always) enables all three registers, like a stall-as-a-whole pipeline's
    fabric registers. Global set/reset is off, so the registers behave exactly like the fabric
    registers they replace.
    """
    a18 = Signal(signed(18))
    b18 = Signal(signed(18))
    p36 = Signal(signed(36))
    ports = {f"i_A{i}": a18[i] for i in range(18)}
    ports.update({f"i_B{i}": b18[i] for i in range(18)})
    ports.update({f"o_P{i}": p36[i] for i in range(36)})
    inst = Instance(
        "MULT18X18D",
        p_REG_INPUTA_CLK="CLK0", p_REG_INPUTB_CLK="CLK0", p_REG_OUTPUT_CLK="CLK0",
        p_REG_PIPELINE_CLK="NONE", p_GSR="DISABLED", p_RESETMODE="SYNC",
        i_SIGNEDA=1, i_SIGNEDB=1, i_SOURCEA=0, i_SOURCEB=0,
        i_CLK0=ClockSignal("sync"), i_CE0=Const(1) if ce is None else ce, i_RST0=0,
        **ports,
    )
    m = Module()
    m.submodules.dsp = inst
    m.d.comb += [a18.eq(a), b18.eq(b), p.eq(p36[: len(p)])]
    return m
