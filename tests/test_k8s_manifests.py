"""Kubernetes manifests and the `kubernetes:`/`timeline:` sections of topology files: what is read,
and bad input as one line naming the file, the object and the field."""
from __future__ import annotations

from pathlib import Path

import pytest

import datapaths
from conftest import pktemu
from pktemu.errors import PktemuError
from pktemu.io.topofile import load_topology
from pktemu.k8s.controllers import pod_slices
from pktemu.k8s.manifests import load_file, load_text
from pktemu.k8s.objects import Endpoints, EndpointSlice, Pod, Service

TOPO = datapaths.ROOT / "topologies"

KUBECTL_LIST = """\
apiVersion: v1
kind: List
metadata: {resourceVersion: ""}
items:
- apiVersion: v1
  kind: Service
  metadata:
    name: web
    namespace: shop
    uid: 0d6b2c7e-1111-2222-3333-444455556666
    resourceVersion: "4242"
    creationTimestamp: "2025-01-01T00:00:00Z"
    managedFields: [{manager: kubectl, operation: Update}]
  spec:
    type: NodePort
    clusterIP: 10.3.250.1
    clusterIPs: [10.3.250.1]
    ipFamilies: [IPv4]
    ipFamilyPolicy: SingleStack
    externalTrafficPolicy: Local
    internalTrafficPolicy: Cluster
    sessionAffinity: ClientIP
    sessionAffinityConfig: {clientIP: {timeoutSeconds: 600}}
    selector: {app: web}
    ports:
    - {name: http, port: 80, protocol: TCP, targetPort: http, nodePort: 30080}
    - {name: metrics, port: 9090, protocol: TCP, targetPort: 9090, nodePort: 30090}
  status: {loadBalancer: {}}
- apiVersion: v1
  kind: Pod
  metadata:
    name: web-1
    namespace: shop
    labels: {app: web}
    deletionTimestamp: "2025-01-01T00:01:00Z"
  spec:
    nodeName: node2
    containers:
    - name: web
      image: nginx
      ports: [{name: http, containerPort: 8080}]
      readinessProbe: {httpGet: {path: /, port: http}}
  status:
    podIP: 10.0.2.9
    conditions: [{type: Ready, status: "False"}]
"""


def test_kubectl_list_output_is_read_with_the_fields_service_networking_needs() -> None:
    svc, pod = load_text(KUBECTL_LIST, "dump.yaml")
    assert isinstance(svc, Service) and isinstance(pod, Pod)
    assert (svc.meta.key, svc.type, svc.cluster_ip) == ("shop/web", "NodePort", "10.3.250.1")
    assert [(p.name, p.port, p.target_port, p.node_port) for p in svc.ports] == [
        ("http", 80, "http", 30080), ("metrics", 9090, 9090, 30090)]
    assert (svc.session_affinity, svc.affinity_timeout_seconds) == ("ClientIP", 600)
    assert svc.external_traffic_policy == "Local"
    assert (pod.node_name, pod.pod_ip, pod.ready, pod.terminating) == ("node2", "10.0.2.9", False, True)
    # the EndpointSlice controller's view of this terminating, unready Pod: named port resolved
    (es,) = pod_slices(svc, [pod])
    (ep,) = es.endpoints
    assert (ep.conditions.ready, ep.conditions.serving, ep.conditions.terminating) == (False, False, True)
    assert sorted((p.name, p.port) for p in es.ports) == [("http", 8080), ("metrics", 9090)]


def test_multi_document_file_with_slices_endpoints_and_a_headless_service(tmp_path: Path) -> None:
    f = tmp_path / "m.yaml"
    f.write_text("""\
apiVersion: v1
kind: Service
metadata: {name: db}
spec: {clusterIP: None, selector: {app: db}, ports: [{port: 5432}]}
---
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: ext-abc, namespace: default, labels: {kubernetes.io/service-name: ext}}
addressType: IPv4
endpoints:
- addresses: [192.0.2.10]
  conditions: {ready: false, serving: true, terminating: true}
  nodeName: node1
  targetRef: {kind: Pod, name: ext-0, namespace: default}
ports: [{name: "", port: 443, protocol: TCP}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: legacy}
subsets:
- addresses: [{ip: 192.0.2.20, nodeName: node2}]
  notReadyAddresses: [{ip: 192.0.2.21}]
  ports: [{port: 8443, protocol: TCP}]
""")
    db, es, ep = load_file(str(f))
    assert isinstance(db, Service) and db.headless and db.cluster_ip is None
    assert isinstance(es, EndpointSlice) and es.service_name == "ext"
    c = es.endpoints[0].conditions
    assert (c.ready, c.serving, c.terminating, es.endpoints[0].target_pod) == (False, True, True, "ext-0")
    assert isinstance(ep, Endpoints)
    assert [a.ip for a in ep.subsets[0].addresses] == ["192.0.2.20"]
    assert [a.ip for a in ep.subsets[0].not_ready_addresses] == ["192.0.2.21"]


@pytest.mark.parametrize("doc, message", [
    ("apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 99999}]}\n",
     "m.yaml:1: Service default/s: spec.ports[0].port: expected an integer 1-65535, got 99999"),
    ("apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 80, targetport: 8080}]}\n",
     "m.yaml:1: Service default/s: spec.ports[0].targetport: unknown field"),
    ("apiVersion: v1\nkind: Service\nmetadata: {name: s}\n"
     "spec: {ports: [{port: 80}], sessionAffinity: Sticky}\n",
     "m.yaml:1: Service default/s: spec.sessionAffinity: expected None or ClientIP, got 'Sticky'"),
    ("a: 1\n---\napiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 80}]}\n",
     "m.yaml:1: None: kind: unsupported kind None"),
    ("apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 80, name: a}, {port: 81}]}\n",
     "m.yaml:1: Service default/s: spec.ports[1].name: required when a Service has more than one port"),
    ("apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Pod\n  metadata: {name: p}\n"
     "  status: {podIP: 10.0.0.300}\n",
     "m.yaml:4: Pod default/p: status.podIP: not an IPv4 address: '10.0.0.300'"),
    ("apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: e}\naddressType: IPv4\n",
     "m.yaml:1: EndpointSlice default/e: metadata.labels.kubernetes.io/service-name: required"),
    ("apiVersion: apps/v1\nkind: Service\nmetadata: {name: s}\n",
     "m.yaml:1: Service: apiVersion: Service needs apiVersion v1, got 'apps/v1'"),
    ("apiVersion: v1\nkind: Service\nmetadata: {name: Bad_Name}\nspec: {ports: [{port: 80}]}\n",
     "m.yaml:1: Service: metadata.name: not a valid Service name: 'Bad_Name'"),
    ("apiVersion: v1\nkind: Service\nmetadata: {name: s\n", "m.yaml:4: YAML syntax error"),
])
def test_bad_manifests_name_file_line_object_and_field(doc: str, message: str) -> None:
    with pytest.raises(PktemuError) as e:
        load_text(doc, "m.yaml")
    assert str(e.value).startswith(message), str(e.value)
    assert "\n" not in str(e.value)


def _topology(tmp_path: Path, manifest: str, extra: str = "") -> Path:
    (tmp_path / "svc.yaml").write_text(manifest)
    t = tmp_path / "t.yaml"
    t.write_text(f"""\
extends: {TOPO / 'service-test-k8s.yaml'}
name: t
kubernetes:
  service_cidr: 10.3.240.0/20
  manifests: [svc.yaml]
  kube_proxy: {{node1: {{mode: iptables}}}}
{extra}""")
    return t


def test_a_cluster_ip_outside_the_service_cidr_names_the_service(tmp_path: Path) -> None:
    t = _topology(tmp_path, "apiVersion: v1\nkind: Pod\nmetadata: {name: server}\n---\n"
                            "apiVersion: v1\nkind: Service\nmetadata: {name: wrong, namespace: web}\n"
                            "spec: {clusterIP: 10.96.0.10, ports: [{port: 80}]}\n")
    with pytest.raises(PktemuError) as e:
        load_topology(str(t))
    assert str(e.value) == (f"{tmp_path / 'svc.yaml'}:5: Service web/wrong: spec.clusterIP: 10.96.0.10 is "
                            "outside the service CIDR 10.3.240.0/20 (kubernetes.service_cidr, "
                            "--service-cluster-ip-range)")


def test_cluster_ips_and_node_ports_are_allocated_deterministically_and_never_twice(tmp_path: Path) -> None:
    t = _topology(tmp_path, "".join(
        f"---\napiVersion: v1\nkind: Service\nmetadata: {{name: s{i}}}\n"
        "spec: {type: NodePort, ports: [{port: 80}]}\n"
        for i in range(40)))
    a, b = load_topology(str(t)), load_topology(str(t))
    ips = [s.cluster_ip for s in a.kubernetes.objects]            # type: ignore[union-attr]
    ports = [s.ports[0].node_port for s in a.kubernetes.objects]  # type: ignore[union-attr]
    assert ips == [s.cluster_ip for s in b.kubernetes.objects]    # type: ignore[union-attr]
    assert len(set(ips)) == 40 and all(ip.startswith("10.3.24") or ip.startswith("10.3.25") for ip in ips)
    assert len(set(ports)) == 40 and all(30000 <= p <= 32767 for p in ports)


@pytest.mark.parametrize("extra, message", [
    ("scenarios:\n  s1-clusterip:\n    timeline: [{at: 1s, explode: {}}]\n",
     "scenarios.s1-clusterip.timeline[0].explode: unknown key"),
    ("scenarios:\n  s1-clusterip:\n    timeline: [{at: 1s, kube_proxy: {node: node2, action: crash}}]\n",
     "scenarios.s1-clusterip.timeline[0].kube_proxy.node: no kube-proxy runs on 'node2'"),
    ("scenarios:\n  s1-clusterip:\n    timeline: [{at: 1s, kube_proxy: {node: node1, action: reboot}}]\n",
     "scenarios.s1-clusterip.timeline[0].kube_proxy.action: expected crash or restart, got 'reboot'"),
    ("scenarios:\n  s1-clusterip:\n    timeline: [{at: 1s, delete: Deployment/web}]\n",
     "scenarios.s1-clusterip.timeline[0].delete: unknown kind 'Deployment'"),
    ("scenarios:\n  s1-clusterip:\n    timeline: [{at: 1s, ready: {pod: server, value: maybe}}]\n",
     "scenarios.s1-clusterip.timeline[0].ready.value: expected true or false, got 'maybe'"),
    ("scenarios:\n  s1-clusterip:\n    timeline: [{at: 1s, apply: {apiVersion: v1, kind: Service, "
     "metadata: {name: x}, spec: {clusterIP: 1.2.3.4, ports: [{port: 1}]}}}]\n",
     "scenarios.s1-clusterip.timeline[0].apply: Service default/x: spec.clusterIP: 1.2.3.4 is outside"),
])
def test_bad_timeline_entries_name_the_entry(tmp_path: Path, extra: str, message: str) -> None:
    ok = "apiVersion: v1\nkind: Service\nmetadata: {name: ok}\nspec: {ports: [{port: 80}]}\n"
    t = _topology(tmp_path, ok, extra)
    with pytest.raises(PktemuError) as e:
        load_topology(str(t))
    assert message in str(e.value) and str(e.value).startswith(str(t)), str(e.value)


def test_a_timeline_needs_a_kubernetes_section(tmp_path: Path) -> None:
    t = tmp_path / "t.yaml"
    t.write_text(f"extends: {TOPO / 'service-test.yaml'}\nscenarios:\n  s1-clusterip:\n"
                 "    timeline: [{at: 1s, kube_proxy: {node: node1, action: crash}}]\n")
    with pytest.raises(PktemuError, match=r"scenarios.s1-clusterip.timeline\[0\].kube_proxy: kube_proxy "
                                          "changes the cluster: it needs a kubernetes: section"):
        load_topology(str(t))


def test_a_pod_needs_an_ip_or_a_topology_pod(tmp_path: Path) -> None:
    t = _topology(tmp_path, "apiVersion: v1\nkind: Pod\nmetadata: {name: ghost}\n")
    with pytest.raises(PktemuError, match=r"svc.yaml:1: Pod default/ghost: status.podIP: required: no topo"):
        load_topology(str(t))


def test_endpoints_of_a_selectorless_service_are_mirrored_headless_ones_skipped(tmp_path: Path) -> None:
    t = _topology(tmp_path, """\
apiVersion: v1
kind: Service
metadata: {name: legacy}
spec: {clusterIP: 10.3.244.4, ports: [{port: 443, targetPort: 8443}]}
---
apiVersion: v1
kind: Endpoints
metadata: {name: legacy}
subsets:
- addresses: [{ip: 10.0.2.2, nodeName: node2}]
  notReadyAddresses: [{ip: 10.0.2.9}]
  ports: [{port: 8443}]
---
apiVersion: v1
kind: Service
metadata: {name: db}
spec: {clusterIP: None, ports: [{port: 5432}]}
""")
    out = pktemu("rules", str(t), "--node", "node1").stdout
    assert '-A KUBE-SERVICES -d 10.3.244.4/32 -p tcp -m comment --comment "default/legacy cluster IP"' in out
    assert "-j DNAT --to-destination 10.0.2.2:8443" in out and "10.0.2.9" not in out
    assert "default/db" not in out
