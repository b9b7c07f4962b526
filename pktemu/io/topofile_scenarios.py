"""`scenarios:`: timed traffic (apps started in a node or pod) and per-scenario overrides."""
from __future__ import annotations

import re
from typing import Any

from pktemu.errors import excerpt
from pktemu.io.atomic import entry_name_problem
from pktemu.io.topofile_fields import Src, mapping, name, seq, string
from pktemu.io.topofile_nodes import check_app_ports, parse_app
from pktemu.io.topofile_overrides import parse_override
from pktemu.io.topofile_timeline import Names, parse_timeline
from pktemu.topo import Node, Override, Scenario, Step, Topology, Traffic
from pktemu.units import parse_duration

CLIENT_RESULT = "client-result.json"
#: what the servers (apps that are not traffic) saw
SERVER_RESULT = "server-result.json"
#: The .json files of a scenario's output directory that a traffic item's `result` cannot name (its
#: other files do not end in .json): the scenario's description, the servers' results, a scenario's
#: steps (pktemu.io.run) and `pktemu replay`'s statistics.
_RESERVED = ("scenario.json", SERVER_RESULT, "steps.json", "replay.json")
#: The longest file name (NAME_MAX): a result file is written as it is named in the scenario's
#: (temporary) folder.
FILE_NAME_MAX = 255
_FILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")


def parse_scenario(src: Src, where: str, sname: str, value: object, t: Topology) -> Scenario:
    """A scenario: its traffic, overrides and timeline, or its `steps` run one after another."""
    nodes = t.nodes
    name(src, where, sname, "scenario name")
    if (problem := entry_name_problem(sname)) is not None:
        raise src.error(where, f"a scenario name names its output folder, and this one is {problem}")
    m = mapping(src, where, value, allowed=("description", "traffic", "overrides", "duration", "settle",
                                            "timeline", "steps"))
    sc = Scenario(sname)
    _common(src, where, m, sc)
    for i, tr in enumerate(seq(src, f"{where}.traffic", m.get("traffic"))):
        sc.traffic.append(_traffic(src, f"{where}.traffic[{i}]", tr, nodes))
    for i, o in enumerate(seq(src, f"{where}.overrides", m.get("overrides"))):
        sc.overrides.append(_override(src, f"{where}.overrides[{i}]", o, nodes))
    steps = seq(src, f"{where}.steps", m.get("steps"))
    if steps and sc.traffic:
        raise src.error(f"{where}.steps", "give traffic: or steps:, not both "
                                          "(put the traffic in a first step)")
    for key in ("duration", "settle"):
        if steps and m.get(key) is not None:      # it was ignored: each step has its own
            raise src.error(f"{where}.{key}", f"a scenario with steps: has no {key} of its own, each step "
                                              f"has its own (give {key}: in the steps)")
    seen: dict[str, str] = {}
    step_timelines = []
    for i, sv in enumerate(steps):
        st, value = _step(src, f"{where}.steps[{i}]", sv, t, seen)
        sc.steps.append(st)
        step_timelines.append(value)
    sc.timeline = parse_timeline(src, f"{where}.timeline", m.get("timeline"), t, scenario_end(sc))
    # the steps run one after another: what one applies or deletes, the next finds so; the
    # scenario's own timeline runs beside them, at times the steps' ends decide
    objects = Names.of(src, t, beside=sc.timeline)
    objects.stepped = True
    for i, (st, value) in enumerate(zip(sc.steps, step_timelines, strict=True)):
        st.timeline = parse_timeline(src, f"{where}.steps[{i}].timeline", value, t, step_end(st),
                                     objects=objects)
    _check_server_ports(src, where, sc, nodes)
    return sc


def _check_server_ports(src: Src, where: str, sc: Scenario, nodes: dict[str, Node]) -> None:
    """Servers the traffic starts, against the node's own apps and each other (pktemu.io.
    topofile_nodes.check_app_ports); a node whose apps the timeline starts or stops is left to the
    run, where a start on a taken port fails as a timeline action does."""
    items = [(f"{where}.traffic[{i}].app", tr) for i, tr in enumerate(sc.traffic)]
    items += [(f"{where}.steps[{k}].traffic[{i}].app", tr)
              for k, st in enumerate(sc.steps) for i, tr in enumerate(st.traffic)]
    timeline = [*sc.timeline, *(e for st in sc.steps for e in st.timeline)]
    acted = {e.node for e in timeline if e.action == "app"}
    for n in dict.fromkeys(tr.node for _, tr in items if tr.node not in acted):
        node = nodes[n]
        own = f"{'pods' if node.kind == 'pod' else 'nodes'}.{n}.apps"
        placed = [(f"{own}[{j}]", a) for j, a in enumerate(node.apps)]
        check_app_ports(src, placed + [(at, tr.app) for at, tr in items if tr.node == n], len(placed))


def _step(src: Src, where: str, value: object, t: Topology, seen: dict[str, str]) -> tuple[Step, object]:
    """The step without its timeline, and the timeline's value (parsed once every step is known)."""
    m = mapping(src, where, value, required=("name",),
                allowed=("name", "description", "traffic", "timeline", "duration", "settle"))
    st = Step(name(src, f"{where}.name", m["name"], "step name"))
    if len(step_result(st.name)) > FILE_NAME_MAX:
        raise src.error(f"{where}.name", f"a step name names its clients' result file "
                        f"{step_result('<step>')}, and this one is {len(st.name)} characters long, more "
                        f"than {FILE_NAME_MAX - len(step_result(''))}")
    if st.name in seen:
        raise src.error(f"{where}.name", f"{st.name} is also the name of {seen[st.name]}")
    seen[st.name] = where
    _common(src, where, m, st)
    for i, tr in enumerate(seq(src, f"{where}.traffic", m.get("traffic"))):
        item = _traffic(src, f"{where}.traffic[{i}]", tr, t.nodes)
        if item.result == CLIENT_RESULT and not (isinstance(tr, dict) and "result" in tr):
            item.result = step_result(st.name)
        st.traffic.append(item)
    return st, m.get("timeline")


def _common(src: Src, where: str, m: dict[str, Any], obj: Scenario | Step) -> None:
    """What scenarios and steps share: `description`, `duration`, `settle`."""
    if m.get("description") is not None:
        obj.description = string(src, f"{where}.description", m["description"])
    if m.get("duration") is not None:
        obj.duration = parse_duration(m["duration"], src.at(f"{where}.duration"))
    if m.get("settle") is not None:
        obj.settle = parse_duration(m["settle"], src.at(f"{where}.settle"))


def step_result(step: str) -> str:
    """A step's default result file: its clients' results, apart from the other steps'."""
    return f"client-result-{step}.json"


def step_end(st: Step) -> int:
    """The last instant of a step, from its start: the last traffic start plus `duration`."""
    return max((tr.at for tr in st.traffic), default=0) + st.duration


def scenario_end(sc: Scenario) -> int:
    """The last instant of a scenario's run (pktemu.io.run stops there at the latest): the last
    traffic start plus `duration`; with steps, every step run to its end and settled."""
    if sc.steps:
        return sum(step_end(st) + st.settle for st in sc.steps)
    return max((tr.at for tr in sc.traffic), default=0) + sc.duration


def all_traffic(sc: Scenario) -> list[Traffic]:
    """The scenario's traffic items, then each step's, in the order their runs are recorded."""
    return [*sc.traffic, *(tr for st in sc.steps for tr in st.traffic)]


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
            if len(result) > FILE_NAME_MAX:
                raise src.error(f"{where}.result", f"a file name is at most {FILE_NAME_MAX} bytes, and "
                                                   f"{excerpt(result)} is {len(result)}")
    return Traffic(at, n, parse_app(src, f"{where}.app", m["app"]), result)


def _override(src: Src, where: str, value: object, nodes: dict[str, Node]) -> Override:
    """See pktemu.io.topofile_overrides (hairpin, sysctls, routes, addresses, iptables)."""
    return parse_override(src, where, value, nodes)
