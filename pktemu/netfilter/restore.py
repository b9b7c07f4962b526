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

Nearly every line of a kube-proxy ruleset (iptables-save's or kube-proxy's own, `--noflush` or not)
is an `-A` of one of xt_fast's shapes into a declared chain, or the `:CHAIN - [p:b]` of a new user
chain: the loop reads those straight into the open table (no per-line context, command object or
cache entry); any other line, or one the fast way declines, goes the general way (restore_cmd,
with the LineCache if given), which reports its error as it always did.
"""
from __future__ import annotations

import gc
import re
import sys

from pktemu.errors import PktemuError, excerpt
from pktemu.netfilter.core import TABLE_HOOKS
from pktemu.netfilter.restore_cmd import MAX_CHAIN_NAME, Commands, check_chain_name
from pktemu.netfilter.restore_s import numbered_lines
from pktemu.netfilter.xt_base import MAX_EXPANSION, TARGETS, ParseCtx
from pktemu.netfilter.xt_fast import fast_cache, fast_rule
from pktemu.netfilter.xt_parse import LineCache, parse_line, parse_text, tokenize
from pktemu.netfilter.xt_rule import STANDARD, where_code
from pktemu.netfilter.gc_pause import settle_young
from pktemu.netfilter.xtables import Chain, Ruleset, Table

_COUNTERS_RE = re.compile(r"^\[([0-9]{1,20}):([0-9]{1,20})\]$")
_PREFIX_RE = re.compile(r"^\[([^\]]*)\][ \t]*")
_FIELDS_RE = re.compile(r"[^ \t]+")             # iptables-restore separates with spaces and tabs only
#: `:NAME - [p:b]` declaring a chain by a name check_chain_name may take, counters below 2^64
_NEW_CHAIN_RE = re.compile(r":([A-Za-z0-9_][A-Za-z0-9_.:-]{0,27}+)[ \t]++-[ \t]++"
                           r"\[[0-9]{1,19}+:[0-9]{1,19}+\]")
VALIDATE_RATIO = 8
_U64 = 2**64 - 1


def _counters(text: str, where: str) -> tuple[int, int]:
    m = _COUNTERS_RE.match(text)
    if m is None or int(m.group(1)) > _U64 or int(m.group(2)) > _U64:
        raise PktemuError(f"{where}: bad counters {excerpt(text)} (expected [packets:bytes], "
                          "each below 2^64)")
    return int(m.group(1)), int(m.group(2))


def _name(name: str) -> str:
    """A chain name as messages print it: bare when it could be one, else a short quoted excerpt."""
    return name if 0 < len(name) <= MAX_CHAIN_NAME and name.isprintable() else excerpt(name)


class _Loader(Commands):
    def __init__(self, path: str, ruleset: Ruleset, noflush: bool, counters: bool,
                 cache: LineCache | None = None, fast: bool = True) -> None:
        self.path = path
        self.fast = fast
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
        self.bodies = {}
        self.holes = {}
        self.refs = None
        self.from_builtin = 0
        self.all_flushed = self.all_zeroed = False

    def run(self, text: str) -> Ruleset:
        path = self.path
        first = where_code(path, 1)
        #: a rule's `where` is base0 + its line number (where_code's form) for every line of a text
        #: of fewer than 10**9 - 1 characters (so fewer lines); else where_code makes each
        base0 = first - 1 if isinstance(first, int) and len(text) < 10**9 - 1 else -1
        new_chain = _NEW_CHAIN_RE.fullmatch
        chains: dict[str, Chain] | None = None      # the open table's, while lines take the fast path
        rules = made = 0                            # fast lines (rules, chains) not yet counted in
        plain = True
        ctx, fc = self.fast_ctx, self.fast_fc
        for lineno, raw in numbered_lines(text, path):
            line = raw.strip(" \t\r")
            if not line:
                continue
            c0 = line[0]
            if c0 == "#":
                continue
            if chains is not None:      # the shapes of nearly every line, the fast way
                if c0 == "-":           # fast_rule takes `-A` lines only
                    at = base0 + lineno if base0 >= 0 else where_code(path, lineno)
                    hit = fast_rule(line, ctx, at, fc, chains)
                    if hit is not None:
                        if plain:
                            hit[0].rules.append(hit[1])
                        else:
                            self.cmd_A_fast(*hit)
                        rules += 1
                        continue
                elif c0 == ":":
                    m = new_chain(line)
                    if m is not None:
                        name = m.group(1)
                        if name not in chains and name not in STANDARD and name not in TARGETS:
                            chains[name] = Chain(name, False)
                            made += 1
                            continue
            if rules or made:
                self.settle_fast(rules, made)
                rules = made = 0
            self.general(line, lineno)
            chains = self.cur.chains if self.cur is not None and self.fast else None
            plain = not self.bodies and self.refs is None       # no index to keep up to date
            ctx, fc = self.fast_ctx, self.fast_fc
        if self.cur is not None:
            raise PktemuError(f"{self.path}:{self.cur_line}: table {self.cur.name} is missing its COMMIT")
        for table in self.done.values():
            if table.name in self.unchecked:
                self._validate(table)
        for table in self.done.values():
            self.rs.install(table, validate=False)
        return self.rs

    def settle_fast(self, rules: int, chains: int) -> None:
        """What `command` and `declare_chain` note per line, for a run of fast lines: `rules`
        appended (xt_fast: kube-proxy's shapes, to declared chains, jumping to user chains) and
        `chains` new user chains declared (names no target has)."""
        self.changed = True
        self.lines += rules + chains
        if rules:
            self.all_flushed = self.all_zeroed = False

    def general(self, line: str, lineno: int) -> None:
        """One line of any kind, the way that reads and checks everything."""
        where = f"{self.path}:{lineno}"
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
        if not self.fast:
            cmd = parse_line(tokenize(line, where), ctx)
        else:
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


def load_rules(text: str, path: str, ruleset: Ruleset | None = None, noflush: bool = False,
               counters: bool = False, cache: LineCache | None = None, fast: bool = True) -> Ruleset:
    """Parse `text` as iptables-restore does and install it into `ruleset` (a new one if None).

    `counters` is iptables-restore's `-c`: take packet/byte counters from the input; otherwise
    `[p:b]` prefixes are checked for syntax and ignored; `cache` reuses lines parsed before.
    `fast`: kube-proxy's rule shapes and new chains read the fast way (xt_fast); False reads
    every line the general way (xt_parse), which the tests compare the fast way with.
    Raises PktemuError (one line).
    """
    rs = ruleset if ruleset is not None else Ruleset()
    collecting = gc.isenabled()
    gc.disable()        # a load only adds objects: the cyclic GC's passes over them would cost ~40%
    try:
        return _Loader(path, rs, noflush, counters, cache, fast).run(text)
    finally:
        if collecting:
            settle_young()
            gc.enable()
