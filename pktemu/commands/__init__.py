"""`pktemu` subcommands: each module here defines `NAME`, `HELP`, `add_arguments(parser)` and
`run(args, console) -> int`; the CLI finds them by listing this package, so a new command is a
new module and nothing else changes."""
from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from pktemu import stdout
from pktemu.errors import PktemuError
from pktemu.units import SEED_MAX

if TYPE_CHECKING:
    from pktemu.api.network import Network
    from pktemu.topo import Topology


def load_all() -> list[ModuleType]:
    mods = [importlib.import_module(f"{__name__}.{m.name}") for m in pkgutil.iter_modules(__path__)
            if not m.name.startswith("_")]
    return sorted(mods, key=lambda m: getattr(m, "ORDER", 50))


def plural(n: int, word: str, words: str | None = None) -> str:
    """`1 frame`, `2 frames`, `0 frames`: counts in human output read as English."""
    return f"{n} {word if n == 1 else words or word + 's'}"


#: the example topologies shipped in the package (the repository's topologies/, byte for byte)
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def add_topology(p: argparse.ArgumentParser, required: bool = True, *, positional: bool = True,
                 short: bool = True) -> None:
    """The topology, as `TOPOLOGY`, `-t/--topology TOPOLOGY` or `--example NAME`, the same in every
    command (`positional=False` where another argument is positional; `short=False` where the
    command gives `-t` its own meaning too, as `rules` does for iptables-save's `-t TABLE`)."""
    if positional:
        p.add_argument("topology", nargs="?", metavar="TOPOLOGY", help="topology file (YAML)")
    else:
        p.set_defaults(topology=None)
    if short:
        p.add_argument("-t", "--topology", dest="topology_opt", metavar="TOPOLOGY",
                       help="the topology file, as an option")
    p.add_argument("--example", nargs="?", const="", metavar="NAME",
                   help="a topology shipped with pktemu (e.g. service-test); alone, list them")
    p.set_defaults(topology_required=required, topology_opt=None, topology_positional=positional)


def examples() -> dict[str, Path]:
    """Name -> file of each shipped example topology, by name."""
    return {f.stem: f for f in sorted(EXAMPLES.glob("*.yaml"))}


def examples_text() -> str:
    """What `--example` alone prints: each example's name and the first line of its comment."""
    have = examples()
    width = max((len(n) for n in have), default=0)
    lines = []
    for name, f in have.items():
        first = next((ln[1:].strip() for ln in f.read_text(encoding="utf-8").splitlines()
                      if ln.startswith("#")), "")
        lines.append(f"{name:{width}s}  {first}".rstrip())
    return "\n".join(lines) + f"\n(in {EXAMPLES}; use one with --example NAME)\n"


def resolve_topology(cmd: str, args: argparse.Namespace) -> None:
    """Fold `-t/--topology` and `--example` into `args.topology`; one-line errors for none or two."""
    if not hasattr(args, "topology_opt"):
        return
    pos, opt, ex = args.topology, args.topology_opt, getattr(args, "example", None)
    if pos is not None and opt is not None and pos != opt:
        raise PktemuError(f"{cmd}: two topologies given ({pos!r} and -t {opt!r}): give one")
    args.topology = pos if pos is not None else opt
    if ex:
        if args.topology is not None:
            raise PktemuError(f"{cmd}: a topology ({args.topology!r}) and --example {ex!r} given: give one")
        have = examples()
        name = ex[:-5] if ex.endswith(".yaml") else ex
        if name not in have:
            raise PktemuError(f"{cmd} --example {ex!r}: no such example (have: {', '.join(have)})")
        args.topology = str(have[name])
    if args.topology is None and args.topology_required:
        forms = "TOPOLOGY, -t/--topology TOPOLOGY" if args.topology_positional else "-t/--topology TOPOLOGY"
        raise PktemuError(f"{cmd}: the topology is required ({forms} or --example NAME)")


def seed_arg(text: str) -> int:
    """`--seed N`: the range a topology's `seed:` has (0 to 2**64-1), as argparse's one-line error."""
    try:
        n = int(text)
    except ValueError:
        n = -1
    if not 0 <= n <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"{text!r} is not a seed (an integer from 0 to 2**64-1)")
    return n


def add_output(p: argparse.ArgumentParser, json_alias: bool = False) -> None:
    """`-o/--output text|json|yaml`, as kubectl spells it: machine output for scripts (and the
    older `--json`, kept as another way to say `-o json`)."""
    p.add_argument("-o", "--output", choices=("text", "json", "yaml"), default="text",
                   help="output format (default text)")
    if json_alias:
        p.add_argument("--json", action="store_true", help="the same as -o json")


def output_format(cmd: str, args: argparse.Namespace) -> str:
    """`text`, `json` or `yaml` from `-o` and `--json`; a one-line error when they disagree."""
    fmt = args.output
    if getattr(args, "json", False):
        if fmt == "yaml":
            raise PktemuError(f"{cmd}: --json and -o yaml given: give one")
        fmt = "json"
    return str(fmt)


def emit(obj: Any, fmt: str) -> None:
    """Print `obj` on stdout as JSON (indented, keys in the order built) or YAML."""
    if fmt == "json":
        stdout.write(json.dumps(obj, indent=2) + "\n")
    else:
        import yaml

        stdout.write(yaml.safe_dump(obj, sort_keys=False, allow_unicode=True, width=1_000_000))



def network_at(topology: Topology, scenario: str | None, node: str,
               seed: int | None = None) -> tuple[Network, str]:
    """A `pktemu.Network` of `topology` with `scenario`'s overrides, timeline and traffic scheduled,
    and the namespace `node` names (itself, or a Pod's `namespace/name`), checked before any time
    passes so that a wrong name is refused at once."""
    from pktemu.api.names import find_node
    from pktemu.api.network import Network

    net = Network(topology, scenario, seed, keep_frames=False)
    return net, find_node(net.engine, f"--node {node!r}", node).name


def advance_to(net: Network, at_ns: int) -> None:
    """Run `net` up to and including virtual time `at_ns`: the traffic and timeline until then (the
    scenario's end, which stops `pktemu run`, does not stop this), in slices so a signal is acted on."""
    from pktemu import interrupt
    from pktemu.api.network import SLICE_NS

    sim = net.engine.sim
    try:
        while True:
            sim.stopped = False
            sim.run(until=min(at_ns, sim.now + SLICE_NS))
            interrupt.check()
            if not sim.stopped and (sim.now >= at_ns or not sim.pending):
                break
    finally:
        sim.stopped = False
