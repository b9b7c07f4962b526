"""One TCP socket: the app-facing API, segment output, and how a connection ends.

The ACK policy (`tcp_ack`) and the retransmission machinery (`tcp_retrans`) are mixins of
TcpConnection; segment input is `tcp_input`. App callbacks run as separate events at the same
instant, after the kernel finished the segment, so a pure ACK decided while processing leaves
before anything the app writes in reaction, as with a real process woken by the softirq.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from pktemu.net import pmtu
from pktemu.net.frame import int2ip
from pktemu.net.tcp_ack import AckPolicy
from pktemu.net.tcp_const import (CLOSE_WAIT, CLOSED, CLOSING, EARLY_RETRANS, ESTABLISHED, FIN_TIMEOUT,
                                  FIN_WAIT1, FIN_WAIT2, LAST_ACK, MS, MSS_DEFAULT, RTO_INIT, SYN_RECV,
                                  SYN_SENT, TIME_WAIT, TIMEWAIT_LEN, WSCALE, raw_window, syn_window)
from pktemu.net.tcp_errno import SockError
from pktemu.net.tcp_recovery import CA_OPEN, Recovery
from pktemu.net.tcp_retrans import Retransmission, Skb
from pktemu.net.tcp_sack import Held, sack_option
from pktemu.net.tcp_wire import (ACK, FIN, IPPROTO_TCP, MASK32, PSH, RST, SYN, TCPOLEN_TSTAMP_ALIGNED, after,
                                 build, syn_options, ts_option)

if TYPE_CHECKING:
    from pktemu.net.tcp import Listener, TcpStack
    from pktemu.sim import Timer

_NO_SYSCTLS: dict[str, int] = {}       # a bare test node has none: the defaults (never written)


class TcpConnection(AckPolicy, Retransmission, Recovery):
    """A TCP socket from SYN to CLOSED (TIME_WAIT included); created by TcpStack.connect/listen."""

    def __init__(self, stack: "TcpStack", saddr: int, sport: int, daddr: int, dport: int, *,
                 active: bool, iss: int | None = None) -> None:
        self.stack = stack
        self.sim = stack.node.sim
        self.saddr, self.sport, self.daddr, self.dport = saddr, sport, daddr, dport
        self.active = active
        self.state = CLOSED
        self.iss = stack.isn(saddr, sport, daddr, dport) if iss is None else iss
        self.ts_off = stack.ts_offset(saddr, daddr)
        #: pmtu: icsk_pmtu_cookie, the path MTU the segments are cut for
        self.advmss, self.pmtu = stack.route_mss(daddr)
        self.snd_una = self.snd_nxt = self.write_seq = self.iss
        self.snd_wnd = 0
        self.snd_wl1 = 0
        self.max_window = 0
        self.snd_wscale = self.rcv_wscale = 0
        self.irs = self.rcv_nxt = self.rcv_wup = 0
        self.ws_ok = self.ts_ok = self.sack_ok = False
        self.ts_recent = 0
        self.peer_mss = MSS_DEFAULT
        self.ofo: list[Held] = []                 # segments beyond a hole (pktemu.net.tcp_sack)
        self.sacks: list[tuple[int, int]] = []
        self.dsack: tuple[int, int] | None = None
        self.ack_now = False                      # ICSK_ACK_NOW: the next ACK check sends one
        self.queue: list[Skb] = []
        self.send_head = 0                        # index of the first unsent skb in `queue`
        self.rto = RTO_INIT
        self.srtt: int | None = None
        self.rttvar = 0
        self.min_rtt: int | None = None
        self.ca_state = CA_OPEN                   # tcp_recovery: Open, Disorder, Recovery, Loss
        sysctls: dict[str, int] = getattr(stack.node, "sysctls", _NO_SYSCTLS)   # a bare test node's
        self.tlp_on = sysctls.get("net.ipv4.tcp_early_retrans", EARLY_RETRANS) in (3, 4)
        # the rest of tcp_recovery's state starts as Recovery's class defaults (the lossy path only)
        self.retransmits = 0
        self.retrans_stamp = 0                    # first transmission of the segment being resent
        self.soft_err: str | None = None
        self.ack_pending = False
        self.quick = 0
        self.pingpong = 0
        self.ato = 0
        self.lrcvtime = 0
        self.rcv_mss = MSS_DEFAULT
        self.last_oow_ack: int | None = None
        self.rcv_shutdown = False                 # the app called close(): it reads nothing more
        self.listener: "Listener | None" = None
        self.error: str | None = None
        self._rto_timer: Timer | None = None
        self._dack_timer: Timer | None = None
        self._dack_at = 0
        self._state_timer: Timer | None = None
        self._probe_timer: Timer | None = None
        #: callbacks: connected(conn); data(bytes); closed() once at the peer's FIN (EOF);
        #: error(errno name) once when the connection fails. A passive connection's events wait
        #: until the listener's on_accept has run, so that is where its callbacks are set.
        self.on_connected: Callable[[TcpConnection], None] | None = None
        self.on_data: Callable[[bytes], None] | None = None
        self.on_closed: Callable[[], None] | None = None
        self.on_error: Callable[[str], None] | None = None
        self._attached = active
        self._backlog: list[tuple[str, tuple[Any, ...]]] = []

    def __repr__(self) -> str:
        return f"<TcpConnection {int2ip(self.saddr)}:{self.sport} > {int2ip(self.daddr)}:{self.dport} " \
               f"{self.state}>"

    @property
    def key(self) -> tuple[int, int, int, int]:
        return self.saddr, self.sport, self.daddr, self.dport

    # ------------------------------------------------------------------ app callbacks
    def notify(self, kind: str, *args: Any) -> None:
        """Wake the app after the kernel is done with the current segment."""
        self.sim.schedule(0, self._deliver, kind, args)

    def _deliver(self, kind: str, args: tuple[Any, ...]) -> None:
        if kind == "connected":
            if self.on_connected is not None and self.error is None:
                self.on_connected(self)
            return
        if kind == "accept":
            self._accept()
            return
        if not self._attached:
            self._backlog.append((kind, args))      # the app sets its callbacks in on_accept
            return
        if kind == "data" and self.rcv_shutdown:
            return
        cb = getattr(self, "on_" + kind)
        if cb is not None:
            cb(*args)

    def _accept(self) -> None:
        lst = self.listener
        if self.state == CLOSED and not self._backlog:
            return
        if lst is None or not lst.open:
            self.abort()                            # inet_csk_listen_stop: nobody will accept it
            return
        lst.on_accept(self)
        self._attached = True
        backlog, self._backlog = self._backlog, []
        for kind, args in backlog:
            self._deliver(kind, args)

    # ------------------------------------------------------------------ app API
    def send(self, data: bytes) -> None:
        """write(): queue `data` (PSH on its last segment) and send what the peer's window allows."""
        if self.error is not None:
            raise SockError(self.error, f"{self.stack.node.name}: tcp send on {self!r}")
        if self.state not in (SYN_SENT, SYN_RECV, ESTABLISHED, CLOSE_WAIT) or self.rcv_shutdown:
            raise SockError("EPIPE", f"{self.stack.node.name}: tcp send on {self!r}")
        if not data:
            return
        goal = self.send_mss()
        view = memoryview(bytes(data))
        while view:
            tail = self.queue[-1] if len(self.queue) > self.send_head else None
            if tail is not None and not tail.fin and not tail.syn and len(tail.data) < goal:
                take = goal - len(tail.data)
                tail.data += bytes(view[:take])
            else:
                take = goal
                tail = Skb(self.write_seq, bytes(view[:take]))
                self.queue.append(tail)
            n = min(take, len(view))
            self.write_seq = (self.write_seq + n) & MASK32
            view = view[n:]
        self.queue[-1].psh = True
        if self.state in (ESTABLISHED, CLOSE_WAIT):
            self.push()

    def close(self) -> None:
        """close(): FIN after the queued data; the app reads nothing more (later data gets a RST).
        A connection still in SYN_SENT just goes away."""
        was_open = not self.rcv_shutdown
        self.rcv_shutdown = True
        if self.state == SYN_SENT:
            self.done()
        elif self.state == FIN_WAIT2 and was_open:
            self.arm_state_timer(FIN_TIMEOUT)       # orphaned now: tcp_fin_timeout applies
        else:
            self._send_fin()

    def shutdown(self) -> None:
        """shutdown(SHUT_WR): FIN after the queued data, but keep receiving until the peer's FIN."""
        if self.state != SYN_SENT:
            self._send_fin()

    def _send_fin(self) -> None:
        """tcp_close_state() + tcp_send_fin(): the FIN rides on the last unsent segment if any."""
        st = self.state
        if st in (SYN_RECV, ESTABLISHED):
            self.state = FIN_WAIT1
        elif st == CLOSE_WAIT:
            self.state = LAST_ACK
        else:
            return
        tail = self.queue[-1] if len(self.queue) > self.send_head else None
        if tail is not None and not tail.syn and not tail.fin:
            tail.fin = True
        else:
            self.queue.append(Skb(self.write_seq, fin=True))
        self.write_seq = (self.write_seq + 1) & MASK32
        self.push()

    def abort(self) -> None:
        """close() with SO_LINGER 0 (tcp_disconnect): RST|ACK where the state needs one, then gone."""
        self.rcv_shutdown = True
        if self.state in (ESTABLISHED, CLOSE_WAIT, FIN_WAIT1, FIN_WAIT2, SYN_RECV) or (
                self.state in (CLOSING, LAST_ACK) and self.snd_nxt != self.write_seq):
            self.xmit(RST | ACK, self.snd_nxt)
        self.done()

    # ------------------------------------------------------------------ sizes and windows
    def send_mss(self) -> int:
        mss = min(self.peer_mss, self.advmss, self.pmtu - 40) - (TCPOLEN_TSTAMP_ALIGNED if self.ts_ok else 0)
        if self.max_window > MSS_DEFAULT:
            mss = min(mss, max(self.max_window // 2, 68))
        return max(mss, 8)

    @property
    def raw_window(self) -> int:
        raw = raw_window(self.advmss if self.active else self.advmss - TCPOLEN_TSTAMP_ALIGNED)
        return raw if self.ws_ok else min(raw << WSCALE, 65535)

    @property
    def rcv_wnd(self) -> int:
        return self.raw_window << self.rcv_wscale

    def receive_window(self) -> int:
        """tcp_receive_window(): what is left of the window last advertised."""
        d = (self.rcv_wup + self.rcv_wnd - self.rcv_nxt) & MASK32
        return 0 if d > 0x7FFFFFFF else d

    def tsval(self) -> int:
        return (self.sim.now // MS + self.ts_off) & MASK32

    # ------------------------------------------------------------------ output
    def xmit(self, flags: int, seq: int, payload: bytes = b"") -> None:
        """tcp_transmit_skb(): options, window, ACK bookkeeping, then down to IP."""
        if flags & SYN:
            if flags & ACK:
                mss_eff = self.advmss - (TCPOLEN_TSTAMP_ALIGNED if self.ts_ok and not self.active else 0)
                window = syn_window(mss_eff)
                ts = (self.tsval(), self.ts_recent) if self.ts_ok else None
                opts = syn_options(self.advmss, self.sack_ok, ts, WSCALE if self.ws_ok else None)
            else:
                window = syn_window(self.advmss)
                opts = syn_options(self.advmss, True, (self.tsval(), 0), WSCALE)
        else:
            window = self.raw_window
            opts = ts_option(self.tsval(), self.ts_recent) if self.ts_ok else b""
            if self.dsack is not None or self.sacks:
                opts += sack_option(self, 3 if self.ts_ok else 4)
        ack = self.rcv_nxt if flags & ACK else 0
        if flags & ACK:
            self._ack_sent()
        if payload:
            if self.sim.now - self.lrcvtime < self.ato:
                self.pingpong += 1                  # tcp_event_data_sent: a quick reply
        self.rcv_wup = self.rcv_nxt
        seg = build(self.saddr, self.daddr, self.sport, self.dport, seq, ack, flags, window, opts, payload)
        self.stack.node.ip_send(self.saddr, self.daddr, IPPROTO_TCP, seg, df=True)

    def transmit(self, skb: Skb, arm: bool = True) -> None:
        """tcp_transmit_skb() of a queued segment; arms the RTO if no xmit timer runs, unless `arm`
        is False (push() then arms the tail loss probe, which would replace it at once)."""
        flags = (SYN if skb.syn else 0) | (FIN if skb.fin else 0) | (PSH if skb.psh else 0)
        if not (skb.syn and self.state == SYN_SENT):
            flags |= ACK
        now = self.sim.now
        if skb.sent_at is None:
            skb.sent_at = now
        else:
            skb.retrans = True
        skb.xmit_at = now
        if after(skb.end_seq, self.snd_nxt):
            self.snd_nxt = skb.end_seq
        if arm and self._rto_timer is None:
            self._rto_timer = self.sim.timer(self.rto, self._rto_fire)
            self._xmit_kind = "rto"
        self.xmit(flags, skb.seq, skb.data)

    def push(self) -> None:
        """tcp_write_xmit(): send queued segments in order while they fit in the peer's window."""
        q = self.queue
        first = self.send_head
        if first >= len(q) or self.state in (SYN_SENT, SYN_RECV, CLOSED, TIME_WAIT):
            return                                  # most calls (after each segment in) send nothing
        wnd_end = (self.snd_una + self.snd_wnd) & MASK32
        rto = not (self.sack_ok and self.tlp_on and self.ca_state == CA_OPEN)   # else the probe's
        while self.send_head < len(q):
            skb = q[self.send_head]
            if after(skb.end_seq, wnd_end):
                if self.snd_una == self.snd_nxt and self._probe_timer is None:
                    self._probe_timer = self.sim.timer(self.rto, self._probe_fire)
                break
            self.send_head += 1
            self.transmit(skb, rto)
        if self.send_head != first and self.sack_ok:
            # tcp_write_xmit: a probe per flight, armed once (not an RTO first, then the probe)
            if not rto and not self.ca_state and self.snd_una != self.snd_nxt:
                self.arm_probe(False)               # schedule_loss_probe()'s conditions hold
            elif not self.schedule_loss_probe(False) and not rto and self._rto_timer is None:
                self._rto_timer = self.sim.timer(self.rto, self._rto_fire)
                self._xmit_kind = "rto"

    def mtu_reduced(self, mtu: int) -> None:
        """tcp_v4_mtu_reduced(): the route's path MTU is lowered; if it is now below the one the
        segments were cut for, they are cut smaller and what was too long is resent at once."""
        if self.state == CLOSED:
            return
        now = pmtu.update(self.stack.node, self.daddr, mtu)
        if now is not None and now < self.pmtu:
            self.pmtu = now
            self.simple_retransmit(self.send_mss())

    def send_ack(self) -> None:
        self.xmit(ACK, self.snd_nxt)

    # ------------------------------------------------------------------ endings
    def time_wait(self) -> None:
        """tcp_time_wait(): only the numbers stay, for 60 s, to answer retransmitted FINs."""
        self._cancel_timers()
        self.queue.clear()
        self.send_head = 0
        self.state = TIME_WAIT
        self.arm_state_timer(TIMEWAIT_LEN)

    def reset_received(self) -> None:
        """tcp_reset(): the errno depends on the state the RST found us in."""
        if self.state == SYN_RECV and not self.active:
            self.done()
            return
        err = {SYN_SENT: "ECONNREFUSED", CLOSE_WAIT: "EPIPE"}.get(self.state, "ECONNRESET")
        self.fail(err)

    def fail(self, errno_name: str) -> None:
        """tcp_done() with sk_err set: the app hears about it unless it already closed."""
        wants_error = not self.rcv_shutdown
        self.error = errno_name
        self.done()
        if wants_error:
            self.notify("error", errno_name)

    def done(self) -> None:
        self._cancel_timers()
        if self._state_timer is not None:
            self._state_timer.cancel()
            self._state_timer = None
        self.state = CLOSED
        self.stack.unhash(self)

    def _cancel_timers(self) -> None:
        for name in ("_rto_timer", "_dack_timer", "_probe_timer"):
            t = getattr(self, name)
            if t is not None:
                t.cancel()
                setattr(self, name, None)
        self.ack_pending = False
