"""Cluster timeline actions: changes to the Kubernetes API at given virtual times (pktemu.timeline).

A topology scenario's `timeline:` entries are `{at: T, <action>: <argument>}`; these run on the
cluster, the node actions (rules, conntrack, links) are pktemu.actions'.

* `apply`: a manifest file (relative path) or an inline object; kubectl apply of each object.
* `delete`: `Kind/namespace/name` or `Kind/name`; kubectl delete (a Pod terminates gracefully).
* `ready`: `{pod: [ns/]name, value: bool}`; the Pod's readiness probe starts failing or passing.
* `scale`: `{service: [ns/]name, replicas: N}`; the first N Pods (by name) the Service selects
  stay, the others are deleted (scaling up brings them back).
* `kube_proxy`: `{node: name, action: crash|restart}`; the node's kube-proxy dies (rules and
  conntrack stay) or restarts (full resync).
"""
from __future__ import annotations

import copy
import os
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from pktemu.errors import PktemuError, excerpt, shorten
from pktemu.k8s.manifests import Ctx, load_file, parse_object
from pktemu.k8s.objects import KINDS
from pktemu.timeline import ActionFailed, register

if TYPE_CHECKING:
    from pktemu.k8s.cluster import Cluster



def _err(where: str, msg: str) -> PktemuError:
    return PktemuError(f"{where}: {msg}")


def _mapping(value: Any, where: str, required: tuple[str, ...],
             optional: tuple[str, ...] = ()) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _err(where, f"expected a mapping with {', '.join(required)}, got {excerpt(value)}")
    for k in value:
        if k not in required + optional:
            raise _err(f"{where}.{shorten(k, 40) if isinstance(k, str) else excerpt(k, 40)}",
                       f"unknown key (expected: {', '.join(required + optional)})")
    for k in required:
        if value.get(k) is None:
            raise _err(f"{where}.{k}", "required")
    return value


def _ns_name(value: Any, where: str) -> tuple[str, str]:
    if not isinstance(value, str) or not value or value.count("/") > 1:
        raise _err(where, f"expected name or namespace/name, got {excerpt(value)}")
    ns, _, name = value.rpartition("/")
    return ns or "default", name


# ---------------------------------------------------------------------------- apply
def _parse_apply(value: Any, where: str, base: str, _node: Any = None) -> dict[str, Any]:
    if isinstance(value, str):
        if not value or not value.isprintable() or len(value) > 4096:
            raise _err(where, f"not a usable file name: {excerpt(value)}")
        path = os.path.normpath(os.path.join(base, value))
        if not os.path.isfile(path):
            raise _err(where, f"no such manifest file: {shorten(path, 300)}")
        return {"objects": load_file(path)}
    if isinstance(value, dict):
        kind = value.get("kind")
        if isinstance(kind, str) and kind.endswith("List"):
            items = value.get("items") or []
            if not isinstance(items, list):
                raise _err(f"{where}.items", f"expected a list of objects, got {excerpt(items)}")
            return {"objects": [_inline(item, f"{where}.items[{i}]") for i, item in enumerate(items)]}
        return {"objects": [_inline(value, where)]}
    raise _err(where, f"expected a manifest file name or an inline object, got {excerpt(value)}")


def _inline(value: Any, where: str) -> Any:
    if not isinstance(value, dict):
        raise _err(where, f"expected a Kubernetes object (a mapping), got {excerpt(value)}")
    kind = value.get("kind")
    obj = shorten(kind, 40) if isinstance(kind, str) else excerpt(kind, 40)
    return parse_object(value, Ctx(where, 0, obj))


def _run_apply(cluster: "Cluster", args: dict[str, Any]) -> None:
    for obj in args["objects"]:
        cluster.apply(copy.deepcopy(obj))


# ---------------------------------------------------------------------------- delete
def _parse_delete(value: Any, where: str, base: str, _node: Any = None) -> dict[str, Any]:
    if not isinstance(value, str) or value.count("/") not in (1, 2):
        raise _err(where, f"expected Kind/namespace/name or Kind/name, got {excerpt(value)}")
    kind, _, rest = value.partition("/")
    if kind not in KINDS:
        raise _err(where, f"unknown kind {excerpt(kind)} (known: {', '.join(KINDS)})")
    ns, name = _ns_name(rest, where)
    return {"kind": kind, "key": f"{ns}/{name}"}


#: the resource names kubectl's errors give each kind
_RESOURCE = {"Service": "services", "Pod": "pods", "Endpoints": "endpoints",
             "EndpointSlice": "endpointslices.discovery.k8s.io"}


def _not_found(kind: str, key: str) -> ActionFailed:
    """What kubectl says of an object that is not there: an action on it fails at run time (its
    load-time check cannot follow every order, e.g. steps, or `Network.schedule`)."""
    name = key.partition("/")[2]
    return ActionFailed(f'Error from server (NotFound): {_RESOURCE.get(kind, kind)} "{name}" not found')


def _run_delete(cluster: "Cluster", args: dict[str, Any]) -> None:
    if cluster.api.get(args["kind"], args["key"]) is None:
        raise _not_found(args["kind"], args["key"])
    cluster.delete(args["kind"], args["key"])


# ---------------------------------------------------------------------------- ready
def _parse_ready(value: Any, where: str, base: str, _node: Any = None) -> dict[str, Any]:
    m = _mapping(value, where, ("pod", "value"), ("namespace",))
    if not isinstance(m["value"], bool):
        raise _err(f"{where}.value", f"expected true or false, got {excerpt(m['value'])}")
    ns, name = _ns_name(m["pod"], f"{where}.pod")
    if m.get("namespace") is not None:
        if not isinstance(m["namespace"], str):
            raise _err(f"{where}.namespace", f"expected a namespace name, got {excerpt(m['namespace'])}")
        ns = m["namespace"]
    return {"key": f"{ns}/{name}", "value": m["value"]}


def _run_ready(cluster: "Cluster", args: dict[str, Any]) -> None:
    pod = cluster.api.get("Pod", args["key"])
    if pod is None:
        raise _not_found("Pod", args["key"])
    cluster.apply(replace(pod, ready=args["value"], meta=copy.deepcopy(pod.meta)))


# ---------------------------------------------------------------------------- scale
def _parse_scale(value: Any, where: str, base: str, _node: Any = None) -> dict[str, Any]:
    m = _mapping(value, where, ("service", "replicas"))
    r = m["replicas"]
    if not isinstance(r, int) or isinstance(r, bool) or not 0 <= r <= 2**31 - 1:
        raise _err(f"{where}.replicas", f"expected an integer 0-2147483647, got {excerpt(r)}")
    ns, name = _ns_name(m["service"], f"{where}.service")
    return {"key": f"{ns}/{name}", "replicas": r}


def _run_scale(cluster: "Cluster", args: dict[str, Any]) -> None:
    svc = cluster.api.get("Service", args["key"])
    if svc is None:
        raise _not_found("Service", args["key"])
    if not svc.selector:
        raise ActionFailed(f"Service {args['key']} has no selector: there are no Pods to scale")
    cluster.scale(args["key"], args["replicas"])


# ---------------------------------------------------------------------------- kube-proxy
def _parse_kube_proxy(value: Any, where: str, base: str, _node: Any = None) -> dict[str, Any]:
    m = _mapping(value, where, ("node", "action"))
    if m["action"] not in ("crash", "restart"):
        raise _err(f"{where}.action", f"expected crash or restart, got {excerpt(m['action'])}")
    if not isinstance(m["node"], str):
        raise _err(f"{where}.node", f"expected a node name, got {excerpt(m['node'])}")
    return {"node": m["node"], "action": m["action"]}


def _run_kube_proxy(cluster: "Cluster", args: dict[str, Any]) -> None:
    kp = cluster.kube_proxies[args["node"]]
    kp.crash() if args["action"] == "crash" else kp.restart()


register("apply", _parse_apply, _run_apply)
register("delete", _parse_delete, _run_delete)
register("ready", _parse_ready, _run_ready)
register("scale", _parse_scale, _run_scale)
register("kube_proxy", _parse_kube_proxy, _run_kube_proxy)
