"""The real inputs the fuzz suite mutates: the shipped topologies, manifests and rules file, and captures.

Topology seeds are read with every relative path they hold (`extends`, `iptables`, `manifests`)
made absolute, so that a mutated copy written anywhere still finds the files it names. Capture
seeds are two small files written here with Scapy (a pcap and a pcapng: ARP, a TCP session, DNS,
ping, an 802.1Q frame), plus the test captures in tests/data/captures.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from .runner import ROOT

TOPOLOGIES = ROOT / "topologies"
TOPOLOGY_SEEDS = [TOPOLOGIES / "service-test.yaml", TOPOLOGIES / "service-test-k8s.yaml",
                  TOPOLOGIES / "pod-to-pod.yaml", TOPOLOGIES / "seed-story.yaml",
                  ROOT / "tests" / "data" / "lan.yaml"]
MANIFEST_SEEDS = {TOPOLOGIES / "k8s" / "service-test.yaml": TOPOLOGIES / "service-test-k8s.yaml",
                  TOPOLOGIES / "k8s" / "service-test-pods.yaml": TOPOLOGIES / "service-test-k8s.yaml",
                  TOPOLOGIES / "k8s" / "seed-story.yaml": TOPOLOGIES / "seed-story.yaml"}
RULES_SEED = TOPOLOGIES / "kube-proxy-rules.iptables"
TEST_CAPTURES = ROOT / "tests" / "data" / "captures"
# the client and server of the Scapy-made seeds, mapped onto service-test's client pod and Service
SEED_MAPS = ["192.168.1.7=10.0.1.2", "192.168.1.1=10.3.241.152"]
CAPTURE_MAPS = {"http_get_session": ["141.142.228.5=10.0.1.2", "192.150.187.43=10.3.241.152"]}


def absolute(doc: Any, base: Path) -> Any:
    """A topology document with its file references made absolute against `base` (its folder)."""
    if not isinstance(doc, dict):
        return doc
    if isinstance(doc.get("extends"), str):
        doc["extends"] = str(base / doc["extends"])
    for node in (doc.get("nodes") or {}).values():
        if isinstance(node, dict) and isinstance(node.get("iptables"), str):
            node["iptables"] = str(base / node["iptables"])
    k8s = doc.get("kubernetes")
    if isinstance(k8s, dict) and isinstance(k8s.get("manifests"), list):
        k8s["manifests"] = [str(base / m) for m in k8s["manifests"]]
    return doc


def topology_doc(path: Path) -> Any:
    return absolute(yaml.safe_load(path.read_text()), path.parent)


def topology_text(path: Path) -> bytes:
    """The seed's text with its relative file references made absolute (comments and layout kept)."""
    text = path.read_text()
    base = str(path.parent)
    out = []
    for line in text.split("\n"):
        s = line.strip()
        for key in ("extends: ", "iptables: "):
            if s.startswith(key):
                line = line.replace(key, key + base + os.sep, 1)
        if s.startswith("manifests: ["):
            line = line.replace("[", "[" + base + os.sep, 1).replace(", ", ", " + base + os.sep)
        out.append(line)
    return "\n".join(out).encode()


def with_manifests(topology: Path, manifests: list[str]) -> dict[str, Any]:
    """`topology`, its `kubernetes.manifests` replaced by `manifests` (absolute paths)."""
    doc = topology_doc(topology)
    doc["kubernetes"]["manifests"] = manifests
    return doc


def with_rules(rules: str) -> dict[str, Any]:
    """service-test.yaml with node1's rules read from `rules` (node2 keeps the shipped file)."""
    doc = topology_doc(TOPOLOGIES / "service-test.yaml")
    doc["nodes"]["node1"]["iptables"] = rules
    return doc


def make_captures(folder: Path) -> list[Path]:
    """A small pcap and pcapng of a client 192.168.1.7 talking to 192.168.1.1 (and tests/data/captures)."""
    from scapy.layers.dns import DNS, DNSQR
    from scapy.layers.inet import ICMP, IP, TCP, UDP
    from scapy.layers.l2 import ARP, Dot1Q, Ether
    from scapy.packet import Raw
    from scapy.utils import PcapNgWriter, wrpcap

    c, s = "192.168.1.7", "192.168.1.1"
    cm, sm = "02:00:00:00:00:07", "02:00:00:00:00:01"

    def eth(src: str, dst: str) -> Any:
        return Ether(src=src, dst=dst)

    pkts = [
        eth(cm, "ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=cm, psrc=c, pdst=s),
        eth(sm, cm) / ARP(op=2, hwsrc=sm, psrc=s, hwdst=cm, pdst=c),
        eth(cm, sm) / IP(src=c, dst=s) / TCP(sport=40123, dport=80, flags="S", seq=1000),
        eth(sm, cm) / IP(src=s, dst=c) / TCP(sport=80, dport=40123, flags="SA", seq=5000, ack=1001),
        eth(cm, sm) / IP(src=c, dst=s) / TCP(sport=40123, dport=80, flags="A", seq=1001, ack=5001),
        eth(cm, sm) / IP(src=c, dst=s) / TCP(sport=40123, dport=80, flags="PA", seq=1001, ack=5001)
        / Raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        eth(sm, cm) / IP(src=s, dst=c) / TCP(sport=80, dport=40123, flags="PA", seq=5001, ack=1028)
        / Raw(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
        eth(cm, sm) / IP(src=c, dst=s) / TCP(sport=40123, dport=80, flags="FA", seq=1028, ack=5041),
        eth(sm, cm) / IP(src=s, dst=c) / TCP(sport=80, dport=40123, flags="FA", seq=5041, ack=1029),
        eth(cm, sm) / IP(src=c, dst=s) / TCP(sport=40123, dport=80, flags="A", seq=1029, ack=5042),
        eth(cm, sm) / IP(src=c, dst=s) / UDP(sport=40053, dport=53)
        / DNS(id=7, qd=DNSQR(qname="service-test")),
        eth(cm, sm) / IP(src=c, dst=s) / ICMP(type=8, id=9, seq=1) / Raw(b"x" * 32),
        eth(cm, sm) / Dot1Q(vlan=5) / IP(src=c, dst=s) / ICMP(type=8, id=9, seq=2),
    ]
    for i, p in enumerate(pkts):
        p.time = 1_700_000_000 + i * 0.01
    folder.mkdir(parents=True, exist_ok=True)
    pcap, pcapng = folder / "seed.pcap", folder / "seed.pcapng"
    wrpcap(str(pcap), pkts)
    with PcapNgWriter(str(pcapng)) as w:
        for p in pkts:
            w.write(p)
    real = sorted(TEST_CAPTURES.glob("*.pcap*"))
    return [pcap, pcapng, *real]


def capture_maps(capture: Path) -> list[str]:
    """The --map options that put a seed capture's client and server onto service-test's."""
    if capture.stem.startswith("seed"):
        return SEED_MAPS
    return CAPTURE_MAPS.get(capture.stem, [])
