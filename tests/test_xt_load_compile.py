"""What a table install does after parsing (Table.compile, Ruleset.install, validate_table): rules
numbered in their chains, jumps resolved to the target chain's steps, indexed runs as before, and
extensions bound to the namespace even when install skips its pass over them because the
validation just before saw none that binds (and the rules are still the ones it saw)."""
from __future__ import annotations

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from pktemu.bench import rules as bench
from pktemu.errors import PktemuError
from pktemu.net.frame import Frame
from pktemu.netfilter.core import INPUT
from pktemu.netfilter.restore import load_rules
from pktemu.netfilter.xt_rule import K_GOTO, K_JUMP
from pktemu.netfilter.xt_steps import Run
from pktemu.netfilter.xtables import Ruleset


def _filler(n: int) -> str:
    return "".join(f"-A FILL -s 10.9.{i // 250}.{i % 250 + 1}/32 -j ACCEPT\n" for i in range(n))


def test_kube_proxy_tables_are_numbered_resolved_and_indexed() -> None:
    n = 300
    nf = bench.load("iptables", bench.render("iptables", n))
    rs = nf.ruleset
    runs = 0
    for name in rs.tables():
        t = rs.view(name)
        assert t.checked is None                    # the validation's note is not kept
        for cname, c in t.chains.items():
            assert [(r.chain, r.num) for r in c.rules] == [(cname, i) for i in range(1, len(c.rules) + 1)]
            flat = [x for st in c.steps for x in (st.rules if isinstance(st, Run) else [st])]
            assert flat == c.rules
            runs += sum(isinstance(st, Run) for st in c.steps)
            for r in c.rules:
                if r.kind in (K_JUMP, K_GOTO):
                    assert r.jump_steps is t.chains[r.jump].steps
    assert runs >= 1                                # KUBE-SERVICES' ClusterIP rules are indexed
    bench.check_dnat(nf, n)


def test_a_log_target_writes_to_its_namespace_log() -> None:
    rs = load_rules("*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -p tcp --dport 22 -j LOG --log-prefix \"ssh \"\n"
                    "COMMIT\n", "<t>")
    nf = bench.load("iptables", "*filter\nCOMMIT\n")
    nf.ruleset = rs
    raw = bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1234, dport=22, flags="S"))
    nf.hook(INPUT, Frame(raw), "eth0", None)
    assert len(rs.log) == 1 and rs.log[0][1].startswith("ssh ")


@pytest.mark.parametrize("noflush", [False, True])
def test_an_extension_added_after_a_validated_block_is_still_bound(noflush: bool) -> None:
    """The second block's line is validated late (small against the first block), or with the
    first: either way its set match binds at install, and the missing set is refused."""
    text = ("*filter\n:FILL - [0:0]\n" + _filler(2000) + "COMMIT\n"
            "*filter\n:FILL - [0:0]\n-A FILL -m set --match-set nosuch src -j DROP\nCOMMIT\n")
    with pytest.raises(PktemuError, match=r"<t>:\d+: Set nosuch doesn't exist"):
        load_rules(text, "<t>", Ruleset(), noflush=noflush)


def test_install_of_a_validated_table_changed_since_still_binds() -> None:
    """A table validated, then given a rule that binds before it is installed (the rules are not
    the ones validated): install binds it."""
    rs = load_rules("*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j ACCEPT\nCOMMIT\n", "<t>")
    t = rs.table("filter").copy()
    t.validate()
    extra = load_rules("*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j LOG\nCOMMIT\n", "<u>")
    t.chains["INPUT"].rules.append(extra.view("filter").chains["INPUT"].rules[0])
    other = Ruleset("other")
    other.install(t, validate=False)
    log = t.chains["INPUT"].rules[1].target
    assert log is not None and log.sink is other.log        # type: ignore[attr-defined]
