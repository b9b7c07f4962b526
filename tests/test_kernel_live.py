"""The emulator against the kernel of the machine the tests run on (needs root), through
`pktemu kernel`: the oracle builds our topology out of real namespaces, veths, bridges and
kube-proxy rules, captures every hop, and its compare tool holds our output to what this kernel
just did, with br_netfilter on (the Kubernetes default) and off (plain routing, no bridge detour).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import pktemu
from datapaths import ORACLE

LOCK = "/run/lock/orc-kernel-oracle.lock"
TOOLS = ("ip", "bridge", "iptables-restore", "tcpdump", "conntrack", "tshark", "ethtool")
pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or any(shutil.which(t) is None for t in TOOLS),
    reason="builds network namespaces: needs root and " + ", ".join(TOOLS) + " (CI has them)")


def _hold_lock(seconds: int) -> subprocess.Popen[bytes]:
    """A process that holds the oracle's lock for `seconds`, returned once the lock is held (by it,
    or by another run that it waits behind): a fixed sleep after starting it was a guess, which a
    loaded machine can outlast."""
    holder = subprocess.Popen(["flock", LOCK, "sleep", str(seconds)])
    deadline = time.monotonic() + 10
    while subprocess.run(["flock", "-n", LOCK, "true"]).returncode == 0:
        assert time.monotonic() < deadline, "the lock holder never took the lock"
        time.sleep(0.05)
    return holder


@pytest.mark.parametrize("brnf", [1, 0])
def test_this_kernel_and_the_emulator_are_identical(tmp_path: Path, brnf: int) -> None:
    out = tmp_path / "k"
    holder = None
    if brnf == 0:        # another oracle run holds the lock for a while: this one waits its turn
        holder = _hold_lock(3)
    p = pktemu("kernel", "--out", str(out), "--brnf", str(brnf), check=False, timeout=600)
    if holder is not None:
        assert holder.wait(timeout=10) == 0
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]
    assert "IDENTICAL" in p.stdout.splitlines()
    kernel = json.loads((out / "kernel" / "summary.json").read_text())
    emu = json.loads((out / "emulator" / "summary.json").read_text())
    assert sorted(kernel["scenarios"]) == sorted(emu["scenarios"]) == [
        "s1-clusterip", "s2-noendpoints", "s3-hairpin", "s3b-hairpin-off"]
    # the kernel really ran: its pcaps hold the DNATed SYN on node2's side
    syns = [p for p in kernel["scenarios"]["s1-clusterip"]["interfaces"]["server-eth0"]["packets"]
            if p.get("flags") == "S"]
    assert syns and syns[0]["dst"] == "10.0.2.2:8080"
    assert [x.name for x in tmp_path.iterdir()] == ["k"]     # no temporary folder left beside it


def _holds_lock(pid: int) -> bool:
    """Process `pid` holds the flock of LOCK (/proc/locks: not another run that holds it)."""
    ino = os.stat(LOCK).st_ino
    return any(len(w) > 5 and w[1] == "FLOCK" and w[4] == str(pid) and w[5].rsplit(":", 1)[1] == str(ino)
               for w in (line.split() for line in Path("/proc/locks").read_text().splitlines()))


def _namespaces() -> list[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return [line.split()[0] for line in listed.splitlines() if line.strip()]


def test_a_run_that_cannot_get_the_lock_in_time_says_so(tmp_path: Path) -> None:
    """...and leaves the namespaces of the run that holds it alone: its exit's clean-up deleted every
    orc-* namespace, those of the run holding the lock in the middle of its scenarios (CI's run saw
    its s3-hairpin state come back empty beside another session's run of this test)."""
    holder = _hold_lock(5)
    # stands for the holder's topology, when the holder is this test's (another run's are its own)
    ours = _holds_lock(holder.pid) and "orc-dns" not in _namespaces()
    try:
        if ours:
            subprocess.run(["ip", "netns", "add", "orc-dns"], check=True)
        t0 = time.monotonic()
        p = subprocess.run(["bash", str(ORACLE / "kernel_oracle.sh"), str(tmp_path / "o")],
                           env=dict(os.environ, ORACLE_LOCK_WAIT="1", ORACLE_NO_INSTALL="1"),
                           capture_output=True, text=True, timeout=60)
        waited = time.monotonic() - t0
        kept = "orc-dns" in _namespaces()
    finally:
        if ours:
            subprocess.run(["ip", "netns", "del", "orc-dns"], check=False)
        holder.kill()
        holder.wait()
    assert kept or not ours, "the run that gave up deleted the namespace of the run holding the lock"
    assert p.returncode != 0
    assert f"another kernel_oracle.sh run holds {LOCK}" in p.stderr
    assert waited > 0.9                   # it waited before giving up
    assert not (tmp_path / "o").exists()

