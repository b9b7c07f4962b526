"""The API's virtual clock arguments: seconds as given by a caller, checked and made nanoseconds.

The clock ends where a pcap record's 32-bit seconds do: a frame past that could not be written,
so a call that would take the clock there is refused before it runs (a part of `pktemu.Network`).
"""
from __future__ import annotations

from typing import Any

from pktemu.errors import PktemuError, excerpt
from pktemu.sim import EPOCH_NS, SECOND

#: the first virtual nanosecond a pcap cannot hold (2106-02-07T06:28:16Z)
CLOCK_END_NS = 2**32 * SECOND - EPOCH_NS
#: the most a duration, timeout or time argument may say, in seconds
MAX_SECONDS = 1e9


def ns(what: str, field: str, seconds: Any, limit: float = MAX_SECONDS) -> int:
    """`seconds` (a number, 0 or more, under `limit`) in nanoseconds; else one error line."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 <= seconds < limit:
        raise PktemuError(f"{what}: {field}={excerpt(seconds)} is not a number of seconds (0 or more)")
    return round(seconds * SECOND)


def later(what: str, field: str, seconds: Any, now: int) -> int:
    """The clock `seconds` after `now` (ns), refused past the clock's end."""
    target = now + ns(what, field, seconds)
    check_end(what, field, seconds, target, now)
    return target


def until(what: str, field: str, seconds: Any, now: int) -> int:
    """The clock at `seconds`, not before `now` (ns) nor past the clock's end."""
    target = ns(what, field, seconds, float("inf"))          # a finite one: past the end is said so
    check_end(what, field, seconds, target, now)
    if target < now:
        raise PktemuError(f"{what}: {field}={seconds} is in the past (now is {now / SECOND})")
    return target


def check_end(what: str, field: str, seconds: Any, target: int, now: int) -> None:
    if target >= CLOCK_END_NS:
        raise PktemuError(f"{what}: {field}={excerpt(seconds)} would take the clock to {exact(target)} s, "
                          f"past its end at {exact(CLOCK_END_NS)} s (2106-02-07T06:28:16Z, where pcap "
                          f"timestamps end; now is {exact(now)} s)")


def exact(t_ns: int) -> str:
    """Nanoseconds as exact seconds: `2559277696`, `1999999998.00008`."""
    return f"{t_ns // SECOND}.{t_ns % SECOND:09d}".rstrip("0").rstrip(".")
