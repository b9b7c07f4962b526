"""The checks `nft -f` makes when a transaction ends: every jump and goto (a rule's, a verdict map
element's) names a chain of its table, and no chain reaches itself."""
from __future__ import annotations

from itertools import compress
from typing import Any

from pktemu.errors import PktemuError
from pktemu.nftables import shapes
from pktemu.nftables.model import NftRuleset, Rule, Table, Verdict
from pktemu.nftables.steps import go, vmap_index as vmap


def check(rs: NftRuleset, path: str) -> None:
    """Every jump/goto names a chain of its table, no chain jumps into itself, nat only in nat chains.
    A ruleset `_clean` finds nothing wrong with is not walked again: else `_check` finds the first
    error, in its order."""
    if not _clean(rs):
        _check(rs, path)


def _clean(rs: NftRuleset) -> bool:
    """True when `_check` would find nothing: every jump's target is a chain and the jumps make no
    loop. A fast-loaded rule's jumps are found from its shape (the steps its verdict and numgen parts
    print from), so a rule without one (an endpoint's `dnat`) is not read at all; the jumps are
    gathered in two flat lists, and the loop test drops jumps to chains that jump nowhere until
    none is left (a loop is left otherwise), in C loops over those lists."""
    memo: dict[int, tuple[tuple[int, bool], ...]] = {}
    s0: Any = None                # the last two shapes met and their jump parts (an endpoint chain's two)
    s1: Any = None
    a0: tuple[tuple[int, bool], ...] = ()
    a1: tuple[tuple[int, bool], ...] = ()
    for t in rs.tables.values():
        chains = t.chains
        srcs: list[str] = []
        dsts: list[str] = []
        src, dst = srcs.append, dsts.append
        for c in chains.values():
            rules = c.rules
            if not rules:
                continue
            name = c.name
            for r in rules:
                sh = r.txt
                if type(r) is Rule and type(sh) is tuple:
                    if sh is s0:
                        at = a0
                    elif sh is s1:
                        at = a1
                    else:
                        got = memo.get(id(sh))
                        at = got if got is not None else memo.setdefault(id(sh), _jump_parts(sh))
                        s1, a1, s0, a0 = s0, a0, sh, at
                    if not at:
                        continue
                    st = r.steps
                    for i, many in at:
                        a = st[i]
                        for v in (a[1:] if many else (a,)):
                            if type(v) is Verdict and v.target is not None:
                                src(name)
                                dst(v.target)
                    continue
                for v in r.jumps:
                    src(name)
                    dst(v.target)        # type: ignore[arg-type]
        if not set(dsts) <= chains.keys():
            return False
        for s in t.sets.values():
            if s.data_type == "verdict":
                for el in s.elements.values():
                    v = el.data
                    if isinstance(v, Verdict) and v.target is not None and v.target not in chains:
                        return False
        while srcs:
            keep = list(map(set(srcs).__contains__, dsts))
            if all(keep):
                return False
            srcs, dsts = list(compress(srcs, keep)), list(compress(dsts, keep))
    return True


def _jump_parts(shape: tuple[Any, ...]) -> tuple[tuple[int, bool], ...]:
    """The steps of a fast-loaded rule that may jump, from its shape: (index of the step's argument,
    whether it is a numgen map's `(reader, verdict, ...)`); its other steps name no chain."""
    return tuple((i, fmt is shapes.numgen_vmap) for i, fmt, _ in shape[1:]
                 if fmt is shapes.verdict or fmt is shapes.numgen_vmap)


def _check(rs: NftRuleset, path: str) -> None:
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
