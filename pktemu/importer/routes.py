"""A node dump's routes (`ip -j route`, every table) and `ip rule`s -> the topology node's `routes`
and `ip_rules`.

Kept: the unicast routes through the devices the node keeps, and blackhole, unreachable, prohibit
and throw routes; left out, one warning each naming the route as `ip route` prints it: the
kernel's connected routes (pktemu adds them from the addresses) and local table, routes through
devices left out or via a gateway on no connected network, multipath routes, and a route with a
field `ip` would not print (a metric out of range, a destination that is not a network).
IPv6 routes (not emulated) are listed in one line per node.
"""
from __future__ import annotations

import ipaddress
from typing import Any

from pktemu.importer import Notes
from pktemu.importer.fields import SHAPE_ERRORS, route_metric
from pktemu.importer.node import ImportedNode

Connected = list[tuple[str, ipaddress.IPv4Network | None, str | None]]
TYPED = ("blackhole", "unreachable", "prohibit", "throw")


def _kept_devices(node: ImportedNode) -> set[str]:
    return set(node.bridges) | set(node.vxlans) | set(node.routed) | ({"tunl0"} if node.tunl else set()) \
        | ({node.uplink} if node.uplink else set())


def _connected(node: ImportedNode) -> Connected:
    """(device, connected network, p2p peer) of each kept address."""
    out: Connected = []
    for b in node.bridges.values():
        out += [(b.name, a.network, None) for a in b.addresses]
    for v in node.vxlans.values():
        out += [(v.name, ipaddress.IPv4Interface(a).network, None) for a in v.addresses]
    for a in (node.tunl or {}).get("addresses", []):
        out.append(("tunl0", ipaddress.IPv4Interface(a).network, None))
    for a in node.uplink_addresses:
        if isinstance(a, dict):
            out.append((node.uplink or "", None, a["peer"]))
        else:
            out.append((node.uplink or "", ipaddress.IPv4Interface(a).network, None))
    return out


def label(r: dict[str, Any]) -> str:
    """The route as `ip route` names it: `DST [via GW] [dev DEV] [table T]`."""
    words = [str(r.get("dst"))[:40]]
    for key, word in (("gateway", "via"), ("dev", "dev")):
        if r.get(key) is not None:
            words += [word, str(r[key])[:40]]
    if str(r.get("table", "main")) != "main":
        words += ["table", str(r.get("table"))[:20]]
    return " ".join(words)


def _ipv6(r: dict[str, Any]) -> bool:
    return any(isinstance(r.get(k), str) and ":" in r[k] for k in ("dst", "gateway"))


def read_routes(node: ImportedNode, routes: list[dict[str, Any]], notes: Notes) -> None:
    kept, conn = _kept_devices(node), _connected(node)
    seen: set[tuple[str, int, str]] = set()
    ipv6: list[str] = []
    for r in routes:
        if str(r.get("table", "main")) == "local":
            continue
        if _ipv6(r):
            ipv6.append(label(r))
            continue
        where = f"{node.where}: ip-route.json: route {label(r)}"
        try:
            _route(node, r, where, kept, conn, seen, notes)
        except SHAPE_ERRORS:
            notes.warn(where, "a field not as `ip -j route` prints it: left out")
    if ipv6:
        shown = ", ".join(ipv6[:4]) + (", ..." if len(ipv6) > 4 else "")
        notes.warn(f"{node.where}: ip-route.json",
                   f"{len(ipv6)} IPv6 routes left out (IPv6 is not emulated): {shown}")


def _route(node: ImportedNode, r: dict[str, Any], where: str, kept: set[str], conn: Connected,
           seen: set[tuple[str, int, str]], notes: Notes) -> None:
    table = str(r.get("table", "main"))
    dst, dev, via = str(r.get("dst")), r.get("dev"), r.get("gateway")
    rtype = r.get("type", "unicast")
    try:
        if dst != "default":
            ipaddress.IPv4Network(dst)
        if via is not None:
            ipaddress.IPv4Address(via)
    except ValueError:
        notes.warn(where, "not an IPv4 route pktemu can read: left out")
        return
    if r.get("protocol") == "kernel" and r.get("scope") == "link":
        return                                       # connected: pktemu adds it from the address
    if rtype in TYPED:
        _typed_route(node, r, where, dst, table, seen, notes)
        return
    if rtype != "unicast":
        notes.warn(where, f"{str(rtype)[:30]} routes are not emulated: left out")
        return
    if r.get("nexthops"):
        notes.warn(where, "multipath route: not emulated, left out")
        return
    if dev not in kept:
        notes.warn(where, f"through device {dev}, which is left out: left out")
        return
    onlink = "onlink" in (r.get("flags") or [])
    if via is not None and not onlink and not any(
            d == dev and ((net is not None and ipaddress.IPv4Address(via) in net) or peer == via)
            for d, net, peer in conn):
        notes.warn(where, f"gateway {via} is not on a connected network of {dev}: left out")
        return
    metric = _claim(r, where, dst, table, seen, notes)
    if metric is None:
        return
    entry: dict[str, Any] = {"to": dst}
    if via is not None:
        entry["via"] = str(via)
    entry["dev"] = str(dev)
    if onlink and via is not None:
        entry["onlink"] = True
    if r.get("prefsrc") and r["prefsrc"] in node.all_addresses:
        entry["src"] = str(r["prefsrc"])
    if metric:
        entry["metric"] = metric
    if table != "main":
        entry["table"] = int(table) if table.isdigit() else table
    node.routes.append(entry)


def _claim(r: dict[str, Any], where: str, dst: str, table: str, seen: set[tuple[str, int, str]],
           notes: Notes) -> int | None:
    """The route's metric, if it is readable and the first route to `dst` with it in `table`."""
    metric = route_metric(r, where, notes)
    if metric is None:
        return None
    if (dst, metric, table) in seen:
        notes.warn(where, "a second route with this destination and metric: left out")
        return None
    seen.add((dst, metric, table))
    return metric


def _typed_route(node: ImportedNode, r: dict[str, Any], where: str, dst: str, table: str,
                 seen: set[tuple[str, int, str]], notes: Notes) -> None:
    """A blackhole/unreachable/prohibit/throw route (Calico's `blackhole` for its IPAM block)."""
    metric = _claim(r, where, dst, table, seen, notes)
    if metric is None:
        return
    entry: dict[str, Any] = {"to": dst, "type": str(r["type"])}
    if metric:
        entry["metric"] = metric
    if table != "main":
        entry["table"] = int(table) if table.isdigit() else table
    node.routes.append(entry)


def read_rules(node: ImportedNode, rules: list[dict[str, Any]], notes: Notes) -> None:
    """`ip -j rule` -> the topology's `ip_rules` (as `ip rule add` words), the kernel's three
    default rules left implicit; a rule with a selector pktemu does not model is left out."""
    from pktemu.net.fib_rules import DEFAULT_RULES, json_rule_words, parse_rule
    where = f"{node.where}: ip-rule.json"
    present: set[int] = set()
    for r in rules:
        if not isinstance(r, dict):
            notes.warn(where, "a rule that is not a JSON object: left out")
            continue
        try:
            toks, unknown = json_rule_words(r)
        except SHAPE_ERRORS:
            notes.warn(f"{where}: rule {str(r.get('priority'))[:20]}",
                       "a field not as `ip -j rule` prints it: left out")
            continue
        if unknown:
            notes.warn(f"{where}: rule {r.get('priority')}",
                       f"{', '.join(unknown)}: not emulated, rule left out")
            continue
        try:
            rule, _ = parse_rule(toks)
        except ValueError as e:
            notes.warn(f"{where}: rule {r.get('priority')}", f"{e}: left out")
            continue
        if rule in DEFAULT_RULES:
            present.add(rule.priority)
            continue
        node.ip_rules.append(" ".join(toks))
    if rules:
        for d in DEFAULT_RULES:
            if d.priority not in present:
                notes.warn(where, f"the default rule \"{d.text}\" was deleted on the node; pktemu keeps it")
