"""nf_defrag_ipv4: a namespace that tracks connections reassembles IPv4 fragments before conntrack.

Conntrack, NAT and every rule see whole datagrams: the hook at PREROUTING and OUTPUT, priority
-400 (NF_IP_PRI_CONNTRACK_DEFRAG), holds each fragment (NF_STOLEN) until the last one makes the
datagram whole, which then goes on in its place; a forwarded one is fragmented again on the way
out, to the largest fragment it was made of (IPCB's frag_max_size; pktemu.net.ip_fragment).
Fragments arriving out of order are taken as well as in order. Linux 6.18 did so through a
router with conntrack (tests/test_kernel_defrag.py): its FORWARD rules counted one 2,028-byte
datagram for three fragments, which left in order whatever order they came in. A queue that
times out (ipfrag_time, 30 s) is freed without an ICMP error (frag_expire_skip_icmp).
"""
from __future__ import annotations

import struct
from typing import Any

from pktemu.net.frame import ETH_HLEN, Frame
from pktemu.net.ip_fragment import Reassembler
from pktemu.netfilter.core import NF_ACCEPT, NF_STOLEN, HookState

NF_IP_PRI_CONNTRACK_DEFRAG = -400
_H = struct.Struct("!H")


class Defrag(Reassembler):
    """The conntrack users' fragment queues of one namespace (IP_DEFRAG_CONNTRACK_IN/OUT)."""

    def __init__(self, node: Any, user: str) -> None:
        super().__init__(node)
        self.user = user

    def hook(self, frame: Frame, state: HookState) -> int:
        if not frame.is_ipv4 or not _H.unpack_from(frame.data, ETH_HLEN + 6)[0] & 0x3FFF:
            return NF_ACCEPT
        whole = self.add(frame)
        if whole is None:
            return NF_STOLEN
        frame.data = whole.data
        frame.ct = frame.ctinfo = None
        frame.meta.update(whole.meta)
        frame.note(f"nf_defrag: {whole.notes[-1]}")
        return NF_ACCEPT

    def expired(self, first: Frame) -> None:
        self.node.drop(first, f"nf_defrag {self.user}", "reassembly timed out (ipfrag_time 30 s)")
