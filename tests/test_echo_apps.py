"""`tcp-echo`, `udp-echo` and `echo-client` through the real CLI: each attempt's outcome as the client
recorded it (answer, REFUSED, TIMEOUT, errno), checked against the pcaps and the servers' results."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.utils import rdpcap

from conftest import pktemu as pktemu_cli

C = {"kind": "echo-client", "target": "10.0.1.2", "port": 7}
SERVER_APPS = [{"kind": "udp-echo", "port": 7, "name": "echo-a"}, {"kind": "tcp-echo", "port": 7}]


def topology(tmp_path: Path, traffic: dict[str, list[dict[str, Any]]],
             more_apps: tuple[dict[str, Any], ...] = ()) -> Path:
    """node1's bridge 10.0.1.1/24: server 10.0.1.2 (echo on 7), dns 10.0.1.4, client 10.0.1.10."""
    pod = {"node": "node1", "bridge": "cbr0"}
    topo = {"name": "echo", "seed": 1,
            "nodes": {"node1": {"bridges": {"cbr0": {"addresses": ["10.0.1.1/24"]}}}},
            "pods": {"server": {**pod, "address": "10.0.1.2/24", "apps": [*SERVER_APPS, *more_apps]},
                     "dns": {**pod, "address": "10.0.1.4/24",
                             "apps": [{"kind": "dns-server", "records": {"echo.test": "10.0.1.2"}}]},
                     "client": {**pod, "address": "10.0.1.10/24", "resolv": {"nameservers": ["10.0.1.4"]}}},
            "scenarios": {name: {"traffic": t} for name, t in traffic.items()}}
    path = tmp_path / "echo.yaml"
    path.write_text(yaml.safe_dump(topo, sort_keys=False))
    return path


def app(**params: Any) -> dict[str, Any]:
    return {"pod": "client", "app": {"kind": "echo-client", **params}}


def run(tmp_path: Path, traffic: dict[str, list[dict[str, Any]]]) -> Path:
    out = tmp_path / "out"
    p = pktemu_cli("run", str(topology(tmp_path, traffic)), "--out", str(out), "-q", timeout=60)
    assert p.stderr == ""
    return out


def result(out: Path, scenario: str, name: str = "client-result.json") -> dict[str, Any]:
    res: dict[str, Any] = json.loads((out / scenario / name).read_text())
    return res


def outcomes(res: dict[str, Any]) -> list[str]:
    return [a["outcome"] for a in res["attempts"]]


def server_exchanges(out: Path, scenario: str, i: int) -> list[dict[str, Any]]:
    ex: list[dict[str, Any]] = result(out, scenario, "server-result.json")["server"][i]["result"]["exchanges"]
    return ex


def test_udp_attempts_with_a_fixed_source_port_keep_one_5_tuple(tmp_path: Path) -> None:
    out = run(tmp_path, {"u": [app(proto="udp", target="10.0.1.2", port=7, sport=40000, count=3,
                                   interval="200ms", payload="hi\n")]})
    res = result(out, "u")
    assert res["proto"] == "udp" and res["target"] == "10.0.1.2:7"
    assert outcomes(res) == ["answer"] * 3
    assert [a["t_ns"] for a in res["attempts"]] == [0, 200_000_000, 400_000_000]
    assert {(a["local"], a["peer"], a["answer"]) for a in res["attempts"]} == \
        {("10.0.1.10:40000", "10.0.1.2:7", "echo-a 10.0.1.2:7 saw 10.0.1.10:40000\n")}
    ex = server_exchanges(out, "u", 0)
    assert [(e["proto"], e["peer"], e["local"], e["received"]) for e in ex] == \
        [("udp", "10.0.1.10:40000", "10.0.1.2:7", "hi\n")] * 3
    flows = [(p[IP].src, p[UDP].sport, p[IP].dst, p[UDP].dport, bytes(p[UDP].payload))
             for p in rdpcap(str(out / "u" / "pcap" / "client-eth0.pcap")) if UDP in p]
    assert flows == [("10.0.1.10", 40000, "10.0.1.2", 7, b"hi\n"),
                     ("10.0.1.2", 7, "10.0.1.10", 40000, b"echo-a 10.0.1.2:7 saw 10.0.1.10:40000\n")] * 3


def test_tcp_attempts_get_the_answer_and_close(tmp_path: Path) -> None:
    out = run(tmp_path, {"t": [app(proto="tcp", target="10.0.1.2", port=7, count=2)]})
    res = result(out, "t")
    assert outcomes(res) == ["answer", "answer"]
    locals_ = [a["local"] for a in res["attempts"]]
    assert len(set(locals_)) == 2                       # a new ephemeral port each time
    for a in res["attempts"]:
        assert a["answer"] == f"server 10.0.1.2:7 saw {a['local']}\n"
    ex = server_exchanges(out, "t", 1)
    assert [(e["proto"], e["peer"], e["received"]) for e in ex] == [("tcp", lp, "ping\n") for lp in locals_]
    pkts = [p for p in rdpcap(str(out / "t" / "pcap" / "server-eth0.pcap")) if TCP in p]
    assert sum(1 for p in pkts if p[TCP].flags & 0x01) == 4           # both sides FIN, twice
    assert not any(p[TCP].flags & 0x04 for p in pkts)                 # and no RST


def test_tcp_with_a_fixed_source_port_finds_the_last_connection_in_time_wait(tmp_path: Path) -> None:
    out = run(tmp_path, {"t": [app(proto="tcp", target="10.0.1.2", port=7, sport=41000, count=2)]})
    res = result(out, "t")
    assert outcomes(res) == ["answer", "EADDRNOTAVAIL"]
    assert res["attempts"][0]["local"] == "10.0.1.10:41000"


def test_refused_by_rst_and_by_port_unreachable(tmp_path: Path) -> None:
    udp = {**app(proto="udp", target="10.0.1.2", port=9, sport=40002), "result": "udp.json"}
    out = run(tmp_path, {"r": [app(proto="tcp", target="10.0.1.2", port=9, sport=40001), udp]})
    assert outcomes(result(out, "r")) == ["REFUSED"]
    assert outcomes(result(out, "r", "udp.json")) == ["REFUSED"]
    pkts = rdpcap(str(out / "r" / "pcap" / "client-eth0.pcap"))
    assert [p[TCP].flags for p in pkts if TCP in p and p[IP].src == "10.0.1.2"] == ["RA"]
    [unreach] = [p for p in pkts if ICMP in p]
    assert (unreach[IP].src, unreach[ICMP].type, unreach[ICMP].code) == ("10.0.1.2", 3, 3)


def test_an_address_nobody_has_times_out_or_is_host_unreachable(tmp_path: Path) -> None:
    """ARP gives up after 3 s; the ICMP host unreachable reaches a UDP socket only with IP_RECVERR."""
    t = dict(target="10.0.1.99", port=7, timeout="5s")
    out = run(tmp_path, {"n": [app(proto="udp", **t),
                               {**app(proto="udp", recverr=True, **t), "result": "re.json"},
                               {**app(proto="tcp", **t), "result": "tcp.json"}]})
    assert outcomes(result(out, "n")) == ["TIMEOUT"]
    assert outcomes(result(out, "n", "re.json")) == ["EHOSTUNREACH"]
    assert outcomes(result(out, "n", "tcp.json")) == ["EHOSTUNREACH"]
    assert "neighbour resolution failed" in (out / "n" / "drops.txt").read_text()


def test_no_route_is_enetunreach_and_a_foreign_bind_is_eaddrnotavail(tmp_path: Path) -> None:
    """node1 has no default route: connect()/sendto() fail at once, from a bound address too."""
    node1 = [{"node": "node1", "result": f"{proto}{len(bind)}.json",
              "app": {"kind": "echo-client", "proto": proto, "target": "192.0.2.1", "port": 7, **bind}}
             for proto in ("udp", "tcp") for bind in ({}, {"bind": "10.0.1.1"})]
    out = run(tmp_path, {"e": [*node1, {**app(proto="tcp", target="10.0.1.2", port=7, bind="10.0.1.77"),
                                        "result": "bind.json"}]})
    for name in ("udp0.json", "udp1.json", "tcp0.json", "tcp1.json"):
        assert outcomes(result(out, "e", name)) == ["ENETUNREACH"], name
    assert outcomes(result(out, "e", "bind.json")) == ["EADDRNOTAVAIL"]
    assert not [p for p in rdpcap(str(out / "e" / "pcap" / "node1-cbr0.pcap")) if IP in p]
    assert not [p for p in rdpcap(str(out / "e" / "pcap" / "client-eth0.pcap")) if TCP in p]


def test_a_name_is_resolved_through_the_pods_resolver(tmp_path: Path) -> None:
    out = run(tmp_path, {"d": [app(proto="udp", name="echo.test", port=7)]})
    res = result(out, "d")
    assert res["target"] == "10.0.1.2:7" and res["dns"]["answers"][0]["a"] == "10.0.1.2"
    assert outcomes(res) == ["answer"]


@pytest.mark.parametrize("params, field, message", [
    ({"kind": "echo-client", "target": "10.0.1.2"}, "port", "required"),
    ({"kind": "echo-client", "port": 7}, "target", "required"),
    ({**C, "proto": "sctp"}, "proto", "expected tcp or udp"),
    ({**C, "count": 0}, "count", "attempts"),
    ({**C, "sport": 70000}, "sport", "port"),
    ({**C, "bind": "10.1"}, "bind", "not an IPv4 address"),
    ({**C, "timeout": "0s"}, "timeout", "above 0"),
    ({**C, "payload": ""}, "payload", "bytes"),
    ({**C, "recverr": True}, "recverr", "only with proto udp"),
    ({**C, "retries": 2}, "retries", "unknown field"),
    ({**C, "name": "echo.test"}, "name", "not both"),
])
def test_bad_client_parameters_are_one_line_naming_the_field(tmp_path: Path, params: dict[str, Any],
                                                             field: str, message: str) -> None:
    topo = topology(tmp_path, {"s": [{"pod": "client", "app": params}]})
    out = tmp_path / "out"
    p = pktemu_cli("run", str(topo), "--out", str(out), check=False, timeout=60)
    assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
    assert p.stderr.startswith(f"pktemu: error: {topo}: scenarios.s.traffic[0].app.{field}: "), p.stderr
    assert message in p.stderr
    assert not out.exists()


@pytest.mark.parametrize("params, field, message", [
    ({"kind": "udp-echo"}, "port", "required"),
    ({"kind": "tcp-echo", "port": 7, "bind": "10.0.1.300"}, "bind", "not an IPv4 address"),
    ({"kind": "tcp-echo", "port": 7, "name": "two words"}, "name", "without spaces"),
    ({"kind": "udp-echo", "port": 7, "bind": "10.0.1.3"}, "bind", "10.0.1.3 is not an address of server"),
])
def test_bad_server_parameters_are_one_line_naming_the_field(tmp_path: Path, params: dict[str, Any],
                                                             field: str, message: str) -> None:
    topo = topology(tmp_path, {"s": [app(target="10.0.1.2", port=7)]}, more_apps=(params,))
    p = pktemu_cli("validate", str(topo), check=False, timeout=60)
    assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
    assert p.stderr.startswith(f"pktemu: error: {topo}: pods.server.apps[2].{field}: "), p.stderr
    assert message in p.stderr
