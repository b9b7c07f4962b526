"""The userspace proxy's data path (pkg/proxy/userspace proxysocket.go): a TCP accept-and-dial
relay and a UDP relay, on the node's own sockets, so the pcaps show two connections per request.

TCP: the client's connection (REDIRECTed to the proxy port) is accepted; kube-proxy dials the
endpoint the round-robin balancer picks, with the upstream dial timeouts (250 ms, 500 ms, 1 s,
2 s), moving to the next endpoint after a failed dial; bytes are copied both ways, an EOF on one
side half-closes the other (io.Copy then CloseWrite), and both are closed once both directions
ended. A client whose Service has no endpoint left is closed at once.
UDP: per client address a socket connected to the chosen endpoint; replies go back from the
proxy port; a client idle for `udp_idle_timeout` is forgotten.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from pktemu.net.frame import int2ip, ip2int
from pktemu.net.tcp_errno import SockError
from pktemu.sim import MS, SECOND

if TYPE_CHECKING:
    from pktemu.net.node import Node
    from pktemu.net.tcp_conn import TcpConnection
    from pktemu.net.udp import UdpSocket

DIAL_TIMEOUTS = (250 * MS, 500 * MS, 1 * SECOND, 2 * SECOND)     # EndpointDialTimeouts

#: next_endpoint(client_ip, reset) -> "ip:port" or None (the Service has no endpoints)
Picker = Callable[[str, bool], "str | None"]


class TcpRelay:
    """One proxied TCP connection: the accepted client side and the dialled endpoint side."""

    def __init__(self, node: "Node", client: "TcpConnection", pick: Picker,
                 on_end: Callable[["TcpRelay"], None]) -> None:
        self.node = node
        self.client = client
        self.pick = pick
        self.on_end = on_end
        self.backend: TcpConnection | None = None
        self.pending = bytearray()
        self.eof = {"client": False, "backend": False}
        self.closed = False
        self._timer: Any = None
        client.on_data, client.on_closed, client.on_error = self._from_client, self._client_eof, self._failed
        self._dial(0)

    def _dial(self, attempt: int) -> None:
        ep = self.pick(int2ip(self.client.daddr), attempt > 0) if attempt < len(DIAL_TIMEOUTS) else None
        if ep is None:
            self.close()
            return
        ip, _, port = ep.rpartition(":")
        try:
            self.backend = self.node.tcp.connect(ip2int(ip), int(port), on_connected=self._connected,
                                                 on_data=self._from_backend, on_closed=self._backend_eof,
                                                 on_error=lambda e, a=attempt: self._dial_failed(a))
        except SockError:
            self._dial_failed(attempt)
            return
        self._timer = self.node.sim.timer(DIAL_TIMEOUTS[attempt], self._dial_timeout, attempt)

    def _dial_timeout(self, attempt: int) -> None:
        if self.backend is not None:
            self.backend.close()
        self._dial_failed(attempt)

    def _dial_failed(self, attempt: int) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.backend = None
        if not self.closed:
            self._dial(attempt + 1)

    def _connected(self, conn: "TcpConnection") -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        conn.on_error = self._failed
        if self.pending:
            conn.send(bytes(self.pending))
            self.pending.clear()
        if self.eof["client"]:
            conn.shutdown()

    def _from_client(self, data: bytes) -> None:
        b = self.backend
        if b is not None and self._timer is None:
            b.send(data)
        else:
            self.pending.extend(data)

    def _from_backend(self, data: bytes) -> None:
        try:
            self.client.send(data)
        except SockError:
            self.close()

    def _client_eof(self) -> None:
        self.eof["client"] = True
        if self.backend is not None and self._timer is None:
            self.backend.shutdown()
        self._maybe_done()

    def _backend_eof(self) -> None:
        self.eof["backend"] = True
        self.client.shutdown()
        self._maybe_done()

    def _maybe_done(self) -> None:
        if self.eof["client"] and self.eof["backend"]:
            self.close()

    def _failed(self, _errno: str) -> None:
        self.close()

    def close(self) -> None:
        """Both sockets closed, as proxyTCP does when the copies end (or the process exits)."""
        if self.closed:
            return
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
        for conn in (self.client, self.backend):
            if conn is not None:
                conn.close()
        self.on_end(self)


class UdpRelay:
    """The UDP proxy socket of one service port and its active clients."""

    def __init__(self, node: "Node", port: int, pick: Picker, idle_timeout: int) -> None:
        self.node = node
        self.pick = pick
        self.idle_timeout = idle_timeout
        self.sock: UdpSocket = node.udp.bind(port, self._from_client)
        self.clients: dict[tuple[int, int], tuple[UdpSocket, Any]] = {}

    def _from_client(self, data: bytes, saddr: int, sport: int) -> None:
        key = (saddr, sport)
        entry = self.clients.get(key)
        if entry is None:
            ep = self.pick(int2ip(saddr), False)
            if ep is None:
                return
            ip, _, port = ep.rpartition(":")
            out = self.node.udp.bind(0, lambda d, a, p, k=key: self._from_backend(k, d))
            out.connect(ip2int(ip), int(port))
            entry = (out, None)
        out, timer = entry
        if timer is not None:
            timer.cancel()
        self.clients[key] = (out, self.node.sim.timer(self.idle_timeout, self._idle, key))
        out.send(data)

    def _from_backend(self, key: tuple[int, int], data: bytes) -> None:
        entry = self.clients.get(key)
        if entry is None or not self.sock.open:
            return
        self.sock.sendto(data, *key)
        entry[1].cancel()
        self.clients[key] = (entry[0], self.node.sim.timer(self.idle_timeout, self._idle, key))

    def _idle(self, key: tuple[int, int]) -> None:
        entry = self.clients.pop(key, None)
        if entry is not None:
            entry[0].close()

    def close(self) -> None:
        self.sock.close()
        for out, timer in self.clients.values():
            out.close()
            if timer is not None:
                timer.cancel()
        self.clients.clear()
