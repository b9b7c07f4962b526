"""`pktemu run TOPOLOGY`: run scenarios and write pcaps, state files and the merged pcapng."""
from __future__ import annotations

import argparse
import contextlib
import gc
import sys
from collections.abc import Iterator
from collections import Counter
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn
from rich.table import Table

from pktemu.commands import add_output, add_topology, emit, plural, seed_arg
from pktemu.errors import PktemuError
from pktemu.api.network import Network
from pktemu.io.run import check_out_dir
from pktemu.io.topofile import load_topology
from pktemu.netfilter.gc_pause import hold_frozen, release_frozen
from pktemu.network import Drop
from pktemu.network import Network as Engine
from pktemu.scaleout.executor import check_options

NAME = "run"
HELP = "run a topology's scenarios and write pcaps"
ORDER = 10


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_topology(p)
    p.add_argument("--scenario", action="append", help="run only this scenario (repeatable)")
    p.add_argument("--out", default="pcaps", help="output directory (default: pcaps)")
    p.add_argument("--seed", type=seed_arg, default=None, help="override the topology's seed")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("--report", action="store_true",
                   help="also write report.html (topology, flow ladders, conntrack, counters) per scenario")
    add_output(p)
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="run the scenarios in parallel on a local Dask cluster of N processes")
    p.add_argument("--scheduler", default=None, metavar="tcp://HOST:PORT",
                   help="run the scenarios on the Dask cluster of this scheduler")


@contextlib.contextmanager
def long_lived() -> Iterator[list[bool]]:
    """What the block makes lives as long as the run (the topology, every scenario's network): the
    cyclic GC does not run while it is made, nor pass over it again after (gc.freeze; one pass over
    a 100-node cluster's objects costs a tenth of a second, and a run made several). Yields a list
    that holds, once the block is done, whether it froze: not when something else of the process
    froze objects already (theirs to unfreeze)."""
    froze = [False]
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield froze
    finally:
        froze[0] = hold_frozen()
        if collecting:
            gc.enable()


def run(args: argparse.Namespace, out: Console) -> int:
    check_options(args.workers, args.scheduler)
    check_out_dir(args.out)
    if args.report:
        from pktemu.report import dot_path
        dot_path()                         # Graphviz missing: say so before anything runs
    froze = [False]
    try:
        with long_lived() as froze:
            t = load_topology(args.topology)
            names = args.scenario or list(t.scenarios)
            if not names:                  # nothing would run, and nothing be written: say so
                raise PktemuError(f"{t.path}: no scenarios to run: add one under scenarios: "
                                  "(docs/topology.md, Scenarios)")
            # fail on bad names, rules or apps before writing anything; each network is built once
            engines = {n: Engine(t, t.scenario(n), args.seed) for n in names}
        return _run(args, out, t, names, engines)
    finally:
        if froze[0]:
            release_frozen()


def _run(args: argparse.Namespace, out: Console, t: Any, names: list[str], engines: dict[str, Engine]) -> int:
    done: list[ScenarioOutcome] = []
    if args.workers is not None or args.scheduler is not None:
        done += on_workers(args, out, t, names)
        names = []                         # all run already
    shown = not (args.quiet or args.output != "text" or not out.is_terminal)
    prog: Progress | _NoProgress
    with (Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                   TextColumn("{task.fields[vt]}"), console=out, transient=True) if shown
          else _NoProgress()) as prog:
        for n in names:
            task = prog.add_task(n, total=1.0, vt="")

            def update(now: float, end: float, task: TaskID = task) -> None:
                prog.update(task, completed=now / max(end, 1e-9), vt=f"t={now:.3f}s")

            with Network(t, n, args.seed, capture=args.out, keep_frames=False,
                         engine=engines.pop(n, None)) as net:
                events = net.run(progress=update)
                path = net.write()
            if args.report:
                from pktemu.report import write_report
                write_report(path, t)
            for line in net.warnings():
                print(line, file=sys.stderr)
            res = ScenarioOutcome(n, path, net.frames, net.engine.drops, net.engine.sim.now, events)
            prog.remove_task(task)
            done.append(res)
            if not args.quiet and args.output == "text":
                report(out, res)
    if args.output != "text":
        emit({"topology": args.topology, "out": args.out, "scenarios": [as_data(r) for r in done]},
             args.output)
    return 0


class _NoProgress:
    """No bar (quiet, not a terminal, JSON): nothing of rich's live display is made."""

    def __enter__(self) -> "_NoProgress":
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def add_task(self, *args: Any, **kwargs: Any) -> TaskID:
        return TaskID(0)

    def update(self, *args: Any, **kwargs: Any) -> None:
        pass

    def remove_task(self, task_id: TaskID) -> None:
        pass


def on_workers(args: argparse.Namespace, out: Console, t: Any, names: list[str]) -> list[ScenarioOutcome]:
    """The scenarios as Dask tasks (pktemu.scaleout): the same files, written here in `names` order."""
    from pktemu.scaleout.runner import run_scenarios
    done: list[ScenarioOutcome] = []

    def finished(d: Any, path: str) -> None:
        if args.report:
            from pktemu.report import write_report
            write_report(path, t)
        for line in d.warnings:
            print(line, file=sys.stderr)
        done.append(ScenarioOutcome(d.name, path, d.counts, d.drops, d.virtual_ns, d.events))
        if not args.quiet and args.output == "text":
            report(out, done[-1])

    run_scenarios(t, names, args.seed, args.out, args.workers, args.scheduler, finished)
    return done


@dataclass
class ScenarioOutcome:
    name: str
    out_dir: str
    counts: dict[str, int]
    drops: list[Drop]
    virtual_ns: int
    events: int


def report(out: Console, res: ScenarioOutcome) -> None:
    # the title on its own line: as the table's title it was wrapped to the table's width
    # ("x  (0.000 s virtual, 0    " then "events)") when the capture point names are short
    out.print(f"{res.name}  ({res.virtual_ns / 1e9:.3f} s virtual, {plural(res.events, 'event')})",
              soft_wrap=True, highlight=False, markup=False)
    table = Table()
    table.add_column("capture point")
    table.add_column("frames", justify="right")
    for name, n in res.counts.items():
        table.add_row(name, str(n))
    out.print(table)
    if res.drops:       # a line is one line (a terminal wraps it; a pipe or a log keeps it whole for grep)
        out.print(f"  {plural(len(res.drops), 'frame')} dropped (drops.txt):", soft_wrap=True)
        for (node, where, reason), n in drop_reasons(res.drops):
            out.print(f"    {n:6d}  {node} {where}: {reason}", soft_wrap=True)
    out.print(f"  written to {res.out_dir}", soft_wrap=True)


def drop_reasons(drops: list[Drop]) -> list[tuple[tuple[str, str, str], int]]:
    """(node, place, reason) -> how many frames, sorted; a netfilter drop's reason ends with the
    rule's save text (see drops.txt), so those count by rule name."""
    by = Counter((d.node, d.where, d.reason.split(": -A ", 1)[0].split(": -P ", 1)[0]) for d in drops)
    return sorted(by.items())


def as_data(res: ScenarioOutcome) -> dict[str, Any]:
    """One scenario's outcome for `-o json|yaml`: what the text table and drop lines say."""
    return {"scenario": res.name, "out_dir": res.out_dir, "virtual_s": res.virtual_ns / 1e9,
            "events": res.events, "frames": dict(res.counts),
            "drops": {"count": len(res.drops),
                      "reasons": [{"node": node, "where": where, "reason": reason, "count": n}
                                  for (node, where, reason), n in drop_reasons(res.drops)]}}
