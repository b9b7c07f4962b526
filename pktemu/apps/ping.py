"""`ping`: ICMP echo requests at an interval, replies and errors recorded like iputils ping."""
from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any, Callable

from pktemu.apps.registry import AppKind, register
from pktemu.errors import PktemuError, excerpt, shorten
from pktemu.net.frame import Frame, checksum, int2ip, ip2int
from pktemu.units import IPV4_HINT, parse_duration, parse_ipv4

if TYPE_CHECKING:
    from pktemu.net.node import Node

_FIELDS = {"target", "count", "interval", "id", "size", "timeout", "df"}


def validate(params: dict[str, Any], where: str) -> dict[str, Any]:
    """Check every field; returns the params unchanged so that validating twice is harmless."""
    _config(params, where)
    return dict(params)


def _config(params: dict[str, Any], where: str) -> dict[str, Any]:
    if not isinstance(params, dict):
        raise PktemuError(f"{where}: app parameters must be a mapping, got {excerpt(params)}")
    unknown = sorted(str(k) for k in set(params) - _FIELDS)
    if unknown:
        raise PktemuError(f"{where}: unknown field {excerpt(shorten(unknown[0]))} for app ping")
    if "target" not in params:
        raise PktemuError(f"{where}.target: missing (the address to ping)")
    out = dict(params)
    try:
        out["target"] = str(parse_ipv4(params["target"]))
    except ValueError:
        raise PktemuError(f"{where}.target: not an IPv4 address: {excerpt(params['target'])} "
                          f"(expected {IPV4_HINT})") from None
    # iputils ping refuses `-c 0` ("out of range: 1 <= value"): a ping sends at least one request
    for key, default, low, top in (("count", 1, 1, 10**9), ("id", 0x5045, 0, 0xFFFF), ("size", 56, 0, 65507)):
        v = params.get(key, default)
        if not isinstance(v, int) or isinstance(v, bool) or v < low or v > top:
            why = " (iputils ping refuses -c 0: out of range, 1 <= value)" if (key, v) == ("count", 0) else ""
            raise PktemuError(f"{where}.{key}: expected an integer {low}-{top}, got {excerpt(v)}{why}")
        out[key] = v
    if not isinstance(params.get("df", True), bool):
        raise PktemuError(f"{where}.df: expected true or false, got {excerpt(params['df'])}")
    out["df"] = params.get("df", True)
    out["interval"] = parse_duration(params.get("interval", "1s"), f"{where}.interval")
    out["timeout"] = parse_duration(params.get("timeout", "1s"), f"{where}.timeout")
    return out


def start(node: "Node", params: dict[str, Any], result: dict[str, Any], done: Callable[[], None]) -> None:
    p = _config(params, f"{node.name}: ping")
    daddr = ip2int(p["target"])
    ident, count = p["id"], p["count"]
    sent: dict[int, int] = {}
    replies: list[dict[str, Any]] = []
    result.update(target=p["target"], transmitted=0, received=0, replies=replies, errors=[])
    payload = bytes(i & 0xFF for i in range(p["size"]))

    def receive(frame: Frame) -> None:
        off = frame.l4off
        itype = frame.data[off]
        if itype == 0:
            seq = struct.unpack_from("!H", frame.data, off + 6)[0]
            if seq in sent:
                result["received"] += 1
                replies.append({"seq": seq, "from": int2ip(frame.saddr), "ttl": frame.ttl,
                                "rtt_ms": round((node.sim.now - sent.pop(seq)) / 1e6, 3)})
        else:
            result["errors"].append({"from": int2ip(frame.saddr), "type": itype,
                                     "code": frame.data[off + 1]})

    def send(seq: int) -> None:
        saddr = node.source_address(daddr)
        if saddr is None:
            result["errors"].append({"error": node.route_errno(daddr)})
        else:
            body = bytearray(struct.pack("!BBHHH", 8, 0, 0, ident, seq & 0xFFFF) + payload)
            struct.pack_into("!H", body, 2, checksum(body))
            sent[seq & 0xFFFF] = node.sim.now
            result["transmitted"] += 1
            node.ip_send(saddr, daddr, 1, bytes(body), df=p["df"], flow_saddr=0)    # unbound socket
        if seq < count:
            node.sim.schedule(p["interval"], send, seq + 1)
        else:
            node.sim.schedule(p["timeout"], finish)

    def finish() -> None:
        node.ping_sockets.pop(ident, None)
        done()

    node.ping_sockets[ident] = receive
    send(1)


register(AppKind("ping", start, validate, "ICMP echo requests to `target`, `count` times"))
