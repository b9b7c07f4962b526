"""`conntrack -D`, `-F` and `-L` mid-run, with conntrack-tools' own filters.

`conntrack: "-D -p udp --orig-dst 10.3.241.152 --dport 53"`. Filters: `-p/--proto`, `-s/--src/
--orig-src`, `-d/--dst/--orig-dst`, `-r/--reply-src`, `-q/--reply-dst`, `--sport/--orig-port-src`,
`--dport/--orig-port-dst`, `--reply-port-src`, `--reply-port-dst` (ports need `-p tcp|udp`, as
conntrack-tools asks), `--state` (TCP, SCTP), `--dst-nat [IP]`, `--src-nat [IP]`, `-m/--mark`, `-w/--zone`,
`--orig-zone`, `--reply-zone` (the zone an entry prints as `zone=`, `zone-orig=`, `zone-reply=`; 0
for one that prints none). A delete
that matches nothing fails as conntrack does ("0 flow entries"); the next packet of a deleted flow
makes a new entry whose note says when and by what the old one went.
"""
from __future__ import annotations

from typing import Any

from pktemu.actions.base import ActionFailed, NodeCtx, need, words
from pktemu.errors import PktemuError, excerpt
from pktemu.netfilter.conntrack import Conn, ConntrackTable, conntrack_line
from pktemu.netfilter.conntrack_sctp import STATE_NAMES as SCTP_STATE_NAMES
from pktemu.netfilter.conntrack_tcp import STATE_NAMES
from pktemu.units import parse_ipv4
from pktemu.timeline import NODE, register

VERSION = "conntrack v1.4.8 (conntrack-tools)"
_PROTOS = {"tcp": 6, "udp": 17, "icmp": 1, "sctp": 132}
_COMMANDS = {"-L": "L", "--dump": "L", "-D": "D", "--delete": "D", "-F": "F", "--flush": "F"}
_ADDR = {"-s": "osrc", "--src": "osrc", "--orig-src": "osrc", "-d": "odst", "--dst": "odst",
         "--orig-dst": "odst", "-r": "rsrc", "--reply-src": "rsrc", "-q": "rdst", "--reply-dst": "rdst"}
_PORT = {"--sport": "osport", "--orig-port-src": "osport", "--dport": "odport", "--orig-port-dst": "odport",
         "--reply-port-src": "rsport", "--reply-port-dst": "rdport"}
_NAT = {"--dst-nat": "dnat", "--src-nat": "snat"}
#: zone filters and the zone directions (CtZone.dirs) of the attribute each compares with
_ZONE = {"-w": ("zone", 3), "--zone": ("zone", 3), "--orig-zone": ("ozone", 1), "--reply-zone": ("rzone", 2)}


def _addr(tok: str, where: str, opt: str) -> int:
    try:
        return int(parse_ipv4(tok))
    except ValueError:
        raise PktemuError(f"{where}: {opt}: not an IPv4 address: {excerpt(tok)}") from None


def _int(tok: str, where: str, opt: str, hi: int) -> int:
    if not tok.isdigit() or int(tok) > hi:
        raise PktemuError(f"{where}: {opt}: expected a number 0-{hi}, got {excerpt(tok)}")
    return int(tok)


def parse_conntrack(value: Any, where: str, base: str = "", _node: Any = None) -> dict[str, Any]:
    toks = words(value, where, "conntrack")
    cmd: str | None = None
    f: dict[str, Any] = {}
    i = 0
    while i < len(toks):
        t = toks[i]
        i += 1
        if t in _COMMANDS:
            if cmd is not None:
                raise PktemuError(f"{where}: give one command (-L, -D or -F), got {t} after -{cmd}")
            cmd = _COMMANDS[t]
        elif t in ("-f", "--family"):
            fam = need(toks, i, where, "a family")
            i += 1
            if fam != "ipv4":
                raise PktemuError(f"{where}: only -f ipv4 is emulated, got {excerpt(fam)}")
        elif t in ("-p", "--proto", "--protonum"):
            p = need(toks, i, where, "a protocol")
            i += 1
            f["proto"] = _PROTOS.get(p.lower()) if not p.isdigit() else _int(p, where, t, 255)
            if f["proto"] is None:
                raise PktemuError(f"{where}: {t}: unknown protocol {excerpt(p)} (tcp, udp, icmp or a number)")
        elif t in _ADDR:
            f[_ADDR[t]] = _addr(need(toks, i, where, "an address"), where, t)
            i += 1
        elif t in _PORT:
            f[_PORT[t]] = _int(need(toks, i, where, "a port"), where, t, 65535)
            i += 1
        elif t in _NAT:
            f[_NAT[t]] = None
            if i < len(toks) and not toks[i].startswith("-"):
                f[_NAT[t]] = _addr(toks[i].partition(":")[0], where, t)
                i += 1
        elif t == "--state":
            st = need(toks, i, where, "a TCP or SCTP state").upper()
            i += 1
            if st not in STATE_NAMES and st not in SCTP_STATE_NAMES:
                raise PktemuError(f"{where}: --state: unknown TCP or SCTP state {excerpt(st)}")
            f["state"] = st
        elif t in _ZONE:
            f[_ZONE[t][0]] = _int(need(toks, i, where, "a zone"), where, t, 65535)
            i += 1
        elif t in ("-m", "--mark"):
            f["mark"] = _int(need(toks, i, where, "a mark"), where, t, 2**32 - 1)
            i += 1
        else:
            raise PktemuError(f"{where}: unknown or unsupported conntrack option {excerpt(t)}")
    if cmd is None:
        raise PktemuError(f"{where}: give a command: -L, -D or -F")
    if cmd == "F" and f:
        raise PktemuError(f"{where}: -F takes no filter (it empties the table; use -D with filters)")
    if any(k in f for k in _PORT.values()) and f.get("proto") not in (6, 17, 132):
        raise PktemuError(f"{where}: port filters need -p tcp, -p udp or -p sctp")
    if "state" in f and f.get("proto") not in (6, 132):
        raise PktemuError(f"{where}: --state needs -p tcp or -p sctp")
    return {"cmd": cmd, "filters": f, "text": " ".join(toks)}


def _matches(ct: Conn, f: dict[str, Any]) -> bool:
    o, r = ct.orig, ct.reply
    checks = (("proto", o.proto), ("osrc", o.src), ("odst", o.dst), ("rsrc", r.src), ("rdst", r.dst),
              ("osport", o.sport), ("odport", o.dport), ("rsport", r.sport), ("rdport", r.dport),
              ("state", ct.proto_state), ("mark", ct.mark))
    for key, have in checks:
        if key in f and f[key] != have:
            return False
    z = ct.zone
    for key, dirs in _ZONE.values():
        if key in f and f[key] != (z.id if z is not None and z.dirs == dirs else 0):
            return False
    if "dnat" in f and (r.src == o.dst or (f["dnat"] is not None and r.src != f["dnat"])):
        return False
    if "snat" in f and (r.dst == o.src or (f["snat"] is not None and r.dst != f["snat"])):
        return False
    return True


def table_of(node: Any) -> ConntrackTable | None:
    table: ConntrackTable | None = getattr(node.nf, "conntrack", None)
    return table


def run_conntrack(ctx: NodeCtx, args: dict[str, Any]) -> str | None:
    table = table_of(ctx.node)
    conns = list(table) if table is not None else []
    if args["cmd"] == "F":
        if table is not None:
            for ct in conns:
                table.delete(ct, f"deleted {ctx.when} by conntrack -F")
        return f"{VERSION}: connection tracking table has been emptied."
    hits = [ct for ct in conns if _matches(ct, args["filters"])]
    if args["cmd"] == "L":
        now = ctx.net.sim.now
        lines = "".join(conntrack_line(ct, now) + "\n" for ct in hits)
        return f"{lines}{VERSION}: {len(hits)} flow entries have been shown."
    assert table is not None or not hits
    for ct in hits:
        table.delete(ct, f"deleted {ctx.when} by conntrack -D")      # type: ignore[union-attr]
    if not hits:
        raise ActionFailed(f"{VERSION}: 0 flow entries have been deleted (the filter matched no entry)")
    return f"{VERSION}: {len(hits)} flow entries have been deleted."


register("conntrack", parse_conntrack, run_conntrack, NODE)
