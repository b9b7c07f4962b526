"""Segment arrival for an existing socket: tcp_rcv_state_process() and tcp_timewait_state_process().

The order of checks is Linux's (tcp_validate_incoming): PAWS, sequence window, RST (exact
sequence or challenge ACK), SYN in window (challenge ACK), then the ACK, then data and FIN, and
last the decision whether to ACK now or later.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from pktemu.net.tcp_const import (CLOSE_WAIT, CLOSED, CLOSING, ESTABLISHED, FIN_TIMEOUT, FIN_WAIT1,
                                  FIN_WAIT2, LAST_ACK, MSS_DEFAULT, SYN_RECV, SYN_SENT, TIME_WAIT,
                                  TIMEWAIT_LEN, WSCALE)
from pktemu.net.tcp_sack import dsack_set, hold, sack_remove
from pktemu.net.tcp_wire import ACK, FIN, MASK32, RST, SYN, Seg, after, before

if TYPE_CHECKING:
    from pktemu.net.tcp import TcpStack
    from pktemu.net.tcp_conn import TcpConnection


def _int32(v: int) -> int:
    v &= MASK32
    return v - (1 << 32) if v & 0x80000000 else v


def segment_arrives(c: TcpConnection, seg: Seg) -> int | None:
    """Process `seg` for socket `c`; returns an ISN when a TIME_WAIT socket yields to a new SYN."""
    st = c.state
    if st == TIME_WAIT:
        return _timewait(c, seg)
    if st == SYN_SENT:
        _synsent(c, seg)
    elif st != CLOSED:
        _synchronized(c, seg)
    return None


def negotiate(c: TcpConnection, seg: Seg) -> None:
    """The options of the peer's SYN (or SYN-ACK) decide what both sides use from now on."""
    c.irs = seg.seq
    c.rcv_nxt = c.rcv_wup = (seg.seq + 1) & MASK32
    c.ws_ok = seg.wscale is not None
    c.snd_wscale = seg.wscale if seg.wscale is not None else 0
    c.rcv_wscale = WSCALE if c.ws_ok else 0
    c.sack_ok = seg.sack_perm
    c.ts_ok = seg.tsval is not None
    if seg.tsval is not None:
        c.ts_recent = seg.tsval
    c.peer_mss = seg.mss or MSS_DEFAULT
    c.snd_wnd = seg.window                  # never scaled in a SYN
    c.max_window = max(c.max_window, seg.window)
    c.snd_wl1 = seg.seq
    c.lrcvtime = c.sim.now


# ---------------------------------------------------------------------------- SYN_SENT
def _synsent(c: TcpConnection, seg: Seg) -> None:
    """tcp_rcv_synsent_state_process()."""
    f = seg.flags
    if f & ACK:
        if not after(seg.ack, c.iss) or after(seg.ack, c.snd_nxt):
            if not f & RST:
                c.stack.send_reset(seg)
            return
        if f & RST:
            c.reset_received()
            return
        if not f & SYN:
            return
        negotiate(c, seg)
        c.clean_acked(seg.ack)
        c.state = ESTABLISHED
        c.notify("connected")
        if c.send_head < len(c.queue):
            c.push()                        # a writer was waiting: its data carries the ACK
        else:
            c.send_ack()
        return
    if f & RST or not f & SYN:
        return
    negotiate(c, seg)                       # simultaneous open: answer with SYN-ACK, same ISN
    c.state = SYN_RECV
    c.transmit(c.queue[0])


# ---------------------------------------------------------------------------- synchronized states
def _sequence_ok(c: TcpConnection, seg: Seg) -> bool:
    """tcp_sequence(): not wholly before rcv_wup, not starting beyond the window."""
    if before(seg.end_seq, c.rcv_wup):
        return False
    return not after(seg.seq, (c.rcv_nxt + c.receive_window()) & MASK32)


def _reset_check(c: TcpConnection, seg: Seg) -> bool:
    """tcp_reset_check(): a RST one below rcv_nxt counts once we have the peer's FIN."""
    return seg.seq == ((c.rcv_nxt - 1) & MASK32) and c.state in (CLOSE_WAIT, LAST_ACK, CLOSING)


def _synchronized(c: TcpConnection, seg: Seg) -> None:
    f = seg.flags
    if c.ts_ok and seg.tsval is not None and not f & RST and _int32(c.ts_recent - seg.tsval) > 1:
        if not c.oow_limited(seg):
            c.send_dupack(seg)              # PAWS: an old duplicate
        return
    if not _sequence_ok(c, seg):
        if not f & RST:
            if f & SYN:
                c.challenge_ack(seg)
            elif not c.oow_limited(seg):
                c.send_dupack(seg)
        elif _reset_check(c, seg):
            c.reset_received()
        return
    if f & RST:
        if seg.seq == c.rcv_nxt or _reset_check(c, seg):
            c.reset_received()
        else:
            c.challenge_ack(seg)
        return
    if f & SYN:
        if c.state == SYN_RECV and not c.active and seg.seq == c.irs and not f & ACK:
            c.transmit(c.queue[0])          # the peer retransmitted its SYN: so do we
        else:
            c.challenge_ack(seg)
        return
    if not f & ACK:
        return
    if not _ack(c, seg):
        return
    if seg.tsval is not None and c.ts_ok and not after(seg.seq, c.rcv_wup) \
            and _int32(seg.tsval - c.ts_recent) >= 0:
        c.ts_recent = seg.tsval
    if not _ack_state(c, seg):
        return
    _data(c, seg)
    if c.state not in (CLOSED, TIME_WAIT):
        c.push()
        c.ack_snd_check()


def _ack(c: TcpConnection, seg: Seg) -> bool:
    """tcp_ack() plus the SYN_RECV step; False when the segment is to be dropped."""
    ack = seg.ack
    if c.state == SYN_RECV:
        if not after(ack, c.snd_una) or after(ack, c.snd_nxt):
            c.stack.send_reset(seg)
            return False
        c.snd_wnd = seg.window << c.snd_wscale
        c.snd_wl1 = seg.seq
        c.max_window = max(c.max_window, c.snd_wnd)
        c.clean_acked(ack)
        c.state = ESTABLISHED
        c.notify("connected" if c.active else "accept")
        return True
    if after(ack, c.snd_nxt):
        if c.state != ESTABLISHED:
            c.challenge_ack(seg)
        return False
    if before(ack, c.snd_una):
        if c.state != ESTABLISHED or before(ack, (c.snd_una - max(c.max_window, 1)) & MASK32):
            c.challenge_ack(seg)
            return False
        return True                         # an old ACK: ignore it, keep the data
    c.update_window(seg)
    if seg.sacks or c.ca_state:
        c.lossy_ack(seg)                    # tcp_recovery: SACK blocks, or a loss in hand
    elif after(ack, c.snd_una):
        c.clean_acked(ack)
    return True


def _ack_state(c: TcpConnection, seg: Seg) -> bool:
    """The state changes an ACK of our FIN causes; False when the segment is consumed."""
    fin_acked = c.snd_una == c.write_seq
    st = c.state
    if st == FIN_WAIT1 and fin_acked:
        c.state = FIN_WAIT2
        if not c.rcv_shutdown:
            return True                     # shutdown(SHUT_WR): still reading, no timeout
        if seg.end_seq != seg.seq and after((seg.end_seq - (seg.flags & FIN)) & MASK32, c.rcv_nxt):
            c.stack.send_reset(seg)         # data after close(): abort (TCPAbortOnData)
            c.done()
            return False
        c.arm_state_timer(FIN_TIMEOUT)
    elif st == CLOSING and fin_acked:
        c.time_wait()
        return False
    elif st == LAST_ACK and fin_acked:
        c.done()
        return False
    return True


def _data(c: TcpConnection, seg: Seg) -> None:
    st = c.state
    if st in (CLOSE_WAIT, CLOSING, LAST_ACK) and not before(seg.seq, c.rcv_nxt):
        return                              # after the peer's FIN: nothing more can count
    if st in (FIN_WAIT1, FIN_WAIT2, CLOSE_WAIT, CLOSING, LAST_ACK) and c.rcv_shutdown:
        if seg.end_seq != seg.seq and after((seg.end_seq - (seg.flags & FIN)) & MASK32, c.rcv_nxt):
            c.stack.send_reset(seg)         # RFC 1122: data for a closed socket gets a RST
            c.fail("ECONNRESET")
            return
    _data_queue(c, seg)


def _data_queue(c: TcpConnection, seg: Seg) -> None:
    """tcp_data_queue(): in-order data and FIN are taken, then what was held beyond the hole they
    fill; data beyond a hole is held (tcp_sack); old data is answered with a D-SACK."""
    payload = seg.payload
    fin = bool(seg.flags & FIN)
    if not payload and not fin:
        return
    c.dsack = None
    seq = seg.seq
    if seq != c.rcv_nxt:
        if not after(seg.end_seq, c.rcv_nxt):
            dsack_set(c, seq, seg.end_seq)  # a retransmission of what we have
            c.enter_quickack()
            c.ack_pending = True
            return
        if not before(seq, (c.rcv_nxt + c.receive_window()) & MASK32):
            c.enter_quickack()              # beyond the window
            c.ack_pending = True
            return
        if after(seq, c.rcv_nxt):
            hold(c, seq, payload, fin)
            return
        dsack_set(c, seq, c.rcv_nxt)
        payload = payload[(c.rcv_nxt - seq) & MASK32:]
    elif c.receive_window() == 0 and payload:
        c.enter_quickack()
        c.ack_pending = True
        return
    if payload:
        c.rcv_nxt = (c.rcv_nxt + len(payload)) & MASK32
        c.event_data_recv(len(payload))
        if not c.rcv_shutdown:
            c.notify("data", payload)
    if fin:
        c.rcv_nxt = (c.rcv_nxt + 1) & MASK32
        _fin(c)
    if c.ofo:
        _ofo_queue(c)
        if not c.ofo:
            c.ack_now = True                # RFC 5681 4.2: ACK at once when a hole is filled
    if c.sacks:
        sack_remove(c)


def _ofo_queue(c: TcpConnection) -> None:
    """tcp_ofo_queue(): deliver the held segments rcv_nxt has reached, in order."""
    while c.ofo and not after(c.ofo[0][0], c.rcv_nxt):
        seq, end, payload, fin = c.ofo.pop(0)
        if not after(end, c.rcv_nxt):
            continue
        data = payload[(c.rcv_nxt - seq) & MASK32:]
        if data:
            c.rcv_nxt = (c.rcv_nxt + len(data)) & MASK32
            if not c.rcv_shutdown:
                c.notify("data", data)
        if fin:
            c.rcv_nxt = (c.rcv_nxt + 1) & MASK32
            _fin(c)
            return


def _fin(c: TcpConnection) -> None:
    """tcp_fin(): EOF for the app; the ACK of a FIN waits (pingpong) unless we closed already.
    Anything still held beyond a hole is gone."""
    c.ack_pending = True
    c.ofo.clear()
    c.sacks.clear()
    st = c.state
    if st in (SYN_RECV, ESTABLISHED):
        c.state = CLOSE_WAIT
        c.pingpong = max(c.pingpong, 1)
    elif st == FIN_WAIT1:
        c.send_ack()
        c.state = CLOSING
    elif st == FIN_WAIT2:
        c.send_ack()
        c.time_wait()
    if not c.rcv_shutdown:
        c.notify("closed")


# ---------------------------------------------------------------------------- TIME_WAIT
def _timewait(c: TcpConnection, seg: Seg) -> int | None:
    """tcp_timewait_state_process() for the TIME_WAIT substate."""
    f = seg.flags
    paws_reject = c.ts_ok and seg.tsval is not None and _int32(c.ts_recent - seg.tsval) > 1
    if not paws_reject and seg.seq == c.rcv_nxt and (seg.seq == seg.end_seq or f & RST):
        if f & RST:
            c.done()                        # TIME_WAIT assassination (tcp_rfc1337=0)
        else:
            if seg.tsval is not None and c.ts_ok:
                c.ts_recent = seg.tsval
            c.arm_state_timer(TIMEWAIT_LEN)
        return None
    if f & SYN and not f & (RST | ACK) and not paws_reject and (
            after(seg.seq, c.rcv_nxt) or (
                seg.tsval is not None and c.ts_ok and _int32(c.ts_recent - seg.tsval) < 0)):
        stack: TcpStack = c.stack
        if stack.find_listener(c.saddr, c.sport) is not None:
            isn = (c.snd_nxt + 65535 + 2) & MASK32 or 1
            c.done()
            return isn
    if not f & RST:
        if paws_reject or f & ACK:
            c.arm_state_timer(TIMEWAIT_LEN)
        if not c.oow_limited(seg):
            c.send_ack()
    return None
