"""VXLAN devices as flannel uses them (pktemu.net.vxlan, topologies/flannel-vxlan.yaml): the
encapsulation on the underlay, the decapsulation at the far node, an FDB miss, the default
all-zeros FDB entry, a VNI nobody serves, the ICMP frag-needed a too-big inner packet gets, and
the topology file's checks. tests/test_kernel_vxlan.py holds the same topology to the kernel.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from scapy.layers.inet import ICMP, IP, UDP, IPerror
from scapy.layers.l2 import Ether
from scapy.layers.vxlan import VXLAN

import pktemu
from conftest import pktemu as run_cli
from datapaths import ROOT
from pktemu.net.frame import Frame
from pktemu.net.vxlan import PORT_MAX, PORT_MIN, flow_hash, udp_flow_src_port

TOPO = ROOT / "topologies" / "flannel-vxlan.yaml"
N1_VTEP_MAC, N2_VTEP_MAC = "5a:fa:0a:f4:00:00", "5a:fa:0a:f4:01:00"


def topology() -> dict[str, Any]:
    t: dict[str, Any] = yaml.safe_load(TOPO.read_text())
    return t


def vxlan_of(node: dict[str, Any]) -> dict[str, Any]:
    v: dict[str, Any] = node["interfaces"]["flannel.1"]
    return v


def ping(t: dict[str, Any], **params: Any) -> pktemu.Network:
    app = {"kind": "ping", "target": "10.244.1.2", "count": 2, "interval": "200ms", **params}
    t["scenarios"] = {"ping": {"traffic": [{"at": "0ms", "pod": "pod1", "app": app}]}}
    net = pktemu.Network.load(t, "ping")
    net.run(duration=2)
    return net


def outer_frames(net: pktemu.Network, point: str) -> list[Any]:
    return [p for p in net.sniff(point) if UDP in p and p[UDP].dport == 8472]


def inner(p: Any) -> Any:
    return VXLAN(bytes(p[UDP].payload))


def test_shipped_copy_is_identical() -> None:
    assert (ROOT / "pktemu" / "examples" / "flannel-vxlan.yaml").read_bytes() == TOPO.read_bytes()


def test_encapsulation_on_the_underlay_as_the_kernel_builds_it() -> None:
    net = pktemu.Network.load(TOPO, "ping-and-http")
    net.run(duration=3)
    ping_res, http_res = net.results[:2]
    assert ping_res["received"] == 2 and [r["ttl"] for r in ping_res["replies"]] == [62, 62]
    assert http_res["http"]["status_line"] == "HTTP/1.1 200 OK"
    outer = [p for p in outer_frames(net, "node1-eth0") if p[IP].src == "192.168.50.11"]
    assert len(outer) >= 6                      # 2 echo requests + the TCP connection's segments
    for p in outer:
        assert (p[Ether].src, p[Ether].dst) == ("02:00:c0:a8:32:0b", "02:00:c0:a8:32:0c")
        assert (p[IP].dst, p[IP].ttl, p[IP].tos, p[IP].flags.DF) == ("192.168.50.12", 64, 0, False)
        assert PORT_MIN <= p[UDP].sport < PORT_MAX
        want = p[UDP].chksum
        assert want != 0
        q = p[IP].copy()
        del q[UDP].chksum
        assert IP(bytes(q))[UDP].chksum == want                  # udpcsum: the full checksum
        v = inner(p)
        assert (v.flags, v.vni) == (0x08, 1)
        assert (v[Ether].src, v[Ether].dst) == (N1_VTEP_MAC, N2_VTEP_MAC)
        assert (v[IP].src, v[IP].dst, v[IP].ttl) == ("10.244.0.2", "10.244.1.2", 63)
    echo = [p for p in outer if ICMP in inner(p)]
    assert len(echo) == 2 and echo[0][UDP].sport == echo[1][UDP].sport    # one flow, one port
    # tcpdump on flannel.1 sees exactly the inner frames, on node2 as received
    sent = [bytes(inner(p)[Ether]) for p in outer]
    assert [bytes(p) for p in net.sniff("node1-flannel.1") if p[IP].src == "10.244.0.2"] == sent
    assert [bytes(p) for p in net.sniff("node2-flannel.1") if p[IP].src == "10.244.0.2"] == sent
    assert [p[IP].ttl for p in net.sniff("pod2-eth0") if ICMP in p] == [62, 64, 62, 64]


@pytest.mark.skipif(shutil.which("tshark") is None, reason="needs tshark")
def test_frame_comments_say_what_the_tunnel_did(tmp_path: Path) -> None:
    run_cli("run", str(TOPO), "--out", str(tmp_path), "-q")
    out = subprocess.run(["tshark", "-r", str(tmp_path / "ping-and-http" / "all.pcapng"),
                          "-d", "udp.port==8472,vxlan", "-T", "fields", "-e", "frame.interface_name",
                          "-e", "vxlan.vni", "-e", "frame.comment"], capture_output=True, text=True,
                         timeout=60, check=True).stdout.splitlines()
    enc = [ln for ln in out if ln.startswith("node1/eth0\t1\t") and "encapsulated VNI 1" in ln]
    assert enc and "fdb 5a:fa:0a:f4:01:00 -> dst 192.168.50.12" in enc[0]
    assert "tshark -d udp.port==8472,vxlan" in enc[0]
    assert any(ln.startswith("node2/flannel.1\t") and "decapsulated VNI 1 from 192.168.50.11:" in ln
               for ln in out)


def test_fdb_miss_drops_with_the_reason() -> None:
    t = topology()
    vxlan_of(t["nodes"]["node1"])["fdb"] = []
    net = ping(t)
    assert net.results[0]["received"] == 0
    assert len([p for p in net.sniff("node1-flannel.1") if ICMP in p]) == 2   # tcpdump saw them first
    assert outer_frames(net, "node1-eth0") == []
    reasons = [d.reason for d in net.engine.drops if d.node == "node1" and d.where == "vxlan flannel.1"]
    assert len(reasons) == 2
    assert reasons[0].startswith("no FDB entry for 5a:fa:0a:f4:01:00 and no default 00:00:00:00:00:00 entry")


def test_default_all_zeros_fdb_entry_carries_unknown_macs() -> None:
    t = topology()
    vxlan_of(t["nodes"]["node1"])["fdb"] = [{"mac": "00:00:00:00:00:00", "dst": "192.168.50.12"}]
    net = ping(t)
    assert net.results[0]["received"] == 2
    assert len(outer_frames(net, "node2-eth0")) == 4


def test_unknown_vni_is_dropped_by_the_receiver() -> None:
    t = topology()
    vxlan_of(t["nodes"]["node2"])["vni"] = 2
    net = ping(t)
    assert net.results[0]["received"] == 0
    assert len(outer_frames(net, "node2-eth0")) == 2
    assert not [p for p in net.sniff("node2-flannel.1") if ICMP in p]
    assert [d.reason for d in net.engine.drops if d.node == "node2"] == ["no VXLAN device for VNI 1"] * 2


def test_too_big_inner_packet_gets_frag_needed_with_the_vxlan_mtu() -> None:
    """A pod with MTU 1500 sends 1500 bytes with DF: node1's forward to flannel.1 (MTU 1450)
    refuses it and sends ICMP frag-needed, next-hop MTU 1450, from cni0's address, quoting the
    datagram before its TTL was decremented, as the kernel did (test_kernel_vxlan.py)."""
    t = topology()
    del t["pods"]["pod1"]["mtu"]
    net = ping(t, size=1472, df=True)
    res = net.results[0]
    assert res["received"] == 0 and res["errors"][0] == {"from": "10.244.0.1", "type": 3, "code": 4}
    err = [p for p in net.sniff("pod1-eth0") if ICMP in p and p[ICMP].type == 3]
    assert err[0][ICMP].code == 4 and err[0][ICMP].nexthopmtu == 1450
    assert err[0][IP].src == "10.244.0.1" and err[0][IPerror].ttl == 64
    assert not [p for p in net.sniff("node1-flannel.1") if ICMP in p]
    assert net.engine.nodes["node1"].devices["flannel.1"].mtu == 1450      # eth0's 1500 - 50


def test_flow_hash_is_per_flow_and_direction_free() -> None:
    def tcp(s: str, sp: int, d: str, dp: int) -> Frame:
        p = Ether() / IP(src=s, dst=d) / UDP(sport=sp, dport=dp)
        return Frame(bytes(p))

    a = flow_hash(tcp("10.244.0.2", 40000, "10.244.1.2", 8080), 7)
    assert a == flow_hash(tcp("10.244.1.2", 8080, "10.244.0.2", 40000), 7)
    assert a != flow_hash(tcp("10.244.0.2", 40001, "10.244.1.2", 8080), 7)
    assert a != flow_hash(tcp("10.244.0.2", 40000, "10.244.1.2", 8080), 8)
    assert udp_flow_src_port(0) == PORT_MIN and udp_flow_src_port(0xFFFFFFFF) < PORT_MAX
    ports = {udp_flow_src_port(flow_hash(tcp("10.244.0.2", sp, "10.244.1.2", 80), 1)) for sp in range(200)}
    assert len(ports) > 150 and all(PORT_MIN <= x < PORT_MAX for x in ports)


@pytest.mark.parametrize(("path", "value", "message"), [
    (("interfaces", "flannel.1", "dev"), "eth9",
     "nodes.node1.interfaces.flannel.1.dev: no underlay device 'eth9' on node node1 "
     "(devices: eth0, veth-pod1, cni0)"),
    (("interfaces", "flannel.1", "type"), "gre",
     "nodes.node1.interfaces.flannel.1.type: unknown interface type 'gre' (types: veth, vxlan, ipip)"),
    (("interfaces", "flannel.1", "vni"), 2**24,
     "nodes.node1.interfaces.flannel.1.vni: "),
    (("interfaces", "flannel.1", "fdb"), [{"mac": "nope", "dst": "192.168.50.12"}],
     "nodes.node1.interfaces.flannel.1.fdb[0].mac: "),
    (("routes",), [{"to": "10.244.1.0/24", "via": "10.244.1.0", "onlink": True}],
     "nodes.node1.routes[0].onlink: an onlink route needs both via and dev"),
])
def test_bad_vxlan_input_is_one_line(tmp_path: Path, path: tuple[str, ...], value: Any, message: str) -> None:
    t = yaml.safe_load(TOPO.read_text())
    where = t["nodes"]["node1"]
    for key in path[:-1]:
        where = where[key]
    where[path[-1]] = value
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(t, sort_keys=False))
    p = run_cli("validate", str(f), check=False)
    assert p.returncode == 2 and p.stdout == ""
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"pktemu: error: {f}: {message}"), p.stderr


def test_a_vxlan_device_is_not_a_veth_end(tmp_path: Path) -> None:
    t = yaml.safe_load(TOPO.read_text())
    t["veths"] = [["node1/flannel.1", "node2/eth0"], ["node1/eth0", "node2/flannel.1"]]
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(t, sort_keys=False))
    p = run_cli("validate", str(f), check=False)
    assert p.returncode == 2 and "node1/flannel.1: flannel.1 is a vxlan device, not a veth end" in p.stderr
    assert len(p.stderr.splitlines()) == 1


def test_vxlan_mtu_above_the_underlay_minus_50_is_refused(tmp_path: Path) -> None:
    t = yaml.safe_load(TOPO.read_text())
    vxlan_of(t["nodes"]["node2"])["mtu"] = 1500
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(t, sort_keys=False))
    p = run_cli("validate", str(f), check=False)
    assert p.returncode == 2 and p.stderr == (
        f"pktemu: error: {f}: nodes.node2.interfaces.flannel.1.mtu: MTU 1500 is more than eth0's MTU - 50 "
        "(1450): the kernel refuses it\n")


RULES = """*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -i eth0 -p udp -m udp --dport 8472 -j ACCEPT
-A FORWARD -i cni0 -o flannel.1 -j ACCEPT
-A FORWARD -i flannel.1 -o cni0 -j ACCEPT
-A OUTPUT -o eth0 -p udp -m udp --dport 8472 -j ACCEPT
COMMIT
*mangle
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A PREROUTING -i flannel.1 -j ACCEPT
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A POSTROUTING -o eth0 -p udp -m udp --dport 8472 -j ACCEPT
COMMIT
"""


def test_outer_and_inner_packets_each_cross_netfilter(tmp_path: Path) -> None:
    """The outer datagram leaves through OUTPUT and POSTROUTING of its node and arrives through
    INPUT of the other (a conntrack entry of its own, UDP to 8472); the inner packet is forwarded
    cni0 -> flannel.1 on one node and enters PREROUTING on flannel.1 on the other."""
    rules = tmp_path / "rules.iptables"
    rules.write_text(RULES)
    t = topology()
    for n in ("node1", "node2"):
        t["nodes"][n]["iptables"] = str(rules)
    net = ping(t)
    assert net.results[0]["received"] == 2
    for n in ("node1", "node2"):
        saved = net.iptables_save(n)
        for rule in ("-A INPUT -i eth0 -p udp -m udp --dport 8472 -j ACCEPT",
                     "-A OUTPUT -o eth0 -p udp -m udp --dport 8472 -j ACCEPT",
                     "-A FORWARD -i cni0 -o flannel.1 -j ACCEPT", "-A FORWARD -i flannel.1 -o cni0 -j ACCEPT",
                     "-A PREROUTING -i flannel.1 -j ACCEPT"):
            assert any(ln.startswith("[2:") and ln.endswith(rule) for ln in saved.splitlines()), (n, rule)
        # NEW outer flows only: one per direction (the reply direction's datagrams are its own flow)
        post = "-A POSTROUTING -o eth0 -p udp -m udp --dport 8472 -j ACCEPT"
        assert any(ln.startswith("[1:") and ln.endswith(post) for ln in saved.splitlines()), saved
    tuples = [e.orig for e in net.conntrack("node1").entries if e.proto == 17]
    assert len(tuples) == 2 and {(s, d, dp) for s, _sp, d, dp in tuples} == {
        ("192.168.50.11", "192.168.50.12", 8472), ("192.168.50.12", "192.168.50.11", 8472)}


def test_vxlan_keys_without_type_say_which_type_they_belong_to(tmp_path: Path) -> None:
    t = yaml.safe_load(TOPO.read_text())
    del vxlan_of(t["nodes"]["node1"])["type"]
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(t, sort_keys=False))
    p = run_cli("validate", str(f), check=False)
    assert p.returncode == 2 and p.stderr == (
        f"pktemu: error: {f}: nodes.node1.interfaces.flannel.1.vni: a key of type: vxlan interfaces, "
        "and this one is a veth (add type: vxlan)\n")


def test_trace_follows_the_packet_through_the_tunnel() -> None:
    """The outer datagram is the same sk_buff as the inner frame: `pktemu trace` shows the SYN
    encapsulated on node1's eth0, decapsulated on node2's flannel.1, and delivered to pod2."""
    p = run_cli("trace", str(TOPO), "--from", "pod1", "--to", "10.244.1.2:8080/tcp")
    out = p.stdout
    assert "out eth0: 192.168.50.11:" in out and "> 192.168.50.12:8472 udp ttl 64" in out
    assert "in flannel.1: 10.244.0.2:" in out
    assert "vxlan flannel.1: decapsulated VNI 1 from 192.168.50.11:" in out
    assert "result: delivered to pod2 (tcp 10.244.0.2:" in out
    assert out.count("result: delivered to pod1") == 1


def test_appended_default_entries_each_get_a_copy() -> None:
    """`bridge fdb append 00:00:00:00:00:00 dst` twice: a frame with no entry of its own goes to
    every default destination (the second here has no host: node1 ARPs for it in vain)."""
    t = topology()
    vxlan_of(t["nodes"]["node1"])["fdb"] = [{"mac": "00:00:00:00:00:00", "dst": "192.168.50.12"},
                                            {"mac": "00:00:00:00:00:00", "dst": "192.168.50.13"}]
    net = ping(t)
    assert net.results[0]["received"] == 2
    assert len([p for p in outer_frames(net, "node1-eth0") if p[IP].dst == "192.168.50.12"]) == 2
    assert any(p.haslayer("ARP") and p["ARP"].pdst == "192.168.50.13" for p in net.sniff("node1-eth0"))
