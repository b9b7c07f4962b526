"""Inputs the fuzz suite (tests/test_fuzz.py) found breaking the CLI's contract, kept as plain tests
through the real command: each must now end with exit 2, one `pktemu: error: ...` line, no output.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

import datapaths
from conftest import pktemu

TOPO = str(datapaths.ROOT / "topologies" / "service-test.yaml")


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
               "--map", "192.168.1.7=10.0.1.2", "--map", "192.168.1.1=10.3.240.10",
               "--out", str(out), "-q", *opts, check=False, timeout=60)
    return p.returncode, p.stderr


@pytest.mark.parametrize(("gaps", "opts"), [
    ([1.0], ["--pps", "1e-300"]),                 # was: internal error, OverflowError (float inf to int)
    ([100.0], ["--speed", "1e-300"]),             # was: the same, from the recorded times
    ([], ["--pps", "1e-10", "--loop", "2"]),      # was: internal error, a pcap timestamp past 2106
])
def test_a_replay_slower_than_pcap_time_allows_is_refused(tmp_path: Path, gaps: list[float],
                                                          opts: list[str]) -> None:
    out = tmp_path / "out"
    status, err = replay(capture(tmp_path, gaps), out, *opts)
    assert status == 2
    assert err.startswith("pktemu: error: ") and err.count("\n") == 1
    assert "would run past 2106, where pcap timestamps end" in err
    assert not out.exists()


def test_a_slow_replay_that_fits_in_pcap_time_still_runs(tmp_path: Path) -> None:
    """The bound is the pcap timestamp, not the rate: one frame at 1e-10 pps (one loop) is fine."""
    out = tmp_path / "out"
    status, err = replay(capture(tmp_path, []), out, "--pps", "1e-10")
    assert (status, err) == (0, "")
    assert (out / "replay-cap" / "replay.json").is_file()


def test_a_pcapng_section_header_too_short_for_its_trailer_is_refused(tmp_path: Path) -> None:
    """An SHB whose length field says 12 (the fuzzer flipped one bit of 28): no room for the
    trailing length. Was: internal error, struct.error from unpacking the missing trailer."""
    cap = tmp_path / "short-shb.pcapng"
    cap.write_bytes(struct.pack("<IIIHHqI", 0x0A0D0D0A, 12, 0x1A2B3C4D, 1, 0, -1, 28))
    out = tmp_path / "out"
    status, err = replay(str(cap), out)
    assert status == 2
    assert err == f"pktemu: error: {cap}: block 1 (SHB, offset 0): bad block length 12\n"
    assert not out.exists()


def test_a_client_segment_whose_data_offset_overruns_it_is_replayed(tmp_path: Path) -> None:
    """The client's ACK claims 60 bytes of TCP header in a 20-byte segment. Was: internal error,
    IndexError walking its options past the frame to move the timestamp echo; now it is sent as
    captured and the emulated kernel judges it (conntrack calls it INVALID, KUBE-FORWARD drops it)."""
    c, s, cm, sm = "192.168.1.7", "192.168.1.1", "02:00:00:00:00:07", "02:00:00:00:00:01"
    frames = [Ether(src=cm, dst=sm) / IP(src=c, dst=s) / TCP(sport=40123, dport=80, flags="S", seq=1000),
              Ether(src=sm, dst=cm) / IP(src=s, dst=c) / TCP(sport=80, dport=40123, flags="SA", seq=5000,
                                                             ack=1001),
              Ether(src=cm, dst=sm) / IP(src=c, dst=s) / TCP(sport=40123, dport=80, flags="A", seq=1001,
                                                             ack=5001, dataofs=15)]
    for i, f in enumerate(frames):
        f.time = 1_700_000_000 + i / 100
    cap = tmp_path / "doff.pcap"
    wrpcap(str(cap), frames)
    out = tmp_path / "out"
    p = pktemu("replay", str(cap), "--topology", TOPO, "--inject", "node1/veth-client",
               "--map", "192.168.1.7=10.0.1.2", "--map", "192.168.1.1=10.3.241.152", "--out", str(out),
               "--json", check=False, timeout=60)
    assert (p.returncode, p.stderr) == (0, "")
    stats = json.loads((out / "replay-doff" / "replay.json").read_text())
    assert stats["sent"]["packets"] == 2
    assert any("--ctstate INVALID -j DROP" in reason for reason in stats["dropped"])
