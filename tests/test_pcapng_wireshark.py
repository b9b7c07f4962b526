"""all.pcapng as Wireshark reads it: a comment and a direction on every frame, what made the file,
each capture point's addresses and counts, and no false alarm from seeing a segment at many points
once pktemu's Wireshark profile (pktemu/wireshark/) is used."""
from __future__ import annotations

import os
import re
import shutil
import socket
import struct
import subprocess
from pathlib import Path

import pytest

from conftest import pktemu

PROFILE = Path(__file__).resolve().parent.parent / "pktemu" / "wireshark"
needs_tshark = pytest.mark.skipif(shutil.which("tshark") is None, reason="needs tshark")


def blocks(path: Path) -> list[tuple[int, bytes]]:
    """(type, body) of every pcapng block, little-endian as pktemu writes them."""
    raw = path.read_bytes()
    out, pos = [], 0
    while pos < len(raw):
        btype, total = struct.unpack_from("<II", raw, pos)
        out.append((btype, raw[pos + 8:pos + total - 4]))
        pos += total
    return out


def options(body: bytes, pos: int) -> list[tuple[int, bytes]]:
    out = []
    while pos + 4 <= len(body):
        code, ln = struct.unpack_from("<HH", body, pos)
        if code == 0:
            break
        out.append((code, body[pos + 4:pos + 4 + ln]))
        pos += 4 + ln + (-ln % 4)
    return out


def pcap_frames(path: Path) -> list[bytes]:
    raw = path.read_bytes()
    out, pos = [], 24
    while pos < len(raw):
        _s, _f, cap, _n = struct.unpack_from("<IIII", raw, pos)
        out.append(raw[pos + 16:pos + 16 + cap])
        pos += 16 + cap
    return out


def tshark(*args: str, env: dict[str, str] | None = None) -> str:
    p = subprocess.run(["tshark", "-n", *args], capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 0, p.stderr
    return p.stdout


@needs_tshark
def test_every_frame_has_a_comment_and_a_direction(service_test_run: Path) -> None:
    for sc in ("s1-clusterip", "s3b-hairpin-off"):
        out = tshark("-r", str(service_test_run / sc / "all.pcapng"), "-T", "fields",
                     "-e", "frame.interface_name", "-e", "frame.packet_flags_direction",
                     "-e", "frame.comment")
        rows = [r.split("\t") for r in out.splitlines()]
        assert rows and all(r[2] for r in rows), [r for r in rows if not r[2]][:3]
        for point, flags, comment in rows:
            assert int(flags, 16) in (1, 2), (point, flags)
            assert comment.startswith("in: " if int(flags, 16) == 1 else "out: "), (point, flags, comment)
    s1 = service_test_run / "s1-clusterip" / "all.pcapng"
    plain = tshark("-r", str(s1), "-T", "fields", "-e", "frame.comment").splitlines()
    assert len(plain) == 152
    assert "in: node1/veth-client received" in plain and "out: node2/veth-server sent" in plain


def test_section_and_interfaces_say_what_made_the_file(service_test_run: Path) -> None:
    bl = blocks(service_test_run / "s1-clusterip" / "all.pcapng")
    assert bl[0][0] == 0x0A0D0D0A
    shb = dict(options(bl[0][1], 16))
    comment = shb[1].decode()
    assert "topology service-test (service-test.yaml)" in comment and "scenario s1-clusterip" in comment
    assert re.search(r"seed \d+", comment) and re.match(r"pktemu \d+\.\d+", comment), comment
    idbs = [dict(options(body, 8)) for t, body in bl if t == 1]
    by_name = {o[2].decode(): o for o in idbs}
    cbr0 = by_name["node1/cbr0"]
    assert (socket.inet_ntoa(cbr0[4][:4]), socket.inet_ntoa(cbr0[4][4:])) == ("10.0.1.1", "255.255.255.0")
    assert len(cbr0[6]) == 6 and "bridge cbr0 on node node1" in cbr0[3].decode()
    assert "ports veth-client" in cbr0[3].decode()
    veth = by_name["node1/veth-client"]
    assert "peer client/eth0" in veth[3].decode() and "port of bridge cbr0" in veth[3].decode()
    assert socket.inet_ntoa(by_name["client/eth0"][4][:4]) == "10.0.1.2"


def test_statistics_blocks_count_frames_and_drops_per_point(service_test_run: Path) -> None:
    for sc, dropped_at in (("s1-clusterip", {}), ("s3b-hairpin-off", {"node1/cbr0": 1})):
        d = service_test_run / sc
        bl = blocks(d / "all.pcapng")
        names = [dict(options(body, 8))[2].decode() for t, body in bl if t == 1]
        isbs = {}
        for t, body in bl:
            if t == 5:
                ifid = struct.unpack_from("<I", body)[0]
                o = dict(options(body, 12))
                isbs[names[ifid]] = (struct.unpack("<Q", o[4])[0], struct.unpack("<Q", o[5])[0])
        assert bl[-1][0] == 5 and sorted(isbs) == sorted(names)
        for name, (recv, drop) in isbs.items():
            pcap = d / "pcap" / (name.replace("/", "-") + ".pcap")
            assert recv == len(pcap_frames(pcap)), name
            assert drop == dropped_at.get(name, 0), (sc, name, drop)


def test_the_per_interface_pcaps_hold_the_merged_frames_of_their_point(service_test_run: Path) -> None:
    d = service_test_run / "s1-clusterip"
    bl = blocks(d / "all.pcapng")
    names = [dict(options(body, 8))[2].decode() for t, body in bl if t == 1]
    merged: dict[str, list[bytes]] = {n: [] for n in names}
    for t, body in bl:
        if t == 6:
            ifid, _hi, _lo, cap, _n = struct.unpack_from("<IIIII", body)
            merged[names[ifid]].append(body[20:20 + cap])
    assert sum(map(len, merged.values())) == 152
    for name, frames in merged.items():
        assert pcap_frames(d / "pcap" / (name.replace("/", "-") + ".pcap")) == frames, name


def profile_options() -> list[str]:
    """The `-o` list README documents: the profile's preferences (but its GUI columns) and expert
    severities, given to tshark on the command line."""
    opts = []
    for line in (PROFILE / "preferences").read_text().splitlines():
        m = re.match(r"([a-z0-9_.]+):\s*(\S+)$", line)
        if m and not m.group(1).startswith("gui."):
            opts += ["-o", f"{m.group(1)}:{m.group(2)}"]
    for line in (PROFILE / "expert_severity").read_text().splitlines():
        if line and not line.startswith("#"):
            opts += ["-o", f"uat:expert_severity:{line}"]
    return opts


def alarms(path: Path, *args: str, env: dict[str, str] | None = None) -> set[str]:
    """Warning and error expert items of `path`, frame numbers left out (they differ between files)."""
    out = tshark("-r", str(path), *args, "-Y", "_ws.expert.severity >= 6291456", "-T", "fields",
                 "-E", "occurrence=a", "-E", "separator=\x02", "-E", "aggregator=\x01",
                 "-e", "_ws.expert.message", "-e", "_ws.expert.severity", env=env)
    found = set()
    for line in out.splitlines():
        msgs, sevs = line.split("\x02")
        for msg, sev in zip(msgs.split("\x01"), sevs.split("\x01"), strict=True):
            if int(sev) >= 6291456:                             # PI_WARN
                found.add(re.sub(r"\d+", "N", msg))
    return found


@needs_tshark
def test_the_profile_leaves_no_alarm_the_per_interface_pcaps_do_not_raise(service_test_run: Path,
                                                                         tmp_path: Path) -> None:
    cfg = tmp_path / "config"
    shutil.copytree(PROFILE, cfg / "wireshark" / "profiles" / "pktemu")
    env = {**os.environ, "XDG_CONFIG_HOME": str(cfg), "HOME": str(tmp_path)}
    for sc in ("s1-clusterip", "s2-noendpoints", "s3-hairpin", "s3b-hairpin-off"):
        d = service_test_run / sc
        merged = d / "all.pcapng"
        single: set[str] = set()
        for pcap in sorted((d / "pcap").glob("*.pcap")):
            single |= alarms(pcap)
        if sc == "s1-clusterip":
            assert alarms(merged) - single, "the defaults raise alarms on the merged file (the issue)"
            defaults = tshark("-r", str(merged), "-q", "-z", "expert")
            assert "retransmission" in defaults and "Duplicate IP" in defaults
        assert alarms(merged, "-C", "pktemu", env=env) <= single, sc
        assert alarms(merged, *profile_options()) <= single, sc
        quiet = tshark("-r", str(merged), *profile_options(), "-q", "-z", "expert,warn")
        assert "retransmission" not in quiet and "Duplicate" not in quiet, quiet


def test_the_profile_is_shipped_with_the_package() -> None:
    pyproject = (PROFILE.parent.parent / "pyproject.toml").read_text()
    assert '"wireshark/preferences", "wireshark/expert_severity"' in pyproject
    assert "tcp.analyze_sequence_numbers: FALSE" in (PROFILE / "preferences").read_text()


def test_a_run_still_succeeds_and_writes_the_pcapng(tmp_path: Path) -> None:
    pktemu("run", "topologies/service-test.yaml", "--scenario", "s2-noendpoints", "--out", str(tmp_path),
           "-q")
    assert blocks(tmp_path / "s2-noendpoints" / "all.pcapng")[-1][0] == 5


def test_readme_gives_tshark_the_profiles_preferences() -> None:
    readme = (PROFILE.parent.parent / "README.md").read_text().replace("\\\n", " ")
    block = next(line for line in readme.splitlines() if line.startswith("tshark -r pcaps/s1-clusterip"))
    given = [o.strip("'") for o in re.findall(r"-o ('[^']*'|\S+)", block)]
    assert given == profile_options()[1::2]
