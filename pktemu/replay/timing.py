"""When each replayed frame leaves, on the virtual clock: recorded times, `--speed`, `--pps`, `--topspeed`.

Offsets are counted from the first replayed frame of a loop, so a capture that starts with
server frames (not replayed) does not start with silence. A capture whose timestamps go
backwards sends the late frame at once, in file order, as tcpreplay does.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from pktemu.errors import PktemuError
from pktemu.sim import SECOND

LIMIT_NS = 1 << 62          # 146 years: later than any pcap timestamp, so prepare() refuses the replay


def _ns(x: float) -> int:
    """`x` ns as an int, saturated at LIMIT_NS: `--pps 1e-300` is a replay too long to write, not an
    OverflowError on an infinite float."""
    return round(x) if x < LIMIT_NS else LIMIT_NS


@dataclass(frozen=True)
class Timing:
    speed: float = 1.0
    pps: float | None = None
    topspeed: bool = False
    loops: int = 1

    def __post_init__(self) -> None:
        if sum((self.speed != 1.0, self.pps is not None, self.topspeed)) > 1:
            raise PktemuError("--speed, --pps and --topspeed: give at most one of them")
        if not (math.isfinite(self.speed) and self.speed > 0):
            raise PktemuError(f"--speed {self.speed}: expected a multiplier above 0")
        if self.pps is not None and not (math.isfinite(self.pps) and self.pps > 0):
            raise PktemuError(f"--pps {self.pps}: expected packets per second above 0")
        if self.loops < 1:
            raise PktemuError(f"--loop {self.loops}: expected 1 or more")

    @property
    def mode(self) -> str:
        if self.topspeed:
            return "topspeed"
        if self.pps is not None:
            return f"{self.pps:g} pps"
        return "recorded times" if self.speed == 1.0 else f"speed x{self.speed:g}"

    @property
    def interval(self) -> int:
        """The gap between two frames at a fixed rate (0 when timing follows the capture)."""
        return _ns(SECOND / self.pps) if self.pps is not None else 0

    def offsets(self, times: list[int]) -> list[int]:
        """Send offsets (ns from the loop's start) for frames captured at `times` (ns)."""
        if not times:
            return []
        if self.topspeed:
            return [0] * len(times)
        if self.pps is not None:
            return [_ns(i * SECOND / self.pps) for i in range(len(times))]
        out = []
        last = 0
        t0 = times[0]
        for t in times:
            last = max(last, _ns((t - t0) / self.speed))
            out.append(last)
        return out

    def react(self, ns: int) -> int:
        """A client's captured reaction time to an answer, on this timing's clock."""
        if self.topspeed or self.pps is not None:
            return 0
        return _ns(ns / self.speed)
