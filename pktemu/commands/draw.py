"""`pktemu draw TOPOLOGY -o FILE.svg|png`: the topology diagram alone, for docs and slides."""
from __future__ import annotations

import argparse
import os

from rich.console import Console

from pktemu.commands import add_topology
from pktemu.errors import PktemuError
from pktemu.io.atomic import write_bytes_atomic
from pktemu.io.topofile import load_topology
from pktemu.report.layout import dot_path, from_topology, render, to_dot

NAME = "draw"
HELP = "draw a topology as an SVG or PNG diagram (Graphviz)"
ORDER = 25
FORMATS = {".svg": "svg", ".png": "png"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_topology(p)
    p.add_argument("-o", "--output", metavar="FILE", required=True,
                   help="the picture to write: FILE.svg or FILE.png")
    p.add_argument("--scenario", metavar="NAME", help="name the scenario in the title (it must exist)")


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
    dot_path()
    write_bytes_atomic(args.output, render(to_dot(from_topology(t, args.scenario)), fmt))
    return 0
