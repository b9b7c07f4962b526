"""The `pktemu` command line. Subcommands live in `pktemu.commands`, one module each.

Bad input of any kind is one line on stderr and exit status 2; nothing is written for it.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from rich.console import Console

from pktemu import commands
from pktemu.errors import PktemuError

EXIT_BAD_INPUT = 2


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line with exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"pktemu: error: {message}\n")
        raise SystemExit(EXIT_BAD_INPUT)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="pktemu", description="Packet-level emulator of Linux and Kubernetes networking.")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
    for mod in commands.load_all():
        sp = sub.add_parser(mod.NAME, help=mod.HELP, description=mod.__doc__)
        mod.add_arguments(sp)
        sp.set_defaults(func=mod.run)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Console()
    try:
        return int(args.func(args, out))
    except PktemuError as e:
        sys.stderr.write(f"pktemu: error: {e}\n")
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        sys.stderr.write("pktemu: interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
