"""The kube-proxy daemon and the endpoint conditions it reads, seen in the pcaps: a not-ready Pod
leaves the endpoints (REJECT), a terminating but serving Pod still gets traffic when it is the
only one, stale UDP conntrack entries are cleared (so a client reusing its source port is not
sent to the gone endpoint) while an established TCP flow is left alone."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import datapaths
from conftest import pktemu
from test_k8s_pcaps import read, syns

TOPO = datapaths.ROOT / "topologies"
DNS_POD = "kube-system/kube-dns-7f9c5d8b6-x2x4v"
CLIENT = "{kind: http-client, target: 10.3.241.152, port: 80, sport: 40000}"
DNS_CLIENT = ("{kind: http-client, name: service-test.default.svc.cluster.local, dns_server: 10.3.240.10, "
              "dns_sport: 40053, dns_id: 0x1234, dns_timeout: 300ms, port: 80, sport: %d}")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("kube-proxy")
    t = d / "t.yaml"
    base = (TOPO / "service-test.yaml").read_text()
    pods = base[base.index("pods:"):base.index("scenarios:")].replace(
        'body: "hello from server-pod 10.0.2.2\\n"}', 'body: "slow\\n", response_delay: 400ms}')
    assert "response_delay: 400ms" in pods
    t.write_text(f"""\
extends: {TOPO / 'service-test-k8s.yaml'}
name: kube-proxy
{pods}
scenarios:
  unready:
    traffic: [{{at: 300ms, pod: client, app: {CLIENT}}}]
    timeline: [{{at: 100ms, ready: {{pod: server, value: false}}}}]
  terminating:
    traffic: [{{at: 300ms, pod: client, app: {CLIENT}}}]
    timeline: [{{at: 100ms, delete: Pod/default/server}}]
  late-service:
    traffic:
      - {{at: 300ms, pod: client, app: {{kind: http-client, target: 10.3.247.7, port: 8000, sport: 40000}}}}
    timeline:
      - {{at: 100ms, apply: {{apiVersion: v1, kind: Service, metadata: {{name: late}},
                            spec: {{clusterIP: 10.3.247.7, selector: {{app: service-test}},
                                   ports: [{{port: 8000, targetPort: http}}]}}}}}}
  dns-endpoint-gone:
    traffic:
      - {{at: 0ms, pod: client, app: {DNS_CLIENT % 40000}}}
      - {{at: 700ms, pod: client, app: {DNS_CLIENT % 40001}}}
    timeline:
      - {{at: 200ms, ready: {{pod: {DNS_POD}, value: false}}}}
      - {{at: 200ms, ready: {{pod: server, value: false}}}}
""")
    out = d / "out"
    pktemu("run", str(t), "--out", str(out), "-q", "--scenario", "unready", "--scenario", "terminating",
           "--scenario", "late-service", "--scenario", "dns-endpoint-gone")
    return out


def test_a_pod_failing_readiness_leaves_the_endpoints(run: Path) -> None:
    client = read(run / "unready" / "pcap" / "client-eth0.pcap")
    (err,) = [p for p in client if p.icmp]
    assert (err.icmp, err.src, err.inner) == ((3, 3), "10.0.1.1", "10.0.1.2:40000 > 10.3.241.152:80")
    assert read(run / "unready" / "pcap" / "server-eth0.pcap") == []


def test_a_terminating_pod_that_still_serves_is_used_when_nothing_else_is(run: Path) -> None:
    (syn,) = syns(read(run / "terminating" / "pcap" / "server-eth0.pcap"))
    assert (syn.src, syn.dst, round(syn.t, 1)) == ("10.0.1.2", "10.0.2.2", 0.3)
    res = json.loads((run / "terminating" / "client-result.json").read_text())
    assert res["http"]["body"] == "slow\n"


def test_a_service_applied_on_the_timeline_is_programmed_and_its_named_port_resolved(run: Path) -> None:
    (syn,) = syns(read(run / "late-service" / "pcap" / "server-eth0.pcap"))
    assert (syn.dst, syn.dport) == ("10.0.2.2", 8080)
    client = [p for p in read(run / "late-service" / "pcap" / "client-eth0.pcap") if p.flags == "SA"]
    assert [(p.src, p.sport) for p in client] == [("10.3.247.7", 8000)]


def test_tcp_flows_survive_an_endpoint_change_and_stale_udp_entries_do_not(run: Path) -> None:
    sc = run / "dns-endpoint-gone"
    first, second = json.loads((sc / "client-result.json").read_text())
    # the server stopped being an endpoint at 0.2 s, in the middle of the GET (answered at 0.4 s):
    # kube-proxy leaves TCP conntrack entries alone, so the flow goes on to the end
    assert first["http"]["body"] == "slow\n" and first["http"]["elapsed_ms"] > 400
    data = [p for p in read(sc / "pcap" / "server-eth0.pcap") if p.flags == "PA" and p.src == "10.0.2.2"]
    assert len(data) == 1 and data[0].t > 0.4
    # the second lookup reuses source port 40053: without kube-proxy's conntrack -D it would follow
    # the old entry to 10.0.2.3; it is REJECTed instead, and the DNS pod saw one query only
    dns = [p for p in read(sc / "pcap" / "dns-eth0.pcap") if p.dport == 53]
    assert len(dns) == 1 and dns[0].t < 0.2
    errs = [p for p in read(sc / "pcap" / "client-eth0.pcap") if p.icmp]
    assert [(p.icmp, p.inner) for p in errs] == [((3, 3), "10.0.1.2:40053 > 10.3.240.10:53")]
    assert second["dns"] == {"error": "timeout"}
    ct = (sc / "conntrack-node1.txt").read_text().splitlines()
    assert len(ct) == 1 and ct[0].startswith("tcp ") and "TIME_WAIT" in ct[0] and "sport=8080" in ct[0]


def test_rules_change_after_the_watch_latency(run: Path) -> None:
    at = {t: pktemu("rules", str(run.parent / "t.yaml"), "--node", "node1", "--scenario", "unready",
                    "--at", t).stdout for t in ("105ms", "125ms")}
    assert "10.0.2.2:8080" in at["105ms"] and "service-test has no endpoints" not in at["105ms"]
    assert "10.0.2.2:8080" not in at["125ms"] and '"default/service-test has no endpoints"' in at["125ms"]
