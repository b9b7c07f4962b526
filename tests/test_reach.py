"""`pktemu reach` (every Service port tried from a pod) and `pktemu trace --from NS/POD --to SVC.NS:PORT`,
on a shipped Kubernetes topology and on one made by `pktemu import`: the endpoint each Service
reaches, the rule that rejects the one without endpoints, every endpoint behind a load-balancing
`statistic` cascade or `numgen` map, and a masquerade decision that matches the source address
the endpoint saw in a `pktemu run` pcap of the same flow.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import pktemu
from datapaths import ROOT
from scapy.layers.inet import IP, TCP
from scapy.utils import rdpcap
from test_import import _link, cluster_yaml, node_dump, pod

K8S = str(ROOT / "topologies" / "service-test-k8s.yaml")
PLAIN = str(ROOT / "topologies" / "service-test.yaml")


def reach(*args: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(pktemu("reach", *args, "-o", "json").stdout)
    return rows


def row(rows: list[dict[str, Any]], service: str, via: str = "ClusterIP") -> dict[str, Any]:
    [r] = [r for r in rows if r["service"] == service and r["via"] == via]
    return r


def syn_sources(pcap: Path, endpoint: str) -> set[str]:
    """The source addresses of the SYNs to `endpoint` (ip:port) in `pcap`."""
    ip, port = endpoint.split(":")
    return {p[IP].src for p in rdpcap(str(pcap))
            if IP in p and TCP in p and p[IP].dst == ip and p[TCP].dport == int(port) and p[TCP].flags == "S"}


@pytest.fixture(scope="module")
def k8s_rows() -> list[dict[str, Any]]:
    return reach(K8S, "--from", "default/client")


# ---------------------------------------------------------------------------- the shipped cluster
def test_one_row_per_service_port_in_namespace_name_port_order(k8s_rows: list[dict[str, Any]]) -> None:
    assert [(r["namespace"], r["name"], r["port"], r["protocol"], r["via"]) for r in k8s_rows] == [
        ("default", "service-hairpin", 80, "tcp", "ClusterIP"),
        ("default", "service-noep", 80, "tcp", "ClusterIP"),
        ("default", "service-test", 80, "tcp", "ClusterIP"),
        ("kube-system", "kube-dns", 53, "udp", "ClusterIP"),
    ]


def test_services_with_endpoints_reach_them(k8s_rows: list[dict[str, Any]]) -> None:
    web = row(k8s_rows, "default/service-test")
    assert web["address"] == "10.3.241.152:80" and web["outcome"] == "reached"
    assert [(e["endpoint"], e["node"], e["source"], e["masquerade"]) for e in web["endpoints"]] == [
        ("10.0.2.2:8080", "server", "10.0.1.2", False)]
    dns = row(k8s_rows, "kube-system/kube-dns")
    assert dns["port_name"] == "dns" and dns["outcome"] == "reached"
    assert [e["endpoint"] for e in dns["endpoints"]] == ["10.0.2.3:53"]


def test_the_service_without_endpoints_is_rejected_by_the_rule_named(k8s_rows: list[dict[str, Any]]) -> None:
    noep = row(k8s_rows, "default/service-noep")
    assert noep["outcome"] == "REJECT" and noep["endpoints"] == []
    [drop] = noep["drops"]
    assert (drop["node"], drop["table"], drop["chain"]) == ("node1", "filter", "KUBE-SERVICES")
    assert '"default/service-noep has no endpoints"' in drop["rule"]
    assert drop["rule"].endswith("-j REJECT --reject-with icmp-port-unreachable")


def test_the_hairpin_service_is_masqueraded(k8s_rows: list[dict[str, Any]]) -> None:
    hp = row(k8s_rows, "default/service-hairpin")
    assert hp["outcome"] == "reached"
    assert [(e["endpoint"], e["source"], e["masquerade"]) for e in hp["endpoints"]] == [
        ("10.0.1.2:8080", "10.0.1.1", True)]


def test_masquerade_is_what_the_endpoint_saw_in_a_run(k8s_rows: list[dict[str, Any]], tmp_path: Path) -> None:
    pktemu("run", K8S, "--scenario", "s1-clusterip", "--scenario", "s3-hairpin", "--out", str(tmp_path), "-q")
    flows = (("s1-clusterip", "default/service-test"), ("s3-hairpin", "default/service-hairpin"))
    for scenario, service in flows:
        [ep] = row(k8s_rows, service)["endpoints"]
        seen = syn_sources(tmp_path / scenario / "pcap" / f"{ep['node']}-eth0.pcap", ep["endpoint"])
        assert seen == {ep["source"]}, (scenario, seen, ep)


def test_the_table_is_the_default_output() -> None:
    out = pktemu("reach", K8S, "--from", "default/client").stdout
    lines = out.splitlines()
    assert lines[0].split() == ["SERVICE", "PORT", "VIA", "ADDRESS", "OUTCOME", "ENDPOINTS", "SOURCE", "SEEN",
                                "DROPPED", "BY"]
    assert [ln.split()[0] for ln in lines[1:] if ln.startswith(("default/", "kube-system/"))] == [
        "default/service-hairpin", "default/service-noep", "default/service-test", "kube-system/kube-dns"]
    assert "10.0.1.1 (masqueraded)" in out and "filter KUBE-SERVICES#1" in out and "REJECT" in out


def test_a_scenarios_overrides_apply_first() -> None:
    """s3b-hairpin-off turns hairpin_mode off on the client's bridge port: the DNATed SYN that
    would go back out of it is dropped by the bridge, not by a rule."""
    [hp] = reach(K8S, "--from", "client", "--scenario", "s3b-hairpin-off", "--service", "service-hairpin")
    assert hp["outcome"] == "DROP" and hp["endpoints"] == []
    [drop] = hp["drops"]
    assert drop["where"] == "bridge cbr0" and "rule" not in drop and "hairpin off" in drop["reason"]


@pytest.mark.parametrize("service,expect", [
    ("service-test", ["default/service-test"]),
    ("kube-dns.kube-system", ["kube-system/kube-dns"]),
    ("kube-dns.kube-system.svc.cluster.local", ["kube-system/kube-dns"]),
])
def test_one_service(service: str, expect: list[str]) -> None:
    assert [r["service"] for r in reach(K8S, "--from", "client", "--service", service)] == expect


def test_a_statistic_cascade_lists_every_endpoint() -> None:
    """generated-cluster: one Service over six pods, kube-proxy's 1/6, 1/5 ... cascade."""
    [web] = reach(str(ROOT / "topologies" / "generated-cluster.yaml"), "--scenario", "clients",
                  "--at", "100ms", "--from", "default/pod1-1")
    assert web["branches"] == 6 and not web["truncated"]
    assert [e["endpoint"] for e in web["endpoints"]] == [
        "10.0.1.3:8080", "10.0.2.2:8080", "10.0.2.3:8080", "10.0.3.2:8080", "10.0.3.3:8080"]
    assert {e["source"] for e in web["endpoints"]} == {"10.0.1.2"}
    [drop] = web["drops"]          # the pod itself, picked by the first rule: back out its own port
    assert drop["where"] == "bridge cbr0" and "hairpin off" in drop["reason"]
    assert web["outcome"] == "DROP, reached"


def test_a_numgen_map_lists_every_endpoint(tmp_path: Path) -> None:
    """service-test-nftables with service-test's numgen map over two endpoints (the second the
    client itself, which the endpoint chain masquerades)."""
    nft = (ROOT / "topologies" / "kube-proxy-rules-node1.nft").read_text()
    one = ("numgen random mod 1 vmap { 0 : goto endpoint-TQ2NHXDT-default/service-test/tcp/__10.0.2.2/8080 }")
    assert one in nft
    two = ("numgen random mod 2 vmap { 0 : goto endpoint-TQ2NHXDT-default/service-test/tcp/__10.0.2.2/8080, "
           "1 : goto endpoint-SMIA7WYK-default/service-hairpin/tcp/__10.0.1.2/8080 }")
    (tmp_path / "node1.nft").write_text(nft.replace(one, two))
    k8s = ROOT / "topologies" / "k8s"
    topo = tmp_path / "t.yaml"
    topo.write_text(f"extends: {{file: {ROOT / 'topologies' / 'service-test-nftables.yaml'}, merge: true}}\n"
                    f"nodes:\n  node1: {{nftables: {tmp_path / 'node1.nft'}}}\n"
                    f"kubernetes:\n  manifests: [{k8s / 'service-test.yaml'}, "
                    f"{k8s / 'service-test-pods.yaml'}]\n")
    [web] = reach(str(topo), "--from", "default/client", "--service", "service-test")
    assert web["branches"] == 2 and web["outcome"] == "reached"
    assert [(e["endpoint"], e["source"]) for e in web["endpoints"]] == [
        ("10.0.2.2:8080", "10.0.1.2"), ("10.0.1.2:8080", "10.0.1.1")]


def test_nodeport_and_external_ip_are_tried_too(tmp_path: Path) -> None:
    """A NodePort Service with an external IP over the server pod: from the client pod, the
    ClusterIP keeps the pod's address; the NodePort (on the pod's node, node1) and the external
    IP are masqueraded to node1's own address."""
    (tmp_path / "extra.yaml").write_text(
        "{apiVersion: v1, kind: Service, metadata: {name: web-ext, namespace: default},\n"
        " spec: {type: NodePort, clusterIP: 10.3.246.1, externalIPs: [10.100.0.200],\n"
        "        selector: {app: service-test},\n"
        "        ports: [{name: http, protocol: TCP, port: 80, targetPort: 8080, nodePort: 30081}]}}\n")
    k8s = ROOT / "topologies" / "k8s"
    topo = tmp_path / "t.yaml"
    topo.write_text(f"extends: {{file: {K8S}, merge: true}}\n"
                    f"kubernetes:\n  manifests: [{k8s / 'service-test.yaml'}, "
                    f"{k8s / 'service-test-pods.yaml'}, {tmp_path / 'extra.yaml'}]\n")
    rows = reach(str(topo), "--from", "default/client", "--service", "web-ext")
    assert [(r["via"], r["address"], r["port_name"], r["outcome"]) for r in rows] == [
        ("ClusterIP", "10.3.246.1:80", "http", "reached"),
        ("NodePort", "10.100.0.11:30081", "http", "reached"),
        ("ExternalIP", "10.100.0.200:80", "http", "reached")]
    assert [[(e["endpoint"], e["source"], e["masquerade"]) for e in r["endpoints"]] for r in rows] == [
        [("10.0.2.2:8080", "10.0.1.2", False)],
        [("10.0.2.2:8080", "10.100.0.11", True)],
        [("10.0.2.2:8080", "10.100.0.11", True)]]


# ---------------------------------------------------------------------------- an imported cluster
@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """test_import's dump with a second pod (tools/client on veth-b), imported; its rules DNAT the
    Service shop/web to the frontend pod and masquerade nothing."""
    tmp = tmp_path_factory.mktemp("imported")
    links = [{"ifindex": 1, "ifname": "lo", "link_type": "loopback", "flags": ["UP"],
              "address": "00:00:00:00:00:00"},
             _link("eth0", 2, "52:54:00:00:00:0b"), _link("cbr0", 3, "0a:58:0a:00:01:01", "bridge"),
             _link("veth-a", 4, "06:00:0a:00:01:02", "veth", "cbr0"),
             _link("veth-b", 5, "06:00:0a:00:01:03", "veth", "cbr0")]
    dump = node_dump(tmp / "dump", **{
        "ip-link.json": json.dumps(links),
        "ip-neigh.json": json.dumps([{"dst": "10.0.1.2", "dev": "cbr0", "lladdr": "0a:58:0a:00:01:02"},
                                     {"dst": "10.0.1.3", "dev": "cbr0", "lladdr": "0a:58:0a:00:01:03"},
                                     {"dst": "192.168.5.1", "dev": "eth0", "lladdr": "52:54:00:00:00:01"}]),
        "bridge-fdb.json": json.dumps([
            {"mac": "0a:58:0a:00:01:02", "ifname": "veth-a", "master": "cbr0", "state": ""},
            {"mac": "0a:58:0a:00:01:03", "ifname": "veth-b", "master": "cbr0", "state": ""}]),
        "bridge-link.json": json.dumps([{"ifname": "veth-a", "master": "cbr0", "hairpin": True},
                                        {"ifname": "veth-b", "master": "cbr0", "hairpin": True}]),
    })
    objs = cluster_yaml(tmp / "c.yaml", [pod("frontend", "10.0.1.2"), pod("client", "10.0.1.3", ns="tools")])
    out = tmp / "out"
    out.mkdir()
    pktemu("import", str(dump), str(objs), "-o", str(out / "shop.yaml"))
    (out / "served.yaml").write_text(
        "extends: {file: shop.yaml, merge: true}\n"
        "pods:\n  frontend:\n    apps: [{kind: http-server, port: 8080}]\n"
        "scenarios:\n  get:\n    traffic:\n"
        "      - {at: 0ms, pod: client, app: {kind: http-client, target: 10.3.0.10, port: 80}}\n")
    return out


def test_reach_on_an_imported_cluster(imported: Path, tmp_path: Path) -> None:
    [bare] = reach(str(imported / "shop.yaml"), "--from", "tools/client")
    assert bare["service"] == "shop/web" and bare["outcome"] == "refused"      # nothing listens on 8080
    [web] = reach(str(imported / "served.yaml"), "--from", "tools/client")
    assert web["address"] == "10.3.0.10:80" and web["outcome"] == "reached"
    [ep] = web["endpoints"]
    assert (ep["endpoint"], ep["node"], ep["source"], ep["masquerade"]) == (
        "10.0.1.2:8080", "frontend", "10.0.1.3", False)
    pktemu("run", str(imported / "served.yaml"), "--out", str(tmp_path / "run"), "-q")
    pcap = tmp_path / "run" / "get" / "pcap" / "frontend-eth0.pcap"
    assert syn_sources(pcap, ep["endpoint"]) == {"10.0.1.3"}
    (imported / "norules.yaml").write_text("extends: {file: shop.yaml, merge: true}\n"
                                           "nodes:\n  worker-a: {iptables: null}\n")
    [lost] = reach(str(imported / "norules.yaml"), "--from", "tools/client")
    assert lost["outcome"] == "no route" and lost["endpoints"] == []
    assert [(d["node"], d["reason"]) for d in lost["drops"]] == [("gw", "no route to 10.3.0.10")]


@pytest.mark.parametrize("to", ["web.shop:80", "web.shop.svc.cluster.local:80", "web.shop.svc:80/tcp"])
def test_trace_from_an_imported_pod_to_its_service(imported: Path, to: str) -> None:
    d = json.loads(pktemu("trace", str(imported / "served.yaml"), "--from", "tools/client", "--to", to,
                          "-o", "json").stdout)
    assert d["from"] == "tools/client" and d["to"] == "10.3.0.10:80/tcp"
    assert d["summary"]["request"].startswith("delivered to frontend (tcp 10.0.1.3:")
    assert d["summary"]["reply"].startswith("delivered to client (tcp 10.3.0.10:80 > 10.0.1.3:")


# ---------------------------------------------------------------------------- trace by Service name
@pytest.mark.parametrize("origin,to,dest,first", [
    ("default/client", "kube-dns.kube-system:dns", "10.3.240.10:53/udp", "delivered to dns (udp"),
    ("default/client", "kube-dns.kube-system.svc.cluster.local:53/udp", "10.3.240.10:53/udp",
     "delivered to dns"),
    ("kube-system/kube-dns-7f9c5d8b6-x2x4v", "service-test.default.svc.cluster.local:80",
     "10.3.241.152:80/tcp", "delivered to server (tcp 10.0.2.3:"),
])
def test_trace_from_a_pod_object_to_a_service_port(origin: str, to: str, dest: str, first: str) -> None:
    d = json.loads(pktemu("trace", K8S, "--from", origin, "--to", to, "-o", "json").stdout)
    assert d["to"] == dest and d["summary"]["request"].startswith(first), d["summary"]


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("args,msg", [
    (["reach", K8S, "--from", "default/nope"], "reach --from: no pod or node 'default/nope'"),
    (["reach", K8S], "the following arguments are required: --from"),
    (["reach", K8S, "--from", "client", "--service", "nope.default"],
     "reach --service 'nope.default': no Service default/nope (have: default/service-hairpin, "),
    (["reach", K8S, "--from", "client", "--service", "web.prod"], "namespace prod has none"),
    (["reach", K8S, "--from", "client", "--service", "Bad_Name"], "expected NAME[.NAMESPACE]"),
    (["reach", PLAIN, "--from", "client"], "has no kubernetes section: no Services to try"),
    (["reach", K8S, "--from", "client", "--at", "soon"], "--at: expected a duration"),
    (["reach", K8S, "--from", "client", "-o", "xml"], "invalid choice: 'xml'"),
    (["trace", K8S, "--from", "client", "--to", "service-test.default:https"],
     "Service default/service-test has no port named 'https' (has: 80/tcp)"),
    (["trace", K8S, "--from", "client", "--to", "kube-dns.kube-system:dns/tcp"],
     "Service kube-system/kube-dns has no tcp port named 'dns' (has: 53/udp (dns))"),
    (["trace", K8S, "--from", "prod/client", "--to", "service-test:80"], "no pod or node 'prod/client'"),
    (["trace", K8S, "--from", "client", "--to", "service-test.prod.svc.cluster.local:80"],
     "no Service prod/service-test (have: "),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path: Path, args: list[str], msg: str) -> None:
    p = subprocess.run([sys.executable, "-m", "pktemu.cli", *args], capture_output=True, text=True,
                       cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert p.returncode == 2 and p.stdout == "", p
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("pktemu: error: ") and msg in lines[0], p.stderr
    assert list(tmp_path.iterdir()) == []
