"""A node's `routes:` and `ip_rules:`, read as `ip route add` / `ip rule add` would (syntax only;
topofile_check checks devices, gateways and sources against the node)."""
from __future__ import annotations

from typing import Any

from pktemu.errors import excerpt
from pktemu.io.topofile_fields import Src, boolean, integer, ipv4, mapping, seq, string
from pktemu.topo import Route
from pktemu.units import parse_ipv4_network


RULE_KEYS = ("priority", "from", "to", "iif", "oif", "fwmark", "tos", "ipproto", "sport", "dport", "not",
             "table", "action", "goto", "suppress_prefixlength")


def parse_ip_rules(src: Src, where: str, value: object) -> list[Any]:
    """`ip_rules:` items, each `ip rule add` words ("from 10.0.0.0/8 lookup 100") or a mapping."""
    from pktemu.net.fib_rules import ACTIONS, parse_rule, rule_tokens
    out = []
    for i, r in enumerate(seq(src, where, value)):
        at = f"{where}[{i}]"
        if isinstance(r, str):
            toks = r.split()
        else:
            m = mapping(src, at, r, allowed=RULE_KEYS)
            if m.get("action") is not None and m["action"] not in ACTIONS:
                raise src.error(f"{at}.action", f"expected one of {', '.join(ACTIONS)}, "
                                                f"got {excerpt(m['action'])}")
            if m.get("not") is not None:
                boolean(src, f"{at}.not", m["not"])
            toks = rule_tokens(m)
        try:
            out.append(parse_rule(toks)[0])
        except ValueError as e:
            raise src.error(at, str(e)) from None
    return out


def parse_route(src: Src, where: str, value: object) -> Route:
    """Syntax only; `topofile_check` checks dev, gateway reachability and src against the node."""
    m = mapping(src, where, value, allowed=("via", "dev", "src", "metric", "onlink", "table", "type"),
                required=("to",))
    to = m["to"]
    if to == "default":
        dst = "default"
    else:
        try:
            dst = str(parse_ipv4_network(to, bare=True))
        except ValueError as e:
            raise src.error(f"{where}.to", f"expected default or a CIDR like 10.0.2.0/24, got {excerpt(to)} "
                                           f"({e})") from None
    r = Route(dst)
    if m.get("via") is not None:
        r.via = str(ipv4(src, f"{where}.via", m["via"]))
    if m.get("dev") is not None:
        r.dev = string(src, f"{where}.dev", m["dev"])
    if m.get("src") is not None:
        r.src = str(ipv4(src, f"{where}.src", m["src"]))
    if m.get("metric") is not None:
        r.metric = integer(src, f"{where}.metric", m["metric"], 0, 2**32 - 1)
    if m.get("onlink") is not None:
        r.onlink = boolean(src, f"{where}.onlink", m["onlink"])
        if r.onlink and (r.via is None or r.dev is None):
            raise src.error(f"{where}.onlink", "an onlink route needs both via and dev")
    if m.get("table") is not None:
        from pktemu.net.fib_rules import table_id
        try:
            r.table = table_id(str(m["table"]))
        except ValueError as e:
            raise src.error(f"{where}.table", str(e)) from None
    if m.get("type") is not None:
        if m["type"] not in ("unicast", "blackhole", "unreachable", "prohibit", "throw"):
            raise src.error(f"{where}.type", "expected unicast, blackhole, unreachable, prohibit or throw, "
                                             f"got {excerpt(m['type'])}")
        r.type = m["type"]
        if r.type != "unicast" and (r.via is not None or r.dev is not None):
            raise src.error(f"{where}.type", f"a {r.type} route takes neither via nor dev")
    if r.via is None and r.dev is None and r.type == "unicast":
        raise src.error(where, "a route needs via, dev or both")
    return r
