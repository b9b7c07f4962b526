"""Timeline actions without Kubernetes, and steps in one network: rules, conntrack, sysctls, routes,
hairpin and apps change mid-run, and the pcaps, result files and comments show it."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import pktemu
from datapaths import ROOT

BASE = ROOT / "topologies" / "service-test.yaml"
EPOCH = 1_735_689_600          # the pcaps' time origin (pktemu.sim.EPOCH_NS), in seconds
ECHO = "{kind: echo-client, proto: udp, target: 10.3.0.50, port: 7, sport: 40007}"
INSERT = "-t nat -I KUBE-SERVICES 1 -d 10.3.0.50/32 -p udp --dport 7 -j DNAT --to-destination 10.0.2.2:7"
REPLACE = "-t nat -R KUBE-SERVICES 1 -d 10.3.0.50/32 -p udp --dport 7 -j DNAT --to-destination 10.0.2.3:7"

STICKY = f"""
extends: {BASE}
scenarios:
  udp-sticky:
    timeline:
      - {{at: 0s, node: server, app: {{start: {{kind: udp-echo, port: 7}}}}}}
      - {{at: 0s, node: dns, app: {{start: {{kind: udp-echo, port: 7}}}}}}
      - {{at: 0s, node: node1, iptables: "{INSERT}"}}
    steps:
      - name: before
        traffic: [{{at: 10ms, pod: client, app: {ECHO}}}]
        settle: 100ms
      - name: replaced
        timeline: [{{at: 0s, node: node1, iptables: "{REPLACE}"}}]
        traffic: [{{at: 10ms, pod: client, app: {ECHO}}}]
        settle: 100ms
      - name: deleted
        timeline: [{{at: 0s, node: node1, conntrack: "-D -p udp --orig-dst 10.3.0.50 --dport 7"}}]
        traffic: [{{at: 10ms, pod: client, app: {ECHO}}}]
        settle: 100ms
"""


def _write(tmp_path: Path, text: str, name: str = "t.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def _json(path: Path) -> Any:
    return json.loads(path.read_text())


def _answers(path: Path) -> list[str]:
    return [a.get("answer") or a["outcome"] for a in _json(path)["attempts"]]


def _udp7(pcap: Path) -> list[tuple[float, str, str]]:
    """(time, src, dst) of the UDP port 7 datagrams in a pcap, read by tshark."""
    out = subprocess.run(["tshark", "-r", str(pcap), "-Y", "udp.port == 7", "-T", "fields",
                          "-e", "frame.time_epoch", "-e", "ip.src", "-e", "ip.dst"],
                         capture_output=True, text=True, check=True).stdout
    return [(float(t) - EPOCH, s, d) for t, s, d in (ln.split("\t") for ln in out.splitlines())]


def _comments(pcapng: Path) -> list[str]:
    out = subprocess.run(["tshark", "-r", str(pcapng), "-T", "fields", "-e", "frame.comment"],
                         capture_output=True, text=True, check=True).stdout
    return out.splitlines()


@pytest.fixture(scope="module")
def sticky(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("sticky")
    topo = _write(d, STICKY)
    pktemu("run", str(topo), "--scenario", "udp-sticky", "--out", str(d / "out"), "-q")
    return d / "out" / "udp-sticky"


def test_a_udp_flow_keeps_its_endpoint_until_its_conntrack_entry_is_deleted(sticky: Path) -> None:
    assert _answers(sticky / "client-result-before.json") == ["server 10.0.2.2:7 saw 10.0.1.2:40007\n"]
    # the DNAT rule now points at 10.0.2.3, but the flow's entry still says 10.0.2.2
    assert _answers(sticky / "client-result-replaced.json") == ["server 10.0.2.2:7 saw 10.0.1.2:40007\n"]
    assert _answers(sticky / "client-result-deleted.json") == ["dns 10.0.2.3:7 saw 10.0.1.2:40007\n"]
    steps = _json(sticky / "steps.json")
    assert [s["step"] for s in steps] == ["before", "replaced", "deleted"]
    deleted_at = steps[2]["start_s"]
    assert all(s["ended_by"] == "clients done" for s in steps)
    # on the wire: the old endpoint gets both first datagrams, the new one only the last
    to_server = _udp7(sticky / "pcap" / "server-eth0.pcap")
    to_dns = _udp7(sticky / "pcap" / "dns-eth0.pcap")
    assert [d for _t, _s, d in to_server if d == "10.0.2.2"] and len(to_server) == 4
    assert len(to_dns) == 2 and all(t > deleted_at for t, _s, _d in to_dns)
    # the client always talked to the ClusterIP, from the fixed source port
    sent = [(s, d) for _t, s, d in _udp7(sticky / "pcap" / "client-eth0.pcap") if s == "10.0.1.2"]
    assert sent == [("10.0.1.2", "10.3.0.50")] * 3


def test_the_timeline_log_and_the_comments_say_what_changed_and_when(sticky: Path) -> None:
    log = (sticky / "timeline.txt").read_text().splitlines()
    assert any("node1 iptables -t nat -R KUBE-SERVICES 1" in ln and "[ok]" in ln for ln in log)
    assert any("conntrack -D" in ln and "1 flow entries have been deleted" in ln for ln in log)
    comments = "\n".join(_comments(sticky / "all.pcapng"))
    assert "(rule inserted at 0.000 s by iptables -t nat -I)" in comments
    assert "rule replaced at 0.110 s by iptables -t nat -R" in comments
    assert "this flow's previous entry was deleted at 0.220 s by conntrack -D" in comments


def test_steps_share_the_namespaces_neighbour_state(sticky: Path) -> None:
    """The client resolves its gateway's MAC in the first step only: later steps find it cached."""
    out = subprocess.run(["tshark", "-r", str(sticky / "pcap" / "client-eth0.pcap"), "-Y", "arp",
                          "-T", "fields", "-e", "frame.time_epoch"], capture_output=True, text=True,
                         check=True).stdout.split()
    second = _json(sticky / "steps.json")[1]["start_s"]
    assert out and all(float(t) - EPOCH < second for t in out)


def _run(tmp_path: Path, scenario: str, body: str) -> tuple[Path, subprocess.CompletedProcess[str]]:
    topo = _write(tmp_path, f"extends: {BASE}\nscenarios:\n  {scenario}:\n{body}")
    p = pktemu("run", str(topo), "--scenario", scenario, "--out", str(tmp_path / "out"), "-q")
    return tmp_path / "out" / scenario, p


def test_stopping_a_server_makes_the_next_datagram_refused(tmp_path: Path) -> None:
    body = f"""    timeline:
      - {{at: 0s, node: server, app: {{start: {{kind: udp-echo, port: 7}}}}}}
      - {{at: 0s, node: node1, iptables: "{INSERT}"}}
      - {{at: 500ms, node: server, app: {{stop: udp-echo}}}}
    traffic:
      - {{at: 10ms, pod: client, app: {{kind: echo-client, proto: udp, target: 10.3.0.50, port: 7,
                                        sport: 40007, count: 2, interval: 1s}}}}
"""
    out, _p = _run(tmp_path, "stop", body)
    assert [a["outcome"] for a in _json(out / "client-result.json")["attempts"]] == ["answer", "REFUSED"]
    icmp = subprocess.run(["tshark", "-r", str(out / "pcap" / "server-eth0.pcap"), "-Y",
                           "icmp.type == 3 && icmp.code == 3", "-T", "fields", "-e", "ip.src",
                           "-E", "occurrence=f"],
                          capture_output=True, text=True, check=True).stdout.split()
    assert icmp == ["10.0.2.2"]
    drops = (out / "drops.txt").read_text()
    assert "no socket for port 7 (udp-echo stopped at 0.500 s)" in drops


def test_a_deleted_route_gives_enetunreach_and_a_new_one_reaches(tmp_path: Path) -> None:
    body = f"""    timeline:
      - {{at: 0s, node: server, app: {{start: {{kind: udp-echo, port: 7}}}}}}
      - {{at: 0s, node: node1, iptables: "{INSERT}"}}
      - {{at: 500ms, node: client, ip: "route del default"}}
      - {{at: 1500ms, node: client, ip: "route add 10.3.0.0/16 via 10.0.1.1"}}
    traffic:
      - {{at: 10ms, pod: client, app: {{kind: echo-client, proto: udp, target: 10.3.0.50, port: 7,
                                        count: 3, interval: 1s}}}}
"""
    out, _p = _run(tmp_path, "routes", body)
    assert [a["outcome"] for a in _json(out / "client-result.json")["attempts"]] == \
        ["answer", "ENETUNREACH", "answer"]
    comments = _comments(out / "all.pcapng")
    assert any("route 10.3.0.0/16 via 10.0.1.1 dev eth0 (added at 1.500 s by ip route add)" in c
               for c in comments)


def test_a_link_taken_down_takes_its_routes_and_up_brings_back_only_the_connected_one(tmp_path: Path) -> None:
    body = f"""    timeline:
      - {{at: 0s, node: server, app: {{start: {{kind: udp-echo, port: 7}}}}}}
      - {{at: 0s, node: node1, iptables: "{INSERT}"}}
      - {{at: 500ms, node: client, ip: "link set eth0 down"}}
      - {{at: 1200ms, node: client, ip: "link set eth0 up"}}
      - {{at: 2200ms, node: client, ip: "route add default via 10.0.1.1"}}
    traffic:
      - {{at: 10ms, pod: client, app: {{kind: echo-client, proto: udp, target: 10.3.0.50, port: 7,
                                        count: 4, interval: 1s}}}}
"""
    out, _p = _run(tmp_path, "link", body)
    assert [a["outcome"] for a in _json(out / "client-result.json")["attempts"]] == \
        ["answer", "ENETUNREACH", "ENETUNREACH", "answer"]
    log = (out / "timeline.txt").read_text()
    assert "client ip link set eth0 down [ok]" in log and "client ip link set eth0 up [ok]" in log


def test_turning_hairpin_on_mid_run_lets_the_retried_syn_through(tmp_path: Path) -> None:
    """Hairpin off drops the hairpinned SYN until `bridge link set ... hairpin on` turns it back on."""
    body = """    overrides:
      - {port: node1/veth-client, hairpin: false}
    timeline:
      - {at: 2s, node: node1, bridge: "link set dev veth-client hairpin on"}
    traffic:
      - {at: 0ms, pod: client, app: {kind: http-client, target: 10.3.245.20, port: 80, connect_timeout: 5s}}
"""
    out, _p = _run(tmp_path, "hairpin", body)
    res = _json(out / "client-result.json")
    assert res["http"]["status_line"] == "HTTP/1.1 200 OK"
    drops = (out / "drops.txt").read_text().splitlines()
    assert drops and all("hairpin off" in d for d in drops)
    assert all(float(d.split()[0]) < 2 for d in drops)


def test_a_failed_command_is_a_warning_and_a_line_in_timeline_txt(tmp_path: Path) -> None:
    body = """    timeline:
      - {at: 100ms, node: node1, conntrack: "-D -p udp --orig-dst 10.9.9.9"}
      - {at: 200ms, node: node1, iptables: "-t nat -A NO-SUCH-CHAIN -j ACCEPT"}
    traffic:
      - {at: 0ms, pod: client, app: {kind: http-client, target: 10.3.241.152, port: 80}}
"""
    out, p = _run(tmp_path, "fails", body)
    warnings = [ln for ln in p.stderr.splitlines() if ln.startswith("pktemu: warning:")]
    assert len(warnings) == 2 and "0 flow entries" in warnings[0] and "NO-SUCH-CHAIN" in warnings[1]
    log = (out / "timeline.txt").read_text()
    assert log.count("[FAILED]") == 2
    assert _json(out / "client-result.json")["http"]["status_line"] == "HTTP/1.1 200 OK"


@pytest.mark.parametrize("entry, message", [
    ('{at: 1s, node: nosuch, conntrack: "-F"}', "node: no node or pod named 'nosuch'"),
    ('{at: 1s, node: node1, iptables: "-t nat -A X --bogus"}', "unknown option"),
    ('{at: 1s, node: node1, iptables: "-t nosuch -A X -j ACCEPT"}', "unknown table 'nosuch'"),
    ('{at: 1s, conntrack: "-F"}', "node: required"),
    ('{at: 1s, node: node1, conntrack: "-D --dport 53"}', "port filters need -p tcp, -p udp or -p sctp"),
    ('{at: 1s, node: node1, conntrack: "-F -p udp"}', "-F takes no filter"),
    ('{at: 1s, node: node1, ip: "link set nosuch down"}', "no device 'nosuch' on node1"),
    ('{at: 1s, node: node1, ip: "route add 10.9.0.0/16 via banana"}', "not an IPv4 address"),
    ('{at: 1s, node: node1, sysctl: {net.ipv4.nosuch: 1}}', "unknown sysctl"),
    ('{at: 1s, node: node1, bridge: "link set dev eth0 hairpin on"}', "not a bridge port of node1"),
    ('{at: 1s, node: node1, app: {stop: nosuch}}', "unknown app kind"),
    ("{at: 1s, scale: {service: x, replicas: 1}}", "needs a kubernetes: section"),
    ('{at: 99s, node: node1, conntrack: "-F"}', "after the scenario ends"),
])
def test_bad_timeline_actions_are_one_line_errors(tmp_path: Path, entry: str, message: str) -> None:
    topo = _write(tmp_path, f"extends: {BASE}\nscenarios:\n  bad:\n    timeline:\n      - {entry}\n"
                            "    traffic:\n      - {at: 0ms, pod: client, app: {kind: http-client, "
                            "target: 10.3.241.152, port: 80}}\n")
    p = pktemu("run", str(topo), "--out", str(tmp_path / "out"), check=False)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "timeline[0]" in lines[0], lines
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("start, field", [
    ("{kind: udp-echo, port: 70000}", "port: expected a port 1-65535"),
    ("{kind: echo-client, proto: udp, target: 10.0.2.2, port: 7, interval: 1x}",
     "interval: expected a duration"),
])
def test_a_bad_app_start_names_the_file_and_field_as_other_errors_do(tmp_path: Path, start: str,
                                                                       field: str) -> None:
    topo = _write(tmp_path, f"extends: {BASE}\nscenarios:\n  bad:\n    timeline:\n"
                            f"      - {{at: 1s, node: server, app: {{start: {start}}}}}\n")
    p = pktemu("validate", str(topo), check=False)
    assert p.returncode == 2
    where = f"{topo}: scenarios.bad.timeline[0].app.start"
    assert p.stderr.startswith(f"pktemu: error: {where}.{field}"), p.stderr


@pytest.mark.parametrize("steps, message", [
    ("[{name: a}, {name: a}]", "a is also the name of"),
    ("[{traffic: []}]", "name: required"),
    ("[{name: a}]\n    duration: 1s", "bad.duration: a scenario with steps: has no duration of its own, each "
                                       "step has its own (give duration: in the steps)"),
    ("[{name: a}]\n    settle: 1s", "bad.settle: a scenario with steps: has no settle of its own"),
])
def test_bad_steps_are_one_line_errors(tmp_path: Path, steps: str, message: str) -> None:
    topo = _write(tmp_path, f"extends: {BASE}\nscenarios:\n  bad:\n    steps: {steps}\n")
    p = pktemu("validate", str(topo), check=False)
    assert p.returncode == 2 and message in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr


def test_python_cmd_runs_now_and_at_a_time() -> None:
    import pktemu as api
    net = api.Network.load(str(BASE))
    assert net.cmd("node1", f"iptables {INSERT}") == ""
    net.schedule(None, "app", {"start": {"kind": "udp-echo", "port": 7}}, node="server")
    with pytest.raises(api.Error, match="0 flow entries have been deleted"):
        net.cmd("node1", "conntrack -D -p udp --orig-dst 10.3.0.50")
    net.cmd("node1", "sysctl -w net.ipv4.ip_forward=0", at=0.5)
    from scapy.layers.inet import IP, UDP
    from scapy.packet import Raw
    first = net.sr1("client", IP(dst="10.3.0.50") / UDP(sport=40007, dport=7) / Raw(b"hi\n"), timeout=0.2)
    assert first is not None and first[Raw].load.startswith(b"server 10.0.2.2:7 saw 10.0.1.2:40007")
    listed = net.cmd("node1", "conntrack -L -p udp --orig-dst 10.3.0.50")
    assert listed is not None and "dst=10.3.0.50" in listed and "1 flow entries have been shown" in listed
    net.run(until=0.6)
    assert net.engine.nodes["node1"].sysctl("net.ipv4.ip_forward") == 0
    late = net.sr1("client", IP(dst="10.3.0.50") / UDP(sport=40008, dport=7) / Raw(b"hi\n"), timeout=0.5)
    assert late is None
    drops = [d.reason for d in net.engine.drops if d.node == "node1"]
    assert any("ip_forward=0 (net.ipv4.ip_forward=0 at 0.500 s by sysctl -w)" in r for r in drops), drops


def test_a_failed_iptables_command_says_what_iptables_would_without_a_line_number(tmp_path: Path) -> None:
    import pktemu as api
    net = api.Network.load(str(BASE), capture=tmp_path)
    for line, message in [("iptables -A NOPE -j ACCEPT", "unknown chain 'NOPE' in table filter"),
                          ("iptables -t nat -D KUBE-SERVICES 99", "chain KUBE-SERVICES has no rule 99"),
                          ("iptables -N KUBE-SERVICES -t nat", "chain KUBE-SERVICES already exists")]:
        with pytest.raises(api.Error, match=f"^{line}: {message}$"):
            net.cmd("node1", line)
    net.cmd("node1", "iptables -A NOPE -j ACCEPT", at=0.1)
    net.run(duration=0.2)
    log = (Path(net.write()) / "timeline.txt").read_text()
    assert log.splitlines()[-1] == ("0.100000 node1 iptables -A NOPE -j ACCEPT [FAILED]: unknown chain "
                                    "'NOPE' in table filter")
    assert log.count("[FAILED]") == 4 and "]: 2:" not in log


def test_iptables_restore_with_and_without_noflush(tmp_path: Path) -> None:
    """--noflush adds to the table; without it the table is what the input says, nothing more."""
    import pktemu as api
    net = api.Network.load(str(BASE))
    before = net.iptables_save("node1", counters=False)
    assert "KUBE-SERVICES" in before
    extra = "*nat\n:EXTRA - [0:0]\n-A PREROUTING -d 10.3.0.99/32 -j EXTRA\nCOMMIT\n"
    net.cmd("node1", "iptables-restore --noflush", stdin=extra)
    kept = net.iptables_save("node1", counters=False)
    assert "-A PREROUTING -d 10.3.0.99/32 -j EXTRA" in kept and "KUBE-SVC-GBTMB5ZTD56ECL5F" in kept
    net.cmd("node1", "iptables-restore", stdin=extra)
    nat = net.iptables_save("node1", counters=False).split("*nat", 1)[1].split("COMMIT", 1)[0]
    assert "-A PREROUTING -d 10.3.0.99/32 -j EXTRA" in nat and "KUBE-SVC-GBTMB5ZTD56ECL5F" not in nat
    assert "KUBE-FORWARD" in net.iptables_save("node1")      # the filter table was not in the input
    rules = tmp_path / "r.iptables"
    rules.write_text("*nat\n:BAD - [0:0]\n-A BAD -j NOWHERE\nCOMMIT\n")
    p = pktemu("validate", str(_write(tmp_path, f"""extends: {BASE}
scenarios:
  s:
    timeline: [{{at: 0s, node: node1, iptables-restore: {{file: r.iptables}}}}]
""")), check=False)
    assert p.returncode == 2 and "r.iptables:3" in p.stderr and "NOWHERE" in p.stderr, p.stderr


def test_conntrack_filters_pick_entries_as_conntrack_tools_does() -> None:
    """-D with --dst-nat, reply-side and port filters removes only the entries they describe."""
    import pktemu as api
    from scapy.layers.inet import IP, UDP
    from scapy.packet import Raw
    net = api.Network.load(str(BASE))
    net.cmd("node1", f"iptables {INSERT}")
    net.schedule(None, "app", {"start": {"kind": "udp-echo", "port": 7}}, node="server")
    for sport in (40001, 40002):
        assert net.sr1("client", IP(dst="10.3.0.50") / UDP(sport=sport, dport=7) / Raw(b"x\n"), timeout=0.2)
    assert net.sr1("client", IP(dst="10.0.2.2") / UDP(sport=40003, dport=7) / Raw(b"x\n"), timeout=0.2)
    udp = [e for e in net.conntrack("node1").entries if e.proto == 17]
    assert len(udp) == 3
    with pytest.raises(api.Error, match="0 flow entries"):
        net.cmd("node1", "conntrack -D -p udp --dst-nat 10.0.2.3")
    out = net.cmd("node1", "conntrack -D -p udp --dst-nat 10.0.2.2 --sport 40002")
    assert out is not None and out.endswith("1 flow entries have been deleted.")
    left = sorted(e.orig[1] for e in net.conntrack("node1").entries if e.proto == 17)
    assert left == [40001, 40003]
    out = net.cmd("node1", "conntrack -D -r 10.0.2.2 -p udp --reply-port-src 7")
    assert out is not None and out.endswith("2 flow entries have been deleted.")
    assert not [e for e in net.conntrack("node1").entries if e.proto == 17]


def test_an_app_start_whose_port_is_taken_fails_as_a_warning(tmp_path: Path) -> None:
    """A second http-server on the client's port 8080, started by the timeline: the action fails as
    the program would (EADDRINUSE), said on stderr and in timeline.txt, and the run goes on."""
    topo = _write(tmp_path, f"""
extends: {{file: {ROOT / "topologies" / "service-test-k8s.yaml"}, merge: true}}
scenarios:
  s3-hairpin:
    timeline:
      - {{at: 0s, node: client, app: {{start: {{kind: http-server, port: 8080}}}}}}
""")
    p = pktemu("run", str(topo), "--out", str(tmp_path / "out"), "-q")
    line = ("scenarios.s3-hairpin.timeline[0]: app {start: {kind: http-server, port: 8080}} at 0.000 s "
            "failed: client: tcp listen on 0.0.0.0:8080: EADDRINUSE (Address already in use)")
    assert p.stderr == f"pktemu: warning: {topo}: {line}\n"
    assert sorted(d.name for d in (tmp_path / "out").iterdir()) == [
        "s1-clusterip", "s2-noendpoints", "s3-hairpin", "s3b-hairpin-off"]
    timeline = (tmp_path / "out" / "s3-hairpin" / "timeline.txt").read_text()
    assert timeline == ("0.000000 client app {start: {kind: http-server, port: 8080}} [FAILED]: "
                        "client: tcp listen on 0.0.0.0:8080: EADDRINUSE (Address already in use)\n")
    served = _json(tmp_path / "out" / "s3-hairpin" / "server-result.json")["client"]
    assert [a["app"] for a in served] == ["http-server"] and served[0]["result"]["served"]


ONLINK = """
name: onlink
nodes:
  a:
    interfaces: {eth0: {addresses: [10.1.0.1/24]}}
  b:
    interfaces: {eth0: {addresses: [10.2.0.1/24]}}
    routes: [{to: 10.1.0.0/24, via: 10.1.0.1, dev: eth0, onlink: true}]
    apps: [{kind: udp-echo, port: 7}]
veths: [[a/eth0, b/eth0]]
scenarios:
  x:
    traffic:
      - {at: 0s, node: a, app: {kind: echo-client, proto: udp, target: 10.2.0.1, port: 7, count: 2,
                                interval: 1s}}
    timeline:
"""


def test_ip_route_add_onlink_reaches_a_gateway_on_no_connected_network(tmp_path: Path) -> None:
    """As `ip route add ... dev eth0 onlink` does in the kernel (flannel's and Calico's routes)."""
    topo = _write(tmp_path, ONLINK + '      - {at: 500ms, node: a, ip: "route add 10.2.0.0/24 via 10.2.0.1 '
                                     'dev eth0 onlink"}\n')
    pktemu("run", str(topo), "--out", str(tmp_path / "out"), "-q")
    out = tmp_path / "out" / "x"
    assert [a["outcome"] for a in _json(out / "client-result.json")["attempts"]] == ["ENETUNREACH", "answer"]
    assert any("route 10.2.0.0/24 via 10.2.0.1 dev eth0 onlink (added at 0.500 s by ip route add)" in c
               for c in _comments(out / "all.pcapng"))


def test_ip_route_add_onlink_fails_as_the_kernel_fails(tmp_path: Path) -> None:
    topo = _write(tmp_path, ONLINK + '      - {at: 500ms, node: a, ip: "route add 10.2.0.0/24 via 10.2.0.1 '
                                     'onlink"}\n')
    p = pktemu("validate", str(topo), check=False)
    assert p.returncode == 2 and "Nexthop device required for onlink" in p.stderr, p.stderr
    topo = _write(tmp_path, ONLINK + '      - {at: 100ms, node: a, ip: "link set eth0 down"}\n'
                                     '      - {at: 500ms, node: a, ip: "route add 10.2.0.0/24 via 10.2.0.1 '
                                     'dev eth0 onlink"}\n')
    p = pktemu("run", str(topo), "--out", str(tmp_path / "out"), "-q")
    assert "0.500000 a ip route add 10.2.0.0/24 via 10.2.0.1 dev eth0 onlink [FAILED]: Error: Nexthop " \
           "device is not up." in (tmp_path / "out" / "x" / "timeline.txt").read_text()
