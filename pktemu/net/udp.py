"""UDP sockets of one namespace (net/ipv4/udp.c): bind, sendto, demux, port unreachable, ICMP errors.

Datagrams leave with DF set when they fit the path MTU and are fragmented by the sender when they
do not, as Linux sends them with the default PMTU discovery mode (IP_PMTUDISC_WANT), and with a
checksum that is never 0 on the wire (0 means "none", so 0xffff is sent).
ICMP errors reach a socket the way Linux reports them: an unconnected socket without IP_RECVERR
never hears of them (a resolver then times out), a connected one gets the hard errors.
"""
from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Callable

from pktemu.net import pmtu
from pktemu.net.frame import ETH_HLEN, Frame, checksum, int2ip
from pktemu.net.tcp_errno import ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, SockError, icmp_errno

if TYPE_CHECKING:
    import random

    from pktemu.net.node import Node

IPPROTO_UDP = 17
EPHEMERAL_LOW = 32768
EPHEMERAL_HIGH = 60999
MAX_PAYLOAD = 65507            # 65535 - 20 - 8

_HDR = struct.Struct("!HHHH")
_PSEUDO = struct.Struct("!IIBBH")

OnDatagram = Callable[[bytes, int, int], None]


def build(saddr: int, daddr: int, sport: int, dport: int, data: bytes) -> bytes:
    """A UDP datagram with its checksum (0 is sent as 0xffff)."""
    n = 8 + len(data)
    seg = bytearray(_HDR.pack(sport, dport, n, 0))
    seg += data
    c = checksum(_PSEUDO.pack(saddr, daddr, 0, IPPROTO_UDP, n) + seg) or 0xFFFF
    struct.pack_into("!H", seg, 6, c)
    return bytes(seg)


class UdpSocket:
    """A bound UDP socket; `connect()` fixes the peer (and lets hard ICMP errors through)."""

    def __init__(self, stack: "UdpStack", addr: int, port: int, on_datagram: OnDatagram | None,
                 on_error: Callable[[str], None] | None, recverr: bool) -> None:
        self.stack = stack
        self.addr = addr
        self.port = port
        self.on_datagram = on_datagram
        self.on_error = on_error
        self.recverr = recverr
        self.peer: tuple[int, int] | None = None
        self.open = True
        self.error: str | None = None
        #: IP_PKTINFO's ipi_addr: where the datagram being delivered was sent (a wildcard socket
        #: cannot tell otherwise; its replies leave from the route's source, not from there).
        self.pktinfo = 0
        #: a UDP tunnel's encap_rcv (setup_udp_tunnel_sock): each datagram, checked, goes to it at
        #: once as (frame, offset of the UDP payload), never to the socket's queue
        self.encap_rcv: Callable[[Frame, int], None] | None = None

    def __repr__(self) -> str:
        return f"<UdpSocket {int2ip(self.addr)}:{self.port}>"

    def connect(self, daddr: int, dport: int) -> None:
        """ip4_datagram_connect(): fixes the peer and, on a wildcard socket, the local address to
        the route's preferred source, so replies to another local address no longer reach it."""
        if not self.addr:
            saddr = self.stack.node.source_address(daddr)
            if saddr is not None:
                self.stack._rehash(self, saddr)
        self.peer = (daddr, dport)

    def send(self, data: bytes) -> None:
        if self.peer is None:
            raise SockError("EDESTADDRREQ", f"{self.stack.node.name}: udp send on unconnected {self!r}")
        self.sendto(data, *self.peer)

    def sendto(self, data: bytes, daddr: int, dport: int) -> None:
        """udp_sendmsg(): the source is the bound address, else the route's preferred source."""
        where = f"{self.stack.node.name}: udp sendto {int2ip(daddr)}:{dport} from port {self.port}"
        if not self.open:
            raise SockError("EBADF", where)
        if len(data) > MAX_PAYLOAD:
            raise SockError("EMSGSIZE", where)
        if not 0 < dport < 65536:
            raise SockError("EINVAL", where)
        node = self.stack.node
        saddr, mtu = node.source_and_mtu(daddr)         # no route: ENETUNREACH, even when bound
        if saddr is None:
            raise SockError(node.route_errno(daddr), where)
        saddr = self.addr or saddr
        seg = build(saddr, daddr, self.port, dport, bytes(data))
        df = mtu is None or 20 + len(seg) <= mtu        # IP_PMTUDISC_WANT: DF on what fits
        self.stack.node.ip_send(saddr, daddr, IPPROTO_UDP, seg, df=df, flow_saddr=self.addr)

    def close(self) -> None:
        if self.open:
            self.open = False
            self.stack._unbind(self)


class UdpStack:
    """All UDP sockets of one node; registers itself for IP protocol 17."""

    @property
    def rng(self) -> random.Random:
        """The ephemeral port stream, made on the first draw (most namespaces never draw)."""
        return self.node.sim.rng(f"udp:{self.node.name}")

    def __init__(self, node: "Node") -> None:
        self.node = node
        self._socks: dict[tuple[int, int], UdpSocket] = {}
        self._ports: dict[int, int] = {}
        node.register_protocol(IPPROTO_UDP, self.rcv, self.err)

    def bind(self, port: int, on_datagram: OnDatagram | None, addr: int = 0, *,
             on_error: Callable[[str], None] | None = None, recverr: bool = False) -> UdpSocket:
        """bind(); port 0 picks a free ephemeral port. `recverr` is IP_RECVERR (all ICMP errors)."""
        where = f"{self.node.name}: udp bind {int2ip(addr)}:{port}"
        if not 0 <= port < 65536:
            raise SockError("EINVAL", where)
        if addr and not self.node.is_local(addr):
            raise SockError("EADDRNOTAVAIL", where)
        if port == 0:
            port = self._ephemeral_port(where)
        else:
            for (a, p) in self._socks:
                if p == port and (a == addr or a == 0 or addr == 0):
                    raise SockError("EADDRINUSE", where)
        s = UdpSocket(self, addr, port, on_datagram, on_error, recverr)
        self._socks[(addr, port)] = s
        self._ports[port] = self._ports.get(port, 0) + 1
        return s

    def sockets(self) -> list[UdpSocket]:
        return list(self._socks.values())

    def lookup(self, daddr: int, dport: int) -> UdpSocket | None:
        return self._socks.get((daddr, dport)) or self._socks.get((0, dport))

    def rcv(self, frame: Frame) -> None:
        """__udp4_lib_rcv(): checksum, socket lookup, else ICMP port unreachable."""
        d = frame.data
        off = frame.l4off
        end = ETH_HLEN + frame.ip_len
        if end - off < 8:
            self._drop(frame, "short UDP header")
            return
        sport, dport, ulen, csum = _HDR.unpack_from(d, off)
        if ulen < 8 or off + ulen > end:
            self._drop(frame, "bad UDP length")
            return
        saddr, daddr = frame.saddr, frame.daddr
        if csum and checksum(_PSEUDO.pack(saddr, daddr, 0, IPPROTO_UDP, ulen) + bytes(d[off:off + ulen])):
            self._drop(frame, "bad UDP checksum")
            return
        s = self.lookup(daddr, dport)
        if s is not None and s.peer is not None and s.peer != (saddr, sport):
            s = None
        if s is None:
            self._drop(frame, f"no socket for port {dport}" + self.node.changed(f"port udp/{dport}"))
            bcast = getattr(self.node, "is_broadcast", None)
            if daddr >> 28 != 0xE and not (bcast is not None and bcast(daddr)):
                self.node.icmp_send(frame, 3, 3)
            return
        if s.encap_rcv is not None:
            s.encap_rcv(frame, off + 8)
            return
        data = bytes(d[off + 8:off + ulen])
        self.node.sim.schedule(0, self._deliver, s, data, saddr, sport, daddr)

    @staticmethod
    def _deliver(s: UdpSocket, data: bytes, saddr: int, sport: int, daddr: int) -> None:
        if s.open and s.on_datagram is not None:
            s.pktinfo = daddr
            s.on_datagram(data, saddr, sport)

    def err(self, icmp_type: int, code: int, mtu: int, quoted: bytes) -> None:
        """__udp4_lib_err(): reported only with IP_RECVERR, or hard errors on a connected socket. A
        "fragmentation needed" lowers the path MTU first, and is EMSGSIZE, a hard error."""
        if len(quoted) < 20:
            return
        ihl = (quoted[0] & 0x0F) * 4
        if len(quoted) < ihl + 4:
            return
        saddr = int.from_bytes(quoted[12:16], "big")
        daddr = int.from_bytes(quoted[16:20], "big")
        sport, dport = struct.unpack_from("!HH", quoted, ihl)
        s = self.lookup(saddr, sport)
        frag_needed = icmp_type == ICMP_DEST_UNREACH and code == ICMP_FRAG_NEEDED
        mapped = ("EMSGSIZE", True) if frag_needed else icmp_errno(icmp_type, code)
        if s is None or mapped is None:
            return
        if s.peer is not None and s.peer != (daddr, dport):
            return
        if frag_needed:
            pmtu.update(self.node, daddr, mtu)
        name, hard = mapped
        if not s.recverr and not (hard and s.peer is not None):
            return
        s.error = name
        if s.on_error is not None:
            self.node.sim.schedule(0, s.on_error, name)

    def _rehash(self, s: UdpSocket, addr: int) -> None:
        """udp_lib_rehash(): the socket keeps its port; bind() refused any other socket on it."""
        if self._socks.get((s.addr, s.port)) is s:
            del self._socks[(s.addr, s.port)]
            self._socks[(addr, s.port)] = s
        s.addr = addr

    def _unbind(self, s: UdpSocket) -> None:
        if self._socks.get((s.addr, s.port)) is s:
            del self._socks[(s.addr, s.port)]
            n = self._ports.get(s.port, 0) - 1
            if n > 0:
                self._ports[s.port] = n
            else:
                self._ports.pop(s.port, None)

    def _ephemeral_port(self, where: str) -> int:
        n = EPHEMERAL_HIGH - EPHEMERAL_LOW + 1
        start = self.rng.randrange(n)
        for i in range(n):
            port = EPHEMERAL_LOW + (start + i) % n
            if port not in self._ports:
                return port
        raise SockError("EADDRINUSE", f"{where}: no free ephemeral port")

    def _drop(self, frame: Frame, reason: str) -> None:
        drop = getattr(self.node, "drop", None)
        if drop is not None:
            drop(frame, "udp_rcv", reason)
