"""The cluster around the nodes: which dump is which Node, each Pod wired to its host veth, the
underlay router that joins the nodes, and the Kubernetes objects kept for the manifest.

A Pod is wired the way a bridge CNI wires it: its IP is on a bridge's network, the node's
neighbour entry for that IP gives its MAC, and the bridge's FDB says which port learned that
MAC: that port is its host veth. The underlay router is in importer/underlay.py.
"""
from __future__ import annotations

import copy
import ipaddress
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pktemu.importer import Notes
from pktemu.importer.node import ImportedNode
from pktemu.importer.sources import NodeDump
from pktemu.io.topofile_fields import NAME_RE

NETNS = "pktemu.io/netns"
#: A Pod wired: its object, node, bridge, host veth and MAC (None: derived).
Wired = tuple[dict[str, Any], ImportedNode, str, str, str | None]


@dataclass
class Routed:
    """Calico's pods: topology nodes, their veths to the cali devices, their Pods' `ns/name`."""

    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    veths: list[list[str]] = field(default_factory=list)
    keys: dict[str, str] = field(default_factory=dict)


@dataclass
class Cluster:
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)       # Node name -> object
    pods: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    others: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def pod_cidr(self, node: str) -> str | None:
        spec = (self.nodes.get(node) or {}).get("spec")
        if not isinstance(spec, dict):
            return None
        cidrs: list[Any] = spec["podCIDRs"] if isinstance(spec.get("podCIDRs"), list) else []
        for cidr in [spec.get("podCIDR"), *cidrs]:
            try:
                return str(ipaddress.IPv4Network(cidr))
            except (ValueError, TypeError):
                continue
        return None


    def pod_cidr_problem(self, node: str) -> str:
        """Why `node` has no pod CIDR: no Node object, none given, or the one given is not a network."""
        obj = self.nodes.get(node)
        spec = obj.get("spec") if obj is not None else None
        if not isinstance(spec, dict):
            return "no Node object with spec.podCIDR" if obj is None else f"Node {node}: no spec"
        given = [("spec.podCIDR", spec.get("podCIDR"))] if spec.get("podCIDR") is not None else []
        if isinstance(spec.get("podCIDRs"), list):
            given += [(f"spec.podCIDRs[{i}]", c) for i, c in enumerate(spec["podCIDRs"])]
        if not given:
            return f"Node {node}: no spec.podCIDR"
        field, value = given[0]
        try:
            ipaddress.IPv4Network(value, strict=False)
            why = "has host bits set"
        except (ValueError, TypeError):
            why = "is not an IPv4 network"
        return f"Node {node}: {field} {str(value)[:60]} {why}"


def split(objects: list[tuple[str, dict[str, Any]]], notes: Notes) -> Cluster:
    """The objects by kind; a Pod given twice (namespace and name) or a Node given twice is kept
    once, the first, so that it is wired and named as if it were alone."""
    c = Cluster()
    pods: set[tuple[str, str]] = set()
    for origin, obj in objects:
        if obj.get("kind") == "Node":
            name = (obj.get("metadata") or {}).get("name")
            if isinstance(name, str):
                if name in c.nodes:
                    notes.warn(origin, f"Node {name} given twice: the first is kept")
                    continue
                c.nodes[name] = obj
        elif obj.get("kind") == "Pod":
            key = _key(obj)
            if key in pods:
                notes.warn(origin, f"Pod {key[0]}/{key[1]} given twice: the first is kept")
                continue
            pods.add(key)
            c.pods.append((origin, obj))
        else:
            c.others.append((origin, obj))
    return c


def node_addresses(obj: dict[str, Any]) -> set[str]:
    status = obj.get("status")
    addrs = status.get("addresses") if isinstance(status, dict) else None
    return {str(a.get("address")) for a in addrs if isinstance(a, dict)} if isinstance(addrs, list) else set()


def namer(cluster: Cluster, dumps: list[NodeDump]) -> Callable[[NodeDump, set[str]], str]:
    """Names a dump: the Node object one of its addresses belongs to, else the Node named as its
    hostname, else the hostname (if no other dump has it), else its file's name."""
    hosts = [d.meta("hostname") for d in dumps]
    taken: set[str] = set()

    def name(dump: NodeDump, addresses: set[str]) -> str:
        found = next((n for n, o in cluster.nodes.items() if node_addresses(o) & addresses), None)
        host = dump.meta("hostname")
        if found is None and host in cluster.nodes:
            found = host
        if found is None and host and hosts.count(host) == 1:
            found = host
        if found is None:
            base = os.path.basename(dump.origin.split(": ")[0].rstrip("/"))
            base = re.sub(r"\.(tar\.gz|tgz)$", "", base).removeprefix("pktemu-collect-")
            found = base if base not in ("pktemu-collect", "") else "node"
        found = re.sub(r"[^A-Za-z0-9_.-]", "-", found).lstrip("-._") or "node"
        n, i = found, 2
        while n in taken:
            n, i = f"{found}-{i}", i + 1
        taken.add(n)
        return n

    return name


def _key(obj: dict[str, Any]) -> tuple[str, str]:
    meta: dict[str, Any] = obj["metadata"] if isinstance(obj.get("metadata"), dict) else {}
    return str(meta.get("namespace") or "default"), str(meta.get("name"))


def wire_pods(nodes: dict[str, ImportedNode], cluster: Cluster, notes: Notes, taken: set[str]
              ) -> tuple[dict[str, dict[str, Any]], Routed]:
    """Topology pods of the Pods a bridge CNI wired (the Pod objects get the pktemu.io/netns
    annotation naming them), and topology nodes and veths of those Calico routes to. The others
    are noted and left out."""
    wired: list[Wired] = []
    routed: list[tuple[dict[str, Any], ImportedNode, str]] = []
    waiting: list[tuple[dict[str, Any], ImportedNode, str]] = []
    used: set[tuple[str, str]] = set()
    hostnet: list[str] = []
    wanted: dict[int, str] = {}
    for _, obj in cluster.pods:          # a Pod left out must not name a namespace the topology lacks
        meta = obj.get("metadata")
        ann = meta.get("annotations") if isinstance(meta, dict) else None
        if isinstance(ann, dict) and isinstance(ann.get(NETNS), str):
            wanted[id(obj)] = ann.pop(NETNS)
    for origin, obj in cluster.pods:
        ns, name = _key(obj)
        where = f"{origin}: Pod {ns}/{name}"
        spec, status = obj.get("spec"), obj.get("status")
        if not isinstance(spec, dict) or not isinstance(status, dict):
            notes.warn(where, "no spec or status mapping: left out")
            continue
        if spec.get("hostNetwork"):
            hostnet.append(f"{ns}/{name}")
            continue
        phase, ip, host = status.get("phase"), status.get("podIP"), spec.get("nodeName")
        if phase in ("Succeeded", "Failed"):
            notes.warn(where, f"phase {phase}: not running, left out")
            continue
        if not isinstance(ip, str) or not isinstance(host, str):
            notes.warn(where, "no status.podIP or spec.nodeName (not scheduled or not started): left out")
            continue
        node = nodes.get(host)
        if node is None:
            notes.warn(where, f"its node {host} was not dumped: left out")
            continue
        try:
            addr = ipaddress.IPv4Address(ip)
        except ValueError:
            notes.warn(where, f"status.podIP {ip[:40]} is not an IPv4 address: left out")
            continue
        if ip in node.all_addresses:
            notes.warn(where, f"{ip} is an address of node {host} itself: left out")
            continue
        bridge = next((b.name for b in node.bridges.values() for a in b.addresses if addr in a.network), None)
        if bridge is None:
            cali = next((r["dev"] for r in node.routes if r.get("to") in (ip, f"{ip}/32") and "table" not in r
                         and r.get("dev") in node.routed and "via" not in r), None)
            if cali is not None and (host, cali) not in used:
                used.add((host, cali))
                routed.append((obj, node, cali))
                continue
            notes.warn(where, f"{ip} is on no bridge of node {host}, and no route `{ip}/32 dev cali...` "
                              "(Calico) leads to it: left out")
            continue
        mac = node.neigh.get(ip, ("", ""))[0] or None
        port = node.fdb.get(mac) if mac else None
        if port is not None and port in node.bridges[bridge].ports and (host, port) not in used:
            used.add((host, port))
            wired.append((obj, node, bridge, port, mac))
        else:
            waiting.append((obj, node, bridge))
    if hostnet:
        shown = ", ".join(hostnet[:5]) + (", ..." if len(hostnet) > 5 else "")
        notes.warn("", f"{len(hostnet)} hostNetwork Pods run in their node's own namespace, "
                       f"not as pods: {shown}")
    _eliminate(waiting, wired, used, notes)
    return _pods(wired, taken, wanted), _routed(routed, taken, notes)


def _routed(routed: list[tuple[dict[str, Any], ImportedNode, str]], taken: set[str],
            notes: Notes) -> Routed:
    """Calico's pods: topology nodes (the `pods:` shorthand plugs into a bridge) named as the Pod,
    which is how `--from namespace/name` finds them; eth0 holds the /32, `default via 169.254.1.1
    onlink` as Calico's CNI plugin sets it, the MAC the node's neighbour table has."""
    out = Routed()
    for obj, node, cali in sorted(routed, key=lambda w: _key(w[0])):
        ns, name = _key(obj)
        pick = name if NAME_RE.match(name) and name not in taken else f"{ns}.{name}"
        base, i = pick, 2
        while pick in taken:
            pick, i = f"{base}-{i}", i + 1
        taken.add(pick)
        if pick != name:
            notes.warn(f"Pod {ns}/{name}", f"imported as node {pick}: name it so (not {ns}/{name}) in --from")
        ip = obj["status"]["podIP"]
        eth0: dict[str, Any] = {}
        mac = node.neigh.get(ip, ("", ""))[0]
        if mac:
            eth0["mac"] = mac
        eth0["addresses"] = [f"{ip}/32"]
        if node.routed[cali].mtu != 1500:
            eth0["mtu"] = node.routed[cali].mtu
        out.nodes[pick] = {"interfaces": {"eth0": eth0},
                           "routes": [{"to": "default", "via": "169.254.1.1", "dev": "eth0", "onlink": True}]}
        out.veths.append([f"{pick}/eth0", f"{node.name}/{cali}"])
        out.keys[pick] = f"{ns}/{name}"
    return out


def _eliminate(waiting: list[tuple[dict[str, Any], ImportedNode, str]],
               wired: list[Wired],
               used: set[tuple[str, str]], notes: Notes) -> None:
    """A bridge with one Pod and one port left unmatched: they go together (the MAC is unknown)."""
    groups: dict[tuple[str, str], list[tuple[dict[str, Any], ImportedNode, str]]] = {}
    for w in waiting:
        groups.setdefault((w[1].name, w[2]), []).append(w)
    for (host, bridge), pods in groups.items():
        node = pods[0][1]
        free = [p for p in node.bridges[bridge].ports if (host, p) not in used]
        if len(pods) == 1 and len(free) == 1:
            ns, name = _key(pods[0][0])
            mac = node.neigh.get(str((pods[0][0].get("status") or {}).get("podIP")), ("", ""))[0] or None
            notes.warn(f"Pod {ns}/{name}", f"no FDB entry for its MAC: wired to {host}/{free[0]}, the only "
                                           f"port of {bridge} left{'' if mac else ' (its MAC is derived)'}")
            used.add((host, free[0]))
            wired.append((pods[0][0], node, bridge, free[0], mac))
            continue
        for obj, _, _ in pods:
            ns, name = _key(obj)
            ip = (obj.get("status") or {}).get("podIP")
            notes.warn(f"Pod {ns}/{name}", f"no neighbour entry and FDB port for {ip} on {host}/{bridge} "
                                           "(no traffic since the node last saw it?): left out")


def _pods(wired: list[Wired],
          taken: set[str], wanted: dict[int, str]) -> dict[str, dict[str, Any]]:
    """Each Pod's topology name: its pktemu.io/netns annotation if it had one, else its name if no
    other wired Pod has it, else `namespace.name`."""
    names = [_key(w[0])[1] for w in wired]
    out: dict[str, dict[str, Any]] = {}
    for obj, node, bridge, port, mac in sorted(wired, key=lambda w: _key(w[0])):
        ns, name = _key(obj)
        ann = wanted.get(id(obj))
        if ann is not None and NAME_RE.match(ann) and ann not in taken:
            pick = ann
        elif NAME_RE.match(name) and names.count(name) == 1 and name not in taken:
            pick = name
        else:
            pick = f"{ns}.{name}"
        base, i = pick, 2
        while pick in taken:
            pick, i = f"{base}-{i}", i + 1
        taken.add(pick)
        meta = obj["metadata"]
        if not isinstance(meta.get("annotations"), dict):
            meta["annotations"] = {}
        meta["annotations"][NETNS] = pick
        br = node.bridges[bridge]
        ip = ipaddress.IPv4Address(obj["status"]["podIP"])
        gw = next(a for a in br.addresses if ip in a.network)
        p = br.ports[port]
        entry: dict[str, Any] = {"node": node.name, "bridge": bridge,
                                 "host_veth": {"name": port, **({"mac": p.mac} if p.mac else {}),
                                               "hairpin": p.hairpin}}
        if mac:
            entry["mac"] = mac
        entry["address"] = f"{ip}/{gw.network.prefixlen}"
        entry["gateway"] = str(gw.ip)
        if p.mtu != 1500:
            entry["mtu"] = p.mtu
        out[pick] = entry
    return out


def manifest_objects(cluster: Cluster, notes: Notes) -> list[dict[str, Any]]:
    """Services, EndpointSlices, Endpoints and Pods as pktemu reads them; one that it cannot read is
    noted and left out. Status and managedFields noise is kept out of the file."""
    from pktemu.errors import PktemuError
    from pktemu.k8s.manifest_fields import Ctx
    from pktemu.k8s.manifests import parse_object

    out: list[dict[str, Any]] = []
    seen: set[tuple[str, str, str]] = set()
    for origin, obj in cluster.others + cluster.pods:
        status: dict[str, Any] = obj["status"] if isinstance(obj.get("status"), dict) else {}
        hostnet = isinstance(obj.get("spec"), dict) and obj["spec"].get("hostNetwork")
        if obj.get("kind") == "Pod" and (status.get("phase") in ("Succeeded", "Failed")
                                         or not status.get("podIP") or hostnet):
            continue
        o = copy.deepcopy(obj)
        meta = o.get("metadata")
        if isinstance(meta, dict):
            for k in ("managedFields", "resourceVersion", "uid", "creationTimestamp", "generation",
                      "ownerReferences"):
                meta.pop(k, None)
        ns, name = _key(o)
        key = (str(o.get("kind")), ns, name)
        try:
            parse_object(copy.deepcopy(o), Ctx(origin, 0, str(o.get("kind"))))
        except PktemuError as e:
            notes.warn("", f"{e} (object left out)")
            continue
        except Exception as e:                     # noqa: BLE001 (a malformed object is noted, never fatal)
            notes.warn(origin, f"{key[0]} {ns}/{name}: cannot be read ({type(e).__name__}): left out")
            continue
        if key in seen:
            notes.warn(origin, f"{key[0]} {ns}/{name} given twice: the first is kept")
            continue
        seen.add(key)
        out.append(o)
    return out


def supernet(nets: list[ipaddress.IPv4Network], at_most: int = 32) -> ipaddress.IPv4Network | None:
    """The smallest network holding all of `nets` (prefix at most `at_most`), or None."""
    if not nets:
        return None
    net = nets[0].supernet(new_prefix=min(at_most, nets[0].prefixlen))
    while not all(n.subnet_of(net) for n in nets):
        net = net.supernet()
    return net
