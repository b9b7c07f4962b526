"""Build an emulated network from the topology model (Mininet's net.py for pktemu).

The model (`pktemu.topo`) is plain validated data; this is the one place that turns it into
nodes, devices, veth pairs, bridges, routes, netfilter rulesets, sockets and applications, with
a scenario's overrides (hairpin off, sysctls) applied first.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import ipaddress
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable

from pktemu import topo
from pktemu.apps import registry
from pktemu.errors import PktemuError
from pktemu.infile import RULES_MAX_BYTES, read_text
from pktemu.k8s.cluster import Cluster
from pktemu.net.bridge import Bridge
from pktemu.net import ipip  # noqa: F401  (registers the ipip device kind)
from pktemu.net import vxlan  # noqa: F401  (registers the vxlan device kind)
from pktemu.net.device import DEVICE_KINDS, IfAddr, NetDevice
from pktemu.net.fib_rules import install_rules
from pktemu.net.frame import Frame, ip2int, mac2bytes
from pktemu.net.node import Node
from pktemu.net.route import Route
from pktemu.net.tcp import Listener, TcpStack
from pktemu.net.tcp_errno import SockError
from pktemu.net.udp import UdpStack
from pktemu.net.veth import connect
from pktemu.netfilter.hooks import Netfilter
from pktemu.netfilter.matches_set import load_ipsets
from pktemu.netfilter.xtables import Ruleset, load_rules
from pktemu.nftables.load import load_nftables
from pktemu.sim import Simulator
from pktemu.timeline import ACTIONS, CLUSTER, ActionFailed, NodeCtx, load_builtin, when_text
from pktemu.units import interface


@dataclass
class Drop:
    """One frame the emulated kernel freed instead of sending: when, where and why."""
    t: int
    node: str
    where: str
    reason: str
    summary: str


@dataclass
class AppRun:
    node: str
    kind: str
    result: dict[str, Any] = field(default_factory=dict)
    done_at: int | None = None
    #: the sockets it opened when it started (what stopping it closes)
    sockets: list[Any] = field(default_factory=list)
    stopped_at: int | None = None


@dataclass
class ActionRecord:
    """One timeline action as it ran: when, where, the command, what it printed, whether it failed."""
    t: int
    node: str
    command: str
    where: str
    output: str = ""
    failed: bool = False

    def line(self) -> str:
        state = "FAILED" if self.failed else "ok"
        out = f": {self.output}" if self.output else ""
        return f"{self.t / 1e9:.6f} {self.node or '-'} {self.command} [{state}]{out}"


def apply_overrides(t: topo.Topology, scenario: topo.Scenario | None) -> topo.Topology:
    """A copy of the topology with the scenario's overrides applied (hairpin, sysctls, routes,
    addresses, rules file), in order; pktemu.io.topofile_overrides checked them at load time."""
    if scenario is None or not scenario.overrides:
        return t
    t = copy.copy(t)
    t.nodes = dict(t.nodes)
    for node_name in {ov.target.partition("/")[0] for ov in scenario.overrides}:
        t.nodes[node_name] = _own_node(t.nodes[node_name])
    for ov in scenario.overrides:
        node_name, _, ifname = ov.target.partition("/")
        node = t.nodes[node_name]
        if ifname:
            for br in node.bridges.values():
                for p in br.ports:
                    if p.name == ifname and "hairpin" in ov.settings:
                        p.hairpin = bool(ov.settings["hairpin"])
        for k, v in ov.settings.get("sysctls", {}).items():
            node.sysctls[k] = v
        for dev, addresses in ov.settings.get("addresses", {}).items():
            device = node.interfaces.get(dev) or node.bridges[dev]
            device.addresses = copy.deepcopy(addresses)
        if "routes" in ov.settings:
            node.routes = copy.deepcopy(ov.settings["routes"])
        if "iptables" in ov.settings:
            node.iptables = ov.settings["iptables"]
    return t


def _own_node(m: topo.Node) -> topo.Node:
    """A copy of the node model with the parts an override changes (sysctls, devices and their
    addresses, bridge ports, routes, rules file) its own: the rest of the topology is shared,
    not deep-copied, and never changed by a run."""
    m = copy.copy(m)
    m.sysctls = dict(m.sysctls)
    m.interfaces = {k: copy.copy(v) for k, v in m.interfaces.items()}
    m.bridges = {k: dataclasses.replace(b, ports=[copy.copy(p) for p in b.ports])
                 for k, b in m.bridges.items()}
    m.routes = list(m.routes)
    return m


class Network:
    """All namespaces of one run on one simulator."""

    def __init__(self, t: topo.Topology, scenario: topo.Scenario | None = None,
                 seed: int | None = None) -> None:
        self.topology = apply_overrides(t, scenario)
        self.sim = Simulator(t.seed if seed is None else seed)
        self.nodes: dict[str, Node] = {}
        self.drops: list[Drop] = []
        self.apps: list[AppRun] = []
        #: the Kubernetes side (API server, controllers, kube-proxies) when the topology has one
        self.cluster: Cluster | None = None
        #: every timeline action as it ran (the run's timeline.txt)
        self.actions: list[ActionRecord] = []
        #: a scenario's steps as they ran (pktemu.traffic.StepRun), for steps.json
        self.steps: list[Any] = []
        self._build()
        if self.topology.kubernetes is not None:
            self.cluster = Cluster(self.sim, self.topology, self.nodes)
            self.cluster.start()
        if scenario is not None:
            self.schedule_timeline(scenario.timeline)

    # ------------------------------------------------------------------ build
    def _build(self) -> None:
        t = self.topology
        for m in t.nodes.values():
            self.nodes[m.name] = self._build_node(m)
        for v in t.veths:
            connect(self.device(v.a), self.device(v.b))  # type: ignore[arg-type]
        for m in t.nodes.values():
            node = self.nodes[m.name]
            for r in m.routes:
                node.add_route(self._route(node, m, r))
            install_rules(node.fib, m.ip_rules)

    def _build_node(self, m: topo.Node) -> Node:
        node = Node(self.sim, m.name, m.kind, dict(m.sysctls))
        node.drop_sink = self._record_drop
        node.resolv = dict(m.resolv)    # resolv.conf, read by the pod's stub resolver (apps.resolver)
        for ifc in m.interfaces.values():
            dev = DEVICE_KINDS[ifc.type](node, ifc.name, mac2bytes(ifc.mac), ifc.mtu or 1450, ifc.params)
            node.add_device(dev)
            for a in ifc.addresses:
                node.add_address(dev, _ifaddr(a))
        for b in m.bridges.values():
            br = Bridge(node, b.name, mac2bytes(b.mac), ageing_time=b.ageing_time)
            node.add_device(br)
            for a in b.addresses:
                node.add_address(br, _ifaddr(a))
            for p in b.ports:
                br.add_port(node.devices[p.name], hairpin=p.hairpin)
        if m.ipsets:
            load_ipsets(node, m.ipsets)             # before the rules: they name the sets
        if m.iptables:
            node.nf = Netfilter(node, shared_rules(m.iptables, node.ipsets))
        if m.nftables:
            node.nf = load_nftables(node, m.nftables)
        node.tcp = TcpStack(node)
        node.udp = UdpStack(node)
        for d in list(node.devices.values()):
            d.open()
        for app in m.apps:
            self.start_app(node, app)
        return node

    def _route(self, node: Node, m: topo.Node, r: topo.Route) -> Route:
        dst, plen = _prefix("0.0.0.0/0" if r.dst == "default" else r.dst)
        if r.type != "unicast":
            return Route(dst, plen, "lo", metric=r.metric, table=r.table, type=r.type)
        gw = ip2int(r.via) if r.via else None
        dev = r.dev
        if dev is None:
            if gw is None:
                raise PktemuError(f"{self.topology.path}: nodes.{m.name}.routes: route to {r.dst} "
                                  "has neither via nor dev")
            conn = node.routes.lookup(gw)
            if conn is None or conn.gateway is not None:
                raise PktemuError(f"{self.topology.path}: nodes.{m.name}.routes: gateway {r.via} "
                                  f"is not on a connected network of node {m.name}")
            dev = conn.dev
        return Route(dst, plen, dev, gateway=gw,
                     src=ip2int(r.src) if r.src else None, metric=r.metric, onlink=r.onlink, table=r.table)

    def device(self, ref: str) -> NetDevice:
        node, _, ifname = ref.partition("/")
        return self.nodes[node].devices[ifname]

    # ------------------------------------------------------------------ the timeline
    def schedule_timeline(self, timeline: list[topo.TimelineEntry], start: int | None = None) -> None:
        """Run each entry at its `at` from `start` (now by default: a step's timeline starts with it)."""
        base = self.sim.now if start is None else start
        for entry in timeline:
            self.sim.at(base + entry.at, self.run_action, entry)

    def run_action(self, entry: topo.TimelineEntry) -> ActionRecord:
        """Run one timeline action now; a failure the real tool would report is logged, not raised."""
        action = ACTIONS.get(entry.action) or load_builtin()[entry.action]   # an unpickled topology
        rec = ActionRecord(self.sim.now, entry.node, entry.text or entry.action, entry.where)
        self.actions.append(rec)
        try:
            if action.scope == CLUSTER:
                if self.cluster is None:
                    raise ActionFailed(f"{entry.action}: this network has no Kubernetes cluster")
                self.cluster.run_action(entry)
            else:
                node = self.nodes[entry.node]
                rec.output = action.run(NodeCtx(self, node, when_text(self.sim.now), entry.where),
                                        entry.args) or ""
        except ActionFailed as e:
            rec.failed, rec.output = True, str(e)
        return rec

    # ------------------------------------------------------------------ apps and drops
    def start_app(self, node: Node, app: topo.App, on_done: Callable[[], None] | None = None) -> AppRun:
        kind = registry.get(app.kind, f"{node.name}: app")
        run = AppRun(node.name, app.kind)
        self.apps.append(run)

        def done() -> None:
            if run.done_at is None:
                run.done_at = self.sim.now
                if on_done is not None:
                    on_done()

        before = _open_sockets(node)
        try:
            kind.start(node, dict(app.params), run.result, done)
        finally:
            run.sockets = [s for s in _open_sockets(node) if id(s) not in {id(b) for b in before}]
        return run

    def start_app_now(self, node: Node, app: topo.App) -> AppRun:
        """`start_app` for a timeline action: a socket call that fails (a port already taken) fails
        the action as the program would exit, its sockets closed and no result kept."""
        try:
            return self.start_app(node, app)
        except SockError as e:
            run = self.apps.pop()
            for s in run.sockets:
                s.close()
            raise ActionFailed(str(e)) from None

    def stop_app(self, run: AppRun) -> None:
        """Kill the app: its sockets close, and so do the connections its listeners accepted."""
        node = self.nodes[run.node]
        run.stopped_at = self.sim.now
        for s in run.sockets:
            proto = "tcp" if isinstance(s, Listener) else "udp"
            node.changes[f"port {proto}/{s.port}"] = f"{run.kind} stopped at {self.sim.now / 1e9:.3f} s"
        ports = {(s.addr, s.port) for s in run.sockets if isinstance(s, Listener)}
        for c in node.tcp.connections():
            if (c.saddr, c.sport) in ports or (0, c.sport) in ports:
                c.close()
        for s in run.sockets:
            s.close()

    def _record_drop(self, node: str, where: str, reason: str, frame: Frame) -> None:
        self.drops.append(Drop(self.sim.now, node, where, reason, repr(frame)))

    def captures(self) -> list[tuple[str, NetDevice]]:
        """Every capture point `<node>-<ifname>`, in the topology's capture order."""
        return [(name, self.device(ref)) for name, ref in self.topology.capture_points.items()]


#: parsed rules files by (path, digest of the text): the templates nodes get copies of
_RULESETS: OrderedDict[tuple[str, bytes], Ruleset] = OrderedDict()
RULESETS_KEPT = 4
#: how many rules files this process has parsed (a text shared by many nodes counts once)
rules_parsed = 0


def shared_rules(path: str, ipsets: Any = None) -> Ruleset:
    """The rules file at `path` as a ruleset of its own, parsed once per process per distinct
    text however many nodes (and runs) load it: each borrows the parsed tables until it first
    counts in or changes one, which it then copies (`Ruleset.borrow`). A node with ipset sets gets
    a parse of its own, its rules bound to its sets."""
    global rules_parsed
    text = read_text(path, "rules file", RULES_MAX_BYTES)
    if ipsets is not None:
        rs = Ruleset()
        rs.ext["ipset"] = ipsets
        return load_rules(text, path, rs)
    key = (path, hashlib.blake2b(text.encode("utf-8"), digest_size=20).digest())
    template = _RULESETS.get(key)
    if template is None:
        template = load_rules(text, path)
        rules_parsed += 1
        _RULESETS[key] = template
        while len(_RULESETS) > RULESETS_KEPT:
            _RULESETS.popitem(last=False)
    else:
        _RULESETS.move_to_end(key)
    return template.borrow()


def _open_sockets(node: Node) -> list[Any]:
    return [*node.udp.sockets(), *node.tcp.listeners()]


def _ifaddr(a: topo.Address) -> IfAddr:
    addr, plen = _interface(a.cidr)
    return IfAddr(addr, plen, ip2int(a.peer) if a.peer else None)


def _interface(cidr: str) -> tuple[int, int]:
    """"10.0.1.2/24" -> (address, prefix length)."""
    iface = interface(cidr)
    return int(iface.ip), iface.network.prefixlen


@functools.lru_cache(maxsize=4096)
def _prefix(cidr: str) -> tuple[int, int]:
    """A route's destination "10.0.0.0/16" -> (network address, prefix length), host bits cleared."""
    net = ipaddress.ip_network(cidr, strict=False)
    return int(net.network_address), net.prefixlen
