"""NAT statements: `dnat|snat [ip] to A[-B][:P[-Q]]`, `masquerade [to :P[-Q]]`, `redirect [to :P[-Q]]`
and their flags, parsed to one shared step each (pktemu.nftables.statements calls parse_nat)."""
from __future__ import annotations

import sys
from typing import Any

from pktemu.net.frame import ip2int
from pktemu.netfilter.core import MANIP_DST, MANIP_SRC, NF_ACCEPT, NatRange
from pktemu.nftables.lexer import Cursor
from pktemu.nftables.model import Rule, Step, Table
from pktemu.nftables.notes import ACCEPT, DROP, note
from pktemu.nftables.values import port_range, shared

_NAT_FLAGS = ("random", "fully-random", "persistent")
#: NAT flags and (ports, kind, manip, flags) tuples, one object for equal ones: every endpoint's
#: `dnat to A:8080` rule then shares its tail
_OPTS: dict[tuple[Any, ...], tuple[Any, ...]] = {}


def _addr_port(cur: Cursor, kind: str, text: str) -> tuple[Any, int | None, int | None]:
    """`A`, `A-B`, `A:P`, `A-B:P-Q` or `:P[-Q]` of a NAT target: the address (an int, or a
    (first, last) pair for a range) and the ports. A reversed range is refused as nft refuses it."""
    addr, _, port = text.rpartition(":") if ":" in text else (text, "", "")
    lo = hi = None
    if port:
        ports = port_range(port)
        if ports is None:
            raise cur.error(f"bad port in '{text}'")
        lo, hi = ports
        if hi < lo:
            raise cur.error(f"{kind} to {text}: port range {port} reversed (first above last): nft refuses "
                            "it (Range has zero or negative size)")
    first, dash, last = addr.partition("-")
    try:
        ips = [ip2int(a) for a in ((first, last) if dash else (addr,) if addr else ())]
    except (OSError, ValueError):
        raise cur.error(f"'{addr}' is not an IPv4 address" if not dash else
                        f"'{addr}' is not an IPv4 address range") from None
    if len(ips) == 2 and ips[1] < ips[0]:
        raise cur.error(f"{kind} to {text}: address range {addr} reversed (first above last): the kernel's "
                        "range would wrap around 0.0.0.0; nft refuses it (Range has zero or negative size)")
    if not ips:
        return None, lo, hi
    if len(ips) == 1 or ips[0] == ips[1]:
        return cur.one(ips[0]), lo, hi
    return (cur.one(ips[0]), cur.one(ips[1])), lo, hi


def parse_nat(cur: Cursor, table: Table, rule: Rule, kind: str, l4: bool = False) -> tuple[str, Step]:
    """`kind` at the cursor; `l4`: a match before it gives the transport protocol a port mapping
    needs (else nft refuses the ports: "transport protocol mapping is only valid after transport
    protocol match")."""
    at = cur.next()
    words = [kind]
    if kind in ("dnat", "snat") and (table.family == "inet" or cur.peek().text == "ip"):
        cur.expect("ip")                  # an ip table takes it too (as nft does), and prints it without
        words += ["ip"] if table.family == "inet" else []
    ip = lo = hi = None
    if cur.accept("to"):
        target = cur.word("an address")
        ip, lo, hi = _addr_port(cur, kind, target)
        if ip is None and kind in ("dnat", "snat"):
            raise cur.error(f"{kind} to needs an address")
        if lo is not None and not l4:
            raise cur.error(f"{kind} to {target}: a port mapping needs a transport protocol match before it "
                            "(such as meta l4proto tcp or tcp dport 80): nft refuses it without", at)
        words += ["to", target]
    elif kind in ("dnat", "snat"):
        raise cur.error(f"{kind} needs 'to ADDRESS[:PORT]'")
    flags = []
    while cur.peek().text in _NAT_FLAGS or cur.peek().text == ",":
        t = cur.next().text
        if t != ",":
            flags.append(t)
    if flags:
        words.append(",".join(flags))
    return " ".join(words), nat_step(rule, kind, ip, lo, hi, flags)


def nat_step(rule: Rule, kind: str, ip: Any, lo: int | None, hi: int | None, flags: list[str]) -> Step:
    """The step of a dnat/snat/masquerade/redirect statement."""
    manip = MANIP_SRC if kind in ("snat", "masquerade") else MANIP_DST
    opts = ("random" in flags, "fully-random" in flags, "persistent" in flags)
    how = (shared(lo), shared(hi), sys.intern(kind), manip, _OPTS.setdefault(opts, opts))
    return (nat_statement, (ip, rule, _OPTS.setdefault(how, how)))


def nat_like(rule: Rule, ip: int | None, like: Step) -> Step:
    """The step of a NAT statement with the ports, kind and flags of `like`, for another rule and
    address (every endpoint's `dnat to A:8080` shares them)."""
    return (nat_statement, (ip, rule, like[1][2]))


def nat_statement(p: Any, s: Any, a: Any) -> Any:
    """The rule's own (address or (first, last) addresses, rule) and the ports, kind and flags it
    shares with its like."""
    ip, rule, (lo, hi, kind, manip, flags) = a
    addr = last = ip
    if kind == "masquerade":
        addr = last = None if s.out_dev is None else s.node.masquerade_source(s.out_dev, p.daddr)
        if addr is None:
            s.extra["verdict_rule"] = note(p, s, rule, " (no address)")
            return DROP
    elif kind == "redirect":
        addr = last = s.nf.redirect_address(p.frame, s)
        if addr is None:
            return DROP
    elif ip.__class__ is tuple:
        addr, last = ip
    rng = NatRange(addr, last, lo, hi, *flags)
    n = note(p, s, rule)
    verdict = s.nf.nat_setup(p.frame, manip, rng, s)
    if verdict != NF_ACCEPT:
        s.extra["verdict_rule"] = n
        return DROP
    return ACCEPT
