"""Stateful replay: TCP follows the live server, flows wait for answers, loops and timing."""
from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.inet import ICMP, IP, TCP
from scapy.layers.l2 import Ether
from scapy.utils import rdpcap, wrpcap

import datapaths
from pktemu.errors import PktemuError
from pktemu.io.pcapread import Record, read_capture
from pktemu.net.frame import checksum
from pktemu.replay.frames import parse
from pktemu.replay.split import Split, assign
from pktemu.replay.stats import ReplayStats
from pktemu.replay.tcpfollow import Need, TcpLive, plan
from pktemu.replay.timing import Timing
from pktemu.replay.run import ReplayOptions, replay
from pktemu.sim import MS, SECOND

CAPS = datapaths.CAPTURES
TOPO = str(datapaths.ROOT / "topologies" / "service-test.yaml")
HTTP_MAPS = ["141.142.228.5=10.0.1.2", "192.150.187.43=10.3.241.152"]


def run(tmp_path: Path, capture: str, maps: list[str], **kw: Any) -> tuple[ReplayStats, Path]:
    stats = replay(capture, TOPO, ReplayOptions("node1/veth-client", maps, **kw), str(tmp_path))
    return stats, Path(stats.out_dir)


def pcap(out: Path, point: str) -> list[Ether]:
    return list(rdpcap(str(out / "pcap" / f"{point}.pcap")))


def tcp_residual(raw: bytes) -> int:
    ihl = (raw[14] & 15) * 4
    ip = raw[14:]
    return checksum(ip[12:20] + b"\x00\x06" + (len(ip) - ihl).to_bytes(2, "big") + ip[ihl:])


def test_plan_records_what_each_client_segment_acknowledged() -> None:
    pkts = [parse(r) for r in read_capture(str(CAPS / "http_get_session.pcap")).records]
    flows = assign(pkts, Split("syn"))
    needs = plan(flows[0])
    assert sorted(needs) == [3, 4, 10, 11, 12, 14]              # the SYN (1) acknowledges nothing
    assert needs[3] == Need(0, False, True, 294_000)            # answered the SYN-ACK 0.294 ms later
    assert (needs[10].data, needs[11].data, needs[12].data) == (2896, 5007, 5007)
    assert not needs[12].fin and needs[14] == Need(5007, True, True, 144_000)


def server_segment(seq: int, flags: int, payload: bytes = b"", tsval: int | None = None) -> bytearray:
    opts = b"" if tsval is None else b"\x01\x01\x08\x0a" + struct.pack("!II", tsval, 0)
    tcp = struct.pack("!HHIIBBHHH", 80, 1000, seq, 0, (20 + len(opts)) // 4 << 4, flags, 1000, 0, 0)
    return bytearray(b"\0" * 14 + b"\x45" + b"\0" * 19 + tcp + opts + payload)


def feed(live: TcpLive, seg: bytearray) -> None:
    live.answer(seg, 34, len(seg))


def test_live_state_follows_in_order_answers_only() -> None:
    live = TcpLive()
    assert not live.ready(Need(0, False, True, 0))
    feed(live, server_segment(1000, 0x12, tsval=77))
    assert live.isn == 1000 and live.rcv_nxt == 1001 and live.tsval == 77
    feed(live, server_segment(1201, 0x18, b"x" * 50))            # a gap: not counted
    assert live.data == 0
    feed(live, server_segment(1001, 0x18, b"y" * 200, tsval=78))
    assert live.data == 200 and live.rcv_nxt == 1201 and live.tsval == 78
    assert live.ready(Need(150, False, True, 0)) and not live.ready(Need(300, False, True, 0))
    assert not live.ready(Need(200, True, True, 0))              # waits for the FIN it acknowledged
    assert live.ack_for(Need(150, False, True, 0)) == 1151
    assert live.ack_for(Need(5000, False, True, 0)) == 1201      # capped at what arrived
    feed(live, server_segment(1201, 0x11))
    assert live.fin and live.rcv_nxt == 1202 and live.ready(Need(5000, True, True, 0))
    assert live.ack_for(Need(5000, True, True, 0)) == 1202 and live.ack_for(Need(0, False, False, 0)) == 1202
    feed(live, server_segment(1202, 0x04))
    assert live.reset


@pytest.mark.parametrize("good", [True, False])
def test_rewrite_moves_ack_tsecr_and_blanks_sack(good: bool) -> None:
    opts = b"\x01\x01\x08\x0a" + struct.pack("!II", 5, 9) + b"\x01\x01\x05\x0a" + struct.pack("!II", 1, 2)
    tcp = bytearray(struct.pack("!HHIIBBHHH", 1000, 80, 1, 4242, (20 + len(opts)) // 4 << 4, 0x10, 500, 0, 0))
    tcp += opts
    ip = IP(src="10.0.1.2", dst="10.0.2.2", proto=6, len=20 + len(tcp))
    pseudo = bytes(ip)[12:20] + b"\x00\x06" + struct.pack("!H", len(tcp))
    struct.pack_into("!H", tcp, 16, checksum(pseudo + bytes(tcp)) ^ (0 if good else 0x5555))
    raw = bytes(Ether(dst="0a:58:0a:00:01:01", src="0a:58:0a:00:01:02") / ip) + bytes(tcp)
    before = tcp_residual(raw)
    live = TcpLive()
    feed(live, server_segment(7000, 0x12, tsval=31337))
    d = bytearray(raw)
    live.rewrite(d, parse(Record(1, 0, raw, len(raw))), Need(0, False, True, 0))
    out = Ether(bytes(d))
    assert out[TCP].ack == 7001 and out[TCP].seq == 1
    assert ("Timestamp", (5, 31337)) in out[TCP].options
    assert not [o for o in out[TCP].options if o[0] == "SAck"]
    assert tcp_residual(bytes(d)) == before and (before == 0) == good


def test_loops_open_new_flows_on_new_ports_and_each_completes(tmp_path: Path) -> None:
    stats, out = run(tmp_path, str(CAPS / "http_get_session.pcap"), HTTP_MAPS, loops=3, topspeed=True)
    assert [(f.loop, f.client, f.outcome) for f in stats.flows] == [
        (0, "10.0.1.2:59856", "complete"), (1, "10.0.1.2:59857", "complete"),
        (2, "10.0.1.2:59858", "complete")]
    assert stats.sent_packets == 21
    server = pcap(out, "server-eth0")
    for port in (59856, 59857, 59858):
        segs = [p for p in server if TCP in p and port in (p[TCP].sport, p[TCP].dport)]
        assert segs[0][TCP].flags == "S" and any(b"GET /" in bytes(p[TCP].payload) for p in segs)
        assert not any(p[TCP].flags & 0x04 for p in segs)


def test_at_topspeed_the_ack_still_waits_for_the_syn_ack(tmp_path: Path) -> None:
    stats, out = run(tmp_path, str(CAPS / "http_get_session.pcap"), HTTP_MAPS, topspeed=True)
    tcp = [p for p in pcap(out, "client-eth0") if TCP in p]
    assert [str(p[TCP].flags) for p in tcp[:3]] == ["S", "SA", "A"]
    assert tcp[2][TCP].ack == tcp[1][TCP].seq + 1 and tcp[2].time >= tcp[1].time
    assert stats.flows[0].outcome == "complete"


def test_a_refused_service_ends_the_flow(tmp_path: Path) -> None:
    stats, out = run(tmp_path, str(CAPS / "http_get_session.pcap"), ["141.142.228.5=10.0.1.2",
                                                                    "192.150.187.43=10.3.250.77"])
    reason = "connection refused by an ICMP error (type 3 code 3)"
    assert stats.flows[0].outcome == reason and stats.not_sent == {reason: 6} and stats.sent_packets == 1
    errors = [p for p in pcap(out, "client-eth0") if ICMP in p]
    assert len(errors) == 1 and errors[0][ICMP].type == 3 and errors[0][ICMP].code == 3


def test_a_segment_whose_answer_never_comes_leaves_after_the_timeout(tmp_path: Path) -> None:
    c, s = "192.168.0.2", "192.168.0.1"
    e = Ether(src="00:00:00:00:00:02", dst="00:00:00:00:00:01")
    f = Ether(src="00:00:00:00:00:01", dst="00:00:00:00:00:02")
    up, down = e / IP(src=c, dst=s), f / IP(src=s, dst=c)
    frames = [
        (0.000, up / TCP(sport=40001, dport=80, flags="S", seq=100)),
        (0.001, down / TCP(sport=80, dport=40001, flags="SA", seq=900, ack=101)),
        (0.002, up / TCP(sport=40001, dport=80, flags="A", seq=101, ack=901)),
        (0.003, up / TCP(sport=40001, dport=80, flags="PA", seq=101, ack=901) / b"GET / HTTP"),
        (0.004, down / TCP(sport=80, dport=40001, flags="PA", seq=901, ack=111) / (b"z" * 500)),
        (0.005, up / TCP(sport=40001, dport=80, flags="A", seq=111, ack=1401)),
    ]
    pkts = []
    for t, p in frames:
        p.time = 1_600_000_000 + t
        pkts.append(p)
    path = tmp_path / "half.pcap"
    wrpcap(str(path), pkts)
    stats, out = run(tmp_path, str(path), [f"{c}=10.0.1.2", f"{s}=10.3.241.152"], answer_timeout=300 * MS)
    sent = [p for p in pcap(out, "client-eth0") if TCP in p and p[IP].src == "10.0.1.2"]
    synack = next(p for p in pcap(out, "client-eth0") if TCP in p and p[TCP].flags == "SA")
    assert len(sent) == 4 and stats.flows[0].outcome == "complete"
    last = sent[-1]
    assert last[TCP].ack == synack[TCP].seq + 1                     # nothing more arrived: nothing more acked
    assert round(float(last.time - sent[0].time), 6) == pytest.approx(0.005 + 0.3, abs=1e-4)


def test_speed_pps_and_topspeed_on_the_virtual_clock(tmp_path: Path) -> None:
    maps = ["172.16.133.2=10.0.1.2", "172.217.11.78=10.0.2.2"]
    pings = str(CAPS / "icmp_echo_5pings.pcap")
    stats, _ = run(tmp_path / "a", pings, maps, speed=4.0)
    assert stats.seconds == pytest.approx(4.003199 / 4, abs=1e-6) and stats.timing == "speed x4"
    stats, _ = run(tmp_path / "b", pings, maps, pps=10.0)
    assert stats.seconds == pytest.approx(0.4) and stats.rates() is not None
    stats, _ = run(tmp_path / "c", pings, maps, topspeed=True)
    assert stats.seconds == 0 and stats.sent_packets == 5 and stats.rates() is None


def test_timing_offsets_and_checks() -> None:
    t = [10 * SECOND, 12 * SECOND, 11 * SECOND, 14 * SECOND]      # one timestamp goes backwards
    assert Timing().offsets(t) == [0, 2 * SECOND, 2 * SECOND, 4 * SECOND]
    assert Timing(speed=2.0).offsets(t) == [0, SECOND, SECOND, 2 * SECOND]
    assert Timing(pps=4.0).offsets(t) == [0, SECOND // 4, SECOND // 2, 3 * SECOND // 4]
    assert Timing(topspeed=True).offsets(t) == [0, 0, 0, 0] and Timing(topspeed=True).react(5) == 0
    bad: list[tuple[dict[str, Any], str]] = [
        ({"speed": 0.0}, "--speed 0.0"), ({"pps": -1.0}, "--pps -1.0"), ({"loops": 0}, "--loop 0"),
        ({"pps": 5.0, "topspeed": True}, "at most one")]
    for kw, msg in bad:
        with pytest.raises(PktemuError, match=msg):
            Timing(**kw)


def test_years_between_two_frames_cost_no_wall_time(tmp_path: Path) -> None:
    ping = Ether(dst="00:00:00:00:00:01") / IP(src="192.168.0.2", dst="192.168.0.1") / ICMP(id=7)
    first, second = ping.copy(), ping.copy()
    first.time, second.time = 1_000_000_000, 1_000_000_000 + 10 * 365 * 86400
    wrpcap(str(tmp_path / "decade.pcap"), [first, second])
    maps = ["192.168.0.2=10.0.1.2", "192.168.0.1=10.0.2.2"]
    stats, out = run(tmp_path, str(tmp_path / "decade.pcap"), maps)
    assert stats.sent_packets == 2 and stats.seconds == 10 * 365 * 86400
    assert len([p for p in pcap(out, "client-eth0") if ICMP in p and p[ICMP].type == 0]) == 2


def test_a_replay_that_would_outlive_pcap_timestamps_is_refused(tmp_path: Path) -> None:
    ping = Ether(dst="00:00:00:00:00:01") / IP(src="192.168.0.2", dst="192.168.0.1") / ICMP(id=7)
    first, second = ping.copy(), ping.copy()
    first.time, second.time = 0, 3_000_000_000
    wrpcap(str(tmp_path / "century.pcap"), [first, second])
    with pytest.raises(PktemuError, match=r"century.pcap: record 2: at recorded times the replay would run"):
        run(tmp_path / "out", str(tmp_path / "century.pcap"), [])
    assert not (tmp_path / "out").exists()
    stats, _ = run(tmp_path / "fast", str(tmp_path / "century.pcap"), [], speed=1000.0)
    assert stats.sent_packets == 2
