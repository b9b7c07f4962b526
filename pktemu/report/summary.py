"""A big topology's picture in seconds: past `SUMMARY_LIMIT` namespaces, `dot` would spend minutes
on every pod's cluster (a 100-node x 30-pod cluster took 41 s, 1000 x 30 did not finish in 60 s),
and the picture would be unreadable anyway. So each node becomes one box with its devices, pod
CIDR, pods (counted), routes and links as text; the nodes asked for with `--node` stay in full;
Services say how many endpoints on how many nodes. The title says it is a summary and how to get
the whole picture.
"""
from __future__ import annotations

import re
from collections.abc import Iterable

from pktemu.errors import PktemuError
from pktemu.report.layout import Box, Device, Diagram, Namespace, from_topology
from pktemu.topo import Topology

#: more namespaces than this (nodes and pods) are summarised unless the full picture is asked for
SUMMARY_LIMIT = 200
#: more links (or Service endpoints) between boxes than this are written in the boxes, not drawn
EDGE_LIMIT = 60
#: boxes per row when the links are written in the boxes; a box with more links than this (a
#: gateway, an underlay switch) puts the rest in one row too wide to read, so it writes them too
COLUMNS = 20
#: a box lists this many devices (or routes, pods) by name; more are counted
LIST_MAX = 8
#: Services drawn one by one; more are listed in one box
SERVICES_MAX = 20

_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$", re.I)


def diagram(t: Topology, scenario: str | None = None, *, full: bool = False, nodes: Iterable[str] = (),
            how: str = "pktemu draw TOPOLOGY") -> Diagram:
    """The picture to draw: the whole topology if small or `full`, else summarised, with `nodes`
    (or the nodes of those pods) in full. `how` starts the command line the title suggests."""
    d = from_topology(t, scenario)
    keep = list(dict.fromkeys(nodes))
    for name in keep:
        if name not in d.namespaces:
            have = ", ".join(list(d.namespaces)[:5]) + (", ..." if len(d.namespaces) > 5 else "")
            raise PktemuError(f"draw: --node {name}: no such node in {t.path} (have: {have})")
    if full or (not keep and len(d.namespaces) <= SUMMARY_LIMIT):
        return d
    return summarise(d, t, keep, how)


def _owners(d: Diagram) -> dict[str, str]:
    """Each namespace's node: its own name for a node, the node for a pod. A pod is nested (its
    veth on the node's bridge) or routed (its one device's veth peer in a namespace with more)."""
    owner = {name: ns.parent or name for name, ns in d.namespaces.items()}
    peers: dict[str, set[str]] = {}
    for a, b, label in d.links:
        if label == "veth":
            na, nb = a.split("/", 1)[0], b.split("/", 1)[0]
            peers.setdefault(na, set()).add(nb)
            peers.setdefault(nb, set()).add(na)
    for name, ns in d.namespaces.items():
        other = peers.get(name, set())
        if (not ns.parent and len(ns.devices) == 1 and ns.devices[0].kind != "bridge" and len(other) == 1):
            host = next(iter(other))
            hns = d.namespaces.get(host)
            if hns is not None and not hns.parent and len(hns.devices) > 1:
                owner[name] = host
    return owner


def _few(names: list[str], limit: int = 3) -> str:
    return ", ".join(names) if len(names) <= limit else f"{names[0]}, {names[1]} … {names[-1]}"


def _device_lines(dev: list[Device], ports: dict[str, int], peers: dict[str, list[str]], ns: str,
                  text_links: bool) -> list[str]:
    def peer(dv: Device) -> str:
        p = peers.get(f"{ns}/{dv.name}", []) if text_links else []
        return f" — {_few(p, 2)}" if p else ""

    if len(dev) <= LIST_MAX:
        out = []
        for dv in dev:
            addrs = [x for x in dv.lines if not _MAC.match(x)]
            kind = f" (bridge, {ports.get(f'{ns}/{dv.name}', 0)} ports)" if dv.kind == "bridge" else ""
            out.append(" ".join([dv.name + kind, *addrs]) + peer(dv))
        return out
    out = []
    for kind, word in (("interface", "interfaces"), ("bridge", "bridges")):
        group = [dv for dv in dev if dv.kind == kind]
        if group:
            out.append(f"{len(group)} {word}: {_few([dv.name for dv in group])}")
            linked = [p for dv in group for p in (peers.get(f"{ns}/{dv.name}", []) if text_links else [])]
            if linked:
                out.append(f"  linked to {_few(linked)}")
    return out


def _box(ns: Namespace, pods: list[str], others: list[str], cidr: str | None, ports: dict[str, int],
         peers: dict[str, list[str]], text_links: bool, pod_ends: set[str]) -> Box:
    lines = [ns.rules] if ns.rules else []
    devices = [dv for dv in ns.devices if f"{ns.name}/{dv.name}" not in pod_ends]
    lines += _device_lines(devices, ports, peers, ns.name, text_links)
    if cidr:
        lines.append(f"pod CIDR {cidr}")
    if pods:
        lines.append(f"{len(pods)} pod{'s' if len(pods) > 1 else ''}: {_few(pods)}")
    if others:
        lines.append(f"{len(others)} namespace{'s' if len(others) > 1 else ''} by veth: {_few(others)}")
    if len(ns.routes) <= 3:
        lines += ns.routes
    else:
        default = next((f" ({r})" for r in ns.routes if r.startswith("default")), "")
        lines.append(f"{len(ns.routes)} routes{default}")
    return Box(ns.name, f"{ns.name} ({ns.kind})", lines, bool(ns.rules))


def summarise(d: Diagram, t: Topology, keep: list[str], how: str) -> Diagram:
    """`d` with every node not in `keep` (nor the node of a pod in it) as one box."""
    owner = _owners(d)
    full = {owner[k] for k in keep}
    drawn = {name for name in d.namespaces if owner[name] in full}

    def end(e: str) -> str:
        ns = e.split("/", 1)[0]
        return e if ns in drawn else f"ns:{owner[ns]}"

    ports: dict[str, int] = {}
    pod_ends = set()          # the node's end of each pod's veth: counted with the pods, not listed
    for a, b, label in d.links:
        na, nb = a.split("/", 1)[0], b.split("/", 1)[0]
        if label == "veth" and na != nb and owner[na] == owner[nb]:
            pod_ends.add(a if owner[na] == na else b)
    peers: dict[str, list[str]] = {}
    edges: dict[tuple[str, str], list[tuple[str, str, str]]] = {}
    for a, b, label in d.links:
        if label.startswith("port"):
            ports[a] = ports.get(a, 0) + 1
        ea, eb = end(a), end(b)
        if ea == eb:
            continue
        peers.setdefault(a, []).append(b)
        peers.setdefault(b, []).append(a)
        edges.setdefault((ea, eb), []).append((a, b, label))
    services = _services(d, owner, drawn)
    to_boxes = [k for k in edges if k[0].startswith("ns:") or k[1].startswith("ns:")]
    n_edges = len(to_boxes) + sum(len(tg) for _n, _l, tg in services)
    degree: dict[str, int] = {}
    for ea, eb in to_boxes:
        degree[ea] = degree.get(ea, 0) + 1
        degree[eb] = degree.get(eb, 0) + 1
    grid = n_edges > EDGE_LIMIT or max(degree.values(), default=0) > COLUMNS
    k8s = t.kubernetes
    pods: dict[str, list[str]] = {}         # a node's pods, and the namespaces it holds by a veth only
    others: dict[str, list[str]] = {}
    for name, ns in d.namespaces.items():
        if owner[name] != name:
            (pods if ns.kind == "pod" else others).setdefault(owner[name], []).append(name)

    s = Diagram(d.title)
    s.namespaces = {name: ns for name, ns in d.namespaces.items() if name in drawn}
    for name, ns in d.namespaces.items():
        if name not in drawn and owner[name] == name:
            cidr = k8s.pod_cidrs.get(name) if k8s else None
            s.boxes[f"ns:{name}"] = _box(ns, pods.get(name, []), others.get(name, []), cidr, ports, peers,
                                        grid, pod_ends)
    # in a grid, only the links of the namespaces drawn in full are edges (if few, those to boxes too)
    touching = [k for k in edges if not (k[0].startswith("ns:") and k[1].startswith("ns:"))]
    if grid:
        few = len(touching) <= EDGE_LIMIT
        edges = {k: v for k, v in edges.items() if k in touching
                 and (few or not (k[0].startswith("ns:") or k[1].startswith("ns:")))}
    for (ea, eb), group in edges.items():
        a, b, label = group[0]
        if len(group) > 1:
            label = f"{label} ×{len(group)}"
        elif ea.startswith("ns:") or eb.startswith("ns:"):
            label = f"{label} {a.split('/', 1)[1]} — {b.split('/', 1)[1]}"
        s.links.append((ea, eb, label))
    s.services = [(n, lines, [] if grid else tg) for n, lines, tg in services]
    if grid:
        s.grid = COLUMNS
        s.hubs = [k for k in s.boxes if degree.get(k, 0) > COLUMNS]
    n_pods = sum(len(v) for name, v in pods.items() if name not in full)
    n_others = sum(len(v) for name, v in others.items() if name not in full)
    counted = " and ".join([f"{n_pods} pods"] * bool(n_pods or not n_others)
                           + [f"{n_others} namespaces"] * bool(n_others))
    s.note = (f"summarised: {len(s.boxes)} nodes drawn as one box each, their {counted} counted"
              + (f", {', '.join(sorted(full))} in full" if full else "")
              + (", links written in the boxes" if grid else "")
              + f".\nThe full picture: {how} --full; a node in full: --node NAME")
    return s


def _services(d: Diagram, owner: dict[str, str], drawn: set[str]) -> list[tuple[str, list[str], list[str]]]:
    """Each Service with its endpoints counted and pointing at their nodes' boxes, once a node;
    past SERVICES_MAX, one box listing them."""
    out = []
    for name, lines, targets in d.services:
        nodes = list(dict.fromkeys(owner[tg.split("/", 1)[0]] for tg in targets))
        ends = list(dict.fromkeys(tg if tg.split("/", 1)[0] in drawn else f"ns:{owner[tg.split('/', 1)[0]]}"
                                  for tg in targets))
        more = [f"{len(targets)} endpoint{'s' if len(targets) != 1 else ''} on "
                f"{len(nodes)} node{'s' if len(nodes) != 1 else ''}"] if targets else []
        out.append((name, lines + more, ends))
    if len(out) > SERVICES_MAX:
        listed = [f"{n}: {', '.join(lines)}" for n, lines, _tg in out[:SERVICES_MAX]]
        return [(f"{len(out)} Services", listed + [f"… and {len(out) - SERVICES_MAX} more"], [])]
    return out
