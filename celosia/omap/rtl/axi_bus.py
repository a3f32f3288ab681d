"""The AXI4 (full) interface as an ``amaranth.lib.wiring`` signature, shared by the oblivious
map unit's AXI4 masters (host pages: :mod:`celosia.omap.rtl.axi`; HBM index region:
:mod:`celosia.omap.rtl.index`)."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["BURST_INCR", "RESP_OKAY", "FallThroughQueue", "axi4_signature"]

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


class FallThroughQueue:
    """A small register FIFO in front of an AXI channel (addresses, or single-beat write data).
    It falls through when empty so the channel's VALID rises in the very cycle of the request
    (the schedule's issue cycle); later entries wait their turn. ``push``/``addr_in`` in,
    ``valid``/``addr`` out (held back while ``hold``); the caller drives ``ready`` from the
    channel; ``fire`` is the handshake; ``overflow`` a push into a full queue (dropped)."""

    def __init__(self, m: Module, name: str, depth: int, width: int, push, addr_in, hold):
        q = [Signal(width, name=f"{name}_q{i}") for i in range(depth)]
        cnt = Signal(range(depth + 1), name=f"{name}_cnt")
        self.valid = Signal(name=f"{name}_valid")
        self.addr = Signal(width, name=f"{name}_addr")
        self.fire = Signal(name=f"{name}_fire")
        self.overflow = Signal(name=f"{name}_overflow")
        self.ready = Signal(name=f"{name}_ready")  # the channel's READY, driven by the caller
        head = cnt != 0
        m.d.comb += [self.valid.eq((head | push) & ~hold), self.addr.eq(Mux(head, q[0], addr_in)),
                     self.fire.eq(self.valid & self.ready)]
        pop = self.fire & head
        keep = push & ~(self.fire & ~head)  # the new request was not taken straight through
        with m.If(pop):
            for i in range(depth - 1):
                m.d.sync += q[i].eq(q[i + 1])
        with m.If(keep):
            for i in range(depth):
                with m.If(cnt - pop == i):
                    m.d.sync += q[i].eq(addr_in)
        m.d.comb += self.overflow.eq(keep & (cnt == depth) & ~pop)
        with m.If(~self.overflow):
            m.d.sync += cnt.eq(cnt + keep - pop)
