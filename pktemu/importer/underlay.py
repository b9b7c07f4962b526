"""The underlay: what joins the nodes, which no dump sees. One router, `gw`, as the kernel oracle
builds it (topologies/service-test.yaml), with one interface per node numbered with that node's
default gateway (a /32 whose peer is the node), routing each node's pod CIDR to the node.
"""
from __future__ import annotations

import ipaddress
from typing import Any

from pktemu.importer import Notes
from pktemu.importer.cluster import Cluster
from pktemu.importer.node import ImportedNode


def underlay(nodes: dict[str, ImportedNode], cluster: Cluster, notes: Notes,
             taken: set[str]) -> tuple[str, dict[str, Any], list[list[str]]] | None:
    """The router joining the nodes' uplinks: (its name, its topology node, the veths)."""
    joined = [n for n in nodes.values() if n.uplink and n.gateway and n.address]
    if not joined:
        return None
    name = "gw" if "gw" not in taken else "underlay-gw"
    taken.add(name)
    ifaces: dict[str, Any] = {}
    routes: list[dict[str, Any]] = []
    veths: list[list[str]] = []
    sysctls: dict[str, int] = {"net.ipv4.ip_forward": 1, "net.ipv4.conf.all.rp_filter": 0}
    seen_nets: set[str] = set()
    macs: set[str] = set()
    for i, n in enumerate(joined, 1):
        ifn = f"eth{i}"
        iface: dict[str, Any] = {}
        if n.gateway_mac and n.gateway_mac not in macs:     # nodes on one subnet share the gateway's MAC
            iface["mac"] = n.gateway_mac
            macs.add(n.gateway_mac)
        iface["addresses"] = [{"address": f"{n.gateway}/32", "peer": n.address}]
        if n.uplink_mtu != 1500:
            iface["mtu"] = n.uplink_mtu
        ifaces[ifn] = iface
        veths.append([f"{n.name}/{n.uplink}", f"{name}/{ifn}"])
        cidr = cluster.pod_cidr(n.name)
        nets = [cidr] if cidr else sorted({str(a.network) for b in n.bridges.values() for a in b.addresses})
        if not cidr:
            notes.warn(n.name, f"{cluster.pod_cidr_problem(n.name)}: the underlay routes its bridges' "
                               f"networks ({', '.join(nets) or 'none'}) to it")
        for net in nets:
            if net in seen_nets:
                notes.warn(n.name, f"pod CIDR {net} is another node's too: routed to the first")
                continue
            seen_nets.add(net)
            routes.append({"to": net, "via": n.address, "dev": ifn})
    for n in nodes.values():
        if n not in joined and n.uplink:
            notes.warn(n.name, "no default route on its uplink: not joined to the underlay")
    if _shared_subnet(joined):
        sysctls["net.ipv4.conf.all.proxy_arp"] = 1
        for ifn in ifaces:
            sysctls[f"net.ipv4.neigh.{ifn}.proxy_delay"] = 0
    return name, {"sysctls": sysctls, "interfaces": ifaces, "routes": routes}, veths


def _shared_subnet(joined: list[ImportedNode]) -> bool:
    """Nodes on one subnet ARP for each other (flannel's and Calico's tunnels go node to node):
    the router then answers for the other nodes by proxy ARP, as a cloud's VPC fabric does."""
    nets: list[ipaddress.IPv4Network] = []
    for n in joined:
        for a in n.uplink_addresses:
            if isinstance(a, str):
                nets.append(ipaddress.IPv4Interface(a).network)
    return any(a.overlaps(b) for i, a in enumerate(nets) for b in nets[i + 1:])
