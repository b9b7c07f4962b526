"""Policy routing (`ip rule` + numbered tables, pktemu.net.fib_rules) in the emulator: a router
with two uplinks, rules by source, by fwmark (set by iptables mangle), blackhole/unreachable/
prohibit rules, suppress_prefixlength, timeline `ip rule`/`ip route ... table N`, and the
topology's one-line errors. The same topology on the real kernel: test_kernel_policy_routing.py.
"""
from __future__ import annotations

import copy
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from scapy.all import ICMP, IP, UDP, Ether

from conftest import pktemu

DST = "192.0.2.10"

#: pod -- r(eth0) ; r(eth1) -- up1 ; r(eth2) -- up2. main: default via up1; table 100: default via up2.
BASE: dict[str, Any] = {
    "name": "policy-routing",
    "seed": 1,
    "nodes": {
        "r": {
            "sysctls": {"net.ipv4.ip_forward": 1},
            "interfaces": {
                "eth0": {"mac": "02:00:00:00:00:01", "addresses": ["10.0.0.1/24"]},
                "eth1": {"mac": "02:00:00:00:01:01", "addresses": ["10.1.0.1/24"]},
                "eth2": {"mac": "02:00:00:00:02:01", "addresses": ["10.2.0.1/24"]},
            },
            "routes": [{"to": "default", "via": "10.1.0.2"},
                       {"to": "default", "via": "10.2.0.2", "table": 100}],
            "ip_rules": [],
        },
        "pod": {"interfaces": {"eth0": {"mac": "02:00:00:00:00:02", "addresses": ["10.0.0.2/24"]}},
                "routes": [{"to": "default", "via": "10.0.0.1"}]},
        "up1": {"interfaces": {"eth0": {"mac": "02:00:00:00:01:02", "addresses": ["10.1.0.2/24"]}},
                "routes": [{"to": "default", "via": "10.1.0.1"}]},
        "up2": {"interfaces": {"eth0": {"mac": "02:00:00:00:02:02", "addresses": ["10.2.0.2/24"]}},
                "routes": [{"to": "default", "via": "10.2.0.1"}]},
    },
    "veths": [["pod/eth0", "r/eth0"], ["r/eth1", "up1/eth0"], ["r/eth2", "up2/eth0"]],
    "scenarios": {"idle": {"traffic": []}},
}


def topo(rules: list[Any], routes: list[Any] | None = None, iptables: str | None = None,
         tmp: Path | None = None) -> dict[str, Any]:
    t = copy.deepcopy(BASE)
    t["nodes"]["r"]["ip_rules"] = rules
    t["nodes"]["r"]["routes"] += routes or []
    if iptables is not None and tmp is not None:
        (tmp / "r.iptables").write_text(iptables)
        t["nodes"]["r"]["iptables"] = str(tmp / "r.iptables")
    return t


def _net(t: dict[str, Any]) -> Any:
    import pktemu as api
    return api.Network.load(t)


def _out_of(net: Any, n_before: dict[str, int] | None = None) -> list[str]:
    """The uplinks (r-eth1, r-eth2) that carried an echo request or UDP datagram to DST."""
    hits = []
    for point in ("r-eth1", "r-eth2"):
        if any(p.haslayer(IP) and p[IP].dst == DST for p in net.sniff(point)):
            hits.append(point)
    return hits


def _from_pod(net: Any, pkt: Any) -> list[str]:
    net.sendp("r/eth0", Ether(src="02:00:00:00:00:02", dst="02:00:00:00:00:01") / pkt)
    net.run(duration=0.1)
    return _out_of(net)


def test_without_rules_everything_leaves_by_main() -> None:
    net = _net(topo([]))
    assert _from_pod(net, IP(src="10.0.0.2", dst=DST) / ICMP()) == ["r-eth1"]


def test_rule_by_source_sends_the_pod_out_of_the_second_uplink_and_names_the_rule() -> None:
    net = _net(topo(["from 10.0.0.0/24 lookup 100 priority 100"]))
    assert _from_pod(net, IP(src="10.0.0.2", dst=DST) / ICMP()) == ["r-eth2"]
    net2 = _net(topo([{"priority": 100, "from": "10.0.0.0/24", "table": 100}]))
    net2.send("r", IP(src="10.1.0.1", dst=DST) / ICMP())          # the router's own: no match
    net2.run(duration=0.1)
    assert _out_of(net2) == ["r-eth1"]


def test_routing_note_names_the_rule_and_table(tmp_path: Path) -> None:
    t = topo(["from 10.0.0.0/24 lookup 100 priority 100"])
    t["scenarios"] = {"ping": {"traffic": [{"at": "0ms", "node": "pod",
                                             "app": {"kind": "ping", "target": DST, "count": 1}}]}}
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(t))
    pktemu("run", str(tmp_path / "t.yaml"), "--out", str(tmp_path / "o"), "-q", timeout=120)
    out = subprocess.run(["tshark", "-r", str(tmp_path / "o" / "ping" / "all.pcapng"), "-T", "fields",
                          "-e", "frame.comment"], capture_output=True, text=True, timeout=60).stdout
    assert "rule 100 from 10.0.0.0/24 lookup 100: default via 10.2.0.2 dev eth2" in out, out


def test_fwmark_from_mangle_prerouting_and_output(tmp_path: Path) -> None:
    rules = ("*mangle\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n"
             ":OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n"
             "-A PREROUTING -p udp --dport 53 -j MARK --set-mark 0x1\n"
             "-A OUTPUT -p udp --dport 53 -j MARK --set-mark 0x1\nCOMMIT\n")
    t = topo(["fwmark 0x1/0xff lookup 100 priority 200"], iptables=rules, tmp=tmp_path)
    net = _net(t)
    assert _from_pod(net, IP(src="10.0.0.2", dst=DST) / UDP(sport=1000, dport=53)) == ["r-eth2"]
    net = _net(t)
    assert _from_pod(net, IP(src="10.0.0.2", dst=DST) / UDP(sport=1000, dport=54)) == ["r-eth1"]
    net = _net(t)       # the router's own: marked in mangle OUTPUT, rerouted (ip_route_me_harder)
    net.send("r", IP(src="10.1.0.1", dst=DST) / UDP(sport=1000, dport=53))
    net.run(duration=0.1)
    assert _out_of(net) == ["r-eth2"]


@pytest.mark.parametrize("action,code", [("unreachable", 0), ("prohibit", 13), ("blackhole", None)])
def test_error_rules_answer_forwarded_packets_as_ip_error_does(action: str, code: int | None) -> None:
    net = _net(topo([f"to {DST} {action} priority 50"]))
    assert _from_pod(net, IP(src="10.0.0.2", dst=DST) / ICMP()) == []
    errs = [p for p in net.sniff("r-eth0") if p.haslayer(ICMP) and p[ICMP].type == 3]
    assert [p[ICMP].code for p in errs] == ([] if code is None else [code])


def test_unreachable_route_type_in_a_table_is_host_unreachable() -> None:
    # by input device: a `from 10.0.0.0/24` rule would also catch the error's own source 10.0.0.1
    net = _net(topo(["iif eth0 lookup 100 priority 100"],
                    [{"to": "192.0.2.0/24", "type": "unreachable", "table": 100}]))
    assert _from_pod(net, IP(src="10.0.0.2", dst=DST) / ICMP()) == []
    assert [p[ICMP].code for p in net.sniff("r-eth0") if p.haslayer(ICMP) and p[ICMP].type == 3] == [1]


def test_suppress_prefixlength_zero_ignores_the_default_route_of_main() -> None:
    # wg-quick: `lookup main suppress_prefixlength 0` before `not fwmark ... lookup 100`
    rules = ["lookup main suppress_prefixlength 0 priority 10", "not fwmark 0xca6c lookup 100 priority 20"]
    net = _net(topo(rules))
    assert _from_pod(net, IP(src="10.0.0.2", dst=DST) / ICMP()) == ["r-eth2"]
    net = _net(topo(rules, [{"to": "192.0.2.0/24", "via": "10.1.0.2"}]))   # a /24 is not suppressed
    assert _from_pod(net, IP(src="10.0.0.2", dst=DST) / ICMP()) == ["r-eth1"]


def test_lookup_in_an_empty_table_goes_on_to_the_next_rule() -> None:
    net = _net(topo(["lookup 200 priority 10"]))
    assert _from_pod(net, IP(src="10.0.0.2", dst=DST) / ICMP()) == ["r-eth1"]


def test_timeline_adds_and_deletes_rules_and_table_routes() -> None:
    net = _net(topo([]))
    net.cmd("r", "ip rule add from 10.0.0.2 lookup 300")
    assert net.engine.nodes["r"].fib.rules[1].priority == 32765       # fib_default_rule_pref
    assert _from_pod(net, IP(src="10.0.0.2", dst=DST) / ICMP()) == ["r-eth1"]   # table 300 empty
    net = _net(topo([]))
    net.cmd("r", "ip route add default via 10.2.0.2 table 300")
    net.cmd("r", "ip rule add from 10.0.0.2 lookup 300")
    assert _from_pod(net, IP(src="10.0.0.2", dst=DST) / ICMP()) == ["r-eth2"]
    net = _net(topo(["from 10.0.0.2 lookup 100 priority 5"]))
    net.cmd("r", "ip rule del priority 5")
    assert _from_pod(net, IP(src="10.0.0.2", dst=DST) / ICMP()) == ["r-eth1"]
    net = _net(topo(["from 10.0.0.2 lookup 100 priority 5"]))
    net.cmd("r", "ip route del default table 100")
    assert _from_pod(net, IP(src="10.0.0.2", dst=DST) / ICMP()) == ["r-eth1"]


def test_timeline_failures_say_what_iproute2_says(tmp_path: Path) -> None:
    t = topo([])
    t["scenarios"] = {"tl": {"traffic": [], "timeline": [
        {"at": "1ms", "node": "r", "ip": "rule del priority 77"},
        {"at": "2ms", "node": "r", "ip": "route del default table 100 via 10.1.0.2"},
        {"at": "3ms", "node": "r", "ip": "route add blackhole 192.0.2.0/24 table 7"}]}}
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(t))
    pktemu("run", str(tmp_path / "t.yaml"), "--out", str(tmp_path / "o"), "-q", timeout=120)
    log = (tmp_path / "o" / "tl" / "timeline.txt").read_text()
    assert log.count("[FAILED]") == 2 and "No such file or directory" in log and "No such process" in log, log


@pytest.mark.parametrize("rule,where,msg", [
    ("from 10.0.0.300/24 lookup 100", "ip_rules[0]", "not a prefix"),
    ("from 10.0.0.0/24 lookup wonder", "ip_rules[0]", "table number"),
    ("fwmark 0x1/zz lookup 100", "ip_rules[0]", "fwmark mask"),
    ("sport 9-1 lookup 100", "ip_rules[0]", "empty range"),
    ("uidrange 1-2 lookup 100", "ip_rules[0]", "unknown or unsupported selector"),
    ("priority 100 goto 50", "ip_rules[0]", "backward goto"),
    ({"from": "10.0.0.0/8", "action": "drop"}, "ip_rules[0].action", "expected one of"),
    ({"from": "10.0.0.0/8", "colour": 1}, "ip_rules[0].colour", ""),
])
def test_bad_rules_are_one_line_errors(tmp_path: Path, rule: Any, where: str, msg: str) -> None:
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(topo([rule])))
    p = pktemu("run", str(tmp_path / "t.yaml"), "--out", str(tmp_path / "o"), check=False, timeout=60)
    assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
    assert p.stderr.startswith("pktemu: error: ") and f"nodes.r.{where}" in p.stderr and msg in p.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("route,where,msg", [
    ({"to": "default", "via": "10.2.0.2", "table": "nope"}, "table", "table number"),
    ({"to": "192.0.2.0/24", "type": "blackhole", "dev": "eth1"}, "type", "neither via nor dev"),
    ({"to": "192.0.2.0/24", "type": "anycast"}, "type", "expected unicast"),
])
def test_bad_table_routes_are_one_line_errors(tmp_path: Path, route: Any, where: str, msg: str) -> None:
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(topo([], [route])))
    p = pktemu("run", str(tmp_path / "t.yaml"), "--out", str(tmp_path / "o"), check=False, timeout=60)
    assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
    assert f"nodes.r.routes[2].{where}" in p.stderr and msg in p.stderr, p.stderr
    assert not (tmp_path / "o").exists()


def test_same_destination_in_two_tables_is_not_a_duplicate(tmp_path: Path) -> None:
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(topo([])))
    assert pktemu("validate", str(tmp_path / "t.yaml"), check=False).returncode == 0


def test_import_keeps_rules_and_routes_of_every_table(tmp_path: Path) -> None:
    import json

    from test_import import cluster_yaml, node_dump
    rules = [{"priority": 0, "src": "all", "table": "local"},
             {"priority": 100, "src": "10.0.1.0", "srclen": 24, "table": "100"},
             {"priority": 200, "src": "all", "fwmark": "0x1", "fwmask": "0xff", "table": "100"},
             {"priority": 300, "not": None, "src": "all", "dst": "192.0.2.10", "action": "prohibit"},
             {"priority": 400, "src": "all", "uid_start": 1, "uid_end": 2, "table": "100"},
             {"priority": 32766, "src": "all", "table": "main"},
             {"priority": 32767, "src": "all", "table": "default"}]
    routes = [{"type": "unicast", "dst": "default", "gateway": "192.168.5.1", "dev": "eth0", "table": "main"},
              {"dst": "10.0.1.0/24", "dev": "cbr0", "table": "main", "protocol": "kernel", "scope": "link"},
              {"type": "unicast", "dst": "default", "gateway": "192.168.5.2", "dev": "eth0", "table": "100"},
              {"type": "blackhole", "dst": "10.0.9.0/26", "table": "main", "protocol": "bird"},
              {"type": "local", "dst": "192.168.5.11", "dev": "eth0", "table": "local"}]
    dump = node_dump(tmp_path / "d", **{"ip-rule.json": json.dumps(rules),
                                        "ip-route.json": json.dumps(routes)})
    out = tmp_path / "t.yaml"
    p = pktemu("import", str(dump), str(cluster_yaml(tmp_path / "objs.yaml")), "-o", str(out))
    node = yaml.safe_load(out.read_text())["nodes"]["worker-a"]
    assert node["ip_rules"] == ["from 10.0.1.0/24 priority 100 lookup 100",
                                "priority 200 fwmark 0x1/0xff lookup 100",
                                "not to 192.0.2.10/32 priority 300 prohibit"]
    assert {"to": "default", "via": "192.168.5.2", "dev": "eth0", "table": 100} in node["routes"]
    assert {"to": "10.0.9.0/26", "type": "blackhole"} in node["routes"]
    assert "uid_start" in p.stdout + p.stderr and "not imported yet" not in p.stdout + p.stderr
    assert pktemu("validate", str(out), check=False).returncode == 0


def test_goto_skips_rules_and_selectors_by_port_tos_and_iif() -> None:
    # goto 300 jumps over the rule at 200 that would send everything to table 100
    net = _net(topo(["priority 100 iif eth0 goto 300", "priority 200 lookup 100",
                     "priority 300 ipproto udp dport 50-60 tos 0x10 lookup 100"]))
    assert _from_pod(net, IP(src="10.0.0.2", dst=DST) / ICMP()) == ["r-eth1"]
    net = _net(topo(["priority 100 iif eth0 goto 300", "priority 200 lookup 100",
                     "priority 300 ipproto udp dport 50-60 tos 0x10 lookup 100"]))
    assert _from_pod(net, IP(src="10.0.0.2", dst=DST, tos=0x10) / UDP(dport=53)) == ["r-eth2"]
    net = _net(topo(["priority 300 ipproto udp dport 50-60 tos 0x10 lookup 100"]))
    assert _from_pod(net, IP(src="10.0.0.2", dst=DST, tos=0x10) / UDP(dport=61)) == ["r-eth1"]


def test_throw_route_goes_on_to_the_next_rule() -> None:
    net = _net(topo(["from 10.0.0.0/24 lookup 100 priority 100"],
                    [{"to": "192.0.2.0/24", "type": "throw", "table": 100}]))
    assert _from_pod(net, IP(src="10.0.0.2", dst=DST) / ICMP()) == ["r-eth1"]


def test_unbound_udp_is_routed_with_no_source_as_udp_sendmsg_does() -> None:
    from pktemu.net.frame import ip2int
    net = _net(topo(["from 10.1.0.1 lookup 100 priority 100"]))
    r = net.engine.nodes["r"]
    r.udp.bind(0, None).sendto(b"x", ip2int(DST), 53)                  # rule sees 0.0.0.0: main
    r.udp.bind(0, None, ip2int("10.1.0.1")).sendto(b"x", ip2int(DST), 54)   # bound: table 100
    net.run(duration=0.1)
    by = {p[UDP].dport: point for point in ("r-eth1", "r-eth2") for p in net.sniff(point) if p.haslayer(UDP)}
    assert by == {53: "r-eth1", 54: "r-eth2"}
