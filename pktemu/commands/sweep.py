"""`pktemu sweep TOPOLOGY --scenario S --seeds 1-1000`: run one scenario once per seed, here or on a
Dask cluster, and tell which endpoint each connection reached, the outcomes and the latency
percentiles on the virtual clock (docs/sweep.md). The output is the same bytes however it ran."""
from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table
from rich.text import Text

from pktemu.commands import add_output, add_topology, emit, plural
from pktemu.errors import PktemuError
from pktemu.io.run import check_out_dir
from pktemu.io.topofile import load_topology
from pktemu.network import Network as Engine
from pktemu.scaleout.executor import check_options
from pktemu.scaleout.runner import SWEEP_FILE, parse_seeds, sweep

NAME = "sweep"
HELP = "run a scenario over many seeds (optionally on Dask) and aggregate endpoints, outcomes, latencies"
ORDER = 15


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_topology(p)
    p.add_argument("--scenario", help="the scenario (default: the topology's only one)")
    p.add_argument("--seeds", required=True, help="seeds: N, N-M or a comma-separated list (e.g. 1-1000)")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="run on a local Dask cluster of N worker processes")
    p.add_argument("--scheduler", default=None, metavar="tcp://HOST:PORT",
                   help="run on the Dask cluster of this scheduler")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="write sweep.json and each seed's result files as DIR/seed-N/")
    p.add_argument("--captures", action="store_true",
                   help="with --out, keep each seed's whole output (pcaps, state files) in DIR/seed-N/")
    add_output(p)


def run(args: argparse.Namespace, out: Console) -> int:
    check_options(args.workers, args.scheduler)
    seeds = parse_seeds(args.seeds)
    if args.captures and args.out is None:
        raise PktemuError("--captures: give --out DIR to keep the outputs in")
    if args.out is not None:
        check_out_dir(args.out)
    t = load_topology(args.topology)
    name = args.scenario
    if name is None:
        if len(t.scenarios) != 1:
            have = ", ".join(t.scenarios) or "none"
            raise PktemuError(f"{t.path}: sweep: give --scenario (have: {have})")
        name = next(iter(t.scenarios))
    sc = t.scenario(name)
    assert sc is not None
    Engine(t, sc, seeds[0])                 # bad rules or apps: one line before anything runs
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), console=out,
                  transient=True, disable=args.output != "text" or not out.is_terminal) as prog:
        task = prog.add_task(f"{sc.name} seeds", total=len(seeds))
        summary = sweep(t, sc, seeds, out_root=args.out, captures=args.captures, workers=args.workers,
                        scheduler=args.scheduler, progress=lambda n: prog.update(task, completed=n))
    if args.output != "text":
        emit(summary, args.output)
        return 0
    show(out, summary, args.out)
    return 0


def show(out: Console, s: dict[str, Any], out_dir: str | None) -> None:
    out.print(Text.assemble((s["scenario"], "bold"), f" over {plural(s['seeds'], 'seed')}: "
                            f"{plural(s['connections'], 'connection')}"))
    for title, rows, cols in (
            ("endpoints reached", s["endpoints"], ("client", "kind", "endpoint", "count", "share")),
            ("outcomes", s["outcomes"], ("client", "kind", "outcome", "count", "share")),
            ("latency, virtual ms (http elapsed_ms, dns rtt_ms, echo to_server_ms)", s["latency_ms"],
             ("client", "kind", "count", "min", "p50", "p90", "p99", "max"))):
        if not rows:
            continue
        table = Table(title=title, title_justify="left")
        for c in cols:
            table.add_column(c, justify="left" if c in ("client", "kind", "endpoint", "outcome") else "right",
                             no_wrap=c != "endpoint" and c != "outcome")
        for r in rows:
            table.add_row(*(_cell(c, r[c]) for c in cols))
        out.print(table)
    if out_dir is not None:
        out.print(Text(f"  written to {out_dir} ({SWEEP_FILE}, seed-N/)"), soft_wrap=True)


def _cell(col: str, v: Any) -> Text:
    if col == "share":
        return Text(f"{v * 100:.1f}%")
    return Text("-" if v is None else str(v))
