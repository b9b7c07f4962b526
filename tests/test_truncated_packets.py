"""Packets cut short above IP, sent from Python, from a hook or from a replayed capture: each is
freed where Linux frees it, with a reason, and the run goes on (an SCTP chunk of length 0 once
made the conntrack walk loop for ever; a TCP or UDP header shorter than its ports made the drop
record, and an ICMP packet without a header made icmp_send, raise from the engine's inside).

Where: through node1 (kube-proxy's rules) conntrack finds no header it can read (INVALID), and
KUBE-FORWARD's `--ctstate INVALID -j DROP` frees it; to node1 itself, udp_rcv and tcp_v4_rcv
refuse the short header; with TTL 1 ip_forward frees it and answers time exceeded, except about
an ICMP packet whose type it cannot read (__icmp_send sends nothing then).
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import pktemu
from datapaths import ROOT

scapy = pytest.importorskip("scapy")
from scapy.layers.inet import ICMP, IP  # noqa: E402
from scapy.layers.l2 import Ether  # noqa: E402
from scapy.layers.sctp import SCTP  # noqa: E402
from scapy.packet import Raw  # noqa: E402
from scapy.utils import wrpcap  # noqa: E402

import pktemu as pk  # noqa: E402

TOPO = str(ROOT / "topologies" / "service-test.yaml")
INVALID = ("node1", "netfilter FORWARD",
           "filter KUBE-FORWARD#1 DROP: -A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP")
TTL = ("node1", "ip_forward", "TTL exceeded")
CASES = {
    "sctp chunk of length 0": (IP(dst="10.0.2.2") / SCTP(sport=1, dport=2) / Raw(b"\0\0\0\0"), INVALID),
    "tcp, 2 bytes": (IP(dst="10.0.2.2", proto=6) / Raw(b"\0\1"), INVALID),
    "udp, 2 bytes": (IP(dst="10.0.2.2", proto=17) / Raw(b"\0\1"), INVALID),
    "udp, none": (IP(dst="10.0.2.2", proto=17), INVALID),
    "sctp, 2 bytes": (IP(dst="10.0.2.2", proto=132) / Raw(b"\0\1"), INVALID),
    "tcp to the ClusterIP, 10 bytes": (IP(dst="10.3.241.152", proto=6) / Raw(b"\0\1\0\x50" + b"\0" * 6),
                                       INVALID),
    "icmp, 2 bytes": (IP(dst="10.0.2.2", proto=1) / Raw(b"\x08\0"), INVALID),
    "udp to node1, 2 bytes": (IP(dst="10.0.1.1", proto=17) / Raw(b"\0\1"),
                              ("node1", "udp_rcv", "short UDP header")),
    "tcp to node1, 2 bytes": (IP(dst="10.0.1.1", proto=6) / Raw(b"\0\1"),
                              ("node1", "tcp_v4_rcv", "bad TCP header or checksum")),
    "tcp, none, TTL 1": (IP(dst="10.0.2.2", proto=6, ttl=1), TTL),
    "icmp, none, TTL 1": (IP(dst="10.0.2.2", proto=1, ttl=1), TTL),
}


def _time_exceeded(net: pk.Network) -> int:
    return sum(1 for p in net.sniff("client-eth0") if ICMP in p and p[ICMP].type == 11)


@pytest.mark.parametrize("name", list(CASES))
def test_a_short_packet_sent_from_python_is_dropped_where_linux_drops_it(name: str) -> None:
    packet, where = CASES[name]
    net = pk.Network.load(TOPO)
    net.send("client", packet)
    net.run(duration=0.1)
    assert [(d.node, d.where, d.reason) for d in net.engine.drops] == [where]
    # time exceeded answers a short TCP header, but not an ICMP packet without a type
    assert _time_exceeded(net) == (1 if name == "tcp, none, TTL 1" else 0)


def test_a_hook_that_cuts_the_transport_header_gets_a_drop() -> None:
    net = pk.Network.load(TOPO)

    @net.hook("node1", "PREROUTING")
    def cut(p: IP) -> IP:
        return IP(bytes(p)[:22])
    net.send("client", IP(dst="10.0.2.2") / ICMP())
    net.send("client", IP(dst="10.0.2.2", proto=6) / Raw(b"\0\1\0\2" + b"\0" * 16))
    net.run(duration=0.1)
    # the echo request was tracked at node1 before the hook (priority 0) cut it, so node2's
    # conntrack is the first to find it short; the TCP segment (flags 0) was INVALID at node1
    assert [(d.node, d.summary) for d in net.engine.drops] == [
        ("node1", "<Frame 10.0.1.2 > 10.0.2.2 proto 6 len 36>"),
        ("node2", "<Frame 10.0.1.2 > 10.0.2.2 proto 1 len 36>")]
    assert {d.reason for d in net.engine.drops} == {INVALID[2]}


def test_replaying_a_capture_of_short_packets_ends_normally(tmp_path: Path) -> None:
    """Replay refuses a TCP, UDP or ICMP header cut short when it reads the capture; the SCTP
    packets (one with a chunk of length 0) go through and node1's conntrack finds them INVALID."""
    pcap = tmp_path / "short.pcap"
    mac = dict(src="0a:58:0a:00:01:02", dst="06:00:0a:00:01:02")
    wrpcap(str(pcap), [Ether(**mac) / p for p, _where in CASES.values()])
    p = pktemu("replay", str(pcap), "--topology", TOPO, "--inject", "node1/veth-client",
               "--out", str(tmp_path / "out"), "--json", check=False, timeout=120)
    assert p.returncode == 0, p.stderr
    stats = json.loads(p.stdout)
    assert sum(stats["refused"].values()) == len(CASES) - 2
    assert stats["dropped"] == {f"node1 {INVALID[1]}: {INVALID[2]}": 2}
    seen = {}
    pcaps = tmp_path / "out" / "replay-short" / "pcap"
    for point in ("node1-veth-client", "node1-eth0"):
        out = subprocess.run(["tshark", "-r", str(pcaps / f"{point}.pcap"),
                              "-Y", "ip.proto == 132"], capture_output=True, text=True, check=True)
        seen[point] = len(out.stdout.splitlines())
    assert seen == {"node1-veth-client": 2, "node1-eth0": 0}
