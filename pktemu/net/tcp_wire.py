"""TCP on the wire: header and option layout exactly as Linux writes them, and their parsing.

Segments are built with `struct` and checksummed over the pseudo-header; nothing on this path
dissects with Scapy. Option order follows tcp_options_write(): MSS, SACK_PERM folded into the
timestamp word, NOP NOP SACK_PERM when there is no timestamp, NOP WSCALE.
"""
from __future__ import annotations

import struct

from pktemu.net.frame import ETH_HLEN, Frame, checksum

FIN = 0x01
SYN = 0x02
RST = 0x04
PSH = 0x08
ACK = 0x10
URG = 0x20

IPPROTO_TCP = 6
TCPOPT_NOP = 1
TCPOPT_MSS = 2
TCPOPT_WINDOW = 3
TCPOPT_SACK_PERM = 4
TCPOPT_SACK = 5
TCPOPT_TIMESTAMP = 8
TCPOLEN_TSTAMP_ALIGNED = 12

_HDR = struct.Struct("!HHIIBBHHH")
_PSEUDO = struct.Struct("!IIBBH")
_MSS = struct.Struct("!BBH")
_TS_SACK = struct.Struct("!BBBBII")
_NOP_WS = struct.Struct("!BBBB")
_I = struct.Struct("!I")
_II = struct.Struct("!II")

MASK32 = 0xFFFFFFFF


def before(a: int, b: int) -> bool:
    """Sequence-space a < b (RFC 1982 serial arithmetic on 32 bits)."""
    return ((a - b) & MASK32) > 0x7FFFFFFF


def after(a: int, b: int) -> bool:
    return before(b, a)


def seq_add(a: int, n: int) -> int:
    return (a + n) & MASK32


class Seg:
    """One received segment, parsed once: header fields, options, payload."""

    __slots__ = ("saddr", "daddr", "sport", "dport", "seq", "ack", "flags", "window", "payload",
                 "mss", "wscale", "sack_perm", "tsval", "tsecr", "tos", "frame", "sacks")
    saddr: int
    daddr: int
    sport: int
    dport: int
    seq: int
    ack: int
    flags: int
    window: int
    payload: bytes
    tos: int
    frame: Frame

    def __init__(self) -> None:
        self.mss: int | None = None
        self.wscale: int | None = None
        self.sack_perm = False
        self.tsval: int | None = None
        self.tsecr = 0
        self.sacks: tuple[tuple[int, int], ...] = ()    # the SACK blocks of an ACK (tcp_recovery)

    @property
    def end_seq(self) -> int:
        return (self.seq + len(self.payload) + (self.flags & SYN) // SYN + (self.flags & FIN)) & MASK32

    def __repr__(self) -> str:
        return f"<Seg {self.sport}>{self.dport} {flag_str(self.flags)} seq={self.seq} ack={self.ack} " \
               f"len={len(self.payload)}>"


def flag_str(flags: int) -> str:
    """Flags in Scapy's order (FSRPAU), as the oracle summary prints them."""
    return "".join(c for bit, c in ((FIN, "F"), (SYN, "S"), (RST, "R"), (PSH, "P"), (ACK, "A"), (URG, "U"))
                   if flags & bit)


def parse(frame: Frame) -> Seg | None:
    """The TCP segment of a locally delivered frame, or None when it is malformed or corrupt."""
    d = frame.data
    off = frame.l4off
    end = ETH_HLEN + frame.ip_len
    if end - off < 20:
        return None
    sport, dport, seq, ack, doff, flags, window, _csum, _urg = _HDR.unpack_from(d, off)
    hl = (doff >> 4) * 4
    if hl < 20 or off + hl > end:
        return None
    saddr, daddr = frame.saddr, frame.daddr
    pseudo = _PSEUDO.pack(saddr, daddr, 0, IPPROTO_TCP, end - off)
    if checksum(pseudo + bytes(d[off:end])) != 0:
        return None
    s = Seg()
    s.saddr, s.daddr, s.sport, s.dport = saddr, daddr, sport, dport
    s.seq, s.ack, s.flags, s.window = seq, ack, flags, window
    s.payload = bytes(d[off + hl:end])
    s.tos = d[ETH_HLEN + 1]
    s.frame = frame
    if hl > 20:
        _parse_options(s, d, off + 20, off + hl)
    return s


def _parse_options(s: Seg, d: bytearray, i: int, end: int) -> None:
    """tcp_parse_options(): bounded by the 40 option bytes; a bad length ends the walk."""
    if end - i == 12 and d[i] == TCPOPT_NOP and d[i + 1] == TCPOPT_NOP and d[i + 2] == TCPOPT_TIMESTAMP \
            and d[i + 3] == 10:
        s.tsval, s.tsecr = _I.unpack_from(d, i + 4)[0], _I.unpack_from(d, i + 8)[0]
        return
    syn = bool(s.flags & SYN)
    while i < end:
        kind = d[i]
        if kind == 0:
            return
        if kind == TCPOPT_NOP:
            i += 1
            continue
        if i + 1 >= end:
            return
        ln = d[i + 1]
        if ln < 2 or i + ln > end:
            return
        if kind == TCPOPT_MSS and ln == 4 and syn:
            mss = (d[i + 2] << 8) | d[i + 3]
            if mss:
                s.mss = mss
        elif kind == TCPOPT_WINDOW and ln == 3 and syn:
            s.wscale = min(d[i + 2], 14)
        elif kind == TCPOPT_SACK_PERM and ln == 2 and syn:
            s.sack_perm = True
        elif kind == TCPOPT_TIMESTAMP and ln == 10:
            s.tsval, s.tsecr = _I.unpack_from(d, i + 2)[0], _I.unpack_from(d, i + 6)[0]
        elif kind == TCPOPT_SACK and not syn and ln >= 10 and (ln - 2) % 8 == 0:
            s.sacks = tuple(_II.unpack_from(d, j) for j in range(i + 2, i + ln, 8))
        i += ln


def syn_options(mss: int | None, sack: bool, ts: tuple[int, int] | None, wscale: int | None) -> bytes:
    """Options of a SYN or SYN-ACK in tcp_options_write() order (20 bytes with everything on)."""
    out = b""
    if mss is not None:
        out += _MSS.pack(TCPOPT_MSS, 4, mss)
    if ts is not None:
        if sack:
            out += _TS_SACK.pack(TCPOPT_SACK_PERM, 2, TCPOPT_TIMESTAMP, 10, ts[0], ts[1])
            sack = False
        else:
            out += _TS_SACK.pack(TCPOPT_NOP, TCPOPT_NOP, TCPOPT_TIMESTAMP, 10, ts[0], ts[1])
    if sack:
        out += _NOP_WS.pack(TCPOPT_NOP, TCPOPT_NOP, TCPOPT_SACK_PERM, 2)
    if wscale is not None:
        out += _NOP_WS.pack(TCPOPT_NOP, TCPOPT_WINDOW, 3, wscale)
    return out


def ts_option(tsval: int, tsecr: int) -> bytes:
    """NOP NOP TS: the 12 option bytes of every established segment when timestamps are on."""
    return _TS_SACK.pack(TCPOPT_NOP, TCPOPT_NOP, TCPOPT_TIMESTAMP, 10, tsval & MASK32, tsecr & MASK32)


def build(saddr: int, daddr: int, sport: int, dport: int, seq: int, ack: int, flags: int, window: int,
          options: bytes = b"", payload: bytes = b"") -> bytes:
    """A complete segment with its checksum (options must be a multiple of 4 bytes)."""
    hl = 20 + len(options)
    seg = bytearray(_HDR.pack(sport, dport, seq & MASK32, ack & MASK32, (hl // 4) << 4, flags, window,
                              0, 0))
    seg += options
    seg += payload
    pseudo = _PSEUDO.pack(saddr, daddr, 0, IPPROTO_TCP, len(seg))
    struct.pack_into("!H", seg, 16, checksum(pseudo + seg))
    return bytes(seg)


def reset_for(seg: Seg) -> tuple[int, int, int] | None:
    """tcp_v4_send_reset() numbering: (seq, ack, flags) of the RST answering `seg`, None for a RST."""
    if seg.flags & RST:
        return None
    if seg.flags & ACK:
        return seg.ack, 0, RST
    return 0, seg.end_seq, RST | ACK
