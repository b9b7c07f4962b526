"""IPv4 fragmentation and reassembly (net/ipv4/ip_fragment.c, ip_output.c's ip_do_fragment).

Reassembly happens at local delivery, before the INPUT hook, as ip_local_deliver() does, and
before conntrack in a namespace that tracks connections (pktemu.netfilter.defrag); a queue that
is not complete within ipfrag_time (30 s) is dropped (for a local delivery the kernel then sends
ICMP time exceeded, code 1, when it has the first fragment). Fragmentation splits a datagram
larger than the device MTU, or than the largest fragment a reassembled one was made of, without
DF, into 8-byte aligned pieces that copy the header.
"""
from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from pktemu.net.frame import ETH_HLEN, Frame, checksum
from pktemu.sim import SECOND, Timer

if TYPE_CHECKING:
    from pktemu.net.node import Node

IPFRAG_TIME = 30 * SECOND
_MF, _OFFSET = 0x2000, 0x1FFF


def _key(frame: Frame) -> tuple[int, int, int, int]:
    return frame.saddr, frame.daddr, frame.proto, frame.ip_id


#: frame.meta key: the largest fragment a reassembled datagram was made of (IPCB's frag_max_size),
#: which a forwarded one is fragmented again to (ip_do_fragment, br_nf_dev_queue_xmit)
FRAG_MAX = "frag_max_size"


class FragQueue:
    __slots__ = ("first", "length", "parts", "timer", "max_size")

    def __init__(self, timer: Timer) -> None:
        self.parts: dict[int, bytes] = {}     # offset -> payload
        self.length: int | None = None        # total payload length, known from the last fragment
        self.first: Frame | None = None
        self.timer = timer                    # ipfrag_time expiry, armed when the first piece arrives
        self.max_size = 0                     # the largest fragment's IP length


class Reassembler:
    """One namespace's fragment queues (ipq)."""

    def __init__(self, node: "Node") -> None:
        self.node = node
        self.queues: dict[tuple[int, int, int, int], FragQueue] = {}

    def add(self, frame: Frame) -> Frame | None:
        """Queue a fragment; returns the whole datagram once every piece is there."""
        key = _key(frame)
        q = self.queues.get(key)
        if q is None:
            q = self.queues[key] = FragQueue(self.node.sim.timer(IPFRAG_TIME, self._expire, key))
        word = struct.unpack_from("!H", frame.data, ETH_HLEN + 6)[0]
        off = (word & _OFFSET) * 8
        ihl = frame.l4off - ETH_HLEN
        payload = bytes(frame.data[frame.l4off:ETH_HLEN + frame.ip_len])
        q.parts.setdefault(off, payload)
        q.max_size = max(q.max_size, frame.ip_len)
        if off == 0:
            q.first = frame
        if not word & _MF:
            q.length = off + len(payload)
        if q.length is None or q.first is None:
            return None
        data = bytearray()
        for o in sorted(q.parts):
            if o > len(data):
                return None                   # a hole: wait for the missing piece
            data[o:] = q.parts[o]
        if len(data) < q.length:
            return None
        q.timer.cancel()
        del self.queues[key]
        first = q.first
        hdr = bytearray(first.data[ETH_HLEN:ETH_HLEN + ihl])
        struct.pack_into("!HHH", hdr, 2, ihl + q.length, first.ip_id, 0)
        struct.pack_into("!H", hdr, 6, struct.unpack_from("!H", hdr, 6)[0] & 0x4000)
        hdr[10:12] = b"\x00\x00"
        struct.pack_into("!H", hdr, 10, checksum(hdr))
        whole = Frame(bytes(first.data[:ETH_HLEN]) + bytes(hdr) + bytes(data[:q.length]), first.mark)
        whole.ct, whole.ctinfo, whole.nf_bridge = first.ct, first.ctinfo, first.nf_bridge
        whole.note(f"reassembled {len(q.parts)} fragments, {ihl + q.length} bytes")
        whole.meta[FRAG_MAX] = q.max_size
        return whole

    def _expire(self, key: tuple[int, int, int, int]) -> None:
        q = self.queues.pop(key, None)
        if q is not None and q.first is not None:
            self.expired(q.first)

    def expired(self, first: Frame) -> None:
        """ip_expire: the queue is freed, and time exceeded goes back for a local delivery's."""
        self.node.drop(first, "ip_defrag", "reassembly timed out (ipfrag_time 30 s)")
        self.node.icmp_send(first, 11, 1)


def output_mtu(frame: Frame, mtu: int) -> int:
    """ip_do_fragment's MTU: the device's, or a reassembled datagram's largest fragment if less."""
    most = frame.meta.get(FRAG_MAX)
    return most if most is not None and most < mtu else mtu


def fragment(frame: Frame, mtu: int) -> list[Frame]:
    """ip_do_fragment for a datagram without DF: pieces of at most `mtu` bytes, in order."""
    ihl = frame.l4off - ETH_HLEN
    hdr = bytes(frame.data[ETH_HLEN:ETH_HLEN + ihl])
    payload = bytes(frame.data[frame.l4off:ETH_HLEN + frame.ip_len])
    word = struct.unpack_from("!H", hdr, 6)[0]
    base_off, more = (word & _OFFSET) * 8, word & _MF
    step = (mtu - ihl) // 8 * 8
    out: list[Frame] = []
    for start in range(0, len(payload), step):
        piece = payload[start:start + step]
        last = start + step >= len(payload)
        h = bytearray(hdr)
        flags = 0 if last and not more else _MF
        struct.pack_into("!H", h, 2, ihl + len(piece))
        struct.pack_into("!H", h, 6, flags | ((base_off + start) // 8))
        h[10:12] = b"\x00\x00"
        struct.pack_into("!H", h, 10, checksum(h))
        f = Frame(bytes(frame.data[:ETH_HLEN]) + bytes(h) + piece, frame.mark)
        f.ct, f.ctinfo, f.nf_bridge = frame.ct, frame.ctinfo, frame.nf_bridge
        f.notes = list(frame.notes) if not out else []
        out.append(f)
    return out
