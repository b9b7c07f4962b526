"""`python -m pktemu.bench --quick --json` (issue 15): every figure is there, each a ratio against a
baseline of the same run with its spread, and each goal flag says what the figure's value says.
No timing assertions: the values are whatever this machine measures."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import datapaths

FIGURES = {
    "founding_hop", "load_hop",
    "cluster_direct_time", "cluster_direct_memory", "cluster_clients_time", "cluster_clients_memory",
    "cluster_clients_nftables_time", "cluster_clients_nftables_memory",
    "manifests_load", "kube_proxy_sync",
    *(f"{mode}_{what}" for mode in ("iptables", "nftables")
      for what in ("load_mid", "load_big", "bytes_per_rule", "first_packet_mid", "first_packet_big")),
}
WITHOUT_GOAL: set[str] = set()


def _spread_ok(d: dict[str, Any]) -> bool:
    return 0 < d["min"] <= d["median"] <= d["max"]


def test_the_quick_benchmark_reports_every_figure_with_its_goal(tmp_path: Path) -> None:
    # run where a user would: the bench writes its runs' outputs in the current directory
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(datapaths.ROOT),
                                                                    os.environ.get("PYTHONPATH")]))}
    p = subprocess.run([sys.executable, "-m", "pktemu.bench", "--quick", "--json"], capture_output=True,
                       text=True, timeout=600, cwd=tmp_path, env=env)
    assert p.returncode == 0, p.stderr
    assert os.listdir(tmp_path) == []           # every run's output folder removed again
    report = json.loads(p.stdout)
    assert report["quick"] is True
    figs = report["figures"]
    assert set(figs) == FIGURES
    for key, f in figs.items():
        assert f["what"] and f["baseline"], key
        assert _spread_ok(f), (key, f)
        assert f["repetitions"] >= 1
        if "absolute" in f:
            assert _spread_ok(f["absolute"]) and f["absolute"]["unit"], (key, f)
        goal = f["goal"]
        if key in WITHOUT_GOAL:
            assert goal is None and f["met"] is None
            continue
        assert goal["text"] and goal["at_most"] > 0, key
        value = f["absolute"]["median"] if goal["on"] == "absolute" else f["median"]
        assert f["met"] is (value <= goal["at_most"]), (key, f)
    # 10 -> 100 nodes grows in time and memory, and so does the memory of --quick's clients pair
    # (5 -> 10 nodes): each child's peak is its run's own, not its imports' nor its parent's
    for key in ("cluster_direct_time", "cluster_direct_memory", "cluster_clients_memory",
                "cluster_clients_nftables_memory"):
        assert figs[key]["exponent"] > 0.1 and len(figs[key]["sizes"]) == 2, (key, figs[key])
    assert "nftables mode" in figs["cluster_clients_nftables_time"]["what"]
    assert figs["founding_hop"]["hops"] > 100 and figs["load_hop"]["hops"] > figs["founding_hop"]["hops"]
    # what the filesystem's share is measured on: the founding run's 4 scenarios write 23 files each
    assert (figs["founding_hop"]["files"], figs["founding_hop"]["folders"]) == (4 * 23, 1 + 4 + 4)
    assert all(f["files_us_per_hop"] > 0 for f in (figs["founding_hop"], figs["load_hop"]))
    # a founding sample is several runs of a few milliseconds each, so one hiccup is not a sample
    assert (figs["founding_hop"]["runs_per_sample"], figs["load_hop"]["runs_per_sample"]) == (3, 1)
    assert figs["cluster_direct_time"]["pcaps"] == 100 * 32 + 100 * 30 + 100     # 100 x 30: every point
    # the progress lines go to stderr, the JSON alone to stdout
    assert "founding scenario" in p.stderr
