"""A node's `nftables:` file read once per process, however many nodes and scenarios load it.

The first read of a text is frozen when its tables can be shared (pktemu.nftables.shared.shareable),
and every namespace that loads the same text gets views of it. Another node's file that differs from
one read before only in the elements of plain sets (kube-proxy's `nodeport-ips` holds the node's own
address) gets the same result with those sets as its own text has them, whether the file is `add
element` commands or `nft list ruleset`'s block form (`elements = { ... }`, wrapped). The rules of
such a result name the first file as their source (`Rule.where`).
"""
from __future__ import annotations

from collections import OrderedDict
from itertools import compress
from operator import ne
from typing import Callable

from pktemu.errors import PktemuError
from pktemu.nftables import shared
from pktemu.nftables.model import NftRuleset, NftSet, Table
from pktemu.nftables.shared import (
    MAX_DIFF, SIZE, WHOLE, copy_set, hold, live, node_set, plain, set_commands, shareable, view,
)

Owned = dict[tuple[str, str], dict[str, NftSet]]

#: rulesets read from files, by their text: every namespace that loads the same text gets views
_FILES: OrderedDict[str, NftRuleset] = OrderedDict()


def loaded(text: str, load: Callable[[], NftRuleset]) -> NftRuleset:
    """A namespace's ruleset of `text`, made by `load()` the first time: views of one frozen result
    when every table of it can be shared (else `load()` each time). What the file's first reader
    named it is the source its rules name (`Rule.where`)."""
    if not shared.ENABLED:
        return load()
    rs = _FILES.get(text)
    own: Owned = {}
    if rs is not None:
        _FILES.move_to_end(text)
    else:
        got = _file_sibling(text)
        if got is not None:
            rs, own = got
        else:
            rs = load()
            if not all(shareable(t) for t in rs.tables.values()):
                return rs
            _FILES[text] = rs
            if len(_FILES) > SIZE:
                _FILES.popitem(last=False)
    out = NftRuleset()
    for key, t in rs.tables.items():
        sets = {n: copy_set(t.sets[n]) for n in live(t)}
        sets.update(own.get(key, {}))
        hold(out, key, view(t, sets))
    return out


def _file_sibling(text: str) -> "tuple[NftRuleset, Owned] | None":
    """A file read before that differs from `text` only in the elements of plain sets (another node's
    kube-proxy table, with its own address in `nodeport-ips`), and those sets as `text` has them: in
    `nft list ruleset` form (`elements = { ... }` lines) or as `add element` commands."""
    count = text.count("\n")
    lines: list[str] | None = None
    for other, rs in reversed(_FILES.items()):
        if other.count("\n") != count:
            continue
        if lines is None:
            lines = text.split("\n")
        theirs = other.split("\n")
        at = list(compress(range(len(lines)), map(ne, theirs, lines)))
        if at and len(at) <= MAX_DIFF:
            sets = _listed_sets(lines, at, rs) if lines[at[0]].startswith("\t") else \
                _commanded_sets(text, theirs, lines, at, rs)
            if sets is not None:
                return rs, sets
    return None


def _commanded_sets(text: str, theirs: list[str], lines: list[str], at: list[int],
                    rs: NftRuleset) -> Owned | None:
    """`_listed_sets` of a file of commands (`add element F T S { ... }` lines differ)."""
    if any(w in text for w in WHOLE):
        return None
    names: dict[tuple[str, str], set[str]] = {}
    for i in at:
        x, y = theirs[i].split(" ", 5), lines[i].split(" ", 5)
        if len(x) < 6 or len(y) < 6 or x[:5] != y[:5] or x[0] != "add" or x[1] != "element":
            return None
        t = rs.tables.get((x[2], x[3]))
        st = t.sets.get(x[4]) if t is not None else None
        if st is None or not plain(st):
            return None
        names.setdefault((x[2], x[3]), set()).add(x[4])
    out: Owned = {}
    for key, sets in names.items():
        commands = set_commands(text, *key)
        if commands is None:
            return None
        for n in sets:
            st = node_set(n, None, rs.tables[key], commands.get(n, []), "<file>", *key)
            if st is None:
                return None
            out.setdefault(key, {})[n] = st
    return out


def _listed_sets(lines: list[str], at: list[int], rs: NftRuleset) -> Owned | None:
    """The plain sets whose element lines `at` are, read from `lines` (None if a line is another)."""
    from pktemu.nftables.parse import load_nft
    out: Owned = {}
    done: set[tuple[str, str, str]] = set()
    for i in at:
        if not lines[i].startswith(("\t\telements = {", "\t\t\t")):
            return None
        head = i - 1
        while head >= 0 and not lines[head].startswith(("\tset ", "\tmap ", "\t}", "table ")):
            head -= 1
        top = head
        while top >= 0 and not lines[top].startswith("table "):
            top -= 1
        if head < 0 or top < 0 or not lines[head].startswith("\tset ") or not lines[head].endswith(" {"):
            return None
        table = lines[top].split(" ")
        name = lines[head][5:-2]
        if len(table) != 4 or table[3] != "{" or " " in name:
            return None
        key, which = (table[1], table[2]), (table[1], table[2], name)
        if which in done:
            continue
        done.add(which)
        t = rs.tables.get(key)
        st = t.sets.get(name) if t is not None else None
        if st is None or not plain(st):
            return None
        first = next((k for k in range(head + 1, len(lines))
                      if lines[k].startswith(("\t\telements = {", "\t}"))), len(lines))
        last = first
        while last < len(lines) and not lines[last].endswith("}"):
            last += 1
        if last >= len(lines) or not lines[first].startswith("\t\telements = {"):
            return None
        listed = " ".join(ln.strip() for ln in lines[first:last + 1])[len("elements = "):]
        mini = NftRuleset()
        m = mini.tables[key] = Table(*key)
        m.sets[name] = mine = copy_set(st)
        mine.clear()
        try:
            load_nft(f"add element {key[0]} {key[1]} {name} {listed}\n", "<listing>", mini)
        except PktemuError:
            return None
        out.setdefault(key, {})[name] = m.sets[name]
    return out


__all__ = ["loaded"]
