"""The byte codes of the UART host protocol (docs/uart_protocol.md), shared by the hardware bridge
(:mod:`celosia.hw.host_bridge`) and the host-side client (:mod:`celosia.boards.uart_protocol`)."""

__all__ = ["CMD_WRITE", "CMD_READ", "CMD_START", "CMD_CYCLES", "CMD_IDENT", "REPLY_OK", "REPLY_DONE",
           "REPLY_UNKNOWN", "IDENT_MAGIC"]

CMD_WRITE = 0x57  # 'W'
CMD_READ = 0x52  # 'R'
CMD_START = 0x53  # 'S'
CMD_CYCLES = 0x43  # 'C'
CMD_IDENT = 0x49  # 'I'
REPLY_OK = 0x4B  # 'K'
REPLY_DONE = 0x44  # 'D'
REPLY_UNKNOWN = 0x3F  # '?'
IDENT_MAGIC = b"CELO"
