"""nft_do_chain: running a base chain on a frame, and registering base chains at their hooks.

Filter and route chains register at their own hook and priority in the namespace's hook list,
so they interleave with conntrack and the iptables tables as in the kernel (kube-proxy's
filter chains at -110 run after conntrack, -200, and before DNAT, -100). A `type nat` chain does
not: as nf_nat_register_fn does, it joins the NAT core's lookups at the fixed NAT hook points,
ordered by its priority next to the iptables nat table, and runs only for a connection's first
packet until one of them binds. A table with `flags dormant` stays registered (an `nft` action may
wake it) but its chains let every packet pass, as the kernel's unhooked ones do.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator

from pktemu.errors import PktemuError
from pktemu.netfilter.core import NF_ACCEPT, NF_DROP, HookState
from pktemu.netfilter.xt_base import Pkt
from pktemu.nftables.model import Chain, NftRuleset, NftSet, Rule, Table
from pktemu.nftables.notes import NftNote
from pktemu.nftables.trace import packet_line

MAX_JUMP_STACK = 16      # NFT_JUMP_STACK_SIZE


class NftPkt(Pkt):
    """The packet view of a chain's run, with its table's sets (named sets are found by name)."""
    __slots__ = ("sets",)
    sets: dict[str, NftSet]


def run_chain(table: Table, base: Chain, frame: Any, state: HookState) -> int:
    """The verdict of one base chain: rules in order, jump/goto/return, then the policy. It walks each
    chain's rule list and each rule's flat steps as they are: no per-chain program to build when a
    packet first reaches a chain (at 10,000 Services most first packets reach chains no packet has)."""
    if not frame.is_ipv4 or (table.flags and "dormant" in table.flags):
        return NF_ACCEPT        # a dormant table's chains are not hooked: as if it were absent
    p = NftPkt(frame)
    p.sets = table.sets
    extra = state.extra
    ctype = base.type or "filter"
    extra["nft_chain"] = (ctype, table.name, base)
    stack: list[tuple[Chain, Iterator[Rule]]] = []
    chain, it = base, iter(base.rules)
    trace = state.trace
    if trace is not None:
        trace = _Tracer(trace, table, base, frame, state)
    shown = ""
    while True:
        to: Chain | None = None          # the chain a jump or goto in this chain goes to
        for rule in it:
            st = rule.steps
            if trace is not None:
                shown = rule.shown()          # counters as before this packet
            k, n = 0, len(st)
            result: Any = None
            while k < n:
                result = st[k](p, state, st[k + 1])
                if result is not None:
                    break
                k += 2
            if result is False:
                continue
            if result is None:
                if trace is not None:           # a rule that matched without a verdict: nft's `continue`
                    trace.append({"table": table.name, "chain": chain.name, "rulenum": rule.handle,
                                  "rule": shown, "verdict": "CONTINUE", "target": ""})
                continue
            kind = result.kind
            if trace is not None:
                trace.append({"table": table.name, "chain": chain.name,
                              "rulenum": rule.handle, "rule": shown, "verdict": kind.upper(),
                              "target": result.target or ""})
            if kind == "accept":
                return NF_ACCEPT
            if kind == "drop":
                return NF_DROP
            if kind == "continue":
                continue
            if kind == "return":
                break
            if kind == "jump":
                if len(stack) >= MAX_JUMP_STACK:
                    raise PktemuError(f"nft {table.name} {chain.name}: jump stack exhausted")
                stack.append((chain, it))
            if result.epoch == table.epoch:
                to = result.chain
            else:
                to = result.chain = table.chains[result.target]
                result.epoch = table.epoch
            break
        if to is not None:
            chain, it = to, iter(to.rules)
        elif stack:                      # the end of a jumped-to chain, or its `return`
            chain, it = stack.pop()
        else:
            return _policy(table, base, p, state, trace)
        extra["nft_chain"] = (ctype, table.name, chain)


class _Tracer(list):      # type: ignore[type-arg]
    """A traced packet's entries for one base chain: each names its base chain and family, the
    first carries the `packet:` line nft prints for it (the headers as the chain saw them)."""

    def __init__(self, out: list[Any], table: Table, base: Chain, frame: Any, state: HookState) -> None:
        super().__init__()
        self.out, self.base, self.family = out, base.name, table.family
        self.header: str | None = packet_line(frame, state.hook, state.in_dev, state.out_dev)

    def append(self, entry: Any) -> None:
        entry["base"], entry["family"] = self.base, self.family
        if self.header is not None:
            entry["header"], self.header = self.header, None
        self.out.append(entry)


def _policy(table: Table, base: Chain, p: Pkt, state: HookState, trace: Any = None) -> int:
    if trace is not None:
        trace.append({"table": table.name, "chain": base.name, "rulenum": None,
                      "rule": f"policy {base.policy}", "verdict": base.policy.upper(), "target": "",
                      "mark": p.frame.mark})
    if base.policy != "drop":
        return NF_ACCEPT
    text = f"{base.type}:{state.hook} {table.name} {base.name} policy drop"
    n = NftNote(text, "policy drop", f"nft {table.name} {base.name}: policy drop")
    p.frame.notes.append(n)
    state.extra["verdict_rule"] = n
    return NF_DROP


def chain_fn(rs: NftRuleset, table: Table, chain: Chain) -> Callable[[Any, HookState], int]:
    """The hook function of a base chain, found by name on each packet: an `nft` action that
    deletes and re-adds it mid-run (pktemu.actions.nft) keeps it hooked, one that deletes it unhooks it."""
    key, name = (table.family, table.name), chain.name

    def fn(frame: Any, state: HookState) -> int:
        t = rs.tables.get(key)
        c = t.chains.get(name) if t is not None else None
        if t is None or c is None or c.hook is None:
            return NF_ACCEPT
        return run_chain(t, c, frame, state)
    return fn


def attach(nf: Any, rs: NftRuleset) -> None:
    """Register every base chain of `rs` with the namespace's Netfilter (pktemu.netfilter.hooks)."""
    from pktemu.netfilter.hooks import HookEntry
    nf.nft = rs
    for t in rs.tables.values():
        for c in t.chains.values():
            if c.hook is None:
                continue
            fn = chain_fn(rs, t, c)
            if c.type == "nat":
                nf.add_nat_lookup(c.hook, c.priority, fn)
            else:
                nf.register(c.hook, HookEntry(c.priority, f"nft {t.family} {t.name} {c.name}", fn,
                                              f"nft {t.name} {c.name}"))
