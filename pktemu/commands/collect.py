"""`pktemu collect`: save a node's network state (or the cluster's objects) for `pktemu import`.

The node side is a POSIX shell script shipped in the package (`--print-script` prints it), so it
runs on nodes where pktemu is not installed, e.g. `kubectl debug node/NAME -it --image=busybox
-- chroot /host sh -s < collect.sh`. `--cluster` saves `kubectl get` of the objects import reads.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from importlib import resources

from rich.console import Console

from pktemu import stdout
from pktemu.errors import PktemuError
from pktemu.io.atomic import forget, make_temp_dir, remove_path
from pktemu.io.run import check_out_file

NAME = "collect"
HELP = "save a node's network state (or the cluster's objects) for pktemu import"
ORDER = 80
KINDS = ("nodes", "pods", "services", "endpointslices")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", help="the archive to write (FILE.tar.gz; default "
                                 "pktemu-collect-HOSTNAME.tar.gz, or pktemu-cluster.tar.gz with --cluster)")
    p.add_argument("--print-script", action="store_true",
                   help="print the node collector (a POSIX sh script) instead of running it")
    p.add_argument("--cluster", action="store_true",
                   help=f"save `kubectl get {','.join(KINDS)} -A -o yaml` instead of this node's state")
    p.add_argument("--kubectl", default="kubectl", help="the kubectl to run (default: kubectl on PATH)")


def script() -> str:
    return resources.files("pktemu.collect").joinpath("collect.sh").read_text()


def _check_out(out: str) -> None:
    check_out_file(f"--out {out}", out, (".tar.gz", ".tgz"), "archive name")


def run(args: argparse.Namespace, out: Console) -> int:
    if args.print_script:
        if args.cluster or args.out:
            raise PktemuError("--print-script takes no other option")
        stdout.write(script())
        return 0
    if args.cluster:
        return _cluster(args.out or "pktemu-cluster.tar.gz", args.kubectl)
    if args.out is not None:
        _check_out(args.out)
    with tempfile.NamedTemporaryFile("w", suffix=".sh", delete=False) as f:
        f.write(script())
    try:
        argv = ["sh", f.name] + (["--out", args.out] if args.out else [])
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    finally:
        os.unlink(f.name)
    msg = p.stderr.strip().splitlines()[-1] if p.stderr.strip() else ""
    if p.returncode != 0:
        raise PktemuError(msg.removeprefix("collect: ") or f"the collector exited {p.returncode}")
    if msg:
        print(f"pktemu: {msg.removeprefix('collect: ')}", file=sys.stderr)
    return 0


def _cluster(out: str, kubectl: str) -> int:
    """`kubectl get KINDS -A -o yaml` into an archive, written under a temporary name."""
    _check_out(out)
    exe = shutil.which(kubectl)
    if exe is None:
        raise PktemuError(f"{kubectl}: not found (install kubectl, or give pktemu import the YAML files "
                          "you already have)")
    work = make_temp_dir(os.path.dirname(os.path.abspath(out)), os.path.basename(out))
    try:
        folder = os.path.join(work, "pktemu-cluster")
        os.mkdir(folder)
        for kind in KINDS:
            p = subprocess.run([exe, "get", kind, "-A", "-o", "yaml"], capture_output=True, text=True,
                               stdin=subprocess.DEVNULL, timeout=300)
            if p.returncode != 0:
                err = (p.stderr.strip().splitlines() or [f"exit status {p.returncode}"])[-1]
                raise PktemuError(f"kubectl get {kind}: {err}")
            with open(os.path.join(folder, f"{kind}.yaml"), "w") as f:
                f.write(p.stdout)
        part = os.path.join(work, "archive.tar.gz")
        with tarfile.open(part, "w:gz") as tar:
            tar.add(folder, arcname="pktemu-cluster")
        os.replace(part, out)
    finally:
        remove_path(work)
        forget(work)
    print(f"pktemu: wrote {out} ({', '.join(KINDS)})", file=sys.stderr)
    return 0
