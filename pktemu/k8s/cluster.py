"""The Kubernetes side of one run: the API server filled from the topology's manifests, the
EndpointSlice controllers, a kube-proxy per configured node, and the scenario's timeline.

Pods in manifests run in the topology pod of the same name (or the one their
`pktemu.io/netns` annotation names); a Pod without `status.podIP` or `spec.nodeName` gets them
from that namespace. Every node sees the API server as `node.cluster` (what the cluster DNS
reads). Objects are deep-copied into the API server, so the topology model is never changed.
"""
from __future__ import annotations

import copy
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from pktemu.k8s.apiserver import ApiServer, Settings
from pktemu.k8s.controllers import EndpointSliceControllers
from pktemu.k8s.kube_proxy import KubeProxy
from pktemu.k8s.objects import Pod, Service
from pktemu.timeline import ACTIONS
from pktemu.net.frame import int2ip
from pktemu.netfilter.hooks import Netfilter
from pktemu.netfilter.xtables import Ruleset
from pktemu.sim import SECOND
from pktemu.units import interface

if TYPE_CHECKING:
    from pktemu import topo
    from pktemu.net.node import Node
    from pktemu.sim import Simulator


def kind_of(obj: Any) -> str:
    return type(obj).__name__


def topology_pods(t: "topo.Topology") -> dict[str, tuple[str, str]]:
    """Topology pod name -> (eth0 address, the node its veth's host end is on)."""
    out: dict[str, tuple[str, str]] = {}
    for v in t.veths:
        for pod_end, host_end in ((v.a, v.b), (v.b, v.a)):
            pname, _, ifname = pod_end.partition("/")
            m = t.nodes.get(pname)
            if m is not None and m.kind == "pod" and ifname == "eth0" and m.interfaces["eth0"].addresses:
                ip = str(interface(m.interfaces["eth0"].addresses[0].cidr).ip)
                out[pname] = (ip, host_end.partition("/")[0])
    return out


def node_ip(node: "Node") -> str | None:
    """The node's InternalIP: its source address towards the default gateway, else its first address."""
    rt = node.routes.lookup(0)
    if rt is not None and rt.dev in node.devices:
        a = node.select_addr(node.devices[rt.dev], rt.gateway or 0)
        if a is not None:
            return int2ip(a)
    for dev in node.devices.values():
        if dev.name != "lo" and dev.addresses:
            return int2ip(dev.addresses[0].addr)
    return None


class Cluster:
    """Everything Kubernetes in one run, built after the network so kube-proxy finds its nodes."""

    def __init__(self, sim: "Simulator", t: "topo.Topology", nodes: dict[str, "Node"]) -> None:
        spec = t.kubernetes
        assert spec is not None
        self.sim = sim
        self.spec = spec
        self.nodes = nodes
        self.api = ApiServer(sim, Settings(spec.service_cidr, spec.cluster_cidr or "", spec.cluster_domain))
        self.pods = topology_pods(t)
        self.controllers = EndpointSliceControllers(self.api, spec.watch_latency)
        self.kube_proxies: dict[str, KubeProxy] = {}
        self.log: list[tuple[int, str]] = []
        self._known_pods: dict[str, Pod] = {}
        for node in nodes.values():
            node.cluster = self.api  # type: ignore[attr-defined]  # read by the cluster-dns app
        for obj in spec.objects:
            self.apply(copy.deepcopy(obj))

    def start(self) -> None:
        """Controllers converge and every kube-proxy does its first sync, before any traffic."""
        self.controllers.start()
        for name, cfg in self.spec.kube_proxy.items():
            node = self.nodes[name]
            if node.nf.ruleset is None:
                node.nf = Netfilter(node, Ruleset(node.name))
            kp = KubeProxy(self.api, node, cfg, node_ip(node), self.spec.cluster_cidr,
                           self.spec.watch_latency)
            self.kube_proxies[name] = kp
            kp.start()

    def run_action(self, entry: "topo.TimelineEntry") -> None:
        self.note(f"timeline {entry.action} {entry.args if entry.action != 'apply' else ''}".rstrip())
        ACTIONS[entry.action].run(self, entry.args)

    def note(self, what: str) -> None:
        self.log.append((self.sim.now, what))

    # ------------------------------------------------------------------ kubectl
    def apply(self, obj: Any) -> None:
        if isinstance(obj, Pod):
            obj = self._placed(obj)
            self._known_pods[obj.meta.key] = obj
        self.api.apply(kind_of(obj), obj)

    def delete(self, kind: str, key: str) -> None:
        """kubectl delete; a Pod is first terminating for its grace period, then gone."""
        if kind != "Pod":
            self.api.delete(kind, key)
            return
        pod = self.api.get("Pod", key)
        if pod is None or pod.terminating:
            return
        gone = replace(pod, terminating=True, meta=copy.deepcopy(pod.meta))
        self.api.apply("Pod", gone)
        self.sim.schedule(pod.termination_grace_seconds * SECOND, self._terminated, gone)

    def _terminated(self, pod: Pod) -> None:
        live = self.api.get("Pod", pod.meta.key)
        if live is not None and live.terminating:          # not brought back (scaled up) meanwhile
            self.api.delete("Pod", pod.meta.key)

    def scale(self, service_key: str, replicas: int) -> None:
        """Keep the first `replicas` Pods (by name) the Service selects; bring back or delete the others."""
        svc: Service | None = self.api.get("Service", service_key)
        if svc is None or not svc.selector:
            self.note(f"scale: no Service {service_key} with a selector (ignored)")
            return
        ns = svc.meta.namespace
        chosen = sorted((p for p in self._known_pods.values() if p.meta.namespace == ns
                         and all(p.meta.labels.get(k) == v for k, v in svc.selector.items())),
                        key=lambda p: p.meta.name)
        for i, pod in enumerate(chosen):
            live = self.api.get("Pod", pod.meta.key)
            if i < replicas and (live is None or live.terminating):
                self.api.apply("Pod", copy.deepcopy(pod))
            elif i >= replicas and live is not None:
                self.delete("Pod", pod.meta.key)

    def _placed(self, pod: Pod) -> Pod:
        """The Pod with its IP and node taken from its topology namespace when the manifest has none."""
        where = self.pods.get(pod.netns or pod.meta.name)
        if where is not None:
            ip, host = where
            pod = replace(pod, pod_ip=pod.pod_ip or ip, node_name=pod.node_name or host)
        return pod
