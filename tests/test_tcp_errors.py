"""TCP failure paths: RST for nobody, refused and unreachable connects, timeouts, resets, bind errors."""
from __future__ import annotations

import pytest
from scapy.layers.inet import ICMP, IP, TCP

from pktemu.net.frame import ip2int
from pktemu.net.tcp import EPHEMERAL_HIGH, EPHEMERAL_LOW
from pktemu.net.tcp_conn import TcpConnection
from pktemu.net.tcp_errno import SockError
from pktemu.sim import MS, SECOND, US
from test_tcp_fakenode import FakeNet, reject


def pair(delay: int = 20 * US) -> tuple[FakeNet, object, object]:
    net = FakeNet(delay=delay)
    return net, net.add("client", "10.0.1.2"), net.add("server", "10.0.2.2")


def test_syn_to_closed_port_gets_rst_ack_and_econnrefused() -> None:
    net, cli, srv = pair()
    errors: list[tuple[str, int]] = []
    c = cli.tcp.connect(ip2int("10.0.2.2"), 81, sport=40000,
                        on_error=lambda e: errors.append((e, net.sim.now)))
    net.sim.run()
    syn, rst = [p for _t, _w, p in net.packets(6)]
    assert str(rst[TCP].flags) == "RA"
    assert rst[TCP].seq == 0 and rst[TCP].ack == syn[TCP].seq + 1
    assert rst[TCP].window == 0 and rst.len == 40 and rst[TCP].options == []
    assert (rst.src, rst[TCP].sport, rst[TCP].dport) == ("10.0.2.2", 81, 40000)
    assert rst.flags.DF and rst.ttl == 64
    assert errors == [("ECONNREFUSED", 40 * US)]
    assert c.state == "CLOSED" and cli.tcp.connections() == []
    assert ("tcp_v4_rcv", "no socket for port 81") in srv.dropped


def test_segment_for_unknown_connection_gets_rst_seq_equal_ack() -> None:
    net, cli, srv = pair()
    lst = srv.tcp.listen(80, lambda conn: None)
    c = cli.tcp.connect(ip2int("10.0.2.2"), 80)
    net.sim.run(until=MS)
    assert c.state == "ESTABLISHED"
    server_conn = srv.tcp.connections()[0]
    server_conn.done()                        # the server forgets the connection (like a reboot)
    lst.close()
    c.send(b"hello")
    net.sim.run(until=2 * MS)
    rst = [p for _t, w, p in net.packets(6) if w == "server"][-1]
    data = [p for _t, w, p in net.packets(6) if w == "client"][-1]
    assert str(rst[TCP].flags) == "R"
    assert rst[TCP].seq == data[TCP].ack and rst[TCP].ack == 0
    assert c.state == "CLOSED" and c.error == "ECONNRESET"


def test_syn_retransmits_at_1_3_7_15_31_63_then_etimedout_at_127s() -> None:
    net, cli, _srv = pair()
    net.filter = lambda ipb: False            # a black hole
    errors: list[tuple[str, int]] = []
    cli.tcp.connect(ip2int("10.0.2.2"), 80, on_error=lambda e: errors.append((e, net.sim.now)))
    net.sim.run(until=200 * SECOND)
    times = [t for t, _w, _p in net.packets(6)]
    assert times == [s * SECOND for s in (0, 1, 3, 7, 15, 31, 63)]
    syns = [p[TCP] for _t, _w, p in net.packets(6)]
    assert len({s.seq for s in syns}) == 1 and all(str(s.flags) == "S" for s in syns)
    tsvals = [dict(s.options)["Timestamp"][0] for s in syns]
    assert [v - tsvals[0] for v in tsvals] == [s * 1000 for s in (0, 1, 3, 7, 15, 31, 63)]
    assert errors == [("ETIMEDOUT", 127 * SECOND)]


def test_close_in_syn_sent_sends_nothing() -> None:
    net, cli, _srv = pair()
    net.filter = lambda ipb: False
    c = cli.tcp.connect(ip2int("10.0.2.2"), 80)
    net.sim.schedule(800 * MS, c.close)
    net.sim.run(until=5 * SECOND)
    assert len(net.packets(6)) == 1 and c.state == "CLOSED"


@pytest.mark.parametrize("icmp_type,code,errno_name", [
    (3, 3, "ECONNREFUSED"), (3, 1, "EHOSTUNREACH"), (3, 0, "ENETUNREACH"), (3, 10, "EHOSTUNREACH"),
    (3, 13, "EHOSTUNREACH"), (3, 9, "ENETUNREACH"), (11, 0, "EHOSTUNREACH"), (3, 2, "ENOPROTOOPT"),
])
def test_icmp_error_in_syn_sent_fails_the_connect_at_once(icmp_type: int, code: int, errno_name: str) -> None:
    net, cli, _srv = pair()
    gw = net.add("gw", "10.0.1.1")
    reject(net, gw, "10.3.250.77", icmp_type, code)
    errors: list[tuple[str, int]] = []
    c = cli.tcp.connect(ip2int("10.3.250.77"), 80, sport=40000,
                        on_error=lambda e: errors.append((e, net.sim.now)))
    net.sim.run(until=5 * SECOND)
    assert errors == [(errno_name, 25 * US)]            # 5 us to answer + 20 us on the wire
    assert c.state == "CLOSED"
    assert len([p for _t, w, p in net.packets(6) if w == "client"]) == 1   # no SYN retransmission
    icmp = net.packets(1)[0][2]
    assert icmp[ICMP].type == icmp_type and icmp.src == "10.0.1.1"


def test_icmp_quoting_another_sequence_or_fragmentation_needed_is_ignored() -> None:
    net, cli, _srv = pair()
    gw = net.add("gw", "10.0.1.1")
    reject(net, gw, "10.3.250.77", 3, 4)
    c = cli.tcp.connect(ip2int("10.3.250.77"), 80)
    net.sim.run(until=500 * MS)
    assert c.state == "SYN_SENT"


def test_icmp_error_when_established_is_only_soft() -> None:
    net, cli, srv = pair()
    srv.tcp.listen(80, lambda conn: None)
    errors: list[str] = []
    c = cli.tcp.connect(ip2int("10.0.2.2"), 80, on_error=errors.append)
    net.sim.run(until=MS)
    gw = net.add("gw", "10.0.1.1")
    reject(net, gw, "10.0.2.2", 3, 1)
    c.send(b"data")
    net.sim.run(until=100 * MS)
    assert c.state == "ESTABLISHED" and errors == [] and c.soft_err == "EHOSTUNREACH"
    net.sim.run(until=2000 * SECOND)
    assert errors == ["EHOSTUNREACH"]                   # reported when the retransmissions give up


def test_rst_in_established_gives_econnreset_and_out_of_window_rst_a_challenge_ack() -> None:
    net, cli, srv = pair()
    accepted: list[TcpConnection] = []
    srv.tcp.listen(80, accepted.append)
    errors: list[str] = []
    c = cli.tcp.connect(ip2int("10.0.2.2"), 80, on_error=errors.append)
    net.sim.run(until=MS)
    s = accepted[0]
    s.snd_nxt = (s.snd_nxt + 100) & 0xFFFFFFFF          # its RST lands in the window, but not at rcv_nxt
    s.abort()
    net.sim.run(until=2 * MS)
    tail = [(w, str(p[TCP].flags), p[TCP].seq, p[TCP].ack) for _t, w, p in net.packets(6)][-3:]
    # RFC 5961: the in-window RST gets a challenge ACK; the server, which has forgotten the
    # connection, answers that with a RST at exactly rcv_nxt, and that one is accepted.
    assert [x[:2] for x in tail] == [("server", "RA"), ("client", "A"), ("server", "R")]
    assert tail[0][2] == (tail[1][3] + 100) & 0xFFFFFFFF and tail[2][2] == tail[1][3]
    assert errors == ["ECONNRESET"] and c.state == "CLOSED"
    net2, cli2, srv2 = pair()
    acc2: list[TcpConnection] = []
    srv2.tcp.listen(80, acc2.append)
    err2: list[str] = []
    c2 = cli2.tcp.connect(ip2int("10.0.2.2"), 80, on_error=err2.append)
    net2.sim.run(until=MS)
    acc2[0].abort()
    net2.sim.run(until=2 * MS)
    rst = [p for _t, w, p in net2.packets(6) if w == "server"][-1]
    assert str(rst[TCP].flags) == "RA" and [o[0] for o in rst[TCP].options] == ["NOP", "NOP", "Timestamp"]
    assert err2 == ["ECONNRESET"] and c2.state == "CLOSED"


def test_bind_errors() -> None:
    net, cli, srv = pair()
    srv.tcp.listen(8080, lambda conn: None)
    with pytest.raises(SockError) as e:
        srv.tcp.listen(8080, lambda conn: None)
    assert e.value.errno_name == "EADDRINUSE" and "server" in str(e.value) and "8080" in str(e.value)
    with pytest.raises(SockError) as e:
        srv.tcp.connect(ip2int("10.0.1.2"), 80, sport=8080)
    assert e.value.errno_name == "EADDRINUSE"
    cli.tcp.connect(ip2int("10.0.2.2"), 8080, sport=40000)
    with pytest.raises(SockError) as e:
        cli.tcp.connect(ip2int("10.0.2.2"), 8080, sport=40000)
    assert e.value.errno_name == "EADDRNOTAVAIL"
    cli.tcp.connect(ip2int("10.0.2.2"), 8081, sport=40000)  # same port, other peer: fine (SO_REUSEADDR)
    net.unroutable.add(ip2int("192.0.2.1"))
    with pytest.raises(SockError) as e:
        cli.tcp.connect(ip2int("192.0.2.1"), 80)
    assert e.value.errno_name == "ENETUNREACH"


def test_ephemeral_ports_are_even_in_range_distinct_and_seeded() -> None:
    def ports(seed: int) -> list[int]:
        net = FakeNet(seed=seed)
        cli = net.add("client", "10.0.1.2")
        net.add("server", "10.0.2.2")
        return [cli.tcp.connect(ip2int("10.0.2.2"), 80).sport for _ in range(50)]
    a = ports(3)
    assert all(EPHEMERAL_LOW <= p <= EPHEMERAL_HIGH and p % 2 == 0 for p in a)
    assert len(set(a)) == 50
    assert a == ports(3) and a != ports(4)


def test_retransmitted_syn_ack_when_the_ack_is_lost() -> None:
    net, cli, srv = pair()
    accepted: list[TcpConnection] = []
    srv.tcp.listen(80, accepted.append)
    dropped = []

    def lose_first_ack(ipb: bytes) -> bool:
        p = IP(ipb)
        if p.src == "10.0.1.2" and str(p[TCP].flags) == "A" and not dropped:
            dropped.append(p)
            return False
        return True
    net.filter = lose_first_ack
    c = cli.tcp.connect(ip2int("10.0.2.2"), 80)
    net.sim.run(until=5 * SECOND)
    flags = [(t, w, str(p[TCP].flags)) for t, w, p in net.packets(6)]
    assert flags[:3] == [(0, "client", "S"), (20 * US, "server", "SA"), (40 * US, "client", "A")]
    assert flags[3] == (20 * US + SECOND, "server", "SA")   # SYN-ACK again after 1 s
    assert flags[4] == (40 * US + SECOND, "client", "A")    # dup ACK for the old SYN-ACK
    assert c.state == "ESTABLISHED" and len(accepted) == 1 and accepted[0].state == "ESTABLISHED"
