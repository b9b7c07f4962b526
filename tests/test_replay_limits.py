"""The replay's one time limit: frames are stamped in pcap files, whose seconds end in 2106. Replays that
end before it run, however many loops they take; those that would pass it are refused before they start."""
from __future__ import annotations

import json
from pathlib import Path

from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

import datapaths
from conftest import pktemu

TOPO = str(datapaths.ROOT / "topologies" / "service-test.yaml")
YEAR = 365 * 86400.0


def capture(tmp_path: Path, gaps: list[float]) -> str:
    """A pcap of UDP datagrams from 192.168.1.7 to 192.168.1.1:53, `gaps` seconds apart."""
    t = 1_700_000_000.0
    frames = []
    for gap in [0.0, *gaps]:
        t += gap
        p = Ether(src="02:00:00:00:00:07", dst="02:00:00:00:00:01") \
            / IP(src="192.168.1.7", dst="192.168.1.1") / UDP(sport=40000, dport=53) / b"x"
        p.time = t
        frames.append(p)
    path = tmp_path / "cap.pcap"
    wrpcap(str(path), frames)
    return str(path)


def replay(cap: str, out: Path, *opts: str) -> tuple[int, str]:
    p = pktemu("replay", cap, "--topology", TOPO, "--inject", "node1/veth-client",
               "--map", "192.168.1.7=10.0.1.2", "--out", str(out), "-q", *opts, check=False, timeout=120)
    return p.returncode, p.stderr


def replayed(out: Path) -> dict[str, object]:
    stats: dict[str, object] = json.loads((out / "replay-cap" / "replay.json").read_text())
    return stats


def test_30000_loops_at_topspeed_run(tmp_path: Path) -> None:
    """Was: refused as running past 2106 (the day of margin for the last answers counted once per loop)."""
    out = tmp_path / "out"
    assert replay(capture(tmp_path, []), out, "--loop", "30000", "--topspeed") == (0, "")
    stats = replayed(out)
    assert stats["loops"] == 30000 and stats["client_side"] == 1
    assert isinstance(stats["virtual_seconds"], float) and stats["virtual_seconds"] < 2


def test_loops_that_end_before_2106_run_and_a_few_more_are_refused(tmp_path: Path) -> None:
    """At 2e-6 pps a loop of one frame lasts 500,000 s: 5,000 loops end in 2104 and run (was: refused);
    5,200 end in 2107: refused, one line naming the loops."""
    cap = capture(tmp_path, [])
    out = tmp_path / "out"
    assert replay(cap, out, "--pps", "2e-6", "--loop", "5000") == (0, "")
    stats = replayed(out)
    assert stats["loops"] == 5000
    seconds = stats["virtual_seconds"]
    assert isinstance(seconds, float) and 4999 * 500_000 <= seconds < 4999 * 500_000 + 5
    out2 = tmp_path / "out2"
    assert replay(cap, out2, "--pps", "2e-6", "--loop", "5200") == (
        2, f"pktemu: error: {cap}: at 2e-06 pps, 5200 loops of the replay would run past 2106, where pcap "
           "timestamps end; use fewer --loop or a faster --speed, --pps or --topspeed\n")
    assert not out2.exists()


def test_one_loop_past_2106_is_refused_naming_its_last_record(tmp_path: Path) -> None:
    """Two frames 80 years apart: at half speed the second would be stamped in 2185."""
    cap = capture(tmp_path, [80 * YEAR])
    out = tmp_path / "out"
    assert replay(cap, out, "--speed", "0.5") == (
        2, f"pktemu: error: {cap}: record 2: at speed x0.5 the replay would run past 2106, where pcap "
           "timestamps end; use a faster --speed, --pps or --topspeed\n")
    assert not out.exists()
    assert replay(cap, out) == (0, "")


def test_two_loops_past_2106_are_refused_one_runs(tmp_path: Path) -> None:
    """Two frames 50 years apart: one loop ends in 2075, two would end in 2125."""
    cap = capture(tmp_path, [50 * YEAR])
    out = tmp_path / "out"
    assert replay(cap, out, "--loop", "2") == (
        2, f"pktemu: error: {cap}: at recorded times, 2 loops of the replay would run past 2106, where pcap "
           "timestamps end; use fewer --loop or a faster --speed, --pps or --topspeed\n")
    assert not out.exists()
    assert replay(cap, out) == (0, "")
