"""topologies/flannel-vxlan-service.yaml in real network namespaces (needs root, ip, bridge,
tcpdump, iptables-restore): a pod-to-Service flow across two nodes over flannel VXLAN held hop
by hop to pktemu. The namespaces are built as tests/test_kernel_vxlan.py builds flannel-vxlan
(tests/vxlan_kernel.py), from the topology as pktemu reads it (the `extends` merge included);
each node then loads, with iptables-nft-restore (iptables-restore where there is no -nft), the
rules `pktemu rules flannel-vxlan-service.yaml --node NODE` prints: exactly what pktemu's
kube-proxy wrote and its run uses. Namespaces pkvs<hex>-*, unique per run, are always deleted;
every process started here is stopped by its PID.

pod1 opens TCP from port 40000 to the ClusterIP 10.96.0.80:80 and sends pktemu's http-client
request; pod2 answers on 8080 with pktemu's http-server response. Compared per capture point (the
pods' veths, cni0, flannel.1 and eth0 of both nodes): the SYN, the SYN-ACK, the request and
response segments and both FINs, each with its MACs, inner and outer addresses and ports (the
ClusterIP on pod1's side, pod2's address from node1's cni0 on, where br_netfilter has already run
PREROUTING's DNAT, and the ClusterIP again once node1's conntrack un-DNATed the reply), TTLs, DF,
protocol, TCP flags, payload length, window and MSS option (1410: the pods' MTU of 1450 less 40),
VNI, outer UDP destination port and a non-zero outer checksum. Pure ACKs are left out: when each
side acknowledges is the TCP stacks' timing (delayed ACKs), not the network's path.

The outer UDP source port is compared as "in [32768, 61000)" and "one port for every frame of a
direction", never exactly: the kernel takes it from the packet's hash, for TCP the sending
socket's random txhash (so its two directions have different ports); pktemu hashes the flow with
a secret from the run's seed (one port both ways).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from typing import Any, Iterator

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.utils import rdpcap

import pktemu
from conftest import pktemu as pktemu_cli
from datapaths import ROOT
from pktemu.io.topofile import _load_doc
from vxlan_kernel import Lab, inner, vxlan_outer

TOOLS = ("ip", "bridge", "tcpdump", "iptables-restore")
pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or any(shutil.which(t) is None for t in TOOLS),
    reason="builds network namespaces: needs root and " + ", ".join(TOOLS))

TOPO = ROOT / "topologies" / "flannel-vxlan-service.yaml"
SCENARIO = "clusterip"
POINTS = ["pod1-eth0", "node1-veth-pod1", "node1-cni0", "node1-flannel.1", "node1-eth0",
          "node2-eth0", "node2-flannel.1", "node2-cni0", "node2-veth-pod2", "pod2-eth0"]
CLUSTER_IP, POD2 = "10.96.0.80", "10.244.1.2"
REQUEST = (b"GET / HTTP/1.1\r\nHost: 10.96.0.80\r\nUser-Agent: pktemu-client/1\r\nAccept: */*\r\n"
           b"Connection: close\r\n\r\n")
RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 16\r\nConnection: close\r\n"
            b"\r\nhello from pod2\n")

SERVER = r'''
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8080)); s.listen(); print("ready", flush=True)
c, peer = s.accept(); print("peer", *peer, flush=True)
want, got = int(sys.argv[2]), b""
while len(got) < want:
    d = c.recv(4096)
    if not d:
        break
    got += d
c.sendall(bytes.fromhex(sys.argv[1])); c.close()
'''
CLIENT = r'''
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", 40000))
s.settimeout(3); s.connect(("10.96.0.80", 80)); s.sendall(bytes.fromhex(sys.argv[1]))
got = b""
while True:
    d = s.recv(4096)
    if not d:
        break
    got += d
print(got.split(b"\r\n")[0].decode(), got.endswith(b"hello from pod2\n")); s.close()
'''


def restore_tool() -> str:
    """iptables-nft-restore where it exists (the nodes' backend, as the kernel oracle picks it)."""
    return "iptables-nft-restore" if shutil.which("iptables-nft-restore") else "iptables-restore"


@pytest.fixture(scope="module")
def rules() -> dict[str, str]:
    """Each node's ruleset as pktemu's kube-proxy wrote it, in iptables-save format."""
    return {n: pktemu_cli("rules", str(TOPO), "--node", n).stdout for n in ("node1", "node2")}


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory, rules: dict[str, str]) -> Iterator[dict[str, Any]]:
    """The scenario in the namespaces: its captures, what the apps saw, the nodes' rules after."""
    tmp = tmp_path_factory.mktemp("kernel-vxlan-service")
    lab = Lab(_load_doc(str(TOPO), (os.path.realpath(TOPO),)).values, "pkvs")
    try:
        try:
            lab.build()
            for node, text in rules.items():
                subprocess.run(["ip", "netns", "exec", lab.ns[node], restore_tool()], input=text,
                               capture_output=True, text=True, timeout=30, check=True)
        except (RuntimeError, OSError, subprocess.CalledProcessError) as e:
            pytest.skip(f"cannot build namespaces and rules here: {e}")
        caps = lab.capture(tmp, POINTS)
        srv = lab.bg("pod2", "python3", "-c", SERVER, RESPONSE.hex(), str(len(REQUEST)),
                     out=tmp / "server.txt")
        end = time.time() + 5
        while time.time() < end and b"ready" not in (tmp / "server.txt").read_bytes():
            time.sleep(0.05)
        client = lab.x("pod1", "python3", "-c", CLIENT, REQUEST.hex(), check=False)
        srv.wait(timeout=5)
        lab.stop(caps)
        saved = {n: lab.x(n, "iptables-save") for n in rules}
        yield {"client": client, "server": (tmp / "server.txt").read_text(), "saved": saved,
               "frames": {p: list(rdpcap(str(tmp / f"{p}.pcap"))) for p in POINTS}}
    finally:
        lab.close()


@pytest.fixture(scope="module")
def emulated() -> dict[str, list[Any]]:
    net = pktemu.Network.load(TOPO, SCENARIO)
    net.run(duration=3)
    return {p: list(net.sniff(p)) for p in POINTS}


def hop(p: Any) -> tuple[Any, ...] | None:
    """What is compared of a frame of the flow (outer and inner headers), None for anything else."""
    if IP not in p:
        return None
    out, q = vxlan_outer(p)
    if TCP not in q or 40000 not in (q[TCP].sport, q[TCP].dport):
        return None
    t = q[TCP]
    if t.flags.S or t.flags.F or len(t.payload):
        mss = [v for k, v in t.options if k == "MSS"]
        return out + inner(q) + (str(t.flags), t.sport, t.dport, len(t.payload), t.window, mss)
    return None


def test_the_kernel_scenario_worked(kernel: dict[str, Any]) -> None:
    assert kernel["client"].strip() == "HTTP/1.1 200 OK True", kernel["client"]
    # pod2 saw pod1's own address: a pod source is inside --cluster-cidr, so no masquerade
    assert "peer 10.244.0.2 40000" in kernel["server"], kernel["server"]


def tables(save: str) -> dict[str, list[str]]:
    """iptables-save text as each table's rules (tables in any order: iptables-nft-save has its own)."""
    out: dict[str, list[str]] = {}
    for ln in save.splitlines():
        if ln.startswith("*"):
            table = out.setdefault(ln[1:], [])
        elif ln.startswith("-A "):
            table.append(ln)
    return out


def test_the_kernel_loaded_pktemus_rules(kernel: dict[str, Any], rules: dict[str, str]) -> None:
    for node, text in rules.items():
        ours = tables(text)
        assert f"-A KUBE-SERVICES -d {CLUSTER_IP}/32 -p tcp" in text
        assert f"--to-destination {POD2}:8080" in text
        assert "-A KUBE-SVC-CDGGSHYLG3RE2FKL ! -s 10.244.0.0/16" in text      # the --cluster-cidr rule
        assert tables(kernel["saved"][node]) == ours


@pytest.mark.parametrize("point", POINTS)
def test_each_hop_matches_the_kernel(kernel: dict[str, Any], emulated: dict[str, list[Any]],
                                     point: str) -> None:
    real = [h for h in map(hop, kernel["frames"][point]) if h is not None]
    ours = [h for h in map(hop, emulated[point]) if h is not None]
    assert len(real) == 6, f"the kernel's flow at {point}: {real}"
    assert ours == real


@pytest.mark.parametrize("point", POINTS)
def test_dnat_on_node1_and_undnat_by_its_conntrack(emulated: dict[str, list[Any]], point: str) -> None:
    """The request's destination is the ClusterIP up to node1's cni0, where br_netfilter has run
    PREROUTING's DNAT before the bridge passes the frame up (as the kernel's capture shows too);
    the reply's source is pod2's address until node1's POSTROUTING to cni0 un-DNATs it."""
    flow = [vxlan_outer(p)[1][IP] for p in emulated[point] if hop(p) is not None]
    pod_side = POINTS.index(point) <= POINTS.index("node1-cni0")
    request_dst = CLUSTER_IP if POINTS.index(point) < POINTS.index("node1-cni0") else POD2
    reply_src = CLUSTER_IP if pod_side else POD2
    assert {(i.src, i.dst) for i in flow} == {("10.244.0.2", request_dst), (reply_src, "10.244.0.2")}


@pytest.mark.parametrize("point", ["node1-eth0", "node2-eth0"])
def test_one_flow_one_source_port_each_way(kernel: dict[str, Any], emulated: dict[str, list[Any]],
                                           point: str) -> None:
    for frames in (kernel["frames"][point], emulated[point]):
        by_dir: dict[str, set[int]] = {}
        for p in frames:
            if UDP in p and p[UDP].dport == 8472 and hop(p) is not None:
                by_dir.setdefault(p[IP].src, set()).add(p[UDP].sport)
        assert sorted(by_dir) == ["192.168.50.11", "192.168.50.12"]
        assert all(len(ports) == 1 for ports in by_dir.values()), by_dir

