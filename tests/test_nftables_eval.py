"""The nftables engine on frames: kube-proxy's nftables ruleset through a real Netfilter (conntrack,
NAT core, hook priorities) of a node stand-in, and each expression and statement on its own."""
from __future__ import annotations

from typing import Any

import pytest
from test_xtables_fakes import FakeNode, tcp, udp

import datapaths
from pktemu.net.frame import Frame, int2ip, ip2int
from pktemu.netfilter.core import (
    FORWARD, NF_ACCEPT, NF_DROP, OUTPUT, POSTROUTING, PREROUTING, HookState,
)
from pktemu.netfilter.hooks import Netfilter
from pktemu.netfilter.xtables import Ruleset, load_rules
from pktemu.nftables.eval import attach, run_chain
from pktemu.nftables.parse import load_nft
from pktemu.nftables.save import list_ruleset

REF_RULES = datapaths.ROOT / "tests" / "data" / "oracle" / "reference-nftables" / "rules"


def kube_nf(node: FakeNode | None = None) -> tuple[Netfilter, FakeNode]:
    node = node or FakeNode()
    nf = Netfilter(node, Ruleset("nftables"))
    path = REF_RULES / "kube-proxy-rules-node1.nft"
    attach(nf, load_nft(path.read_text(), str(path)))
    return nf, node


def one_chain(rules: str, hook: str = "forward", sets: str = "", ctype: str = "filter") -> Any:
    """A table with one base chain holding `rules`, and the chain to run."""
    text = f"table ip t {{\n{sets}\n\tchain c {{\n\t\ttype {ctype} hook {hook} priority 0; policy accept;\n"
    text += "".join(f"\t\t{r}\n" for r in rules.strip().splitlines()) + "\t}\n}\n"
    rs = load_nft(text, "t.nft")
    t = rs.tables[("ip", "t")]
    return rs, t, t.chains["c"]


def run(rules: str, frame: Frame, hook: str = FORWARD, sets: str = "", node: FakeNode | None = None,
        **kw: Any) -> tuple[int, Any]:
    rs, t, c = one_chain(rules, hook.lower(), sets)
    st = HookState(hook, kw.get("in_dev", "cbr0"), kw.get("out_dev", "eth0"), node or FakeNode(), None)
    return run_chain(t, c, frame, st), rs


def test_clusterip_syn_is_dnated_by_the_service_map_and_noted() -> None:
    nf, _ = kube_nf()
    f = tcp(dst="10.3.241.152", dport=80)
    assert nf.hook(PREROUTING, f, "cbr0", None) == NF_ACCEPT
    assert (int2ip(f.daddr), f.dport) == ("10.0.2.2", 8080)
    notes = [str(n) for n in f.notes]
    assert ("nat:PREROUTING kube-proxy services: ip daddr . meta l4proto . th dport vmap @service-ips "
            "[10.3.241.152 . tcp . 80 : goto service-EAFHE2E3-default/service-test/tcp/]") in notes
    assert any("dnat to 10.0.2.2:8080" in n for n in notes)
    assert f.mark == 0                     # from inside the cluster CIDR: not marked for masquerade


def test_dns_udp_goes_to_the_dns_endpoint_and_replies_are_un_dnated_without_rules() -> None:
    nf, _ = kube_nf()
    q = udp(dst="10.3.240.10", dport=53)
    nf.hook(PREROUTING, q, "cbr0", None)
    nf.hook(FORWARD, q, "cbr0", "eth0")
    nf.hook(POSTROUTING, q, None, "eth0")
    assert (int2ip(q.daddr), q.dport) == ("10.0.2.3", 53)
    r = udp(src="10.0.2.3", dst="10.0.1.2", sport=53, dport=40053)
    for hook, i, o in ((PREROUTING, "eth0", None), (FORWARD, "eth0", "cbr0"), (POSTROUTING, None, "cbr0")):
        assert nf.hook(hook, r, i, o) == NF_ACCEPT
    assert int2ip(r.saddr) == "10.3.240.10"
    assert not any("vmap" in str(n) for n in r.notes)   # a reply never walks the nat chains


def test_service_without_endpoints_is_rejected_in_forward() -> None:
    nf, node = kube_nf()
    f = tcp(dst="10.3.250.77", dport=80)
    assert nf.hook(PREROUTING, f, "cbr0", None) == NF_ACCEPT
    assert int2ip(f.daddr) == "10.3.250.77"
    assert nf.hook(FORWARD, f, "cbr0", "eth0") == NF_DROP
    assert [(h, w) for _, h, w in node.rejects] == [(FORWARD, "icmp-port-unreachable")]
    assert "filter:FORWARD kube-proxy reject-chain: reject" in [str(n) for n in f.notes]


def test_cluster_ips_check_rejects_bad_ports_and_drops_unallocated_ips() -> None:
    nf, node = kube_nf()
    f = tcp(dst="10.3.241.152", dport=81)
    nf.hook(PREROUTING, f, "cbr0", None)
    assert nf.hook(FORWARD, f, "cbr0", "eth0") == NF_DROP
    assert node.rejects and node.rejects[-1][2] == "icmp-port-unreachable"
    g = tcp(dst="10.3.240.99", dport=80, sport=40001)
    nf.hook(PREROUTING, g, "cbr0", None)
    assert nf.hook(FORWARD, g, "cbr0", "eth0") == NF_DROP
    assert len(node.rejects) == 1
    assert any("ip daddr 10.3.240.0/20 drop" in str(n) for n in g.notes)


def test_hairpin_is_marked_then_masqueraded_and_the_mark_cleared() -> None:
    nf, node = kube_nf()
    node.masq["cbr0"] = ip2int("10.0.1.1")
    f = tcp(dst="10.3.245.20", dport=80)
    nf.hook(PREROUTING, f, "cbr0", None)
    assert (int2ip(f.daddr), f.dport, f.mark) == ("10.0.1.2", 8080, 0x4000)
    assert nf.hook(POSTROUTING, f, None, "cbr0") == NF_ACCEPT
    assert (int2ip(f.saddr), f.mark) == ("10.0.1.1", 0)


def test_base_chains_interleave_with_conntrack_and_iptables_by_priority() -> None:
    node = FakeNode()
    nf = Netfilter(node, load_rules("*filter\n:FORWARD ACCEPT [0:0]\nCOMMIT\n", "x.rules"))
    attach(nf, load_nft((REF_RULES / "kube-proxy-rules-node1.nft").read_text(), "k.nft"))
    names = [e.name for e in nf.entries(OUTPUT)]
    order = ["conntrack-in", "nft ip kube-proxy filter-output", "nat",
             "nft ip kube-proxy filter-output-post-dnat", "filter"]
    assert [n for n in names if n in order] == order
    assert [e.priority for e in nf.entries(PREROUTING)][:5] == [-400, -300, -200, -150, -110]   # defrag first
    assert nf.nat_chains[OUTPUT][0][0] == -100 and "nat-output" not in " ".join(names)


def test_matches_on_addresses_ports_protocols_and_sets() -> None:
    f = tcp(src="10.0.1.2", dst="192.168.1.5", dport=443)
    sets = ("\tset nets {\n\t\ttype ipv4_addr\n\t\tflags interval\n"
            "\t\telements = { 10.0.0.0/16, 192.168.1.1-192.168.1.9 }\n\t}")
    for rule, hit in [("ip saddr 10.0.1.2 drop", True), ("ip saddr != 10.0.0.0/16 drop", False),
                      ("ip daddr @nets drop", True), ("ip saddr @nets tcp dport 443 drop", True),
                      ("udp dport 443 drop", False), ("th dport 443 drop", True),
                      ("tcp dport { 80, 443 } drop", True), ("tcp dport 400-500 drop", True),
                      ("meta l4proto tcp drop", True), ("ip protocol udp drop", False),
                      ("iifname \"cbr0\" oifname \"eth0\" drop", True), ("iifname \"eth0\" drop", False),
                      ("ct state new drop", False), ("ct state invalid drop", True),
                      ("fib daddr type local drop", False), ("fib saddr type unicast drop", True)]:
        v, _ = run(rule, f, sets=sets)
        assert v == (NF_DROP if hit else NF_ACCEPT), rule


def test_mark_statements_and_return() -> None:
    f = tcp()
    f.mark = 0x1
    v, rs = run("meta mark set meta mark | 0x4000\nmark and 0x4000 == 0 drop\n"
                "meta mark set meta mark ^ 0x4000\nmark set mark and 0xff00\nmark 0x0 accept\ndrop", f)
    assert v == NF_ACCEPT and f.mark == 0
    assert "meta mark & 0x00004000 == 0x00000000 drop" in list_ruleset(rs)


def test_numgen_random_is_seeded_and_spreads_over_the_map() -> None:
    def draw(seed: int) -> list[int]:
        out = []
        node = FakeNode(seed=seed)
        for i in range(400):
            f = tcp(sport=1000 + i)
            run("numgen random mod 3 vmap { 0 : accept, 1 : drop, 2 : continue }\nmark set 0x7", f, node=node)
            out.append(f.mark)
        return out
    a = draw(1)
    assert a == draw(1) and a != draw(2)
    assert 60 < a.count(0x7) < 200           # about one third continued to the mark rule


def test_jump_goto_return_and_the_policy() -> None:
    text = ("table ip t {\n\tchain a {\n\t\tmark set 0x1\n\t\treturn\n\t\tmark set 0x9\n\t}\n"
            "\tchain b {\n\t\tmark set mark or 0x2\n\t}\n"
            "\tchain c {\n\t\ttype filter hook forward priority 0; policy drop;\n"
            "\t\tjump a\n\t\tgoto b\n\t\taccept\n\t}\n}\n")
    rs = load_nft(text, "t.nft")
    t = rs.tables[("ip", "t")]
    f = tcp()
    st = HookState(FORWARD, "cbr0", "eth0", FakeNode(), None)
    assert run_chain(t, t.chains["c"], f, st) == NF_DROP          # goto b, then b falls off: policy
    assert f.mark == 0x3
    assert "policy drop" in str(st.extra["verdict_rule"])


def test_counters_update_set_timeouts_and_limit() -> None:
    node = FakeNode()
    sets = "\tset seen {\n\t\ttype ipv4_addr\n\t\tflags dynamic,timeout\n\t\ttimeout 10s\n\t}"
    rule = "counter update @seen { ip saddr }\nip saddr @seen counter accept"
    rs, t, c = one_chain(rule, sets=sets)
    st = HookState(FORWARD, "cbr0", "eth0", node, None)
    for _ in range(3):
        assert run_chain(t, c, tcp(), st) == NF_ACCEPT
    out = list_ruleset(rs)
    assert "counter packets 3 bytes 120 update @seen { ip saddr }" in out
    assert "ip saddr @seen counter packets 3 bytes 120 accept" in out
    assert t.sets["seen"].lookup((ip2int("10.0.1.2"),), node.clock) is not None
    node.clock = 11 * 10**9
    assert t.sets["seen"].lookup((ip2int("10.0.1.2"),), node.clock) is None     # expired
    rs, t, c = one_chain("limit rate 2/second burst 2 packets accept\ndrop")
    verdicts = [run_chain(t, c, tcp(), st) for _ in range(4)]
    assert verdicts == [NF_ACCEPT, NF_ACCEPT, NF_DROP, NF_DROP]


def test_reject_types_and_log() -> None:
    for rule, how in [("reject", "icmp-port-unreachable"), ("reject with tcp reset", "tcp-reset"),
                      ("reject with icmp type host-unreachable", "icmp-host-unreachable"),
                      ("reject with icmp admin-prohibited", "icmp-admin-prohibited")]:
        node = FakeNode()
        v, rs = run(f"log prefix \"x \" {rule}", tcp(), node=node)
        assert v == NF_DROP and [w for _, _, w in node.rejects] == [how], rule
    assert "reject with icmp host-unreachable" in list_ruleset(load_nft(
        "add table ip t\nadd chain ip t c\nadd rule ip t c reject with icmp type host-unreachable\n",
        "t.nft"))


@pytest.mark.parametrize("services", [10, 10_000])
def test_service_map_lookup_is_one_probe_whatever_its_size(services: int) -> None:
    """The verdict map is a dict: a hit and a miss each cost one probe, for 10 or 10,000 entries."""
    lines = ["add table ip k", "add chain ip k svc",
             "add chain ip k c { type nat hook prerouting priority -100 ; }",
             "add map ip k m { type ipv4_addr . inet_proto . inet_service : verdict ; }",
             "add rule ip k c ip daddr . meta l4proto . th dport vmap @m"]
    lines += [f"add element ip k m {{ 10.3.{i // 250}.{i % 250 + 1} . tcp . 80 : goto svc }}"
              for i in range(services)]
    rs = load_nft("\n".join(lines) + "\n", "k.nft")
    m = rs.tables[("ip", "k")].sets["m"]
    probes = Probes(m.elements)
    m.elements = probes
    t = rs.tables[("ip", "k")]
    st = HookState(PREROUTING, "cbr0", None, FakeNode(), None)
    run_chain(t, t.chains["c"], tcp(dst="10.3.0.1"), st)
    run_chain(t, t.chains["c"], tcp(dst="10.9.9.9"), st)
    assert probes.count == 2 and len(m.elements) == services and not m.prefixes and not m.ranges


class Probes(dict):  # type: ignore[type-arg]
    """A dict that counts lookups (the engine's set storage, instrumented)."""

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        self.count = 0

    def get(self, key: Any, default: Any = None) -> Any:
        self.count += 1
        return super().get(key, default)
