"""Linux's receive-side ACK policy (tcp_input.c / tcp_timer.c), as a mixin of TcpConnection.

What a capture shows depends on it, so it is modelled closely: quickack mode after the first
data (ACK at once), pingpong mode once the receiver answers quickly or gets a FIN (the ACK waits
for the delayed-ACK timer and usually rides on the app's next segment), and every segment that
carries an ACK cancels the pending delayed ACK.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from pktemu.net.tcp_const import (ATO_MIN, CLOSED, DELACK_MAX, MAX_QUICKACKS, MS, OOW_RATELIMIT, TICK,
                                  TIME_WAIT)
from pktemu.net.tcp_wire import MASK32, SYN, after, before

if TYPE_CHECKING:
    from pktemu.net.tcp_wire import Seg
    from pktemu.sim import Simulator, Timer


class AckPolicy:
    """When to ACK: now, on the delayed-ACK timer, or not at all (rate-limited answers)."""

    sim: "Simulator"
    state: str
    quick: int
    pingpong: int
    ato: int
    lrcvtime: int
    rcv_mss: int
    advmss: int
    ack_pending: bool
    ack_now: bool
    sack_ok: bool
    ofo: list[tuple[int, int, bytes, bool]]
    dsack: tuple[int, int] | None
    rcv_nxt: int
    rcv_wup: int
    srtt: int | None
    rto: int
    last_oow_ack: int | None
    _dack_timer: "Timer | None"
    _dack_at: int

    @property
    def rcv_wnd(self) -> int:
        raise NotImplementedError

    def send_ack(self) -> None:
        raise NotImplementedError

    def _ack_sent(self) -> None:
        """tcp_event_ack_sent(): leave quickack slowly, cancel the delayed ACK."""
        if self.quick:
            if self.ack_pending and self.quick <= 1:
                self.quick = 0
                self.ato = ATO_MIN
            elif self.ack_pending:
                self.quick -= 1
        self.ack_pending = False
        self.ack_now = False
        if self._dack_timer is not None:
            self._dack_timer.cancel()
            self._dack_timer = None


    def in_quickack(self) -> bool:
        return self.quick > 0 and self.pingpong < 1

    def incr_quickack(self, max_quickacks: int = MAX_QUICKACKS) -> None:
        q = self.rcv_wnd // (2 * self.rcv_mss) or 2
        self.quick = max(self.quick, min(q, max_quickacks))

    def enter_quickack(self) -> None:
        self.incr_quickack()
        self.pingpong = 0
        self.ato = ATO_MIN

    def event_data_recv(self, n: int) -> None:
        """tcp_event_data_recv(): measure the peer's segment size, adapt the ACK timeout."""
        self.ack_pending = True
        if n >= self.rcv_mss:
            self.rcv_mss = min(n, self.advmss)
        now = self.sim.now
        if not self.ato:
            self.incr_quickack()
            self.ato = ATO_MIN
        else:
            delta = now - self.lrcvtime
            if delta <= ATO_MIN // 2:
                self.ato = self.ato // 2 + ATO_MIN // 2
            elif delta < self.ato:
                self.ato = min(self.ato // 2 + delta, self.rto)
            elif delta > self.rto:
                self.incr_quickack()
        self.lrcvtime = now

    def ack_snd_check(self) -> None:
        """__tcp_ack_snd_check(): ACK now (2 full segments, quickack, data held beyond a hole, a
        hole just filled) or arm the delayed ACK."""
        if not self.ack_pending:
            return
        if ((self.rcv_nxt - self.rcv_wup) & MASK32) > self.rcv_mss or self.in_quickack() or self.ofo \
                or self.ack_now:
            self.send_ack()
        else:
            self.send_delayed_ack()

    def send_delayed_ack(self) -> None:
        ato = self.ato
        if ato > ATO_MIN:
            max_ato = DELACK_MAX if self.pingpong >= 1 else 500 * MS
            if self.srtt is not None:
                max_ato = min(max_ato, max(self.srtt, ATO_MIN))
            ato = min(ato, max_ato)
        ato = min(ato, DELACK_MAX)
        now = self.sim.now
        timeout = now + max(ato, TICK)
        if self._dack_timer is not None:
            if self._dack_at <= now + (ato >> 2):
                self.send_ack()
                return
            if timeout >= self._dack_at:
                return
            self._dack_timer.cancel()
        self.ack_pending = True
        self._dack_at = timeout
        self._dack_timer = self.sim.timer(timeout - now, self._dack_fire)

    def _dack_fire(self) -> None:
        """tcp_delack_timer_handler(): a missed delayed ACK ends pingpong mode."""
        self._dack_timer = None
        if not self.ack_pending or self.state in (CLOSED, TIME_WAIT):
            return
        if self.pingpong < 1:
            self.ato = min(self.ato << 1, self.rto)
        else:
            self.pingpong = 0
            self.ato = ATO_MIN
        self.send_ack()

    def oow_limited(self, seg: "Seg") -> bool:
        """tcp_oow_rate_limited(): at most one ACK per 500 ms answers bogus pure ACKs and SYNs."""
        if seg.end_seq != seg.seq and not seg.flags & SYN:
            return False
        now = self.sim.now
        if self.last_oow_ack is not None and now - self.last_oow_ack < OOW_RATELIMIT:
            return True
        self.last_oow_ack = now
        return False

    def send_dupack(self, seg: "Seg") -> None:
        """tcp_send_dupack(): old data is also reported as a D-SACK."""
        if seg.end_seq != seg.seq and before(seg.seq, self.rcv_nxt):
            self.enter_quickack()
            if self.sack_ok:
                self.dsack = (seg.seq, self.rcv_nxt if after(seg.end_seq, self.rcv_nxt) else seg.end_seq)
        self.send_ack()

    def challenge_ack(self, seg: "Seg") -> None:
        if not self.oow_limited(seg):
            self.send_ack()

