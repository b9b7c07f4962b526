"""Conntrack through the Netfilter hook runner: tuples, UDP, ICMP, confirm, expiry, `conntrack -L`."""
from __future__ import annotations

from typing import Any, Callable

from scapy.layers.inet import ICMP, IP, TCP, UDP, fragment
from scapy.layers.l2 import Ether

from pktemu.net.frame import Frame, ip2int
from pktemu.netfilter.conntrack import Conn
from pktemu.netfilter.conntrack_tuple import CtTuple, frame_tuple, invert
from pktemu.netfilter.core import (
    FORWARD, INPUT, IP_CT_ESTABLISHED, IP_CT_ESTABLISHED_REPLY, IP_CT_NEW, IP_CT_RELATED_REPLY, IPS_ASSURED,
    IPS_SEEN_REPLY, NF_ACCEPT, NF_DROP, NF_STOLEN, POSTROUTING, PREROUTING, UNTRACKED, HookState,
)
from pktemu.net.ip_fragment import FRAG_MAX
from pktemu.netfilter.hooks import Netfilter
from pktemu.sim import MS, SECOND, Simulator

CLIENT, SERVER, DNS = "10.0.1.2", "10.0.2.2", "10.0.2.3"
Rule = Callable[[Frame, HookState], int]


class FakeNode:
    """The NodeView netfilter needs, on a real Simulator clock."""

    def __init__(self, name: str = "node2") -> None:
        self.name = name
        self.sysctls: dict[str, int] = {}      # the kernel's defaults
        self.sim = Simulator(seed=7)

    def is_local(self, addr: int) -> bool:
        return False

    def addr_type(self, addr: int) -> str:
        return "UNICAST"

    def masquerade_source(self, out_dev: str, daddr: int) -> int | None:
        return None

    def send_reject(self, frame: Frame, state: HookState, reject_with: str) -> None:
        raise AssertionError("no REJECT expected")

    def rng(self, name: str) -> Any:
        return self.sim.rng(f"{self.name}:{name}")

    def now(self) -> int:
        return self.sim.now

    def at(self, t_ns: int) -> None:
        self.sim.run(until=t_ns)


class FakeRuleset:
    """Stands in for the x_tables engine: per (table, hook) an optional rule, and call counts."""

    def __init__(self, tables: tuple[str, ...] = ("filter",),
                 rules: dict[tuple[str, str], Rule] | None = None) -> None:
        self.tables = set(tables)
        self.rules = rules or {}
        self.calls: dict[tuple[str, str], int] = {}

    def has_table(self, name: str) -> bool:
        return name in self.tables

    def traverse(self, table: str, frame: Frame, state: HookState) -> int:
        self.calls[table, state.hook] = self.calls.get((table, state.hook), 0) + 1
        rule = self.rules.get((table, state.hook))
        return rule(frame, state) if rule is not None else NF_ACCEPT


def udp(src: str, sport: int, dst: str, dport: int, payload: bytes = b"q" * 20) -> Frame:
    return Frame(bytes(Ether() / IP(src=src, dst=dst, flags="DF") / UDP(sport=sport, dport=dport) / payload))


def tcp(src: str, sport: int, dst: str, dport: int, flags: str, seq: int = 0, ack: int = 0,
        payload: bytes = b"") -> Frame:
    seg = TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack, window=64240)
    return Frame(bytes(Ether() / IP(src=src, dst=dst, flags="DF") / seg / payload))


def forward(nf: Netfilter, frame: Frame) -> int:
    """A routed packet: PREROUTING, FORWARD, POSTROUTING (a new pass: no conntrack yet)."""
    frame.ct = frame.ctinfo = None
    for hook, i, o in ((PREROUTING, "eth0", None), (FORWARD, "eth0", "cbr0"), (POSTROUTING, None, "cbr0")):
        v = nf.hook(hook, frame, i, o)
        if v != NF_ACCEPT:
            return v
    return NF_ACCEPT


def setup(rules: dict[tuple[str, str], Rule] | None = None) -> tuple[FakeNode, Netfilter, FakeRuleset]:
    node = FakeNode()
    rs = FakeRuleset(("filter",), rules)
    return node, Netfilter(node, rs), rs


# ---------------------------------------------------------------------- tuples
def test_tuples_of_frames_and_their_inverse() -> None:
    t = frame_tuple(udp(CLIENT, 40053, DNS, 53))
    assert t == CtTuple(17, ip2int(CLIENT), 40053, ip2int(DNS), 53)
    assert invert(t) == CtTuple(17, ip2int(DNS), 53, ip2int(CLIENT), 40053)
    echo = frame_tuple(Frame(bytes(Ether() / IP(src=CLIENT, dst=SERVER) / ICMP(type=8, id=77, seq=1))))
    assert echo is not None and echo.sport == 77 and echo.icmp_type == 8
    back = invert(echo)
    assert back is not None and back.icmp_type == 0 and back.sport == 77 and back.src == ip2int(SERVER)
    unreach = frame_tuple(Frame(bytes(Ether() / IP(src=CLIENT, dst=SERVER) / ICMP(type=9))))
    assert unreach is not None and invert(unreach) is None


# ---------------------------------------------------------------------- UDP
def test_udp_query_and_reply_is_not_assured_and_dumps_like_the_kernel() -> None:
    node, nf, _ = setup()
    q = udp(CLIENT, 40053, DNS, 53)
    assert forward(nf, q) == NF_ACCEPT
    assert q.ctinfo == IP_CT_NEW and "ct new udp" in q.notes
    node.at(1 * MS)
    r = udp(DNS, 53, CLIENT, 40053)
    assert forward(nf, r) == NF_ACCEPT
    assert r.ctinfo == IP_CT_ESTABLISHED_REPLY and r.ct is q.ct
    assert not r.ct.status & IPS_ASSURED and r.ct.status & IPS_SEEN_REPLY
    node.at(1 * MS + 1500 * MS)
    assert nf.conntrack_dump() == (
        "udp      17 28 src=10.0.1.2 dst=10.0.2.3 sport=40053 dport=53 src=10.0.2.3 dst=10.0.1.2 "
        "sport=53 dport=40053 mark=0 use=1\n")


def test_udp_unreplied_flag_and_expiry_after_30s() -> None:
    node, nf, _ = setup()
    forward(nf, udp(CLIENT, 40053, DNS, 53))
    node.at(5 * SECOND)
    assert nf.conntrack_dump() == (
        "udp      17 25 src=10.0.1.2 dst=10.0.2.3 sport=40053 dport=53 [UNREPLIED] src=10.0.2.3 "
        "dst=10.0.1.2 sport=53 dport=40053 mark=0 use=1\n")
    node.at(30 * SECOND)
    assert nf.conntrack_dump() == ""
    again = udp(CLIENT, 40053, DNS, 53)
    forward(nf, again)
    assert again.ctinfo == IP_CT_NEW


def test_udp_stream_becomes_assured_after_two_seconds_with_120s_timeout() -> None:
    node, nf, _ = setup()
    forward(nf, udp(CLIENT, 4000, DNS, 5000))
    node.at(100 * MS)
    forward(nf, udp(DNS, 5000, CLIENT, 4000))
    node.at(1 * SECOND)
    early = udp(CLIENT, 4000, DNS, 5000)
    forward(nf, early)
    assert early.ctinfo == IP_CT_ESTABLISHED and not early.ct.status & IPS_ASSURED
    node.at(2100 * MS)
    late = udp(CLIENT, 4000, DNS, 5000)
    forward(nf, late)
    assert late.ct.status & IPS_ASSURED and "ct udp stream [ASSURED]" in late.notes
    assert late.ct.remaining(node.now()) == 120 * SECOND
    assert "[ASSURED]" in nf.conntrack_dump()


# ---------------------------------------------------------------------- ICMP
def test_icmp_echo_entry_and_dump_format() -> None:
    node, nf, _ = setup()
    req = Frame(bytes(Ether() / IP(src=CLIENT, dst=SERVER) / ICMP(type=8, id=4242, seq=1)))
    forward(nf, req)
    node.at(10 * MS)
    rep = Frame(bytes(Ether() / IP(src=SERVER, dst=CLIENT) / ICMP(type=0, id=4242, seq=1)))
    forward(nf, rep)
    assert rep.ctinfo == IP_CT_ESTABLISHED_REPLY and rep.ct is req.ct
    node.at(900 * MS)
    assert nf.conntrack_dump() == (
        "icmp     1 29 src=10.0.1.2 dst=10.0.2.2 type=8 code=0 id=4242 src=10.0.2.2 dst=10.0.1.2 "
        "type=0 code=0 id=4242 mark=0 use=1\n")


def test_icmp_echo_reply_without_request_is_invalid() -> None:
    _, nf, _ = setup()
    rep = Frame(bytes(Ether() / IP(src=SERVER, dst=CLIENT) / ICMP(type=0, id=1)))
    assert forward(nf, rep) == NF_ACCEPT
    assert rep.ct is None and any(n.startswith("ct INVALID") for n in rep.notes)
    assert nf.conntrack_dump() == ""


def test_icmp_error_is_related_only_to_confirmed_entries() -> None:
    node, nf, _ = setup()
    q = udp(CLIENT, 40053, DNS, 53)
    forward(nf, q)
    err = Frame(bytes(Ether() / IP(src=DNS, dst=CLIENT) / ICMP(type=3, code=3) / q.ip_bytes()))
    forward(nf, err)
    assert err.ct is q.ct and err.ctinfo == IP_CT_RELATED_REPLY
    other = udp(CLIENT, 40054, DNS, 53)
    never_confirmed = Frame(bytes(Ether() / IP(src=DNS, dst=CLIENT) / ICMP(type=3, code=3)
                                  / other.ip_bytes()))
    forward(nf, never_confirmed)
    assert never_confirmed.ct is None
    spoofed = Frame(bytes(Ether() / IP(src=DNS, dst="10.9.9.9") / ICMP(type=3, code=3) / q.ip_bytes()))
    forward(nf, spoofed)
    assert spoofed.ct is None


# ---------------------------------------------------------------------- confirm / drop / activation
def test_drop_discards_the_unconfirmed_entry() -> None:
    dropped: list[Frame] = []

    def drop_first(frame: Frame, state: HookState) -> int:
        if not dropped:
            dropped.append(frame)
            return NF_DROP
        return NF_ACCEPT

    _, nf, _ = setup({("filter", FORWARD): drop_first})
    syn = tcp(CLIENT, 40000, SERVER, 8080, "S", seq=100)
    assert forward(nf, syn) == NF_DROP
    assert syn.ct is None and nf.conntrack_dump() == ""
    retry = tcp(CLIENT, 40000, SERVER, 8080, "S", seq=100)
    assert forward(nf, retry) == NF_ACCEPT
    assert retry.ctinfo == IP_CT_NEW and len(nf.conntrack) == 1


def test_local_delivery_is_confirmed_at_input() -> None:
    _, nf, _ = setup()
    syn = tcp(CLIENT, 40000, SERVER, 8080, "S")
    nf.hook(PREROUTING, syn, "eth0", None)
    assert isinstance(syn.ct, Conn) and not syn.ct.confirmed and len(nf.conntrack) == 0
    nf.hook(INPUT, syn, "eth0", None)
    assert syn.ct.confirmed and len(nf.conntrack) == 1


def test_no_ruleset_tracks_nothing() -> None:
    node = FakeNode("gw")
    nf = Netfilter(node, None)
    f = udp(CLIENT, 1, DNS, 2)
    assert forward(nf, f) == NF_ACCEPT
    assert f.ct is None and nf.conntrack_dump() == ""


def test_conntrack_in_runs_once_per_pass_and_untracked_is_left_alone() -> None:
    _, nf, _ = setup()
    f = udp(CLIENT, 1, DNS, 2)
    nf.hook(PREROUTING, f, "cbr0", None, physin="veth-client")
    ct = f.ct
    nf.hook(PREROUTING, f, "cbr0", None)
    assert f.ct is ct and f.notes.count("ct new udp") == 1
    raw2 = udp(CLIENT, 3, DNS, 4)
    raw2.ct = UNTRACKED
    for hook, i, o in ((PREROUTING, "eth0", None), (FORWARD, "eth0", "cbr0"), (POSTROUTING, None, "cbr0")):
        assert nf.hook(hook, raw2, i, o) == NF_ACCEPT
    assert raw2.ct is UNTRACKED and len(nf.conntrack) == 0


def test_a_conntrack_from_another_namespace_is_not_reused() -> None:
    _, nf1, _ = setup()
    _, nf2, _ = setup()
    f = udp(CLIENT, 1, DNS, 2)
    forward(nf1, f)
    foreign = f.ct
    for hook, i, o in ((PREROUTING, "eth0", None), (FORWARD, "eth0", "cbr0"), (POSTROUTING, None, "cbr0")):
        nf2.hook(hook, f, i, o)
    assert f.ct is not foreign and f.ct.owner is nf2.conntrack and len(nf2.conntrack) == 1


def test_dump_lists_entries_in_insertion_order() -> None:
    _, nf, _ = setup()
    forward(nf, udp(CLIENT, 40053, DNS, 53))
    forward(nf, tcp(CLIENT, 40000, SERVER, 8080, "S"))
    forward(nf, udp(CLIENT, 40054, DNS, 53))
    lines = nf.conntrack_dump().splitlines()
    assert [ln.split()[0] for ln in lines] == ["udp", "tcp", "udp"]
    assert "sport=40053" in lines[0] and "sport=40054" in lines[2]
    assert lines[1].startswith("tcp      6 120 SYN_SENT src=10.0.1.2 dst=10.0.2.2 sport=40000 dport=8080 "
                               "[UNREPLIED] src=10.0.2.2")


# ---------------------------------------------------------------------- fragments
def test_fragments_are_made_whole_before_conntrack_sees_them() -> None:
    """nf_defrag_ipv4 at PREROUTING (-400) holds each fragment, in whatever order they come, and the
    one that completes the datagram goes on whole, for conntrack and the rules; it remembers its
    largest fragment, to be cut again to on the way out (tests/test_kernel_defrag.py: Linux 6.18)."""
    _, nf, _ = setup()
    big = IP(src=CLIENT, dst=DNS, id=0x4321) / UDP(sport=5000, dport=6000) / (b"x" * 2000)
    frags = [Frame(bytes(Ether() / f)) for f in fragment(big, fragsize=1000)]
    assert len(frags) == 3 and frags[1].is_fragment
    assert [forward(nf, f) for f in (frags[2], frags[0], frags[1])] == [NF_STOLEN, NF_STOLEN, NF_ACCEPT]
    whole = frags[1]
    assert not whole.is_fragment and whole.ip_len == 2028 and whole.ctinfo == IP_CT_NEW
    assert whole.meta[FRAG_MAX] == 1020 and bytes(IP(whole.ip_bytes())[UDP].payload) == b"x" * 2000
    assert len(nf.conntrack) == 1
    lone = IP(src=CLIENT, dst=DNS, id=0x9999) / UDP(sport=5000, dport=6000) / (b"y" * 2000)
    tail = [Frame(bytes(Ether() / f)) for f in fragment(lone, fragsize=1000)][1]
    assert forward(nf, tail) == NF_STOLEN and tail.ct is None and len(nf.conntrack) == 1
