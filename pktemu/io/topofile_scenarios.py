"""`scenarios:`: timed traffic (apps started in a node or pod) and per-scenario overrides."""
from __future__ import annotations

import re
from typing import Any

from pktemu.errors import excerpt
from pktemu.io.atomic import entry_name_problem
from pktemu.io.topofile_fields import Src, boolean, mapping, name, seq, string
from pktemu.io.topofile_nodes import parse_app
from pktemu.io.topofile_sysctl import parse_sysctls
from pktemu.topo import Node, Override, Scenario, Traffic
from pktemu.units import parse_duration

CLIENT_RESULT = "client-result.json"
#: what the servers (apps that are not traffic) saw
SERVER_RESULT = "server-result.json"
#: Files of a scenario's output directory that a traffic item's `result` cannot name.
_RESERVED = ("scenario.json", SERVER_RESULT)
_FILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")


def parse_scenario(src: Src, where: str, sname: str, value: object, nodes: dict[str, Node]) -> Scenario:
    name(src, where, sname, "scenario name")
    if (problem := entry_name_problem(sname)) is not None:
        raise src.error(where, f"a scenario name names its output folder, and this one is {problem}")
    m = mapping(src, where, value, allowed=("description", "traffic", "overrides", "duration", "settle"))
    sc = Scenario(sname)
    if m.get("description") is not None:
        sc.description = string(src, f"{where}.description", m["description"])
    if m.get("duration") is not None:
        sc.duration = parse_duration(m["duration"], src.at(f"{where}.duration"))
    if m.get("settle") is not None:
        sc.settle = parse_duration(m["settle"], src.at(f"{where}.settle"))
    for i, t in enumerate(seq(src, f"{where}.traffic", m.get("traffic"))):
        sc.traffic.append(_traffic(src, f"{where}.traffic[{i}]", t, nodes))
    for i, o in enumerate(seq(src, f"{where}.overrides", m.get("overrides"))):
        sc.overrides.append(_override(src, f"{where}.overrides[{i}]", o, nodes))
    return sc


def scenario_end(sc: Scenario) -> int:
    """The last instant of a scenario's run (pktemu.io.run stops there at the latest): the last
    traffic start plus `duration`."""
    return max((tr.at for tr in sc.traffic), default=0) + sc.duration


def result_files(traffic: list[Traffic]) -> dict[str, list[int]]:
    """Output file -> the traffic items (indexes) whose result it holds, in traffic order.

    A file of one item holds its result; a file of several holds the list of their results. By
    default every item writes client-result.json (the oracle's file; a list when there are several
    items, as before `result` was honoured); `result: null` writes nothing."""
    files: dict[str, list[int]] = {}
    for i, tr in enumerate(traffic):
        if tr.result is not None:
            files.setdefault(tr.result, []).append(i)
    return files


def _traffic(src: Src, where: str, value: object, nodes: dict[str, Node]) -> Traffic:
    """`{at, pod|node, app, result}`; the result goes to client-result.json unless `result` says."""
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
        raise src.error(f"{where}.{field}", f"no {field} named {excerpt(n)}{hint}")
    at = 0 if m.get("at") is None else parse_duration(m["at"], src.at(f"{where}.at"))
    result: str | None = CLIENT_RESULT
    if "result" in m:
        if m["result"] is None:
            result = None
        else:
            result = string(src, f"{where}.result", m["result"])
            if not _FILE.match(result) or not result.endswith(".json") or result in _RESERVED:
                raise src.error(f"{where}.result", f"not a plain file name ending in .json (and not "
                                                   f"{', '.join(_RESERVED)}): {excerpt(result)}")
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
            raise src.error(f"{where}.port", f"{excerpt(target)} is not a bridge port (write node/ifname)")
        return Override(target, {"hairpin": boolean(src, f"{where}.hairpin", m["hairpin"])})
    if m.get("node") is not None:
        mapping(src, where, m, allowed=("node", "sysctls"), required=("sysctls",))
        n = string(src, f"{where}.node", m["node"])
        if n not in nodes:
            raise src.error(f"{where}.node", f"no node or pod named {excerpt(n)}")
        node = nodes[n]
        sysctls: dict[str, Any] = parse_sysctls(src, f"{where}.sysctls", m["sysctls"],
                                                set(node.interfaces) | set(node.bridges))
        return Override(n, {"sysctls": sysctls})
    raise src.error(where, "an override needs port: (with hairpin:) or node: (with sysctls:)")
