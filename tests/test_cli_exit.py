"""The `pktemu` program ends its process itself once a command is done (pktemu.cli._end_now): the
interpreter's teardown, which frees a big run's objects one by one, is skipped, while the exit
handlers still run and every line written reaches its reader."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import datapaths

PROGRAM = """
import atexit, os, sys, threading
class Sentinel:
    def __del__(self):
        sys.stdout.flush()
        os.write(1, b"teardown\\n")
kept = Sentinel()
atexit.register(lambda: sys.stdout.write("exit handler\\n"))
if sys.argv[1] == "thread":
    threading.Thread(target=threading.Event().wait, daemon=True).start()   # never ends
sys.argv = ["pktemu", *sys.argv[2:]]
from pktemu.cli import main
sys.exit(main())
"""


def program(mode: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", PROGRAM, mode, *args], capture_output=True, text=True,
                          timeout=300, cwd=datapaths.ROOT)


def test_a_run_ends_without_teardown_after_its_output_and_exit_handlers(tmp_path: Path) -> None:
    p = program("plain", "run", "topologies/pod-to-pod.yaml", "--scenario", "direct", "--out",
                str(tmp_path / "o"))
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert any("direct" in line for line in lines[:-1])          # the run's table came first
    assert lines[-1] == "exit handler"
    assert "teardown" not in lines
    assert (tmp_path / "o" / "direct" / "all.pcapng").stat().st_size > 0


def test_the_exit_status_of_bad_input_is_kept(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("nodes: [\n")
    p = program("plain", "validate", str(bad))
    assert p.returncode == 2
    assert p.stderr.startswith("pktemu: error: ") and len(p.stderr.splitlines()) == 1
    assert p.stdout.splitlines() == ["exit handler"]


def test_with_another_thread_running_the_process_ends_as_python_ends_it() -> None:
    p = program("thread", "validate", "topologies/pod-to-pod.yaml")
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines()[-2:] == ["exit handler", "teardown"]
