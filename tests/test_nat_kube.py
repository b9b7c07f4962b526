"""Conntrack/NAT with the real rules engine and the reference kube-proxy rules, against the kernel
oracle's node1 results: the `conntrack -L` files byte for byte and the rule packet counters."""
from __future__ import annotations

import re
from typing import Any

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether

from pktemu.net.frame import Frame, int2ip, ip2int
from pktemu.netfilter.core import FORWARD, NF_ACCEPT, NF_DROP, POSTROUTING, PREROUTING, HookState
from pktemu.netfilter.hooks import Netfilter
from pktemu.netfilter.xtables import load_rules, save_rules
from pktemu.sim import MS, Simulator

import datapaths

REF = datapaths.ORACLE_REF
pytestmark = pytest.mark.skipif(not REF.is_dir(), reason="kernel oracle reference not present")

CLIENT = "10.0.1.2"
OUT = ((PREROUTING, "cbr0", None), (FORWARD, "cbr0", "eth0"), (POSTROUTING, None, "eth0"))
BACK = ((PREROUTING, "eth0", None), (FORWARD, "eth0", "cbr0"), (POSTROUTING, None, "cbr0"))
BRIDGED = ((PREROUTING, "cbr0", None), (FORWARD, "cbr0", "cbr0"), (POSTROUTING, None, "cbr0"))
TS = [("NOP", None), ("NOP", None), ("Timestamp", (1, 1))]
SYN_OPTS = [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (1, 0)), ("NOP", None), ("WScale", 7)]


class Node1:
    """node1 as netfilter sees it: cbr0 10.0.1.1, eth0 10.100.0.11."""

    name = "node1"
    local = {ip2int("10.0.1.1"), ip2int("10.100.0.11")}

    def __init__(self) -> None:
        self.sim = Simulator(seed=1)
        self.rejects: list[tuple[Frame, str]] = []
        self.sysctls: dict[str, int] = {}      # the kernel's defaults

    def is_local(self, addr: int) -> bool:
        return addr in self.local

    def addr_type(self, addr: int) -> str:
        return "LOCAL" if addr in self.local else "UNICAST"

    def masquerade_source(self, out_dev: str, daddr: int) -> int | None:
        return ip2int("10.0.1.1" if out_dev == "cbr0" else "10.100.0.11")

    def send_reject(self, frame: Frame, state: HookState, reject_with: str) -> None:
        self.rejects.append((frame, reject_with))

    def rng(self, name: str) -> Any:
        return self.sim.rng(f"node1:{name}")

    def now(self) -> int:
        return self.sim.now


def setup() -> tuple[Node1, Netfilter, Any]:
    text = (REF / "rules" / "kube-proxy-rules.iptables").read_text()
    rs = load_rules(text, "kube-proxy-rules.iptables")
    node = Node1()
    return node, Netfilter(node, rs), rs


def through(nf: Netfilter, f: Frame, path: tuple[tuple[str, str | None, str | None], ...]) -> int:
    for hook, i, o in path:
        v = nf.hook(hook, f, i, o)
        if v != NF_ACCEPT:
            return v
    return NF_ACCEPT


def seg(src: str, sport: int, dst: str, dport: int, flags: str, seq: int, ack: int,
        data: bytes = b"") -> Frame:
    opts = SYN_OPTS if "S" in flags else TS
    return Frame(bytes(Ether() / IP(src=src, dst=dst, flags="DF")
                       / TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack, options=opts) / data))


def tcp_session(node: Node1, nf: Netfilter, client_dst: tuple[str, int], server: tuple[str, int],
                server_sees_client: tuple[str, int], out: Any, back: Any, t: int) -> int:
    """The reference exchange; asserts both ends see the addresses the kernel showed."""
    c, s = 1000, 5000
    script = [(True, "S", c, 0, 0), (False, "SA", s, c + 1, 0), (True, "A", c + 1, s + 1, 0),
              (True, "PA", c + 1, s + 1, 99), (False, "A", s + 1, c + 100, 0),
              (False, "PA", s + 1, c + 100, 115), (True, "A", c + 100, s + 116, 0),
              (False, "FA", s + 116, c + 100, 0), (True, "FA", c + 100, s + 117, 0),
              (False, "A", s + 117, c + 101, 0)]
    for from_client, flags, sq, ak, n in script:
        t += MS
        node.sim.run(until=t)
        if from_client:
            f = seg(CLIENT, 40000, *client_dst, flags, sq, ak, b"g" * n)
            assert through(nf, f, out) == NF_ACCEPT
            assert (int2ip(f.saddr), f.sport, int2ip(f.daddr), f.dport) == (*server_sees_client, *server)
        else:
            f = seg(*server, *server_sees_client, flags, sq, ak, b"h" * n)
            assert through(nf, f, back) == NF_ACCEPT
            assert (int2ip(f.saddr), f.sport, int2ip(f.daddr), f.dport) == (*client_dst, CLIENT, 40000)
    return t


def counters(text: str) -> list[str]:
    """Non-zero rule counters as `packets rule` (bytes depend on payload sizes we do not copy)."""
    out = []
    for line in text.splitlines():
        m = re.match(r"^\[(\d+):\d+\] (-A .*)$", line)
        if m and m.group(1) != "0":
            out.append(f"{m.group(1)} {m.group(2)}")
    return sorted(out)


def ref_counters(scenario: str) -> list[str]:
    return counters((REF / scenario / "iptables-save-node1.txt").read_text())


def test_s1_clusterip_matches_the_kernel() -> None:
    node, nf, rs = setup()
    node.sim.run(until=MS)
    q = Frame(bytes(Ether() / IP(src=CLIENT, dst="10.3.240.10") / UDP(sport=40053, dport=53) / (b"d" * 56)))
    assert through(nf, q, OUT) == NF_ACCEPT and int2ip(q.daddr) == "10.0.2.3"
    r = Frame(bytes(Ether() / IP(src="10.0.2.3", dst=CLIENT) / UDP(sport=53, dport=40053) / (b"a" * 72)))
    assert through(nf, r, BACK) == NF_ACCEPT and int2ip(r.saddr) == "10.3.240.10"
    t = tcp_session(node, nf, ("10.3.241.152", 80), ("10.0.2.2", 8080), (CLIENT, 40000), OUT, BACK, MS)
    node.sim.run(until=t + 1500 * MS)
    assert nf.conntrack_dump() == (REF / "s1-clusterip" / "conntrack-node1.txt").read_text()
    assert counters(save_rules(rs)) == ref_counters("s1-clusterip")


def test_s3_hairpin_matches_the_kernel() -> None:
    node, nf, rs = setup()
    t = tcp_session(node, nf, ("10.3.245.20", 80), (CLIENT, 8080), ("10.0.1.1", 40000), BRIDGED, BRIDGED, 0)
    node.sim.run(until=t + 1500 * MS)
    assert nf.conntrack_dump() == (REF / "s3-hairpin" / "conntrack-node1.txt").read_text()
    assert counters(save_rules(rs)) == ref_counters("s3-hairpin")


def test_s2_no_endpoints_leaves_no_conntrack_entry() -> None:
    node, nf, rs = setup()
    syn = seg(CLIENT, 40000, "10.3.250.77", 80, "S", 1000, 0)
    assert through(nf, syn, OUT) == NF_DROP
    assert len(node.rejects) == 1 and node.rejects[0][1] == "icmp-port-unreachable"
    assert nf.conntrack_dump() == (REF / "s2-noendpoints" / "conntrack-node1.txt").read_text() == ""
    assert counters(save_rules(rs)) == ref_counters("s2-noendpoints")
