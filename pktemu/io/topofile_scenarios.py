"""`scenarios:`: timed traffic (apps started in a node or pod) and per-scenario overrides."""
from __future__ import annotations

import re
from typing import Any

from pktemu.io.topofile_fields import Src, boolean, mapping, name, seq, string
from pktemu.io.topofile_nodes import parse_app
from pktemu.io.topofile_sysctl import parse_sysctls
from pktemu.topo import Node, Override, Scenario, Traffic
from pktemu.units import parse_duration

CLIENT_RESULT = "client-result.json"
_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def parse_scenario(src: Src, where: str, sname: str, value: object, nodes: dict[str, Node]) -> Scenario:
    name(src, where, sname, "scenario name")
    m = mapping(src, where, value, allowed=("description", "traffic", "overrides", "duration", "settle"))
    sc = Scenario(sname)
    if m.get("description") is not None:
        sc.description = string(src, f"{where}.description", m["description"])
    if m.get("duration") is not None:
        sc.duration = parse_duration(m["duration"], src.at(f"{where}.duration"))
    if m.get("settle") is not None:
        sc.settle = parse_duration(m["settle"], src.at(f"{where}.settle"))
    results: dict[str, str] = {}
    for i, t in enumerate(seq(src, f"{where}.traffic", m.get("traffic"))):
        tr = _traffic(src, f"{where}.traffic[{i}]", t, nodes, first=(i == 0))
        if tr.result is not None:
            if tr.result in results:
                raise src.error(f"{where}.traffic[{i}].result",
                                f"{tr.result} is also written by {results[tr.result]}")
            results[tr.result] = f"{where}.traffic[{i}]"
        sc.traffic.append(tr)
    for i, o in enumerate(seq(src, f"{where}.overrides", m.get("overrides"))):
        sc.overrides.append(_override(src, f"{where}.overrides[{i}]", o, nodes))
    return sc


def _traffic(src: Src, where: str, value: object, nodes: dict[str, Node], first: bool) -> Traffic:
    """`{at, pod|node, app, result}`; the first entry's result goes to client-result.json by default."""
    m = mapping(src, where, value, allowed=("at", "pod", "node", "result"), required=("app",))
    if (m.get("pod") is None) == (m.get("node") is None):
        raise src.error(where, "give exactly one of pod: or node:")
    field = "pod" if m.get("pod") is not None else "node"
    n = string(src, f"{where}.{field}", m[field])
    node = nodes.get(n)
    if node is None or (node.kind == "pod") != (field == "pod"):
        hint = ""
        if node is not None:
            other = "node" if field == "pod" else "pod"
            hint = f" ({n} is a {other}; write {other}: {n})"
        raise src.error(f"{where}.{field}", f"no {field} named {n!r}{hint}")
    at = 0 if m.get("at") is None else parse_duration(m["at"], src.at(f"{where}.at"))
    result: str | None = CLIENT_RESULT if first else None
    if "result" in m:
        if m["result"] is None:
            result = None
        else:
            result = string(src, f"{where}.result", m["result"])
            if not _FILE.match(result):
                raise src.error(f"{where}.result", f"not a plain file name: {result!r}")
    return Traffic(at, n, parse_app(src, f"{where}.app", m["app"]), result)


def _override(src: Src, where: str, value: object, nodes: dict[str, Node]) -> Override:
    """`{port: node/ifname, hairpin: bool}` or `{node: X, sysctls: {...}}`."""
    m = mapping(src, where, value, allowed=("port", "hairpin", "node", "sysctls"))
    if m.get("port") is not None:
        mapping(src, where, m, allowed=("port", "hairpin"), required=("hairpin",))
        target = string(src, f"{where}.port", m["port"])
        n, _, ifn = target.partition("/")
        node = nodes.get(n)
        if node is None or not any(p.name == ifn for br in node.bridges.values() for p in br.ports):
            raise src.error(f"{where}.port", f"{target!r} is not a bridge port (write node/ifname)")
        return Override(target, {"hairpin": boolean(src, f"{where}.hairpin", m["hairpin"])})
    if m.get("node") is not None:
        mapping(src, where, m, allowed=("node", "sysctls"), required=("sysctls",))
        n = string(src, f"{where}.node", m["node"])
        if n not in nodes:
            raise src.error(f"{where}.node", f"no node or pod named {n!r}")
        node = nodes[n]
        sysctls: dict[str, Any] = parse_sysctls(src, f"{where}.sysctls", m["sysctls"],
                                                set(node.interfaces) | set(node.bridges))
        return Override(n, {"sysctls": sysctls})
    raise src.error(where, "an override needs port: (with hairpin:) or node: (with sysctls:)")
