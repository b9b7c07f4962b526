"""The nftables walk with each jump's resolved target kept by its Verdict (eval.run_chain, valid while
the table's epoch is unchanged) against the same walk with every jump looked up by name in the table's
chains (a new table epoch before each packet: nothing kept is valid): the same verdicts, frames, notes,
marks, traces, conntrack entries and `nft list ruleset` counters, on kube-proxy rulesets and on
rulesets that change under what is kept (rules, chains, and the sets their rules look up)."""
from __future__ import annotations

from typing import Any

import pytest
from test_xtables_fakes import FakeNode, tcp

from pktemu.bench.rules import cluster_ip, render
from pktemu.errors import PktemuError
from pktemu.net.frame import ip2int
from pktemu.netfilter.core import FORWARD, NF_ACCEPT, NF_DROP, POSTROUTING, PREROUTING, HookState
from pktemu.netfilter.hooks import Netfilter
from pktemu.netfilter.xtables import Ruleset
from pktemu.nftables.eval import attach, run_chain
from pktemu.nftables.parse import load_nft
from pktemu.nftables.save import list_ruleset

HOOKS = ((PREROUTING, "cbr0", None), (FORWARD, "cbr0", "eth0"), (POSTROUTING, None, "eth0"))


class Side:
    """One namespace: a Netfilter with the ruleset; `by_name`: every jump looked up by name."""

    def __init__(self, text: str, by_name: bool, traced: bool = False) -> None:
        self.node = FakeNode()
        self.nf = Netfilter(self.node, Ruleset("nftables"))
        self.rs = load_nft(text, "t.nft")
        attach(self.nf, self.rs)
        self.by_name, self.traced = by_name, traced

    def forget(self) -> None:
        if self.by_name:
            for t in self.rs.tables.values():
                t.chains_changed()

    def send(self, src: str, dst: str, sport: int, dport: int = 80) -> tuple[Any, ...]:
        f = tcp(src=src, dst=dst, sport=sport, dport=dport)
        verdicts = []
        trace: list[Any] | None = [] if self.traced else None
        for hook, i, o in HOOKS:
            self.forget()
            v = self.nf.hook(hook, f, i, o, trace=trace)
            verdicts.append(v)
            if v != NF_ACCEPT:
                break
        return tuple(verdicts), bytes(f.data), [str(n) for n in f.notes], f.mark, trace

    def update(self, text: str) -> None:
        """An `nft -f` transaction on the loaded ruleset (its base chains stay hooked: found by name)."""
        load_nft(text, "u.nft", self.rs)

    def listing(self) -> str:
        return list_ruleset(self.rs, 0)


def pair(text: str, traced: bool = False) -> tuple[Side, Side]:
    return Side(text, False, traced), Side(text, True, traced)


def same(fast: Side, slow: Side, src: str, dst: str, sport: int, dport: int = 80) -> tuple[Any, ...]:
    got = fast.send(src, dst, sport, dport)
    assert got == slow.send(src, dst, sport, dport)
    return got


def with_counters(text: str) -> str:
    """The bench's kube-proxy ruleset with counters in the Service and endpoint chains (and the
    masquerade mark chain), so `nft list ruleset` shows what each packet's walk counted."""
    text = text.replace(" jump mark-for-masquerade", " counter jump mark-for-masquerade")
    text = text.replace("meta l4proto tcp dnat", "meta l4proto tcp counter dnat")
    return text.replace("mark-for-masquerade mark set", "mark-for-masquerade counter mark set")


def test_kube_proxy_first_packets_match_the_rule_by_rule_walk_with_counters() -> None:
    fast, slow = pair(with_counters(render("nftables", 40)))
    assert "counter packets 0 bytes 0 jump mark-for-masquerade" in fast.listing()
    sport = 20000
    for i in range(40):
        for src in ("10.0.1.2", "192.168.7.9", f"10.100.{i // 250 % 250}.{i % 250 + 1}"):
            sport += 1
            verdicts, _, notes, _, _ = same(fast, slow, src, cluster_ip(i), sport)
            assert verdicts == (NF_ACCEPT,) * 3
            assert any("dnat to 10.10" in n for n in notes)
    # an unallocated ClusterIP (dropped in forward) and a wrong port of a real one (rejected)
    assert same(fast, slow, "10.0.1.2", "172.21.9.9", 1)[0] == (NF_ACCEPT, NF_DROP)
    assert same(fast, slow, "10.0.1.2", cluster_ip(3), 2, dport=81)[0] == (NF_ACCEPT, NF_DROP)
    assert fast.node.rejects and len(fast.node.rejects) == len(slow.node.rejects)
    listing = fast.listing()
    assert listing == slow.listing()
    assert "counter packets 2 bytes 80 jump mark-for-masquerade" in listing      # outside + hairpin
    assert "meta l4proto tcp counter packets 1 bytes 40 dnat" in listing
    assert fast.nf.conntrack_dump() == slow.nf.conntrack_dump()


def test_traces_of_kube_proxy_first_packets() -> None:
    fast, slow = pair(render("nftables", 5), traced=True)
    for i in range(5):
        got = same(fast, slow, "192.168.7.9", cluster_ip(i), 3000 + i)
        chains = [e["chain"] for e in got[4] if e["table"] == "kube-proxy"]
        assert chains[:2] == ["filter-prerouting", "firewall-check"] or "services" in chains
        assert any(c.startswith("endpoint-") for c in chains) and "mark-for-masquerade" in chains
        assert [e["rule"] for e in got[4] if e["chain"] == "services"] == [
            "ip daddr . meta l4proto . th dport vmap @service-ips"]


def test_the_masquerade_mark_and_snat_of_an_outside_client_and_a_hairpin() -> None:
    fast, slow = pair(render("nftables", 3))
    outside = same(fast, slow, "192.168.7.9", cluster_ip(1), 5000)
    assert outside[3] == 0 and "masquerading" in " ".join(outside[2])
    hairpin = same(fast, slow, "10.100.0.1", cluster_ip(0), 5001)
    assert any("mark-for-masquerade" in n for n in hairpin[2])


def chains_text() -> str:
    """Chains that jump, go to, return and continue; d0 .. d14 nest as deep as the kernel lets a walk
    from a base chain go (15 jumps: one more is refused at load, tests/test_nftables_validate.py),
    unless the packet's source port is 6."""
    deep = "".join(f"    chain d{k} {{ tcp sport 6 return ; jump d{k + 1} ; }}\n" for k in range(14))
    return f"""table ip t {{
    chain base {{ type filter hook forward priority 0; policy drop;
        tcp dport 1 jump a
        tcp dport 2 goto b
        tcp dport 3 jump c
        tcp dport 4 jump d0
        counter
    }}
    chain a {{ counter meta mark set 0x1 ; tcp sport 7 return ; counter meta mark set 0x2 ; jump b ; }}
    chain b {{ counter continue ; tcp sport 8 accept ; counter ; }}
    chain c {{ counter ; }}
{deep}    chain d14 {{ tcp sport 9 accept ; }}
}}
"""


def direct(side: Side, sport: int, dport: int) -> tuple[Any, ...]:
    side.forget()
    t = side.rs.tables[("ip", "t")]
    f = tcp(sport=sport, dport=dport)
    st = HookState(FORWARD, "cbr0", "eth0", side.node, side.nf, trace=[] if side.traced else None)
    try:
        v: Any = run_chain(t, t.chains["base"], f, st)
    except PktemuError as e:
        v = str(e)
    ctype, table, chain = st.extra["nft_chain"]      # the chain the walk ended in (a Chain or its name)
    return v, [str(n) for n in f.notes], f.mark, (ctype, table, getattr(chain, "name", chain)), st.trace


def both(fast: Side, slow: Side, sport: int, dport: int) -> tuple[Any, ...]:
    got = direct(fast, sport, dport)
    assert got == direct(slow, sport, dport)
    return got


@pytest.mark.parametrize("sport", [6, 7, 8, 9])
@pytest.mark.parametrize("dport", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("traced", [False, True])
def test_jump_goto_return_continue_and_the_jump_stack(sport: int, dport: int, traced: bool) -> None:
    fast, slow = pair(chains_text(), traced)
    got = both(fast, slow, sport, dport)
    assert fast.listing() == slow.listing()
    if dport == 4:
        assert got[0] == (NF_ACCEPT if sport == 9 else NF_DROP)
    if dport == 1:
        assert got[2] == (1 if sport == 7 else 2)


def test_kept_rule_lists_follow_every_transaction() -> None:
    """A jump's target is kept by its Verdict: after a transaction changes a jumped-to chain's rules
    (insert, add, delete by handle, flush, a chain deleted and made again), the next packet runs them."""
    fast, slow = pair(chains_text())
    assert both(fast, slow, 6, 3)[0] == NF_DROP             # c: a counter, back to base: policy drop
    updates = ["insert rule ip t c tcp sport 6 accept",
               "add rule ip t c tcp sport 6 drop",
               "flush chain ip t c\nadd rule ip t c tcp sport 6 counter drop",
               "add rule ip t b tcp sport 6 accept"]
    expect = [NF_ACCEPT, NF_ACCEPT, NF_DROP, NF_DROP]
    for text, want in zip(updates, expect, strict=True):
        for side in (fast, slow):
            side.update(text + "\n")
        assert both(fast, slow, 6, 3)[0] == want, text
        both(fast, slow, 6, 2)
    handle = next(r.handle for r in fast.rs.tables[("ip", "t")].chains["c"].rules)
    for side in (fast, slow):
        side.update(f"delete rule ip t c handle {handle}\n")
    assert both(fast, slow, 6, 3)[0] == NF_DROP               # back to the policy
    for side in (fast, slow):           # the chain deleted and made again, in one transaction
        side.update("flush chain ip t c\ndelete chain ip t c\nadd chain ip t c\n"
                    "add rule ip t c tcp sport 6 accept\n")
    assert both(fast, slow, 6, 3)[0] == NF_ACCEPT
    assert fast.listing() == slow.listing()


def test_a_failed_transaction_leaves_the_rules_it_did_not_apply() -> None:
    fast, slow = pair(chains_text())
    assert both(fast, slow, 6, 3)[0] == NF_DROP
    for side in (fast, slow):
        with pytest.raises(PktemuError):
            side.update("add rule ip t c tcp sport 6 accept\nadd rule ip t c jump nowhere\n")
    assert both(fast, slow, 6, 3)[0] == NF_DROP
    assert fast.listing() == slow.listing()


def test_a_base_chain_follows_its_rules() -> None:
    fast, slow = pair(chains_text())
    assert both(fast, slow, 6, 5)[0] == NF_DROP
    for side in (fast, slow):
        side.update("insert rule ip t base tcp dport 5 accept\n")
    assert both(fast, slow, 6, 5)[0] == NF_ACCEPT
    assert fast.listing() == slow.listing()


SETS = """table ip s {
    set addrs { type ipv4_addr; elements = { 10.1.2.3, 10.1.9.9, 172.20.0.1 } }
    set nets { type ipv4_addr; flags interval; elements = { 10.7.0.0/16, 192.168.1.0/24 } }
    set pairs { type ipv4_addr . inet_service; elements = { 10.1.2.3 . 80 } }
    set seen { type ipv4_addr; }
    chain c { type filter hook forward priority 0; policy accept;
        ip saddr 10.9.9.9 update @seen { ip daddr }
        ip daddr @addrs counter drop
        ip daddr @nets counter drop
        ip daddr . tcp dport @pairs counter drop
        ip saddr 10.9.9.8 ip daddr @seen counter drop
    }
}
"""


def set_verdict(side: Side, src: str, dst: str, dport: int = 80) -> int:
    side.forget()
    t = side.rs.tables[("ip", "s")]
    st = HookState(FORWARD, "cbr0", "eth0", side.node, side.nf, trace=[] if side.traced else None)
    return run_chain(t, t.chains["c"], tcp(src=src, dst=dst, dport=dport), st)


PROBES = ["10.1.2.3", "10.1.2.4", "10.1.9.9", "10.2.2.3", "172.20.0.1", "172.20.0.2", "10.7.200.1",
          "10.8.0.1", "192.168.1.77", "192.168.2.77", "0.0.0.0", "255.255.255.255"]


def check_sets(fast: Side, slow: Side, members: set[str], dport: int = 80) -> None:
    nets = [(ip2int(n), m) for n, m in (("10.7.0.0", 16), ("192.168.1.0", 24))]
    for dst in PROBES:
        a = ip2int(dst)
        want = dst in members or any(a >> (32 - m) == n >> (32 - m) for n, m in nets)
        got = set_verdict(fast, "10.0.1.2", dst, dport)
        assert got == set_verdict(slow, "10.0.1.2", dst, dport)
        assert got == (NF_DROP if want else NF_ACCEPT), dst


def test_set_lookups_through_element_changes() -> None:
    fast, slow = pair(SETS)
    members = {"10.1.2.3", "10.1.9.9", "172.20.0.1"}
    check_sets(fast, slow, members, dport=81)
    steps = [("delete element ip s addrs { 10.1.9.9 }", {"10.1.2.3", "172.20.0.1"}),
             ("add element ip s addrs { 10.2.2.3 }", {"10.1.2.3", "172.20.0.1", "10.2.2.3"}),
             ("flush set ip s addrs", set()),
             ("add element ip s addrs { 255.255.255.255 , 0.0.0.0 }", {"255.255.255.255", "0.0.0.0"})]
    for text, now in steps:
        for side in (fast, slow):
            side.update(text + "\n")
        check_sets(fast, slow, now, dport=81)
    for side in (fast, slow):           # a transaction that flushes the set, then fails: all undone
        with pytest.raises(PktemuError):
            side.update("flush set ip s addrs\nadd rule ip s c jump nowhere\n")
    check_sets(fast, slow, {"255.255.255.255", "0.0.0.0"}, dport=81)
    assert fast.listing() == slow.listing()


def test_concatenated_and_dynamic_sets() -> None:
    fast, slow = pair(SETS)
    for side in (fast, slow):            # a concatenation; an address the packet path adds, then matches
        assert set_verdict(side, "10.0.1.2", "10.1.2.3", 80) == NF_DROP
        assert set_verdict(side, "10.0.1.2", "10.1.2.4", 80) == NF_ACCEPT
        assert set_verdict(side, "10.9.9.8", "10.44.0.1") == NF_ACCEPT
        assert set_verdict(side, "10.9.9.9", "10.44.0.1") == NF_ACCEPT
        assert set_verdict(side, "10.9.9.8", "10.44.0.1") == NF_DROP
        assert set_verdict(side, "10.9.9.8", "10.45.0.1") == NF_ACCEPT
    assert fast.listing() == slow.listing()
