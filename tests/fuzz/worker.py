"""A persistent `pktemu` process for the fuzz suite: one JSON request per line on stdin, one JSON
answer per line on the protocol pipe (the original stdout), each case run by `pktemu.cli.main(argv)`.

Starting Python and importing pktemu costs more than most cases, so one process runs them all. What
a case writes to file descriptors 1 and 2 (print, rich, sys.stderr, logging handlers, C code) lands
in per-case files, exactly what a user's terminal would show. The whole process is held to a memory
bound (RLIMIT_AS) and each case to a time bound (an interval timer); the client restarts the worker
when it dies or stops answering.

Request:  {"argv": [...], "cwd": DIR, "timeout": SECONDS}
Answer:   {"exit": int|null, "stdout": str, "stdout_len": int, "stderr": str, "duration": float,
           "timed_out": bool, "memory_error": bool, "exception": "Type"|null, "where": "file:line fn"|null}
`exception`/`where` name an exception that escaped `main` (a traceback for a user) or, when `main`
turned it into its "internal error" exit, the one found by running the subcommand again without
`main`'s backstop.
"""
from __future__ import annotations

import io
import json
import os
import resource
import signal
import sys
import tempfile
import time
import traceback
import warnings
from types import FrameType, TracebackType
from typing import Any

MEMORY_LIMIT = int(os.environ.get("PKTEMU_FUZZ_MEMORY", str(2 << 30)))
STDOUT_KEEP = 4 << 20          # enough for any --json document the checks parse
STDERR_KEEP = 20_000


class CaseTimeout(BaseException):
    """Raised by the interval timer inside the case; a BaseException so that no `except Exception`
    in pktemu swallows it."""


FIRED = [False]


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    FIRED[0] = True
    raise CaseTimeout()


def where(tb: TracebackType | None) -> str | None:
    """The innermost frame inside the pktemu package (else the innermost frame): `file:line fn`."""
    frames = traceback.extract_tb(tb)
    ours = [f for f in frames if f"{os.sep}pktemu{os.sep}" in f.filename] or frames
    if not ours:
        return None
    f = ours[-1]
    name = f.filename
    i = name.rfind(f"{os.sep}pktemu{os.sep}")
    return f"{name[i + 1:] if i >= 0 else os.path.basename(name)}:{f.lineno} {f.name}"


def exit_status(code: object) -> tuple[int, str]:
    """What the interpreter makes of `SystemExit(code)`: the status and what it prints."""
    if code is None:
        return 0, ""
    if isinstance(code, int):
        return code, ""
    return 1, f"{code}\n"


def diagnose(argv: list[str]) -> tuple[str | None, str | None]:
    """Run the subcommand without `main`'s try/except to name the exception it hid behind exit 70."""
    from pktemu import cli
    from rich.console import Console

    try:
        args = cli.build_parser().parse_args(argv)
        args.func(args, Console(file=io.StringIO()))
    except (SystemExit, CaseTimeout):
        return None, None
    except BaseException as e:  # noqa: B036 (anything it raises is what we are looking for)
        return type(e).__name__, where(e.__traceback__)
    return None, None


class Worker:
    """The request loop; fds 1 and 2 point at per-case files while a case runs."""

    def __init__(self) -> None:
        self.proto = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
        self.out = tempfile.TemporaryFile()
        self.err = tempfile.TemporaryFile()
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.close(null)
        self.home = os.getcwd()

    def _point_fds(self) -> None:
        for f, fd in ((self.out, 1), (self.err, 2)):
            f.seek(0)
            f.truncate()
            os.dup2(f.fileno(), fd)

    @staticmethod
    def _read(f: Any, keep: int) -> tuple[str, int]:
        f.seek(0)
        data = f.read()
        return data[:keep].decode("utf-8", "replace"), len(data)

    def run(self, req: dict[str, Any]) -> dict[str, Any]:
        from pktemu import cli

        argv = [str(a) for a in req["argv"]]
        timeout = float(req.get("timeout", 10))
        res: dict[str, Any] = {"exit": None, "timed_out": False, "memory_error": False,
                               "exception": None, "where": None}
        sys.stdout.flush()
        sys.stderr.flush()
        self._point_fds()
        os.chdir(req.get("cwd") or self.home)
        t0 = time.perf_counter()
        FIRED[0] = False
        signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            try:
                res["exit"] = int(cli.main(argv))
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        except SystemExit as e:
            res["exit"], text = exit_status(e.code)
            sys.stderr.write(text)
        except CaseTimeout as e:
            res["timed_out"] = True
            res["where"] = where(e.__traceback__)
        except BaseException as e:  # noqa: B036 (a user would see this traceback)
            res["memory_error"] = isinstance(e, MemoryError)
            res["exception"], res["where"] = type(e).__name__, where(e.__traceback__)
            traceback.print_exception(e)
            res["exit"] = 1
        res["duration"] = time.perf_counter() - t0
        res["timed_out"] = FIRED[0]
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.chdir(self.home)
        res["stdout"], res["stdout_len"] = self._read(self.out, STDOUT_KEEP)
        res["stderr"], _ = self._read(self.err, STDERR_KEEP)
        if res["exit"] == 70 and res["exception"] is None and not res["timed_out"]:
            signal.setitimer(signal.ITIMER_REAL, timeout)
            try:
                res["exception"], res["where"] = diagnose(argv)
            except CaseTimeout:
                pass
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        return res

    def loop(self) -> None:
        for line in sys.stdin:
            if not line.strip():
                continue
            res = self.run(json.loads(line))
            self.proto.write(json.dumps(res) + "\n")


def main() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    signal.signal(signal.SIGALRM, _on_alarm)
    warnings.simplefilter("always", UserWarning)
    warnings.simplefilter("always", RuntimeWarning)
    import pktemu.cli  # noqa: F401 (imported once, before the first case's clock starts)

    w = Worker()
    w.proto.write(json.dumps({"ready": True, "pid": os.getpid()}) + "\n")
    w.loop()


if __name__ == "__main__":
    main()
