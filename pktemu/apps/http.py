"""`http-server` and `http-client`: the oracle's pod programs (oracle_apps.py) on emulated sockets.

The server reads a request up to the blank line, answers headers and body in ONE write, then
closes first. The client optionally resolves a name: with `dns_server`, as the oracle's client
does (one A query, RD=1, fixed source port and id); without it, through the pod's resolv.conf
and search list as glibc does (pktemu.apps.resolver). It then connects from a fixed port, sends
one GET with `Connection: close`, reads to EOF and closes, filling `result` like the oracle's
client-result.json. The think times (`response_delay`, `close_delay`, `request_delay`) default
to what the kernel run showed, because they decide packet order: the server's FIN must leave
after the client's ACK of the answer came back.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from pktemu.apps import dnswire, resolver
from pktemu.apps.registry import AppKind, register
from pktemu.errors import PktemuError, excerpt, shorten
from pktemu.net.frame import int2ip, ip2int
from pktemu.net.tcp_conn import TcpConnection
from pktemu.net.tcp_const import CLOSE_WAIT, ESTABLISHED
from pktemu.net.tcp_errno import SockError, describe, strerror
from pktemu.sim import SECOND
from pktemu.units import IPV4_HINT, parse_duration, parse_ipv4

if TYPE_CHECKING:
    from pktemu.net.node import Node
    from pktemu.net.udp import UdpSocket

SERVER_IDLE_TIMEOUT = 5 * SECOND    # the oracle server's per-connection socket timeout


# ---------------------------------------------------------------------------- parameter checks
def check_fields(params: Any, allowed: set[str], kind: str, where: str) -> None:
    if not isinstance(params, dict):
        raise PktemuError(f"{where}: app parameters must be a mapping, got {excerpt(params)}")
    unknown = sorted(str(k) for k in set(params) - allowed)
    if unknown:
        raise PktemuError(f"{where}.{shorten(unknown[0])}: unknown field for app {kind} "
                          f"(known: {', '.join(sorted(allowed))})")


def check_port(v: Any, where: str, zero_ok: bool = False) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not (0 if zero_ok else 1) <= v <= 65535:
        lo = 0 if zero_ok else 1
        raise PktemuError(f"{where}: expected a port {lo}-65535, got {excerpt(v)}")
    return v


def check_ipv4(v: Any, where: str) -> str:
    """Only a dotted-quad string (pktemu.units.parse_ipv4): `1`, `10.1` or `010.0.0.1` are mistakes."""
    try:
        return str(parse_ipv4(v))
    except ValueError:
        raise PktemuError(f"{where}: not an IPv4 address: {excerpt(v)} (expected {IPV4_HINT})") from None


def check_str(v: Any, where: str) -> str:
    if not isinstance(v, str):
        raise PktemuError(f"{where}: expected a string, got {excerpt(v)}")
    return v


def check_name(v: Any, where: str) -> str:
    """A DNS name to resolve (pktemu.apps.dnswire.check_user_name)."""
    name = check_str(v, where)
    try:
        dnswire.check_user_name(name)
    except dnswire.DnsFormatError as e:
        raise PktemuError(f"{where}: {e}") from None
    return name


# ---------------------------------------------------------------------------- http-server
_SERVER_FIELDS = {"port", "body", "response_delay", "close_delay"}
_SERVER_DEFAULTS: dict[str, Any] = {"port": 8080, "body": "hello\n", "response_delay": "70us",
                                    "close_delay": "80us"}


def _server_config(params: dict[str, Any], where: str) -> dict[str, Any]:
    check_fields(params, _SERVER_FIELDS, "http-server", where)
    p = {**_SERVER_DEFAULTS, **params}
    body = check_str(p["body"], f"{where}.body").encode()
    return {"port": check_port(p["port"], f"{where}.port"),
            "response": (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                         + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body),
            "response_delay": parse_duration(p["response_delay"], f"{where}.response_delay"),
            "close_delay": parse_duration(p["close_delay"], f"{where}.close_delay")}


def validate_server(params: dict[str, Any], where: str) -> dict[str, Any]:
    """Check every field; the result has the defaults filled in and can be validated again."""
    _server_config(params, where)
    return {**_SERVER_DEFAULTS, **params}


def start_server(node: "Node", params: dict[str, Any], result: dict[str, Any],
                 done: Callable[[], None]) -> None:
    cfg = _server_config(params, f"{node.name}: http-server")
    served: list[dict[str, Any]] = result.setdefault("served", [])
    sim = node.sim

    def on_accept(conn: TcpConnection) -> None:
        buf = bytearray()
        answered = False
        idle = sim.timer(SERVER_IDLE_TIMEOUT, conn.close)

        def answer() -> None:
            nonlocal answered
            answered = True
            idle.cancel()
            sim.schedule(cfg["response_delay"], write)

        def write() -> None:
            sent = conn.state in (ESTABLISHED, CLOSE_WAIT)
            served.append({"peer": f"{int2ip(conn.daddr)}:{conn.dport}",
                           "local": f"{int2ip(conn.saddr)}:{conn.sport}", "t_ns": sim.now,
                           **request_summary(bytes(buf)), "status": 200 if sent else None})
            if sent:
                conn.send(cfg["response"])
                sim.schedule(cfg["close_delay"], conn.close)

        def on_data(data: bytes) -> None:
            buf.extend(data)
            if not answered and b"\r\n\r\n" in buf:
                answer()

        def on_closed() -> None:
            if not answered:
                answer()            # the oracle answers even a request cut short by EOF

        conn.on_data, conn.on_closed = on_data, on_closed
        conn.on_error = lambda _errno: idle.cancel()

    node.tcp.listen(cfg["port"], on_accept)


def request_summary(request: bytes) -> dict[str, Any]:
    """What the server read of a request (server-result.json): its request line split into method
    and path, and the Host header; fields it did not get are None."""
    head = request.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    parts = head[0].split(" ")
    host = next((h.split(":", 1)[1].strip() for h in head[1:]
                 if ":" in h and h.split(":", 1)[0].strip().lower() == "host"), None)
    return {"request_line": head[0], "method": parts[0] or None,
            "path": parts[1] if len(parts) > 1 else None, "host": host}


# ---------------------------------------------------------------------------- http-client
_CLIENT_FIELDS = {"name", "dns_server", "dns_port", "dns_sport", "dns_id", "dns_timeout", "target", "port",
                  "sport", "host", "connect_timeout", "read_timeout", "request_delay",
                  *resolver.OPTION_DEFAULTS}
_CLIENT_DEFAULTS: dict[str, Any] = {"dns_port": 53, "dns_sport": 0, "dns_timeout": "3s", "port": 80,
                                    "sport": 0, "connect_timeout": "3s", "read_timeout": "3s",
                                    "request_delay": "55us", **resolver.OPTION_DEFAULTS}


def _client_config(params: dict[str, Any], where: str) -> dict[str, Any]:
    check_fields(params, _CLIENT_FIELDS, "http-client", where)
    p = {**_CLIENT_DEFAULTS, **params}
    cfg: dict[str, Any] = {"name": None, "target": None, "dns_server": None, "dns_id": None}
    if p.get("name") is not None:
        cfg["name"] = check_name(p["name"], f"{where}.name")
        if p.get("dns_server") is None:       # glibc's resolver picks ids and ports at random
            for key in ("dns_id", "dns_sport"):
                if p.get(key):
                    raise PktemuError(f"{where}.{key}: only with dns_server (the pod's resolver picks it)")
    elif p.get("target") is None:
        raise PktemuError(f"{where}: needs `name` (to resolve) or `target` (an IPv4 address)")
    if p.get("dns_server") is not None:
        cfg["dns_server"] = check_ipv4(p["dns_server"], f"{where}.dns_server")
    if p.get("target") is not None:
        cfg["target"] = check_ipv4(p["target"], f"{where}.target")
    if p.get("dns_id") is not None:
        v = p["dns_id"]
        try:
            qid = int(v, 0) if isinstance(v, str) else v
        except ValueError:
            qid = None
        if not isinstance(qid, int) or isinstance(qid, bool) or not 0 <= qid <= 0xFFFF:
            raise PktemuError(f"{where}.dns_id: expected a query id 0-65535 (or 0x1234), got {excerpt(v)}")
        cfg["dns_id"] = qid
    for key in ("port", "dns_port"):
        cfg[key] = check_port(p[key], f"{where}.{key}")
    for key in ("sport", "dns_sport"):
        cfg[key] = check_port(p[key], f"{where}.{key}", zero_ok=True)
    for key in ("dns_timeout", "connect_timeout", "read_timeout", "request_delay"):
        cfg[key] = parse_duration(p[key], f"{where}.{key}")
    cfg["resolv"], cfg["aaaa"] = resolver.options_from_params(p, where)
    host = p.get("host")
    if host is None:
        host = cfg["name"].split(".")[0] if cfg["name"] else cfg["target"]
    cfg["host"] = check_str(host, f"{where}.host")
    if not (cfg["host"].isascii() and cfg["host"].isprintable()) or " " in cfg["host"]:
        raise PktemuError(f"{where}.host: a Host header value is printable ASCII without spaces, "
                          f"got {excerpt(cfg['host'])}")
    return cfg


def validate_client(params: dict[str, Any], where: str) -> dict[str, Any]:
    """Check every field; the result has the defaults filled in and can be validated again."""
    _client_config(params, where)
    return {**_CLIENT_DEFAULTS, **params}


def http_error(errno_name: str) -> str:
    """What the oracle's client writes for a failed connect or read."""
    if errno_name == "ECONNREFUSED":
        return f"ECONNREFUSED ({strerror(errno_name)})"
    if errno_name == "ETIMEDOUT":
        return "timeout"            # TimeoutError is caught together with socket.timeout
    return describe(errno_name)


class HttpClient:
    """One run of the oracle's `client` command, as a chain of events on the virtual clock."""

    def __init__(self, node: "Node", cfg: dict[str, Any], result: dict[str, Any],
                 done: Callable[[], None]) -> None:
        self.node = node
        self.sim = node.sim
        self.cfg = cfg
        self.result = result
        self._done = done
        self._finished = False
        self.dns_sock: UdpSocket | None = None
        self.conn: TcpConnection | None = None
        self.h: dict[str, Any] = {}
        self.t0 = 0
        self.resp = bytearray()
        self._timer: Any = None
        result["dns"] = None
        result["http"] = None

    def start(self) -> None:
        if self.cfg["name"] and self.cfg["dns_server"] is None:
            res = resolver.Resolver(self.node, resolver.conf_for(self.node, self.cfg["resolv"]))
            res.lookup(self.cfg["name"], self._looked_up, aaaa=self.cfg["aaaa"])
        elif self.cfg["name"]:
            self._resolve()
        else:
            self._after_dns(self.cfg["target"])

    # ------------------------------------------------------------------ DNS
    def _resolve(self) -> None:
        cfg = self.cfg
        qid = cfg["dns_id"]
        if qid is None:
            qid = self.sim.rng(f"dns:{self.node.name}").getrandbits(16)
        try:
            self.dns_sock = self.node.udp.bind(cfg["dns_sport"], self._dns_reply)
            self.t0 = self.sim.now
            query = dnswire.build_query(qid, cfg["name"])
            self.dns_sock.sendto(query, ip2int(cfg["dns_server"]), cfg["dns_port"])
        except SockError as e:
            self.result["dns"] = {"error": describe(e.errno_name)}
            self._close_dns()
            self._after_dns(cfg["target"])
            return
        self._timer = self.sim.timer(cfg["dns_timeout"], self._dns_timeout)

    def _dns_reply(self, data: bytes, saddr: int, sport: int) -> None:
        if self.dns_sock is None:
            return
        self._cancel_timer()
        self._close_dns()
        target = self.cfg["target"]
        try:
            msg = dnswire.parse(data)
        except dnswire.DnsFormatError as e:
            self.result["dns"] = {"error": f"malformed response: {e}"}
        else:
            answers = [{"name": rr.name, "ttl": rr.ttl, "a": rr.a} for rr in msg.answers if rr.a is not None]
            self.result["dns"] = {"id": msg.id, "rcode": msg.rcode, "answers": answers,
                                  "peer": f"{int2ip(saddr)}:{sport}",
                                  "rtt_ms": round((self.sim.now - self.t0) / 1e6, 3)}
            if answers and target is None:      # an explicit `target` wins over the answer
                target = answers[0]["a"]
        self._after_dns(target)

    def _looked_up(self, lookup: "resolver.Lookup") -> None:
        self.result["dns"] = lookup.summary()
        addresses = lookup.addresses
        self._after_dns(self.cfg["target"] or (addresses[0] if addresses else None))

    def _dns_timeout(self) -> None:
        self._timer = None
        self.result["dns"] = {"error": "timeout"}
        self._close_dns()
        self._after_dns(self.cfg["target"])

    def _close_dns(self) -> None:
        if self.dns_sock is not None:
            self.dns_sock.close()
            self.dns_sock = None

    # ------------------------------------------------------------------ HTTP
    def _after_dns(self, target: str | None) -> None:
        if not target:
            self.result["error"] = "no target (DNS failed)"
            self._finish()
            return
        cfg = self.cfg
        self.h = {"target": f"{target}:{cfg['port']}", "source": f"*:{cfg['sport']}"}
        self.t0 = self.sim.now
        try:
            self.conn = self.node.tcp.connect(ip2int(target), cfg["port"], sport=cfg["sport"] or None,
                                              on_connected=self._connected, on_data=self._data,
                                              on_closed=self._eof, on_error=self._error)
        except SockError as e:
            self._http_done(describe(e.errno_name))
            return
        self.h["source"] = f"{int2ip(self.conn.saddr)}:{self.conn.sport}"
        self._timer = self.sim.timer(cfg["connect_timeout"], self._timeout)

    def _connected(self, conn: TcpConnection) -> None:
        self._cancel_timer()
        self.sim.schedule(self.cfg["request_delay"], self._send_request)

    def _send_request(self) -> None:
        conn = self.conn
        if self._finished or conn is None or conn.error is not None:
            return
        req = (f"GET / HTTP/1.1\r\nHost: {self.cfg['host']}\r\nUser-Agent: pktemu-client/1\r\n"
               f"Accept: */*\r\nConnection: close\r\n\r\n").encode()
        conn.send(req)
        self._timer = self.sim.timer(self.cfg["read_timeout"], self._timeout)

    def _data(self, data: bytes) -> None:
        self.resp.extend(data)
        if self._timer is not None:             # each recv() waits read_timeout afresh
            self._timer.cancel()
            self._timer = self.sim.timer(self.cfg["read_timeout"], self._timeout)

    def _eof(self) -> None:
        head, _, body = bytes(self.resp).partition(b"\r\n\r\n")
        self.h.update(status_line=head.split(b"\r\n", 1)[0].decode("latin-1"), body=body.decode("latin-1"),
                      bytes=len(self.resp))
        self._http_done(None)

    def _error(self, errno_name: str) -> None:
        self._http_done(http_error(errno_name))

    def _timeout(self) -> None:
        self._timer = None
        self._http_done("timeout")

    def _http_done(self, error: str | None) -> None:
        if self._finished:
            return
        self._cancel_timer()
        if error is not None:
            self.h["error"] = error
        self.h["elapsed_ms"] = round((self.sim.now - self.t0) / 1e6, 3)
        if self.conn is not None:
            self.conn.close()
        self.result["http"] = self.h
        self._finish()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _finish(self) -> None:
        if not self._finished:
            self._finished = True
            self._done()


def start_client(node: "Node", params: dict[str, Any], result: dict[str, Any],
                 done: Callable[[], None]) -> None:
    HttpClient(node, _client_config(params, f"{node.name}: http-client"), result, done).start()


register(AppKind("http-server", start_server, validate_server,
                 "HTTP/1.1 server: one-write answer with `body`, then closes (like oracle_apps.py)"))
register(AppKind("http-client", start_client, validate_client,
                 "optional DNS A lookup, then one GET; result like the oracle's client-result.json"))
