"""The `pktemu` command line: run and validate topologies.

Bad input of any kind is one line on stderr and exit status 2; nothing is written for it.
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from typing import Sequence

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn
from rich.table import Table

from pktemu.errors import PktemuError

EXIT_BAD_INPUT = 2


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line with exit status 2 (its default status)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"pktemu: error: {message}\n")
        raise SystemExit(EXIT_BAD_INPUT)


def _load(path: str):  # type: ignore[no-untyped-def]
    from pktemu.io.topofile import load_topology
    return load_topology(path)


def cmd_validate(args: argparse.Namespace, out: Console) -> int:
    t = _load(args.topology)
    from pktemu.network import Network
    for name in list(t.scenarios) or [None]:
        Network(t, t.scenarios[name] if name else None)   # builds: rules files and apps are checked too
    out.print(f"{args.topology}: OK — {len(t.nodes)} nodes, {len(t.veths)} veth pairs, "
              f"{len(t.scenarios)} scenarios ({', '.join(t.scenarios) or 'none'})")
    return 0


def cmd_run(args: argparse.Namespace, out: Console) -> int:
    from pktemu.io.run import run_scenario
    from pktemu.network import Network
    t = _load(args.topology)
    names = args.scenario or list(t.scenarios)
    for n in names:
        if n not in t.scenarios:
            have = ", ".join(t.scenarios) or "none"
            raise PktemuError(f"{args.topology}: no scenario {n!r} (have: {have})")
    for n in names:                        # fail on bad rules or apps before writing anything
        Network(t, t.scenarios[n], args.seed)
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
                _report(out, res)
    return 0


def _report(out: Console, res) -> None:  # type: ignore[no-untyped-def]
    table = Table(title=f"{res.name}  ({res.virtual_ns / 1e9:.3f} s virtual, {res.events} events)",
                  title_justify="left")
    table.add_column("capture point")
    table.add_column("frames", justify="right")
    for name, n in res.counts.items():
        table.add_row(name, str(n))
    out.print(table)
    if res.drops:
        by_reason = Counter(f"{d.node} {d.where}: {d.reason}" for d in res.drops)
        for reason, n in sorted(by_reason.items()):
            out.print(f"  dropped {n}× {reason}")
    out.print(f"  written to {res.out_dir}")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="pktemu", description="Packet-level emulator of Linux and Kubernetes networking.")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
    r = sub.add_parser("run", help="run a topology's scenarios and write pcaps")
    r.add_argument("topology")
    r.add_argument("--scenario", action="append", help="run only this scenario (repeatable)")
    r.add_argument("--out", default="pcaps", help="output directory (default: pcaps)")
    r.add_argument("--seed", type=int, default=None, help="override the topology's seed")
    r.add_argument("-q", "--quiet", action="store_true")
    r.set_defaults(func=cmd_run)
    v = sub.add_parser("validate", help="check a topology file without running it")
    v.add_argument("topology")
    v.set_defaults(func=cmd_validate)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Console()
    try:
        return int(args.func(args, out))
    except PktemuError as e:
        sys.stderr.write(f"pktemu: error: {e}\n")
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        sys.stderr.write("pktemu: interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
