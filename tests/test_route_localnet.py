"""kube-proxy's NodePort on 127.0.0.1 (topologies/nodeport-localhost.yaml) in the emulator: the
DNATed SYN is rerouted out of cbr0 with source 127.0.0.1, a martian unless cbr0 (or `all`) has
route_localnet=1. The same behaviour on the real kernel: tests/test_kernel_route_localnet.py.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import datapaths
from conftest import pktemu
from test_k8s_pcaps import read, syns

TOPO = datapaths.ROOT / "topologies" / "nodeport-localhost.yaml"
SCENARIOS = ("localhost-nodeport-refused", "localhost-nodeport-served", "localhost-nodeport-wrong-device")
MARTIAN = ("node1 netfilter OUTPUT: nat: ip_route_me_harder: martian source 127.0.0.1 out cbr0 "
           "to 10.0.1.2 (route_localnet=0): route EINVAL")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rl") / "out"
    args = [a for sc in SCENARIOS for a in ("--scenario", sc)]
    pktemu("run", str(TOPO), "--out", str(out), "-q", *args, timeout=180)
    return out


def _http(run: Path, sc: str) -> dict[str, object]:
    http: dict[str, object] = json.loads((run / sc / "client-result.json").read_text())["http"]
    return http


@pytest.mark.parametrize("sc", ["localhost-nodeport-refused", "localhost-nodeport-wrong-device"])
def test_without_route_localnet_on_the_output_device_it_times_out(run: Path, sc: str) -> None:
    assert _http(run, sc)["error"] == "timeout"
    drops = (run / sc / "drops.txt").read_text().splitlines()
    assert drops and all(MARTIAN in d for d in drops), drops
    assert syns(read(run / sc / "pcap" / "client-eth0.pcap")) == []       # never on the wire
    assert (run / sc / "conntrack-node1.txt").read_text().strip() == ""    # never confirmed


def test_with_route_localnet_it_is_served_from_the_bridge_address(run: Path) -> None:
    sc = "localhost-nodeport-served"
    http = _http(run, sc)
    assert http["status_line"] == "HTTP/1.1 200 OK" and http["source"] == "127.0.0.1:40000"
    assert "martian" not in (run / sc / "drops.txt").read_text()
    (syn,) = syns(read(run / sc / "pcap" / "client-eth0.pcap"))
    assert (syn.src, syn.dst, syn.dport) == ("10.0.1.1", "10.0.1.2", 8080)     # MASQUERADE to cbr0's
    ct = (run / sc / "conntrack-node1.txt").read_text()
    assert "src=127.0.0.1 dst=127.0.0.1 sport=40000 dport=30080 src=10.0.1.2 dst=10.0.1.1" in ct
    served = json.loads((run / sc / "server-result.json").read_text())["client"][0]["result"]["served"]
    assert served[0]["peer"] == "10.0.1.1:40000"


def test_the_example_runs_cleanly(tmp_path: Path) -> None:
    """Every scenario of the example, the four inherited reference ones included."""
    p = pktemu("run", str(TOPO), "--out", str(tmp_path / "o"), "-q", timeout=300)
    assert p.returncode == 0 and p.stderr == ""
    assert sorted(x.name for x in (tmp_path / "o").iterdir()) == sorted(
        [*SCENARIOS, "s1-clusterip", "s2-noendpoints", "s3-hairpin", "s3b-hairpin-off"])


def _arrive(tmp_path: Path, rl: int, src: str, dst: str) -> list[str]:
    """drops.txt after one UDP datagram src -> dst came in on node1's eth0 from the gateway."""
    import pktemu as api
    from scapy.all import IP, UDP, Ether

    net = api.Network.load(str(TOPO), scenario="s1-clusterip")
    # kube-proxy turned all.route_localnet on when it started; eth0's own setting is what is tested
    net.cmd("node1", f"sysctl -w net.ipv4.conf.all.route_localnet=0 net.ipv4.conf.eth0.route_localnet={rl}")
    reasons: list[str] = []
    net.engine.nodes["node1"].drop_sink = lambda node, where, why, frame: reasons.append(f"{where}: {why}")
    net.sendp("node1/eth0", Ether(src="02:01:0a:64:00:01", dst="02:00:0a:64:00:0b")
              / IP(src=src, dst=dst) / UDP(sport=5000, dport=9))
    net.run(duration=0.01)
    return reasons


@pytest.mark.parametrize(("rl", "src", "dst", "want"), [
    (0, "127.0.0.5", "10.100.0.11", "martian source 127.0.0.5 from eth0 (route_localnet=0)"),
    (0, "10.100.0.1", "127.0.0.1", "martian destination 127.0.0.1 from eth0 (route_localnet=0)"),
    (1, "127.0.0.1", "10.100.0.11", "martian source 127.0.0.1 from eth0: an address of this host "
                                    "(route_localnet=1, accept_local=0)"),
    (1, "127.0.0.5", "10.100.0.11", None),
])
def test_127_8_arriving_on_eth0(tmp_path: Path, rl: int, src: str, dst: str, want: str | None) -> None:
    reasons = _arrive(tmp_path, rl, src, dst)
    if want is None:
        assert not any("martian" in r for r in reasons), reasons
    else:
        # the reason also names the timeline change that decided it (the sysctl -w above)
        assert len(reasons) == 1 and reasons[0].startswith(f"ip_route_input: {want}"), reasons
        assert rl or "route_localnet=0 at 0.000 s by sysctl -w" in reasons[0]
