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
from pktemu.topo import Topology

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
    size = _size(t)
    if args.output != "text":
        emit({"topology": args.topology, "valid": True, "nodes": list(t.nodes), "veth_pairs": len(t.veths),
              "scenarios": list(t.scenarios), "warnings": found, "size": size}, args.output)
        return 0
    names = ", ".join(t.scenarios) if len(t.scenarios) <= 20 else ", ".join(list(t.scenarios)[:20]) + ", ..."
    out.print(f"{args.topology}: OK — {plural(len(t.nodes), 'node')}, {plural(len(t.veths), 'veth pair')}, "
              f"{plural(len(t.scenarios), 'scenario')} ({names or 'none'})", soft_wrap=True)
    out.print(f"size: {plural(size['nodes'], 'node')} and {plural(size['pods'], 'pod')}, "
              f"{plural(size['interfaces'], 'interface')}, {plural(size['bridges'], 'bridge')}, "
              f"{plural(size['veths'], 'veth pair')}, {plural(size['routes'], 'route')}", soft_wrap=True)
    return 0


def _size(t: Topology) -> dict[str, int]:
    """What the file expanded to (a generated topology is much larger than its text)."""
    ns = t.nodes.values()
    return {"nodes": sum(1 for n in ns if n.kind != "pod"), "pods": sum(1 for n in ns if n.kind == "pod"),
            "interfaces": sum(len(n.interfaces) for n in ns), "bridges": sum(len(n.bridges) for n in ns),
            "veths": len(t.veths), "routes": sum(len(n.routes) for n in ns)}
