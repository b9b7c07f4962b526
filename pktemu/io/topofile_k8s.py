"""`kubernetes:` (cluster settings, manifests, kube-proxy per node) and scenario `timeline:`.

Manifests are parsed and cross-checked when the topology is loaded, so a bad object stops the
run before anything is written: a ClusterIP outside `service_cidr`, two Services on one
ClusterIP or node port, a Pod that maps to no topology pod and has no IP. Services without a
ClusterIP (or NodePort/LoadBalancer ports without a node port) get one allocated, as the API
server would, but deterministically (from a hash of the name, probing upward).
"""
from __future__ import annotations

import hashlib
import ipaddress
from typing import Any

from pktemu.apps import dnswire
from pktemu.errors import PktemuError, excerpt, shorten
from pktemu.io.topofile_fields import Src, boolean, integer, mapping, seq, string
from pktemu.io.topofile_fields import path as path_field
from pktemu.io.topofile_merge import resolve_at
from pktemu.k8s.cluster import topology_pods
from pktemu.k8s.manifests import Ctx, load_file_located
from pktemu.k8s.objects import Pod, Service
from pktemu.k8s.proxier_nftables import LAYOUTS as NFT_LAYOUTS
from pktemu.topo import KubeProxy, Kubernetes, Topology
from pktemu.units import parse_duration, parse_ipv4_network

K8S_KEYS = ("service_cidr", "cluster_cidr", "cluster_domain", "pod_cidrs", "manifests", "kube_proxy",
            "watch_latency")
KP_KEYS = ("mode", "port", "variant", "random_fully", "localhost_nodeports", "masquerade_all",
           "min_sync_period", "udp_idle_timeout", "kube_proxy_version")
MODES = ("iptables", "nftables", "userspace")
VARIANTS = ("upstream", "kernel-oracle")
NODE_PORT_RANGE = (30000, 32767)     # --service-node-port-range default


def _cidr(src: Src, where: str, value: object) -> ipaddress.IPv4Network:
    s = string(src, where, value)
    try:
        return parse_ipv4_network(s)
    except ValueError as e:
        raise src.error(where, f"not a network like 10.3.240.0/20: {excerpt(s)} ({e})") from None


def parse_kubernetes(src: Src, value: object, t: Topology) -> Kubernetes:
    m = mapping(src, "kubernetes", value, allowed=K8S_KEYS)
    k = Kubernetes()
    svc_net = _cidr(src, "kubernetes.service_cidr", m.get("service_cidr", k.service_cidr))
    k.service_cidr = str(svc_net)
    if "cluster_cidr" in m:
        k.cluster_cidr = None if m["cluster_cidr"] is None else str(_cidr(src, "kubernetes.cluster_cidr",
                                                                            m["cluster_cidr"]))
    if m.get("cluster_domain") is not None:
        k.cluster_domain = string(src, "kubernetes.cluster_domain", m["cluster_domain"]).strip(".")
        try:
            dnswire.check_user_name(k.cluster_domain)
        except dnswire.DnsFormatError as e:
            raise src.error("kubernetes.cluster_domain", str(e)) from None
    if m.get("watch_latency") is not None:
        k.watch_latency = parse_duration(m["watch_latency"], src.at("kubernetes.watch_latency"))
    for n, cv in mapping(src, "kubernetes.pod_cidrs", m.get("pod_cidrs"), open_keys=True).items():
        _host_node(src, f"kubernetes.pod_cidrs.{n}", n, t)
        net = _cidr(src, f"kubernetes.pod_cidrs.{n}", cv)
        if k.cluster_cidr and not net.subnet_of(ipaddress.IPv4Network(k.cluster_cidr)):
            raise src.error(f"kubernetes.pod_cidrs.{n}", f"{net} is not inside cluster_cidr {k.cluster_cidr}")
        k.pod_cidrs[n] = str(net)
    for n, kv in mapping(src, "kubernetes.kube_proxy", m.get("kube_proxy"), open_keys=True).items():
        k.kube_proxy[n] = _kube_proxy(src, f"kubernetes.kube_proxy.{n}", n, kv, t)
    located: list[tuple[Any, Ctx]] = []
    for i, f in enumerate(seq(src, "kubernetes.manifests", m.get("manifests"))):
        path = resolve_at(src, "kubernetes.manifests", path_field(src, f"kubernetes.manifests[{i}]", f))
        located += load_file_located(path)
    check_objects(located, k, t, Allocations())
    k.objects = [obj for obj, _ in located]
    return k


def _host_node(src: Src, where: str, n: str, t: Topology) -> None:
    node = t.nodes.get(n)
    if node is None or node.kind == "pod":
        raise src.error(where, f"no node {excerpt(n)} in nodes{' (it is a pod)' if node is not None else ''}")


def _kube_proxy(src: Src, where: str, n: str, value: object, t: Topology) -> KubeProxy:
    _host_node(src, where, n, t)
    m = mapping(src, where, value, allowed=KP_KEYS)
    kp = KubeProxy()
    if m.get("mode") is not None:
        kp.mode = string(src, f"{where}.mode", m["mode"])
        if kp.mode not in MODES:
            raise src.error(f"{where}.mode", f"expected one of {', '.join(MODES)}, got {excerpt(kp.mode)}")
    if m.get("variant") is not None:
        kp.variant = string(src, f"{where}.variant", m["variant"])
        if kp.variant not in VARIANTS:
            raise src.error(f"{where}.variant", f"expected one of {', '.join(VARIANTS)}, "
                                                f"got {excerpt(kp.variant)}")
    if m.get("kube_proxy_version") is not None:
        kp.kube_proxy_version = str(m["kube_proxy_version"]).strip()
        if kp.kube_proxy_version not in NFT_LAYOUTS:
            raise src.error(f"{where}.kube_proxy_version", f"no nftables layout for version "
                                                            f"{excerpt(kp.kube_proxy_version)} (have: "
                                                            f"{', '.join(NFT_LAYOUTS)})")
    if m.get("port") is not None:
        kp.port = integer(src, f"{where}.port", m["port"], 1, 65535)
    for key in ("random_fully", "localhost_nodeports", "masquerade_all"):
        if m.get(key) is not None:
            setattr(kp, key, boolean(src, f"{where}.{key}", m[key]))
    for key in ("min_sync_period", "udp_idle_timeout"):
        if m.get(key) is not None:
            setattr(kp, key, parse_duration(m[key], src.at(f"{where}.{key}")))
    return kp


class Allocations:
    """ClusterIPs and node ports in use, shared by the manifests and the timeline's objects."""

    def __init__(self) -> None:
        self.ips: dict[str, str] = {}        # ip -> Service key
        self.node_ports: dict[int, str] = {}
        #: Service key -> its ClusterIP and its node ports by (port, protocol): what a Service
        #: applied again keeps, as the API server keeps them
        self.by_service: dict[str, tuple[str | None, dict[tuple[int, str], int]]] = {}

    def release(self, key: str) -> None:
        """A deleted Service's ClusterIP and node ports are free again."""
        ip, ports = self.by_service.pop(key, (None, {}))
        if ip is not None and self.ips.get(ip) == key:
            del self.ips[ip]
        for port in ports.values():
            if self.node_ports.get(port) == key:
                del self.node_ports[port]


def check_objects(located: list[tuple[Any, Ctx]], k: Kubernetes, t: Topology, alloc: Allocations) -> None:
    pods: dict[str, tuple[str, str]] | None = None       # made at the first Pod: a walk of every veth
    seen: dict[tuple[str, str], Ctx] = {}
    for obj, ctx in located:
        key = (type(obj).__name__, obj.meta.key)
        if key in seen:
            first = seen[key]
            raise ctx.error("", f"defined twice (first at {first.path}:{first.line})")
        seen[key] = ctx
        if isinstance(obj, Service):
            check_service(obj, ctx, k, alloc)
        elif isinstance(obj, Pod):
            if pods is None:
                pods = topology_pods(t)
            _check_pod(obj, ctx, pods)


def check_service(svc: Service, ctx: Ctx, k: Kubernetes, alloc: Allocations) -> None:
    """The ClusterIP inside --service-cluster-ip-range and unique (allocated if missing); node ports
    in --service-node-port-range and unique (allocated if missing)."""
    net = ipaddress.IPv4Network(k.service_cidr)
    old_ip, old_ports = alloc.by_service.get(svc.meta.key, (None, {}))
    if old_ip is not None and svc.type != "ExternalName":
        # applied again: the API server keeps the ClusterIP and refuses another one
        if svc.cluster_ip is None and not svc.headless:
            svc.cluster_ip = old_ip
        elif svc.cluster_ip != old_ip:
            raise ctx.error("spec.clusterIP", f"may not change once set: Service {svc.meta.key} has "
                                              f"ClusterIP {old_ip}, not {svc.cluster_ip or 'None'}")
    alloc.release(svc.meta.key)
    if svc.cluster_ip is not None:
        if ipaddress.IPv4Address(svc.cluster_ip) not in net:
            raise ctx.error("spec.clusterIP", f"{svc.cluster_ip} is outside the service CIDR {net} "
                                              "(kubernetes.service_cidr, --service-cluster-ip-range)")
    elif not svc.headless and svc.type != "ExternalName":
        svc.cluster_ip = _allocate_ip(svc.meta.key, net, alloc)
    ports: dict[tuple[int, str], int] = {}
    alloc.by_service[svc.meta.key] = (svc.cluster_ip, ports)
    if svc.cluster_ip is not None:
        other = alloc.ips.get(svc.cluster_ip)
        if other is not None and other != svc.meta.key:
            raise ctx.error("spec.clusterIP", f"{svc.cluster_ip} is already the ClusterIP of Service {other}")
        alloc.ips[svc.cluster_ip] = svc.meta.key
    if svc.type not in ("NodePort", "LoadBalancer"):
        return
    lo, hi = NODE_PORT_RANGE
    for i, p in enumerate(svc.ports):
        if p.node_port is None:
            kept = old_ports.get((p.port, p.protocol))
            p.node_port = (kept if kept is not None and kept not in alloc.node_ports
                           else _allocate_port(f"{svc.meta.key}:{p.name}:{p.protocol}", alloc))
        elif not lo <= p.node_port <= hi:
            raise ctx.error(f"spec.ports[{i}].nodePort",
                            f"{p.node_port} is outside the node port range {lo}-{hi}")
        other = alloc.node_ports.get(p.node_port)
        if other is not None and other != svc.meta.key:
            raise ctx.error(f"spec.ports[{i}].nodePort",
                            f"{p.node_port} is already a node port of Service {other}")
        alloc.node_ports[p.node_port] = svc.meta.key
        ports[(p.port, p.protocol)] = p.node_port


def _allocate_ip(key: str, net: ipaddress.IPv4Network, alloc: Allocations) -> str:
    size = net.num_addresses - 3                       # not the network, .1 (kubernetes) or broadcast
    if size <= 0:
        raise PktemuError(f"service CIDR {net} is too small to allocate a ClusterIP for {key}")
    start = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % size
    for i in range(size):
        ip = str(net.network_address + 2 + (start + i) % size)
        if ip not in alloc.ips:
            return ip
    raise PktemuError(f"service CIDR {net} is full: no ClusterIP left for {key}")


def _allocate_port(key: str, alloc: Allocations) -> int:
    lo, hi = NODE_PORT_RANGE
    size = hi - lo + 1
    start = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % size
    for i in range(size):
        port = lo + (start + i) % size
        if port not in alloc.node_ports:
            return port
    raise PktemuError(f"node port range {lo}-{hi} is full: no node port left for {key}")


def _check_pod(pod: Pod, ctx: Ctx, pods: dict[str, tuple[str, str]]) -> None:
    """A Pod runs in a topology pod (its namespace): what the manifest says of its address and node
    must be that pod's, or the Services would send traffic where the Pod is not."""
    ns = pod.netns or pod.meta.name
    if pod.netns is not None and pod.netns not in pods:
        raise ctx.error("metadata.annotations.pktemu.io/netns",
                        f"no pod {excerpt(pod.netns)} in the topology")
    if ns not in pods:
        if pod.pod_ip is None:
            raise ctx.error("status.podIP", f"required: no topology pod is named {excerpt(pod.meta.name)} "
                                            "(or set the pktemu.io/netns annotation)")
        return
    ip, host = pods[ns]
    if pod.pod_ip is not None and pod.pod_ip != ip:
        raise ctx.error("status.podIP", f"{pod.pod_ip} is not the address of topology pod {ns} ({ip}); "
                                        "leave it out to take the pod's")
    if pod.node_name is not None and pod.node_name != host:
        raise ctx.error("spec.nodeName", f"{shorten(pod.node_name)} is not the node of topology pod {ns} "
                                         f"({host}); leave it out to take the pod's")
