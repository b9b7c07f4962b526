"""Conntrack zones (`-j CT --zone/--zone-orig/--zone-reply`) held to the real kernel (needs root,
`ip netns`, iptables and the conntrack tool).

Kernel side: namespaces pkzone-<hex>-a (the client, 10.0.1.2/8) and pkzone-<hex>-b (the receiver,
10.0.2.2/8) joined by a veth; the raw table of b puts each UDP datagram in a zone by its length, so
flows with identical tuples land in different zones; a DNAT rule makes one NATed entry whose reply
tuple a later flow of the same zone collides with (its source port is remapped) while the same flow
in another zone keeps its port; b then answers four flows from a raw socket (OUTPUT, one of them
zoned by an OUTPUT rule). pktemu side: the same rules in the server pod of
topologies/service-test.yaml, the same datagrams from the client pod and the server. `conntrack -L`
must list the same entries (timeouts and the randomly chosen port masked; the kernel lists in hash
order) and `iptables-save -c` the same counters, policies included (the raw chains are declared,
so iptables-nft counts their policies).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import uuid

import pytest
from datapaths import ROOT
from scapy.layers.inet import IP, UDP

import pktemu

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or any(shutil.which(t) is None for t in ("ip", "iptables-restore", "iptables-save",
                                                                "conntrack")),
    reason="builds network namespaces: needs root, ip, iptables and conntrack")

RULES = """*raw
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A PREROUTING -p udp -m length --length 0:40 -j CT --zone 1
-A PREROUTING -p udp -m length --length 41:100 -j CT --zone 2
-A PREROUTING -p udp -m length --length 101:200 -j CT --zone-orig 3
-A PREROUTING -p udp -m length --length 201:300 -j CT --zone-reply 4
-A OUTPUT -p udp -m udp --dport 5000 -j CT --zone 2
COMMIT
*nat
-A PREROUTING -p udp -m udp --dport 7 -j DNAT --to-destination 10.0.2.2:9
COMMIT
"""
CLIENT, SERVER = "10.0.1.2", "10.0.2.2"
# (source port, destination port, payload length): the length picks the zone
FLOWS = [(5000, 7, 1), (5000, 9, 1), (5000, 9, 30), (6000, 9, 1), (6000, 9, 30), (7000, 9, 100),
         (7001, 9, 200)]
REPLIES = [6000, 7000, 7001, 5000]      # the receiver's answers from port 9 to these ports
SEND = r'''
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
for line in sys.stdin.read().split():
    b = bytes.fromhex(line)
    try:
        s.sendto(b, (socket.inet_ntoa(b[16:20]), 0))
    except PermissionError:             # dropped by netfilter on the way out
        pass
'''


def packets() -> tuple[list[IP], list[IP]]:
    ask = [IP(src=CLIENT, dst=SERVER, id=10 + i) / UDP(sport=s, dport=d) / (b"x" * n)
           for i, (s, d, n) in enumerate(FLOWS)]
    ans = [IP(src=SERVER, dst=CLIENT, id=90 + i) / UDP(sport=9, dport=d) / b"r"
           for i, d in enumerate(REPLIES)]
    return ask, ans


def sh(*a: str, stdin: str | None = None, check: bool = True) -> str:
    p = subprocess.run(list(a), input=stdin, capture_output=True, text=True, timeout=30)
    if check and p.returncode:
        raise RuntimeError(f"{' '.join(a)}: {p.stderr.strip()}")
    return p.stdout


def kernel() -> tuple[str, str]:
    """conntrack -L and iptables-save -c of the receiver after the exchange."""
    tag = uuid.uuid4().hex[:6]
    a, b = f"pkzone-{tag}-a", f"pkzone-{tag}-b"
    ask, ans = packets()
    try:
        for ns in (a, b):
            sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", "pkzonea", "netns", a, "type", "veth", "peer", "name", "pkzoneb", "netns", b)
        for ns, dev, addr in ((a, "pkzonea", CLIENT), (b, "pkzoneb", SERVER)):
            sh("ip", "-n", ns, "link", "set", dev, "name", "eth0")
            sh("ip", "-n", ns, "addr", "add", f"{addr}/8", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        # every closed-port datagram gets its ICMP error (both would rate-limit the 7th to a peer)
        sh("ip", "netns", "exec", b, "sysctl", "-qw", "net.ipv4.icmp_ratelimit=0")
        sh("ip", "netns", "exec", b, "iptables-restore", stdin=RULES)
        time.sleep(0.3)
        sh("ip", "netns", "exec", a, "python3", "-c", SEND, stdin=" ".join(bytes(p).hex() for p in ask))
        time.sleep(0.2)
        sh("ip", "netns", "exec", b, "python3", "-c", SEND, stdin=" ".join(bytes(p).hex() for p in ans))
        time.sleep(0.2)
        ct = sh("ip", "netns", "exec", b, "conntrack", "-L")
        return ct, sh("ip", "netns", "exec", b, "iptables-save", "-c")
    finally:
        for ns in (a, b):
            sh("ip", "netns", "del", ns, check=False)


def emulated() -> tuple[str, str]:
    ask, ans = packets()
    net = pktemu.Network.load(str(ROOT / "topologies" / "service-test.yaml"))
    net.cmd("server", "iptables-restore", stdin=RULES)
    net.cmd("server", "sysctl -w net.ipv4.icmp_ratelimit=0")
    net.send("client", ask)
    net.run(duration=0.2)
    net.send("server", ans)
    net.run(duration=0.3)
    return net.conntrack("server").text, net.iptables_save("server")


def entries(text: str) -> list[str]:
    """conntrack -L lines without the timeout, the NAT-chosen port as PORT, sorted."""
    out = []
    for line in text.splitlines():
        if not line.startswith("udp "):
            continue
        line = re.sub(r"^(udp +17) \d+ ", r"\1 T ", line)
        line = re.sub(r"sport=9 dport=(?!5000 |6000 |7000 |7001 )\d+ ", "sport=9 dport=PORT ", line)
        out.append(line)
    return sorted(out)


def counters(save: str) -> list[str]:
    return [ln for ln in save.splitlines() if ln.startswith(("[", ":"))]


def test_zones_keep_equal_tuples_apart_as_the_kernel_does() -> None:
    kct, ksave = kernel()
    ect, esave = emulated()
    want = entries(kct)
    assert entries(ect) == want
    assert counters(esave) == counters(ksave)
    z1 = ("src=10.0.1.2 dst=10.0.2.2 sport=6000 dport=9 [UNREPLIED] "
          "src=10.0.2.2 dst=10.0.1.2 sport=9 dport=6000 ")
    assert f"udp      17 T {z1}mark=0 zone=1 use=1" in want
    assert f"udp      17 T {z1}mark=0 zone=2 use=1" in want
    # the NATed zone-1 entry took 10.0.2.2:9 -> 10.0.1.2:5000 in zone 1 only
    assert any("sport=5000 dport=9 [UNREPLIED] src=10.0.2.2 dst=10.0.1.2 sport=9 dport=PORT mark=0 zone=1"
               in x for x in want)
    assert any("sport=5000 dport=9 src=10.0.2.2 dst=10.0.1.2 sport=9 dport=5000 mark=0 zone=2 " in x
               for x in want)
    assert any("dport=9 zone-orig=3 src=10.0.2.2" in x for x in want)      # answered in the default zone
    assert any("dport=7001 zone-reply=4 mark=0" in x for x in want)
    assert len(want) == 8
