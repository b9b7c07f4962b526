"""Per-hop cost as users pay it: `pktemu run` in-process (build, run, write every output), divided
by the frames it captured, against a Scapy `Ether(raw)` dissection of those same frames."""
from __future__ import annotations

import glob
import os
import shutil
import statistics
import tempfile
import time
from typing import Any, Callable

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


def output_shape(out: str) -> tuple[int, int]:
    """(folders, files) a run's output holds: each a new inode the filesystem makes per run."""
    dirs = files = 0
    for _root, ds, fs in os.walk(out):
        dirs += len(ds)
        files += len(fs)
    return dirs, files


def scratch() -> str:
    """A new folder for a run's output where a user's run writes it: `pktemu run` writes into
    ./pcaps by default, so the current directory (the system's temporary folder if that cannot be
    written). On one VM, making a file under /tmp cost 25x what it cost elsewhere on the same ext4."""
    try:
        return tempfile.mkdtemp(prefix=".pktemu-bench-", dir=os.getcwd())
    except OSError:
        return tempfile.mkdtemp(prefix="pktemu-bench-")


def create_empty(dirs: int, files: int) -> float:
    """Seconds to make `dirs` folders and `files` empty files in a fresh temporary folder: what a
    run's output costs the filesystem before a byte is written. On a slow one (we saw 11 to 900 us
    a file on one VM's ext4, depending on its other I/O) this alone can set the founding figure."""
    top = scratch()
    try:
        t0 = time.perf_counter()
        for d in range(dirs):
            os.mkdir(os.path.join(top, f"d{d}"))
        for f in range(files):
            os.close(os.open(os.path.join(top, f"d{f % dirs}" if dirs else "", f"f{f}"),
                             os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        return time.perf_counter() - t0
    finally:
        shutil.rmtree(top)


def run_once(args: list[str], keep: bool = True) -> tuple[float, str]:
    """Seconds of one `pktemu run ... --out TMP -q` called as the CLI calls it, and the folder
    holding its output `o` (removed, whatever happens, unless `keep`)."""
    out = scratch()
    kept = False
    try:
        t0 = time.perf_counter()
        status = pktemu_main(["run", *args, "--out", os.path.join(out, "o"), "-q"])
        elapsed = time.perf_counter() - t0
        if status != 0:
            raise RuntimeError(f"pktemu run {' '.join(args)} exited with {status}")
        kept = keep
    finally:
        if not kept:
            shutil.rmtree(out, ignore_errors=True)
    return elapsed, out


def per_hop(args: list[str], reps: int, batch: int = 1) -> tuple[list[float], list[float], dict[str, Any]]:
    """Interleaved: `batch` runs per hop, then `batch` Scapy dissections of each of their frames per
    frame (a run of a few milliseconds alone is one sample of the machine's noise). Each run is
    followed by the making of as many empty folders and files as its output holds, per hop: the
    part of the run's time the filesystem sets (`files_us_per_hop`)."""
    _, out = run_once(args)
    try:
        frames = captured_frames(os.path.join(out, "o"))
        dirs, files = output_shape(os.path.join(out, "o"))
    finally:
        shutil.rmtree(out)
    if not frames:
        raise RuntimeError(f"pktemu run {' '.join(args)} captured nothing")
    making: list[float] = []

    def emulate() -> float:
        elapsed = 0.0
        for _ in range(batch):
            elapsed += run_once(args, keep=False)[0]
            making.append(create_empty(dirs + 1, files) / len(frames))
        return elapsed / (batch * len(frames))

    def dissect() -> float:
        t0 = time.perf_counter()
        for _ in range(batch):
            for raw in frames:
                Ether(raw)
        return (time.perf_counter() - t0) / (batch * len(frames))

    dissect()
    ratios, values = interleave(emulate, dissect, reps)
    return ratios, values, {"hops": len(frames), "files": files, "folders": dirs + 1,
                            "runs_per_sample": batch, "files_us_per_hop": statistics.median(making) * 1e6}


def hop_figures(quick: bool, reps: int, say: Callable[[str], None]) -> list[Figure]:
    say("founding scenario end to end")
    ratios, values, extra = per_hop([FOUNDING], reps, batch=3 if quick else 10)
    founding = Figure("founding_hop", f"`pktemu run service-test.yaml` (every scenario: build, run, write), "
                      f"per hop ({extra['hops']} hops, {extra['files']} files; {extra['runs_per_sample']} "
                      "runs a sample)",
                      "Scapy Ether(raw) of the same frames, per frame",
                      ratios, [v * 1e6 for v in values], "us/hop", Goal("<= 1/4", 0.25), extra)
    requests = 20 if quick else 200
    say(f"long load: {CLIENTS} clients x {requests} DNS + HTTP")
    with tempfile.TemporaryDirectory(prefix="pktemu-bench-") as tmp:
        path = os.path.join(tmp, "service-test-load.yaml")
        with open(path, "w") as f:
            f.write(load_topology_text(requests))
        ratios, values, extra = per_hop([path, "--scenario", "load"], max(2, reps - 2))
    load = Figure("load_hop", f"{CLIENTS} clients x {requests} DNS + HTTP GETs through the ClusterIP "
                  f"(`pktemu run`, captures and comments on), per hop ({extra['hops']} hops)",
                  "Scapy Ether(raw) of the same frames, per frame", ratios, [v * 1e6 for v in values],
                  "us/hop", Goal("<= 1/10", 0.1), extra)
    return [founding, load]
