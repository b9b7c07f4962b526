"""kube-proxy's userspace mode on node1 (iptables mode on node2, in the same topology): netfilter
REDIRECTs the ClusterIP to kube-proxy's port on the node, kube-proxy accepts and opens a second
connection to the endpoint, and the pcaps show both. The nodes get /32 addresses towards the
gateway (as on GCE) so that node1's own address is routable from node2."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import datapaths
from conftest import pktemu
from test_k8s_pcaps import read, syns

TOPO = datapaths.ROOT / "topologies"
NODE = """\
  node{n}:
    sysctls: {{net.ipv4.ip_forward: 1, net.bridge.bridge-nf-call-iptables: 1}}
    interfaces:
      eth0: {{mac: "02:00:0a:64:00:0{m}", addresses: [{{address: 10.100.0.1{n}/32, peer: 10.100.0.1}}]}}
    bridges:
      cbr0: {{mac: "0a:58:0a:00:0{n}:01", addresses: [10.0.{n}.1/24]}}
    routes: [{{to: default, via: 10.100.0.1}}]
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("userspace")
    t = d / "userspace.yaml"
    t.write_text(f"""\
extends: {TOPO / 'service-test-k8s.yaml'}
name: userspace
nodes:
{NODE.format(n=1, m='b')}{NODE.format(n=2, m='c')}  gw:
    sysctls: {{net.ipv4.ip_forward: 1}}
    interfaces:
      eth1: {{mac: "02:01:0a:64:00:01", addresses: [{{address: 10.100.0.1/32, peer: 10.100.0.11}}]}}
      eth2: {{mac: "02:02:0a:64:00:01", addresses: [{{address: 10.100.0.1/32, peer: 10.100.0.12}}]}}
    routes: [{{to: 10.0.1.0/24, via: 10.100.0.11}}, {{to: 10.0.2.0/24, via: 10.100.0.12}}]
kubernetes:
  service_cidr: 10.3.240.0/20
  cluster_cidr: 10.0.0.0/16
  manifests: [{TOPO / 'k8s/service-test.yaml'}, {TOPO / 'k8s/service-test-pods.yaml'}]
  kube_proxy:
    node1: {{mode: userspace, port: 10400}}
    node2: {{mode: iptables}}
scenarios:
  crashed:
    description: "kube-proxy on node1 has died: its REDIRECT rules stay, nobody listens"
    traffic:
      - {{at: 100ms, pod: client, app: {{kind: http-client, target: 10.3.241.152, port: 80, sport: 40001}}}}
    timeline: [{{at: 50ms, kube_proxy: {{node: node1, action: crash}}}}]
""")
    out = d / "out"
    for sc in ("s1-clusterip", "s2-noendpoints", "crashed"):
        pktemu("run", str(t), "--out", str(out), "--scenario", sc, "-q")
    return out


def test_the_pod_sees_one_connection_to_the_cluster_ip(run: Path) -> None:
    client = read(run / "s1-clusterip" / "pcap" / "client-eth0.pcap")
    tcp = [p for p in client if p.flags]
    assert {(p.src, p.dst) for p in tcp if p.sport == 40000} == {("10.0.1.2", "10.3.241.152")}
    assert {(p.src, p.dst) for p in tcp if p.dport == 40000} == {("10.3.241.152", "10.0.1.2")}
    res = json.loads((run / "s1-clusterip" / "client-result.json").read_text())
    assert res["http"]["status_line"] == "HTTP/1.1 200 OK"
    assert res["http"]["body"] == "hello from server-pod 10.0.2.2\n"


def test_netfilter_redirects_to_kube_proxys_port_on_the_node(run: Path) -> None:
    cbr0 = read(run / "s1-clusterip" / "pcap" / "node1-cbr0.pcap")
    (syn,) = [p for p in syns(cbr0) if p.sport == 40000]
    assert (syn.dst, syn.dport) == ("10.0.1.1", 10401)             # REDIRECT: the bridge's address
    rules = (run / "s1-clusterip" / "iptables-save-node1.txt").read_text()
    assert ('-A KUBE-PORTALS-CONTAINER -d 10.3.241.152/32 -p tcp -m comment --comment "default/service-test" '
            "-m tcp --dport 80 -j REDIRECT --to-ports 10401") in rules
    assert "-j DNAT --to-destination 10.100.0.11:10401" in rules   # KUBE-PORTALS-HOST: the node IP


def test_kube_proxy_opens_a_second_connection_from_the_node(run: Path) -> None:
    server = read(run / "s1-clusterip" / "pcap" / "server-eth0.pcap")
    (syn,) = syns(server)
    assert (syn.src, syn.dst, syn.dport) == ("10.100.0.11", "10.0.2.2", 8080)
    assert syn.sport != 40000 and all(p.src != "10.0.1.2" for p in server)
    flows = {(p.src, p.sport, p.dst, p.dport) for p in server if p.flags}
    assert flows == {("10.100.0.11", syn.sport, "10.0.2.2", 8080),
                     ("10.0.2.2", 8080, "10.100.0.11", syn.sport)}
    fins = [p for p in read(run / "s1-clusterip" / "pcap" / "client-eth0.pcap") if "F" in p.flags]
    assert len(fins) == 2                                  # both sides of the client's connection end


def test_udp_is_relayed_too(run: Path) -> None:
    dns = read(run / "s1-clusterip" / "pcap" / "dns-eth0.pcap")
    assert {(p.src, p.dst, p.dport) for p in dns if p.dport == 53} == {("10.100.0.11", "10.0.2.3", 53)}
    answer = [p for p in read(run / "s1-clusterip" / "pcap" / "client-eth0.pcap") if p.dns_rcode is not None]
    assert [(p.src, p.sport, p.dns_answers) for p in answer] == [("10.3.240.10", 53, ("10.3.241.152",))]


def test_no_endpoints_is_a_closed_connection_not_a_reject(run: Path) -> None:
    client = read(run / "s2-noendpoints" / "pcap" / "client-eth0.pcap")
    assert [p.flags for p in client if p.flags][:3] == ["S", "SA", "A"] and not [p for p in client if p.icmp]
    assert any("F" in p.flags and p.src == "10.3.250.77" for p in client)


def test_a_crashed_userspace_proxy_leaves_rules_pointing_at_nobody(run: Path) -> None:
    client = read(run / "crashed" / "pcap" / "client-eth0.pcap")
    assert [(p.src, p.flags) for p in client if p.flags] == [("10.0.1.2", "S"), ("10.3.241.152", "RA")]
    res = json.loads((run / "crashed" / "client-result.json").read_text())
    assert res["http"]["error"].startswith("ECONNREFUSED")
    assert "REDIRECT --to-ports 10401" in (run / "crashed" / "iptables-save-node1.txt").read_text()
