"""server-result.json and `Network.server_results`: what the topology's server apps saw, so a test can
say "the server saw source 10.0.1.2" without reading pcaps. Checked against the pcaps of the same run."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from scapy.layers.inet import IP, TCP
from scapy.utils import rdpcap

import pktemu
from conftest import pktemu as pktemu_cli
from datapaths import ROOT

TOPOLOGY = ROOT / "topologies" / "service-test.yaml"


def server_result(run: Path, scenario: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads((run / scenario / "server-result.json").read_text())
    return out


def syns(pcap: Path) -> list[tuple[str, int, str, int]]:
    return [(p[IP].src, p[TCP].sport, p[IP].dst, p[TCP].dport) for p in rdpcap(str(pcap))
            if TCP in p and p[TCP].flags == "S"]


def test_the_server_pod_saw_the_clients_get_from_its_own_address(service_test_run: Path) -> None:
    res = server_result(service_test_run, "s1-clusterip")
    assert list(res) == ["client", "dns", "server"]                 # by pod name
    [app] = res["server"]
    assert app["app"] == "http-server"
    [req] = app["result"]["served"]
    # the port the client's SYN left with: a ClusterIP is DNATed, not masqueraded
    [(src, sport, dst, dport)] = syns(service_test_run / "s1-clusterip" / "pcap" / "client-eth0.pcap")
    assert (src, dst, dport) == ("10.0.1.2", "10.3.241.152", 80)
    assert req["peer"] == f"10.0.1.2:{sport}" == "10.0.1.2:40000"
    assert req["local"] == "10.0.2.2:8080"
    assert (req["method"], req["path"], req["host"], req["status"]) == ("GET", "/", "service-test", 200)
    assert req["request_line"] == "GET / HTTP/1.1"
    assert res["client"] == [{"app": "http-server", "result": {"served": []}}]


def test_a_hairpinned_request_reaches_the_client_pod_masqueraded_to_cbr0(service_test_run: Path) -> None:
    """The oracle's README: the endpoint is the client itself, so kube-proxy marks it for MASQUERADE
    and the pod sees the connection come from node1's cbr0 address 10.0.1.1."""
    res = server_result(service_test_run, "s3-hairpin")
    [req] = res["client"][0]["result"]["served"]
    assert (req["peer"].split(":")[0], req["local"]) == ("10.0.1.1", "10.0.1.2:8080")
    assert (req["method"], req["path"], req["host"], req["status"]) == ("GET", "/", "service-hairpin", 200)
    # the SYN that came back into the pod, as its eth0 captured it, is the one the server accepted
    back = [s for s in syns(service_test_run / "s3-hairpin" / "pcap" / "client-eth0.pcap") if s[3] == 8080]
    assert [f"{src}:{sport}" for src, sport, _dst, _dport in back] == [req["peer"]]
    assert res["server"][0]["result"]["served"] == []


def test_the_dns_pod_saw_the_clients_query(service_test_run: Path) -> None:
    [app] = server_result(service_test_run, "s1-clusterip")["dns"]
    assert app["app"] == "dns-server"
    [q] = app["result"]["queries"]
    assert q["peer"].startswith("10.0.1.2:")
    assert (q["qname"], q["qtype"], q["rcode"], q["answer"]) == \
        ("service-test.default.svc.cluster.local", 1, 0, "10.3.241.152")


def test_no_server_sees_a_request_to_a_service_without_endpoints(service_test_run: Path) -> None:
    res = server_result(service_test_run, "s2-noendpoints")
    assert [r["result"]["served"] for pod in ("client", "server") for r in res[pod]] == [[], []]


def test_the_api_gives_the_same_as_the_file(tmp_path: Path) -> None:
    net = pktemu.Network.load(TOPOLOGY, "s1-clusterip", capture=tmp_path)
    assert net.server_results["server"] == [{"app": "http-server", "result": {"served": []}}]
    net.run()
    path = Path(net.write())
    assert net.server_results["server"][0]["result"]["served"][0]["peer"] == "10.0.1.2:40000"
    assert json.loads((path / "server-result.json").read_text()) == net.server_results
    assert net.results[0]["http"]["status_line"] == "HTTP/1.1 200 OK"     # clients stay in results


ECHO = '''
def echo(api, port):
    lst = api.listen(("0.0.0.0", port))
    api.result["peers"] = []
    while True:
        conn, peer = yield lst.accept()
        api.result["peers"].append(peer)
        data = yield conn.recv(100)
        yield conn.send(data.upper())
        conn.close()

def shout(api):
    conn = yield api.connect(("10.0.2.2", 9000))
    yield conn.send(b"quiet please")
    api.result["reply"] = yield conn.recv(100)
'''


def test_a_python_server_apps_result_is_written_and_python_clients_are_not(tmp_path: Path) -> None:
    (tmp_path / "pyapp.py").write_text(ECHO)
    pods = yaml.safe_load(TOPOLOGY.read_text())["pods"]
    pods["server"]["apps"].append({"kind": "python", "entry": "pyapp:echo", "args": {"port": 9000}})
    topo = tmp_path / "py.yaml"
    topo.write_text(yaml.safe_dump({"extends": str(TOPOLOGY), "name": "py", "pods": pods, "scenarios": {
        "shout": {"traffic": [{"pod": "client", "app": {"kind": "python", "entry": "pyapp:shout"}}]}}}))
    out = tmp_path / "out"
    p = pktemu_cli("run", str(topo), "--scenario", "shout", "--out", str(out), "-q")
    assert p.stderr == ""
    assert json.loads((out / "shout" / "client-result.json").read_text()) == {"reply": "QUIET PLEASE"}
    res = server_result(out, "shout")
    assert [a["app"] for a in res["server"]] == ["http-server", "python"]
    [peer] = res["server"][1]["result"]["peers"]
    seen = syns(out / "shout" / "pcap" / "server-eth0.pcap")
    [(src, sport, _dst, _dport)] = [s for s in seen if s[3] == 9000]
    assert peer == [src, sport] and src == "10.0.1.2"
    assert "python" not in [a["app"] for a in res["client"]]


@pytest.mark.parametrize("name", ["server-result.json", "scenario.json"])
def test_a_traffic_result_cannot_take_the_servers_file(tmp_path: Path, name: str) -> None:
    topo = tmp_path / "t.yaml"
    topo.write_text(f"extends: {TOPOLOGY}\nscenarios:\n  s:\n    traffic: [{{pod: client, app: "
                    f"{{kind: ping, target: 10.0.2.2}}, result: {name}}}]\n")
    p = pktemu_cli("run", str(topo), "--out", str(tmp_path / "out"), check=False)
    assert p.returncode == 2 and p.stderr.count("\n") == 1
    assert "traffic[0].result: not a plain file name ending in .json (and not scenario.json, " \
           "server-result.json, steps.json, replay.json)" in p.stderr, p.stderr
    assert not (tmp_path / "out").exists()
