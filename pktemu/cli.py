"""The `pktemu` command line. Subcommands live in `pktemu.commands`, one module each.

Exit statuses: 0 done; 1 `pktemu trace`'s packet dropped or unanswered; 2 bad input (one line on
stderr, nothing written); 70 an internal error (one line; PKTEMU_DEBUG=1 shows the traceback);
128 + N after signal N (129 SIGHUP, 130 SIGINT, 143 SIGTERM), every output directory the
previous one or a whole new one, no temporary left; 141 when stdout is a closed pipe. Every
stderr line is at most MAX_LINE characters.

Only light modules are imported here: the signal handlers go in first thing in `main`, and the
commands (Scapy, rich) are imported after them, so a signal during start-up is handled too.
"""
from __future__ import annotations

import argparse
import errno
import functools
import importlib
import importlib.util
import os
import re
import signal
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import IO, TYPE_CHECKING, Any, cast

from pktemu import interrupt, stdout
from pktemu.errors import PktemuError

if TYPE_CHECKING:
    from rich.console import Console

EXIT_BAD_INPUT = 2
EXIT_SOFTWARE = 70                     # sysexits.h EX_SOFTWARE
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE
MAX_LINE = 300


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line with exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        say(f"pktemu: error: {message}")
        raise SystemExit(EXIT_BAD_INPUT)


def say(line: str) -> None:
    """One line on stderr, whatever the message: control characters escaped, at most MAX_LINE
    characters (the middle cut), so a terminal shows exactly one line."""
    if not line.isprintable():
        line = "".join(c if c.isprintable() else repr(c)[1:-1] for c in line)
    if len(line) > MAX_LINE:
        keep = MAX_LINE - 3
        line = line[:keep - keep // 2] + "..." + line[-(keep // 2):]
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser; with `argv` naming a command first, that command's only: the others' imports and
    argument tables cost a run's start-up for nothing (usage errors are one line without the list)."""
    from pktemu import commands

    from pktemu.version import version

    p = _Parser(prog="pktemu", description="Packet-level emulator of Linux and Kubernetes networking.",
                epilog="`pktemu` alone prints this help (exit status 0); "
                "`pktemu COMMAND --help` a command's.")
    p.add_argument("--version", action="version", version=f"pktemu {version()}")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND", parser_class=_Parser)
    one = _command(argv[0]) if argv else None
    for mod in [one] if one is not None else commands.load_all():
        sp = sub.add_parser(mod.NAME, help=mod.HELP, description=mod.__doc__)
        mod.add_arguments(sp)
        sp.set_defaults(func=mod.run)
    return p


def _command(name: str) -> ModuleType | None:
    """The module of command `name` (`import` is import_.py), or None if `name` is none."""
    if not re.fullmatch(r"[a-z]{1,20}", name):
        return None
    for mod_name in (name, name + "_"):
        full = f"pktemu.commands.{mod_name}"
        if importlib.util.find_spec(full) is not None:
            mod = importlib.import_module(full)
            if getattr(mod, "NAME", None) == name:
                return mod
    return None


@functools.cache
def _console_class() -> type[Console]:
    """Made once per process (rich is imported only once the signal handlers are in)."""
    from rich.console import Console

    class _Console(Console):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            """Text is printed as it is: a path, a rule or a reason holding `[x]` is no markup."""
            kwargs.setdefault("markup", False)
            super().__init__(*args, **kwargs)

        def on_broken_pipe(self) -> None:
            """rich exits with status 1 here; the CLI reports every closed stdout the same way."""
            self.quiet = True
            raise BrokenPipeError(errno.EPIPE, "stdout is closed")

    return _Console


def _console() -> Console:
    """Printing to stdout through pktemu.stdout, so a closed pipe is exit status 141 whatever the size."""
    return _console_class()(file=cast(IO[str], stdout.Stdout()))


def _run(argv: Sequence[str] | None) -> int:
    from pktemu.commands import examples_text, resolve_topology

    parser = build_parser(sys.argv[1:] if argv is None else argv)
    args, extra = parser.parse_known_args(argv)
    more = getattr(args, "intermixed", None)        # `import A -o T B`: positionals after an option
    if extra and more and not any(a.startswith("-") for a in extra):
        getattr(args, more).extend(extra)
    elif extra:
        parser.parse_args(argv)                       # argparse's own one-line error, exit 2
    if args.cmd is None:               # `pktemu` alone: the commands, as kubectl does
        parser.print_help()
        return 0
    if getattr(args, "example", None) == "":       # `--example` alone: the shipped topologies
        stdout.write(examples_text())
        return 0
    resolve_topology(args.cmd, args)
    interrupt.check()                  # a signal whose exception an import swallowed
    out = _console()
    status = int(args.func(args, out))
    sys.stdout.flush()
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command and return its exit status; never a traceback, never a temporary left.

    As the `pktemu` program (no `argv`) it leaves SIGINT, SIGTERM and SIGHUP ignored for the few
    instructions before the process exits, so a late second Ctrl-C changes nothing, and ends the
    process itself (`_end_now`); called from Python with `argv`, it puts the caller's handlers back
    and returns.
    """
    previous = interrupt.install()
    exits = False
    try:
        try:
            status = _run(argv)
        finally:
            interrupt.close()
    except BaseException as e:
        interrupt.close()
        exits = isinstance(e, SystemExit)
        status = _failure(e)
    atomic = sys.modules.get("pktemu.io.atomic")
    if atomic is not None:
        try:
            atomic.remove_ours()           # what a cleanup cut short by the first signal missed
        except Exception:
            pass
    if argv is None:
        interrupt.ignore()
    signum = interrupt.received()
    if signum is not None and status == 0:
        say(f"pktemu: interrupted ({interrupt.signal_name(signum)})")
        status = 128 + signum
    if argv is not None:
        interrupt.restore(previous)
    if exits:
        raise SystemExit(status)           # argparse's way (--help, usage errors), kept for callers
    if argv is None:
        _end_now(status)
    return status


def _end_now(status: int) -> None:
    """End the `pktemu` program with `status` without the interpreter's teardown: freeing a big
    run's objects one by one took 2.6 s after a 1,000-node cluster's 18.5 s run. The exit handlers
    (atexit, weakref.finalize) still run, after stdout and stderr are flushed. Returns, for an
    ordinary exit, while other threads run (a Dask client's) or a flush fails."""
    import threading

    if threading.active_count() > 1:
        return
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        return
    run_exit_handlers = getattr(__import__("atexit"), "_run_exitfuncs", None)
    if run_exit_handlers is None:       # not CPython
        return
    run_exit_handlers()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        return
    os._exit(status)


def _failure(e: BaseException) -> int:
    """The exit status for `e`, after its one line on stderr."""
    if isinstance(e, SystemExit):                       # argparse: --help, usage errors
        if e.code is None or isinstance(e.code, int):
            return e.code or 0
        say(f"pktemu: error: {e.code}")
        return 1
    e = _signal_inside(e)
    if isinstance(e, KeyboardInterrupt):
        signum = e.signum if isinstance(e, interrupt.Interrupted) else signal.SIGINT
        say(f"pktemu: interrupted ({interrupt.signal_name(signum)})")
        return 128 + signum
    if isinstance(e, PktemuError):
        say(f"pktemu: error: {e}")
        return EXIT_BAD_INPUT
    if isinstance(e, BrokenPipeError):                  # `pktemu rules ... | head -1`
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    if isinstance(e, OSError) and e.filename is not None:
        say(f"pktemu: error: {e.filename}: {e.strerror or e}")  # a full disk, a vanished folder
        return EXIT_BAD_INPUT
    if os.environ.get("PKTEMU_DEBUG", "") not in ("", "0"):
        import traceback

        traceback.print_exception(e)
    try:
        detail = str(e)
    except Exception:                                   # a broken __str__ on the bug's exception
        detail = ""
    say(f"pktemu: internal error: {type(e).__name__}: {detail or '(no message)'} "
        "(please report; set PKTEMU_DEBUG=1 for the traceback)")
    return EXIT_SOFTWARE


def _signal_inside(e: BaseException) -> BaseException:
    """The signal's exception if Python wrapped it in another on the way out (a RuntimeError from
    a class's __set_name__ while a module imports), else `e`."""
    seen: set[int] = set()
    inner: BaseException | None = e
    while inner is not None and id(inner) not in seen:
        if isinstance(inner, interrupt.Interrupted):
            return inner
        seen.add(id(inner))
        inner = inner.__cause__ or inner.__context__
    return e


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so flushing it at exit does not fail a second time."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main())
