"""`pktemu.Network.trace`: `pktemu trace` through a live network, its Python hooks and NFQUEUE
handlers included, and Kubernetes pods named `namespace/name` (docs/python-api.md, "Tracing")."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from scapy.layers.inet import IP, TCP

import pktemu
from conftest import pktemu as pktemu_cli
from datapaths import ROOT

TOPO = "topologies/service-test.yaml"
K8S = "topologies/service-test-k8s.yaml"
SVC = "10.3.241.152"


def _net(topology: str = TOPO, **kw: Any) -> pktemu.Network:
    return pktemu.Network.load(str(ROOT / topology), **kw)


def _lines(trace: Any) -> list[str]:
    return [ln.strip("│├└─ ") for ln in str(trace).splitlines()]


def _hook_events(packet: dict[str, Any], node: str, hook: str) -> list[dict[str, Any]]:
    return [e for e in packet["events"] if e["type"] == "hook" and e["node"] == node and e["hook"] == hook]


# ---------------------------------------------------------------------- the same trace as the command
def test_a_fresh_network_traces_what_the_command_prints_as_json_and_as_text() -> None:
    args = ("trace", TOPO, "--from", "client", "--to", f"{SVC}:80/tcp", "--sport", "40000")
    tr = pktemu.Network.load(TOPO).trace("client", f"{SVC}:80", sport=40000)
    assert json.loads(json.dumps(tr)) == json.loads(pktemu_cli(*args, "--json").stdout)
    assert str(tr) == pktemu_cli(*args).stdout
    assert tr["summary"] == {"request": "delivered to server (tcp 10.0.1.2:40000 > 10.0.2.2:8080)",
                             "reply": "delivered to client (tcp 10.3.241.152:80 > 10.0.1.2:40000)"}


def test_udp_and_dport_forms_give_the_same_trace() -> None:
    a = _net().trace("client", "10.3.240.10:53/udp", sport=5353)
    b = _net().trace("client", "10.3.240.10", "udp", 5353, dport=53)
    assert a == b and a["to"] == "10.3.240.10:53/udp"
    assert a["summary"]["reply"] == "delivered to client (udp 10.3.240.10:53 > 10.0.1.2:5353)"


def test_the_network_goes_on_after_a_trace_with_the_traced_connection_in_its_state() -> None:
    net = _net()
    net.trace("client", f"{SVC}:80", sport=40000)
    lines = [e.line for e in net.conntrack("node1").entries]
    assert any("sport=40000" in ln and "src=10.0.2.2" in ln for ln in lines), lines

    @net.hook("node2", "PREROUTING", priority=-150)     # the node's own netfilter, not the tracer's
    def drop_all(p: Any) -> int:
        return pktemu.DROP

    assert net.sr1("client", IP(dst=SVC) / TCP(sport=40001, dport=80, flags="S")) is None
    assert net.engine.drops[-1].reason == "python hook drop_all at node2 PREROUTING prio -150"


# ---------------------------------------------------------------------- Python hooks
def test_an_accepting_hook_is_a_step_at_its_hook_and_priority() -> None:
    net = _net()
    seen: list[int] = []

    @net.hook("node2", "PREROUTING", priority=-150)
    def no_8080(p: Any) -> int:
        seen.append(p[TCP].dport if TCP in p else 0)
        return pktemu.DROP if TCP in p and p[TCP].dport == 8080 and p[TCP].sport != 40000 else pktemu.ACCEPT

    tr = net.trace("client", f"{SVC}:80", sport=40000)
    assert seen[0] == 8080
    assert tr["summary"]["request"] == "delivered to server (tcp 10.0.1.2:40000 > 10.0.2.2:8080)"
    pre = _hook_events(tr["packets"][0], "node2", "PREROUTING")
    assert len(pre) == 1 and pre[0]["verdict"] == "accept"
    step = {"table": "python", "chain": "PREROUTING", "rulenum": None, "rule": "no_8080", "verdict": "ACCEPT",
            "target": "", "priority": -150}
    assert step in pre[0]["rules"]
    # between mangle (-150, registered first) and nat (-100), as the kernel orders them
    tables = [r["table"] for r in pre[0]["rules"]]
    assert tables.index("python") < tables.index("nat")
    req_id = tr["packets"][0]["trace_id"]
    assert f"trace id {req_id} python hook no_8080 (prio -150): accept" in _lines(tr)


def test_a_dropping_hook_ends_the_trace_at_its_hook() -> None:
    net = _net()

    @net.hook("node2", "PREROUTING", priority=-150)
    def no_8080(p: Any) -> int:
        return pktemu.DROP if TCP in p and p[TCP].dport == 8080 else pktemu.ACCEPT

    tr = net.trace("client", f"{SVC}:80", sport=40000)
    reason = "python hook no_8080 at node2 PREROUTING prio -150"
    assert tr["summary"] == {"request": f"dropped at node2 (netfilter PREROUTING): {reason}",
                             "reply": "not seen"}
    assert len(tr["packets"]) == 1
    lines = _lines(tr)
    assert f"result: dropped at node2 (netfilter PREROUTING): {reason}" in lines
    assert lines[-1] == "reply: none within 3.5 s"
    assert "PREROUTING  verdict drop" in lines


def test_a_hook_on_a_namespace_without_rules_shows_too() -> None:
    net = _net()

    @net.hook("server", "INPUT", priority=10)
    def count(p: Any) -> None:
        return None

    tr = net.trace("client", f"{SVC}:80", sport=40000)
    inp = _hook_events(tr["packets"][0], "server", "INPUT")
    assert len(inp) == 1 and inp[0]["verdict"] == "accept"
    assert [r["rule"] for r in inp[0]["rules"]] == ["count"]
    # the server has no rules: no other hook of it is in the trace
    hooks = {e["hook"] for e in tr["packets"][0]["events"] if e["type"] == "hook" and e["node"] == "server"}
    assert hooks == {"INPUT"}


# ---------------------------------------------------------------------- NFQUEUE
def _queue_net(tmp_path: Path, num: int) -> pktemu.Network:
    """service-test with `-p tcp --sport 8080 -j NFQUEUE --queue-num N` first in node2's filter FORWARD."""
    doc = yaml.safe_load((ROOT / TOPO).read_text())
    rules = (ROOT / "topologies" / "kube-proxy-rules.iptables").read_text()
    first = rules.index("-A FORWARD")
    rules = rules[:first] + f"-A FORWARD -p tcp --sport 8080 -j NFQUEUE --queue-num {num}\n" + rules[first:]
    (tmp_path / "node2.iptables").write_text(rules)
    for name, node in doc["nodes"].items():
        if "iptables" in node:
            node["iptables"] = str(tmp_path / "node2.iptables") if name == "node2" else \
                str(ROOT / "topologies" / node["iptables"])
    return pktemu.Network.load(doc)


def test_an_nfqueue_verdict_shows_the_queue_and_the_verdict(tmp_path: Path) -> None:
    net = _queue_net(tmp_path, 4)
    net.nfqueue("node2", 4, lambda pkt: pkt.accept())
    tr = net.trace("client", f"{SVC}:80", sport=40000)
    reply = tr["packets"][1]
    fwd = _hook_events(reply, "node2", "FORWARD")
    assert len(fwd) == 1 and fwd[0]["verdict"] == "accept"
    steps = fwd[0]["rules"]
    assert steps[0]["rule"] == "-A FORWARD -p tcp -m tcp --sport 8080 -j NFQUEUE --queue-num 4"
    assert steps[1] == {"table": "nfqueue", "chain": "FORWARD", "rulenum": None, "rule": "4 (packet id 1)",
                        "verdict": "ACCEPT", "target": ""}
    assert f"trace id {reply['trace_id']} nfqueue 4 (packet id 1): accept" in _lines(tr)
    assert tr["summary"]["reply"] == "delivered to client (tcp 10.3.241.152:80 > 10.0.1.2:40000)"


@pytest.mark.parametrize("verdict,words", [("drop", "4 (packet id 1)"),
                                           ("none", "4 (packet id 1, no verdict)")])
def test_an_nfqueue_drop_ends_the_reply_at_node2(tmp_path: Path, verdict: str, words: str) -> None:
    net = _queue_net(tmp_path, 4)
    net.nfqueue("node2", 4, lambda pkt: pkt.drop() if verdict == "drop" else None)
    tr = net.trace("client", f"{SVC}:80", sport=40000)
    assert tr["summary"]["reply"].startswith(
        "dropped at node2 (netfilter FORWARD): filter FORWARD#1 NFQUEUE 4")
    assert f"trace id {tr['packets'][1]['trace_id']} nfqueue {words}: drop" in _lines(tr)


# ---------------------------------------------------------------------- Kubernetes pods by namespace/name
@pytest.fixture(scope="module")
def k8s_trace() -> Any:
    return _net(K8S).trace("client", f"{SVC}:80", sport=40000)


def test_a_pod_is_named_by_its_namespace_and_name(k8s_trace: Any) -> None:
    tr = _net(K8S).trace("default/client", f"{SVC}:80", sport=40000)
    assert tr["from"] == "default/client"
    assert {**tr, "from": "client"} == dict(k8s_trace)
    assert tr["summary"]["reply"] == "delivered to client (tcp 10.3.241.152:80 > 10.0.1.2:40000)"


def test_a_pod_in_a_namespace_of_another_name_is_found_by_its_annotation() -> None:
    net = _net(K8S)
    tr = net.trace("kube-system/kube-dns-7f9c5d8b6-x2x4v", "10.0.1.2:9/udp")
    assert tr["packets"][0]["events"][0]["node"] == "dns"


def test_send_sr1_and_sniff_take_namespace_slash_name() -> None:
    net = _net(K8S)
    ans = net.sr1("default/client", IP(dst=SVC) / TCP(sport=40000, dport=80, flags="S"))
    assert ans is not None and ans[TCP].flags == "SA"
    net.run(duration=0.01)
    syns = net.sniff("default/server", lfilter=lambda p: TCP in p and p[TCP].flags == "S")
    assert [(p[IP].dst, p[TCP].dport) for p in syns] == [("10.0.2.2", 8080)]
    assert len(net.sniff("default/server/eth0")) == len(net.sniff("server-eth0"))


@pytest.mark.parametrize("where,hint", [("default/clinet", "did you mean default/client or default/server?"),
                                        ("kube-system/kube-dns",
                                         "did you mean kube-system/kube-dns-7f9c5d8b6-x2x4v?")])
def test_an_unknown_pod_is_an_error_naming_the_close_ones(where: str, hint: str) -> None:
    net = _net(K8S)
    with pytest.raises(pktemu.Error) as e:
        net.trace(where, f"{SVC}:80")
    assert str(e.value).startswith(f"trace: no pod or node '{where}' ({hint})")
    with pytest.raises(pktemu.Error, match="send: no pod or node"):
        net.send(where, IP(dst=SVC))


def test_the_command_takes_namespace_slash_name(k8s_trace: Any) -> None:
    args = ("trace", K8S, "--to", f"{SVC}:80", "--sport", "40000", "--json")
    d = json.loads(pktemu_cli(*args, "--from", "default/client").stdout)
    assert {**d, "from": "client", "topology": ""} == {**json.loads(json.dumps(k8s_trace)), "topology": ""}
    p = pktemu_cli(*args, "--from", "default/clinet", check=False)
    assert p.returncode == 2 and p.stdout == ""
    err = p.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        "pktemu: error: trace: no pod or node 'default/clinet' (did you mean default/client or")


# ---------------------------------------------------------------------- bad arguments
@pytest.mark.parametrize("kw,msg", [
    ({"dst": "10.3.241.152"}, "no destination port"),
    ({"dst": "service-test:80"}, "is not IPv4[:PORT][/tcp|udp]"),
    ({"dst": "10.3.241.152:80", "dport": 81}, "disagree"),
    ({"dst": "10.3.241.152:80", "proto": "sctp"}, "proto='sctp' is not 'tcp' or 'udp'"),
    ({"dst": "10.3.241.152:0"}, "dport=0 is not a port"),
    ({"dst": "10.3.241.152:80", "sport": 70000}, "sport=70000 is not a port"),
    ({"dst": "10.3.241.152:80", "timeout": -1}, "timeout=-1 is not a number of seconds"),
])
def test_bad_arguments_are_one_line_errors(kw: dict[str, Any], msg: str) -> None:
    with pytest.raises(pktemu.Error) as e:
        _net().trace("client", **kw)
    assert msg in str(e.value) and "\n" not in str(e.value)


def test_a_network_capturing_to_disk_traces_the_same(tmp_path: Path) -> None:
    """The capture taps consume the frames' notes as they pass; the trace still has every one."""
    fresh = _net().trace("client", f"{SVC}:80", sport=40000)
    with _net(capture=tmp_path / "out") as net:
        tr = net.trace("client", f"{SVC}:80", sport=40000)
        out = Path(net.write())
    assert tr == fresh
    assert any("DNAT 10.3.241.152:80 -> 10.0.2.2:8080" in n for e in tr["packets"][0]["events"]
               for n in e.get("notes", []))
    assert (out / "all.pcapng").stat().st_size > 0
