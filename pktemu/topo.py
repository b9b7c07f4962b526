"""The topology model: plain, validated data that the engine consumes.

Nothing here runs or touches packets. `pktemu.io.topofile` turns a YAML file into these
objects and validates them; `pktemu.net.network.Network` builds the emulated network from them.
Addresses are kept as strings in their usual notation ("10.0.1.2/24", "0a:58:0a:00:01:02").
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Address:
    """An interface address; `peer` makes it point-to-point (`ip addr add A/32 peer P`)."""
    cidr: str
    peer: str | None = None


@dataclass
class Interface:
    name: str
    mac: str
    addresses: list[Address] = field(default_factory=list)
    mtu: int = 1500
    type: str = "veth"           # `ip link add ... type T`: veth | vxlan | ipip (net.device.DEVICE_KINDS)
    #: the type's settings, checked (vxlan: vni, dstport, local, dev, learning, udpcsum, ttl, fdb, neighbours)
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class BridgePort:
    name: str           # an interface of the same node
    hairpin: bool = False


@dataclass
class Bridge:
    name: str
    mac: str
    addresses: list[Address] = field(default_factory=list)
    ports: list[BridgePort] = field(default_factory=list)
    stp: bool = False
    ageing_time: float = 300.0   # seconds, like `bridge ageing_time` (kernel default 300 s)


@dataclass
class Route:
    dst: str                     # "default" or a CIDR
    via: str | None = None       # gateway address
    dev: str | None = None       # output interface
    src: str | None = None       # preferred source address
    metric: int = 0
    onlink: bool = False         # `onlink`: the gateway is on the device even with no prefix route to it
    table: int = 254             # `table N|main|local|default` (pktemu.net.fib_rules)
    type: str = "unicast"        # or blackhole | unreachable | prohibit | throw (neither via nor dev)


@dataclass
class App:
    """An application in a namespace, by registered kind (see pktemu.apps.registry)."""
    kind: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class Node:
    """One network namespace: a host, a router, a Kubernetes node or a pod."""
    name: str
    kind: str = "host"           # host | pod (registered node kinds)
    interfaces: dict[str, Interface] = field(default_factory=dict)
    bridges: dict[str, Bridge] = field(default_factory=dict)
    routes: list[Route] = field(default_factory=list)
    #: `ip rule` list as pktemu.net.fib_rules.FibRule, in the order written (priority -1: unset)
    ip_rules: list[Any] = field(default_factory=list)
    sysctls: dict[str, int] = field(default_factory=dict)
    apps: list[App] = field(default_factory=list)
    iptables: str | None = None  # path of an iptables-save / iptables-restore file
    nftables: str | None = None  # path of an `nft -f` file (pktemu.nftables)
    ipsets: str | None = None    # path of an `ipset save` file (pktemu.netfilter.ipset)
    resolv: dict[str, Any] = field(default_factory=dict)  # pods: nameservers, search, ndots


@dataclass
class Veth:
    """A veth pair joining two interfaces, written "node/ifname"."""
    a: str
    b: str


@dataclass
class Traffic:
    """An application started at `at` nanoseconds into the scenario."""
    at: int
    node: str
    app: App
    result: str | None = None    # file in the scenario's output directory for the app's result dict


@dataclass
class Override:
    """A per-scenario change to the topology, e.g. hairpin off on one bridge port."""
    target: str                  # "node/ifname" (a bridge port) or "node" (sysctls, routes, ...)
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass
class TimelineEntry:
    """A change at `at` ns into the scenario (or its step): `action` names a registered timeline
    action (pktemu.timeline), `args` its checked arguments, `node` where a node action runs,
    `text` the command as written (for the log), `where` the file/path for messages."""
    at: int
    action: str
    args: dict[str, Any] = field(default_factory=dict)
    where: str = ""
    node: str = ""
    text: str = ""


@dataclass
class Step:
    """One step of a scenario: its traffic and timeline, timed from the step's start, in the
    namespaces the steps before it left behind (conntrack, neighbours, FDB, `recent` lists)."""
    name: str
    description: str = ""
    traffic: list[Traffic] = field(default_factory=list)
    timeline: list[TimelineEntry] = field(default_factory=list)
    duration: int = 5_000_000_000
    settle: int = 1_000_000_000


@dataclass
class Scenario:
    name: str
    description: str = ""
    traffic: list[Traffic] = field(default_factory=list)
    overrides: list[Override] = field(default_factory=list)
    timeline: list[TimelineEntry] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)   # run one after another, after `traffic`
    duration: int = 5_000_000_000  # ns of virtual time the scenario runs after its last start
    settle: int = 1_000_000_000    # ns captured after the clients finish (the oracle's ORACLE_SETTLE)


@dataclass
class KubeProxy:
    """One node's kube-proxy: `iptables` (v1.28+ layout), `nftables` (the layout of
    `kube_proxy_version`) or `userspace` (pre-1.2, relays on `port`)."""
    mode: str = "iptables"
    kube_proxy_version: str = "1.33"   # nftables: the layout (pktemu.k8s.proxier_nftables.LAYOUTS)
    port: int = 10400                  # userspace: the first proxy port (one per service port)
    variant: str = "upstream"          # upstream | kernel-oracle (the oracle's rules, see README)
    random_fully: bool | None = None   # None: the variant's default
    localhost_nodeports: bool = True
    masquerade_all: bool = False
    min_sync_period: int = 1_000_000_000
    udp_idle_timeout: int = 250_000_000


@dataclass
class Kubernetes:
    """The `kubernetes:` section: cluster settings, API objects from manifests, kube-proxy per node."""
    service_cidr: str = "10.3.240.0/20"
    cluster_cidr: str | None = "10.0.0.0/16"
    cluster_domain: str = "cluster.local"
    pod_cidrs: dict[str, str] = field(default_factory=dict)       # node -> --pod-cidr
    objects: list[Any] = field(default_factory=list)              # parsed pktemu.k8s.objects, in file order
    kube_proxy: dict[str, KubeProxy] = field(default_factory=dict)
    watch_latency: int = 10_000_000     # ns from an API change to a watcher seeing it


@dataclass
class Topology:
    name: str
    path: str                    # the file it came from, for messages
    seed: int = 0
    nodes: dict[str, Node] = field(default_factory=dict)
    veths: list[Veth] = field(default_factory=list)
    scenarios: dict[str, Scenario] = field(default_factory=dict)
    capture_order: list[str] = field(default_factory=list)  # "<node>-<ifname>" names, in path order
    capture_points: dict[str, str] = field(default_factory=dict)  # capture name -> "node/ifname", same order
    description: str = ""
    kubernetes: Kubernetes | None = None

    def scenario(self, name: str | None) -> Scenario | None:
        """The named scenario (None for None); an unknown name is a one-line PktemuError."""
        if name is None:
            return None
        sc = self.scenarios.get(name)
        if sc is None:
            from pktemu.errors import PktemuError
            have = ", ".join(self.scenarios) or "none"
            raise PktemuError(f"{self.path}: no scenario {name!r} (have: {have})")
        return sc
