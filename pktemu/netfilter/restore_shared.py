"""One iptables-restore shared by many namespaces: the nodes of a cluster whose kube-proxies write
the same text onto the same tables end with the same tables, so the first node's restore serves
every node (each borrows its result, `Ruleset.adopt`), and a cluster's kube-proxy rules cost time
and memory once, not once per node (the kernel keeps a copy per node; what each node prints and
counts is the same as with its own copy).

Shared while every table of a namespace is still a template it has not changed
(`Ruleset.all_borrowed`): the result then depends on nothing but those templates and the text.
What a namespace counted in them (packets that walked them, `Ruleset.counted`) follows each rule
that the restore keeps and the built-in chains' policies, as in a restore of its own copy; a text
that may zero counters (`-Z`) is restored the ordinary way, and so is any other namespace. The
rules the shared restore makes name the first namespace's input as their source (`Rule.where`,
seen only in the error of a later restore that breaks one of them, such as a jump loop).
"""
from __future__ import annotations

import re
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from pktemu.errors import PktemuError
from pktemu.netfilter.xtables import Ruleset, Table, load_rules, plain_table

if TYPE_CHECKING:
    from pktemu.netfilter.xt_parse import LineCache

#: restores remembered: a cluster's nodes sync nearly in step, so the last few are the ones asked
SIZE = 8

Counts = dict[Any, list[int]]
#: a word that may zero counters (`-Z`, alone or among short options, or `--zero`); a quoted
#: comment that holds one only costs the sharing
_ZERO = re.compile(r"(?:^|[ \t])(?:--zero|-[A-Za-z]*Z[A-Za-z]*)(?=[ \t]|$)", re.M)


class _Done:
    """A shared restore's result: its tables, and for each table the template's rules and chains
    that live on in it (the template's object -> the result's), to carry a namespace's counts."""
    __slots__ = ("start", "tables", "carry")

    def __init__(self, start: dict[str, Table], tables: dict[str, Table],
                 carry: dict[str, dict[Any, Any]]) -> None:
        self.start, self.tables, self.carry = start, tables, carry

    def counts(self, ruleset: Ruleset) -> dict[str, Counts]:
        """The namespace's counts moved onto the result's objects."""
        out: dict[str, Counts] = {}
        for name in self.start:
            counted = ruleset.counted(name)
            if counted and name in self.carry:
                carry = self.carry[name]
                out[name] = {carry[what]: list(n) for what, n in counted.items() if what in carry}
        return out


class SharedRestores:
    """The results of recent restores, by (text, options, the template tables they started from).
    A key names its templates by identity; the entry keeps them alive, so no other object can
    take their ids while the entry is here."""

    def __init__(self, size: int = SIZE) -> None:
        self.size = size
        self._done: OrderedDict[tuple[Any, ...], _Done] = OrderedDict()
        self.hits = 0

    def restore(self, text: str, path: str, ruleset: Ruleset, noflush: bool = False,
                cache: "LineCache | None" = None) -> None:
        """iptables-restore [--noflush] of `text` into `ruleset`, shared when it can be (above)."""
        if not ruleset.all_borrowed() or (not ruleset.shareable() and _ZERO.search(text)):
            load_rules(text, path, ruleset=ruleset, noflush=noflush, cache=cache)
            return
        start = ruleset.templates()
        key = (text, noflush, ruleset.index, tuple((name, id(t)) for name, t in start.items()))
        done = self._done.get(key)
        if done is not None:
            self._done.move_to_end(key)
            self.hits += 1
        else:
            done = self._restore_apart(text, path, ruleset, start, noflush, cache)
            if done is None:          # a table keeps per-namespace state, or the text is bad
                load_rules(text, path, ruleset=ruleset, noflush=noflush, cache=cache)
                return
            self._done[key] = done
            if len(self._done) > self.size:
                self._done.popitem(last=False)
        ruleset.adopt(done.tables, done.counts(ruleset))

    @staticmethod
    def _restore_apart(text: str, path: str, ruleset: Ruleset, start: dict[str, Table], noflush: bool,
                       cache: "LineCache | None") -> _Done | None:
        """The restore into a namespace of its own, made of copies of the same templates: its
        tables, or None if one of them cannot be shared (then the restore is done again in
        place, which also reports a bad text's error as an unshared restore does)."""
        borrowing = Ruleset(ruleset.name, ruleset.index)
        borrowing.adopt(start)
        apart = borrowing.copy()
        copies = apart.templates()
        try:
            load_rules(text, path, ruleset=apart, noflush=noflush, cache=cache)
        except PktemuError:
            return None
        result = apart.templates()
        if not all(plain_table(t) for t in result.values()):
            return None
        carry: dict[str, dict[Any, Any]] = {}
        for name, t in start.items():
            new = result[name]
            kept = {id(r) for c in new.chains.values() for r in c.rules}
            pairs: dict[Any, Any] = {}
            for cname, c in t.chains.items():
                if c.builtin:
                    pairs[c] = new.chains[cname]            # a policy's counters stay with it
                for r, mine in zip(c.rules, copies[name].chains[cname].rules, strict=True):
                    if id(mine) in kept:
                        pairs[r] = mine
            carry[name] = pairs
        return _Done(start, result, carry)
