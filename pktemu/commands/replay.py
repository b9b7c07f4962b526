"""`pktemu replay CAPTURE --topology TOPOLOGY --inject NODE/IFNAME`: replay a capture through the network.

The client side of the capture enters at NODE/IFNAME as if sent by that veth's peer, mapped onto
the topology's addresses with --map; the emulated pods answer; the run is written as `pktemu run`
writes a scenario (OUT/NAME/pcap/*.pcap, all.pcapng, state files) plus replay.json. See
docs/replay.md.
"""
from __future__ import annotations

import argparse
import json

from rich.console import Console

from pktemu.commands import add_output, add_topology, emit, output_format, seed_arg
from pktemu.errors import PktemuError
from pktemu.io.run import check_out_dir
from pktemu.replay.run import ReplayOptions, replay
from pktemu.units import parse_duration

NAME = "replay"
HELP = "replay a pcap/pcapng capture through a topology"
ORDER = 15


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("capture", help="pcap or pcapng file (Ethernet, 802.1Q, Linux SLL/SLL2)")
    add_topology(p, positional=False)
    p.add_argument("--inject", required=True, metavar="NODE/IFNAME",
                   help="veth end where the frames arrive, as if from its peer (e.g. node1/veth-client)")
    p.add_argument("--map", action="append", default=[], metavar="OLD=NEW",
                   help="rewrite an address or network (repeatable): 192.168.1.7=10.0.1.2, "
                        "192.168.1.0/24=10.0.1.0/24")
    p.add_argument("--split", default="syn", metavar="MODE",
                   help="which side is replayed: syn (default), cidr:NET[,NET], port[:P,...], all")
    rate = p.add_mutually_exclusive_group()
    rate.add_argument("--speed", type=float, default=1.0, metavar="X", help="multiply the replay rate by X")
    rate.add_argument("--pps", type=float, default=None, metavar="N", help="send N packets per second")
    rate.add_argument("--topspeed", action="store_true", help="send as fast as the flows allow")
    p.add_argument("--loop", type=int, default=1, metavar="N", help="replay the capture N times")
    p.add_argument("--fix-checksums", action="store_true",
                   help="recompute IP/TCP/UDP/ICMP checksums (default: bad ones stay bad)")
    p.add_argument("--answer-timeout", default="1s", metavar="DURATION",
                   help="how long a TCP segment waits for the server's answer it needs (default 1s)")
    p.add_argument("--settle", default="1s", metavar="DURATION",
                   help="virtual time captured after the last frame (default 1s)")
    p.add_argument("--scenario", default=None, help="apply this scenario's overrides (not its traffic)")
    p.add_argument("--seed", type=seed_arg, default=None, help="override the topology's seed")
    p.add_argument("--name", default=None, help="output directory name (default replay-<capture name>)")
    p.add_argument("--out", default="pcaps", help="output root directory (default: pcaps)")
    add_output(p, json_alias=True)
    p.add_argument("-q", "--quiet", action="store_true")


def run(args: argparse.Namespace, out: Console) -> int:
    fmt = output_format("replay", args)
    check_out_dir(args.out)
    opts = ReplayOptions(
        inject=args.inject, maps=list(args.map), split=args.split, speed=args.speed, pps=args.pps,
        topspeed=args.topspeed, loops=args.loop, fix_checksums=args.fix_checksums,
        answer_timeout=parse_duration(args.answer_timeout, "--answer-timeout"),
        settle=parse_duration(args.settle, "--settle"), scenario=args.scenario, seed=args.seed,
        name=args.name)
    if opts.answer_timeout <= 0:
        raise PktemuError("--answer-timeout: must be above 0")
    stats = replay(args.capture, args.topology, opts, args.out)
    if fmt != "text":
        emit(json.loads(json.dumps(stats.to_json(), sort_keys=True)), fmt)   # sorted, as --json was
    elif not args.quiet:
        for line in stats.text():
            out.print(line.expandtabs(4), highlight=False, soft_wrap=True)
        out.print(f"written to {stats.out_dir}", highlight=False, soft_wrap=True)
    return 0
