"""The namespace lab of the flannel VXLAN kernel tests (tests/test_kernel_vxlan.py,
tests/test_kernel_vxlan_service.py): a topology's nodes, pods, cni0 bridges and flannel.1 devices
built as flanneld builds them, tcpdump on each capture point, and the fields of a captured frame
the tests compare with pktemu's."""
from __future__ import annotations

import time
from typing import Any

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.layers.vxlan import VXLAN

from netns_lab import NetnsLab


class Lab(NetnsLab):
    """A flannel-vxlan topology's nodes and pods (`t`, the topology as a dict) as namespaces
    <prefix><hex>-<name>."""

    def __init__(self, t: dict[str, Any], prefix: str) -> None:
        super().__init__([*t["nodes"], *t["pods"]], prefix)
        self.t = t

    def build(self) -> None:
        self.add_namespaces()
        self.veth("node1", "eth0", "node2", "eth0")
        nodes = self.t["nodes"]
        for name, node in nodes.items():
            for k, v in node.get("sysctls", {}).items():
                self.x(name, "sysctl", "-qw", f"{k}={v}")
            eth0 = node["interfaces"]["eth0"]
            self.x(name, "ip", "link", "set", "eth0", "address", eth0["mac"])
            self.x(name, "ip", "addr", "add", eth0["addresses"][0], "dev", "eth0")
            self.x(name, "ip", "link", "set", "eth0", "up")
            for br, b in node["bridges"].items():
                self.x(name, "ip", "link", "add", br, "address", b["mac"], "type", "bridge")
                self.x(name, "ip", "addr", "add", b["addresses"][0], "dev", br)
                self.x(name, "ip", "link", "set", br, "up")
        for pod, p in self.t["pods"].items():
            hv, host = p["host_veth"], p["node"]
            self.veth(pod, "eth0", host, hv["name"])
            for n, dev, mac in ((pod, "eth0", p["mac"]), (host, hv["name"], hv["mac"])):
                self.x(n, "ip", "link", "set", dev, "address", mac, "mtu", str(p["mtu"]))
                self.x(n, "ip", "link", "set", dev, "up")
            self.x(host, "ip", "link", "set", hv["name"], "master", p["bridge"])
            self.x(pod, "ip", "addr", "add", p["address"], "dev", "eth0")
            gw = nodes[host]["bridges"][p["bridge"]]["addresses"][0].split("/")[0]
            self.x(pod, "ip", "route", "add", "default", "via", gw)
        for name, node in nodes.items():
            v = node["interfaces"]["flannel.1"]
            self.x(name, "ip", "link", "add", "flannel.1", "address", v["mac"], "type", "vxlan", "id",
                   str(v["vni"]), "local", v["local"], "dev", v["dev"], "dstport", str(v["dstport"]),
                   "nolearning")
            self.x(name, "ip", "addr", "add", v["addresses"][0], "dev", "flannel.1")
            self.x(name, "ip", "link", "set", "flannel.1", "up")
            for e in v["fdb"]:
                self.x(name, "bridge", "fdb", "append", e["mac"], "dev", "flannel.1", "dst", e["dst"])
            for e in v["neighbours"]:
                self.x(name, "ip", "neigh", "add", e["ip"], "lladdr", e["lladdr"], "dev", "flannel.1",
                       "nud", "permanent")
            for r in node["routes"]:
                self.x(name, "ip", "route", "add", r["to"], "via", r["via"], "dev", r["dev"], "onlink")
        time.sleep(0.3)


def vxlan_outer(p: Any) -> tuple[tuple[Any, ...], Any]:
    """The compared fields of a VXLAN frame's outer headers (none for a plain frame), and the
    frame inside: MACs, addresses, TTL, DF, TOS, protocol, UDP destination port, a non-zero UDP
    checksum, a source port in the kernel's range (never its value: a per-boot secret), VNI."""
    if not (UDP in p and p[UDP].dport == 8472):
        return (), p
    v = VXLAN(bytes(p[UDP].payload))
    return ((p[Ether].src, p[Ether].dst, p[IP].src, p[IP].dst, p[IP].ttl, p[IP].flags.DF, p[IP].tos,
             p[IP].proto, p[UDP].dport, p[UDP].chksum != 0, 32768 <= p[UDP].sport < 61000,
             v.flags, v.vni), v[Ether])


def inner(p: Any) -> tuple[Any, ...]:
    """The compared fields of the (inner) frame: MACs, addresses, TTL, DF, protocol."""
    return (p[Ether].src, p[Ether].dst, p[IP].src, p[IP].dst, p[IP].ttl, p[IP].flags.DF, p[IP].proto)


def hop(p: Any) -> tuple[Any, ...] | None:
    """What is compared of one captured frame: outer and inner headers, or None to skip it."""
    if IP not in p:
        return None
    out, p = vxlan_outer(p)
    if ICMP in p and p[ICMP].type in (0, 8) and p[ICMP].id == 0x5045:
        what: tuple[Any, ...] = ("icmp", p[ICMP].type, p[ICMP].seq, len(p[ICMP].payload))
    elif TCP in p and p[TCP].flags in ("S", "SA") and 8080 in (p[TCP].sport, p[TCP].dport):
        what = ("tcp", str(p[TCP].flags), p[TCP].sport, p[TCP].dport)
    else:
        return None
    return out + inner(p) + what
