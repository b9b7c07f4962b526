"""Assembling the imported topology and writing it with its side files.

The topology (`-o FILE.yaml`), each node's rules (`<node>.iptables`, as dumped) and the
manifest (`<stem>-k8s.yaml`) are written into a temporary folder beside the output, loaded
there as `pktemu run` would load them, then renamed into place one by one, the topology last:
an interrupted or failed import leaves the previous files, never a topology without its rules.
"""
from __future__ import annotations

import ipaddress
import os
import secrets
from dataclasses import dataclass, field
from typing import Any

import yaml

from pktemu.errors import PktemuError
from pktemu.importer import Notes
from pktemu.importer.cluster import Cluster, manifest_objects, namer, split, supernet, wire_pods
from pktemu.importer.fields import SHAPE_ERRORS
from pktemu.importer.node import ImportedNode, Vxlan, read_node, sysctls
from pktemu.importer.redact import Redactor
from pktemu.importer.sources import read_sources
from pktemu.importer.underlay import underlay


@dataclass
class Result:
    topology: dict[str, Any]
    files: dict[str, str] = field(default_factory=dict)     # side file name -> text
    summary: str = ""


def build(paths: list[str], out: str, notes: Notes, redact_seed: int | None = None,
          redact: bool = False) -> Result:
    src = read_sources(paths, notes)
    cluster = split(src.objects, notes)
    name_of = namer(cluster, src.nodes)
    nodes: dict[str, ImportedNode] = {}
    for d in src.nodes:
        try:
            n = read_node(d, notes, name_of)
        except SHAPE_ERRORS:             # a field of a shape no item-level check foresaw
            notes.warn(d.origin, "a file of the dump is not as `pktemu collect` writes it: node left out")
            continue
        if n is not None:
            nodes[n.name] = n
    if not nodes:
        why = "no node dump (pktemu collect) among the DUMPs" if not src.nodes else \
            "no node dump could be read"
        raise PktemuError(f"nothing runnable to import: {why}")
    taken = set(nodes)
    pods, routed = wire_pods(nodes, cluster, notes, taken)
    if not cluster.pods:
        notes.warn("", "no Pod objects given (pktemu collect --cluster, or kubectl get pods -A -o yaml): "
                       "the topology has nodes only")
    und = underlay(nodes, cluster, notes, taken)
    joined = {v[0].split("/")[0] for v in und[2]} if und else set()
    stem = os.path.splitext(os.path.basename(out))[0]
    topo: dict[str, Any] = {"name": stem, "seed": 1, "nodes": {}}
    rules: dict[str, str] = {}
    nft: dict[str, str] = {}
    for n in nodes.values():
        topo["nodes"][n.name] = _node(n, n.name in joined, pods, routed.veths, notes)
        if n.iptables is not None:
            rules[n.name] = n.iptables
            topo["nodes"][n.name]["iptables"] = f"{n.name}.iptables"
        if n.nftables is not None:
            nft[n.name] = n.nftables
            topo["nodes"][n.name]["nftables"] = f"{n.name}.nft"
    veths: list[list[str]] = []
    if und:
        gw_name, gw, veths = und
        topo["nodes"][gw_name] = gw
    topo["nodes"].update(routed.nodes)
    topo["veths"] = veths + routed.veths
    if pods:
        topo["pods"] = pods
    objects = manifest_objects(cluster, notes)
    manifest = f"{stem}-k8s.yaml"
    if objects:
        topo["kubernetes"] = _kubernetes(objects, cluster, nodes, manifest)
    pod_names = {p: _pod_key(objects, p) for p in pods}
    files: dict[str, str] = {}
    if redact:
        red = Redactor(redact_seed if redact_seed is not None else secrets.randbits(32))
        for name in sorted(nodes):
            red.node(name)
        names = {p: red.pod(k) for p, k in pod_names.items()}
        for p, k in routed.keys.items():      # Calico's pods are nodes named as their Pods
            red.nodes[p] = red.pod(k)
        topo = red.topology(topo, names)
        objects = [red.object(o, names) for o in objects]
        rules = {red.nodes[name]: red.rules(t) for name, t in rules.items()}
        nft = {red.nodes[name]: red.rules(t) for name, t in nft.items()}
    for name, text in rules.items():
        files[f"{name}.iptables"] = text
    for name, text in nft.items():
        files[f"{name}.nft"] = text
    if objects:
        files[manifest] = "# Kubernetes objects imported by pktemu import (kubernetes.manifests)\n" + \
            yaml.safe_dump_all(objects, sort_keys=False, width=1_000_000)
    services = sum(1 for o in objects if o.get("kind") == "Service")
    summary = ", ".join(f"{n} {w}{'' if n == 1 else 's'}" for n, w in
                        ((len(nodes), "node"), (len(pods), "pod"), (services, "Service")))
    return Result(topo, files, summary)


def _pod_key(objects: list[dict[str, Any]], pod: str) -> str:
    for o in objects:
        meta = o.get("metadata") or {}
        if o.get("kind") == "Pod" and (meta.get("annotations") or {}).get("pktemu.io/netns") == pod:
            return f"{meta.get('namespace') or 'default'}/{meta.get('name')}"
    return pod


def _node(n: ImportedNode, joined: bool, pods: dict[str, dict[str, Any]], routed_veths: list[list[str]],
          notes: Notes) -> dict[str, Any]:
    veths = {p["host_veth"]["name"] for p in pods.values() if p["node"] == n.name}
    spare = sorted(port for b in n.bridges.values() for port in b.ports if port not in veths)
    if spare:
        notes.warn(n.name, f"{len(spare)} bridge ports with no Pod wired to them left out: "
                           + ", ".join(spare[:6]) + (", ..." if len(spare) > 6 else ""))
    cali = {v[1].split("/", 1)[1] for v in routed_veths if v[1].startswith(f"{n.name}/")}
    spare_cali = sorted(set(n.routed) - cali)
    if spare_cali:
        notes.warn(n.name, f"{len(spare_cali)} cali veths with no Pod routed to them left out: "
                           + ", ".join(spare_cali[:6]) + (", ..." if len(spare_cali) > 6 else ""))
    devices = set(n.bridges) | set(n.vxlans) | cali | ({"tunl0"} if n.tunl else set()) | veths \
        | ({n.uplink} if n.uplink and joined else set())
    out: dict[str, Any] = {}
    sc = sysctls(n, devices, notes)
    if sc:
        out["sysctls"] = sc
    if n.uplink and joined:
        iface: dict[str, Any] = {}
        if n.uplink_mac:
            iface["mac"] = n.uplink_mac
        iface["addresses"] = n.uplink_addresses
        if n.uplink_mtu != 1500:
            iface["mtu"] = n.uplink_mtu
        out["interfaces"] = {n.uplink: iface}
    for v in n.vxlans.values():
        out.setdefault("interfaces", {})[v.name] = _vxlan(v, joined)
    if n.tunl is not None:
        out.setdefault("interfaces", {})["tunl0"] = n.tunl
    for c in sorted(set(n.routed) & cali):
        port = n.routed[c]
        out.setdefault("interfaces", {})[c] = {**({"mac": port.mac} if port.mac else {}),
                                               **({"mtu": port.mtu} if port.mtu != 1500 else {})}
    bridges: dict[str, Any] = {}
    for b in n.bridges.values():
        entry: dict[str, Any] = {}
        if b.mac:
            entry["mac"] = b.mac
        entry["addresses"] = [str(a) for a in b.addresses]
        entry["stp"] = b.stp
        if b.ageing_s is not None and b.ageing_s != 300:
            entry["ageing_time"] = f"{b.ageing_s}s"
        bridges[b.name] = entry
    if bridges:
        out["bridges"] = bridges
    routes = [r for r in n.routes if (joined or r.get("dev") != n.uplink) and r.get("dev") not in spare_cali]
    if len(routes) < len(n.routes):
        notes.warn(n.name, f"{len(n.routes) - len(routes)} routes through the unjoined uplink or unused cali "
                           "veths left out")
    if routes:
        out["routes"] = routes
    if n.ip_rules:
        out["ip_rules"] = n.ip_rules
    return out


def _vxlan(v: Vxlan, joined: bool) -> dict[str, Any]:
    """flannel.1 as `type: vxlan` (docs/topology.md), with flanneld's FDB and neighbour entries."""
    out: dict[str, Any] = {"type": "vxlan"}
    if v.mac:
        out["mac"] = v.mac
    out["addresses"] = v.addresses
    out["mtu"] = v.mtu
    out["vni"] = v.vni
    if v.local:
        out["local"] = v.local
    if v.dev and joined:
        out["dev"] = v.dev
    if v.port is not None:
        out["dstport"] = v.port
    out["learning"] = v.learning
    if not v.udpcsum:
        out["udpcsum"] = False
    if v.ttl is not None:
        out["ttl"] = v.ttl
    out["fdb"] = v.fdb
    out["neighbours"] = v.neighbours
    return out


def _kubernetes(objects: list[dict[str, Any]], cluster: Cluster, nodes: dict[str, ImportedNode],
                manifest: str) -> dict[str, Any]:
    ips = []
    for o in objects:
        ip = (o.get("spec") or {}).get("clusterIP") if o.get("kind") == "Service" else None
        if isinstance(ip, str) and ip not in ("None", ""):
            ips.append(ipaddress.IPv4Network(ip))
    svc = supernet(ips, 20) if ips else None
    cidrs: dict[str, str] = {}
    for n in nodes:
        c = cluster.pod_cidr(n)
        if c:
            try:
                cidrs[n] = str(ipaddress.IPv4Network(c))
            except ValueError:
                pass
    cluster_net = supernet([ipaddress.IPv4Network(c) for c in cidrs.values()])
    k: dict[str, Any] = {}
    if svc is not None:
        k["service_cidr"] = str(svc)
    k["cluster_cidr"] = str(cluster_net) if cluster_net else None
    if cidrs:
        k["pod_cidrs"] = cidrs
    k["manifests"] = [manifest]
    return k


def write(result: Result, out: str, notes: Notes) -> None:
    """Every file into a temporary folder beside `out`, checked by loading it, then renamed in."""
    from pktemu.io.atomic import forget, make_temp_dir, remove_path
    from pktemu.io.topofile import load_topology

    folder = os.path.dirname(os.path.abspath(out))
    base = os.path.basename(out)
    try:
        work = make_temp_dir(folder, base)
    except OSError as e:
        raise PktemuError(f"{out}: cannot write to folder {folder} ({e.strerror or e})") from None
    try:
        header = ("# Imported by `pktemu import`: the cluster's own names, addresses and rules.\n"
                  f"# {len(notes.lines)} warnings were reported on import.\n")
        text = header + yaml.safe_dump(result.topology, sort_keys=False, width=1_000_000)
        for name, data in [*result.files.items(), (base, text)]:
            with open(os.path.join(work, name), "w", encoding="utf-8") as f:
                f.write(data)
        try:
            load_topology(os.path.join(work, base))
        except PktemuError as e:
            msg = str(e).replace(work + os.sep, "")
            raise PktemuError(f"the imported topology does not load: {msg}") from None
        from pktemu.interrupt import shielded

        with shielded():
            for name in [*result.files, base]:
                os.replace(os.path.join(work, name), os.path.join(folder, name))
    except OSError as e:
        raise PktemuError(f"{out}: cannot write: {e.strerror or e}") from None
    finally:
        remove_path(work)
        forget(work)
