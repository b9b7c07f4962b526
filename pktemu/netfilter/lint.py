"""Warnings about a loaded ruleset that loads fine but is probably not what its author meant.

A user chain no rule jumps to is dead: packets never reach it (kube-proxy's own test helper,
checkIPTablesRuleJumps, fails on such a chain). A dump taken from a node is usually complete,
so an unreferenced KUBE-* chain usually means a rule was lost on the way.
"""
from __future__ import annotations

from pktemu.netfilter.xt_rule import K_GOTO, K_JUMP
from pktemu.netfilter.xtables import Ruleset


def unreferenced_chains(ruleset: Ruleset) -> list[tuple[str, str]]:
    """(table, chain) of every user chain that no rule of its table jumps or goes to."""
    out: list[tuple[str, str]] = []
    for tname in ruleset.tables():
        t = ruleset.table(tname)
        targets = {r.jump for c in t.chains.values() for r in c.rules if r.kind in (K_JUMP, K_GOTO)}
        out.extend((tname, c.name) for c in sorted(t.chains.values(), key=lambda c: c.name)
                   if not c.builtin and c.name not in targets)
    return out


def warnings(ruleset: Ruleset) -> list[str]:
    """One line per unreferenced chain, as `pktemu validate` prints them (after `<file>: `)."""
    return [f"table {t}: chain {c} is not referenced by any rule (nothing reaches it)"
            for t, c in unreferenced_chains(ruleset)]
