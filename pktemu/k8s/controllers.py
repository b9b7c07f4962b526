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


OURS = (SLICE_CONTROLLER, MIRROR_CONTROLLER)


class EndpointSliceControllers:
    """Both controllers, reconciling on every Service, Pod and Endpoints change they see.

    Every write is observed as it happens and marks the Services it can change (a Pod: the Services
    of its namespace whose selector matches its old or new labels); a reconcile then recomputes only
    those, making the same writes in the same order as a reconcile of the whole cluster would, since
    the slices of every other Service are already what it wants. Without that, a batch of P Pods
    costs P full reconciles over P Pods."""

    def __init__(self, api: ApiServer, latency: int) -> None:
        self.api = api
        self.latency = latency
        self._services: dict[str, Service] = {}
        self._svc_index: dict[tuple[str, str, str], set[str]] = {}     # (ns, label, value) -> Services
        self._pod_index: dict[tuple[str, str, str], dict[str, Pod]] = {}   # (ns, label, value) -> Pods
        self._want: dict[str, dict[str, EndpointSlice]] = {}   # Service key -> its slices, as reconciled
        self._owner: dict[str, str] = {}                       # slice key -> Service key
        self._dirty: set[str] = set()
        self._dirty_slices: set[str] = set()
        self._writing = False

    def start(self) -> None:
        """Converge now (the cluster's state at t=0), then follow changes."""
        for svc in self.api.list("Service"):
            self._observe("Service", None, svc)
        for pod in self.api.list("Pod"):
            self._observe("Pod", None, pod)
        self._dirty.update(ep.meta.key for ep in self.api.list("Endpoints"))
        self._dirty_slices.update(es.meta.key for es in self.api.list("EndpointSlice"))
        self.api.observe(self._observe)
        self.reconcile()
        for kind in ("Service", "Pod", "Endpoints"):
            self.api.watch(kind, self._on_event, self.latency)

    def _on_event(self, ev: str, kind: str, obj: Any) -> None:
        self.reconcile()

    # ------------------------------------------------------------------ indexes and dirty sets
    def _observe(self, kind: str, old: Any, new: Any) -> None:
        if kind == "Service":
            if old is not None:
                self._services.pop(old.meta.key, None)
                self._index_service(old, add=False)
            if new is not None:
                self._services[new.meta.key] = new
                self._index_service(new, add=True)
            self._dirty.add((old or new).meta.key)
        elif kind == "Pod":
            for pod, add in ((old, False), (new, True)):
                if pod is None:
                    continue
                ns = pod.meta.namespace
                for k, v in pod.meta.labels.items():
                    if add:
                        self._pod_index.setdefault((ns, k, v), {})[pod.meta.key] = pod
                    else:
                        self._pod_index.get((ns, k, v), {}).pop(pod.meta.key, None)
                self._dirty.update(self._selecting(pod))
        elif kind == "Endpoints":
            self._dirty.add((old or new).meta.key)
        elif kind == "EndpointSlice" and not self._writing:
            self._dirty_slices.add((old or new).meta.key)

    def _index_service(self, svc: Service, add: bool) -> None:
        for k, v in (svc.selector or {}).items():
            keys = self._svc_index.setdefault((svc.meta.namespace, k, v), set())
            if add:
                keys.add(svc.meta.key)
            else:
                keys.discard(svc.meta.key)

    def _selecting(self, pod: Pod) -> set[str]:
        """The Services whose selector matches the Pod's labels."""
        ns, labels = pod.meta.namespace, pod.meta.labels
        found: set[str] = set()
        for k, v in labels.items():
            for key in self._svc_index.get((ns, k, v), ()):
                sel = self._services[key].selector or {}
                if key not in found and all(labels.get(a) == b for a, b in sel.items()):
                    found.add(key)
        return found

    def _selected(self, svc: Service) -> list[Pod]:
        """The Pods a Service's (non-empty) selector matches, through the smallest label's index."""
        sel = svc.selector or {}
        ns = svc.meta.namespace
        pods = min((self._pod_index.get((ns, k, v), {}) for k, v in sel.items()), key=len)
        return [p for p in pods.values() if all(p.meta.labels.get(k) == v for k, v in sel.items())]

    def _wanted(self, key: str) -> dict[str, EndpointSlice]:
        svc = self._services.get(key)
        if svc is None:
            return {}
        if svc.selector:
            return {es.meta.key: es for es in pod_slices(svc, self._selected(svc))}
        ep = self.api.get("Endpoints", key)
        if ep is None:
            return {}
        es = mirrored_slice(ep)
        return {es.meta.key: es}

    # ------------------------------------------------------------------ reconcile
    def reconcile(self) -> None:
        """Delete our slices no Service wants (by key), then write the wanted ones that differ:
        selector Services' slices first, then mirrored ones, each by Service key."""
        dirty, self._dirty = self._dirty, set()
        touched, self._dirty_slices = self._dirty_slices, set()
        if not dirty and not touched:
            return
        gone = set(touched)
        for key in dirty:
            old = self._want.pop(key, {})
            gone.update(old)
            for sk in old:
                if self._owner.get(sk) == key:
                    del self._owner[sk]
            new = self._wanted(key)
            if new:
                self._want[key] = new
                for sk in new:
                    self._owner[sk] = key
        owners = dirty | {self._owner[sk] for sk in touched if sk in self._owner}
        self._writing = True
        try:
            for sk in sorted(gone):
                es = self.api.get("EndpointSlice", sk)
                if es is not None and es.meta.labels.get(MANAGED_BY) in OURS and sk not in self._owner:
                    self.api.delete("EndpointSlice", sk)
            order = sorted((key for key in owners if key in self._want),
                           key=lambda k: (not self._services[k].selector, k))
            for key in order:
                for sk, es in self._want[key].items():
                    cur = self.api.get("EndpointSlice", sk)
                    if cur is None or (cur.endpoints, cur.ports) != (es.endpoints, es.ports):
                        self.api.apply("EndpointSlice", es)
        finally:
            self._writing = False
