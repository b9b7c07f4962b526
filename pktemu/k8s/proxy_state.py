"""What kube-proxy knows, whatever its mode: service ports and their endpoints (pkg/proxy's
ServicePortMap and EndpointsMap), topology categorisation and stale-UDP detection, as upstream.

Services and EndpointSlices are turned into per-service-port records once per sync. Service
ports keep the Services' creation order (upstream walks a Go map, so any order is upstream's;
ours is deterministic). Endpoints are sorted by "ip:port" as upstream's byEndpoint sort does.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any, Iterable, TypeVar

from pktemu.k8s.objects import EndpointSlice, Service


@dataclass(frozen=True)
class ServicePortName:
    namespace: str
    name: str
    port: str
    protocol: str

    @property
    def service(self) -> str:
        return f"{self.namespace}/{self.name}"

    def __str__(self) -> str:
        return self.service + (f":{self.port}" if self.port else "")


@dataclass(frozen=True)
class ServicePortInfo:
    """proxy.BaseServicePortInfo: one port of one Service, as the proxiers see it."""
    spn: ServicePortName
    cluster_ip: str
    port: int
    protocol: str
    node_port: int = 0
    client_ip_affinity: bool = False
    sticky_seconds: int = 10800
    external_ips: tuple[str, ...] = ()
    load_balancer_ips: tuple[str, ...] = ()
    load_balancer_source_ranges: tuple[str, ...] = ()
    health_check_node_port: int = 0
    external_policy: str = "Cluster"
    internal_policy: str = "Cluster"

    @property
    def externally_accessible(self) -> bool:
        return bool(self.node_port or self.external_ips or self.load_balancer_ips)

    @property
    def external_policy_local(self) -> bool:
        return self.externally_accessible and self.external_policy == "Local"

    @property
    def internal_policy_local(self) -> bool:
        return self.internal_policy == "Local"

    @property
    def uses_cluster_endpoints(self) -> bool:
        """Upstream's UsesClusterEndpoints: even with an external policy of Local, external traffic
        from inside the cluster short-circuits to the Cluster endpoints."""
        return not self.internal_policy_local or self.externally_accessible

    @property
    def uses_local_endpoints(self) -> bool:
        return self.internal_policy_local or self.external_policy_local


@dataclass(frozen=True)
class EndpointInfo:
    """proxy.BaseEndpointInfo: the first address of one endpoint, with its port and conditions."""
    ip: str
    port: int
    is_local: bool
    ready: bool
    serving: bool
    terminating: bool
    node_name: str | None = None

    @property
    def endpoint(self) -> str:
        return f"{self.ip}:{self.port}"


ServicePortMap = dict[ServicePortName, ServicePortInfo]
EndpointsMap = dict[ServicePortName, list[EndpointInfo]]
_Where = dict[str, list[tuple[ServicePortName, int]]]
_Rec = TypeVar("_Rec", ServicePortName, ServicePortInfo, EndpointInfo)


class Records:
    """The records of one cluster, one of each: every node's kube-proxy rebuilds the same records
    at every sync (an endpoint differs between nodes only by is_local) and keeps its last maps, so
    without this a cluster holds nodes x endpoints of them. Bounded: past `size` it starts afresh.

    It also keeps the last few endpoint maps built from a set of EndpointSlices with no endpoint
    local (`endpoints_map`): a node's map is that one with its own endpoints marked local, so a
    sync costs each node the slices and its own endpoints, not every endpoint of the cluster."""

    def __init__(self, size: int = 1 << 18, maps: int = 8) -> None:
        self.size = size
        self._recs: dict[Any, Any] = {}
        self.maps = maps
        #: slices' ids -> (the slices, kept so that no other object takes their ids; the map;
        #: node name -> [(service port, index in its list)] of that node's endpoints)
        self._maps: OrderedDict[tuple[int, ...], tuple[list[EndpointSlice], EndpointsMap, _Where]] = \
            OrderedDict()

    def __call__(self, rec: _Rec) -> _Rec:
        if len(self._recs) >= self.size:
            self._recs.clear()
        return self._recs.setdefault(rec, rec)  # type: ignore[no-any-return]

    def endpoints(self, slices: list[EndpointSlice], node_name: str) -> EndpointsMap:
        key = tuple(map(id, slices))
        got = self._maps.get(key)
        if got is None:
            base = _endpoints_map(slices, None, self)
            where: _Where = {}
            for spn, eps in base.items():
                for i, e in enumerate(eps):
                    if e.node_name is not None:
                        where.setdefault(e.node_name, []).append((spn, i))
            got = self._maps[key] = (slices, base, where)
            if len(self._maps) > self.maps:
                self._maps.popitem(last=False)
        else:
            self._maps.move_to_end(key)
        _, base, where = got
        out = dict(base)
        for spn, i in where.get(node_name, ()):
            eps = out[spn]
            if eps is base[spn]:
                eps = out[spn] = LocalView(eps, eps)
            eps[i] = self(replace(eps[i], is_local=True))
        return out


class LocalView(list[EndpointInfo]):
    """A node's endpoints of a service port: the cluster-wide list (`base`, nothing local) with
    this node's own marked local; what does not look at locality can use `base`, shared."""

    def __init__(self, eps: list[EndpointInfo], base: list[EndpointInfo]) -> None:
        super().__init__(eps)
        self.base = base


def _same(rec: _Rec) -> _Rec:
    return rec


def service_ports(services: Iterable[Service], records: Records | None = None) -> ServicePortMap:
    """Service ports kube-proxy programs: headless, ExternalName and unallocated Services are skipped.
    `records`: the cluster's, to share the records with the other nodes."""
    intern = records or _same
    out: ServicePortMap = {}
    for svc in sorted(services, key=lambda s: s.meta.creation_seq):
        if svc.headless or not svc.cluster_ip or svc.type == "ExternalName":
            continue
        lb = tuple(svc.load_balancer_ips) if svc.type == "LoadBalancer" else ()
        for p in svc.ports:
            spn = intern(ServicePortName(svc.meta.namespace, svc.meta.name, p.name, p.protocol))
            out[spn] = intern(ServicePortInfo(
                spn, svc.cluster_ip, p.port, p.protocol,
                node_port=(p.node_port or 0) if svc.type in ("NodePort", "LoadBalancer") else 0,
                client_ip_affinity=svc.session_affinity == "ClientIP",
                sticky_seconds=svc.affinity_timeout_seconds,
                external_ips=tuple(svc.external_ips), load_balancer_ips=lb,
                load_balancer_source_ranges=tuple(svc.load_balancer_source_ranges) if lb else (),
                health_check_node_port=(svc.health_check_node_port or 0)
                if svc.type == "LoadBalancer" and svc.external_traffic_policy == "Local" else 0,
                external_policy=svc.external_traffic_policy, internal_policy=svc.internal_traffic_policy))
    return out


def endpoints_map(slices: Iterable[EndpointSlice], node_name: str, records: Records | None = None
                  ) -> EndpointsMap:
    """EndpointSliceCache: per service port, the endpoints of every slice of the Service, one per
    "ip:port" (a ready one wins over a not-ready duplicate), sorted by "ip:port". `records`: the
    cluster's, to share the records and maps with the other nodes."""
    ordered = sorted(slices, key=lambda s: s.meta.key)
    if records is not None:
        return records.endpoints(ordered, node_name)
    return _endpoints_map(ordered, node_name, _same)


def _endpoints_map(slices: list[EndpointSlice], node_name: str | None, intern: Any) -> EndpointsMap:
    """endpoints_map of slices in order; with `node_name` None no endpoint is local."""
    by_port: dict[ServicePortName, dict[str, EndpointInfo]] = {}
    for es in slices:
        if es.address_type != "IPv4":
            continue
        for p in es.ports:
            spn = intern(ServicePortName(es.meta.namespace, es.service_name, p.name, p.protocol))
            eps = by_port.setdefault(spn, {})
            for e in es.endpoints:
                if not e.addresses:
                    continue
                c = e.conditions
                info = intern(EndpointInfo(e.addresses[0], p.port,
                                           node_name is not None and e.node_name == node_name,
                                           c.ready is None or bool(c.ready),
                                           c.serving is None or bool(c.serving), bool(c.terminating),
                                           e.node_name))
                old = eps.get(info.endpoint)
                if old is None or (info.ready and not old.ready):
                    eps[info.endpoint] = info
    return {spn: sorted(eps.values(), key=lambda e: e.endpoint) for spn, eps in by_port.items() if eps}


@dataclass
class Categorized:
    cluster: list[EndpointInfo]
    local: list[EndpointInfo]
    reachable: list[EndpointInfo]
    has_any: bool


def categorize(endpoints: list[EndpointInfo], svc: ServicePortInfo) -> Categorized:
    """proxy.CategorizeEndpoints (topology hints aside): which endpoints the Cluster and the Local
    traffic policies use, falling back to serving-terminating endpoints when none is ready."""
    cluster: list[EndpointInfo] = []
    local: list[EndpointInfo] = []
    has_any = False
    if svc.uses_cluster_endpoints:
        cluster = [e for e in endpoints if e.ready]
        if not cluster:
            cluster = [e for e in endpoints if e.serving and e.terminating]
        has_any = bool(cluster)
    if not svc.uses_local_endpoints:
        return Categorized(cluster, [], cluster, has_any)
    local_ready = local_terminating = False
    for e in endpoints:
        if e.ready:
            has_any = True
            local_ready = local_ready or e.is_local
        elif e.serving and e.terminating:
            has_any = True
            local_terminating = local_terminating or e.is_local
    fallback = False
    if local_ready:
        local = [e for e in endpoints if e.is_local and e.ready]
    elif local_terminating:
        fallback = True
        local = [e for e in endpoints if e.is_local and e.serving and e.terminating]
    if not svc.uses_cluster_endpoints:
        return Categorized([], local, local, has_any)
    if not fallback:
        return Categorized(cluster, local, cluster, has_any)
    merged = {e.endpoint: e for e in cluster + local}
    return Categorized(cluster, local, sorted(merged.values(), key=lambda e: e.endpoint), has_any)


@dataclass
class StaleUdp:
    """What conntrack cleanup has to do after a sync (pkg/proxy/conntrack.CleanStaleEntries)."""
    service_ips: set[str]                          # conntrack -D --orig-dst IP -p udp
    node_ports: set[int]                           # conntrack -D -p udp --dport P
    nat: set[tuple[str, str]]                      # conntrack -D --orig-dst VIP --dst-nat EP -p udp
    port_nat: set[tuple[int, str]]                 # conntrack -D -p udp --dport P --dst-nat EP


def stale_udp(old_svcs: ServicePortMap, new_svcs: ServicePortMap, old_eps: EndpointsMap,
              new_eps: EndpointsMap) -> StaleUdp:
    """Deleted UDP ClusterIPs, UDP services newly given ready endpoints, and UDP endpoints that
    stopped being used (detectStaleConntrackEntries + deleteStale*ConntrackEntries)."""
    out = StaleUdp(set(), set(), set(), set())
    for spn, info in old_svcs.items():
        if spn not in new_svcs and info.protocol == "UDP":
            out.service_ips.add(info.cluster_ip)
    for spn, eps in old_eps.items():
        if spn.protocol != "UDP" or spn not in new_svcs:
            continue
        info = new_svcs[spn]
        now = {(e.endpoint, e.is_local, e.ready) for e in new_eps.get(spn, [])}
        for ep in eps:
            if ep.ready and (ep.endpoint, ep.is_local, ep.ready) not in now:
                if info.node_port:
                    out.port_nat.add((info.node_port, ep.ip))
                for vip in (info.cluster_ip, *info.external_ips, *info.load_balancer_ips):
                    out.nat.add((vip, ep.ip))
    for spn, eps in new_eps.items():
        new = new_svcs.get(spn)
        if spn.protocol != "UDP" or new is None:
            continue
        info = new
        if any(e.ready for e in eps) and not any(e.ready for e in old_eps.get(spn, [])):
            out.service_ips.update((info.cluster_ip, *info.external_ips, *info.load_balancer_ips))
            if info.node_port:
                out.node_ports.add(info.node_port)
    return out
