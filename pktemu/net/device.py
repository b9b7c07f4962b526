"""Network devices: what a packet socket (tcpdump) sees, and where received frames go next.

A device records every frame it transmits (dev_queue_xmit_nit) and receives
(__netif_receive_skb) on its capture taps, then hands received frames to its rx handler: the
bridge when it is a bridge port, the node's protocol stack otherwise.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Protocol

from pktemu.net.frame import BROADCAST_MAC, Frame, bytes2mac, int2ip

if TYPE_CHECKING:
    from pktemu.net.node import Node

PACKET_HOST = "host"
PACKET_BROADCAST = "broadcast"
PACKET_MULTICAST = "multicast"
PACKET_OTHERHOST = "otherhost"


class Tap(Protocol):
    def record(self, ts_ns: int, frame: Frame, direction: str) -> None: ...


@dataclass(frozen=True)
class IfAddr:
    """An IPv4 address on a device (`ip addr`): a prefix, or a /32 with a point-to-point peer."""
    addr: int
    plen: int
    peer: int | None = None

    def __str__(self) -> str:
        s = f"{int2ip(self.addr)}"
        return s + (f" peer {int2ip(self.peer)}/32" if self.peer is not None else f"/{self.plen}")


class NetDevice:
    """A net_device in one namespace. Subclasses implement `transmit` (the driver)."""

    kind = "device"

    def __init__(self, node: "Node", name: str, mac: bytes, mtu: int = 1500) -> None:
        self.node = node
        self.name = name
        self.mac = mac
        self.mtu = mtu
        self.addresses: list[IfAddr] = []
        self.taps: list[Tap] = []
        self.rx_handler: Callable[[NetDevice, Frame], None] | None = None
        self.up = True
        #: lower layer up (a veth whose peer is down has none: NO-CARRIER); frames sent
        #: without it never reach the driver nor tcpdump (linkwatch put in the noop qdisc)
        self.carrier = True
        #: the `ip link set` that last changed up/carrier here ("ip link set eth0 down at 2.000 s")
        self.link_why = ""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.node.name}/{self.name} {bytes2mac(self.mac)}>"

    def pkt_type(self, frame: Frame) -> str:
        dst = frame.data[0:6]
        if dst == self.mac:
            return PACKET_HOST
        if dst == BROADCAST_MAC:
            return PACKET_BROADCAST
        if dst[0] & 1:
            return PACKET_MULTICAST
        return PACKET_OTHERHOST

    def xmit(self, frame: Frame) -> None:
        """dev_queue_xmit: the taps see the frame as sent, then the driver takes it."""
        if not self.up or not self.carrier:
            what = "down" if not self.up else "without carrier (NO-CARRIER)"
            self.node.drop(frame, f"dev {self.name}", self._why(f"transmit on a device that is {what}"))
            return
        for tap in self.taps:
            tap.record(self.node.sim.now, frame, "out")
        self.transmit(frame)

    def _why(self, reason: str) -> str:
        return f"{reason} ({self.link_why})" if self.link_why else reason

    def transmit(self, frame: Frame) -> None:
        raise NotImplementedError

    def open(self) -> None:
        """ndo_open, once the namespace's stacks exist (a tunnel binds its UDP socket here)."""

    def receive(self, frame: Frame) -> None:
        """__netif_receive_skb: taps, then the rx handler (bridge port) or the node's stack."""
        if not self.up:
            self.node.drop(frame, f"dev {self.name}", self._why("received on a device that is down"))
            return
        for tap in self.taps:
            tap.record(self.node.sim.now, frame, "in")
        if self.rx_handler is not None:
            self.rx_handler(self, frame)
        else:
            self.node.netif_receive(self, frame)


#: `ip link add NAME type KIND`: KIND -> factory(node, name, mac, mtu, params), for topology interfaces
DeviceFactory = Callable[["Node", str, bytes, int, dict[str, Any]], NetDevice]
DEVICE_KINDS: dict[str, DeviceFactory] = {}


def register_kind(kind: str, factory: DeviceFactory) -> None:
    DEVICE_KINDS[kind] = factory
