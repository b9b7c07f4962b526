"""A scenario (or step) whose clients are done early still runs every timeline action the file
accepted, in its own step: the run and the step wait for the last one, then `settle`. A client
the end of the run cuts off is said to be so."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from conftest import pktemu

EPOCH = 1_735_689_600          # the pcaps' time origin (pktemu.sim.EPOCH_NS), in seconds

TWO = """
name: two
nodes:
  a:
    interfaces: {eth0: {addresses: [10.0.0.1/24]}}
  b:
    interfaces: {eth0: {addresses: [10.0.0.2/24]}}
    apps: [{kind: udp-echo, port: 7}]
veths: [[a/eth0, b/eth0]]
scenarios:
"""
ECHO = "{kind: echo-client, proto: udp, target: 10.0.0.2, port: 7}"


def _run(tmp_path: Path, body: str) -> Path:
    topo = tmp_path / "t.yaml"
    topo.write_text(TWO + body)
    pktemu("run", str(topo), "--out", str(tmp_path / "out"), "-q")
    return tmp_path / "out" / "x"


def _json(path: Path) -> Any:
    return json.loads(path.read_text())


def _udp7_times(pcap: Path) -> list[float]:
    out = subprocess.run(["tshark", "-r", str(pcap), "-Y", "udp.port == 7", "-T", "fields",
                          "-e", "frame.time_epoch"], capture_output=True, text=True, check=True).stdout
    return [round(float(t) - EPOCH, 3) for t in out.split()]


def test_an_action_after_the_clients_are_done_runs_and_is_captured(tmp_path: Path) -> None:
    out = _run(tmp_path, f"""  x:
    traffic: [{{at: 0s, node: a, app: {ECHO}}}]
    timeline:
      - {{at: 3s, node: a, app: {{start: {ECHO}}}}}
""")
    assert (out / "timeline.txt").read_text().startswith("3.000000 a app {start: {kind: echo-client")
    # the client's datagram and its answer at 0 s, the timeline's client's at 3 s
    assert _udp7_times(out / "pcap" / "a-eth0.pcap") == [0.0, 0.0, 3.0, 3.0]


def test_a_steps_action_runs_in_its_step_not_in_the_next(tmp_path: Path) -> None:
    out = _run(tmp_path, f"""  x:
    steps:
      - name: one
        traffic: [{{at: 0s, node: a, app: {ECHO}}}]
        timeline: [{{at: 3s, node: a, ip: "link set eth0 down"}}]
        settle: 500ms
      - name: two
        traffic: [{{at: 0s, node: a, app: {ECHO}}}]
        settle: 500ms
""")
    steps = _json(out / "steps.json")
    assert [(s["step"], s["start_s"], s["end_s"], s["ended_by"]) for s in steps] == \
        [("one", 0.0, 3.5, "clients done"), ("two", 3.5, 4.0, "clients done")]
    assert (out / "timeline.txt").read_text() == "3.000000 a ip link set eth0 down [ok]\n"
    # step two starts after the link went down in step one: its client cannot send
    assert [a["outcome"] for a in _json(out / "client-result-two.json")["attempts"]] == ["ENETUNREACH"]


def test_the_scenarios_own_timeline_outlasts_its_last_step(tmp_path: Path) -> None:
    out = _run(tmp_path, f"""  x:
    timeline: [{{at: 2s, node: a, app: {{start: {ECHO}}}}}]
    steps:
      - name: one
        traffic: [{{at: 0s, node: a, app: {ECHO}}}]
        settle: 500ms
""")
    assert round(_json(out / "steps.json")[0]["end_s"], 3) == 0.5
    assert (out / "timeline.txt").read_text().startswith("2.000000 a app")
    assert _udp7_times(out / "pcap" / "a-eth0.pcap") == [0.0, 0.0, 2.0, 2.0]


def test_a_client_the_end_of_the_run_cuts_off_is_a_warning(tmp_path: Path) -> None:
    """Its result file said `"outcome": null` and nothing said why."""
    topo = tmp_path / "t.yaml"
    topo.write_text(TWO + """  x:
    duration: 1s
    traffic:
      - {at: 0s, node: a, result: done.json, app: {kind: echo-client, proto: udp, target: 10.0.0.2, port: 7}}
      - {at: 0s, node: a, result: cut.json, app: {kind: echo-client, proto: udp, target: 10.0.0.9, port: 7,
                                                   timeout: 5s}}
""")
    p = pktemu("run", str(topo), "--out", str(tmp_path / "out"), "-q")
    assert p.stderr == (f"pktemu: warning: {topo}: scenarios.x.traffic[1]: the client had not finished "
                        "when the run ended at 1.000 s: its result is what it had seen by then\n")
    assert _json(tmp_path / "out" / "x" / "cut.json")["attempts"][0]["outcome"] is None
