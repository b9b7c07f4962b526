"""The sender's loss recovery with SACK (tcp_input.c tcp_sacktag / tcp_fastretrans_alert,
tcp_recovery.c RACK, tcp_output.c tcp_schedule_loss_probe / tcp_send_loss_probe), as a mixin of
TcpConnection.

Linux 6.x (net.ipv4.tcp_recovery=1, tcp_early_retrans=3) marks a sent segment lost once one sent
after it is SACKed and an RTT plus a reordering window has passed (RACK): the window is nothing
once 3 segments are SACKed (the dupthresh), else min_rtt/4, waited out on the REO timer (2 ms
more, in jiffies). A loss enters Recovery, and PRR (tcp_cwnd_reduction) lets the lost segments
go one per segment delivered. While nothing looks lost (state Open), the retransmission timer is
a tail loss probe (TLP) after 2 x SRTT plus 2 ms, or plus the minimum RTO with one segment out,
in jiffies, never after the RTO: it sends new data, or resends the last segment, so a lost tail
gets SACKed or ACKed and recovered without an RTO. One timer carries RTO, REO and TLP, as the
kernel's icsk timer.

The connection only comes here from an ACK with SACK blocks or while a loss is being handled:
the no-loss path is one test in tcp_input and the TLP arming after a send or an ACK.
Not modelled: the congestion window (so PRR's ssthresh bound, which binds when much is in
flight), reordering detection (reo_wnd_steps, DSACK), the undo of spurious recoveries, and Reno
recovery without SACK.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from pktemu.net.tcp_const import CLOSED, RTO_INIT, RTO_MIN, SYN_RECV, SYN_SENT, TICK, TIME_WAIT
from pktemu.net.tcp_wire import after, before
from pktemu.sim import MS

if TYPE_CHECKING:
    from pktemu.net.tcp_retrans import Skb
    from pktemu.net.tcp_wire import Seg
    from pktemu.sim import Simulator, Timer

# icsk_ca_state
CA_OPEN, CA_DISORDER, CA_RECOVERY, CA_LOSS = 0, 1, 3, 4
# Skb.tag bits (TCPCB_SACKED_ACKED, TCPCB_LOST, TCPCB_SACKED_RETRANS)
SACKED, LOST, RETRANS_OUT = 1, 2, 4
REORDERING = 3                  # net.ipv4.tcp_reordering
TIMEOUT_MIN = 2 * MS            # TCP_TIMEOUT_MIN_US


def jiffies(ns: int) -> int:
    """usecs_to_jiffies(): a timer's delay rounded up to whole ticks (HZ=250)."""
    return -(-ns // TICK) * TICK


def _sent_after(t1: int, t2: int, seq1: int, seq2: int) -> bool:
    """tcp_skb_sent_after(): later in time, or at the same time with a higher sequence."""
    return t1 > t2 or (t1 == t2 and after(seq1, seq2))


class Recovery:
    """SACK scoreboard, RACK loss detection, Recovery and the TLP, on TcpConnection's send queue."""

    sim: "Simulator"
    state: str
    sack_ok: bool
    tlp_on: bool
    queue: list["Skb"]
    send_head: int
    snd_una: int
    snd_nxt: int
    snd_wnd: int
    rto: int
    srtt: int | None
    min_rtt: int | None
    ca_state: int
    _rto_timer: "Timer | None"
    # Defaults, not set per connection: only a lossy ACK or a REO/TLP/RTO timer changes them.
    high_seq = 0
    sacked_out = 0
    tlp_high_seq: int | None = None
    rack_mstamp = 0
    rack_end_seq = 0
    rack_rtt = 0
    rack_advanced = False
    cwnd = prr_delivered = prr_out = 0         # PRR, in Recovery only
    _xmit_kind = "rto"                          # what _rto_timer is now: rto, reo or tlp

    def transmit(self, skb: "Skb") -> None:
        raise NotImplementedError

    if TYPE_CHECKING:                           # tcp_retrans.Retransmission, an earlier base
        def clean_acked(self, ack: int) -> None: ...

        def _rto_fire(self) -> None: ...

    # ------------------------------------------------------------------ the one xmit timer
    def _arm(self, delay: int, kind: str) -> None:
        """inet_csk_reset_xmit_timer(): RTO, REO and TLP share one timer; arming one replaces it."""
        if self._rto_timer is not None:
            self._rto_timer.cancel()
        fire = self._rto_fire if kind == "rto" else self._reo_fire if kind == "reo" else self._tlp_fire
        self._rto_timer = self.sim.timer(delay, fire)
        self._xmit_kind = kind

    def _rearm_rto(self) -> None:
        """tcp_rearm_rto() after a REO or TLP timer: the RTO counts from the head's last send."""
        if self.snd_una == self.snd_nxt:
            if self._rto_timer is not None:
                self._rto_timer.cancel()
                self._rto_timer = None
            return
        rto = self.rto
        head = self.queue[0] if self.queue else None
        if self._xmit_kind != "rto" and head is not None and head.xmit_at is not None:
            delta = rto - (self.sim.now - head.xmit_at)
            rto = delta if delta > 0 else TICK      # overdue: at the next jiffy
        self._arm(rto, "rto")

    def set_xmit_timer(self) -> None:
        """tcp_set_xmit_timer() after an ACK of new data: the TLP if it may run, else the RTO."""
        if not self.schedule_loss_probe(True):
            self._rearm_rto()

    def schedule_loss_probe(self, advancing_rto: bool) -> bool:
        """tcp_schedule_loss_probe(): only with SACK, data out, and nothing looking lost."""
        if not self.sack_ok or not self.tlp_on or self.ca_state or self.snd_una == self.snd_nxt \
                or self.state in (SYN_SENT, SYN_RECV):
            return False
        self.arm_probe(advancing_rto)
        return True

    def arm_probe(self, advancing_rto: bool) -> None:
        """The TLP timer, once schedule_loss_probe()'s conditions hold: 2 x SRTT plus 2 ms, or the
        minimum RTO with one segment out, in jiffies, never after the RTO would fire. It runs
        after every flight (push() checks the conditions itself), so jiffies() and _arm() are
        written out; jiffies(x) >= x, so the RTO's is only rounded when it may be the sooner."""
        srtt = self.srtt
        if srtt is None:
            pto = RTO_INIT
        else:
            pto = -(-(2 * srtt + (RTO_MIN if self.send_head == 1 else TIMEOUT_MIN)) // TICK) * TICK
        rto_delta = self.rto
        if not advancing_rto:
            xmit = self.queue[0].xmit_at
            if xmit:
                rto_delta -= self.sim.now - xmit
        if 0 < rto_delta < pto:
            rto_delta = -(-rto_delta // TICK) * TICK
            if rto_delta < pto:
                pto = rto_delta
        timer = self._rto_timer
        if timer is not None:
            timer.cancel()
        self._rto_timer = self.sim.timer(pto, self._tlp_fire)
        self._xmit_kind = "tlp"

    def _tlp_fire(self) -> None:
        """tcp_send_loss_probe(): one probe per episode, new data if the window takes it, else the
        last segment sent again; then the RTO."""
        self._rto_timer = None
        if self.state in (CLOSED, TIME_WAIT) or not self.queue:
            return
        if self.tlp_high_seq is None:
            nxt = self.queue[self.send_head] if self.send_head < len(self.queue) else None
            if nxt is not None and not after(nxt.end_seq, (self.snd_una + self.snd_wnd) & 0xFFFFFFFF):
                self.send_head += 1
                self.transmit(nxt)
            elif self.send_head:
                self.transmit(self.queue[self.send_head - 1])
            self.tlp_high_seq = self.snd_nxt
        self._xmit_kind = "tlp"                     # still pending: the RTO counts from the head
        self._rearm_rto()

    # ------------------------------------------------------------------ ACK processing
    def lossy_ack(self, seg: "Seg") -> None:
        """tcp_ack() for an ACK with SACK blocks, or during a loss: mark what the blocks cover
        (tcp_sacktag_write_queue), take the cumulative ACK, then tcp_fastretrans_alert()."""
        ack = seg.ack
        now = self.sim.now
        blocks = [(s, e) for s, e in seg.sacks if after(e, ack)]       # a D-SACK block is below
        delivered = 0
        for skb in self.queue[:self.send_head]:
            if not after(skb.end_seq, ack):
                if skb.tag & SACKED:
                    self.sacked_out -= 1
                else:
                    delivered += 1
                    self._rack_advance(skb, now)
                continue
            if skb.tag & SACKED:
                continue
            for s, e in blocks:
                if not before(skb.seq, s) and not after(skb.end_seq, e):
                    skb.tag = SACKED
                    self.sacked_out += 1
                    delivered += 1
                    self._rack_advance(skb, now)
                    break
        if self.tlp_high_seq is not None and not before(ack, self.tlp_high_seq):
            self.tlp_high_seq = None                # tcp_process_tlp_ack
        advanced = after(ack, self.snd_una)
        if advanced:
            self.clean_acked(ack)
        self._fastretrans_alert(delivered, advanced)

    def _rack_advance(self, skb: "Skb", now: int) -> None:
        """tcp_rack_advance(): the newest sent of the delivered segments, and its RTT."""
        xmit = skb.xmit_at
        if xmit is None:
            return
        rtt = now - xmit
        if skb.retrans and self.min_rtt is not None and rtt < self.min_rtt:
            return                                  # the original or the resend? too soon to tell
        self.rack_advanced = True
        self.rack_rtt = rtt
        if _sent_after(xmit, self.rack_mstamp, skb.end_seq, self.rack_end_seq):
            self.rack_mstamp = xmit
            self.rack_end_seq = skb.end_seq

    def _reo_wnd(self) -> int:
        """tcp_rack_reo_wnd(): none in Recovery or from 3 SACKed segments on, else min_rtt/4."""
        if self.ca_state >= CA_RECOVERY or self.sacked_out >= REORDERING:
            return 0
        return min((self.min_rtt or 0) >> 2, self.srtt or 0)

    def _rack_detect_loss(self) -> int:
        """tcp_rack_detect_loss(): mark lost what was sent before the newest delivered segment
        and is older than its RTT plus the window; returns how long the rest may still take."""
        reo_wnd = self._reo_wnd()
        now = self.sim.now
        wait = 0
        for skb in self.queue[:self.send_head]:
            tag = skb.tag
            if tag & SACKED or (tag & LOST and not tag & RETRANS_OUT) or skb.xmit_at is None:
                continue
            if not _sent_after(self.rack_mstamp, skb.xmit_at, self.rack_end_seq, skb.end_seq):
                continue
            remaining = self.rack_rtt + reo_wnd - (now - skb.xmit_at)
            if remaining <= 0:
                skb.tag = LOST
            else:
                wait = max(wait, remaining)
        return wait

    def _fastretrans_alert(self, delivered: int, advanced: bool) -> None:
        """tcp_fastretrans_alert() with RACK: leave a state once high_seq is ACKed, mark losses,
        enter Recovery on the first, resend what is lost as far as PRR lets."""
        st = self.ca_state
        if st >= CA_RECOVERY and not before(self.snd_una, self.high_seq):
            st = self.ca_state = CA_OPEN
        if st == CA_LOSS:
            return                                  # the RTO's go-back-N resends
        lost_before = self._count(LOST)
        if self.rack_advanced:
            self.rack_advanced = False
            wait = self._rack_detect_loss()
            if wait:
                self._arm(jiffies(wait + TIMEOUT_MIN), "reo")
        if st != CA_RECOVERY and self._count(LOST):
            self._enter_recovery()
        elif st == CA_OPEN and self.sacked_out:
            self.ca_state = CA_DISORDER
        elif st == CA_DISORDER and not self.sacked_out:
            self.ca_state = CA_OPEN
        if self.ca_state == CA_RECOVERY:
            self._cwnd_reduction(delivered, advanced and self._count(LOST) == lost_before)
            self._xmit_lost()

    def _count(self, bit: int) -> int:
        return sum(1 for skb in self.queue[:self.send_head] if skb.tag & bit)

    def _enter_recovery(self) -> None:
        """tcp_enter_recovery(): PRR starts counting what is delivered and what is resent."""
        self.ca_state = CA_RECOVERY
        self.high_seq = self.snd_nxt
        self.prr_delivered = self.prr_out = 0

    def _cwnd_reduction(self, delivered: int, una_advanced: bool) -> None:
        """tcp_cwnd_reduction(), PRR's slow-start reduction bound: as many resends as segments
        delivered (one more when the ACK advanced and marked nothing new lost), at least the
        first. The window itself (ssthresh) is not modelled: it is taken as never the limit."""
        if delivered <= 0:
            return
        self.prr_delivered += delivered
        sndcnt = max(self.prr_delivered - self.prr_out, delivered) + (1 if una_advanced else 0)
        sndcnt = max(sndcnt, 0 if self.prr_out else 1)
        self.cwnd = self._in_flight() + sndcnt

    def _in_flight(self) -> int:
        """tcp_packets_in_flight(): sent, less SACKed and lost, plus resent."""
        out = 0
        for skb in self.queue[:self.send_head]:
            tag = skb.tag
            out += 1 - bool(tag & (SACKED | LOST)) + bool(tag & RETRANS_OUT)
        return out

    def _reo_fire(self) -> None:
        """tcp_rack_reo_timeout(): the reordering window is over; what is still missing is lost."""
        self._rto_timer = None
        if self.state in (CLOSED, TIME_WAIT) or self.ca_state == CA_LOSS:
            return
        before_lost = self._count(LOST)
        self._rack_detect_loss()
        if self._count(LOST) != before_lost:
            if self.ca_state != CA_RECOVERY:
                self._enter_recovery()
                self._cwnd_reduction(1, False)
            self._xmit_lost()
        self._xmit_kind = "reo"                     # still pending: the RTO counts from the head
        self._rearm_rto()

    def _xmit_lost(self) -> None:
        """tcp_xmit_retransmit_queue(): resend the lost segments in sequence order; resending the
        head restarts the RTO unless the REO timer runs."""
        head = self.queue[0] if self.queue else None
        in_flight = self._in_flight()
        for skb in self.queue[:self.send_head]:
            if skb.tag & LOST and not skb.tag & RETRANS_OUT:
                if in_flight >= self.cwnd:
                    break
                skb.tag |= RETRANS_OUT
                in_flight += 1
                self.prr_out += 1
                self.transmit(skb)
                if skb is head and self._xmit_kind != "reo":
                    self._arm(self.rto, "rto")

    def loss_reset(self) -> None:
        """tcp_enter_loss() on an RTO: the scoreboard's marks are void, go-back-N resends."""
        for skb in self.queue:
            skb.tag = 0
        self.sacked_out = 0
        self.tlp_high_seq = None
        self.ca_state = CA_LOSS
        self.high_seq = self.snd_nxt
