"""NFQUEUE queues of one namespace: `-j NFQUEUE --queue-num N` hands the packet to a Python handler.

The handler gets a `QueuedPacket` shaped like the `netfilterqueue` package's `Packet`
(`get_payload`, `set_payload`, `accept`, `drop`, `get_mark`, `set_mark`, `hw_protocol`, `id`)
and gives its verdict synchronously, before it returns: the emulated kernel has no userspace
to wait for, so the packet is reinjected (or freed) at once, and a handler that returns
without a verdict leaves a packet that never comes back, which is a drop.
"""
from __future__ import annotations

from typing import Callable

from pktemu.errors import PktemuError, excerpt
from pktemu.net.frame import Frame
from pktemu.netfilter.core import NF_ACCEPT, NF_DROP, HookState
from pktemu.netfilter.hooks import Netfilter
from pktemu.netfilter.pyhooks import ip_packet, replace_packet

ETH_P_IP = 0x0800
QUEUE_MAX = 65535


class QueuedPacket:
    """One queued packet, as netfilterqueue's `Packet` presents it to its callback."""

    hw_protocol = ETH_P_IP

    def __init__(self, packet_id: int, payload: bytes, mark: int, hook: str) -> None:
        self.id = packet_id
        self.hook = hook
        self._payload = payload
        self._mark = mark
        self.verdict: int | None = None
        self.modified = False

    def get_payload(self) -> bytes:
        """The IPv4 packet, IP header and up."""
        return self._payload

    def set_payload(self, payload: bytes) -> None:
        """Replace the packet given back with the verdict (checksums are the caller's, as with
        libnetfilter_queue: the kernel takes the bytes as they are)."""
        if not isinstance(payload, (bytes, bytearray)):
            raise PktemuError(f"nfqueue: set_payload wants bytes, got {excerpt(payload)}")
        self._payload = bytes(payload)
        self.modified = True

    def get_mark(self) -> int:
        return self._mark

    def set_mark(self, mark: int) -> None:
        if isinstance(mark, bool) or not isinstance(mark, int) or not 0 <= mark <= 0xFFFFFFFF:
            raise PktemuError(f"nfqueue: set_mark wants a 32-bit mark, got {excerpt(mark)}")
        self._mark = mark

    def accept(self) -> None:
        self._give(NF_ACCEPT)

    def drop(self) -> None:
        self._give(NF_DROP)

    def _give(self, verdict: int) -> None:
        if self.verdict is not None:
            raise PktemuError(f"nfqueue: packet {self.id} already has its verdict")
        self.verdict = verdict

    def __repr__(self) -> str:
        return f"<QueuedPacket id={self.id} {len(self._payload)} bytes at {self.hook}>"


Handler = Callable[[QueuedPacket], object]


def bind_queue(nf: Netfilter, num: int, handler: Handler) -> None:
    """Attach `handler` to queue `num` of the namespace (nfq_create_queue + the callback)."""
    if isinstance(num, bool) or not isinstance(num, int) or not 0 <= num <= QUEUE_MAX:
        raise PktemuError(f"nfqueue: queue number {excerpt(num)} is not from 0 to {QUEUE_MAX}")
    if not callable(handler):
        raise PktemuError(f"nfqueue: handler {excerpt(handler)} is not callable")
    counter = [0]

    def deliver(frame: Frame, state: HookState) -> int:
        counter[0] += 1
        pkt = QueuedPacket(counter[0], ip_packet(frame), frame.mark, state.hook)
        handler(pkt)
        if state.trace is not None:          # `pktemu trace`: the queue, the packet id and the verdict
            extra = ", no verdict" if pkt.verdict is None else ", payload modified" if pkt.modified else ""
            state.trace.append({"table": "nfqueue", "chain": state.hook, "rulenum": None,
                                "rule": f"{num} (packet id {pkt.id}{extra})",
                                "verdict": "ACCEPT" if pkt.verdict == NF_ACCEPT else "DROP"})
        if pkt.verdict is None:
            frame.notes.append(f"nfqueue {num}: handler gave no verdict")
            return NF_DROP
        if pkt.verdict == NF_ACCEPT:
            frame.mark = pkt.get_mark()
            if pkt.modified:
                replace_packet(frame, pkt.get_payload())
        return pkt.verdict

    nf.queues[num] = deliver
