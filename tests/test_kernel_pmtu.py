"""Path MTU discovery through a router whose next link is smaller, on the kernel of the machine
running the tests (needs root, ip, iptables-restore, tcpdump, ethtool) and in the emulator, which
must agree (pktemu/net/pmtu.py).

client (10.0.1.2, MTU 1500) -- node1 (eth1 MTU 1400, DNAT 10.3.0.10:80 -> 10.0.2.2:7) -- server
(10.0.2.2, MTU 1500). The client writes 2,896 (or 4,000) bytes to the ClusterIP-like
10.3.0.10:80, then sends two 1,472-byte UDP datagrams to 10.3.0.10:9 (no rule, no route at
node1). Linux 6.18: the two 1,448-byte segments meet node1's 1400-byte link and each gets a
"fragmentation needed (mtu 1400)", from 10.3.0.10 (conntrack gives the error the Service's
address); the client lowers the path MTU to 10.3.0.10 and resends the 2,896 bytes at once as
1,348 + 1,348 + 200 (PSH on the last); with 4,000 bytes the last 1,104 get through first and the
server holds them, SACKing them until the hole is filled. The UDP datagrams, which would have
fitted 1500, leave in two fragments each. pktemu used to ignore the error (the segments were
resent whole until the connection timed out) and to drop data that arrived beyond a hole.
Namespaces pm<hex>-*, unique per run, are always deleted; every process started here is stopped by
its PID.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest
from conftest import pktemu
from netns_lab import NetnsLab

TOOLS = ("ip", "iptables-restore", "tcpdump", "ethtool")
pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or any(shutil.which(t) is None for t in TOOLS),
    reason="builds network namespaces: needs root and " + ", ".join(TOOLS))

RULES = """\
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A PREROUTING -d 10.3.0.10/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.0.2.2:7
COMMIT
"""
DATAGRAM = 1472
SERVER = r'''
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 7)); s.listen()
c, _ = s.accept()
while c.recv(65536):
    c.sendall(b"seen\n")
'''
CLIENT = r'''
import socket, sys, time
s = socket.create_connection(("10.3.0.10", 80), timeout=10)
s.sendall(b"x" * int(sys.argv[1]))
time.sleep(0.3)
s.close()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(2):
    u.sendto(b"u" * %d, ("10.3.0.10", 9)); time.sleep(0.2)
''' % DATAGRAM
TOPOLOGY = """\
name: pmtu
seed: 1
nodes:
  client:
    interfaces: {eth0: {addresses: [10.0.1.2/24]}}
    routes: [{to: default, via: 10.0.1.1}]
  node1:
    sysctls: {net.ipv4.ip_forward: 1}
    interfaces: {veth-c: {addresses: [10.0.1.1/24]}, eth1: {addresses: [10.0.2.1/24], mtu: 1400}}
    iptables: node1.iptables
  server:
    interfaces: {eth0: {addresses: [10.0.2.2/24]}}
    routes: [{to: default, via: 10.0.2.1}]
    apps: [{kind: tcp-echo, port: 7}]
veths: [[client/eth0, node1/veth-c], [node1/eth1, server/eth0]]
scenarios:
  pmtu:
    traffic:
      - {at: 0ms, node: client, app: {kind: echo-client, target: 10.3.0.10, port: 80, payload: "%s"}}
      - {at: 500ms, node: client, app: {kind: echo-client, proto: udp, target: 10.3.0.10, port: 9,
                                       count: 2, interval: 200ms, timeout: 100ms, payload: "%s"}}
"""


def _facts(path: Path, size: int) -> dict[str, Any]:
    """What the client's eth0 saw: its TCP data segments (relative seq, length, PSH), the server's
    pure ACKs of them (relative ack, SACK blocks), the ICMP errors it got (source, type, code,
    MTU), its UDP packets (length, more fragments, offset)."""
    from scapy.layers.inet import ICMP, IP, TCP, UDP  # noqa: F401 (rdpcap dissects with them)
    from scapy.layers.l2 import Ether  # noqa: F401
    from scapy.utils import rdpcap
    frames = [p for p in rdpcap(str(path)) if IP in p]
    isn = next(p[TCP].seq for p in frames if TCP in p and p[TCP].flags == "S")
    data = [(p[TCP].seq - isn - 1, len(p[TCP].payload), "P" in p[TCP].flags) for p in frames
            if TCP in p and p[IP].src == "10.0.1.2" and len(p[TCP].payload)]
    server_isn = next(p[TCP].seq for p in frames if TCP in p and p[TCP].flags == "SA")
    acks = [(p[TCP].ack - isn - 1, [(a - isn - 1, b - isn - 1) for kind, v in p[TCP].options if kind == "SAck"
                                    for a, b in zip(v[::2], v[1::2], strict=True)])
            for p in frames if TCP in p and p[IP].dst == "10.0.1.2" and p[TCP].flags == "A"
            and not len(p[TCP].payload) and p[TCP].seq == server_isn + 1 and p[TCP].ack - isn - 1 <= size]
    icmp = [(p[IP].src, p[ICMP].type, p[ICMP].code, p[ICMP].nexthopmtu) for p in frames if ICMP in p]
    udp = [(p[IP].len, int(p[IP].flags), p[IP].frag) for p in frames
           if p[IP].src == "10.0.1.2" and p[IP].proto == 17]
    return {"data": data, "acks": acks, "icmp": icmp, "udp": udp}


@contextlib.contextmanager
def _lab() -> Iterator[NetnsLab]:
    """The three namespaces, node1's link to the server 1400 bytes, its DNAT loaded."""
    lab = NetnsLab(["client", "node1", "server"], "pm")
    try:
        try:
            lab.add_namespaces()
            lab.veth("client", "eth0", "node1", "veth-c")
            lab.veth("node1", "eth1", "server", "eth0")
        except (RuntimeError, OSError) as e:
            pytest.skip(f"cannot build namespaces here: {e}")
        for n, dev, addr in (("client", "eth0", "10.0.1.2/24"), ("node1", "veth-c", "10.0.1.1/24"),
                             ("node1", "eth1", "10.0.2.1/24"), ("server", "eth0", "10.0.2.2/24")):
            lab.x(n, "ip", "addr", "add", addr, "dev", dev)
            lab.x(n, "ip", "link", "set", dev, "up")
            # one wire frame per segment, as the emulator sends them (no TSO/GSO super-frames)
            lab.x(n, "ethtool", "-K", dev, "tso", "off", "gso", "off", "gro", "off", "tx", "off", check=False)
        lab.x("node1", "ip", "link", "set", "eth1", "mtu", "1400")
        lab.x("client", "ip", "route", "add", "default", "via", "10.0.1.1")
        lab.x("server", "ip", "route", "add", "default", "via", "10.0.2.1")
        lab.x("node1", "sysctl", "-qw", "net.ipv4.ip_forward=1")
        subprocess.run(["ip", "netns", "exec", lab.ns["node1"], "iptables-restore"], input=RULES, text=True,
                       check=True)
        yield lab
    finally:
        lab.close()


def kernel(tmp: Path, size: int) -> dict[str, Any]:
    with _lab() as lab:
        caps = lab.capture(tmp, ["client-eth0"])
        lab.bg("server", "python3", "-c", SERVER)
        lab.wait_listening("server", 7)
        lab.x("client", "python3", "-c", CLIENT, str(size))
        route = lab.x("client", "ip", "route", "get", "10.3.0.10")
        NetnsLab.stop(caps)
    assert "mtu 1400" in route, route                 # the exception the error left
    return _facts(tmp / "client-eth0.pcap", size)


def emulated(tmp: Path, size: int) -> dict[str, Any]:
    (tmp / "node1.iptables").write_text(RULES)
    (tmp / "pmtu.yaml").write_text(TOPOLOGY % ("x" * size, "u" * DATAGRAM))
    pktemu("run", str(tmp / "pmtu.yaml"), "--out", str(tmp / "out"), "-q")
    return _facts(tmp / "out" / "pmtu" / "pcap" / "client-eth0.pcap", size)


FRAG_NEEDED = ("10.3.0.10", 3, 4, 1400)
UNREACHABLE = ("10.0.1.1", 3, 0, 0)
LINUX = {
    # both segments dropped: resent as one run cut to 1,348
    2896: {"data": [(0, 1448, False), (1448, 1448, True),
                    (0, 1348, False), (1348, 1348, False), (2696, 200, True)],
           "acks": [(1348, []), (2696, []), (2896, [])]},
    # the third, shorter, segment gets through first: the server holds it and SACKs it until the
    # hole is filled, then acknowledges everything at once
    4000: {"data": [(0, 1448, False), (1448, 1448, False), (2896, 1104, True),
                    (0, 1348, False), (1348, 1348, False), (2696, 200, True)],
           "acks": [(0, [(2896, 4000)]), (1348, [(2896, 4000)]), (2696, [(2896, 4000)]), (4000, [])]},
}


def _steady(facts: dict[str, Any]) -> dict[str, Any]:
    """The facts that do not depend on the machine's load: on a busy one Linux's server may take two
    segments in one go and ACK them once, so of its ACKs only the SACK blocks they carried and the
    last acknowledged byte count."""
    acks = facts["acks"]
    blocks = sorted({b for _, seen in acks for b in seen})
    return {**facts, "acks": (blocks, acks[-1][0] if acks else None)}


@pytest.mark.parametrize("size", sorted(LINUX))
def test_a_smaller_link_on_the_way_lowers_the_path_mtu_and_the_sender_resends_at_once(
        tmp_path: Path, size: int) -> None:
    pytest.importorskip("scapy")
    (tmp_path / "k").mkdir()
    (tmp_path / "e").mkdir()
    found = kernel(tmp_path / "k", size)
    linux = {**LINUX[size], "icmp": [FRAG_NEEDED, FRAG_NEEDED, UNREACHABLE, UNREACHABLE],
             "udp": [(1396, 1, 0), (124, 0, 172)] * 2}
    assert _steady(found) == _steady(linux)
    emu = emulated(tmp_path / "e", size)
    assert emu == linux                   # every ACK, as an idle machine's Linux sends them
    assert _steady(emu) == _steady(found)


UDP_ECHO = r'''
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", 7))
while True:
    data, peer = s.recvfrom(65536)
    s.sendto(b"seen\\n", peer)
'''
#: 5 s for an answer or an error, where pktemu's client waits 100 ms: both come within a
#: millisecond on an idle machine, but on a loaded one the server's process may wait for a CPU
UDP_CLIENT = r'''
import errno, socket, time
for i in range(2):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5)
    s.connect(("10.0.2.2", 7))
    s.send(b"u" * 1472)
    try:
        s.recv(100)
        print("answer")
    except OSError as e:
        print(errno.errorcode.get(e.errno, e.errno))
    s.close()
    time.sleep(0.2)
'''
UDP_TOPOLOGY = TOPOLOGY.replace("apps: [{kind: tcp-echo, port: 7}]", "apps: [{kind: udp-echo, port: 7}]")


def test_a_connected_udp_socket_hears_emsgsize_and_the_next_datagram_is_fragmented(tmp_path: Path) -> None:
    """Two connected sockets, one after the other, send 1,472 bytes to the server itself: the first
    datagram (DF, it fits 1500) meets the 1400-byte link and its socket gets EMSGSIZE; the second
    leaves in two fragments and is answered. pktemu's echo-client does the same."""
    with _lab() as lab:
        lab.bg("server", "python3", "-c", UDP_ECHO)
        lab.wait_listening("server", 7, udp=True)
        linux = lab.x("client", "python3", "-c", UDP_CLIENT).split()
    assert linux == ["EMSGSIZE", "answer"]
    topo = tmp_path / "pmtu.yaml"
    (tmp_path / "node1.iptables").write_text(RULES)
    topo.write_text(UDP_TOPOLOGY.split("scenarios:")[0] + """scenarios:
  pmtu:
    traffic:
      - {at: 0ms, node: client, app: {kind: echo-client, proto: udp, target: 10.0.2.2, port: 7, count: 2,
                                     interval: 200ms, timeout: 100ms, payload: "%s"}}
""" % ("u" * DATAGRAM))
    pktemu("run", str(topo), "--out", str(tmp_path / "out"), "-q")
    result = json.loads((tmp_path / "out" / "pmtu" / "client-result.json").read_text())
    assert [a["outcome"] for a in result["attempts"]] == linux
