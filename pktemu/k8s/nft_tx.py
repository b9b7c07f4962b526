"""kube-proxy's nftables transactions, as sigs.k8s.io/knftables writes them, and its Fake.

A `Tx` is the list of operations one sync sends in one `nft -f` run; `str(tx)` is the text
knftables passes to nft (`add chain ip kube-proxy X { ... }`, `flush chain ...`, `delete element
... { KEY }`), which the node's nftables engine loads. `Fake` is knftables.Fake: the table as a
plain model the operations apply to, whose `dump()` lists the table as `add` commands, the form
upstream's proxier_test.go compares (TestOverallNFTablesRules). `ElementStorage` is the proxier's
nftElementStorage; `apply_tx` runs a transaction on a node's nftables state and hooks it up.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any, Callable

from pktemu.netfilter.core import NF_ACCEPT, HookState
from pktemu.netfilter.hooks import HookEntry
from pktemu.nftables.eval import run_chain
from pktemu.nftables.model import NftRuleset
from pktemu.nftables.parse import load_nft
from pktemu.nftables.shared import SharedTx

TABLE = "kube-proxy"


@dataclass(slots=True)
class Obj:
    """One object of an operation: a table, chain, set/map, rule or element (slotted: a sync makes
    several per endpoint)."""
    kind: str                         # table | chain | set | map | rule | element
    name: str = ""                    # chain/set/map name; for a rule its chain; for an element its set
    spec: str = ""                    # what goes in `{ ... }` (chains, sets, table), or a rule's text
    key: str = ""                     # an element's key
    value: str = ""                   # a map element's value
    comment: str | None = None

    def add_text(self, family: str, table: str) -> str:
        head = f"{self.kind} {family} {table}"
        if self.kind == "table":
            return f"{head} {{ comment \"{self.comment}\" ; }}" if self.comment else head
        if self.kind == "rule":
            c = f' comment "{self.comment}"' if self.comment is not None else ""
            return f"{head} {self.name} {self.spec}{c}"
        if self.kind == "element":
            c = f' comment "{self.comment}"' if self.comment is not None else ""
            v = f" : {self.value}" if self.value else ""
            return f"{head} {self.name} {{ {self.key}{c}{v} }}"
        return f"{head} {self.name}" + (f" {{ {self.spec} }}" if self.spec else "")

    def ref_text(self, family: str, table: str) -> str:
        """The object named for flush/delete: no spec, an element by its key only."""
        if self.kind == "element":
            return f"element {family} {table} {self.name} {{ {self.key} }}"
        if self.kind == "table":
            return f"table {family} {table}"
        return f"{self.kind} {family} {table} {self.name}"


@dataclass
class Tx:
    """The operations in order, as two parallel lists (verbs, objects): no (verb, object) pair to
    allocate per operation, several per endpoint."""
    family: str = "ip"
    table: str = "kube-proxy"
    verbs: list[str] = field(default_factory=list)
    objs: list[Obj] = field(default_factory=list)
    #: (first, end, text) of runs of operations appended with their text made already (`extend`)
    made: list[tuple[int, int, str]] = field(default_factory=list)

    def add(self, obj: Obj) -> None:
        self.verbs.append("add")
        self.objs.append(obj)

    def flush(self, obj: Obj) -> None:
        self.verbs.append("flush")
        self.objs.append(obj)

    def delete(self, obj: Obj) -> None:
        self.verbs.append("delete")
        self.objs.append(obj)

    def extend(self, verbs: list[str], objs: list[Obj], text: str) -> None:
        """Operations whose text (`text()` of them alone) is made already: a Service port's, which
        every node of a cluster writes alike (pktemu.k8s.nft_renders)."""
        start = len(self.verbs)
        self.verbs += verbs
        self.objs += objs
        self.made.append((start, len(self.verbs), text))

    def __len__(self) -> int:
        return len(self.verbs)

    def text(self, start: int = 0, end: int | None = None) -> str:
        """The operations from `start` to `end` as knftables writes them, one per line."""
        f, tb = self.family, self.table
        return "".join(f"{verb} {obj.add_text(f, tb) if verb == 'add' else obj.ref_text(f, tb)}\n"
                       for verb, obj in zip(self.verbs[start:end], self.objs[start:end], strict=True))

    def __str__(self) -> str:
        if not self.made:
            return self.text()
        out, at = [], 0
        for start, end, text in self.made:
            if start > at:
                out.append(self.text(at, start))
            out.append(text)
            at = end
        if at < len(self.verbs):
            out.append(self.text(at))
        return "".join(out)


def chain(name: str, spec: str = "", comment: str | None = None) -> Obj:
    if comment is not None:
        spec = f'comment "{comment}" ;'
    return Obj("chain", name, spec)


def rule(chain_name: str, text: str, comment: str | None = None) -> Obj:
    return Obj("rule", chain_name, text, comment=comment)


def element(set_name: str, key: str, value: str = "", comment: str | None = None) -> Obj:
    return Obj("element", set_name, key=key, value=value, comment=comment)


class ElementStorage:
    """nftElementStorage: a map's elements as last written, to add or delete only what changed."""

    def __init__(self, kind: str, name: str) -> None:
        self.kind, self.name = kind, name
        self.elements: dict[str, str] = {}
        self.leftover: set[str] = set()

    def reset(self, tx: Tx) -> None:
        self.elements.clear()
        tx.flush(Obj(self.kind, self.name))
        self.leftover = set()

    def ensure(self, tx: Tx, el: Obj) -> None:
        old = self.elements.get(el.key)
        if old is None:
            tx.add(el)
        elif old != el.value:
            tx.delete(el)
            tx.add(el)
        self.elements[el.key] = el.value
        self.leftover.discard(el.key)

    def cleanup(self, tx: Tx) -> None:
        for key in sorted(self.leftover):
            tx.delete(element(self.name, key))
            del self.elements[key]
        self.leftover = set(self.elements)


@dataclass
class _FakeChain:
    obj: Obj
    rules: list[Obj] = field(default_factory=list)


class Fake:
    """knftables.Fake for one table: apply transactions, list chains and sets, dump."""

    def __init__(self, family: str = "ip", table: str = "kube-proxy") -> None:
        self.family, self.table = family, table
        self.table_obj: Obj | None = None
        self.chains: dict[str, _FakeChain] = {}
        self.sets: dict[str, Obj] = {}
        self.elements: dict[str, dict[str, Obj]] = {}

    def run(self, tx: Tx) -> None:
        ops = {"add": self._add, "flush": self._flush, "delete": self._delete}
        for verb, obj in zip(tx.verbs, tx.objs, strict=True):
            ops[verb](obj)

    def _add(self, o: Obj) -> None:
        kind = o.kind
        if kind == "rule":
            self.chains[o.name].rules.append(o)
        elif kind == "element":
            self.elements[o.name][o.key] = o
        elif kind == "chain":
            if o.name not in self.chains:
                self.chains[o.name] = _FakeChain(o)
        elif kind == "table":
            self.table_obj = self.table_obj or o
        elif kind in ("set", "map"):
            self.sets.setdefault(o.name, o)
            self.elements.setdefault(o.name, {})

    def _flush(self, o: Obj) -> None:
        """(Objects a previous kube-proxy left in the node are not in a new one's mirror.)"""
        if o.kind == "chain" and o.name in self.chains:
            self.chains[o.name].rules.clear()
        elif o.kind in ("set", "map"):
            self.elements.get(o.name, {}).clear()

    def _delete(self, o: Obj) -> None:
        if o.kind == "chain":
            self.chains.pop(o.name, None)
        elif o.kind in ("set", "map"):
            self.sets.pop(o.name, None)
            self.elements.pop(o.name, None)
        elif o.kind == "element":
            self.elements.get(o.name, {}).pop(o.key, None)

    def list(self, what: str) -> list[str]:
        """`nft list chains|sets` of the table, by name."""
        return list(self.chains) if what == "chains" else list(self.sets)

    def dump(self) -> str:
        """The table as `add` commands (knftables Fake.Dump), one per object."""
        f, t = self.family, self.table
        out = []
        if self.table_obj is not None:
            out.append("add " + self.table_obj.add_text(f, t))
        out += ["add " + c.obj.add_text(f, t) for _, c in sorted(self.chains.items())]
        out += ["add " + s.add_text(f, t) for _, s in sorted(self.sets.items())]
        for _, c in sorted(self.chains.items()):
            out += ["add " + r.add_text(f, t) for r in c.rules]
        for name in sorted(self.elements):
            out += ["add " + e.add_text(f, t) for e in self.elements[name].values()]
        return "".join(x + "\n" for x in out)


# ---------------------------------------------------------------------------- the node's side
class TableListing:
    """`nft list chains|sets` of one table in a node's nftables state (what upstream asks the
    kernel for, so a restarted kube-proxy finds the chains its previous run left)."""

    def __init__(self, nf: Any, table: str, family: str = "ip") -> None:
        self.nf, self.key = nf, (family, table)

    def list(self, what: str) -> list[str]:
        rs = getattr(self.nf, "nft", None)
        t = rs.tables.get(self.key) if rs is not None else None
        if t is None:
            return []
        if what == "chains":
            return list(t.chains)
        return [s.name for s in t.sets.values() if not s.anonymous]


#: per Netfilter, the kube-proxy base chains already registered at their hooks
_ATTACHED: "weakref.WeakKeyDictionary[Any, set[tuple[str, str, str]]]" = weakref.WeakKeyDictionary()


def apply_tx(nf: Any, text: str, where: str, family: str = "ip", table: str = TABLE,
             shared: "SharedTx | None" = None) -> None:
    """Run one transaction on the node (`nft -f`) and hook the table's base chains up. A chain is
    looked up by name on each packet, so a transaction that deletes and re-adds it (a full sync
    does) keeps it hooked. `shared`: the cluster's, to share the result with the other nodes."""
    if nf.nft is None:
        nf.nft = NftRuleset()
    if shared is not None:
        shared.apply(nf.nft, text, where, family, table)
    else:
        load_nft(text, where, rs=nf.nft)
    t = nf.nft.tables.get((family, table))
    if t is None:
        return
    done = _ATTACHED.setdefault(nf, set())
    for c in list(t.chains.values()):
        if c.hook is None or (family, table, c.name) in done:
            continue
        done.add((family, table, c.name))
        fn = _chain_fn(nf, family, table, c.name)
        if c.type == "nat":
            nf.add_nat_lookup(c.hook, c.priority, fn)
        else:
            nf.register(c.hook, HookEntry(c.priority, f"nft {family} {table} {c.name}", fn,
                                          f"nft {table} {c.name}"))


def _chain_fn(nf: Any, family: str, table: str, name: str) -> Callable[[Any, HookState], int]:
    def fn(frame: Any, state: HookState) -> int:
        t = nf.nft.tables.get((family, table)) if nf.nft is not None else None
        c = t.chains.get(name) if t is not None else None
        if t is None or c is None or c.hook is None:
            return NF_ACCEPT
        return run_chain(t, c, frame, state)
    return fn
