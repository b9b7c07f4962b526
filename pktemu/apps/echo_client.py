"""`echo-client`: `count` attempts at a TCP or UDP server, each recorded with its outcome.

An attempt opens a socket (bound to `bind` and `sport` when given), connects to the target,
sends `payload` and waits `timeout` for the first answer line. Its outcome is `answer`, `REFUSED`
(a RST to the SYN; for UDP, an ICMP port unreachable, which Linux reports as ECONNREFUSED to a
connected socket), `TIMEOUT`, `EOF` (a TCP peer that closed without answering) or the errno name
the socket calls gave (ENETUNREACH, EHOSTUNREACH, EADDRNOTAVAIL, ...). A UDP socket hears of
other ICMP errors (host unreachable, ...) only with `recverr: true` (IP_RECVERR), as on Linux.
Attempts start `interval` apart, a later one no sooner than the previous ended; each closes its
socket, so with a fixed `sport` every UDP attempt is the same 5-tuple (and a TCP one finds the
last in TIME_WAIT: EADDRNOTAVAIL, as on Linux).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from pktemu.apps import resolver
from pktemu.apps.http import check_fields, check_ipv4, check_name, check_port, check_str
from pktemu.apps.registry import AppKind, register
from pktemu.errors import PktemuError, excerpt
from pktemu.net.frame import int2ip, ip2int
from pktemu.net.tcp_conn import TcpConnection
from pktemu.net.tcp_errno import SockError
from pktemu.net.udp import MAX_PAYLOAD, UdpSocket
from pktemu.units import parse_duration

if TYPE_CHECKING:
    from pktemu.net.node import Node

_FIELDS = {"target", "name", "port", "proto", "sport", "bind", "count", "interval", "timeout", "payload",
           "recverr", *resolver.OPTION_DEFAULTS}
_DEFAULTS: dict[str, Any] = {"proto": "tcp", "sport": 0, "count": 1, "interval": "1s", "timeout": "1s",
                             "payload": "ping\n", "recverr": False, **resolver.OPTION_DEFAULTS}
MAX_COUNT = 10000
_OUTCOME = {"ECONNREFUSED": "REFUSED", "ETIMEDOUT": "TIMEOUT"}


def _config(params: dict[str, Any], where: str) -> dict[str, Any]:
    check_fields(params, _FIELDS, "echo-client", where)
    if "port" not in params:
        raise PktemuError(f"{where}.port: required (the server's port)")
    p = {**_DEFAULTS, **params}
    cfg: dict[str, Any] = {"target": None, "name": None, "bind": None}
    if p.get("target") is not None and p.get("name") is not None:
        raise PktemuError(f"{where}.name: give `target` or `name` (to resolve), not both")
    if p.get("target") is not None:
        cfg["target"] = check_ipv4(p["target"], f"{where}.target")
    elif p.get("name") is not None:
        cfg["name"] = check_name(p["name"], f"{where}.name")
    else:
        raise PktemuError(f"{where}.target: required (an IPv4 address), or `name` to resolve")
    if p.get("bind") is not None:
        cfg["bind"] = check_ipv4(p["bind"], f"{where}.bind")
    if p["proto"] not in ("tcp", "udp"):
        raise PktemuError(f"{where}.proto: expected tcp or udp, got {excerpt(p['proto'])}")
    cfg["proto"] = p["proto"]
    if not isinstance(p["recverr"], bool):
        raise PktemuError(f"{where}.recverr: expected true or false, got {excerpt(p['recverr'])}")
    if p["recverr"] and p["proto"] != "udp":
        raise PktemuError(f"{where}.recverr: only with proto udp (TCP reports ICMP errors itself)")
    cfg["recverr"] = p["recverr"]
    cfg["port"] = check_port(p["port"], f"{where}.port")
    cfg["sport"] = check_port(p["sport"], f"{where}.sport", zero_ok=True)
    count = p["count"]
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_COUNT:
        raise PktemuError(f"{where}.count: expected a number of attempts 1-{MAX_COUNT}, got {excerpt(count)}")
    cfg["count"] = count
    cfg["interval"] = parse_duration(p["interval"], f"{where}.interval")
    cfg["timeout"] = parse_duration(p["timeout"], f"{where}.timeout")
    if cfg["timeout"] <= 0:
        raise PktemuError(f"{where}.timeout: expected a duration above 0, got {excerpt(p['timeout'])}")
    payload = check_str(p["payload"], f"{where}.payload").encode()
    if not 0 < len(payload) <= MAX_PAYLOAD:
        raise PktemuError(f"{where}.payload: expected 1-{MAX_PAYLOAD} bytes, got {len(payload)}")
    cfg["payload"] = payload
    cfg["resolv"], cfg["aaaa"] = resolver.options_from_params(p, where)
    return cfg


def validate(params: dict[str, Any], where: str) -> dict[str, Any]:
    """Check every field; the result has the defaults filled in and can be validated again."""
    _config(params, where)
    return {**_DEFAULTS, **params}


class EchoClient:
    """The attempts, one after another on the virtual clock."""

    def __init__(self, node: "Node", cfg: dict[str, Any], result: dict[str, Any],
                 done: Callable[[], None]) -> None:
        self.node = node
        self.sim = node.sim
        self.cfg = cfg
        self._done = done
        self.daddr = 0
        self.attempts: list[dict[str, Any]] = []
        self.cur: dict[str, Any] | None = None
        self.started = 0
        self.sock: UdpSocket | None = None
        self.conn: TcpConnection | None = None
        self.buf = bytearray()
        self._timer: Any = None
        result.update(proto=cfg["proto"], target=None, attempts=self.attempts)
        if cfg["name"] is not None:
            result["dns"] = None
        self.result = result

    def start(self) -> None:
        if self.cfg["name"] is None:
            self._go(self.cfg["target"])
            return
        res = resolver.Resolver(self.node, resolver.conf_for(self.node, self.cfg["resolv"]))
        res.lookup(self.cfg["name"], self._looked_up, aaaa=self.cfg["aaaa"])

    def _looked_up(self, lookup: "resolver.Lookup") -> None:
        self.result["dns"] = lookup.summary()
        addresses = lookup.addresses
        if not addresses:
            self.result["error"] = "no target (DNS failed)"
            self._done()
            return
        self._go(addresses[0])

    def _go(self, target: str) -> None:
        self.daddr = ip2int(target)
        self.result["target"] = f"{target}:{self.cfg['port']}"
        self._attempt()

    # ------------------------------------------------------------------ one attempt
    def _attempt(self) -> None:
        cfg = self.cfg
        self.started = self.sim.now
        bind = ip2int(cfg["bind"]) if cfg["bind"] else 0
        self.cur = {"t_ns": self.sim.now, "outcome": None, "answer": None,
                    "local": f"{int2ip(bind)}:{cfg['sport']}", "peer": self.result["target"]}
        self.attempts.append(self.cur)
        self.buf = bytearray()
        try:
            if cfg["proto"] == "udp":
                self._udp(bind)
            else:
                self._tcp(bind)
        except SockError as e:
            self._end(_OUTCOME.get(e.errno_name, e.errno_name))
            return
        self._timer = self.sim.timer(cfg["timeout"], self._end, "TIMEOUT")

    def _udp(self, bind: int) -> None:
        cur = self.cur
        sock = self.sock = self.node.udp.bind(
            self.cfg["sport"], lambda d, _a, _p: self._answer(cur, d), bind,
            on_error=lambda e: self._error(cur, e), recverr=self.cfg["recverr"])
        self._local(sock.addr, sock.port)
        sock.connect(self.daddr, self.cfg["port"])          # fixes the source address too
        self._local(sock.addr, sock.port)
        sock.send(self.cfg["payload"])

    def _tcp(self, bind: int) -> None:
        cur = self.cur
        self.conn = self.node.tcp.connect(
            self.daddr, self.cfg["port"], sport=self.cfg["sport"] or None, saddr=bind or None,
            on_connected=lambda c: self._connected(cur, c), on_data=lambda d: self._data(cur, d),
            on_closed=lambda: self._eof(cur), on_error=lambda e: self._error(cur, e))
        self._local(self.conn.saddr, self.conn.sport)

    def _local(self, addr: int, port: int) -> None:
        if self.cur is not None:
            self.cur["local"] = f"{int2ip(addr)}:{port}"

    def _connected(self, cur: dict[str, Any] | None, conn: TcpConnection) -> None:
        if cur is self.cur:
            try:
                conn.send(self.cfg["payload"])
            except SockError as e:
                self._end(_OUTCOME.get(e.errno_name, e.errno_name))

    def _data(self, cur: dict[str, Any] | None, data: bytes) -> None:
        if cur is self.cur:
            self.buf.extend(data)
            if b"\n" in self.buf:
                self._answer(cur, bytes(self.buf))

    def _eof(self, cur: dict[str, Any] | None) -> None:
        if cur is self.cur:
            if self.buf:
                self._answer(cur, bytes(self.buf))
            else:
                self._end("EOF")

    def _answer(self, cur: dict[str, Any] | None, data: bytes) -> None:
        if cur is not None and cur is self.cur:
            cur["answer"] = data.decode("latin-1")
            self._end("answer")

    def _error(self, cur: dict[str, Any] | None, errno_name: str) -> None:
        if cur is self.cur:
            self._end(_OUTCOME.get(errno_name, errno_name))

    def _end(self, outcome: str) -> None:
        """Record the outcome, close the socket, and start the next attempt when it is due."""
        cur = self.cur
        if cur is None or cur["outcome"] is not None:
            return
        cur["outcome"] = outcome
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        self.cur = None
        if len(self.attempts) >= self.cfg["count"]:
            self._done()
            return
        self.sim.schedule(max(0, self.started + self.cfg["interval"] - self.sim.now), self._attempt)


def start(node: "Node", params: dict[str, Any], result: dict[str, Any], done: Callable[[], None]) -> None:
    EchoClient(node, _config(params, f"{node.name}: echo-client"), result, done).start()


register(AppKind("echo-client", start, validate,
                 "`count` TCP or UDP attempts, each with its outcome (answer, REFUSED, TIMEOUT, errno)"))
