"""`pktemu.Network`'s arguments: what a call cannot use is one `pktemu.Error` line, raised at the call."""
from __future__ import annotations

from pathlib import Path

import pytest

from scapy.utils import rdpcap

import pktemu
from datapaths import ROOT

TOPOLOGY = str(ROOT / "topologies" / "service-test.yaml")
SEED_RANGE = r" is not a seed \(an integer, 0 to 2\*\*64-1, as a topology's seed:\)$"


@pytest.mark.parametrize(("seed", "shown"), [("x", "'x'"), (1.5, "1.5"), ([1], r"\[1\]"), (True, "True"),
                                             (-1, "-1"), (2**64, str(2**64))])
def test_a_seed_that_is_not_a_topology_s_seed_is_refused(seed: object, shown: str) -> None:
    with pytest.raises(pktemu.Error, match=rf"^Network.load: seed={shown}{SEED_RANGE}"):
        pktemu.Network.load(TOPOLOGY, "s1-clusterip", seed)  # type: ignore[arg-type]


def test_a_seed_in_range_is_the_run_s_and_all_pcapng_says_it(tmp_path: Path) -> None:
    net = pktemu.Network.load(TOPOLOGY, "s1-clusterip", seed=2**64 - 1, capture=tmp_path)
    net.run()
    assert f"seed {2**64 - 1};".encode() in (Path(net.write()) / "all.pcapng").read_bytes()


def test_a_progress_that_cannot_be_called_is_refused_at_the_call() -> None:
    net = pktemu.Network.load(TOPOLOGY, "s1-clusterip")
    with pytest.raises(pktemu.Error, match=r"^run: progress=5 is not callable \(a function of now and end, "
                                           r"in seconds\)$"):
        net.run(progress=5)  # type: ignore[arg-type]
    assert net.now == 0
    seen: list[tuple[float, float]] = []
    net.run(progress=lambda now, end: seen.append((now, end)))
    assert seen and net.results[0]["http"]["status_line"] == "HTTP/1.1 200 OK"


def test_the_clock_ends_where_pcap_timestamps_do(tmp_path: Path) -> None:
    from scapy.layers.inet import IP, TCP

    syn = IP(dst="10.3.241.152") / TCP(sport=40000, dport=80, flags="S")
    net = pktemu.Network.load(TOPOLOGY, capture=tmp_path)
    net.run(duration=999_999_999)
    net.run(duration=999_999_999)

    def past(call: str, to: str, now: str = "1999999998") -> str:
        return (rf"^{call} would take the clock to {to} s, past its end at 2559277696 s "
                rf"\(2106-02-07T06:28:16Z, where pcap timestamps end; now is {now} s\)$")
    with pytest.raises(pktemu.Error, match=past("run: duration=999999999", "2999999997")):
        net.run(duration=999_999_999)
    with pytest.raises(pktemu.Error, match=past("run: until=2600000000", "2600000000")):
        net.run(until=2_600_000_000)
    with pytest.raises(pktemu.Error, match=r"^run: until=inf is not a number of seconds \(0 or more\)$"):
        net.run(until=float("inf"))
    net.run(until=2_559_277_694)
    with pytest.raises(pktemu.Error, match=past("sr: timeout=2", "2559277696", "2559277694")):
        net.sr1("client", syn, timeout=2)
    with pytest.raises(pktemu.Error, match=past("trace: timeout=3.5", "2559277697.5", "2559277694")):
        net.trace("client", "10.3.241.152:80")
    answer = net.sr1("client", syn, timeout=1)                 # up to the last second, frames are written
    assert answer is not None and answer[TCP].flags == "SA"
    out = Path(net.write())
    tcp = [p for p in rdpcap(str(out / "pcap" / "client-eth0.pcap")) if TCP in p]
    assert [str(p[TCP].flags) for p in tcp] == ["S", "SA", "R"]
    assert int(tcp[-1].time) == 2**32 - 2                     # two seconds before pcap records end
