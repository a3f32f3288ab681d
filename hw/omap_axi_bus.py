"""The AXI4 (full) interface as an ``amaranth.lib.wiring`` signature, shared by the oblivious
map unit's AXI4 masters (host pages: :mod:`celosia.hw.omap_axi`; HBM index region:
:mod:`celosia.hw.omap_index`)."""

from __future__ import annotations

from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["BURST_INCR", "RESP_OKAY", "axi4_signature"]

#: AXI4 burst type INCR, response OKAY
BURST_INCR, RESP_OKAY = 0b01, 0b00


def axi4_signature(addr_width: int = 64, data_width: int = 64, id_width: int = 1) -> wiring.Signature:
    """An AXI4 (full) master interface with flat, AMBA-named members.

    Parameters
    ----------
    addr_width, data_width, id_width : int
        Address, data and ID widths in bits.

    Returns
    -------
    wiring.Signature
        Members named as in the AMBA spec (``awaddr``, ``wvalid``, ``rdata``, ...), ``Out``
        for what the master drives; AxUSER/xUSER and AxREGION are omitted.
    """
    sig = {}
    for ch in ("aw", "ar"):
        sig.update({f"{ch}id": Out(id_width), f"{ch}addr": Out(addr_width), f"{ch}len": Out(8),
                    f"{ch}size": Out(3), f"{ch}burst": Out(2), f"{ch}lock": Out(1), f"{ch}cache": Out(4),
                    f"{ch}prot": Out(3), f"{ch}qos": Out(4), f"{ch}valid": Out(1), f"{ch}ready": In(1)})
    sig.update({"wdata": Out(data_width), "wstrb": Out(data_width // 8), "wlast": Out(1), "wvalid": Out(1),
                "wready": In(1),
                "bid": In(id_width), "bresp": In(2), "bvalid": In(1), "bready": Out(1),
                "rid": In(id_width), "rdata": In(data_width), "rresp": In(2), "rlast": In(1), "rvalid": In(1),
                "rready": Out(1)})
    return wiring.Signature(sig)
