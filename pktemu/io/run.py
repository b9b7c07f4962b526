"""Run one scenario of a topology and write its output directory, atomically.

Layout (the kernel oracle's, so `oracle_summary.py` reads it as is):
`OUT/<scenario>/pcap/<node>-<ifname>.pcap`, `all.pcapng`, `captures.tsv`, `scenario.json`,
`client-result.json`, `conntrack-<node>.txt`, `iptables-save-<node>.txt`, `drops.txt`.
Everything is written into a hidden temporary directory next to the final one and renamed into
place at the end, so an interrupted run leaves the previous output (or nothing), never half a run.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Callable

from pktemu import topo
from pktemu.io.capture import CaptureSet
from pktemu.netfilter.xtables import save_rules
from pktemu.net.device import NetDevice
from pktemu.network import Drop, Network
from pktemu.sim import MS

SLICE_NS = 100 * MS        # progress is reported once per slice of virtual time


@dataclass
class ScenarioOutcome:
    name: str
    out_dir: str
    counts: dict[str, int]
    drops: list[Drop]
    results: list[dict[str, Any]]
    virtual_ns: int
    events: int


@dataclass
class Output:
    """A run's output directory while it is being written."""
    tmp: str
    final: str
    caps: CaptureSet
    captured: list[tuple[str, NetDevice]]


@contextmanager
def scenario_output(out_root: str, name: str, net: Network) -> Iterator[Output]:
    """A hidden temporary directory with every capture point of `net` attached.

    The block runs the network, closes `caps` and writes its state files; on normal exit the
    directory is renamed to `out_root/name`, on any exception (Ctrl-C included) it is removed.
    """
    os.makedirs(out_root, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=out_root)
    caps: CaptureSet | None = None
    try:
        os.makedirs(os.path.join(tmp, "pcap"))
        caps = CaptureSet(os.path.join(tmp, "pcap"), os.path.join(tmp, "all.pcapng"))
        captured = net.captures()
        for cname, dev in captured:
            caps.attach(cname, dev)
        out = Output(tmp, os.path.join(out_root, name), caps, captured)
        yield out
        replace_dir(tmp, out.final)
    except BaseException:
        if caps is not None:
            caps.abort()
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def run_scenario(t: topo.Topology, name: str, out_root: str, seed: int | None = None,
                 progress: Callable[[int, int], None] | None = None) -> ScenarioOutcome:
    sc = t.scenarios[name]
    net = Network(t, sc, seed)
    with scenario_output(out_root, name, net) as out:
        runs = _schedule_traffic(net, sc)
        limit = max((tr.at for tr in sc.traffic), default=0) + sc.duration
        events = 0
        while not net.sim.stopped and net.sim.now < limit and net.sim.pending:
            events += net.sim.run(until=min(limit, net.sim.now + SLICE_NS))
            if progress is not None:
                progress(net.sim.now, limit)
        counts = {cname: tap.count for cname, tap in out.caps.taps.items()}
        out.caps.close()
        write_state(out.tmp, net, sc, out.captured, runs)
    return ScenarioOutcome(name, out.final, counts, net.drops, [r.result for r in runs], net.sim.now, events)


def _schedule_traffic(net: Network, sc: topo.Scenario) -> list[Any]:
    runs: list[Any] = []
    remaining = [len(sc.traffic)]

    def one_done() -> None:
        remaining[0] -= 1
        if remaining[0] == 0:
            net.sim.schedule(sc.settle, _stop, net)

    for tr in sc.traffic:
        node = net.nodes[tr.node]
        slot: dict[str, Any] = {}
        runs.append(_Pending(slot))
        net.sim.at(tr.at, _start, net, node, tr.app, one_done, slot)
    return runs


class _Pending:
    """The run record of a traffic app, filled in when its start time comes."""

    def __init__(self, slot: dict[str, Any]) -> None:
        self.slot = slot

    @property
    def result(self) -> dict[str, Any]:
        run = self.slot.get("run")
        return run.result if run is not None else {}


def _start(net: Network, node: Any, app: topo.App, done: Callable[[], None], slot: dict[str, Any]) -> None:
    slot["run"] = net.start_app(node, app, done)


def _stop(net: Network) -> None:
    net.sim.stopped = True


def write_state(tmp: str, net: Network, sc: topo.Scenario, captured: list[Any], runs: list[Any]) -> None:
    with open(os.path.join(tmp, "captures.tsv"), "w") as f:
        for name, dev in captured:
            f.write(f"{name}\t{dev.node.name}\t{dev.name}\tpcap/{name}.pcap\n")
    _write_json(os.path.join(tmp, "scenario.json"), {"scenario": sc.name, "description": sc.description})
    results = [r.result for r in runs]
    if results:
        _write_json(os.path.join(tmp, "client-result.json"), results[0] if len(results) == 1 else results)
    for node in net.nodes.values():
        if node.kind != "pod":
            with open(os.path.join(tmp, f"conntrack-{node.name}.txt"), "w") as f:
                f.write(node.nf.conntrack_dump())
        if node.nf.ruleset is not None:
            with open(os.path.join(tmp, f"iptables-save-{node.name}.txt"), "w") as f:
                f.write(save_rules(node.nf.ruleset, counters=True))
    with open(os.path.join(tmp, "drops.txt"), "w") as f:
        for d in net.drops:
            f.write(f"{d.t / 1e9:.6f} {d.node} {d.where}: {d.reason} [{d.summary}]\n")


def _write_json(path: str, obj: Any) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def replace_dir(tmp: str, final: str) -> None:
    """Swap the finished temporary directory into place (rename is atomic on one filesystem)."""
    old = None
    if os.path.exists(final):
        old = final + ".old." + os.path.basename(tmp)
        os.rename(final, old)
    os.rename(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
