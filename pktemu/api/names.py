"""Naming a pod or node for `pktemu.Network`: its namespace name, or a Kubernetes `namespace/name`.

A topology names network namespaces (`client`, `dns`); a cluster built from manifests also
knows its Pods as `kubectl` does (`default/client`, `kube-system/kube-dns-7f9c5d8b6-x2x4v`),
each running in the namespace of its name or of its `pktemu.io/netns` annotation. Both are
accepted wherever a pod is asked for; a name that is neither gets the close ones suggested.
"""
from __future__ import annotations

import difflib

from pktemu.errors import PktemuError, excerpt
from pktemu.net.node import Node
from pktemu.network import Network as Engine


def pod_keys(engine: Engine) -> dict[str, str]:
    """`namespace/name` of each Pod the API server has now -> the topology namespace it runs in."""
    cluster = engine.cluster
    if cluster is None:
        return {}
    out: dict[str, str] = {}
    for pod in cluster.api.list("Pod"):
        netns = pod.netns or pod.meta.name
        if netns in engine.nodes:
            out[pod.meta.key] = netns
    return out


def node_name(engine: Engine, where: object) -> str | None:
    """The topology namespace `where` names (itself, or a Pod's `namespace/name`), else None."""
    if not isinstance(where, str):
        return None
    if where in engine.nodes:
        return where
    return pod_keys(engine).get(where) if "/" in where else None


def find_node(engine: Engine, what: str, where: object) -> Node:
    """The node `where` names; a one-line PktemuError with the close names otherwise."""
    name = node_name(engine, where)
    if name is not None:
        return engine.nodes[name]
    names = [*engine.nodes, *pod_keys(engine)]
    close = difflib.get_close_matches(where, names, n=3, cutoff=0.6) if isinstance(where, str) else []
    hint = f" (did you mean {' or '.join(close)}?)" if close else ""
    raise PktemuError(f"{what}: no pod or node {excerpt(where)}{hint} (have: {', '.join(names)})")


def pod_point(engine: Engine, point: str) -> str | None:
    """`namespace/name[/ifname]` of a Pod -> `netns/ifname` (eth0 by default), else None."""
    keys = pod_keys(engine)
    if point in keys:
        return f"{keys[point]}/eth0"
    head, _, ifname = point.rpartition("/")
    return f"{keys[head]}/{ifname}" if head in keys else None
