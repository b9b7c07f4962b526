"""UDP sockets: the datagram on the wire, delivery, binding, port unreachable and ICMP errors."""
from __future__ import annotations

import struct

import pytest
from scapy.layers.inet import ICMP, IP, UDP, UDPerror

from pktemu.net.frame import checksum, ip2int
from pktemu.net.tcp_errno import SockError
from pktemu.net.udp import EPHEMERAL_HIGH, EPHEMERAL_LOW, build
from pktemu.sim import US
from test_tcp_fakenode import FakeNet, reject


def pair() -> tuple[FakeNet, object, object]:
    net = FakeNet(delay=20 * US)
    return net, net.add("client", "10.0.1.2"), net.add("dns", "10.0.2.3")


def test_sendto_builds_df_ttl64_datagram_and_delivers_it() -> None:
    net, cli, dns = pair()
    got: list[tuple[bytes, int, int, int]] = []
    dns.udp.bind(53, lambda d, ip, port: got.append((d, ip, port, net.sim.now)))
    s = cli.udp.bind(40053, None)
    s.sendto(b"query", ip2int("10.0.2.3"), 53)
    net.sim.run()
    assert got == [(b"query", ip2int("10.0.1.2"), 40053, 20 * US)]
    p = IP(net.log[0][2])
    assert p.flags.DF and p.ttl == 64 and p.len == 20 + 8 + 5
    assert (p[UDP].sport, p[UDP].dport, p[UDP].len) == (40053, 53, 13)
    chk = p[UDP].chksum
    del p[UDP].chksum
    assert IP(bytes(p))[UDP].chksum == chk


def test_a_zero_checksum_is_sent_as_ffff_and_still_verifies() -> None:
    saddr, daddr = ip2int("10.0.1.2"), ip2int("10.0.2.3")
    data = b"ab\x00\x00"
    c = struct.unpack("!H", build(saddr, daddr, 1000, 53, data)[6:8])[0]
    data = b"ab" + struct.pack("!H", c)                 # this last word makes the sum 0xffff
    seg = build(saddr, daddr, 1000, 53, data)
    assert seg[6:8] == b"\xff\xff"
    pseudo = struct.pack("!IIBBH", saddr, daddr, 0, 17, len(seg))
    assert checksum(pseudo + seg) == 0
    net, cli, dns = pair()
    got: list[bytes] = []
    dns.udp.bind(53, lambda d, ip, port: got.append(d))
    cli.udp.bind(1000, None).sendto(data, daddr, 53)
    net.sim.run()
    assert got == [data]


def test_closed_port_answers_icmp_port_unreachable_quoting_the_datagram() -> None:
    net, cli, dns = pair()
    s = cli.udp.bind(40053, None)
    s.sendto(b"x" * 30, ip2int("10.0.2.3"), 5353)
    net.sim.run()
    icmp = net.packets(1)[0][2]
    assert icmp.src == "10.0.2.3" and icmp.dst == "10.0.1.2"
    assert (icmp[ICMP].type, icmp[ICMP].code) == (3, 3)
    assert icmp[UDPerror].sport == 40053 and icmp[UDPerror].dport == 5353
    assert ("udp_rcv", "no socket for port 5353") in dns.dropped


def test_icmp_errors_reach_only_connected_or_recverr_sockets() -> None:
    net, cli, _dns = pair()
    gw = net.add("gw", "10.0.1.1")
    reject(net, gw, "10.3.240.10", 3, 3)
    seen: dict[str, list[str]] = {"plain": [], "connected": [], "recverr": []}
    plain = cli.udp.bind(40001, None, on_error=seen["plain"].append)
    conn = cli.udp.bind(40002, None, on_error=seen["connected"].append)
    conn.connect(ip2int("10.3.240.10"), 53)
    rerr = cli.udp.bind(40003, None, on_error=seen["recverr"].append, recverr=True)
    plain.sendto(b"q", ip2int("10.3.240.10"), 53)
    conn.send(b"q")
    rerr.sendto(b"q", ip2int("10.3.240.10"), 53)
    net.sim.run()
    assert seen == {"plain": [], "connected": ["ECONNREFUSED"], "recverr": ["ECONNREFUSED"]}


def test_soft_icmp_error_reaches_only_recverr_sockets() -> None:
    net, cli, _dns = pair()
    gw = net.add("gw", "10.0.1.1")
    reject(net, gw, "10.3.240.10", 3, 1)                # host unreachable: not a hard error for UDP
    seen: list[str] = []
    seen_re: list[str] = []
    conn = cli.udp.bind(40002, None, on_error=seen.append)
    conn.connect(ip2int("10.3.240.10"), 53)
    rerr = cli.udp.bind(40003, None, on_error=seen_re.append, recverr=True)
    conn.send(b"q")
    rerr.sendto(b"q", ip2int("10.3.240.10"), 53)
    net.sim.run()
    assert seen == [] and seen_re == ["EHOSTUNREACH"]


def test_connected_socket_takes_only_its_peer() -> None:
    net, cli, dns = pair()
    other = net.add("other", "10.0.2.9")
    got: list[bytes] = []
    s = cli.udp.bind(4000, lambda d, ip, port: got.append(d))
    s.connect(ip2int("10.0.2.3"), 53)
    dns.udp.bind(53, None).sendto(b"from peer", ip2int("10.0.1.2"), 4000)
    other.udp.bind(53, None).sendto(b"from stranger", ip2int("10.0.1.2"), 4000)
    net.sim.run()
    assert got == [b"from peer"]
    assert any(p[ICMP].type == 3 for _t, _w, p in net.packets(1))


def test_bind_rules_and_ephemeral_ports() -> None:
    net, cli, _dns = pair()
    cli.udp.bind(53, None)
    with pytest.raises(SockError) as e:
        cli.udp.bind(53, None)
    assert e.value.errno_name == "EADDRINUSE" and "client" in str(e.value)
    with pytest.raises(SockError) as e:
        cli.udp.bind(54, None, addr=ip2int("10.9.9.9"))
    assert e.value.errno_name == "EADDRNOTAVAIL"
    ports = [cli.udp.bind(0, None).port for _ in range(20)]
    assert len(set(ports)) == 20 and all(EPHEMERAL_LOW <= p <= EPHEMERAL_HIGH for p in ports)
    s = cli.udp.bind(0, None)
    s.close()
    with pytest.raises(SockError):
        s.sendto(b"x", ip2int("10.0.2.3"), 53)
    net.unroutable.add(ip2int("192.0.2.1"))
    with pytest.raises(SockError) as e:
        cli.udp.bind(0, None).sendto(b"x", ip2int("192.0.2.1"), 53)
    assert e.value.errno_name == "ENETUNREACH"


def test_bad_checksum_is_dropped_silently() -> None:
    net, cli, dns = pair()
    got: list[bytes] = []
    dns.udp.bind(53, lambda d, ip, port: got.append(d))

    def corrupt(ipb: bytes) -> bool:
        b = bytearray(ipb)
        b[-1] ^= 0xFF
        dns.receive(bytes(b))
        return False
    net.filter = corrupt
    cli.udp.bind(1000, None).sendto(b"hello", ip2int("10.0.2.3"), 53)
    net.sim.run()
    assert got == [] and ("udp_rcv", "bad UDP checksum") in dns.dropped
    assert net.packets(1) == []
