"""A fresh clone stands alone: in an empty folder with no neighbours (nothing beside it), the suite
collects and the tests that read reference material (kernel runs, captures, the oracle's
summariser) pass, all from files inside the repository."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import datapaths

pytestmark = pytest.mark.skipif(shutil.which("git") is None or not (datapaths.ROOT / ".git").exists(),
                                reason="needs a git checkout to clone")


def _in(clone: Path, *cmd: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "PYTHON"))}
    env["PYTHONPATH"] = str(clone)
    return subprocess.run(cmd, cwd=clone, env=env, capture_output=True, text=True, timeout=timeout)


def test_a_clone_in_an_empty_folder_runs_the_suite(tmp_path: Path) -> None:
    alone = tmp_path / "alone"
    alone.mkdir()
    clone = alone / "pktemu"
    subprocess.run(["git", "clone", "-q", str(datapaths.ROOT), str(clone)], check=True, timeout=120)
    assert sorted(os.listdir(alone)) == ["pktemu"]

    where = _in(clone, sys.executable, "-c", "import pktemu, sys; print(pktemu.__file__)")
    assert where.stdout.strip() == str(clone / "pktemu" / "__init__.py"), where.stderr

    collected = _in(clone, sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--collect-only")
    assert collected.returncode == 0, collected.stdout[-3000:]
    assert " error" not in collected.stdout.splitlines()[-1]
    assert int(collected.stdout.splitlines()[-1].split()[0]) > 800

    ran = _in(clone, sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x",
              "tests/test_oracle_reference.py", "tests/test_replay_broken.py", "tests/test_xtables_save.py",
              "tests/test_pcapread.py")
    assert ran.returncode == 0, ran.stdout[-3000:]
    last = ran.stdout.strip().splitlines()[-1]
    assert " passed" in last and "skipped" not in last and "failed" not in last, last


def test_outputs_do_not_depend_on_where_the_repository_is(tmp_path: Path) -> None:
    """The same topology, scenario and seed give the same bytes from another folder and another cwd."""
    clone = tmp_path / "elsewhere" / "pktemu"
    subprocess.run(["git", "clone", "-q", str(datapaths.ROOT), str(clone)], check=True, timeout=120)
    outs = []
    for root, cwd in ((datapaths.ROOT, datapaths.ROOT), (clone, tmp_path)):
        out = tmp_path / f"out{len(outs)}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "PYTHON"))}
        env["PYTHONPATH"] = str(root)
        topo = str(root / "topologies" / "service-test.yaml")
        p = subprocess.run([sys.executable, "-m", "pktemu.cli", "run", topo, "--scenario", "s1-clusterip",
                            "--out", str(out), "-q"],
                           cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr
        outs.append(out / "s1-clusterip")
    files = sorted(str(f.relative_to(outs[0])) for f in outs[0].rglob("*") if f.is_file())
    assert "all.pcapng" in files and "client-result.json" in files
    for f in files:
        assert (outs[0] / f).read_bytes() == (outs[1] / f).read_bytes(), f
