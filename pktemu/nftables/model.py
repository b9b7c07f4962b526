"""The nftables objects of one namespace: tables, chains, rules, sets and maps.

As in the kernel, a table holds its sets (named maps included) and chains in creation order,
which is the order `nft list ruleset` prints them in; every object gets a handle from the
table's counter. A rule is a flat tuple of compiled steps (see `steps`) plus the text `nft list`
prints for it (or, for a fast-loaded rule, the shape it prints from its steps: see `shapes`);
rules, elements and verdicts use __slots__, as there are hundreds of thousands of
them at 10,000 Services and a first packet touches some of each. Set elements are kept in a dict
keyed by the element's value tuple, so a lookup costs one hash probe whatever the set's size;
interval sets add a per-prefix-length index.
"""
from __future__ import annotations

import itertools
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from pktemu.errors import PktemuError
from pktemu.netfilter.core import FORWARD, INPUT, OUTPUT, POSTROUTING, PREROUTING

if TYPE_CHECKING:
    from pktemu.nftables.snapshot import Snapshot

FAMILIES = ("ip", "inet")
REFUSED_FAMILIES = ("ip6", "bridge", "arp", "netdev")
HOOK_NAMES = {"prerouting": PREROUTING, "input": INPUT, "forward": FORWARD, "output": OUTPUT,
              "postrouting": POSTROUTING}
CHAIN_TYPES = ("filter", "nat", "route")

#: key types: name -> (byte length, host byte order); `nft` sorts and prints by these
KEY_TYPES: dict[str, tuple[int, bool]] = {
    "ipv4_addr": (4, False), "inet_proto": (1, False), "inet_service": (2, False),
    "mark": (4, True), "ifname": (16, False), "integer": (4, True), "ct_state": (4, True),
    "ether_addr": (6, False), "ipv6_addr": (16, False),
}
DATA_TYPES = ("verdict", *KEY_TYPES)
#: the size the kernel gives a set without one when a rule binds it to `add/update @set` (nft_dynset_init);
#: it stays after that rule is deleted, and is what `nft list` prints then
DYNAMIC_SIZE = 65535

#: standard priorities, in the order nft tries them when printing (src/rule.c std_prios)
STD_PRIOS = (("raw", -300), ("mangle", -150), ("dstnat", -100), ("filter", 0), ("security", 50),
             ("srcnat", 100))


def prio_compatible(value: int, hook: str) -> bool:
    """dstnat names a priority only at prerouting, srcnat only at postrouting."""
    if value == -100:
        return hook == PREROUTING
    if value == 100:
        return hook == POSTROUTING
    return True


def prio_text(prio: int, hook: str) -> str:
    """A base chain's priority as nft prints it: `dstnat`, `dstnat - 10`, or the number."""
    for name, value in STD_PRIOS:
        if not prio_compatible(value, hook):
            continue
        off = prio - value
        if off == 0:
            return name
        if abs(off) <= 10:
            return f"{name} {'+' if off > 0 else '-'} {abs(off)}"
    return str(prio)


@dataclass(slots=True)
class Verdict:
    """accept, drop, continue, return, jump CHAIN or goto CHAIN."""
    kind: str
    target: str | None = None
    #: the target chain as last resolved, valid while the table's `epoch` is `epoch` (see Table)
    chain: "Chain | None" = field(default=None, repr=False, compare=False)
    epoch: int = field(default=0, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.kind = sys.intern(self.kind)     # `kind == "accept"` is then an identity test
        if self.target is not None:        # the chain's own name object: the chains dict finds it by identity
            self.target = sys.intern(self.target)

    def text(self) -> str:
        return self.kind if self.target is None else f"{self.kind} {self.target}"


def make_verdict(kind: str, target: str | None) -> Verdict:
    """A Verdict from an interned kind constant and the target chain's own name object (the fast
    loader's): no trip through sys.intern, whose table would keep every chain name alive."""
    v = object.__new__(Verdict)
    v.kind, v.target, v.chain, v.epoch = kind, target, None, 0
    return v


@dataclass(slots=True)
class Element:
    """One set element: its key (one int per concatenated field), an interval end, map data."""
    key: tuple[int, ...]
    data: Any = None                     # Verdict for a vmap, int for a value map
    comment: str | None = None
    key_end: tuple[int, ...] | None = None
    prefix: int | None = None            # interval written as a/len
    timeout_ns: int | None = None
    expires_ns: int | None = None        # virtual time the element expires at (timeout sets)


@dataclass(slots=True)
class NftSet:
    """A named or anonymous set or map; `types` lists the concatenated key types."""
    name: str
    kind: str = "set"                    # set | map
    types: list[str] = field(default_factory=list)
    data_type: str | None = None
    flags: list[str] = field(default_factory=list)
    timeout: str | None = None
    size: int | None = None
    comment: str | None = None
    handle: int = 0
    anonymous: bool = False
    elements: dict[tuple[int, ...], Element] = field(default_factory=dict)
    #: interval sets of one field: prefix length -> {masked key -> element}
    prefixes: dict[int, dict[int, Element]] = field(default_factory=dict)
    ranges: list[Element] = field(default_factory=list)
    #: `auto-merge`: overlapping intervals are merged instead of refused
    automerge: bool = False
    #: an anonymous set's elements as written, before merging (one prints as a bare value)
    written: int = 0

    @property
    def interval(self) -> bool:
        return "interval" in self.flags

    def add(self, el: Element) -> None:
        """Insert (or replace) an element and index it."""
        self.elements[el.key] = el
        if el.prefix is not None and len(el.key) == 1:
            self.prefixes.setdefault(el.prefix, {})[el.key[0]] = el
        elif el.key_end is not None:
            self.ranges.append(el)

    def remove(self, key: tuple[int, ...]) -> None:
        el = self.elements.pop(key, None)
        if el is None:
            raise KeyError(key)
        if el.prefix is not None and len(el.key) == 1:
            del self.prefixes[el.prefix][el.key[0]]
        elif el in self.ranges:
            self.ranges.remove(el)

    def clear(self) -> None:
        self.elements.clear()
        self.prefixes.clear()
        self.ranges.clear()

    def lookup(self, key: tuple[int, ...], now: int = 0) -> Element | None:
        """The element matching `key`: one dict probe, plus one per prefix length of an interval set."""
        el = self.elements.get(key)
        if el is None and (self.prefixes or self.ranges):
            el = self._interval_lookup(key)
        if el is not None and el.expires_ns is not None and el.expires_ns <= now:
            self.remove(el.key)
            return None
        return el

    def _interval_lookup(self, key: tuple[int, ...]) -> Element | None:
        if len(key) == 1:
            v = key[0]
            bits = KEY_TYPES.get(self.types[0], (4, False))[0] * 8
            for plen, index in self.prefixes.items():
                mask = ((1 << plen) - 1) << (bits - plen) if plen else 0
                el = index.get(v & mask)
                if el is not None:
                    return el
        for el in self.ranges:
            end = el.key_end
            assert end is not None
            if all(lo <= k <= hi for k, lo, hi in zip(key, el.key, end, strict=True)):
                return el
        return None


_EPOCHS = itertools.count(1)

COUNTER_MARK = "\x00counter\x00"
_HANDLE = (1 << 32) - 1

#: a compiled rule step, `(function, argument)`: `function(pkt, state, argument)` returns None to go
#: on, False for "no match", or a Verdict (see pktemu.nftables.steps)
Step = tuple[Callable[[Any, Any, Any], Any], Any]


class Rule:
    """One rule: its steps, the text nft prints, and its counter (when it has one). Its handle and
    the line it was read from share one int (`pos`) and its file name is the load's one string: a
    `file:line` string and a handle int of its own would be some 60 more bytes per rule. `steps` is
    flat, `fn1, arg1, fn2, arg2, ...` (no pair tuple per step). This is the fast loader's rule: it
    keeps, instead of its text, its shape (pktemu.nftables.shapes), the text printed from its steps,
    and finds its jumps in its steps; the general parser's rules are ParsedRule."""
    __slots__ = ("txt", "steps", "chain", "src", "pos", "counter")

    def __init__(self, text: "str | tuple[Any, ...]" = "", steps: tuple[Any, ...] = (), chain: str = "",
                 src: str = "", pos: int = 0, counter: list[int] | None = None) -> None:
        self.txt, self.steps, self.chain, self.src, self.pos = text, steps, chain, src, pos
        self.counter = counter

    @property
    def jumps(self) -> tuple[Verdict, ...]:
        """The jump/goto verdicts of its steps: a `jump` step's own, a `numgen ... vmap`'s."""
        out: list[Verdict] = []
        for arg in self.steps[1::2]:
            for v in arg if isinstance(arg, tuple) else (arg,):
                if isinstance(v, Verdict) and v.target is not None:
                    out.append(v)
        return tuple(out)

    @property
    def comment(self) -> str | None:
        return None

    def __repr__(self) -> str:
        return f"Rule({self.text!r}, chain={self.chain!r}, handle={self.handle})"

    @property
    def text(self) -> str:
        t = self.txt
        if isinstance(t, str):
            return t
        steps = self.steps
        if len(t) == 2:             # one variable item: a NAT rule's, whose text every packet's note has
            i, fmt, extra = t[1]
            return t[0] % fmt(steps[i], extra)      # type: ignore[no-any-return]
        return t[0] % tuple([fmt(steps[i], extra) for i, fmt, extra in t[1:]])     # type: ignore[no-any-return]

    @text.setter
    def text(self, value: str) -> None:
        self.txt = value

    @property
    def handle(self) -> int:
        return self.pos & _HANDLE

    @handle.setter
    def handle(self, h: int) -> None:
        self.pos = (self.pos & ~_HANDLE) | h

    @property
    def where(self) -> str:
        """`file:line` of the rule, for errors that name it."""
        return f"{self.src}:{self.pos >> 32}"

    def pairs(self) -> list[tuple[Any, Any]]:
        """The steps as (function, argument) pairs."""
        st = self.steps
        return [(st[k], st[k + 1]) for k in range(0, len(st), 2)]

    def shown(self) -> str:
        """The rule as `nft list` prints it, its counter's current values included."""
        if self.counter is None:
            return self.text
        return self.text.replace(COUNTER_MARK, f"counter packets {self.counter[0]} bytes {self.counter[1]}")


class ParsedRule(Rule):
    """A rule the general parser read: its text, the jumps its statements and anonymous verdict
    maps name (checked when the transaction ends), its comment."""
    __slots__ = ("own_jumps", "own_comment")

    def __init__(self, chain: str, src: str, pos: int) -> None:
        super().__init__("", (), chain, src, pos)
        self.own_jumps: tuple[Verdict, ...] = ()
        self.own_comment: str | None = None

    @property
    def jumps(self) -> tuple[Verdict, ...]:
        return self.own_jumps

    @property
    def comment(self) -> str | None:
        return self.own_comment


@dataclass(slots=True)
class Chain:
    """A base chain (type, hook, priority, policy) or a regular chain."""
    name: str
    type: str | None = None
    hook: str | None = None
    priority: int = 0
    policy: str = "accept"
    comment: str | None = None
    handle: int = 0
    rules: list[Rule] = field(default_factory=list)
    @property
    def base(self) -> bool:
        return self.hook is not None


def make_chain(name: str, handle: int) -> Chain:
    """A regular chain with no rules, as Chain(name, handle=handle) makes it, without the dataclass
    __init__'s keyword and default-factory handling (the fast loader makes 60,000 at 10,000 Services)."""
    c = object.__new__(Chain)
    c.name, c.type, c.hook, c.priority, c.policy, c.comment, c.handle, c.rules = \
        name, None, None, 0, "accept", None, handle, []
    return c


@dataclass
class Table:
    """One table: family, name, its sets and chains in creation order."""
    family: str
    name: str
    comment: str | None = None
    flags: list[str] = field(default_factory=list)
    handle: int = 0
    sets: dict[str, NftSet] = field(default_factory=dict)
    chains: dict[str, Chain] = field(default_factory=dict)
    next_handle: int = 1
    anon: int = 0
    #: some chain's name is not one word of the tokenizer (a quoted name): the fast loader's short
    #: paths, which take a line's chain name as is, leave this table's lines to the word-by-word reading
    odd_names: bool = field(default=False, repr=False, compare=False)
    tx: "Snapshot | None" = field(default=None, repr=False, compare=False)
    #: changes whenever `chains` gains, loses or replaces a chain (never back to an earlier value), so a
    #: jump can keep the chain it resolved last (Verdict.chain) instead of looking it up on every packet
    epoch: int = field(default_factory=lambda: next(_EPOCHS), repr=False, compare=False)
    #: a view's result (pktemu.nftables.shared): the frozen table whose chains it shares
    shares: "Table | None" = field(default=None, repr=False, compare=False)
    #: a shared result's views (how many namespaces hold one)
    shared_by: int = field(default=0, repr=False, compare=False)

    def chains_changed(self) -> None:
        self.epoch = next(_EPOCHS)

    def new_handle(self) -> int:
        h = self.next_handle
        self.next_handle += 1
        return h

    def chain(self, name: str, where: str) -> Chain:
        c = self.chains.get(name)
        if c is None:
            raise PktemuError(f"{where}: no chain '{name}' in table {self.family} {self.name}")
        if self.tx is not None:
            self.tx.touch(c)
        return c

    def get_chain(self, name: str) -> Chain | None:
        """The chain named, or None; a transaction about to change it saves it first."""
        c = self.chains.get(name)
        if c is not None and self.tx is not None:
            self.tx.touch(c)
        return c

    def get_set(self, name: str) -> NftSet | None:
        """The set or map named, or None; a transaction about to change it saves it first."""
        s = self.sets.get(name)
        if s is not None and self.tx is not None:
            self.tx.touch(s)
        return s

    def set(self, name: str, where: str) -> NftSet:
        s = self.sets.get(name)
        if s is None:
            raise PktemuError(f"{where}: no set or map '{name}' in table {self.family} {self.name}")
        if self.tx is not None:
            self.tx.touch(s)
        return s


@dataclass
class NftRuleset:
    """All nftables tables of one namespace, in creation order."""
    tables: dict[tuple[str, str], Table] = field(default_factory=dict)

    def table(self, family: str, name: str, where: str) -> Table:
        t = self.tables.get((family, name))
        if t is None:
            raise PktemuError(f"{where}: no table {family} {name}")
        return t

    def transaction(self) -> "Snapshot":
        """Start an `nft -f` transaction: `restore()` the result if it fails, `close()` it if not."""
        from pktemu.nftables.shared import make_own
        from pktemu.nftables.snapshot import Snapshot
        make_own(self)
        return Snapshot(self)
