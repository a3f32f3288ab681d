"""Host side of the UART bridge protocol (see ``docs/uart_protocol.md``).

Pure Python, no hardware dependencies: encoders for every request, decoders for every reply, the
8N1 bit framing (for testbenches that drive a UART pin) and :class:`UartHost`, a small driver that
talks to a board through any object with ``write(bytes)`` and ``read(n) -> bytes`` (a
``serial.Serial`` from pyserial, a socket wrapper, or a simulation model).

All multi-byte fields are little-endian; a data word travels as ``W = ceil(word_bits / 8)`` bytes.

Examples
--------
>>> encode_write(0x0102, 0xAABBCC, word_bits=24).hex()
'570201ccbbaa'
>>> decode_read_reply(bytes([0xFF, 0x7F]), word_bits=16)
32767
>>> decode_ident_reply(bytes([32, 10]) + b"CELO")
Ident(word_bits=32, addr_bits=10)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Protocol, Sequence

from celosia.errors import CelosiaError

__all__ = [
    "CMD_WRITE", "CMD_READ", "CMD_START", "CMD_CYCLES", "CMD_IDENT",
    "REPLY_OK", "REPLY_DONE", "REPLY_UNKNOWN", "IDENT_MAGIC",
    "UartProtocolError", "Ident", "word_bytes",
    "encode_write", "encode_read", "encode_start", "encode_cycles", "encode_ident",
    "reply_length", "decode_write_reply", "decode_read_reply", "decode_start_reply",
    "decode_cycles_reply", "decode_ident_reply",
    "frame_bits", "Transport", "UartHost",
]

# The wire format is the bridge's (celosia.hw.host_protocol); the host side speaks the same bytes.
from celosia.hw.host_protocol import (CMD_CYCLES, CMD_IDENT, CMD_READ, CMD_START, CMD_WRITE,  # noqa: E402
                                      IDENT_MAGIC, REPLY_DONE, REPLY_OK, REPLY_UNKNOWN)

_MAX_ADDR = 0xFFFF


class UartProtocolError(CelosiaError):
    """A request cannot be encoded or a reply is not what the protocol prescribes."""


@dataclass(frozen=True)
class Ident:
    """The bridge's answer to ``'I'``.

    Attributes
    ----------
    word_bits : int
        Width of a scratchpad word.
    addr_bits : int
        Width of a scratchpad address.
    """

    word_bits: int
    addr_bits: int

    @property
    def word_bytes(self) -> int:
        """Bytes per word on the wire, ``ceil(word_bits / 8)``."""
        return word_bytes(self.word_bits)


def word_bytes(word_bits: int) -> int:
    """Number of bytes a ``word_bits`` wide word occupies on the wire.

    Parameters
    ----------
    word_bits : int
        Word width in bits (1..255).

    Returns
    -------
    int
        ``ceil(word_bits / 8)``.
    """
    if not isinstance(word_bits, int) or not 1 <= word_bits <= 255:
        raise UartProtocolError(f"word_bits must be in 1..255, not {word_bits!r}",
                                hint="read the width from the bridge with 'I'")
    return (word_bits + 7) // 8


def _check_addr(addr: int) -> int:
    if not isinstance(addr, int) or not 0 <= addr <= _MAX_ADDR:
        raise UartProtocolError(f"address {addr!r} does not fit the two-byte address field",
                                hint="addresses are 0..65535 (and below 2**addr_bits)")
    return addr


def encode_write(addr: int, value: int, word_bits: int) -> bytes:
    """Encode ``'W' addr[2] data[W]``.

    Parameters
    ----------
    addr : int
        Word address (0..65535).
    value : int
        The word. Negative values are written in two's complement; the value must fit in
        ``word_bits`` bits either as an unsigned or as a signed number.
    word_bits : int
        Word width of the accelerator.

    Returns
    -------
    bytes
        The request; the bridge answers ``'K'``.
    """
    n = word_bytes(word_bits)
    _check_addr(addr)
    if not -(1 << (word_bits - 1)) <= value < (1 << word_bits):
        raise UartProtocolError(f"value {value} does not fit in a {word_bits}-bit word",
                                hint="quantize the data to the accelerator's word format first")
    value &= (1 << word_bits) - 1
    return bytes([CMD_WRITE]) + addr.to_bytes(2, "little") + value.to_bytes(n, "little")


def encode_read(addr: int) -> bytes:
    """Encode ``'R' addr[2]``; the bridge answers with the word (``W`` bytes)."""
    return bytes([CMD_READ]) + _check_addr(addr).to_bytes(2, "little")


def encode_start() -> bytes:
    """Encode ``'S'``; the bridge answers ``'D'`` when the accelerator is done."""
    return bytes([CMD_START])


def encode_cycles() -> bytes:
    """Encode ``'C'``; the bridge answers with the 32-bit cycle counter (4 bytes)."""
    return bytes([CMD_CYCLES])


def encode_ident() -> bytes:
    """Encode ``'I'``; the bridge answers ``word_bits[1] addr_bits[1] 'CELO'`` (6 bytes)."""
    return bytes([CMD_IDENT])


def reply_length(command: int | bytes, word_bits: int) -> int:
    """Number of reply bytes the bridge sends for a request.

    Parameters
    ----------
    command : int or bytes
        The command byte, or a whole request (its first byte is used).
    word_bits : int
        Word width of the accelerator.

    Returns
    -------
    int
        ``W`` for ``'R'``, 4 for ``'C'``, 6 for ``'I'`` and 1 for everything else.
    """
    if isinstance(command, (bytes, bytearray)):
        command = command[0]
    if command == CMD_READ:
        return word_bytes(word_bits)
    if command == CMD_CYCLES:
        return 4
    if command == CMD_IDENT:
        return 6
    return 1


def _expect_len(reply: bytes, n: int, what: str) -> bytes:
    reply = bytes(reply)
    if len(reply) != n:
        raise UartProtocolError(
            f"{what}: expected {n} reply byte(s), got {len(reply)} ({reply.hex() or 'nothing'})",
            hint="check the baud rate and that the board runs the Celosia UART bridge")
    return reply


def _expect_byte(reply: bytes, byte: int, what: str) -> None:
    reply = _expect_len(reply, 1, what)
    if reply[0] != byte:
        extra = " (the bridge did not recognise the command)" if reply[0] == REPLY_UNKNOWN else ""
        raise UartProtocolError(
            f"{what}: expected {chr(byte)!r}, got {bytes(reply)!r}{extra}",
            hint="resynchronise by sending 'I' and checking the identification")


def decode_write_reply(reply: bytes) -> None:
    """Check the reply to ``'W'`` (``'K'``); raise :class:`UartProtocolError` otherwise."""
    _expect_byte(reply, REPLY_OK, "write")


def decode_start_reply(reply: bytes) -> None:
    """Check the reply to ``'S'`` (``'D'``); raise :class:`UartProtocolError` otherwise."""
    _expect_byte(reply, REPLY_DONE, "start")


def decode_read_reply(reply: bytes, word_bits: int, *, signed: bool = False) -> int:
    """Decode the reply to ``'R'``.

    Parameters
    ----------
    reply : bytes
        ``W`` bytes, little-endian.
    word_bits : int
        Word width of the accelerator; bits above it are ignored.
    signed : bool, optional
        Interpret the word as two's complement.

    Returns
    -------
    int
        The word.
    """
    reply = _expect_len(reply, word_bytes(word_bits), "read")
    value = int.from_bytes(reply, "little") & ((1 << word_bits) - 1)
    if signed and value >> (word_bits - 1):
        value -= 1 << word_bits
    return value


def decode_cycles_reply(reply: bytes) -> int:
    """Decode the reply to ``'C'``: the unsigned 32-bit cycle counter."""
    return int.from_bytes(_expect_len(reply, 4, "cycles"), "little")


def decode_ident_reply(reply: bytes) -> Ident:
    """Decode the reply to ``'I'``.

    Raises
    ------
    UartProtocolError
        If the reply is not 6 bytes ending in ``CELO``.
    """
    reply = _expect_len(reply, 6, "ident")
    if reply[2:] != IDENT_MAGIC:
        raise UartProtocolError(
            f"ident: expected magic {IDENT_MAGIC!r}, got {reply[2:]!r}",
            hint="the board does not run the Celosia UART bridge, or the baud rate is wrong")
    return Ident(word_bits=reply[0], addr_bits=reply[1])


def frame_bits(byte: int) -> list[int]:
    """Line levels of one 8N1 frame: start bit, 8 data bits LSB first, stop bit.

    Parameters
    ----------
    byte : int
        0..255.

    Returns
    -------
    list of int
        Ten levels, each to be held for one bit time.
    """
    if not 0 <= byte <= 255:
        raise UartProtocolError(f"{byte!r} is not a byte")
    return [0] + [(byte >> i) & 1 for i in range(8)] + [1]


class Transport(Protocol):
    """What :class:`UartHost` needs from a serial port (``serial.Serial`` fits)."""

    def write(self, data: bytes) -> int | None: ...

    def read(self, size: int) -> bytes: ...


class UartHost:
    """Driver for a board running the UART bridge.

    Parameters
    ----------
    port : Transport
        An open serial port (``write(bytes)``, ``read(n)``), e.g. ``serial.Serial(dev, 115200,
        timeout=1)``.
    word_bits : int, optional
        Word width; if omitted it is read from the board with ``'I'``.
    """

    def __init__(self, port: Transport, word_bits: int | None = None):
        self.port = port
        if word_bits is None:
            word_bits = self.ident().word_bits
        self.word_bits = word_bits

    def _transact(self, request: bytes, n: int) -> bytes:
        self.port.write(request)
        reply = self.port.read(n)
        return bytes(reply) if reply is not None else b""

    def ident(self) -> Ident:
        """Ask the board for its word and address widths."""
        return decode_ident_reply(self._transact(encode_ident(), 6))

    def write_word(self, addr: int, value: int) -> None:
        """Write one scratchpad word."""
        decode_write_reply(self._transact(encode_write(addr, value, self.word_bits), 1))

    def write_words(self, base: int, values: Iterable[int]) -> None:
        """Write consecutive words from ``base``, streaming the requests.

        ``'W'`` requests are longer than their replies, so they can be sent without waiting for
        each ``'K'``; the replies are checked at the end.
        """
        requests = [encode_write(base + i, v, self.word_bits) for i, v in enumerate(values)]
        if not requests:
            return
        self.port.write(b"".join(requests))
        reply = self.port.read(len(requests))
        if bytes(reply) != bytes([REPLY_OK]) * len(requests):
            raise UartProtocolError(
                f"write_words: expected {len(requests)} 'K' replies, got {bytes(reply)!r}",
                hint="check the baud rate and that the board runs the Celosia UART bridge")

    def read_word(self, addr: int, *, signed: bool = False) -> int:
        """Read one scratchpad word."""
        reply = self._transact(encode_read(addr), word_bytes(self.word_bits))
        return decode_read_reply(reply, self.word_bits, signed=signed)

    def read_words(self, base: int, count: int, *, signed: bool = False) -> list[int]:
        """Read ``count`` consecutive words from ``base`` (one request at a time)."""
        return [self.read_word(base + i, signed=signed) for i in range(count)]

    def start(self) -> None:
        """Start the accelerator and wait for it to finish (the port's timeout applies)."""
        decode_start_reply(self._transact(encode_start(), 1))

    def cycles(self) -> int:
        """Read the accelerator's cycle counter."""
        return decode_cycles_reply(self._transact(encode_cycles(), 4))

    def run(self, inputs: Sequence[tuple[int, Sequence[int]]] = ()) -> int:
        """Write input blocks, start, and return the cycle count.

        Parameters
        ----------
        inputs : sequence of (base, words)
            Blocks of words to write before starting.

        Returns
        -------
        int
            The cycle counter after the run.
        """
        for base, words in inputs:
            self.write_words(base, words)
        self.start()
        return self.cycles()
