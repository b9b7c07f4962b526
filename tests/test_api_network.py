"""pktemu.Network, the Python API: the founding story driven with Scapy packets, as on a real host."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from scapy.layers.dns import DNS, DNSQR
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether
from scapy.utils import rdpcap

import pktemu
from datapaths import ROOT
from conftest import pktemu as pktemu_cli

TOPOLOGY = ROOT / "topologies" / "service-test.yaml"
SVC = "10.3.241.152"
SYN = IP(dst=SVC) / TCP(sport=40000, dport=80, flags="S", seq=1000)


@pytest.fixture
def net() -> pktemu.Network:
    return pktemu.Network.load(str(TOPOLOGY))


def test_sr1_syn_to_the_cluster_ip_gets_the_syn_ack_from_the_cluster_ip(net: pktemu.Network) -> None:
    ans = net.sr1("client", SYN)
    assert ans is not None
    assert ans[IP].src == SVC and ans[IP].dst == "10.0.1.2"
    assert ans[TCP].flags == "SA" and ans[TCP].sport == 80 and ans[TCP].ack == 1001
    assert ans.sniffed_on == "client-eth0"
    assert 0 < net.now < 0.01          # returned when the answer came, not at the timeout


def test_the_server_sees_the_dnat_ed_syn(net: pktemu.Network) -> None:
    net.sr1("client", SYN)
    syns = net.sniff("server-eth0", lfilter=lambda p: TCP in p and p[TCP].flags == "S")
    assert len(syns) == 1
    assert (syns[0][IP].src, syns[0][IP].dst, syns[0][TCP].dport) == ("10.0.1.2", "10.0.2.2", 8080)
    assert syns[0].sniffed_on == "server-eth0" and syns[0].direction == 1     # inbound
    same = net.sniff("server/eth0", lfilter=lambda p: TCP in p and p[TCP].flags == "S")
    assert bytes(same[0]) == bytes(syns[0]) and same[0].time == syns[0].time


def test_the_client_kernel_resets_the_syn_ack_nobody_asked_for(net: pktemu.Network) -> None:
    net.sr1("client", SYN)
    tcp = [p for p in net.sniff("client-eth0") if TCP in p]
    assert [str(p[TCP].flags) for p in tcp] == ["S", "SA", "R"]
    rst = tcp[2]
    assert rst.direction == 2 and rst[IP].src == "10.0.1.2" and rst[IP].dst == SVC
    assert rst[TCP].seq == 1001
    assert tcp[0].time <= tcp[1].time <= rst.time
    net.run(duration=0.01)
    [reset] = net.sniff("server-eth0", lfilter=lambda p: TCP in p and p[TCP].flags == "R")
    assert (reset[IP].src, reset[IP].dst, reset[TCP].dport) == ("10.0.1.2", "10.0.2.2", 8080)


def test_source_address_and_checksums_are_filled_in_as_the_kernel_does(net: pktemu.Network) -> None:
    net.sr1("client", SYN)
    sent = net.sniff("client-eth0", lfilter=lambda p: TCP in p and p[TCP].flags == "S")[0]
    assert sent[IP].src == "10.0.1.2"
    assert sent[Ether].dst == "0a:58:0a:00:01:01"      # the gateway's MAC, found by ARP
    again = IP(bytes(sent[IP]))
    del again[IP].chksum, again[TCP].chksum
    rebuilt = IP(bytes(again))
    assert (rebuilt[IP].chksum, rebuilt[TCP].chksum) == (sent[IP].chksum, sent[TCP].chksum)


def test_dns_query_through_the_kube_dns_cluster_ip(net: pktemu.Network) -> None:
    q = IP(dst="10.3.240.10") / UDP(sport=33333, dport=53) / DNS(
        id=7, rd=1, qd=DNSQR(qname="service-test.default.svc.cluster.local"))
    ans = net.sr1("client", q)
    assert ans is not None and ans[IP].src == "10.3.240.10"
    dns = ans[DNS]
    assert dns.id == 7 and dns.qr == 1 and dns.ancount == 1
    assert dns.an[0].rrname == b"service-test.default.svc.cluster.local."
    assert dns.an[0].rdata == SVC


def test_icmp_echo_to_the_server_pod(net: pktemu.Network) -> None:
    ans, unans = net.sr("client", [IP(dst="10.0.2.2") / ICMP(id=9, seq=i) for i in range(3)])
    assert len(ans) == 3 and len(unans) == 0
    assert [(a[ICMP].type, a[ICMP].seq, a[IP].src) for _q, a in ans] == [(0, i, "10.0.2.2") for i in range(3)]


def test_unanswered_after_the_timeout_on_the_virtual_clock(net: pktemu.Network) -> None:
    lost = IP(dst="10.0.2.99") / ICMP()        # node2's ARP gives up after 3 s, then says unreachable
    ans, unans = net.sr("client", lost, timeout=2)
    assert len(ans) == 0 and len(unans) == 1 and unans[0][IP].dst == "10.0.2.99"
    assert net.now == pytest.approx(2.0)
    late = net.sr1("client", lost, timeout=5)
    assert late is not None and late[ICMP].type == 3 and late[ICMP].code == 1


def test_sendp_delivers_a_frame_as_the_peer_sent_it(net: pktemu.Network) -> None:
    who_has = Ether(src="06:00:0a:00:01:02", dst="ff:ff:ff:ff:ff:ff") / ARP(
        op=1, hwsrc="06:00:0a:00:01:02", psrc="10.0.1.1", pdst="10.0.1.2")
    net.sendp("client/eth0", who_has)
    net.run(duration=0.001)
    arps = net.sniff("client-eth0", lfilter=lambda p: ARP in p)
    assert [(p.direction, p[ARP].op) for p in arps] == [(1, 1), (2, 2)]
    assert arps[1][ARP].psrc == "10.0.1.2" and arps[1][ARP].hwsrc == "0a:58:0a:00:01:02"
    assert any("10.0.1.1" in line for line in net.neigh("client"))


def test_state_in_the_kernel_s_words(net: pktemu.Network) -> None:
    net.sr1("client", SYN)
    ct = net.conntrack("node1")
    [entry] = [e for e in ct.entries if e.proto == 6]
    assert entry.orig == ("10.0.1.2", 40000, SVC, 80)
    assert entry.reply == ("10.0.2.2", 8080, "10.0.1.2", 40000)
    assert entry.line in ct.text and "src=10.0.2.2" in str(ct)
    rules = net.iptables_save("node1")
    assert "-A KUBE-SERVICES" in rules and rules.startswith("#")
    assert any(line.startswith("[1:") for line in rules.splitlines() if "KUBE-SEP" in line and "DNAT" in line)
    assert net.iptables_save("client") == ""
    assert "default via 10.0.1.1 dev eth0" in net.routes("client")
    assert any(line.startswith("0a:58:0a:00:01:02 dev veth-client") for line in net.fdb("node1-cbr0"))


def test_bad_use_is_one_pktemu_error(net: pktemu.Network) -> None:
    with pytest.raises(pktemu.Error, match="has no IP layer"):
        net.send("client", Ether() / ARP())
    with pytest.raises(pktemu.Error, match="no pod or node 'nope'"):
        net.sr1("nope", SYN)
    with pytest.raises(pktemu.Error, match="no capture point 'client-eth9'"):
        net.sniff("client-eth9")
    with pytest.raises(pktemu.Error, match="not an Ethernet frame"):
        net.sendp("client/eth0", SYN)
    with pytest.raises(pktemu.Error, match="expected a Scapy packet, got 'junk'"):
        net.send("client", [SYN, "junk"])
    with pytest.raises(pktemu.Error, match="timeout=-1 is not a number of seconds"):
        net.sr1("client", SYN, timeout=-1)
    with pytest.raises(pktemu.Error, match="is not a bridge"):
        net.fdb("client/eth0")
    with pytest.raises(pktemu.Error, match="without a scenario"):
        net.run()
    with pytest.raises(pktemu.Error, match="no scenario 'nope'"):
        pktemu.Network.load(str(TOPOLOGY), scenario="nope")
    assert pktemu.Error is pktemu.api.Error


def test_load_from_a_yaml_string_and_from_a_dict(monkeypatch: pytest.MonkeyPatch) -> None:
    text = TOPOLOGY.read_text()
    with pytest.raises(pktemu.Error, match="kube-proxy-rules.iptables"):
        pktemu.Network.load(text)        # its rules file is relative to the current directory
    monkeypatch.chdir(TOPOLOGY.parent)
    for source in (text, yaml.safe_load(text)):
        net = pktemu.Network.load(source)
        ans = net.sr1("client", SYN)
        assert ans is not None and ans[TCP].flags == "SA" and ans[IP].src == SVC
    with pytest.raises(pktemu.Error, match=r"^<dict>: .*nodes"):
        pktemu.Network.load({"nodes": 3})


def test_two_identical_runs_sniff_identical_bytes() -> None:
    def story() -> list[tuple[object, bytes]]:
        net = pktemu.Network.load(str(TOPOLOGY))
        net.sr1("client", SYN)
        net.sr1("client", IP(dst="10.0.2.2") / ICMP())
        net.run(duration=0.5)
        return [(p.time, bytes(p)) for point in net.captures() for p in net.sniff(point)]
    first = story()
    assert len(first) > 20 and first == story()


def test_a_scenario_plays_out_as_pktemu_run_writes_it(tmp_path: Path) -> None:
    net = pktemu.Network.load(TOPOLOGY, scenario="s1-clusterip")
    net.run()
    assert " 200 " in net.results[0]["http"]["status_line"], net.results
    assert net.results[0]["http"]["body"] == "hello from server-pod 10.0.2.2\n"
    pktemu_cli("run", str(TOPOLOGY), "--scenario", "s1-clusterip", "--out", str(tmp_path), "-q")
    for point in ("client-eth0", "node1-eth0", "server-eth0"):
        pcap = rdpcap(str(tmp_path / "s1-clusterip" / "pcap" / f"{point}.pcap"))
        ours = net.sniff(point)
        assert [bytes(p) for p in ours] == [bytes(p) for p in pcap]
        assert [p.time for p in ours] == [p.time for p in pcap]


def test_import_pktemu_stays_light() -> None:
    code = "import sys, pktemu; print('scapy' in sys.modules, 'pktemu.api' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.stdout.split() == ["False", "False"], out.stderr


def test_pktemu_run_does_not_load_scapy_until_a_user_packet_needs_it(tmp_path: Path) -> None:
    # `pktemu run` of a topology works on bytes: importing Scapy would be a third of its start-up.
    # The same process then gets Scapy packets from the Python API as soon as it asks for them.
    code = ("import sys; from pktemu.cli import main; "
            f"s = main(['run', {str(TOPOLOGY)!r}, '--out', {str(tmp_path / 'o')!r}, '-q']); "
            "print(s, 'scapy' in sys.modules); import pktemu; net = pktemu.Network.load("
            f"{str(TOPOLOGY)!r}, 's1-clusterip'); net.run(); "
            "p = net.sniff('client-eth0')[0]; print(type(p).__module__, 'scapy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.stdout.split() == ["0", "False", "scapy.layers.l2", "True"], out.stderr
    scenarios = yaml.safe_load(TOPOLOGY.read_text())["scenarios"]
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == sorted(scenarios)
