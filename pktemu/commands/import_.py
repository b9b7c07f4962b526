"""`pktemu import DUMP... -o TOPOLOGY.yaml`: a topology of a real cluster, from `pktemu collect`
node dumps and the cluster's Kubernetes objects, that run, trace and replay work on offline.

Each problem met (a file missing from a dump, a device or route pktemu does not emulate, a Pod
that cannot be wired) is one warning line; the import fails (exit 2) only when nothing runnable
is left. docs/import.md describes what is imported and how.
"""
from __future__ import annotations

import argparse
import sys

from rich.console import Console

from pktemu.errors import PktemuError
from pktemu.io.run import check_out_file

NAME = "import"
HELP = "build a topology from pktemu collect dumps and the cluster's Kubernetes objects"
ORDER = 81


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dumps", nargs="+", metavar="DUMP",
                   help="node dumps (pktemu collect archives or folders) and Kubernetes objects "
                        "(pktemu collect --cluster archives, or YAML files)")
    p.add_argument("-o", "--output", metavar="TOPOLOGY.yaml", required=True,
                   help="the topology to write; rules files and the manifest are written beside it")
    p.add_argument("--redact", action="store_true",
                   help="replace node, pod and namespace names and public addresses consistently")
    p.add_argument("--redact-seed", type=int, metavar="N",
                   help="the seed of --redact's mapping (default: random); the same seed maps the same way")
    p.set_defaults(intermixed="dumps")


def run(args: argparse.Namespace, out: Console) -> int:
    from pktemu.importer import Notes
    from pktemu.importer.build import build, write

    target = args.output
    check_out_file(f"import: -o {target}", target, (".yaml", ".yml"))
    _check_writable(f"import: -o {target}", target)
    if args.redact_seed is not None and not args.redact:
        raise PktemuError("import: --redact-seed needs --redact")
    notes = Notes()
    try:
        result = build(args.dumps, target, notes, args.redact_seed, args.redact)
        write(result, target, notes)
    finally:
        notes.print()
    beside = f"; beside it {', '.join(result.files)}" if result.files else ""
    print(f"pktemu: wrote {target} ({result.summary}){beside}", file=sys.stderr)
    return 0


def _check_writable(where: str, target: str) -> None:
    """Make (and remove) the temporary folder the files will be written into, before any dump is read:
    a folder whose mode allows writing may still hold no files (/proc, a read-only mount)."""
    import os

    from pktemu.io.atomic import forget, make_temp_dir, remove_path

    folder = os.path.dirname(os.path.abspath(target))
    try:
        work = make_temp_dir(folder, os.path.basename(target))
    except OSError as e:
        raise PktemuError(f"{where}: cannot write to folder {folder} ({e.strerror or e})") from None
    remove_path(work)
    forget(work)
