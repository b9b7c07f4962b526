"""`python -m pktemu.bench [--quick] [--json]`: every figure of issue 15 with its goal (see pktemu.bench)."""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from pktemu.bench import Figure, spread
from pktemu.bench.cluster import PODS, cluster_figures
from pktemu.bench.hops import hop_figures
from pktemu.bench.rules import mode_figures, sync_figures


@dataclass
class Plan:
    """The sizes and repetitions of one run: the full benchmark, or --quick's smaller one (about a minute)."""
    reps: int
    rule_sizes: tuple[int, int]
    packets: int
    sync_services: int
    direct: tuple[int, int]
    clients: tuple[int, int]
    cluster_reps: int


FULL = Plan(reps=5, rule_sizes=(10_000, 50_000), packets=10_000, sync_services=10_000,
            direct=(100, 1000), clients=(50, 100), cluster_reps=2)
QUICK = Plan(reps=3, rule_sizes=(1000, 5000), packets=1000, sync_services=1000,
             direct=(10, 100), clients=(5, 10), cluster_reps=1)


def measure(plan: Plan, quick: bool, say: "Say") -> list[Figure]:
    figs = hop_figures(quick, plan.reps, say)
    figs += cluster_figures(plan.direct, plan.clients, plan.cluster_reps, say)
    for mode in ("iptables", "nftables"):
        figs += mode_figures(mode, plan.rule_sizes, max(2, plan.reps - 2), plan.packets, say)
    figs += sync_figures(plan.sync_services, max(2, plan.reps - 2), say)
    return figs


class Say:
    """Progress on stderr (the figures take minutes), with the time since the start."""

    def __init__(self, quiet: bool) -> None:
        self.quiet, self.t0 = quiet, time.perf_counter()

    def __call__(self, what: str) -> None:
        if not self.quiet:
            print(f"[{time.perf_counter() - self.t0:6.1f} s] {what}", file=sys.stderr, flush=True)


def _num(v: float) -> str:
    """Four significant digits: a ratio of 1.096 against a goal of 1.1 must not print as 1.1."""
    return f"{v:.4g}" if abs(v) < 1000 else f"{v:,.0f}"


def table(figs: list[Figure], title: str) -> Table:
    t = Table(title=title, title_justify="left")
    t.add_column("figure")
    t.add_column("A / B (B: the baseline, same run)", ratio=1)
    for col in ("A/B: median \\[min-max]", "A: median", "goal", "met"):
        t.add_column(col, justify="right" if col.startswith("A") else "left", no_wrap=True)
    for f in figs:
        r = spread(f.ratios)
        absolute = f"{_num(spread(f.absolute)['median'])} {f.unit}" if f.absolute else ""
        if "files_us_per_hop" in f.extra:
            absolute += f" (making its files alone: {_num(f.extra['files_us_per_hop'])} {f.unit})"
        if "exponent" in f.extra:
            absolute += f" (exponent {f.extra['exponent']:.2f})"
        met = f.met()
        t.add_row(f.key, f"{f.what} / [dim]{f.baseline}[/dim]",
                  f"{_num(r['median'])} \\[{_num(r['min'])}-{_num(r['max'])}]", absolute,
                  f.goal.text if f.goal else "-",
                  "-" if met is None else ("[green]yes[/green]" if met else "[red]no[/red]"))
    return t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pktemu.bench", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help=f"smaller sizes (1,000 / 5,000 Services, clusters of 10 and 100 x {PODS}): "
                         "about a minute")
    ap.add_argument("--json", action="store_true",
                    help="every figure as JSON on stdout (the table goes to stderr, unless -q)")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    a = ap.parse_args(argv)
    plan = QUICK if a.quick else FULL
    figs = measure(plan, a.quick, Say(a.quiet))
    title = "python -m pktemu.bench" + (" --quick" if a.quick else "")
    if a.json:                          # the JSON alone on stdout; the table with the progress lines
        print(json.dumps({"quick": a.quick, "python": platform.python_version(),
                          "figures": {f.key: f.as_data() for f in figs}}, indent=2))
        if not a.quiet:
            Console(stderr=True, width=200).print(table(figs, title))
    else:
        Console(width=200).print(table(figs, title))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
