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
import time
from typing import Any, Iterator

import pytest
import yaml
from scapy.layers.inet import ICMP, IP, UDP, IPerror
from scapy.layers.vxlan import VXLAN
from scapy.utils import rdpcap

import pktemu
from datapaths import ROOT
from vxlan_kernel import Lab, hop

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


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Run the scenario, then the frag-needed probe, in the namespaces; their captures."""
    tmp = tmp_path_factory.mktemp("kernel-vxlan")
    lab = Lab(yaml.safe_load(TOPO.read_text()), "pkvx")
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
