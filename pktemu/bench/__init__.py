"""The honest benchmark of issue 15: `python -m pktemu.bench [--quick] [--json]`.

Every figure is a ratio A/B where B is a baseline measured in the same process, in the same run,
with A and B interleaved (A B A B ...) so that noise from other work on a shared machine hits both
sides; each figure is the median over the repetitions, with the smallest and largest ratio. Where
the issue's goal is in seconds or bytes (a ruleset loads in 1 s), the figure also carries that
absolute value (median, min, max) and the goal is judged on it; otherwise on the ratio.

Workloads (pktemu.bench.hops, .rules, .cluster): the founding scenario end to end and a long
DNS + HTTP load through the ClusterIP, per hop against a Scapy `Ether(raw)` dissection of the same
frames; kube-proxy rulesets of 10 / 10,000 / 50,000 Services (iptables and nftables modes): load,
memory and first-packet lookup; manifest load and kube-proxy sync; two sizes of generated cluster.
"""
from __future__ import annotations

import gc
import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class Goal:
    """The issue's goal for a figure: `on` the ratio or the absolute value, at most `at_most`."""
    text: str
    at_most: float
    on: str = "ratio"


@dataclass
class Figure:
    """One line of the table: a ratio with its spread, what each side measured, and the goal."""
    key: str
    what: str
    baseline: str
    ratios: list[float]
    absolute: list[float] = field(default_factory=list)
    unit: str = ""
    goal: Goal | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def met(self) -> bool | None:
        if self.goal is None:
            return None
        vals = self.absolute if self.goal.on == "absolute" else self.ratios
        return statistics.median(vals) <= self.goal.at_most

    def as_data(self) -> dict[str, Any]:
        out: dict[str, Any] = {"what": self.what, "baseline": self.baseline, **spread(self.ratios),
                               "repetitions": len(self.ratios)}
        if self.absolute:
            out["absolute"] = {**spread(self.absolute), "unit": self.unit}
        out["goal"] = None if self.goal is None else {"text": self.goal.text, "at_most": self.goal.at_most,
                                                      "on": self.goal.on}
        out["met"] = self.met()
        out.update(self.extra)
        return out


def spread(vals: list[float]) -> dict[str, float]:
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals)}


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Wall seconds of one call, after a collection so that one side does not pay the other's garbage."""
    gc.collect()
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


def interleave(a: Callable[[], float], b: Callable[[], float], reps: int,
               warmup: bool = False) -> tuple[list[float], list[float]]:
    """A B A B ...: each side returns its own measure (seconds, seconds per hop...); returns the
    A/B ratios and the A values, both in repetition order. `warmup`: one untimed A and B first
    (caches, lazy imports), for the cheap sides."""
    if warmup:
        a()
        b()
    ratios, values = [], []
    for _ in range(reps):
        va = a()
        vb = b()
        ratios.append(va / vb)
        values.append(va)
    return ratios, values


def exponent(ratio: float, size_ratio: float) -> float:
    """k in cost ~ size**k, from two sizes: 1 is linear."""
    return math.log(ratio) / math.log(size_ratio)
