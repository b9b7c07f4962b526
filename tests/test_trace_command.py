"""`pktemu trace`: the founding Service connection and the no-endpoints Service, as text and JSON.

The command runs as a user runs it (a subprocess); the packet and its reply go through a fresh
network built from topologies/service-test.yaml, so these are the s1 and s2 paths of the kernel
oracle: DNAT on node1 to 10.0.2.2:8080 and delivery to the server pod, un-DNAT of the SYN-ACK;
REJECT in filter FORWARD on node1 and the ICMP port unreachable delivered to the client.
"""
from __future__ import annotations

import json
import re
from typing import Any

import pytest

from conftest import pktemu

TOPO = "topologies/service-test.yaml"
SEP = "KUBE-SEP-CCUNI5TAEJBRFII7"


@pytest.fixture(scope="module")
def s1_text() -> str:
    return pktemu("trace", TOPO, "--from", "client", "--to", "10.3.241.152:80/tcp", "--sport", "40000").stdout


@pytest.fixture(scope="module")
def s1_json() -> dict[str, Any]:
    return json.loads(pktemu("trace", TOPO, "--from", "client", "--to", "10.3.241.152:80", "--sport", "40000",
                             "--json").stdout)


@pytest.fixture(scope="module")
def s2_text() -> str:
    p = pktemu("trace", TOPO, "--from", "client", "--to", "10.3.250.77:80/tcp", "--sport", "40000",
               check=False)
    assert p.returncode == 1 and p.stderr == ""           # dropped: the status a CI job tests
    return p.stdout


def _ids(text: str) -> list[str]:
    return list(dict.fromkeys(re.findall(r"trace id ([0-9a-f]{8})", text)))


def test_text_request_is_dnated_on_node1_and_delivered_to_the_server(s1_text: str) -> None:
    lines = s1_text.splitlines()
    assert lines[0] == f"pktemu trace client -> 10.3.241.152:80/tcp  ({TOPO})"
    req, rep = _ids(s1_text)
    must = [
        f"trace id {req} ip PREROUTING packet: iif \"cbr0\" physin \"veth-client\" ip saddr 10.0.1.2 "
        "ip daddr 10.3.241.152 ip ttl 64 ip length 60 tcp sport 40000 tcp dport 80 tcp flags == syn",
        f"trace id {req} ip nat PREROUTING rule -A PREROUTING -m comment --comment "
        "\"kubernetes service portals\" -j KUBE-SERVICES (verdict jump KUBE-SERVICES)",
        f"trace id {req} ip nat {SEP} rule -A {SEP} -p tcp -m comment --comment \"default/service-test\" "
        "-m tcp -j DNAT --to-destination 10.0.2.2:8080 (verdict accept)",
        f"trace id {req} ct state new ct direction original ct status dnat",
        "DNAT 10.3.241.152:80 -> 10.0.2.2:8080",
        f"trace id {req} ip filter FORWARD policy accept",
        "result: delivered to server (tcp 10.0.1.2:40000 > 10.0.2.2:8080)",
    ]
    for m in must:
        assert any(line.endswith(m) for line in lines), m
    # the path, node by node, in order
    node_line = re.compile(r"[│ ]*[├└]── (client|node1|gw|node2|server)")
    nodes = [ln.strip("│├└─ ") for ln in lines if node_line.fullmatch(ln)]
    assert nodes[:5] == ["client", "node1", "gw", "node2", "server"]
    order = [s1_text.index(s) for s in ("out eth0: 10.0.1.2:40000 > 10.3.241.152:80 tcp [S] ttl 64",
                                        "in veth-client:", "PREROUTING  verdict accept",
                                        "in cbr0: 10.0.1.2:40000 > 10.0.2.2:8080 tcp [S] ttl 64",
                                        "FORWARD  verdict accept", "out eth0: 10.0.1.2:40000 > 10.0.2.2:8080",
                                        "delivered to the tcp stack of server")]
    assert order == sorted(order)


def test_text_reply_is_un_dnated_and_reaches_the_client(s1_text: str) -> None:
    req, rep = _ids(s1_text)
    reply = s1_text[s1_text.index(f"reply  trace id {rep}"):]
    first = reply.splitlines()[0]
    assert first.endswith(f"reply  trace id {rep}  10.0.2.2:8080 > 10.0.1.2:40000 tcp [SA] ttl 64")
    ct = "ct state established ct direction reply ct status seen-reply,confirmed,dnat"
    assert f"trace id {rep} {ct}" in reply
    assert "un-DNAT 10.0.2.2:8080 -> 10.3.241.152:80" in reply
    assert (f"trace id {rep} ip filter KUBE-FORWARD rule -A KUBE-FORWARD -m comment --comment \"kubernetes "
            "forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT "
            "(verdict accept)") in reply
    assert "out veth-client: 10.3.241.152:80 > 10.0.1.2:40000 tcp [SA] ttl 61" in reply
    assert reply.rstrip().endswith("result: delivered to client (tcp 10.3.241.152:80 > 10.0.1.2:40000)")


def test_json_is_the_same_trace_as_data(s1_json: dict[str, Any], s1_text: str) -> None:
    assert s1_json["from"] == "client" and s1_json["to"] == "10.3.241.152:80/tcp"
    assert s1_json["summary"] == {"request": "delivered to server (tcp 10.0.1.2:40000 > 10.0.2.2:8080)",
                                  "reply": "delivered to client (tcp 10.3.241.152:80 > 10.0.1.2:40000)"}
    req, rep = s1_json["packets"]
    assert (req["role"], rep["role"]) == ("request", "reply")
    assert [req["trace_id"], rep["trace_id"]] == _ids(s1_text)
    dnat = [e for e in req["events"] if e["type"] == "hook" and e.get("after")]
    assert len(dnat) == 1
    d = dnat[0]
    assert (d["node"], d["hook"], d["iif"], d["physin"]) == ("node1", "PREROUTING", "cbr0", "veth-client")
    assert (d["packet"]["dst"], d["packet"]["dport"], d["after"]["dst"], d["after"]["dport"]) == \
        ("10.3.241.152", 80, "10.0.2.2", 8080)
    assert d["rules"][-1] == {"table": "nat", "chain": SEP, "rulenum": 2, "verdict": "ACCEPT",
                              "target": "DNAT",
                              "rule": f"-A {SEP} -p tcp -m comment --comment \"default/service-test\" -m tcp "
                                      "-j DNAT --to-destination 10.0.2.2:8080"}
    assert d["ct"] == "ct state new ct direction original ct status dnat"
    assert "DNAT 10.3.241.152:80 -> 10.0.2.2:8080" in d["notes"]
    assert req["result"]["type"] == "deliver" and req["result"]["node"] == "server"
    assert rep["result"]["type"] == "deliver" and rep["result"]["node"] == "client"
    assert rep["result"]["packet"]["src"] == "10.3.241.152"
    devices = [(e["node"], e["dev"], e["direction"]) for e in req["events"] if e["type"] == "device"]
    assert devices == [("client", "eth0", "out"), ("node1", "veth-client", "in"), ("node1", "cbr0", "in"),
                       ("node1", "eth0", "out"), ("gw", "eth1", "in"), ("gw", "eth2", "out"),
                       ("node2", "eth0", "in"), ("node2", "cbr0", "out"), ("node2", "veth-server", "out"),
                       ("server", "eth0", "in")]
    times = [e["t"] for e in req["events"]]
    assert times == sorted(times)


def test_no_endpoints_is_rejected_in_filter_forward(s2_text: str) -> None:
    req, rep = _ids(s2_text)
    assert "FORWARD  verdict drop" in s2_text
    assert (f"trace id {req} ip filter KUBE-SERVICES rule -A KUBE-SERVICES -d 10.3.250.77/32 -p tcp "
            "-m comment --comment \"default/service-noep has no endpoints\" -m tcp --dport 80 -j REJECT "
            "--reject-with icmp-port-unreachable (verdict drop)") in s2_text
    assert ("result: dropped at node1 (netfilter FORWARD): filter KUBE-SERVICES#1 REJECT "
            "icmp-port-unreachable: -A KUBE-SERVICES -d 10.3.250.77/32") in s2_text
    reply = s2_text[s2_text.index(f"reply  trace id {rep}"):]
    assert reply.splitlines()[0].endswith("10.0.1.1 > 10.0.1.2 icmp type 3 code 3 (quoting 10.0.1.2:40000 > "
                                          "10.3.250.77:80) ttl 64")
    assert "filter:FORWARD KUBE-SERVICES#1 REJECT icmp-port-unreachable" in reply      # why it was sent
    assert "ct INVALID: icmp error about unknown connection 10.0.1.2:40000 > 10.3.250.77:80" in reply
    assert reply.rstrip().endswith("result: delivered to client (icmp 10.0.1.1 > 10.0.1.2)")
    assert "node2" not in s2_text and "gw" not in s2_text                  # nothing left node1


def test_no_endpoints_json() -> None:
    p = pktemu("trace", TOPO, "--from", "client", "--to", "10.3.250.77:80", "--json", check=False)
    assert p.returncode == 1
    req, rep = json.loads(p.stdout)["packets"]
    assert req["result"]["type"] == "drop" and req["result"]["where"] == "netfilter FORWARD"
    assert req["result"]["reason"].startswith("filter KUBE-SERVICES#1 REJECT icmp-port-unreachable: ")
    fwd = [e for e in req["events"] if e["type"] == "hook" and e["hook"] == "FORWARD"]
    assert len(fwd) == 1 and fwd[0]["verdict"] == "drop" and fwd[0]["rules"][-1]["target"] == "REJECT"
    assert rep["events"][0]["type"] == "path" and rep["result"]["packet"]["icmp_type"] == 3


def test_hairpin_off_drops_in_the_bridge_and_nothing_answers() -> None:
    p = pktemu("trace", TOPO, "--from", "client", "--to", "10.3.245.20:80", "--scenario", "s3b-hairpin-off",
               check=False)
    assert p.returncode == 1
    out = p.stdout
    assert ("result: dropped at node1 (bridge cbr0): would go back out its ingress port veth-client "
            "(hairpin off)") in out
    assert out.rstrip().endswith("reply: none within 3.5 s")


def test_udp_dns_query_through_the_kube_dns_service() -> None:
    d = json.loads(pktemu("trace", TOPO, "--from", "client", "--to", "10.3.240.10:53/udp", "--json").stdout)
    assert d["summary"]["request"].startswith("delivered to dns (udp 10.0.1.2:")
    assert d["summary"]["reply"].startswith("delivered to client (udp 10.3.240.10:53 > 10.0.1.2:")


def test_same_input_same_trace(s1_text: str) -> None:
    again = pktemu("trace", TOPO, "--from", "client", "--to", "10.3.241.152:80/tcp", "--sport", "40000")
    assert again.stdout == s1_text


@pytest.mark.parametrize("args,msg", [
    (["--from", "client", "--to", "10.3.241.152"], "trace --to '10.3.241.152': expected IPv4:PORT[/tcp|udp]"),
    (["--from", "client", "--to", "10.3.241.152:80/sctp"], "expected IPv4:PORT[/tcp|udp]"),
    (["--from", "nobody", "--to", "10.3.241.152:80"], "trace: no pod or node 'nobody'"),
    (["--from", "client", "--to", "10.3.241.152:80", "--scenario", "nope"], "no scenario 'nope'"),
])
def test_bad_input_is_one_line_and_exit_2(args: list[str], msg: str) -> None:
    p = pktemu("trace", TOPO, *args, check=False)
    assert p.returncode == 2 and p.stdout == ""
    err = p.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pktemu: error: ") and msg in err[0]


def test_a_tunnel_packet_is_named_by_its_protocol() -> None:
    # the IPIP packet on the underlay read `192.168.50.11 > 192.168.50.12 4 ttl 63` and was
    # `delivered to the 4 stack of node2`
    args = ["trace", "topologies/calico-ipip.yaml", "--from", "pod1", "--to", "10.244.1.5:8080"]
    text = pktemu(*args).stdout
    assert "out eth0: 192.168.50.11 > 192.168.50.12 ipip ttl 63" in text
    assert "delivered to the ipip stack of node2" in text
    data = json.loads(pktemu(*args, "--json").stdout)
    protos = {e["packet"]["proto"] for p in data["packets"] for e in p["events"] if e.get("packet")}
    assert protos == {"tcp", "ipip"}, protos
