"""Conntrack zones (`-j CT --zone N`, `--zone-orig`, `--zone-reply`, `mark`): equal tuples in two
zones are two connections, NAT's uniqueness check is per zone, `conntrack -L` and its filters
print and pick them as conntrack-tools does; and the nft backend's built-in chain policy counters.

Every expected line here was seen on a real kernel (6.18, iptables 1.8.9 nft, conntrack 1.4.7);
tests/test_kernel_conntrack_zones.py compares against the kernel live when run as root.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import pktemu
from datapaths import ROOT
from scapy.layers.inet import ICMP, IP, UDP

import pktemu as lib
from pktemu.errors import PktemuError
from pktemu.netfilter.xtables import Ruleset, load_rules, save_rules

CLIENT, SERVER = "10.0.1.2", "10.0.2.2"
BY_LENGTH = """*raw
-A PREROUTING -p udp -m length --length 0:40 -j CT --zone 1
-A PREROUTING -p udp -m length --length 41:100 -j CT --zone 2
COMMIT
"""


def server_conntrack(rules: str, ask: list[IP], ans: tuple[IP, ...] = ()) -> list[str]:
    """conntrack -L of the server pod of the founding topology after the datagrams, timeouts cut."""
    net = lib.Network.load(str(ROOT / "topologies" / "service-test.yaml"))
    net.cmd("server", "iptables-restore", stdin=rules)
    net.send("client", ask)
    net.run(duration=0.2)
    if ans:
        net.send("server", list(ans))
        net.run(duration=0.2)
    return [re.sub(r"^(\w+ +\d+) \d+ ", r"\1 T ", ln) for ln in net.conntrack("server").text.splitlines()]


def udp(sport: int, dport: int, size: int) -> IP:
    return IP(src=CLIENT, dst=SERVER) / UDP(sport=sport, dport=dport) / (b"x" * size)


def test_equal_tuples_in_two_zones_are_two_entries() -> None:
    lines = server_conntrack(BY_LENGTH, [udp(6000, 9, 1), udp(6000, 9, 30), udp(6000, 9, 2)])
    tup = ("src=10.0.1.2 dst=10.0.2.2 sport=6000 dport=9 [UNREPLIED] "
           "src=10.0.2.2 dst=10.0.1.2 sport=9 dport=6000 ")
    assert lines == [f"udp      17 T {tup}mark=0 zone=1 use=1", f"udp      17 T {tup}mark=0 zone=2 use=1"]


def test_without_zones_the_same_datagrams_are_one_entry() -> None:
    lines = server_conntrack("*raw\n-A PREROUTING -p udp -j CT\nCOMMIT\n",
                             [udp(6000, 9, 1), udp(6000, 9, 30)])
    assert len(lines) == 1 and "zone" not in lines[0]


def test_nat_tuple_uniqueness_is_per_zone() -> None:
    """A DNAT to :9 in zone 1 takes the reply 10.0.2.2:9 -> 10.0.1.2:5000 there: the direct flow to
    :9 of zone 1 gets a new source port, the same flow in zone 2 keeps 5000."""
    rules = BY_LENGTH + "*nat\n-A PREROUTING -p udp --dport 7 -j DNAT --to-destination 10.0.2.2:9\nCOMMIT\n"
    lines = server_conntrack(rules, [udp(5000, 7, 1), udp(5000, 9, 1), udp(5000, 9, 30)])
    z1 = [ln for ln in lines if "sport=5000 dport=9 " in ln and "zone=1" in ln]
    z2 = [ln for ln in lines if "sport=5000 dport=9 " in ln and "zone=2" in ln]
    assert len(lines) == 3 and len(z1) == len(z2) == 1
    assert "sport=9 dport=5000 " not in z1[0] and re.search(r"sport=9 dport=\d+ mark=0 zone=1", z1[0])
    assert "sport=9 dport=5000 mark=0 zone=2 " in z2[0]


def test_one_direction_zones_and_the_default_zone_reply() -> None:
    """--zone-orig: the reply direction is in the default zone, so an un-zoned answer finds the
    entry; --zone-reply: the answer's tuple is keyed in zone 4, so it makes no match, and its new
    entry clashes with the original tuple (default zone) and is dropped, as in the kernel."""
    rules = ("*raw\n-A PREROUTING -p udp -m length --length 101:200 -j CT --zone-orig 3\n"
             "-A PREROUTING -p udp -m length --length 201:300 -j CT --zone-reply 4\nCOMMIT\n")
    ans = [IP(src=SERVER, dst=CLIENT) / UDP(sport=9, dport=d) / b"r" for d in (7000, 7001)]
    lines = server_conntrack(rules, [udp(7000, 9, 100), udp(7001, 9, 200)], tuple(ans))
    assert lines == [
        "udp      17 T src=10.0.1.2 dst=10.0.2.2 sport=7000 dport=9 zone-orig=3 src=10.0.2.2 dst=10.0.1.2 "
        "sport=9 dport=7000 mark=0 use=1",
        "udp      17 T src=10.0.1.2 dst=10.0.2.2 sport=7001 dport=9 [UNREPLIED] src=10.0.2.2 dst=10.0.1.2 "
        "sport=9 dport=7001 zone-reply=4 mark=0 use=1"]


def test_zone_from_the_mark_and_first_ct_wins() -> None:
    rules = ("*raw\n-A PREROUTING -p udp -j MARK --set-mark 0x10007\n"
             "-A PREROUTING -p udp -j CT --zone mark\n-A PREROUTING -p udp -j CT --zone 9\n"
             "-A PREROUTING -p udp -j CT --notrack\nCOMMIT\n")
    lines = server_conntrack(rules, [udp(6000, 9, 1)])
    assert len(lines) == 1 and lines[0].endswith(" mark=0 zone=7 use=1")      # mark & 0xffff


def test_icmp_echo_reply_needs_the_zone_on_output_too() -> None:
    ping = [IP(src=CLIENT, dst=SERVER) / ICMP(id=7, seq=i) for i in range(2)]
    pre = "*raw\n-A PREROUTING -p icmp -j CT --zone 3\n"
    half = server_conntrack(pre + "COMMIT\n", ping)
    both = server_conntrack(pre + "-A OUTPUT -p icmp -j CT --zone 3\nCOMMIT\n", ping)
    tail = "src=10.0.2.2 dst=10.0.1.2 type=0 code=0 id=7 mark=0 zone=3 use=1"
    assert [ln for ln in half if "type=8" in ln] == [
        f"icmp     1 T src=10.0.1.2 dst=10.0.2.2 type=8 code=0 id=7 [UNREPLIED] {tail}"]
    assert [ln for ln in both if "type=8" in ln] == [
        f"icmp     1 T src=10.0.1.2 dst=10.0.2.2 type=8 code=0 id=7 {tail}"]


def test_zone_options_save_as_iptables_save() -> None:
    rs = load_rules("*raw\n-A PREROUTING -j CT --zone 5\n-A PREROUTING -j CT --zone 0\n"
                    "-A PREROUTING -j CT --zone 5 --zone-orig 6\n-A PREROUTING -j CT --zone-reply mark\n"
                    "-A OUTPUT -j CT --zone 7 --notrack\nCOMMIT\n", "r.txt", Ruleset("n"))
    assert [ln for ln in save_rules(rs, counters=False).splitlines() if ln.startswith("-A")] == [
        "-A PREROUTING -j CT --zone 5", "-A PREROUTING -j CT", "-A PREROUTING -j CT --zone-orig 6",
        "-A PREROUTING -j CT --zone-reply mark", "-A OUTPUT -j CT --notrack --zone 7"]


@pytest.mark.parametrize("bad", ["65536", "x", "-1"])
def test_bad_zone_is_one_error(bad: str) -> None:
    with pytest.raises(PktemuError, match=f"r.txt:2: CT: cannot parse {bad} as a zone ID"):
        load_rules(f"*raw\n-A PREROUTING -j CT --zone {bad}\nCOMMIT\n", "r.txt", Ruleset("n"))


# ---------------------------------------------------------------------- a run, the CLI
TOPO = """\
name: zones
nodes:
  a:
    interfaces: {eth0: {addresses: [10.5.0.1/24]}}
  b:
    interfaces: {eth0: {addresses: [10.5.0.2/24]}}
    iptables: rules.txt
veths:
  - [a/eth0, b/eth0]
scenarios:
  ping:
    traffic: [{node: a, app: {kind: ping, target: 10.5.0.2, count: 2}}]
    timeline:
      - {at: 1.5s, node: b, conntrack: "-L -w 3"}
      - {at: 1.6s, node: b, conntrack: "-L --orig-zone 3"}
"""
RULES = """\
*raw
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A PREROUTING -p icmp -j CT --zone 3
-A OUTPUT -p icmp -j CT --zone 3
COMMIT
*mangle
-A INPUT -p udp -j ACCEPT
COMMIT
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("zones")
    (d / "rules.txt").write_text(RULES)
    (d / "t.yaml").write_text(TOPO)
    pktemu("run", str(d / "t.yaml"), "--out", str(d / "out"), "-q", timeout=120)
    return d


def test_run_writes_zoned_entries_and_the_timeline_filters_them(run: Path) -> None:
    out = run / "out" / "ping"
    assert json.loads((out / "client-result.json").read_text())["received"] == 2
    ct = (out / "conntrack-b.txt").read_text().splitlines()
    assert len(ct) == 1 and re.fullmatch(
        r"icmp     1 \d+ src=10.5.0.1 dst=10.5.0.2 type=8 code=0 id=(\d+) src=10.5.0.2 dst=10.5.0.1 type=0 "
        r"code=0 id=\1 mark=0 zone=3 use=1", ct[0])
    timeline = (out / "timeline.txt").read_text()
    assert "conntrack v1.4.8 (conntrack-tools): 1 flow entries have been shown." in timeline
    assert "conntrack v1.4.8 (conntrack-tools): 0 flow entries have been shown." in timeline


def test_nft_policy_counters_count_declared_chains_only(run: Path) -> None:
    """iptables-nft gives counters to a base chain whose policy was set (`:PREROUTING ACCEPT [0:0]`);
    mangle INPUT, made by its `-A` alone, shows [0:0] though the pings fell through it."""
    saved = (run / "out" / "ping" / "iptables-save-b.txt").read_text()
    assert ":PREROUTING ACCEPT [2:168]\n:OUTPUT ACCEPT [2:168]\n" in saved
    assert ":INPUT ACCEPT [0:0]\n" in saved.split("*mangle")[1]
    p = pktemu("rules", str(run / "t.yaml"), "--node", "b", "--scenario", "ping", "--at", "3s", "-c",
               "-t", "raw")
    assert ":PREROUTING ACCEPT [2:168]\n" in p.stdout


def test_legacy_backend_counts_every_policy() -> None:
    rs = load_rules("*mangle\n-A INPUT -p udp -j ACCEPT\nCOMMIT\n", "r.txt", Ruleset("n"))
    chain = rs.chain("mangle", "INPUT")
    chain.pkts, chain.bytes = 2, 168
    assert ":INPUT ACCEPT [2:168]" in save_rules(rs, backend="legacy")
    assert ":INPUT ACCEPT [0:0]" in save_rules(rs)


def test_bad_zone_in_a_run_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "rules.txt").write_text("*raw\n-A PREROUTING -j CT --zone 70000\nCOMMIT\n")
    (tmp_path / "t.yaml").write_text(TOPO)
    p = pktemu("run", str(tmp_path / "t.yaml"), "--out", str(tmp_path / "out"), check=False)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.count("\n") == 1 and p.stderr.startswith("pktemu: error: ")
    assert "rules.txt:2" in p.stderr and "cannot parse 70000 as a zone ID" in p.stderr
    assert not (tmp_path / "out").exists()
