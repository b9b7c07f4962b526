"""The checks `nft -f` makes when a transaction ends: every jump and goto (a rule's, a verdict map
element's) names a chain of its table, and no chain reaches itself."""
from __future__ import annotations

from pktemu.errors import PktemuError
from pktemu.nftables.model import NftRuleset, Table, Verdict


def check(rs: NftRuleset, path: str) -> None:
    """Every jump/goto names a chain of its table, no chain jumps into itself, nat only in nat chains."""
    for t in rs.tables.values():
        targets: dict[str, set[str]] = {}         # only the chains that jump: most do not
        for c in t.chains.values():
            for r in c.rules:
                for v in r.jumps:
                    if v.target not in t.chains:
                        raise PktemuError(f"{r.where}: {v.kind} to unknown chain '{v.target}'")
                    targets.setdefault(c.name, set()).add(v.target)
        for s in t.sets.values():
            if s.data_type == "verdict":
                for el in s.elements.values():
                    v = el.data
                    if isinstance(v, Verdict) and v.target is not None and v.target not in t.chains:
                        raise PktemuError(f"{path}: map {s.name}: {v.kind} to unknown chain '{v.target}'")
        _check_loops(t, targets, path)


def _check_loops(t: Table, targets: dict[str, set[str]], path: str) -> None:
    state: dict[str, int] = {}
    for n in t.chains:
        if n not in state and n in targets:
            _visit(t, targets, path, state, n, [n])


def _visit(t: Table, targets: dict[str, set[str]], path: str, state: dict[str, int], n: str,
           trail: list[str]) -> None:
    """Depth-first from chain n (a plain function: a recursive closure would be a reference cycle
    that keeps the whole graph alive until the next garbage collection)."""
    state[n] = 1
    for m in targets.get(n, ()):
        if state.get(m) == 1:
            raise PktemuError(f"{path}: table {t.family} {t.name}: chain loop {' -> '.join(trail + [m])}")
        if m not in state:
            _visit(t, targets, path, state, m, trail + [m])
    state[n] = 2
