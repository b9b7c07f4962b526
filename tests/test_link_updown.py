"""`ip link set DEV down|up` mid-connection (pktemu.net.link.link_set), held to what the kernel
did in tests/test_kernel_link_updown.py: the routes through the device go and only its prefix
routes come back, the veth peer loses its carrier and its bridge port (FDB flushed), and a TCP
sender retransmits with doubling gaps, then fails with EHOSTUNREACH when the far side's router
could not resolve the pod (its ICMP error), ETIMEDOUT when its own link went down.
"""
from __future__ import annotations

from typing import Any, Generator

import pytest
import yaml
from scapy.layers.inet import ICMP, IP, TCP

import pktemu
from datapaths import ROOT
from pktemu.errors import PktemuError
from pktemu.net.link import link_set
from pktemu.net.route import Route
from pktemu.sim import EPOCH_NS, SECOND

App = Generator[Any, Any, Any]
DOWN_AT = 1.0


@pytest.fixture(autouse=True)
def _in_topologies(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT / "topologies")        # the topology's rules files are relative to it


def sink(api: Any) -> App:
    lst = api.listen(("0.0.0.0", 7))

    def handle(conn: Any) -> App:
        while (yield conn.recv(4096)):
            pass

    while True:
        conn, _ = yield lst.accept()
        api.spawn(handle(conn))


def lines(api: Any, seconds: float) -> App:
    """A line every 200 ms over one connection, as the kernel probe's client does."""
    conn = yield api.connect(("10.0.2.2", 7), timeout=2)
    i = 0
    try:
        while api.now < seconds:
            yield conn.send(b"line %d\n" % i)
            i += 1
            yield api.sleep(0.2)
        api.result["done"] = i
    except OSError as e:
        api.result.update(errno=e.errno, at=api.now)


def network(retries2: int = 3) -> pktemu.Network:
    t = yaml.safe_load((ROOT / "topologies" / "service-test.yaml").read_text())
    t["nodes"]["node1"]["sysctls"]["net.ipv4.tcp_retries2"] = retries2    # accepted by the topology
    net = pktemu.Network.load(t)
    net.engine.nodes["client"].sysctls["net.ipv4.tcp_retries2"] = retries2
    net.start_app("server", sink)
    return net


def at(net: pktemu.Network, t: float, node: str, dev: str, up: bool) -> str:
    why = f"ip link set {dev} {'up' if up else 'down'} at {t:.3f} s"
    net.engine.sim.at(int(t * SECOND), link_set, net.engine.nodes[node], dev, up, why)
    return why


def ts(p: Any) -> float:
    """A sniffed packet's time on the virtual clock (pcaps count from EPOCH_NS)."""
    return float(p.time) - EPOCH_NS / SECOND


def data_segments(net: pktemu.Network, point: str) -> list[tuple[float, int]]:
    return [(ts(p), p[TCP].seq) for p in net.sniff(point)
            if TCP in p and p[TCP].dport == 7 and len(p[TCP].payload)]


def first_unacked(segs: list[tuple[float, int]], after: float) -> tuple[float, list[float]]:
    """(time of the first segment sent after `after`, the times it was sent again)."""
    later = [(t, s) for t, s in segs if t >= after]
    t0, seq = later[0]
    return t0, [t for t, s in later[1:] if s == seq]


def test_server_pod_link_down_last_bridge_port_gives_host_unreachable() -> None:
    """With the dns pod's link down first, veth-server is cbr0's last port: the bridge loses its
    carrier, node2 forgets the pod's MAC and its ARP fails (3 x 1 s): ICMP host unreachable,
    which the client reports when it gives up (sk_err_soft), as the kernel did."""
    net = network()
    at(net, 0.5, "dns", "eth0", False)
    why = at(net, DOWN_AT, "server", "eth0", False)
    h = net.start_app("client", lines, seconds=20)
    net.run(duration=8)
    assert h.done and h.result["errno"] == 113                          # EHOSTUNREACH
    t0, again = first_unacked(data_segments(net, "client-eth0"), DOWN_AT)
    gaps = [b - a for a, b in zip([t0] + again[:-1], again, strict=True)]
    assert len(again) >= 3 and gaps[0] >= 0.2
    assert all(1.9 < b / a < 2.1 for a, b in zip(gaps[:2], gaps[1:3], strict=True))     # the RTO doubles
    assert 2.9 < h.result["at"] - t0 < 3.5                              # tcp_retries2=3: 15 x 200 ms
    unreach = [p for p in net.sniff("client-eth0") if ICMP in p and p[ICMP].type == 3]
    assert unreach and unreach[0][IP].src == "10.100.0.12" and unreach[0][ICMP].code == 1
    assert 2.9 < ts(unreach[0]) - t0 < 3.2                     # node2's ARP gave up
    node2 = net.engine.nodes["node2"]
    assert not node2.devices["cbr0"].carrier
    reasons = [d.reason for d in net.engine.drops if d.node == "node2"]
    assert any(why in r and "in server" in r and "NO-CARRIER" in r for r in reasons), reasons


def test_server_pod_link_down_retransmits_then_times_out() -> None:
    """cbr0 keeps a live port (the dns pod): node2 still has the pod's MAC and floods to the
    ports left, so no ICMP comes back within tcp_retries2=3: ETIMEDOUT."""
    net = network()
    at(net, DOWN_AT, "server", "eth0", False)
    h = net.start_app("client", lines, seconds=20)
    net.run(duration=8)
    assert h.done and h.result["errno"] == 110                          # ETIMEDOUT
    t0, again = first_unacked(data_segments(net, "client-eth0"), DOWN_AT)
    gaps = [b - a for a, b in zip([t0] + again[:-1], again, strict=True)]
    assert len(again) == 3 and 0.2 <= gaps[0] < 0.25
    assert all(1.9 < b / a < 2.1 for a, b in zip(gaps[:-1], gaps[1:], strict=True))
    assert 2.9 < h.result["at"] - t0 < 3.5
    # nothing reaches the pod's side any more, and the pod lost every route through eth0
    assert not [p for p in net.sniff("server-eth0") if ts(p) > DOWN_AT]
    assert not [p for p in net.sniff("node2-veth-server") if ts(p) > DOWN_AT]
    assert not [r for r in net.routes("server") if "dev eth0" in r]
    node2 = net.engine.nodes["node2"]
    veth, cbr0 = node2.devices["veth-server"], node2.devices["cbr0"]
    assert veth.up and not veth.carrier and cbr0.carrier
    assert cbr0.ports["veth-server"].state == "disabled"  # type: ignore[attr-defined]
    assert not [e for e in net.fdb("node2/cbr0") if e.startswith("0a:58:0a:00:02:02")]
    floods = [p for p in net.sniff("node2-veth-dns") if TCP in p and p[TCP].dport == 7]
    assert len(floods) >= 4                            # unknown unicast: flooded to the port left


def test_client_own_link_down_sends_nothing_and_times_out() -> None:
    net = network()
    why = at(net, DOWN_AT, "client", "eth0", False)
    h = net.start_app("client", lines, seconds=20)
    net.run(duration=8)
    assert h.done and h.result["errno"] == 110                          # ETIMEDOUT, as the kernel
    assert not [p for p in net.sniff("client-eth0") if ts(p) > DOWN_AT]
    assert net.routes("client") == [r for r in net.routes("client") if "dev lo" in r]
    noroute = [d for d in net.engine.drops if d.node == "client" and "no route to 10.0.2.2" in d.reason]
    assert all(d.reason.endswith(f"after {why}") for d in noroute)
    times = [d.t / SECOND for d in noroute]
    assert len(times) >= 4 and 2.9 < h.result["at"] - times[0] < 3.5
    assert 0.19 < times[1] - times[0] < 0.25                            # the first RTO, then backoff
    node1 = net.engine.nodes["node1"]
    assert not node1.devices["veth-client"].carrier
    assert node1.devices["cbr0"].ports["veth-client"].state == "disabled"  # type: ignore[attr-defined]
    assert why in node1.devices["veth-client"].link_why


def test_link_up_restores_only_the_prefix_routes() -> None:
    net = network(retries2=4)
    before = net.routes("client")
    at(net, DOWN_AT, "client", "eth0", False)
    at(net, DOWN_AT + 0.5, "client", "eth0", True)
    h = net.start_app("client", lines, seconds=20)
    net.run(duration=12)
    assert "default via 10.0.1.1 dev eth0" in before
    after = net.routes("client")
    assert "10.0.1.0/24 dev eth0 proto kernel scope link src 10.0.1.2" in after
    assert not [r for r in after if r.startswith("default")]
    assert h.result["errno"] == 110                     # no default route: the connection never recovers
    node1 = net.engine.nodes["node1"]
    assert node1.devices["veth-client"].carrier
    assert node1.devices["cbr0"].ports["veth-client"].state == "forwarding"  # type: ignore[attr-defined]


def test_server_link_back_up_recovers_when_the_route_is_back() -> None:
    net = network(retries2=8)
    at(net, DOWN_AT, "server", "eth0", False)
    at(net, DOWN_AT + 0.5, "server", "eth0", True)
    server = net.engine.nodes["server"]
    default = Route(0, 0, "eth0", gateway=0x0A000201)                  # `ip route add default via 10.0.2.1`
    net.engine.sim.at(int((DOWN_AT + 0.6) * SECOND), server.add_route, default)
    h = net.start_app("client", lines, seconds=5)
    net.run(duration=8)
    assert h.result.get("done", 0) >= 20 and "errno" not in h.result
    assert "default via 10.0.2.1 dev eth0" in net.routes("server") and server.devices["eth0"].up


def test_link_set_an_unknown_device_is_an_error() -> None:
    net = network()
    with pytest.raises(PktemuError, match="no device 'eth9'"):
        link_set(net.engine.nodes["client"], "eth9", False, "test")
