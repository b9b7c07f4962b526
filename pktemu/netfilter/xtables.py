"""The x_tables engine: one namespace's tables, chains, rules and counters, and `ipt_do_table`.

Traversal follows the kernel: rules in order, a jump pushes a return point, `-g` does not, RETURN
or falling off a user chain pops, and with nothing to pop the built-in chain's policy decides
(its counters count, as the underflow rule's do). ACCEPT/DROP and verdict-returning targets end
the table; MARK-like targets continue.

Lookup cost does not grow with the number of Services: a chain's runs of `-d a.b.c.d/32` rules
are indexed by that address, and a short chain reached by a jump is walked as one flat tuple of
its rules and their checks, made with the chains under it on its first visit (xt_steps).

A namespace's tables may be borrowed from a parsed template (`Ruleset.borrow`): shared, not
copied, until the namespace first changes them. A walk of a borrowed table counts in the
namespace's own sparse counters (`Ruleset.counted`), added to the template's when printed or
when the table is copied, so the nodes of a cluster share one kube-proxy ruleset however many
packets they pass.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pktemu.errors import PktemuError
from pktemu.netfilter.core import NF_ACCEPT, NF_DROP, NF_STOLEN
from pktemu.netfilter.gc_pause import MANY_RULES, adding_objects
from pktemu.netfilter.xt_base import XT_CONTINUE, Pkt
from pktemu.netfilter.nftrace import traced_traverse
from pktemu.netfilter.rule_note import RuleNote, verdict_note
from pktemu.netfilter.xt_rule import K_ACCEPT, K_DROP, K_EXT, K_GOTO, K_JUMP, K_RETURN, Rule
from pktemu.netfilter.xt_steps import DstThen, Draw, Run, chain_policy, count_in, flat_chain, trace_rule
from pktemu.netfilter.xt_table import BINDS, NO_STEPS, Chain, Table

if TYPE_CHECKING:
    from pktemu.net.frame import Frame
    from pktemu.netfilter.xt_parse import LineCache
    from pktemu.netfilter.core import HookState

_VERDICT_NAMES = {NF_ACCEPT: "ACCEPT", NF_DROP: "DROP", NF_STOLEN: "STOLEN"}


def plain_table(t: Table) -> bool:
    """Whether no rule of `t` has an extension with state of its own or bound to a namespace (so
    that namespaces can share the table's objects until they count); worked out once per table."""
    plain = t.plain
    if plain is None:
        binds = BINDS
        plain = not any((r.target is not None and (r.target.stateful or binds[r.target.__class__]))
                        or any(m.stateful or binds[m.__class__] for m in r.matches)
                        for c in t.chains.values() for r in c.rules)
        if plain:
            for c in t.chains.values():
                for r in c.rules:
                    r.body              # noqa: B018 (the save text, made once and shared by the copies)
                    r.compiled()        # the checks too (a copy makes its own /32 tests only)
        t.plain = plain
    return plain


class Ruleset:
    """All x_tables of one network namespace, plus its per-namespace extension state."""

    def __init__(self, name: str = "", index: bool = True) -> None:
        self.name = name
        self.index = index
        self._tables: dict[str, Table] = {}
        #: tables still the template's own objects (`borrow`): copied on first use that may change them
        self._borrowed: set[str] = set()
        #: borrowed table -> {its Rule or Chain: [packets, bytes] this namespace counted in it}
        self._counts: dict[str, dict[Any, list[int]]] = {}
        self.recent: dict[str, Any] = {}            # xt_recent lists by --name
        self.log: list[tuple[int, str]] = []        # LOG target output: (time ns, line)
        self.ext: dict[str, Any] = {}               # other extensions' state: nfacct counters, NFLOG frames

    # ------------------------------------------------------------------ queries
    def has_table(self, name: str) -> bool:
        return name in self._tables

    def tables(self) -> list[str]:
        """Table names in the order they were first created (iptables-save's order)."""
        return list(self._tables)

    def table(self, name: str) -> Table:
        """The namespace's own table (callers may change its rules or counters)."""
        if name in self._borrowed:
            return self._own(name)
        try:
            return self._tables[name]
        except KeyError:
            raise PktemuError(f"ruleset {self.name or '?'}: no table '{name}' loaded") from None

    def view(self, name: str) -> Table:
        """The table to read only (iptables-save): a borrowed one is not copied for that."""
        try:
            return self._tables[name]
        except KeyError:
            raise PktemuError(f"ruleset {self.name or '?'}: no table '{name}' loaded") from None

    def chain(self, table: str, chain: str) -> Chain:
        return self.table(table).chains[chain]

    def copy(self, name: str = "") -> "Ruleset":
        """The same tables for another namespace, with counters and extension state of its own
        (Rule.clone): what parsing built is shared, so a copy costs a fraction of a parse."""
        rs = Ruleset(name or self.name, self.index)
        with adding_objects():
            for t in self._tables.values():
                rs._copy_table(t)
                rs._fold(t, self._counts.get(t.name))
        return rs

    def borrow(self, name: str = "") -> "Ruleset":
        """`copy` for a ruleset that is itself never traversed nor changed (a parsed template,
        pktemu.network.shared_rules): a table whose rules keep no per-namespace state is shared
        until this namespace first walks or changes it, so a node that no packet reaches costs
        no copy; what it prints and counts is the same as a copy's."""
        rs = Ruleset(name or self.name, self.index)
        with adding_objects():
            for tname, t in self._tables.items():
                if tname in self._borrowed or plain_table(t):
                    rs._tables[tname] = t
                    rs._borrowed.add(tname)
                else:
                    rs._copy_table(t)
        return rs

    def _own(self, name: str) -> Table:
        """Replace a borrowed table by a copy of this namespace's own (in the same place of the
        order), with what the namespace counted in it."""
        self._borrowed.discard(name)
        t = self._tables[name]
        if sum(len(c.rules) for c in t.chains.values()) < MANY_RULES:
            self._copy_table(t)
        else:
            with adding_objects():
                self._copy_table(t)
        self._fold(t, self._counts.pop(name, None))
        return self._tables[name]

    def _fold(self, template: Table, counts: dict[Any, list[int]] | None) -> None:
        """Add what was counted in a borrowed `template` to the copy of it just made."""
        if not counts:
            return
        own = self._tables[template.name]
        for cname, c in template.chains.items():
            nc = own.chains[cname]
            if c in counts:
                nc.pkts += counts[c][0]
                nc.bytes += counts[c][1]
            for r, nr in zip(c.rules, nc.rules, strict=True):
                if r in counts:
                    nr.pkts += counts[r][0]
                    nr.bytes += counts[r][1]

    def borrowed(self, name: str) -> bool:
        """Whether table `name` is still a template's own object (never to be changed here)."""
        return name in self._borrowed

    def counted(self, name: str) -> dict[Any, list[int]] | None:
        """What this namespace counted in borrowed table `name` (added to the template's own
        counters: iptables-save prints the sum), or None when nothing was."""
        return self._counts.get(name) or None

    def adopt(self, tables: dict[str, Table], counts: dict[str, dict[Any, list[int]]] | None = None) -> None:
        """Borrow these template tables (each replacing the table of its name, in its place):
        the result of a restore shared by several namespaces (restore_shared). `counts`: what
        this namespace has counted in them (a table not given keeps its counts if it is the
        same object, else starts from none)."""
        for name, t in tables.items():
            if counts is not None and name in counts:
                self._counts[name] = counts[name]
            elif self._tables.get(name) is not t:
                self._counts.pop(name, None)
            self._tables[name] = t
            self._borrowed.add(name)

    def templates(self) -> dict[str, Table]:
        """The tables by name, in order (templates' own objects when `all_borrowed`)."""
        return dict(self._tables)

    def all_borrowed(self) -> bool:
        """Whether every table is still a template's, unchanged here (or there is none)."""
        return len(self._borrowed) == len(self._tables)

    def shareable(self) -> bool:
        """Whether every table is still a template's, uncounted (or there is none): a restore's
        result then depends only on the templates and the text (restore_shared)."""
        return self.all_borrowed() and not any(self._counts.values())

    def _copy_table(self, t: Table) -> None:
        plain = t.plain is True             # known plain: a rule copy is a clone, and nothing to bind
        nt = Table.__new__(Table)
        nt.name, nt.chains, nt.plain, nt.saved, nt.checked = t.name, {}, t.plain, {}, None
        for cname, c in t.chains.items():
            nc = nt.chains[cname] = Chain(c.name, c.builtin, c._policy)
            nc.pkts, nc.bytes, nc.declared = c.pkts, c.bytes, c.declared
            nc.rules = [r.copy() for r in c.rules] if plain else [r.clone() for r in c.rules]
        if plain:
            nt.compile(self.index)
            self._tables[nt.name] = nt
            self._borrowed.discard(nt.name)
        else:
            self.install(nt, validate=False)

    # ------------------------------------------------------------------ changes
    def install(self, table: Table, validate: bool = True) -> None:
        """Replace (or add) a table atomically, as a COMMIT does (validating it unless done already)."""
        if validate:
            table.validate()
        table.compile(self.index)
        checked, table.checked = table.checked, None
        if checked is None or checked[1] or checked[0] != table.all_rules():
            binds = BINDS
            for c in table.chains.values():
                for r in c.rules:
                    for ext in r.matches:
                        if binds[ext.__class__]:
                            ext.bind(self)
                    if r.target is not None and binds[r.target.__class__]:
                        r.target.bind(self)
        self._tables[table.name] = table
        self._borrowed.discard(table.name)
        self._counts.pop(table.name, None)

    def zero_counters(self) -> None:
        """iptables -Z on every table: rule and policy counters back to 0."""
        for name in list(self._borrowed):
            self._own(name)
        for t in self._tables.values():
            for c in t.chains.values():
                c.pkts = c.bytes = 0
                for r in c.rules:
                    r.pkts = r.bytes = 0

    # ------------------------------------------------------------------ the packet path
    def traverse(self, table: str, frame: "Frame", state: "HookState") -> int:
        """ipt_do_table: the verdict of `table` for `frame` at `state.hook` (a TRACEd packet's walk
        is also written down, see nftrace)."""
        if "nftrace" in frame.meta or (table == "raw" and "trace" in self.ext):
            return traced_traverse(self, table, frame, state)
        return self.walk(table, frame, state)

    def walk(self, table: str, frame: "Frame", state: "HookState") -> int:
        """The rules of `table` in order, as ipt_do_table takes them."""
        t = self._tables.get(table)
        if t is None:
            raise PktemuError(f"ruleset {self.name or '?'}: no table '{table}' loaded")
        counts = None
        if self._borrowed and table in self._borrowed:
            counts = self._counts.get(table)
            if counts is None:
                counts = self._counts[table] = {}
        base = t.chains.get(state.hook)
        if base is None:
            raise PktemuError(f"table {table} has no chain {state.hook}")
        if not frame.is_ipv4:
            return NF_ACCEPT
        p = Pkt(frame)
        daddr = p.daddr
        trace = state.trace
        stack: list[tuple[list[Rule | Run | Draw], int, tuple[Any, ...] | None, int]] = []
        steps: list[Rule | Run | Draw] = base.steps
        si, cand, ci = 0, None, 0
        flat = NO_STEPS                 # the steps while a flat chain (cand) is walked
        rule: Rule
        while True:
            if cand is not None:
                if ci < len(cand):
                    checks = cand[ci + 1]       # the rule itself only if it matches (flat_chain)
                    ci += 2
                    if checks.__class__ is int:         # a lone `-s a/32`: its address (flat_chain)
                        if p.saddr != checks:
                            continue
                        checks = ()
                    elif checks.__class__ is DstThen:   # -s test, the rule's -d a/32, the rest
                        pre, checks = checks
                        if pre is not None and not pre(p, state) or daddr != cand[ci - 2].dst:
                            continue
                elif steps is not flat:         # the end of a run: its chain goes on
                    cand = None
                    si += 1
                    continue
                elif stack:
                    steps, si, cand, ci = stack.pop()
                    continue
                else:
                    return chain_policy(t, base, p, state, counts)
            elif si < len(steps):
                st = steps[si]
                if st.__class__ is Rule:
                    rule = st                                   # type: ignore[assignment]
                    checks = rule.checks
                    if checks is None:
                        checks = rule.compiled()
                    si += 1
                elif st.__class__ is Run:
                    cand = st.candidates(daddr)                 # type: ignore[union-attr]
                    if cand.__class__ is not Rule:
                        ci = 0
                        continue
                    rule, cand = cand, None                     # the address's lone rule (Run)
                    checks = st.common                          # type: ignore[union-attr]
                    si += 1
                else:                                           # a Draw: its rules' draws at once
                    ci = st.draw(state)                         # type: ignore[union-attr]
                    if not ci:
                        si += 1
                        continue
                    cand = st.flat                              # type: ignore[union-attr]
                    checks = ()                                 # the walk goes on in `flat` from ci
            elif stack:
                steps, si, cand, ci = stack.pop()
                continue
            else:
                return chain_policy(t, base, p, state, counts)
            for check in checks:
                if not check(p, state):
                    break
            else:
                if cand is not None:
                    rule = cand[ci - 2]
                if counts is None:
                    rule.pkts += 1
                    rule.bytes += p.ip_len
                else:
                    count_in(counts, rule, p.ip_len)
                kind = rule.kind
                if kind == K_JUMP or kind == K_GOTO:
                    if trace is not None:
                        trace_rule(trace, table, rule, "JUMP" if kind == K_JUMP else "GOTO")
                    if kind == K_JUMP:
                        stack.append((steps, si, cand, ci))
                    js = rule.jump_steps
                    if js.__class__ is tuple:
                        steps, cand, ci = flat, js, 0
                        continue
                    if js.__class__ is list:
                        js = rule.jump_steps = flat_chain(js)
                        if js.__class__ is tuple:
                            steps, cand, ci = flat, js, 0
                            continue
                    steps, si, cand, ci = js, 0, None, 0
                    continue
                if kind == K_EXT:
                    tg = rule.target
                    assert tg is not None
                    note = None
                    if tg.notable:
                        note = RuleNote(f"{table}:{state.hook} {rule.chain}#{rule.num} "
                                        f"{tg.summary(p, state)}", table, state.hook, rule)
                        frame.notes.append(note)
                    v = tg.target(p, state)
                    if note is not None:
                        note.verdict = _VERDICT_NAMES.get(v, "CONTINUE")
                    if trace is not None:
                        trace_rule(trace, table, rule, _VERDICT_NAMES.get(v, "CONTINUE"))
                    if v == XT_CONTINUE:
                        continue
                    if v == NF_DROP:
                        state.extra["verdict_rule"] = note or RuleNote(
                            f"{table}:{state.hook} {rule.chain}#{rule.num} {tg.ext_name}", table, state.hook,
                            rule, "DROP")
                    return v
                if kind == K_RETURN:
                    if trace is not None:
                        trace_rule(trace, table, rule, "RETURN")
                    if stack:
                        steps, si, cand, ci = stack.pop()
                        continue
                    return chain_policy(t, base, p, state, counts)
                if kind == K_ACCEPT or kind == K_DROP:
                    note = verdict_note(table, state.hook, rule)
                    frame.notes.append(note)
                    if trace is not None:
                        trace_rule(trace, table, rule, note.verdict)
                    if kind == K_ACCEPT:
                        return NF_ACCEPT
                    state.extra["verdict_rule"] = note
                    return NF_DROP
                if trace is not None:
                    trace_rule(trace, table, rule, "CONTINUE")


def load_rules(text: str, path: str, ruleset: Ruleset | None = None, noflush: bool = False,
               counters: bool = False, cache: "LineCache | None" = None) -> Ruleset:
    """iptables-restore [--noflush] [--counters] of `text` (named `path` in errors); see restore."""
    from pktemu.netfilter.restore import load_rules as _load
    return _load(text, path, ruleset, noflush, counters, cache)


def save_rules(ruleset: Ruleset, counters: bool = True, backend: str = "nft") -> str:
    """iptables-save [-c] text of the ruleset; see save. A ruleset whose tables are all still
    borrowed prints what its template does, made once (a node no packet reached, in every run)."""
    from pktemu.netfilter.save import save_rules as _save
    tables = list(ruleset._tables.values())
    if not tables or not ruleset.shareable():
        return _save(ruleset, counters, backend)
    key = (tuple(tables), counters, backend)
    text = tables[0].saved.get(key)
    if text is None:
        text = tables[0].saved[key] = _save(ruleset, counters, backend)
    return text
