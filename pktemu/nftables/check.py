"""The checks `nft -f` makes when a transaction ends: every jump and goto (a rule's, a verdict map
element's) names a regular chain of its table, no chain reaches itself, and the walk from each base
chain is neither too deep nor meets a NAT statement its type and hook refuse (pktemu.nftables.validate)."""
from __future__ import annotations

from itertools import compress
from operator import and_, not_
from typing import Any

from pktemu.errors import PktemuError
from pktemu.nftables import shapes
from pktemu.nftables.model import Chain, NftRuleset, Rule, Table, Verdict
from pktemu.nftables.rules import named_vmap
from pktemu.nftables.nat_stmt import nat_statement
from pktemu.nftables.steps import go, vmap_index as vmap
from pktemu.nftables.validate import KIND_BITS, MAX_DEPTH, allowed, loops, validate

#: a fast-loaded rule's NAT step, among its jump parts (see _jump_parts), always a `dnat`
_NAT = 2
#: the jump parts of a fast-loaded rule whose only such part is its dnat
_DNAT_ONLY = ((-1, _NAT),)


def check(rs: NftRuleset, path: str) -> None:
    """Every jump/goto names a chain of its table, no chain jumps into itself, nat only in nat chains.
    A ruleset `_clean` finds nothing wrong with is not walked again: else `_check` finds the first
    error, in its order."""
    if not _clean(rs):
        _check(rs, path)
        for t in rs.tables.values():
            loops(t, path)
            validate(t, path)


def _clean(rs: NftRuleset) -> bool:
    """True when `_check` and `validate` would find nothing: every jump's target is a regular chain,
    the jumps make no loop, no chain is 16 jumps below a base chain, no base chain reaches a NAT
    statement its type and hook refuse. A fast-loaded rule's jumps and NAT statement are found from
    its shape (the steps its verdict, numgen and NAT parts print from), so a rule without one is not
    read at all; the jumps are gathered in two flat lists, and the loop test drops jumps to chains
    that jump nowhere until none is left (a loop is left otherwise), in C loops over those lists.
    The jumps dropped at the k-th pass go to chains k - 1 jumps deep at most: the passes hand the NAT
    kinds a chain reaches up to the chains that jump to it, and their count is the deepest walk."""
    memo: dict[int, tuple[tuple[int, int], ...]] = {}
    s0: Any = None                # the last two shapes met and their jump parts (an endpoint chain's two)
    s1: Any = None
    a0: tuple[tuple[int, int], ...] = ()
    a1: tuple[tuple[int, int], ...] = ()
    for t in rs.tables.values():
        chains = t.chains
        srcs: list[str] = []
        dsts: list[str] = []
        src, dst = srcs.append, dsts.append
        bases: list[Chain] = []
        masks: dict[str, int] = {}      # chain -> the NAT kinds of its own rules (KIND_BITS)
        maps: list[tuple[str, str]] = []     # (chain, named verdict map a rule of it looks up)
        dnats: list[str] = []           # chains of a fast-loaded rule whose only part is a dnat
        dnat = dnats.append
        for c in chains.values():
            if c.hook is not None:
                bases.append(c)
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
                    if at is _DNAT_ONLY:        # an endpoint's `dnat to`: the fast loader's only NAT form
                        dnat(name)
                        continue
                    st = r.steps
                    for i, many in at:
                        a = st[i]
                        if many == _NAT:
                            masks[name] = masks.get(name, 0) | KIND_BITS[a[2][2]]
                            continue
                        for v in (a[1:] if many else (a,)):
                            if type(v) is Verdict and v.target is not None:
                                src(name)
                                dst(v.target)
                    continue
                for v in r.jumps:
                    src(name)
                    dst(v.target)        # type: ignore[arg-type]
                st = r.steps
                for k in range(0, len(st), 2):
                    f = st[k]
                    if f is nat_statement:
                        masks[name] = masks.get(name, 0) | KIND_BITS[st[k + 1][2][2]]
                    elif f is named_vmap:
                        maps.append((name, st[k + 1][1]))
        if dnats:
            own = masks
            masks = dict.fromkeys(dnats, KIND_BITS["dnat"])
            for name, bits in own.items():
                masks[name] = masks.get(name, 0) | bits
        base_names = {c.name for c in bases}
        for s in t.sets.values():
            if s.data_type == "verdict":
                for el in s.elements.values():
                    v = el.data
                    if isinstance(v, Verdict) and v.target is not None and (
                            v.target not in chains or v.target in base_names):
                        return False
        for name, m in maps:
            vm = t.sets.get(m)
            if vm is not None:
                for el in vm.elements.values():
                    v = el.data
                    if isinstance(v, Verdict) and v.target is not None:
                        src(name)
                        dst(v.target)
        targets = set(dsts)
        if not targets <= chains.keys() or not targets.isdisjoint(base_names):
            return False
        passes = 0
        while srcs:
            keep = list(map(set(srcs).__contains__, dsts))
            if all(keep):
                return False
            passes += 1
            if masks:           # hand the kinds of the chains that jump nowhere now to their callers
                get = masks.get
                up = map(and_, map(not_, keep), map(masks.__contains__, dsts))
                for a, b in compress(zip(srcs, dsts, strict=True), up):
                    masks[a] = get(a, 0) | masks[b]
            srcs, dsts = list(compress(srcs, keep)), list(compress(dsts, keep))
        if passes >= MAX_DEPTH and bases:
            return False
        for c in bases:
            reach = masks.get(c.name)
            if reach and reach & ~allowed(c):
                return False
    return True


def _jump_parts(shape: tuple[Any, ...]) -> tuple[tuple[int, int], ...]:
    """The steps of a fast-loaded rule that may jump or NAT, from its shape: (index of the step's
    argument, 1 for a numgen map's `(reader, verdict, ...)`, _NAT for a NAT statement's `(address,
    rule, (lo, hi, kind, ...))`, else 0); its other steps name no chain."""
    parts = tuple((i, 1 if fmt is shapes.numgen_vmap else _NAT if fmt is shapes.nat else 0)
                  for i, fmt, _ in shape[1:]
                  if fmt is shapes.verdict or fmt is shapes.numgen_vmap or fmt is shapes.nat)
    return _DNAT_ONLY if len(parts) == 1 and parts[0][1] == _NAT else parts


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
