"""`dns-server`: the oracle's UDP DNS responder (oracle_apps.py cmd_dns_server), answer for answer.

One question per query; the question is echoed byte for byte; flags QR|AA|RA with RD copied;
an A record for a known name (name as pointer 0xc00c), NOERROR with no answer for another type,
NXDOMAIN for an unknown name. Queries that are responses, or carry other than one question,
or cannot be parsed, are dropped without an answer.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from pktemu.apps import dnswire
from pktemu.apps.registry import AppKind, register
from pktemu.errors import PktemuError, excerpt, shorten
from pktemu.net.frame import int2ip
from pktemu.units import IPV4_HINT, parse_duration, parse_ipv4

if TYPE_CHECKING:
    from pktemu.net.node import Node

_FIELDS = {"port", "ttl", "records", "response_delay"}
_DEFAULTS: dict[str, Any] = {"port": 53, "ttl": 30, "records": {}, "response_delay": "0s"}


def _config(params: dict[str, Any], where: str) -> dict[str, Any]:
    if not isinstance(params, dict):
        raise PktemuError(f"{where}: app parameters must be a mapping, got {excerpt(params)}")
    unknown = sorted(str(k) for k in set(params) - _FIELDS)
    if unknown:
        raise PktemuError(f"{where}.{shorten(unknown[0])}: unknown field for app dns-server "
                          f"(known: {', '.join(sorted(_FIELDS))})")
    p = {**_DEFAULTS, **params}
    port = p["port"]
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise PktemuError(f"{where}.port: expected a port 1-65535, got {excerpt(port)}")
    ttl = p["ttl"]
    if not isinstance(ttl, int) or isinstance(ttl, bool) or not 0 <= ttl < 2 ** 31:
        raise PktemuError(f"{where}.ttl: expected seconds 0-2147483647, got {excerpt(ttl)}")
    recs = p["records"]
    if not isinstance(recs, dict):
        raise PktemuError(f"{where}.records: expected a mapping name: IPv4 address, got {excerpt(recs)}")
    records: dict[str, str] = {}
    for name, ip in recs.items():
        at = f"{where}.records.{shorten(name, 100) if isinstance(name, str) else excerpt(name)}"
        if not isinstance(name, str):
            raise PktemuError(f"{at}: a record's name must be a string, got {excerpt(name)}")
        try:
            dnswire.check_user_name(name)
        except dnswire.DnsFormatError as e:
            raise PktemuError(f"{at}: {e}") from None
        try:
            records[dnswire.normalize_name(name)] = str(parse_ipv4(ip))
        except ValueError:
            raise PktemuError(f"{at}: not an IPv4 address: {excerpt(ip)} (expected {IPV4_HINT})") from None
    delay = parse_duration(p["response_delay"], f"{where}.response_delay")
    return {"port": port, "ttl": ttl, "records": records, "response_delay": delay}


def validate(params: dict[str, Any], where: str) -> dict[str, Any]:
    """Check every field; the result has the defaults filled in and can be validated again."""
    _config(params, where)
    return {**_DEFAULTS, **params}


def answer(query: bytes, records: dict[str, str], ttl: int) -> tuple[bytes, dict[str, Any]] | None:
    """The response to `query` and a log entry, or None when the query gets no answer."""
    try:
        msg = dnswire.parse(query)
    except dnswire.DnsFormatError:
        return None
    if len(msg.questions) != 1 or msg.qr:
        return None
    q = msg.questions[0]
    ip = records.get(dnswire.normalize_name(q.name))
    flags = dnswire.FLAG_QR | dnswire.FLAG_AA | (msg.flags & dnswire.FLAG_RD) | dnswire.FLAG_RA
    if ip is None:
        flags |= dnswire.RCODE_NXDOMAIN
    w = dnswire.Writer(msg.id, flags)
    w.raw_questions(query[12:msg.question_end], 1, q.name)
    if ip is not None and q.qtype == dnswire.TYPE_A and q.qclass == dnswire.CLASS_IN:
        w.a(q.name, ttl, ip)
    log = {"id": msg.id, "qname": q.name, "qtype": q.qtype, "rcode": flags & 0xF,
           "answer": ip if w.counts[1] else None}
    return w.to_bytes(), log


def start(node: "Node", params: dict[str, Any], result: dict[str, Any], done: Callable[[], None]) -> None:
    cfg = _config(params, f"{node.name}: dns-server")
    records, ttl, delay = cfg["records"], cfg["ttl"], cfg["response_delay"]
    queries: list[dict[str, Any]] = result.setdefault("queries", [])

    def on_datagram(data: bytes, saddr: int, sport: int) -> None:
        r = answer(data, records, ttl)
        if r is None:
            return
        resp, log = r
        log.update(peer=f"{int2ip(saddr)}:{sport}", t_ns=node.sim.now)
        queries.append(log)
        if delay:
            node.sim.schedule(delay, sock.sendto, resp, saddr, sport)
        else:
            sock.sendto(resp, saddr, sport)

    sock = node.udp.bind(cfg["port"], on_datagram)


register(AppKind("dns-server", start, validate,
                 "UDP DNS responder: A records from `records`, NXDOMAIN otherwise (like oracle_apps.py)"))
