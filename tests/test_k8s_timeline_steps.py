"""Cluster actions in a scenario's steps: what one step applies or deletes, the next step finds so
(at load time as at run time), and an action on an object that is not there when it runs fails
as kubectl fails: a warning and a [FAILED] line in timeline.txt, never silently ignored."""
from __future__ import annotations

import json
from pathlib import Path

from conftest import pktemu
from datapaths import ROOT

BASE = ROOT / "topologies" / "seed-story.yaml"
EXTRA = ("{apiVersion: v1, kind: Service, metadata: {name: extra, namespace: default}, "
         "spec: {selector: {app: service-test}, ports: [{protocol: TCP, port: 81, targetPort: http}]}}")
GET = ("{kind: http-client, name: extra.default.svc.cluster.local, dns_server: 10.3.240.10, port: 81, "
       "dns_sport: 40053, sport: 40000}")


def _topo(tmp_path: Path, scenario: str) -> Path:
    p = tmp_path / "t.yaml"
    p.write_text(f"extends: {{file: {BASE}, merge: true}}\nscenarios:\n  story: null\n  x:\n{scenario}")
    return p


def test_a_service_applied_in_one_step_can_be_deleted_in_the_next(tmp_path: Path) -> None:
    topo = _topo(tmp_path, f"""    steps:
      - name: one
        timeline: [{{at: 0s, apply: {EXTRA}}}]
        traffic: [{{at: 100ms, pod: client, app: {GET}}}]
      - name: two
        timeline: [{{at: 0s, delete: Service/default/extra}}]
        traffic: [{{at: 100ms, pod: client, app: {GET}}}]
""")
    pktemu("run", str(topo), "--out", str(tmp_path / "out"), "-q")
    out = tmp_path / "out" / "x"
    one = json.loads((out / "client-result-one.json").read_text())
    assert one["http"]["status_line"] == "HTTP/1.1 200 OK"
    two = json.loads((out / "client-result-two.json").read_text())
    assert two["dns"]["rcode"] == 3 and two["error"] == "no target (DNS failed)"      # NXDOMAIN


def test_a_service_a_step_deleted_cannot_be_deleted_in_a_later_step(tmp_path: Path) -> None:
    topo = _topo(tmp_path, """    steps:
      - name: one
        timeline: [{at: 0s, delete: Service/default/service-test}]
      - name: two
        timeline: [{at: 0s, delete: Service/default/service-test}]
""")
    p = pktemu("validate", str(topo), check=False)
    assert p.returncode == 2
    assert p.stderr == (f"pktemu: error: {topo}: scenarios.x.steps[1].timeline[0].delete: no Service "
                        "default/service-test at 0s: it was deleted by scenarios.x.steps[0].timeline[0]\n")


def test_an_action_on_an_object_gone_at_run_time_fails_as_kubectl_does(tmp_path: Path) -> None:
    """The scenario's own timeline runs beside the steps, at times the load cannot order with
    theirs: its deletion is found at run time."""
    topo = _topo(tmp_path, """    timeline: [{at: 0s, delete: Service/default/service-test}]
    steps:
      - name: one
        timeline:
          - {at: 100ms, delete: Service/default/service-test}
          - {at: 100ms, scale: {service: service-test, replicas: 0}}
""")
    p = pktemu("run", str(topo), "--out", str(tmp_path / "out"), "-q")
    warnings = p.stderr.splitlines()
    assert len(warnings) == 2 and all(w.startswith("pktemu: warning: ") for w in warnings), p.stderr
    assert warnings[0].endswith(': delete Service/default/service-test at 0.100 s failed: Error from server '
                                '(NotFound): services "service-test" not found')
    log = (tmp_path / "out" / "x" / "timeline.txt").read_text().splitlines()
    assert log[1:] == [
        '0.100000 - delete Service/default/service-test [FAILED]: Error from server (NotFound): services '
        '"service-test" not found',
        '0.100000 - scale {service: service-test, replicas: 0} [FAILED]: Error from server (NotFound): '
        'services "service-test" not found']
