"""Recording one packet and its reply through a live Network, for `pktemu trace`.

The recorder plugs into the places a namespace already exposes (its netfilter `hook()`, its
devices' capture taps, its drop sink, its protocol handlers), like `nft monitor trace` hangs off
the packet path without changing it. The first IPv4 packet the origin sends becomes the
request; the first new packet anywhere that answers one of the request's forms (the inverted
tuple after any NAT, or an ICMP error quoting it) becomes the reply. Copies a bridge makes keep
their trace. Recording stops once the reply reaches the origin's stack or is dropped.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from pktemu.explain.ctinfo import ct_entry, ct_state
from pktemu.explain.kube import rule_target
from pktemu.explain.model import NFT_KEYS, PROTO_NAMES, Event, PacketView, RuleStep, TracedPacket
from pktemu.netfilter.core import NF_ACCEPT, NF_DROP
from pktemu.netfilter.hooks import Netfilter

if TYPE_CHECKING:
    from pktemu.net.frame import Frame
    from pktemu.net.node import Node
    from pktemu.network import Network

Rcv = Callable[["Frame"], None]
_VERDICTS = {NF_ACCEPT: "accept", NF_DROP: "drop"}
_KEY, _CURSOR = "trace", "trace_notes"       # frame.meta keys: the TracedPacket, notes already shown


class Recorder:
    """Follows the request sent from `origin` and its reply; see the module docstring."""

    def __init__(self, net: "Network", origin: str) -> None:
        self.net = net
        self.origin = origin
        self.request: TracedPacket | None = None
        self.reply: TracedPacket | None = None
        self.done = False
        self.in_hook = 0                 # hook depth: a drop reported inside a hook leaves it its notes
        self._forms: set[tuple[str, str, str, int | None, int | None]] = set()
        self._ids = net.sim.rng("trace-id")
        self._undo: list[Callable[[], None]] = []
        for node in net.nodes.values():
            self._install(node)

    # ------------------------------------------------------------------ plumbing
    def _install(self, node: "Node") -> None:
        nf, traced = node.nf, _TracingHooks(node.nf, self, node)
        node.nf = traced
        taps = [(dev, _TraceTap(self, node, dev.name)) for dev in node.devices.values()]
        for dev, tap in taps:
            dev.taps.insert(0, tap)          # before the capture taps, which consume the notes
        sink, protocols = node.drop_sink, dict(node.protocols)

        def undo() -> None:
            if node.nf is traced:
                node.nf = nf
            for dev, tap in taps:
                if tap in dev.taps:
                    dev.taps.remove(tap)
            node.drop_sink = sink
            for proto, entry in protocols.items():
                if proto in node.protocols:
                    node.protocols[proto] = entry
        self._undo.append(undo)

        def drop_sink(name: str, where: str, reason: str, frame: "Frame") -> None:
            if sink is not None:
                sink(name, where, reason, frame)
            self.dropped(node, where, reason, frame)

        node.drop_sink = drop_sink
        for proto, (rcv, err) in list(node.protocols.items()):
            node.protocols[proto] = (self._delivery(node, proto, rcv), err)

    def uninstall(self) -> None:
        """Give every node back its own netfilter, taps, drop sink and protocol handlers (a
        live `pktemu.Network` goes on after the trace)."""
        self.done = True
        while self._undo:
            self._undo.pop()()

    def _delivery(self, node: "Node", proto: int, rcv: Rcv) -> Rcv:
        def deliver(frame: "Frame") -> None:
            tp = self.packet_of(frame, node)
            if tp is not None:
                tp.result = self._event(tp, "deliver", node, frame, where=PROTO_NAMES.get(proto, str(proto)))
            rcv(frame)
            if tp is not None and tp is self.reply and node.name == self.origin:
                self._stop()
        return deliver

    # ------------------------------------------------------------------ which packet is which
    def packet_of(self, frame: "Frame", node: "Node") -> TracedPacket | None:
        """The traced packet `frame` belongs to, labelling it on first sight (None: not traced)."""
        tp: TracedPacket | None = frame.meta.get(_KEY)
        if tp is not None or self.done or not frame.is_ipv4:
            return tp
        if self.request is None:
            if node.name != self.origin:
                return None
            tp = self.request = TracedPacket("request", f"{self._ids.getrandbits(32):08x}")
        elif self.reply is None and self._answers(PacketView.of(frame)):
            tp = self.reply = TracedPacket("reply", f"{self._ids.getrandbits(32):08x}")
        else:
            return None
        frame.meta[_KEY] = tp
        frame.meta[_CURSOR] = (frame.notes, 0)
        return tp

    def _answers(self, v: PacketView | None) -> bool:
        if v is None:
            return False
        if (v.dst, v.src, v.proto, v.dport, v.sport) in self._forms:
            return True
        return v.quoted is not None and any(v.quoted == _flow(k) for k in self._forms)

    def saw(self, tp: TracedPacket, v: PacketView | None) -> None:
        if tp is self.request and v is not None:
            self._forms.add(v.key)

    # ------------------------------------------------------------------ events
    def _event(self, tp: TracedPacket, kind: str, node: "Node", frame: "Frame", **kw: Any) -> Event:
        v = PacketView.of(frame)
        ev = Event(kind, self.net.sim.now, node.name, v, notes=self.new_notes(frame), **kw)
        tp.events.append(ev)
        self.saw(tp, v)
        return ev

    @staticmethod
    def new_notes(frame: "Frame") -> list[str]:
        """The notes added since the last look. A capture tap replaces the list with an empty one
        (then all of it is new); a copy of the frame has a copy of the list (then the same notes
        up to the cursor, the same objects, were seen already)."""
        seen, start = frame.meta.get(_CURSOR, (frame.notes, 0))
        notes = frame.notes
        if seen is not notes and (len(notes) < start
                                  or any(a is not b for a, b in zip(seen[:start], notes, strict=False))):
            start = 0
        frame.meta[_CURSOR] = (notes, len(notes))
        return list(notes[start:])

    def tapped(self, node: "Node", dev: str, frame: "Frame", direction: str) -> None:
        tp = self.packet_of(frame, node)
        if tp is not None:
            self._event(tp, "device", node, frame, dev=dev, direction=direction)

    def dropped(self, node: "Node", where: str, reason: str, frame: "Frame") -> None:
        tp: TracedPacket | None = frame.meta.get(_KEY)
        if tp is None:
            return
        if self.in_hook:
            ev = Event("drop", self.net.sim.now, node.name, PacketView.of(frame), where=where, reason=reason)
            tp.events.append(ev)
            tp.result = ev
        else:
            tp.result = self._event(tp, "drop", node, frame, where=where, reason=reason)
        if tp is self.reply:
            self._stop()

    def _stop(self) -> None:
        self.done = True
        self.net.sim.stopped = True


def _flow(key: tuple[str, str, str, int | None, int | None]) -> str:
    src, dst, _proto, sport, dport = key
    return f"{src} > {dst}" if sport is None else f"{src}:{sport} > {dst}:{dport}"


class _TraceTap:
    """A capture tap that reports traced frames to the recorder instead of writing them."""

    __slots__ = ("rec", "node", "dev")

    def __init__(self, rec: Recorder, node: "Node", dev: str) -> None:
        self.rec, self.node, self.dev = rec, node, dev

    def record(self, ts_ns: int, frame: "Frame", direction: str) -> None:
        self.rec.tapped(self.node, self.dev, frame, direction)


class _TracingHooks:
    """The node's netfilter with every rule evaluation of traced packets recorded."""

    active = True           # every hook is called, a namespace without rules' too

    def __init__(self, inner: Any, rec: Recorder, node: "Node") -> None:
        self.inner = inner
        self.rec = rec
        self.node = node

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def hook(self, hook: str, frame: "Frame", in_dev: str | None, out_dev: str | None,
             physin: str | None = None, physout: str | None = None) -> int:
        tp = self.rec.packet_of(frame, self.node)
        inner = self.inner
        if (tp is None or not isinstance(inner, Netfilter) or not frame.is_ipv4
                or (inner.ruleset is None and not inner.entries(hook))):
            return int(inner.hook(hook, frame, in_dev, out_dev, physin, physout))
        now, view = self.rec.net.sim.now, PacketView.of(frame)
        before = self.rec.new_notes(frame)           # routing/bridge/neighbour decisions since the last event
        if before:
            tp.events.append(Event("path", now, self.node.name, view, notes=before))
        ev = Event("hook", now, self.node.name, view, hook=hook, iif=in_dev, oif=out_dev, physin=physin,
                   physout=physout)
        tp.events.append(ev)                         # before the hook runs, so a drop it reports follows
        trace: list[dict[str, Any]] = []
        self.rec.in_hook += 1
        try:
            verdict = inner.hook(hook, frame, in_dev, out_dev, physin, physout, trace=trace)
        finally:
            self.rec.in_hook -= 1
        ev.rules = [RuleStep(t["table"], t["chain"], t["rulenum"], t["rule"], t["verdict"],
                             t.get("target") or (rule_target(t["rule"]) if t["rulenum"] is not None else ""),
                             t.get("priority"), {k: t[k] for k in NFT_KEYS if k in t} or None)
                    for t in trace]
        _queued_after_rule(ev.rules)
        ev.verdict = _VERDICTS.get(verdict, "stolen")
        ev.notes = self.rec.new_notes(frame)
        after = PacketView.of(frame)
        ev.after = after if after != ev.packet else None
        if frame.ct is not None or frame.ctinfo is not None:
            ev.ct = ct_state(frame.ct, frame.ctinfo)
            ev.ct_entry = ct_entry(frame.ct, self.rec.net.sim.now)
        self.rec.saw(tp, after)
        return int(verdict)


def _queued_after_rule(steps: list[RuleStep]) -> None:
    """An NFQUEUE handler answers while its rule runs, so its step is recorded first; show the
    rule that queued the packet, then the handler's verdict."""
    i = 0
    while i < len(steps) - 1:
        if steps[i].table == "nfqueue" and steps[i + 1].target == "NFQUEUE":
            steps[i], steps[i + 1] = steps[i + 1], steps[i]
            i += 1
        i += 1


WAIT_NS = 3_500_000_000     # longest wait for a reply: ARP gives up after 3 s and answers host-unreachable


def trace_packet(net: "Network", origin: str, daddr: str, dport: int, proto: str, sport: int | None = None,
                 wait_ns: int = WAIT_NS) -> Recorder:
    """Send one TCP SYN or UDP datagram from `origin`'s own stack and record it and its reply.

    The clock runs until the reply reaches `origin` or `wait_ns` have passed, whatever else stops
    the simulator meanwhile (a scenario's end); the recorder is uninstalled before returning."""
    from pktemu.apps.dnswire import build_query
    from pktemu.errors import PktemuError
    from pktemu.net.frame import ip2int

    node = net.nodes.get(origin)
    if node is None:
        raise PktemuError(f"trace: no pod or node {origin!r} (have: {', '.join(net.nodes)})")
    sim = net.sim
    rec = Recorder(net, origin)
    try:
        dst = ip2int(daddr)
        if proto == "tcp":
            node.tcp.connect(dst, dport, sport=sport)
        else:
            payload = build_query(0x7472, "pktemu-trace.invalid") if dport == 53 else b"pktemu trace\n"
            node.udp.bind(sport or 0, None).sendto(payload, dst, dport)
        end = sim.now + wait_ns
        while not rec.done and sim.now < end:
            sim.stopped = False
            sim.run(until=end)
    finally:
        sim.stopped = False
        rec.uninstall()
    return rec
