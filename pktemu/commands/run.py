"""`pktemu run TOPOLOGY`: run scenarios and write pcaps, state files and the merged pcapng."""
from __future__ import annotations

import argparse
from collections import Counter

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn
from rich.table import Table

from pktemu.io.run import ScenarioOutcome, check_out_dir, run_scenario
from pktemu.io.topofile import load_topology
from pktemu.network import Network

NAME = "run"
HELP = "run a topology's scenarios and write pcaps"
ORDER = 10


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("topology")
    p.add_argument("--scenario", action="append", help="run only this scenario (repeatable)")
    p.add_argument("--out", default="pcaps", help="output directory (default: pcaps)")
    p.add_argument("--seed", type=int, default=None, help="override the topology's seed")
    p.add_argument("-q", "--quiet", action="store_true")


def run(args: argparse.Namespace, out: Console) -> int:
    check_out_dir(args.out)
    t = load_topology(args.topology)
    names = args.scenario or list(t.scenarios)
    for n in names:                        # fail on bad names, rules or apps before writing anything
        Network(t, t.scenario(n), args.seed)
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                  TextColumn("{task.fields[vt]}"), console=out, transient=True,
                  disable=args.quiet or not out.is_terminal) as prog:
        for n in names:
            task = prog.add_task(n, total=1.0, vt="")

            def update(now: int, limit: int, task: TaskID = task) -> None:
                prog.update(task, completed=now / max(limit, 1), vt=f"t={now / 1e9:.3f}s")

            res = run_scenario(t, n, args.out, args.seed, update)
            prog.remove_task(task)
            if not args.quiet:
                report(out, res)
    return 0


def report(out: Console, res: ScenarioOutcome) -> None:
    table = Table(title=f"{res.name}  ({res.virtual_ns / 1e9:.3f} s virtual, {res.events} events)",
                  title_justify="left")
    table.add_column("capture point")
    table.add_column("frames", justify="right")
    for name, n in res.counts.items():
        table.add_row(name, str(n))
    out.print(table)
    if res.drops:
        # a netfilter drop's reason ends with the rule's save text (see drops.txt): count by rule name
        by_reason = Counter(f"{d.node} {d.where}: {d.reason.split(': -A ', 1)[0].split(': -P ', 1)[0]}"
                            for d in res.drops)
        out.print(f"  {len(res.drops)} frames dropped (drops.txt):")
        for reason, n in sorted(by_reason.items()):
            out.print(f"    {n:6d}  {reason}")
    out.print(f"  written to {res.out_dir}")
