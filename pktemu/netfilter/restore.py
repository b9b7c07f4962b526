"""iptables-restore: `iptables-save` output (with or without -c) or hand-written restore input.

`*table` opens a table (flushed, with its user chains deleted, unless `noflush`), `:CHAIN POLICY
[p:b]` declares a chain (with `noflush` an existing user chain is flushed instead: kube-proxy's
partial restores rely on that), command lines change it, `COMMIT` ends it. The load is all or
nothing: tables are validated at COMMIT and installed into the ruleset only when the whole text
parsed, so a bad file leaves the namespace as it was. Every error is one line `path:line: what`.
"""
from __future__ import annotations

import re

from pktemu.errors import PktemuError
from pktemu.netfilter.core import TABLE_HOOKS
from pktemu.netfilter.xt_base import TARGETS, ParseCtx
from pktemu.netfilter.xt_parse import Command, parse_line, tokenize
from pktemu.netfilter.xt_rule import K_GOTO, K_JUMP, STANDARD, Rule
from pktemu.netfilter.xtables import Chain, Ruleset, Table

_COUNTERS_RE = re.compile(r"^\[(\d+):(\d+)\]$")
_PREFIX_RE = re.compile(r"^\[([^\]]*)\]\s*")
MAX_CHAIN_NAME = 28


def _counters(text: str, where: str) -> tuple[int, int]:
    m = _COUNTERS_RE.match(text)
    if m is None:
        raise PktemuError(f"{where}: bad counters '{text}' (expected [packets:bytes])")
    return int(m.group(1)), int(m.group(2))


def check_chain_name(name: str, where: str) -> None:
    """What iptables refuses as a user chain name."""
    if not name or len(name) > MAX_CHAIN_NAME:
        raise PktemuError(f"{where}: invalid chain name '{name}' (1 to {MAX_CHAIN_NAME} characters)")
    if name[0] in "-!" or name in STANDARD or name in TARGETS:
        raise PktemuError(f"{where}: invalid chain name '{name}' (clashes with a target or option)")


class _Loader:
    def __init__(self, path: str, ruleset: Ruleset, noflush: bool, counters: bool) -> None:
        self.path = path
        self.rs = ruleset
        self.noflush = noflush
        self.counters = counters
        self.done: dict[str, Table] = {}        # committed in this load, in order
        self.cur: Table | None = None
        self.cur_line = 0

    def run(self, text: str) -> Ruleset:
        for lineno, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            where = f"{self.path}:{lineno}"
            if line.startswith("*"):
                self.open_table(line[1:].strip(), where, lineno)
            elif line == "COMMIT":
                if self.cur is None:
                    raise PktemuError(f"{where}: COMMIT without a *table line")
                self.cur.validate()
                self.done[self.cur.name] = self.cur
                self.cur = None
            elif self.cur is None:
                raise PktemuError(f"{where}: line outside of a table (missing *table line)")
            elif line.startswith(":"):
                self.declare_chain(self.cur, line[1:].split(), where)
            else:
                self.command(self.cur, line, where)
        if self.cur is not None:
            raise PktemuError(f"{self.path}:{self.cur_line}: table {self.cur.name} is missing its COMMIT")
        for table in self.done.values():
            self.rs.install(table, validate=False)
        return self.rs

    def open_table(self, name: str, where: str, lineno: int) -> None:
        if self.cur is not None:
            raise PktemuError(f"{where}: *{name} while table {self.cur.name} is open (missing COMMIT)")
        if name not in TABLE_HOOKS:
            raise PktemuError(f"{where}: unknown table '{name}'")
        base = self.done.get(name) or (self.rs.table(name) if self.rs.has_table(name) else None)
        t = base.copy() if base is not None else Table(name)
        if not self.noflush:
            t.chains = {n: c for n, c in t.chains.items() if c.builtin}
            for c in t.chains.values():
                c.rules = []
        self.cur, self.cur_line = t, lineno

    def declare_chain(self, t: Table, parts: list[str], where: str) -> None:
        if not parts:
            raise PktemuError(f"{where}: chain line without a chain name")
        name = parts[0]
        if len(parts) < 2:
            raise PktemuError(f"{where}: chain {name}: policy missing")
        if len(parts) > 3:
            raise PktemuError(f"{where}: chain {name}: unexpected '{parts[3]}'")
        policy = parts[1]
        ctrs = _counters(parts[2], where) if len(parts) == 3 else None
        c = t.chains.get(name)
        if c is not None and c.builtin:
            if policy != "-":
                if policy not in ("ACCEPT", "DROP"):
                    raise PktemuError(f"{where}: bad policy '{policy}' for chain {name} (ACCEPT or DROP)")
                c.policy = policy
                if self.counters and ctrs is not None:
                    c.pkts, c.bytes = ctrs
            return
        if policy != "-":
            raise PktemuError(f"{where}: cannot set policy '{policy}' on user chain {name}")
        if c is not None:
            if not self.noflush:
                raise PktemuError(f"{where}: chain {name} declared twice")
            c.rules = []
            return
        check_chain_name(name, where)
        self._new_chain(t, name)

    @staticmethod
    def _new_chain(t: Table, name: str) -> None:
        t.chains[name] = Chain(name, False)

    def command(self, t: Table, line: str, where: str) -> None:
        pcnt: tuple[int, int] | None = None
        m = _PREFIX_RE.match(line)
        if m is not None:
            pcnt = _counters(f"[{m.group(1)}]", where)
            line = line[m.end():]
        ctx = ParseCtx(where, t.name, "")
        cmd = parse_line(tokenize(line, where), ctx)
        if cmd.ignore:
            return
        if self.counters and pcnt is not None:
            for r in cmd.rules:
                r.pkts, r.bytes = pcnt
        getattr(self, f"cmd_{cmd.cmd}")(t, cmd, where)

    # ------------------------------------------------------------------ commands
    def _chain(self, t: Table, name: str, where: str, user: bool = False) -> Chain:
        c = t.chains.get(name)
        if c is None:
            raise PktemuError(f"{where}: unknown chain '{name}' in table {t.name}")
        if user and c.builtin:
            raise PktemuError(f"{where}: {name} is a built-in chain")
        return c

    def _check_jumps(self, t: Table, rules: list[Rule], where: str) -> None:
        for r in rules:
            if r.kind in (K_JUMP, K_GOTO):
                c = t.chains.get(r.jump)
                if c is None:
                    raise PktemuError(f"{where}: jump to undeclared chain (or unknown target) '{r.jump}'")
                if c.builtin:
                    raise PktemuError(f"{where}: cannot jump to built-in chain {r.jump}")

    def cmd_A(self, t: Table, cmd: Command, where: str) -> None:
        c = self._chain(t, cmd.chain, where)
        self._check_jumps(t, cmd.rules, where)
        c.rules.extend(cmd.rules)

    def cmd_I(self, t: Table, cmd: Command, where: str) -> None:
        c = self._chain(t, cmd.chain, where)
        self._check_jumps(t, cmd.rules, where)
        pos = (cmd.num or 1) - 1
        if pos > len(c.rules):
            raise PktemuError(f"{where}: index of insertion {cmd.num} too big for chain {c.name}")
        c.rules[pos:pos] = cmd.rules

    def cmd_R(self, t: Table, cmd: Command, where: str) -> None:
        c = self._chain(t, cmd.chain, where)
        self._check_jumps(t, cmd.rules, where)
        pos = (cmd.num or 1) - 1
        if pos >= len(c.rules) or len(cmd.rules) != 1:
            raise PktemuError(f"{where}: cannot replace rule {cmd.num} of chain {c.name}")
        c.rules[pos] = cmd.rules[0]

    def cmd_D(self, t: Table, cmd: Command, where: str) -> None:
        c = self._chain(t, cmd.chain, where)
        if cmd.num is not None:
            if cmd.num > len(c.rules):
                raise PktemuError(f"{where}: chain {c.name} has no rule {cmd.num}")
            del c.rules[cmd.num - 1]
            return
        for want in cmd.rules:
            for i, r in enumerate(c.rules):
                if r.body == want.body:
                    del c.rules[i]
                    break
            else:
                raise PktemuError(f"{where}: no rule '{want.body.strip()}' in chain {c.name}")

    def cmd_N(self, t: Table, cmd: Command, where: str) -> None:
        if cmd.chain in t.chains:
            raise PktemuError(f"{where}: chain {cmd.chain} already exists")
        check_chain_name(cmd.chain, where)
        self._new_chain(t, cmd.chain)

    def cmd_X(self, t: Table, cmd: Command, where: str) -> None:
        victims = [self._chain(t, cmd.chain, where, user=True).name] if cmd.chain else \
            [n for n, c in t.chains.items() if not c.builtin]
        for c in t.chains.values():
            if c.name in victims and cmd.chain == "":
                continue
            for r in c.rules:
                if r.kind in (K_JUMP, K_GOTO) and r.jump in victims:
                    raise PktemuError(f"{where}: chain {r.jump} is still referenced from chain {c.name}")
        for name in victims:
            del t.chains[name]

    def cmd_F(self, t: Table, cmd: Command, where: str) -> None:
        for c in [self._chain(t, cmd.chain, where)] if cmd.chain else list(t.chains.values()):
            c.rules = []

    def cmd_Z(self, t: Table, cmd: Command, where: str) -> None:
        for c in [self._chain(t, cmd.chain, where)] if cmd.chain else list(t.chains.values()):
            c.pkts = c.bytes = 0
            c.rules = [r.copy() for r in c.rules]       # the live rules keep theirs until COMMIT
            for r in c.rules:
                r.pkts = r.bytes = 0

    def cmd_P(self, t: Table, cmd: Command, where: str) -> None:
        c = self._chain(t, cmd.chain, where)
        if not c.builtin:
            raise PktemuError(f"{where}: cannot set a policy on user chain {c.name}")
        if cmd.policy not in ("ACCEPT", "DROP"):
            raise PktemuError(f"{where}: bad policy '{cmd.policy}' (ACCEPT or DROP)")
        c.policy = cmd.policy


def load_rules(text: str, path: str, ruleset: Ruleset | None = None, noflush: bool = False,
               counters: bool = False) -> Ruleset:
    """Parse `text` as iptables-restore does and install it into `ruleset` (a new one if None).

    `counters` is iptables-restore's `-c`: take packet/byte counters from the input; otherwise
    `[p:b]` prefixes are checked for syntax and ignored. Raises PktemuError (one line).
    """
    rs = ruleset if ruleset is not None else Ruleset()
    return _Loader(path, rs, noflush, counters).run(text)
