"""`nft -f` transactions: what one changes, saved so that a failed load applies nothing."""
from __future__ import annotations

from typing import Any

from pktemu.nftables.model import Chain, NftRuleset, NftSet


class Snapshot:
    """What a transaction changes, saved so that a failed `nft -f` applies nothing, as the kernel's
    all-or-nothing transactions do. Tables are saved up front (their chain and set dicts copied,
    one C-level copy each); a chain or set is saved when the transaction first reaches it through
    `Table.chain`/`Table.set`/`get_chain`/`get_set`, so a small transaction on a 10,000-Service ruleset costs
    what it touches. Rules and elements are never changed in place by a load, so shallow copies do."""

    def __init__(self, rs: NftRuleset) -> None:
        self.rs, self.tables = rs, dict(rs.tables)
        self.saved: list[tuple[Any, dict[str, Any], list[tuple[Any, Any]]]] = []
        self.seen: set[int] = set()
        #: each table's next handle when the transaction started: a chain of the table with a handle
        #: below it is older, the others were made by the transaction (as are a new table's chains)
        #: and need no saving (the fast loader's test, instead of `fresh` and `seen` for each)
        self.handles: dict[int, int] = {id(t): t.next_handle for t in self.tables.values()}
        for t in self.tables.values():
            self.saved.append((t, dict(t.__dict__), [(t.sets, dict(t.sets)), (t.chains, dict(t.chains))]))
            t.tx = self

    def fresh(self, obj: Chain | NftSet) -> None:
        """An object this transaction created: a failure drops it with its table's dicts, so there is
        nothing of it to save when the transaction later reaches it."""
        self.seen.add(id(obj))

    def touch(self, obj: Chain | NftSet) -> None:
        if id(obj) in self.seen:
            return
        self.seen.add(id(obj))
        if isinstance(obj, Chain):
            self.saved.append((obj, _attrs(obj), [(obj.rules, list(obj.rules))]))
            return
        parts: list[tuple[Any, Any]] = [(obj.elements, dict(obj.elements)), (obj.ranges, list(obj.ranges)),
                                        (obj.prefixes, dict(obj.prefixes))]
        parts += [(ix, dict(ix)) for ix in obj.prefixes.values()]
        self.saved.append((obj, _attrs(obj), parts))

    def close(self) -> None:
        for t in self.tables.values():
            t.tx = None

    def restore(self) -> None:
        """Put every saved object back as it was; what the transaction created is dropped."""
        self.rs.tables.clear()
        self.rs.tables.update(self.tables)
        for obj, attrs, parts in reversed(self.saved):
            for name, value in attrs.items():
                setattr(obj, name, value)
            for container, copy in parts:
                if isinstance(container, list):
                    container[:] = copy
                else:
                    container.clear()
                    container.update(copy)
        for t in self.tables.values():
            t.chains_changed()


def _attrs(obj: Any) -> dict[str, Any]:
    """An object's attributes, whether it keeps them in a __dict__ (Table) or in slots (Chain, NftSet)."""
    if hasattr(obj, "__dict__"):
        return dict(obj.__dict__)
    return {name: getattr(obj, name) for name in obj.__slots__}
