"""topologies/flannel-vxlan.yaml built out of real network namespaces (needs root, ip, bridge,
tcpdump), as flanneld sets it up, and held hop by hop against pktemu's captures of the same
scenario: `ip link add flannel.1 type vxlan id 1 local <node IP> dev eth0 dstport 8472
nolearning`, `bridge fdb append <peer VTEP MAC> dev flannel.1 dst <peer node IP>`, `ip neigh add
<peer subnet>.0 lladdr <peer VTEP MAC> dev flannel.1 nud permanent`, `ip route add <peer subnet>
via <peer subnet>.0 dev flannel.1 onlink`. Names, MACs, addresses and MTUs come from the topology
file. Namespaces pkvx<hex>-*, unique per run, are always deleted; every process started here is
stopped by its PID.

Compared per capture point (pod veth, cni0, flannel.1, eth0, both nodes): every IPv4 frame of the
two echo requests (id 0x5045, seq 1 and 2, 56 bytes, as pktemu's ping sends them) and their
replies, and the TCP SYN and SYN-ACK to pod2:8080: MACs, inner and outer addresses, TTLs, protocol,
DF, VNI, the outer UDP destination port and a non-zero outer UDP checksum (the kernel's default is
`udpcsum`; tcpdump on a veth shows its offloaded partial value, so only "not zero" is compared).
The outer UDP source port is the kernel's flow hash keyed with a per-boot secret: compared as
"in [32768, 61000)" and "the same for both echo requests" (one flow), never exactly. The outer IP
ID (a per-destination counter with a random start) is not compared.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror
from scapy.layers.l2 import Ether
from scapy.layers.vxlan import VXLAN
from scapy.utils import rdpcap

import pktemu
from datapaths import ROOT

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or any(shutil.which(t) is None for t in ("ip", "bridge", "tcpdump")),
    reason="builds network namespaces: needs root, ip, bridge and tcpdump")

TOPO = ROOT / "topologies" / "flannel-vxlan.yaml"
POINTS = ["pod1-eth0", "node1-veth-pod1", "node1-cni0", "node1-flannel.1", "node1-eth0",
          "node2-eth0", "node2-flannel.1", "node2-cni0", "node2-veth-pod2", "pod2-eth0"]

PING = r'''
import socket, struct, sys, time
def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b)); s = (s >> 16) + (s & 0xffff); s += s >> 16
    return ~s & 0xffff
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP); s.settimeout(1)
payload = bytes(i & 0xff for i in range(int(sys.argv[2])))
got = 0
for seq in range(1, int(sys.argv[3]) + 1):
    h = struct.pack("!BBHHH", 8, 0, 0, 0x5045, seq)
    s.sendto(struct.pack("!BBHHH", 8, 0, csum(h + payload), 0x5045, seq) + payload, (sys.argv[1], 0))
    end = time.time() + 1
    while time.time() < end:
        try:
            d = s.recv(2048)
        except OSError:
            break
        if d[20] == 0 and struct.unpack("!H", d[24:26])[0] == 0x5045:
            got += 1; break
        if d[20] == 3:
            print("ICMP", d[21], struct.unpack("!H", d[26:28])[0]); break
    time.sleep(0.2)
print("REPLIES", got)
'''
SERVER = r'''
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8080)); s.listen(); print("ready", flush=True)
c, _ = s.accept(); c.recv(4096)
c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 16\r\nConnection: close\r\n\r\nhello from pod2\n"); c.close()
'''
CLIENT = r'''
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", 40000))
s.settimeout(3); s.connect(("10.244.1.2", 8080))
s.sendall(b"GET / HTTP/1.1\r\nHost: 10.244.1.2\r\n\r\n"); print(s.recv(4096).split(b"\r\n")[0].decode())
'''


def sh(*a: str, check: bool = True) -> str:
    p = subprocess.run(list(a), capture_output=True, text=True, timeout=30)
    if check and p.returncode:
        raise RuntimeError(f"{' '.join(a)}: {p.stderr.strip()}")
    return p.stdout


class Lab:
    """The topology file's nodes and pods as namespaces pkvx<hex>-<name>."""

    def __init__(self) -> None:
        self.t: dict[str, Any] = yaml.safe_load(TOPO.read_text())
        tag = uuid.uuid4().hex[:6]
        self.ns = {n: f"pkvx{tag}-{n}" for n in [*self.t["nodes"], *self.t["pods"]]}
        self.procs: list[subprocess.Popen[bytes]] = []

    def x(self, n: str, *a: str, check: bool = True) -> str:
        return sh("ip", "netns", "exec", self.ns[n], *a, check=check)

    def veth(self, a: str, an: str, b: str, bn: str) -> None:
        sh("ip", "link", "add", "pkvxa", "netns", self.ns[a], "type", "veth", "peer", "name", "pkvxb",
           "netns", self.ns[b])
        self.x(a, "ip", "link", "set", "pkvxa", "name", an)
        self.x(b, "ip", "link", "set", "pkvxb", "name", bn)

    def build(self) -> None:
        for n in self.ns.values():
            sh("ip", "netns", "add", n)
        for n in self.ns:
            self.x(n, "ip", "link", "set", "lo", "up")
            self.x(n, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", check=False)
            self.x(n, "sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1", check=False)
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

    def bg(self, n: str, *a: str, out: Path | None = None) -> subprocess.Popen[bytes]:
        f = open(out, "wb") if out else subprocess.DEVNULL
        p = subprocess.Popen(["ip", "netns", "exec", self.ns[n], *a], stdout=f, stderr=subprocess.STDOUT)
        self.procs.append(p)
        return p

    def capture(self, tmp: Path, points: list[str]) -> list[subprocess.Popen[bytes]]:
        procs = []
        for point in points:
            n, _, dev = point.partition("-")
            procs.append(self.bg(n, "tcpdump", "-p", "-U", "--immediate-mode", "-n", "-i", dev,
                                 "-w", str(tmp / f"{point}.pcap"), out=tmp / f"{point}.log"))
        end = time.time() + 10
        while time.time() < end and not all(b"listening" in (tmp / f"{p}.log").read_bytes() for p in points):
            time.sleep(0.1)
        return procs

    @staticmethod
    def stop(procs: list[subprocess.Popen[bytes]]) -> None:
        time.sleep(0.5)
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def close(self) -> None:
        self.stop(self.procs)
        for n in self.ns.values():
            sh("ip", "netns", "del", n, check=False)


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Run the scenario, then the frag-needed probe, in the namespaces; their captures."""
    tmp = tmp_path_factory.mktemp("kernel-vxlan")
    lab = Lab()
    try:
        try:
            lab.build()
        except (RuntimeError, OSError) as e:
            pytest.skip(f"cannot build namespaces here: {e}")
        caps = lab.capture(tmp, POINTS)
        ping = lab.x("pod1", "python3", "-c", PING, "10.244.1.2", "56", "2")
        srv = lab.bg("pod2", "python3", "-c", SERVER, out=tmp / "server.txt")
        end = time.time() + 5
        while time.time() < end and b"ready" not in (tmp / "server.txt").read_bytes():
            time.sleep(0.05)
        http = lab.x("pod1", "python3", "-c", CLIENT, check=False)
        srv.wait(timeout=5)
        lab.stop(caps)
        frames = {p: list(rdpcap(str(tmp / f"{p}.pcap"))) for p in POINTS}
        # pod1 with MTU 1500 (node1's end too): 1500 bytes with DF meet flannel.1's 1450
        for n, dev in (("pod1", "eth0"), ("node1", "veth-pod1")):
            lab.x(n, "ip", "link", "set", dev, "mtu", "1500")
        (tmp / "big").mkdir()
        big_caps = lab.capture(tmp / "big", ["pod1-eth0"])
        big = lab.x("pod1", "python3", "-c", PING, "10.244.1.2", "1472", "1")
        lab.stop(big_caps)
        yield {"ping": ping, "http": http, "frames": frames, "big": big,
               "big_frames": list(rdpcap(str(tmp / "big" / "pod1-eth0.pcap")))}
    finally:
        lab.close()


@pytest.fixture(scope="module")
def emulated() -> dict[str, list[Any]]:
    net = pktemu.Network.load(TOPO, "ping-and-http")
    net.run(duration=3)
    return {p: list(net.sniff(p)) for p in POINTS}


def hop(p: Any) -> tuple[Any, ...] | None:
    """What is compared of one captured frame: outer and inner headers, or None to skip it."""
    if IP not in p:
        return None
    out: tuple[Any, ...] = ()
    if UDP in p and p[UDP].dport == 8472:
        o = p
        v = VXLAN(bytes(p[UDP].payload))
        out = (o[Ether].src, o[Ether].dst, o[IP].src, o[IP].dst, o[IP].ttl, o[IP].flags.DF, o[IP].tos,
               o[IP].proto, o[UDP].dport, o[UDP].chksum != 0, 32768 <= o[UDP].sport < 61000,
               v.flags, v.vni)
        p = v[Ether]
    i = p[IP]
    if ICMP in p and p[ICMP].type in (0, 8) and p[ICMP].id == 0x5045:
        what: tuple[Any, ...] = ("icmp", p[ICMP].type, p[ICMP].seq, len(p[ICMP].payload))
    elif TCP in p and p[TCP].flags in ("S", "SA") and 8080 in (p[TCP].sport, p[TCP].dport):
        what = ("tcp", str(p[TCP].flags), p[TCP].sport, p[TCP].dport)
    else:
        return None
    return out + (p[Ether].src, p[Ether].dst, i.src, i.dst, i.ttl, i.flags.DF, i.proto) + what


def test_the_kernel_scenario_worked(kernel: dict[str, Any]) -> None:
    assert "REPLIES 2" in kernel["ping"], kernel["ping"]
    assert kernel["http"].startswith("HTTP/1.1 200 OK"), kernel["http"]


@pytest.mark.parametrize("point", POINTS)
def test_each_hop_matches_the_kernel(kernel: dict[str, Any], emulated: dict[str, list[Any]],
                                     point: str) -> None:
    real = [h for h in map(hop, kernel["frames"][point]) if h is not None]
    ours = [h for h in map(hop, emulated[point]) if h is not None]
    assert real, f"the kernel captured nothing to compare at {point}"
    assert ours == real


@pytest.mark.parametrize("point", ["node1-eth0", "node2-eth0"])
def test_one_flow_one_source_port(kernel: dict[str, Any], emulated: dict[str, list[Any]], point: str) -> None:
    for frames in (kernel["frames"][point], emulated[point]):
        ports = [p[UDP].sport for p in frames if UDP in p and p[UDP].dport == 8472
                 and ICMP in VXLAN(bytes(p[UDP].payload)) and VXLAN(bytes(p[UDP].payload))[ICMP].type == 8]
        assert len(ports) == 2 and ports[0] == ports[1]


def test_too_big_inner_packet_frag_needed_matches_the_kernel(kernel: dict[str, Any]) -> None:
    assert "ICMP 4 1450" in kernel["big"], kernel["big"]
    real = [p for p in kernel["big_frames"] if ICMP in p and p[ICMP].type == 3]
    t = yaml.safe_load(TOPO.read_text())
    del t["pods"]["pod1"]["mtu"]
    app = {"kind": "ping", "target": "10.244.1.2", "count": 1, "size": 1472}
    t["scenarios"] = {"big": {"traffic": [{"at": "0ms", "pod": "pod1", "app": app}]}}
    net = pktemu.Network.load(t, "big")
    net.run(duration=2)
    ours = [p for p in net.sniff("pod1-eth0") if ICMP in p and p[ICMP].type == 3]

    def err(p: Any) -> tuple[Any, ...]:
        return (p[IP].src, p[IP].dst, p[IP].ttl, p[IP].tos, p[IP].flags.DF, p[IP].len, p[ICMP].code,
                p[ICMP].nexthopmtu, p[IPerror].ttl, p[IPerror].len)

    assert real and ours and err(ours[0]) == err(real[0])
