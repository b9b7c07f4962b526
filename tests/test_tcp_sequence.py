"""The kernel reference's 10-segment HTTP exchange, segment by segment, on two TcpStacks."""
from __future__ import annotations

import json
import os

import pytest
from scapy.layers.inet import IP, TCP

from pktemu.net.frame import ip2int
from pktemu.net.tcp_conn import TcpConnection
from pktemu.sim import MS, SECOND, US
from test_tcp_fakenode import FakeNet, tcp_summary

import datapaths

REF = str(datapaths.ORACLE_REF / "summary.json")
GET = (b"GET / HTTP/1.1\r\nHost: service-test\r\nUser-Agent: pktemu-client/1\r\nAccept: */*\r\n"
       b"Connection: close\r\n\r\n")
BODY = b"hello from server-pod 10.0.2.2\n"
RESP = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 31\r\nConnection: close\r\n\r\n"
        + BODY)

EXPECTED = [  # direction, flags, ip_len, payload, rel seq, rel ack (summary.txt, client-eth0)
    ("c>s", "S", 60, 0, 0, 0), ("s>c", "SA", 60, 0, 0, 1), ("c>s", "A", 52, 0, 1, 1),
    ("c>s", "PA", 151, 99, 1, 1), ("s>c", "A", 52, 0, 1, 100), ("s>c", "PA", 167, 115, 1, 100),
    ("c>s", "A", 52, 0, 100, 116), ("s>c", "FA", 52, 0, 116, 100), ("c>s", "FA", 52, 0, 100, 117),
    ("s>c", "A", 52, 0, 117, 101),
]


def run_exchange(seed: int = 1, delay: int = 20 * US) -> tuple[FakeNet, dict]:
    """Server answers 70 us after the request and closes 80 us later; the client closes on EOF."""
    net = FakeNet(seed=seed, delay=delay)
    cli = net.add("client", "10.0.1.2")
    srv = net.add("server", "10.0.2.2")
    out: dict = {"client_rx": bytearray(), "server_rx": bytearray(), "events": []}

    def on_accept(conn: TcpConnection) -> None:
        out["server_conn"] = conn

        def on_data(d: bytes) -> None:
            out["server_rx"].extend(d)
            if b"\r\n\r\n" in out["server_rx"]:
                net.sim.schedule(70 * US, conn.send, RESP)
                net.sim.schedule(150 * US, conn.close)
        conn.on_data = on_data

    srv.tcp.listen(8080, on_accept)

    def connected(conn: TcpConnection) -> None:
        out["events"].append(("connected", net.sim.now))
        net.sim.schedule(55 * US, conn.send, GET)

    def closed() -> None:
        out["events"].append(("eof", net.sim.now))
        c.close()

    c = cli.tcp.connect(ip2int("10.0.2.2"), 8080, sport=40000, on_connected=connected,
                        on_data=out["client_rx"].extend, on_closed=closed,
                        on_error=lambda e: out["events"].append(("error", e)))
    out["client_conn"] = c
    out["client"], out["server"] = cli, srv
    net.sim.run(until=2 * SECOND)
    return net, out


def test_ten_segments_flags_lengths_and_relative_numbers() -> None:
    net, out = run_exchange()
    assert tcp_summary(net, "client") == EXPECTED
    assert bytes(out["client_rx"]) == RESP
    assert bytes(out["server_rx"]) == GET
    assert len(GET) == 99 and len(RESP) == 115


def test_matches_the_kernel_reference_record_for_record() -> None:
    if not os.path.exists(REF):
        pytest.skip("kernel reference not available")
    ref = json.load(open(REF))["scenarios"]["s1-clusterip"]["interfaces"]["server-eth0"]["packets"]
    ref = [p for p in ref if p["proto"] == "TCP"]
    net, _ = run_exchange()
    mine = [p for _t, _w, p in net.packets(6)]
    assert len(mine) == len(ref) == 10
    isn = {}
    for p in mine:
        isn.setdefault(p.src, p[TCP].seq)
    for r, p in zip(ref, mine, strict=True):
        t = p[TCP]
        other = next(k for k in isn if k != p.src)
        assert str(t.flags) == r["flags"]
        assert p.len == r["ip_len"]
        assert len(t.payload) == r["tcp_len"]
        assert (t.seq - isn[p.src]) & 0xFFFFFFFF == r["seq"]
        assert ((t.ack - isn[other]) & 0xFFFFFFFF if t.flags & 0x10 else 0) == r["ack"]
        assert t.window == r["win"]
        assert bool(p.flags & 2) == r["df"] and p.ttl == 64


def test_options_are_linux_order_and_size() -> None:
    net, _ = run_exchange()
    pkts = [p for _t, _w, p in net.packets(6)]
    syn, synack = pkts[0][TCP], pkts[1][TCP]
    assert [o[0] for o in syn.options] == ["MSS", "SAckOK", "Timestamp", "NOP", "WScale"]
    assert dict((k, v) for k, v in syn.options if k in ("MSS", "WScale")) == {"MSS": 1460, "WScale": 10}
    assert syn.dataofs == 10 and synack.dataofs == 10
    assert dict(syn.options)["Timestamp"][1] == 0
    assert [o[0] for o in synack.options] == ["MSS", "SAckOK", "Timestamp", "NOP", "WScale"]
    assert dict(synack.options)["Timestamp"][1] == dict(syn.options)["Timestamp"][0]
    assert (syn.window, synack.window) == (64240, 65160)
    assert raw_options(pkts[0]) == bytes.fromhex("020405b4 0402080a".replace(" ", "")) + \
        raw_options(pkts[0])[8:16] + bytes.fromhex("0103030a")
    for p in pkts[2:]:
        assert p[TCP].dataofs == 8
        assert [o[0] for o in p[TCP].options] == ["NOP", "NOP", "Timestamp"]


def raw_options(p: IP) -> bytes:
    raw = bytes(p[TCP])
    return raw[20:p[TCP].dataofs * 4]


def test_timestamps_echo_the_peer_and_count_milliseconds() -> None:
    net, _ = run_exchange(delay=3 * MS)
    pkts = [(t, p) for t, _w, p in net.packets(6)]
    last_val: dict[str, int] = {}
    for _t, p in pkts:
        last_val[p.src] = dict(p[TCP].options)["Timestamp"][0]
    c_first = dict(pkts[0][1][TCP].options)["Timestamp"][0]
    c_last = dict(pkts[-2][1][TCP].options)["Timestamp"][0]
    assert (c_last - c_first) & 0xFFFFFFFF == (pkts[-2][0] - pkts[0][0]) // MS
    for i in range(2, len(pkts)):
        _t, p = pkts[i]
        ecr = dict(p[TCP].options)["Timestamp"][1]
        peer_vals = [dict(q[TCP].options)["Timestamp"][0] for _tt, q in pkts[:i] if q.src != p.src]
        assert ecr == peer_vals[-1]


def test_isn_and_ports_come_from_the_seed() -> None:
    a, _ = run_exchange(seed=7)
    b, _ = run_exchange(seed=7)
    c, _ = run_exchange(seed=8)
    seqs = lambda net: [p[TCP].seq for _t, _w, p in net.packets(6)][:2]  # noqa: E731
    assert seqs(a) == seqs(b)
    assert seqs(a) != seqs(c)


def test_states_after_the_exchange() -> None:
    net, out = run_exchange()
    assert out["client_conn"].state == "CLOSED"            # LAST_ACK -> CLOSED on the final ACK
    assert out["server_conn"].state == "TIME_WAIT"         # the side that closed first
    assert out["server"].tcp.ss() == ["LISTEN *:8080 *:*", "TIME-WAIT 10.0.2.2:8080 10.0.1.2:40000"]
    net.sim.run(until=61 * SECOND)
    assert out["server_conn"].state == "CLOSED"
    assert out["server"].tcp.connections() == []
    assert [e[0] for e in out["events"]] == ["connected", "eof"]


def test_fin_ack_is_delayed_40ms_when_the_app_does_not_close() -> None:
    """Receiving a FIN enters pingpong mode: its ACK waits for the delayed-ACK timer."""
    net = FakeNet(delay=20 * US)
    cli, srv = net.add("client", "10.0.1.2"), net.add("server", "10.0.2.2")

    def on_accept(conn: TcpConnection) -> None:
        conn.send(b"x" * 10)
        conn.close()
    srv.tcp.listen(80, on_accept)
    cli.tcp.connect(ip2int("10.0.2.2"), 80, on_data=lambda d: None)
    net.sim.run(until=SECOND)
    log = [(t, who, str(p[TCP].flags), p[TCP].seq, p[TCP].ack) for t, who, p in net.packets(6)]
    data = next(x for x in log if x[1] == "server" and x[2] == "PA")
    fin = next(x for x in log if x[1] == "server" and "F" in x[2])
    assert fin[0] == data[0]                       # write then close: data and FIN leave together
    acks = [(t - fin[0] - 20 * US, ack) for t, who, f, _seq, ack in log if who == "client" and t > fin[0]]
    # the data is ACKed at once (quickack after the first data), the FIN only on the 40 ms timer
    assert acks == [(0, fin[3]), (40 * MS, fin[3] + 1)]
