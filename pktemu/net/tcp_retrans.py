"""Sender-side reliability (tcp_input.c tcp_ack / tcp_timer.c), as a mixin of TcpConnection.

Acknowledged segments leave the queue, the RTT is sampled the Karn way (never from a
retransmitted segment), the RTO starts at 1 s and never drops below 200 ms, and each expiry
doubles it. After an RTO the oldest segment is resent and the rest follow as ACKs come in
(go-back-N, without congestion control: what fits in the peer's window is sent).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from pktemu.net.tcp_const import (CLOSED, ORPHAN_RETRIES, RETRIES2, RTO_INIT, RTO_MAX, RTO_MIN, SYN_RECV,
                                  SYN_RETRIES, SYN_SENT, SYNACK_RETRIES, TIME_WAIT)
from pktemu.net.tcp_wire import ACK, MASK32, after, before

if TYPE_CHECKING:
    from pktemu.net.tcp import TcpStack
    from pktemu.net.tcp_wire import Seg
    from pktemu.sim import Simulator, Timer


class Skb:
    """A segment in the send queue (unsent, or sent and not yet acknowledged)."""

    __slots__ = ("seq", "data", "syn", "fin", "psh", "sent_at", "retrans", "xmit_at", "tag")

    def __init__(self, seq: int, data: bytes = b"", *, syn: bool = False, fin: bool = False) -> None:
        self.seq = seq
        self.data = data
        self.syn = syn
        self.fin = fin
        self.psh = False
        self.sent_at: int | None = None
        self.retrans = False
        self.xmit_at: int | None = None           # the last transmission (RACK, TLP)
        self.tag = 0                              # SACKed / lost / resent (tcp_recovery)

    @property
    def end_seq(self) -> int:
        return (self.seq + len(self.data) + self.syn + self.fin) & MASK32


def _cut(seq: int, data: bytes, mss: int, fin: bool, psh: bool) -> list[Skb]:
    """`data` from `seq` as segments of at most `mss`; FIN and PSH go on the last."""
    out = [Skb((seq + i) & MASK32, data[i:i + mss]) for i in range(0, len(data), mss)]
    out[-1].fin = fin
    out[-1].psh = psh
    return out


def model_timeout(boundary: int, rto_base: int) -> int:
    """tcp_model_timeout(): how long `boundary` retransmissions take from an RTO of rto_base."""
    thresh = (RTO_MAX // rto_base).bit_length() - 1
    if boundary <= thresh:
        return ((2 << boundary) - 1) * rto_base
    return ((2 << thresh) - 1) * rto_base + (boundary - thresh) * RTO_MAX


class Retransmission:
    """The send queue's bookkeeping: ACKs in, window updates, RTO and zero-window probes."""

    stack: "TcpStack"
    sim: "Simulator"
    state: str
    active: bool
    queue: list[Skb]
    send_head: int
    snd_una: int
    snd_nxt: int
    snd_wnd: int
    snd_wl1: int
    snd_wscale: int
    sack_ok: bool
    max_window: int
    rto: int
    srtt: int | None
    min_rtt: int | None
    rttvar: int
    retransmits: int
    retrans_stamp: int
    rcv_shutdown: bool
    soft_err: str | None
    _rto_timer: "Timer | None"
    _probe_timer: "Timer | None"
    _state_timer: "Timer | None"

    def transmit(self, skb: Skb) -> None:
        raise NotImplementedError

    if TYPE_CHECKING:                           # tcp_recovery.Recovery, a later base of TcpConnection
        def set_xmit_timer(self) -> None: ...

        def loss_reset(self) -> None: ...

    def xmit(self, flags: int, seq: int, payload: bytes = b"") -> None:
        raise NotImplementedError

    def done(self) -> None:
        raise NotImplementedError

    def fail(self, errno_name: str) -> None:
        raise NotImplementedError

    def clean_acked(self, ack: int) -> None:
        """tcp_clean_rtx_queue(): drop what `ack` covers, sample the RTT (Karn), rearm the RTO."""
        now = self.sim.now
        first_sent: int | None = None
        popped = 0
        q = self.queue
        while q and not after(q[0].end_seq, ack):
            skb = q.pop(0)
            popped += 1
            if first_sent is None and not skb.retrans and skb.sent_at is not None:
                first_sent = skb.sent_at
        if q and before(q[0].seq, ack) and not q[0].syn:
            head = q[0]
            head.data = head.data[(ack - head.seq) & MASK32:]
            head.seq = ack
        self.send_head = max(0, self.send_head - popped)
        self.snd_una = ack
        if first_sent is not None:
            self._rtt_sample(now - first_sent)
        self.rto = RTO_INIT if self.srtt is None else min(self.srtt + max(4 * self.rttvar, RTO_MIN), RTO_MAX)
        self.retransmits = 0
        if self.snd_una != self.snd_nxt:
            self.set_xmit_timer()
        elif self._rto_timer is not None:
            self._rto_timer.cancel()
            self._rto_timer = None

    def _rtt_sample(self, m: int) -> None:
        m = max(m, 1)
        if self.min_rtt is None or m < self.min_rtt:
            self.min_rtt = m
        if self.srtt is None:
            self.srtt, self.rttvar = m, m // 2
        else:
            self.rttvar = (3 * self.rttvar + abs(self.srtt - m)) // 4
            self.srtt = (7 * self.srtt + m) // 8

    def update_window(self, seg: "Seg") -> None:
        """tcp_ack_update_window()."""
        nwin = seg.window << self.snd_wscale
        if after(seg.ack, self.snd_una) or after(seg.seq, self.snd_wl1) or (
                seg.seq == self.snd_wl1 and (nwin > self.snd_wnd or not nwin)):
            self.snd_wnd = nwin
            self.snd_wl1 = seg.seq
            self.max_window = max(self.max_window, nwin)
            if self._probe_timer is not None and nwin:
                self._probe_timer.cancel()
                self._probe_timer = None

    def simple_retransmit(self, mss: int) -> None:
        """tcp_simple_retransmit() after the path MTU dropped: a segment in flight longer than `mss`
        was dropped on the way. Each run of such segments is cut again into `mss` pieces (the last
        with PSH, as Linux resends a GSO buffer) and resent at once, with the RTO restarted; queued
        segments are cut as they will leave (tcp_fragment)."""
        out: list[Skb] = []
        resend: list[Skb] = []
        run: list[Skb] = []

        def flush() -> None:
            if not run:
                return
            data = b"".join(s.data for s in run)
            pieces = _cut(run[0].seq, data, mss, run[-1].fin, True)
            for p in pieces:
                p.sent_at = run[0].sent_at
            out.extend(pieces)
            resend.extend(pieces)
            run.clear()

        for skb in self.queue[:self.send_head]:
            if len(skb.data) > mss and not skb.syn:
                run.append(skb)
                continue
            flush()
            out.append(skb)
        flush()
        head = len(out)
        for skb in self.queue[self.send_head:]:
            out.extend(_cut(skb.seq, skb.data, mss, skb.fin, skb.psh) if len(skb.data) > mss and not skb.syn
                       else [skb])
        self.queue[:] = out
        self.send_head = head
        if not resend:
            return
        if self._rto_timer is not None:
            self._rto_timer.cancel()
            self._rto_timer = None
        for skb in resend:
            self.transmit(skb)

    # ------------------------------------------------------------------ timers
    def _rto_fire(self) -> None:
        """tcp_retransmit_timer(): resend the oldest segment, back off, give up after the retries."""
        self._rto_timer = None
        if not self.queue or self.state in (CLOSED, TIME_WAIT):
            return
        if self._write_timeout():
            if self.state == SYN_RECV and not self.active:
                self.done()
            else:
                self.fail(self.soft_err or "ETIMEDOUT")  # tcp_write_err(): sk_err_soft, else ETIMEDOUT
            return
        if not self.retransmits:
            self.retrans_stamp = self.queue[0].sent_at if self.queue[0].sent_at is not None else self.sim.now
        self.retransmits += 1
        self.rto = min(self.rto * 2, RTO_MAX)
        if self.sack_ok:
            self.loss_reset()
        self.send_head = 1                          # go back N: the rest follows as ACKs come in
        self.transmit(self.queue[0])

    def _write_timeout(self) -> bool:
        """tcp_write_timeout(): handshakes count their retries; an established connection gives
        up once the time `tcp_retries2` backoffs from 200 ms would take has passed since the
        first transmission of the segment it keeps resending (retransmits_timed_out)."""
        sysctls: dict[str, int] = getattr(self.stack.node, "sysctls", {})   # a bare test node: defaults
        if self.state == SYN_RECV and not self.active:
            return self.retransmits >= sysctls.get("net.ipv4.tcp_synack_retries", SYNACK_RETRIES)
        if self.state in (SYN_SENT, SYN_RECV):
            return self.retransmits >= sysctls.get("net.ipv4.tcp_syn_retries", SYN_RETRIES)
        limit = ORPHAN_RETRIES if self.rcv_shutdown else sysctls.get("net.ipv4.tcp_retries2", RETRIES2)
        return self.retransmits > 0 and self.sim.now - self.retrans_stamp >= model_timeout(limit, RTO_MIN)

    def _probe_fire(self) -> None:
        """tcp_probe_timer(): a zero-window probe (an ACK one below snd_una) asks for the window."""
        self._probe_timer = None
        if self.state in (CLOSED, TIME_WAIT) or self.send_head >= len(self.queue):
            return
        if self.snd_una != self.snd_nxt:
            return
        self.xmit(ACK, (self.snd_una - 1) & MASK32)
        self._probe_timer = self.sim.timer(min(self.rto * 2, RTO_MAX), self._probe_fire)

    def arm_state_timer(self, delay: int) -> None:
        if self._state_timer is not None:
            self._state_timer.cancel()
        self._state_timer = self.sim.timer(delay, self.done)

