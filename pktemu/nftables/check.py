"""The checks `nft -f` makes when a transaction ends: every jump and goto (a rule's, a verdict map
element's) names a chain of its table, and no chain reaches itself."""
from __future__ import annotations

from pktemu.errors import PktemuError
from pktemu.nftables.model import NftRuleset, Rule, Table, Verdict
from pktemu.nftables.steps import go, vmap_index as vmap


def check(rs: NftRuleset, path: str) -> None:
    """Every jump/goto names a chain of its table, no chain jumps into itself, nat only in nat chains."""
    for t in rs.tables.values():
        targets: dict[str, set[str]] = {}         # only the chains that jump: most do not
        chains = t.chains
        for c in chains.values():
            mine: set[str] | None = None
            last = None                           # the last jump verdict found to name a chain
            for r in c.rules:
                if r.__class__ is Rule:           # the fast loader's: see _jumps
                    st = r.steps
                    if st and st[-2] is go and st.index(go) == len(st) - 2 and vmap not in st[:-2]:
                        v = st[-1]
                        if v.target is None:
                            continue
                        if v is not last:
                            if v.target not in chains:
                                raise PktemuError(f"{r.where}: {v.kind} to unknown chain '{v.target}'")
                            last = v
                        if mine is None:
                            mine = targets.setdefault(c.name, set())
                        mine.add(v.target)
                        continue
                    if go not in st and vmap not in st:
                        continue
                mine = _jumps(t, r, targets, mine, c.name)
        for s in t.sets.values():
            if s.data_type == "verdict":
                for el in s.elements.values():
                    v = el.data
                    if isinstance(v, Verdict) and v.target is not None and v.target not in t.chains:
                        raise PktemuError(f"{path}: map {s.name}: {v.kind} to unknown chain '{v.target}'")
        _check_loops(t, targets, path)


def _jumps(t: Table, r: Rule, targets: dict[str, set[str]], mine: set[str] | None,
           chain: str) -> set[str] | None:
    """Check a rule's jumps as `check` does; the fast loader's rules (class Rule) keep a jump's
    verdict only as a `go` step's argument or in a `vmap_index` step's, so `check` looks at no
    other of their rules (their accept/drop steps' verdicts name no chain)."""
    for v in r.jumps:
        if v.target not in t.chains:
            raise PktemuError(f"{r.where}: {v.kind} to unknown chain '{v.target}'")
        if mine is None:
            mine = targets.setdefault(chain, set())
        mine.add(v.target)
    return mine


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
