"""An in-memory API server: the objects of one cluster and watches on them, on the virtual clock.

Watchers (kube-proxy on each node, the cluster DNS) get ADDED / MODIFIED / DELETED events for
the kinds they watch, delivered as scheduled events so that a change made at time t reaches
each watcher after its own watch latency, as informers do.
"""
from __future__ import annotations

import builtins
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from pktemu.sim import Simulator

ADDED, MODIFIED, DELETED = "ADDED", "MODIFIED", "DELETED"

Watcher = Callable[[str, str, Any], None]      # (event type, kind, object)
Observer = Callable[[str, Any, Any], None]     # (kind, old object or None, new object or None)


@dataclass
class Settings:
    """Cluster-wide settings: kube-apiserver's --service-cluster-ip-range, the pod network."""
    service_cidr: str = "10.3.240.0/20"
    cluster_cidr: str = "10.0.0.0/16"
    cluster_domain: str = "cluster.local"


class ApiServer:
    def __init__(self, sim: "Simulator", settings: Settings | None = None) -> None:
        self.sim = sim
        self.settings = settings or Settings()
        self._objects: dict[str, dict[str, Any]] = {}          # kind -> "ns/name" -> object
        self._watchers: dict[str, list[tuple[Watcher, int]]] = {}
        self._observers: list[Observer] = []
        self._created = 0

    # ------------------------------------------------------------------ reads
    def list(self, kind: str) -> list[Any]:
        return [self._objects[kind][k] for k in sorted(self._objects.get(kind, {}))]

    def get(self, kind: str, key: str) -> Any | None:
        return self._objects.get(kind, {}).get(key)

    def list_by_creation(self, kind: str) -> builtins.list[Any]:
        """Objects in the order they were created (what a Go map walk would be, made deterministic)."""
        return sorted(self._objects.get(kind, {}).values(), key=lambda o: o.meta.creation_seq)

    # ------------------------------------------------------------------ writes
    def apply(self, kind: str, obj: Any) -> None:
        """Create or replace (kubectl apply); watchers see ADDED or MODIFIED."""
        store = self._objects.setdefault(kind, {})
        old = store.get(obj.meta.key)
        ev = MODIFIED if old is not None else ADDED
        if old is not None:
            obj.meta.creation_seq = old.meta.creation_seq
        else:
            self._created += 1
            obj.meta.creation_seq = self._created
        store[obj.meta.key] = obj
        for fn in self._observers:
            fn(kind, old, obj)
        self._notify(ev, kind, obj)

    def delete(self, kind: str, key: str) -> Any | None:
        obj = self._objects.get(kind, {}).pop(key, None)
        if obj is not None:
            for fn in self._observers:
                fn(kind, obj, None)
            self._notify(DELETED, kind, obj)
        return obj

    # ------------------------------------------------------------------ watches
    def watch(self, kind: str, fn: Watcher, latency_ns: int = 0) -> None:
        self._watchers.setdefault(kind, []).append((fn, latency_ns))

    def observe(self, fn: Observer) -> None:
        """Be told of every write as it happens (not on the clock): for a controller's own indexes
        and dirty sets, so that its reconcile touches only what changed."""
        self._observers.append(fn)

    def unwatch(self, fn: Watcher) -> None:
        for ws in self._watchers.values():
            ws[:] = [(f, lat) for f, lat in ws if f is not fn]

    def _notify(self, ev: str, kind: str, obj: Any) -> None:
        for fn, latency in list(self._watchers.get(kind, [])):
            self.sim.schedule(latency, fn, ev, kind, obj)
