"""Bulk data, loss and retransmission, the closing variants and TIME_WAIT."""
from __future__ import annotations

from scapy.layers.inet import IP, TCP

from pktemu.net.frame import ip2int
from pktemu.net.tcp_conn import TcpConnection
from pktemu.net.tcp_const import WSCALE
from pktemu.sim import MS, SECOND, US
from test_tcp_fakenode import FakeNet


def pair(delay: int = 20 * US) -> tuple[FakeNet, object, object]:
    net = FakeNet(delay=delay)
    return net, net.add("client", "10.0.1.2"), net.add("server", "10.0.2.2")


def serve(srv: object, port: int, payload: bytes, close: bool = True) -> list[TcpConnection]:
    accepted: list[TcpConnection] = []

    def on_accept(conn: TcpConnection) -> None:
        accepted.append(conn)
        conn.send(payload)
        if close:
            conn.close()
    srv.tcp.listen(port, on_accept)  # type: ignore[attr-defined]
    return accepted


BLOB = bytes(i * 7 & 0xFF for i in range(100_000))


def test_bulk_transfer_is_segmented_windowed_and_intact() -> None:
    net, cli, srv = pair()
    serve(srv, 80, BLOB)
    got = bytearray()
    eof: list[int] = []
    c = cli.tcp.connect(ip2int("10.0.2.2"), 80, on_data=got.extend, on_closed=lambda: eof.append(1))
    net.sim.run(until=5 * SECOND)
    assert bytes(got) == BLOB and eof == [1]
    data = [p for _t, w, p in net.packets(6) if w == "server" and len(p[TCP].payload)]
    sizes = [len(p[TCP].payload) for p in data]
    assert max(sizes) == 1448 and sum(sizes) == len(BLOB)
    assert all(s == 1448 for s in sizes[:-1])
    assert [p for p in data if p[TCP].flags & 0x08] == data[-1:]       # PSH only at the end of the write
    assert str(data[-1][TCP].flags) in ("PA", "FPA")
    # never more in flight than the client's window (63 << WSCALE)
    acked = 0
    for _t, w, p in net.packets(6):
        t = p[TCP]
        if w == "client" and t.flags & 0x10:
            acked = max(acked, t.ack)
        elif w == "server" and len(t.payload):
            assert t.seq + len(t.payload) - acked <= 63 << WSCALE
    acks = [p for _t, w, p in net.packets(6) if w == "client" and str(p[TCP].flags) == "A"]
    assert len(acks) < len(data)                          # every other segment once out of quickack
    c.close()


def test_lost_segment_is_retransmitted_after_three_sacked_segments_not_the_rto() -> None:
    """Linux 6.x (RACK, tests/test_kernel_tcp_recovery.py): once three segments after the hole are
    SACKed the hole is lost and resent at once; pktemu used to wait for the RTO (200 ms)."""
    net, cli, srv = pair()
    serve(srv, 80, BLOB[:20_000])
    lost: list[tuple[int, int]] = []

    def lose_third(ipb: bytes) -> bool:
        p = IP(ipb)
        if p.src == "10.0.2.2" and len(p[TCP].payload) and not lost:
            if p[TCP].seq - isn[0] == 1 + 2 * 1448:
                lost.append((net.sim.now, p[TCP].seq))
                return False
        return True
    isn: list[int] = []
    orig = net.deliver

    def deliver(sender, ipb):  # type: ignore[no-untyped-def]
        p = IP(ipb)
        if p.src == "10.0.2.2" and str(p[TCP].flags) == "SA":
            isn.append(p[TCP].seq)
        orig(sender, ipb)
    net.deliver = deliver  # type: ignore[method-assign]
    net.filter = lose_third
    got = bytearray()
    cli.tcp.connect(ip2int("10.0.2.2"), 80, on_data=got.extend)
    net.sim.run(until=10 * SECOND)
    assert bytes(got) == BLOB[:20_000]
    t_lost, seq = lost[0]
    again = [t for t, w, p in net.packets(6) if w == "server" and p[TCP].seq == seq and t > t_lost]
    assert again and again[0] - t_lost < 200 * MS
    acks = [p[TCP] for t, w, p in net.packets(6) if w == "client" and t_lost < t < again[0]]
    assert max(a.ack for a in acks) == seq
    sacked = [a for a in acks if a.ack == seq and any(k == "SAck" for k, _ in a.options)]
    assert len(sacked) >= 3                              # the dupthresh: three SACKed segments


def test_send_before_connected_rides_on_the_handshake_ack() -> None:
    net, cli, srv = pair()
    got = bytearray()

    def on_accept(conn: TcpConnection) -> None:
        conn.on_data = got.extend
    srv.tcp.listen(80, on_accept)
    c = cli.tcp.connect(ip2int("10.0.2.2"), 80)
    c.send(b"early")
    net.sim.run(until=MS)
    assert [str(p[TCP].flags) for _t, _w, p in net.packets(6)][:4] == ["S", "SA", "PA", "A"]
    assert bytes(got) == b"early"


def test_simultaneous_close_goes_through_closing_to_time_wait() -> None:
    net, cli, srv = pair()
    accepted = serve(srv, 80, b"", close=False)
    c = cli.tcp.connect(ip2int("10.0.2.2"), 80)
    net.sim.run(until=MS)
    s = accepted[0]
    c.close()
    s.close()
    assert c.state == s.state == "FIN_WAIT1"
    net.sim.run(until=2 * MS)
    tail = [(w, str(p[TCP].flags)) for _t, w, p in net.packets(6)][3:]
    assert sorted(tail) == [("client", "A"), ("client", "FA"), ("server", "A"), ("server", "FA")]
    assert c.state == s.state == "TIME_WAIT"
    net.sim.run(until=61 * SECOND)
    assert c.state == s.state == "CLOSED"


def test_time_wait_acks_a_retransmitted_fin_at_once() -> None:
    net, cli, srv = pair()
    accepted = serve(srv, 80, b"bye")
    c = cli.tcp.connect(ip2int("10.0.2.2"), 80, on_closed=lambda: c.close())
    net.sim.run(until=SECOND)
    s = accepted[0]
    assert s.state == "TIME_WAIT"
    client_fin = next(b for _t, w, b in net.log if w == "client" and IP(b)[TCP].flags & 0x01)
    n = len(net.log)
    at = net.sim.now
    srv.receive(client_fin)                              # the peer's FIN again
    new = [(t, w, IP(b)) for t, w, b in net.log[n:]]
    assert len(new) == 1 and new[0][0] == at and str(new[0][2][TCP].flags) == "A"
    assert new[0][2][TCP].ack == IP(client_fin)[TCP].seq + 1


def test_new_syn_takes_over_a_time_wait_socket() -> None:
    net, cli, srv = pair()
    accepted = serve(srv, 80, b"one")
    c = cli.tcp.connect(ip2int("10.0.2.2"), 80, sport=40000, on_closed=lambda: c.close())
    net.sim.run(until=SECOND)
    old = accepted[0]
    assert old.state == "TIME_WAIT"
    got = bytearray()
    cli.tcp.connect(ip2int("10.0.2.2"), 80, sport=40000, on_data=got.extend)
    net.sim.run(until=2 * SECOND)
    assert bytes(got) == b"one" and len(accepted) == 2
    assert accepted[1].iss == (old.snd_nxt + 65535 + 2) & 0xFFFFFFFF


def test_data_for_a_closed_socket_gets_a_rst() -> None:
    net, cli, srv = pair()
    accepted = serve(srv, 80, b"")
    errors: list[str] = []
    c = cli.tcp.connect(ip2int("10.0.2.2"), 80, on_error=errors.append,
                        on_closed=lambda: net.sim.schedule(MS, c.send, b"too late"))
    net.sim.run(until=SECOND)
    flags = [(w, str(p[TCP].flags)) for _t, w, p in net.packets(6)]
    assert flags[-2:] == [("client", "PA"), ("server", "R")]
    assert errors == ["EPIPE"] and accepted[0].state == "CLOSED"      # tcp_reset() in CLOSE_WAIT
