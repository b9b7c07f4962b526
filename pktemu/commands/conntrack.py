"""`pktemu conntrack TOPOLOGY --node NODE [--scenario S] [--at T]`: a node's `conntrack -L`.

The network is built as `pktemu run` builds it; with `--scenario` its overrides, timeline and
client traffic play up to `--at` (by default to the scenario's end, where `pktemu run` writes
`conntrack-<node>.txt`, so the two agree), then the node's connection tracking table is printed
as `conntrack -L` prints it, each entry's timeout counted down to that instant, or as data.
"""
from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console

from pktemu import stdout
from pktemu.commands import add_output, add_topology, advance_to, emit, network_at
from pktemu.api.state import CtEntry
from pktemu.io.topofile import load_topology
from pktemu.netfilter.conntrack_tuple import PROTO_NAMES
from pktemu.units import parse_duration

NAME = "conntrack"
HELP = "print a node's conntrack table (conntrack -L) at a virtual time"
ORDER = 32


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_topology(p)
    p.add_argument("--node", required=True, help="the node (or pod, or namespace/name) whose table to print")
    p.add_argument("--scenario", help="play this scenario's overrides, timeline and traffic")
    p.add_argument("--at", default=None,
                   help="virtual time to print the table at, e.g. 0.5s (default: the scenario's end, "
                        "or 0s without --scenario)")
    add_output(p)


def run(args: argparse.Namespace, out: Console) -> int:
    t = load_topology(args.topology)
    t.scenario(args.scenario)
    at = parse_duration(args.at, "--at") if args.at is not None else None
    net, name = network_at(t, args.scenario, args.node)
    if at is None and args.scenario is not None:
        net.run()                          # as `pktemu run` plays it: conntrack-<node>.txt's instant
    else:
        advance_to(net, at or 0)
    table = net.conntrack(name)
    if args.output == "text":
        stdout.write(table.text)
        return 0
    emit({"node": args.node, "scenario": args.scenario, "at_s": net.now,
          "entries": [_entry(e) for e in table.entries]}, args.output)
    return 0


def _entry(e: CtEntry) -> dict[str, Any]:
    """One entry as data: the protocol, the TCP state, both tuples, the timeout and the -L line."""
    def tup(t: tuple[str, int, str, int]) -> dict[str, Any]:
        return {"src": t[0], "sport": t[1], "dst": t[2], "dport": t[3]}

    return {"proto": PROTO_NAMES.get(e.proto, str(e.proto)), "state": e.state, "original": tup(e.orig),
            "reply": tup(e.reply), "timeout_s": e.timeout, "line": e.line}

