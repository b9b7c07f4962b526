"""The capture reader on pcapng: interfaces and their clocks, every packet block, unknown blocks, damage."""
from __future__ import annotations

import struct
import tracemalloc
from pathlib import Path

import pytest

import datapaths
from pktemu.errors import PktemuError
from pktemu.io.pcapread import MAX_BLOCK, read_capture

CAPS = datapaths.CAPTURES
ETHER = b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02\x08\x00" + bytes(range(47))   # odd length: padding


def pad(b: bytes) -> bytes:
    return b + b"\0" * (-len(b) % 4)


def opt(code: int, value: bytes, o: str = "<") -> bytes:
    return struct.pack(o + "HH", code, len(value)) + pad(value)


def block(btype: int, body: bytes, o: str = "<") -> bytes:
    body = pad(body)
    return struct.pack(o + "II", btype, len(body) + 12) + body + struct.pack(o + "I", len(body) + 12)


def shb(o: str = "<") -> bytes:
    body = struct.pack(o + "IHHq", 0x1A2B3C4D, 1, 0, -1) + opt(4, b"test", o) + opt(0, b"", o)
    return block(0x0A0D0D0A, body, o)


def idb(linktype: int = 1, tsresol: int | None = None, tsoffset: int | None = None, o: str = "<",
        fcslen: int | None = None) -> bytes:
    opts = b""
    if tsresol is not None:
        opts += opt(9, bytes([tsresol]), o)
    if tsoffset is not None:
        opts += opt(14, struct.pack(o + "q", tsoffset), o)
    if fcslen is not None:
        opts += opt(13, bytes([fcslen]), o)
    return block(1, struct.pack(o + "HHI", linktype, 0, 0) + opts + (opt(0, b"", o) if opts else b""), o)


def epb(iface: int, ts: int, data: bytes, wirelen: int | None = None, o: str = "<",
        comment: bytes = b"") -> bytes:
    body = struct.pack(o + "IIIII", iface, ts >> 32, ts & 0xFFFFFFFF, len(data), wirelen or len(data))
    body += pad(data)
    if comment:
        body += opt(1, comment, o) + opt(0, b"", o)
    return block(6, body, o)


def spb(data: bytes, wirelen: int | None = None) -> bytes:
    return block(3, struct.pack("<I", wirelen or len(data)) + pad(data))


def opb(iface: int, ts: int, data: bytes) -> bytes:
    head = struct.pack("<HHIIII", iface, 0, ts >> 32, ts & 0xFFFFFFFF, len(data), len(data))
    return block(2, head + pad(data))


def write(tmp_path: Path, data: bytes) -> str:
    p = tmp_path / "t.pcapng"
    p.write_bytes(data)
    return str(p)


def test_two_interfaces_with_their_own_resolution() -> None:
    cap = read_capture(str(CAPS / "pcapng_two_interfaces_dns.pcapng"))
    assert cap.format == "pcapng" and len(cap.interfaces) == 2
    assert [r.iface for r in cap.records] == [0, 0, 1, 1, 1, 1]
    assert cap.records[0].ts_ns == 1767663089500330493              # IDB 0 counts nanoseconds
    assert all(r.ts_ns % 1000 == 0 for r in cap.records[2:])         # IDB 1 counts microseconds


def test_every_packet_block_and_resolution(tmp_path: Path) -> None:
    data = (shb() + idb(tsresol=9) + idb(tsresol=0x8A) + idb(tsresol=3, tsoffset=100)
            + epb(0, 1_700_000_000_123_456_789, ETHER, comment=b"hello")
            + block(0x00000BAD, b"custom block, skipped") + block(4, b"\x00" * 8) + block(5, b"\x00" * 12)
            + epb(1, 5 * 1024 + 512, ETHER)                # 2^-10 s units: 5.5 s
            + spb(ETHER) + epb(2, 1_500, ETHER[:20], 1514) + opb(0, 7, ETHER))
    cap = read_capture(write(tmp_path, data))
    r = cap.records
    assert [x.number for x in r] == [1, 2, 3, 4, 5]
    assert r[0].ts_ns == 1_700_000_000_123_456_789 and r[0].data == ETHER
    assert r[1].ts_ns == 5_500_000_000 and r[1].iface == 1
    assert r[2].ts_ns == r[1].ts_ns and r[2].iface == 0 and r[2].data == ETHER      # SPB: no timestamp
    assert r[3].ts_ns == 101_500_000_000 and r[3].truncated and r[3].wirelen == 1514
    assert r[4].ts_ns == 7 and r[4].data == ETHER


def test_big_endian_section_and_a_second_section(tmp_path: Path) -> None:
    data = (shb(">") + idb(o=">") + epb(0, 2_000_000, ETHER, o=">")
            + shb() + idb(tsresol=9) + epb(0, 42, ETHER))
    cap = read_capture(write(tmp_path, data))
    assert cap.byte_order == "big"
    assert [r.ts_ns for r in cap.records] == [2_000_000_000, 42]
    assert len(cap.interfaces) == 1                  # the second section starts its own interface list


def test_fcs_length_option_strips_the_fcs(tmp_path: Path) -> None:
    frame = ETHER + b"\x01\x02\x03\x04"
    rec = read_capture(write(tmp_path, shb() + idb(fcslen=4) + epb(0, 1, frame))).records[0]
    assert rec.data == ETHER and rec.wirelen == len(ETHER)


def test_upstream_corrupt_section_header_is_refused_as_block_1() -> None:
    path = str(CAPS / "broken_pcapng_shb_bad_length.pcapng")
    with pytest.raises(PktemuError) as e:
        read_capture(path)
    msg = str(e.value)
    assert msg == (f"{path}: block 1 (SHB, offset 0): trailing length 808464432 differs from the "
                   "leading length 52")


def test_packet_for_an_undescribed_interface_names_its_record(tmp_path: Path) -> None:
    with pytest.raises(PktemuError, match=r"record 2 \(block 4, offset \d+\): interface 3 has no interface"):
        read_capture(write(tmp_path, shb() + idb() + epb(0, 1, ETHER) + epb(3, 1, ETHER)))


def test_huge_block_length_allocates_nothing(tmp_path: Path) -> None:
    data = shb() + idb() + struct.pack("<II", 6, 0xFFFFFFF0) + b"\0" * 64
    tracemalloc.start()
    try:
        with pytest.raises(PktemuError, match=rf"block 3 \(EPB, offset \d+\): block length 4294967280 is "
                                              rf"larger than the maximum {MAX_BLOCK}"):
            read_capture(write(tmp_path, data))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000


@pytest.mark.parametrize(("tail", "message"), [
    (struct.pack("<II", 6, 30) + bytes(22), r"block 3 \(EPB, offset \d+\): bad block length 30"),
    (struct.pack("<II", 6, 64) + bytes(20),
     r"block 3 \(EPB, offset \d+\): file ends inside the block \(28 of 64"),
    (struct.pack("<II", 6, 32) + struct.pack("<IIIII", 0, 0, 0, 200, 200) + struct.pack("<I", 32),
     r"record 1 \(block 3, offset \d+\): caplen 200 runs past the end of the block"),
    (struct.pack("<II", 6, 36) + struct.pack("<IIIII", 0, 0, 0, 0, 0) + b"\0\0\0\0" + struct.pack("<I", 40),
     r"trailing length 40 differs from the leading length 36"),
    (b"\x06\x00", r"block 3 \(offset \d+\): file ends inside the block header \(2 of 8 bytes\)"),
])
def test_damaged_blocks_are_refused(tmp_path: Path, tail: bytes, message: str) -> None:
    with pytest.raises(PktemuError, match=message) as e:
        read_capture(write(tmp_path, shb() + idb() + tail))
    assert "\n" not in str(e.value)


def test_option_running_past_its_block_is_refused(tmp_path: Path) -> None:
    bad_idb = block(1, struct.pack("<HHI", 1, 0, 0) + struct.pack("<HH", 2, 400) + b"eth0")
    with pytest.raises(PktemuError, match=r"block 2 \(IDB, offset 40\): option 2 of length 400 runs past"):
        read_capture(write(tmp_path, shb() + bad_idb))


def test_unsupported_link_type_in_one_interface(tmp_path: Path) -> None:
    data = shb() + idb() + idb(linktype=127) + epb(0, 1, ETHER) + epb(1, 1, ETHER)
    with pytest.raises(PktemuError, match=r"record 2 \(block 5, offset \d+\): link type 127 cannot be"):
        read_capture(write(tmp_path, data))
