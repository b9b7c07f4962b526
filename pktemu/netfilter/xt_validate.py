"""What the kernel checks when a table is replaced: no jump loops, and every extension in a table
and reachable only from hooks it allows.

Cost is linear in the table: when callers come before the chains they jump to (kube-proxy's
order), one pass over the rules finds the hooks each chain is reachable from and checks its
extensions; else (or on an error) counting each chain's callers gives the chains in an order
where callers come first (Kahn's; on a jump loop a depth-first walk finds the loop to report),
then a pass checks the extensions, raising the first error in the chains' order. Extensions are
checked once per set of hooks, by class where the check reads class attributes only (most do),
else by object (rules share equal extension objects).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pktemu.errors import PktemuError
from pktemu.netfilter.core import TABLE_HOOKS
from pktemu.netfilter.xt_base import MATCHES, TARGETS, Extension
from pktemu.netfilter.xt_rule import K_GOTO, K_JUMP, Rule

if TYPE_CHECKING:
    from pktemu.netfilter.xtables import Chain, Table

_PLAIN: list[Any] = [-1, set()]


def validate_table(t: "Table") -> set[type]:
    """Raise the error (one line, naming the rule's source) for the first thing the kernel refuses;
    else the classes of the table's extensions."""
    classes = _in_order(t)
    if classes is not None:
        return classes
    reach = _reach(t)
    if reach is None:
        jumps = {n: [r for r in c.rules if r.kind == K_JUMP or r.kind == K_GOTO] for n, c in t.chains.items()}
        _check_loops(t, jumps)          # raises the error for the loop the depth-first walk meets first
        raise AssertionError("a jump loop that the depth-first walk did not find")
    return _check_all(t, reach)


def _start(t: "Table") -> dict[str, frozenset[str]]:
    none: frozenset[str] = frozenset()
    reach = dict.fromkeys(t.chains, none)
    for hook in TABLE_HOOKS[t.name]:
        reach[hook] = frozenset((hook,))
    return reach


def _in_order(t: "Table") -> set[type] | None:
    """validate_table in one pass over the rules, when each jump goes to a later chain or to one
    that jumps nowhere (a loop needs a jump back to a chain that jumps on): every caller of a
    chain then comes before it, so its hooks are final when its rules are checked and it passes
    them on (a chain that jumps nowhere is checked again at the end if callers after it added
    hooks). kube-proxy's tables are in that order (a Service's chains are declared before its
    endpoints'). None if they are not, or if anything fails: the general way then finds the
    error validate_table reports (the first in the chains' order)."""
    reach = _start(t)
    plain = _plain_classes()
    #: hooks -> what passed with them: a class whose checks read class attributes only (plain),
    #: else the extension object
    checked: dict[frozenset[str], set[Any]] = {}
    classes: set[type] = set()
    jumping: set[str] = set()            # the chains seen to jump on
    ends: list[tuple["Chain", frozenset[str]]] = []
    for name, c in t.chains.items():
        hooks = reach[name]
        done = checked.get(hooks)
        if done is None:
            done = checked[hooks] = set()
        out = False
        for r in c.rules:
            k = r.kind
            if k == K_JUMP or k == K_GOTO:
                if not out:
                    jumping.add(name)
                    out = True
                j = r.jump
                if j in jumping:         # back to a chain that jumps on (or to itself)
                    return None
                if hooks:
                    had = reach[j]
                    if not had:
                        reach[j] = hooks
                    elif had is not hooks and not hooks <= had:
                        reach[j] = had | hooks
            for ext in r.matches:
                cls = type(ext)             # not `ext.__class__`: that lookup is not specialized
                if cls not in done:
                    what: Any = cls if cls in plain else id(ext)
                    if what not in done:
                        if _fails(t, ext, hooks):
                            return None
                        done.add(what)
                        classes.add(cls)
            tg = r.target
            if tg is not None and (tcls := type(tg)) not in done:
                what = tcls if tcls in plain else id(tg)
                if what not in done:
                    if _fails(t, tg, hooks):
                        return None
                    done.add(what)
                    classes.add(tcls)
        if not out:
            ends.append((c, hooks))
    for c, hooks in ends:
        final = reach[c.name]
        if final is not hooks and final != hooks:
            for r in c.rules:
                for e in (*r.matches, r.target):
                    if e is not None and _fails(t, e, final):
                        return None
    return classes


def _fails(t: "Table", ext: Extension, hooks: frozenset[str]) -> bool:
    """Whether _check_ext would refuse `ext`."""
    return (ext.table is not None and ext.table != t.name) or bool(hooks and ext.check_hooks(hooks))


def _check_all(t: "Table", reach: dict[str, frozenset[str]]) -> set[type]:
    """The extensions' checks, chain after chain, rule after rule: raise the first error."""
    plain = _plain_classes()
    checked: dict[frozenset[str], set[Any]] = {}
    classes: set[type] = set()
    for c in t.chains.values():
        hooks = reach[c.name]
        done = checked.get(hooks)
        if done is None:
            done = checked[hooks] = set()
        for r in c.rules:
            for ext in r.matches:
                cls = type(ext)
                if cls not in done:
                    what: Any = cls if cls in plain else id(ext)
                    if what not in done:
                        _check_ext(t, r, c, ext, hooks)
                        done.add(what)
                        classes.add(cls)
            tg = r.target
            if tg is not None and (tcls := type(tg)) not in done:
                what = tcls if tcls in plain else id(tg)
                if what not in done:
                    _check_ext(t, r, c, tg, hooks)
                    done.add(what)
                    classes.add(tcls)
    return classes


def _reach(t: "Table") -> dict[str, frozenset[str]] | None:
    """Chain -> the hooks it is reachable from, for chains in any order; None if there is a jump
    loop. Kahn's: a chain is taken once every chain that jumps to it was (a count per jump), so
    its hooks are final when it passes them on."""
    reach = _start(t)
    callers = dict.fromkeys(t.chains, 0)
    targets: dict[str, list[str]] = {}
    for name, c in t.chains.items():
        to = [r.jump for r in c.rules if r.kind == K_JUMP or r.kind == K_GOTO]
        if to:
            targets[name] = to
            for j in to:
                callers[j] += 1
    ready = [n for n, k in callers.items() if not k]
    taken = len(ready)
    while ready:
        name = ready.pop()
        out = targets.get(name)
        if out is None:
            continue
        hooks = reach[name]
        for j in out:
            if hooks:
                had = reach[j]
                if not had:
                    reach[j] = hooks
                elif not hooks <= had:
                    reach[j] = had | hooks
            k = callers[j] - 1
            callers[j] = k
            if not k:
                ready.append(j)
                taken += 1
    return reach if taken == len(callers) else None


def _check_ext(t: "Table", r: Rule, c: "Chain", ext: Extension, hooks: frozenset[str]) -> None:
    if ext.table is not None and ext.table != t.name:
        raise PktemuError(f"{r.where}: {ext.kind} {ext.ext_name} is only valid in the "
                          f"{ext.table} table, not in {t.name}")
    err = ext.check_hooks(hooks) if hooks else None
    if err:
        raise PktemuError(f"{r.where}: {err} (rule in chain {c.name})")


def _check_loops(t: "Table", jumps: dict[str, list[Rule]]) -> list[str]:
    """Raise the error for a jump loop; else the chains in an order where each comes after
    every chain it jumps to."""
    order: list[str] = []
    state: dict[str, int] = {}          # 1 = on the DFS path, 2 = done
    for start in t.chains:
        if state.get(start):
            continue
        path: list[tuple[str, int]] = [(start, 0)]
        state[start] = 1
        while path:
            name, i = path[-1]
            rules = jumps[name]
            if i == len(rules):
                state[name] = 2
                order.append(name)
                path.pop()
                continue
            path[-1] = (name, i + 1)
            nxt = rules[i].jump
            if state.get(nxt) == 1:
                names = [p[0] for p in path]
                cycle = names[names.index(nxt):] + [nxt]
                if len(cycle) > 8:      # keep the line short: the start and the way back
                    cycle = cycle[:4] + [f"... ({len(cycle) - 1} chains)"] + cycle[-2:]
                raise PktemuError(f"{rules[i].where}: jump loop: {' -> '.join(cycle)}")
            if not state.get(nxt):
                state[nxt] = 1
                path.append((nxt, 0))
    return order


def _plain_classes() -> set[type]:
    """Extension classes whose objects validate checks by class attributes only (`table`, `hooks`
    and the base's check_hooks): one check per class and set of hooks says it for all of them."""
    if _PLAIN[0] != len(MATCHES) + len(TARGETS):
        _PLAIN[0] = len(MATCHES) + len(TARGETS)
        _PLAIN[1] = {cls for cls in (*MATCHES.values(), *TARGETS.values())
                     if cls.check_hooks is Extension.check_hooks}
    return _PLAIN[1]
