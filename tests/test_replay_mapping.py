"""--map, the MAC rewrite, checksums through the rewrite, and the client/server split."""
from __future__ import annotations

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, UDPerror
from scapy.layers.l2 import ARP, Dot1Q, Ether

import datapaths
from pktemu.errors import PktemuError
from pktemu.io.pcapread import Record, read_capture
from pktemu.io.topofile import load_topology
from pktemu.net.frame import checksum, ip2int
from pktemu.network import Network
from pktemu.replay.frames import Pkt, bad_checksum, parse
from pktemu.replay.mapping import AddressMap, Neighbours, Rewriter
from pktemu.replay.split import Split, assign, parse_split

CAPS = datapaths.CAPTURES
CLIENT_MAC, GW_MAC = "0a:58:0a:00:01:02", "0a:58:0a:00:01:01"


def pkt(frame: Ether, n: int = 1) -> Pkt:
    raw = bytes(frame)
    return parse(Record(n, n * 1000, raw, len(raw)))


@pytest.fixture(scope="module")
def rewriter() -> Rewriter:
    net = Network(load_topology(str(datapaths.ROOT / "topologies" / "service-test.yaml")))
    inject = net.device("node1/veth-client")
    peer = net.device("client/eth0")
    amap = AddressMap(["192.168.1.7=10.0.1.2", "192.168.9.0/24=10.0.2.0/24", "172.16.0.0/12=10.3.241.152"])
    return Rewriter(amap, Neighbours(net, peer.node, peer, inject))


def test_address_map_rules() -> None:
    m = AddressMap(["192.168.1.0/24=10.0.1.0/24", "192.168.1.7=10.9.9.9", "172.16.0.0/12=10.3.241.152"])
    assert m.map(ip2int("192.168.1.42")) == ip2int("10.0.1.42")           # host bits kept
    assert m.map(ip2int("192.168.1.7")) == ip2int("10.9.9.9")              # the longest prefix wins
    assert m.map(ip2int("172.20.1.2")) == ip2int("10.3.241.152")           # a network onto one address
    assert m.map(ip2int("8.8.8.8")) == ip2int("8.8.8.8") and m.lookup(ip2int("8.8.8.8")) is None


@pytest.mark.parametrize(("spec", "message"), [
    ("10.0.0.1", r"--map '10.0.0.1': expected OLD=NEW"),
    ("10.0.0.1=", r"expected OLD=NEW"),
    ("10.0.0.300=10.0.0.1", r"'10.0.0.300' is not an IPv4 address or network"),
    ("10.0.0.1/24=10.0.1.0/24", r"'10.0.0.1/24' is not an IPv4 address or network"),
    ("10.0.0.0/24=10.0.0.0/16", r"/24 cannot map onto /16"),
    ("::1=10.0.0.1", r"not an IPv4 address"),
])
def test_bad_map_is_one_line_naming_the_option(spec: str, message: str) -> None:
    with pytest.raises(PktemuError, match=message) as e:
        AddressMap([spec])
    assert "\n" not in str(e.value)


def test_the_same_old_address_twice_is_refused() -> None:
    with pytest.raises(PktemuError, match=r"--map '1.2.3.4=10.0.0.2': 1.2.3.4 is already mapped"):
        AddressMap(["1.2.3.4=10.0.0.1", "1.2.3.4=10.0.0.2"])


def test_rewrite_keeps_good_checksums_good_and_macs_become_the_neighbours(rewriter: Rewriter) -> None:
    frame = Ether(src="00:11:22:33:44:55", dst="66:77:88:99:aa:bb") / IP(src="192.168.1.7", dst="172.16.5.5")
    frame /= TCP(sport=1234, dport=80, flags="PA", seq=7) / b"GET / HTTP/1.1\r\n\r\n"
    out = Ether(bytes(rewriter.rewrite(pkt(frame))))
    assert (out[IP].src, out[IP].dst) == ("10.0.1.2", "10.3.241.152")
    assert (out.src, out.dst) == (CLIENT_MAC, GW_MAC)                    # the pod, and its gateway cbr0
    assert bad_checksum(pkt(out)) is None


def test_rewrite_keeps_a_bad_checksum_exactly_as_bad(rewriter: Rewriter) -> None:
    frame = Ether(dst=GW_MAC) / IP(src="192.168.1.7", dst="192.168.9.3")
    frame /= UDP(sport=5000, dport=53, chksum=0x1234) / b"q"
    before = pkt(frame)
    assert bad_checksum(before) == "udp"
    out = rewriter.rewrite(before)
    after = pkt(Ether(bytes(out)))
    assert bad_checksum(after) == "udp"
    ip = bytes(Ether(bytes(out))[IP])
    residual_after = checksum(ip[12:20] + b"\x00\x11" + (len(ip) - 20).to_bytes(2, "big") + ip[20:])
    ip0 = bytes(frame[IP])
    residual_before = checksum(ip0[12:20] + b"\x00\x11" + (len(ip0) - 20).to_bytes(2, "big") + ip0[20:])
    assert residual_after == residual_before != 0
    assert Ether(bytes(out)).dst == GW_MAC                              # 10.0.2.3 is routed via 10.0.1.1


def test_rewrite_maps_the_packet_an_icmp_error_quotes(rewriter: Rewriter) -> None:
    inner = IPerror(src="192.168.9.3", dst="192.168.1.7") / UDPerror(sport=53, dport=5000)
    frame = Ether(dst=GW_MAC) / IP(src="192.168.1.7", dst="192.168.9.3") / ICMP(type=3, code=3) / inner
    raw = bytes(frame)
    out = Ether(bytes(rewriter.rewrite(parse(Record(1, 0, raw, len(raw))))))
    q = out[ICMP].payload
    assert (q.src, q.dst) == ("10.0.2.3", "10.0.1.2")
    icmp = bytes(out[ICMP])
    assert checksum(icmp) == 0 and checksum(icmp[8:28]) == 0            # ICMP and quoted IP header valid


def test_rewrite_arp_request_and_reply(rewriter: Rewriter) -> None:
    req = Ether(src="00:11:22:33:44:55", dst="ff:ff:ff:ff:ff:ff") / ARP(
        op=1, hwsrc="00:11:22:33:44:55", psrc="192.168.1.7", pdst="192.168.9.2")
    out = Ether(bytes(rewriter.rewrite(pkt(req))))
    assert (out.dst, out[ARP].hwsrc, out[ARP].psrc, out[ARP].pdst) == \
           ("ff:ff:ff:ff:ff:ff", CLIENT_MAC, "10.0.1.2", "10.0.2.2")
    rep = Ether(src="00:11:22:33:44:55", dst="00:aa:aa:aa:aa:aa") / ARP(
        op=2, hwsrc="00:11:22:33:44:55", psrc="192.168.1.7", hwdst="00:aa:aa:aa:aa:aa", pdst="192.168.9.2")
    out = Ether(bytes(rewriter.rewrite(pkt(rep))))
    assert out.dst == out[ARP].hwdst == "0a:58:0a:00:02:02"               # the server pod owns 10.0.2.2


def test_multicast_and_broadcast_destinations_keep_group_macs(rewriter: Rewriter) -> None:
    m = Ether(dst="01:00:5e:00:00:fb") / IP(src="192.168.1.7", dst="224.0.0.251") / UDP(sport=53, dport=53)
    assert Ether(bytes(rewriter.rewrite(pkt(m)))).dst == "01:00:5e:00:00:fb"
    b = Ether(dst="ff:ff:ff:ff:ff:ff") / IP(src="192.168.1.7", dst="255.255.255.255") / UDP(sport=68)
    assert Ether(bytes(rewriter.rewrite(pkt(b)))).dst == "ff:ff:ff:ff:ff:ff"


def test_parse_refuses_what_the_emulation_cannot_carry() -> None:
    assert "IPv6" in (pkt(Ether(dst=GW_MAC, type=0x86DD) / bytes(40)).refused or "")
    assert "802.3" in (pkt(Ether(dst="01:80:c2:00:00:00", type=38) / bytes(38)).refused or "")
    bad_version = Ether(dst=GW_MAC, type=0x0800) / (bytes([0x44]) + bytes(19))
    assert "malformed IPv4" in (pkt(bad_version).refused or "")
    assert "beyond the frame" in (pkt(Ether(dst=GW_MAC) / IP(len=400) / b"x").refused or "")


def test_parse_takes_vlan_tags_off() -> None:
    inner = IP(src="1.1.1.1", dst="2.2.2.2") / ICMP()
    one = Ether(dst=GW_MAC) / Dot1Q(vlan=5) / inner
    two = Ether(dst=GW_MAC, type=0x88A8) / Dot1Q(vlan=7) / Dot1Q(vlan=5) / inner
    for frame, tags in ((one, 1), (two, 2)):
        p = pkt(frame)
        assert p.kind == "ipv4" and p.refused is None and p.vlan_tags == tags
        assert bytes(p.data) == bytes(Ether(dst=GW_MAC, src=frame.src) / inner)


def test_split_by_first_syn_cidr_port_and_all() -> None:
    recs = read_capture(str(CAPS / "http_get_session.pcap")).records
    for spec in ("syn", "cidr:141.142.0.0/16", "port", "port:80"):
        pkts = [parse(r) for r in recs]
        flows = assign(pkts, parse_split(spec))
        assert len(flows) == 1 and flows[0].client == (ip2int("141.142.228.5"), 59856)
        assert [p.number for p in pkts if p.client] == [1, 3, 4, 10, 11, 12, 14], spec
    pkts = [parse(r) for r in recs]
    assign(pkts, Split("all"))
    assert all(p.client for p in pkts)
    pkts = [parse(r) for r in recs[1:]]                   # the SYN is missing: the SYN-ACK still tells
    assign(pkts, Split("syn"))
    assert [p.number for p in pkts if p.client] == [3, 4, 10, 11, 12, 14]


def test_split_joins_fragments_and_icmp_errors_to_their_flows() -> None:
    frags = [parse(r) for r in read_capture(str(CAPS / "ipv4_fragmented_icmp.pcap")).records]
    flows = assign(frags, Split("syn"))
    assert len(flows) == 1 and [p.client for p in frags] == [True, True, False]
    query = Ether(dst=GW_MAC) / IP(src="10.9.0.1", dst="10.9.0.2") / UDP(sport=4000, dport=53) / b"q"
    error = Ether(dst=GW_MAC) / IP(src="10.9.0.2", dst="10.9.0.1") / ICMP(type=3, code=3)
    error /= IPerror(bytes(query[IP]))
    pkts = [pkt(query, 1), pkt(error, 2)]
    assert len(assign(pkts, Split("syn"))) == 1 and [p.client for p in pkts] == [True, False]


@pytest.mark.parametrize("spec", ["first", "cidr:", "cidr:10.0.0.0/33", "port:0", "port:http", "syn:1"])
def test_bad_split_is_refused(spec: str) -> None:
    with pytest.raises(PktemuError, match=rf"--split '{spec}'"):
        parse_split(spec)
