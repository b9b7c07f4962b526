"""Output larger than a pipe holds (64 KiB): all of it when the reader reads it all, and exit status
141 when the reader goes away after the first line (`pktemu rules BIG | head -1`), in every format.
A single write(2) of the whole text used to lose the rest without an error and exit 0."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import pktemu
from datapaths import ROOT


def _big(tmp_path: Path) -> Path:
    """A generated cluster of 8 x 30 pods: node1's rules at 1 s are some 100 KB of iptables-save."""
    p = tmp_path / "mid.yaml"
    p.write_text(f"extends: {{file: {ROOT / 'topologies' / 'generated-cluster.yaml'}, merge: true}}\n"
                 "vars: {nodes: 8, pods: 30}\n")
    return p


@pytest.mark.parametrize("fmt", ["text", "json", "yaml"])
def test_a_closed_pipe_after_the_first_line_is_141(tmp_path: Path, fmt: str) -> None:
    cmd = (f"{sys.executable} -m pktemu.cli rules {_big(tmp_path)} --node node1 --scenario clients --at 1s "
           f"-o {fmt} | head -1 > /dev/null; echo status=${{PIPESTATUS[0]}}")
    p = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert (p.stdout, p.stderr) == ("status=141\n", "")


def test_the_whole_output_when_it_is_read(tmp_path: Path) -> None:
    args = ["rules", str(_big(tmp_path)), "--node", "node1", "--scenario", "clients", "--at", "1s"]
    text = pktemu(*args).stdout
    assert len(text.encode()) > 1 << 16 and text.endswith("COMMIT\n# Completed by pktemu\n")
    as_json = json.loads(pktemu(*args, "-o", "json").stdout)
    as_yaml = yaml.safe_load(pktemu(*args, "-o", "yaml").stdout)
    assert as_json == as_yaml and sum(len(t["rules"]) for t in as_json["tables"]) == text.count("\n-A ")
