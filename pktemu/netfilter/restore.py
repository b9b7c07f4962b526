"""iptables-restore: `iptables-save` output (with or without -c) or hand-written restore input.

`*table` opens a table (flushed, with its user chains deleted, unless `noflush`), `:CHAIN POLICY
[p:b]` declares a chain (with `noflush` an existing user chain is flushed instead: kube-proxy's
partial restores rely on that), command lines change it, `COMMIT` ends it. The load is all or
nothing: tables are validated (jump loops, extensions' tables and hooks) and installed into the
ruleset only when the whole text parsed, so a bad file leaves the namespace as it was. Every error
is one line `path:line: what`.

Cost: each line costs time in its own length, whatever the table holds (`-D` by rule text finds
the rule through an index of rule texts, `-X` checks references through jump counts, a repeated
`-F`/`-Z` of every chain is free). Validation costs time in the table's size, so a COMMIT validates
only when the lines since the table's last validation are at least 1/VALIDATE_RATIO of its size,
else a later COMMIT or the end of the input does: many small blocks on a big table cost time in
their own length (only a state that exists between two of them, and is gone by the next
validation, escapes). Interleaving `-D` by rule text with `-I`, `-R` or `-D NUM` on one chain
rebuilds the index each time.
"""
from __future__ import annotations

import gc
import re
import sys
from collections import Counter, deque

from pktemu.errors import PktemuError, excerpt
from pktemu.netfilter.core import TABLE_HOOKS
from pktemu.netfilter.xt_base import MAX_EXPANSION, TARGETS, ParseCtx
from pktemu.netfilter.restore_s import numbered_lines
from pktemu.netfilter.xt_fast import fast_cache, fast_rule
from pktemu.netfilter.xt_parse import Command, LineCache, parse_text
from pktemu.netfilter.xt_rule import K_GOTO, K_JUMP, STANDARD, Rule, where_code
from pktemu.netfilter.xtables import Chain, Ruleset, Table, settle_young

_COUNTERS_RE = re.compile(r"^\[([0-9]{1,20}):([0-9]{1,20})\]$")
_PREFIX_RE = re.compile(r"^\[([^\]]*)\][ \t]*")
_FIELDS_RE = re.compile(r"[^ \t]+")             # iptables-restore separates with spaces and tabs only
#: `:NAME - [p:b]` declaring a chain by a name check_chain_name may take, counters below 2^64
_NEW_CHAIN_RE = re.compile(r":([A-Za-z0-9_][A-Za-z0-9_.:-]{0,27})[ \t]+-[ \t]+\[[0-9]{1,19}:[0-9]{1,19}\]")
MAX_CHAIN_NAME = 28
VALIDATE_RATIO = 8
_U64 = 2**64 - 1
_GONE = Rule("<deleted>")       # a rule `-D` removed; chains are compacted before anything else reads them


def _counters(text: str, where: str) -> tuple[int, int]:
    m = _COUNTERS_RE.match(text)
    if m is None or int(m.group(1)) > _U64 or int(m.group(2)) > _U64:
        raise PktemuError(f"{where}: bad counters {excerpt(text)} (expected [packets:bytes], "
                          "each below 2^64)")
    return int(m.group(1)), int(m.group(2))


def check_chain_name(name: str, where: str) -> None:
    """What iptables refuses as a user chain name."""
    if not name or len(name) > MAX_CHAIN_NAME:
        raise PktemuError(f"{where}: invalid chain name {excerpt(name)} (1 to {MAX_CHAIN_NAME} characters)")
    if name[0] in "-!" or name in STANDARD or name in TARGETS:
        raise PktemuError(f"{where}: invalid chain name {excerpt(name)} (clashes with a target or option)")


def _name(name: str) -> str:
    """A chain name as messages print it: bare when it could be one, else a short quoted excerpt."""
    return name if 0 < len(name) <= MAX_CHAIN_NAME and name.isprintable() else excerpt(name)


def _jumps(r: Rule) -> bool:
    return r.kind in (K_JUMP, K_GOTO) and r is not _GONE


class _Loader:
    def __init__(self, path: str, ruleset: Ruleset, noflush: bool, counters: bool,
                 cache: LineCache | None = None) -> None:
        self.path = path
        self.cache = cache
        self.shared: dict[object, object] = {}    # equal extension objects (xt_parse._shared)
        self.rs = ruleset
        self.noflush = noflush
        self.counters = counters
        self.done: dict[str, Table] = {}        # committed in this load, in order
        self.unchecked: set[str] = set()        # committed, changed since their last validation
        self.owed: dict[str, int] = {}          # table -> lines since its last validation
        self.checked_size: dict[str, int] = {}  # table -> its size then (rules + chains)
        self.cur: Table | None = None
        self.cur_line = 0
        self.fast_ctx = ParseCtx(path, "filter", "", MAX_EXPANSION, self.shared)     # per open table
        self.fast_fc = fast_cache(self.fast_ctx)
        self.expansion = MAX_EXPANSION          # what -s/-d lists may still add (see xt_parse)
        self._reset()

    def _reset(self) -> None:
        """Per open table: what speeds up -D/-X/-F/-Z (rebuilt on demand, never carried over)."""
        self.changed = False
        self.lines = 0                                          # command and chain lines in this block
        self.bodies: dict[str, dict[str, deque[int]]] = {}     # chain -> rule text -> live positions
        self.holes: dict[str, int] = {}                         # chain -> _GONE entries
        self.refs: Counter[str] | None = None                   # chain -> rules jumping to it
        self.from_builtin = 0                                   # jumping rules in built-in chains
        self.all_flushed = self.all_zeroed = False

    def run(self, text: str) -> Ruleset:
        path, fast = self.path, self.cache is None
        first = where_code(path, 1)
        base = first - 1 if isinstance(first, int) else None
        new_chain = _NEW_CHAIN_RE.fullmatch
        for lineno, raw in numbered_lines(text, path):
            line = raw.strip(" \t\r")
            if not line or line[0] == "#":
                continue
            cur = self.cur
            if cur is not None:         # the shapes of nearly every line, the fast way
                if line[0] == "-":
                    if fast and line.startswith("-A ") and self.fast_A(
                            cur, line, base + lineno if base is not None and lineno < 10**9
                            else where_code(path, lineno)):
                        continue
                elif line[0] == ":":
                    m = new_chain(line)
                    if m is not None and self.fast_chain(cur, m.group(1)):
                        continue
            where = f"{path}:{lineno}"
            if line.startswith("*"):
                self.open_table(line[1:].strip(), where, lineno)
            elif line == "COMMIT":
                if self.cur is None:
                    raise PktemuError(f"{where}: COMMIT without a *table line")
                self.commit(self.cur)
            elif self.cur is None:
                raise PktemuError(f"{where}: line outside of a table (missing *table line)")
            elif line.startswith(":"):
                self.declare_chain(self.cur, _FIELDS_RE.findall(line, 1), where)
            else:
                self.command(self.cur, line, where)
        if self.cur is not None:
            raise PktemuError(f"{self.path}:{self.cur_line}: table {self.cur.name} is missing its COMMIT")
        for table in self.done.values():
            if table.name in self.unchecked:
                self._validate(table)
        for table in self.done.values():
            self.rs.install(table, validate=False)
        return self.rs

    def open_table(self, name: str, where: str, lineno: int) -> None:
        if self.cur is not None:
            shown = name if name in TABLE_HOOKS else excerpt(name)
            raise PktemuError(f"{where}: *{shown} while table {self.cur.name} is open (missing COMMIT)")
        if name not in TABLE_HOOKS:
            raise PktemuError(f"{where}: unknown table {excerpt(name)}")
        self._reset()
        t = self.done.get(name)             # not installed yet: no copy needed
        if t is None:
            t = self.rs.table(name).copy() if self.rs.has_table(name) else Table(name)
        if not self.noflush:
            t.chains = {n: c for n, c in t.chains.items() if c.builtin}
            for c in t.chains.values():
                c.rules = []
            self.changed = True
            self.checked_size.pop(name, None)       # emptied: its next validation costs this block only
        self.cur, self.cur_line = t, lineno
        self.fast_ctx = ParseCtx(self.path, name, "", self.expansion, self.shared)
        self.fast_fc = fast_cache(self.fast_ctx)

    def commit(self, t: Table) -> None:
        for name in [*self.holes, *self.bodies]:
            if name in t.chains:
                self._settle(t.chains[name])
        if self.changed:
            owed = self.owed.get(t.name, 0) + self.lines + 1
            if t.name not in self.checked_size or owed * VALIDATE_RATIO >= self.checked_size[t.name]:
                self._validate(t)
            else:
                self.owed[t.name] = owed
                self.unchecked.add(t.name)
        self.done[t.name] = t
        self.cur = None

    def _validate(self, t: Table) -> None:
        t.validate()
        self.unchecked.discard(t.name)
        self.owed[t.name] = 0
        self.checked_size[t.name] = len(t.chains) + sum(len(c.rules) for c in t.chains.values())

    def declare_chain(self, t: Table, parts: list[str], where: str) -> None:
        if not parts:
            raise PktemuError(f"{where}: chain line without a chain name")
        name = parts[0]
        if len(parts) < 2:
            raise PktemuError(f"{where}: chain {_name(name)}: policy missing")
        if len(parts) > 3:
            raise PktemuError(f"{where}: chain {_name(name)}: unexpected {excerpt(parts[3])}")
        policy = parts[1]
        ctrs = _counters(parts[2], where) if len(parts) == 3 else None
        c = t.chains.get(name)
        self.changed = True
        self.lines += 1
        if c is not None and c.builtin:
            if policy != "-":
                if policy not in ("ACCEPT", "DROP"):
                    raise PktemuError(f"{where}: bad policy {excerpt(policy)} for chain {name} "
                                      "(ACCEPT or DROP)")
                c.policy = policy
                if self.counters and ctrs is not None:
                    c.pkts, c.bytes = ctrs
                    self.all_zeroed = False
            return
        if policy != "-":
            raise PktemuError(f"{where}: cannot set policy {excerpt(policy)} on user chain {_name(name)}")
        if c is not None:
            if not self.noflush:
                raise PktemuError(f"{where}: chain {name} declared twice")
            self._flush(c)
            return
        check_chain_name(name, where)
        t.chains[name] = Chain(sys.intern(name), False)        # the string its jumps hold

    def command(self, t: Table, line: str, where: str) -> None:
        pcnt: tuple[int, int] | None = None
        m = _PREFIX_RE.match(line) if line[0] == "[" else None
        if m is not None:
            pcnt = _counters(f"[{m.group(1)}]", where)
            line = line[m.end():]
        ctx = ParseCtx(where, t.name, "", self.expansion, self.shared)
        cmd = self.cache.parse(line, ctx) if self.cache is not None else parse_text(line, ctx)
        if cmd.ignore:
            return
        if len(cmd.rules) > 1:
            self.expansion -= len(cmd.rules) * (1 + len(cmd.rules[0].matches))
        if self.counters and pcnt is not None:
            for r in cmd.rules:
                r.pkts, r.bytes = pcnt
        self.changed = True
        self.lines += len(cmd.rules) or 1
        if cmd.cmd == "A":
            self.cmd_A(t, cmd, where)
        else:
            getattr(self, f"cmd_{cmd.cmd}")(t, cmd, where)

    def fast_chain(self, t: Table, name: str) -> bool:
        """`declare_chain` of a new user chain whose name is no target's; False for any other."""
        if name in t.chains or name in STANDARD or name in TARGETS:
            return False
        self.changed = True
        self.lines += 1
        t.chains[name] = Chain(sys.intern(name), False)
        return True

    def fast_A(self, t: Table, line: str, at: int | str) -> bool:
        """`command` + `cmd_A` for a line of one of kube-proxy's shapes (xt_fast) that appends to a
        declared chain and jumps nowhere it may not; False for any other line, which the general
        path then reads (and reports the error of, if any, as it always does)."""
        hit = fast_rule(line, self.fast_ctx, at, self.fast_fc)
        if hit is None:
            return False
        name, r = hit
        c = t.chains.get(name)
        if c is None:
            return False
        if r.kind == K_JUMP or r.kind == K_GOTO:
            to = t.chains.get(r.jump)
            if to is None or to.builtin:
                return False
        self.changed = True
        self.lines += 1
        idx = self.bodies.get(name)
        if idx is not None:
            idx.setdefault(r.body, deque()).append(len(c.rules))
        c.rules.append(r)
        if self.refs is not None:
            self._count(c, [r], 1)
        self.all_flushed = self.all_zeroed = False
        return True

    # ------------------------------------------------------------------ bookkeeping
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


def load_rules(text: str, path: str, ruleset: Ruleset | None = None, noflush: bool = False,
               counters: bool = False, cache: LineCache | None = None) -> Ruleset:
    """Parse `text` as iptables-restore does and install it into `ruleset` (a new one if None).

    `counters` is iptables-restore's `-c`: take packet/byte counters from the input; otherwise
    `[p:b]` prefixes are checked for syntax and ignored; `cache` reuses lines parsed before.
    Raises PktemuError (one line).
    """
    rs = ruleset if ruleset is not None else Ruleset()
    collecting = gc.isenabled()
    gc.disable()        # a load only adds objects: the cyclic GC's passes over them would cost ~40%
    try:
        return _Loader(path, rs, noflush, counters, cache).run(text)
    finally:
        if collecting:
            settle_young()
            gc.enable()
