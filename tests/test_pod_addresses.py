"""A pod with several addresses, and which of them its servers answer from (Linux's source selection).

The server pod has 10.0.1.2/24 and 10.0.1.3/24 (a secondary on the same subnet) and, in the
two-subnet topology, 10.9.0.2/24 too. A UDP socket bound to one address answers from it; one bound
to 0.0.0.0 answers from the route's preferred source for the peer (the primary of the connected
subnet), so a client that asked the secondary hears from another address and its connected socket
refuses the answer; a TCP listener on 0.0.0.0 answers from the address the SYN was sent to.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.utils import rdpcap

import pktemu
from conftest import pktemu as pktemu_cli


def topology(tmp_path: Path, scenarios: dict[str, Any], server: dict[str, Any] | None = None,
             client: dict[str, Any] | None = None, second_subnet: bool = False) -> Path:
    """node1's bridge cbr0 10.0.1.1/24 with a server pod 10.0.1.2 + 10.0.1.3 and a client pod 10.0.1.10."""
    bridge = ["10.0.1.1/24", "10.9.0.1/24"] if second_subnet else ["10.0.1.1/24"]
    extra = ["10.9.0.2/24"] if second_subnet else []
    srv: dict[str, Any] = {"node": "node1", "bridge": "cbr0",
                           "addresses": ["10.0.1.2/24", "10.0.1.3/24", *extra],
                           "apps": [{"kind": "udp-echo", "port": 7, "bind": "10.0.1.3"},
                                    {"kind": "udp-echo", "port": 8},
                                    {"kind": "tcp-echo", "port": 9}]}
    srv.update(server or {})
    cli: dict[str, Any] = {"node": "node1", "bridge": "cbr0", "address": "10.0.1.10/24"}
    cli.update(client or {})
    topo = {"name": "addrs", "seed": 1,
            "nodes": {"node1": {"sysctls": {"net.ipv4.ip_forward": 1},
                                "bridges": {"cbr0": {"addresses": bridge}}}},
            "pods": {"server": srv, "client": cli},
            "scenarios": scenarios}
    path = tmp_path / "addrs.yaml"
    path.write_text(yaml.safe_dump(topo, sort_keys=False))
    return path


def run(tmp_path: Path, topo: Path) -> Path:
    out = tmp_path / "out"
    p = pktemu_cli("run", str(topo), "--out", str(out), "-q", timeout=60)
    assert p.stderr == ""
    return out


def client(proto: str, target: str, port: int, **kw: Any) -> dict[str, Any]:
    return {"traffic": [{"pod": "client", "app": {"kind": "echo-client", "proto": proto, "target": target,
                                                   "port": port, "sport": 40000, **kw}}]}


def attempts(out: Path, scenario: str) -> list[dict[str, Any]]:
    res: list[dict[str, Any]] = json.loads((out / scenario / "client-result.json").read_text())["attempts"]
    return res


def exchanges(out: Path, scenario: str, app: int) -> list[dict[str, Any]]:
    res = json.loads((out / scenario / "server-result.json").read_text())["server"][app]
    ex: list[dict[str, Any]] = res["result"]["exchanges"]
    return ex


def udp_flows(pcap: Path) -> list[tuple[str, int, str, int]]:
    return [(p[IP].src, p[UDP].sport, p[IP].dst, p[UDP].dport) for p in rdpcap(str(pcap))
            if UDP in p and ICMP not in p]


def test_a_udp_server_bound_to_the_second_address_answers_from_it(tmp_path: Path) -> None:
    out = run(tmp_path, topology(tmp_path, {"bound": client("udp", "10.0.1.3", 7)}))
    [a] = attempts(out, "bound")
    assert a["outcome"] == "answer"
    assert a["answer"] == "server 10.0.1.3:7 saw 10.0.1.10:40000\n"
    assert (a["local"], a["peer"]) == ("10.0.1.10:40000", "10.0.1.3:7")
    [ex] = exchanges(out, "bound", 0)
    assert (ex["local"], ex["peer"], ex["reply_from"]) == ("10.0.1.3:7", "10.0.1.10:40000", "10.0.1.3:7")
    # on the wire, as the client pod's eth0 and the server pod's eth0 captured it
    for pcap in ("client-eth0.pcap", "server-eth0.pcap"):
        assert udp_flows(out / "bound" / "pcap" / pcap) == [("10.0.1.10", 40000, "10.0.1.3", 7),
                                                             ("10.0.1.3", 7, "10.0.1.10", 40000)]


def test_a_wildcard_udp_server_answers_from_the_primary_and_the_client_refuses_it(tmp_path: Path) -> None:
    out = run(tmp_path, topology(tmp_path, {"wild": client("udp", "10.0.1.3", 8)}))
    [a] = attempts(out, "wild")
    assert (a["outcome"], a["answer"]) == ("TIMEOUT", None)
    [ex] = exchanges(out, "wild", 1)
    assert (ex["local"], ex["reply_from"]) == ("10.0.1.3:8", "10.0.1.2:8")   # IP_PKTINFO vs the route's src
    pkts = rdpcap(str(out / "wild" / "pcap" / "server-eth0.pcap"))
    assert udp_flows(out / "wild" / "pcap" / "server-eth0.pcap") == [("10.0.1.10", 40000, "10.0.1.3", 8),
                                                                     ("10.0.1.2", 8, "10.0.1.10", 40000)]
    # the client's connected socket is not the answer's 4-tuple: the kernel says port unreachable
    [unreach] = [p for p in pkts if ICMP in p]
    assert (unreach[IP].src, unreach[IP].dst, unreach[ICMP].type, unreach[ICMP].code) == \
        ("10.0.1.10", "10.0.1.2", 3, 3)


def test_a_wildcard_tcp_listener_answers_from_the_address_the_syn_was_sent_to(tmp_path: Path) -> None:
    out = run(tmp_path, topology(tmp_path, {"tcp": client("tcp", "10.0.1.3", 9)}))
    [a] = attempts(out, "tcp")
    assert a["outcome"] == "answer" and a["answer"] == "server 10.0.1.3:9 saw 10.0.1.10:40000\n"
    synacks = [p for p in rdpcap(str(out / "tcp" / "pcap" / "client-eth0.pcap"))
               if TCP in p and p[TCP].flags == "SA"]
    assert [(p[IP].src, p[TCP].sport) for p in synacks] == [("10.0.1.3", 9)]
    assert {p[IP].src for p in rdpcap(str(out / "tcp" / "pcap" / "server-eth0.pcap"))
            if TCP in p and p[TCP].sport == 9} == {"10.0.1.3"}


def test_a_wildcard_server_answers_from_its_address_on_the_peers_subnet(tmp_path: Path) -> None:
    """inet_select_addr: the reply to 10.9.0.10 leaves from 10.9.0.2 whichever address was asked."""
    cli = {"address": "10.9.0.10/24", "gateway": "10.9.0.1"}
    scen = {"same": client("udp", "10.9.0.2", 8), "other": client("udp", "10.0.1.2", 8)}
    out = run(tmp_path, topology(tmp_path, scen, client=cli, second_subnet=True))
    assert [a["outcome"] for a in attempts(out, "same")] == ["answer"]
    assert attempts(out, "same")[0]["answer"] == "server 10.9.0.2:8 saw 10.9.0.10:40000\n"
    assert [a["outcome"] for a in attempts(out, "other")] == ["TIMEOUT"]
    [ex] = exchanges(out, "other", 1)
    assert (ex["local"], ex["reply_from"]) == ("10.0.1.2:8", "10.9.0.2:8")
    assert udp_flows(out / "other" / "pcap" / "client-eth0.pcap") == [("10.9.0.10", 40000, "10.0.1.2", 8),
                                                                      ("10.9.0.2", 8, "10.9.0.10", 40000)]


def test_a_secondary_address_adds_no_second_connected_route(tmp_path: Path) -> None:
    net = pktemu.Network.load(str(topology(tmp_path, {"s": client("udp", "10.0.1.3", 7)})))
    connected = [r for r in net.routes("server") if r.startswith("10.0.1.0/24")]
    assert connected == ["10.0.1.0/24 dev eth0 proto kernel scope link src 10.0.1.2"]


def test_address_and_addresses_together_put_address_first(tmp_path: Path) -> None:
    srv = {"address": "10.0.1.3/24", "addresses": ["10.0.1.2/24"]}
    out = run(tmp_path, topology(tmp_path, {"wild": client("udp", "10.0.1.2", 8)}, server=srv))
    [ex] = exchanges(out, "wild", 1)
    assert ex["reply_from"] == "10.0.1.3:8"          # the primary is `address`
    net = pktemu.Network.load(str(tmp_path / "addrs.yaml"))
    assert [r for r in net.routes("server") if r.startswith("10.0.1.0/24")] == \
        ["10.0.1.0/24 dev eth0 proto kernel scope link src 10.0.1.3"]


@pytest.mark.parametrize("server, field, message", [
    ({"addresses": ["10.0.1.2/24", "10.0.1.2/24"]}, "pods.server.addresses[1]",
     "address 10.0.1.2 is also on pods.server.addresses[0]"),
    ({"address": "10.0.1.2/24", "addresses": ["10.0.1.2/24"]}, "pods.server.addresses[0]",
     "address 10.0.1.2 is also on pods.server.address"),
    ({"addresses": ["10.0.1.2/24", "10.0.1.10/24"]}, "pods.client.address",
     "address 10.0.1.10 is also on pods.server.addresses[1]"),
    ({"addresses": ["10.0.1.2/24", "10.0.1.300/24"]}, "pods.server.addresses[1]", "not an IPv4 address"),
    ({"addresses": ["10.0.1.2/24", "10.0.1.4"]}, "pods.server.addresses[1]", "prefix length"),
    ({"addresses": "10.0.1.2/24"}, "pods.server.addresses", ""),
    ({"addresses": []}, "pods.server.address", "required"),
    ({"addresses": ["10.0.1.2/24"]}, "pods.server.apps[0].bind",
     "10.0.1.3 is not an address of server (bind() would fail with EADDRNOTAVAIL)"),
])
def test_bad_pod_addresses_are_one_line_naming_the_field(tmp_path: Path, server: dict[str, Any], field: str,
                                                         message: str) -> None:
    topo = topology(tmp_path, {"s": client("udp", "10.0.1.3", 7)}, server=server)
    out = tmp_path / "out"
    p = pktemu_cli("run", str(topo), "--out", str(out), check=False, timeout=60)
    assert p.returncode == 2, p.stderr
    assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr
    assert p.stderr.startswith(f"pktemu: error: {topo}: {field}: "), p.stderr
    assert message in p.stderr
    assert not out.exists()
