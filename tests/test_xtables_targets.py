"""Every target: what it does to the frame, what it asks of the node / NAT, and its verdict."""
from __future__ import annotations

import pytest
from test_xtables_fakes import FakeNf, FakeNode, state, table, tcp, udp

from pktemu.net.frame import ip2int
from pktemu.netfilter.conntrack import Conn, ConntrackTable
from pktemu.netfilter.conntrack_tuple import CtTuple
from pktemu.netfilter.core import (
    FORWARD, INPUT, IP_CT_NEW, MANIP_DST, MANIP_SRC, NF_ACCEPT, NF_DROP, OUTPUT, POSTROUTING, PREROUTING,
    UNTRACKED, NatRange,
)
from pktemu.netfilter.xtables import Ruleset, load_rules


@pytest.mark.parametrize("opt, sent", [("", "icmp-port-unreachable"), ("--reject-with icmp-net-unreachable",
                                       "icmp-net-unreachable"), ("--reject-with icmp-host-unreachable",
                                       "icmp-host-unreachable"), ("--reject-with icmp-host-prohibited",
                                       "icmp-host-prohibited"), ("--reject-with icmp-net-prohibited",
                                       "icmp-net-prohibited"), ("--reject-with icmp-admin-prohibited",
                                       "icmp-admin-prohibited"), ("--reject-with tcp-reset", "tcp-reset")])
def test_reject_sends_the_answer_then_drops(opt: str, sent: str) -> None:
    rs = table("filter", f"-A FORWARD -p tcp -j REJECT {opt}")
    node = FakeNode()
    f = tcp()
    assert rs.traverse("filter", f, state(FORWARD, "cbr0", "eth0", node)) == NF_DROP
    assert node.rejects == [(f, FORWARD, sent)]
    assert f.notes == [f"filter:FORWARD FORWARD#1 REJECT {sent}"]


def test_dnat_and_snat_ranges() -> None:
    rs = table("nat",
               "-A PREROUTING -p tcp -j DNAT --to-destination 10.0.2.2-10.0.2.4:8080-8090 --random",
               "-A PREROUTING -p udp -j DNAT --to-destination :5353 --persistent",
               "-A POSTROUTING -p tcp -j SNAT --to-source 192.0.2.1 --random-fully",
               "-A INPUT -p udp -j SNAT --to-source 192.0.2.9:1000")
    nf = FakeNf()
    rs.traverse("nat", tcp(), state(PREROUTING, nf=nf))
    rs.traverse("nat", udp(), state(PREROUTING, nf=nf))
    rs.traverse("nat", tcp(), state(POSTROUTING, None, "eth0", nf=nf))
    rs.traverse("nat", udp(), state(INPUT, "eth0", nf=nf))
    assert [c[1:] for c in nf.calls] == [
        (MANIP_DST, NatRange(ip2int("10.0.2.2"), ip2int("10.0.2.4"), 8080, 8090, random=True), PREROUTING),
        (MANIP_DST, NatRange(None, None, 5353, 5353, persistent=True), PREROUTING),
        (MANIP_SRC, NatRange(ip2int("192.0.2.1"), ip2int("192.0.2.1"), random_fully=True), POSTROUTING),
        (MANIP_SRC, NatRange(ip2int("192.0.2.9"), ip2int("192.0.2.9"), 1000, 1000), INPUT)]


def test_masquerade_uses_the_out_device_address_or_drops() -> None:
    rs = table("nat", "-A POSTROUTING -p tcp -j MASQUERADE --to-ports 20000-20010 --random-fully",
               "-A POSTROUTING -j MASQUERADE")
    node, nf = FakeNode(), FakeNf()
    f = tcp()
    assert rs.traverse("nat", f, state(POSTROUTING, None, "eth0", node, nf)) == NF_ACCEPT
    assert nf.calls[0][1:] == (MANIP_SRC, NatRange(ip2int("10.100.0.11"), ip2int("10.100.0.11"), 20000, 20010,
                                                   random_fully=True), POSTROUTING)
    assert f.notes == ["nat:POSTROUTING POSTROUTING#1 MASQUERADE 10.100.0.11:20000-20010"]
    node.masq["eth0"] = None
    assert rs.traverse("nat", udp(), state(POSTROUTING, None, "eth0", node, nf)) == NF_DROP
    assert len(nf.calls) == 1


def test_redirect_asks_netfilter_for_the_address() -> None:
    rs = table("nat", "-A PREROUTING -p tcp -j REDIRECT --to-ports 15001", "-A OUTPUT -p udp -j REDIRECT")
    nf = FakeNf()
    f = tcp()
    rs.traverse("nat", f, state(PREROUTING, nf=nf))
    assert nf.calls[0][1:] == (MANIP_DST, NatRange(ip2int("10.0.1.1"), ip2int("10.0.1.1"), 15001, 15001),
                               PREROUTING)
    assert f.notes == ["nat:PREROUTING PREROUTING#1 REDIRECT 10.0.1.1:15001"]
    nf.redirect = None
    assert rs.traverse("nat", udp(), state(OUTPUT, None, "eth0", nf=nf)) == NF_DROP


@pytest.mark.parametrize("opt, before, after", [
    ("--set-xmark 0x4000/0x4000", 0x1, 0x4001), ("--set-xmark 0x4000/0x0", 0x4001, 0x1),
    ("--set-mark 0x10", 0xFF, 0x10), ("--set-mark 0x10/0xf0", 0xFF, 0x1F), ("--or-mark 0x100", 0x1, 0x101),
    ("--and-mark 0xf", 0x1234, 0x4), ("--xor-mark 0x3", 0x1, 0x2)])
def test_mark_operations(opt: str, before: int, after: int) -> None:
    rs = table("mangle", f"-A PREROUTING -j MARK {opt}", f"-A PREROUTING -m mark --mark {after} -j DROP")
    f = tcp()
    f.mark = before
    assert rs.traverse("mangle", f, state(PREROUTING)) == NF_DROP          # MARK continued to rule 2
    assert f.mark == after


def _conn() -> Conn:
    t = CtTuple(6, ip2int("10.0.1.2"), 40000, ip2int("10.0.2.2"), 80)
    return Conn(1, t, CtTuple(6, t.dst, t.dport, t.src, t.sport), ConntrackTable(FakeNode()))


def test_connmark_set_save_restore() -> None:
    rs = table("mangle", "-A PREROUTING -p tcp --dport 80 -j CONNMARK --set-mark 0x5/0xf",
               "-A PREROUTING -p tcp --dport 81 -j CONNMARK --save-mark --mask 0xff",
               "-A PREROUTING -p tcp --dport 82 -j CONNMARK --restore-mark --nfmask 0xf0 --ctmask 0xf0")
    ct = _conn()
    ct.mark = 0x130
    f = tcp(dport=80)
    f.ct, f.ctinfo = ct, IP_CT_NEW
    rs.traverse("mangle", f, state(PREROUTING))
    assert ct.mark == 0x135
    g = tcp(dport=81)
    g.ct, g.ctinfo, g.mark = ct, IP_CT_NEW, 0xABCD
    rs.traverse("mangle", g, state(PREROUTING))
    assert ct.mark == 0x1CD
    h = tcp(dport=82)
    h.ct, h.ctinfo, h.mark = ct, IP_CT_NEW, 0x0F0F
    rs.traverse("mangle", h, state(PREROUTING))
    assert h.mark == 0x0FCF
    k = tcp(dport=80)                                   # no conntrack entry: nothing to do
    assert rs.traverse("mangle", k, state(PREROUTING)) == NF_ACCEPT and k.mark == 0


def test_log_records_and_continues() -> None:
    rs = table("filter", "-A INPUT -p tcp -j LOG --log-prefix \"in: \"", "-A INPUT -j DROP")
    node = FakeNode()
    node.clock = 42
    f = tcp()
    f.set_macs(bytes.fromhex("02fc00000001"), bytes.fromhex("02fc00000005"))
    assert rs.traverse("filter", f, state(INPUT, "eth0", node=node)) == NF_DROP
    assert rs.log == [(42, "in: IN=eth0 OUT= MAC=02:fc:00:00:00:05:02:fc:00:00:00:01:08:00 SRC=10.0.1.2 "
                           "DST=10.3.241.152 LEN=40 TOS=0x00 PREC=0x00 TTL=64 ID=1 PROTO=TCP SPT=40000 "
                           "DPT=80 WINDOW=8192 RES=0x00 SYN URGP=0 ")]      # nf_log_syslog's format


def test_notrack_marks_untracked_for_later_tables() -> None:
    rs = load_rules("*raw\n-A PREROUTING -p udp -j CT --notrack\n-A OUTPUT -j NOTRACK\nCOMMIT\n"
                    "*filter\n-A INPUT -m conntrack --ctstate UNTRACKED -j ACCEPT\n-A INPUT -j DROP\n"
                    "-A OUTPUT -m state --state UNTRACKED -j DROP\nCOMMIT\n", "r", Ruleset())
    f = udp()
    rs.traverse("raw", f, state(PREROUTING))
    assert f.ct is UNTRACKED and f.notes == ["raw:PREROUTING PREROUTING#1 NOTRACK"]
    assert rs.traverse("filter", f, state(INPUT)) == NF_ACCEPT
    g = tcp()
    rs.traverse("raw", g, state(PREROUTING))
    assert g.ct is None and rs.traverse("filter", g, state(INPUT)) == NF_DROP
    tracked = tcp()
    tracked.ct, tracked.ctinfo = _conn(), IP_CT_NEW
    rs.traverse("raw", tracked, state(OUTPUT, None, "eth0"))
    assert tracked.ct is not UNTRACKED                   # an existing entry is left alone
    h = tcp()
    rs.traverse("raw", h, state(OUTPUT, None, "eth0"))
    assert rs.traverse("filter", h, state(OUTPUT, None, "eth0")) == NF_DROP


def test_accept_and_drop_notes() -> None:
    rs = table("filter", "-A INPUT -p udp -j ACCEPT", "-A INPUT -j DROP")
    a, d = udp(), tcp()
    assert rs.traverse("filter", a, state(INPUT)) == NF_ACCEPT
    assert rs.traverse("filter", d, state(INPUT)) == NF_DROP
    assert a.notes == ["filter:INPUT INPUT#1 ACCEPT"] and d.notes == ["filter:INPUT INPUT#2 DROP"]
