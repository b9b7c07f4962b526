"""Reading captures from anywhere: pcap and pcapng, turned into Ethernet frames for replay.

Captures come from other machines and other tools, so nothing in them is trusted: every length
is checked against a limit and against what is left of the file before anything is read or
allocated, and the first inconsistency stops the read with one line naming the file and the
record (or pcapng block) and what is wrong. pcap is read in both byte orders with µs or ns
timestamps; pcapng with several sections and interfaces, each with its own `if_tsresol` and
`if_tsoffset`, from EPB, SPB and OPB packet blocks (other blocks are skipped). Link types
Ethernet (802.1Q tags stay inside), Linux cooked SLL and SLL2 (converted to Ethernet) are
accepted; a packet of any other link type is refused. A record whose caplen is below its wire
length is returned as it is, marked `truncated`, for the caller to count: it is not whole.
"""
from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from pktemu.errors import PktemuError

LINKTYPE_ETHERNET = 1
LINKTYPE_LINUX_SLL = 113
LINKTYPE_LINUX_SLL2 = 276
SUPPORTED = {LINKTYPE_ETHERNET: "Ethernet", LINKTYPE_LINUX_SLL: "Linux cooked (SLL)",
             LINKTYPE_LINUX_SLL2: "Linux cooked v2 (SLL2)"}

MAX_CAPLEN = 262_144            # libpcap's MAXIMUM_SNAPLEN: a record claiming more is corrupt
MAX_BLOCK = 16 * 1024 * 1024    # libpcap's pcapng MAX_BLOCKSIZE

PCAP_MAGIC = {0xA1B2C3D4: 1_000, 0xA1B23C4D: 1}     # magic -> ns per timestamp unit
PCAPNG_SHB = 0x0A0D0D0A
BYTE_ORDER_MAGIC = 0x1A2B3C4D
BT_IDB, BT_OPB, BT_SPB, BT_EPB = 1, 2, 3, 6
OPT_END, IF_TSRESOL, IF_FCSLEN, IF_TSOFFSET = 0, 9, 13, 14

ETH_P_8021Q = 0x8100
_PKTTYPE_BROADCAST, _PKTTYPE_MULTICAST = 1, 2
_ARPHRD_NETLINK = 824


@dataclass(frozen=True, slots=True)
class Record:
    """One packet of a capture, as an Ethernet frame (converted when the link type was SLL/SLL2)."""
    number: int          # 1-based in file order, as tshark numbers frames
    ts_ns: int           # capture time, ns since the Unix epoch
    data: bytes
    wirelen: int         # length of the whole frame on the wire (as Ethernet)
    iface: int = 0       # pcapng interface id (0 in pcap)
    linktype: int = LINKTYPE_ETHERNET
    unusable: str | None = None   # why this record could not be made an Ethernet frame

    @property
    def truncated(self) -> bool:
        return len(self.data) < self.wirelen


@dataclass
class Interface:
    linktype: int
    snaplen: int
    ts_div: tuple[int, int] = (1_000, 1)   # ns = units * num // den
    ts_offset_ns: int = 0
    fcs_len: int = 0
    name: str = ""


@dataclass
class Capture:
    path: str
    format: str                             # "pcap" or "pcapng"
    byte_order: str                         # "little" or "big" (of the first section)
    records: list[Record] = field(default_factory=list)
    interfaces: list[Interface] = field(default_factory=list)


def read_capture(path: str) -> Capture:
    """The whole capture, validated: any damage raises PktemuError before the caller gets anything."""
    try:
        f = open(path, "rb")  # noqa: SIM115 (closed below)
    except OSError as e:
        raise PktemuError(f"{path}: cannot read capture: {e.strerror or e}") from None
    with f:
        head = f.read(4)
        if len(head) < 4:
            raise PktemuError(f"{path}: not a capture file ({len(head)} bytes)")
        f.seek(0)
        cap = Capture(path, "pcapng" if head == b"\x0a\x0d\x0d\x0a" else "pcap", "little")
        reader = _read_pcapng(path, f, cap) if cap.format == "pcapng" else _read_pcap(path, f, cap)
        cap.records.extend(reader)
    return cap


# ---------------------------------------------------------------------------- pcap
_PCAP_HDR = struct.Struct("IHHiIII")
_REC_HDR = struct.Struct("IIII")


def _read_pcap(path: str, f: BinaryIO, cap: Capture) -> Iterator[Record]:
    raw = f.read(24)
    magic_le = int.from_bytes(raw[:4], "little")
    magic_be = int.from_bytes(raw[:4], "big")
    if magic_le in PCAP_MAGIC:
        order, unit = "<", PCAP_MAGIC[magic_le]
    elif magic_be in PCAP_MAGIC:
        order, unit = ">", PCAP_MAGIC[magic_be]
        cap.byte_order = "big"
    elif 0xA1B2CD34 in (magic_le, magic_be):
        raise PktemuError(f"{path}: the 'modified' pcap format (magic 0xa1b2cd34) is not supported")
    else:
        raise PktemuError(f"{path}: not a pcap or pcapng file (magic 0x{magic_be:08x})")
    if len(raw) < 24:
        raise PktemuError(f"{path}: file ends inside the pcap file header ({len(raw)} of 24 bytes)")
    _m, vmaj, vmin, _zone, _sig, snaplen, ltfield = struct.unpack(order + _PCAP_HDR.format, raw)
    if vmaj != 2 or vmin > 4:
        raise PktemuError(f"{path}: unsupported pcap version {vmaj}.{vmin} (expected 2.4)")
    if ltfield & 0x03FF0000:
        raise PktemuError(f"{path}: pcap header: link-type field 0x{ltfield:08x} has reserved bits set")
    fcs = ((ltfield >> 28) & 0xF) * 2 if ltfield & 0x04000000 else 0
    iface = Interface(ltfield & 0xFFFF, snaplen, (unit, 1), 0, fcs)
    cap.interfaces.append(iface)
    rec = struct.Struct(order + _REC_HDR.format)
    n = 0
    while True:
        hdr = f.read(16)
        if not hdr:
            return
        n += 1
        if len(hdr) < 16:
            raise PktemuError(f"{path}: record {n}: file ends inside the record header "
                              f"({len(hdr)} of 16 bytes)")
        sec, frac, caplen, wirelen = rec.unpack(hdr)
        if caplen > MAX_CAPLEN:
            raise PktemuError(f"{path}: record {n}: caplen {caplen} is larger than the maximum {MAX_CAPLEN} "
                              f"(snaplen {snaplen}): corrupt record header")
        if caplen > wirelen:
            raise PktemuError(f"{path}: record {n}: caplen {caplen} is larger than the wire length {wirelen}")
        data = f.read(caplen)
        if len(data) < caplen:
            raise PktemuError(f"{path}: record {n}: file ends inside the record "
                              f"({len(data)} of {caplen} bytes)")
        yield _record(f"{path}: record {n}", n, sec * 1_000_000_000 + frac * unit, data, wirelen, 0, iface)


# ---------------------------------------------------------------------------- pcapng
def _read_pcapng(path: str, f: BinaryIO, cap: Capture) -> Iterator[Record]:
    order = "<"
    ifaces: list[Interface] = []
    block = 0
    packets = 0
    last_ts = 0
    while True:
        off = f.tell()
        head = f.read(8)
        if not head:
            return
        block += 1
        where = f"{path}: block {block} (offset {off})"
        if len(head) < 8:
            raise PktemuError(f"{where}: file ends inside the block header ({len(head)} of 8 bytes)")
        if head[:4] == b"\x0a\x0d\x0d\x0a":
            bom = f.read(4)
            if len(bom) < 4:
                raise PktemuError(f"{where}: file ends inside the section header")
            if int.from_bytes(bom, "little") == BYTE_ORDER_MAGIC:
                order = "<"
            elif int.from_bytes(bom, "big") == BYTE_ORDER_MAGIC:
                order = ">"
            else:
                raise PktemuError(f"{where}: section header: bad byte-order magic 0x{bom.hex()}")
            if block == 1:
                cap.byte_order = "little" if order == "<" else "big"
            head += bom
        btype, total = struct.unpack(order + "II", head[:8])
        what = _BLOCK_NAMES.get(btype, f"type 0x{btype:08x}")
        where = f"{path}: block {block} ({what}, offset {off})"
        if total < len(head) + 4 or total % 4:            # an SHB's header is 12 bytes, then the trailer
            raise PktemuError(f"{where}: bad block length {total}")
        if total > MAX_BLOCK:
            raise PktemuError(f"{where}: block length {total} is larger than the maximum {MAX_BLOCK}")
        rest = f.read(total - len(head))
        if len(rest) < total - len(head):
            raise PktemuError(f"{where}: file ends inside the block "
                              f"({len(head) + len(rest)} of {total} bytes)")
        body = (head + rest)[8:-4]
        trailer = struct.unpack(order + "I", rest[-4:])[0]
        if trailer != total:
            raise PktemuError(f"{where}: trailing length {trailer} differs from the leading length {total}")
        if btype == PCAPNG_SHB:
            _section(where, order, body)
            ifaces = []
            cap.interfaces = ifaces
        elif btype == BT_IDB:
            ifaces.append(_interface(where, order, body))
        elif btype in (BT_EPB, BT_OPB, BT_SPB):
            packets += 1
            rwhere = f"{path}: record {packets} (block {block}, offset {off})"
            ifid, ts, data, wirelen = _packet(rwhere, order, btype, body, ifaces)
            if ifid >= len(ifaces):
                raise PktemuError(f"{rwhere}: interface {ifid} has no interface description block")
            iface = ifaces[ifid]
            if ts is None:
                ts_ns = last_ts               # an SPB has no timestamp: it keeps the previous one
            else:
                num, den = iface.ts_div
                ts_ns = ts * num // den + iface.ts_offset_ns
            last_ts = ts_ns
            yield _record(rwhere, packets, ts_ns, data, wirelen, ifid, iface)


_BLOCK_NAMES = {PCAPNG_SHB: "SHB", BT_IDB: "IDB", BT_OPB: "OPB", BT_SPB: "SPB", BT_EPB: "EPB", 4: "NRB",
                5: "ISB", 10: "DSB"}


def _section(where: str, order: str, body: bytes) -> None:
    if len(body) < 16:
        raise PktemuError(f"{where}: section header body is {len(body)} bytes, needs 16")
    vmaj, vmin = struct.unpack_from(order + "HH", body, 4)
    if vmaj != 1:
        raise PktemuError(f"{where}: unsupported pcapng version {vmaj}.{vmin}")
    _options(where, order, body, 16)


def _options(where: str, order: str, body: bytes, pos: int) -> dict[int, bytes]:
    """Options as {code: first value}; an option running past its block is corruption."""
    opts: dict[int, bytes] = {}
    while pos + 4 <= len(body):
        code, ln = struct.unpack_from(order + "HH", body, pos)
        if code == OPT_END:
            break
        end = pos + 4 + ln
        if end > len(body):
            raise PktemuError(f"{where}: option {code} of length {ln} runs past the end of the block")
        opts.setdefault(code, body[pos + 4:end])
        pos = end + (-ln % 4)
    return opts


def ts_units(where: str, order: str, tsresol: bytes | None,
             tsoffset: bytes | None) -> tuple[tuple[int, int], int]:
    """((num, den), offset ns) of an IDB's `if_tsresol` and `if_tsoffset` (absent: µs, 0 s): a
    packet's time is `units * num // den + offset` ns. Shared with the report's reader."""
    div = (1_000, 1)
    if tsresol:
        v = tsresol[0] & 0x7F
        if tsresol[0] & 0x80:
            if v > 63:
                raise PktemuError(f"{where}: if_tsresol 2^-{v} out of range")
            div = (1_000_000_000, 1 << v)
        elif v > 18:
            raise PktemuError(f"{where}: if_tsresol 10^-{v} out of range")
        else:
            div = (10 ** (9 - v), 1) if v <= 9 else (1, 10 ** (v - 9))
    offset = 0
    if tsoffset is not None:
        if len(tsoffset) != 8:
            raise PktemuError(f"{where}: if_tsoffset has {len(tsoffset)} bytes, needs 8")
        offset = struct.unpack(order + "q", tsoffset)[0] * 1_000_000_000
    return div, offset


def _interface(where: str, order: str, body: bytes) -> Interface:
    if len(body) < 8:
        raise PktemuError(f"{where}: interface description body is {len(body)} bytes, needs 8")
    linktype, _res, snaplen = struct.unpack_from(order + "HHI", body, 0)
    opts = _options(where, order, body, 8)
    iface = Interface(linktype, snaplen, (1_000, 1), name=opts.get(2, b"").decode("utf-8", "replace"))
    iface.ts_div, iface.ts_offset_ns = ts_units(where, order, opts.get(IF_TSRESOL), opts.get(IF_TSOFFSET))
    fcs = opts.get(IF_FCSLEN)
    if fcs:
        iface.fcs_len = fcs[0]
    return iface


def _packet(where: str, order: str, btype: int, body: bytes,
            ifaces: list[Interface]) -> tuple[int, int | None, bytes, int]:
    """(interface id, raw timestamp or None, captured bytes, wire length) of EPB/OPB/SPB."""
    if btype == BT_SPB:
        if len(body) < 4:
            raise PktemuError(f"{where}: simple packet block body is {len(body)} bytes, needs 4")
        wirelen = struct.unpack_from(order + "I", body, 0)[0]
        if not ifaces:
            raise PktemuError(f"{where}: interface 0 has no interface description block")
        snap = ifaces[0].snaplen or MAX_BLOCK
        caplen = min(wirelen, snap, len(body) - 4)
        return 0, None, body[4:4 + caplen], wirelen
    if btype == BT_EPB:
        if len(body) < 20:
            raise PktemuError(f"{where}: enhanced packet block body is {len(body)} bytes, needs 20")
        ifid, hi, lo, caplen, wirelen = struct.unpack_from(order + "IIIII", body, 0)
        pos = 20
    else:
        if len(body) < 20:
            raise PktemuError(f"{where}: packet block body is {len(body)} bytes, needs 20")
        ifid, _drops, hi, lo, caplen, wirelen = struct.unpack_from(order + "HHIIII", body, 0)
        pos = 20
    if pos + caplen > len(body):
        raise PktemuError(f"{where}: caplen {caplen} runs past the end of the block")
    if caplen > wirelen:
        raise PktemuError(f"{where}: caplen {caplen} is larger than the wire length {wirelen}")
    _options(where, order, body, pos + caplen + (-caplen % 4))
    return ifid, (hi << 32) | lo, body[pos:pos + caplen], wirelen


# ---------------------------------------------------------------------------- link types
def _record(where: str, n: int, ts_ns: int, data: bytes, wirelen: int, ifid: int, iface: Interface) -> Record:
    lt = iface.linktype
    if lt not in SUPPORTED:
        known = ", ".join(f"{k} ({v})" for k, v in SUPPORTED.items())
        raise PktemuError(f"{where}: link type {lt} cannot be replayed (supported: {known})")
    if iface.fcs_len and len(data) == wirelen and wirelen >= iface.fcs_len:
        data = data[:-iface.fcs_len]
        wirelen -= iface.fcs_len
    elif iface.fcs_len:
        wirelen = max(len(data), wirelen - iface.fcs_len)
    if lt == LINKTYPE_ETHERNET:
        if len(data) < 14:
            return Record(n, ts_ns, data, wirelen, ifid, lt, f"Ethernet frame of {len(data)} bytes")
        return Record(n, ts_ns, data, wirelen, ifid, lt)
    if lt == LINKTYPE_LINUX_SLL:
        if len(data) < 16:
            return Record(n, ts_ns, data, wirelen, ifid, lt, f"SLL header cut at {len(data)} bytes")
        pkttype, hatype, halen = struct.unpack_from("!HHH", data, 0)
        addr, proto, hlen = data[6:6 + min(halen, 8)], struct.unpack_from("!H", data, 14)[0], 16
    else:
        if len(data) < 20:
            return Record(n, ts_ns, data, wirelen, ifid, lt, f"SLL2 header cut at {len(data)} bytes")
        proto, _res, _ifindex, hatype, pkttype, halen = struct.unpack_from("!HHIHBB", data, 0)
        addr, hlen = data[12:12 + min(halen, 8)], 20
    if hatype == _ARPHRD_NETLINK:
        return Record(n, ts_ns, data, wirelen, ifid, lt, "netlink message, not a network packet")
    payload = data[hlen:]
    src = addr if len(addr) == 6 else b"\x00" * 6
    dst = _cooked_dst(pkttype, proto, payload)
    if proto >= 0x0600:
        eth = dst + src + struct.pack("!H", proto)
    elif proto in (0x0001, 0x0004):          # ETH_P_802_3 / ETH_P_802_2: an 802.3 frame with a length
        eth = dst + src + struct.pack("!H", min(wirelen - hlen, 1500))
    else:
        return Record(n, ts_ns, data, wirelen, ifid, lt,
                      f"cooked protocol 0x{proto:04x} has no Ethernet equivalent")
    return Record(n, ts_ns, eth + payload, wirelen - hlen + 14, ifid, lt)


def _cooked_dst(pkttype: int, proto: int, payload: bytes) -> bytes:
    """The destination MAC a cooked capture dropped: broadcast, the IP multicast MAC, or zero."""
    if pkttype == _PKTTYPE_BROADCAST:
        return b"\xff" * 6
    if pkttype == _PKTTYPE_MULTICAST:
        if proto == 0x0800 and len(payload) >= 20:
            return b"\x01\x00\x5e" + bytes([payload[17] & 0x7F]) + payload[18:20]
        if proto == 0x86DD and len(payload) >= 40:
            return b"\x33\x33" + payload[36:40]
        return b"\xff" * 6
    return b"\x00" * 6
