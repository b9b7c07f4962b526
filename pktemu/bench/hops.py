"""Per-hop cost as users pay it: `pktemu run` in-process (build, run, write every output), divided
by the frames it captured, against a Scapy `Ether(raw)` dissection of those same frames."""
from __future__ import annotations

import glob
import os
import shutil
import tempfile
import time
from typing import Callable

from scapy.layers.l2 import Ether
from scapy.utils import RawPcapReader

from pktemu.bench import Figure, Goal, interleave
from pktemu.cli import main as pktemu_main

#: the shipped copies of topologies/ (byte-identical), there in an installed package too
EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
FOUNDING = os.path.join(EXAMPLES, "service-test.yaml")
CLIENTS = 3


def load_topology_text(requests: int) -> str:
    """The founding topology plus two more client pods on node1 and a `load` scenario: each of the
    three clients resolves service-test through the cluster DNS and GETs it through the ClusterIP,
    `requests` times, one every 10 ms (kube-proxy DNAT both ways, conntrack, captures, comments)."""
    pods = "".join(f"  client{i}: {{node: node1, bridge: cbr0, address: 10.0.1.{10 + i}/24, "
                   f"gateway: 10.0.1.1}}\n" for i in range(2, CLIENTS + 1))
    names = ["client"] + [f"client{i}" for i in range(2, CLIENTS + 1)]
    traffic = "".join(f"      - {{at: {3 * k}ms, pod: {name}, app: {{kind: http-load, count: {requests}, "
                      "interval: 10ms, name: service-test.default.svc.cluster.local, "
                      "dns_server: 10.3.240.10}}\n" for k, name in enumerate(names))
    return (f"extends: {{file: {FOUNDING}, merge: true}}\npods:\n{pods}scenarios:\n  load:\n"
            f"    description: \"{CLIENTS} clients x {requests} DNS lookups + HTTP GETs of service-test\"\n"
            f"    traffic:\n{traffic}")


def captured_frames(out: str) -> list[bytes]:
    """Every frame of every capture point's pcap: one emulated hop each."""
    frames: list[bytes] = []
    for path in sorted(glob.glob(os.path.join(out, "*", "pcap", "*.pcap"))):
        frames += [raw for raw, _meta in RawPcapReader(path)]
    return frames


def run_once(args: list[str]) -> tuple[float, str]:
    """Seconds of one `pktemu run ... --out TMP -q` called as the CLI calls it; the output kept."""
    out = tempfile.mkdtemp(prefix="pktemu-bench-")
    t0 = time.perf_counter()
    status = pktemu_main(["run", *args, "--out", os.path.join(out, "o"), "-q"])
    elapsed = time.perf_counter() - t0
    if status != 0:
        raise RuntimeError(f"pktemu run {' '.join(args)} exited with {status}")
    return elapsed, out


def per_hop(args: list[str], reps: int) -> tuple[list[float], list[float], int]:
    """Interleaved: one run per hop, then one Scapy dissection of each of its frames per frame."""
    _, out = run_once(args)
    frames = captured_frames(os.path.join(out, "o"))
    shutil.rmtree(out)
    if not frames:
        raise RuntimeError(f"pktemu run {' '.join(args)} captured nothing")

    def emulate() -> float:
        elapsed, out = run_once(args)
        shutil.rmtree(out)
        return elapsed / len(frames)

    def dissect() -> float:
        t0 = time.perf_counter()
        for raw in frames:
            Ether(raw)
        return (time.perf_counter() - t0) / len(frames)

    dissect()
    ratios, values = interleave(emulate, dissect, reps)
    return ratios, values, len(frames)


def hop_figures(quick: bool, reps: int, say: Callable[[str], None]) -> list[Figure]:
    say("founding scenario end to end")
    ratios, values, hops = per_hop([FOUNDING], reps)
    founding = Figure("founding_hop", f"`pktemu run service-test.yaml` (every scenario: build, run, write), "
                      f"per hop ({hops} hops)", "Scapy Ether(raw) of the same frames, per frame",
                      ratios, [v * 1e6 for v in values], "us/hop", Goal("<= 1/4", 0.25),
                      {"hops": hops})
    requests = 20 if quick else 200
    say(f"long load: {CLIENTS} clients x {requests} DNS + HTTP")
    with tempfile.TemporaryDirectory(prefix="pktemu-bench-") as tmp:
        path = os.path.join(tmp, "service-test-load.yaml")
        with open(path, "w") as f:
            f.write(load_topology_text(requests))
        ratios, values, hops = per_hop([path, "--scenario", "load"], max(2, reps - 2))
    load = Figure("load_hop", f"{CLIENTS} clients x {requests} DNS + HTTP GETs through the ClusterIP "
                  f"(`pktemu run`, captures and comments on), per hop ({hops} hops)",
                  "Scapy Ether(raw) of the same frames, per frame", ratios, [v * 1e6 for v in values],
                  "us/hop", Goal("<= 1/10", 0.1), {"hops": hops})
    return [founding, load]
