"""One fuzz session: the worker, the seeds, a fresh directory per case, the contract check, the tally.

With PKTEMU_FUZZ_KEEP_GOING=1 a broken contract is recorded (in the summary, with the inputs kept
under `findings/`) instead of failing the example, so a long run explores past its first finding.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from .runner import Case, Result, Tally, Worker, violations

KEEP_GOING = os.environ.get("PKTEMU_FUZZ_KEEP_GOING") == "1"


class Session:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.findings = root / "findings"
        self.worker = Worker(root / "worker.log")
        self.tally = Tally()
        self.n = 0

    def case(self, cls: str, what: str) -> Case:
        """A new case directory with empty `in/` and `cwd/` (and no `out`)."""
        self.n += 1
        d = self.root / f"case-{self.n}"
        (d / "in").mkdir(parents=True)
        (d / "cwd").mkdir()
        return Case(cls, [], d, what)

    def write(self, case: Case, name: str, data: bytes) -> str:
        p = case.dir / "in" / name
        p.write_bytes(data)
        case.inputs.append(p)
        return str(p)

    def check(self, case: Case) -> Result:
        """Run the case and hold it to the contract; a failure names the kept inputs to reproduce it."""
        res = self.worker.run(case)
        found = violations(case, res)
        if found:
            sig = hashlib.sha1(found[0].encode()).hexdigest()[:10]
            kept = self.findings / f"{case.cls}-{sig}-{self.n}"
            kept.mkdir(parents=True, exist_ok=True)
            here, there = str(case.dir / "in").encode(), str(kept).encode()
            for p in case.inputs:
                if p.exists():       # a kept topology names the kept manifest or rules file
                    (kept / p.name).write_bytes(p.read_bytes().replace(here, there))
            argv = [a.replace(str(case.dir / "in"), str(kept)) for a in case.argv]
            (kept / "case.json").write_text(json.dumps({"argv": argv, "what": case.what, "found": found,
                                                        "exit": res.exit, "stderr": res.stderr[-3000:],
                                                        "raw": {k: v for k, v in res.raw.items()
                                                                if k not in ("stdout", "stderr")}}, indent=1))
            case.argv = argv
        self.tally.add(case, res, found)
        shutil.rmtree(case.dir, ignore_errors=True)
        if found and not KEEP_GOING:
            raise AssertionError(
                f"pktemu {' '.join(case.argv)}\n  mutated: {case.what}\n  exit {res.exit} in "
                f"{res.duration:.2f}s; stderr: {res.stderr[-1500:]!r}\n  broken: "
                + "\n  broken: ".join(found))
        return res

    def summary(self) -> dict[str, object]:
        return {"worker_restarts": self.worker.restarts, **self.tally.to_json()}
