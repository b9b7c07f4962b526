"""What the real `pktemu` process does with an unusable --out, with a bug in itself (the backstop),
and with a closed stdout: one line, the right exit status, nothing written, no traceback."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
TOPO = str(ROOT / "topologies" / "service-test.yaml")
HTTP = str(ROOT / "tests" / "data" / "captures" / "http_get_session.pcap")
REPLAY = ["replay", HTTP, "--topology", TOPO, "--inject", "node1/veth-client",
          "--map", "141.142.228.5=10.0.1.2", "--map", "192.150.187.43=10.3.241.152", "-q"]
REPORT = "(please report; set PKTEMU_DEBUG=1 for the traceback)"


def pktemu(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pktemu.cli", *args], capture_output=True, text=True,
                          timeout=60, cwd=ROOT, env=env)


def with_patch(patch: str, *args: str, debug: bool = False) -> subprocess.CompletedProcess[str]:
    """The CLI's own main() in a fresh Python, after `patch` has planted a bug in pktemu."""
    code = f"import sys\n{patch}\nfrom pktemu.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    env = dict(os.environ, PKTEMU_DEBUG="1" if debug else "")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60,
                          cwd=ROOT, env=env)


def one_line(p: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in p.stderr
    lines = p.stderr.splitlines()
    assert len(lines) == 1, p.stderr
    assert len(lines[0]) <= 300
    return lines[0]


def long_topology(tmp_path: Path) -> str:
    topo = tmp_path / "long.yaml"
    topo.write_text(yaml.safe_dump({
        "extends": TOPO, "name": "long",
        "scenarios": {"long": {"duration": "600s", "traffic": [
            {"pod": "client", "app": {"kind": "ping", "target": "10.0.2.2", "count": 300000,
                                      "interval": "1ms"}}]}}}))
    return str(topo)


@pytest.mark.parametrize("command", ["run", "replay"])
@pytest.mark.parametrize("case", ["file", "under-file", "empty", "proc"])
def test_unusable_out_is_refused_up_front(tmp_path: Path, command: str, case: str) -> None:
    afile = tmp_path / "afile"
    afile.write_text("keep me\n")
    out = {"file": str(afile), "under-file": str(afile / "sub"), "empty": "",
           "proc": f"/proc/pktemu-test-{os.getpid()}"}[case]
    args = (["run", long_topology(tmp_path), "--scenario", "long"] if command == "run" else REPLAY)
    p = pktemu(*args, "--out", out)          # a run of `long` would take minutes: refused before it
    assert p.returncode == 2
    line = one_line(p)
    assert line.startswith(f"pktemu: error: --out {out or repr(out)}: "), line
    assert {"file": "is not a directory", "under-file": f"is under {afile}, which is not a directory",
            "empty": "an empty path", "proc": "cannot create a directory in /proc"}[case] in line
    assert afile.read_text() == "keep me\n"
    assert sorted(x.name for x in tmp_path.iterdir()) == sorted(["afile"] + (["long.yaml"] if command == "run"
                                                                             else []))
    if case != "file":
        assert not os.path.exists(out or "/nonexistent")
    assert not [n for n in os.listdir("/proc") if "pktemu" in n]


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a read-only tmpfs: needs root")
def test_out_on_a_read_only_filesystem_is_refused_up_front(tmp_path: Path) -> None:
    """A writable-looking folder is taken without a trial folder only on a writable filesystem:
    a read-only one still gets the trial, and its refusal, before anything runs."""
    ro = tmp_path / "ro"
    ro.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)], check=True)
    try:
        p = pktemu("run", long_topology(tmp_path), "--scenario", "long", "--out", str(ro / "out"))
        assert p.returncode == 2
        line = one_line(p)
        assert line == (f"pktemu: error: --out {ro / 'out'}: cannot create a directory in {ro}: "
                        "Read-only file system"), line
        assert os.listdir(ro) == []
    finally:
        subprocess.run(["umount", str(ro)], check=True)


def test_out_that_does_not_exist_yet_is_created(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b"
    p = pktemu(*REPLAY, "--out", str(out), "--name", "r")
    assert p.returncode == 0, p.stderr
    assert sorted(x.name for x in out.iterdir()) == ["r"]


def test_internal_error_is_one_line_exit_70(tmp_path: Path) -> None:
    patch = ("import pktemu.commands.validate as v\n"
             "def boom(args, out):\n    raise ValueError('bad ' + 'x' * 1000 + ' end')\nv.run = boom")
    p = with_patch(patch, "validate", TOPO)
    assert p.returncode == 70
    line = one_line(p)
    assert line.startswith("pktemu: internal error: ValueError: bad xxx") and line.endswith(f"x end {REPORT}")
    assert "..." in line


def test_internal_error_traceback_with_pktemu_debug(tmp_path: Path) -> None:
    patch = ("import pktemu.commands.validate as v\n"
             "def boom(args, out):\n    raise ValueError('planted')\nv.run = boom")
    p = with_patch(patch, "validate", TOPO, debug=True)
    assert p.returncode == 70
    assert "Traceback (most recent call last)" in p.stderr and "in boom" in p.stderr
    assert p.stderr.splitlines()[-1] == f"pktemu: internal error: ValueError: planted {REPORT}"


@pytest.mark.parametrize("body, name", [
    ("    return boom(args, out)", "RecursionError"),
    ("    raise MemoryError()", "MemoryError"),
])
def test_recursion_and_memory_errors_are_internal_errors(body: str, name: str) -> None:
    patch = f"import pktemu.commands.rules as r\ndef boom(args, out):\n{body}\nr.run = boom"
    p = with_patch(patch, "rules", TOPO, "--node", "node1")
    assert p.returncode == 70
    assert one_line(p).startswith(f"pktemu: internal error: {name}: ")


def test_bug_while_writing_the_output_leaves_the_previous_output_and_no_temporary(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "s1-clusterip").mkdir(parents=True)
    (out / "s1-clusterip" / "captures.tsv").write_text("earlier\n")
    patch = ("import pktemu.io.run as r\n"
             "def boom(*a):\n    raise KeyError('planted')\nr.write_state = boom")
    p = with_patch(patch, "run", TOPO, "--scenario", "s1-clusterip", "--out", str(out), "-q")
    assert p.returncode == 70
    assert one_line(p) == f"pktemu: internal error: KeyError: 'planted' {REPORT}"
    assert [str(x.relative_to(out)) for x in out.rglob("*")] == ["s1-clusterip", "s1-clusterip/captures.tsv"]
    assert (out / "s1-clusterip" / "captures.tsv").read_text() == "earlier\n"


def test_long_error_lines_are_cut_in_the_middle() -> None:
    patch = ("import pktemu.commands.validate as v\nfrom pktemu.errors import PktemuError\n"
             "def boom(args, out):\n"
             "    raise PktemuError('f.yaml: ' + 'y' * 2000 + '\\nsecond line: the end')\n"
             "v.run = boom")
    p = with_patch(patch, "validate", TOPO)
    assert p.returncode == 2
    line = one_line(p)
    assert line.startswith("pktemu: error: f.yaml: yyy") and "..." in line and line.endswith("the end")


@pytest.mark.parametrize("args", [
    ["rules", TOPO, "--node", "node1"],
    ["trace", TOPO, "--from", "client", "--to", "10.3.241.152:80"],
    ["run", TOPO, "--scenario", "s1-clusterip"],
])
def test_closed_stdout_is_a_quiet_exit(tmp_path: Path, args: list[str]) -> None:
    """`pktemu rules ... | head -1` once head has gone: no traceback, no noise, no temporary."""
    if args[0] == "run":
        args = [*args, "--out", str(tmp_path)]
    proc = subprocess.Popen([sys.executable, "-m", "pktemu.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout is not None
    proc.stdout.close()                        # before pktemu has written anything (imports take longer)
    _, err = proc.communicate(timeout=60)
    assert (proc.returncode, err) == (141, "")
    assert not [x for x in tmp_path.rglob(".*")]


def test_closed_stdout_in_a_shell_pipeline(tmp_path: Path) -> None:
    cmd = (f"{sys.executable} -m pktemu.cli rules {TOPO} --node node1 | head -c 0; "
           "echo status=${PIPESTATUS[0]}")
    p = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert p.stdout == "status=141\n" and p.stderr == ""
