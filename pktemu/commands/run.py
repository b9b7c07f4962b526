"""`pktemu run TOPOLOGY`: run scenarios and write pcaps, state files and the merged pcapng."""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from dataclasses import dataclass

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn
from rich.table import Table

from pktemu.commands import add_topology, plural
from pktemu.api.network import Network
from pktemu.io.run import check_out_dir
from pktemu.io.topofile import load_topology
from pktemu.network import Drop
from pktemu.network import Network as Engine

NAME = "run"
HELP = "run a topology's scenarios and write pcaps"
ORDER = 10


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_topology(p)
    p.add_argument("--scenario", action="append", help="run only this scenario (repeatable)")
    p.add_argument("--out", default="pcaps", help="output directory (default: pcaps)")
    p.add_argument("--seed", type=int, default=None, help="override the topology's seed")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("--report", action="store_true",
                   help="also write report.html (topology, flow ladders, conntrack, counters) per scenario")


def run(args: argparse.Namespace, out: Console) -> int:
    check_out_dir(args.out)
    if args.report:
        from pktemu.report import dot_path
        dot_path()                         # Graphviz missing: say so before anything runs
    t = load_topology(args.topology)
    names = args.scenario or list(t.scenarios)
    for n in names:                        # fail on bad names, rules or apps before writing anything
        Engine(t, t.scenario(n), args.seed)
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                  TextColumn("{task.fields[vt]}"), console=out, transient=True,
                  disable=args.quiet or not out.is_terminal) as prog:
        for n in names:
            task = prog.add_task(n, total=1.0, vt="")

            def update(now: float, end: float, task: TaskID = task) -> None:
                prog.update(task, completed=now / max(end, 1e-9), vt=f"t={now:.3f}s")

            with Network(t, n, args.seed, capture=args.out, keep_frames=False) as net:
                events = net.run(progress=update)
                path = net.write()
            if args.report:
                from pktemu.report import write_report
                write_report(path, t)
            warn_failed_actions(net.engine)
            res = ScenarioOutcome(n, path, net.frames, net.engine.drops, net.engine.sim.now, events)
            prog.remove_task(task)
            if not args.quiet:
                report(out, res)
    return 0


def warn_failed_actions(engine: Engine) -> None:
    """A timeline command that failed as the real tool would (timeline.txt says so too)."""
    for rec in engine.actions:
        if rec.failed:
            print(f"pktemu: warning: {rec.where}: {rec.command} at {rec.t / 1e9:.3f} s failed: {rec.output}",
                  file=sys.stderr)


@dataclass
class ScenarioOutcome:
    name: str
    out_dir: str
    counts: dict[str, int]
    drops: list[Drop]
    virtual_ns: int
    events: int


def report(out: Console, res: ScenarioOutcome) -> None:
    table = Table(title=f"{res.name}  ({res.virtual_ns / 1e9:.3f} s virtual, {plural(res.events, 'event')})",
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
        out.print(f"  {plural(len(res.drops), 'frame')} dropped (drops.txt):")
        for reason, n in sorted(by_reason.items()):
            out.print(f"    {n:6d}  {reason}")
    out.print(f"  written to {res.out_dir}")
