"""Bridge, ARP and routing behaviour on a small LAN (tests/data/lan.yaml), read back from the pcaps."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP
from scapy.layers.l2 import ARP
from scapy.utils import rdpcap

import datapaths
from conftest import pktemu

LAN = datapaths.ROOT / "tests" / "data" / "lan.yaml"


@pytest.fixture(scope="module")
def lan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("lan")
    pktemu("run", str(LAN), "--out", str(out), "-q")
    return out


def frames(lan: Path, scenario: str, point: str) -> list:
    return list(rdpcap(str(lan / scenario / "pcap" / f"{point}.pcap")))


def result(lan: Path, scenario: str) -> dict:
    return json.loads((lan / scenario / "client-result.json").read_text())


def test_bridge_floods_unknown_then_switches_learned_then_floods_aged(lan: Path) -> None:
    h3 = frames(lan, "learn", "h3-eth0")
    # h3 sees the broadcast ARP, not echo #1 (h2's MAC was learned from its ARP reply), but echo #2
    # 3 s later is flooded again: the FDB entry aged out after ageing_time 1 s
    assert [p.haslayer(ARP) for p in h3] == [True, False]
    assert h3[1][ICMP].type == 8 and h3[1][ICMP].seq == 2
    h2 = frames(lan, "learn", "h2-eth0")
    assert sum(1 for p in h2 if p.haslayer(ICMP) and p[ICMP].type == 8) == 2
    assert result(lan, "learn")["received"] == 2


def test_router_decrements_ttl_and_rewrites_macs(lan: Path) -> None:
    h1 = [p for p in frames(lan, "routed", "h1-eth0") if p.haslayer(ICMP)]
    far = [p for p in frames(lan, "routed", "far-eth0") if p.haslayer(ICMP)]
    req_h1, req_far = h1[0], far[0]
    assert (req_h1[IP].ttl, req_far[IP].ttl) == (64, 63)
    r_eth0 = [p for p in frames(lan, "routed", "r-eth0") if p.haslayer(ARP)][-1].hwsrc
    assert req_h1.dst == r_eth0                       # h1 sends to its gateway's MAC
    assert req_far.src != req_h1.src and req_far.dst == far[1].src   # r's eth1 -> far
    assert h1[1][ICMP].type == 0 and h1[1][IP].ttl == 63


def test_unresolved_neighbour_three_probes_then_host_unreachable(lan: Path) -> None:
    h1 = frames(lan, "no-neighbour", "h1-eth0")
    probes = [p for p in h1 if p.haslayer(ARP) and p[ARP].pdst == "10.9.0.99"]
    assert len(probes) == 3
    gaps = [round(float(b.time - a.time), 6) for a, b in zip(probes, probes[1:], strict=False)]
    assert gaps == [1.0, 1.0]
    r_probes = [p for p in frames(lan, "no-neighbour", "r-eth1") if p.haslayer(ARP)]
    assert len(r_probes) == 3 and all(p[ARP].pdst == "10.8.0.99" for p in r_probes)
    unreach = [p for p in h1 if p.haslayer(ICMP) and p[ICMP].type == 3]
    assert len(unreach) == 1 and unreach[0][IP].src == "10.9.0.254" and unreach[0][ICMP].code == 1
    local, routed = result(lan, "no-neighbour")
    assert local["errors"] == [{"from": "10.9.0.1", "type": 3, "code": 1}]   # from our own stack
    assert routed["errors"] == [{"from": "10.9.0.254", "type": 3, "code": 1}]
    drops = (lan / "no-neighbour" / "drops.txt").read_text()
    assert "h1 neigh: neighbour resolution failed" in drops and "r neigh:" in drops


def test_routing_loop_ends_in_time_exceeded(lan: Path) -> None:
    r = result(lan, "loop")
    assert r["errors"] == [{"from": "10.7.0.2", "type": 11, "code": 0}]
    loop = [p for p in frames(lan, "loop", "r3-eth0") if p.haslayer(ICMP) and p[ICMP].type == 8]
    ttls = [p[IP].ttl for p in loop]
    assert ttls == sorted(ttls, reverse=True) and ttls[-1] in (1, 2) and len(ttls) > 20
    assert "r2 ip_forward: TTL exceeded" in (lan / "loop" / "drops.txt").read_text()


def test_fragmentation_and_reassembly() -> None:
    """A 3000-byte ping without DF leaves h1 in pieces of at most the MTU; far reassembles it
    before delivery and its reply, too big as well, is fragmented on the way back."""
    from pktemu.io.topofile import load_topology
    from pktemu.network import Network
    from pktemu.topo import App

    net = Network(load_topology(str(LAN)))
    h1 = net.nodes["h1"]
    seen: list[tuple[str, int, bool, int]] = []

    class Tap:
        def record(self, ts: int, frame, direction: str) -> None:  # type: ignore[no-untyped-def]
            if frame.is_ipv4 and frame.proto == 1:
                seen.append((direction, frame.ip_len, frame.is_fragment, frame.ttl))

    h1.devices["eth0"].taps.append(Tap())
    run = net.start_app(h1, App("ping", {"target": "10.8.0.1", "size": 3000, "df": False}))
    net.sim.run(until=2 * 10**9)
    out = [s for s in seen if s[0] == "out"]
    back = [s for s in seen if s[0] == "in"]
    assert [s[1] for s in out] == [1500, 1500, 68] and all(s[2] for s in out)
    assert [s[1] for s in back] == [1500, 1500, 68] and all(s[3] == 63 for s in back)
    assert run.result["received"] == 1
