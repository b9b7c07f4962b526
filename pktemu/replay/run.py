"""One replay, start to finish: read and check everything, run the clock, write the output directory.

Everything that can be wrong with the input (the capture, the topology, the options) is found
before the output directory is created, and the directory itself is written under a temporary
name and renamed into place, as `pktemu run` does, so a refused or interrupted replay leaves no
partial output. The layout is `pktemu run`'s (`OUT/<name>/pcap/...`, `all.pcapng`, state files)
plus `replay.json`, the statistics.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field

from pktemu import topo
from pktemu.errors import PktemuError
from pktemu.io.pcapread import read_capture
from pktemu.io.run import scenario_output, write_state
from pktemu.io.topofile import load_topology
from pktemu.net.veth import Veth
from pktemu.network import Network
from pktemu.replay.engine import Engine
from pktemu.replay.mapping import AddressMap, Neighbours
from pktemu.replay.prepare import prepare
from pktemu.replay.split import parse_split
from pktemu.replay.stats import ReplayStats
from pktemu.replay.timing import Timing
from pktemu.sim import SECOND

MAX_EVENTS = 1 << 62        # no cap: virtual time may leap years between two frames; the engine ends it


@dataclass
class ReplayOptions:
    inject: str
    maps: list[str] = field(default_factory=list)
    split: str = "syn"
    speed: float = 1.0
    pps: float | None = None
    topspeed: bool = False
    loops: int = 1
    fix_checksums: bool = False
    answer_timeout: int = 1 * SECOND
    settle: int = 1 * SECOND
    scenario: str | None = None
    seed: int | None = None
    name: str | None = None


def replay(capture: str, topology: str, opts: ReplayOptions, out_root: str) -> ReplayStats:
    """Replay `capture` through `topology`; returns the statistics (also written as replay.json)."""
    t = load_topology(topology)
    sc = t.scenario(opts.scenario)
    amap = AddressMap(opts.maps)
    split = parse_split(opts.split)
    timing = Timing(opts.speed, opts.pps, opts.topspeed, opts.loops)
    cap = read_capture(capture)
    net = Network(t, sc, opts.seed)
    inject = inject_device(net, opts.inject, topology)
    replaced = inject.peer
    assert replaced is not None
    stats = ReplayStats(capture, cap.format, topology, opts.inject, f"{replaced.node.name}/{replaced.name}",
                        str(split), list(opts.maps), timing.mode, timing.loops, opts.fix_checksums)
    prepared = prepare(cap, split, amap, Neighbours(net, replaced.node, replaced, inject), timing,
                       opts.fix_checksums, stats)
    name = opts.name or "replay-" + os.path.splitext(os.path.basename(capture))[0]
    if not name or name.startswith(".") or os.sep in name:
        raise PktemuError(f"--name {name!r}: not a usable directory name")
    with scenario_output(out_root, name, net) as out:
        engine = Engine(net, inject, prepared, timing, opts.answer_timeout, opts.settle, stats)
        engine.start()
        net.sim.run(max_events=MAX_EVENTS)      # the engine stops the clock once the replay has settled
        out.caps.close()
        stats.virtual_ns = net.sim.now
        stats.dropped = Counter(f"{d.node} {d.where}: {d.reason}" for d in net.drops)
        stats.out_dir = out.final
        desc = f"replay of {capture} injected at {opts.inject} (standing in for {stats.stands_in_for})"
        write_state(out.tmp, net, topo.Scenario(name, desc), out.captured, [])
        with open(os.path.join(out.tmp, "replay.json"), "w") as f:
            json.dump(stats.to_json(), f, indent=2, sort_keys=True)
            f.write("\n")
    return stats


def inject_device(net: Network, ref: str, topology: str) -> Veth:
    """The veth end named NODE/IFNAME, whose peer the replay will stand in for."""
    node_name, sep, ifname = ref.partition("/")
    where = f"--inject {ref!r}"
    if not sep or not node_name or not ifname:
        raise PktemuError(f"{where}: expected NODE/IFNAME, e.g. node1/veth-client")
    node = net.nodes.get(node_name)
    if node is None:
        raise PktemuError(f"{where}: {topology} has no node {node_name!r} (have: {', '.join(net.nodes)})")
    dev = node.devices.get(ifname)
    if dev is None:
        have = ", ".join(d for d in node.devices if d != "lo")
        raise PktemuError(f"{where}: node {node_name} has no interface {ifname!r} (have: {have})")
    if not isinstance(dev, Veth) or dev.peer is None:
        raise PktemuError(f"{where}: a {dev.kind} device; the replay enters through a veth end and stands "
                          "in for its peer (e.g. node1/veth-client, standing in for client/eth0)")
    return dev
