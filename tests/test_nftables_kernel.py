"""The nftables engine against the kernel of the machine the tests run on (needs root and nft),
through `pktemu kernel --proxy nftables`: the oracle loads kube-proxy's nftables ruleset with
`nft -f` into real namespaces, and its compare tool holds our run to what this kernel just did,
frames, conntrack and `nft list ruleset` included."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from conftest import pktemu

TOOLS = ("ip", "bridge", "nft", "tcpdump", "conntrack", "tshark", "ethtool")
pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or any(shutil.which(t) is None for t in TOOLS),
    reason="builds network namespaces: needs root and " + ", ".join(TOOLS))


def test_this_kernel_and_the_emulator_are_identical_in_nftables_mode(tmp_path: Path) -> None:
    out = tmp_path / "k"
    p = pktemu("kernel", "--proxy", "nftables", "--out", str(out), check=False, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]
    assert "IDENTICAL" in p.stdout.splitlines()
    kernel = json.loads((out / "kernel" / "summary.json").read_text())
    # the kernel really ran kube-proxy's nftables table, and printed it as we do
    ruleset = kernel["scenarios"]["s1-clusterip"]["nft_ruleset"]["node1"]
    assert "table ip kube-proxy {" in ruleset
    for sc in ("s1-clusterip", "s3-hairpin"):
        for node in ("node1", "node2"):
            assert (out / "kernel" / sc / f"nft-ruleset-{node}.txt").read_text() == \
                (out / "emulator" / sc / f"nft-ruleset-{node}.txt").read_text()
