"""The EndpointSlice controllers reconcile only what a write can change (issue 15): after any
sequence of Pod, Service, Endpoints and EndpointSlice writes they must make exactly the writes,
in the same order, that a reconcile of the whole cluster on every event makes (the controllers'
definition, kept here as the reference)."""
from __future__ import annotations

import random
from typing import Any

import pytest

from pktemu.k8s.apiserver import ApiServer
from pktemu.k8s.controllers import (
    MANAGED_BY, OURS, SLICE_CONTROLLER, EndpointSliceControllers, mirrored_slice, pod_slices,
)
from pktemu.k8s.manifests import SERVICE_NAME_LABEL
from pktemu.k8s.objects import (
    ContainerPort, Endpoint, EndpointAddress, EndpointPort, Endpoints, EndpointSlice, EndpointSubset,
    ObjectMeta, Pod, Service, ServicePort,
)
from pktemu.sim import Simulator

NAMESPACES = ("default", "other")
APPS = ("web", "db", "api")


def full_reconcile(api: ApiServer) -> None:
    """The whole cluster's reconcile, as the controllers did it before they were incremental."""
    want: dict[str, EndpointSlice] = {}
    pods = api.list("Pod")
    selectorless: set[str] = set()
    for svc in api.list("Service"):
        if svc.selector:
            for es in pod_slices(svc, pods):
                want[es.meta.key] = es
        else:
            selectorless.add(svc.meta.key)
    for ep in api.list("Endpoints"):
        if ep.meta.key in selectorless:
            es = mirrored_slice(ep)
            want[es.meta.key] = es
    for es in api.list("EndpointSlice"):
        if es.meta.labels.get(MANAGED_BY) in OURS and es.meta.key not in want:
            api.delete("EndpointSlice", es.meta.key)
    for key, es in want.items():
        old = api.get("EndpointSlice", key)
        if old is None or (old.endpoints, old.ports) != (es.endpoints, es.ports):
            api.apply("EndpointSlice", es)


def random_write(rng: random.Random, step: int) -> tuple[str, str, Any]:
    """One write: ("apply", kind, object) or ("delete", kind, key)."""
    ns = rng.choice(NAMESPACES)
    what = rng.random()
    if what < 0.5:
        i = rng.randrange(12)
        labels = {"app": rng.choice(APPS)}
        if rng.random() < 0.4:
            labels["tier"] = rng.choice(("a", "b"))
        if rng.random() < 0.15:
            return ("delete", "Pod", f"{ns}/p{i}")
        ports = [ContainerPort(rng.choice((8080, 9090)), "TCP", "http")] if rng.random() < 0.7 else []
        return ("apply", "Pod", Pod(ObjectMeta(f"p{i}", ns, labels), f"node{i % 3}",
                                    f"10.0.{i % 3}.{i + 2}" if rng.random() < 0.9 else None,
                                    ready=rng.random() < 0.8, ports=ports,
                                    terminating=rng.random() < 0.1))
    if what < 0.8:
        i = rng.randrange(4)
        if rng.random() < 0.15:
            return ("delete", "Service", f"{ns}/s{i}")
        sel: dict[str, str] | None = {"app": rng.choice(APPS)}
        if rng.random() < 0.3:
            sel = {"app": rng.choice(APPS), "tier": rng.choice(("a", "b"))}
        elif rng.random() < 0.2:
            sel = None
        target: int | str | None = rng.choice((None, 8080, "http"))
        return ("apply", "Service", Service(ObjectMeta(f"s{i}", ns), [ServicePort(80, "TCP", "p", target)],
                                            cluster_ip=f"10.96.0.{i + 10}", selector=sel))
    if what < 0.9:
        i = rng.randrange(4)
        sub = EndpointSubset([EndpointAddress(f"192.168.0.{step % 200 + 1}")], [],
                             [EndpointPort(80, "TCP", "p")])
        return ("apply", "Endpoints", Endpoints(ObjectMeta(f"s{i}", ns), [sub]))
    # someone else's writes to slices: a controller-labelled orphan, or a deletion of ours
    if rng.random() < 0.5:
        return ("apply", "EndpointSlice", EndpointSlice(
            ObjectMeta(f"s{rng.randrange(4)}-stray", ns,
                       {SERVICE_NAME_LABEL: "s0", MANAGED_BY: SLICE_CONTROLLER}), "s0",
            endpoints=[Endpoint(["10.9.9.9"])]))
    return ("delete", "EndpointSlice", "")


def play(seed: int, incremental: bool) -> list[tuple[int, str, str, Any]]:
    """Run a random sequence of writes; the slice writes the controllers made, in order."""
    rng = random.Random(seed)
    sim = Simulator()
    api = ApiServer(sim)
    seen: list[tuple[int, str, str, Any]] = []
    api.observe(lambda kind, old, new: seen.append(
        (sim.now, "apply" if new is not None else "delete", (old or new).meta.key,
         None if new is None else (new.endpoints, new.ports)))
        if kind == "EndpointSlice" else None)
    if incremental:
        EndpointSliceControllers(api, 1000).start()
    else:
        full_reconcile(api)
        for kind in ("Service", "Pod", "Endpoints"):
            api.watch(kind, lambda ev, k, obj: full_reconcile(api), 1000)
    for step in range(150):
        op, kind, arg = random_write(rng, step)
        if op == "apply":
            api.apply(kind, arg)
        else:
            if kind == "EndpointSlice":
                ours = [es.meta.key for es in api.list("EndpointSlice")]
                arg = rng.choice(ours) if ours else "default/none"
            api.delete(kind, arg)
        sim.run(until=sim.now + rng.choice((0, 500, 1000, 3000)))
    sim.run()
    return seen


@pytest.mark.parametrize("seed", range(12))
def test_incremental_controller_writes_what_a_full_reconcile_writes(seed: int) -> None:
    full = play(seed, incremental=False)
    assert any(op == "apply" for _t, op, _k, _v in full)       # the sequence did exercise the controller
    assert play(seed, incremental=True) == full


def test_a_batch_of_pods_reconciles_each_service_once() -> None:
    """A thousand Pods applied at once: the writes arrive as a thousand events, but the slice is
    written once, with every Pod, and reconciles after the first find nothing to do."""
    sim = Simulator()
    api = ApiServer(sim)
    ctl = EndpointSliceControllers(api, 1000)
    ctl.start()
    writes: list[int] = []
    api.observe(lambda kind, old, new: writes.append(len(new.endpoints)) if kind == "EndpointSlice" else None)
    api.apply("Service", Service(ObjectMeta("web"), [ServicePort(80)], cluster_ip="10.96.0.1",
                                 selector={"app": "web"}))
    for i in range(1000):
        api.apply("Pod", Pod(ObjectMeta(f"p{i:04}", labels={"app": "web"}), "node1",
                             f"10.0.{i // 250}.{i % 250 + 2}"))
    sim.run()
    assert writes == [1000]
