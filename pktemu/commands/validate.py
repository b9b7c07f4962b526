"""`pktemu validate TOPOLOGY`: check a file (and its rules files and apps) without running it."""
from __future__ import annotations

import argparse

from rich.console import Console

from pktemu.io.topofile import load_topology
from pktemu.network import Network

NAME = "validate"
HELP = "check a topology file without running it"
ORDER = 20


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("topology")


def run(args: argparse.Namespace, out: Console) -> int:
    t = load_topology(args.topology)
    for sc in tuple(t.scenarios.values()) or (None,):
        Network(t, sc)                      # building checks the rules files and app parameters
    out.print(f"{args.topology}: OK — {len(t.nodes)} nodes, {len(t.veths)} veth pairs, "
              f"{len(t.scenarios)} scenarios ({', '.join(t.scenarios) or 'none'})")
    return 0
