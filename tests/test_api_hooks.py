"""Python netfilter hooks and NFQUEUE handlers on pktemu.Network (docs/python-api.md, "Netfilter hooks")."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from scapy.layers.inet import IP, TCP
from scapy.packet import Raw

import pktemu
from datapaths import ROOT
from conftest import pktemu as pktemu_cli

TOPOLOGY = ROOT / "topologies" / "service-test.yaml"
SVC = "10.3.241.152"
SYN = IP(dst=SVC) / TCP(sport=40000, dport=80, flags="S", seq=1000)


@pytest.fixture
def net() -> pktemu.Network:
    return pktemu.Network.load(str(TOPOLOGY))


def _syns(net: pktemu.Network, point: str) -> list[Any]:
    return list(net.sniff(point, lfilter=lambda p: TCP in p and p[TCP].flags == "S"))


def test_a_drop_hook_leaves_the_syn_unanswered_and_records_its_name(net: pktemu.Network) -> None:
    @net.hook("node2", "PREROUTING", priority=-150)
    def no_8080(p: Any) -> int:
        return pktemu.DROP if TCP in p and p[TCP].dport == 8080 else pktemu.ACCEPT

    assert net.sr1("client", SYN) is None
    assert len(_syns(net, "node2-eth0")) == 1
    assert _syns(net, "server-eth0") == []
    reasons = [(d.node, d.where, d.reason) for d in net.engine.drops]
    assert reasons == [("node2", "netfilter PREROUTING", "python hook no_8080 at node2 PREROUTING prio -150")]


def test_without_the_hook_the_same_syn_is_answered(net: pktemu.Network) -> None:
    assert net.sr1("client", SYN) is not None
    assert len(_syns(net, "server-eth0")) == 1


def test_hooks_interleave_with_the_nat_table_by_priority(net: pktemu.Network) -> None:
    seen: dict[str, list[str]] = {"raw": [], "after_nat": []}

    @net.hook("node1", "PREROUTING", priority=-300)
    def before(p: Any) -> None:
        if TCP in p:
            seen["raw"].append(p.dst)

    @net.hook("node1", "PREROUTING", priority=-50)
    def after(p: Any) -> bool:
        if TCP in p:
            seen["after_nat"].append(p.dst)
        return True

    assert net.sr1("client", SYN) is not None
    assert seen["raw"][0] == SVC                   # before nat PREROUTING (-100): the ClusterIP
    assert seen["after_nat"][0] == "10.0.2.2"      # after it: DNATed to the endpoint
    order = [e.name for e in net.engine.nodes["node1"].nf.entries("PREROUTING")]
    assert order == ["defrag", "raw", "before", "conntrack-in", "mangle", "nat", "after"]


def test_a_rewritten_packet_is_seen_downstream_with_good_checksums(net: pktemu.Network) -> None:
    @net.hook("node2", "PREROUTING", priority=-150)
    def set_ttl(p: Any) -> Any:
        if TCP in p and p[TCP].flags == "S":
            p.ttl = 200
        return p

    assert net.sr1("client", SYN) is not None      # the server's stack took the rewritten SYN
    syn = _syns(net, "server-eth0")[0]
    assert syn[IP].ttl == 199                      # 200, less node2's forwarding
    wire = syn[IP]
    fixed = IP(bytes(wire))
    del fixed.chksum
    del fixed[TCP].chksum
    again = IP(bytes(fixed))
    assert (again.chksum, again[TCP].chksum) == (wire.chksum, wire[TCP].chksum)


def test_options_a_hook_adds_get_their_header_lengths(net: pktemu.Network) -> None:
    """IP options and TCP options added by a hook: ihl and dataofs are redone with the lengths, so
    the server's stack takes the SYN (it was freed as a bad IPv4 header checksum, ports misread)."""
    from scapy.layers.inet import IPOption_NOP

    @net.hook("node2", "PREROUTING", priority=-150)
    def options(p: Any) -> Any:
        if TCP in p and p[TCP].flags == "S":
            p.options = [IPOption_NOP()] * 4
            p[TCP].options = [("NOP", None)] * 4
        return p

    assert net.sr1("client", SYN) is not None
    syn = _syns(net, "server-eth0")[0]
    assert (syn[IP].ihl, syn[TCP].dataofs, syn[TCP].dport) == (6, 6, 8080)


def test_a_hook_on_a_node_without_rules_runs_and_tracks_nothing(net: pktemu.Network) -> None:
    ttls: list[int] = []
    net.hook("gw", "FORWARD")(lambda p: ttls.append(p.ttl))
    assert net.sr1("client", SYN) is not None
    assert ttls[:2] == [62, 62]     # SYN and SYN-ACK, each past two ip_forward TTL decrements
    assert net.conntrack("gw").entries == []


def test_bad_hook_arguments_raise_one_line_errors(net: pktemu.Network) -> None:
    with pytest.raises(pktemu.Error, match="'PRE' is not a netfilter hook"):
        net.hook("node1", "PRE")(lambda p: None)
    with pytest.raises(pktemu.Error, match="priority 'x' is not an integer"):
        net.hook("node1", "INPUT", priority="x")(lambda p: None)     # type: ignore[arg-type]
    with pytest.raises(pktemu.Error, match="no pod or node 'nowhere'"):
        net.hook("nowhere", "INPUT")
    net.hook("node2", "PREROUTING")(lambda p: "yes")
    with pytest.raises(pktemu.Error, match=r"python hook <lambda>: answered 'yes'"):
        net.sr1("client", SYN)


# ---------------------------------------------------------------------- NFQUEUE
def _queue_topology(tmp_path: Path, target: str) -> dict[str, Any]:
    """service-test with `-p tcp --sport 8080 -j <target>` first in node2's filter FORWARD."""
    doc = yaml.safe_load(TOPOLOGY.read_text())
    rules = (ROOT / "topologies" / "kube-proxy-rules.iptables").read_text()
    first = rules.index("-A FORWARD")
    rules = rules[:first] + f"-A FORWARD -p tcp --sport 8080 -j {target}\n" + rules[first:]
    (tmp_path / "node2.iptables").write_text(rules)
    for name, node in doc["nodes"].items():
        if "iptables" in node:
            node["iptables"] = str(tmp_path / "node2.iptables") if name == "node2" else \
                str(ROOT / "topologies" / node["iptables"])
    return dict(doc)


def test_an_nfqueue_handler_rewrites_the_http_body_the_client_sees(tmp_path: Path) -> None:
    net = pktemu.Network.load(_queue_topology(tmp_path, "NFQUEUE --queue-num 1"), scenario="s1-clusterip")
    ids: list[int] = []

    @net.nfqueue("node2", 1)
    def shout(pkt: Any) -> None:
        assert pkt.hw_protocol == 0x0800
        ids.append(pkt.id)
        ip = IP(pkt.get_payload())
        if Raw in ip and b"hello" in ip[Raw].load:
            ip[Raw].load = ip[Raw].load.replace(b"hello", b"HELLO")
            del ip.chksum
            del ip[TCP].chksum
            pkt.set_payload(bytes(ip))
            pkt.set_mark(7)
        pkt.accept()

    net.run()
    http = net.results[0]["http"]
    assert http["status_line"] == "HTTP/1.1 200 OK" and http["body"] == "HELLO from server-pod 10.0.2.2\n"
    assert ids[:2] == [1, 2]
    assert "--queue-num 1" in net.iptables_save("node2")


def test_a_queue_without_handler_drops(tmp_path: Path) -> None:
    net = pktemu.Network.load(_queue_topology(tmp_path, "NFQUEUE --queue-num 3"), scenario="s1-clusterip")
    net.run()
    assert "body" not in net.results[0]["http"]
    reasons = [d.reason for d in net.engine.drops if d.node == "node2"]
    assert reasons and reasons[0].startswith("filter FORWARD#1 NFQUEUE 3 (no handler: DROP): "
                                             "-A FORWARD -p tcp -m tcp --sport 8080 -j NFQUEUE --queue-num 3")


def test_a_queue_without_handler_with_bypass_accepts(tmp_path: Path) -> None:
    net = pktemu.Network.load(_queue_topology(tmp_path, "NFQUEUE --queue-num 3 --queue-bypass"),
                              scenario="s1-clusterip")
    net.run()
    assert net.results[0]["http"]["body"] == "hello from server-pod 10.0.2.2\n"


def test_a_handler_that_drops_or_gives_no_verdict_drops(tmp_path: Path) -> None:
    for verdict in ("drop", None):
        net = pktemu.Network.load(_queue_topology(tmp_path, "NFQUEUE --queue-num 0"), scenario="s1-clusterip")

        def handler(pkt: Any, verdict: str | None = verdict) -> None:
            if verdict == "drop":
                pkt.drop()
        net.nfqueue("node2", 0, handler)
        net.run()
        assert "body" not in net.results[0]["http"], verdict
        assert any(d.node == "node2" and "NFQUEUE 0:" in d.reason for d in net.engine.drops)


def test_the_cli_refuses_queue_balance_in_one_line(tmp_path: Path) -> None:
    doc = _queue_topology(tmp_path, "NFQUEUE --queue-balance 0:3")
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(doc))
    p = pktemu_cli("validate", str(tmp_path / "t.yaml"), check=False)
    assert p.returncode == 2
    assert p.stderr.count("\n") == 1
    assert "NFQUEUE: --queue-balance is not supported by pktemu" in p.stderr
