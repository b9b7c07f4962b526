"""One nftables nat chain, at prerouting only, and the reply it must still un-DNAT: on the kernel of
the machine running the tests (needs root, ip, nft, conntrack) and in the emulator, which must agree.

The kernel hooks NAT at all four of its hooks as soon as a first `type nat` chain exists, at any
of them (nf_nat_register_fn registers the whole set), so a reply is translated back at
POSTROUTING though no chain is there. Linux 6.18: the client's datagram to 10.9.9.9:80 reaches
the server as 10.2.0.2:8080 and the answer comes back from 10.9.9.9:80. pktemu once hooked NAT
only where a nat chain was, and the answer came back from 10.2.0.2:8080 (the client's socket
refused it with a port unreachable).
Namespaces nh<hex>-*, unique per run, are always deleted; every process started here is stopped
by its PID.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import pktemu
from netns_lab import NetnsLab

TOOLS = ("ip", "nft", "conntrack")
pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or any(shutil.which(t) is None for t in TOOLS),
    reason="builds network namespaces: needs root and " + ", ".join(TOOLS))

RULES = """\
table ip t {
  chain pre {
    type nat hook prerouting priority -100; policy accept;
    ip daddr 10.9.9.9 udp dport 80 dnat to 10.2.0.2:8080
  }
}
"""
SERVER = r'''
import socket
s = socket.socket(2, 2); s.bind(("0.0.0.0", 8080)); s.settimeout(5)
d, p = s.recvfrom(100); s.sendto(b"pb saw %s:%d" % (p[0].encode(), p[1]), p)
'''
CLIENT = r'''
import socket
s = socket.socket(2, 2); s.settimeout(2); s.bind(("0.0.0.0", 40000)); s.sendto(b"ping", ("10.9.9.9", 80))
try:
    d, p = s.recvfrom(100); print("%s:%d %s" % (p[0], p[1], d.decode()))
except OSError as e:
    print("no answer", e)
'''
APPS = '''
def client(api):
    u = api.udp(("0.0.0.0", 40000))
    u.sendto(b"ping", ("10.9.9.9", 80))
    try:
        d, p = yield u.recvfrom(100, timeout=2)
        api.result["line"] = "%s:%d %s" % (p[0], p[1], d.decode())
    except OSError as e:
        api.result["line"] = "no answer %s" % e


def server(api):
    u = api.udp(("0.0.0.0", 8080))
    d, p = yield u.recvfrom(100)
    u.sendto(b"pb saw %s:%d" % (p[0].encode(), p[1]), p)
'''


def _entry(conntrack: str) -> list[str]:
    """The udp lines of `conntrack -L`, the timeout, mark and use left out."""
    out = []
    for ln in conntrack.splitlines():
        if ln.startswith("udp"):
            w = re.sub(r" (mark|use)=\d+", "", ln).split()
            out.append(" ".join(w[:2] + w[3:]))
    return out


def kernel(tmp: Path) -> tuple[str, list[str]]:
    lab = NetnsLab(["pa", "pr", "pb"], "nh")
    try:
        try:
            lab.add_namespaces()
            lab.veth("pa", "eth0", "pr", "r1")
            lab.veth("pr", "r2", "pb", "eth0")
        except (RuntimeError, OSError) as e:
            pytest.skip(f"cannot build namespaces here: {e}")
        for n, dev, addr in (("pa", "eth0", "10.1.0.2/24"), ("pr", "r1", "10.1.0.1/24"),
                             ("pr", "r2", "10.2.0.1/24"), ("pb", "eth0", "10.2.0.2/24")):
            lab.x(n, "ip", "addr", "add", addr, "dev", dev)
            lab.x(n, "ip", "link", "set", dev, "up")
        lab.x("pa", "ip", "route", "add", "default", "via", "10.1.0.1")
        lab.x("pb", "ip", "route", "add", "default", "via", "10.2.0.1")
        lab.x("pr", "sysctl", "-qw", "net.ipv4.ip_forward=1")
        subprocess.run(["ip", "netns", "exec", lab.ns["pr"], "nft", "-f", "-"], input=RULES, text=True,
                       check=True)
        lab.bg("pb", "python3", "-c", SERVER)
        lab.wait_listening("pb", 8080, udp=True)
        line = lab.x("pa", "python3", "-c", CLIENT).strip()
        conntrack = lab.x("pr", "conntrack", "-L", check=False)
    finally:
        lab.close()
    return line, _entry(conntrack)


def emulated(tmp: Path) -> tuple[str, list[str]]:
    (tmp / "pre.nft").write_text(RULES)
    (tmp / "nat_apps.py").write_text(APPS)
    topo = tmp / "nat-hooks.yaml"
    topo.write_text("""\
name: nat-hooks
seed: 1
nodes:
  pa:
    interfaces: {eth0: {addresses: [10.1.0.2/24]}}
    routes: [{to: default, via: 10.1.0.1}]
  pr:
    sysctls: {net.ipv4.ip_forward: 1}
    interfaces: {r1: {addresses: [10.1.0.1/24]}, r2: {addresses: [10.2.0.1/24]}}
    nftables: pre.nft
  pb:
    interfaces: {eth0: {addresses: [10.2.0.2/24]}}
    routes: [{to: default, via: 10.2.0.1}]
    apps: [{kind: python, entry: "nat_apps:server"}]
veths: [[pa/eth0, pr/r1], [pr/r2, pb/eth0]]
scenarios:
  s:
    traffic: [{at: 10ms, node: pa, app: {kind: python, entry: "nat_apps:client"}}]
""")
    pktemu("run", str(topo), "--out", str(tmp / "out"), "-q", timeout=120)
    d = tmp / "out" / "s"
    line = json.loads((d / "client-result.json").read_text())["line"]
    return line, _entry((d / "conntrack-pr.txt").read_text())


def test_a_prerouting_nat_chain_alone_still_translates_the_reply(tmp_path: Path) -> None:
    (tmp_path / "k").mkdir()
    (tmp_path / "e").mkdir()
    found = kernel(tmp_path / "k")
    assert found == ("10.9.9.9:80 pb saw 10.1.0.2:40000",
                     ["udp 17 src=10.1.0.2 dst=10.9.9.9 sport=40000 dport=80 src=10.2.0.2 dst=10.1.0.2 "
                      "sport=8080 dport=40000"])
    assert emulated(tmp_path / "e") == found
