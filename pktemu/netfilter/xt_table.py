"""A namespace's x_tables objects: a table of chains (built-in with policy and counters, or user),
and what installing a table does to them first (`compile`: rule numbers, indexed runs, jumps
resolved to steps; `validate`: the kernel's checks at table replace)."""
from __future__ import annotations

from itertools import chain as _chain
from operator import attrgetter
from typing import Any

from pktemu.errors import PktemuError
from pktemu.netfilter.core import TABLE_HOOKS
from pktemu.netfilter.xt_base import Extension
from pktemu.netfilter.xt_rule import K_GOTO, K_JUMP, Rule
from pktemu.netfilter.xt_steps import RUN_MIN_KEYED, Draw, Run, build_steps
from pktemu.netfilter.xt_validate import validate_table


class _Binds(dict[type, bool]):
    """Extension class -> whether its objects have a `bind` that does something (the base's does
    nothing)."""

    def __missing__(self, cls: type) -> bool:
        hit = self[cls] = cls.bind is not Extension.bind        # type: ignore[attr-defined]
        return hit


BINDS = _Binds()
_flat = _chain.from_iterable
_RULES = attrgetter("rules")
NO_STEPS: list[Rule | Run | Draw] = []


class Chain:
    """A built-in chain (with policy and policy counters) or a user chain.

    `declared`: the policy was set explicitly (an iptables-restore `:INPUT ACCEPT [0:0]` line or
    `iptables -P`). iptables-nft then creates the base chain with counters, which the kernel
    counts the policy's packets in; a built-in chain made implicitly (by `-A`, or a restore
    without its line) has none, and iptables-nft-save prints [0:0] (legacy always counts)."""

    __slots__ = ("name", "builtin", "_policy", "declared", "pkts", "bytes", "rules", "steps")

    def __init__(self, name: str, builtin: bool, policy: str | None = None) -> None:
        self.name = name
        self.builtin = builtin
        self._policy = policy if builtin else None
        self.declared = False
        self.pkts = self.bytes = 0
        self.rules: list[Rule] = []
        self.steps: list[Rule | Run | Draw] = NO_STEPS       # made by Table.compile (never changed in place)

    @property
    def policy(self) -> str | None:
        return self._policy

    @policy.setter
    def policy(self, value: str | None) -> None:
        self._policy = value
        self.declared = self.builtin

    def copy(self) -> "Chain":
        c = Chain(self.name, self.builtin, self._policy)
        c.pkts, c.bytes, c.rules, c.declared = self.pkts, self.bytes, list(self.rules), self.declared
        return c


class Table:
    """One table of one namespace; it always has its built-in chains (policy ACCEPT at first)."""

    def __init__(self, name: str) -> None:
        if name not in TABLE_HOOKS:
            raise PktemuError(f"unknown table '{name}'")
        self.name = name
        self.chains: dict[str, Chain] = {h: Chain(h, True, "ACCEPT") for h in TABLE_HOOKS[name]}
        self.plain: bool | None = None        # see _plain
        self.checked: tuple[list[Rule], bool] | None = None     # see validate
        #: a template table's iptables-save text (by the tables printed with it and the options)
        #: and its chains' rule lines (by chain and counters option): see save
        self.saved: dict[tuple[Any, ...], Any] = {}

    def copy(self) -> "Table":
        t = Table(self.name)
        t.chains = {n: c.copy() for n, c in self.chains.items()}
        return t

    def compile(self, index: bool = True) -> None:
        """Number the rules, build the indexed steps (the rules list made anew: appends left it up
        to twice the size) and resolve jumps to the target chains' steps."""
        chains = self.chains
        for c in chains.values():
            rules = c.rules = c.rules[:]
            if not index:
                c.steps = list(rules)
            elif len(rules) < RUN_MIN_KEYED:       # no run (most chains): the call is saved too
                c.steps = rules                 # type: ignore[assignment]
            else:
                c.steps = build_steps(rules)
        for c in chains.values():
            name = c.name
            for i, r in enumerate(c.rules, 1):
                r.chain, r.num = name, i
                if r.kind == K_JUMP or r.kind == K_GOTO:
                    r.jump_steps = chains[r.jump].steps

    def validate(self) -> None:
        """What the kernel checks at table replace: no jump loops, extensions in allowed tables/hooks.
        The rules checked are noted, with whether any extension of theirs binds to a namespace:
        `install` then need not look at every rule's extensions again if they are still the same."""
        binds = BINDS
        self.checked = (self.all_rules(), any(binds[cls] for cls in validate_table(self)))

    def all_rules(self) -> list[Rule]:
        """All the rules, chain after chain."""
        return list(_flat(map(_RULES, self.chains.values())))
