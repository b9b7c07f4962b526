"""Cluster DNS on the service-test network: the pod's resolver, the kube-dns Service DNAT, the pcaps.

topologies/service-test.yaml with its DNS pod running `cluster-dns` instead of the oracle's
fixed records, the client pod given the resolv.conf kubelet writes, and an API server built by
hand (the manifest loader is another module's business) set as `node.cluster` on every node.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from scapy.layers.dns import DNS
from scapy.layers.inet import IP, UDP
from scapy.utils import rdpcap

import datapaths
from pktemu import topo
from pktemu.io.capture import CaptureSet
from pktemu.io.topofile import load_topology
from pktemu.network import Network
from pktemu.sim import SECOND
from test_dns_records import cluster

TOPOLOGY = str(datapaths.ROOT / "topologies" / "service-test.yaml")
RESOLV = {"nameservers": ["10.3.240.10"], "ndots": 5,
          "search": ["default.svc.cluster.local", "svc.cluster.local", "cluster.local"]}
KUBE_DNS, DNS_POD, CLIENT = "10.3.240.10", "10.0.2.3", "10.0.1.2"


def run(tmp: Path, *clients: dict[str, Any]) -> tuple[Network, list[dict[str, Any]]]:
    """Start each http-client on the client pod at t=0 and run 10 virtual seconds, capturing."""
    t = copy.deepcopy(load_topology(TOPOLOGY))
    t.nodes["dns"].apps = [topo.App("cluster-dns", {})]
    t.nodes["client"].resolv = dict(RESOLV)
    net = Network(t)
    api = cluster(net.sim)
    for node in net.nodes.values():
        node.cluster = api                                     # type: ignore[attr-defined]
    caps = CaptureSet(str(tmp), str(tmp / "all.pcapng"))
    for name, dev in net.captures():
        caps.attach(name, dev)
    runs = [net.start_app(net.nodes["client"], topo.App("http-client", {"port": 80, **c})) for c in clients]
    net.sim.run(until=10 * SECOND)
    caps.close()
    assert all(r.done_at is not None for r in runs)
    return net, [r.result for r in runs]


def dns_packets(tmp: Path, point: str) -> list[tuple[str, int, str, int, DNS]]:
    """(src, sport, dst, dport, dns) of every DNS datagram captured at `point`."""
    return [(p[IP].src, p[UDP].sport, p[IP].dst, p[UDP].dport, p[DNS])
            for p in rdpcap(str(tmp / f"{point}.pcap")) if p.haslayer(DNS)]


def test_service_name_resolves_via_the_search_list_and_kube_dns_service(tmp_path: Path) -> None:
    _net, (res,) = run(tmp_path, {"name": "service-test"})
    assert res["dns"]["qname"] == "service-test.default.svc.cluster.local"
    assert res["dns"]["answers"] == [{"name": "service-test.default.svc.cluster.local", "ttl": 5,
                                      "a": "10.3.241.152"}]
    assert res["http"]["target"] == "10.3.241.152:80"
    assert res["http"]["body"] == "hello from server-pod 10.0.2.2\n"       # DNATed to the server pod
    at_client = dns_packets(tmp_path, "client-eth0")
    at_dns = dns_packets(tmp_path, "dns-eth0")
    (q_src, q_sport, q_dst, q_dport, q), (r_src, r_sport, r_dst, r_dport, r) = at_client
    assert (q_src, q_dst, q_dport, q.qr, q.qd[0].qname) == (CLIENT, KUBE_DNS, 53, 0,
                                                            b"service-test.default.svc.cluster.local.")
    assert (r_src, r_sport, r_dst, r_dport, r.qr, r.id) == (KUBE_DNS, 53, CLIENT, q_sport, 1, q.id)
    assert r.an[0].rdata == "10.3.241.152"
    # on the DNS pod's side of the kube-dns Service the query is DNATed to the pod, the reply un-NATed
    assert [(s, d, dp, m.id, m.qr) for s, _sp, d, dp, m in at_dns] == [
        (CLIENT, DNS_POD, 53, q.id, 0), (DNS_POD, CLIENT, q_sport, q.id, 1)]
    on_node1 = dns_packets(tmp_path, "node1-eth0")
    assert [(d, dp) for _s, _sp, d, dp, m in on_node1 if m.qr == 0] == [(DNS_POD, 53)]


def test_name_with_namespace_takes_the_second_search_entry(tmp_path: Path) -> None:
    _net, (res,) = run(tmp_path, {"name": "service-test.default"})
    assert res["http"]["status_line"] == "HTTP/1.1 200 OK"
    seen = [(m.qd[0].qname.decode(), m.qr, m.rcode)
            for _s, _sp, _d, _dp, m in dns_packets(tmp_path, "dns-eth0")]
    assert seen == [("service-test.default.default.svc.cluster.local.", 0, 0),
                    ("service-test.default.default.svc.cluster.local.", 1, 3),
                    ("service-test.default.svc.cluster.local.", 0, 0),
                    ("service-test.default.svc.cluster.local.", 1, 0)]


def test_headless_service_returns_the_pod_ips(tmp_path: Path) -> None:
    _net, (res,) = run(tmp_path, {"name": "web", "port": 8080, "resolv_aaaa": True})
    assert [a["a"] for a in res["dns"]["answers"]] == ["10.0.1.10", "10.0.2.2"]
    replies = [m for _s, _sp, _d, _dp, m in dns_packets(tmp_path, "client-eth0") if m.qr == 1]
    by_type = {m.qd[0].qtype: m for m in replies}
    assert sorted(by_type) == [1, 28]
    assert [rr.rdata for rr in by_type[1].an] == ["10.0.1.10", "10.0.2.2"]
    assert by_type[28].ancount == 0 and by_type[28].rcode == 0 and by_type[28].ns[0].type == 6
    queries = [(sp, m.qd[0].qtype)
               for _s, sp, _d, _dp, m in dns_packets(tmp_path, "client-eth0") if m.qr == 0]
    assert [qt for _sp, qt in queries] == [1, 28] and queries[0][0] == queries[1][0]


def test_unknown_name_is_nxdomain_everywhere_and_the_client_gives_up(tmp_path: Path) -> None:
    _net, (res,) = run(tmp_path, {"name": "nosuch"})
    assert res["dns"]["error"] == "HOST_NOT_FOUND" and res["dns"]["answers"] == []
    assert res["error"] == "no target (DNS failed)" and res["http"] is None
    replies = [(m.qd[0].qname.decode(), m.rcode, m.aa, m.nscount)
               for _s, _sp, _d, _dp, m in dns_packets(tmp_path, "client-eth0") if m.qr == 1]
    assert replies == [("nosuch.default.svc.cluster.local.", 3, 1, 1), ("nosuch.svc.cluster.local.", 3, 1, 1),
                       ("nosuch.cluster.local.", 3, 1, 1), ("nosuch.", 3, 0, 0)]


def test_dns_server_parameter_keeps_the_oracle_single_query(tmp_path: Path) -> None:
    _net, (res,) = run(tmp_path, {"name": "service-test.default.svc.cluster.local", "dns_server": KUBE_DNS,
                                  "dns_sport": 40053, "dns_id": 0x1234, "sport": 40000})
    queries = [(sp, m.id, m.qd[0].qtype) for _s, sp, _d, _dp, m in dns_packets(tmp_path, "client-eth0")
               if m.qr == 0]
    assert queries == [(40053, 0x1234, 1)] and res["dns"]["answers"][0]["a"] == "10.3.241.152"
