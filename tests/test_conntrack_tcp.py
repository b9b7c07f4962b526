"""The TCP tracker (nf_conntrack_proto_tcp.c state table) driven through the hook runner."""
from __future__ import annotations

from typing import Any

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from pktemu.net.frame import Frame
from pktemu.netfilter.core import (
    FORWARD, IP_CT_ESTABLISHED, IP_CT_ESTABLISHED_REPLY, IP_CT_NEW, IPS_ASSURED, NF_ACCEPT, POSTROUTING,
    PREROUTING, HookState,
)
from pktemu.netfilter.hooks import Netfilter
from pktemu.sim import MS, SECOND, Simulator

C, S = "10.0.1.2", "10.0.2.2"
PATH = ((PREROUTING, "eth0", None), (FORWARD, "eth0", "cbr0"), (POSTROUTING, None, "cbr0"))


class FakeNode:
    name = "node2"

    def __init__(self) -> None:
        self.sysctls: dict[str, int] = {}      # the kernel's defaults
        self.sim = Simulator(seed=3)

    def is_local(self, addr: int) -> bool:
        return False

    def addr_type(self, addr: int) -> str:
        return "UNICAST"

    def masquerade_source(self, out_dev: str, daddr: int) -> int | None:
        return None

    def send_reject(self, frame: Frame, state: HookState, reject_with: str) -> None:
        raise AssertionError("unexpected REJECT")

    def rng(self, name: str) -> Any:
        return self.sim.rng(name)

    def now(self) -> int:
        return self.sim.now


class FilterOnly:
    def has_table(self, name: str) -> bool:
        return name == "filter"

    def traverse(self, table: str, frame: Frame, state: HookState) -> int:
        return NF_ACCEPT


class Flow:
    """Sends segments of one TCP connection through a node and remembers what conntrack said."""

    def __init__(self) -> None:
        self.node = FakeNode()
        self.nf = Netfilter(self.node, FilterOnly())
        self.t = 0

    def seg(self, from_client: bool, flags: str, seq: int = 0, ack: int = 0, payload: bytes = b"",
            gap: int = MS) -> Frame:
        self.t += gap
        self.node.sim.run(until=self.t)
        src, sp, dst, dp = (C, 40000, S, 8080) if from_client else (S, 8080, C, 40000)
        f = Frame(bytes(Ether() / IP(src=src, dst=dst, flags="DF")
                        / TCP(sport=sp, dport=dp, flags=flags, seq=seq, ack=ack, window=64240) / payload))
        for hook, i, o in PATH:
            assert self.nf.hook(hook, f, i, o) == NF_ACCEPT
        return f

    def state(self) -> str | None:
        cts = list(self.nf.conntrack)
        return cts[0].tcp_state if cts else None


def run_s1(flow: Flow) -> list[Frame]:
    """The reference s1 exchange (client view): S, SA, A, PA, A, PA, A, FA (server first), FA, A."""
    c, s = 1000, 5000
    return [
        flow.seg(True, "S", c),
        flow.seg(False, "SA", s, c + 1),
        flow.seg(True, "A", c + 1, s + 1),
        flow.seg(True, "PA", c + 1, s + 1, b"G" * 99),
        flow.seg(False, "A", s + 1, c + 100),
        flow.seg(False, "PA", s + 1, c + 100, b"H" * 115),
        flow.seg(True, "A", c + 100, s + 116),
        flow.seg(False, "FA", s + 116, c + 100),
        flow.seg(True, "FA", c + 100, s + 117),
        flow.seg(False, "A", s + 117, c + 101),
    ]


def test_full_connection_walks_the_kernel_states_and_ends_time_wait_assured() -> None:
    flow = Flow()
    states: list[str | None] = []
    c, s = 1000, 5000
    script = [(True, "S", c, 0, b""), (False, "SA", s, c + 1, b""), (True, "A", c + 1, s + 1, b""),
              (True, "PA", c + 1, s + 1, b"G" * 99), (False, "A", s + 1, c + 100, b""),
              (False, "PA", s + 1, c + 100, b"H" * 115), (True, "A", c + 100, s + 116, b""),
              (False, "FA", s + 116, c + 100, b""), (True, "FA", c + 100, s + 117, b""),
              (False, "A", s + 117, c + 101, b"")]
    frames, assured = [], []
    for fc, fl, sq, ak, pl in script:
        frames.append(flow.seg(fc, fl, sq, ak, pl))
        states.append(flow.state())
        assured.append(bool(frames[-1].ct.status & IPS_ASSURED))
    assert states == ["SYN_SENT", "SYN_RECV", "ESTABLISHED", "ESTABLISHED", "ESTABLISHED", "ESTABLISHED",
                      "ESTABLISHED", "FIN_WAIT", "LAST_ACK", "TIME_WAIT"]
    assert [f.ctinfo for f in frames[:4]] == [IP_CT_NEW, IP_CT_ESTABLISHED_REPLY, IP_CT_ESTABLISHED,
                                              IP_CT_ESTABLISHED]
    assert "ct new tcp SYN_SENT" in frames[0].notes
    assert "ct ESTABLISHED [ASSURED]" in frames[2].notes
    assert assured == [False, False] + [True] * 8
    assert all(f.ct is frames[0].ct for f in frames)
    assert "ct TIME_WAIT" in frames[9].notes
    flow.node.sim.run(until=flow.t + 1500 * MS)
    assert flow.nf.conntrack_dump() == (
        "tcp      6 118 TIME_WAIT src=10.0.1.2 dst=10.0.2.2 sport=40000 dport=8080 src=10.0.2.2 "
        "dst=10.0.1.2 sport=8080 dport=40000 [ASSURED] mark=0 use=1\n")
    flow.node.sim.run(until=flow.t + 120 * SECOND)
    assert flow.nf.conntrack_dump() == ""


def test_established_timeout_is_five_days_and_unacked_data_caps_it() -> None:
    flow = Flow()
    flow.seg(True, "S", 1)
    flow.seg(False, "SA", 9, 2)
    a = flow.seg(True, "A", 2, 10)
    assert a.ct.remaining(flow.node.now()) == 432000 * SECOND
    data = flow.seg(True, "PA", 2, 10, b"x" * 10)
    assert data.ct.remaining(flow.node.now()) == 300 * SECOND
    acked = flow.seg(False, "A", 10, 12)
    assert acked.ct.remaining(flow.node.now()) == 432000 * SECOND


def test_syn_retransmit_does_not_refresh_the_timeout() -> None:
    flow = Flow()
    first = flow.seg(True, "S", 1)
    again = flow.seg(True, "S", 1, gap=3 * SECOND)
    assert again.ct is first.ct and again.ctinfo == IP_CT_NEW
    assert first.ct.remaining(flow.node.now()) == 117 * SECOND


def test_mid_stream_pickup_and_invalid_segments() -> None:
    flow = Flow()
    ack = flow.seg(True, "A", 50, 60)
    assert ack.ctinfo == IP_CT_NEW and flow.state() == "ESTABLISHED"
    assert ack.ct.remaining(flow.node.now()) == 300 * SECOND
    other = Flow()
    synack = other.seg(False, "SA", 5, 6)
    fin_only = other.seg(True, "F", 5)
    synfin = other.seg(True, "SF", 5)
    assert synack.ct is None and fin_only.ct is None and synfin.ct is None
    assert any("invalid tcp flag" in n for n in fin_only.notes)
    assert other.nf.conntrack_dump() == ""
    third = Flow()
    third.seg(True, "S", 1)
    early_ack = third.seg(True, "A", 2, 1)
    assert early_ack.ct is None and third.state() == "SYN_SENT"


def test_rst_as_the_only_answer_kills_the_entry_but_keeps_the_packet_tracked() -> None:
    flow = Flow()
    syn = flow.seg(True, "S", 1)
    rst = flow.seg(False, "RA", 0, 2)
    assert rst.ct is syn.ct and rst.ctinfo == IP_CT_ESTABLISHED_REPLY
    assert flow.nf.conntrack_dump() == ""


def test_rst_in_established_closes_with_ten_seconds() -> None:
    flow = Flow()
    flow.seg(True, "S", 1)
    flow.seg(False, "SA", 9, 2)
    flow.seg(True, "A", 2, 10)
    rst = flow.seg(False, "R", 10)
    assert flow.state() == "CLOSE" and rst.ct.remaining(flow.node.now()) == 10 * SECOND


def test_syn_on_time_wait_reopens_as_a_new_connection() -> None:
    flow = Flow()
    frames = run_s1(flow)
    old = frames[-1].ct
    assert flow.state() == "TIME_WAIT"
    syn = flow.seg(True, "S", 90000, gap=5 * SECOND)
    assert syn.ct is not old and syn.ctinfo == IP_CT_NEW
    assert any("reopens" in n for n in syn.notes)
    assert flow.state() == "SYN_SENT" and len(flow.nf.conntrack) == 1


def test_syn_in_established_is_ignored_and_synack_resynchronises() -> None:
    flow = Flow()
    flow.seg(True, "S", 1)
    flow.seg(False, "SA", 9, 2)
    flow.seg(True, "A", 2, 10)
    syn = flow.seg(True, "S", 777)
    assert syn.ct is not None and flow.state() == "ESTABLISHED"
    assert any("ignored" in n for n in syn.notes)
    synack = flow.seg(False, "SA", 4000, 778)
    assert flow.state() == "SYN_RECV" and synack.ct is syn.ct
