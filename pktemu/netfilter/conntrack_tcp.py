"""The TCP connection tracker: nf_conntrack_proto_tcp.c's state table and timeouts.

The state table is the kernel's (Linux 6.x, the version of the reference run), including its
special cases: reopening a connection in TIME_WAIT/CLOSE with a new SYN, ignored packets and
the SYN/ACK that resynchronises after one, simultaneous open, the RFC 5961 challenge ACK in
LAST_ACK, and killing an entry whose only answer was a RST. Sequence-number window *validation*
is not modelled: an out-of-window segment or RST is never INVALID. The window bookkeeping that
picks timeouts (unacknowledged data, zero window, retransmissions) is.
"""
from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import TYPE_CHECKING

from pktemu.net.frame import Frame
from pktemu.netfilter.conntrack_tuple import ip_end
from pktemu.netfilter.core import IPS_ASSURED, IPS_SEEN_REPLY, ORIGINAL, REPLY
from pktemu.sim import SECOND

if TYPE_CHECKING:
    from pktemu.netfilter.conntrack import Conn

_II = struct.Struct("!II")
_H = struct.Struct("!H")

NONE, SYN_SENT, SYN_RECV, ESTABLISHED, FIN_WAIT, CLOSE_WAIT, LAST_ACK, TIME_WAIT, CLOSE, SYN_SENT2 = range(10)
_IV, _IG = 10, 11   # sIV (TCP_CONNTRACK_MAX) and sIG
STATE_NAMES = ("NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "CLOSE_WAIT", "LAST_ACK",
               "TIME_WAIT", "CLOSE", "SYN_SENT2")

# nf_conntrack_tcp_timeout_* defaults, indexed by state.
TIMEOUTS = tuple(s * SECOND for s in (0, 120, 60, 432000, 120, 60, 30, 120, 10, 120))
#: the states whose timeout a topology's sysctls may set (seconds)
TIMEOUT_SYSCTLS = {st: f"net.netfilter.nf_conntrack_tcp_timeout_{STATE_NAMES[st].lower()}"
                   for st in (SYN_SENT, ESTABLISHED, FIN_WAIT, CLOSE_WAIT, TIME_WAIT)}
TIMEOUT_RETRANS = 300 * SECOND
TIMEOUT_UNACK = 300 * SECOND
MAX_RETRANS = 3

SYN_SET, SYNACK_SET, FIN_SET, ACK_SET, RST_SET, NONE_SET = range(6)

_FIN, _SYN, _RST, _PSH, _ACK, _URG, _ECE, _CWR = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80
_VALID_FLAGS = frozenset((_SYN, _SYN | _URG, _SYN | _ACK, _RST, _RST | _ACK, _FIN | _ACK,
                          _FIN | _ACK | _URG, _ACK, _ACK | _URG))

# ip_ct_tcp_state.flags and ip_ct_tcp.last_flags bits used here.
FLAG_CLOSE_INIT = 0x04
FLAG_DATA_UNACKNOWLEDGED = 0x10
_SIMULTANEOUS_OPEN = 0x04
_EXP_CHALLENGE_ACK = 0x40

sNO, sSS, sSR, sES, sFW, sCW, sLA, sTW, sCL, sS2, sIV, sIG = range(12)
_TABLE = (
    (   # ORIGINAL      sNO  sSS  sSR  sES  sFW  sCW  sLA  sTW  sCL  sS2
        (sSS, sSS, sIG, sIG, sIG, sIG, sIG, sSS, sSS, sS2),   # syn
        (sIV, sIV, sSR, sIV, sIV, sIV, sIV, sIV, sIV, sSR),   # synack
        (sIV, sIV, sFW, sFW, sLA, sLA, sLA, sTW, sCL, sIV),   # fin
        (sES, sIV, sES, sES, sCW, sCW, sTW, sTW, sCL, sIV),   # ack
        (sIV, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL),   # rst
        (sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV),   # none
    ),
    (   # REPLY
        (sIV, sS2, sIV, sIV, sIV, sIV, sIV, sSS, sIV, sS2),   # syn
        (sIV, sSR, sIG, sIG, sIG, sIG, sIG, sIG, sIG, sSR),   # synack
        (sIV, sIV, sFW, sFW, sLA, sLA, sLA, sTW, sCL, sIV),   # fin
        (sIV, sIG, sSR, sES, sCW, sCW, sTW, sTW, sCL, sIG),   # ack
        (sIV, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL),   # rst
        (sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV),   # none
    ),
)

# What a protocol tracker tells conntrack-in to do with the packet.
PKT_ACCEPT = 1     # tracked, state updated
PKT_IGNORE = 2     # tracked, state left alone (sIG)
PKT_INVALID = 3    # no conntrack for this packet
PKT_REPEAT = 4     # kill the entry and look the packet up again (reopened connection)
PKT_KILL = 5       # tracked, then the entry is removed (RST was the only answer)


class TcpTrack:
    """ip_ct_tcp: the per-connection TCP state (without the window-validation fields)."""

    __slots__ = ("state", "last_index", "last_dir", "last_seq", "last_ack", "last_end", "last_win",
                 "retrans", "last_flags", "flags", "td_end", "inited")

    def __init__(self) -> None:
        self.state = NONE
        self.last_index = NONE_SET
        self.last_dir = ORIGINAL
        self.last_seq = self.last_ack = self.last_end = self.last_win = 0
        self.retrans = 0
        self.last_flags = 0
        self.flags = [0, 0]
        self.td_end = [0, 0]
        self.inited = [False, False]

    @property
    def name(self) -> str:
        return STATE_NAMES[self.state]


def conntrack_index(flags: int) -> int:
    """get_conntrack_index: which row of the state table a segment uses."""
    if flags & _RST:
        return RST_SET
    if flags & _SYN:
        return SYNACK_SET if flags & _ACK else SYN_SET
    if flags & _FIN:
        return FIN_SET
    if flags & _ACK:
        return ACK_SET
    return NONE_SET


def _after(a: int, b: int) -> bool:
    """Sequence-space `after(a, b)`: a is later than b modulo 2^32."""
    return 0 < ((a - b) & 0xFFFFFFFF) < 0x80000000


def _segment(frame: Frame) -> tuple[int, int, int, int, int]:
    """(flags, seq, ack, end, window) of a TCP segment; end = seq + payload + SYN + FIN."""
    d = frame.data
    l4 = frame.l4off
    flags = d[l4 + 13]
    seq, ack = _II.unpack_from(d, l4 + 4)
    payload = ip_end(d) - l4 - (d[l4 + 12] >> 4) * 4
    end = (seq + payload + (1 if flags & _SYN else 0) + (1 if flags & _FIN else 0)) & 0xFFFFFFFF
    return flags, seq, ack, end, _H.unpack_from(d, l4 + 14)[0]


def tcp_error(frame: Frame) -> str | None:
    """tcp_error(): why a segment can never be tracked (None if it can)."""
    d = frame.data
    l4 = frame.l4off
    avail = ip_end(d) - l4
    if avail < 20:
        return "truncated tcp header"
    doff = (d[l4 + 12] >> 4) * 4
    if doff < 20 or avail < doff:
        return "truncated packet"
    if d[l4 + 13] & ~(_ECE | _CWR | _PSH) not in _VALID_FLAGS:
        return "invalid tcp flag combination"
    return None


def tcp_new(frame: Frame, loose: int = 1) -> TcpTrack | None:
    """tcp_new(): state for the first segment of a connection, None if it cannot open one. A
    segment other than a SYN picks the connection up mid-stream only with `loose`
    (nf_conntrack_tcp_loose, 1 by default); otherwise it stays untracked, so no NAT rule sees it."""
    flags, _seq, _ack, end, _win = _segment(frame)
    new = _TABLE[ORIGINAL][conntrack_index(flags)][NONE]
    if new == _IV:
        return None
    if new != SYN_SENT and not loose:
        return None
    t = TcpTrack()
    t.td_end[ORIGINAL] = end
    t.inited[ORIGINAL] = True
    return t


def tcp_new_refused(frame: Frame) -> str:
    """Why tcp_new() returned None for this segment."""
    if _TABLE[ORIGINAL][conntrack_index(_segment(frame)[0])][NONE] == _IV:
        return "tcp segment cannot open a connection"
    return "not a SYN, and nf_conntrack_tcp_loose=0 picks up no connection mid-stream"


def _track_window(t: TcpTrack, dir: int, index: int, old: int,
                  flags: int, seq: int, ack: int, end: int, win: int) -> None:
    """The bookkeeping half of tcp_in_window (every segment is taken as in window)."""
    rcv = 1 - dir
    if not t.inited[dir]:
        t.td_end[dir] = end
        t.inited[dir] = True
    elif ((old == SYN_SENT and dir == ORIGINAL) or (old == SYN_RECV and dir == REPLY)) \
            and _after(end, t.td_end[dir]):
        t.td_end[dir] = end
    if not flags & _ACK:
        ack = t.td_end[rcv]
    if _after(end, t.td_end[dir]):
        t.td_end[dir] = end
        t.flags[dir] |= FLAG_DATA_UNACKNOWLEDGED
    if ack == t.td_end[rcv]:
        t.flags[rcv] &= ~FLAG_DATA_UNACKNOWLEDGED
    if index == ACK_SET:
        if (t.last_dir, t.last_seq, t.last_ack, t.last_end, t.last_win) == (dir, seq, ack, end, win):
            t.retrans += 1
        else:
            t.last_dir, t.last_seq, t.last_ack, t.last_end, t.last_win = dir, seq, ack, end, win
            t.retrans = 0


def _timeout(t: TcpTrack, index: int, new: int, sysctls: Mapping[str, int]) -> int:
    tmo = TIMEOUTS[new]
    key = TIMEOUT_SYSCTLS.get(new)
    if key is not None and key in sysctls:
        tmo = sysctls[key] * SECOND
    if t.retrans >= MAX_RETRANS and tmo > TIMEOUT_RETRANS:
        return TIMEOUT_RETRANS
    if index == RST_SET:
        return TIMEOUTS[CLOSE]
    if (t.flags[0] | t.flags[1]) & FLAG_DATA_UNACKNOWLEDGED and tmo > TIMEOUT_UNACK:
        return TIMEOUT_UNACK
    if t.last_win == 0 and tmo > TIMEOUT_RETRANS:
        return TIMEOUT_RETRANS
    return tmo


def tcp_packet(ct: "Conn", frame: Frame, dir: int, now: int, sysctls: Mapping[str, int]) -> int:
    """nf_conntrack_tcp_packet(): move the state machine for one segment; returns a PKT_* code."""
    t = ct.tcp
    assert t is not None
    flags, seq, ack, end, win = _segment(frame)
    index = conntrack_index(flags)
    old = entry_state = t.state
    new = _TABLE[dir][index][old]

    if new == SYN_SENT and old >= TIME_WAIT:
        if (t.flags[0] | t.flags[1]) & FLAG_CLOSE_INIT or (t.last_dir == dir and t.last_index == RST_SET):
            frame.note(f"ct {STATE_NAMES[old]} entry killed: SYN reopens the connection")
            return PKT_REPEAT
        new = _IG
    if new == _IG:
        if index == SYNACK_SET and t.last_index == SYN_SET and t.last_dir != dir and ack == t.last_end:
            old, new = SYN_SENT, SYN_RECV
            ld = t.last_dir
            t.td_end[ld], t.inited[ld] = t.last_end, True
            t.flags[ld] = 0
            t.last_flags &= ~_EXP_CHALLENGE_ACK
            t.td_end[dir], t.inited[dir], t.flags[dir] = 0, False, 0
        else:
            t.last_index, t.last_dir, t.last_seq, t.last_end, t.last_win = index, dir, seq, end, win
            if index == SYN_SET and dir == ORIGINAL:
                t.last_flags = _EXP_CHALLENGE_ACK if old == LAST_ACK else 0
            frame.note(f"ct tcp segment ignored in {STATE_NAMES[old]}")
            return PKT_IGNORE
    elif new == _IV:
        frame.note(f"ct INVALID: tcp {('SYN', 'SYN/ACK', 'FIN', 'ACK', 'RST', 'no flags')[index]} "
                   f"in {STATE_NAMES[old]} ({'reply' if dir else 'original'} direction)")
        return PKT_INVALID
    elif new == TIME_WAIT:
        if old == LAST_ACK and index == ACK_SET and t.last_dir != dir and t.last_index == SYN_SET \
                and t.last_flags & _EXP_CHALLENGE_ACK:
            t.last_flags &= ~_EXP_CHALLENGE_ACK
            frame.note("ct challenge ACK ignored in LAST_ACK")
            return PKT_IGNORE
    elif new == SYN_SENT2:
        t.last_flags |= _SIMULTANEOUS_OPEN
    elif new == SYN_RECV:
        if dir == REPLY and index == ACK_SET and t.last_flags & _SIMULTANEOUS_OPEN:
            new = ESTABLISHED

    _track_window(t, dir, index, old, flags, seq, ack, end, win)
    t.last_index, t.last_dir = index, dir
    t.state = new
    if old != new and new == FIN_WAIT:
        t.flags[dir] |= FLAG_CLOSE_INIT
    timeout = _timeout(t, index, new, sysctls)
    assured = ""
    if not ct.status & IPS_SEEN_REPLY:
        if flags & _RST:
            frame.note("ct entry killed: RST before any reply")
            return PKT_KILL
        if index == SYN_SET and old == SYN_SENT:
            return PKT_ACCEPT
        if new == ESTABLISHED and timeout > TIMEOUT_UNACK:
            timeout = TIMEOUT_UNACK
    elif not ct.status & IPS_ASSURED and old in (SYN_RECV, ESTABLISHED) and new == ESTABLISHED:
        ct.status |= IPS_ASSURED
        assured = " [ASSURED]"
    if entry_state != NONE and (new != entry_state or assured):
        frame.note(f"ct {STATE_NAMES[new]}{assured}")
    ct.expires = now + timeout
    return PKT_ACCEPT

