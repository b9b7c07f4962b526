"""The SCTP connection tracker (nf_conntrack_proto_sctp.c): chunk checks, vtags, states, timeouts.

A connection's state moves with every chunk of every packet by the kernel's transition table;
the verification tags learnt from INIT and INIT_ACK must then be on every later packet. The
first INIT leaves the entry CLOSED (10 s), the INIT_ACK makes it COOKIE_WAIT, COOKIE_ECHO
COOKIE_ECHOED and the COOKIE_ACK ESTABLISHED (210 s, ASSURED), as the kernel does.
"""
from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from pktemu.net.frame import ETH_HLEN, Frame
from pktemu.net.sctp import SCTP_HLEN, sctp_cksum_ok
from pktemu.netfilter.conntrack_tcp import PKT_ACCEPT, PKT_INVALID
from pktemu.netfilter.conntrack_tuple import ip_end
from pktemu.netfilter.core import IPS_ASSURED, IPS_CONFIRMED, PREROUTING
from pktemu.sim import SECOND

if TYPE_CHECKING:
    from pktemu.netfilter.conntrack import Conn

_H = struct.Struct("!H")
_I = struct.Struct("!I")

STATE_NAMES = ("NONE", "CLOSED", "COOKIE_WAIT", "COOKIE_ECHOED", "ESTABLISHED", "SHUTDOWN_SENT",
               "SHUTDOWN_RECD", "SHUTDOWN_ACK_SENT", "HEARTBEAT_SENT")
sNO, sCL, sCW, sCE, sES, sSS, sSR, sSA, sHS, sIV = range(10)
#: nf_conntrack_sctp_timeout_* defaults, by state (NONE uses CLOSED's)
TIMEOUTS = tuple(s * SECOND for s in (10, 10, 3, 3, 210, 3, 3, 3, 30))

DATA, INIT, INIT_ACK, SACK, HEARTBEAT, HEARTBEAT_ACK, ABORT, SHUTDOWN, SHUTDOWN_ACK, ERROR, \
    COOKIE_ECHO, COOKIE_ACK = range(12)
SHUTDOWN_COMPLETE = 14
FLAG_T = 1
_HB_VTAG_FAILED = 1
#: chunk type -> row of the transition table
_ROW = {INIT: 0, INIT_ACK: 1, ABORT: 2, SHUTDOWN: 3, SHUTDOWN_ACK: 4, ERROR: 5, COOKIE_ECHO: 6,
        COOKIE_ACK: 7, SHUTDOWN_COMPLETE: 8, HEARTBEAT: 9, HEARTBEAT_ACK: 10}
#: sctp_conntracks[dir][row][state]
_TABLE = (
    ((sCL, sCL, sCW, sCE, sES, sCL, sCL, sSA, sCW),
     (sCL, sCL, sCW, sCE, sES, sSS, sSR, sSA, sCL),
     (sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL),
     (sCL, sCL, sCW, sCE, sSS, sSS, sSR, sSA, sCL),
     (sSA, sCL, sCW, sCE, sES, sSA, sSA, sSA, sSA),
     (sCL, sCL, sCW, sCE, sES, sSS, sSR, sSA, sCL),
     (sCL, sCL, sCE, sCE, sES, sSS, sSR, sSA, sCL),
     (sCL, sCL, sCW, sES, sES, sSS, sSR, sSA, sCL),
     (sCL, sCL, sCW, sCE, sES, sSS, sSR, sCL, sCL),
     (sHS, sCL, sCW, sCE, sES, sSS, sSR, sSA, sHS),
     (sCL, sCL, sCW, sCE, sES, sSS, sSR, sSA, sHS)),
    ((sIV, sCL, sCW, sCE, sES, sSS, sSR, sSA, sIV),
     (sIV, sCW, sCW, sCE, sES, sSS, sSR, sSA, sIV),
     (sIV, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sIV),
     (sIV, sCL, sCW, sCE, sSR, sSS, sSR, sSA, sIV),
     (sIV, sCL, sCW, sCE, sES, sSA, sSA, sSA, sIV),
     (sIV, sCL, sCW, sCL, sES, sSS, sSR, sSA, sIV),
     (sIV, sCL, sCE, sCE, sES, sSS, sSR, sSA, sIV),
     (sIV, sCL, sCW, sES, sES, sSS, sSR, sSA, sIV),
     (sIV, sCL, sCW, sCE, sES, sSS, sSR, sCL, sIV),
     (sIV, sCL, sCW, sCE, sES, sSS, sSR, sSA, sHS),
     (sIV, sCL, sCW, sCE, sES, sSS, sSR, sSA, sES)),
)


class SctpTrack:
    """ip_ct_sctp: state, the verification tag expected in each direction, INIT seen per direction."""

    __slots__ = ("state", "vtag", "init", "flags", "last_dir")

    def __init__(self) -> None:
        self.state = sNO
        self.vtag = [0, 0]
        self.init = [0, 0]
        self.flags = 0
        self.last_dir = 0

    @property
    def name(self) -> str:
        return STATE_NAMES[self.state]


def new_state(dir: int, cur: int, ctype: int) -> int:
    """sctp_new_state(): chunks without a row (DATA, SACK...) leave the state alone."""
    row = _ROW.get(ctype)
    return cur if row is None else _TABLE[dir][row][cur]


def sctp_error(frame: Frame, hook: str) -> str | None:
    """sctp_error(): a short packet, or at PREROUTING a bad CRC32c, is INVALID."""
    d = frame.data
    l4, end = frame.l4off, ip_end(frame.data)
    if end - l4 < SCTP_HLEN:
        return "nf_ct_sctp: short packet"
    if hook == PREROUTING and not d[ETH_HLEN + 6] & 0x20 and not sctp_cksum_ok(d, l4, end):
        return "nf_ct_sctp: bad CRC"
    return None


def _chunks(d: bytearray, off: int, end: int) -> list[tuple[int, int, int, int]]:
    """for_each_sctp_chunk: (type, flags, length, offset) of each chunk header present, up to a
    zero-length one (do_basic_checks refuses the packet there; the walk would never advance)."""
    out = []
    while off < end and end - off >= 4:
        length = _H.unpack_from(d, off + 2)[0]
        out.append((d[off], d[off + 1], length, off))
        if not length:
            break
        off += (length + 3) & ~3
    return out


def _basic_ok(chunks: list[tuple[int, int, int, int]]) -> bool:
    """do_basic_checks(): COOKIE_* first, INIT/INIT_ACK/SHUTDOWN_COMPLETE alone, no zero length."""
    flag = False
    for count, (ctype, _f, length, _o) in enumerate(chunks):
        if ctype in (INIT, INIT_ACK, SHUTDOWN_COMPLETE):
            flag = True
        if ((ctype in (COOKIE_ACK, COOKIE_ECHO) or flag) and count != 0) or not length:
            return False
    return bool(chunks)


def _init_tag(d: bytearray, off: int, end: int) -> int | None:
    return _I.unpack_from(d, off + 4)[0] if end - off >= 8 else None


def _sctp_new(t: SctpTrack, d: bytearray, vtag: int, chunks: list[tuple[int, int, int, int]],
              end: int) -> bool:
    """sctp_new(): may these chunks open a connection? Learns the first verification tags."""
    for ctype, _f, _l, off in chunks:
        st = new_state(0, sNO, ctype)
        if st in (sNO, sIV):
            return False
        if ctype == INIT:
            tag = _init_tag(d, off, end)
            if vtag or tag is None:
                return False
            t.vtag[1] = tag
        elif ctype == HEARTBEAT:
            t.vtag[0] = vtag
        else:
            t.vtag[1] = vtag
        t.state = sNO
    return True


def sctp_packet(ct: "Conn", frame: Frame, dir: int, now: int) -> int:
    """nf_conntrack_sctp_packet(): check vtags, move the state per chunk, refresh the timeout."""
    d = frame.data
    l4, end = frame.l4off, ip_end(d)
    vtag = _I.unpack_from(d, l4 + 4)[0]
    chunks = _chunks(d, l4 + SCTP_HLEN, end)
    if not _basic_ok(chunks):
        frame.note("ct INVALID: sctp chunks fail the basic checks")
        return PKT_INVALID
    types = {c[0] for c in chunks}
    if not ct.status & IPS_CONFIRMED:
        if types & {ABORT, SHUTDOWN_COMPLETE, COOKIE_ACK}:
            frame.note("ct INVALID: out-of-the-blue sctp ABORT, SHUTDOWN_COMPLETE or COOKIE_ACK")
            return PKT_INVALID
        ct.sctp = SctpTrack()
        if not _sctp_new(ct.sctp, d, vtag, chunks, end):
            frame.note("ct INVALID: sctp packet cannot open a connection")
            return PKT_INVALID
    t = ct.sctp
    assert t is not None
    if not types & {INIT, SHUTDOWN_COMPLETE, COOKIE_ECHO, ABORT, SHUTDOWN_ACK, HEARTBEAT,
                    HEARTBEAT_ACK} and vtag != t.vtag[dir]:
        frame.note(f"ct INVALID: sctp verification tag {vtag:#x}, expected {t.vtag[dir]:#x}")
        return PKT_INVALID
    st = old = sNO
    ignore = False
    for ctype, cflags, _l, off in chunks:
        if ctype == INIT:
            if vtag:
                return _bad_vtag(frame, ctype)
        elif ctype in (ABORT, SHUTDOWN_COMPLETE):
            want = t.vtag[1 - dir] if cflags & FLAG_T else t.vtag[dir]
            if vtag != want:
                return _bad_vtag(frame, ctype)
        elif ctype == COOKIE_ECHO:
            if vtag != t.vtag[dir]:
                return _bad_vtag(frame, ctype)
        elif ctype == COOKIE_ACK:
            t.init = [0, 0]
        elif ctype in (HEARTBEAT, HEARTBEAT_ACK):
            if t.vtag[dir] == 0:
                t.vtag[dir] = vtag
            elif vtag != t.vtag[dir]:
                if DATA in types or ignore:
                    return _bad_vtag(frame, ctype)
                if ctype == HEARTBEAT:
                    t.flags |= _HB_VTAG_FAILED
                    t.last_dir = dir
                    ignore = True
                    continue
                if not t.flags & _HB_VTAG_FAILED or t.last_dir == dir:
                    return _bad_vtag(frame, ctype)
                t.flags &= ~_HB_VTAG_FAILED
                t.vtag[dir], t.vtag[1 - dir] = vtag, 0
            elif t.flags & _HB_VTAG_FAILED:
                t.flags &= ~_HB_VTAG_FAILED
        old = t.state
        st = new_state(dir, old, ctype)
        if st == sIV:
            frame.note(f"ct INVALID: sctp chunk {ctype} not allowed in state {STATE_NAMES[old]}")
            return PKT_INVALID
        if ctype == INIT:
            tag = _init_tag(d, off, end)
            if tag is None:
                return PKT_INVALID
            if t.init[dir] and t.init[1 - dir]:
                t.init[1 - dir] = 0
            t.init[dir] = 1
            t.vtag[1 - dir] = tag
            if st == sCL and old == sCL and ct.status & IPS_CONFIRMED:
                ignore = True
        elif ctype == INIT_ACK:
            tag = _init_tag(d, off, end)
            if tag is None:
                return PKT_INVALID
            prev = t.vtag[1 - dir]
            if (not t.init[1 - dir] and prev and prev != tag) or \
                    (t.init[dir] and t.init[1 - dir] and prev != tag):
                return _bad_vtag(frame, ctype)
            t.vtag[1 - dir] = tag
        t.state = st
        if old != st and st == sES and not ct.status & IPS_ASSURED:
            ct.status |= IPS_ASSURED
            frame.note("ct sctp ESTABLISHED [ASSURED]")
    if ignore:
        return PKT_ACCEPT
    ct.expires = now + TIMEOUTS[st]
    return PKT_ACCEPT


def _bad_vtag(frame: Frame, ctype: int) -> int:
    frame.note(f"ct INVALID: sctp chunk {ctype} with a wrong verification tag")
    return PKT_INVALID
