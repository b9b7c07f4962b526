"""A stand-in for pktemu.net.node.Node (only the interface the transport layer uses) and its own checks.

FakeNet joins nodes by destination address with a fixed one-way delay on one Simulator; every
IP datagram sent is logged as (time, sender, bytes) so tests can dissect what went on the wire.
"""
from __future__ import annotations

import struct
from typing import Callable

from scapy.layers.inet import IP, TCP

from pktemu.net.frame import ETH_HLEN, Frame, checksum, int2ip, ip2int
from pktemu.net.tcp import TcpStack
from pktemu.net.udp import UdpStack
from pktemu.sim import US, Simulator

_ETH = b"\x02\x00\x00\x00\x00\x01" + b"\x02\x00\x00\x00\x00\x02" + b"\x08\x00"


class FakeNet:
    def __init__(self, seed: int = 1, delay: int = 20 * US) -> None:
        self.sim = Simulator(seed)
        self.delay = delay
        self.nodes: dict[int, FakeNode] = {}
        self.log: list[tuple[int, str, bytes]] = []
        #: called with the IP bytes of every datagram; returning False drops it on the wire
        self.filter: Callable[[bytes], bool] | None = None
        self.unroutable: set[int] = set()

    def add(self, name: str, addr: str) -> "FakeNode":
        n = FakeNode(self, name, ip2int(addr))
        self.nodes[n.addr] = n
        return n

    def deliver(self, sender: "FakeNode", ipb: bytes) -> None:
        self.log.append((self.sim.now, sender.name, ipb))
        if self.filter is not None and not self.filter(ipb):
            return
        dst = self.nodes.get(int.from_bytes(ipb[16:20], "big"))
        if dst is not None:
            self.sim.schedule(self.delay, dst.receive, ipb)

    def packets(self, proto: int = 6) -> list[tuple[int, str, IP]]:
        return [(t, who, IP(b)) for t, who, b in self.log if b[9] == proto]


class FakeNode:
    def __init__(self, net: FakeNet, name: str, addr: int) -> None:
        self.net = net
        self.sim = net.sim
        self.name = name
        self.addr = addr
        self.protocols: dict[int, tuple[Callable[[Frame], None], Callable[[int, int, bytes], None] | None]]
        self.protocols = {}
        self.dropped: list[tuple[str, str]] = []
        self._ip_id = 0x1000
        self.tcp = TcpStack(self)    # type: ignore[arg-type]
        self.udp = UdpStack(self)    # type: ignore[arg-type]

    def source_address(self, daddr: int) -> int | None:
        return None if daddr in self.net.unroutable else self.addr

    def source_and_mtu(self, daddr: int) -> tuple[int | None, int | None]:
        return self.source_address(daddr), None

    def is_local(self, addr: int) -> bool:
        return addr == self.addr

    def route_output(self, daddr: int) -> None:
        """No routes or devices here: the TCP stack then takes the MSS of an MTU of 1500."""
        return None

    def register_protocol(self, proto: int, rcv: Callable[[Frame], None],
                          err: Callable[[int, int, int, bytes], None] | None = None) -> None:
        self.protocols[proto] = (rcv, err)

    def route_errno(self, daddr: int) -> str:
        return "ENETUNREACH"

    def ip_send(self, saddr: int, daddr: int, proto: int, l4: bytes, *, df: bool = True,
                ttl: int = 64, tos: int = 0, flow_saddr: int | None = None) -> None:
        self._ip_id = (self._ip_id + 1) & 0xFFFF
        hdr = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, tos, 20 + len(l4), self._ip_id,
                                    0x4000 if df else 0, ttl, proto, 0, saddr.to_bytes(4, "big"),
                                    daddr.to_bytes(4, "big")))
        struct.pack_into("!H", hdr, 10, checksum(hdr))
        self.net.deliver(self, bytes(hdr) + l4)

    def ctl_send(self, saddr: int, daddr: int, proto: int, l4: bytes, *, df: bool = True,
                 ttl: int = 64, tos: int = 0) -> None:
        self.ip_send(saddr, daddr, proto, l4, df=df, ttl=ttl, tos=tos)

    def icmp_send(self, frame: Frame, icmp_type: int, code: int) -> None:
        quoted = frame.ip_bytes()[:548]
        body = bytearray(struct.pack("!BBHI", icmp_type, code, 0, 0) + quoted)
        struct.pack_into("!H", body, 2, checksum(body))
        self.ip_send(self.addr, frame.saddr, 1, bytes(body), df=False)

    def changed(self, *keys: str) -> str:
        return ""                  # no timeline changes this node

    def drop(self, frame: Frame, where: str, reason: str) -> None:
        self.dropped.append((where, reason))

    def receive(self, ipb: bytes) -> None:
        frame = as_frame(ipb)
        proto = ipb[9]
        if proto == 1:
            off = frame.l4off
            quoted = bytes(frame.data[off + 8:ETH_HLEN + frame.ip_len])
            h = self.protocols.get(quoted[9])
            if h is not None and h[1] is not None:
                mtu = int.from_bytes(frame.data[off + 6:off + 8], "big")
                h[1](frame.data[off], frame.data[off + 1], mtu, quoted)
            return
        h = self.protocols.get(proto)
        if h is not None:
            h[0](frame)


def as_frame(ipb: bytes) -> Frame:
    return Frame(_ETH + ipb)


def reject(net: FakeNet, gw: "FakeNode", dst: str, icmp_type: int = 3, code: int = 3) -> None:
    """Make `gw` answer everything sent to `dst` with an ICMP error, as an iptables REJECT would."""
    target = ip2int(dst)

    def f(ipb: bytes) -> bool:
        if int.from_bytes(ipb[16:20], "big") != target:
            return True
        net.sim.schedule(5 * US, gw.icmp_send, as_frame(ipb), icmp_type, code)
        return False
    net.filter = f


def tcp_summary(net: FakeNet, client: str) -> list[tuple[str, str, int, int, int, int]]:
    """(direction, flags, ip_len, payload, relative seq, relative ack) as the oracle summary shows them."""
    pkts = [(who, p) for _t, who, p in net.packets(6)]
    isn: dict[str, int] = {}
    for who, p in pkts:
        isn.setdefault(who, p[TCP].seq)
    out = []
    for who, p in pkts:
        other = next((k for k in isn if k != who), None)
        t = p[TCP]
        ack = (t.ack - isn[other]) & 0xFFFFFFFF if other is not None and t.flags & 0x10 else 0
        out.append(("c>s" if who == client else "s>c", str(t.flags), p.len, len(t.payload),
                    (t.seq - isn[who]) & 0xFFFFFFFF, ack))
    return out


# ---------------------------------------------------------------------------- the fake's own checks
def test_fake_node_sends_valid_ipv4_and_tcp_checksums() -> None:
    net = FakeNet()
    a = net.add("a", "10.0.0.1")
    net.add("b", "10.0.0.2")
    a.tcp.connect(ip2int("10.0.0.2"), 80, sport=40000)
    net.sim.run()
    ip = IP(net.log[0][2])
    assert int2ip(a.addr) == ip.src
    chk = ip.chksum
    del ip.chksum
    assert IP(bytes(ip)).chksum == chk
    raw = net.log[0][2]
    pseudo = raw[12:20] + bytes([0, 6]) + struct.pack("!H", len(raw) - 20)
    assert checksum(pseudo + raw[20:]) == 0
