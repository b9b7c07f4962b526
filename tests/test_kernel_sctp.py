"""SCTP through the real kernel's netfilter against pktemu's: the same rules, the same packets.

Namespaces pksc<hex>-c (client 10.0.1.2), pksc<hex>-r (router, 10.0.1.1 and 10.0.2.1) and
pksc<hex>-s (server 10.0.2.2), joined by veths as tests/test_sctp.py's ROUTER_TOPOLOGY; the rules
(tests/test_sctp.py RULES: sctp matches with ports and chunk types, DNAT of 10.96.0.90:90 to
10.0.2.2:9090, MASQUERADE) go into the router with iptables-restore. This kernel has no SCTP
sockets (CONFIG_IP_SCTP unset), so the client and the server inject the association's packets,
byte for byte those given to pktemu, from raw sockets, one at a time in order; tcpdump captures
both ends. Compared with pktemu's run of the same flow: the SCTP packets each end receives
(addresses, IP id, TTL, and the whole SCTP packet: ports, vtag, CRC32c recomputed after NAT,
chunks), every rule's [packets:bytes] in the router, its iptables-save text, and its
`conntrack -L` sctp lines (states, tuples, [ASSURED]; the timeout masked). The ends' stacks answer
every SCTP packet with an ICMP protocol unreachable (no SCTP here, and none in pktemu's hosts):
the router un-NATs the packet those quote, CRC32c included, and they are compared too.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.inet import ICMP, IP
from scapy.layers.sctp import SCTP
from scapy.utils import rdpcap
from test_kernel_xt_constructs import SEND, counters, sh
from test_sctp import CLIENT, EDGE, EDGE_SAVED, RULES, SERVER, ct_lines, flow, run_router

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or any(shutil.which(t) is None for t in
                             ("ip", "iptables-restore", "iptables-save", "conntrack", "tcpdump")),
    reason="builds network namespaces: needs root, ip, iptables, conntrack and tcpdump")


def _view(pkts: list[Any]) -> list[tuple[Any, ...]]:
    """What must agree of the SCTP packets one end received (MACs differ by construction)."""
    return [(p[IP].src, p[IP].dst, p[IP].id, p[IP].ttl, bytes(p[SCTP])) for p in pkts]


def _icmp_view(pkts: list[Any], to: str) -> list[tuple[Any, ...]]:
    """ICMP errors one end received: the whole ICMP message, the quoted SCTP packet un-NATed by the
    router (the outer IP id and header checksum are the sender's own choice, not compared)."""
    return [(p[IP].src, p[IP].ttl, bytes(p[ICMP])) for p in pkts
            if p.haslayer(IP) and p[IP].proto == 1 and p[IP].dst == to]


def _sctp_in(pkts: list[Any], to: str) -> list[Any]:
    return [p for p in pkts if p.haslayer(IP) and p[IP].proto == 132 and p[IP].dst == to]


def kernel(tmp: Path) -> tuple[str, str, dict[str, list[Any]]]:
    """The flow through real namespaces: router's iptables-save -c, conntrack -L, the captures."""
    tag = uuid.uuid4().hex[:6]
    c, r, s = (f"pksc{tag}-{x}" for x in "crs")
    dumps: list[subprocess.Popen[bytes]] = []
    try:
        for ns in (c, r, s):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            # the per-peer bucket (6, then one a second) would swallow some of the stack's
            # protocol-unreachables, and which depends on the time between the injections: off
            # here as in ROUTER_TOPOLOGY (tests/test_sctp.py)
            sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.icmp_ratelimit=0")
        sh("ip", "link", "add", f"pksc{tag}a", "netns", c, "type", "veth", "peer", "name", "eth1", "netns", r)
        sh("ip", "link", "add", f"pksc{tag}b", "netns", s, "type", "veth", "peer", "name", "eth2", "netns", r)
        for ns, dev, new, addr in ((c, f"pksc{tag}a", "eth0", f"{CLIENT}/24"), (s, f"pksc{tag}b", "eth0",
                                   f"{SERVER}/24"), (r, "eth1", "eth1", "10.0.1.1/24"),
                                   (r, "eth2", "eth2", "10.0.2.1/24")):
            if dev != new:
                sh("ip", "-n", ns, "link", "set", dev, "name", new)
            sh("ip", "-n", ns, "addr", "add", addr, "dev", new)
            sh("ip", "-n", ns, "link", "set", new, "up")
        sh("ip", "-n", c, "route", "add", "default", "via", "10.0.1.1")
        sh("ip", "-n", s, "route", "add", "default", "via", "10.0.2.1")
        sh("ip", "netns", "exec", r, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        sh("ip", "netns", "exec", r, "iptables-restore", stdin=RULES)
        for ns in (c, s):
            cmd = ["ip", "netns", "exec", ns, "tcpdump", "-U", "--immediate-mode", "-n", "-i", "eth0",
                   "-w", str(tmp / f"{ns}.pcap"), "ip proto 132 or icmp"]
            dumps.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(1.5)                     # carriers up, tcpdump listening
        for who, raw in flow():
            sh("ip", "netns", "exec", c if who == "client" else s, "python3", "-c", SEND, stdin=raw.hex())
            time.sleep(0.05)
        time.sleep(0.5)
        save = sh("ip", "netns", "exec", r, "iptables-save", "-c")
        ct = sh("ip", "netns", "exec", r, "conntrack", "-L")
        for d in dumps:
            d.terminate()
            d.wait(timeout=10)
        dumps = []
        caps = {"client-eth0": list(rdpcap(str(tmp / f"{c}.pcap"))),
                "server-eth0": list(rdpcap(str(tmp / f"{s}.pcap")))}
        return save, ct, caps
    finally:
        for d in dumps:
            d.kill()
            d.wait()
        for ns in (c, r, s):
            sh("ip", "netns", "del", ns, check=False)


def test_sctp_dnat_conntrack_like_the_kernel(tmp_path: Path) -> None:
    (tmp_path / "k").mkdir()
    (tmp_path / "e").mkdir()
    ksave, kct, kcaps = kernel(tmp_path / "k")
    net, ecaps = run_router(tmp_path / "e")
    for point, to in (("server-eth0", SERVER), ("client-eth0", CLIENT)):
        want = _view(_sctp_in(kcaps[point], to))
        assert want, point
        assert _view(_sctp_in(ecaps[point], to)) == want, point
        want_icmp = _icmp_view(kcaps[point], to)
        assert _icmp_view(ecaps[point], to) == want_icmp, point
    want_ct = ct_lines(kct)
    assert any(" ESTABLISHED " in line and "[ASSURED]" in line for line in want_ct), kct
    assert ct_lines(str(net.conntrack("router"))) == want_ct
    esave = net.iptables_save("router")
    want_counters = {k: v for k, v in counters(ksave).items() if k[0] in ("mangle", "nat")}
    assert any(v[0] for v in want_counters.values())
    assert {k: v for k, v in counters(esave).items() if k[0] in ("mangle", "nat")} == want_counters


def test_edge_rules_save_like_iptables() -> None:
    ns = f"pksc{uuid.uuid4().hex[:6]}-x"
    try:
        sh("ip", "netns", "add", ns)
        sh("ip", "netns", "exec", ns, "iptables-restore", stdin=EDGE)
        saved = sh("ip", "netns", "exec", ns, "iptables-save", "-t", "filter")
    finally:
        sh("ip", "netns", "del", ns, check=False)
    assert [line for line in saved.splitlines() if line.startswith("-A")] == EDGE_SAVED
