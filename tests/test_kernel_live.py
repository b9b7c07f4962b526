"""The emulator against the kernel of the machine the tests run on (needs root).

The oracle script builds our topology out of real namespaces, veths, bridges and kube-proxy
rules, captures every hop, and its compare tool holds our output to what this kernel just did:
with br_netfilter on (the Kubernetes default) and off (plain routing, no bridge detour).
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

import shared_paths
from conftest import brnf0_topology, compare, pktemu, summarize

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None,
    reason="builds network namespaces: needs root and iproute2 (CI runs it)")


def _kernel_run(out: Path, brnf: int) -> None:
    env = dict(os.environ, ORACLE_BRNF=str(brnf))
    p = subprocess.run(["bash", str(shared_paths.ORACLE / "kernel_oracle.sh"), str(out)], env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]


def test_br_netfilter_on_matches_this_kernel(service_test_run: Path, tmp_path: Path) -> None:
    _kernel_run(tmp_path / "kernel", 1)
    r = compare(tmp_path / "kernel" / "summary.json", service_test_run / "summary.json",
                "--level", "extended")
    assert r.stdout.strip().splitlines()[-1] == "IDENTICAL", r.stdout


def test_br_netfilter_off_matches_this_kernel(tmp_path: Path) -> None:
    _kernel_run(tmp_path / "kernel", 0)
    topo = brnf0_topology(tmp_path)
    pktemu("run", str(topo), "--out", str(tmp_path / "emu"), "-q")
    summarize(tmp_path / "emu")
    r = compare(tmp_path / "kernel" / "summary.json", tmp_path / "emu" / "summary.json",
                "--level", "extended")
    assert r.stdout.strip().splitlines()[-1] == "IDENTICAL", r.stdout
