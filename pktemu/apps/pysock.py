"""Sockets for `python` apps: TCP and UDP on a node's emulated stacks, as operations to `yield`.

A user's app is a generator; a call that would block (`connect`, `accept`, `recv`, `recvfrom`,
`sleep`) returns an `Op` that the app yields, and the driver (pktemu.apps.python) resumes the
generator with the op's value, or throws its error in, once it completes on the virtual clock.
Calls that never block in the kernel either (`send`, `sendto`, `close`) act at once and return
an op that is already done, so yielding them is optional. Errors are Python's own OSError
subclasses with the errno Linux reports (ConnectionRefusedError, errno ECONNREFUSED).
"""
from __future__ import annotations

import builtins
import errno as errno_mod
import os
from collections import deque
from typing import TYPE_CHECKING, Any, Callable

from pktemu.net.frame import int2ip, ip2int
from pktemu.net.tcp_conn import TcpConnection
from pktemu.net.tcp_errno import ERRNO, SockError
from pktemu.sim import SECOND
from pktemu.units import parse_ipv4

if TYPE_CHECKING:
    from pktemu.net.node import Node
    from pktemu.net.tcp import Listener
    from pktemu.net.udp import UdpSocket
    from pktemu.sim import Timer

Address = tuple[str, int]


def os_error(name: str) -> OSError:
    """The exception Python raises for errno `name` (ECONNREFUSED -> ConnectionRefusedError)."""
    num = getattr(errno_mod, name, 0)
    num, text, cls = ERRNO.get(name, (num, os.strerror(num) if num else name, "OSError"))
    exc_type = getattr(builtins, cls, OSError)
    return exc_type(num, text)  # type: ignore[no-any-return]


def timed_out() -> TimeoutError:
    return TimeoutError(errno_mod.ETIMEDOUT, "timed out")


def errno_name(exc: BaseException) -> str | None:
    """ECONNREFUSED for a ConnectionRefusedError, None for an exception without an errno."""
    num = getattr(exc, "errno", None)
    return errno_mod.errorcode.get(num) if isinstance(exc, OSError) and isinstance(num, int) else None


def parse_address(addr: Any, what: str) -> tuple[int, int]:
    """(address, port) with a dotted-quad address; a user mistake is a ValueError/TypeError."""
    if not isinstance(addr, tuple) or len(addr) != 2:
        raise TypeError(f"{what}: expected an (address, port) tuple, got {addr!r}")
    host, port = addr
    try:
        ip = ip2int(str(parse_ipv4(host)))
    except ValueError:
        raise ValueError(f"{what}: {host!r} is not an IPv4 address (no name service here: "
                         "resolve names with a DNS query)") from None
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise ValueError(f"{what}: {port!r} is not a port 0-65535")
    return ip, port


class Op:
    """A pending operation; the driver sets `waiter`, called once when the op completes."""

    __slots__ = ("done", "value", "error", "waiter", "timer", "on_cancel")

    def __init__(self) -> None:
        self.done = False
        self.value: Any = None
        self.error: BaseException | None = None
        self.waiter: Callable[[Op], None] | None = None
        self.timer: Timer | None = None
        self.on_cancel: Callable[[], None] | None = None

    @classmethod
    def completed(cls, value: Any = None, error: BaseException | None = None) -> "Op":
        op = cls()
        op.done, op.value, op.error = True, value, error
        return op

    def resolve(self, value: Any = None) -> None:
        self._finish(value, None)

    def fail(self, error: BaseException) -> None:
        self._finish(None, error)

    def _finish(self, value: Any, error: BaseException | None) -> None:
        if self.done:
            return
        self.done, self.value, self.error = True, value, error
        if self.timer is not None:
            self.timer.cancel()
        if self.waiter is not None:
            self.waiter(self)

    def expire_after(self, node: "Node", timeout: float | None) -> "Op":
        """Fail with TimeoutError after `timeout` virtual seconds (None: wait for ever)."""
        if timeout is not None and not self.done:
            if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 <= timeout < 1e9:
                raise ValueError(f"timeout must be a number of seconds, got {timeout!r}")
            self.timer = node.sim.timer(round(timeout * SECOND), self._expire)
        return self

    def _expire(self) -> None:
        self.timer = None
        if self.on_cancel is not None:
            self.on_cancel()
        self.fail(timed_out())


class Socket:
    """A socket of a `python` app: `kind` "tcp" or "udp"; created by `api.socket()`."""

    def __init__(self, node: "Node", kind: str, owner: list["Socket"]) -> None:
        if kind not in ("tcp", "udp"):
            raise ValueError(f"socket kind must be 'tcp' or 'udp', got {kind!r}")
        self.node = node
        self.kind = kind
        self.local: tuple[int, int] = (0, 0)
        self.bound = False
        self.closed = False
        self.conn: TcpConnection | None = None
        self.listener: Listener | None = None
        self.udp: UdpSocket | None = None
        self.peer: tuple[int, int] | None = None
        self._rbuf = bytearray()
        self._eof = False
        self._error: str | None = None
        self._accepted: deque[Socket] = deque()
        self._datagrams: deque[tuple[bytes, Address]] = deque()
        self._readers: deque[tuple[Op, int]] = deque()
        self._owner = owner
        owner.append(self)

    def __repr__(self) -> str:
        ip, port = self.local
        return f"<{self.kind} socket {int2ip(ip)}:{port} of {self.node.name}>"

    # ------------------------------------------------------------------ names
    def getsockname(self) -> Address:
        ip, port = self.local
        return int2ip(ip), port

    def getpeername(self) -> Address:
        if self.peer is None:
            raise os_error("ENOTCONN")
        return int2ip(self.peer[0]), self.peer[1]

    def bind(self, addr: Address) -> None:
        """bind(): an address of this node (or 0.0.0.0) and a port (0: an ephemeral one at use)."""
        self._check_open()
        if self.bound:
            raise os_error("EINVAL")
        ip, port = parse_address(addr, "bind")
        if ip and not self.node.is_local(ip):
            raise os_error("EADDRNOTAVAIL")
        if self.kind == "udp":
            self._udp_bind(ip, port)
        self.local, self.bound = (ip, port), True

    # ------------------------------------------------------------------ TCP
    def listen(self, backlog: int = 128) -> None:
        self._need("tcp", "listen")
        self._check_open()
        ip, port = self.local
        if not port:
            raise os_error("EINVAL")       # pktemu picks no ephemeral port for a listener
        self.listener = _call(lambda: self.node.tcp.listen(port, self._on_accept, addr=ip))

    def accept(self, timeout: float | None = None) -> Op:
        """An op giving (socket, (address, port)) for the next established connection."""
        self._need("tcp", "accept")
        if self.listener is None:
            return Op.completed(error=os_error("EINVAL"))
        op = Op()
        self._readers.append((op, 0))
        op.on_cancel = lambda: self._forget(op)
        self._serve()
        return op.expire_after(self.node, timeout)

    def connect(self, addr: Address, timeout: float | None = None) -> Op:
        """TCP: an op done once established. UDP: fixes the peer at once."""
        self._check_open()
        daddr, dport = parse_address(addr, "connect")
        if self.kind == "udp":
            if not self.bound:
                self._udp_bind(0, 0)
            assert self.udp is not None
            self.udp.connect(daddr, dport)
            self.peer = (daddr, dport)
            return Op.completed()
        if self.conn is not None or self.listener is not None:
            return Op.completed(error=os_error("EISCONN"))
        ip, port = self.local
        op = Op()

        def on_error(name: str) -> None:
            op.fail(os_error(name))
            self._on_error(name)

        try:
            conn = self.node.tcp.connect(daddr, dport, sport=port or None, saddr=ip or None,
                                         on_connected=lambda _c: op.resolve(),
                                         on_data=self._on_data, on_closed=self._on_eof, on_error=on_error)
        except SockError as e:
            return Op.completed(error=os_error(e.errno_name))
        self._attach(conn)
        op.on_cancel = conn.close
        return op.expire_after(self.node, timeout)

    def _attach(self, conn: TcpConnection) -> None:
        self.conn = conn
        self.local, self.bound = (conn.saddr, conn.sport), True
        self.peer = (conn.daddr, conn.dport)

    def _on_accept(self, conn: TcpConnection) -> None:
        s = Socket(self.node, "tcp", self._owner)
        s._attach(conn)
        conn.on_data, conn.on_closed, conn.on_error = s._on_data, s._on_eof, s._on_error
        if self.closed:
            conn.abort()
            return
        self._accepted.append(s)
        self._serve()

    def send(self, data: bytes) -> Op:
        """write(): queued at once (the emulated socket buffer has no limit); the op gives len(data)."""
        if self.kind == "udp":
            if self.peer is None:
                return Op.completed(error=os_error("EDESTADDRREQ"))
            return self.sendto(data, (int2ip(self.peer[0]), self.peer[1]))
        if self.closed:
            return Op.completed(error=os_error("EBADF"))
        if self.conn is None:
            return Op.completed(error=os_error("ENOTCONN"))
        payload = bytes(data)
        try:
            self.conn.send(payload)
        except SockError as e:
            return Op.completed(error=os_error(e.errno_name))
        return Op.completed(len(payload))

    def recv(self, bufsize: int, timeout: float | None = None) -> Op:
        """An op giving up to `bufsize` bytes, b"" at EOF; a UDP socket gives one datagram."""
        if not isinstance(bufsize, int) or bufsize <= 0:
            raise ValueError(f"recv: bufsize must be a positive integer, got {bufsize!r}")
        if self.kind == "tcp" and self.conn is None:
            return Op.completed(error=os_error("ENOTCONN"))
        op = Op()
        if self.kind == "udp":
            inner = self.recvfrom(bufsize, timeout)
            if inner.done:
                return Op.completed(inner.value[0] if inner.value else None, inner.error)
            inner.waiter = lambda o: op.fail(o.error) if o.error else op.resolve(o.value[0])
            return op
        self._readers.append((op, bufsize))
        op.on_cancel = lambda: self._forget(op)
        self._serve()
        return op.expire_after(self.node, timeout)

    def _on_data(self, data: bytes) -> None:
        self._rbuf += data
        self._serve()

    def _on_eof(self) -> None:
        self._eof = True
        self._serve()

    def _on_error(self, name: str) -> None:
        self._error = name
        self._serve()

    # ------------------------------------------------------------------ UDP
    def _udp_bind(self, ip: int, port: int) -> None:
        self.udp = _call(lambda: self.node.udp.bind(port, self._on_datagram, ip, on_error=self._on_error))
        self.local, self.bound = (ip, self.udp.port), True

    def sendto(self, data: bytes, addr: Address) -> Op:
        self._need("udp", "sendto")
        if self.closed:
            return Op.completed(error=os_error("EBADF"))
        daddr, dport = parse_address(addr, "sendto")
        payload = bytes(data)
        try:
            if not self.bound:
                self._udp_bind(0, 0)
            assert self.udp is not None
            self.udp.sendto(payload, daddr, dport)
        except OSError as e:
            return Op.completed(error=e)
        except SockError as e:
            return Op.completed(error=os_error(e.errno_name))
        return Op.completed(len(payload))

    def recvfrom(self, bufsize: int, timeout: float | None = None) -> Op:
        """An op giving (datagram, (address, port)); a datagram longer than `bufsize` is cut."""
        self._need("udp", "recvfrom")
        if not self.bound:
            return Op.completed(error=os_error("EINVAL"))
        op = Op()
        self._readers.append((op, bufsize))
        op.on_cancel = lambda: self._forget(op)
        self._serve()
        return op.expire_after(self.node, timeout)

    def _on_datagram(self, data: bytes, saddr: int, sport: int) -> None:
        self._datagrams.append((data, (int2ip(saddr), sport)))
        self._serve()

    # ------------------------------------------------------------------ common
    def close(self) -> Op:
        """close(): a TCP connection sends its FIN after what is queued; nothing is read after."""
        if not self.closed:
            self.closed = True
            for thing in (self.conn, self.listener, self.udp):
                if thing is not None:
                    thing.close()
            readers, self._readers = self._readers, deque()
            for op, _n in readers:
                op.fail(os_error("EBADF"))
        return Op.completed()

    def _serve(self) -> None:
        """Hand what arrived to the waiting readers, oldest first."""
        while self._readers:
            op, n = self._readers[0]
            if self.listener is not None:
                if not self._accepted:
                    return
                s = self._accepted.popleft()
                outcome: tuple[Any, BaseException | None] = ((s, s.getpeername()), None)
            elif self.kind == "udp":
                if self._datagrams:
                    data, peer = self._datagrams.popleft()
                    outcome = ((data[:n], peer), None)
                elif self._error is not None:
                    outcome, self._error = (None, os_error(self._error)), None
                else:
                    return
            elif self._rbuf:
                outcome = (bytes(self._rbuf[:n]), None)
                del self._rbuf[:n]
            elif self._error is not None:
                outcome = (None, os_error(self._error))
            elif self._eof:
                outcome = (b"", None)
            else:
                return
            self._readers.popleft()
            value, error = outcome
            if error is not None:
                op.fail(error)
            else:
                op.resolve(value)

    def _forget(self, op: Op) -> None:
        self._readers = deque(r for r in self._readers if r[0] is not op)

    def _need(self, kind: str, call: str) -> None:
        if self.kind != kind:
            raise os_error("EOPNOTSUPP")

    def _check_open(self) -> None:
        if self.closed:
            raise os_error("EBADF")


def _call(fn: Callable[[], Any]) -> Any:
    """A stack call whose SockError becomes the OSError a real socket call raises."""
    try:
        return fn()
    except SockError as e:
        raise os_error(e.errno_name) from None
