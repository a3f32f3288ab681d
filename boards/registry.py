"""Board registry: one record per supported board.

A :class:`Board` names the FPGA part, its resources (the ``available`` figures nextpnr reports
for the device, so that budgets and utilisation reports agree), the input and design clocks, the
host link and the toolchain. :func:`get_board` looks boards up by name.

Examples
--------
>>> get_board("icebreaker").resources.dsp
8
>>> [b.name for b in list_boards()]
['icebreaker', 'ulx3s-85f']
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from celosia.errors import UnknownNameError

__all__ = ["Resources", "Board", "BOARDS", "get_board", "list_boards"]


@dataclass(frozen=True)
class Resources:
    """Logic and memory resources of a device.

    Attributes
    ----------
    lut : int
        4-input LUTs (ECP5 ``TRELLIS_COMB``, iCE40 ``ICESTORM_LC``).
    ff : int
        Flip-flops.
    dsp : int
        Hard multipliers (ECP5 ``MULT18X18D``, iCE40 ``ICESTORM_DSP``).
    bram : int
        Block RAMs (ECP5 ``DP16KD``, iCE40 ``ICESTORM_RAM``).
    bram_bits : int
        Bits per block RAM (18 Ki for DP16KD, 4 Ki for an iCE40 EBR).
    spram : int
        Single-port RAMs (iCE40 UltraPlus ``ICESTORM_SPRAM``); 0 when there are none.
    spram_bits : int
        Bits per single-port RAM.
    """

    lut: int
    ff: int
    dsp: int
    bram: int
    bram_bits: int
    spram: int = 0
    spram_bits: int = 0

    @property
    def bram_total_bits(self) -> int:
        """Total block-RAM capacity in bits (without SPRAM)."""
        return self.bram * self.bram_bits

    def as_dict(self) -> dict[str, int]:
        """The resources as ``{"lut": ..., "ff": ..., "dsp": ..., "bram": ...}``."""
        return {"lut": self.lut, "ff": self.ff, "dsp": self.dsp, "bram": self.bram}


@dataclass(frozen=True)
class Board:
    """One FPGA board.

    Attributes
    ----------
    name : str
        Registry name, e.g. ``"ulx3s-85f"``.
    vendor : str
        FPGA vendor (``"lattice"``).
    family : {"ecp5", "ice40"}
        Device family; selects the synthesis and place-and-route flow.
    device : str
        Part name as amaranth-boards spells it, e.g. ``"LFE5U-85F"``.
    package : str
        Package as amaranth-boards spells it, e.g. ``"BG381"``.
    speed : str
        Speed grade.
    platform : type
        The amaranth-boards platform class.
    clock_mhz : float
        Frequency of the board oscillator.
    target_mhz : float
        Frequency the design clock (``sync``) runs at and the timing target of place and route.
    resources : Resources
        Device resources.
    host_link : str
        How the host talks to the accelerator (``"uart"``).
    baud : int
        Host link baud rate.
    toolchain : str
        ``"open"`` (yosys + nextpnr through YoWASP).
    memory : str
        Memory system available to the accelerator (``"on-chip"``).
    """

    name: str
    vendor: str
    family: Literal["ecp5", "ice40"]
    device: str
    package: str
    speed: str
    platform: type
    clock_mhz: float
    target_mhz: float
    resources: Resources
    host_link: str = "uart"
    baud: int = 115200
    toolchain: str = "open"
    memory: str = "on-chip"

    @property
    def part(self) -> str:
        """Full part number, e.g. ``"LFE5U-85F-6BG381C"``."""
        if self.family == "ecp5":
            return f"{self.device}-{self.speed}{self.package}C"
        return f"{self.device}-{self.package}"

    @property
    def uart_divisor(self) -> int:
        """Design clock cycles per UART bit at :attr:`baud`."""
        return round(self.target_mhz * 1e6 / self.baud)


def _ulx3s_85f() -> type:
    from amaranth_boards.ulx3s import ULX3S_85F_Platform
    return ULX3S_85F_Platform


def _icebreaker() -> type:
    from amaranth_boards.icebreaker import ICEBreakerPlatform
    return ICEBreakerPlatform


BOARDS: dict[str, Board] = {
    "ulx3s-85f": Board(
        name="ulx3s-85f",
        vendor="lattice",
        family="ecp5",
        device="LFE5U-85F",
        package="BG381",
        speed="6",
        platform=_ulx3s_85f(),
        clock_mhz=25.0,
        target_mhz=100.0,
        # nextpnr-ecp5 --85k: TRELLIS_COMB 83640, TRELLIS_FF 83640, MULT18X18D 156, DP16KD 208.
        resources=Resources(lut=83640, ff=83640, dsp=156, bram=208, bram_bits=18 * 1024),
    ),
    "icebreaker": Board(
        name="icebreaker",
        vendor="lattice",
        family="ice40",
        device="iCE40UP5K",
        package="SG48",
        speed="",
        platform=_icebreaker(),
        clock_mhz=12.0,
        target_mhz=12.0,
        # nextpnr-ice40 --up5k: ICESTORM_LC 5280 (LUT4 + FF each), ICESTORM_DSP 8,
        # ICESTORM_RAM 30, ICESTORM_SPRAM 4.
        resources=Resources(lut=5280, ff=5280, dsp=8, bram=30, bram_bits=4 * 1024,
                            spram=4, spram_bits=256 * 1024),
    ),
}


def list_boards() -> list[Board]:
    """All registered boards, sorted by name.

    Returns
    -------
    list of Board
    """
    return [BOARDS[name] for name in sorted(BOARDS)]


def get_board(name: str | Board) -> Board:
    """Look a board up by name.

    Parameters
    ----------
    name : str or Board
        Registry name (case-insensitive; ``_`` and ``-`` are interchangeable). A :class:`Board`
        is returned unchanged.

    Returns
    -------
    Board

    Raises
    ------
    UnknownNameError
        If there is no board of that name; the message lists the valid names.
    """
    if isinstance(name, Board):
        return name
    key = str(name).strip().lower().replace("_", "-")
    try:
        return BOARDS[key]
    except KeyError:
        valid = ", ".join(sorted(BOARDS))
        raise UnknownNameError(
            f"unknown board {name!r}; known boards: {valid}",
            hint="pass one of the names above (see `celosia.boards.list_boards()`)",
        ) from None
