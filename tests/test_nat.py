"""NAT through the hook runner, on the reference scenarios: DNAT/un-DNAT (s1), hairpin MASQUERADE
(s3), port clashes, null bindings, random ports, ICMP error translation, and valid checksums after
every rewrite (checked against scapy's own computation)."""
from __future__ import annotations

from typing import Any, Callable

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, fragment
from scapy.layers.l2 import Ether

from pktemu.errors import PktemuError
from pktemu.net.frame import ETH_HLEN, Frame, int2ip, ip2int
from pktemu.netfilter.core import (
    FORWARD, INPUT, IPS_DST_NAT, IPS_SRC_NAT, MANIP_DST, MANIP_SRC, NF_ACCEPT, NF_DROP, NF_STOLEN, OUTPUT,
    POSTROUTING,
    PREROUTING, HookState, NatRange,
)
from pktemu.netfilter.hooks import Netfilter
from pktemu.netfilter.nat import jhash2
from pktemu.sim import MS, Simulator

CLIENT, SERVER, DNS = "10.0.1.2", "10.0.2.2", "10.0.2.3"
VIP, DNS_VIP, HAIRPIN_VIP, CBR0 = "10.3.241.152", "10.3.240.10", "10.3.245.20", "10.0.1.1"
Rule = Callable[[Frame, HookState], int]
# node1's two paths: pod -> bridge -> routed out eth0, and back.
OUT = ((PREROUTING, "cbr0", None), (FORWARD, "cbr0", "eth0"), (POSTROUTING, None, "eth0"))
BACK = ((PREROUTING, "eth0", None), (FORWARD, "eth0", "cbr0"), (POSTROUTING, None, "cbr0"))
BRIDGED = ((PREROUTING, "cbr0", None), (FORWARD, "cbr0", "cbr0"), (POSTROUTING, None, "cbr0"))


class FakeNode:
    def __init__(self, name: str = "node1", masq: str | None = "10.100.0.11", seed: int = 1) -> None:
        self.name = name
        self.sysctls: dict[str, int] = {}      # the kernel's defaults
        self.sim = Simulator(seed=seed)
        self.masq = ip2int(masq) if masq else None
        self.devices: dict[str, Any] = {}

    def is_local(self, addr: int) -> bool:
        return False

    def addr_type(self, addr: int) -> str:
        return "UNICAST"

    def masquerade_source(self, out_dev: str, daddr: int) -> int | None:
        return ip2int(CBR0) if out_dev == "cbr0" else self.masq

    def send_reject(self, frame: Frame, state: HookState, reject_with: str) -> None:
        raise AssertionError("unexpected REJECT")

    def rng(self, name: str) -> Any:
        return self.sim.rng(f"{self.name}:{name}")

    def now(self) -> int:
        return self.sim.now


class FakeRuleset:
    """The x_tables engine's contract: has_table/traverse; NAT targets call state.nf.nat_setup."""

    def __init__(self, rules: dict[tuple[str, str], Rule], tables: tuple[str, ...] = ("nat", "filter")):
        self.rules = rules
        self.tables = set(tables)
        self.calls: dict[tuple[str, str], int] = {}

    def has_table(self, name: str) -> bool:
        return name in self.tables

    def traverse(self, table: str, frame: Frame, state: HookState) -> int:
        self.calls[table, state.hook] = self.calls.get((table, state.hook), 0) + 1
        rule = self.rules.get((table, state.hook))
        return rule(frame, state) if rule is not None else NF_ACCEPT


def dnat(vip: str, vport: int, to: str, tport: int, also: Rule | None = None) -> Rule:
    """KUBE-SERVICES -> KUBE-SEP: DNAT vip:vport to to:tport (running `also` first, like MARK-MASQ)."""
    def rule(frame: Frame, state: HookState) -> int:
        if frame.daddr == ip2int(vip) and frame.has_ports and frame.dport == vport:
            if also is not None:
                also(frame, state)
            return int(state.nf.nat_setup(frame, MANIP_DST, NatRange(ip2int(to), ip2int(to), tport, tport),
                                          state))
        return NF_ACCEPT
    return rule


def chain(*rules: Rule) -> Rule:
    def rule(frame: Frame, state: HookState) -> int:
        for r in rules:
            v = r(frame, state)
            if v != NF_ACCEPT or frame.ct.status & IPS_DST_NAT:
                return v
        return NF_ACCEPT
    return rule


def mark_masq(frame: Frame, state: HookState) -> int:
    frame.mark |= 0x4000
    return NF_ACCEPT


def masquerade_marked(frame: Frame, state: HookState, **kw: Any) -> int:
    """KUBE-POSTROUTING: MASQUERADE what KUBE-MARK-MASQ marked."""
    if not frame.mark & 0x4000:
        return NF_ACCEPT
    frame.mark &= ~0x4000
    src = state.node.masquerade_source(state.out_dev, frame.daddr)
    return int(state.nf.nat_setup(frame, MANIP_SRC, NatRange(src, src, **kw), state))


def masquerade_all(frame: Frame, state: HookState) -> int:
    src = state.node.masquerade_source(state.out_dev, frame.daddr)
    return int(state.nf.nat_setup(frame, MANIP_SRC, NatRange(src, src), state))


def kube_rules() -> dict[tuple[str, str], Rule]:
    return {("nat", PREROUTING): chain(dnat(VIP, 80, SERVER, 8080), dnat(DNS_VIP, 53, DNS, 53),
                                       dnat(HAIRPIN_VIP, 80, CLIENT, 8080, also=_mark_if_self)),
            ("nat", POSTROUTING): masquerade_marked}


def _mark_if_self(frame: Frame, state: HookState) -> int:
    return mark_masq(frame, state) if frame.saddr == ip2int(CLIENT) else NF_ACCEPT


def tcp(src: str, sport: int, dst: str, dport: int, flags: str, seq: int = 0, ack: int = 0,
        payload: bytes = b"") -> Frame:
    seg = TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack, window=64240)
    return Frame(bytes(Ether() / IP(src=src, dst=dst, flags="DF") / seg / payload))


def udp(src: str, sport: int, dst: str, dport: int, payload: bytes = b"\x12\x34" + b"q" * 40) -> Frame:
    return Frame(bytes(Ether() / IP(src=src, dst=dst) / UDP(sport=sport, dport=dport) / payload))


def through(nf: Netfilter, frame: Frame, path: tuple[tuple[str, str | None, str | None], ...]) -> int:
    frame.ct = frame.ctinfo = None
    for hook, i, o in path:
        v = nf.hook(hook, frame, i, o)
        if v != NF_ACCEPT:
            return v
    return NF_ACCEPT


def endpoints(f: Frame) -> tuple[str, str]:
    if f.has_ports:
        return f"{int2ip(f.saddr)}:{f.sport}", f"{int2ip(f.daddr)}:{f.dport}"
    return int2ip(f.saddr), int2ip(f.daddr)


def assert_checksums(f: Frame) -> None:
    """Every checksum in the frame equals what scapy computes from scratch (inner headers too)."""
    def check(ip_bytes: bytes) -> None:
        got = IP(ip_bytes)
        fresh = got.copy()
        del fresh.chksum
        if hasattr(fresh.payload, "chksum"):
            del fresh.payload.chksum
        fresh = IP(bytes(fresh))
        assert got.chksum == fresh.chksum, "IP header checksum"
        if hasattr(got.payload, "chksum"):
            assert got.payload.chksum == fresh.payload.chksum, f"{got.payload.name} checksum"
    check(f.ip_bytes())
    if f.proto == 1 and f.icmp_type in (3, 11):
        check(bytes(f.data[f.l4off + 8:ETH_HLEN + f.ip_len]))


def s1_segments() -> list[tuple[bool, str, int, int, bytes]]:
    c, s = 1000, 5000
    return [(True, "S", c, 0, b""), (False, "SA", s, c + 1, b""), (True, "A", c + 1, s + 1, b""),
            (True, "PA", c + 1, s + 1, b"G" * 99), (False, "A", s + 1, c + 100, b""),
            (False, "PA", s + 1, c + 100, b"H" * 115), (True, "A", c + 100, s + 116, b""),
            (False, "FA", s + 116, c + 100, b""), (True, "FA", c + 100, s + 117, b""),
            (False, "A", s + 117, c + 101, b"")]


# ---------------------------------------------------------------------- s1: ClusterIP DNAT
def test_s1_clusterip_dnat_and_reply_un_dnat_with_the_reference_conntrack_dump() -> None:
    node = FakeNode()
    rs = FakeRuleset(kube_rules())
    nf = Netfilter(node, rs)
    t = MS
    node.sim.run(until=t)
    q = udp(CLIENT, 40053, DNS_VIP, 53)
    assert through(nf, q, OUT) == NF_ACCEPT
    assert endpoints(q) == ("10.0.1.2:40053", "10.0.2.3:53")
    assert "DNAT 10.3.240.10:53 -> 10.0.2.3:53" in q.notes
    r = udp(DNS, 53, CLIENT, 40053)
    assert through(nf, r, BACK) == NF_ACCEPT
    assert endpoints(r) == ("10.3.240.10:53", "10.0.1.2:40053")
    assert "un-DNAT 10.0.2.3:53 -> 10.3.240.10:53" in r.notes
    for f in (q, r):
        assert_checksums(f)
    for from_client, flags, seq, ack, payload in s1_segments():
        t += MS
        node.sim.run(until=t)
        if from_client:
            f = tcp(CLIENT, 40000, VIP, 80, flags, seq, ack, payload)
            assert through(nf, f, OUT) == NF_ACCEPT
            assert endpoints(f) == ("10.0.1.2:40000", "10.0.2.2:8080")
        else:
            f = tcp(SERVER, 8080, CLIENT, 40000, flags, seq, ack, payload)
            assert through(nf, f, BACK) == NF_ACCEPT
            assert endpoints(f) == ("10.3.241.152:80", "10.0.1.2:40000")
        assert_checksums(f)
        assert bytes(f.scapy()[TCP].payload) == payload
    assert rs.calls[("nat", PREROUTING)] == 2 and rs.calls[("nat", POSTROUTING)] == 2
    node.sim.run(until=t + 1500 * MS)
    assert nf.conntrack_dump() == (
        "udp      17 28 src=10.0.1.2 dst=10.3.240.10 sport=40053 dport=53 src=10.0.2.3 dst=10.0.1.2 "
        "sport=53 dport=40053 mark=0 use=1\n"
        "tcp      6 118 TIME_WAIT src=10.0.1.2 dst=10.3.241.152 sport=40000 dport=80 src=10.0.2.2 "
        "dst=10.0.1.2 sport=8080 dport=40000 [ASSURED] mark=0 use=1\n")


# ---------------------------------------------------------------------- s3: hairpin masquerade
def test_s3_hairpin_masquerade_keeps_the_source_port() -> None:
    node = FakeNode()
    nf = Netfilter(node, FakeRuleset(kube_rules()))
    t = 0
    for from_client, flags, seq, ack, payload in s1_segments():
        t += MS
        node.sim.run(until=t)
        if from_client:
            f = tcp(CLIENT, 40000, HAIRPIN_VIP, 80, flags, seq, ack, payload)
            assert through(nf, f, BRIDGED) == NF_ACCEPT
            assert endpoints(f) == ("10.0.1.1:40000", "10.0.1.2:8080")
        else:
            f = tcp(CLIENT, 8080, CBR0, 40000, flags, seq, ack, payload)
            assert through(nf, f, BRIDGED) == NF_ACCEPT
            assert endpoints(f) == ("10.3.245.20:80", "10.0.1.2:40000")
            assert any(n.startswith("un-SNAT 10.0.1.1:40000 -> 10.0.1.2:40000") for n in f.notes)
        assert f.mark & 0x4000 == 0
        assert_checksums(f)
    ct = f.ct
    assert ct.status & IPS_SRC_NAT and ct.status & IPS_DST_NAT
    assert str(ct.reply) == "10.0.1.2:8080 > 10.0.1.1:40000"
    node.sim.run(until=t + 1500 * MS)
    assert nf.conntrack_dump() == (
        "tcp      6 118 TIME_WAIT src=10.0.1.2 dst=10.3.245.20 sport=40000 dport=80 src=10.0.1.2 "
        "dst=10.0.1.1 sport=8080 dport=40000 [ASSURED] mark=0 use=1\n")


# ---------------------------------------------------------------------- ports
def test_masquerade_port_clash_picks_another_port_and_replies_find_their_way_back() -> None:
    def run(seed: int) -> tuple[Frame, Frame, Frame]:
        node = FakeNode(seed=seed)
        nf = Netfilter(node, FakeRuleset({("nat", POSTROUTING): masquerade_all}))
        a = udp(CLIENT, 40000, "8.8.8.8", 53)
        b = udp("10.0.1.3", 40000, "8.8.8.8", 53)
        through(nf, a, OUT)
        through(nf, b, OUT)
        back = udp("8.8.8.8", 53, "10.100.0.11", b.sport)
        through(nf, back, BACK)
        return a, b, back

    a, b, back = run(1)
    assert endpoints(a)[0] == "10.100.0.11:40000"
    assert int2ip(b.saddr) == "10.100.0.11" and b.sport != 40000 and 1024 <= b.sport <= 65535
    assert endpoints(back)[1] == "10.0.1.3:40000"
    for f in (a, b, back):
        assert_checksums(f)
    assert run(1)[1].sport == b.sport
    assert run(2)[1].sport != b.sport


def test_null_binding_remaps_a_source_port_whose_reply_would_clash() -> None:
    node = FakeNode()
    nf = Netfilter(node, FakeRuleset(kube_rules()))
    via_vip = tcp(CLIENT, 40000, VIP, 80, "S", 1)
    through(nf, via_vip, OUT)
    direct = tcp(CLIENT, 40000, SERVER, 8080, "S", 1)
    assert through(nf, direct, OUT) == NF_ACCEPT
    assert int2ip(direct.saddr) == CLIENT and direct.sport != 40000
    assert direct.ct.status & IPS_SRC_NAT
    assert any(n.startswith("SNAT 10.0.1.2:40000 ->") for n in direct.notes)
    assert_checksums(direct)
    assert len(nf.conntrack) == 2


def test_nat_table_is_traversed_once_per_connection_and_hook() -> None:
    node = FakeNode()
    rs = FakeRuleset({})
    nf = Netfilter(node, rs)
    for i in range(5):
        through(nf, tcp(CLIENT, 40000, SERVER, 8080, "S" if i == 0 else "A", 1 + i, 1), OUT)
        through(nf, tcp(SERVER, 8080, CLIENT, 40000, "SA" if i == 0 else "A", 1, 2 + i), BACK)
    assert rs.calls[("nat", PREROUTING)] == 1 and rs.calls[("nat", POSTROUTING)] == 1
    assert rs.calls[("filter", FORWARD)] == 10
    assert len(nf.conntrack) == 1 and not list(nf.conntrack)[0].status & (IPS_SRC_NAT | IPS_DST_NAT)


def test_drop_forgets_the_nat_binding_so_the_retry_is_translated_afresh() -> None:
    node = FakeNode()
    seen: list[int] = []

    def drop_once(frame: Frame, state: HookState) -> int:
        seen.append(frame.daddr)
        return NF_DROP if len(seen) == 1 else NF_ACCEPT

    rules = kube_rules()
    rules[("filter", FORWARD)] = drop_once
    rs = FakeRuleset(rules)
    nf = Netfilter(node, rs)
    first = tcp(CLIENT, 40000, VIP, 80, "S", 1)
    assert through(nf, first, OUT) == NF_DROP and first.ct is None
    assert nf.conntrack_dump() == ""
    retry = tcp(CLIENT, 40000, VIP, 80, "S", 1)
    assert through(nf, retry, OUT) == NF_ACCEPT
    assert rs.calls[("nat", PREROUTING)] == 2 and endpoints(retry)[1] == "10.0.2.2:8080"


def test_random_fully_and_port_ranges() -> None:
    def port(seed: int, **kw: Any) -> int:
        node = FakeNode(seed=seed)
        rule = lambda f, s: masquerade_marked(f, s, **kw)   # noqa: E731
        nf = Netfilter(node, FakeRuleset({("nat", PREROUTING): lambda f, s: mark_masq(f, s),
                                          ("nat", POSTROUTING): rule}))
        f = udp(CLIENT, 40000, "8.8.8.8", 53)
        through(nf, f, OUT)
        assert_checksums(f)
        return f.sport

    fully = {port(seed, random_fully=True) for seed in range(6)}
    assert len(fully) > 1 and all(1024 <= p <= 65535 for p in fully)
    assert port(3, random_fully=True) == port(3, random_fully=True)
    assert port(1) == 40000
    ranged = {port(seed, min_port=2000, max_port=2010) for seed in range(6)}
    assert all(2000 <= p <= 2010 for p in ranged)


def test_address_range_is_chosen_by_the_kernel_hash_deterministically() -> None:
    def snat_to(src: str, persistent: bool = False) -> str:
        node = FakeNode()
        lo, hi = ip2int("192.0.2.10"), ip2int("192.0.2.19")
        rule = lambda f, s: s.nf.nat_setup(f, MANIP_SRC, NatRange(lo, hi, persistent=persistent), s)  # noqa: E731
        nf = Netfilter(node, FakeRuleset({("nat", POSTROUTING): rule}))
        f = udp(src, 5000, "8.8.8.8", 53)
        through(nf, f, OUT)
        return int2ip(f.saddr)

    picks = {snat_to(f"10.0.1.{i}") for i in range(2, 40)}
    assert picks <= {f"192.0.2.{i}" for i in range(10, 20)} and len(picks) > 3
    assert snat_to("10.0.1.7") == snat_to("10.0.1.7")
    assert snat_to("10.0.1.7", persistent=True) == snat_to("10.0.1.7", persistent=True)


def test_jhash2_matches_bob_jenkins_lookup3_vectors() -> None:
    """lookup3.c's driver5: hashlittle("Four score and seven years ago", 30, 0|1). On whole LE words
    with zero padding that is hashword() with initval - 2 (the length term counts 32 bytes)."""
    text = b"Four score and seven years ago\0\0"
    words = [int.from_bytes(text[i:i + 4], "little") for i in range(0, 32, 4)]
    assert jhash2(words, (0 - 2) & 0xFFFFFFFF) == 0x17770551
    assert jhash2(words, (1 - 2) & 0xFFFFFFFF) == 0xCD628161
    assert jhash2([], 0) == 0xDEADBEEF


def test_icmp_echo_ids_are_nated_and_clashing_ids_remapped() -> None:
    node = FakeNode()
    nf = Netfilter(node, FakeRuleset({("nat", POSTROUTING): masquerade_all}))
    a = Frame(bytes(Ether() / IP(src=CLIENT, dst="8.8.8.8") / ICMP(type=8, id=99, seq=1)))
    b = Frame(bytes(Ether() / IP(src="10.0.1.3", dst="8.8.8.8") / ICMP(type=8, id=99, seq=1)))
    through(nf, a, OUT)
    through(nf, b, OUT)
    assert a.icmp_id == 99 and b.icmp_id != 99
    rep = Frame(bytes(Ether() / IP(src="8.8.8.8", dst="10.100.0.11") / ICMP(type=0, id=b.icmp_id, seq=1)))
    through(nf, rep, BACK)
    assert int2ip(rep.daddr) == "10.0.1.3" and rep.icmp_id == 99
    for f in (a, b, rep):
        assert_checksums(f)


# ---------------------------------------------------------------------- local traffic
def test_dnat_in_output_and_un_dnat_at_input() -> None:
    node = FakeNode()
    nf = Netfilter(node, FakeRuleset({("nat", OUTPUT): dnat(VIP, 80, SERVER, 8080)}))
    syn = tcp("10.100.0.11", 50000, VIP, 80, "S", 1)
    for hook, i, o in ((OUTPUT, None, "eth0"), (POSTROUTING, None, "eth0")):
        assert nf.hook(hook, syn, i, o) == NF_ACCEPT
    assert endpoints(syn)[1] == "10.0.2.2:8080" and syn.ct.confirmed
    synack = tcp(SERVER, 8080, "10.100.0.11", 50000, "SA", 7, 2)
    for hook, i, o in ((PREROUTING, "eth0", None), (INPUT, "eth0", None)):
        assert nf.hook(hook, synack, i, o) == NF_ACCEPT
    assert endpoints(synack)[0] == "10.3.241.152:80"
    assert_checksums(syn)
    assert_checksums(synack)
    assert nf.redirect_address(syn, HookState(OUTPUT, None, "eth0", node, nf)) == ip2int("127.0.0.1")


def test_nat_in_the_wrong_hook_and_bad_ranges_are_errors() -> None:
    node = FakeNode()
    wrong = lambda f, s: s.nf.nat_setup(f, MANIP_SRC, NatRange(1, 1), s)  # noqa: E731
    nf = Netfilter(node, FakeRuleset({("nat", PREROUTING): wrong}))
    with pytest.raises(PktemuError, match="node1: SNAT/MASQUERADE used in PREROUTING"):
        through(nf, udp(CLIENT, 1, DNS, 2), OUT)
    backwards = lambda f, s: s.nf.nat_setup(f, MANIP_DST, NatRange(ip2int("10.0.0.9"), ip2int("10.0.0.1")), s)  # noqa
    nf = Netfilter(node, FakeRuleset({("nat", PREROUTING): backwards}))
    with pytest.raises(PktemuError, match="first address is above the last"):
        through(nf, udp(CLIENT, 1, DNS, 2), OUT)


# ---------------------------------------------------------------------- ICMP errors
def icmp_error(src: str, dst: str, quoted: Frame, code: int = 3) -> Frame:
    return Frame(bytes(Ether() / IP(src=src, dst=dst) / ICMP(type=3, code=code) / quoted.ip_bytes()))


def test_icmp_error_about_a_dnated_udp_flow_is_translated_inside_and_out() -> None:
    node = FakeNode()
    nf = Netfilter(node, FakeRuleset(kube_rules()))
    q = udp(CLIENT, 40053, DNS_VIP, 53)
    through(nf, q, OUT)
    err = icmp_error(DNS, CLIENT, q)
    assert through(nf, err, BACK) == NF_ACCEPT
    pkt = err.scapy()
    assert (pkt[IP].src, pkt[IP].dst) == (DNS_VIP, CLIENT)
    inner = IP(bytes(err.data[err.l4off + 8:ETH_HLEN + err.ip_len]))
    assert (inner.src, inner[UDP].sport, inner.dst, inner[UDP].dport) == (CLIENT, 40053, DNS_VIP, 53)
    assert any(n.startswith("un-DNAT ICMP error 10.0.2.3 -> 10.3.240.10") for n in err.notes)
    assert_checksums(err)
    assert err.ct is q.ct


def test_icmp_error_about_a_hairpinned_tcp_flow_undoes_both_translations() -> None:
    node = FakeNode()
    nf = Netfilter(node, FakeRuleset(kube_rules()))
    syn = Frame(bytes(Ether() / IP(src=CLIENT, dst=HAIRPIN_VIP, flags="DF")
                      / TCP(sport=40000, dport=80, flags="S", seq=1,
                            options=[("MSS", 1460), ("SAckOK", b""), ("Timestamp", (1, 0)), ("NOP", None),
                                     ("WScale", 7)])))
    through(nf, syn, BRIDGED)
    assert endpoints(syn) == ("10.0.1.1:40000", "10.0.1.2:8080") and syn.ip_len == 60
    err = icmp_error(CLIENT, CBR0, syn, code=1)
    assert through(nf, err, BRIDGED) == NF_ACCEPT
    pkt = err.scapy()
    assert (pkt[IP].src, pkt[IP].dst) == (HAIRPIN_VIP, CLIENT)
    inner = IP(bytes(err.data[err.l4off + 8:ETH_HLEN + err.ip_len]))
    assert (inner.src, inner[TCP].sport, inner.dst, inner[TCP].dport) == (CLIENT, 40000, HAIRPIN_VIP, 80)
    assert_checksums(err)


def test_s2_reject_for_a_service_without_endpoints_is_not_nated() -> None:
    node = FakeNode()
    noep = ip2int("10.3.250.77")
    rules = kube_rules()
    rules[("filter", FORWARD)] = lambda f, s: NF_DROP if f.daddr == noep else NF_ACCEPT
    rs = FakeRuleset(rules)
    nf = Netfilter(node, rs)
    syn = tcp(CLIENT, 40000, "10.3.250.77", 80, "S", 1)
    assert through(nf, syn, OUT) == NF_DROP
    assert nf.conntrack_dump() == ""
    quoted = syn.copy()
    quoted.dec_ttl()
    err = icmp_error(CBR0, CLIENT, quoted)
    before = bytes(err.data)
    for hook, i, o in ((OUTPUT, None, "cbr0"), (POSTROUTING, None, "cbr0")):
        assert nf.hook(hook, err, i, o) == NF_ACCEPT
    assert bytes(err.data) == before and err.ct is None
    assert ("nat", OUTPUT) not in rs.calls and nf.conntrack_dump() == ""
    assert_checksums(err)


def test_icmp_error_in_the_original_direction_is_translated_towards_the_endpoint() -> None:
    node = FakeNode()
    nf = Netfilter(node, FakeRuleset(kube_rules()))
    q = udp(CLIENT, 40053, DNS_VIP, 53)
    through(nf, q, OUT)
    r = udp(DNS, 53, CLIENT, 40053)
    through(nf, r, BACK)
    err = icmp_error(CLIENT, DNS_VIP, r)
    assert through(nf, err, OUT) == NF_ACCEPT
    assert err.ct is q.ct and err.ctinfo == 1
    pkt = err.scapy()
    assert (pkt[IP].src, pkt[IP].dst) == (CLIENT, DNS)
    inner = IP(bytes(err.data[err.l4off + 8:ETH_HLEN + err.ip_len]))
    assert (inner.src, inner[UDP].sport, inner.dst, inner[UDP].dport) == (DNS, 53, CLIENT, 40053)
    assert_checksums(err)


def test_a_reopened_connection_is_translated_afresh() -> None:
    node = FakeNode()
    rs = FakeRuleset(kube_rules())
    nf = Netfilter(node, rs)
    t = 0
    for from_client, flags, seq, ack, payload in s1_segments():
        t += MS
        node.sim.run(until=t)
        if from_client:
            through(nf, tcp(CLIENT, 40000, VIP, 80, flags, seq, ack, payload), OUT)
        else:
            through(nf, tcp(SERVER, 8080, CLIENT, 40000, flags, seq, ack, payload), BACK)
    node.sim.run(until=t + 10_000 * MS)
    syn = tcp(CLIENT, 40000, VIP, 80, "S", 777777)
    assert through(nf, syn, OUT) == NF_ACCEPT
    assert endpoints(syn)[1] == "10.0.2.2:8080" and syn.ct.tcp_state == "SYN_SENT"
    assert rs.calls[("nat", PREROUTING)] == 2 and len(nf.conntrack) == 1


def test_a_fragmented_ping_is_made_whole_then_its_id_nated() -> None:
    """nf_defrag_ipv4 makes the datagram whole before conntrack and NAT: the ping's id is remapped
    (another ping holds id 7) and its ICMP checksum, over the whole payload, stays right; the
    forwarding path cuts it again to its largest fragment (tests/test_kernel_defrag.py)."""
    node = FakeNode()
    nf = Netfilter(node, FakeRuleset({("nat", POSTROUTING): masquerade_all}))
    blocker = Frame(bytes(Ether() / IP(src="10.0.1.3", dst="8.8.8.8") / ICMP(type=8, id=7)))
    through(nf, blocker, OUT)
    big = IP(src=CLIENT, dst="8.8.8.8", id=0x5555) / ICMP(type=8, id=7) / (b"p" * 2000)
    frags = [Frame(bytes(Ether() / f)) for f in fragment(big, fragsize=1000)]
    assert [through(nf, f, OUT) for f in frags] == [NF_STOLEN, NF_STOLEN, NF_ACCEPT]
    whole = frags[2]
    assert int2ip(whole.saddr) == "10.100.0.11" and not whole.is_fragment
    ping = IP(whole.ip_bytes())
    assert ping[ICMP].id != 7 and bytes(ping[ICMP].payload) == b"p" * 2000
    for layer in (IP, ICMP):
        fresh = layer(bytes(ping[layer]))
        del fresh.chksum
        assert layer(bytes(fresh)).chksum == ping[layer].chksum


def test_icmp_error_with_a_bad_checksum_is_invalid_and_never_translated() -> None:
    node = FakeNode()
    nf = Netfilter(node, FakeRuleset(kube_rules()))
    q = udp(CLIENT, 40053, DNS_VIP, 53)
    through(nf, q, OUT)
    err = icmp_error(DNS, CLIENT, q)
    err.data[err.l4off + 2] ^= 0xFF
    before = bytes(err.data)
    assert through(nf, err, BACK) == NF_ACCEPT
    assert err.ct is None and "ct INVALID: bad icmp checksum" in err.notes and bytes(err.data) == before
    err.ct, err.ctinfo = q.ct, 4
    assert not nf.nat.icmp_reply_translation(err, q.ct, 4, POSTROUTING)
    assert bytes(err.data) == before
