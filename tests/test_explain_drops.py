"""Every way an emulated kernel frees a frame leaves a reason in Network.drops (drops.txt).

Built on the service-test topology in-process: a netfilter verdict (rule and policy) reaches the
node's drop record with hook, rule and the rule's save text; so do the paths that used to lose a
frame silently (device down, veth without peer, unresolved-queue overflow, a bridge flood with
no port, a frame a bridge sends to itself).
"""
from __future__ import annotations

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether

import datapaths

from pktemu.io.topofile import load_topology
from pktemu.net.bridge import Bridge
from pktemu.net.frame import Frame, ip2int
from pktemu.netfilter.xtables import load_rules
from pktemu.network import Network

TOPO = "topologies/service-test.yaml"


def _net() -> Network:
    return Network(load_topology(str(datapaths.ROOT / TOPO)))


def _reasons(net: Network) -> list[str]:
    return [f"{d.node} {d.where}: {d.reason}" for d in net.drops]


def test_a_drop_rule_reports_hook_rule_and_text() -> None:
    net = _net()
    node1 = net.nodes["node1"]
    load_rules("*filter\n-I FORWARD -p tcp --dport 8080 -j DROP\nCOMMIT\n", "extra", node1.nf.ruleset,
               noflush=True)
    net.nodes["client"].tcp.connect(ip2int("10.3.241.152"), 80, sport=40000)
    net.sim.run(until=200_000_000)
    assert _reasons(net)[0] == ("node1 netfilter FORWARD: filter FORWARD#1 DROP: "
                                "-A FORWARD -p tcp -m tcp --dport 8080 -j DROP")


def test_a_policy_drop_reports_the_policy() -> None:
    net = _net()
    load_rules("*filter\n:FORWARD DROP [0:0]\n-F FORWARD\nCOMMIT\n", "policy", net.nodes["node1"].nf.ruleset,
               noflush=True)
    net.nodes["client"].tcp.connect(ip2int("10.3.241.152"), 80, sport=40000)
    net.sim.run(until=200_000_000)
    assert _reasons(net)[0] == "node1 netfilter FORWARD: filter policy DROP: -P FORWARD DROP"


def test_device_down_and_veth_without_peer() -> None:
    net = _net()
    eth0 = net.nodes["client"].devices["eth0"]
    frame = Frame(bytes(Ether() / IP(src="10.0.1.2", dst="10.0.1.1") / UDP()))
    eth0.up = False
    eth0.xmit(frame)
    eth0.up = True
    eth0.peer = None                               # type: ignore[attr-defined]
    eth0.xmit(frame)
    assert _reasons(net) == ["client dev eth0: transmit on a device that is down",
                             "client veth eth0: veth without a peer"]


def test_unresolved_queue_overflow_drops_the_oldest() -> None:
    net = _net()
    client = net.nodes["client"]
    eth0 = client.devices["eth0"]
    big = bytes(Ether() / IP(src="10.0.1.2", dst="10.0.1.99") / UDP() / (b"x" * 1400))
    for _ in range(160):                           # 160 * 1442 bytes > unres_qlen_bytes (212992)
        client.neigh.output(eth0, ip2int("10.0.1.99"), Frame(big))
    reasons = _reasons(net)
    assert reasons
    assert set(reasons) == {"client neigh: unresolved queue for 10.0.1.99 full (unres_qlen_bytes)"}


def test_bridge_flood_with_no_port_and_frame_to_itself() -> None:
    net = _net()
    node1 = net.nodes["node1"]
    cbr0 = node1.devices["cbr0"]
    assert isinstance(cbr0, Bridge)
    cbr0.ports["veth-client"].hairpin = False
    unknown = Frame(bytes(Ether(src="0a:58:0a:00:01:02", dst="02:99:99:99:99:99") /
                          IP(src="10.0.1.2", dst="10.0.1.50") / TCP()))
    cbr0.handle_frame(node1.devices["veth-client"], unknown)
    own = Frame(bytes(Ether(src="0a:58:0a:00:01:01", dst="0a:58:0a:00:01:01") /
                      IP(src="10.0.1.1", dst="10.0.1.1") / TCP()))
    cbr0.transmit(own)
    assert _reasons(net) == ["node1 bridge cbr0: flood: no port to send to",
                             "node1 bridge cbr0: sent to the bridge's own address"]


def test_broadcast_with_no_other_port_is_not_a_drop() -> None:
    """br_flood with a local copy frees nothing: the ARP request still reaches the bridge itself."""
    net = _net()
    node1 = net.nodes["node1"]
    cbr0 = node1.devices["cbr0"]
    assert isinstance(cbr0, Bridge)
    cbr0.ports["veth-client"].hairpin = False
    bcast = Frame(bytes(Ether(src="0a:58:0a:00:01:02", dst="ff:ff:ff:ff:ff:ff") /
                        IP(src="10.0.1.2", dst="10.0.1.255") / UDP()))
    cbr0.handle_frame(node1.devices["veth-client"], bcast)
    assert not any("flood" in r for r in _reasons(net))
