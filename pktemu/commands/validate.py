"""`pktemu validate TOPOLOGY`: check a file (and its rules files and apps) without running it."""
from __future__ import annotations

import argparse
import sys

from rich.console import Console

from pktemu.commands import add_output, add_topology, emit, plural
from pktemu.infile import RULES_MAX_BYTES, read_text
from pktemu.io.topofile import load_topology
from pktemu.netfilter.lint import warnings
from pktemu.netfilter.xtables import load_rules
from pktemu.network import Network

NAME = "validate"
HELP = "check a topology file without running it"
ORDER = 20


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_topology(p)
    add_output(p)


def run(args: argparse.Namespace, out: Console) -> int:
    t = load_topology(args.topology)
    for sc in tuple(t.scenarios.values()) or (None,):
        Network(t, sc)                      # building checks the rules files and app parameters
    found = []
    for path in dict.fromkeys(m.iptables for m in t.nodes.values() if m.iptables):
        rs = load_rules(read_text(path, "rules file", RULES_MAX_BYTES), path)
        for w in warnings(rs):
            print(f"pktemu: warning: {path}: {w}", file=sys.stderr)
            found.append({"file": path, "warning": w})
    if args.output != "text":
        emit({"topology": args.topology, "valid": True, "nodes": list(t.nodes), "veth_pairs": len(t.veths),
              "scenarios": list(t.scenarios), "warnings": found}, args.output)
        return 0
    out.print(f"{args.topology}: OK — {plural(len(t.nodes), 'node')}, {plural(len(t.veths), 'veth pair')}, "
              f"{plural(len(t.scenarios), 'scenario')} ({', '.join(t.scenarios) or 'none'})")
    return 0
