"""Keeping a replayed TCP client valid against a live emulated server (what tcpliveplay does).

Only the client's segments are replayed; the server is an emulated pod with its own ISN, its own
timestamps and its own answer, which may be shorter or longer than the captured one. So, for every
client segment that acknowledges something, the plan (made from the capture) records what it
acknowledged there: the server's SYN, so many bytes of the server's stream, the server's FIN, and
how long after the server frame it answered the client sent it. At run time the segment waits
until the live server has sent as much (or has finished), then leaves with its ACK number moved
onto the live server's sequence space: the same byte count, capped at what has arrived, plus the
FIN once the live FIN has arrived. Its timestamp echo becomes the live server's last TSval, and
SACK blocks, which name captured sequence numbers, become NOPs. The client's own sequence numbers
stay as captured: its ISN is the capture's, and the server follows it. Checksums are updated
incrementally, so a captured bad checksum stays bad.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from pktemu.net.frame import ETH_HLEN
from pktemu.replay.frames import FRAG_LATER, IPPROTO_TCP, Pkt, patch
from pktemu.replay.split import Flow

FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10
MASK32 = 0xFFFFFFFF
TCPOPT_SACK, TCPOPT_TIMESTAMP = 5, 8

_I = struct.Struct("!I")
_H = struct.Struct("!H")


@dataclass(frozen=True, slots=True)
class Need:
    """What a client segment acknowledged in the capture, in the server's stream."""
    data: int            # bytes of server data acknowledged
    fin: bool            # the server's FIN acknowledged
    known: bool          # the capture showed the server's ISN (else: acknowledge whatever arrived)
    react: int           # ns from the server frame it answered to it, in the capture


def plan(flow: Flow) -> dict[int, Need]:
    """Needs of the client segments of one TCP flow, by record number (only for a flow the
    replay opens itself, with a SYN of its own)."""
    needs: dict[int, Need] = {}
    srv_isn: int | None = None
    srv_fin: int | None = None
    last_srv: int | None = None
    opened = False
    for p in flow.packets:
        if p.kind != "ipv4" or p.proto != IPPROTO_TCP or p.inner is not None or p.frag == FRAG_LATER:
            continue
        if not p.client:
            if p.flags & SYN:
                srv_isn = p.seq
            if p.flags & FIN:
                srv_fin = (p.seq + p.plen + (1 if p.flags & SYN else 0)) & MASK32
            last_srv = p.ts_ns
            continue
        if p.flags & SYN and not p.flags & ACK:
            opened = True
        if not opened or not p.flags & ACK:
            continue
        react = 0 if last_srv is None else max(0, p.ts_ns - last_srv)
        if srv_isn is None:
            needs[p.number] = Need(0, False, False, react)
            continue
        fin = srv_fin is not None and p.ack == (srv_fin + 1) & MASK32
        rel = (p.ack - srv_isn - 1) & MASK32
        data = 0 if rel > 0x7FFFFFFF else rel - (1 if fin else 0)
        needs[p.number] = Need(max(0, data), fin, True, react)
    return needs


class TcpLive:
    """What the live server has sent on one replayed connection, as its answers arrive."""

    __slots__ = ("isn", "rcv_nxt", "data", "fin", "tsval", "reset")

    def __init__(self) -> None:
        self.isn: int | None = None
        self.rcv_nxt = 0
        self.data = 0
        self.fin = False
        self.tsval: int | None = None
        self.reset = False

    def answer(self, d: bytearray, l4: int, end: int) -> None:
        """Account for one segment from the server (in order only: a gap waits for its retransmission)."""
        flags = d[l4 + 13]
        if flags & RST:
            self.reset = True
            return
        seq = _I.unpack_from(d, l4 + 4)[0]
        hl = (d[l4 + 12] >> 4) * 4
        ts = _find_option(d, l4 + 20, min(l4 + hl, end), TCPOPT_TIMESTAMP)
        if ts is not None and d[ts + 1] == 10:
            self.tsval = _I.unpack_from(d, ts + 2)[0]
        if flags & SYN:
            if flags & ACK and self.isn is None:
                self.isn = seq
                self.rcv_nxt = (seq + 1) & MASK32
            return
        if self.isn is None:
            return
        plen = max(0, end - l4 - hl)
        new_end = (seq + plen) & MASK32
        if plen and _seq_le(seq, self.rcv_nxt) and _seq_lt(self.rcv_nxt, new_end):
            self.data += (new_end - self.rcv_nxt) & MASK32
            self.rcv_nxt = new_end
        if flags & FIN and new_end == self.rcv_nxt and not self.fin:
            self.fin = True
            self.rcv_nxt = (self.rcv_nxt + 1) & MASK32

    def ready(self, need: Need) -> bool:
        """Has the live server sent what the captured client had received before this segment?"""
        if self.isn is None:
            return False
        if self.fin:
            return True
        return not need.fin and self.data >= need.data

    def ack_for(self, need: Need) -> int:
        assert self.isn is not None
        if not need.known or (need.fin and self.fin):
            return self.rcv_nxt
        return (self.isn + 1 + min(need.data, self.data)) & MASK32

    def rewrite(self, d: bytearray, p: Pkt, need: Need) -> None:
        """Move a client segment's ACK, timestamp echo and SACK blocks onto the live connection."""
        l4 = p.l4off
        csum = (l4 + 16,)
        if self.isn is not None:
            patch(d, l4 + 8, _I.pack(self.ack_for(need)), csum)
        # a captured data offset may claim more options than the datagram holds: walk only what it has
        end = min(l4 + (d[l4 + 12] >> 4) * 4, ETH_HLEN + _H.unpack_from(d, ETH_HLEN + 2)[0], len(d))
        i = l4 + 20
        while True:
            opt = _find_option(d, i, end, None)
            if opt is None:
                return
            kind, ln = d[opt], d[opt + 1]
            if kind == TCPOPT_TIMESTAMP and ln == 10 and self.tsval is not None:
                patch(d, opt + 6, _I.pack(self.tsval), csum)
            elif kind == TCPOPT_SACK:
                patch(d, opt, b"\x01" * ln, csum)
            i = opt + ln


def _find_option(d: bytearray, i: int, end: int, want: int | None) -> int | None:
    """Offset of the next option of kind `want` (any kind but NOP when None), walking safely."""
    while i < end:
        kind = d[i]
        if kind == 0:
            return None
        if kind == 1:
            i += 1
            continue
        if i + 1 >= end:
            return None
        ln = d[i + 1]
        if ln < 2 or i + ln > end:
            return None
        if want is None or kind == want:
            return i
        i += ln
    return None


def _seq_lt(a: int, b: int) -> bool:
    return ((a - b) & MASK32) > 0x7FFFFFFF


def _seq_le(a: int, b: int) -> bool:
    return a == b or _seq_lt(a, b)
