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


def test_a_manifest_whose_kind_is_not_a_string_is_one_line(tmp_path: Path) -> None:
    """F1: `kind: [a]` in a manifest ended in exit 70 (unhashable type)."""
    base = datapaths.ROOT / "topologies"
    man = tmp_path / "bad.yaml"
    services = (base / "k8s" / "service-test.yaml").read_text()
    man.write_text(services.replace("kind: Service", "kind: [Service]", 1))
    topo = tmp_path / "t.yaml"
    topo.write_text((base / "service-test-k8s.yaml").read_text()
                    .replace("k8s/service-test.yaml", str(man))
                    .replace("k8s/service-test-pods.yaml", str(base / "k8s" / "service-test-pods.yaml"))
                    .replace("extends: ", f"extends: {base}/"))
    p = pktemu("validate", str(topo), check=False)
    assert p.returncode == 2, p.stderr
    assert p.stderr.count("\n") == 1 and "unsupported kind ['Service']" in p.stderr, p.stderr


def test_dev_zero_as_a_rules_file_is_named_for_what_it_is(tmp_path: Path) -> None:
    topo = tmp_path / "t.yaml"
    topo.write_text((datapaths.ROOT / "topologies" / "service-test.yaml").read_text()
                    .replace("iptables: kube-proxy-rules.iptables", "iptables: /dev/zero", 1))
    p = pktemu("validate", str(topo), check=False)
    assert p.returncode == 2
    assert p.stderr.strip().endswith("iptables: /dev/zero is not a regular file"), p.stderr


# F2: a name too long for a directory entry (with the temporary name's overhead) left an empty --out
# behind, and the message named the output folder instead of the option or field at fault.
@pytest.mark.parametrize(("name", "why"), [
    ("x" * 250, "250 bytes long, more than the 202 a directory name can have here"),
    ("x" * 203, "203 bytes long, more than the 202"),
    ("é" * 102, "204 bytes long"),                  # bytes, not characters
    ("..", "not a usable directory name"),
    ("a/b", "not a usable directory name"),
])
def test_a_replay_name_that_cannot_be_a_folder_is_refused_before_anything_is_made(
        tmp_path: Path, name: str, why: str) -> None:
    cap = capture(tmp_path, [])
    for out in (tmp_path / "new" / "out", tmp_path / "existing"):
        if out.name == "existing":
            out.mkdir()
        status, err = replay(cap, out, "--name", name)
        assert status == 2
        assert err.startswith("pktemu: error: --name '") and err.count("\n") == 1, err
        assert why in err, err
        if out.name == "existing":
            assert list(out.iterdir()) == []
        else:
            assert not (tmp_path / "new").exists()


def test_a_replay_whose_default_name_is_too_long_asks_for_name(tmp_path: Path) -> None:
    cap = Path(capture(tmp_path, [])).rename(tmp_path / ("c" * 200 + ".pcap"))
    out = tmp_path / "out"
    status, err = replay(str(cap), out)
    assert status == 2 and err.count("\n") == 1
    assert err.startswith("pktemu: error: --name: not given, and the default from the capture's file name")
    assert err.endswith("is 207 bytes long, more than the 202 a directory name can have here (255, less 53 "
                        "for its temporary name); give a shorter --name\n"), err
    assert not out.exists()


def test_a_replay_name_of_the_longest_length_is_written(tmp_path: Path) -> None:
    out = tmp_path / "out"
    status, err = replay(capture(tmp_path, []), out, "--name", "x" * 202)
    assert (status, err) == (0, "")
    assert (out / ("x" * 202) / "replay.json").is_file()
    assert [p.name for p in out.iterdir()] == ["x" * 202]


def _long_scenario(tmp_path: Path, length: int) -> tuple[Path, str]:
    name = "s" * length
    topo = tmp_path / "t.yaml"
    topo.write_text(f"extends: {datapaths.DATA / 'lan.yaml'}\nscenarios:\n  {name}:\n"
                    "    traffic: [{node: h1, app: {kind: ping, target: 10.9.0.2}}]\n")
    return topo, name


def test_a_scenario_name_too_long_for_its_output_folder_is_refused(tmp_path: Path) -> None:
    topo, name = _long_scenario(tmp_path, 203)
    out = tmp_path / "out"
    p = pktemu("run", str(topo), "--out", str(out), "-q", check=False, timeout=60)
    assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
    assert p.stderr.startswith(f"pktemu: error: {topo}: scenarios.")
    assert p.stderr.endswith("this one is 203 bytes long, more than the 202 a directory name can have "
                             "here (255, less 53 for its temporary name)\n"), p.stderr    # middle cut short
    assert not out.exists()
    assert pktemu("validate", str(topo), check=False).returncode == 2


def test_a_scenario_name_of_the_longest_length_runs(tmp_path: Path) -> None:
    topo, name = _long_scenario(tmp_path, 202)
    out = tmp_path / "out"
    p = pktemu("run", str(topo), "--scenario", name, "--out", str(out), "-q", check=False, timeout=60)
    assert (p.returncode, p.stderr) == (0, "")
    assert json.loads((out / name / "client-result.json").read_text())["received"] == 1
