"""The broken_* and odd_* test captures: each one refused cleanly or replayed correctly, as documented."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import ARP, Ether
from scapy.utils import rdpcap

import datapaths
from conftest import pktemu
from pktemu.net.frame import checksum
from pktemu.replay.run import ReplayOptions, replay
from pktemu.replay.stats import ReplayStats

CAPS = datapaths.CAPTURES
TOPO = str(datapaths.ROOT / "topologies" / "service-test.yaml")


def run(tmp_path: Path, capture: str, *maps: str, **kw: Any) -> tuple[ReplayStats, Path]:
    opts = ReplayOptions("node1/veth-client", list(maps), **kw)
    stats = replay(str(CAPS / capture), TOPO, opts, str(tmp_path))
    return stats, Path(stats.out_dir)


def pcap(out: Path, point: str) -> list[Ether]:
    return list(rdpcap(str(out / "pcap" / f"{point}.pcap")))


def tcp_checksum_ok(p: Ether) -> bool:
    raw = bytes(p[IP])
    pseudo = raw[12:20] + bytes([0, 6]) + (len(raw) - 20).to_bytes(2, "big")
    return checksum(pseudo + raw[20:]) == 0


def test_every_broken_or_odd_capture_has_a_test_here() -> None:
    odd = sorted(p.name for p in CAPS.iterdir() if p.name.startswith(("broken_", "odd_")))
    assert odd == ["broken_bad_tcp_checksums_http.pcap", "broken_pcapng_shb_bad_length.pcapng",
                   "broken_snaplen68_smtp.pcap", "broken_truncated_record_huge_caplen.pcap",
                   "odd_big_endian_pptp.pcap", "odd_linktype_linux_sll2.pcap"]


@pytest.mark.parametrize(("name", "where"), [
    ("broken_truncated_record_huge_caplen.pcap",
     "record 2: caplen 1409179648 is larger than the maximum 262144 (snaplen 65535): corrupt record header"),
    ("broken_pcapng_shb_bad_length.pcapng",
     "block 1 (SHB, offset 0): trailing length 808464432 differs from the leading length 52"),
])
def test_corrupt_files_are_refused_with_one_line_and_no_output(tmp_path: Path, name: str, where: str) -> None:
    out = tmp_path / "out"
    p = pktemu("replay", str(CAPS / name), "--topology", "topologies/service-test.yaml",
               "--inject", "node1/veth-client", "--out", str(out), check=False)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr == f"pktemu: error: {CAPS / name}: {where}\n"
    assert not out.exists()


def test_snaplen_68_records_are_counted_as_truncated_and_never_sent(tmp_path: Path) -> None:
    stats, out = run(tmp_path, "broken_snaplen68_smtp.pcap", "201.186.157.67=10.0.1.2",
                     "128.3.26.249=10.3.241.152")
    assert stats.records == 24 and stats.truncated == 24
    assert stats.client_side == 10 and stats.server_side == 14
    assert stats.sent_packets == 0 and stats.flows == [] and not stats.refused
    assert pcap(out, "client-eth0") == [] and pcap(out, "node1-veth-client") == []
    assert "\tTruncated:          24 (caplen < wirelen: never sent)" in stats.text()


def test_bad_tcp_checksums_are_invalid_to_conntrack_as_the_kernel_does(tmp_path: Path) -> None:
    maps = ("192.168.1.28=10.0.1.2", "35.221.46.9=10.3.241.152")
    stats, out = run(tmp_path / "kept", "broken_bad_tcp_checksums_http.pcap", *maps,
                     answer_timeout=200_000_000)
    assert stats.bad_checksums == {"tcp": 6} and stats.client_side == 6
    # nf_conntrack_checksum=1: the SYN is INVALID at PREROUTING, so it is not DNATed (cbr0 still
    # shows the ClusterIP) and kube-proxy's KUBE-FORWARD INVALID rule drops it on node1
    syn = [p for p in pcap(out, "node1-cbr0") if TCP in p]
    assert len(syn) == 1 and syn[0][IP].dst == "10.3.241.152" and not tcp_checksum_ok(syn[0])
    assert [p for p in pcap(out, "server-eth0") if TCP in p] == []
    assert stats.dropped == {"node1 netfilter FORWARD: filter KUBE-FORWARD#1 DROP: "
                             "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP": 1}
    assert stats.sent_packets == 1
    assert stats.not_sent == {"no answer from the emulated server (no SYN-ACK)": 5}
    stats, out = run(tmp_path / "fixed", "broken_bad_tcp_checksums_http.pcap", *maps, fix_checksums=True)
    server = [p for p in pcap(out, "server-eth0") if TCP in p]
    assert all(tcp_checksum_ok(p) for p in server)
    assert any(b"GET / HTTP/1.1" in bytes(p[TCP].payload) for p in server)
    assert stats.sent_packets == 6 and not stats.dropped and stats.flows[0].outcome == "complete"


def test_big_endian_pptp_is_read_and_its_server_is_missing(tmp_path: Path) -> None:
    stats, out = run(tmp_path, "odd_big_endian_pptp.pcap", "10.1.1.11=10.0.1.2", "10.1.1.10=10.0.2.2")
    original = rdpcap(str(CAPS / "odd_big_endian_pptp.pcap"))[0]
    syn = [p for p in pcap(out, "server-eth0") if TCP in p and p[TCP].flags == "S"][0]
    assert syn[TCP].sport == 3025 and syn[TCP].dport == 1723 and syn[TCP].seq == original[TCP].seq
    assert syn[TCP].options == original[TCP].options and syn[TCP].window == original[TCP].window
    rst = [p for p in pcap(out, "client-eth0") if TCP in p and p[TCP].flags & 0x04]
    assert len(rst) == 1 and rst[0][IP].src == "10.0.2.2"
    tcp = next(f for f in stats.flows if f.proto == "tcp")
    assert tcp.outcome == "connection reset by the emulated server" and tcp.sent == 1
    assert stats.not_sent == {"connection reset by the emulated server": 5}
    assert "server ip_local_deliver: no handler for IP protocol 47" in stats.dropped     # the GRE frame


def test_linux_sll2_frames_become_ethernet_and_are_answered(tmp_path: Path) -> None:
    stats, out = run(tmp_path, "odd_linktype_linux_sll2.pcap", "192.0.2.1=10.0.1.2", "192.0.2.2=10.0.1.1",
                     speed=100.0)
    assert stats.refused == {"ethertype 0x86dd (IPv6): not emulated (IPv4 and ARP only)": 2,
                             "ethertype 0x8035 (RARP): not emulated (IPv4 and ARP only)": 1}
    veth = pcap(out, "node1-veth-client")
    asked = [p for p in veth if ARP in p and p[ARP].op == 1 and p[ARP].psrc == "10.0.1.2"]
    assert [(p[Ether].src, p[ARP].psrc, p[ARP].pdst) for p in asked] == [("0a:58:0a:00:01:02", "10.0.1.2",
                                                                          "10.0.1.1")]
    told = [p for p in veth if ARP in p and p[ARP].op == 2 and p[ARP].psrc == "10.0.1.1"]
    assert len(told) == 1 and told[0][ARP].hwsrc == "0a:58:0a:00:01:01"
    assert stats.seconds == pytest.approx(1543.706702 / 100, abs=1e-6)
