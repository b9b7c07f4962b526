"""What the API shows of the kernel's reasons: sniffed packets carry all.pcapng's explain comment,
and a Python hook's drop lands in the written drops.txt under the hook's name."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from scapy.layers.inet import IP, TCP
from scapy.utils import PcapNgReader

import pktemu
from datapaths import ROOT

TOPOLOGY = str(ROOT / "topologies" / "service-test.yaml")
SYN = IP(dst="10.3.241.152") / TCP(sport=40000, dport=80, flags="S")


def test_a_sniffed_packet_carries_the_comment_all_pcapng_gives_it(tmp_path: Path) -> None:
    net = pktemu.Network.load(TOPOLOGY, capture=tmp_path / "out")
    assert net.sr1("client", SYN) is not None
    syn = [p for p in net.sniff("node1-cbr0") if TCP in p and p[TCP].flags == "S"][0]
    assert syn[IP].dst == "10.0.2.2"
    comment = syn.comment.decode()                     # bytes, as Scapy's PcapNgReader gives it
    assert "DNAT" in comment and "10.3.241.152:80 -> 10.0.2.2:8080" in comment, comment
    net.run(duration=0.01)
    written = Path(net.write())
    with PcapNgReader(str(written / "all.pcapng")) as r:
        on_disk = [p.comment for p in r if TCP in p and p[TCP].flags == "S" and p[IP].dst == "10.0.2.2"]
    assert syn.comment in on_disk


def test_a_python_hook_drop_is_in_drops_txt_with_the_hooks_name(tmp_path: Path) -> None:
    net = pktemu.Network.load(TOPOLOGY, capture=tmp_path / "out")

    @net.hook("node2", "PREROUTING", priority=-150)
    def no_8080(p: Any) -> int:
        return pktemu.DROP if TCP in p and p[TCP].dport == 8080 else pktemu.ACCEPT

    assert net.sr1("client", SYN, timeout=0.5) is None
    drops = (Path(net.write()) / "drops.txt").read_text()
    assert "node2" in drops and "python hook no_8080 at node2 PREROUTING prio -150" in drops, drops


def test_every_sniffed_packet_has_the_comment_of_its_all_pcapng_frame(tmp_path: Path) -> None:
    net = pktemu.Network.load(TOPOLOGY, scenario="s1-clusterip", capture=tmp_path / "out")
    net.run()
    sniffed = [p.comment for point in net.captures() for p in net.sniff(point)]
    with PcapNgReader(str(Path(net.write()) / "all.pcapng")) as r:
        on_disk = [p.comment for p in r]
    assert sorted(sniffed) == sorted(on_disk) and len(on_disk) > 100
    assert all(c for c in sniffed)
