"""`pktemu report OUT_DIR`: write report.html into each scenario folder of an existing run."""
from __future__ import annotations

import argparse
import os

from rich.console import Console

from pktemu.commands import plural
from pktemu.errors import PktemuError
from pktemu.io.atomic import write_text_atomic
from pktemu.io.topofile import load_topology
from pktemu.report import REPORT_NAME, build_report, dot_path, scenario_dirs
from pktemu.report.flows import build_flows
from pktemu.report.page import standalone_ladder
from pktemu.report.runread import read_run

NAME = "report"
HELP = "write report.html (topology, per-flow ladders, conntrack, counters) from a run's output"
ORDER = 15


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out_dir", metavar="OUT_DIR",
                   help="a run's output folder (e.g. pcaps) or one scenario's folder (pcaps/s1-clusterip)")
    p.add_argument("-t", "--topology", metavar="TOPOLOGY",
                   help="the topology the run used: draws routes, rules files and Services too "
                   "(report.html only: not with --flow)")
    p.add_argument("--flow", type=int, metavar="N",
                   help="write only flow N's ladder (numbered as in the report) as an SVG, to -o FILE.svg")
    p.add_argument("--packets", type=int, metavar="K", help="with --flow: only its first K packets")
    p.add_argument("-o", "--output", metavar="FILE.svg", help="with --flow: the SVG file to write")
    p.add_argument("-q", "--quiet", action="store_true")


def run(args: argparse.Namespace, out: Console) -> int:
    if args.flow is not None or args.output is not None or args.packets is not None:
        return _one_ladder(args)
    dirs = scenario_dirs(args.out_dir)
    t = load_topology(args.topology) if args.topology else None
    dot_path()
    pages = [(d, build_report(d, t)) for d in dirs]      # every page built before any is written
    for d, html in pages:
        write_text_atomic(f"{d.rstrip('/')}/{REPORT_NAME}", html)
        if not args.quiet:
            out.print(f"wrote {d.rstrip('/')}/{REPORT_NAME}", soft_wrap=True, markup=False, highlight=False)
    if not args.quiet and len(pages) > 1:
        out.print(f"{plural(len(pages), 'report')} written")
    return 0


def _one_ladder(args: argparse.Namespace) -> int:
    """`--flow N -o FILE.svg`: one flow's ladder alone, for docs and slides."""
    if args.flow is None or args.output is None:
        raise PktemuError("report: --flow N and -o FILE.svg go together (--packets K is optional)")
    if args.topology is not None:
        raise PktemuError("report: -t TOPOLOGY draws the topology of report.html; a flow's ladder (--flow) "
                          "does not use it: leave -t out")
    if not args.output.lower().endswith(".svg"):
        raise PktemuError(f"report: -o {args.output}: the file name must end in .svg")
    if args.packets is not None and args.packets < 1:
        raise PktemuError(f"report: --packets {args.packets}: must be 1 or more")
    folder = os.path.dirname(os.path.abspath(args.output))
    if not os.path.isdir(folder):
        raise PktemuError(f"report: -o {args.output}: the folder {folder} does not exist")
    dirs = scenario_dirs(args.out_dir)
    if len(dirs) != 1:
        raise PktemuError(f"report: {args.out_dir}: --flow needs one scenario's folder, not {len(dirs)}")
    run = read_run(dirs[0])
    flows = build_flows(run)
    if not 1 <= args.flow <= len(flows):
        raise PktemuError(f"report: --flow {args.flow}: {dirs[0]} has flows 1 to {len(flows)}")
    write_text_atomic(args.output, standalone_ladder(run, flows[args.flow - 1], args.packets))
    return 0
