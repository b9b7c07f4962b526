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


def _addr_port(cur: Cursor, text: str) -> tuple[int | None, int | None, int | None]:
    addr, _, port = text.rpartition(":") if ":" in text else (text, "", "")
    lo = hi = None
    if port:
        ports = port_range(port)
        if ports is None:
            raise cur.error(f"bad port in '{text}'")
        lo, hi = ports
    try:
        ip = ip2int(addr) if addr else None
    except (OSError, ValueError):
        raise cur.error(f"'{addr}' is not an IPv4 address") from None
    return None if ip is None else cur.one(ip), lo, hi


def parse_nat(cur: Cursor, table: Table, rule: Rule, kind: str) -> tuple[str, Step]:
    cur.next()
    words = [kind]
    if kind in ("dnat", "snat") and (table.family == "inet" or cur.peek().text == "ip"):
        cur.expect("ip")                  # an ip table takes it too (as nft does), and prints it without
        words += ["ip"] if table.family == "inet" else []
    ip = lo = hi = None
    if cur.accept("to"):
        target = cur.word("an address")
        ip, lo, hi = _addr_port(cur, target)
        if ip is None and kind in ("dnat", "snat"):
            raise cur.error(f"{kind} to needs an address")
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


def nat_step(rule: Rule, kind: str, ip: int | None, lo: int | None, hi: int | None, flags: list[str]) -> Step:
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
    """The rule's own (address, rule) and the ports, kind and flags it shares with its like."""
    ip, rule, (lo, hi, kind, manip, flags) = a
    addr = ip
    if kind == "masquerade":
        addr = None if s.out_dev is None else s.node.masquerade_source(s.out_dev, p.daddr)
        if addr is None:
            s.extra["verdict_rule"] = note(p, s, rule, " (no address)")
            return DROP
    elif kind == "redirect":
        addr = s.nf.redirect_address(p.frame, s)
        if addr is None:
            return DROP
    rng = NatRange(addr, addr, lo, hi, *flags)
    n = note(p, s, rule)
    verdict = s.nf.nat_setup(p.frame, manip, rng, s)
    if verdict != NF_ACCEPT:
        s.extra["verdict_rule"] = n
        return DROP
    return ACCEPT
