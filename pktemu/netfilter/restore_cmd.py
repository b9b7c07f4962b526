"""iptables-restore's commands on an open table (`-A -I -R -D -N -X -F -Z -P`), and the
bookkeeping that keeps each at a cost in its own line's length (see restore): an index of rule
texts per chain for `-D` by text, jump counts for `-X`, holes `-D` leaves until COMMIT compacts.
"""
from __future__ import annotations

from collections import Counter, deque

from pktemu.errors import PktemuError, excerpt
from pktemu.netfilter.xt_base import TARGETS
from pktemu.netfilter.xt_parse import Command
from pktemu.netfilter.xt_rule import K_GOTO, K_JUMP, STANDARD, Rule
from pktemu.netfilter.xtables import Chain, Table

MAX_CHAIN_NAME = 28
_GONE = Rule("<deleted>")       # a rule `-D` removed; chains are compacted before anything else reads them


def check_chain_name(name: str, where: str) -> None:
    """What iptables refuses as a user chain name."""
    if not name or len(name) > MAX_CHAIN_NAME:
        raise PktemuError(f"{where}: invalid chain name {excerpt(name)} (1 to {MAX_CHAIN_NAME} characters)")
    if name[0] in "-!" or name in STANDARD or name in TARGETS:
        raise PktemuError(f"{where}: invalid chain name {excerpt(name)} (clashes with a target or option)")


def _jumps(r: Rule) -> bool:
    return r.kind in (K_JUMP, K_GOTO) and r is not _GONE


class Commands:
    """The command lines' part of the loader (restore._Loader), with the state they share."""

    bodies: dict[str, dict[str, deque[int]]]       # chain -> rule text -> live positions
    holes: dict[str, int]                           # chain -> _GONE entries
    refs: Counter[str] | None                       # chain -> rules jumping to it
    from_builtin: int                               # jumping rules in built-in chains
    all_flushed: bool
    all_zeroed: bool

    def _live(self, c: Chain) -> list[Rule]:
        """The chain's rules without the holes -D left (its text index goes if they moved)."""
        if self.holes.pop(c.name, 0):
            self.bodies.pop(c.name, None)
            c.rules = [r for r in c.rules if r is not _GONE]
        return c.rules

    def _settle(self, c: Chain) -> list[Rule]:
        """`_live`, for a change that moves rules: the text index goes too."""
        self.bodies.pop(c.name, None)
        return self._live(c)

    def _index(self, c: Chain) -> dict[str, deque[int]]:
        idx = self.bodies.get(c.name)
        if idx is None:
            idx = {}
            for i, r in enumerate(self._settle(c)):
                idx.setdefault(r.body, deque()).append(i)
            self.bodies[c.name] = idx
        return idx

    def _count(self, c: Chain, rules: list[Rule], k: int) -> None:
        """Keep the jump counts (once built) right when `rules` join (k=1) or leave (k=-1) `c`."""
        if self.refs is None:
            return
        for r in rules:
            if _jumps(r):
                self.refs[r.jump] += k
                if c.builtin:
                    self.from_builtin += k

    def _refs(self, t: Table) -> Counter[str]:
        if self.refs is None:
            self.refs, self.from_builtin = Counter(), 0
            for c in t.chains.values():
                self._count(c, self._live(c), 1)
        return self.refs

    def _added(self, c: Chain, rules: list[Rule]) -> None:
        self._count(c, rules, 1)
        self.all_flushed = self.all_zeroed = False

    def _flush(self, c: Chain) -> None:
        self._count(c, c.rules, -1)
        self.bodies.pop(c.name, None)
        self.holes.pop(c.name, None)
        c.rules = []

    # ------------------------------------------------------------------ commands
    def _chain(self, t: Table, name: str, where: str, user: bool = False) -> Chain:
        c = t.chains.get(name)
        if c is None:
            raise PktemuError(f"{where}: unknown chain {excerpt(name)} in table {t.name}")
        if user and c.builtin:
            raise PktemuError(f"{where}: {name} is a built-in chain")
        return c

    def _check_jumps(self, t: Table, rules: list[Rule], where: str) -> None:
        for r in rules:
            if r.kind in (K_JUMP, K_GOTO):
                c = t.chains.get(r.jump)
                if c is None:
                    raise PktemuError(f"{where}: jump to undeclared chain (or unknown target) "
                                      f"{excerpt(r.jump)}")
                if c.builtin:
                    raise PktemuError(f"{where}: cannot jump to built-in chain {r.jump}")

    def cmd_A_fast(self, c: Chain, r: Rule) -> None:
        """cmd_A of a rule the fast path made (its chain and jump checked), while an index is kept."""
        idx = self.bodies.get(c.name)
        if idx is not None:
            idx.setdefault(r.body, deque()).append(len(c.rules))
        c.rules.append(r)
        self._count(c, [r], 1)

    def cmd_A(self, t: Table, cmd: Command, where: str) -> None:
        c = self._chain(t, cmd.chain, where)
        self._check_jumps(t, cmd.rules, where)
        idx = self.bodies.get(c.name)
        if idx is not None:
            for k, r in enumerate(cmd.rules, len(c.rules)):
                idx.setdefault(r.body, deque()).append(k)
        c.rules.extend(cmd.rules)
        self._added(c, cmd.rules)

    def cmd_I(self, t: Table, cmd: Command, where: str) -> None:
        c = self._chain(t, cmd.chain, where)
        self._check_jumps(t, cmd.rules, where)
        rules = self._settle(c)
        pos = (cmd.num or 1) - 1
        if pos > len(rules):
            raise PktemuError(f"{where}: index of insertion {cmd.num} too big for chain {c.name}")
        rules[pos:pos] = cmd.rules
        self._added(c, cmd.rules)

    def cmd_R(self, t: Table, cmd: Command, where: str) -> None:
        c = self._chain(t, cmd.chain, where)
        self._check_jumps(t, cmd.rules, where)
        rules = self._settle(c)
        pos = (cmd.num or 1) - 1
        if pos >= len(rules) or len(cmd.rules) != 1:
            raise PktemuError(f"{where}: cannot replace rule {cmd.num} of chain {c.name}")
        self._count(c, rules[pos:pos + 1], -1)
        rules[pos] = cmd.rules[0]
        self._added(c, cmd.rules)

    def cmd_D(self, t: Table, cmd: Command, where: str) -> None:
        c = self._chain(t, cmd.chain, where)
        if cmd.num is not None:
            rules = self._settle(c)
            if cmd.num > len(rules):
                raise PktemuError(f"{where}: chain {c.name} has no rule {cmd.num}")
            self._count(c, rules[cmd.num - 1:cmd.num], -1)
            del rules[cmd.num - 1]
            return
        idx = self._index(c)
        for want in cmd.rules:
            live = idx.get(want.body)
            if not live:
                raise PktemuError(f"{where}: no rule {excerpt(want.body.strip())} in chain {c.name}")
            pos = live.popleft()
            self._count(c, c.rules[pos:pos + 1], -1)
            c.rules[pos] = _GONE
            self.holes[c.name] = self.holes.get(c.name, 0) + 1

    def cmd_N(self, t: Table, cmd: Command, where: str) -> None:
        if cmd.chain in t.chains:
            raise PktemuError(f"{where}: chain {cmd.chain} already exists")
        check_chain_name(cmd.chain, where)
        t.chains[cmd.chain] = Chain(cmd.chain, False)

    def cmd_X(self, t: Table, cmd: Command, where: str) -> None:
        if cmd.chain:
            victims = [self._chain(t, cmd.chain, where, user=True)]
            if self._refs(t)[cmd.chain]:
                self._referenced(t, {cmd.chain}, list(t.chains.values()), where)
        else:
            victims = [c for c in t.chains.values() if not c.builtin]
            if not victims:
                return
            self._refs(t)
            if self.from_builtin:
                self._referenced(t, {c.name for c in victims}, [c for c in t.chains.values() if c.builtin],
                                 where)
        for c in victims:
            self._flush(c)
            del t.chains[c.name]

    def _referenced(self, t: Table, names: set[str], chains: list[Chain], where: str) -> None:
        """Raise the error for the first rule of `chains` that jumps to one of `names`."""
        for c in chains:
            for r in self._live(c):
                if r.kind in (K_JUMP, K_GOTO) and r.jump in names:
                    raise PktemuError(f"{where}: chain {r.jump} is still referenced from chain {c.name}")
        raise PktemuError(f"{where}: chain {min(names)} is still referenced")

    def cmd_F(self, t: Table, cmd: Command, where: str) -> None:
        if cmd.chain:
            self._flush(self._chain(t, cmd.chain, where))
        elif not self.all_flushed:
            for c in t.chains.values():
                self._flush(c)
            self.all_flushed = True

    def cmd_Z(self, t: Table, cmd: Command, where: str) -> None:
        if not cmd.chain and self.all_zeroed:
            return
        for c in [self._chain(t, cmd.chain, where)] if cmd.chain else list(t.chains.values()):
            c.pkts = c.bytes = 0
            c.rules = [r.copy() for r in self._live(c)]        # the live rules keep theirs until COMMIT
            for r in c.rules:
                r.pkts = r.bytes = 0
        self.all_zeroed = not cmd.chain

    def cmd_P(self, t: Table, cmd: Command, where: str) -> None:
        c = self._chain(t, cmd.chain, where)
        if not c.builtin:
            raise PktemuError(f"{where}: cannot set a policy on user chain {c.name}")
        if cmd.policy not in ("ACCEPT", "DROP"):
            raise PktemuError(f"{where}: bad policy {excerpt(cmd.policy)} (ACCEPT or DROP)")
        c.policy = cmd.policy
