"""The topology as a Graphviz graph, laid out by `dot`: namespaces as clusters (a pod inside the
node whose bridge its veth joins), devices as boxes with their addresses, veth pairs and bridge
ports as edges, routes under each namespace, the nodes that hold netfilter rules outlined, and
Services pointing at their endpoints. `dot` runs as a subprocess (Debian package `graphviz`), so
pktemu takes no Python dependency for it; its output is deterministic for the same input.
"""
from __future__ import annotations

import html
import shutil
import subprocess
from dataclasses import dataclass, field

from pktemu.errors import PktemuError
from pktemu.k8s.objects import EndpointSlice, Pod, Service
from pktemu.report.runread import PcapIface
from pktemu.topo import Topology

DOT_TIMEOUT = 60


@dataclass
class Device:
    name: str
    kind: str                       # interface | bridge
    lines: list[str] = field(default_factory=list)


@dataclass
class Namespace:
    name: str
    kind: str                       # host | pod | ...
    devices: list[Device] = field(default_factory=list)
    routes: list[str] = field(default_factory=list)
    rules: str = ""                 # what writes its netfilter rules, "" if none
    parent: str = ""                # the node a pod lives on


@dataclass
class Box:
    """A namespace summarised into one box (pktemu.report.summary): its devices, pods and routes
    as lines of text, so a cluster of thousands of namespaces lays out in seconds."""
    name: str
    title: str
    lines: list[str] = field(default_factory=list)
    rules: bool = False


@dataclass
class Diagram:
    title: str
    namespaces: dict[str, Namespace] = field(default_factory=dict)
    links: list[tuple[str, str, str]] = field(default_factory=list)     # (node/dev, node/dev, label)
    services: list[tuple[str, list[str], list[str]]] = field(default_factory=list)  # name, lines, targets
    note: str = ""                  # under the title: what was summarised and how to get it all
    boxes: dict[str, Box] = field(default_factory=dict)                 # "ns:NAME" -> summarised namespace
    grid: int = 0                   # > 0: boxes in rows of this many, links as text (too many to draw)
    hubs: list[str] = field(default_factory=list)                       # boxes above the grid's rows


def from_topology(t: Topology, scenario: str | None = None) -> Diagram:
    d = Diagram(t.name + (f" — {scenario}" if scenario else ""))
    k8s = t.kubernetes
    for n in t.nodes.values():
        ns = Namespace(n.name, n.kind)
        for i in n.interfaces.values():
            ns.devices.append(Device(i.name, "interface", [a.cidr + (f" peer {a.peer}" if a.peer else "")
                                                           for a in i.addresses] + [i.mac]))
        for b in n.bridges.values():
            ns.devices.append(Device(b.name, "bridge", [a.cidr for a in b.addresses] + [b.mac]))
            for p in b.ports:
                d.links.append((f"{n.name}/{b.name}", f"{n.name}/{p.name}",
                                "port" + (" (hairpin)" if p.hairpin else "")))
        for r in n.routes:
            ns.routes.append(" ".join(x for x in (r.dst, f"via {r.via}" if r.via else "",
                                                  f"dev {r.dev}" if r.dev else "") if x))
        ns.rules = ", ".join(f"{kind} rules: {path.rsplit('/', 1)[-1]}"
                             for kind, path in (("iptables", n.iptables), ("nftables", n.nftables)) if path)
        if k8s and n.name in k8s.kube_proxy:
            ns.rules = f"kube-proxy ({k8s.kube_proxy[n.name].mode}) rules"
        d.namespaces[n.name] = ns
    for v in t.veths:
        d.links.append((v.a, v.b, "veth"))
    _nest_pods(d)
    if k8s:
        _services(d, t)
    return d


def from_pcapng(title: str, ifaces: list[PcapIface]) -> Diagram:
    """What the merged pcapng's interface blocks say, for a report made without the topology."""
    d = Diagram(title)
    seen: set[tuple[str, str]] = set()
    for i in ifaces:
        node, _, dev = i.name.partition("/")
        ns = d.namespaces.setdefault(node, Namespace(node, "pod" if dev == "eth0" and "peer" in i.description
                                                     and "/veth" in i.description else "host"))
        kind = "bridge" if ": bridge " in i.description else "interface"
        ns.devices.append(Device(dev, kind, i.ipv4 + ([i.mac] if i.mac else [])))
        desc = i.description
        if ", peer " in desc:
            peer = desc.split(", peer ", 1)[1].split(",", 1)[0].strip()
            pair = (min(i.name, peer), max(i.name, peer))
            if pair not in seen:
                seen.add(pair)
                d.links.append((pair[0], pair[1], "veth"))
        if ", port of bridge " in desc:
            br = desc.split(", port of bridge ", 1)[1].split(",", 1)[0].strip()
            d.links.append((f"{node}/{br}", i.name, "port"))
    known = {f"{n}/{dv.name}" for n, ns in d.namespaces.items() for dv in ns.devices}
    d.links = [lk for lk in d.links if lk[0] in known and lk[1] in known]
    _nest_pods(d)
    return d


def _nest_pods(d: Diagram) -> None:
    """A namespace whose only device's veth peer is a bridge port lives inside that port's node."""
    ports = {b for a, b, label in d.links if label.startswith("port")}
    for a, b, label in d.links:
        if label != "veth":
            continue
        for mine, other in ((a, b), (b, a)):
            node = mine.split("/", 1)[0]
            ns = d.namespaces.get(node)
            if ns and other in ports and len(ns.devices) == 1 and not ns.devices[0].kind == "bridge":
                ns.parent = other.split("/", 1)[0]
                ns.kind = "pod"


def _services(d: Diagram, t: Topology) -> None:
    k8s = t.kubernetes
    assert k8s is not None
    objs = k8s.objects
    addr_owner = {a.cidr.split("/")[0]: f"{n.name}/{i.name}" for n in t.nodes.values()
                  for i in n.interfaces.values() for a in i.addresses}
    for s in (o for o in objs if isinstance(o, Service)):
        targets: list[str] = []
        if s.selector:
            for p in (o for o in objs if isinstance(o, Pod)):
                if p.meta.namespace == s.meta.namespace and all(p.meta.labels.get(k) == v
                                                                for k, v in s.selector.items()):
                    ns = t.nodes.get(p.netns or p.meta.name)
                    if ns and ns.interfaces:
                        targets.append(f"{ns.name}/{next(iter(ns.interfaces))}")
        for es in (o for o in objs if isinstance(o, EndpointSlice)):
            if es.service_name == s.meta.name and es.meta.namespace == s.meta.namespace:
                targets += [addr_owner[a] for ep in es.endpoints for a in ep.addresses if a in addr_owner]
        ip = "headless" if s.headless else (s.cluster_ip or "ClusterIP allocated at run")
        ports = ", ".join(f"{p.port}/{p.protocol}"
                          + (f" → {p.target_port}" if p.target_port not in (None, p.port) else "")
                          for p in s.ports)
        d.services.append((f"{s.meta.namespace}/{s.meta.name}", [f"{s.type} {ip}", ports],
                           list(dict.fromkeys(targets))))


def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _label(title: str, lines: list[str]) -> str:
    rows = [f"<B>{html.escape(title)}</B>"] if title else []      # dot refuses an empty <B></B>
    rows += [html.escape(x) for x in lines]
    return f"<{'<BR/>'.join(rows) or ' '}>"


def to_dot(d: Diagram) -> str:
    title = d.title + (f"\n{d.note}" if d.note else "")
    out = ["digraph topology {", "  graph [rankdir=TB, fontname=Helvetica, fontsize=11, compound=true, "
           f"newrank=true, nodesep=0.3, ranksep=0.5, label={_q(title)}, labelloc=t];",
           "  node [fontname=Helvetica, fontsize=10, shape=box, style=\"rounded,filled\", fillcolor=white];",
           "  edge [fontname=Helvetica, fontsize=9, dir=none];"]
    children: dict[str, list[str]] = {}
    for ns in d.namespaces.values():
        children.setdefault(ns.parent, []).append(ns.name)

    def cluster(name: str, indent: str) -> None:
        ns = d.namespaces[name]
        color = "#fdecea" if ns.rules else ("#eef6ee" if ns.kind == "pod" else "#eef2fa")
        pen = "#c0392b" if ns.rules else "#7f8c8d"
        title = f"{ns.name} ({ns.kind})" + (f"\n{ns.rules}" if ns.rules else "")
        out.append(f"{indent}subgraph {_q('cluster_' + name)} {{")
        out.append(f"{indent}  label={_q(title)}; style=\"rounded,filled\"; fillcolor={_q(color)}; "
                   f"color={_q(pen)}; penwidth={2 if ns.rules else 1};")
        for dev in ns.devices:
            shape = "box3d" if dev.kind == "bridge" else "box"
            out.append(f"{indent}  {_q(name + '/' + dev.name)} [shape={shape}, "
                       f"label={_label(dev.name, dev.lines)}, id={_q('dev-' + name + '/' + dev.name)}];")
        if ns.routes:
            out.append(f"{indent}  {_q(name + '#routes')} [shape=note, fillcolor=\"#fffbe6\", "
                       f"label={_label('routes', ns.routes)}];")
        if not ns.devices and not ns.routes and not children.get(name):     # dot omits an empty cluster
            out.append(f"{indent}  {_q(name + '#empty')} [shape=plaintext, style=\"\", "
                       "label=\"(no interfaces)\"];")
        for child in children.get(name, []):
            cluster(child, indent + "  ")
        out.append(f"{indent}}}")

    for top in children.get("", []):
        cluster(top, "  ")
    _boxes(d, out)
    for a, b, label in d.links:
        style = "bold" if label == "veth" else "solid"
        out.append(f"  {_q(a)} -> {_q(b)} [label={_q(label)}, style={style}];")
    if d.services:
        out.append("  subgraph cluster_services {")
        out.append("    label=\"Services\"; style=\"rounded,dashed\"; color=\"#8e44ad\";")
        for i, (name, lines, _targets) in enumerate(d.services):
            out.append(f"    {_q('svc:' + name)} [shape=ellipse, fillcolor=\"#f4ecf7\", "
                       f"label={_label(name, lines)}, id={_q('svc-' + str(i))}];")
        out.append("  }")
        for name, _lines, targets in d.services:
            for tg in targets:
                out.append(f"  {_q('svc:' + name)} -> {_q(tg)} [style=dashed, color=\"#8e44ad\", "
                           "dir=forward, label=\"endpoint\", constraint=false];")
    out.append("}")
    return "\n".join(out) + "\n"


def _boxes(d: Diagram, out: list[str]) -> None:
    """The summarised namespaces; in a grid, rows of `d.grid` boxes under the hubs, held in place by
    invisible edges (dot lays out a thousand boxes in a row, or tangles a thousand edges, otherwise)."""
    for key, b in d.boxes.items():
        color, pen = ("#fdecea", "#c0392b") if b.rules else ("#eef2fa", "#7f8c8d")
        out.append(f"  {_q(key)} [label={_label(b.title, b.lines)}, fillcolor={_q(color)}, color={_q(pen)}, "
                   f"penwidth={2 if b.rules else 1}, id={_q('ns-' + b.name)}];")
    if not d.grid:
        return
    rows = [k for k in d.boxes if k not in d.hubs]
    for hub in d.hubs:
        for k in rows[:d.grid]:
            out.append(f"  {_q(hub)} -> {_q(k)} [style=invis];")
    for i in range(d.grid, len(rows)):
        out.append(f"  {_q(rows[i - d.grid])} -> {_q(rows[i])} [style=invis];")


def dot_path() -> str:
    """Where `dot` is; one line naming the package to install if it is missing."""
    path = shutil.which("dot")
    if path is None:
        raise PktemuError("graphviz: the `dot` program is not installed "
                          "(Debian/Ubuntu: apt-get install graphviz)")
    return path


def render(dot_source: str, fmt: str) -> bytes:
    """`dot -T<fmt>` of the graph: svg or png."""
    try:
        res = subprocess.run([dot_path(), f"-T{fmt}"], input=dot_source.encode("utf-8"), capture_output=True,
                             timeout=DOT_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise PktemuError(f"graphviz: dot did not finish within {DOT_TIMEOUT} s (draw fewer namespaces in "
                          "full: leave out --full, or give fewer --node)") from None
    if res.returncode != 0:
        msg = res.stderr.decode("utf-8", "replace").strip().splitlines()
        raise PktemuError(f"graphviz: dot failed: {msg[0] if msg else f'exit status {res.returncode}'}")
    return res.stdout


def svg_inline(svg: bytes) -> str:
    """The SVG without its XML prolog and doctype, to sit inside an HTML page."""
    text = svg.decode("utf-8")
    start = text.find("<svg")
    return text[start:] if start >= 0 else text
