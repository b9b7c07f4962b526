"""`net.ipv4.ip_default_ttl` and the conntrack timeouts a topology may set, on the kernel of the
machine running the tests (needs root, ip, iptables-restore, conntrack, tcpdump) and in the
emulator, which must agree.

a (10.9.0.1) -- veth -- b (10.9.0.2). a's TTL is 33, b's 77: every packet a socket of theirs or
the kernel itself sends (a ping and its reply, UDP, an ICMP port unreachable, SYN, SYN-ACK, the
RST for a closed port) carries it. a tracks connections with timeouts of its own: ICMP 13 s,
UDP 27 s, SYN_SENT 43 s, TIME_WAIT 61 s, ESTABLISHED 1234 s; `conntrack -L` right after the
traffic shows each entry with the timeout of its state, less the seconds since its last packet.
Namespaces sy<hex>-*, unique per run, are always deleted; every process started here is stopped
by its PID.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import pktemu
from netns_lab import NetnsLab

TOOLS = ("ip", "iptables-restore", "conntrack", "tcpdump")
pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or any(shutil.which(t) is None for t in TOOLS),
    reason="builds network namespaces: needs root and " + ", ".join(TOOLS))

A, B = "10.9.0.1", "10.9.0.2"
A_SYSCTLS = {"net.ipv4.ip_default_ttl": 33, "net.netfilter.nf_conntrack_icmp_timeout": 13,
             "net.netfilter.nf_conntrack_udp_timeout": 27,
             "net.netfilter.nf_conntrack_tcp_timeout_syn_sent": 43,
             "net.netfilter.nf_conntrack_tcp_timeout_time_wait": 61,
             "net.netfilter.nf_conntrack_tcp_timeout_established": 1234}
B_SYSCTLS = {"net.ipv4.ip_default_ttl": 77}
#: any rule that asks for conntrack makes the namespace track
RULES = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n" \
        "-A OUTPUT -m conntrack --ctstate NEW\nCOMMIT\n"

SERVERS = r'''
import socket, threading
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("0.0.0.0", 7))
def echo():
    while True:
        d, peer = u.recvfrom(100); u.sendto(d, peer)
threading.Thread(target=echo, daemon=True).start()
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8)); s.listen()
def h(c):
    while c.recv(100):
        pass
    c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=h, args=(c,), daemon=True).start()
'''
CLIENT = r'''
import socket, time
ping = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
ping.sendto(bytes.fromhex("0800f7fe00010000"), ("10.9.0.2", 0)); ping.recvfrom(100)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.sendto(b"x", ("10.9.0.2", 7)); u.recvfrom(100)
u.sendto(b"x", ("10.9.0.2", 9)); time.sleep(0.2)
for port in (10,):
    try:
        socket.create_connection(("10.9.0.2", port), timeout=1)
    except OSError:
        pass
held = socket.create_connection(("10.9.0.2", 8))
c = socket.create_connection(("10.9.0.2", 8)); time.sleep(0.1); c.close()
try:
    socket.create_connection(("10.9.0.99", 8), timeout=0.5)
except OSError:
    pass
time.sleep(0.5)
print("done", flush=True)
time.sleep(3)
'''
APPS = '''
def servers(api):
    u = api.udp(("0.0.0.0", 7))

    def echo():
        while True:
            d, peer = yield u.recvfrom(100)
            u.sendto(d, peer)
    api.spawn(echo())
    lst = api.listen(("0.0.0.0", 8))

    def handle(c):
        while (yield c.recv(100)):
            pass
        c.close()
    while True:
        c, _peer = yield lst.accept()
        api.spawn(handle(c))


def client(api):
    u = api.udp()
    u.sendto(b"x", ("10.9.0.2", 7))
    yield u.recvfrom(100)
    u.sendto(b"x", ("10.9.0.2", 9))
    yield api.sleep(0.2)
    try:
        yield api.connect(("10.9.0.2", 10), timeout=1)
    except OSError:
        pass
    api.result["held"] = yield api.connect(("10.9.0.2", 8))
    c = yield api.connect(("10.9.0.2", 8))
    yield api.sleep(0.1)
    c.close()
    try:
        yield api.connect(("10.9.0.99", 8), timeout=0.5)
    except OSError:
        pass
    yield api.sleep(3.5)
    api.result.pop("held").close()
'''
#: every timeout a's entries can have here: the ones set above and the kernel's defaults of the
#: others (UNACK, a UDP stream)
TIMEOUTS = sorted({*A_SYSCTLS.values(), 120, 300} - {33})


def _facts(pcap: Path, conntrack: str) -> dict[str, Any]:
    from scapy.layers.inet import ICMP, IP, TCP, UDP
    from scapy.utils import rdpcap
    ttls: dict[str, set[int]] = {}
    kinds = set()
    for p in rdpcap(str(pcap)):
        if IP in p:
            ttls.setdefault(p[IP].src, set()).add(p[IP].ttl)
            kinds.add((p[IP].src, f"tcp {p[TCP].flags}" if TCP in p else f"icmp {p[ICMP].type}"
                       if ICMP in p else "udp" if UDP in p else str(p[IP].proto)))
    entries = []
    for line in conntrack.splitlines():
        w = line.split()
        if not w or w[0] not in ("tcp", "udp", "icmp"):
            continue
        left = int(w[2])
        state = w[3] if w[0] == "tcp" else ""
        dst = next(x for x in w if x.startswith("dst="))
        dport = next((x for x in w if x.startswith("dport=")), "")
        # the timeout its state gave it: the smallest one at least what is left, within 8 s
        timeout = next((t for t in TIMEOUTS if left <= t <= left + 8), -left)
        entries.append((w[0], state, dst, dport, timeout))
    return {"ttls": {src: sorted(t) for src, t in ttls.items()}, "kinds": kinds, "conntrack": sorted(entries)}


def kernel(tmp: Path) -> dict[str, Any]:
    lab = NetnsLab(["a", "b"], "sy")
    try:
        try:
            lab.add_namespaces()
            lab.veth("a", "eth0", "b", "eth0")
        except (RuntimeError, OSError) as e:
            pytest.skip(f"cannot build namespaces here: {e}")
        for n, addr in (("a", A), ("b", B)):
            lab.x(n, "ip", "addr", "add", f"{addr}/24", "dev", "eth0")
            lab.x(n, "ip", "link", "set", "eth0", "up")
        subprocess.run(["ip", "netns", "exec", lab.ns["a"], "iptables-restore"], input=RULES,
                       text=True, check=True)
        for n, sysctls in (("a", A_SYSCTLS), ("b", B_SYSCTLS)):
            for k, v in sysctls.items():
                lab.x(n, "sysctl", "-qw", f"{k}={v}")
        caps = lab.capture(tmp, ["b-eth0"])
        lab.bg("b", "python3", "-c", SERVERS)
        lab.wait_listening("b", 7, udp=True)
        lab.wait_listening("b", 8)
        out = tmp / "client.txt"
        cli = lab.bg("a", "python3", "-c", CLIENT, out=out)
        end = time.time() + 10
        while b"done" not in out.read_bytes() and time.time() < end:
            time.sleep(0.05)
        conntrack = lab.x("a", "conntrack", "-L", check=False)
        cli.wait(timeout=10)
        NetnsLab.stop(caps)
    finally:
        lab.close()
    return _facts(tmp / "b-eth0.pcap", conntrack)


def emulated(tmp: Path) -> dict[str, Any]:
    (tmp / "rules.iptables").write_text(RULES)
    (tmp / "sysctl_apps.py").write_text(APPS)
    topo = tmp / "sysctls.yaml"
    topo.write_text(f"""\
name: sysctls
seed: 1
nodes:
  a:
    sysctls: {json.dumps(A_SYSCTLS)}
    interfaces: {{eth0: {{addresses: [{A}/24]}}}}
    iptables: rules.iptables
  b:
    sysctls: {json.dumps(B_SYSCTLS)}
    interfaces: {{eth0: {{addresses: [{B}/24]}}}}
    apps: [{{kind: python, entry: "sysctl_apps:servers"}}]
veths: [[a/eth0, b/eth0]]
scenarios:
  sysctls:
    timeline:
      - {{at: 1500ms, node: a, conntrack: "-L"}}
    traffic:
      - {{at: 10ms, node: a, app: {{kind: ping, target: {B}, count: 1}}}}
      - {{at: 100ms, node: a, app: {{kind: python, entry: "sysctl_apps:client"}}}}
    settle: 1s
""")
    pktemu("run", str(topo), "--out", str(tmp / "out"), "-q", timeout=120)
    d = tmp / "out" / "sysctls"
    return _facts(d / "pcap" / "b-eth0.pcap", (d / "timeline.txt").read_text().split(": ", 1)[1])


#: what each side sends here, by itself or from a socket: every one of them carries its TTL
SENT = {(A, "icmp 8"), (A, "udp"), (A, "tcp S"), (A, "tcp FA"),
        (B, "icmp 0"), (B, "icmp 3"), (B, "udp"), (B, "tcp SA"), (B, "tcp RA"), (B, "tcp FA")}
KERNEL_618 = {"ttls": {A: [33], B: [77]},
              "conntrack": [("icmp", "", f"dst={B}", "", 13),
                            ("tcp", "ESTABLISHED", f"dst={B}", "dport=8", 1234),
                            ("tcp", "SYN_SENT", "dst=10.9.0.99", "dport=8", 43),
                            ("tcp", "TIME_WAIT", f"dst={B}", "dport=8", 61),
                            ("udp", "", f"dst={B}", "dport=7", 27),
                            ("udp", "", f"dst={B}", "dport=9", 27)]}


def test_default_ttl_and_conntrack_timeouts_on_the_kernel_and_the_emulator(tmp_path: Path) -> None:
    """The kinds of frames are held to SENT, not to each other: b's kernel ACKed a's FIN on its own
    4 ms before its FIN (its app had not closed yet); the emulator's app closes at once."""
    pytest.importorskip("scapy")
    (tmp_path / "k").mkdir()
    (tmp_path / "e").mkdir()
    found = kernel(tmp_path / "k")
    assert SENT <= found.pop("kinds")
    assert found == KERNEL_618
    emu = emulated(tmp_path / "e")
    assert SENT <= emu.pop("kinds")
    assert emu == found
