"""The TCP layer of one namespace: socket lookup, listeners, connect, RST for nobody, ICMP errors.

`TcpStack(node)` registers itself for IP protocol 6. Segments go to the connection with the
exact 4-tuple, else to a listener (LISTEN state processing), else they get tcp_v4_send_reset()'s
answer. The per-connection state machine is in `tcp_input` (receive) and `tcp_conn` (send,
timers, ACK policy, app API).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from pktemu.net import pmtu
from pktemu.net.frame import Frame, int2ip
from pktemu.net.tcp_conn import TcpConnection
from pktemu.net.tcp_const import ADVMSS, ESTABLISHED, SYN_RECV, SYN_SENT, TIME_WAIT, advmss
from pktemu.net.tcp_retrans import Skb
from pktemu.net.tcp_errno import (ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, ICMP_PARAMETERPROB, ICMP_TIME_EXCEEDED,
                                  SockError, icmp_errno)
from pktemu.net.tcp_input import negotiate, segment_arrives
from pktemu.net.tcp_wire import (ACK, FIN, IPPROTO_TCP, MASK32, RST, SYN, Seg, after, before, build, parse,
                                 reset_for)

if TYPE_CHECKING:
    import random

    from pktemu.net.node import Node

EPHEMERAL_LOW = 32768          # net.ipv4.ip_local_port_range
EPHEMERAL_HIGH = 60999

_SS_STATE = {ESTABLISHED: "ESTAB", SYN_SENT: "SYN-SENT", SYN_RECV: "SYN-RECV", TIME_WAIT: "TIME-WAIT"}


class Listener:
    """A socket in LISTEN: every completed handshake is handed to `on_accept`."""

    def __init__(self, stack: "TcpStack", addr: int, port: int,
                 on_accept: Callable[[TcpConnection], None]) -> None:
        self.stack = stack
        self.addr = addr
        self.port = port
        self.on_accept = on_accept
        self.open = True

    def close(self) -> None:
        if self.open:
            self.open = False
            self.stack._unlisten(self)

    def __repr__(self) -> str:
        return f"<Listener {int2ip(self.addr)}:{self.port}>"


class TcpStack:
    """All TCP sockets of one node."""

    @property
    def rng(self) -> random.Random:
        """The ISN, timestamp and port stream, made on the first draw (most namespaces never draw)."""
        return self.node.sim.rng(f"tcp:{self.node.name}")

    def __init__(self, node: "Node") -> None:
        self.node = node
        self._conns: dict[tuple[int, int, int, int], TcpConnection] = {}
        self._listeners: dict[tuple[int, int], Listener] = {}
        self._port_refs: dict[int, int] = {}
        self._isn_base: dict[tuple[int, int, int, int], int] = {}
        self._ts_base: dict[tuple[int, int], int] = {}
        node.register_protocol(IPPROTO_TCP, self.rcv, self.err)

    # ------------------------------------------------------------------ socket calls
    def listen(self, port: int, on_accept: Callable[[TcpConnection], None], addr: int = 0) -> Listener:
        """bind() + listen(); a port another listener covers is EADDRINUSE."""
        where = f"{self.node.name}: tcp listen on {int2ip(addr)}:{port}"
        if not 0 < port < 65536:
            raise SockError("EINVAL", where)
        for (a, p) in self._listeners:
            if p == port and (a == addr or a == 0 or addr == 0):
                raise SockError("EADDRINUSE", where)
        lst = Listener(self, addr, port, on_accept)
        self._listeners[(addr, port)] = lst
        self._port_ref(port, 1)
        return lst

    def connect(self, daddr: int, dport: int, *, sport: int | None = None, saddr: int | None = None,
                on_connected: Callable[[TcpConnection], None] | None = None,
                on_data: Callable[[bytes], None] | None = None,
                on_closed: Callable[[], None] | None = None,
                on_error: Callable[[str], None] | None = None) -> TcpConnection:
        """connect(): sends the SYN now; the outcome arrives through the callbacks."""
        where = f"{self.node.name}: tcp connect to {int2ip(daddr)}:{dport}"
        if saddr is None:
            saddr = self.node.source_address(daddr)
            if saddr is None:
                raise SockError("ENETUNREACH", where)
        elif not self.node.is_local(saddr):
            raise SockError("EADDRNOTAVAIL", f"{where} from {int2ip(saddr)}")
        elif self.node.source_address(daddr) is None:
            raise SockError("ENETUNREACH", where)       # ip_route_connect() even from a bound address
        if sport:
            if self.find_listener(saddr, sport) is not None:
                raise SockError("EADDRINUSE", f"{where} from port {sport}")
            if (saddr, sport, daddr, dport) in self._conns:
                raise SockError("EADDRNOTAVAIL", f"{where} from port {sport} (4-tuple in use)")
        else:
            sport = self._ephemeral_port(where)
        c = TcpConnection(self, saddr, sport, daddr, dport, active=True)
        c.on_connected = on_connected
        c.on_data, c.on_closed, c.on_error = on_data, on_closed, on_error
        self._hash(c)
        c.state = SYN_SENT
        skb = Skb(c.iss, syn=True)
        c.queue.append(skb)
        c.send_head = 1
        c.write_seq = (c.iss + 1) & MASK32
        c.transmit(skb)
        return c

    def isn(self, saddr: int, sport: int, daddr: int, dport: int) -> int:
        """secure_tcp_seq(): a secret per 4-tuple plus a 64 ns clock, so a reused 4-tuple's ISN
        grows (what lets a TIME_WAIT socket accept the new SYN)."""
        key = (saddr, sport, daddr, dport)
        base = self._isn_base.get(key)
        if base is None:
            base = self._isn_base[key] = self.rng.getrandbits(32)
        return (base + (self.node.sim.now >> 6)) & MASK32

    def ts_offset(self, saddr: int, daddr: int) -> int:
        """secure_tcp_ts_off(): one random timestamp offset per address pair."""
        off = self._ts_base.get((saddr, daddr))
        if off is None:
            off = self._ts_base[(saddr, daddr)] = self.rng.getrandbits(32)
        return off

    def route_mss(self, daddr: int) -> tuple[int, int]:
        """(dst_metric_advmss(), dst_mtu()) of the route to the peer: the MSS the socket announces,
        its device's MTU less 40 (1410 on a 1450 flannel pod), and the path MTU its own segments
        follow, the device's or less after a frag-needed."""
        r = self.node.route_output(daddr)
        dev = None if r is None else self.node.devices.get(r[0].dev)
        if dev is None:
            return ADVMSS, ADVMSS + 40
        return advmss(dev.mtu), pmtu.path_mtu(self.node, daddr, dev.mtu) if self.node.pmtu else dev.mtu

    def connections(self) -> list[TcpConnection]:
        return list(self._conns.values())

    def listeners(self) -> list[Listener]:
        return list(self._listeners.values())

    def ss(self) -> list[str]:
        """`ss -tan`-like lines for state dumps."""
        out = [f"LISTEN {int2ip(lst.addr) if lst.addr else '*'}:{lst.port} *:*"
               for lst in self._listeners.values()]
        for c in self._conns.values():
            st = _SS_STATE.get(c.state, c.state.replace("_", "-"))
            out.append(f"{st} {int2ip(c.saddr)}:{c.sport} {int2ip(c.daddr)}:{c.dport}")
        return out

    # ------------------------------------------------------------------ receive
    def rcv(self, frame: Frame) -> None:
        """tcp_v4_rcv()."""
        seg = parse(frame)
        if seg is None:
            self._drop(frame, "bad TCP header or checksum")
            return
        c = self._conns.get((seg.daddr, seg.dport, seg.saddr, seg.sport))
        if c is not None:
            isn = segment_arrives(c, seg)
            if isn is not None:
                lst = self.find_listener(seg.daddr, seg.dport)
                if lst is not None:
                    self._listen_rcv(lst, seg, isn)
            return
        lst = self.find_listener(seg.daddr, seg.dport)
        if lst is not None:
            self._listen_rcv(lst, seg)
            return
        self._drop(frame, f"no socket for port {seg.dport}" + self.node.changed(f"port tcp/{seg.dport}"))
        self.send_reset(seg)

    def _drop(self, frame: Frame, reason: str) -> None:
        drop = getattr(self.node, "drop", None)
        if drop is not None:
            drop(frame, "tcp_v4_rcv", reason)

    def _listen_rcv(self, lst: Listener, seg: Seg, isn: int | None = None) -> None:
        """LISTEN in tcp_rcv_state_process(): an ACK gets a RST, a clean SYN a SYN-ACK."""
        f = seg.flags
        if f & ACK:
            self.send_reset(seg)
            return
        if f & RST or not f & SYN or f & FIN:
            return
        c = TcpConnection(self, seg.daddr, seg.dport, seg.saddr, seg.sport, active=False, iss=isn)
        c.listener = lst
        negotiate(c, seg)
        self._hash(c)
        c.state = SYN_RECV
        skb = Skb(c.iss, syn=True)
        c.queue.append(skb)
        c.send_head = 1
        c.write_seq = (c.iss + 1) & MASK32
        c.transmit(skb)

    def find_listener(self, addr: int, port: int) -> Listener | None:
        return self._listeners.get((addr, port)) or self._listeners.get((0, port))

    def send_reset(self, seg: Seg) -> None:
        """tcp_v4_send_reset(): never for a RST, only for segments sent to a local address."""
        r = reset_for(seg)
        if r is None or not self.node.is_local(seg.daddr):
            return
        seq, ack, flags = r
        l4 = build(seg.daddr, seg.saddr, seg.dport, seg.sport, seq, ack, flags, 0)
        self.node.ctl_send(seg.daddr, seg.saddr, IPPROTO_TCP, l4, df=True, tos=seg.tos & ~3)

    # ------------------------------------------------------------------ ICMP errors
    def err(self, icmp_type: int, code: int, mtu: int, quoted: bytes) -> None:
        """tcp_v4_err(): hard errors end a handshake at once; later ones are only remembered. A
        "fragmentation needed" for a segment in flight shrinks the connection's segments."""
        if len(quoted) < 20:
            return
        ihl = (quoted[0] & 0x0F) * 4
        if len(quoted) < ihl + 8:
            return
        saddr = int.from_bytes(quoted[12:16], "big")
        daddr = int.from_bytes(quoted[16:20], "big")
        sport = int.from_bytes(quoted[ihl:ihl + 2], "big")
        dport = int.from_bytes(quoted[ihl + 2:ihl + 4], "big")
        seq = int.from_bytes(quoted[ihl + 4:ihl + 8], "big")
        c = self._conns.get((saddr, sport, daddr, dport))
        if icmp_type == ICMP_DEST_UNREACH and code == ICMP_FRAG_NEEDED:
            if c is not None and c.state not in (TIME_WAIT, SYN_RECV) and not (
                    before(seq, c.snd_una) or after(seq, c.snd_nxt)):
                c.mtu_reduced(mtu)
            return
        mapped = icmp_errno(icmp_type, code)
        if c is None or mapped is None or c.state == TIME_WAIT:
            return
        errno_name = mapped[0]
        if c.state == SYN_RECV and not c.active:
            abort = icmp_type in (ICMP_PARAMETERPROB, ICMP_TIME_EXCEEDED) or (
                icmp_type == ICMP_DEST_UNREACH and code in (0, 1))
            if seq == c.iss and abort:
                c.done()                    # tcp_req_err(): the request just goes away
            return
        if before(seq, c.snd_una) or after(seq, c.snd_nxt):
            return
        if c.state in (SYN_SENT, SYN_RECV):
            c.fail(errno_name)
        else:
            c.soft_err = errno_name

    # ------------------------------------------------------------------ tables
    def _hash(self, c: TcpConnection) -> None:
        self._conns[c.key] = c
        self._port_ref(c.sport, 1)

    def unhash(self, c: TcpConnection) -> None:
        if self._conns.get(c.key) is c:
            del self._conns[c.key]
            self._port_ref(c.sport, -1)

    def _unlisten(self, lst: Listener) -> None:
        if self._listeners.get((lst.addr, lst.port)) is lst:
            del self._listeners[(lst.addr, lst.port)]
            self._port_ref(lst.port, -1)

    def _port_ref(self, port: int, d: int) -> None:
        n = self._port_refs.get(port, 0) + d
        if n > 0:
            self._port_refs[port] = n
        else:
            self._port_refs.pop(port, None)

    def _ephemeral_port(self, where: str) -> int:
        """__inet_hash_connect(): a random start, even ports first, then odd ones."""
        n = EPHEMERAL_HIGH - EPHEMERAL_LOW + 1
        start = self.rng.randrange(n) & ~1
        for parity in (0, 1):
            for i in range(0, n, 2):
                port = EPHEMERAL_LOW + (start + i + parity) % n
                if port not in self._port_refs:
                    return port
        raise SockError("EADDRNOTAVAIL", f"{where}: no free ephemeral port")
