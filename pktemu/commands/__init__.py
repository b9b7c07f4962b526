"""`pktemu` subcommands: each module here defines `NAME`, `HELP`, `add_arguments(parser)` and
`run(args, console) -> int`; the CLI finds them by listing this package, so a new command is a
new module and nothing else changes."""
from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
from types import ModuleType
from typing import Any

from pktemu.errors import PktemuError


def load_all() -> list[ModuleType]:
    mods = [importlib.import_module(f"{__name__}.{m.name}") for m in pkgutil.iter_modules(__path__)
            if not m.name.startswith("_")]
    return sorted(mods, key=lambda m: getattr(m, "ORDER", 50))


def plural(n: int, word: str, words: str | None = None) -> str:
    """`1 frame`, `2 frames`, `0 frames`: counts in human output read as English."""
    return f"{n} {word if n == 1 else words or word + 's'}"


def add_topology(p: argparse.ArgumentParser, required: bool = True) -> None:
    """The topology, as `TOPOLOGY` or `-t/--topology TOPOLOGY`, the same in every command."""
    p.add_argument("topology", nargs="?", metavar="TOPOLOGY", help="topology file (YAML)")
    p.add_argument("-t", "--topology", dest="topology_opt", metavar="TOPOLOGY",
                   help="the topology file, as an option")
    p.set_defaults(topology_required=required)


def resolve_topology(cmd: str, args: argparse.Namespace) -> None:
    """Fold `-t/--topology` into `args.topology`; one-line errors for none or two different ones."""
    if not hasattr(args, "topology_opt"):
        return
    pos, opt = args.topology, args.topology_opt
    if pos is not None and opt is not None and pos != opt:
        raise PktemuError(f"{cmd}: two topologies given ({pos!r} and -t {opt!r}): give one")
    args.topology = pos if pos is not None else opt
    if args.topology is None and args.topology_required:
        raise PktemuError(f"{cmd}: the topology is required (TOPOLOGY or -t/--topology TOPOLOGY)")


def add_output(p: argparse.ArgumentParser) -> None:
    """`-o/--output text|json|yaml`, as kubectl spells it: machine output for scripts."""
    p.add_argument("-o", "--output", choices=("text", "json", "yaml"), default="text",
                   help="output format (default text)")


def emit(obj: Any, fmt: str) -> None:
    """Print `obj` on stdout as JSON (indented, keys in the order built) or YAML."""
    if fmt == "json":
        sys.stdout.write(json.dumps(obj, indent=2) + "\n")
    else:
        import yaml

        sys.stdout.write(yaml.safe_dump(obj, sort_keys=False, allow_unicode=True, width=1_000_000))
