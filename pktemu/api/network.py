"""`pktemu.Network`: an emulated cluster driven from Python the way Scapy drives a real host.

The engine (`pktemu.network.Network`) stays the byte-level path; this class is its Scapy face:
packets enter through a node's own output path (`send`) or a device's receive path (`sendp`),
every capture point records raw bytes as `pktemu run`'s taps do, and `sniff`/`sr` dissect them
to Scapy only when asked. Time is the virtual clock, in seconds, in the pcaps' epoch.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable

import yaml
from pktemu import interrupt, topo
from pktemu.api import clock
from pktemu.api.commands import Commands
from pktemu.api.output import DiskCapture
from pktemu.api.packets import ethernet_frame, expand, ip_datagram
from pktemu.api.state import KernelState
from pktemu.api.taps import INBOUND, Recorder, dissect, stamp
from pktemu.errors import PktemuError, excerpt
from pktemu.io.pcap import LINKTYPE_ETHERNET
from pktemu.io.run import server_results
from pktemu.traffic import schedule_traffic, unfinished
from pktemu.io.topofile import load_topology
from pktemu.io.topofile_scenarios import scenario_end
from pktemu.net import ipv4
from pktemu.net.device import NetDevice
from pktemu.net.frame import ETH_HLEN
from pktemu.net.node import Node
from pktemu.network import Network as Engine
from pktemu.sim import MS, SECOND
from pktemu.units import SEED_MAX

if TYPE_CHECKING:
    from scapy.packet import Packet
    from scapy.plist import PacketList, SndRcvList

    from pktemu.api.trace import Trace

SLICE_NS = 100 * MS        # a scenario plays in slices of virtual time: progress, signals
MAX_SEED = SEED_MAX


class Network(KernelState, Commands):
    """An emulated network on a virtual clock, spoken to in Scapy packets (docs/python-api.md)."""

    def __init__(self, t: topo.Topology, scenario: str | None = None, seed: int | None = None, *,
                 capture: bool | str | os.PathLike[str] | None = None, keep_frames: bool = True,
                 traffic: bool = True, engine: Engine | None = None) -> None:
        sc = t.scenario(scenario)
        #: the engine underneath, for what this class does not wrap (`engine`: one already built
        #: from the same topology, scenario and seed, and not yet run)
        self.engine = engine if engine is not None else Engine(t, sc, seed)
        self.scenario = sc
        self._disk: DiskCapture | None = None
        if capture is not None and capture is not False:
            # first on every device: its taps take the frames' explain notes (all.pcapng's comments)
            root = None if capture is True else os.fspath(capture)
            self._disk = DiskCapture(self.engine, root, sc.name if sc is not None else "network")
        self._recorders: dict[str, Recorder] = {}
        self._points: dict[str, str] = {}
        self._node_recorders: dict[str, list[Recorder]] = {}
        #: what counts each point's frames: its recorder, or while that is off the device (it would
        #: only count: no frames kept, a disk capture counting them already) the disk capture's tap
        self._counters: dict[str, Any] = {}
        #: recorders kept off their device until something needs them there (`sr`, `write`)
        self._off: dict[str, tuple[Recorder, Any]] = {}
        disk_taps = self._disk.out.caps.taps if self._disk is not None and not keep_frames else {}
        for cname, dev in self.engine.captures():
            rec = Recorder(cname, keep_frames, consume=self._disk is None,
                           point=f"{dev.node.name}/{dev.name}",
                           raw=getattr(dev, "linktype", LINKTYPE_ETHERNET) != LINKTYPE_ETHERNET)
            if cname in disk_taps:
                self._off[cname] = (rec, dev)
                self._counters[cname] = disk_taps[cname]
            else:
                # before a disk capture's tap, which takes the notes its all.pcapng comment is made of
                dev.taps.insert(0, rec)
                self._counters[cname] = rec
            self._recorders[cname] = rec
            self._points[cname] = self._points[f"{dev.node.name}/{dev.name}"] = cname
            self._node_recorders.setdefault(dev.node.name, []).append(rec)
        # traffic=False: the scenario's overrides and timeline without its clients (`pktemu trace`)
        self._runs = schedule_traffic(self.engine, sc) if sc is not None and traffic else []

    @classmethod
    def load(cls, source: str | os.PathLike[str] | dict[str, Any], scenario: str | None = None,
             seed: int | None = None, *, capture: bool | str | os.PathLike[str] | None = None,
             keep_frames: bool = True) -> "Network":
        """A network from a topology file, a YAML string or a dict, with `scenario` applied.

        A string is YAML when it spans lines or starts with "{", a file name otherwise; relative
        paths inside a string or dict (rules files, manifests) are relative to the current directory.
        `capture` (an output directory, or True for one named at `write`) writes the captures to
        disk from the start, for `write`; `keep_frames=False` keeps none in memory (no `sniff`).
        """
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)
                                 or not 0 <= seed <= MAX_SEED):
            raise PktemuError(f"Network.load: seed={excerpt(seed)} is not a seed (an integer, 0 to 2**64-1, "
                              "as a topology's seed:)")
        if isinstance(source, dict):
            try:
                text = yaml.safe_dump(source, sort_keys=False)
            except yaml.YAMLError as e:
                raise PktemuError(f"<dict>: cannot be written as YAML: {e}") from None
            t = load_topology("<dict>", text)
        elif isinstance(source, str) and ("\n" in source or source.lstrip().startswith("{")):
            t = load_topology("<string>", source)
        elif isinstance(source, (str, os.PathLike)):
            t = load_topology(os.fspath(source))
        else:
            raise PktemuError(f"Network.load: expected a file name, a YAML string or a dict, got "
                              f"{excerpt(source)}")
        return cls(t, scenario, seed, capture=capture, keep_frames=keep_frames)

    # ------------------------------------------------------------------ the clock
    @property
    def now(self) -> float:
        """Virtual seconds since the start (a pcap timestamp is this plus the pcaps' epoch)."""
        return self.engine.sim.now / SECOND

    def run(self, until: float | None = None, duration: float | None = None,
            progress: Callable[[float, float], None] | None = None) -> int:
        """Advance the clock to `until` or by `duration` seconds; with neither, play the scenario out
        as `pktemu run` does, calling `progress(now, end)` (seconds) every 0.1 s of virtual time.
        Returns the number of events run."""
        sim = self.engine.sim
        if progress is not None and not callable(progress):
            raise PktemuError(f"run: progress={excerpt(progress)} is not callable (a function of now and "
                              "end, in seconds)")
        if until is not None and duration is not None:
            raise PktemuError("run: give until or duration, not both")
        if until is None and duration is None:
            if self.scenario is None:
                raise PktemuError("run: without a scenario, give until= or duration= (seconds)")
            return self._play(scenario_end(self.scenario), progress)
        if until is not None:
            return self._advance(clock.until("run", "until", until, sim.now))
        return self._advance(clock.later("run", "duration", duration, sim.now))

    def _play(self, limit: int, progress: Callable[[float, float], None] | None) -> int:
        """Until the clients are done and settled, nothing is left to happen or `limit` ns, in slices
        (a signal is acted on between two)."""
        sim = self.engine.sim
        events = 0
        sim.stopped = False
        try:
            while not sim.stopped and sim.now < limit and sim.pending:
                events += sim.run(until=min(limit, sim.now + SLICE_NS))
                interrupt.check()
                if progress is not None:
                    progress(sim.now / SECOND, limit / SECOND)
        finally:
            sim.stopped = False
        return events

    def _advance(self, target: int, done: Callable[[], bool] = lambda: False) -> int:
        """Run events up to `target` ns, stopping early once `done()`; a scenario's stop is no stop here."""
        sim = self.engine.sim
        events = 0
        try:
            while sim.now < target and not done():
                sim.stopped = False
                events += sim.run(until=target)
        finally:
            sim.stopped = False
        return events

    # ------------------------------------------------------------------ output
    def write(self, out: str | os.PathLike[str] | None = None, *, files: dict[str, str] | None = None) -> str:
        """Write `out/<scenario>/` as `pktemu run --out out` does (pcaps, all.pcapng with its
        comments, state files, and `files`, name -> text, of your own), atomically; `out` defaults
        to `capture`'s. Returns its path. Needs `capture=`; captures stop here (once per network)."""
        if self._disk is None:
            raise PktemuError("write: load the network with capture=DIR (or True): the comments of "
                              "all.pcapng are computed as frames pass")
        written = self._disk.write(self.engine, self.scenario, self._runs, out, files)
        self._put_on(list(self._off))           # the disk capture's taps are gone: count on
        return written

    @property
    def output(self) -> str | None:
        """Where `write` wrote, or else will write by default; None without `capture=DIR`, or once
        `close` removed the unwritten output."""
        return self._disk.path if self._disk is not None else None

    @property
    def written(self) -> bool:
        """`write` has been done (captures are closed either way once `close` is called)."""
        return self._disk is not None and self._disk.written is not None

    def close(self) -> None:
        """Remove an unwritten output directory (also done when the network is garbage-collected)."""
        if self._disk is not None:
            self._disk.close()
            self._put_on(list(self._off))

    def __enter__(self) -> "Network":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def frames(self) -> dict[str, int]:
        """Frames seen so far by each capture point, in path order (`pktemu run`'s table)."""
        return {name: counter.count for name, counter in self._counters.items()}

    def _put_on(self, names: list[str]) -> None:
        """Recorders kept off their devices go on, counting from where the disk capture's tap is."""
        for name in names:
            rec, dev = self._off.pop(name)
            rec.count = self._counters[name].count
            dev.taps.insert(0, rec)
            self._counters[name] = rec

    # ------------------------------------------------------------------ sending
    def send(self, where: str, pkts: Any) -> None:
        """Scapy's `send` from pod or node `where`: its routing, OUTPUT, POSTROUTING and ARP apply."""
        node = self._node("send", where)
        for p in expand("send", pkts):
            _q, frame = ip_datagram("send", node, p)
            ipv4.ip_local_out(node, frame)

    def sendp(self, point: str, pkts: Any) -> None:
        """Scapy's `sendp`: each Ethernet frame arrives at `node/ifname` as if its peer sent it."""
        dev = self._device("sendp", point)
        for p in expand("sendp", pkts):
            dev.receive(ethernet_frame("sendp", p))

    def sr(self, where: str, pkts: Any, timeout: float = 1) -> tuple[SndRcvList, PacketList]:
        """Scapy's `sr`: send from `where`, collect answers (`answer.answers(query)`) received by
        its interfaces until all are answered or `timeout` virtual seconds have passed."""
        from scapy.layers.inet import IP
        from scapy.plist import PacketList, QueryAnswer, SndRcvList

        node = self._node("sr", where)
        end = clock.later("sr", "timeout", timeout, self.engine.sim.now)
        prepared = [ip_datagram("sr", node, p) for p in expand("sr", pkts)]
        pending = [q for q, _f in prepared]
        answered: list[QueryAnswer] = []

        def observe(rec: Recorder, ts_ns: int, data: bytes) -> None:
            if not pending or len(data) < ETH_HLEN + 20 or data[12:14] != b"\x08\x00":
                return
            ans = IP(data[ETH_HLEN:])
            for q in pending:
                if ans.answers(q):
                    ans.time, ans.sniffed_on, ans.direction = stamp(ts_ns), rec.name, INBOUND
                    answered.append(QueryAnswer(q, ans))
                    pending.remove(q)
                    if not pending:
                        self.engine.sim.stopped = True     # Scapy returns once all are answered
                    break

        recs = self._node_recorders.get(node.name, [])
        self._put_on([rec.name for rec in recs if rec.name in self._off])
        for rec in recs:
            rec.observers.append(observe)
        try:
            start = self.engine.sim.now
            for q, frame in prepared:
                q.sent_time = q.time = stamp(start)
                ipv4.ip_local_out(node, frame)
            self._advance(end, lambda: not pending)
        finally:
            for rec in recs:
                rec.observers.remove(observe)
        return SndRcvList(answered), PacketList(pending, "Unanswered")

    def sr1(self, where: str, pkts: Any, timeout: float = 1) -> Packet | None:
        """Scapy's `sr1`: the first answer, or None after `timeout` virtual seconds."""
        ans, _unans = self.sr(where, pkts, timeout)
        return ans[0][1] if ans else None

    # ------------------------------------------------------------------ capture
    def captures(self) -> list[str]:
        """The capture point names, as `pktemu run` names its pcaps (`client-eth0`), in path order."""
        return list(self._recorders)

    def sniff(self, point: str, lfilter: Callable[[Packet], bool] | None = None) -> PacketList:
        """What capture point `point` (`client-eth0` or `client/eth0`) saw so far, as Scapy packets."""
        from scapy.plist import PacketList

        name = self._point("sniff", point)
        if not self._recorders[name].keep:
            raise PktemuError("sniff: the network was loaded with keep_frames=False")
        recorder = self._recorders[name]
        pkts = [dissect(name, *rec, raw=recorder.raw) for rec in recorder.records]
        if lfilter is not None:
            pkts = [p for p in pkts if lfilter(p)]
        return PacketList(pkts, name)

    @property
    def results(self) -> list[dict[str, Any]]:
        """What each of the scenario's client applications saw (`pktemu run`'s client-result.json)."""
        return [r.result for r in self._runs]

    @property
    def unfinished(self) -> list[str]:
        """The scenario's clients still running (`traffic[0]`, `steps[1].traffic[0]`): at the end of
        a run, those its end cut off, whose `results` are what they had seen by then."""
        return unfinished(self.scenario, self._runs) if self.scenario is not None else []

    def warnings(self) -> list[str]:
        """What `pktemu run` warns of once the scenario has run (one `pktemu: warning:` line each):
        the timeline commands that failed as the real tool would, and the clients its end cut off."""
        lines = [f"pktemu: warning: {rec.where}: {rec.command} at {rec.t / 1e9:.3f} s failed: {rec.output}"
                 for rec in self.engine.actions if rec.failed]
        if self.scenario is not None:
            where = f"{self.engine.topology.path}: scenarios.{self.scenario.name}"
            lines += [f"pktemu: warning: {where}.{item}: the client had not finished when the run ended at "
                      f"{self.now:.3f} s: its result is what it had seen by then" for item in self.unfinished]
        return lines

    @property
    def server_results(self) -> dict[str, list[dict[str, Any]]]:
        """What each app of the topology's pods and nodes (servers, not the scenario's traffic) saw so
        far, by pod: `{pod: [{"app": kind, "result": {...}}]}` (`pktemu run`'s server-result.json)."""
        return server_results(self.engine, self._runs)

    def start_app(self, where: str, fn: Callable[..., Any] | str, **kwargs: Any) -> Any:
        """Start a Python app `fn(api, **kwargs)` in pod or node `where` now; returns a handle with
        `.result` and `.done` (docs/python-api.md, "Python pod applications")."""
        from pktemu.apps.python import start_app
        return start_app(self._node("start_app", where), fn, kwargs,
                         f"{self.engine.topology.path}: start_app")

    # ------------------------------------------------------------------ netfilter hooks
    def hook(self, where: str, hook: str, priority: int = 0) -> Callable[[Any], Any]:
        """Decorator: run `fn(ip_packet)` at `hook` of `where`, among its tables by `priority`
        (docs/python-api.md, "Netfilter hooks")."""
        from pktemu.api.hooks import add_hook
        node = self._node("hook", where)

        def register(fn: Any) -> Any:
            add_hook(node, hook, priority, fn)
            return fn
        return register

    def nfqueue(self, where: str, num: int, handler: Callable[[Any], Any] | None = None) -> Any:
        """Bind `handler(pkt)` to NFQUEUE queue `num` of `where` (a decorator without `handler`)."""
        from pktemu.api.hooks import add_queue
        node = self._node("nfqueue", where)
        if handler is not None:
            add_queue(node, num, handler)
            return handler

        def register(fn: Any) -> Any:
            add_queue(node, num, fn)
            return fn
        return register

    # ------------------------------------------------------------------ tracing
    def trace(self, where: str, dst: str, proto: str = "tcp", sport: int | None = None, *,
              dport: int | None = None, timeout: float = 3.5) -> "Trace":
        """`pktemu trace` through this network: send one TCP SYN (UDP datagram, DNS query to port
        53) from `where` to `dst` (`"10.3.241.152:80"`, `"IP:PORT/udp"`, or an address and
        `dport=`), run the clock until its reply is back or `timeout` virtual seconds have passed,
        and return the path as `pktemu trace --json` prints it: a `dict` whose `str()` is the tree
        (docs/python-api.md, "Tracing")."""
        from pktemu.api.trace import run_trace
        node = self._node("trace", where)
        sc = self.scenario.name if self.scenario is not None else None
        wait = clock.later("trace", "timeout", timeout, self.engine.sim.now) - self.engine.sim.now
        return run_trace(self.engine, sc, node.name, where, dst, proto, sport, dport, wait)

    # ------------------------------------------------------------------ names
    def _node(self, what: str, where: str) -> Node:
        """A topology namespace by its name, or a Kubernetes Pod by its `namespace/name`."""
        from pktemu.api.names import find_node
        return find_node(self.engine, what, where)

    def _point(self, what: str, point: str) -> str:
        name = self._points.get(point) if isinstance(point, str) else None
        if name is None and isinstance(point, str) and "/" in point:
            from pktemu.api.names import pod_point
            pod = pod_point(self.engine, point)        # a Pod's `namespace/name[/ifname]`
            name = self._points.get(pod) if pod is not None else None
        if name is None:
            have = ", ".join(self._recorders)
            raise PktemuError(f"{what}: no capture point {excerpt(point)} (have: {have})")
        return name

    def _device(self, what: str, point: str) -> NetDevice:
        return self.engine.device(self.engine.topology.capture_points[self._point(what, point)])

