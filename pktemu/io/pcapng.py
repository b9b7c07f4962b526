"""pcapng files: several interfaces in one file, nanosecond timestamps and a comment per packet.

The comment (EPB `opt_comment`) carries why a frame looks the way it does at that hop, so
Wireshark shows it and `frame.comment contains "DNAT"` filters on it; `epb_flags` says whether
the frame was received or sent there. One section (its comment says what run made the file); every
Interface Description Block (name, description, MAC, IPv4 addresses) is written before the first
packet, and an Interface Statistics Block per interface (frames seen, frames dropped) after the last.
"""
from __future__ import annotations

import functools
import struct
from collections.abc import Sequence

from pktemu.io.atomic import BufferedAtomicWriter
from pktemu.io.pcap import DEFAULT_SNAPLEN, LINKTYPE_ETHERNET

SHB, IDB, ISB, EPB = 0x0A0D0D0A, 0x00000001, 0x00000005, 0x00000006
OPT_ENDOFOPT, OPT_COMMENT = 0, 1
SHB_USERAPPL = 4
IF_NAME, IF_DESCRIPTION, IF_IPV4ADDR, IF_MACADDR, IF_TSRESOL = 2, 3, 4, 6, 9
EPB_FLAGS = 2
ISB_ENDTIME, ISB_IFRECV, ISB_IFDROP = 3, 4, 5
#: epb_flags' direction bits (the low two), as libpcap's PCAP_D_IN / PCAP_D_OUT in pcapng
INBOUND, OUTBOUND = 1, 2

_U32 = struct.Struct("<I")
_BLOCK_HEAD = struct.Struct("<II")
_SHB_BODY = struct.Struct("<IHHq")
_IDB_BODY = struct.Struct("<HHI")
_EPB_HEAD = struct.Struct("<IIIIIII")        # type, length, interface, ts high, ts low, caplen, origlen
_OPT = struct.Struct("<HH")
_FLAGS_OPT = tuple(struct.pack("<HHI", EPB_FLAGS, 4, f) for f in range(4))
_END = _OPT.pack(OPT_ENDOFOPT, 0)
_PAD = (b"", b"\0\0\0", b"\0\0", b"\0")      # indexed by len % 4
_PAD_LEN = (0, 3, 2, 1)


def _option(code: int, value: bytes) -> bytes:
    """A padded option; a value over 65535 bytes (the length field) is cut at a UTF-8 boundary."""
    if len(value) > 0xFFFF:
        value = value[:0xFFFF].decode("utf-8", "ignore").encode()
    return _OPT.pack(code, len(value)) + value + _PAD[len(value) % 4]


def epb_options(direction: int, comment: str | None) -> bytes:
    """An Enhanced Packet Block's options: epb_flags with `direction` (none when 0), the comment."""
    opts = _FLAGS_OPT[direction & 3] if direction else b""
    if comment is not None:
        opts += _option(OPT_COMMENT, comment.encode())
    return opts + _END if opts else b""


@functools.lru_cache(maxsize=4096)
def _idb(name: str, linktype: int, snaplen: int, description: str | None, mac: bytes | None,
         ipv4: tuple[tuple[int, int], ...]) -> bytes:
    """An Interface Description Block: every scenario's file describes the same points again."""
    opts = _option(IF_NAME, name.encode())
    if description is not None:
        opts += _option(IF_DESCRIPTION, description.encode())
    for addr, plen in ipv4:
        mask = (0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF
        opts += _option(IF_IPV4ADDR, struct.pack(">II", addr, mask))
    if mac is not None:
        opts += _option(IF_MACADDR, mac)
    opts += _option(IF_TSRESOL, b"\x09") + _END
    return _block(IDB, _IDB_BODY.pack(linktype, 0, snaplen) + opts)


def _block(btype: int, body: bytes) -> bytes:
    total = 12 + len(body)
    return _BLOCK_HEAD.pack(btype, total) + body + _U32.pack(total)


class PcapngWriter(BufferedAtomicWriter):
    """`add_interface()` every capture point, then `write(iface_id, ts_ns, data, comment)` packets."""

    __slots__ = ("_snaplens",)

    def __init__(self, path: str, application: str = "pktemu", comment: str | None = None, *,
                 in_temp: bool = False) -> None:
        self._snaplens: list[int] = []
        opts = b"" if comment is None else _option(OPT_COMMENT, comment.encode())
        opts += _option(SHB_USERAPPL, application.encode()) + _END
        body = _SHB_BODY.pack(0x1A2B3C4D, 1, 0, -1) + opts
        super().__init__(path, _block(SHB, body), in_temp=in_temp)

    def add_interface(self, name: str, linktype: int = LINKTYPE_ETHERNET, snaplen: int = DEFAULT_SNAPLEN,
                      description: str | None = None, mac: bytes | None = None,
                      ipv4: Sequence[tuple[int, int]] = ()) -> int:
        """Describe one capture point (if_name, if_description, if_MACaddr, an if_IPv4addr per
        (address, prefix length), ns timestamps); returns its id."""
        if self.count or self._closed:
            raise ValueError(f"{self.path}: interface {name!r} added after the first packet or close")
        if not 0 < snaplen <= 0xFFFFFFFF:
            raise ValueError(f"{self.path}: snaplen {snaplen} out of range")
        self._buf += _idb(name, linktype, snaplen, description, None if mac is None else bytes(mac),
                          tuple((addr, plen) for addr, plen in ipv4))
        self._snaplens.append(snaplen)
        return len(self._snaplens) - 1

    def write(self, iface_id: int, ts_ns: int, data: bytes | bytearray, comment: str | None = None,
              direction: int = 0) -> None:
        """One frame on interface `iface_id` at `ts_ns` ns since the Unix epoch, with an optional
        comment and, when `direction` is INBOUND or OUTBOUND, epb_flags saying so."""
        self.write_options(iface_id, ts_ns, data, epb_options(direction, comment))

    def write_options(self, iface_id: int, ts_ns: int, data: bytes | bytearray | memoryview,
                      opts: bytes) -> None:
        """`write` with the options block made already (`epb_options`): a capture point makes
        its no-notes comment's once, not once per frame."""
        if self._closed:
            raise ValueError(f"{self.path}: write after close")
        if iface_id < 0:
            raise ValueError(f"{self.path}: no interface {iface_id!r}")
        try:
            snap = self._snaplens[iface_id]
        except (IndexError, TypeError):
            raise ValueError(f"{self.path}: no interface {iface_id!r}") from None
        n = len(data)
        cap = n if n <= snap else snap
        pad = cap & 3
        total = 32 + cap + _PAD_LEN[pad] + len(opts)
        buf = self._buf
        try:
            buf += _EPB_HEAD.pack(EPB, total, iface_id, ts_ns >> 32, ts_ns & 0xFFFFFFFF, cap, n)
        except struct.error:
            raise ValueError(f"{self.path}: timestamp {ts_ns} ns out of range") from None
        buf += data if cap == n else data[:cap]
        buf += _PAD[pad]
        buf += opts
        buf += _U32.pack(total)
        self.count += 1
        if len(buf) >= self.FLUSH_AT:
            self._flush()

    def statistics(self, iface_id: int, ts_ns: int, received: int, dropped: int) -> None:
        """An Interface Statistics Block for `iface_id` at `ts_ns` (isb_endtime, isb_ifrecv,
        isb_ifdrop): Wireshark's capture file properties show the counts per interface."""
        if self._closed:
            raise ValueError(f"{self.path}: statistics after close")
        if not 0 <= iface_id < len(self._snaplens):
            raise ValueError(f"{self.path}: no interface {iface_id!r}")
        hi, lo = ts_ns >> 32, ts_ns & 0xFFFFFFFF
        opts = (_option(ISB_ENDTIME, struct.pack("<II", hi, lo))
                + _option(ISB_IFRECV, struct.pack("<Q", received))
                + _option(ISB_IFDROP, struct.pack("<Q", dropped)) + _END)
        self._buf += _block(ISB, struct.pack("<III", iface_id, hi, lo) + opts)
