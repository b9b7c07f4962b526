"""Classic pcap files (what tcpdump -w writes), little-endian, nanosecond timestamps by default.

Records are packed straight into a bytearray and handed to the file in large chunks: a record
costs one struct.pack and two appends, far below one Scapy dissection, so capturing every hop
does not dominate a run. A writer holds no file descriptor between chunks (each is appended with
an open and a close), so a cluster of thousands of capture points runs under `ulimit -n 1024`.
"""
from __future__ import annotations

import os
import struct

from pktemu.errors import PktemuError
from pktemu.io.atomic import AtomicFile, BufferedAtomicWriter, InTempFile, remove_leftovers_once, temp_path

MAGIC_NS = 0xA1B23C4D
MAGIC_US = 0xA1B2C3D4
LINKTYPE_ETHERNET = 1
DEFAULT_SNAPLEN = 262144

_FILE_HEADER = struct.Struct("<IHHiIII")
_RECORD = struct.Struct("<IIII")


class SpoolFile(AtomicFile):
    """An AtomicFile that opens its temporary only to append a chunk: no descriptor held between."""

    __slots__ = ("_done",)

    def __init__(self, path: str) -> None:
        self.path = path
        directory, base = os.path.split(path)
        remove_leftovers_once(directory)
        self.tmp = temp_path(directory, base)
        self._done = False
        self._append(b"", "wb")

    def _append(self, data: bytes | bytearray | memoryview, mode: str = "ab") -> None:
        try:
            with open(self.tmp, mode) as f:
                f.write(data)
        except OSError as e:
            self.abort()
            raise PktemuError(f"{self.path}: cannot write: {e.strerror or e}") from None

    @property
    def closed(self) -> bool:
        return self._done

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if data:
            self._append(data)

    def _release(self) -> None:
        self._done = True              # nothing is held open between chunks


class PcapWriter(BufferedAtomicWriter):
    """`write(ts_ns, data)` records; the file appears at `path` only when `close()` succeeds."""

    __slots__ = ("_div", "snaplen")
    FLUSH_AT = 1 << 16              # one writer per capture point: thousands may buffer at once

    def __init__(self, path: str, linktype: int = LINKTYPE_ETHERNET, snaplen: int = DEFAULT_SNAPLEN,
                 nanosecond: bool = True, *, in_temp: bool = False) -> None:
        """`in_temp`: `path` is inside a temporary folder renamed into place whole (`InTempFile`)."""
        if not 0 < snaplen <= 0xFFFFFFFF:
            raise ValueError(f"{path}: snaplen {snaplen} out of range")
        self.snaplen = snaplen
        self._div = 1 if nanosecond else 1000
        self.path = path
        self.count = 0
        self._closed = False
        self._file = InTempFile(path) if in_temp else SpoolFile(path)
        self._buf = bytearray(_FILE_HEADER.pack(MAGIC_NS if nanosecond else MAGIC_US, 2, 4, 0, 0,
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
