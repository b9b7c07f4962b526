"""`pktemu rules TOPOLOGY --node NODE [--scenario S] [--at T]`: a node's ruleset, as `iptables-save`.

The network is built as a run would build it (rules files, kube-proxy's first sync) and, with
`--scenario`, its overrides and timeline apply; the virtual clock then runs to `--at` (no
traffic is started), so the output shows the rules kube-proxy has written by then.
"""
from __future__ import annotations

import argparse
import re
import sys
from typing import Any

from rich.console import Console

from pktemu.commands import add_output, add_topology, emit
from pktemu.errors import PktemuError
from pktemu.io.topofile import load_topology
from pktemu.netfilter.xtables import save_rules
from pktemu.network import Network
from pktemu.units import parse_duration

NAME = "rules"
HELP = "print a node's iptables rules (iptables-save format)"
ORDER = 30


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_topology(p)
    p.add_argument("--node", required=True, help="the node (or pod) whose rules to print")
    p.add_argument("--scenario", help="apply this scenario's overrides and timeline")
    p.add_argument("--at", default="0s", help="virtual time to print the rules at, e.g. 2.5s (default 0s)")
    p.add_argument("-c", "--counters", action="store_true",
                   help="with packet and byte counters (iptables-save -c)")
    add_output(p)


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
    text = save_rules(rs, counters=args.counters)
    if args.output == "text":
        sys.stdout.write(text)
    else:
        emit({"node": args.node, "scenario": args.scenario, "at": args.at, "tables": parse_save(text)},
             args.output)
    return 0


_COUNTERS = re.compile(r"^\[(\d+):(\d+)\] ")


def parse_save(text: str) -> list[dict[str, Any]]:
    """Our own iptables-save text as data: per table its chains (policy, counters) and rules (the
    chain, the `-A` line as iptables-save prints it, counters when asked for), in save order."""
    tables: list[dict[str, Any]] = []
    for line in text.splitlines():
        if line.startswith("*"):
            tables.append({"table": line[1:], "chains": [], "rules": []})
        elif line.startswith(":"):
            name, policy, counts = line[1:].split(" ", 2)
            p, b = counts.strip("[]").split(":")
            tables[-1]["chains"].append({"chain": name, "policy": None if policy == "-" else policy,
                                         "packets": int(p), "bytes": int(b)})
        elif line.startswith(("-A ", "[")):
            rule: dict[str, Any] = {}
            if (m := _COUNTERS.match(line)) is not None:
                rule["packets"], rule["bytes"] = int(m.group(1)), int(m.group(2))
                line = line[m.end():]
            tables[-1]["rules"].append({"chain": line.split(" ", 2)[1], "rule": line, **rule})
    return tables
