"""Input that used to pass `validate` and fail a run midway (exit 2 after earlier scenarios were
written, the error naming no file): each is now one line at load, naming the file and the field,
and `run` writes nothing."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import pktemu
from datapaths import ROOT

ST = ROOT / "topologies" / "service-test.yaml"
S2_END = "sport: 40000}}\n  s3-hairpin:"           # the end of s2-noendpoints' traffic entry


def _write(tmp_path: Path, text: str, name: str = "t.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def _refused(tmp_path: Path, topo: Path, line: str) -> None:
    """`validate` and `run` both say `line` (after `pktemu: error: `), exit 2, and nothing is written."""
    for cmd in (["validate", str(topo)], ["run", str(topo), "--out", str(tmp_path / "out"), "-q"]):
        p = pktemu(*cmd, check=False)
        assert (p.returncode, p.stdout, p.stderr) == (2, "", f"pktemu: error: {line}\n"), cmd
    assert not (tmp_path / "out").exists()


def test_two_servers_on_one_port_of_a_pod(tmp_path: Path) -> None:
    topo = _write(tmp_path, f"""extends: {{file: {ST}, merge: true}}
pods:
  client:
    apps: [{{kind: http-server, port: 8080}}, {{kind: http-server, port: 8080, body: "b\\n"}}]
""")
    _refused(tmp_path, topo, f"{topo}: pods.client.apps[1].port: tcp port 8080 is already taken by "
             "pods.client.apps[0] (http-server on 0.0.0.0:8080): this http-server on 0.0.0.0 would fail "
             "with EADDRINUSE")


def test_servers_on_one_port_but_other_addresses_or_protocols_are_fine(tmp_path: Path) -> None:
    topo = _write(tmp_path, f"""extends: {{file: {ST}, merge: true}}
pods:
  server:
    addresses: [10.0.2.5/24]
    apps: [{{kind: tcp-echo, port: 7, bind: 10.0.2.2}}, {{kind: tcp-echo, port: 7, bind: 10.0.2.5}},
           {{kind: udp-echo, port: 7}}, {{kind: http-server, port: 8080}}]
""")
    assert pktemu("validate", str(topo)).returncode == 0


def test_a_traffic_server_on_a_port_the_pod_holds(tmp_path: Path) -> None:
    topo = _write(tmp_path, f"""extends: {{file: {ST}, merge: true}}
scenarios:
  s3-hairpin:
    traffic: [{{pod: client, app: {{kind: http-server, port: 8080}}}}]
""")
    _refused(tmp_path, topo, f"{topo}: scenarios.s3-hairpin.traffic[0].app.port: tcp port 8080 is already "
             "taken by pods.client.apps[0] (http-server on 0.0.0.0:8080): this http-server on 0.0.0.0 would "
             "fail with EADDRINUSE")


@pytest.mark.parametrize("rule, says", [
    ("-A POSTROUTING -j SNAT --to-source 10.0.0.5-10.0.0.1", "SNAT: address range '10.0.0.5-10.0.0.1'"),
    ("-A PREROUTING -j DNAT --to-destination 10.0.2.9-10.0.2.2", "DNAT: address range '10.0.2.9-10.0.2.2'"),
    ("-A PREROUTING -p tcp -j DNAT --to-destination 10.0.2.9-10.0.2.2:80",
     "DNAT: address range '10.0.2.9-10.0.2.2'"),
])
def test_a_reversed_nat_address_range(tmp_path: Path, rule: str, says: str) -> None:
    """iptables takes it (and the kernel then picks from a range wrapped around 0.0.0.0); pktemu
    refuses it at load with the file and line, as it refuses a reversed port range."""
    rules = (ROOT / "topologies" / "kube-proxy-rules.iptables").read_text().splitlines()
    at = rules.index("*nat") + 1
    while rules[at].startswith(":"):
        at += 1
    rules.insert(at, rule)
    (tmp_path / "kube-proxy-rules.iptables").write_text("\n".join(rules) + "\n")
    topo = _write(tmp_path, ST.read_text(), "st.yaml")
    line = f"{tmp_path / 'kube-proxy-rules.iptables'}:{at + 1}: {says} reversed (first above last)"
    _refused(tmp_path, topo, line)
    p = pktemu("trace", str(topo), "--from", "client", "--to", "10.3.241.152:80", check=False)
    assert (p.returncode, p.stdout, p.stderr) == (2, "", f"pktemu: error: {line}\n")


def _st_with(tmp_path: Path, old: str, new: str) -> Path:
    text = ST.read_text()
    assert old in text
    rules = "kube-proxy-rules.iptables"
    (tmp_path / rules).write_text((ROOT / "topologies" / rules).read_text())
    return _write(tmp_path, text.replace(old, new), "st.yaml")


def test_a_result_file_name_too_long_for_a_file(tmp_path: Path) -> None:
    r = "r" * 252
    topo = _st_with(tmp_path, S2_END, f"sport: 40000}}, result: {r}.json}}\n  s3-hairpin:")
    _refused(tmp_path, topo, f"{topo}: scenarios.s2-noendpoints.traffic[0].result: a file name is at most "
             f"255 bytes, and '{r[:27]}...{r[:23]}.json' is 257")


def test_a_result_file_name_of_255_bytes_is_written(tmp_path: Path) -> None:
    r = "r" * 250 + ".json"
    topo = _st_with(tmp_path, S2_END, f"sport: 40000}}, result: {r}}}\n  s3-hairpin:")
    pktemu("run", str(topo), "--scenario", "s2-noendpoints", "--out", str(tmp_path / "out"), "-q")
    assert (tmp_path / "out" / "s2-noendpoints" / r).is_file()


def test_a_pod_name_too_long_for_its_files(tmp_path: Path) -> None:
    pod = "p" * 240
    topo = _st_with(tmp_path, "\n  dns:\n", f"\n  {pod}:\n")
    _refused(tmp_path, topo, f"{topo}: pods.{pod[:24]}...{pod[:13]}: a pod name names files of a run's "
             "output (pcap/<pod>-<ifname>.pcap), and this one is 240 characters long, more than 234")


def test_a_node_name_too_long_for_its_files(tmp_path: Path) -> None:
    node = "n" * 250
    topo = _st_with(tmp_path, "node2", node)
    _refused(tmp_path, topo, f"{topo}: nodes.{node[:24]}...{node[:13]}: a node name names files of a run's "
             "output (pcap/<node>-<ifname>.pcap), and this one is 250 characters long, more than 234")


def test_a_node_name_of_234_characters_runs(tmp_path: Path) -> None:
    node = "n" * 234
    topo = _st_with(tmp_path, "node2", node)
    pktemu("run", str(topo), "--scenario", "s1-clusterip", "--out", str(tmp_path / "out"), "-q")
    assert (tmp_path / "out" / "s1-clusterip" / "pcap" / f"{node}-eth0.pcap").is_file()


def test_a_step_name_too_long_for_its_result_file(tmp_path: Path) -> None:
    step = "t" * 237
    topo = _write(tmp_path, f"""extends: {ST}
scenarios:
  stepped:
    steps:
      - name: {step}
        traffic: [{{pod: client, app: {{kind: http-client, target: 10.3.241.152, port: 80}}}}]
""")
    p = pktemu("validate", str(topo), check=False)
    assert p.returncode == 2 and p.stderr.endswith(
        ".steps[0].name: a step name names its clients' result file client-result-<step>.json, and this one "
        "is 237 characters long, more than 236\n") and p.stderr.startswith(f"pktemu: error: {topo}: ")


@pytest.mark.parametrize("name", ["steps.json", "replay.json", "scenario.json", "server-result.json"])
def test_a_result_cannot_take_a_file_the_output_folder_uses(tmp_path: Path, name: str) -> None:
    """steps.json (the steps' records) was silently overwritten by a step's client result."""
    topo = _write(tmp_path, f"""extends: {ST}
scenarios:
  stepped:
    steps:
      - name: one
        traffic: [{{pod: client, app: {{kind: http-client, target: 10.3.241.152, port: 80}}, result: {name}}}]
""")
    _refused(tmp_path, topo, f"{topo}: scenarios.stepped.steps[0].traffic[0].result: not a plain file name "
             "ending in .json (and not scenario.json, server-result.json, steps.json, replay.json): "
             f"'{name}'")
