"""Calico's data plane in the engine: the ipip fallback device tunl0 (encapsulation, decapsulation,
PMTU), proxy ARP on the cali veths (when the host answers and when it does not), and bad ipip
input refused by `pktemu validate` with one line and exit status 2."""
from __future__ import annotations

import copy
import struct
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import pktemu
from scapy.layers.inet import ICMP, IP, IPerror
from scapy.layers.l2 import ARP, Ether
from scapy.utils import rdpcap

import pktemu as pk
from datapaths import ROOT

TOPO = ROOT / "topologies" / "calico-ipip.yaml"
BASE: dict[str, Any] = yaml.safe_load(TOPO.read_text())
CALI = "node1/calia1b2c3d4e5f"


def topo() -> dict[str, Any]:
    return copy.deepcopy(BASE)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("calico") / "out"
    pktemu("run", str(TOPO), "--out", str(out), "-q")
    return out / "cross-node"


def test_topology_copy_in_examples_is_identical() -> None:
    assert (ROOT / "pktemu" / "examples" / "calico-ipip.yaml").read_bytes() == TOPO.read_bytes()


def test_cross_node_http_and_ping_work(run: Path) -> None:
    res = yaml.safe_load((run / "client-result.json").read_text())
    assert res["http"]["status_line"] == "HTTP/1.1 200 OK"
    assert res["http"]["body"] == "hello from pod2\n"


def test_outer_header_is_the_kernels_ipip(run: Path) -> None:
    """node1 -> node2, protocol 4, TTL and DF of the (forwarded) inner packet, TOS 0."""
    reqs = [p for p in rdpcap(str(run / "pcap" / "node1-eth0.pcap"))
            if IP in p and p[IP].proto == 4 and isinstance(p[IP].payload, IP) and ICMP in p
            and p[ICMP].type == 8]
    assert len(reqs) == 2
    o, i = reqs[0][IP], reqs[0][IP].payload
    assert (o.src, o.dst, o.proto, o.tos, o.flags.DF) == ("192.168.50.11", "192.168.50.12", 4, 0, True)
    assert (i.src, i.dst, i.ttl) == ("10.244.0.5", "10.244.1.5", 63)
    assert o.ttl == i.ttl
    assert reqs[0][Ether].dst == "02:00:c0:a8:32:0c"


def test_tunl0_capture_is_raw_ip(run: Path) -> None:
    """tcpdump on tunl0 writes LINKTYPE_RAW (101): the inner packet, no Ethernet header."""
    path = run / "pcap" / "node2-tunl0.pcap"
    assert struct.unpack("<I", path.read_bytes()[20:24])[0] == 101
    pkts = rdpcap(str(path))
    assert pkts and all(isinstance(p, IP) or IP in p and Ether not in p for p in pkts)
    first = pkts[0] if isinstance(pkts[0], IP) else pkts[0][IP]
    assert (first.src, first.dst, first.proto) == ("10.244.0.5", "10.244.1.5", 1)


def test_pod_sees_ttl_decremented_by_both_nodes(run: Path) -> None:
    reqs = [p for p in rdpcap(str(run / "pcap" / "pod2-eth0.pcap")) if ICMP in p and p[ICMP].type == 8]
    assert [p[IP].ttl for p in reqs] == [62, 62]


def test_sniff_on_tunl0_gives_the_pcaps_ip_packets(run: Path) -> None:
    """The Python API's sniff on a device with no link layer is what tcpdump wrote there: bare IPv4."""
    net = pk.Network.load(str(TOPO), "cross-node")
    net.run()
    sniffed = net.sniff("node2-tunl0")
    written = rdpcap(str(run / "pcap" / "node2-tunl0.pcap"))
    assert sniffed and all(isinstance(p, IP) for p in sniffed)
    assert [bytes(p) for p in sniffed] == [bytes(p) for p in written]


def _big_ping(tunl0_mtu: int, df: bool = True) -> pk.Network:
    t = topo()
    for n, dev in (("pod1", "eth0"), ("node1", "calia1b2c3d4e5f")):
        t["nodes"][n]["interfaces"][dev]["mtu"] = 1500
    t["nodes"]["node1"]["interfaces"]["tunl0"]["mtu"] = tunl0_mtu
    app = {"kind": "ping", "target": "10.244.1.5", "count": 1, "size": 1472, "df": df}
    t["scenarios"] = {"big": {"traffic": [{"at": "0ms", "node": "pod1", "app": app}]}}
    net = pk.Network.load(t, "big")
    net.run(duration=2)
    return net


def test_too_big_with_df_gets_frag_needed_from_the_tunnel() -> None:
    """tunl0 MTU 1500 over a 1500 underlay: tnl_update_pmtu refuses 1500 bytes with DF, mtu 1480."""
    net = _big_ping(1500)
    errs = [p for p in net.sniff("pod1-eth0") if ICMP in p and p[ICMP].type == 3]
    assert len(errs) == 1
    assert (errs[0][ICMP].code, errs[0][ICMP].nexthopmtu, errs[0][IPerror].len) == (4, 1480, 1500)
    assert not [p for p in net.sniff("node1-eth0") if IP in p and p[IP].proto == 4]


def test_too_big_with_df_at_tunl0_mtu_is_refused_by_forwarding() -> None:
    net = _big_ping(1480)
    errs = [p for p in net.sniff("pod1-eth0") if ICMP in p and p[ICMP].type == 3]
    assert [(p[ICMP].code, p[ICMP].nexthopmtu) for p in errs] == [(4, 1480)]
    assert not net.sniff("node1-tunl0")


def test_too_big_without_df_is_fragmented_outside() -> None:
    net = _big_ping(1500, df=False)
    outer = [p for p in net.sniff("node1-eth0")
             if IP in p and p[IP].proto == 4 and p[IP].src == "192.168.50.11"]
    assert len(outer) == 2 and not any(p[IP].flags.DF for p in outer)
    assert {p[IP].frag for p in outer} == {0, 185}       # 1480 bytes of payload in the first piece
    replies = [p for p in net.sniff("pod1-eth0") if ICMP in p and p[ICMP].type == 0]
    assert len(replies) == 1


# ------------------------------------------------------------------------------------- proxy ARP
def _who_has(t: dict[str, Any], target: str, bcast: bool = True) -> tuple[list[Any], float]:
    """pod1 asks, on its veth, who has `target`: node1's replies on the cali veth, and when."""
    t["scenarios"] = {"idle": {"traffic": []}}
    net = pk.Network.load(t, "idle")
    dst = "ff:ff:ff:ff:ff:ff" if bcast else "ee:ee:ee:ee:ee:ee"
    net.sendp(CALI, Ether(src="0a:58:0a:f4:00:05", dst=dst)
              / ARP(op=1, hwsrc="0a:58:0a:f4:00:05", psrc="10.244.0.5", pdst=target))
    net.run(duration=2)
    replies = [p for p in net.sniff("node1-calia1b2c3d4e5f") if ARP in p and p[ARP].op == 2]
    t0 = net.sniff("node1-calia1b2c3d4e5f")[0].time
    return replies, float(replies[0].time - t0) if replies else -1.0


def test_proxy_arp_answers_for_a_routed_address_with_the_veths_mac() -> None:
    replies, _ = _who_has(topo(), "169.254.1.1")
    assert [(r[ARP].hwsrc, r[ARP].psrc, r[ARP].pdst) for r in replies] == \
        [("ee:ee:ee:ee:ee:ee", "169.254.1.1", "10.244.0.5")]


def test_proxy_arp_no_route_no_answer() -> None:
    t = topo()
    t["nodes"]["node1"]["routes"] = [r for r in t["nodes"]["node1"]["routes"] if r["to"] != "default"]
    assert _who_has(t, "169.254.1.1")[0] == []
    assert _who_has(t, "10.244.0.6")[0] != []            # still routed, via another cali veth


def test_proxy_arp_route_via_the_same_device_no_answer() -> None:
    t = topo()
    t["nodes"]["node1"]["routes"].append({"to": "10.244.0.64/26", "dev": "calia1b2c3d4e5f"})
    assert _who_has(t, "10.244.0.70")[0] == []


def test_proxy_arp_needs_the_sender_to_pass_rp_filter() -> None:
    t = topo()
    t["nodes"]["node1"]["sysctls"]["net.ipv4.conf.calia1b2c3d4e5f.rp_filter"] = 1
    assert _who_has(copy.deepcopy(t), "169.254.1.1")[0] != []      # 10.244.0.5 is routed via the veth
    t["nodes"]["node1"]["routes"] = [r for r in t["nodes"]["node1"]["routes"] if r["to"] != "10.244.0.5/32"]
    assert _who_has(t, "169.254.1.1")[0] == []                     # now it comes back via eth0


def test_proxy_arp_off_or_forwarding_off_no_answer() -> None:
    t = topo()
    del t["nodes"]["node1"]["sysctls"]["net.ipv4.conf.calia1b2c3d4e5f.proxy_arp"]
    assert _who_has(t, "169.254.1.1")[0] == []
    t = topo()
    t["nodes"]["node1"]["sysctls"]["net.ipv4.conf.all.proxy_arp"] = 1     # all or dev
    del t["nodes"]["node1"]["sysctls"]["net.ipv4.conf.calia1b2c3d4e5f.proxy_arp"]
    assert _who_has(t, "169.254.1.1")[0] != []
    t["nodes"]["node1"]["sysctls"]["net.ipv4.ip_forward"] = 0
    assert _who_has(t, "169.254.1.1")[0] == []


def test_default_proxy_delay_defers_a_broadcast_request_only() -> None:
    """pneigh_enqueue: a random wait below proxy_delay (80 cs); a unicast request is answered at once."""
    t = topo()
    del t["nodes"]["node1"]["sysctls"]["net.ipv4.neigh.calia1b2c3d4e5f.proxy_delay"]
    replies, wait = _who_has(copy.deepcopy(t), "169.254.1.1")
    assert len(replies) == 1 and 0 <= wait < 0.8
    replies, wait = _who_has(copy.deepcopy(t), "169.254.1.1", bcast=False)
    assert len(replies) == 1 and wait == 0


# ------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("edit, where", [
    (lambda t: t["nodes"]["node1"]["interfaces"].update(tun9={"type": "ipip"}),
     "nodes.node1.interfaces.tun9: an ipip interface is the ipip module's fallback device, named tunl0"),
    (lambda t: t["nodes"]["node1"]["interfaces"]["tunl0"].update(ttl=64),
     "nodes.node1.interfaces.tunl0.ttl: a fixed ttl needs pmtudisc: true"),
    (lambda t: t["nodes"]["node1"]["interfaces"]["tunl0"].update(pmtudisc="maybe"),
     "nodes.node1.interfaces.tunl0.pmtudisc:"),
    (lambda t: t["nodes"]["node1"]["interfaces"]["tunl0"].update(vni=3),
     "nodes.node1.interfaces.tunl0.vni: a key of type: vxlan interfaces"),
    (lambda t: t["nodes"]["node1"]["sysctls"].update({"net.ipv4.neigh.nosuch.proxy_delay": 0}),
     "no interface 'nosuch' on this node"),
    (lambda t: t["nodes"]["node1"]["sysctls"].update({"net.ipv4.neigh.all.proxy_delay": 0}),
     "no interface 'all' on this node"),
    (lambda t: t["nodes"]["node1"]["interfaces"]["eth0"].update(mac="ee:ee:ee:ee:ee:ee"),
     "MAC ee:ee:ee:ee:ee:ee is also used by"),
])
def test_bad_ipip_input_is_one_line_exit_2(tmp_path: Path, edit: Any, where: str) -> None:
    t = topo()
    edit(t)
    f = tmp_path / "t.yaml"
    f.write_text(yaml.safe_dump(t))
    p = pktemu("validate", str(f), check=False)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pktemu: error: ") and where in lines[0], p.stderr
    assert "Traceback" not in p.stderr
