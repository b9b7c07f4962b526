"""pcap and pcapng writers: read back by tshark and Scapy, atomic on abort and on kill, byte-stable."""
from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from decimal import Decimal
from typing import Any

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from scapy.utils import rdpcap

from pktemu.io.atomic import AtomicFile, write_text_atomic
from pktemu.io.pcap import PcapWriter
from pktemu.io.pcapng import PcapngWriter
from pktemu.sim import EPOCH_NS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_tshark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")


def frames() -> list[bytes]:
    """Three real frames with odd lengths, so pcapng padding is exercised."""
    e = Ether(src="0a:58:0a:00:01:02", dst="0a:58:0a:00:01:01")
    return [bytes(e / IP(src="10.0.1.2", dst="10.3.241.152") / TCP(sport=40000, dport=80, flags="S")),
            bytes(e / IP(src="10.0.1.2", dst="10.3.240.10") / UDP(sport=40053, dport=53) / Raw(b"q" * 7)),
            bytes(e / IP(src="10.0.1.2", dst="10.0.2.2") / TCP(sport=40000, dport=8080) / Raw(b"GET / x"))]


TIMES = [EPOCH_NS + 1, EPOCH_NS + 123_456_789, EPOCH_NS + 2_000_000_000 + 999_999_999]


def tshark(path: str, *fields: str, filt: str | None = None) -> list[list[str]]:
    cmd = ["tshark", "-n", "-r", path, "-T", "fields", "-E", "separator=\t"]
    for f in fields:
        cmd += ["-e", f]
    if filt:
        cmd += ["-Y", filt]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return [line.split("\t") for line in p.stdout.splitlines()]


def write_pcap(path: str, **kw: Any) -> None:
    with PcapWriter(path, **kw) as w:
        for t, f in zip(TIMES, frames(), strict=True):
            w.write(t, f)


def write_pcapng(path: str) -> None:
    with PcapngWriter(path) as w:
        a = w.add_interface("client/eth0", description="capture point client-eth0")
        b = w.add_interface("node1/veth-client")
        fs = frames()
        w.write(a, TIMES[0], fs[0], "out: DNAT 10.3.241.152:80 -> 10.0.2.2:8080")
        w.write(b, TIMES[1], fs[1])
        w.write(b, TIMES[2], fs[2], "in: bridge hairpin, réécrit")


def test_pcap_header_is_little_endian_nanosecond(tmp_path: Any) -> None:
    p = str(tmp_path / "a.pcap")
    write_pcap(p)
    with open(p, "rb") as f:
        head = f.read(24)
    assert struct.unpack("<IHHiIII", head) == (0xA1B23C4D, 2, 4, 0, 0, 262144, 1)
    write_pcap(p, nanosecond=False, snaplen=96, linktype=113)
    with open(p, "rb") as f:
        assert struct.unpack("<IHHiIII", f.read(24)) == (0xA1B2C3D4, 2, 4, 0, 0, 96, 113)


def test_pcap_reads_back_with_scapy(tmp_path: Any) -> None:
    p = str(tmp_path / "a.pcap")
    write_pcap(p)
    pkts = rdpcap(p)
    assert [bytes(x) for x in pkts] == frames()
    assert [x.time for x in pkts] == [Decimal(t) / 10**9 for t in TIMES]
    assert pkts[0][TCP].dport == 80


@needs_tshark
def test_pcap_reads_back_with_tshark(tmp_path: Any) -> None:
    p = str(tmp_path / "a.pcap")
    write_pcap(p)
    rows = tshark(p, "frame.time_epoch", "frame.len", "ip.dst", "ip.checksum.status")
    assert [r[0] for r in rows] == ["1735689600.000000001", "1735689600.123456789", "1735689602.999999999"]
    assert [r[1] for r in rows] == [str(len(f)) for f in frames()]
    assert [r[2] for r in rows] == ["10.3.241.152", "10.3.240.10", "10.0.2.2"]


@needs_tshark
def test_microsecond_pcap_and_snaplen(tmp_path: Any) -> None:
    p = str(tmp_path / "a.pcap")
    write_pcap(p, nanosecond=False, snaplen=40)
    rows = tshark(p, "frame.time_epoch", "frame.len", "frame.cap_len")
    assert rows[1] == ["1735689600.123456000", str(len(frames()[1])), "40"]
    assert [bytes(x) for x in rdpcap(p)] == [f[:40] for f in frames()]


@needs_tshark
def test_pcapng_interfaces_comments_and_times(tmp_path: Any) -> None:
    p = str(tmp_path / "all.pcapng")
    write_pcapng(p)
    rows = tshark(p, "frame.interface_name", "frame.interface_description", "frame.comment",
                  "frame.time_epoch")
    assert rows == [
        ["client/eth0", "capture point client-eth0", "out: DNAT 10.3.241.152:80 -> 10.0.2.2:8080",
         "1735689600.000000001"],
        ["node1/veth-client", "", "", "1735689600.123456789"],
        ["node1/veth-client", "", "in: bridge hairpin, réécrit", "1735689602.999999999"]]
    assert tshark(p, "frame.number", filt='frame.comment contains "DNAT"') == [["1"]]


def test_pcapng_reads_back_with_scapy(tmp_path: Any) -> None:
    p = str(tmp_path / "all.pcapng")
    write_pcapng(p)
    pkts = rdpcap(p)
    assert [bytes(x) for x in pkts] == frames()
    assert [x.time for x in pkts] == [Decimal(t) / 10**9 for t in TIMES]
    assert [x.sniffed_on for x in pkts] == ["client/eth0", "node1/veth-client", "node1/veth-client"]
    assert pkts[2].comment == "in: bridge hairpin, réécrit".encode()


@needs_tshark
def test_pcapng_every_padding_length(tmp_path: Any) -> None:
    """Data and comment lengths 0..3 mod 4, truncation by a per-interface snaplen."""
    p = str(tmp_path / "pad.pcapng")
    base = frames()[0]
    with PcapngWriter(p) as w:
        big = w.add_interface("big")
        small = w.add_interface("small", snaplen=61)
        for i in range(4):
            w.write(big, EPOCH_NS + i, base + b"\0" * i, "c" * i)
            w.write(small, EPOCH_NS + 10 + i, base + b"\xff" * (6 + i), None if i == 2 else "é" * i)
    rows = tshark(p, "frame.interface_name", "frame.len", "frame.cap_len", "frame.comment")
    big_rows, small_rows = rows[0::2], rows[1::2]
    assert big_rows == [["big", str(len(base) + i), str(len(base) + i), "c" * i] for i in range(4)]
    assert [r[1:3] for r in small_rows] == [[str(len(base) + 6 + i), str(min(len(base) + 6 + i, 61))]
                                            for i in range(4)]
    assert [r[3] for r in small_rows] == ["", "é", "", "ééé"]


def test_pcapng_misuse_is_refused(tmp_path: Any) -> None:
    w = PcapngWriter(str(tmp_path / "x.pcapng"))
    i = w.add_interface("a")
    with pytest.raises(ValueError, match="no interface 1"):
        w.write(i + 1, EPOCH_NS, frames()[0])
    w.write(i, EPOCH_NS, frames()[0])
    with pytest.raises(ValueError, match="added after the first packet"):
        w.add_interface("b")
    w.abort()


def test_output_is_byte_identical_for_identical_input(tmp_path: Any) -> None:
    for name, fn in (("a.pcap", write_pcap), ("a.pcapng", write_pcapng)):
        one, two = str(tmp_path / ("1" + name)), str(tmp_path / ("2" + name))
        fn(one)
        fn(two)
        with open(one, "rb") as f1, open(two, "rb") as f2:
            assert f1.read() == f2.read()


@pytest.mark.parametrize("cls", [PcapWriter, PcapngWriter])
def test_file_appears_only_on_close(tmp_path: Any, cls: type) -> None:
    p = str(tmp_path / "c.cap")
    w = cls(p)
    iface = (w.add_interface("x"),) if cls is PcapngWriter else ()
    w.write(*iface, EPOCH_NS, frames()[0])
    assert not os.path.exists(p)
    w.close()
    w.close()
    assert os.path.exists(p) and not os.path.exists(p + ".tmp")
    assert [bytes(x) for x in rdpcap(p)] == [frames()[0]]


@pytest.mark.parametrize("cls", [PcapWriter, PcapngWriter])
def test_abort_and_exception_leave_nothing(tmp_path: Any, cls: type) -> None:
    p = str(tmp_path / "c.cap")
    w = cls(p)
    w.abort()
    assert os.listdir(str(tmp_path)) == []
    with pytest.raises(RuntimeError), cls(p):
        raise RuntimeError("scenario failed")
    assert os.listdir(str(tmp_path)) == []


def test_killed_writer_leaves_no_file_at_the_final_path(tmp_path: Any) -> None:
    """SIGKILL mid-run, after more than one buffer's worth reached the disk."""
    p = str(tmp_path / "k.pcap")
    code = (f"import os, signal\nfrom pktemu.io.pcap import PcapWriter\nw = PcapWriter({p!r})\n"
            f"for i in range(30000):\n    w.write(i, bytes(100))\nos.kill(os.getpid(), signal.SIGKILL)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, timeout=60)
    assert r.returncode == -signal.SIGKILL
    (left,) = tmp_path.glob(".k.pcap.pktemu-*.tmp")          # the next write into the folder removes it
    assert os.path.getsize(left) > 1 << 20
    assert not os.path.exists(p)


def test_large_capture_crosses_the_buffer(tmp_path: Any) -> None:
    p = str(tmp_path / "big.pcapng")
    with PcapngWriter(p) as w:
        i = w.add_interface("x")
        for n in range(12000):
            w.write(i, EPOCH_NS + n, bytes(range(101)), f"n={n}")
    pkts = rdpcap(p)
    assert len(pkts) == 12000 and pkts[-1].comment == b"n=11999" and bytes(pkts[5000]) == bytes(range(101))


def test_atomic_text_and_existing_file_kept_on_abort(tmp_path: Any) -> None:
    p = str(tmp_path / "state.txt")
    write_text_atomic(p, "old\n")
    f = AtomicFile(p)
    f.write(b"new")
    f.abort()
    with open(p) as fh:
        assert fh.read() == "old\n"
    assert not os.path.exists(p + ".tmp")


def test_bad_timestamp_is_refused(tmp_path: Any) -> None:
    w = PcapWriter(str(tmp_path / "t.pcap"))
    with pytest.raises(ValueError, match="timestamp"):
        w.write(-1, frames()[0])
    w.abort()


def test_writing_costs_far_less_than_a_scapy_dissection(tmp_path: Any) -> None:
    data = frames()[2]
    n = 20000
    pw, nw = PcapWriter(str(tmp_path / "p.pcap")), PcapngWriter(str(tmp_path / "p.pcapng"))
    i = nw.add_interface("x")
    t0 = time.process_time()            # CPU time: the machine's other load is in neither figure
    for k in range(n):
        pw.write(EPOCH_NS + k, data)
        nw.write(i, EPOCH_NS + k, data, "DNAT")
    per_record = (time.process_time() - t0) / n
    pw.close()
    nw.close()
    t0 = time.process_time()
    for _ in range(300):
        Ether(data)
    per_dissection = (time.process_time() - t0) / 300
    assert per_record * 10 < per_dissection


def test_write_after_close_is_refused(tmp_path: Any) -> None:
    w = PcapWriter(str(tmp_path / "t.pcap"))
    w.close()
    with pytest.raises(ValueError, match="write after close"):
        w.write(EPOCH_NS, frames()[0])
    ng = PcapngWriter(str(tmp_path / "t.pcapng"))
    i = ng.add_interface("a")
    ng.abort()
    with pytest.raises(ValueError, match="write after close"):
        ng.write(i, EPOCH_NS, frames()[0])
