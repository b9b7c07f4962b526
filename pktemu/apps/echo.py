"""`tcp-echo` and `udp-echo`: servers that answer every read with who they are and whom they saw.

The answer is one text line, `<name> <local-addr>:<port> saw <peer-addr>:<port>`, so a client (and
a reader of its pcap) learns which endpoint answered and what the server's socket saw after any
NAT. `local` is where the request arrived: for TCP the accepted socket's address (the one the SYN
was sent to), for UDP IP_PKTINFO's destination. A UDP server bound to 0.0.0.0 still answers FROM
the route's preferred source for the peer, as Linux's udp_sendmsg() does; bound to one address it
answers from that address. server-result.json lists each exchange, with `reply_from` for UDP.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from pktemu.apps.http import check_fields, check_ipv4, check_port, check_str
from pktemu.apps.registry import AppKind, register
from pktemu.errors import PktemuError
from pktemu.net.frame import int2ip, ip2int
from pktemu.net.tcp_conn import TcpConnection
from pktemu.net.tcp_const import CLOSE_WAIT, ESTABLISHED
from pktemu.net.tcp_errno import SockError

if TYPE_CHECKING:
    from pktemu.net.node import Node

_FIELDS = {"port", "bind", "name"}
_DEFAULTS: dict[str, Any] = {"bind": "0.0.0.0"}
RECEIVED_MAX = 200          # characters of each request kept in server-result.json


def _config(params: dict[str, Any], where: str, kind: str) -> dict[str, Any]:
    check_fields(params, _FIELDS, kind, where)
    if "port" not in params:
        raise PktemuError(f"{where}.port: required (the port to listen on)")
    p = {**_DEFAULTS, **params}
    cfg: dict[str, Any] = {"port": check_port(p["port"], f"{where}.port"),
                           "bind": check_ipv4(p["bind"], f"{where}.bind"),
                           "name": None}
    if p.get("name") is not None:
        name = check_str(p["name"], f"{where}.name")
        if not name or not name.isprintable() or " " in name:
            raise PktemuError(f"{where}.name: a printable word without spaces, got {name!r}")
        cfg["name"] = name
    return cfg


def _validator(kind: str) -> Callable[[dict[str, Any], str], dict[str, Any]]:
    def validate(params: dict[str, Any], where: str) -> dict[str, Any]:
        """Check every field; the result has the defaults filled in and can be validated again."""
        _config(params, where, kind)
        return {**_DEFAULTS, **params}
    return validate


def answer_line(name: str, local: str, peer: str) -> bytes:
    return f"{name} {local} saw {peer}\n".encode()


def _received(data: bytes) -> str:
    return data.decode("latin-1")[:RECEIVED_MAX]


def start_udp(node: "Node", params: dict[str, Any], result: dict[str, Any], done: Callable[[], None]) -> None:
    cfg = _config(params, f"{node.name}: udp-echo", "udp-echo")
    name = cfg["name"] or node.name
    exchanges: list[dict[str, Any]] = result.setdefault("exchanges", [])

    def on_datagram(data: bytes, saddr: int, sport: int) -> None:
        local = f"{int2ip(sock.pktinfo)}:{sock.port}"
        peer = f"{int2ip(saddr)}:{sport}"
        src = sock.addr or node.source_address(saddr)
        entry: dict[str, Any] = {"proto": "udp", "peer": peer, "local": local,
                                 "reply_from": None if src is None else f"{int2ip(src)}:{sock.port}",
                                 "t_ns": node.sim.now, "bytes": len(data), "received": _received(data)}
        try:
            sock.sendto(answer_line(name, local, peer), saddr, sport)
        except SockError as e:
            entry["error"] = e.errno_name
        exchanges.append(entry)

    try:
        sock = node.udp.bind(cfg["port"], on_datagram, ip2int(cfg["bind"]))
    except SockError as e:
        result["error"] = f"bind {cfg['bind']}:{cfg['port']}: {e.errno_name}"


def start_tcp(node: "Node", params: dict[str, Any], result: dict[str, Any], done: Callable[[], None]) -> None:
    cfg = _config(params, f"{node.name}: tcp-echo", "tcp-echo")
    name = cfg["name"] or node.name
    exchanges: list[dict[str, Any]] = result.setdefault("exchanges", [])

    def on_accept(conn: TcpConnection) -> None:
        local = f"{int2ip(conn.saddr)}:{conn.sport}"
        peer = f"{int2ip(conn.daddr)}:{conn.dport}"

        def on_data(data: bytes) -> None:
            exchanges.append({"proto": "tcp", "peer": peer, "local": local, "t_ns": node.sim.now,
                              "bytes": len(data), "received": _received(data)})
            if conn.state in (ESTABLISHED, CLOSE_WAIT):
                conn.send(answer_line(name, local, peer))

        conn.on_data = on_data
        conn.on_closed = conn.close           # the peer's FIN: close our side too
        conn.on_error = lambda _errno: None

    try:
        node.tcp.listen(cfg["port"], on_accept, ip2int(cfg["bind"]))
    except SockError as e:
        result["error"] = f"listen {cfg['bind']}:{cfg['port']}: {e.errno_name}"


register(AppKind("udp-echo", start_udp, _validator("udp-echo"),
                 "UDP server: answers each datagram with `<name> <local> saw <peer>`"))
register(AppKind("tcp-echo", start_tcp, _validator("tcp-echo"),
                 "TCP server: answers each read with `<name> <local> saw <peer>`, closes when the peer does"))
