"""The replay on the virtual clock: a stand-in for the replaced namespace, and the frames it sends.

Injecting at NODE/IFNAME means frames arrive there as if sent by its veth peer. The peer's own
namespace (the client pod, say) has no sockets for the replayed flows and would answer the
emulated servers' replies with RSTs and port-unreachables, so the replay unplugs it and takes its
place on the wire, as tcpreplay's machine takes the captured client's. The stand-in has the
peer's MAC, answers ARP for the peer's addresses and every replayed client address, hands each
frame it receives to the flow it answers, and keeps the peer's capture point, so the peer's pcap
shows the replayed client as its interface would have seen it.

Frames leave in capture order at their offsets; within a flow a TCP segment that acknowledged
something in the capture waits for the live server to have sent as much (`tcpfollow`), and the
rest of its flow waits behind it, keeping their spacing. A flow whose server never answers the
SYN, resets the connection or refuses it with an ICMP error stops: the rest of its frames are
counted as not sent, with the reason. Each loop after the first moves the client ports (and ICMP
identifiers) up by the loop number, so every loop's flows are new to conntrack and the servers.
"""
from __future__ import annotations

import struct
from collections import deque
from typing import TYPE_CHECKING

from pktemu.net.frame import ETH_HLEN, Frame, int2ip
from pktemu.net.neighbour import ARP_REPLY, ARP_REQUEST, build_arp
from pktemu.net.veth import VETH_DELAY_NS, Veth
from pktemu.replay.frames import ICMP_ERRORS, ICMP_QUERIES, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, quoted
from pktemu.replay.prepare import FlowPlan, Item, Prepared, flow_name
from pktemu.replay.split import ARP_FLOW
from pktemu.replay.stats import FlowSummary, ReplayStats
from pktemu.replay.tcpfollow import Need, TcpLive

if TYPE_CHECKING:
    from pktemu.network import Network
    from pktemu.replay.timing import Timing
    from pktemu.sim import Timer

_H = struct.Struct("!H")
DemuxKey = tuple[int, int, int, int, int]


class StandIn(Veth):
    """The replaced veth end: sends the replayed frames and receives the emulation's answers."""

    def __init__(self, engine: "Engine", replaced: Veth) -> None:
        super().__init__(replaced.node, replaced.name, replaced.mac, replaced.mtu)
        self.engine = engine
        self.replaced = replaced
        self.addresses = list(replaced.addresses)

    def receive(self, frame: Frame) -> None:
        for tap in self.replaced.taps:
            tap.record(self.node.sim.now, frame, "in")
        self.engine.answer(frame)

    def send(self, frame: Frame) -> None:
        """veth_xmit from the stand-in: captured here, received by the injection point shortly after."""
        for tap in self.replaced.taps:
            tap.record(self.node.sim.now, frame, "out")
        peer = self.peer
        if peer is not None:
            self.node.sim.schedule(VETH_DELAY_NS, peer.receive, frame)


class FlowRun:
    """One flow in one loop: its queue of client frames, how late it runs, the live TCP state."""

    __slots__ = ("fp", "loop", "port", "pending", "lag", "live", "answer_at", "timer", "timeout",
                 "waiting", "forced", "ended", "summary", "syn_sent")

    def __init__(self, fp: FlowPlan, loop: int, summary: FlowSummary) -> None:
        self.fp = fp
        self.loop = loop
        self.port = shift_port(fp.client[1], loop)
        self.pending: deque[tuple[Item, int]] = deque()
        self.lag = 0
        self.live = TcpLive()
        self.answer_at = 0
        self.timer: Timer | None = None
        self.timeout: Timer | None = None
        self.waiting = False
        self.forced = False
        self.ended: str | None = None
        self.summary = summary
        self.syn_sent = False


def shift_port(port: int, loop: int) -> int:
    """Loop n's client port (or ICMP identifier): n above the captured one, wrapping within 1-65535."""
    return port if loop == 0 or port == 0 else (port - 1 + loop) % 65535 + 1


class Engine:
    def __init__(self, net: "Network", inject: Veth, prepared: Prepared, timing: "Timing",
                 answer_timeout: int, settle: int, stats: ReplayStats) -> None:
        replaced = inject.peer
        assert replaced is not None
        self.sim = net.sim
        self.prepared = prepared
        self.timing = timing
        self.answer_timeout = answer_timeout
        self.settle = settle
        self.stats = stats
        self.port = StandIn(self, replaced)
        replaced.peer = None
        inject.peer = self.port
        self.port.peer = inject
        self.owned = prepared.owned | {a.addr for a in replaced.addresses}
        self.runs: dict[tuple[int, int], FlowRun] = {}
        self.demux: dict[DemuxKey, FlowRun] = {}
        self.busy: set[FlowRun] = set()         # flows with frames still waiting to be sent
        self.loop = 0
        self.i = 0
        self.base = 0
        self.cursor_done = False
        self.finished = False

    def start(self) -> None:
        if self.prepared.items:
            self.sim.schedule(0, self._tick)
        else:
            self.cursor_done = True
            self._check_done()

    # ------------------------------------------------------------------ sending
    def _tick(self) -> None:
        items = self.prepared.items
        now = self.sim.now
        while True:
            while self.i < len(items):
                it = items[self.i]
                due = self.base + it.offset
                if due > now:
                    self.sim.schedule(due - now, self._tick)
                    return
                self._dispatch(it, due)
                self.i += 1
            self.loop += 1
            if self.loop >= self.timing.loops:
                self.cursor_done = True
                self._check_done()
                return
            self.i = 0
            self.base = now + self.timing.interval

    def _dispatch(self, it: Item, at: int) -> None:
        run = self._run(it.fp, self.loop)
        if run.ended is not None:
            self.stats.not_sent[run.ended] += 1
            return
        run.pending.append((it, at))
        self.busy.add(run)
        self._pump(run)

    def _run(self, fp: FlowPlan, loop: int) -> FlowRun:
        run = self.runs.get((loop, fp.flow.index))
        if run is None:
            c, s = fp.client, fp.server
            sport = shift_port(c[1], loop)
            summary = FlowSummary(loop, flow_name(fp), f"{int2ip(c[0])}:{sport}" if c[1] else int2ip(c[0]),
                                  f"{int2ip(s[0])}:{s[1]}" if s[1] else int2ip(s[0]), fp.records)
            self.stats.flows.append(summary)
            run = self.runs[(loop, fp.flow.index)] = FlowRun(fp, loop, summary)
            dport = sport if fp.proto == IPPROTO_ICMP else s[1]
            self.demux[(fp.proto, c[0], sport, s[0], dport)] = run
        return run

    def _pump(self, run: FlowRun) -> None:
        if run.timer is not None:
            run.timer.cancel()
            run.timer = None
        now = self.sim.now
        while run.pending and run.ended is None:
            it, at = run.pending[0]
            due = at + run.lag
            if now < due:
                run.timer = self.sim.timer(due - now, self._pump, run)
                return
            need = it.need if run.fp.follow_tcp else None
            if need is not None and not run.forced and not run.live.ready(need):
                if not run.waiting:
                    run.waiting = True
                    run.timeout = self.sim.timer(self.answer_timeout, self._timed_out, run, it)
                return
            if need is not None and run.waiting:
                send_at = max(due, run.answer_at + it.react)
                if now < send_at:
                    run.timer = self.sim.timer(send_at - now, self._pump, run)
                    return
            if run.timeout is not None:
                run.timeout.cancel()
                run.timeout = None
            run.waiting = run.forced = False
            run.pending.popleft()
            run.lag = max(run.lag, now - at)
            self._send(run, it, need)
        self.busy.discard(run)
        self._check_done()

    def _send(self, run: FlowRun, it: Item, need: Need | None) -> None:
        f = Frame(it.data)
        if run.loop and it.shift == "port":
            f.set_sport(run.port)
        elif run.loop and it.shift == "icmp-id":
            f.set_icmp_id(run.port)
        if need is not None:
            run.live.rewrite(f.data, it.pkt, need)
        if it.pkt.proto == IPPROTO_TCP and it.pkt.flags & 0x12 == 0x02:
            run.syn_sent = True
        f.note(f"replay: record {it.pkt.number}" + (f", loop {run.loop + 1}" if run.loop else ""))
        self.stats.sent(self.sim.now, len(f.data))
        run.summary.sent += 1
        self.port.send(f)

    def _timed_out(self, run: FlowRun, it: Item) -> None:
        run.timeout = None
        if not run.pending or run.pending[0][0] is not it or run.ended is not None:
            return
        if run.live.isn is None:
            self._end(run, "no answer from the emulated server (no SYN-ACK)")
            return
        run.forced = True
        self._pump(run)

    def _end(self, run: FlowRun, reason: str) -> None:
        if run.ended is not None:
            return
        run.ended = reason
        run.summary.outcome = reason
        for t in (run.timer, run.timeout):
            if t is not None:
                t.cancel()
        run.timer = run.timeout = None
        self.stats.not_sent[reason] += len(run.pending)
        run.pending.clear()
        self.busy.discard(run)
        self._check_done()

    def _check_done(self) -> None:
        if self.finished or not self.cursor_done or self.busy:
            return
        self.finished = True
        self.sim.schedule(self.settle, self._stop)

    def _stop(self) -> None:
        self.sim.stopped = True

    # ------------------------------------------------------------------ receiving
    def answer(self, frame: Frame) -> None:
        """A frame the emulation sent to the stand-in: an ARP request to answer, or a flow's answer."""
        d = frame.data
        if len(d) < ETH_HLEN + 20 or d[6:12] == self.port.mac:
            return                  # too short, or our own frame reflected by a hairpin bridge port
        self.stats.answers += 1
        et = _H.unpack_from(d, 12)[0]
        if et == 0x0806 and len(d) >= ETH_HLEN + 28:
            self._arp(frame)
            return
        if et != 0x0800:
            return
        proto, src, dst = frame.proto, frame.saddr, frame.daddr
        l4 = frame.l4off
        end = min(len(d), ETH_HLEN + frame.ip_len)
        if frame.is_fragment and _H.unpack_from(d, ETH_HLEN + 6)[0] & 0x1FFF:
            return
        if proto in (IPPROTO_TCP, IPPROTO_UDP) and end - l4 >= 8:
            run = self.demux.get((proto, dst, frame.dport, src, frame.sport))
            if run is not None:
                run.summary.answers += 1
                if proto == IPPROTO_TCP and run.fp.follow_tcp and end - l4 >= 20:
                    self._tcp_answer(run, d, l4, end)
            return
        if proto == IPPROTO_ICMP and end - l4 >= 8:
            itype = d[l4]
            if itype in ICMP_QUERIES:
                ident = _H.unpack_from(d, l4 + 4)[0]
                run = self.demux.get((IPPROTO_ICMP, dst, ident, src, ident))
                if run is not None:
                    run.summary.answers += 1
            elif itype in ICMP_ERRORS and end - l4 >= 28:
                self._icmp_error(d, l4, end, itype, d[l4 + 1])
            return
        run = self.demux.get((proto, dst, 0, src, 0))
        if run is not None:
            run.summary.answers += 1

    def _tcp_answer(self, run: FlowRun, d: bytearray, l4: int, end: int) -> None:
        run.live.answer(d, l4, end)
        run.answer_at = self.sim.now
        if run.live.reset and (run.pending or self._more_to_come(run)):
            self._end(run, "connection reset by the emulated server")
            return
        self._pump(run)

    def _more_to_come(self, run: FlowRun) -> bool:
        return run.loop == self.loop and not self.cursor_done and self.i <= run.fp.last

    def _icmp_error(self, d: bytearray, l4: int, end: int, itype: int, code: int) -> None:
        q = quoted(d, l4 + 8, end)
        if q is None:
            return
        proto, isrc, isport, idst, idport = q
        run = self.demux.get((proto, isrc, isport, idst, idport))
        if run is None:
            return
        run.summary.answers += 1
        fatal = itype in (11, 12) or (itype == 3 and code != 4)
        if proto == IPPROTO_TCP and run.fp.follow_tcp and run.syn_sent and run.live.isn is None and fatal:
            self._end(run, f"connection refused by an ICMP error (type {itype} code {code})")

    def _arp(self, frame: Frame) -> None:
        d = frame.data
        a = ETH_HLEN
        op = _H.unpack_from(d, a + 6)[0]
        sha = bytes(d[a + 8:a + 14])
        spa = int.from_bytes(d[a + 14:a + 18], "big")
        tpa = int.from_bytes(d[a + 24:a + 28], "big")
        if op == ARP_REQUEST and tpa in self.owned and spa != tpa and sha != self.port.mac:
            self.stats.arp_replies += 1
            reply = build_arp(ARP_REPLY, self.port.mac, sha, self.port.mac, tpa, sha, spa)
            reply.note(f"replay: ARP reply for {int2ip(tpa)} (the replay stands in for it)")
            self.port.send(reply)
            return
        run = self.demux.get((ARP_FLOW, tpa, 0, spa, 0))
        if run is not None:
            run.summary.answers += 1
