"""Generated clusters at two sizes (topologies/generated-large-cluster.yaml, N nodes x 30 pods):
`pktemu run` (build + a short scenario + every output) in a fresh process each time, so that its
peak memory is its own, with the exponent of growth between the sizes (1 = linear)."""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from typing import Any, Callable

from pktemu.bench import Figure, Goal, exponent, interleave
from pktemu.bench.hops import EXAMPLES

CLUSTER = os.path.join(EXAMPLES, "generated-large-cluster.yaml")
PODS = 30
LINEAR = 1.1           # the goal: time and memory grow linearly (exponent at most 1.1)


def cluster_file(directory: str, nodes: int, pods: int, mode: str = "iptables") -> str:
    """The generated cluster at a size, its kube-proxies in `mode` (iptables or nftables)."""
    path = os.path.join(directory, f"cluster-{nodes}x{pods}{'' if mode == 'iptables' else '-' + mode}.yaml")
    with open(path, "w") as f:
        f.write(f"extends: {{file: {CLUSTER}, merge: true}}\nvars: {{nodes: {nodes}, pods: {pods}}}\n")
        if mode != "iptables":
            f.write(f'kubernetes:\n  kube_proxy: {{for n in 1..nodes: {{"node{{n}}": {{mode: {mode}}}}}}}\n')
    return path


#: what a child process runs: imports first (their memory is not the run's), then one `pktemu run`.
#: The run's growth is counted from the resident size after the imports (/proc/self/statm) to the
#: peak of the run alone: the high-water mark is reset after the imports (/proc/self/clear_refs)
#: and read from /proc/self/status (VmHWM). getrusage's ru_maxrss would not do: it also holds the
#: imports' own peak (modules compiled, when no bytecode may be written: some 40 MB above what they
#: leave resident), and the peak of the parent whose address space exec replaced (a vfork child
#: starts in its parent's), which put a ~100 MB floor under every small run.
_CHILD = """
import gc, json, os, resource, shutil, sys, tempfile, time
from pktemu.cli import main
path, scenario = sys.argv[1], sys.argv[2]
try:                    # where a user's run writes (./pcaps by default), as pktemu.bench.hops.scratch
    out = tempfile.mkdtemp(prefix=".pktemu-bench-", dir=os.getcwd())
except OSError:
    out = tempfile.mkdtemp(prefix="pktemu-bench-")
gc.collect()

def hwm():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))

try:
    with open("/proc/self/statm") as f:
        rss0 = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    hwm()
    peak = hwm
except (OSError, StopIteration):
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
status = main(["run", path, "--scenario", scenario, "--out", out, "-q"])
secs = time.perf_counter() - t0
rss = peak()
pcaps = len(os.listdir(os.path.join(out, scenario, "pcap"))) if status == 0 else 0
shutil.rmtree(out, ignore_errors=True)
grown = max(rss - rss0, 1) * 1024
print(json.dumps({"status": status, "seconds": secs, "peak_bytes": grown, "pcaps": pcaps}))
"""



def run_child(path: str, scenario: str) -> dict[str, Any]:
    """One `pktemu run PATH --scenario S` in a fresh Python process: wall seconds of the run, the
    growth of the process's peak resident memory over what its imports took (bytes), and the
    capture points written. A fresh process, not a fork: a forked child would first reuse memory
    its parent had freed, which hides part of a small run's memory and skews the exponent."""
    p = subprocess.run([sys.executable, "-c", _CHILD, path, scenario], capture_output=True, text=True,
                       env={**os.environ, "PYTHONHASHSEED": "0"})
    try:
        res: dict[str, Any] = json.loads(p.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        res = {"status": -1, "error": (p.stderr.strip().splitlines() or ["the child died"])[-1]}
    if res["status"] != 0:
        raise RuntimeError(f"pktemu run {path} --scenario {scenario}: {res.get('error', res['status'])}")
    return res


def _side(path: str, scenario: str, runs: list[dict[str, Any]],
          say: Callable[[str], None]) -> Callable[[], float]:
    def once() -> float:
        say(f"{os.path.basename(path)[:-5]}, scenario {scenario}")
        runs.append(run_child(path, scenario))
        return float(runs[-1]["seconds"])
    return once


def cluster_figures(direct: tuple[int, int], clients: tuple[int, int], reps: int,
                    say: Callable[[str], None]) -> list[Figure]:
    """Both scenarios, each at two node counts: `direct` (pod to pod, no Service) and `clients` (one
    Service over every pod, so every node's kube-proxy programs every endpoint: the cluster's state
    grows as nodes x all pods, and the clients scenario is measured at smaller sizes), `clients`
    also with kube-proxy in nftables mode."""
    figs: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="pktemu-bench-") as tmp:
        for label, scenario, mode, (small, big) in (("direct", "direct", "iptables", direct),
                                                    ("clients", "clients", "iptables", clients),
                                                    ("clients_nftables", "clients", "nftables", clients)):
            paths = {n: cluster_file(tmp, n, PODS, mode) for n in (small, big)}
            runs: dict[int, list[dict[str, Any]]] = {small: [], big: []}

            ratios, _ = interleave(_side(paths[big], scenario, runs[big], say),
                                   _side(paths[small], scenario, runs[small], say), reps)
            mem = [b["peak_bytes"] / s["peak_bytes"] for b, s in zip(runs[big], runs[small], strict=True)]
            size_ratio = big / small
            goal = Goal(f"linear: exponent <= {LINEAR} (ratio <= {size_ratio ** LINEAR:.1f})",
                        size_ratio ** LINEAR)
            for what, vals, key, unit in (("time", ratios, "seconds", "s"),
                                          ("peak memory", mem, "peak_bytes", "MB")):
                absolute = [r[key] / (1e6 if unit == "MB" else 1) for r in runs[big]]
                figs.append(Figure(
                    f"cluster_{label}_{'time' if unit == 's' else 'memory'}",
                    f"`pktemu run` of a {big} x {PODS} generated cluster, scenario {scenario}"
                    f"{'' if mode == 'iptables' else ', kube-proxy in ' + mode + ' mode'}: {what}",
                    f"the same at {small} x {PODS}", vals, absolute, unit, goal,
                    {"exponent": exponent(statistics.median(vals), size_ratio),
                     "sizes": [f"{small}x{PODS}", f"{big}x{PODS}"],
                     "pcaps": runs[big][-1]["pcaps"]}))
    return figs
