"""Per-frame explanations in all.pcapng, read back with tshark, and drops with their rule.

The frames checked are the ones where the founding scenarios translate addresses: s1's SYN
DNATed on node1 (and its DNS query), the SYN-ACK un-DNATed on the way back, and s3's hairpinned
SYN, DNATed to the client itself and MASQUERADEd to the cbr0 address, with its reply un-SNATed
and un-DNATed. Each comment must name the hook, table, chain and rule number, quote the rule's
iptables-save text with its verdict, give the translation as old -> new and the conntrack state.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pktemu.explain.comment import frame_comment, summary
from pktemu.net.frame import Frame
from pktemu.netfilter.rule_note import RuleNote
from pktemu.netfilter.xtables import load_rules

SEP_TEST = "KUBE-SEP-CCUNI5TAEJBRFII7"
SEP_HAIRPIN = "KUBE-SEP-4JSYWE3VGRPCBXOF"


def comments(pcapng: Path, filt: str) -> list[list[str]]:
    """The comment lines of every frame matching the display filter `filt`."""
    p = subprocess.run(["tshark", "-n", "-r", str(pcapng), "-Y", filt, "-T", "fields", "-e", "frame.comment"],
                       capture_output=True, text=True, timeout=60, check=True)
    return [line.split("\\n") for line in p.stdout.splitlines()]


def one(pcapng: Path, filt: str) -> list[str]:
    found = comments(pcapng, filt)
    assert len(found) == 1, (filt, found)
    return found[0]


def test_s1_syn_dnat_on_node1(service_test_run: Path) -> None:
    lines = one(service_test_run / "s1-clusterip" / "all.pcapng",
                'frame.interface_name == "node1/cbr0" && tcp.flags == 0x002 && ip.dst == 10.0.2.2')
    assert lines[0].startswith("in: ct new tcp SYN_SENT; ")
    assert f"DNAT 10.3.241.152:80 -> 10.0.2.2:8080 by nat:PREROUTING {SEP_TEST}#2" in lines[0]
    assert "br cbr0: to local stack" in lines[0]
    assert (f"rule nat:PREROUTING {SEP_TEST}#2: -A {SEP_TEST} -p tcp -m comment --comment "
            '"default/service-test" -m tcp -j DNAT --to-destination 10.0.2.2:8080 (verdict accept)') in lines
    ct = [ln for ln in lines if ln.startswith("ct state")]
    assert ct == ["ct state new ct direction original ct status dnat: tcp      6 120 SYN_SENT src=10.0.1.2 "
                  "dst=10.3.241.152 sport=40000 dport=80 [UNREPLIED] src=10.0.2.2 dst=10.0.1.2 sport=8080 "
                  "dport=40000 mark=0 use=1"]


def test_s1_dns_query_dnat_and_reply_un_dnat(service_test_run: Path) -> None:
    f = service_test_run / "s1-clusterip" / "all.pcapng"
    q = one(f, 'frame.interface_name == "node1/cbr0" && udp.dstport == 53')
    assert "DNAT 10.3.240.10:53 -> 10.0.2.3:53 by nat:PREROUTING KUBE-SEP-WN3XHTLT5P4ISS5H#2" in q[0]
    r = one(f, 'frame.interface_name == "node1/cbr0" && udp.srcport == 53')
    assert r[0].startswith("out: ") and "un-DNAT 10.0.2.3:53 -> 10.3.240.10:53" in r[0]
    assert "ct state established ct direction reply ct status seen-reply,confirmed,dnat" in r[-1]


def test_s1_syn_ack_un_dnat_on_node1(service_test_run: Path) -> None:
    lines = one(service_test_run / "s1-clusterip" / "all.pcapng",
                'frame.interface_name == "node1/cbr0" && tcp.flags == 0x012')
    assert lines[0].startswith("out: ct SYN_RECV; fwd eth0->cbr0 via 10.0.1.0/24 dev cbr0")
    assert "un-DNAT 10.0.2.2:8080 -> 10.3.241.152:80" in lines[0]
    assert "filter:FORWARD KUBE-FORWARD#3 ACCEPT" in lines[0] and "neigh 10.0.1.2 " in lines[0]
    assert ('rule filter:FORWARD KUBE-FORWARD#3: -A KUBE-FORWARD -m comment --comment "kubernetes forwarding '
            'conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT (verdict accept)') in lines
    assert lines[-1].startswith(
        "ct state established ct direction reply ct status seen-reply,confirmed,dnat: "
        "tcp      6 60 SYN_RECV src=10.0.1.2 dst=10.3.241.152 sport=40000 dport=80 ")


def test_s3_hairpin_masquerade_and_dnat(service_test_run: Path) -> None:
    f = service_test_run / "s3-hairpin" / "all.pcapng"
    half = one(f, 'frame.interface_name == "node1/cbr0" && tcp.flags == 0x002')
    assert f"DNAT 10.3.245.20:80 -> 10.0.1.2:8080 by nat:PREROUTING {SEP_HAIRPIN}#2" in half[0]
    assert "nat:PREROUTING KUBE-MARK-MASQ#1 MARK --set-xmark 0x4000/0x4000 (0x0 -> 0x4000)" in half[0]
    assert "rule nat:PREROUTING KUBE-MARK-MASQ#1: -A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000 " \
           "(verdict continue)" in half
    masq = one(f, 'frame.interface_name == "node1/veth-client" && tcp.flags == 0x002 && ip.src == 10.0.1.1')
    assert "SNAT 10.0.1.2:40000 -> 10.0.1.1:40000 by MASQUERADE nat:POSTROUTING KUBE-POSTROUTING#3" in masq[0]
    assert "filter:FORWARD KUBE-FORWARD#2 ACCEPT" in masq[0]
    assert ('rule nat:POSTROUTING KUBE-POSTROUTING#3: -A KUBE-POSTROUTING -m comment --comment "kubernetes '
            'service traffic requiring SNAT" -j MASQUERADE (verdict accept)') in masq
    assert masq[-1].startswith("ct state new ct direction original ct status confirmed,snat,dnat: ")
    assert "src=10.0.1.2 dst=10.0.1.1 sport=8080 dport=40000" in masq[-1]


def test_s3_reply_un_snat_then_un_dnat(service_test_run: Path) -> None:
    f = service_test_run / "s3-hairpin" / "all.pcapng"
    half = one(f, 'frame.interface_name == "node1/cbr0" && tcp.flags == 0x012')
    assert "un-SNAT 10.0.1.1:40000 -> 10.0.1.2:40000" in half[0]
    out = one(f, 'frame.interface_name == "node1/veth-client" && tcp.flags == 0x012 && ip.src == 10.3.245.20')
    assert "un-DNAT 10.0.1.2:8080 -> 10.3.245.20:80" in out[0]
    assert "ct state established ct direction reply ct status seen-reply,confirmed,snat,dnat" in out[-1]


def test_wireshark_filters_find_every_translation(service_test_run: Path) -> None:
    f = service_test_run / "s3-hairpin" / "all.pcapng"
    assert len(comments(f, 'frame.comment contains "by MASQUERADE"')) == 1       # the rule binds once
    snat = comments(f, 'frame.comment contains "SNAT 10.0.1.2:40000 -> 10.0.1.1:40000"')
    assert len(snat) == 5                  # every segment of the client's, on its way back into the client
    assert all(c[0].startswith("out: br_nf: src MAC restored") for c in snat)


def test_s2_reject_answer_names_the_rule_and_drops_txt_has_it(service_test_run: Path) -> None:
    d = service_test_run / "s2-noendpoints"
    icmp = one(d / "all.pcapng", 'frame.interface_name == "node1/cbr0" && icmp')
    assert "filter:FORWARD KUBE-SERVICES#1 REJECT icmp-port-unreachable" in icmp[0]
    # what it answers in words, not the emulator's repr (`about <Frame ... proto 6 len 74>`)
    assert icmp[0].startswith("out: icmp type 3 code 3 about 10.0.1.2:40000 > 10.3.250.77:80 tcp; ")
    rule = "rule filter:FORWARD KUBE-SERVICES#1: -A KUBE-SERVICES -d 10.3.250.77/32 -p tcp "
    tail = "-j REJECT --reject-with icmp-port-unreachable"
    assert any(ln.startswith(rule) and ln.endswith(tail) for ln in icmp)
    drops = (d / "drops.txt").read_text().splitlines()
    assert len(drops) == 1
    assert drops[0].startswith("0.0000")
    assert (" node1 netfilter FORWARD: filter KUBE-SERVICES#1 REJECT icmp-port-unreachable: "
            "-A KUBE-SERVICES -d 10.3.250.77/32") in drops[0]
    assert drops[0].endswith("[<Frame 10.0.1.2:40000 > 10.3.250.77:80 proto 6 len 74>]")


def _syn() -> Frame:
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether
    return Frame(bytes(Ether() / IP(src="10.0.1.2", dst="10.3.241.152") / TCP(sport=40000, dport=80)))


def test_summary_folds_the_nat_rule_into_its_translation() -> None:
    rs = load_rules("*nat\n:SEP - [0:0]\n-A PREROUTING -j SEP\n"
                    "-A SEP -p tcp -j DNAT --to-destination 10.0.2.2:8080\nCOMMIT\n", "t")
    rule = rs.chain("nat", "SEP").rules[0]
    note = RuleNote("nat:PREROUTING SEP#1 DNAT 10.0.2.2:8080", "nat", "PREROUTING", rule, "ACCEPT")
    notes = ["ct new tcp SYN_SENT", note, "DNAT 10.3.241.152:80 -> 10.0.2.2:8080", "br cbr0: to local stack"]
    assert summary(notes) == ("ct new tcp SYN_SENT; DNAT 10.3.241.152:80 -> 10.0.2.2:8080 by nat:PREROUTING "
                              "SEP#1; br cbr0: to local stack")
    text = frame_comment("in", notes, _syn(), 0)
    assert text.split("\n") == [
        "in: " + summary(notes),
        "rule nat:PREROUTING SEP#1: -A SEP -p tcp -j DNAT --to-destination 10.0.2.2:8080 (verdict accept)"]


@pytest.mark.parametrize("verdict", ["DROP", "ACCEPT"])
def test_a_policy_note_quotes_the_policy(verdict: str) -> None:
    note = RuleNote(f"filter:FORWARD policy {verdict}", "filter", "FORWARD", None, verdict)
    assert frame_comment("out", [note], _syn(), 0).split("\n")[1] == \
        f"rule filter:FORWARD policy: -P FORWARD {verdict} (verdict {verdict.lower()})"
