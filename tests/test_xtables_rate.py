"""limit, hashlimit, connlimit, string, TRACE, LOG's options and CT --zone: how they print and what
they do on the virtual clock.

The printed forms are what iptables-save (v1.8.9, nf_tables) printed for the given input in a
fresh network namespace; test_kernel_prints_the_same repeats that when run as root. iptables-nft
loads `-m limit` as nft's own `limit` (checked with `nft --debug=netlink list ruleset`), the
others as xt matches; tests/test_kernel_xt_constructs.py holds their verdicts to the kernel's.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml
from conftest import pktemu
from datapaths import ROOT
from scapy.layers.inet import ICMP, IP, UDP
from test_xtables_fakes import FakeNode, state, table, tcp, udp

import pktemu as pk
from pktemu.netfilter.core import INPUT, NF_ACCEPT, NF_DROP, OUTPUT
from pktemu.netfilter.xtables import load_rules, save_rules

TOPOLOGY = ROOT / "topologies" / "service-test.yaml"
SEC = 1_000_000_000

ROUND_TRIPS = [
    ("-m limit --limit 10/sec --limit-burst 3", "-m limit --limit 10/sec --limit-burst 3"),
    ("-m limit", "-m limit --limit 3/hour"),
    ("-m limit --limit 2/m", "-m limit --limit 2/min"),
    ("-m limit --limit 3/day", "-m limit --limit 3/day"),
    ("-m limit --limit 1/sec --limit-burst 0", "-m limit --limit 1/sec"),
    ("-m limit --limit 7/s", "-m limit --limit 7/sec"),
    ("-m limit --limit 700/hour", "-m limit --limit 700/hour"),
    ("-m limit --limit 10000/s --limit-burst 10000",
     "-m limit --limit 10000/sec --limit-burst 10000"),
    ("-m hashlimit --hashlimit-upto 5/sec --hashlimit-burst 4 --hashlimit-mode srcip,dstport "
     "--hashlimit-name foo",
     "-m hashlimit --hashlimit-upto 5/sec --hashlimit-burst 4 --hashlimit-mode srcip,dstport "
     "--hashlimit-name foo"),
    ("-m hashlimit --hashlimit-above 5/min --hashlimit-mode dstport,srcip,srcport,dstip "
     "--hashlimit-srcmask 24 --hashlimit-dstmask 16 --hashlimit-name bar --hashlimit-htable-expire 5000 "
     "--hashlimit-htable-size 64 --hashlimit-htable-max 100 --hashlimit-htable-gcinterval 500",
     "-m hashlimit --hashlimit-above 5/min --hashlimit-burst 5 --hashlimit-mode srcip,srcport,dstip,dstport "
     "--hashlimit-name bar --hashlimit-htable-size 64 --hashlimit-htable-max 100 "
     "--hashlimit-htable-gcinterval 500 --hashlimit-htable-expire 5000 --hashlimit-srcmask 24 "
     "--hashlimit-dstmask 16"),
    ("-m hashlimit --hashlimit-upto 1/sec --hashlimit-name baz",
     "-m hashlimit --hashlimit-upto 1/sec --hashlimit-burst 5 --hashlimit-name baz"),
    ("-m hashlimit --hashlimit-upto 7/h --hashlimit-name baz2 --hashlimit-htable-expire 3600000",
     "-m hashlimit --hashlimit-upto 7/hour --hashlimit-burst 5 --hashlimit-name baz2"),
    ("-m hashlimit --hashlimit-upto 3000/s --hashlimit-name baz3",
     "-m hashlimit --hashlimit-upto 3003/sec --hashlimit-burst 5 --hashlimit-name baz3"),
    ("-p tcp -m connlimit --connlimit-above 2 --connlimit-mask 24",
     "-p tcp -m connlimit --connlimit-above 2 --connlimit-mask 24 --connlimit-saddr"),
    ("-p tcp -m connlimit --connlimit-upto 2 --connlimit-daddr",
     "-p tcp -m connlimit --connlimit-upto 2 --connlimit-mask 32 --connlimit-daddr"),
    ('-m string --string "hello" --algo bm', '-m string --string "hello" --algo bm'),
    ('-m string --string "he llo" --algo kmp --from 20 --to 100 --icase',
     '-m string --string "he llo" --algo kmp --from 20 --to 100 --icase'),
    ('-m string --hex-string "|41 42|C" --algo bm', '-m string --string "ABC" --algo bm'),
    ('-m string --hex-string "|00 41|a\\\\|b|0d0a|" --algo bm --to 65535',
     '-m string --hex-string "|0041617c620d0a|" --algo bm'),
    ('-m string --string "q\\"uo\\\\te" --algo bm', '-m string --string "q\\"uo\\\\te" --algo bm'),
    ('-m string ! --string "x" --algo bm', '-m string ! --string "x" --algo bm'),
]


def _rule(middle: str) -> str:
    return f"-A INPUT {middle} -j ACCEPT"


@pytest.mark.parametrize("given, printed", ROUND_TRIPS)
def test_prints_as_iptables_save(given: str, printed: str) -> None:
    rs = load_rules(f"*filter\n{_rule(given)}\nCOMMIT\n", "t.rules")
    out = save_rules(rs, counters=False)
    assert [ln for ln in out.splitlines() if ln.startswith("-A")] == [_rule(printed)]
    assert save_rules(load_rules(out, "again"), counters=False) == out


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("iptables-restore") is None,
                    reason="needs root and iptables in a scratch namespace")
def test_kernel_prints_the_same() -> None:
    ns = f"pkxt-{uuid.uuid4().hex[:6]}-rt"
    text = "*filter\n" + "".join(_rule(g) + "\n" for g, _ in ROUND_TRIPS) + "COMMIT\n"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", ns, "iptables-restore"], input=text, text=True, check=True)
        out = subprocess.run(["ip", "netns", "exec", ns, "iptables-save"], capture_output=True, text=True,
                             check=True).stdout
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    assert [ln for ln in out.splitlines() if ln.startswith("-A")] == [_rule(p) for _, p in ROUND_TRIPS]


# ---------------------------------------------------------------------- behaviour on the virtual clock
def _count(rs: object, chain: str = "INPUT") -> list[int]:
    return [r.pkts for r in rs.chain("filter", chain).rules]           # type: ignore[attr-defined]


def test_limit_refills_with_virtual_time() -> None:
    rs = table("filter", "-A INPUT -m limit --limit 2/sec --limit-burst 3 -j ACCEPT", "-A INPUT -j DROP")
    node = FakeNode()
    verdicts = [rs.traverse("filter", tcp(), state(INPUT, "eth0", node=node)) for _ in range(5)]
    assert verdicts == [NF_ACCEPT] * 3 + [NF_DROP] * 2
    node.clock = SEC // 2 - 1                   # a token costs 0.5 s: not yet
    assert rs.traverse("filter", tcp(), state(INPUT, "eth0", node=node)) == NF_DROP
    node.clock = SEC // 2
    assert rs.traverse("filter", tcp(), state(INPUT, "eth0", node=node)) == NF_ACCEPT
    node.clock = 100 * SEC                      # the bucket holds at most the burst
    verdicts = [rs.traverse("filter", tcp(), state(INPUT, "eth0", node=node)) for _ in range(5)]
    assert verdicts == [NF_ACCEPT] * 3 + [NF_DROP] * 2
    assert _count(rs) == [7, 5]


def test_a_copy_for_another_namespace_has_its_own_state() -> None:
    rs = table("filter", "-A INPUT -p tcp -m limit --limit 1/hour --limit-burst 1 -j ACCEPT",
               "-A INPUT -j DROP")
    node = FakeNode()
    got = [rs.traverse("filter", tcp(), state(INPUT, "eth0", node=node)) for _ in range(2)]
    assert got == [NF_ACCEPT, NF_DROP]
    other = rs.copy("other")
    assert other.traverse("filter", tcp(), state(INPUT, "eth0", node=node)) == NF_ACCEPT
    assert rs.traverse("filter", tcp(), state(INPUT, "eth0", node=node)) == NF_DROP


def test_hashlimit_keeps_one_bucket_per_key_and_forgets_idle_ones() -> None:
    rs = table("filter", "-A INPUT -p udp -m hashlimit --hashlimit-upto 1/min --hashlimit-burst 2 "
               "--hashlimit-mode srcip,srcport --hashlimit-srcmask 24 --hashlimit-name h "
               "--hashlimit-htable-expire 2000 -j ACCEPT", "-A INPUT -j DROP")
    node = FakeNode()

    def send(src: str, sport: int) -> int:
        return rs.traverse("filter", udp(src=src, sport=sport), state(INPUT, "eth0", node=node))

    assert [send("10.0.1.2", 1) for _ in range(3)] == [NF_ACCEPT, NF_ACCEPT, NF_DROP]
    assert send("10.0.1.99", 1) == NF_DROP           # the same /24 and port: the same bucket
    assert [send("10.0.1.2", 2) for _ in range(3)] == [NF_ACCEPT, NF_ACCEPT, NF_DROP]
    assert send("10.0.9.2", 1) == NF_ACCEPT
    node.clock = 3 * SEC                              # idle past the expiry and a gc pass: a new full bucket
    assert [send("10.0.1.2", 1) for _ in range(3)] == [NF_ACCEPT, NF_ACCEPT, NF_DROP]


def test_hashlimit_above_matches_over_the_rate_and_tables_are_shared_by_name() -> None:
    rs = table("filter", "-A INPUT -p udp -m hashlimit --hashlimit-above 1/hour --hashlimit-burst 2 "
               "--hashlimit-name shared -j DROP",
               "-A INPUT -p tcp -m hashlimit --hashlimit-above 1/hour --hashlimit-burst 2 "
               "--hashlimit-name shared -j DROP")
    node = FakeNode()
    got = [rs.traverse("filter", f, state(INPUT, "eth0", node=node)) for f in (udp(), tcp(), tcp(), udp())]
    assert got == [NF_ACCEPT, NF_ACCEPT, NF_DROP, NF_DROP]     # one table, one bucket (no mode)


def test_string_searches_from_the_ip_header_within_from_to() -> None:
    rs = table("filter", '-A INPUT -m string --string "abc" --algo bm --from 28 --to 31 -j DROP',
               '-A INPUT -m string --string "XYZ" --algo kmp --icase -j DROP')
    node = FakeNode()
    assert rs.traverse("filter", udp(payload=b"abcd"), state(INPUT, "eth0", node=node)) == NF_DROP
    assert rs.traverse("filter", udp(payload=b"zabc"), state(INPUT, "eth0", node=node)) == NF_ACCEPT
    assert rs.traverse("filter", udp(payload=b"..xyz"), state(INPUT, "eth0", node=node)) == NF_DROP


@pytest.mark.parametrize("rule, msg", [
    ("-A INPUT -m hashlimit --hashlimit-upto 1/sec", "you have to specify --hashlimit-name"),
    ("-A INPUT -m hashlimit --hashlimit-upto 1kb/s --hashlimit-name x", "byte rates"),
    ("-A INPUT -m limit --limit 0/sec", "limit: bad rate"),
    ("-A INPUT -m limit --limit 5/fortnight", "limit: bad rate"),
    ("-A INPUT -m string --string x", "you must specify --algo"),
    ("-A INPUT -m string --algo rabin --string x", "only bm and kmp exist"),
    ("-A INPUT -m string --algo bm --hex-string \"|4|\"", "invalid hex block"),
    ("-A INPUT -m string --algo bm --string x --from 10 --to 5", "--from is after --to"),
    ("-A INPUT -p tcp -m connlimit --connlimit-mask 24", "you must specify --connlimit-upto"),
    ("-A INPUT -j TRACE", "TRACE is only valid in the raw table"),
])
def test_refused_with_one_line(tmp_path: Path, rule: str, msg: str) -> None:
    doc = yaml.safe_load(TOPOLOGY.read_text())
    (tmp_path / "node1.rules").write_text(f"*filter\n{rule}\nCOMMIT\n")
    doc["nodes"]["node1"]["iptables"] = "node1.rules"
    for k in ("node2",):
        doc["nodes"][k]["iptables"] = str(ROOT / "topologies" / "kube-proxy-rules.iptables")
    (tmp_path / "topo.yaml").write_text(yaml.safe_dump(doc))
    p = pktemu("validate", str(tmp_path / "topo.yaml"), check=False, timeout=60)
    assert p.returncode == 2
    assert len(p.stderr.splitlines()) == 1 and msg in p.stderr, p.stderr


def test_bad_ct_zone_is_refused_with_one_line(tmp_path: Path) -> None:
    doc = yaml.safe_load(TOPOLOGY.read_text())
    (tmp_path / "node1.rules").write_text("*raw\n-A PREROUTING -p udp -j CT --zone 65536\nCOMMIT\n")
    doc["nodes"]["node1"]["iptables"] = "node1.rules"
    doc["nodes"]["node2"]["iptables"] = str(ROOT / "topologies" / "kube-proxy-rules.iptables")
    (tmp_path / "topo.yaml").write_text(yaml.safe_dump(doc))
    out = tmp_path / "out"
    p = pktemu("run", str(tmp_path / "topo.yaml"), "--out", str(out), check=False, timeout=60)
    assert p.returncode == 2 and not out.exists()
    assert p.stderr.count("\n") == 1 and "node1.rules:2: CT: cannot parse 65536 as a zone ID" in p.stderr


# ---------------------------------------------------------------------- through a network, real Scapy packets
def _net(where: str, rules: str) -> pk.Network:
    net = pk.Network.load(str(TOPOLOGY), capture=True)
    net.cmd(where, "iptables-restore", stdin=rules)
    return net


def _save_counts(net: pk.Network, where: str) -> dict[str, int]:
    out = {}
    for ln in net.iptables_save(where).splitlines():
        if ln.startswith("["):
            c, text = ln.split(" ", 1)
            out[text] = int(c[1:].split(":")[0])
    return out


def test_connlimit_counts_live_flows_and_forgets_expired_ones() -> None:
    rule = "-A INPUT -p udp -m connlimit --connlimit-above 2 --connlimit-mask 32 --connlimit-saddr -j DROP"
    net = _net("server", f"*filter\n{rule}\nCOMMIT\n")
    flows = [IP(src="10.0.1.2", dst="10.0.2.2") / UDP(sport=7000 + i // 2, dport=9) / b"x" for i in range(8)]
    net.send("client", flows)                 # 4 flows, 2 packets each: the 3rd and 4th flows are over
    net.run(duration=0.1)
    assert _save_counts(net, "server")[rule] == 4
    net.run(duration=31)                      # unreplied UDP entries time out after 30 s
    net.send("client", flows[:2])
    net.run(duration=0.1)
    assert _save_counts(net, "server")[rule] == 4


def test_trace_lines_are_xtables_monitors() -> None:
    net = _net("server", "*raw\n-A PREROUTING -p icmp -j TRACE\nCOMMIT\n"
                         "*filter\n-A INPUT -p icmp -j ACCEPT\nCOMMIT\n")
    net.send("client", IP(src="10.0.1.2", dst="10.0.2.2", id=9) / ICMP(id=1, seq=1))
    net.run(duration=0.1)
    lines = [ln for _t, ln in net.engine.nodes["server"].nf.ruleset.ext["trace"]]
    tid = lines[0].split()[2]
    packet = (f"PACKET: 2 {tid} IN=eth0 MACSRC=a:58:a:0:2:1 MACDST=a:58:a:0:2:2 MACPROTO=0800 SRC=10.0.1.2 "
              "DST=10.0.2.2 LEN=28 TOS=0x0 TTL=61 ID=9 ")
    assert lines == [
        packet,
        f" TRACE: 2 {tid} raw:PREROUTING:rule:0x2:CONTINUE  -4 -t raw -A PREROUTING -p icmp -j TRACE",
        f" TRACE: 2 {tid} raw:PREROUTING:policy:ACCEPT ",
        packet,
        f" TRACE: 2 {tid} filter:INPUT:rule:0x2:ACCEPT  -4 -t filter -A INPUT -p icmp -j ACCEPT"]


def test_trace_lines_reach_the_frame_explanation(tmp_path: Path) -> None:
    net = _net("node1", "*raw\n-A PREROUTING -p icmp -j TRACE\nCOMMIT\n")
    net.send("client", IP(src="10.0.1.2", dst="10.0.2.2", id=9) / ICMP(id=1, seq=1))
    net.run(duration=0.1)
    net.write(str(tmp_path / "out"))
    pcapng = next((tmp_path / "out").rglob("all.pcapng"))
    rows = subprocess.run(["tshark", "-r", str(pcapng), "-T", "fields", "-e", "frame.interface_name",
                           "-e", "frame.comment"], capture_output=True, text=True, timeout=60).stdout
    comments = [r.split("\t", 1)[1].replace("\\n", "\n").split("\n") for r in rows.splitlines()
                if r.startswith("node1/") and "\t" in r]
    traced = [c for c in comments if "trace " in c[0]]
    assert any("trace raw:PREROUTING" in c[0] for c in traced)
    assert any("trace filter:FORWARD" in c[0] for c in traced)
    lines = [ln for c in traced for ln in c[1:]]
    assert any(ln.endswith(" raw:PREROUTING:rule:0x2:CONTINUE  -4 -t raw -A PREROUTING -p icmp -j TRACE")
               for ln in lines)
    assert any(ln.startswith("PACKET: 2 ") and "IN=cbr0 " in ln for ln in lines)
    assert any(" filter:FORWARD:" in ln for ln in lines)


def test_trace_is_per_namespace() -> None:
    """The mark does not cross into the next namespace (the kernel's skb_scrub_packet clears it)."""
    net = _net("client", "*raw\n-A OUTPUT -p icmp -j TRACE\nCOMMIT\n")
    net.cmd("server", "iptables-restore", stdin="*filter\n-A INPUT -p icmp -j ACCEPT\nCOMMIT\n")
    net.send("client", IP(src="10.0.1.2", dst="10.0.2.2") / ICMP())
    net.run(duration=0.1)
    assert net.engine.nodes["client"].nf.ruleset.ext["trace"]
    assert "trace" not in net.engine.nodes["server"].nf.ruleset.ext


def test_log_options_change_the_line_as_the_kernel_prints_it() -> None:
    rs = table("filter", '-A OUTPUT -j LOG --log-prefix "o: " --log-uid --log-tcp-sequence --log-tcp-options',
               '-A INPUT -j LOG --log-macdecode')
    node = FakeNode()
    f = tcp(seq=5, options=[("MSS", 1460)])
    f.mark = 0x10
    rs.traverse("filter", f, state(OUTPUT, None, "eth0", node=node))
    g = udp()
    g.set_macs(bytes.fromhex("02fc00000001"), bytes.fromhex("02fc00000005"))
    rs.traverse("filter", g, state(INPUT, "eth0", node=node))
    assert [line for _t, line in rs.log] == [
        "o: IN= OUT=eth0 SRC=10.0.1.2 DST=10.3.241.152 LEN=44 TOS=0x00 PREC=0x00 TTL=64 ID=1 PROTO=TCP "
        "SPT=40000 DPT=80 SEQ=5 ACK=0 WINDOW=8192 RES=0x00 SYN URGP=0 OPT (020405B4) UID=0 GID=0 MARK=0x10 ",
        "IN=eth0 OUT= MACSRC=02:fc:00:00:00:01 MACDST=02:fc:00:00:00:05 MACPROTO=0800 SRC=10.0.1.2 "
        "DST=10.3.240.10 LEN=84 TOS=0x00 PREC=0x00 TTL=64 ID=1 PROTO=UDP SPT=40053 DPT=53 LEN=64 "]


def test_run_writes_the_log_and_trace_lines(tmp_path: Path) -> None:
    rules = (ROOT / "topologies" / "kube-proxy-rules.iptables").read_text()
    rules += ("*raw\n-A PREROUTING -p tcp --dport 80 --tcp-flags SYN,ACK SYN -j TRACE\nCOMMIT\n"
              "*mangle\n-A PREROUTING -p tcp --dport 80 --tcp-flags SYN,ACK SYN "
              "-j LOG --log-prefix \"web: \"\nCOMMIT\n")
    doc = yaml.safe_load(TOPOLOGY.read_text())
    (tmp_path / "node1.rules").write_text(rules)
    doc["nodes"]["node1"]["iptables"] = "node1.rules"
    doc["nodes"]["node2"]["iptables"] = str(ROOT / "topologies" / "kube-proxy-rules.iptables")
    (tmp_path / "topo.yaml").write_text(yaml.safe_dump(doc))
    p = pktemu("run", str(tmp_path / "topo.yaml"), "--scenario", "s1-clusterip", "--out", str(tmp_path / "o"),
               timeout=120)
    assert p.returncode == 0, p.stderr
    out = tmp_path / "o" / "s1-clusterip"
    [log] = (out / "log-node1.txt").read_text().splitlines()
    assert log.startswith("[    0.") and "] web: IN=cbr0 OUT= PHYSIN=veth-client MAC=" in log
    assert "SRC=10.0.1.2 DST=10.3.241.152 LEN=60 " in log and " PROTO=TCP SPT=40000 DPT=80 " in log
    trace = (out / "trace-node1.txt").read_text().splitlines()
    assert trace[0].startswith("PACKET: 2 ") and " TRACE: 2 " in trace[1]
    assert any(":DNAT  -4 -t nat -A KUBE-SEP-" in ln or "nat:KUBE-SEP-" in ln for ln in trace), trace
    assert not (out / "log-node2.txt").exists() and not (out / "trace-node2.txt").exists()
