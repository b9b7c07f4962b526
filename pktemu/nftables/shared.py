"""One kube-proxy nftables transaction shared by the namespaces of a cluster.

Every node's kube-proxy sends the same `nft -f` text onto the same table, but for a few elements of
plain sets (`nodeport-ips` holds the node's own address). The first node to send a text loads it
into a copy of its table; the result is frozen, and each node that sends the same text on the same
table, or one that differs from it only in `add element` lines of plain sets, gets a view of it: a
Table of its own whose chains are the result's (one dict, shared) and whose sets are the result's
but for the node's own plain sets, whose contents are the lines of its text that name them applied
to its previous contents. A rule finds a named set by its name in the table the packet walks
(pktemu.nftables.rules.set_step), so it reads the node's own. A cluster's kube-proxy rules then cost
time and memory once, not once per node (the kernel keeps a copy per node; what each node prints
and how its packets go is what its own copy would give).

Shared only what packets cannot change: a set that rules update or whose elements time out (a
Service with ClientIP affinity has one per endpoint) is every view's own, and a table whose rules
count (`counter`), limit or draw `numgen inc` stays the node's own. Anything else that changes a
view (an `nft` action, a text that fails, a text on a result no other node holds) first makes it
the node's own copy (NftRuleset.transaction, `own_copy`): a shared result, and any set a view holds,
is never changed. The rules of a shared result name the first node's input as their source
(`Rule.where`, seen only in the error of a later load that breaks one of them). A node's
`nftables:` file is shared the same way (pktemu.nftables.shared_files).
"""
from __future__ import annotations

import weakref
from collections import OrderedDict
from itertools import compress
from operator import ne

from pktemu.errors import PktemuError
from pktemu.nftables import steps
from pktemu.nftables.model import Chain, Element, NftRuleset, NftSet, Table

#: off: every node loads its own (what the shared results are held to, in the tests)
ENABLED = True
#: results remembered: a cluster's nodes sync nearly in step, so the last few are the ones asked
SIZE = 8
#: differing lines a text may have against a remembered one and still share its result
MAX_DIFF = 64
#: what in a text may change its table other than line by line (the view's sets are worked out
#: from the lines naming them)
WHOLE = ("flush table", "delete table", "destroy table", "flush ruleset", "\ntable ", "\\\n", "{\n")


class _Done:
    """A shared result: the frozen table (held by its views, weakly here), the text and the table it
    was loaded onto (weakly: a dead one's id may come back, and `alive` tells), and the sets whose
    contents are the first node's own (to be worked out again for every other node)."""
    __slots__ = ("start", "result", "text", "own", "commands")

    def __init__(self, start: Table | None, result: Table, text: str, own: frozenset[str]) -> None:
        self.start = None if start is None else weakref.ref(start)
        self.result = weakref.ref(result)
        self.text, self.own = text, own
        #: the text's set commands by set name (`set_commands`), made when a view first needs them
        self.commands: dict[str, list[str]] | None = None

    def alive(self, start: Table | None) -> Table | None:
        if (self.start() if self.start is not None else None) is not start:
            return None
        return self.result()


class SharedTx:
    """The results of recent transactions, by (the table they started from, the text)."""

    def __init__(self, size: int = SIZE) -> None:
        self.size = size
        self._done: OrderedDict[tuple[int, str], _Done] = OrderedDict()
        self.hits = 0
        #: the last text sent: a node's text equal to it is taken as that object, whose hash (a
        #: full sync's text is megabytes in a big cluster) is then made once, not once per node
        self._last: str | None = None

    def apply(self, rs: NftRuleset, text: str, where: str, family: str, name: str) -> None:
        """`nft -f` of kube-proxy's `text` into `rs`, whose table `family name` it changes."""
        from pktemu.nftables.parse import load_nft
        last = self._last
        if last is not None and text is not last and text == last:
            text = last
        self._last = text
        key = (family, name)
        now = rs.tables.get(key)
        if not ENABLED or (now is not None and now.shares is None):
            load_nft(text, where, rs)
            return
        base = None if now is None else now.shares
        own = frozenset() if now is None else _own(now)
        found = self._find(base, text)      # a text found as it is was checked when first loaded
        if (found is None or found[2]) and any(w in text for w in WHOLE):
            load_nft(text, where, rs)
            return
        if found is None:
            self._produce(rs, now, base, own, text, where, key)
            return
        done, result, differ = found
        names = done.own | own | differ | live(result)
        commands: dict[str, list[str]] | None = {}
        if names:
            if differ:                      # the node's own text: its lines of those sets are its own
                commands = set_commands(text, family, name)
            else:
                if done.commands is None:
                    done.commands = set_commands(text, family, name)
                commands = done.commands
        sets: dict[str, NftSet] = {}
        for n in names:
            st = None if commands is None else node_set(n, now, result, commands.get(n, []), where, family,
                                                         name)
            if st is None:                 # not a plain set the text's lines alone decide
                load_nft(text, where, rs)
                return
            sets[n] = st
        self.hits += 1
        hold(rs, key, view(result, sets))

    def _find(self, base: Table | None, text: str) -> tuple[_Done, Table, frozenset[str]] | None:
        """The result of `text` on `base`, or of a text that differs from it only in elements of
        plain sets (with those sets' names)."""
        k = (0 if base is None else id(base), text)
        done = self._done.get(k)
        if done is not None:
            result = done.alive(base)
            if result is not None:
                self._done.move_to_end(k)
                return done, result, frozenset()
        lines: list[str] | None = None
        count = -1
        for (b, other), done in reversed(self._done.items()):
            if b != k[0]:
                continue
            result = done.alive(base)
            if result is None:
                continue
            if count < 0:
                count = text.count("\n")
            if other.count("\n") != count:
                continue
            if lines is None:
                lines = text.split("\n")
            differ = _differ(other.split("\n"), lines, result)
            if differ is not None:
                return done, result, differ
        return None

    def _produce(self, rs: NftRuleset, now: Table | None, base: Table | None, own: frozenset[str],
                 text: str, where: str, key: tuple[str, str]) -> None:
        """Load `text` onto a copy of the node's table; share the result if packets cannot change it."""
        from pktemu.nftables.parse import load_nft
        if now is not None and base is not None and base.shared_by <= 1:
            load_nft(text, where, rs)       # no other node on it: the node's own copy from now on
            return
        apart = NftRuleset()
        if now is not None:
            apart.tables[key] = own_copy(now)
        try:
            load_nft(text, where, apart)
        except PktemuError:
            load_nft(text, where, rs)       # the same error, nothing applied
            raise                           # (not reached: the same load fails the same way)
        result = apart.tables.get(key)
        if result is None or len(apart.tables) != 1:
            load_nft(text, where, rs)
            return
        if not shareable(result):
            if now is not None and now.shares is not None:
                now.shares.shared_by -= 1
            rs.tables[key] = result          # the node's own from now on
            return
        self._done[(0 if base is None else id(base), text)] = _Done(base, result, text, own)
        if len(self._done) > self.size:
            self._done.popitem(last=False)
        hold(rs, key, view(result, {n: copy_set(result.sets[n]) for n in live(result)}))


def hold(rs: NftRuleset, key: tuple[str, str], t: Table) -> None:
    """`t` (a view) becomes the namespace's table `key`, in place of what it had."""
    now = rs.tables.get(key)
    if now is not None and now.shares is not None:
        now.shares.shared_by -= 1
    assert t.shares is not None
    t.shares.shared_by += 1
    rs.tables[key] = t


def _own(t: Table) -> frozenset[str]:
    """A view's sets that are its own, not its result's."""
    base = t.shares
    assert base is not None
    theirs = base.sets
    return frozenset(n for n, s in t.sets.items() if theirs.get(n) is not s)


def _differ(a: list[str], b: list[str], result: Table) -> frozenset[str] | None:
    """The sets whose `add element` lines are all that tell two texts apart, or None."""
    if len(a) != len(b):
        return None
    at = list(compress(range(len(a)), map(ne, a, b)))
    if len(at) > MAX_DIFF:
        return None
    names: set[str] = set()
    for i in at:
        x, y = a[i].split(" ", 5), b[i].split(" ", 5)
        if len(x) < 6 or len(y) < 6 or x[:5] != y[:5] or x[0] != "add" or x[1] != "element":
            return None
        st = result.sets.get(x[4])
        if st is None or not plain(st):
            return None
        names.add(x[4])
    return frozenset(names)


def _ownable(st: NftSet) -> bool:
    """A named set of plain keys without data: one a view may hold its own contents of."""
    return (st.data_type is None and not st.anonymous and "interval" not in st.flags
            and not st.prefixes and not st.ranges)


def _changing(st: NftSet) -> bool:
    """A set packets change: rules add to it, its elements time out."""
    return ("dynamic" in st.flags or "timeout" in st.flags or st.timeout is not None
            or any(el.timeout_ns is not None or el.expires_ns is not None for el in st.elements.values()))


def plain(st: NftSet) -> bool:
    return _ownable(st) and not _changing(st)


def live(t: Table) -> frozenset[str]:
    """The sets packets change, which every view holds its own of."""
    return frozenset(n for n, s in t.sets.items() if "dynamic" in s.flags or "timeout" in s.flags
                     or s.timeout is not None)


def node_set(n: str, now: Table | None, result: Table, lines: list[str], where: str, family: str,
              table: str) -> NftSet | None:
    """Set `n` as the node's own load of its text leaves it: the text's `lines` naming it applied
    to the node's own contents (None unless it is a set a view can hold and they apply)."""
    from pktemu.nftables.parse import load_nft
    theirs = result.sets.get(n)
    if theirs is None or not _ownable(theirs):
        return None
    start = now.sets.get(n) if now is not None else None
    mine = start if start is not None else theirs
    if lines:
        mini = NftRuleset()
        t = mini.tables[(family, table)] = Table(family, table)
        if start is not None:
            t.sets[n] = copy_set(start)
        try:
            load_nft("\n".join(lines) + "\n", where, mini)
        except PktemuError:
            return None
        got = t.sets.get(n)
        if got is None or not _ownable(got) or (got.kind, got.types) != (theirs.kind, theirs.types):
            return None
        mine = got
    out = copy_set(theirs)           # as the text and the rules left the set, with the node's elements
    elements = copy_set(mine)
    out.elements, out.prefixes, out.ranges = elements.elements, elements.prefixes, elements.ranges
    return out


def set_commands(text: str, family: str, table: str) -> dict[str, list[str]] | None:
    """The lines of `text` that add, flush or delete a set of the table or its elements, by set
    name, in one pass (None if a line starts with a blank: one command per line is all this reads)."""
    heads = tuple(f"{verb} {what} {family} {table} " for what in ("set", "map", "element")
                  for verb in ("add", "create", "delete", "destroy", "flush"))
    out: dict[str, list[str]] = {}
    for line in text.split("\n"):
        if line.startswith(heads):
            out.setdefault(line.split(" ", 5)[4], []).append(line)
        elif line[:1] in (" ", "\t"):
            return None
    return out


def shareable(t: Table) -> bool:
    """No rule of `t` keeps state a packet changes, and every set packets change is one a view can
    hold its own of (`live`)."""
    changing = live(t)
    for n, s in t.sets.items():
        if (n in changing and not _ownable(s)) or (n not in changing and _changing(s)):
            return False
    for c in t.chains.values():
        for r in c.rules:
            if r.counter is not None:
                return False
            st = r.steps
            for k in range(0, len(st), 2):
                if steps.stateful(st[k], st[k + 1]):
                    return False
    return True


def view(result: Table, sets: dict[str, NftSet]) -> Table:
    """A node's table: the result's chains (the dict itself) and sets, but `sets`, its own."""
    t = Table(result.family, result.name, result.comment, result.flags, result.handle,
              {**result.sets, **sets} if sets else dict(result.sets), result.chains,
              result.next_handle, result.anon, result.odd_names)
    t.shares = result
    return t


def copy_set(s: NftSet) -> NftSet:
    """A set of one's own, its elements too (a rule that updates a set changes its elements)."""
    mine = {id(el): _copy_element(el) for el in s.elements.values()}
    return NftSet(s.name, s.kind, list(s.types), s.data_type, list(s.flags), s.timeout, s.size, s.comment,
                  s.handle, s.anonymous, {k: mine[id(el)] for k, el in s.elements.items()},
                  {plen: {k: mine[id(el)] for k, el in index.items()} for plen, index in s.prefixes.items()},
                  [mine[id(el)] for el in s.ranges], s.automerge, s.written)


def _copy_element(el: Element) -> Element:
    return Element(el.key, el.data, el.comment, el.key_end, el.prefix, el.timeout_ns, el.expires_ns)


def own_copy(t: Table) -> Table:
    """A table of the node's own with what `t` holds: its chains and sets copied (the rules and
    elements, which a load never changes in place, are the same objects)."""
    out = Table(t.family, t.name, t.comment, list(t.flags), t.handle,
                {n: copy_set(s) for n, s in t.sets.items()},
                {n: Chain(c.name, c.type, c.hook, c.priority, c.policy, c.comment, c.handle, list(c.rules))
                 for n, c in t.chains.items()},
                t.next_handle, t.anon, t.odd_names)
    return out


def make_own(rs: NftRuleset) -> None:
    """Before a change to `rs` by anything but a shared transaction: its views become copies of its
    own (a shared result, and every set a view holds, is never changed)."""
    for key, t in rs.tables.items():
        if t.shares is not None:
            t.shares.shared_by -= 1
            rs.tables[key] = own_copy(t)


__all__ = ["SharedTx", "make_own", "own_copy", "view", "shareable", "copy_set", "hold", "live",
           "node_set", "plain", "set_commands"]
