"""`pktemu run` called again in one process (the Python API, sweeps, the benchmark): what it keeps
between runs (parsed topology documents, parsed addresses, the parser) never hides a change."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from datapaths import ROOT
from pktemu.cli import main

BASE = ROOT / "topologies" / "service-test.yaml"


def _copy_with(tmp_path: Path, old: str, new: str) -> Path:
    """The founding topology (and the rules file it names) in tmp_path, `old` replaced by `new`."""
    for f in BASE.parent.glob("kube-proxy-rules*"):
        shutil.copy(f, tmp_path / f.name)
    text = BASE.read_text()
    assert old in text
    path = tmp_path / "t.yaml"
    path.write_text(text.replace(old, new))
    return path


def test_a_changed_topology_of_the_same_size_is_read_again(tmp_path: Path) -> None:
    topo = _copy_with(tmp_path, "server closes", "server closes")
    out = tmp_path / "out"
    assert main(["run", str(topo), "--scenario", "s1-clusterip", "--out", str(out), "-q"]) == 0
    first = json.loads((out / "s1-clusterip" / "scenario.json").read_text())
    assert first["description"].endswith("server closes")
    topo.write_text(topo.read_text().replace("server closes", "SERVER CLOSES"))   # same length
    assert main(["run", str(topo), "--scenario", "s1-clusterip", "--out", str(out), "-q"]) == 0
    second = json.loads((out / "s1-clusterip" / "scenario.json").read_text())
    assert second["description"].endswith("SERVER CLOSES")


def test_the_same_run_twice_writes_the_same_bytes(tmp_path: Path) -> None:
    runs = []
    for k in range(2):
        out = tmp_path / f"out{k}"
        assert main(["run", str(BASE), "--out", str(out), "-q"]) == 0
        runs.append({p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()})
    assert runs[0] == runs[1]
    assert any(p.name == "all.pcapng" for p in runs[0])
    assert not [p for p in runs[0] if any(part.startswith(".") for part in p.parts)]   # no temporaries


def test_a_bad_topology_after_a_good_one_is_still_refused(tmp_path: Path) -> None:
    topo = _copy_with(tmp_path, "seed: 1", "seed: 1")
    out = tmp_path / "out"
    assert main(["run", str(topo), "--scenario", "s1-clusterip", "--out", str(out), "-q"]) == 0
    topo.write_text(topo.read_text().replace("seed: 1", "seed: [", 1))
    bad_out = tmp_path / "bad"
    assert main(["run", str(topo), "--out", str(bad_out), "-q"]) == 2
    assert not bad_out.exists()
