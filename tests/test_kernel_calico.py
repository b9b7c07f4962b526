"""topologies/calico-ipip.yaml built out of real network namespaces (needs root, ip, tcpdump), as
Calico's CNI plugin and Felix set it up, and held hop by hop against `pktemu run`'s pcaps of the
same scenarios: pods with a /32 on eth0 and `default via 169.254.1.1 dev eth0 onlink`, host-side
cali veths with no address, MAC ee:ee:ee:ee:ee:ee, proxy_arp=1, neigh proxy_delay=0, `<pod>/32
dev cali...` routes; between nodes the ipip module's fallback tunl0 with an address from the
node's block and `<peer block> via <peer node> dev tunl0 onlink`.

Compared per capture point: every ARP frame (Ethernet addresses, opcode, sender and target
hardware and protocol addresses: the proxy ARP answer for 169.254.1.1 carries the cali veth's
MAC), and every IPv4 frame of the echo requests/replies (id, seq, 56 bytes) and the TCP SYN and
SYN-ACK to port 8080: MACs, addresses, TTL, DF, protocol, and on IPIP packets the outer header too
(addresses, protocol 4, TTL, DF, TOS). The outer IP ID is not compared. Then the proxy ARP
conditions (PROBES), one change on node1 after another, each followed by pod1's broadcast who-has:
the replies (or none) must be pktemu's. The random proxy_delay wait itself is not compared.

The tunnel needs the kernel's ipip module (tunl0 appears in every namespace once it is loaded).
Without it (a kernel built without CONFIG_NET_IPIP, no modprobe), the cross-node scenario skips
and the same-node scenario is compared on the topology without tunl0 and its routes: on both
sides, the host's ARP requests to the pod then take eth0's address (inet_select_addr), not
tunl0's. Namespaces pkcal<hex>-*, unique per run, are always deleted; every process started here
is stopped by its PID.
"""
from __future__ import annotations

import copy
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from conftest import pktemu

import pktemu as pk
from scapy.layers.inet import ICMP, IP, TCP
from scapy.layers.l2 import ARP, Ether
from scapy.utils import rdpcap

from datapaths import ROOT
from netns_lab import NetnsLab, sh

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or any(shutil.which(t) is None for t in ("ip", "tcpdump")),
    reason="builds network namespaces: needs root, ip and tcpdump")

TOPO = ROOT / "topologies" / "calico-ipip.yaml"
SAME = ["pod1-eth0", "node1-calia1b2c3d4e5f", "node1-cali6a7b8c9d0e1", "pod3-eth0"]
CROSS = ["pod1-eth0", "node1-calia1b2c3d4e5f", "node1-tunl0", "node1-eth0",
         "node2-eth0", "node2-tunl0", "node2-cali0f1e2d3c4b5", "pod2-eth0"]

PING = r'''
import socket, struct, sys, time
def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b)); s = (s >> 16) + (s & 0xffff); s += s >> 16
    return ~s & 0xffff
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP); s.settimeout(1)
payload = bytes(i & 0xff for i in range(56)); ident = int(sys.argv[2], 0)
got = 0
for seq in (1, 2):
    h = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    s.sendto(struct.pack("!BBHHH", 8, 0, csum(h + payload), ident, seq) + payload, (sys.argv[1], 0))
    end = time.time() + 1
    while time.time() < end:
        try:
            d = s.recv(2048)
        except OSError:
            break
        if d[20] == 0 and struct.unpack("!H", d[24:26])[0] == ident:
            got += 1; break
    time.sleep(0.2)
print("REPLIES", got)
'''
SERVER = r'''
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8080)); s.listen(); print("ready", flush=True)
c, _ = s.accept(); c.recv(4096)
head = b"HTTP/1.1 200 OK\r\nContent-Length: 16\r\nConnection: close\r\n\r\n"
c.sendall(head + sys.argv[1].encode() + b"\n")
c.close()
'''
CLIENT = r'''
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[2])))
s.settimeout(3); s.connect((sys.argv[1], 8080))
s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"); print(s.recv(4096).split(b"\r\n")[0].decode())
'''

WHO_HAS = r'''
import socket, struct, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806)); s.bind(("eth0", 0))
mac = s.getsockname()[4]; tip = socket.inet_aton(sys.argv[1]); sip = socket.inet_aton(sys.argv[2])
arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac + sip + b"\0" * 6 + tip
s.send(b"\xff" * 6 + mac + b"\x08\x06" + arp)
s.settimeout(0.2); end = time.time() + 1.5
while time.time() < end:
    try:
        d = s.recv(100)
    except OSError:
        continue
    if d[20:22] == b"\0\x02" and d[28:32] == tip:
        print("REPLY", socket.inet_ntoa(d[28:32]), d[22:28].hex(":"))
print("DONE")
'''


def kernel_has_ipip() -> bool:
    """The fallback tunl0 exists in a fresh namespace once the ipip module is loaded."""
    ns = f"pkcal{uuid.uuid4().hex[:6]}-probe"
    try:
        sh("ip", "netns", "add", ns)
        return "tunl0" in sh("ip", "netns", "exec", ns, "ip", "link", "show", check=False)
    except (RuntimeError, OSError):
        return False
    finally:
        sh("ip", "netns", "del", ns, check=False)


def without_tunnel(t: dict[str, Any]) -> dict[str, Any]:
    """The topology minus tunl0 and the routes through it (for a kernel without ipip)."""
    t = copy.deepcopy(t)
    for node in t["nodes"].values():
        node["interfaces"].pop("tunl0", None)
        node["routes"] = [r for r in node.get("routes", []) if r.get("dev") != "tunl0"]
    t["captures"] = [c for c in t["captures"] if not c.endswith("-tunl0")]
    return t


class Lab(NetnsLab):
    """The topology's nodes (pods are nodes here too) as namespaces pkcal<hex>-<name>."""

    def __init__(self, t: dict[str, Any]) -> None:
        super().__init__(list(t["nodes"]), "pkcal")
        self.t = t

    def build(self) -> None:
        self.add_namespaces()
        for a, b in self.t["veths"]:
            (an, ai), (bn, bi) = a.split("/"), b.split("/")
            self.veth(an, ai, bn, bi)
        for name, node in self.t["nodes"].items():
            for dev, ifc in node["interfaces"].items():
                if ifc.get("mac") and ifc.get("type") != "ipip":
                    self.x(name, "ip", "link", "set", dev, "address", ifc["mac"])
                if ifc.get("mtu"):
                    self.x(name, "ip", "link", "set", dev, "mtu", str(ifc["mtu"]))
                for a in ifc.get("addresses", []):
                    self.x(name, "ip", "addr", "add", a, "dev", dev)
                self.x(name, "ip", "link", "set", dev, "up")
            for k, v in node.get("sysctls", {}).items():
                self.x(name, "sysctl", "-qw", f"{k}={v}")
            for r in node.get("routes", []):
                cmd = ["ip", "route", "add", r["to"]]
                cmd += ["via", r["via"]] if r.get("via") else []
                cmd += ["dev", r["dev"]] if r.get("dev") else []
                cmd += ["onlink"] if r.get("onlink") else []
                self.x(name, *cmd)
        time.sleep(0.3)

    def scenario(self, tmp: Path, points: list[str], client: str, server: str, target: str, ident: str,
                 sport: str, body: str) -> dict[str, Any]:
        tmp.mkdir()
        caps = self.capture(tmp, points)
        ping = self.x(client, "python3", "-c", PING, target, ident)
        srv = self.bg(server, "python3", "-c", SERVER, body, out=tmp / "server.txt")
        end = time.time() + 5
        while time.time() < end and b"ready" not in (tmp / "server.txt").read_bytes():
            time.sleep(0.05)
        http = self.x(client, "python3", "-c", CLIENT, target, sport, check=False)
        srv.wait(timeout=5)
        self.stop(caps)
        frames = {p: list(rdpcap(str(tmp / f"{p}.pcap"))) for p in points}
        return {"ping": ping, "http": http, "frames": frames}


@pytest.fixture(scope="module")
def ipip() -> bool:
    return kernel_has_ipip()


@pytest.fixture(scope="module")
def topo(ipip: bool) -> dict[str, Any]:
    t: dict[str, Any] = yaml.safe_load(TOPO.read_text())
    return t if ipip else without_tunnel(t)


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory, ipip: bool,
           topo: dict[str, Any]) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("kernel-calico")
    lab = Lab(topo)
    try:
        try:
            lab.build()
        except (RuntimeError, OSError) as e:
            pytest.skip(f"cannot build namespaces here: {e}")
        runs = {"same-node": lab.scenario(tmp / "same", SAME, "pod1", "pod3", "10.244.0.6", "0x5046",
                                          "40001", "hello from pod3")}
        runs["who-has"] = proxy_arp_probes(lab)
        if ipip:
            runs["cross-node"] = lab.scenario(tmp / "cross", CROSS, "pod1", "pod2", "10.244.1.5", "0x5045",
                                              "40000", "hello from pod2")
        yield runs
    finally:
        lab.close()


CALI = "calia1b2c3d4e5f"
#: (what is changed on node1 first, target asked for by pod1): the proxy ARP conditions
PROBES: list[tuple[str, list[str], str]] = [
    ("default proxy_delay", ["sysctl", "-qw", f"net.ipv4.neigh.{CALI}.proxy_delay=80"], "169.254.1.1"),
    ("route via the same device", ["ip", "route", "add", "10.244.0.64/26", "dev", CALI], "10.244.0.70"),
    ("no route", ["ip", "route", "del", "default"], "169.254.1.1"),
    ("still routed elsewhere", ["true"], "10.244.0.6"),
    ("proxy_arp off", ["sysctl", "-qw", f"net.ipv4.conf.{CALI}.proxy_arp=0"], "10.244.0.6"),
]


def proxy_arp_probes(lab: Lab) -> dict[str, str]:
    """Each change on node1 in turn (they accumulate), then pod1's who-has: the replies seen."""
    out = {}
    for what, cmd, target in PROBES:
        lab.x("node1", *cmd)
        out[what] = lab.x("pod1", "python3", "-c", WHO_HAS, target, "10.244.0.5")
    return out


@pytest.fixture(scope="module")
def emulated_who_has(topo: dict[str, Any]) -> dict[str, str]:
    """The same changes in pktemu, the request sent onto node1's cali veth from pod1's side."""
    t = copy.deepcopy(topo)
    sysctls, routes = t["nodes"]["node1"]["sysctls"], t["nodes"]["node1"]["routes"]
    t["scenarios"] = {"idle": {"traffic": []}}
    out = {}
    for what, cmd, target in PROBES:
        if cmd[0] == "sysctl":
            k, v = cmd[2].split("=")
            sysctls[k] = int(v)
        elif cmd[:3] == ["ip", "route", "add"]:
            routes.append({"to": cmd[3], "dev": cmd[5]})
        elif cmd[:3] == ["ip", "route", "del"]:
            routes[:] = [r for r in routes if r["to"] != "default"]
        net = pk.Network.load(copy.deepcopy(t), "idle")
        net.sendp(f"node1/{CALI}", Ether(src="0a:58:0a:f4:00:05", dst="ff:ff:ff:ff:ff:ff")
                  / ARP(op=1, hwsrc="0a:58:0a:f4:00:05", psrc="10.244.0.5", pdst=target))
        net.run(duration=1.5)
        out[what] = "".join(f"REPLY {p[ARP].psrc} {p[ARP].hwsrc}\n" for p in net.sniff(f"node1-{CALI}")
                            if ARP in p and p[ARP].op == 2) + "DONE\n"
    return out


@pytest.fixture(scope="module")
def emulated(tmp_path_factory: pytest.TempPathFactory,
             topo: dict[str, Any]) -> dict[str, dict[str, list[Any]]]:
    """`pktemu run` of the same topology: its pcaps as written on disk."""
    tmp = tmp_path_factory.mktemp("pktemu-calico")
    (tmp / "t.yaml").write_text(yaml.safe_dump(topo))
    pktemu("run", str(tmp / "t.yaml"), "--out", str(tmp / "out"), "-q")
    out: dict[str, dict[str, list[Any]]] = {}
    for sc in ("same-node", "cross-node"):
        pdir = tmp / "out" / sc / "pcap"
        out[sc] = {p.stem: list(rdpcap(str(p))) for p in pdir.glob("*.pcap")}
    return out


def hop(p: Any) -> tuple[Any, ...] | None:
    """What is compared of one captured frame, or None to skip it."""
    l2: tuple[Any, ...] = (p[Ether].src, p[Ether].dst) if Ether in p else ("raw",)
    if ARP in p:
        a = p[ARP]
        return l2 + ("arp", a.op, a.hwsrc, a.psrc, a.hwdst, a.pdst)
    if IP not in p:
        return None
    out: tuple[Any, ...] = ()
    i = p[IP]
    if i.proto == 4:
        out = ("ipip", i.src, i.dst, i.ttl, i.flags.DF, i.tos)
        i = i.payload
        if not isinstance(i, IP):
            return None
    if ICMP in i and i[ICMP].type in (0, 8) and i[ICMP].id in (0x5045, 0x5046):
        what: tuple[Any, ...] = ("icmp", i[ICMP].type, i[ICMP].seq, len(i[ICMP].payload))
    elif TCP in i and i[TCP].flags in ("S", "SA") and 8080 in (i[TCP].sport, i[TCP].dport):
        what = ("tcp", str(i[TCP].flags), i[TCP].sport, i[TCP].dport)
    else:
        return None
    return l2 + out + (i.src, i.dst, i.ttl, i.flags.DF, i.proto) + what


def test_the_kernel_scenarios_worked(kernel: dict[str, Any]) -> None:
    for name, run in kernel.items():
        if name == "who-has":
            continue
        assert "REPLIES 2" in run["ping"], run["ping"]
        assert run["http"].startswith("HTTP/1.1 200 OK"), run["http"]


def test_proxy_arp_answers_with_the_cali_mac_in_the_kernel(kernel: dict[str, Any]) -> None:
    arps = [p[ARP] for p in kernel["same-node"]["frames"]["pod1-eth0"] if ARP in p and p[ARP].op == 2]
    assert any(a.psrc == "169.254.1.1" and a.hwsrc == "ee:ee:ee:ee:ee:ee" for a in arps), arps


@pytest.mark.parametrize("point", SAME)
def test_same_node_hops_match_the_kernel(kernel: dict[str, Any], emulated: dict[str, Any],
                                         point: str) -> None:
    real = [h for h in map(hop, kernel["same-node"]["frames"][point]) if h is not None]
    ours = [h for h in map(hop, emulated["same-node"][point]) if h is not None]
    assert real, f"the kernel captured nothing to compare at {point}"
    assert ours == real


@pytest.mark.parametrize("point", CROSS)
def test_cross_node_hops_match_the_kernel(kernel: dict[str, Any], emulated: dict[str, Any], ipip: bool,
                                          point: str) -> None:
    if not ipip:
        pytest.skip("this kernel has no ipip module (no tunl0 in a new namespace): the tunnel cannot be "
                    "built here")
    real = [h for h in map(hop, kernel["cross-node"]["frames"][point]) if h is not None]
    ours = [h for h in map(hop, emulated["cross-node"][point]) if h is not None]
    assert real, f"the kernel captured nothing to compare at {point}"
    assert ours == real


@pytest.mark.parametrize("what", [w for w, _c, _t in PROBES])
def test_proxy_arp_conditions_match_the_kernel(kernel: dict[str, Any], emulated_who_has: dict[str, str],
                                               what: str) -> None:
    real = kernel["who-has"][what]
    assert real.endswith("DONE\n"), real
    assert emulated_who_has[what] == real
    assert ("REPLY" in real) == (what in ("default proxy_delay", "still routed elsewhere"))
