"""Input that used to pass `validate` and fail a run midway (exit 2 after earlier scenarios were
written, the error naming no file): each is now one line at load, naming the file and the field,
and `run` writes nothing."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import pktemu
from datapaths import ROOT

ST = ROOT / "topologies" / "service-test.yaml"


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
