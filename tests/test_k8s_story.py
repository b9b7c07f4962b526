"""topologies/seed-story.yaml, read from its pcaps: load balancing over two endpoints, a failed
readiness probe, kube-proxy crashing (stale rules) and restarting (resync), REJECT once the
Service has no endpoints, NXDOMAIN once it is deleted."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conftest import pktemu
from test_k8s_pcaps import Pkt, read, syns

CLUSTER_IP = "10.3.241.152"
BAD = ("_ws.malformed || _ws.expert.severity == error || ip.checksum.status == 0 || "
       "tcp.checksum.status == 0 || udp.checksum.status == 0 || icmp.checksum.status == 0")


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("seed-story")
    pktemu("run", "topologies/seed-story.yaml", "--out", str(out), "-q")
    return out / "story"


def _pcap(story: Path, name: str) -> list[Pkt]:
    return read(story / "pcap" / f"{name}.pcap")


def _between(pkts: list[Pkt], lo: float, hi: float) -> list[Pkt]:
    return [p for p in pkts if lo <= p.t < hi]


def test_every_request_reaches_the_cluster_ip_and_one_of_two_endpoints(story: Path) -> None:
    client = [p for p in syns(_pcap(story, "client-eth0")) if p.dport == 80]
    assert len(client) == 12 and all(p.dst == CLUSTER_IP for p in client)      # 13th lookup: NXDOMAIN
    server, server_b = syns(_pcap(story, "server-eth0")), syns(_pcap(story, "server-b-eth0"))
    assert {p.dst for p in server} == {"10.0.2.2"} and {p.dst for p in server_b} == {"10.0.1.3"}
    assert all(p.src == "10.0.1.2" for p in server + server_b)                  # pod to pod: no SNAT
    assert len(server) + len(server_b) == 11                                      # + one REJECTed


def test_both_endpoints_serve_while_both_are_ready(story: Path) -> None:
    server, server_b = syns(_pcap(story, "server-eth0")), syns(_pcap(story, "server-b-eth0"))
    assert _between(server, 0, 2.2) and _between(server_b, 0, 2.2)


def test_failed_readiness_moves_traffic_and_a_crashed_kube_proxy_leaves_stale_rules(story: Path) -> None:
    server, server_b = syns(_pcap(story, "server-eth0")), syns(_pcap(story, "server-b-eth0"))
    # 2.2 s: server unready; 3.2 s kube-proxy on node1 crashes; 3.3 s server ready again, which
    # node1 does not learn until its kube-proxy restarts at 4.2 s
    assert _between(server, 2.25, 4.2) == []
    assert [round(p.t, 1) for p in _between(server_b, 2.25, 4.2)] == [2.5, 3.0, 3.5, 4.0]
    assert _between(server, 4.2, 5.2), "after the restart's full resync server is an endpoint again"


def test_stale_rules_only_on_the_crashed_node() -> None:
    n1 = pktemu("rules", "topologies/seed-story.yaml", "--node", "node1", "--scenario", "story",
                "--at", "3.9s").stdout
    n2 = pktemu("rules", "topologies/seed-story.yaml", "--node", "node2", "--scenario", "story",
                "--at", "3.9s").stdout
    assert "--to-destination 10.0.2.2:8080" not in n1 and "--to-destination 10.0.1.3:8080" in n1
    assert "--to-destination 10.0.2.2:8080" in n2


def test_no_endpoints_means_reject_from_the_node(story: Path) -> None:
    client = _pcap(story, "client-eth0")
    (err,) = [p for p in client if p.icmp]
    assert (err.icmp, err.src, err.dst) == ((3, 3), "10.0.1.1", "10.0.1.2")    # port unreachable
    assert 5.2 < err.t < 5.7 and err.inner.endswith(f"> {CLUSTER_IP}:80")
    leaving = [p for p in syns(_pcap(story, "node1-eth0")) if p.t > 5.2]
    assert leaving == []                                                         # REJECTed in node1


def test_a_deleted_service_is_nxdomain(story: Path) -> None:
    answers = [p for p in _pcap(story, "client-eth0") if p.dns_rcode is not None]
    assert [p.dns_rcode for p in answers if p.t < 5.7] == [0] * 12
    assert all(p.dns_answers == (CLUSTER_IP,) for p in answers if p.t < 5.7)
    assert [(p.dns_rcode, p.dns_answers) for p in answers if p.t > 5.7] == [(3, ())]
    assert [p for p in syns(_pcap(story, "client-eth0")) if p.t > 5.7] == []


def test_story_pcaps_are_clean_for_tshark(story: Path) -> None:
    p = subprocess.run(["tshark", "-n", "-r", str(story / "all.pcapng"), "-o", "ip.check_checksum:TRUE",
                        "-o", "tcp.check_checksum:TRUE", "-o", "udp.check_checksum:TRUE", "-Y", BAD],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout == "", p.stdout
