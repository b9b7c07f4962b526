"""What the commands print is the text itself: a path (or a rule, a reason) holding `[...]` is
printed as it is, not read as rich markup, which swallowed `[bold]` and stopped the run at
`[/x]` with an internal error after its outputs were written; and a long line stays one line in a
pipe or a log, where it was cut at 80 columns (the run table's title too)."""
from __future__ import annotations

import shutil
from pathlib import Path

from conftest import pktemu
from datapaths import ROOT


def test_run_prints_an_output_folder_with_brackets_as_it_is(tmp_path: Path) -> None:
    out = tmp_path / "[/x]" / "[bold]runs"
    p = pktemu("run", "topologies/service-test.yaml", "--scenario", "s2-noendpoints", "--out", str(out),
               check=False)
    assert (p.returncode, p.stderr) == (0, ""), p.stderr
    assert p.stdout.startswith("s2-noendpoints  (1.000 s virtual, 8 events)\n"), p.stdout
    assert "  1 frame dropped (drops.txt):\n         1  node1 netfilter FORWARD: filter KUBE-SERVICES#1 " \
           "REJECT icmp-port-unreachable\n" in p.stdout
    assert f"  written to {out}/s2-noendpoints\n" in p.stdout
    assert (out / "s2-noendpoints" / "all.pcapng").is_file()


def test_validate_prints_a_topology_path_with_brackets_as_it_is(tmp_path: Path) -> None:
    folder = tmp_path / "[bold]topologies"
    shutil.copytree(ROOT / "topologies", folder)
    p = pktemu("validate", str(folder / "service-test.yaml"))
    assert p.stdout.startswith(f"{folder}/service-test.yaml: OK — 6 nodes"), p.stdout


def test_sweep_prints_its_output_folder_as_it_is(tmp_path: Path) -> None:
    out = tmp_path / "[/x]sweep"
    p = pktemu("sweep", "topologies/service-test.yaml", "--scenario", "s1-clusterip", "--seeds", "1-2",
               "--out", str(out))
    assert p.stdout.startswith("s1-clusterip over 2 seeds: ") and f"written to {out} (" in p.stdout
