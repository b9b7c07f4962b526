"""Classic pcap files (what tcpdump -w writes), little-endian, nanosecond timestamps by default.

Records are packed straight into a bytearray and handed to the file in large chunks: a record
costs one struct.pack and two appends, far below one Scapy dissection, so capturing every hop
does not dominate a run.
"""
from __future__ import annotations

import struct

from pktemu.io.atomic import BufferedAtomicWriter

MAGIC_NS = 0xA1B23C4D
MAGIC_US = 0xA1B2C3D4
LINKTYPE_ETHERNET = 1
DEFAULT_SNAPLEN = 262144

_FILE_HEADER = struct.Struct("<IHHiIII")
_RECORD = struct.Struct("<IIII")


class PcapWriter(BufferedAtomicWriter):
    """`write(ts_ns, data)` records; the file appears at `path` only when `close()` succeeds."""

    __slots__ = ("_div", "snaplen")

    def __init__(self, path: str, linktype: int = LINKTYPE_ETHERNET, snaplen: int = DEFAULT_SNAPLEN,
                 nanosecond: bool = True) -> None:
        if not 0 < snaplen <= 0xFFFFFFFF:
            raise ValueError(f"{path}: snaplen {snaplen} out of range")
        self.snaplen = snaplen
        self._div = 1 if nanosecond else 1000
        super().__init__(path, _FILE_HEADER.pack(MAGIC_NS if nanosecond else MAGIC_US, 2, 4, 0, 0,
                                                 snaplen, linktype))

    def write(self, ts_ns: int, data: bytes | bytearray) -> None:
        """One frame at `ts_ns` nanoseconds since the Unix epoch; longer than snaplen is truncated."""
        if self._closed:
            raise ValueError(f"{self.path}: write after close")
        n = len(data)
        cap = min(n, self.snaplen)
        sec, frac = divmod(ts_ns, 1_000_000_000)
        buf = self._buf
        try:
            buf += _RECORD.pack(sec, frac // self._div, cap, n)
        except struct.error:
            raise ValueError(f"{self.path}: timestamp {ts_ns} ns does not fit a pcap record") from None
        buf += data if cap == n else data[:cap]
        self.count += 1
        if len(buf) >= self.FLUSH_AT:
            self._flush()
