"""Traversal (ipt_do_table semantics), counters, notes, trace, and the daddr index."""
from __future__ import annotations

import random
from typing import Any

import pytest
from scapy.layers.l2 import ARP, Ether
from test_xtables_fakes import FakeNf, FakeNode, state, table, tcp, udp

from pktemu.errors import PktemuError
from pktemu.net.frame import Frame, ip2int
from pktemu.netfilter.conntrack import Conn, ConntrackTable
from pktemu.netfilter.conntrack_tuple import CtTuple
from pktemu.netfilter.core import (
    FORWARD, INPUT, IP_CT_ESTABLISHED, IP_CT_ESTABLISHED_REPLY, IP_CT_NEW, IPS_DST_NAT, MANIP_DST, MANIP_SRC,
    NF_ACCEPT, NF_DROP, NF_STOLEN, OUTPUT, POSTROUTING, PREROUTING, NatRange,
)
from pktemu.netfilter.xtables import Run, Ruleset, load_rules, save_rules

import datapaths

REF = datapaths.ORACLE_REF


def test_jump_return_goto_and_policy() -> None:
    rs = table("filter", "-A INPUT -p udp -j A", "-A INPUT -p tcp -g G", "-A INPUT -j MARK --set-mark 9",
               "-A A -p udp --dport 53 -j RETURN", "-A A -j MARK --set-mark 1",
               "-A G -p tcp --dport 22 -j RETURN", "-A G -j MARK --set-mark 2",
               "-A G -p tcp --dport 80 -j ACCEPT", ":INPUT DROP",
               chains=("A", "G"))
    f = udp(dport=53)
    assert rs.traverse("filter", f, state(INPUT)) == NF_DROP      # RETURN, then MARK 9, then policy
    assert f.mark == 9
    f = udp(dport=54)
    assert rs.traverse("filter", f, state(INPUT)) == NF_DROP
    assert f.mark == 9                                              # MARK 1 then 9: fell off A, came back
    f = tcp(dport=22)
    assert rs.traverse("filter", f, state(INPUT)) == NF_DROP      # goto + RETURN: back to INPUT's caller
    assert f.mark == 0                                              # ... which is the policy, not rule 3
    f = tcp(dport=443)
    assert rs.traverse("filter", f, state(INPUT)) == NF_DROP      # fell off a goto chain: policy
    assert f.mark == 2
    assert rs.traverse("filter", tcp(dport=80), state(INPUT)) == NF_ACCEPT
    pol = rs.chain("filter", INPUT)
    assert (pol.pkts, pol.bytes) == (4, 84 + 84 + 40 + 40)


def test_return_from_builtin_chain_applies_policy_and_rule_without_target_counts() -> None:
    rs = table("filter", ":OUTPUT DROP", "-A OUTPUT -p tcp", "-A OUTPUT -p tcp -j RETURN",
               "-A OUTPUT -j ACCEPT")
    f = tcp()
    assert rs.traverse("filter", f, state(OUTPUT, None, "eth0")) == NF_DROP
    r0, r1, r2 = rs.chain("filter", OUTPUT).rules
    assert (r0.pkts, r0.bytes, r1.pkts, r2.pkts) == (1, 40, 1, 0)
    assert f.notes == ["filter:OUTPUT policy DROP"]


def test_interfaces_and_wildcards() -> None:
    rs = table("filter", "-A FORWARD -i veth+ -o eth0 -j DROP", "-A FORWARD ! -i cbr0 -j ACCEPT")
    assert rs.traverse("filter", tcp(), state(FORWARD, "veth-client", "eth0")) == NF_DROP
    assert rs.traverse("filter", tcp(), state(FORWARD, "veth-client", "eth1")) == NF_ACCEPT
    assert rs.traverse("filter", tcp(), state(FORWARD, "cbr0", "eth1")) == NF_ACCEPT      # policy
    assert rs.chain("filter", FORWARD).pkts == 1


def test_notes_and_trace() -> None:
    rs = table("nat", "-A PREROUTING -j KUBE-SERVICES",
               "-A KUBE-SERVICES -d 10.3.241.152/32 -p tcp --dport 80 -j KUBE-SEP",
               "-A KUBE-SEP -s 10.0.2.2/32 -j MARK --set-xmark 0x4000/0x4000",
               "-A KUBE-SEP -p tcp -j DNAT --to-destination 10.0.2.2:8080",
               chains=("KUBE-SERVICES", "KUBE-SEP"))
    f = tcp()
    trace: list[Any] = []
    nf = FakeNf()
    assert rs.traverse("nat", f, state(PREROUTING, nf=nf, trace=trace)) == NF_ACCEPT
    assert f.notes == ["nat:PREROUTING KUBE-SEP#2 DNAT 10.0.2.2:8080"]
    assert trace == [
        {"table": "nat", "chain": "PREROUTING", "rulenum": 1, "rule": "-A PREROUTING -j KUBE-SERVICES",
         "verdict": "JUMP"},
        {"table": "nat", "chain": "KUBE-SERVICES", "rulenum": 1, "verdict": "JUMP",
         "rule": "-A KUBE-SERVICES -d 10.3.241.152/32 -p tcp -m tcp --dport 80 -j KUBE-SEP"},
        {"table": "nat", "chain": "KUBE-SEP", "rulenum": 2, "verdict": "ACCEPT",
         "rule": "-A KUBE-SEP -p tcp -j DNAT --to-destination 10.0.2.2:8080"}]
    ep = ip2int("10.0.2.2")
    assert nf.calls == [(f, MANIP_DST, NatRange(ep, ep, 8080, 8080), PREROUTING)]
    trace.clear()
    g = tcp(src="10.0.2.2")
    rs.traverse("nat", g, state(PREROUTING, trace=trace))
    assert g.notes[0] == "nat:PREROUTING KUBE-SEP#1 MARK --set-xmark 0x4000/0x4000 (0x0 -> 0x4000)"
    assert [t["verdict"] for t in trace] == ["JUMP", "JUMP", "CONTINUE", "ACCEPT"]
    trace.clear()
    rs.traverse("nat", tcp(dst="1.1.1.1"), state(PREROUTING, trace=trace))
    assert trace[-1] == {"table": "nat", "chain": "PREROUTING", "rulenum": None,
                         "rule": "-P PREROUTING ACCEPT", "verdict": "ACCEPT"}


def test_target_verdict_passes_through() -> None:
    rs = table("nat", "-A PREROUTING -j DNAT --to-destination 10.0.0.1")
    nf = FakeNf(verdict=NF_STOLEN)
    assert rs.traverse("nat", tcp(), state(PREROUTING, nf=nf)) == NF_STOLEN
    nf.verdict = NF_DROP
    assert rs.traverse("nat", tcp(), state(PREROUTING, nf=nf)) == NF_DROP


def test_unknown_table_or_hook() -> None:
    rs = table("filter")
    with pytest.raises(PktemuError, match="no table 'nat'"):
        rs.traverse("nat", tcp(), state(PREROUTING))
    with pytest.raises(PktemuError, match="table filter has no chain PREROUTING"):
        rs.traverse("filter", tcp(), state(PREROUTING))
    assert rs.has_table("filter") and not rs.has_table("raw")


# ---------------------------------------------------------------------- the reference run, replayed
def _conn(status: int, sport: int, dport: int) -> Conn:
    orig = CtTuple(6, ip2int("10.0.1.2"), sport, ip2int("10.3.241.152"), dport)
    c = Conn(1, orig, CtTuple(6, orig.dst, dport, orig.src, sport), ConntrackTable(FakeNode()))
    c.status = status
    return c


def _ct(frame: Frame, ct: Conn, info: int) -> Frame:
    frame.ct, frame.ctinfo = ct, info
    return frame


def test_s1_counters_equal_the_kernel_reference() -> None:
    """Replay node1's hooks for s1 (nat: first packets only; filter FORWARD: all 12) and compare
    the whole iptables-save -c output, counters included, with the real kernel's."""
    rs = load_rules((REF / "rules/kube-proxy-rules.iptables").read_text(), "kube-proxy-rules.iptables")
    node, nf = FakeNode(), FakeNf()
    dns_q = udp()
    syn = tcp(flags="S", options=[("MSS", 1460), ("SAckOK", b""), ("Timestamp", (1, 0)), ("NOP", None),
                                  ("WScale", 7)])
    assert syn.ip_len == 60 and dns_q.ip_len == 84
    for f in (dns_q, syn):
        rs.traverse("nat", f, state(PREROUTING, "cbr0", None, node, nf, physin="veth-client"))
    assert [(c[2].min_ip, c[2].min_port) for c in nf.calls] == [(ip2int("10.0.2.3"), 53),
                                                                (ip2int("10.0.2.2"), 8080)]
    dns_ct, tcp_ct = _conn(IPS_DST_NAT, 40053, 53), _conn(IPS_DST_NAT, 40000, 80)
    fwd = [_ct(udp(dst="10.0.2.3"), dns_ct, IP_CT_NEW),
           _ct(udp(src="10.0.2.3", dst="10.0.1.2", sport=53, dport=40053, payload=b"r" * 72), dns_ct,
               IP_CT_ESTABLISHED_REPLY),
           _ct(tcp(dst="10.0.2.2", dport=8080, options=syn.scapy()["TCP"].options), tcp_ct, IP_CT_NEW)]
    for size, reply in ((60, True), (52, False), (151, False), (52, True), (167, True), (52, False),
                        (52, True), (52, False), (52, True)):
        pad = b"x" * (size - 40)
        f = tcp(src="10.0.2.2", dst="10.0.1.2", sport=8080, dport=40000, flags="A", payload=pad) if reply \
            else tcp(dst="10.0.2.2", dport=8080, flags="A", payload=pad)
        fwd.append(_ct(f, tcp_ct, IP_CT_ESTABLISHED_REPLY if reply else IP_CT_ESTABLISHED))
    for f in fwd:
        assert rs.traverse("filter", f, state(FORWARD, "cbr0", "eth0", node, nf)) == NF_ACCEPT
    for f in (fwd[0], fwd[2]):
        assert rs.traverse("nat", f, state(POSTROUTING, None, "eth0", node, nf)) == NF_ACCEPT
    got = [x for x in save_rules(rs).splitlines() if not x.startswith("#")]
    want = [x for x in (REF / "s1-clusterip/iptables-save-node1.txt").read_text().splitlines()
            if not x.startswith("#")]
    assert got == want


def test_s3_hairpin_nat_marks_and_masquerades() -> None:
    rs = load_rules((REF / "rules/kube-proxy-rules.iptables").read_text(), "kube-proxy-rules.iptables")
    node, nf = FakeNode(), FakeNf()
    syn = tcp(dst="10.3.245.20", payload=b"\x00" * 20)
    rs.traverse("nat", syn, state(PREROUTING, "cbr0", None, node, nf, physin="veth-client"))
    assert syn.mark == 0x4000
    assert syn.notes == ["nat:PREROUTING KUBE-MARK-MASQ#1 MARK --set-xmark 0x4000/0x4000 (0x0 -> 0x4000)",
                         "nat:PREROUTING KUBE-SEP-4JSYWE3VGRPCBXOF#2 DNAT 10.0.1.2:8080"]
    rs.traverse("nat", syn, state(POSTROUTING, None, "cbr0", node, nf, physout="veth-client"))
    assert syn.mark == 0
    assert nf.calls[-1][1:] == (MANIP_SRC, NatRange(ip2int("10.0.1.1"), ip2int("10.0.1.1")), POSTROUTING)
    got = [x for x in save_rules(rs).splitlines() if x.startswith("[") and not x.startswith("[0:0]")]
    want = [x for x in (REF / "s3-hairpin/iptables-save-node1.txt").read_text().splitlines()
            if x.startswith("[") and not x.startswith("[0:0]") and "FORWARD" not in x]
    assert got == want


# ---------------------------------------------------------------------- the daddr index
def _kube_services(n: int, index: bool) -> Ruleset:
    rnd = random.Random(5)
    lines = ["*nat", ":KUBE-SERVICES - [0:0]", ":KUBE-NODEPORTS - [0:0]"]
    lines += [f":SVC{k} - [0:0]" for k in range(50)]
    lines += ["-A PREROUTING -j KUBE-SERVICES", "-A KUBE-NODEPORTS -p tcp --dport 30080 -j SVC49"]
    lines += [f"-A SVC{k} -j MARK --set-xmark 0x{k + 1:x}/0xffffffff" for k in range(50)]
    for i in range(n):
        d = f"10.3.{(i // 2) // 250}.{(i // 2) % 250 + 1}"           # two ports per address
        lines.append(f"-A KUBE-SERVICES -d {d}/32 -p tcp -m comment --comment \"s{i}\" -m tcp "
                     f"--dport {80 + i % 2} -j SVC{rnd.randrange(50)}")
        if i % 997 == 500:                                             # rules without the key, inside runs
            lines.append(f"-A KUBE-SERVICES ! -d 10.3.0.1/32 -p tcp --dport {7000 + i} -j SVC{i % 50}")
        if i % 1999 == 7:
            lines.append(f"-A KUBE-SERVICES -d 10.3.1.0/24 -p udp --dport 53 -j SVC{i % 50}")
    lines += ["-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS", "COMMIT", ""]
    return load_rules("\n".join(lines), "kube.rules", Ruleset("n", index=index))


def test_index_with_10000_services_equals_linear_walk() -> None:
    fast, slow = _kube_services(10_000, True), _kube_services(10_000, False)
    steps = fast.chain("nat", "KUBE-SERVICES").steps
    runs = [s for s in steps if isinstance(s, Run)]
    assert runs and sum(len(r.rules) for r in runs) >= 10_000 and len(steps) < 20
    assert len(runs[0].index) >= 4000 and len(runs[0].default) >= 1
    assert not any(isinstance(s, Run) for s in slow.chain("nat", "KUBE-SERVICES").steps)
    rnd = random.Random(9)
    frames: list[tuple[Frame, str]] = []
    for _ in range(800):
        i = rnd.randrange(5200)
        d = f"10.3.{i // 250}.{i % 250 + 1}"
        kind = rnd.randrange(6)
        if kind == 0:
            frames.append((udp(dst="10.3.1.17", dport=53), "cbr0"))
        elif kind == 1:
            frames.append((tcp(dst=d, dport=7000 + rnd.choice((500, 1497, 2494, 9000))), "cbr0"))
        elif kind == 2:
            frames.append((tcp(dst="10.100.0.11", dport=rnd.choice((30080, 30081))), "eth0"))
        else:
            frames.append((tcp(dst=d, dport=rnd.choice((80, 81, 82))), "cbr0"))
    node = FakeNode()
    for f, dev in frames:
        a, b = f.copy(), f.copy()
        ta: list[Any] = []
        tb: list[Any] = []
        va = fast.traverse("nat", a, state(PREROUTING, dev, node=node, trace=ta))
        vb = slow.traverse("nat", b, state(PREROUTING, dev, node=node, trace=tb))
        assert (va, a.mark, a.notes, ta) == (vb, b.mark, b.notes, tb)
    assert save_rules(fast) == save_rules(slow)
    hits = sum(r.pkts for r in fast.chain("nat", "KUBE-SERVICES").rules)
    assert hits > 400


def test_index_keeps_order_between_keyed_and_unkeyed_rules() -> None:
    rules = [f"-A FORWARD -d 10.0.0.{i}/32 -j MARK --set-xmark 0x{i:x}/0xffffffff" for i in range(1, 9)]
    rules.insert(3, "-A FORWARD -p tcp -j MARK --set-xmark 0x100/0x100")
    rules.append("-A FORWARD -d 10.0.0.2/32 -j DROP")
    for index in (True, False):
        rs = table("filter", *rules, index=index)
        f = tcp(dst="10.0.0.2")
        assert rs.traverse("filter", f, state(FORWARD, "a", "b")) == NF_DROP
        assert f.mark == 0x102 and f.notes[0].startswith("filter:FORWARD FORWARD#2 MARK")
        g = tcp(dst="10.0.0.7")
        assert rs.traverse("filter", g, state(FORWARD, "a", "b")) == NF_ACCEPT
        assert g.mark == 0x7          # the unkeyed rule (#4) ran before #8 cleared it


def test_non_ipv4_frames_pass_untouched() -> None:
    rs = table("filter", ":INPUT DROP", "-A INPUT -j DROP")
    arp = Frame(bytes(Ether() / ARP()))
    assert rs.traverse("filter", arp, state(INPUT)) == NF_ACCEPT
    assert rs.chain("filter", INPUT).rules[0].pkts == 0
