"""The test side of the fuzz suite: cases, the worker client, the contract check and the tally.

A case is one `pktemu` command line over input files written in its own directory:
`case/in/` (the mutated inputs), `case/cwd/` (the working directory, which must stay empty) and
`case/out` (the output root passed as --out, absent at the start). The contract, for every input:
exit 0 with valid outputs, or exit 2 with exactly one short `pktemu: error: ...` line on stderr,
within the time bound, within the memory bound, never a traceback or an internal error (exit 70),
and nothing left behind: no output for a refused input, no temporary files for an accepted one.
"""
from __future__ import annotations

import json
import os
import re
import selectors
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).resolve().parent / "worker.py"
MAX_STDERR = 300
TIMEOUT = float(os.environ.get("PKTEMU_FUZZ_TIMEOUT", "10"))


@dataclass
class Case:
    """One command over one set of mutated inputs; `what` says in words what was mutated."""

    cls: str
    argv: list[str]
    dir: Path
    what: str = ""
    inputs: list[Path] = field(default_factory=list)

    @property
    def cwd(self) -> Path:
        return self.dir / "cwd"

    @property
    def out(self) -> Path:
        return self.dir / "out"


@dataclass
class Result:
    exit: int | None
    stdout: str
    stderr: str
    duration: float
    raw: dict[str, Any]


class Worker:
    """The client of tests/fuzz/worker.py: one process for many cases, restarted when it dies or hangs."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.proc: subprocess.Popen[str] | None = None
        self.restarts = 0

    def start(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        env.pop("COLUMNS", None)
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen([sys.executable, str(WORKER)], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=log, text=True, cwd=ROOT, env=env)
        ready = self._answer(60)
        if not ready or not ready.get("ready"):
            raise RuntimeError(f"fuzz worker did not start: see {self.log}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def _answer(self, timeout: float) -> dict[str, Any] | None:
        assert self.proc is not None and self.proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout):
                return None
        line = self.proc.stdout.readline()
        return json.loads(line) if line else {"died": True}

    def run(self, case: Case, timeout: float = TIMEOUT) -> Result:
        """Run `case` in the worker; a dead or silent worker is a result too (and is restarted)."""
        if self.proc is None:
            self.start()
        assert self.proc is not None and self.proc.stdin is not None
        t0 = time.perf_counter()
        try:
            self.proc.stdin.write(json.dumps({"argv": case.argv, "cwd": str(case.cwd), "timeout": timeout})
                                  + "\n")
            self.proc.stdin.flush()
            ans = self._answer(2 * timeout + 15)
        except (BrokenPipeError, OSError):
            ans = {"died": True}
        if ans is None or ans.get("died"):
            hung = ans is None
            self.stop() if hung else self.proc.wait()
            status = None if hung else self.proc.returncode if self.proc else None
            self.proc = None
            self.restarts += 1
            ans = {"exit": None, "stdout": "", "stderr": "", "hung": hung, "died": not hung,
                   "worker_status": status}
        ans.setdefault("duration", time.perf_counter() - t0)
        return Result(ans.get("exit"), ans.get("stdout", ""), ans.get("stderr", ""), ans["duration"], ans)


def template(msg: str) -> str:
    """An error message with its variable parts blanked, to group failures by kind."""
    msg = re.sub(r"/\S*/(case-\d+|in|out|cwd)\S*", "PATH", msg)
    msg = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", msg)
    msg = re.sub(r"\d+", "N", msg)
    return msg[:90]


def leftovers(case: Case, exit: int | None) -> list[str]:
    """What a refused input left behind, or temporary files an accepted one left."""
    found = []
    extra = sorted(p.name for p in case.dir.iterdir() if p.name not in ("in", "cwd", "out"))
    if extra:
        found.append(f"wrote beside the output root: {extra}")
    if any(case.cwd.iterdir()):
        found.append(f"wrote in the working directory: {sorted(p.name for p in case.cwd.iterdir())}")
    written = {p.name for p in case.inputs}
    stray = sorted(p.name for p in (case.dir / "in").iterdir() if p.name not in written)
    if stray:
        found.append(f"wrote beside its inputs: {stray}")
    if case.out.exists():
        if exit != 0:
            left = sorted(str(p.relative_to(case.out)) for p in case.out.rglob("*"))
            found.append(f"refused input left output: {left[:5]}")
        tmp = [str(p.relative_to(case.out)) for p in case.out.rglob("*")
               if p.name.startswith(".") or p.name.endswith(".tmp")]
        if tmp:
            found.append(f"temporary files left: {sorted(tmp)[:5]}")
    return found


def outputs_ok(case: Case, res: Result) -> list[str]:
    """The minimum a successful command owes its user: what each command promises to write or print."""
    cmd = case.argv[0]
    bad = []
    if cmd == "validate" and ": OK" not in res.stdout:
        bad.append("validate exited 0 without saying OK")
    if cmd in ("run", "replay"):
        dirs = [d for d in case.out.iterdir() if d.is_dir()] if case.out.is_dir() else []
        if not dirs:
            bad.append(f"{cmd} exited 0 and wrote no output directory")
        for d in dirs:
            for name in ("all.pcapng", "scenario.json", "captures.tsv", "drops.txt"):
                if not (d / name).is_file():
                    bad.append(f"{cmd} output lacks {name}")
            if cmd == "replay":
                try:
                    json.loads((d / "replay.json").read_text())
                except (OSError, ValueError) as e:
                    bad.append(f"replay.json unreadable: {type(e).__name__}")
    if "--json" in case.argv:
        try:
            json.loads(res.stdout)
        except ValueError:
            bad.append(f"{cmd} --json printed no JSON")
    return bad


def violations(case: Case, res: Result) -> list[str]:
    """Every way `res` breaks the contract, each as a short signature (same cause, same signature)."""
    raw = res.raw
    if raw.get("died"):
        return [f"worker died (status {raw.get('worker_status')}): memory or a crash"]
    if raw.get("hung"):
        return ["hang: no answer from the worker (stuck outside Python?)"]
    if raw.get("timed_out"):
        return [f"timeout after {TIMEOUT:g}s in {raw.get('where')}"]
    if raw.get("memory_error"):
        return [f"MemoryError (over the memory bound) in {raw.get('where')}"]
    if res.exit == 70 or "internal error" in res.stderr:
        return [f"internal error: {raw.get('exception')} at {raw.get('where')}"]
    if raw.get("exception"):
        return [f"traceback: {raw['exception']} at {raw.get('where')}"]
    if "Traceback (most recent call last)" in res.stderr:
        return ["traceback printed on stderr"]
    # `pktemu trace` exits 1 when the packet was dropped or nothing answered (README)
    if res.exit not in (0, 2) and not (case.argv[0] == "trace" and res.exit == 1):
        return [f"exit status {res.exit}: {template(res.stderr.strip())}"]
    found = []
    lines = res.stderr.splitlines()
    # warnings (`pktemu validate`'s unreferenced chains, a python app's crash) are one short line each
    warnings = [ln for ln in lines if ln.startswith("pktemu: warning: ")]
    found += [f"warning line too long: {template(w)}" for w in warnings if len(w) > MAX_STDERR]
    lines = [ln for ln in lines if not ln.startswith("pktemu: warning: ")]
    if res.exit == 2:
        if len(lines) != 1:
            found.append(f"stderr has {'no' if not lines else 'several'} lines: {template(res.stderr)}")
        elif not lines[0].startswith("pktemu: error: "):
            found.append(f"stderr does not start with 'pktemu: error: ': {template(lines[0])}")
        elif len(lines[0]) > MAX_STDERR:
            found.append(f"stderr line too long: {template(lines[0])}")
    elif lines:
        found.append(f"exit 0 with stderr: {template(chr(10).join(lines))}")
    else:
        found += outputs_ok(case, res)
    found += leftovers(case, res.exit)
    return found


@dataclass
class Tally:
    """Per class of input: how many were tried, exit statuses, the slowest, and every violation seen."""

    tried: dict[str, int] = field(default_factory=dict)
    exits: dict[str, dict[str, int]] = field(default_factory=dict)
    slowest: dict[str, dict[str, Any]] = field(default_factory=dict)
    failures: dict[str, dict[str, Any]] = field(default_factory=dict)
    errors: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, case: Case, res: Result, found: list[str]) -> None:
        self.tried[case.cls] = self.tried.get(case.cls, 0) + 1
        ex = self.exits.setdefault(case.cls, {})
        key = "died" if res.raw.get("died") else "timeout" if res.raw.get("timed_out") else str(res.exit)
        ex[key] = ex.get(key, 0) + 1
        if res.exit == 2:
            errs = self.errors.setdefault(case.cls, {})
            t = template(res.stderr.strip().removeprefix("pktemu: error: "))
            errs[t] = errs.get(t, 0) + 1
        slow = self.slowest.get(case.cls)
        if slow is None or res.duration > slow["seconds"]:
            self.slowest[case.cls] = {"seconds": round(res.duration, 3), "argv": case.argv, "what": case.what,
                                      "exit": res.exit}
        for sig in found:
            size = sum(p.stat().st_size for p in case.inputs if p.exists())
            old = self.failures.get(sig)
            if old is None or size < old["input_bytes"]:
                self.failures[sig] = {"class": case.cls, "argv": case.argv, "what": case.what,
                                      "input_bytes": size, "stderr": res.stderr[-2000:],
                                      "count": (old or {}).get("count", 0)}
            self.failures[sig]["count"] += 1

    def to_json(self) -> dict[str, Any]:
        return {"tried": self.tried, "exits": self.exits, "slowest": self.slowest, "failures": self.failures,
                "errors": {c: dict(sorted(e.items(), key=lambda kv: -kv[1])) for c, e in self.errors.items()}}

