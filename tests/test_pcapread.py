"""The capture reader on classic pcap: the public captures in tests/data, every header variant, damage."""
from __future__ import annotations

import struct
import tracemalloc
from decimal import Decimal
from pathlib import Path

import pytest
from scapy.utils import rdpcap

import datapaths
from pktemu.errors import PktemuError
from pktemu.io.pcapread import MAX_CAPLEN, read_capture

CAPS = datapaths.CAPTURES
UNREADABLE = {"broken_pcapng_shb_bad_length.pcapng", "broken_truncated_record_huge_caplen.pcap"}
READABLE = sorted(p.name for p in CAPS.iterdir()
                  if p.suffix in (".pcap", ".pcapng") and p.name not in UNREADABLE)
ETHER = b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02\x08\x00" + bytes(range(46))


def pcap(records: list[tuple[int, int, bytes, int]], *, order: str = "<", nano: bool = False,
         linktype: int = 1, snaplen: int = 65535, version: tuple[int, int] = (2, 4)) -> bytes:
    """A pcap file: records are (seconds, fraction, captured bytes, wire length)."""
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = struct.pack(order + "IHHiIII", magic, *version, 0, 0, snaplen, linktype)
    for sec, frac, data, wirelen in records:
        out += struct.pack(order + "IIII", sec, frac, len(data), wirelen) + data
    return out


def write(tmp_path: Path, name: str, data: bytes) -> str:
    p = tmp_path / name
    p.write_bytes(data)
    return str(p)


@pytest.mark.parametrize("name", READABLE)
def test_every_readable_test_capture_reads_as_scapy_reads_it(name: str) -> None:
    cap = read_capture(str(CAPS / name))
    pkts = rdpcap(str(CAPS / name))
    assert len(cap.records) == len(pkts) > 0
    for rec, pkt in zip(cap.records, pkts, strict=True):
        assert rec.ts_ns == int(Decimal(pkt.time) * 10**9), (name, rec.number)
        if "sll2" not in name:
            assert rec.data == bytes(pkt.original) and rec.wirelen == pkt.wirelen, (name, rec.number)
    assert [r.number for r in cap.records] == list(range(1, len(pkts) + 1))


def test_big_endian_file_is_read_in_its_byte_order() -> None:
    cap = read_capture(str(CAPS / "odd_big_endian_pptp.pcap"))
    assert cap.format == "pcap" and cap.byte_order == "big" and len(cap.records) == 23
    first = cap.records[0]
    assert first.data[12:14] == b"\x08\x00" and first.data[14 + 9] == 6    # IPv4 / TCP
    assert first.ts_ns == 954147395148077000


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("nano", [False, True])
def test_both_byte_orders_and_both_resolutions(tmp_path: Path, order: str, nano: bool) -> None:
    frac = 123456789 if nano else 123456
    path = write(tmp_path, "x.pcap", pcap([(1_700_000_000, frac, ETHER, len(ETHER)),
                                         (1_700_000_001, 0, ETHER[:20], 1514)], order=order, nano=nano))
    cap = read_capture(path)
    assert cap.byte_order == ("little" if order == "<" else "big")
    r1, r2 = cap.records
    assert r1.ts_ns == 1_700_000_000 * 10**9 + (123456789 if nano else 123456000)
    assert r1.data == ETHER and not r1.truncated
    assert r2.truncated and r2.wirelen == 1514 and len(r2.data) == 20


def test_snaplen_truncated_records_are_marked_not_whole() -> None:
    cap = read_capture(str(CAPS / "broken_snaplen68_smtp.pcap"))
    assert len(cap.records) == 24
    assert all(r.truncated and len(r.data) <= 68 and len(r.data) < r.wirelen for r in cap.records)


def test_huge_caplen_in_the_upstream_fuzz_case_is_refused_naming_record_2() -> None:
    path = str(CAPS / "broken_truncated_record_huge_caplen.pcap")
    tracemalloc.start()
    try:
        with pytest.raises(PktemuError) as e:
            read_capture(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    msg = str(e.value)
    assert "\n" not in msg and path in msg and "record 2:" in msg and "1409179648" in msg
    assert peak < 1_000_000


def test_caplen_just_over_the_maximum_allocates_nothing(tmp_path: Path) -> None:
    body = pcap([(1, 0, ETHER, len(ETHER))]) + struct.pack("<IIII", 2, 0, 0xFFFFFFF0, 0xFFFFFFF0) + b"x" * 64
    path = write(tmp_path, "huge.pcap", body)
    tracemalloc.start()
    try:
        with pytest.raises(PktemuError, match=r"record 2: caplen 4294967280 is larger than the maximum"):
            read_capture(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000


def test_a_caplen_at_the_maximum_is_still_read(tmp_path: Path) -> None:
    big = ETHER + bytes(MAX_CAPLEN - len(ETHER))
    cap = read_capture(write(tmp_path, "max.pcap", pcap([(1, 0, big, len(big))], snaplen=MAX_CAPLEN)))
    assert len(cap.records[0].data) == MAX_CAPLEN


@pytest.mark.parametrize(("tail", "message"), [
    (struct.pack("<IIII", 2, 0, 100, 100) + b"y" * 10,
     r"record 2: file ends inside the record \(10 of 100 bytes\)"),
    (b"\x01\x02\x03", r"record 2: file ends inside the record header \(3 of 16 bytes\)"),
    (struct.pack("<IIII", 2, 0, 80, 60) + b"z" * 80,
     r"record 2: caplen 80 is larger than the wire length 60"),
])
def test_damaged_records_are_refused_with_their_number(tmp_path: Path, tail: bytes, message: str) -> None:
    path = write(tmp_path, "bad.pcap", pcap([(1, 0, ETHER, len(ETHER))]) + tail)
    with pytest.raises(PktemuError, match=message) as e:
        read_capture(path)
    assert str(e.value).startswith(path + ": ") and "\n" not in str(e.value)


@pytest.mark.parametrize(("data", "message"), [
    (b"", r"not a capture file \(0 bytes\)"),
    (b"GIF89a" + bytes(30), r"not a pcap or pcapng file \(magic 0x47494638\)"),
    (struct.pack("<I", 0xA1B2CD34) + bytes(20), r"'modified' pcap format"),
    (struct.pack("<I", 0xA1B2C3D4) + bytes(4), r"file ends inside the pcap file header"),
])
def test_files_that_are_not_pcap_are_refused(tmp_path: Path, data: bytes, message: str) -> None:
    with pytest.raises(PktemuError, match=message):
        read_capture(write(tmp_path, "f.pcap", data))


def test_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(PktemuError, match=r"nope.pcap: cannot read capture: No such file"):
        read_capture(str(tmp_path / "nope.pcap"))


def test_header_checks_follow_libpcap(tmp_path: Path) -> None:
    with pytest.raises(PktemuError, match=r"unsupported pcap version 1\.0"):
        read_capture(write(tmp_path, "v.pcap", pcap([], version=(1, 0))))
    with pytest.raises(PktemuError, match=r"link-type field 0x00010001 has reserved bits set"):
        read_capture(write(tmp_path, "r.pcap", pcap([], linktype=0x00010001)))


def test_unsupported_link_type_is_refused_at_its_first_record(tmp_path: Path) -> None:
    path = write(tmp_path, "wifi.pcap", pcap([(1, 0, b"\x80" * 30, 30)], linktype=105))
    with pytest.raises(PktemuError, match=r"wifi.pcap: record 1: link type 105 cannot be replayed"):
        read_capture(path)
    assert read_capture(write(tmp_path, "empty.pcap", pcap([], linktype=105))).records == []


def test_fcs_announced_in_the_link_type_field_is_stripped(tmp_path: Path) -> None:
    lt = 1 | 0x04000000 | (2 << 28)                 # Ethernet, FCS present, 2 x 16 bits
    frame = ETHER + b"\xde\xad\xbe\xef"
    rec = read_capture(write(tmp_path, "fcs.pcap", pcap([(1, 0, frame, len(frame))], linktype=lt))).records[0]
    assert rec.data == ETHER and rec.wirelen == len(ETHER)


def test_linux_sll_becomes_ethernet(tmp_path: Path) -> None:
    ip = bytes.fromhex("4500001c0001000040011111c0000201c0000202") + b"\x08\x00\xf7\xff\x00\x00\x00\x00"
    src = bytes.fromhex("0a0b0c0d0e0f")
    sll = struct.pack("!HHH", 0, 1, 6) + src + b"\0\0" + struct.pack("!H", 0x0800)
    bcast = struct.pack("!HHH", 1, 1, 6) + src + b"\0\0" + struct.pack("!H", 0x0806) + bytes(28)
    lltc = struct.pack("!HHH", 0, 1, 6) + src + b"\0\0" + struct.pack("!H", 0x0004) + b"\x42\x42\x03"
    lltc += bytes(40)
    can = struct.pack("!HHH", 0, 280, 0) + bytes(8) + struct.pack("!H", 0x000C) + bytes(16)
    recs = read_capture(write(tmp_path, "sll.pcap", pcap(
        [(1, 0, sll + ip, len(sll + ip)), (2, 0, bcast, len(bcast)), (3, 0, lltc, len(lltc)),
         (4, 0, can, len(can)), (5, 0, (sll + ip)[:30], 100)], linktype=113))).records
    assert recs[0].data == b"\0" * 6 + src + b"\x08\x00" + ip and recs[0].wirelen == len(ip) + 14
    assert recs[1].data[:6] == b"\xff" * 6 and recs[1].data[12:14] == b"\x08\x06"
    assert recs[2].data[12:14] == struct.pack("!H", 43) and recs[2].data[14:17] == b"\x42\x42\x03"
    assert recs[3].unusable is not None and "0x000c" in recs[3].unusable
    assert recs[4].truncated and recs[4].wirelen == 100 - 16 + 14 and len(recs[4].data) == 28


def test_linux_sll2_becomes_ethernet() -> None:
    cap = read_capture(str(CAPS / "odd_linktype_linux_sll2.pcap"))
    raw = rdpcap(str(CAPS / "odd_linktype_linux_sll2.pcap"))
    assert [r.linktype for r in cap.records] == [276] * 6
    for rec, pkt in zip(cap.records, raw, strict=True):
        orig = bytes(pkt.original)
        assert rec.data[14:] == orig[20:] and rec.data[12:14] == orig[0:2]
        assert rec.wirelen == pkt.wirelen - 20 + 14
    arp = cap.records[4]
    assert arp.data[12:14] == b"\x08\x06" and arp.data[6:12] == bytes.fromhex("8e360644acaf")
