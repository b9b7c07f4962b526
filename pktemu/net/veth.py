"""veth pairs: what one end transmits, the other end receives.

The kernel's veth_xmit queues the frame on the peer's backlog (netif_rx), so the receiving
namespace processes it after the sender's softirq work is done; a small fixed delay on the
virtual clock models that queue and keeps the order of the kernel's captures.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from pktemu.net.device import NetDevice, register_kind
from pktemu.net.frame import Frame
from pktemu.sim import US

if TYPE_CHECKING:
    from pktemu.net.node import Node

VETH_DELAY_NS = 5 * US


class Veth(NetDevice):
    kind = "veth"

    def __init__(self, node: "Node", name: str, mac: bytes, mtu: int = 1500) -> None:
        super().__init__(node, name, mac, mtu)
        self.peer: Veth | None = None

    def transmit(self, frame: Frame) -> None:
        peer = self.peer
        if peer is None:
            self.node.drop(frame, f"veth {self.name}", "veth without a peer")
            return
        if not peer.up:
            # veth_xmit -> __dev_forward_skb: the peer is not IFF_UP, tx_dropped
            self.node.drop(frame, f"veth {self.name}", self._why(f"peer {peer.name} is down"))
            return
        if peer.node is not self.node:
            # skb_scrub_packet(): crossing into another namespace forgets ct, mark and bridge state
            frame.ct = frame.ctinfo = frame.nf_bridge = None
            frame.mark = 0
        self.node.sim.schedule(VETH_DELAY_NS, peer.receive, frame)


def connect(a: Veth, b: Veth) -> None:
    a.peer, b.peer = b, a


class Loopback(NetDevice):
    """`lo`: frames sent to it come straight back in (not captured: it is not a capture point)."""
    kind = "loopback"

    def transmit(self, frame: Frame) -> None:
        self.node.sim.schedule(0, self.receive, frame)


register_kind("veth", lambda node, name, mac, mtu, _params: Veth(node, name, mac, mtu))
