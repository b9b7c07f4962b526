"""`pktemu trace TOPOLOGY --from POD|NODE --to IP:PORT[/tcp|udp]`: one packet and its reply, hop by hop.

A freshly built `pktemu.Network` (with the scenario's overrides and timeline when --scenario
is given, not its client traffic) sends one TCP SYN or UDP datagram from the pod's or node's
own stack (`Network.trace`); every device, netfilter hook, matched rule, Python hook, NFQUEUE
verdict, translation and drop on its way and on its reply's way is printed as a tree, in the
style of `nft monitor trace`, or as JSON with --json.
"""
from __future__ import annotations

import argparse
import json
import re

from rich.console import Console

from pktemu.commands import add_topology
from pktemu.api.network import Network
from pktemu.errors import PktemuError
from pktemu.explain.collect import WAIT_NS
from pktemu.io.topofile import load_topology

NAME = "trace"
HELP = "trace one packet and its reply through the emulated network"
ORDER = 30

_TARGET = re.compile(r"^(\d{1,3}(?:\.\d{1,3}){3}):(\d{1,5})(?:/(tcp|udp))?$")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_topology(p)
    p.add_argument("--from", dest="origin", required=True, metavar="POD|NODE",
                   help="where the packet starts: a pod or node, or a Kubernetes pod as namespace/name")
    p.add_argument("--to", dest="target", required=True, metavar="IP:PORT[/tcp|udp]",
                   help="destination (default protocol tcp)")
    p.add_argument("--scenario", help="apply this scenario's overrides (hairpin, sysctls) first")
    p.add_argument("--sport", type=int, default=None, help="source port (default: an ephemeral port)")
    p.add_argument("--seed", type=int, default=None, help="override the topology's seed")
    p.add_argument("--json", action="store_true", help="print the trace as JSON")


def parse_target(text: str) -> tuple[str, int, str]:
    """`10.3.241.152:80/tcp` -> ("10.3.241.152", 80, "tcp"); one-line PktemuError otherwise."""
    m = _TARGET.match(text)
    if m is None or any(int(o) > 255 for o in m.group(1).split(".")) or not 0 < int(m.group(2)) < 65536:
        raise PktemuError(f"trace --to {text!r}: expected IPv4:PORT[/tcp|udp], e.g. 10.3.241.152:80/tcp")
    return m.group(1), int(m.group(2)), m.group(3) or "tcp"


def run(args: argparse.Namespace, out: Console) -> int:
    daddr, dport, proto = parse_target(args.target)
    t = load_topology(args.topology)
    t.scenario(args.scenario)
    if args.sport is not None and not 0 < args.sport < 65536:
        raise PktemuError(f"trace --sport {args.sport}: not a port (1-65535)")
    net = Network(t, args.scenario, args.seed, keep_frames=False, traffic=False)
    tr = net.trace(args.origin, f"{daddr}:{dport}/{proto}", proto, args.sport, timeout=WAIT_NS / 1e9)
    if args.json:
        out.file.write(json.dumps(tr, indent=2) + "\n")
        return 0
    # type(out): the CLI's console class, which reports a closed stdout as the CLI does
    wide = out if out.is_terminal else type(out)(file=out.file, width=10_000, color_system=None)
    wide.print(tr.tree())
    return 0
