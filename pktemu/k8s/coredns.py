"""`cluster-dns`: CoreDNS with the `kubernetes` plugin, as a UDP server in the DNS pod.

Each query is answered from the node's cluster (`node.cluster`, the API server) at the moment it
arrives, so a Service created or an endpoint gone shows in the next answer. The message is built
as CoreDNS builds it: the question echoed, QR and AA set, RD copied, RA never set (CoreDNS
serves the zone; it does not recurse for it), EDNS0 echoed when the query had it. Without a
cluster the server answers SERVFAIL, as CoreDNS does before its informers have synced.
"""
from __future__ import annotations

import socket
import struct
from typing import TYPE_CHECKING, Any, Callable

from pktemu.apps import dnswire
from pktemu.apps.http import check_fields, check_port
from pktemu.apps.registry import AppKind, register
from pktemu.errors import PktemuError, excerpt
from pktemu.k8s.dns import DEFAULT_TTL, POD_MODES, Answer, ClusterDns, Record
from pktemu.net.frame import int2ip

if TYPE_CHECKING:
    from pktemu.net.node import Node

TYPE_OPT = 41
_FLAG_CD = 0x0010
_OPCODE = 0x7800
_FIELDS = {"port", "domain", "ttl", "pods"}
_DEFAULTS: dict[str, Any] = {"port": 53, "domain": None, "ttl": DEFAULT_TTL, "pods": "insecure"}
_RRHDR = struct.Struct("!HHIH")


def _config(params: dict[str, Any], where: str) -> dict[str, Any]:
    check_fields(params, _FIELDS, "cluster-dns", where)
    p = {**_DEFAULTS, **params}
    ttl = p["ttl"]
    if not isinstance(ttl, int) or isinstance(ttl, bool) or not 0 <= ttl <= 3600:
        raise PktemuError(f"{where}.ttl: expected seconds 0-3600, got {excerpt(ttl)}")
    if p["pods"] not in POD_MODES:
        raise PktemuError(f"{where}.pods: expected one of {', '.join(POD_MODES)}, got {excerpt(p['pods'])}")
    domain = p["domain"]
    if domain is not None:
        if not isinstance(domain, str) or not domain.strip("."):
            raise PktemuError(f"{where}.domain: expected a domain name like cluster.local, "
                              f"got {excerpt(domain)}")
        try:
            dnswire.check_user_name(domain)
        except dnswire.DnsFormatError as e:
            raise PktemuError(f"{where}.domain: {e}") from None
    return {"port": check_port(p["port"], f"{where}.port"), "domain": domain, "ttl": ttl, "pods": p["pods"]}


def validate(params: dict[str, Any], where: str) -> dict[str, Any]:
    """Check every field; the result has the defaults filled in and can be validated again."""
    _config(params, where)
    return {**_DEFAULTS, **params}


# ---------------------------------------------------------------------------- the wire
def _rdata(rec: Record, compress: dict[str, int], off: int) -> bytes:
    """rdata at message offset `off`; names in PTR and SOA compress, an SRV target never does."""
    t, d = rec.rtype, rec.data
    if t == dnswire.TYPE_A:
        return socket.inet_aton(d[0])
    if t == dnswire.TYPE_AAAA:
        return socket.inet_pton(socket.AF_INET6, d[0])
    if t in (dnswire.TYPE_PTR, dnswire.TYPE_NS, dnswire.TYPE_CNAME):
        return dnswire.encode_name(d[0], compress, off)
    if t == dnswire.TYPE_SRV:
        return struct.pack("!HHH", *d[:3]) + dnswire.encode_name(d[3])
    if t == dnswire.TYPE_SOA:
        mname = dnswire.encode_name(d[0], compress, off)
        rname = dnswire.encode_name(d[1], compress, off + len(mname))
        return mname + rname + struct.pack("!IIIII", *d[2:])
    raise ValueError(f"no encoder for record type {t}")


def put(w: dnswire.Writer, section: int, rec: Record) -> None:
    """Append `rec` to section 1 (answer), 2 (authority) or 3 (additional) of `w`."""
    start = 12 + len(w.body)
    owner = dnswire.encode_name(rec.name, w.compress, start)
    rdata = _rdata(rec, w.compress, start + len(owner) + _RRHDR.size)
    w.body += owner + _RRHDR.pack(rec.rtype, dnswire.CLASS_IN, rec.ttl, len(rdata)) + rdata
    w.counts[section] += 1


def _compress_question(w: dnswire.Writer, qname: str) -> None:
    """Let later names point at every suffix of the question name, as miekg/dns does."""
    off = 12
    labels = dnswire.normalize_name(qname).split(".") if qname.strip(".") else []
    for i, label in enumerate(labels):
        w.compress.setdefault(".".join(labels[i:]), off)
        off += 1 + len(label)


def respond(query: bytes, engine: ClusterDns | None) -> tuple[bytes, Answer] | None:
    """The response to `query`, or None when CoreDNS would not answer (a response, not one question,
    unparseable). A non-QUERY opcode gets NOTIMP; no engine (no cluster yet) gets SERVFAIL."""
    try:
        msg = dnswire.parse(query)
    except dnswire.DnsFormatError:
        return None
    if msg.qr or len(msg.questions) != 1:
        return None
    q = msg.questions[0]
    if msg.flags & _OPCODE:
        ans = Answer(4, authoritative=False)              # NOTIMP
    elif engine is None:
        ans = Answer(dnswire.RCODE_SERVFAIL, authoritative=False)
    else:
        ans = engine.lookup(q.name, q.qtype)
    flags = (dnswire.FLAG_QR | (msg.flags & (_OPCODE | dnswire.FLAG_RD | _FLAG_CD))
             | (dnswire.FLAG_AA if ans.authoritative else 0) | ans.rcode)
    w = dnswire.Writer(msg.id, flags)
    w.raw_questions(query[12:msg.question_end], 1, q.name)
    _compress_question(w, q.name)
    for section, records in ((1, ans.answers), (2, ans.authority), (3, ans.additional)):
        for rec in records:
            put(w, section, rec)
    opt = next((rr for rr in msg.additional if rr.rtype == TYPE_OPT), None)
    if opt is not None:                                   # request.SizeAndDo: size >= 512, DO kept
        w.rr(3, "", TYPE_OPT, opt.ttl & 0x8000, b"", rclass=max(512, opt.rclass))
    return w.to_bytes(), ans


# ---------------------------------------------------------------------------- the app
def start(node: "Node", params: dict[str, Any], result: dict[str, Any], done: Callable[[], None]) -> None:
    cfg = _config(params, f"{node.name}: cluster-dns")
    queries: list[dict[str, Any]] = result.setdefault("queries", [])
    bound: dict[str, Any] = {"api": None, "engine": None}

    def engine() -> ClusterDns | None:
        """The record logic over the node's current cluster, made when the cluster appears."""
        api = getattr(node, "cluster", None)
        if api is not bound["api"]:
            if bound["engine"] is not None:
                bound["engine"].close()
            bound["api"] = api
            bound["engine"] = None if api is None else ClusterDns(api, cfg["domain"], cfg["ttl"], cfg["pods"])
        return bound["engine"]

    def on_datagram(data: bytes, saddr: int, sport: int) -> None:
        r = respond(data, engine())
        if r is None:
            return
        resp, ans = r
        q = dnswire.parse(data).questions[0]
        queries.append({"t_ns": node.sim.now, "peer": f"{int2ip(saddr)}:{sport}",
                        "id": resp[0] << 8 | resp[1], "qname": q.name, "qtype": q.qtype, "rcode": ans.rcode,
                        "answers": [list(rec.data) for rec in ans.answers]})
        sock.sendto(resp, saddr, sport)

    node.sim.schedule(0, engine)     # bind once the network is built: the SOA serial counts from then
    sock = node.udp.bind(cfg["port"], on_datagram)


register(AppKind("cluster-dns", start, validate,
                 "CoreDNS `kubernetes` plugin over UDP: Service, endpoint, SRV, pod and PTR records "
                 "read from the cluster at query time"))
