"""NodePort Services through kube-proxy's rules, from outside the cluster (the gateway): Cluster
policy masquerades (to the address of the interface towards the endpoint), Local policy keeps the
client's address on a node with an endpoint and DROPs on a node without one."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import datapaths
from conftest import pktemu
from test_k8s_pcaps import read, syns

TOPO = datapaths.ROOT / "topologies"
SERVICES = """\
apiVersion: v1
kind: Service
metadata: {name: np}
spec:
  type: NodePort
  selector: {app: service-test}
  ports: [{port: 80, targetPort: 8080, nodePort: 30080}]
---
apiVersion: v1
kind: Service
metadata: {name: np-local}
spec:
  type: NodePort
  externalTrafficPolicy: Local
  selector: {app: service-test}
  ports: [{port: 80, targetPort: 8080, nodePort: 30081}]
"""


def _client(target: str, port: int) -> str:
    return (f"{{at: 0ms, node: gw, app: {{kind: http-client, target: {target}, port: {port}, sport: 40000, "
            "connect_timeout: 500ms}}")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("nodeport")
    (d / "svc.yaml").write_text(SERVICES)
    t = d / "t.yaml"
    t.write_text(f"""\
extends: {TOPO / 'service-test-k8s.yaml'}
name: nodeport
kubernetes:
  manifests: [{TOPO / 'k8s/service-test-pods.yaml'}, svc.yaml]
  kube_proxy: {{node1: {{mode: iptables}}, node2: {{mode: iptables}}}}
scenarios:
  cluster-policy:
    traffic: [{_client("10.100.0.12", 30080)}]
  local-policy-no-endpoint:
    traffic: [{_client("10.100.0.11", 30081)}]
  local-policy-endpoint:
    traffic: [{_client("10.100.0.12", 30081)}]
""")
    out = d / "out"
    pktemu("run", str(t), "--out", str(out), "-q", "--scenario", "cluster-policy",
           "--scenario", "local-policy-no-endpoint", "--scenario", "local-policy-endpoint")
    return out


def _result(run: Path, sc: str) -> dict[str, object]:
    http: dict[str, object] = json.loads((run / sc / "client-result.json").read_text())["http"]
    return http


def test_cluster_policy_masquerades(run: Path) -> None:
    assert _result(run, "cluster-policy")["status_line"] == "HTTP/1.1 200 OK"
    (syn,) = syns(read(run / "cluster-policy" / "pcap" / "server-eth0.pcap"))
    assert (syn.src, syn.dst, syn.dport) == ("10.0.2.1", "10.0.2.2", 8080)        # SNAT to node2's cbr0
    (arrived,) = syns(read(run / "cluster-policy" / "pcap" / "node2-eth0.pcap"))
    assert (arrived.src, arrived.dst, arrived.dport) == ("10.100.0.1", "10.100.0.12", 30080)


def test_local_policy_without_a_local_endpoint_drops(run: Path) -> None:
    assert _result(run, "local-policy-no-endpoint")["error"] == "timeout"
    assert read(run / "local-policy-no-endpoint" / "pcap" / "server-eth0.pcap") == []
    drops = (run / "local-policy-no-endpoint" / "drops.txt").read_text()
    assert "KUBE-EXTERNAL-SERVICES" in drops and "default/np-local has no local endpoints" in drops


def test_local_policy_keeps_the_client_address(run: Path) -> None:
    assert _result(run, "local-policy-endpoint")["status_line"] == "HTTP/1.1 200 OK"
    (syn,) = syns(read(run / "local-policy-endpoint" / "pcap" / "server-eth0.pcap"))
    assert (syn.src, syn.sport, syn.dst) == ("10.100.0.1", 40000, "10.0.2.2")
