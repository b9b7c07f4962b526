"""One iptables-restore shared by many namespaces: the nodes of a cluster whose kube-proxies write
the same text onto the same tables end with the same tables, so the first node's restore serves
every node (each borrows its result, `Ruleset.adopt`), and a cluster's kube-proxy rules cost time
and memory once, not once per node (the kernel keeps a copy per node; what each node prints and
counts is the same as with its own copy).

Shared only while every table of a namespace is still a template it has neither changed nor
counted in (`Ruleset.shareable`): the result then depends on nothing but those templates and the
text. Any other namespace restores the ordinary way. The rules the shared restore makes name the
first namespace's input as their source (`Rule.where`, seen only in the error of a later restore
that breaks one of them, such as a jump loop).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from pktemu.errors import PktemuError
from pktemu.netfilter.xtables import Ruleset, Table, load_rules, plain_table

if TYPE_CHECKING:
    from pktemu.netfilter.xt_parse import LineCache

#: restores remembered: a cluster's nodes sync nearly in step, so the last few are the ones asked
SIZE = 8


class SharedRestores:
    """The results of recent restores, by (text, options, the template tables they started from).
    A key names its templates by identity; the entry keeps them alive, so no other object can
    take their ids while the entry is here."""

    def __init__(self, size: int = SIZE) -> None:
        self.size = size
        self._done: OrderedDict[tuple[Any, ...], tuple[dict[str, Table], dict[str, Table]]] = OrderedDict()
        self.hits = 0

    def restore(self, text: str, path: str, ruleset: Ruleset, noflush: bool = False,
                cache: "LineCache | None" = None) -> None:
        """iptables-restore [--noflush] of `text` into `ruleset`, shared when it can be (above)."""
        if not ruleset.shareable():
            load_rules(text, path, ruleset=ruleset, noflush=noflush, cache=cache)
            return
        start = ruleset.templates()
        key = (text, noflush, ruleset.index, tuple((name, id(t)) for name, t in start.items()))
        done = self._done.get(key)
        if done is not None:
            self._done.move_to_end(key)
            self.hits += 1
            ruleset.adopt(done[1])
            return
        result = self._restore_apart(text, path, ruleset, start, noflush, cache)
        if result is None:           # a table keeps per-namespace state, or the text is bad
            load_rules(text, path, ruleset=ruleset, noflush=noflush, cache=cache)
            return
        self._done[key] = (start, result)
        if len(self._done) > self.size:
            self._done.popitem(last=False)
        ruleset.adopt(result)

    @staticmethod
    def _restore_apart(text: str, path: str, ruleset: Ruleset, start: dict[str, Table], noflush: bool,
                       cache: "LineCache | None") -> dict[str, Table] | None:
        """The restore into a namespace of its own that borrows the same templates: its tables,
        or None if one of them cannot be shared (then the restore is done again in place, which
        also reports a bad text's error as an unshared restore does)."""
        apart = Ruleset(ruleset.name, ruleset.index)
        apart.adopt(start)
        try:
            load_rules(text, path, ruleset=apart, noflush=noflush, cache=cache)
        except PktemuError:
            return None
        result = apart.templates()
        if not all(plain_table(t) for t in result.values()):
            return None
        return result
