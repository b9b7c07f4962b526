"""`pktemu rules TOPOLOGY --node NODE [--scenario S] [--at T]`: a node's ruleset, as `iptables-save`.

The network is built as a run would build it (rules files, kube-proxy's first sync) and, with
`--scenario`, its overrides and timeline apply; the virtual clock then runs to `--at` (no
traffic is started), so the output shows the rules kube-proxy has written by then.
"""
from __future__ import annotations

import argparse
import sys

from rich.console import Console

from pktemu.errors import PktemuError
from pktemu.io.topofile import load_topology
from pktemu.netfilter.xtables import save_rules
from pktemu.network import Network
from pktemu.units import parse_duration

NAME = "rules"
HELP = "print a node's iptables rules (iptables-save format)"
ORDER = 30


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("topology")
    p.add_argument("--node", required=True, help="the node (or pod) whose rules to print")
    p.add_argument("--scenario", help="apply this scenario's overrides and timeline")
    p.add_argument("--at", default="0s", help="virtual time to print the rules at, e.g. 2.5s (default 0s)")
    p.add_argument("-c", "--counters", action="store_true",
                   help="with packet and byte counters (iptables-save -c)")


def run(args: argparse.Namespace, out: Console) -> int:
    t = load_topology(args.topology)
    sc = t.scenario(args.scenario)
    at = parse_duration(args.at, "--at")
    net = Network(t, sc)
    node = net.nodes.get(args.node)
    if node is None:
        raise PktemuError(f"{args.topology}: no node or pod named {args.node!r} "
                          f"(have: {', '.join(net.nodes)})")
    net.sim.run(until=at)
    rs = node.nf.ruleset
    if rs is None:
        raise PktemuError(f"{args.topology}: node {args.node} has no iptables rules (no `iptables:` file "
                          "and no kube-proxy)")
    sys.stdout.write(save_rules(rs, counters=args.counters))
    return 0
