"""Parsing of the units users write in topology files (durations)."""
from __future__ import annotations

import re

from pktemu.errors import PktemuError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ns|us|µs|ms|s|m|h)?\s*$")
_SCALE = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000, None: 1_000_000_000,
          "m": 60_000_000_000, "h": 3_600_000_000_000}


def parse_duration(value: object, where: str) -> int:
    """'800ms', '1.5s', '20us', 2 (seconds) -> nanoseconds; `where` names the field in errors."""
    if isinstance(value, bool):
        raise PktemuError(f"{where}: expected a duration like 800ms, got {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise PktemuError(f"{where}: duration must not be negative")
        return int(round(value * 1_000_000_000))
    m = _DURATION.match(str(value))
    if not m:
        raise PktemuError(f"{where}: expected a duration like 800ms or 2s, got {value!r}")
    return int(round(float(m.group(1)) * _SCALE[m.group(2)]))
