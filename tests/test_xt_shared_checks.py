"""Rules' tests are shared objects now (equal rules one tuple, a /32 address the rule's own, the
destination test left to the index in an indexed run): each rule must still test its own values."""
from __future__ import annotations

from test_xtables_fakes import state, table, tcp

from pktemu.netfilter.core import FORWARD, NF_ACCEPT, NF_DROP
from pktemu.netfilter.xtables import Ruleset, Run, save_rules


def _services(index: bool) -> Ruleset:
    rules = []
    for i in range(1, 9):
        rules.append(f"-A FORWARD -s 10.0.{i}.0/24 -d 10.3.0.{i}/32 -p tcp -m tcp --dport 80 "
                     f"-j MARK --set-xmark 0x{i:x}/0xffffffff")
        rules.append(f"-A FORWARD ! -s 10.9.0.0/16 -d 10.3.0.{i}/32 -p udp -j DROP")
    rules.append("-A FORWARD -s 10.1.0.7/32 -p tcp -j DROP")
    rules.append("-A FORWARD -s 10.1.0.8/32 -p tcp -j DROP")
    return table("filter", *rules, index=index)


def test_each_keyed_rule_tests_its_own_addresses_and_ports() -> None:
    for index in (True, False):
        rs = _services(index)
        assert any(isinstance(s, Run) for s in rs.chain("filter", FORWARD).steps) == index
        for i in (1, 5, 8):
            f = tcp(src=f"10.0.{i}.9", dst=f"10.3.0.{i}")
            assert rs.traverse("filter", f, state(FORWARD, "a", "b")) == NF_ACCEPT
            assert f.mark == i
            g = tcp(src=f"10.0.{i % 8 + 1}.9", dst=f"10.3.0.{i}")          # another Service's source
            assert rs.traverse("filter", g, state(FORWARD, "a", "b")) == NF_ACCEPT
            assert g.mark == 0
            h = tcp(src=f"10.0.{i}.9", dst=f"10.3.0.{i}", dport=81)
            rs.traverse("filter", h, state(FORWARD, "a", "b"))
            assert h.mark == 0
        drop = tcp(src="10.1.0.8", dst="10.3.0.3")
        assert rs.traverse("filter", drop, state(FORWARD, "a", "b")) == NF_DROP
        ok = tcp(src="10.1.0.9", dst="10.3.0.3")
        assert rs.traverse("filter", ok, state(FORWARD, "a", "b")) == NF_ACCEPT


def test_a_copy_for_another_namespace_counts_on_its_own() -> None:
    rs = _services(True)
    other = rs.copy("other")
    f = tcp(src="10.0.3.9", dst="10.3.0.3")
    other.traverse("filter", f, state(FORWARD, "a", "b"))
    assert f.mark == 3
    assert "[1:40] -A FORWARD -s 10.0.3.0/24 -d 10.3.0.3/32" in save_rules(other)
    assert "[1:40]" not in save_rules(rs)
