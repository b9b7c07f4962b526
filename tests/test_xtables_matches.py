"""Every match on hand-built frames, with `!` wherever iptables allows it."""
from __future__ import annotations

from collections import Counter

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from test_xtables_fakes import FakeNode, icmp, state, table, tcp, udp

from pktemu.net.frame import Frame, ip2int
from pktemu.netfilter.conntrack import Conn, ConntrackTable
from pktemu.netfilter.conntrack_tuple import CtTuple
from pktemu.netfilter.core import (
    FORWARD, INPUT, IP_CT_ESTABLISHED, IP_CT_ESTABLISHED_REPLY, IP_CT_NEW, IP_CT_RELATED,
    IP_CT_RELATED_REPLY, IPS_ASSURED, IPS_DST_NAT, IPS_SEEN_REPLY, IPS_SRC_NAT, NF_ACCEPT, NF_DROP,
    OUTPUT, POSTROUTING, PREROUTING, UNTRACKED, HookState,
)
from pktemu.netfilter.xtables import Ruleset, load_rules

SEC = 1_000_000_000


def hits(rule: str, frame: Frame, st: HookState | None = None, tname: str = "filter") -> bool:
    """Whether `rule` (an -A line for INPUT/FORWARD..., target DROP implied) drops the frame."""
    st = st or state(INPUT)
    rs = table(tname, f"-A {st.hook} {rule} -j DROP")
    return rs.traverse(tname, frame, st) == NF_DROP


def test_addresses_and_negation() -> None:
    f = tcp(src="10.0.1.2", dst="10.3.241.152")
    assert hits("-s 10.0.0.0/16", f) and not hits("! -s 10.0.0.0/16", f)
    assert hits("-d 10.3.241.152", f) and not hits("-d 10.3.241.153", f)
    assert hits("! -d 10.3.241.153/32", f) and hits("-s 10.0.1.2/255.255.0.255", f)
    assert not hits("-s 10.1.0.0/16", f)


def test_protocols() -> None:
    assert hits("-p tcp", tcp()) and not hits("-p udp", tcp()) and hits("! -p udp", tcp())
    assert hits("-p 17", udp()) and hits("-p all", icmp()) and hits("-p icmp", icmp())


def test_fragments() -> None:
    later = Frame(bytes(Ether() / IP(src="10.0.1.2", dst="10.0.2.2", proto=6, frag=3) / (b"x" * 16)))
    first = Frame(bytes(Ether() / IP(src="10.0.1.2", dst="10.0.2.2", flags="MF") / TCP()))
    assert hits("-f", later) and not hits("-f", first) and hits("! -f", first)
    assert not hits("-p tcp --dport 80", later) and not hits("-p tcp ! --dport 80", later)


def test_tcp_ports_flags_options() -> None:
    syn = tcp(dport=80, sport=40000, flags="S", options=[("MSS", 1460)])
    ack = tcp(dport=80, sport=40000, flags="A")
    assert hits("-p tcp --dport 80", syn) and hits("-p tcp --dport 1:1023", syn)
    assert not hits("-p tcp ! --dport 80", syn) and hits("-p tcp ! --sport 1:1023", syn)
    assert hits("-p tcp --sport 40000: --dport :80", syn) and not hits("-p tcp --sport 40001:", syn)
    assert hits("-p tcp --syn", syn) and not hits("-p tcp --syn", ack) and hits("-p tcp ! --syn", ack)
    assert hits("-p tcp --tcp-flags SYN,ACK ACK", ack) and not hits("-p tcp --tcp-flags ALL SYN,ACK", ack)
    assert hits("-p tcp --tcp-flags ALL NONE", tcp(flags=""))
    assert hits("-p tcp --tcp-option 2", syn) and not hits("-p tcp --tcp-option 2", ack)
    assert hits("-p tcp ! --tcp-option 8", syn)


def test_udp_and_icmp() -> None:
    assert hits("-p udp --dport 53", udp()) and not hits("-p udp --sport 53", udp())
    assert hits("-p udp -m udp ! --dport 54", udp())
    assert hits("-p icmp --icmp-type echo-request", icmp()) and not hits("-p icmp --icmp-type 0", icmp())
    unreach = icmp(type=3, code=3)
    assert hits("-p icmp --icmp-type port-unreachable", unreach) and hits("-p icmp --icmp-type 3", unreach)
    assert not hits("-p icmp --icmp-type host-unreachable", unreach)
    assert hits("-p icmp ! --icmp-type 3/1", unreach) and hits("-p icmp --icmp-type any", unreach)


def test_multiport() -> None:
    f = tcp(sport=40000, dport=443)
    mp = "-p tcp -m multiport"
    assert hits(f"{mp} --dports 80,443", f) and not hits(f"{mp} --sports 80,443", f)
    assert hits(f"{mp} --ports 1:100,40000", f) and hits(f"{mp} --dports 400:500", f)
    assert not hits(f"{mp} ! --dports 443", f) and hits(f"{mp} ! --dports 22", f)
    assert hits("-p udp -m multiport --sports 40053", udp())


def test_comment_mark_connmark() -> None:
    f = tcp()
    assert hits("-m comment --comment \"any thing\"", f)
    f.mark = 0x4001
    assert hits("-m mark --mark 0x4000/0x4000", f) and not hits("-m mark ! --mark 0x4000/0x4000", f)
    assert not hits("-m mark --mark 0x4000", f) and hits("-m mark --mark 0x4001", f)
    assert not hits("-m connmark --mark 0", f)            # no conntrack entry: never matches
    f.ct, f.ctinfo = _conn(), IP_CT_NEW
    f.ct.mark = 7
    assert hits("-m connmark --mark 0x7", f) and not hits("-m connmark ! --mark 0x7", f)
    assert not hits("-m connmark ! --mark 1/1", tcp())      # without conntrack even `!` does not match


def test_addrtype() -> None:
    node = FakeNode()
    to_node = tcp(dst="10.100.0.11")
    assert hits("-m addrtype --dst-type LOCAL", to_node, state(PREROUTING, node=node), "nat")
    assert not hits("-m addrtype --dst-type LOCAL", tcp(), state(PREROUTING, node=node), "nat")
    assert hits("-m addrtype ! --dst-type LOCAL", tcp(), state(PREROUTING, node=node), "nat")
    assert hits("-m addrtype --src-type UNICAST --dst-type LOCAL,BROADCAST", tcp(dst="255.255.255.255"))
    assert not hits("-m addrtype ! --src-type UNICAST", tcp())
    node.dev_types[(ip2int("10.100.0.11"), "cbr0")] = "UNICAST"
    node.dev_addr_type = lambda addr, dev: node.dev_types.get((addr, dev), node.addr_type(addr))  # type: ignore
    assert not hits("-m addrtype --dst-type LOCAL --limit-iface-in", to_node, state(INPUT, "cbr0", node=node))
    assert hits("-m addrtype --dst-type LOCAL --limit-iface-in", to_node, state(INPUT, "eth0", node=node))


def test_physdev() -> None:
    bridged = state(FORWARD, "cbr0", "cbr0", physin="veth-client", physout="veth-server")
    routed = state(FORWARD, "eth0", "cbr0")
    assert hits("-m physdev --physdev-is-bridged", tcp(), bridged)
    assert not hits("-m physdev --physdev-is-bridged", tcp(), routed)
    assert hits("-m physdev ! --physdev-is-bridged", tcp(), routed)
    assert hits("-m physdev --physdev-in veth+ --physdev-out veth-server", tcp(), bridged)
    assert not hits("-m physdev ! --physdev-in veth-client", tcp(), bridged)
    assert hits("-m physdev --physdev-is-in ! --physdev-out eth+", tcp(), bridged)
    assert not hits("-m physdev --physdev-in veth+", tcp(), routed)
    in_only = state(PREROUTING, "cbr0", physin="veth-client")
    assert hits("-m physdev --physdev-is-in ! --physdev-is-out", tcp(), in_only, "raw")


# ---------------------------------------------------------------------- conntrack / state
def _conn(status: int = 0) -> Conn:
    orig = CtTuple(6, ip2int("10.0.1.2"), 40000, ip2int("10.3.241.152"), 80)
    reply = CtTuple(6, ip2int("10.0.2.2"), 8080, ip2int("10.0.1.2"), 40000)
    c = Conn(1, orig, reply, ConntrackTable(FakeNode()))
    c.status = status
    return c


def _with_ct(ct: object, info: int | None) -> Frame:
    f = tcp()
    f.ct, f.ctinfo = ct, info
    return f


def test_ctstate_for_every_conntrack_info() -> None:
    cases = [(None, None, "INVALID"), (UNTRACKED, None, "UNTRACKED"), (_conn(), IP_CT_NEW, "NEW"),
             (_conn(), IP_CT_ESTABLISHED, "ESTABLISHED"), (_conn(), IP_CT_ESTABLISHED_REPLY, "ESTABLISHED"),
             (_conn(), IP_CT_RELATED, "RELATED"), (_conn(), IP_CT_RELATED_REPLY, "RELATED")]
    for ct, info, name in cases:
        for other in ("INVALID", "NEW", "ESTABLISHED", "RELATED", "UNTRACKED"):
            f = _with_ct(ct, info)
            assert hits(f"-m conntrack --ctstate {other}", f) == (other == name), (name, other)
            assert hits(f"-m conntrack ! --ctstate {other}", f) == (other != name), (name, other)
            assert hits(f"-m state --state {other}", f) == (other == name), (name, other)
    assert hits("-m conntrack --ctstate RELATED,ESTABLISHED", _with_ct(_conn(), IP_CT_ESTABLISHED_REPLY))


def test_ctstate_nat_bits_status_and_direction() -> None:
    dnat = _with_ct(_conn(IPS_DST_NAT | IPS_SEEN_REPLY), IP_CT_ESTABLISHED_REPLY)
    assert hits("-m conntrack --ctstate DNAT", dnat) and not hits("-m conntrack --ctstate SNAT", dnat)
    assert hits("-m conntrack --ctstate SNAT", _with_ct(_conn(IPS_SRC_NAT), IP_CT_NEW))
    assert hits("-m conntrack --ctstatus SEEN_REPLY", dnat)
    assert not hits("-m conntrack --ctstatus ASSURED", dnat)
    assert hits("-m conntrack ! --ctstatus ASSURED", dnat)
    assert hits("-m conntrack --ctstatus ASSURED,SEEN_REPLY", _with_ct(_conn(IPS_ASSURED), IP_CT_ESTABLISHED))
    assert hits("-m conntrack --ctdir REPLY", dnat) and not hits("-m conntrack --ctdir ORIGINAL", dnat)
    assert not hits("-m conntrack --ctdir REPLY", _with_ct(None, None))      # no ct, no state option


def test_ct_tuples() -> None:
    f = _with_ct(_conn(IPS_DST_NAT), IP_CT_NEW)
    assert hits("-m conntrack --ctorigdst 10.3.241.152 --ctorigdstport 80", f)
    assert hits("-m conntrack --ctorigsrc 10.0.0.0/16 --ctreplsrc 10.0.2.2 --ctrepldstport 40000", f)
    assert not hits("-m conntrack --ctorigdstport 81", f)
    assert hits("-m conntrack ! --ctorigdst 10.3.0.0/24", f)
    assert hits("-m conntrack --ctproto tcp --ctorigsrcport 40000:40010", f)
    assert not hits("-m conntrack --ctproto udp", f) and hits("-m conntrack ! --ctreplsrcport 1:1000", f)


# ---------------------------------------------------------------------- statistic
def test_statistic_random_is_seeded_and_follows_the_probability() -> None:
    rules = ["-A PREROUTING -m statistic --mode random --probability 0.33333333349 -j A",
             "-A PREROUTING -m statistic --mode random --probability 0.50000000000 -j B",
             "-A PREROUTING -j C",
             "-A A -j MARK --set-mark 1", "-A B -j MARK --set-mark 2", "-A C -j MARK --set-mark 3",
             "-A A -j ACCEPT", "-A B -j ACCEPT", "-A C -j ACCEPT"]

    def run(seed: int) -> list[int]:
        rs = table("nat", *rules, chains=("A", "B", "C"))
        st = state(PREROUTING, node=FakeNode(seed=seed))
        marks = []
        base = tcp()
        for _ in range(3000):
            f = base.copy()
            rs.traverse("nat", f, st)
            marks.append(f.mark)
        return marks

    a = run(1)
    assert a == run(1) and a != run(2)
    counts = Counter(a)
    assert set(counts) == {1, 2, 3} and all(900 < counts[k] < 1100 for k in (1, 2, 3)), counts
    assert not any(hits("-m statistic --mode random --probability 0", tcp()) for _ in range(50))
    assert all(hits("-m statistic --mode random --probability 1", tcp()) for _ in range(50))
    assert not hits("-m statistic --mode random ! --probability 1", tcp())


def test_statistic_nth() -> None:
    for packet, expect in ((0, [1, 4, 7]), (1, [2, 5, 8]), (2, [3, 6, 9])):
        rs = table("filter", f"-A INPUT -m statistic --mode nth --every 3 --packet {packet} -j DROP")
        got = [i for i in range(1, 10) if rs.traverse("filter", tcp(), state(INPUT)) == NF_DROP]
        assert got == expect
    rs = table("filter", "-A INPUT -m statistic --mode nth ! --every 2 -j DROP")
    assert [rs.traverse("filter", tcp(), state(INPUT)) for _ in range(4)] == [NF_ACCEPT, NF_DROP] * 2


# ---------------------------------------------------------------------- recent
def test_recent_ssh_brute_force_pattern() -> None:
    rs = table("filter",
               "-A INPUT -p tcp --dport 22 -m recent --name ssh --update --seconds 60 --hitcount 3 -j DROP",
               "-A INPUT -p tcp --dport 22 -m recent --name ssh --set -j ACCEPT")
    node = FakeNode()
    st = state(INPUT, "eth0", node=node)
    verdicts = []
    for _ in range(5):
        verdicts.append(rs.traverse("filter", tcp(dport=22), st))
        node.clock += SEC
    assert verdicts == [NF_ACCEPT, NF_ACCEPT, NF_ACCEPT, NF_DROP, NF_DROP]
    assert rs.traverse("filter", tcp(src="10.0.1.3", dport=22), st) == NF_ACCEPT     # another source
    node.clock += 120 * SEC
    assert rs.traverse("filter", tcp(dport=22), st) == NF_ACCEPT                    # stamps too old
    assert set(rs.recent) == {"ssh"} and len(rs.recent["ssh"].entries) == 2


def test_recent_rcheck_remove_rdest_mask_and_invert() -> None:
    rs = table("filter", "-A INPUT -p udp -m recent --name seen --rdest --mask 255.255.255.0 --set",
               "-A INPUT -p tcp -m recent --name seen --rdest --rcheck -j DROP",
               "-A INPUT -p icmp -m recent --name seen --rdest --remove -j ACCEPT",
               "-A OUTPUT -m recent --name seen ! --rcheck --rdest -j DROP")
    st = state(INPUT, "eth0")
    out = state(OUTPUT, None, "eth0")
    assert rs.traverse("filter", tcp(dst="10.0.2.9"), st) == NF_ACCEPT
    assert rs.traverse("filter", tcp(dst="10.0.2.9"), out) == NF_DROP
    rs.traverse("filter", udp(dst="10.0.2.1"), st)
    assert rs.traverse("filter", tcp(dst="10.0.2.9"), st) == NF_DROP          # same /24
    assert rs.traverse("filter", tcp(dst="10.0.2.9"), out) == NF_ACCEPT
    assert rs.traverse("filter", tcp(dst="10.0.3.9"), st) == NF_ACCEPT
    assert rs.traverse("filter", icmp(dst="10.0.2.200"), st) == NF_ACCEPT
    assert rs.traverse("filter", tcp(dst="10.0.2.9"), st) == NF_ACCEPT        # removed


def test_recent_reap_rttl_and_lists_per_namespace_survive_reload() -> None:
    rules = "*filter\n-A INPUT -p udp -m recent --set\n" \
            "-A INPUT -p tcp -m recent --rcheck --seconds 5 --reap --rttl -j DROP\nCOMMIT\n"
    a, b = load_rules(rules, "a", Ruleset("a")), load_rules(rules, "b", Ruleset("b"))
    node = FakeNode()
    st = state(INPUT, "eth0", node=node)
    a.traverse("filter", udp(src="10.0.0.1"), st)
    assert a.traverse("filter", tcp(src="10.0.0.1"), st) == NF_DROP
    assert a.traverse("filter", tcp(src="10.0.0.1", ttl=9), st) == NF_ACCEPT       # --rttl: TTL differs
    assert b.traverse("filter", tcp(src="10.0.0.1"), st) == NF_ACCEPT              # other namespace
    load_rules(rules, "a2", a)                                                     # reload keeps the list
    assert a.traverse("filter", tcp(src="10.0.0.1"), st) == NF_DROP
    node.clock += 6 * SEC
    a.traverse("filter", udp(src="10.0.0.2"), st)
    assert a.traverse("filter", tcp(src="10.0.0.2"), st) == NF_DROP               # reaps the stale 10.0.0.1
    assert list(a.recent["DEFAULT"].entries) == [ip2int("10.0.0.2")]


def test_recent_forwarded_ttl_is_counted_before_the_decrement() -> None:
    rs = table("filter", "-A FORWARD -p udp -m recent --set",
               "-A FORWARD -p tcp -m recent --rcheck --rttl -j DROP")
    st = state(FORWARD, "eth0", "cbr0")
    rs.traverse("filter", udp(), st)
    entry = next(iter(rs.recent["DEFAULT"].entries.values()))
    assert entry.ttl == 65
    assert rs.traverse("filter", tcp(ttl=64), st) == NF_DROP


def test_postrouting_hits_are_counted() -> None:
    rs = table("mangle", "-A POSTROUTING -o eth0 -p tcp -j MARK --set-mark 5")
    f = tcp()
    assert rs.traverse("mangle", f, state(POSTROUTING, None, "eth0")) == NF_ACCEPT and f.mark == 5
