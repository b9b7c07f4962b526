"""Mistakes in topologies and manifests are errors, not silence: timeline names and times, shorthand
addresses, Pods that contradict their topology pod, and traffic `result:` files that are honoured."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import datapaths
from conftest import pktemu
from pktemu.errors import PktemuError
from pktemu.io.topofile import load_topology
from pktemu.k8s.manifests import load_text

TOPO = datapaths.ROOT / "topologies"
K8S = TOPO / "service-test-k8s.yaml"


def topo(tmp_path: Path, text: str, base: Path = K8S) -> Path:
    t = tmp_path / "t.yaml"
    t.write_text(f"extends: {base}\n{text}")
    return t


def load_error(path: Path) -> str:
    with pytest.raises(PktemuError) as e:
        load_topology(str(path))
    return str(e.value)


def timeline(*entries: str, extra: str = "") -> str:
    return f"scenarios:\n  s1-clusterip:\n{extra}    timeline:\n" + "".join(f"      - {e}\n" for e in entries)


# ---------------------------------------------------------------------------- 5. timeline
@pytest.mark.parametrize("entries, message", [
    (["{at: 1s, ready: {pod: sever, value: false}}"],
     "timeline[0].ready.pod: no Pod default/sever at 1s: it is neither in the manifests nor applied earlier"),
    (["{at: 1s, ready: {pod: server, namespace: prod, value: false}}"],
     "timeline[0].ready.pod: no Pod prod/server at 1s"),
    (["{at: 1s, scale: {service: service-tset, replicas: 0}}"],
     "timeline[0].scale.service: no Service default/service-tset at 1s"),
    (["{at: 1s, delete: Pod/default/nobody}"], "timeline[0].delete: no Pod default/nobody at 1s"),
    (["{at: 1s, delete: EndpointSlice/service-test}"],
     "timeline[0].delete: no EndpointSlice default/service-test"),
    (["{at: 1s, delete: Service/service-test}", "{at: 2s, delete: Service/default/service-test}"],
     "timeline[1].delete: no Service default/service-test at 2s: it was deleted by "
     "scenarios.s1-clusterip.timeline[0]"),
    (["{at: 2s, scale: {service: service-test, replicas: 1}}", "{at: 1s, delete: Service/service-test}"],
     "timeline[0].scale.service: no Service default/service-test at 2s: it was deleted by "
     "scenarios.s1-clusterip.timeline[1]"),
    (["{at: 1s, delete: Pod/server}", "{at: 1.5s, ready: {pod: server, value: true}}"],
     "timeline[1].ready.pod: no Pod default/server at 1.5s: it was deleted"),
    (["{at: 1s, apply: {apiVersion: v1, kind: Service, metadata: {name: ext}, spec: {ports: [{port: 80}]}}}",
      "{at: 2s, scale: {service: ext, replicas: 0}}"],
     "timeline[1].scale.service: Service default/ext has no selector: there are no Pods to scale"),
])
def test_a_timeline_action_on_a_name_that_is_not_there_is_an_error(tmp_path: Path, entries: list[str],
                                                                     message: str) -> None:
    msg = load_error(topo(tmp_path, timeline(*entries)))
    assert msg.startswith(f"{tmp_path / 't.yaml'}: scenarios.s1-clusterip.") and message in msg, msg


def test_names_applied_earlier_on_the_timeline_are_known(tmp_path: Path) -> None:
    pod = ("{apiVersion: v1, kind: Pod, metadata: {name: extra, labels: {app: service-test}, "
           "annotations: {pktemu.io/netns: server}}}")
    t = load_topology(str(topo(tmp_path, timeline(
        "{at: 2s, ready: {pod: extra, value: false}}",           # written before, happens after the apply
        f"{{at: 1s, apply: {pod}}}",
        "{at: 3s, delete: Pod/extra}",
        f"{{at: 4s, apply: {pod}}}",                              # back again: it may be deleted again
        "{at: 4.5s, delete: Pod/default/extra}",
        "{at: 5s, scale: {service: service-test, replicas: 0}}"))))
    assert [(e.at, e.action) for e in t.scenarios["s1-clusterip"].timeline] == [
        (1_000_000_000, "apply"), (2_000_000_000, "ready"), (3_000_000_000, "delete"),
        (4_000_000_000, "apply"), (4_500_000_000, "delete"), (5_000_000_000, "scale")]


def test_an_action_after_the_scenario_ends_is_an_error(tmp_path: Path) -> None:
    msg = load_error(topo(tmp_path, timeline("{at: 9s, kube_proxy: {node: node1, action: crash}}")))
    assert msg.endswith("scenarios.s1-clusterip.timeline[0].at: kube_proxy at 9s is after the scenario ends, "
                        "at 5s (the last traffic start plus duration)")


def test_the_scenario_end_counts_the_last_traffic_start_and_the_duration(tmp_path: Path) -> None:
    traffic = "    duration: 2s\n    traffic: [{at: 3s, pod: client, app: {kind: ping, target: 10.0.2.2}}]\n"
    ok = load_topology(str(topo(tmp_path, timeline("{at: 5s, kube_proxy: {node: node1, action: crash}}",
                                                   extra=traffic))))
    assert ok.scenarios["s1-clusterip"].timeline[0].at == 5_000_000_000
    msg = load_error(topo(tmp_path, timeline("{at: 5001ms, kube_proxy: {node: node1, action: crash}}",
                                             extra=traffic)))
    assert "timeline[0].at: kube_proxy at 5.001s is after the scenario ends, at 5s" in msg


# ---------------------------------------------------------------------------- 6. addresses
@pytest.mark.parametrize("value, shown", [("1", "1"), ('"10.1"', "'10.1'"), ('"1"', "'1'"),
                                          ('"010.0.0.1"', "'010.0.0.1'"), ("167772161", "167772161"),
                                          ('"10.0.0.1 "', "'10.0.0.1 '"), ('"10.0.0.256"', "'10.0.0.256'")])
def test_a_dns_record_is_a_dotted_quad(tmp_path: Path, value: str, shown: str) -> None:
    t = topo(tmp_path, "scenarios:\n  s1-clusterip:\n    traffic: [{pod: dns, app: {kind: dns-server, "
                       f"records: {{foo.example: {value}}}}}}}]\n", TOPO / "service-test.yaml")
    assert load_error(t).endswith(f"scenarios.s1-clusterip.traffic[0].app.records.foo.example: not an IPv4 "
                                  f"address: {shown} (expected a dotted quad like 10.0.1.2)")


def test_a_dotted_quad_record_still_works(tmp_path: Path) -> None:
    t = topo(tmp_path, "scenarios:\n  s1-clusterip:\n    traffic: [{pod: server, app: {kind: dns-server, "
                       "records: {Foo.Example.: 10.0.0.1}}}]\n", TOPO / "service-test.yaml")
    assert load_topology(str(t)).scenarios["s1-clusterip"].traffic[0].app.params["records"] == {
        "Foo.Example.": "10.0.0.1"}


POD = "pods:\n  client: {node: node1, bridge: cbr0, "
APP = "scenarios:\n  s1-clusterip:\n    traffic: [{pod: client, app: "


@pytest.mark.parametrize("text, field", [
    (POD + "address: 10.0.1.2/24, gateway: '10.1'}\n", "pods.client.gateway"),
    (POD + "address: 10.0.1.2/24, resolv: {nameservers: [1]}}\n", "pods.client.resolv.nameservers[0]"),
    (POD + "address: 10.1/24}\n", "pods.client.address"),
    (POD + "address: 10.0.1.2/255.255.255.0}\n", "pods.client.address"),
    (POD + "address: 010.0.1.2/24}\n", "pods.client.address"),
    (APP + "{kind: http-client, target: '10.1'}}]\n", "scenarios.s1-clusterip.traffic[0].app.target"),
    (APP + "{kind: http-client, target: 10.3.241.152, name: x, dns_server: 010.3.240.10}}]\n",
     "scenarios.s1-clusterip.traffic[0].app.dns_server"),
    (APP + "{kind: ping, target: 167772161}}]\n", "scenarios.s1-clusterip.traffic[0].app.target"),
    (APP + "{kind: http-load, target: '1'}}]\n", "scenarios.s1-clusterip.traffic[0].app.target"),
    ("kubernetes:\n  service_cidr: 10.3.240.0/255.255.240.0\n", "kubernetes.service_cidr"),
    ("kubernetes:\n  cluster_cidr: 10/8\n", "kubernetes.cluster_cidr"),
])
def test_every_address_field_wants_a_dotted_quad(tmp_path: Path, text: str, field: str) -> None:
    msg = load_error(topo(tmp_path, text))
    assert f": {field}: " in msg and "dotted quad" in msg, msg


def test_a_route_to_a_shorthand_network_is_an_error(tmp_path: Path) -> None:
    t = tmp_path / "t.yaml"
    t.write_text((TOPO / "service-test.yaml").read_text().replace("{to: default, via: 10.100.0.1}",
                                                                  "{to: 10/8, via: 10.100.0.1}", 1))
    assert t.read_text().count("10/8") == 1
    msg = load_error(t)
    assert "nodes.node1.routes[0].to: expected default or a CIDR like 10.0.2.0/24, got '10/8'" in msg


@pytest.mark.parametrize("field, value", [("spec.clusterIP", "'10.3.1'"), ("spec.externalIPs[0]", "1"),
                                          ("status.loadBalancer.ingress[0].ip", "'010.0.0.1'")])
def test_manifest_addresses_are_dotted_quads(field: str, value: str) -> None:
    lb = ("type: LoadBalancer, ports: [{port: 80}]}\n"
          f"status: {{loadBalancer: {{ingress: [{{ip: {value}}}]}}")
    spec = {"spec.clusterIP": f"clusterIP: {value}, ports: [{{port: 80}}]",
            "spec.externalIPs[0]": f"externalIPs: [{value}], ports: [{{port: 80}}]",
            "status.loadBalancer.ingress[0].ip": lb}[field]
    with pytest.raises(PktemuError) as e:
        load_text(f"apiVersion: v1\nkind: Service\nmetadata: {{name: s}}\nspec: {{{spec}}}\n", "m.yaml")
    assert f"m.yaml:1: Service default/s: {field}: not an IPv4 address: " in str(e.value)


def test_endpoint_addresses_and_source_ranges_are_strict_too() -> None:
    with pytest.raises(PktemuError, match=r"endpoints\[0\]\.addresses\[0\]: not an IPv4 address: '10\.2'"):
        load_text("apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\naddressType: IPv4\n"
                  "metadata: {name: e, labels: {kubernetes.io/service-name: s}}\n"
                  "endpoints: [{addresses: ['10.2']}]\n", "m.yaml")
    with pytest.raises(PktemuError, match=r"spec.loadBalancerSourceRanges\[0\]: not a CIDR: '10/8'"):
        load_text("apiVersion: v1\nkind: Service\nmetadata: {name: s}\n"
                  "spec: {ports: [{port: 80}], loadBalancerSourceRanges: [10/8]}\n", "m.yaml")


# ---------------------------------------------------------------------------- 7. Pods and their namespaces
def _pod_topology(tmp_path: Path, pod: str) -> Path:
    (tmp_path / "p.yaml").write_text(f"apiVersion: v1\nkind: Pod\nmetadata: {{name: server}}\n{pod}")
    return topo(tmp_path, "kubernetes:\n  manifests: [p.yaml]\n  kube_proxy: {node1: {mode: iptables}}\n")


def test_a_pod_ip_that_is_not_its_topology_pods_address_is_an_error(tmp_path: Path) -> None:
    msg = load_error(_pod_topology(tmp_path, "status: {podIP: 10.0.2.9}\n"))
    assert msg == (f"{tmp_path / 'p.yaml'}:1: Pod default/server: status.podIP: 10.0.2.9 is not the address "
                   "of topology pod server (10.0.2.2); leave it out to take the pod's")


def test_a_node_name_that_is_not_its_topology_pods_node_is_an_error(tmp_path: Path) -> None:
    msg = load_error(_pod_topology(tmp_path, "spec: {nodeName: node1}\n"))
    assert msg.endswith("Pod default/server: spec.nodeName: node1 is not the node of topology pod server "
                        "(node2); leave it out to take the pod's")


def test_the_netns_annotation_decides_which_address_a_pod_must_have(tmp_path: Path) -> None:
    ann = "metadata: {name: other, annotations: {pktemu.io/netns: server}}\n"
    (tmp_path / "p.yaml").write_text(f"apiVersion: v1\nkind: Pod\n{ann}status: {{podIP: 10.0.1.2}}\n")
    t = topo(tmp_path, "kubernetes:\n  manifests: [p.yaml]\n  kube_proxy: {node1: {mode: iptables}}\n")
    msg = load_error(t)
    assert "Pod default/other: status.podIP: 10.0.1.2 is not the address of topology pod server" in msg


def test_a_pod_that_agrees_with_its_topology_pod_loads(tmp_path: Path) -> None:
    t = load_topology(str(_pod_topology(tmp_path, "spec: {nodeName: node2}\nstatus: {podIP: 10.0.2.2}\n")))
    (pod,) = t.kubernetes.objects                                      # type: ignore[union-attr]
    assert (pod.pod_ip, pod.node_name) == ("10.0.2.2", "node2")


def test_a_pod_applied_on_the_timeline_is_checked_the_same_way(tmp_path: Path) -> None:
    pod = "{apiVersion: v1, kind: Pod, metadata: {name: server}, status: {podIP: 10.0.1.2}}"
    msg = load_error(topo(tmp_path, timeline(f"{{at: 1s, apply: {pod}}}")))
    assert "timeline[0].apply: Pod default/server: status.podIP: 10.0.1.2 is not the address" in msg


# ---------------------------------------------------------------------------- 8. result files
RESULTS = """\
scenarios:
  two:
    duration: 1s
    settle: 10ms
    traffic:
      - {node: h1, app: {kind: ping, target: 10.9.0.2}, result: h2.json}
      - {at: 10ms, node: h1, app: {kind: ping, target: 10.9.0.3, id: 2}}
      - {at: 20ms, node: h2, app: {kind: ping, target: 10.9.0.3, id: 3}}
      - {at: 30ms, node: h3, app: {kind: ping, target: 10.9.0.1, id: 4}, result: null}
"""


def test_result_names_the_file_a_traffic_items_result_goes_to(tmp_path: Path) -> None:
    t = topo(tmp_path, RESULTS, datapaths.DATA / "lan.yaml")
    pktemu("run", str(t), "--scenario", "two", "--out", str(tmp_path / "out"), "-q", timeout=60)
    out = tmp_path / "out" / "two"
    h2 = json.loads((out / "h2.json").read_text())
    assert (h2["target"], h2["received"]) == ("10.9.0.2", 1)
    # the two entries without `result` share client-result.json, as a list in traffic order
    rest = json.loads((out / "client-result.json").read_text())
    assert [(r["target"], r["received"]) for r in rest] == [("10.9.0.3", 1), ("10.9.0.3", 1)]
    assert sorted(p.name for p in out.glob("*.json")) == ["client-result.json", "h2.json", "scenario.json",
                                                          "server-result.json"]


@pytest.mark.parametrize("name", ["scenario.json", "drops.txt", "../x.json", "pcap", ".x.json", "a b.json"])
def test_result_cannot_name_another_output_or_leave_the_directory(tmp_path: Path, name: str) -> None:
    t = topo(tmp_path, f"scenarios:\n  s:\n    traffic: [{{node: h1, app: {{kind: ping, target: 10.9.0.2}}, "
                       f"result: '{name}'}}]\n", datapaths.DATA / "lan.yaml")
    assert "scenarios.s.traffic[0].result: not a plain file name ending in .json" in load_error(t)


def test_a_ping_of_count_0_is_refused_as_iputils_ping_refuses_it(tmp_path: Path) -> None:
    """iputils ping 20221126 (Debian 12's) says of `-c 0`: "invalid argument: '0': out of range: 1 <=
    value <= 9223372036854775807" and exits 1; `pktemu run` refuses the scenario in one line, exit 2,
    and writes nothing."""
    t = topo(tmp_path, APP + "{kind: ping, target: 10.0.2.2, count: 0}}]\n")
    out = tmp_path / "out"
    r = pktemu("run", str(t), "--out", str(out), check=False, timeout=60)
    assert r.returncode == 2 and r.stdout == "" and not out.exists()
    assert r.stderr.splitlines() == [
        f"pktemu: error: {t}: scenarios.s1-clusterip.traffic[0].app.count: expected an integer 1-1000000000, "
        "got 0 (iputils ping refuses -c 0: out of range, 1 <= value)"]
    t = topo(tmp_path, APP + "{kind: ping, target: 10.0.2.2, count: 1}}]\n")
    assert load_topology(str(t)).scenarios["s1-clusterip"].traffic[0].app.params["count"] == 1
