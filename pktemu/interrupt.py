"""SIGINT, SIGTERM and SIGHUP as one orderly exit: the first signal becomes an exception that
unwinds through the ordinary cleanup (context managers, `except BaseException` blocks), and every
later one is only noted, so a second Ctrl-C cannot cut a cleanup short.

`shielded()` marks code that must run to its end (a rename pair, removing a temporary folder): a
signal arriving inside it is held and raised when the block ends. The CLI installs the handlers
before any heavy import and exits with 128 + the signal's number.
"""
from __future__ import annotations

import signal
import sys
from types import FrameType, TracebackType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(KeyboardInterrupt):
    """A signal asked the process to stop; a KeyboardInterrupt, so code written for Ctrl-C treats it so."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal_name(signum))
        self.signum = signum


class _State:
    signum: int | None = None       # the first signal received: it decides the exit status
    raised = False                  # its exception has been raised; later signals are only noted
    depth = 0                       # nesting of shielded() blocks
    closing = False                 # the process is finishing: signals are only noted


_state = _State()


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def install() -> dict[int, Any]:
    """Route SIGINT, SIGTERM and SIGHUP through `_handler`; returns the handlers it replaced.

    Outside the main thread signals cannot be caught, and nothing changes.
    """
    global _state
    _state = _State()
    previous: dict[int, Any] = {}
    for s in SIGNALS:
        try:
            previous[s] = signal.signal(s, _handler)
        except ValueError:
            break
    if previous and sys.unraisablehook is not _unraisable:
        global _hook
        _hook = sys.unraisablehook
        sys.unraisablehook = _unraisable
    return previous


_hook = sys.unraisablehook


def _unraisable(args: Any) -> None:
    """A signal's exception raised where Python cannot let it out (an import lock's weakref
    callback, a __del__) is swallowed without the 'Exception ignored in' report: the signal is noted,
    and `check()` raises it again at the next safe point."""
    if isinstance(args.exc_value, Interrupted):
        return
    _hook(args)


def ignore() -> None:
    """For a process about to exit: signals are ignored from now on. Noted ones would change nothing,
    and Python's finalisation puts the default actions back for signals it has handlers for, so
    one arriving then would kill the process with no exit status of ours."""
    for s in SIGNALS:
        try:
            signal.signal(s, signal.SIG_IGN)
        except ValueError:
            return


def restore(previous: dict[int, Any]) -> None:
    """Put back what `install` replaced (for callers that go on running after the command)."""
    for s, h in previous.items():
        signal.signal(s, h)
    if sys.unraisablehook is _unraisable:
        sys.unraisablehook = _hook


def _handler(signum: int, frame: FrameType | None) -> None:
    if _state.signum is None:
        _state.signum = signum
    if _state.raised or _state.depth or _state.closing:
        return
    _state.raised = True
    raise Interrupted(signum)


def received() -> int | None:
    """The first signal received since `install()`, raised or not."""
    return _state.signum


def close() -> None:
    """From now on signals are only noted: the process is reporting and exiting."""
    _state.closing = True


def check() -> None:
    """Raise a received signal again if its exception was swallowed on the way (normal code only)."""
    if _state.signum is not None and not _state.depth and not _state.closing:
        _state.raised = True
        raise Interrupted(_state.signum)


class shielded:
    """A block that runs to its end: a signal inside it is raised as Interrupted when it ends."""

    def __enter__(self) -> None:
        _state.depth += 1

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        _state.depth -= 1
        if not _state.depth and _state.signum is not None and not _state.raised and not _state.closing:
            _state.raised = True
            raise Interrupted(_state.signum)
