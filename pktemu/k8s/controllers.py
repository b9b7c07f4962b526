"""The control-plane controllers Service networking depends on: the EndpointSlice controller
(selector -> slices of the matching Pods) and the EndpointSlice mirroring controller (v1
Endpoints of selector-less Services -> slices).

Endpoint conditions follow the upstream controller: `serving` is the Pod's readiness,
`terminating` is a set deletionTimestamp, `ready` is serving and not terminating. A Pod's
target ports are resolved per Pod (a named targetPort looks up the container port by name), and
Pods that resolve to different port sets go to different slices. Slices the controllers did not
make (EndpointSlices written in a manifest) are never touched.
"""
from __future__ import annotations

import hashlib
from typing import Any

from pktemu.k8s.apiserver import ApiServer
from pktemu.k8s.manifests import SERVICE_NAME_LABEL
from pktemu.k8s.objects import (
    Endpoint, EndpointConditions, EndpointPort, Endpoints, EndpointSlice, ObjectMeta, Pod, Service,
)

MANAGED_BY = "endpointslice.kubernetes.io/managed-by"
SLICE_CONTROLLER = "endpointslice-controller.k8s.io"
MIRROR_CONTROLLER = "endpointslicemirroring-controller.k8s.io"


def _suffix(*parts: str) -> str:
    """generateName's random suffix, made deterministic."""
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:5]


def target_port(pod: Pod, svc_port: Any) -> int | None:
    """podutil.FindPort: a number as is, a name through the Pod's container ports, None = port."""
    tp = svc_port.target_port
    if tp is None:
        return int(svc_port.port)
    if isinstance(tp, int):
        return tp
    for cp in pod.ports:
        if cp.name == tp and cp.protocol == svc_port.protocol:
            return cp.container_port
    return None


def pod_slices(svc: Service, pods: list[Pod]) -> list[EndpointSlice]:
    """The slices the EndpointSlice controller wants for `svc` (a Service with a selector)."""
    groups: dict[tuple[tuple[str, int, str], ...], list[Endpoint]] = {}
    selector = svc.selector or {}
    for pod in sorted(pods, key=lambda p: p.meta.name):
        if pod.meta.namespace != svc.meta.namespace or not pod.pod_ip:
            continue
        if any(pod.meta.labels.get(k) != v for k, v in selector.items()):
            continue
        ports: list[tuple[str, int, str]] = []
        for sp in svc.ports:
            n = target_port(pod, sp)
            if n is not None:
                ports.append((sp.name, n, sp.protocol))
        serving = pod.ready
        cond = EndpointConditions(ready=serving and not pod.terminating, serving=serving,
                                  terminating=pod.terminating)
        groups.setdefault(tuple(ports), []).append(Endpoint([pod.pod_ip], cond, pod.node_name, pod.meta.name))
    if not groups:
        groups[()] = []                   # the controller's placeholder slice: no endpoints, no ports
    out = []
    for ports_key, eps in groups.items():
        name = f"{svc.meta.name}-{_suffix(svc.meta.key, repr(ports_key))}"
        meta = ObjectMeta(name, svc.meta.namespace,
                          {SERVICE_NAME_LABEL: svc.meta.name, MANAGED_BY: SLICE_CONTROLLER})
        slice_ports = [EndpointPort(n, proto, pname) for pname, n, proto in ports_key if n]
        out.append(EndpointSlice(meta, svc.meta.name, "IPv4", eps, slice_ports))
    return out


def mirrored_slice(ep: Endpoints) -> EndpointSlice:
    """An Endpoints object as the mirroring controller writes it (one slice per subset merged)."""
    meta = ObjectMeta(f"{ep.meta.name}-{_suffix(ep.meta.key, 'mirror')}", ep.meta.namespace,
                      {SERVICE_NAME_LABEL: ep.meta.name, MANAGED_BY: MIRROR_CONTROLLER})
    es = EndpointSlice(meta, ep.meta.name)
    seen_ports: dict[tuple[str, int, str], None] = {}
    for sub in ep.subsets:
        for ready, addrs in ((True, sub.addresses), (False, sub.not_ready_addresses)):
            for a in addrs:
                es.endpoints.append(Endpoint([a.ip], EndpointConditions(ready, ready, False), a.node_name,
                                             a.target_pod))
        for p in sub.ports:
            seen_ports[(p.name, p.port, p.protocol)] = None
    es.ports = [EndpointPort(port, proto, name) for name, port, proto in seen_ports]
    return es


class EndpointSliceControllers:
    """Both controllers, reconciling on every Service, Pod and Endpoints change they see."""

    def __init__(self, api: ApiServer, latency: int) -> None:
        self.api = api
        self.latency = latency

    def start(self) -> None:
        """Converge now (the cluster's state at t=0), then follow changes."""
        self.reconcile()
        for kind in ("Service", "Pod", "Endpoints"):
            self.api.watch(kind, self._on_event, self.latency)

    def _on_event(self, ev: str, kind: str, obj: Any) -> None:
        self.reconcile()

    def reconcile(self) -> None:
        want: dict[str, EndpointSlice] = {}
        pods = self.api.list("Pod")
        selectorless: set[str] = set()
        for svc in self.api.list("Service"):
            if svc.selector:
                for es in pod_slices(svc, pods):
                    want[es.meta.key] = es
            else:
                selectorless.add(svc.meta.key)
        for ep in self.api.list("Endpoints"):
            if ep.meta.key in selectorless:
                es = mirrored_slice(ep)
                want[es.meta.key] = es
        for es in self.api.list("EndpointSlice"):
            ours = es.meta.labels.get(MANAGED_BY) in (SLICE_CONTROLLER, MIRROR_CONTROLLER)
            if ours and es.meta.key not in want:
                self.api.delete("EndpointSlice", es.meta.key)
        for key, es in want.items():
            old = self.api.get("EndpointSlice", key)
            if old is None or (old.endpoints, old.ports) != (es.endpoints, es.ports):
                self.api.apply("EndpointSlice", es)
