"""`pktemu run --workers/--scheduler` and `pktemu sweep`, below their command-line faces."""
from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

from pktemu import topo
from pktemu.errors import PktemuError, excerpt, shorten
from pktemu.io.atomic import write_text_atomic
from pktemu.scaleout.aggregate import connections, summarize
from pktemu.scaleout.executor import dask_client, run_jobs
from pktemu.scaleout.jobs import KEEP_ALL, KEEP_RESULTS, Done, Job, input_files
from pktemu.scaleout.write import write_done
from pktemu.units import SEED_MAX

MAX_SEEDS = 1_000_000
SWEEP_FILE = "sweep.json"


def run_scenarios(t: topo.Topology, names: list[str], seed: int | None, out_root: str,
                  workers: int | None, scheduler: str | None,
                  on_done: Callable[[Done, str], None]) -> None:
    """Each scenario as a Dask task; `on_done(done, path)` once each is written, in `names` order."""
    files = input_files(t)
    jobs = [Job(n, seed, n, KEEP_ALL, files) for n in names]
    with dask_client(workers, scheduler) as client:
        for done in run_jobs(t, jobs, client):
            on_done(done, write_done(out_root, done))


def parse_seeds(spec: str) -> list[int]:
    """`1-1000`, `7`, `1,5,10-20`: the seeds in the order given, each once: a seed that ranges given
    overlap on runs once and counts once against MAX_SEEDS (`1-1000000,1-1000000` is 1,000,000 runs),
    and the parts are read as ranges, so many overlapping ones cost no more than the seeds they give."""
    seeds: list[int] = []
    covered: list[tuple[int, int]] = []     # the disjoint ranges taken so far, in order
    where = f"--seeds {excerpt(spec)}"
    for part in spec.split(","):
        lo_s, dash, hi_s = part.strip().partition("-")
        try:
            lo = int(lo_s)
            hi = int(hi_s) if dash else lo
        except ValueError:
            raise PktemuError(f"{where}: expected seeds as N, N-M or a comma-separated list of them "
                              "(e.g. 1-1000)") from None
        if lo < 0 or hi < lo:
            raise PktemuError(f"{where}: {lo}-{hi} is not a range of seeds (0 <= N <= M)")
        if hi > SEED_MAX:                   # what `pktemu run --seed` and a topology's `seed:` take
            raise PktemuError(f"{where}: {shorten(str(hi))} is not a seed (an integer from 0 to 2**64-1)")
        new = _uncovered(covered, lo, hi)
        if sum(b - a + 1 for a, b in new) + len(seeds) > MAX_SEEDS:
            raise PktemuError(f"{where}: more than {MAX_SEEDS:,} seeds")
        for a, b in new:
            seeds.extend(range(a, b + 1))
        covered = _union(covered, lo, hi)
    return seeds


def _uncovered(covered: list[tuple[int, int]], lo: int, hi: int) -> list[tuple[int, int]]:
    """The parts of lo-hi that no range of `covered` (disjoint, sorted) holds, in order."""
    out: list[tuple[int, int]] = []
    at = lo
    for a, b in covered:
        if b < at or a > hi:
            continue
        if a > at:
            out.append((at, a - 1))
        at = b + 1
        if at > hi:
            return out
    out.append((at, hi))
    return out


def _union(covered: list[tuple[int, int]], lo: int, hi: int) -> list[tuple[int, int]]:
    """`covered` with lo-hi added, kept disjoint and sorted (touching ranges joined)."""
    out: list[tuple[int, int]] = []
    for a, b in covered:
        if b + 1 < lo or a > hi + 1:
            out.append((a, b))
        else:
            lo, hi = min(lo, a), max(hi, b)
    out.append((lo, hi))
    return sorted(out)


def sweep(t: topo.Topology, sc: topo.Scenario, seeds: list[int], *, out_root: str | None, captures: bool,
          workers: int | None, scheduler: str | None,
          progress: Callable[[int], None] = lambda n: None) -> dict[str, Any]:
    """Run `sc` once per seed and aggregate (pktemu.scaleout.aggregate); with `out_root`, write each
    seed's results (or with `captures` its whole output) as `seed-N/` and the summary as sweep.json."""
    if out_root is not None and os.path.isdir(os.path.join(out_root, SWEEP_FILE)):
        # said now, not after every seed has run
        raise PktemuError(f"{os.path.join(out_root, SWEEP_FILE)}: cannot write: Is a directory")
    files = input_files(t)
    keep = KEEP_ALL if captures else KEEP_RESULTS
    jobs = [Job(sc.name, s, f"seed-{s}", keep, files) for s in seeds]
    per_seed: list[tuple[int, list[dict[str, Any]]]] = []
    use_dask = workers is not None or scheduler is not None
    with dask_client(workers, scheduler) if use_dask else nullcontext() as client:
        for seed, done in zip(seeds, run_jobs(t, jobs, client), strict=True):
            if out_root is not None:
                write_done(out_root, done)
            for line in done.warnings:          # as `pktemu run --seed N` says them, in seed order
                print(line, file=sys.stderr)
            per_seed.append((seed, connections(sc, done)))
            progress(len(per_seed))
    summary: dict[str, Any] = {"topology": t.name, "file": os.path.basename(t.path), "scenario": sc.name,
                               "seeds": len(seeds), **summarize(per_seed),
                               "per_seed": [{"seed": s, "connections": c} for s, c in per_seed]}
    if out_root is not None:
        write_text_atomic(os.path.join(out_root, SWEEP_FILE), json.dumps(summary, indent=2) + "\n")
    return summary
