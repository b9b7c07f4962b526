"""One replay, start to finish: read and check everything, run the clock, write the output directory.

The network is a `pktemu.Network` loaded with `capture=OUT`, written with `write`: the code path
of `pktemu run`. Everything that can be wrong with the input (the capture, the topology, the
options) is found before the clock runs, the output name before anything is created; the
directory is written under a temporary name and renamed into place, so a refused or interrupted
replay leaves no output. The layout is `pktemu run`'s (`OUT/<name>/pcap/...`, `all.pcapng`, state
files) plus `replay.json`, the statistics.
"""
from __future__ import annotations

import dataclasses
import json
import os
from collections import Counter
from dataclasses import dataclass, field

from pktemu import topo
from pktemu.api.network import Network
from pktemu.errors import PktemuError, excerpt
from pktemu.io.atomic import entry_name_problem
from pktemu.io.pcapread import read_capture
from pktemu.io.topofile import load_topology
from pktemu.net.veth import Veth
from pktemu.network import Network as NetworkEngine
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
    name = output_name(capture, opts.name)
    t = load_topology(topology)
    sc = t.scenario(opts.scenario)
    amap = AddressMap(opts.maps)
    split = parse_split(opts.split)
    timing = Timing(opts.speed, opts.pps, opts.topspeed, opts.loops)
    cap = read_capture(capture)
    # the scenario's overrides and timeline, not its traffic: the replay is the only client
    rsc = topo.Scenario(name, overrides=sc.overrides if sc else [], timeline=sc.timeline if sc else [])
    with Network(dataclasses.replace(t, scenarios={name: rsc}), name, opts.seed, capture=out_root,
                 keep_frames=False) as api:
        net = api.engine
        inject = inject_device(net, opts.inject, topology)
        replaced = inject.peer
        assert replaced is not None
        stats = ReplayStats(capture, cap.format, topology, opts.inject,
                            f"{replaced.node.name}/{replaced.name}", str(split), list(opts.maps), timing.mode,
                            timing.loops, opts.fix_checksums)
        prepared = prepare(cap, split, amap, Neighbours(net, replaced.node, replaced, inject), timing,
                           opts.fix_checksums, stats)
        rsc.description = (f"replay of {capture} injected at {opts.inject} "
                           f"(standing in for {stats.stands_in_for})")
        engine = Engine(net, inject, prepared, timing, opts.answer_timeout, opts.settle, stats)
        engine.start()
        net.sim.run(max_events=MAX_EVENTS)      # the engine stops the clock once the replay has settled
        stats.virtual_ns = net.sim.now
        stats.dropped = Counter(f"{d.node} {d.where}: {d.reason}" for d in net.drops)
        stats.out_dir = api.output or ""
        api.write(files={"replay.json": json.dumps(stats.to_json(), indent=2, sort_keys=True) + "\n"})
    return stats


def output_name(capture: str, name: str | None) -> str:
    """The output folder's name: `--name`, or `replay-` and the capture's base name; checked before
    anything is read or created, since it must fit in a directory entry with its temporary name."""
    if name is not None:
        if (problem := entry_name_problem(name)) is not None:
            raise PktemuError(f"--name {excerpt(name)}: {problem}")
        return name
    default = "replay-" + os.path.splitext(os.path.basename(capture))[0]
    if (problem := entry_name_problem(default)) is not None:
        raise PktemuError(f"--name: not given, and the default from the capture's file name, "
                          f"{excerpt(default)}, is {problem}; give a shorter --name")
    return default


def inject_device(net: NetworkEngine, ref: str, topology: str) -> Veth:
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
