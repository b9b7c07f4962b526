"""IPv4 fragments through a router that tracks connections, in order and out of order, on the kernel
of the machine running the tests (needs root, ip, iptables-restore, tcpdump) and in the emulator,
which must agree (pktemu/netfilter/defrag.py).

a (10.1.0.2) -- r -- b (10.2.0.2). a sends a 2,028-byte UDP datagram to b's closed port 9 as three
fragments (820, 820 and 428 bytes), once in order and once last first. Linux 6.18: r's conntrack
defragments first (nf_defrag_ipv4), so its FORWARD rules count two 2,028-byte datagrams, and each
leaves again in pieces no larger than its largest fragment, in order: b sees the same three
fragments both times and answers a port unreachable each time. pktemu used to let each fragment
walk the rules and dropped the out-of-order ones as INVALID.
Namespaces fg<hex>-*, unique per run, are always deleted; every process started here is stopped
by its PID.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from netns_lab import NetnsLab

TOOLS = ("ip", "iptables-restore", "tcpdump")
pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or any(shutil.which(t) is None for t in TOOLS),
    reason="builds network namespaces: needs root and " + ", ".join(TOOLS))

RULES = """\
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -m conntrack --ctstate INVALID -j DROP
-A FORWARD -p udp -m udp --dport 9
COMMIT
"""
SEND = r'''
import socket, sys
from scapy.layers.inet import IP, UDP, fragment
from scapy.packet import Raw
p = IP(src="10.1.0.2", dst="10.2.0.2", id=99) / UDP(sport=4000, dport=9) / Raw(b"x" * 2000)
frags = fragment(p, fragsize=800)
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
for f in (frags if sys.argv[1] == "in order" else frags[::-1]):
    s.sendto(bytes(f), ("10.2.0.2", 0))
'''
ORDERS = ("in order", "last first")


def _datagram() -> list[Any]:
    from scapy.layers.inet import IP, UDP, fragment
    from scapy.packet import Raw
    p = IP(src="10.1.0.2", dst="10.2.0.2", id=99) / UDP(sport=4000, dport=9) / Raw(b"x" * 2000)
    return list(fragment(p, fragsize=800))


def _facts(frames: list[Any], save: str) -> dict[str, Any]:
    from scapy.layers.inet import ICMP, IP
    seen = [(p[IP].src, p[IP].id if p[IP].src == "10.1.0.2" else "id", int(p[IP].flags), p[IP].frag,
             p[IP].len, p[IP].ttl, p[ICMP].type if ICMP in p else None) for p in frames if IP in p]
    counts = [" ".join(ln.split(" -A ")) for ln in save.splitlines() if " -A FORWARD" in ln]
    return {"b received": seen, "FORWARD": counts}


def kernel(tmp: Path) -> dict[str, Any]:
    from scapy.layers.inet import IP  # noqa: F401 (rdpcap dissects with the layers imported)
    from scapy.layers.l2 import Ether  # noqa: F401
    from scapy.utils import rdpcap
    lab = NetnsLab(["a", "r", "b"], "fg")
    try:
        try:
            lab.add_namespaces()
            lab.veth("a", "eth0", "r", "r1")
            lab.veth("r", "r2", "b", "eth0")
        except (RuntimeError, OSError) as e:
            pytest.skip(f"cannot build namespaces here: {e}")
        for n, dev, addr in (("a", "eth0", "10.1.0.2/24"), ("r", "r1", "10.1.0.1/24"),
                             ("r", "r2", "10.2.0.1/24"), ("b", "eth0", "10.2.0.2/24")):
            lab.x(n, "ip", "addr", "add", addr, "dev", dev)
            lab.x(n, "ip", "link", "set", dev, "up")
        lab.x("a", "ip", "route", "add", "default", "via", "10.1.0.1")
        lab.x("b", "ip", "route", "add", "default", "via", "10.2.0.1")
        lab.x("r", "sysctl", "-qw", "net.ipv4.ip_forward=1")
        subprocess.run(["ip", "netns", "exec", lab.ns["r"], "iptables-restore"], input=RULES, text=True,
                       check=True)
        caps = lab.capture(tmp, ["b-eth0"])
        for order in ORDERS:
            lab.x("a", "python3", "-c", SEND, order)
            time.sleep(0.3)
        save = lab.x("r", "iptables-save", "-c")
        NetnsLab.stop(caps)
    finally:
        lab.close()
    return _facts(list(rdpcap(str(tmp / "b-eth0.pcap"))), save)


def emulated(tmp: Path) -> dict[str, Any]:
    import pktemu
    (tmp / "r.iptables").write_text(RULES)
    topo = tmp / "frag.yaml"
    topo.write_text("""\
name: frag
seed: 1
nodes:
  a:
    interfaces: {eth0: {addresses: [10.1.0.2/24]}}
    routes: [{to: default, via: 10.1.0.1}]
  r:
    sysctls: {net.ipv4.ip_forward: 1}
    interfaces: {r1: {addresses: [10.1.0.1/24]}, r2: {addresses: [10.2.0.1/24]}}
    iptables: r.iptables
  b:
    interfaces: {eth0: {addresses: [10.2.0.2/24]}}
    routes: [{to: default, via: 10.2.0.1}]
veths: [[a/eth0, r/r1], [r/r2, b/eth0]]
""")
    net = pktemu.Network.load(str(topo))
    frags = _datagram()
    for order in ORDERS:
        net.send("a", frags if order == "in order" else frags[::-1])
        net.run(duration=0.3)
    return _facts(list(net.sniff("b-eth0")), net.iptables_save("r"))


def test_fragments_are_whole_for_the_rules_and_leave_in_order(tmp_path: Path) -> None:
    pytest.importorskip("scapy")
    (tmp_path / "k").mkdir()
    found = kernel(tmp_path / "k")
    datagram = [("10.1.0.2", 99, 1, 0, 820, 63, None), ("10.1.0.2", 99, 1, 100, 820, 63, None),
                ("10.1.0.2", 99, 0, 200, 428, 63, None), ("10.2.0.2", "id", 0, 0, 576, 64, 3)]
    assert found == {"b received": datagram * 2,
                     "FORWARD": ["[0:0] FORWARD -m conntrack --ctstate INVALID -j DROP",
                                 "[2:4056] FORWARD -p udp -m udp --dport 9"]}
    assert emulated(tmp_path) == found
