"""What the kernel checks of a table's jump graph when a transaction commits, besides unknown targets
and loops (pktemu.nftables.check): nft_verdict_init refuses a jump or goto to a base chain; and, for
every base chain, nft_chain_validate walks the chains it reaches (jumps, gotos, verdict map
elements) with the base chain as context: a walk 16 jumps deep fails (NFT_JUMP_STACK_SIZE, EMLINK
"Too many links"), and a NAT statement validates against the base chain's type and hook
(nft_nat_validate, nft_masq_validate, nft_redir_validate: EOPNOTSUPP). A regular chain no base chain
reaches is not validated, whatever it holds.

`check` finds a table free of these cheaply (`KIND_BITS`, `allowed`); `validate` is its slow path,
run only when that test fails: it walks as the kernel does and raises the first error, naming the
file and line of the rule at fault."""
from __future__ import annotations

from typing import Iterator

from pktemu.errors import PktemuError
from pktemu.netfilter.core import INPUT, OUTPUT, POSTROUTING, PREROUTING
from pktemu.nftables.model import Chain, Rule, Table, Verdict
from pktemu.nftables.rules import named_vmap
from pktemu.nftables.nat_stmt import nat_statement

#: NFT_JUMP_STACK_SIZE: a chain this many jumps (or gotos) below a base chain fails validation
MAX_DEPTH = 16
#: a NAT statement's kind -> its bit in a chain's mask of the kinds it reaches
KIND_BITS = {"dnat": 1, "snat": 2, "masquerade": 4, "redirect": 8}
#: the hooks each kind may run at (in a `type nat` chain)
KIND_HOOKS = {"dnat": (PREROUTING, OUTPUT), "snat": (POSTROUTING, INPUT), "masquerade": (POSTROUTING,),
              "redirect": (PREROUTING, OUTPUT)}
_HOOK_WORDS = {PREROUTING: "prerouting", INPUT: "input", OUTPUT: "output", POSTROUTING: "postrouting"}
_ALLOWED: dict[tuple[str | None, str | None], int] = {}


def allowed(base: Chain) -> int:
    """The mask of the NAT kinds a base chain's walk may meet."""
    key = (base.type, base.hook)
    got = _ALLOWED.get(key)
    if got is None:
        got = _ALLOWED[key] = 0 if base.type != "nat" else sum(
            bit for kind, bit in KIND_BITS.items() if base.hook in KIND_HOOKS[kind])
    return got


def nat_kinds(r: Rule) -> Iterator[str]:
    """The kinds of a rule's NAT statements."""
    st = r.steps
    for k in range(0, len(st), 2):
        if st[k] is nat_statement:
            yield st[k + 1][2][2]


def rule_targets(t: Table, r: Rule) -> list[Verdict]:
    """Every jump/goto a rule may take: its own, and its named verdict maps' elements'."""
    out = list(r.jumps)
    st = r.steps
    for k in range(0, len(st), 2):
        if st[k] is named_vmap:
            m = t.sets.get(st[k + 1][1])
            if m is not None:
                out += [el.data for el in m.elements.values()
                        if isinstance(el.data, Verdict) and el.data.target is not None]
    return out


def validate(t: Table, path: str) -> None:
    """Raise the first error the kernel's validation of table `t` would report."""
    chains = t.chains
    for c in chains.values():
        for r in c.rules:
            for v in rule_targets(t, r):
                target = chains.get(v.target or "")
                if target is not None and target.hook is not None:
                    raise PktemuError(f"{r.where}: {v.kind} to base chain '{target.name}': Operation not "
                                      "supported (only a regular chain can be jumped to)")
    for s in t.sets.values():
        if s.data_type == "verdict":
            for el in s.elements.values():
                v = el.data
                target = chains.get(v.target or "") if isinstance(v, Verdict) else None
                if target is not None and target.hook is not None:
                    raise PktemuError(f"{path}: map {s.name}: {v.kind} to base chain '{target.name}': "
                                      "Operation not supported (only a regular chain can be jumped to)")
    for base in chains.values():
        if base.hook is not None:
            for r in base.rules:
                _walk(t, base, base, r, r, 0, [base.name], {})


def _walk(t: Table, base: Chain, c: Chain, r: Rule, first: Rule, level: int, trail: list[str],
          seen: dict[str, int]) -> None:
    """Validate rule `r` of chain `c`, `level` jumps below `base`; `first` is the base chain's rule the
    walk went through (the one nft names for a walk too deep). `seen`: the deepest level each chain
    was validated at from this base chain (a shallower visit finds nothing a deeper one did not)."""
    for kind in nat_kinds(r):
        if base.type != "nat":
            why = f"nat statements need a chain of type nat, not {base.type}"
        elif base.hook not in KIND_HOOKS[kind]:
            hooks = " and ".join(_HOOK_WORDS[h] for h in KIND_HOOKS[kind])
            why = f"{kind} is valid only at {hooks}, not at {_HOOK_WORDS.get(base.hook or '', base.hook)}"
        else:
            continue
        where = f"chain '{c.name}'" + (f" (reached from base chain '{base.name}')" if c is not base else "")
        raise PktemuError(f"{r.where}: {kind} in {where}: Operation not supported ({why})")
    for v in rule_targets(t, r):
        nxt = t.chains.get(v.target or "")
        if nxt is None:
            continue
        if level + 1 >= MAX_DEPTH:
            raise PktemuError(f"{first.where}: Too many links: {' -> '.join(trail + [nxt.name])} is "
                              f"{level + 1} jumps deep (the kernel allows {MAX_DEPTH - 1} below a base "
                              "chain)")
        if seen.get(nxt.name, -1) >= level + 1:
            continue
        seen[nxt.name] = level + 1
        trail.append(nxt.name)
        for r2 in nxt.rules:
            _walk(t, base, nxt, r2, first, level + 1, trail, seen)
        trail.pop()


def loops(t: Table, path: str) -> None:
    """A loop through a named verdict map (the other loops `check` names itself)."""
    state: dict[str, int] = {}
    for n in t.chains:
        if n not in state:
            _visit(t, path, state, n, [n])


def _visit(t: Table, path: str, state: dict[str, int], n: str, trail: list[str]) -> None:
    state[n] = 1
    for r in t.chains[n].rules:
        for v in rule_targets(t, r):
            m = v.target or ""
            if m not in t.chains:
                continue
            if state.get(m) == 1:
                raise PktemuError(f"{path}: table {t.family} {t.name}: chain loop {' -> '.join(trail + [m])}")
            if m not in state:
                _visit(t, path, state, m, trail + [m])
    state[n] = 2
