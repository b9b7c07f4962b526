"""`pktemu draw TOPOLOGY -o FILE.svg|png`: the topology diagram alone, for docs and slides."""
from __future__ import annotations

import argparse
import os

from rich.console import Console

from pktemu.commands import add_topology
from pktemu.errors import PktemuError
from pktemu.io.atomic import write_bytes_atomic
from pktemu.io.topofile import load_topology
from pktemu.report.layout import dot_path, render, to_dot
from pktemu.report.summary import SUMMARY_LIMIT, diagram

NAME = "draw"
HELP = "draw a topology as an SVG or PNG diagram (Graphviz)"
ORDER = 25
FORMATS = {".svg": "svg", ".png": "png"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_topology(p)
    p.add_argument("-o", "--output", metavar="FILE", required=True,
                   help="the picture to write: FILE.svg or FILE.png")
    p.add_argument("--scenario", metavar="NAME", help="name the scenario in the title (it must exist)")
    p.add_argument("--full", action="store_true",
                   help=f"every device of every namespace, however big (past {SUMMARY_LIMIT} namespaces "
                   "each node is otherwise one box, its pods counted)")
    p.add_argument("--node", action="append", default=[], metavar="NAME",
                   help="draw this node (or this pod's node) in full, the others as one box each; repeatable")


def run(args: argparse.Namespace, out: Console) -> int:
    fmt = FORMATS.get(os.path.splitext(args.output)[1].lower())
    if fmt is None:
        raise PktemuError(f"draw: -o {args.output}: the file name must end in .svg or .png")
    folder = os.path.dirname(os.path.abspath(args.output))
    if not os.path.isdir(folder):
        raise PktemuError(f"draw: -o {args.output}: the folder {folder} does not exist")
    if os.path.isdir(args.output):
        raise PktemuError(f"draw: -o {args.output}: is a directory")
    t = load_topology(args.topology)
    if args.scenario is not None:
        t.scenario(args.scenario)
    if args.full and args.node:
        raise PktemuError("draw: --full draws every node in full: give it or --node, not both")
    d = diagram(t, args.scenario, full=args.full, nodes=args.node,
                how=f"pktemu draw {args.topology} -o {args.output}")
    dot_path()
    write_bytes_atomic(args.output, render(to_dot(d), fmt))
    return 0
