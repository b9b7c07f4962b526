"""SCTP's CRC32c checksum (RFC 4960 appendix B), as the kernel's sctp_compute_cksum computes it.

SCTP has no pseudo-header: the checksum covers the common header (with its checksum field taken
as zero) and every chunk, so rewriting addresses leaves it valid and rewriting a port needs it
recomputed over the whole packet, which is what the kernel's NAT does (sctp_manip_pkt).
"""
from __future__ import annotations

import struct

SCTP_HLEN = 12

_L = struct.Struct("<I")


def _table() -> tuple[int, ...]:
    rows = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        rows.append(c)
    return tuple(rows)


_TABLE = _table()


def crc32c(data: bytes | bytearray | memoryview) -> int:
    """CRC32c (Castagnoli), reflected, initial and final value 0xFFFFFFFF."""
    c = 0xFFFFFFFF
    t = _TABLE
    for b in data:
        c = t[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def sctp_cksum(data: bytearray, off: int, end: int) -> int:
    """The checksum field's value for the SCTP packet data[off:end] (the field read as zero)."""
    c = crc32c(bytes(data[off:off + 8]) + b"\0\0\0\0" + bytes(data[off + SCTP_HLEN:end]))
    return c


def sctp_cksum_ok(data: bytearray, off: int, end: int) -> bool:
    """Does the packet's checksum (stored little-endian, as the kernel's __le32) verify?"""
    return end - off >= SCTP_HLEN and _L.unpack_from(data, off + 8)[0] == sctp_cksum(data, off, end)


def sctp_set_cksum(data: bytearray, off: int, end: int) -> None:
    """Recompute the checksum in place."""
    _L.pack_into(data, off + 8, sctp_cksum(data, off, end))
