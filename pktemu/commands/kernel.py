"""`pktemu kernel`: hold the emulator to the kernel of this machine.

The kernel oracle (pktemu/oracle/) builds the reference topology out of real network namespaces,
veth pairs, Linux bridges and kube-proxy's rules, runs the four scenarios and captures every hop;
the same four scenarios then run in the emulator, and the oracle's summariser compares the two
captures frame by frame (with conntrack and rule counters at `--level extended`). Needs root.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from rich.console import Console

from pktemu import interrupt, stdout
from pktemu.api.network import Network
from pktemu.errors import PktemuError
from pktemu.io.atomic import forget, make_temp_dir, remove_leftovers, remove_path
from pktemu.io.run import check_out_dir, replace_dir
from pktemu.io.topofile import load_topology, read_yaml

NAME = "kernel"
HELP = "compare the emulator with this machine's kernel (needs root)"
ORDER = 60

ORACLE = Path(__file__).resolve().parent.parent / "oracle"
_REPO = Path(__file__).resolve().parent.parent.parent / "topologies"
#: the repository's topologies/, or from an installed wheel the same files shipped as examples
DEFAULT_TOPOLOGY = (_REPO if (_REPO / "service-test.yaml").is_file()
                    else Path(__file__).resolve().parent.parent / "examples") / "service-test.yaml"
#: the emulator's side by kube-proxy mode (the oracle's ORACLE_PROXY)
PROXY_TOPOLOGIES = {"iptables": DEFAULT_TOPOLOGY,
                    "nftables": DEFAULT_TOPOLOGY.with_name("service-test-nftables.yaml")}
TOOLS = ("ip", "bridge", "iptables-restore", "iptables-save", "tcpdump", "conntrack", "tshark", "ethtool")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="pcaps/kernel",
                   help="output directory: kernel/ and emulator/ runs and their summaries "
                        "(default: pcaps/kernel)")
    p.add_argument("--brnf", type=int, choices=(0, 1), default=1,
                   help="net.bridge.bridge-nf-call-iptables on the nodes, in both runs (default 1)")
    p.add_argument("--level", choices=("brief", "extended"), default="extended",
                   help="what must match: addresses, ports, flags, TTLs, MACs (brief); plus lengths, "
                        "sequence numbers, DNS, HTTP, conntrack and counters (extended, default)")
    p.add_argument("--proxy", choices=tuple(PROXY_TOPOLOGIES), default="iptables",
                   help="kube-proxy's mode on the nodes: its iptables rules (default) or its nftables "
                        "ruleset (nft -f), in both runs")
    p.add_argument("-t", "--topology", default=None,
                   help="the emulator's side: a topology with the oracle's four scenarios "
                        "(default: topologies/service-test.yaml, service-test-nftables.yaml with "
                        "--proxy nftables; service-test-k8s.yaml and service-test-k8s-nftables.yaml "
                        "have kube-proxy write the rules)")


def run(args: argparse.Namespace, out: Console) -> int:
    check_out_dir(args.out)
    proxy = getattr(args, "proxy", "iptables")
    _check_machine(proxy)
    topo_path = args.topology or str(PROXY_TOPOLOGIES[proxy])
    load_topology(topo_path)                     # bad input fails before any namespace is built
    final = os.path.abspath(args.out)
    parent = os.path.dirname(final)
    try:
        os.makedirs(parent, exist_ok=True)
        remove_leftovers(parent)
        tmp = make_temp_dir(parent, os.path.basename(final))
    except OSError as e:
        raise PktemuError(f"{args.out}: cannot write: {e.strerror or e}") from None
    try:
        kernel, emu = os.path.join(tmp, "kernel"), os.path.join(tmp, "emulator")
        out.print(f"kernel: building the topology in network namespaces (orc-*), br_netfilter={args.brnf}")
        _kernel_run(kernel, args.brnf, proxy)
        if args.brnf == 0:
            topo_path = brnf0_topology(topo_path, tmp)
        out.print(f"emulator: {topo_path}", soft_wrap=True)
        t = load_topology(topo_path)
        for name in t.scenarios:
            with Network(t, name, capture=emu, keep_frames=False) as net:
                net.run()
                net.write()
        _summarize(emu)
        cmp = subprocess.run([sys.executable, str(ORACLE / "oracle_summary.py"), "compare",
                              os.path.join(kernel, "summary.json"), os.path.join(emu, "summary.json"),
                              "--level", args.level], capture_output=True, text=True, timeout=300)
        replace_dir(tmp, final)
    except BaseException:
        with interrupt.shielded():
            remove_path(tmp)
            forget(tmp)
        raise
    stdout.write(cmp.stdout)
    verdict = cmp.stdout.strip().splitlines()[-1] if cmp.stdout.strip() else "no verdict"
    out.print(f"written to {final}: kernel/ (this machine's kernel), emulator/ (pktemu)", soft_wrap=True)
    return 0 if verdict == "IDENTICAL" else 1


def _check_machine(proxy: str = "iptables") -> None:
    if os.geteuid() != 0:
        raise PktemuError("pktemu kernel builds network namespaces: run it as root")
    missing = [t for t in TOOLS + (("nft",) if proxy == "nftables" else ()) if shutil.which(t) is None]
    if missing:
        raise PktemuError(f"pktemu kernel needs {', '.join(missing)} (Debian: apt-get install iproute2 "
                          "iptables tcpdump conntrack tshark ethtool)")


def _kernel_run(out: str, brnf: int, proxy: str = "iptables") -> None:
    env = dict(os.environ, ORACLE_BRNF=str(brnf), ORACLE_NO_INSTALL="1", ORACLE_PYTHON=sys.executable,
               ORACLE_PROXY=proxy)
    p = subprocess.run(["bash", str(ORACLE / "kernel_oracle.sh"), out], env=env, capture_output=True,
                       text=True, timeout=600)
    if p.returncode != 0:
        tail = (p.stderr.strip() or p.stdout.strip()).splitlines()[-1:] or ["no output"]
        raise PktemuError(f"the kernel oracle failed (exit {p.returncode}): {tail[0][:200]}")


def _summarize(out: str) -> None:
    p = subprocess.run([sys.executable, str(ORACLE / "oracle_summary.py"), "summarize", out],
                       capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        raise PktemuError(f"summarising {out} failed: {(p.stderr.strip() or 'no output')[-200:]}")


def brnf0_topology(base: str, tmp: str) -> str:
    """The topology with bridge-nf-call-iptables=0 on every node that has the sysctl's bridge."""
    t = load_topology(base)
    scenarios = {}
    for name, sc in (read_yaml(base).get("scenarios") or {}).items():     # checked by load_topology
        sc = dict(sc)
        sc["overrides"] = list(sc.get("overrides") or []) + [
            {"node": n, "sysctls": {"net.bridge.bridge-nf-call-iptables": 0}}
            for n, node in t.nodes.items() if node.bridges]
        scenarios[name] = sc
    path = os.path.join(tmp, "brnf0-topology.yaml")
    with open(path, "w") as f:
        yaml.safe_dump({"extends": os.path.abspath(base), "name": "brnf0", "scenarios": scenarios}, f)
    return path
