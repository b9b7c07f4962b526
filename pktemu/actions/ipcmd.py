"""`ip link set`, `ip route add|del|replace [table N]`, `ip rule add|del`, `bridge link set ...
hairpin` and `sysctl -w` mid-run.

Arguments are the tools' own command lines (`ip: "route add 10.9.0.0/16 via 10.240.0.1"`);
`sysctl` takes `{key: value}` or `"key=value"`. Names (devices, bridge ports, sysctl keys) are
checked when the topology loads; what depends on the moment (a route that already exists, a
gateway no longer reachable) fails at run time with iproute2's message.
"""
from __future__ import annotations

import ipaddress
from dataclasses import replace
from typing import Any

from pktemu.actions.base import ActionFailed, NodeCtx, Where, need, words
from pktemu.errors import PktemuError, excerpt
from pktemu.io.topofile_sysctl import parse_sysctls
from pktemu.net.frame import ip2int
from pktemu.net.fib_rules import RT_TABLE_MAIN, find_rule, parse_rule, table_id
from pktemu.net.route import Route, RouteTable
from pktemu.timeline import NODE, register
from pktemu.units import parse_ipv4, parse_ipv4_network

ROUTE_TYPES = ("unicast", "blackhole", "unreachable", "prohibit", "throw")


def _devices(node: Any) -> set[str]:
    return set(node.interfaces) | set(node.bridges) if node is not None else set()


def _dev(name: str, where: str, node: Any) -> str:
    if node is not None and name not in _devices(node):
        raise PktemuError(f"{where}: no device {excerpt(name)} on {node.name} "
                          f"(devices: {', '.join(sorted(_devices(node))) or 'none'})")
    return name


# ---------------------------------------------------------------------------- ip
def _parse_route(toks: list[str], where: str, node: Any) -> dict[str, Any]:
    verb = need(toks, 1, where, "add, del or replace")
    if verb not in ("add", "del", "delete", "replace"):
        raise PktemuError(f"{where}: ip route {excerpt(verb)}: expected add, del or replace")
    dst = need(toks, 2, where, "a destination")
    rtype = "unicast"
    if dst in ROUTE_TYPES:
        rtype, toks = dst, toks[:2] + toks[3:]
        dst = need(toks, 2, where, "a destination")
    if dst != "default":
        try:
            dst = str(parse_ipv4_network(dst, bare=True))
        except ValueError as e:
            raise PktemuError(f"{where}: not a destination like 10.9.0.0/16: {excerpt(dst)} ({e})") from None
    r: dict[str, Any] = {"what": "route", "verb": "del" if verb == "delete" else verb, "dst": dst,
                         "type": rtype}
    i = 3
    while i < len(toks):
        key = toks[i]
        if key == "onlink":                 # a nexthop flag, the one argument without a value
            r["onlink"] = True
            i += 1
            continue
        val = need(toks, i + 1, where, f"a value for {key}")
        if key in ("via", "src"):
            try:
                r[key] = str(parse_ipv4(val))
            except ValueError:
                raise PktemuError(f"{where}: {key}: not an IPv4 address: {excerpt(val)}") from None
        elif key == "dev":
            r["dev"] = _dev(val, where, node)
        elif key == "metric":
            if not val.isdigit() or int(val) > 2**32 - 1:
                raise PktemuError(f"{where}: metric: expected a number, got {excerpt(val)}")
            r["metric"] = int(val)
        elif key == "table":
            try:
                r["table"] = table_id(val)
            except ValueError as e:
                raise PktemuError(f"{where}: table: {e}") from None
        else:
            raise PktemuError(f"{where}: ip route: unknown or unsupported argument {excerpt(key)} "
                              "(via, dev, src, metric, table, onlink)")
        i += 2
    if r["verb"] != "del" and "via" not in r and "dev" not in r and r["type"] == "unicast":
        raise PktemuError(f"{where}: a route needs via, dev or both")
    if r["type"] != "unicast" and ("via" in r or "dev" in r):
        raise PktemuError(f"{where}: a {r['type']} route takes neither via nor dev")
    if r.get("onlink") and r["verb"] != "del" and ("via" not in r or "dev" not in r):
        raise PktemuError(f"{where}: an onlink route needs both via and dev (the kernel says: Nexthop "
                          "device required for onlink)")
    return r


def _parse_rule(toks: list[str], where: str) -> dict[str, Any]:
    verb = need(toks, 1, where, "add or del")
    if verb not in ("add", "del", "delete"):
        raise PktemuError(f"{where}: ip rule {excerpt(verb)}: expected add or del")
    try:
        rule, given = parse_rule(toks[2:])
    except ValueError as e:
        raise PktemuError(f"{where}: ip rule: {e}") from None
    return {"what": "rule", "verb": "del" if verb == "delete" else verb, "rule": rule,
            "given": sorted(given)}


def _parse_ip(value: Any, where: str, base: str, node: Any) -> dict[str, Any]:
    toks = words(value, where, "ip")
    obj = toks[0]
    if obj == "link":
        if len(toks) < 4 or toks[1] != "set":
            raise PktemuError(f"{where}: expected \"link set DEV up|down\", got {excerpt(value)}")
        rest = toks[2:]
        if rest[0] == "dev":
            rest = rest[1:]
        if len(rest) != 2 or rest[1] not in ("up", "down"):
            raise PktemuError(f"{where}: expected \"link set DEV up|down\", got {excerpt(value)}")
        return {"what": "link", "dev": _dev(rest[0], where, node), "up": rest[1] == "up"}
    if obj in ("route", "r", "ro"):
        return _parse_route(toks, where, node)
    if obj in ("rule", "ru"):
        return _parse_rule(toks, where)
    raise PktemuError(f"{where}: ip {excerpt(obj)}: supported are \"link set DEV up|down\", "
                      "\"route add|del|replace ...\" and \"rule add|del ...\"")


def _route(node: Any, a: dict[str, Any]) -> Route:
    net = ipaddress.IPv4Network("0.0.0.0/0" if a["dst"] == "default" else a["dst"])
    table = a.get("table", RT_TABLE_MAIN)
    if a.get("type", "unicast") != "unicast":
        return Route(int(net.network_address), net.prefixlen, "lo", metric=a.get("metric", 0), table=table,
                     type=a["type"])
    gw = ip2int(a["via"]) if "via" in a else None
    dev = a.get("dev")
    if a.get("onlink"):                     # the gateway is on `dev`, whatever its addresses say
        d = node.devices.get(dev)
        if d is None:
            raise ActionFailed(f"Cannot find device \"{dev}\"")
        if not d.up:
            raise ActionFailed("Error: Nexthop device is not up.")
    elif gw is not None:
        conn = node.routes.lookup(gw)
        if conn is None or conn.gateway is not None or (dev is not None and conn.dev != dev):
            raise ActionFailed("Error: Nexthop has invalid gateway.")
        dev = dev or conn.dev
    if dev is None or dev not in node.devices:
        raise ActionFailed(f"Cannot find device \"{dev}\"")
    return Route(int(net.network_address), net.prefixlen, dev, gateway=gw,
                 src=ip2int(a["src"]) if "src" in a else None, metric=a.get("metric", 0), table=table,
                 onlink=bool(a.get("onlink")))


def _matching(node: Any, a: dict[str, Any]) -> list[Route]:
    net = ipaddress.IPv4Network("0.0.0.0/0" if a["dst"] == "default" else a["dst"])
    out = []
    for r in node.fib.tables.get(a.get("table", RT_TABLE_MAIN), RouteTable()).routes():
        if (r.prefix, r.plen) != (int(net.network_address), net.prefixlen):
            continue
        if "via" in a and r.gateway != ip2int(a["via"]):
            continue
        if ("dev" in a and r.dev != a["dev"]) or ("metric" in a and r.metric != a["metric"]):
            continue
        if a.get("type", "unicast") != "unicast" and r.type != a["type"]:
            continue
        out.append(r)
    return out


def run_ip(ctx: NodeCtx, a: dict[str, Any]) -> str | None:
    node = ctx.node
    if a["what"] == "link":
        from pktemu.net.link import link_set
        if a["dev"] not in node.devices:
            raise ActionFailed(f"Cannot find device \"{a['dev']}\"")
        link_set(node, a["dev"], a["up"], f"ip link set {a['dev']} {'up' if a['up'] else 'down'} {ctx.when}")
        return None
    if a["what"] == "rule":
        return _run_rule(ctx, a)
    table = node.fib.table(a.get("table", RT_TABLE_MAIN)) if a["verb"] != "del" else None
    if a["verb"] == "del":
        found = _matching(node, a)
        if not found:
            raise ActionFailed("RTNETLINK answers: No such process")
        node.fib.tables[found[0].table].remove(found[0])
        return None
    rt = replace(_route(node, a), why=f"{'replaced' if a['verb'] == 'replace' else 'added'} {ctx.when} "
                                      f"by ip route {a['verb']}")
    key = (rt.prefix, rt.plen, rt.metric)
    assert table is not None
    same = [r for r in table.routes() if (r.prefix, r.plen, r.metric) == key]
    if same and a["verb"] == "add":
        raise ActionFailed("RTNETLINK answers: File exists")
    for r in same:
        table.remove(r)
    node.add_route(rt)
    return None


def _run_rule(ctx: NodeCtx, a: dict[str, Any]) -> str | None:
    """`ip rule add|del`: add places a rule with no priority by fib_default_rule_pref; del takes
    the first rule equal on every field given (EEXIST/ENOENT as the kernel answers)."""
    fib = ctx.node.fib
    rule = a["rule"]
    if a["verb"] == "del":
        found = find_rule(fib.rules, rule, set(a["given"]))
        if found is None:
            raise ActionFailed("RTNETLINK answers: No such file or directory")
        fib.del_rule(found)
        return None
    if rule.priority < 0:
        rule = replace(rule, priority=fib.default_priority())
    if rule.action == "goto" and rule.goto is not None and rule.goto <= rule.priority:
        raise ActionFailed("Error: Backward goto not supported.")
    fib.add_rule(rule)
    ctx.node.changes[f"rule {rule.priority}"] = f"rule {rule.priority} added {ctx.when} by ip rule add"
    return None


# ---------------------------------------------------------------------------- bridge
def _parse_bridge(value: Any, where: str, base: str, node: Any) -> dict[str, Any]:
    toks = words(value, where, "bridge")
    if toks[:2] != ["link", "set"]:
        raise PktemuError(f"{where}: supported is \"link set dev PORT hairpin on|off\", got {excerpt(value)}")
    rest = toks[2:]
    if rest[:1] == ["dev"]:
        rest = rest[1:]
    if len(rest) != 3 or rest[1] != "hairpin" or rest[2] not in ("on", "off"):
        raise PktemuError(f"{where}: expected \"link set dev PORT hairpin on|off\", got {excerpt(value)}")
    port = rest[0]
    if node is not None and not any(p.name == port for br in node.bridges.values() for p in br.ports):
        raise PktemuError(f"{where}: {excerpt(port)} is not a bridge port of {node.name}")
    return {"port": port, "hairpin": rest[2] == "on"}


def run_bridge(ctx: NodeCtx, a: dict[str, Any]) -> str | None:
    from pktemu.net.bridge import Bridge
    for dev in ctx.node.devices.values():
        if isinstance(dev, Bridge) and a["port"] in dev.ports:
            dev.ports[a["port"]].hairpin = a["hairpin"]
            ctx.node.changes[f"hairpin {a['port']}"] = \
                f"hairpin {'on' if a['hairpin'] else 'off'} {ctx.when} by bridge link set"
            return None
    raise ActionFailed(f"Error: {a['port']} is not a bridge port")


# ---------------------------------------------------------------------------- sysctl
def _parse_sysctl(value: Any, where: str, base: str, node: Any) -> dict[str, Any]:
    if isinstance(value, str):
        toks = words(value, where, "sysctl")
        if toks[0] == "-w":
            toks = toks[1:]
        pairs: dict[str, Any] = {}
        for t in toks:
            k, eq, v = t.partition("=")
            if not eq or not v.lstrip("-").isdigit():
                raise PktemuError(f"{where}: expected key=value with an integer value, got {excerpt(t)}")
            pairs[k] = int(v)
        value = pairs
    if not isinstance(value, dict) or not value:
        raise PktemuError(f"{where}: expected {{key: value}} or \"key=value\", got {excerpt(value)}")
    return {"set": parse_sysctls(Where(""), where, value, _devices(node))}


def run_sysctl(ctx: NodeCtx, a: dict[str, Any]) -> str | None:
    out = []
    for k, v in a["set"].items():
        ctx.node.sysctls[k] = v
        ctx.node.changes[f"sysctl {k}"] = f"{k}={v} {ctx.when} by sysctl -w"
        out.append(f"{k} = {v}")
    return "\n".join(out)


register("ip", _parse_ip, run_ip, NODE)
register("bridge", _parse_bridge, run_bridge, NODE)
register("sysctl", _parse_sysctl, run_sysctl, NODE)
