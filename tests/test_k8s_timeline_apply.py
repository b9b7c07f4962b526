"""A Service applied again by the timeline keeps its ClusterIP and node ports, as the API server
keeps them (and refuses another ClusterIP); a deleted Service's ClusterIP is free for the next one."""
from __future__ import annotations

import re
from pathlib import Path

from conftest import pktemu
from datapaths import ROOT

BASE = ROOT / "topologies" / "seed-story.yaml"


def _svc(name: str, port: int, extra: str = "") -> str:
    return (f"{{apiVersion: v1, kind: Service, metadata: {{name: {name}, namespace: default}}, "
            f"spec: {{{extra}selector: {{app: service-test}}, "
            f"ports: [{{protocol: TCP, port: {port}, targetPort: http}}]}}}}")


def _topo(tmp_path: Path, *entries: str) -> Path:
    p = tmp_path / "t.yaml"
    lines = "".join(f"      - {e}\n" for e in entries)
    p.write_text(f"extends: {{file: {BASE}, merge: true}}\nscenarios:\n  story: null\n"
                 f"  x:\n    timeline:\n{lines}")
    return p


def _service_rules(topo: Path, at: str, name: str) -> list[str]:
    """`-d IP -p tcp ... --dport PORT` of the Service's KUBE-SERVICES and KUBE-NODEPORTS rules."""
    text = pktemu("rules", str(topo), "--node", "node1", "--scenario", "x", "--at", at, "-t", "nat").stdout
    return [" ".join(re.findall(r"(?:-d \S+|--dport \d+|^-A \S+)", ln)) for ln in text.splitlines()
            if f'"default/{name}' in ln and ln.startswith(("-A KUBE-SERVICES", "-A KUBE-NODEPORTS"))]


def test_a_service_applied_again_without_a_cluster_ip_keeps_its_own(tmp_path: Path) -> None:
    topo = _topo(tmp_path, f"{{at: 1s, apply: {_svc('other', 80)}}}",
                 f"{{at: 2s, apply: {_svc('other', 8080)}}}")
    before = _service_rules(topo, "1.5s", "other")
    after = _service_rules(topo, "4s", "other")           # kube-proxy's min_sync_period has passed
    ip = before[0].split()[3].removesuffix("/32")
    assert before == [f"-A KUBE-SERVICES -d {ip}/32 --dport 80"] and ip != "10.3.241.152"
    assert after == [f"-A KUBE-SERVICES -d {ip}/32 --dport 8080"]


def test_a_node_port_service_applied_again_keeps_its_node_port(tmp_path: Path) -> None:
    topo = _topo(tmp_path, f"{{at: 1s, apply: {_svc('np', 80, 'type: NodePort, ')}}}",
                 f"{{at: 2s, apply: {_svc('np', 80, 'type: NodePort, sessionAffinity: ClientIP, ')}}}")
    before = [r for r in _service_rules(topo, "1.5s", "np") if r.startswith("-A KUBE-NODEPORTS")]
    after = [r for r in _service_rules(topo, "4s", "np") if r.startswith("-A KUBE-NODEPORTS")]
    assert before and before == after


def test_a_deleted_services_cluster_ip_may_be_taken_by_another(tmp_path: Path) -> None:
    topo = _topo(tmp_path, "{at: 1s, delete: Service/default/service-test}",
                 f"{{at: 2s, apply: {_svc('renamed', 80, 'clusterIP: 10.3.241.152, ')}}}")
    assert _service_rules(topo, "4s", "renamed") == ["-A KUBE-SERVICES -d 10.3.241.152/32 --dport 80"]


def test_another_cluster_ip_for_a_live_service_is_refused(tmp_path: Path) -> None:
    topo = _topo(tmp_path, f"{{at: 2s, apply: {_svc('service-test', 80, 'clusterIP: 10.3.241.153, ')}}}")
    p = pktemu("validate", str(topo), check=False)
    assert p.returncode == 2
    assert p.stderr == (f"pktemu: error: {topo}: scenarios.x.timeline[0].apply: Service "
                        "default/service-test: spec.clusterIP: may not change once set: Service "
                        "default/service-test has ClusterIP 10.3.241.152, not 10.3.241.153\n")
