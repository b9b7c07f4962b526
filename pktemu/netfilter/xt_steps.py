"""The indexed steps of a chain: runs of rules keyed by their `-d a.b.c.d/32`.

Lookup cost does not grow with the number of Services: a consecutive run of rules that carry a
non-negated `-d a.b.c.d/32` is indexed by that address, so a packet only evaluates the rules of
the run whose address is its own, plus the run's few rules without such a key, in their original
order — the same result as the linear walk, since no other rule of the run can match.
"""
from __future__ import annotations

from operator import attrgetter, countOf
from typing import Any, cast

from pktemu.netfilter.xt_rule import Rule

RUN_MIN_KEYED = 4         # shorter runs are walked linearly
RUN_MAX_UNKEYED = 16      # rules without a key a run may absorb (each one is a candidate for all)
_KEY = attrgetter("key")


class Run:
    """An indexed stretch of a chain: daddr -> candidate rules in chain order.

    An address's candidates are a tuple of rules until a packet first looks them up, then one flat
    tuple (rule, its checks, rule, its checks, ...) where a keyed rule's checks leave out the
    destination test (Rule.keyed_checks): what a packet reads is then mostly shared. The last item
    tells them apart (a rule, or a tuple of checks)."""

    __slots__ = ("index", "default", "rules")

    def __init__(self, rules: list[Rule]) -> None:
        self.rules = rules
        self.default: tuple[Any, ...] = tuple(r for r in rules if r.key is None)
        keyed: dict[int, list[Rule]] = {}
        for r in rules:
            if r.key is not None:
                keyed.setdefault(r.key, []).append(r)
        if self.default:
            order = {id(r): i for i, r in enumerate(rules)}
            self.index: dict[int, tuple[Any, ...]] = {
                k: tuple(sorted(v + list(self.default), key=lambda r: order[id(r)]))
                for k, v in keyed.items()}
        else:
            self.index = {k: tuple(v) for k, v in keyed.items()}

    def candidates(self, daddr: int) -> tuple[Any, ...]:
        """The flat candidates of `daddr` (made on its first packet)."""
        cand = self.index.get(daddr)
        if cand is None:
            cand = self.default
            if cand and cand[-1].__class__ is not tuple:
                cand = self.default = _flat(cand)
        elif cand[-1].__class__ is not tuple:
            cand = self.index[daddr] = _flat(cand)
        return cand


def _flat(rules: tuple[Rule, ...]) -> tuple[Any, ...]:
    out: list[Any] = []
    for r in rules:
        out += (r, r.keyed_checks())
    return tuple(out)


def build_steps(rules: list[Rule]) -> list[Rule | Run]:
    """Split a chain into plain rules and indexed runs (see the module docstring); a chain without
    a run is its own steps (the rules list itself: a chain is never changed once installed, a
    restore changes a copy)."""
    if len(rules) < RUN_MIN_KEYED or len(rules) - countOf(map(_KEY, rules), None) < RUN_MIN_KEYED:
        return cast("list[Rule | Run]", rules)
    steps: list[Rule | Run] = []
    i, n, runs = 0, len(rules), False
    while i < n:
        if rules[i].key is None:
            steps.append(rules[i])
            i += 1
            continue
        j, keyed, unkeyed, end = i, 0, 0, i
        while j < n:
            if rules[j].key is not None:
                keyed += 1
                end = j + 1
            elif unkeyed == RUN_MAX_UNKEYED:
                break
            else:
                unkeyed += 1
            j += 1
        if keyed >= RUN_MIN_KEYED:
            steps.append(Run(rules[i:end]))
            runs = True
        else:
            steps.extend(rules[i:end])
        i = end
    return steps if runs else cast("list[Rule | Run]", rules)
