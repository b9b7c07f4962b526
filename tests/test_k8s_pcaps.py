"""Reading the Kubernetes tests' pcaps: one small record per frame, with virtual time from 0 (imported
by the other test_k8s_* files)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from scapy.layers.dns import DNS
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, TCPerror, UDPerror
from scapy.utils import rdpcap

EPOCH = 1_735_689_600          # pktemu.sim.EPOCH_NS in seconds: virtual time 0 in the pcaps


@dataclass
class Pkt:
    t: float
    src: str
    dst: str
    sport: int = 0
    dport: int = 0
    flags: str = ""
    icmp: tuple[int, int] | None = None
    inner: str = ""                 # the quoted packet of an ICMP error: "src:sport > dst:dport"
    dns_rcode: int | None = None    # responses only
    dns_answers: tuple[str, ...] = ()


def read(path: Path) -> list[Pkt]:
    out = []
    for p in rdpcap(str(path)):
        if IP not in p:
            continue
        ip = p[IP]
        r = Pkt(float(p.time) - EPOCH, ip.src, ip.dst)
        if ICMP in p and p[ICMP].type in (3, 11):
            r.icmp = (p[ICMP].type, p[ICMP].code)
            quoted = p[TCPerror] if TCPerror in p else p[UDPerror] if UDPerror in p else None
            if IPerror in p and quoted is not None:
                e = p[IPerror]
                r.inner = f"{e.src}:{quoted.sport} > {e.dst}:{quoted.dport}"
        elif TCP in ip:
            r.sport, r.dport, r.flags = ip[TCP].sport, ip[TCP].dport, str(ip[TCP].flags)
        elif UDP in ip:
            r.sport, r.dport = ip[UDP].sport, ip[UDP].dport
            if DNS in ip and ip[DNS].qr == 1:
                d = ip[DNS]
                r.dns_rcode = d.rcode
                r.dns_answers = tuple(str(d.an[i].rdata) for i in range(d.ancount))
        out.append(r)
    return out


def syns(pkts: list[Pkt]) -> list[Pkt]:
    return [p for p in pkts if p.flags == "S"]


def test_reader_on_the_kernels_own_capture() -> None:
    """The reader the Kubernetes tests rely on, checked on a pcap the real kernel wrote."""
    import datapaths

    pkts = read(datapaths.ORACLE_REF / "s1-clusterip" / "pcap" / "client-eth0.pcap")
    (syn,) = syns(pkts)
    assert (syn.src, syn.sport, syn.dst, syn.dport) == ("10.0.1.2", 40000, "10.3.241.152", 80)
    (answer,) = [p for p in pkts if p.dns_rcode is not None]
    assert (answer.src, answer.dns_rcode, answer.dns_answers) == ("10.3.240.10", 0, ("10.3.241.152",))
    assert 0 <= syn.t - answer.t < 1
