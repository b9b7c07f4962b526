"""The netfilter hook runner of one namespace: a priority-ordered list of hook functions per hook.

As the kernel's `nf_hook_entries`, each hook holds a sorted list of registered functions; the
iptables tables, conntrack and NAT register what the kernel registers for IPv4:

    PREROUTING   defrag(-400) raw(-300) conntrack-in(-200) mangle(-150) nat-dst(-100)
    INPUT        mangle(-150) filter(0) nat-src(100) confirm(INT_MAX)
    FORWARD      mangle(-150) filter(0)
    OUTPUT       defrag(-400) raw(-300) conntrack-in(-200) mangle(-150) nat-dst(-100) filter(0)
    POSTROUTING  mangle(-150) nat-src(100) confirm(INT_MAX)

A table that is not loaded lets the packet through; NAT runs only when a nat table exists, as
nf_nat hooks are registered by iptable_nat. Conntrack is active only while a ruleset is loaded
(the gateway in the reference has none and tracks nothing). Other functions (Python hooks,
later nftables base chains) `register` into the same lists; at equal priority the one
registered first runs first, as in nf_hook_entries_grow. The first verdict other than ACCEPT
ends the walk; a DROP takes the packet's unconfirmed conntrack entry with it.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

from pktemu.errors import PktemuError
from pktemu.net.frame import ETH_HLEN, IPPROTO_ICMP, Frame
from pktemu.netfilter.conntrack import Conn, ConntrackTable
from pktemu.netfilter.core import (
    FORWARD, HOOKS, INPUT, IP_CT_NEW, IP_CT_RELATED, IP_CT_RELATED_REPLY, IPS_CONFIRMED, MANIP_SRC,
    NF_ACCEPT, NF_DROP, NF_STOLEN, OUTPUT, POSTROUTING, PREROUTING, HookState, NatRange, NodeView,
)
from pktemu.netfilter.defrag import NF_IP_PRI_CONNTRACK_DEFRAG, Defrag
from pktemu.netfilter.nat import HOOK2MANIP, Nat, nat_initialized

INT_MAX = 2**31 - 1
NF_IP_PRI_RAW, NF_IP_PRI_CONNTRACK, NF_IP_PRI_MANGLE = -300, -200, -150
NF_IP_PRI_NAT_DST, NF_IP_PRI_FILTER, NF_IP_PRI_NAT_SRC = -100, 0, 100
NF_IP_PRI_CONNTRACK_CONFIRM = INT_MAX

#: A hook function: the verdict for the frame at `state.hook` (NF_ACCEPT goes on to the next one).
HookFn = Callable[[Frame, HookState], int]


class HookEntry(NamedTuple):
    """One registered hook function. `where` names it in a drop reason (`filter verdict DROP`);
    `reason`, when set, is the whole drop reason (a Python hook's own name and place)."""
    priority: int
    name: str
    fn: HookFn
    where: str = ""
    reason: str | None = None


_TABLES: dict[str, tuple[tuple[str, int], ...]] = {
    PREROUTING: (("defrag", NF_IP_PRI_CONNTRACK_DEFRAG), ("raw", NF_IP_PRI_RAW),
                 ("conntrack-in", NF_IP_PRI_CONNTRACK), ("mangle", NF_IP_PRI_MANGLE),
                 ("nat", NF_IP_PRI_NAT_DST)),
    INPUT: (("mangle", NF_IP_PRI_MANGLE), ("filter", NF_IP_PRI_FILTER), ("nat", NF_IP_PRI_NAT_SRC),
            ("confirm", NF_IP_PRI_CONNTRACK_CONFIRM)),
    FORWARD: (("mangle", NF_IP_PRI_MANGLE), ("filter", NF_IP_PRI_FILTER)),
    OUTPUT: (("defrag", NF_IP_PRI_CONNTRACK_DEFRAG), ("raw", NF_IP_PRI_RAW),
             ("conntrack-in", NF_IP_PRI_CONNTRACK), ("mangle", NF_IP_PRI_MANGLE), ("nat", NF_IP_PRI_NAT_DST),
             ("filter", NF_IP_PRI_FILTER)),
    POSTROUTING: (("mangle", NF_IP_PRI_MANGLE), ("nat", NF_IP_PRI_NAT_SRC),
                  ("confirm", NF_IP_PRI_CONNTRACK_CONFIRM)),
}
_LOOPBACK = 0x7F000001


class Netfilter:
    """Netfilter of one namespace: the loaded ruleset, the conntrack table and NAT."""

    active = True           # its hooks are called (pktemu.net.node.NoNetfilter's are not)

    def __init__(self, node: NodeView, ruleset: Any | None) -> None:
        self.node = node
        self.ruleset = ruleset
        self.conntrack = ConntrackTable(node)
        self.nat = Nat(self.conntrack, node)
        #: NFQUEUE handlers by queue number (`-j NFQUEUE`; pktemu.netfilter.nfqueue)
        self.queues: dict[int, Callable[[Frame, HookState], int]] = {}
        #: nftables tables of this namespace (pktemu.nftables), and their `type nat` chains: the
        #: NAT core's lookups besides the iptables nat table, by hook, as (priority, function)
        self.nft: Any = None
        self.nat_chains: dict[str, list[tuple[int, HookFn]]] = {}
        self._defrags: dict[str, Defrag] = {}
        self._hooks: dict[str, list[HookEntry]] = {h: [] for h in HOOKS}
        self._run: dict[str, tuple[tuple[HookFn, HookEntry], ...]] = {}
        self._compile()
        if ruleset is not None:
            self.ruleset = None
            self.attach_ruleset(ruleset)

    def attach_ruleset(self, ruleset: Any) -> None:
        """Register the tables, conntrack and NAT at their hooks: a namespace whose first rule
        arrives mid-run (a timeline's `iptables`) starts tracking connections from then on."""
        if self.ruleset is not None:
            return
        self.ruleset = ruleset
        for hook, plan in _TABLES.items():
            for name, prio in plan:
                self._insert(hook, HookEntry(prio, name, self._builtin(name),
                                             "conntrack" if name == "confirm" else name))
        self._compile()

    def _builtin(self, name: str) -> HookFn:
        if name == "conntrack-in":
            return self._ct_in
        if name == "confirm":
            return self._confirm
        if name == "nat":
            return self._nat
        if name == "defrag":
            return self._defrag
        def table(frame: Frame, state: HookState, table: str = name) -> int:
            rs: Any = self.ruleset
            if not rs.has_table(table):
                return NF_ACCEPT
            verdict: int = rs.traverse(table, frame, state)
            return verdict
        return table

    # ------------------------------------------------------------------ registration
    def register(self, hook: str, entry: HookEntry) -> HookEntry:
        """nf_register_net_hook: insert after every entry of lower or equal priority."""
        self._insert(hook, entry)
        self._compile()
        return entry

    def _insert(self, hook: str, entry: HookEntry) -> None:
        entries = self._hooks.get(hook)
        if entries is None:
            raise PktemuError(f"{self.node.name}: unknown netfilter hook {hook!r} "
                              f"(one of {', '.join(HOOKS)})")
        at = len(entries)
        while at and entries[at - 1].priority > entry.priority:
            at -= 1
        entries.insert(at, entry)

    def unregister(self, hook: str, entry: HookEntry) -> None:
        """nf_unregister_net_hook."""
        self._hooks[hook].remove(entry)
        self._compile()

    def entries(self, hook: str) -> list[HookEntry]:
        """The hook's functions in the order they run."""
        return list(self._hooks[hook])

    def _compile(self) -> None:
        self._run = {h: tuple((e.fn, e) for e in es) for h, es in self._hooks.items() if es}

    # ------------------------------------------------------------------ the hot path
    def hook(self, hook: str, frame: Frame, in_dev: str | None, out_dev: str | None,
             physin: str | None = None, physout: str | None = None,
             trace: list[Any] | None = None) -> int:
        """NF_HOOK(): run every hook function of `hook` on the frame; returns the verdict."""
        entries = self._run.get(hook)
        if entries is None:
            if hook not in self._hooks and self.ruleset is not None:
                raise PktemuError(f"{self.node.name}: unknown netfilter hook {hook!r}")
            return NF_ACCEPT
        if not frame.is_ipv4:
            return NF_ACCEPT
        state = HookState(hook, in_dev, out_dev, self.node, self, physin, physout, trace)
        for fn, entry in entries:
            verdict = fn(frame, state)
            if verdict != NF_ACCEPT:
                if verdict == NF_DROP:
                    self._dropped(frame, state, entry)
                    ct = frame.ct
                    if ct.__class__ is Conn and not ct.status & IPS_CONFIRMED:
                        frame.ct = frame.ctinfo = None
                return verdict
        return NF_ACCEPT

    def _defrag(self, frame: Frame, state: HookState) -> int:
        """nf_defrag_ipv4's hook: the queues are made at the first fragment (pktemu.netfilter.defrag)."""
        if not frame.data[ETH_HLEN + 6] & 0x3F and not frame.data[ETH_HLEN + 7]:
            return NF_ACCEPT
        queues = self._defrags.get(state.hook)
        if queues is None:
            user = "in" if state.hook == PREROUTING else "out"
            queues = self._defrags[state.hook] = Defrag(self.node, user)
        return queues.hook(frame, state)

    def _ct_in(self, frame: Frame, state: HookState) -> int:
        ct = frame.ct
        if ct.__class__ is Conn and ct.owner is not self.conntrack:
            frame.ct = frame.ctinfo = None
        if frame.ct is None:
            self.conntrack.conntrack_in(frame, state.hook)
        return NF_ACCEPT

    def _confirm(self, frame: Frame, state: HookState) -> int:
        verdict: int = self.conntrack.confirm(frame)
        return verdict

    def add_nat_lookup(self, hook: str, priority: int, fn: HookFn) -> None:
        """nf_nat_register_fn: a `type nat` chain joins the NAT core's lookups at `hook`."""
        lookups = self.nat_chains.setdefault(hook, [])
        at = len(lookups)
        while at and lookups[at - 1][0] > priority:
            at -= 1
        lookups.insert(at, (priority, fn))

    def _nat_lookups(self, rs: Any, hook: str) -> list[HookFn]:
        """The nat lookups of `hook` by priority: the iptables nat table and nftables nat chains."""
        out = list(self.nat_chains.get(hook, ()))
        if rs.has_table("nat"):
            prio = NF_IP_PRI_NAT_SRC if HOOK2MANIP[hook] == MANIP_SRC else NF_IP_PRI_NAT_DST
            def ipt(frame: Frame, state: HookState) -> int:
                verdict: int = rs.traverse("nat", frame, state)
                return verdict
            at = len(out)
            while at and out[at - 1][0] > prio:
                at -= 1
            out.insert(at, (prio, ipt))
        return [fn for _, fn in out]

    def _nat(self, frame: Frame, state: HookState) -> int:
        rs: Any = self.ruleset
        if not rs.has_table("nat") and not self.nat_chains:
            return NF_ACCEPT        # nf_nat_register_fn: a first nat chain hooks NAT at all four
        if state.hook != OUTPUT:
            return self._nat_hook(rs, frame, state)
        daddr = frame.daddr
        verdict = self._nat_hook(rs, frame, state)
        if verdict == NF_ACCEPT and frame.daddr != daddr:
            return self._route_me_harder(frame)
        return verdict

    def _route_me_harder(self, frame: Frame) -> int:
        """nf_nat_ipv4_local_fn: a DNATed local packet is routed again inside the nat hook, so a
        refused route (a 127/8 source out of eth0) frees it before the filter table sees it."""
        reroute = getattr(self.node, "reroute_martian", None)
        why = reroute(frame.saddr, frame.daddr) if reroute is not None else None
        if why is None:
            return NF_ACCEPT
        drop = getattr(self.node, "drop", None)
        if drop is not None:
            drop(frame, f"netfilter {OUTPUT}", f"nat: ip_route_me_harder: {why}")
        ct = frame.ct
        if ct.__class__ is Conn and not ct.status & IPS_CONFIRMED:
            frame.ct = frame.ctinfo = None
        return NF_STOLEN

    def _dropped(self, frame: Frame, state: HookState, entry: HookEntry) -> None:
        """NF_DROP is a kfree_skb too: tell the node which hook, rule and reason, for drops.txt."""
        drop = getattr(self.node, "drop", None)
        if drop is None:
            return
        note = state.extra.get("verdict_rule")
        where = entry.where
        if entry.reason is not None:
            reason = entry.reason
        elif note is not None and getattr(note, "drop_reason", None) is not None:
            reason = str(note.drop_reason)              # an nftables rule (pktemu.nftables)
        elif note is not None:
            table, _, rest = str(note).partition(":")
            reason = f"{table} {rest.partition(' ')[2]}: {note.rule_text}"
        elif frame.notes:
            reason = f"{where} verdict DROP ({frame.notes[-1]})"
        else:
            reason = f"{where} verdict DROP"
        drop(frame, f"netfilter {state.hook}", reason)

    def _nat_hook(self, rs: Any, frame: Frame, state: HookState) -> int:
        """nf_nat_ipv4_fn + nf_nat_inet_fn: bind on the first packet, then translate."""
        ct = frame.ct
        if ct.__class__ is not Conn:
            return NF_ACCEPT
        ctinfo = frame.ctinfo
        hook = state.hook
        if ctinfo in (IP_CT_RELATED, IP_CT_RELATED_REPLY) and frame.proto == IPPROTO_ICMP:
            return NF_ACCEPT if self.nat.icmp_reply_translation(frame, ct, ctinfo, hook) else NF_DROP
        if ctinfo in (IP_CT_NEW, IP_CT_RELATED, IP_CT_RELATED_REPLY):
            manip = HOOK2MANIP[hook]
            if not nat_initialized(ct, manip):
                for lookup in self._nat_lookups(rs, hook):
                    verdict: int = lookup(frame, state)
                    if verdict != NF_ACCEPT:
                        return verdict
                    if nat_initialized(ct, manip):
                        break
                if not nat_initialized(ct, manip):
                    verdict = self.nat.alloc_null_binding(ct, manip)
                    if verdict != NF_ACCEPT:
                        return verdict
        return self.nat.packet(ct, ctinfo, hook, frame)

    # ------------------------------------------------------------------ called by NAT targets
    def nat_setup(self, frame: Frame, manip: int, rng: NatRange, state: HookState) -> int:
        """The NAT targets' entry point (xt_nat / MASQUERADE / REDIRECT -> nf_nat_setup_info)."""
        ct = frame.ct
        if ct.__class__ is not Conn:
            return NF_ACCEPT
        if HOOK2MANIP.get(state.hook) != manip:
            kind = "SNAT/MASQUERADE" if manip == MANIP_SRC else "DNAT/REDIRECT"
            raise PktemuError(f"{self.node.name}: {kind} used in {state.hook}, where the kernel "
                              f"only does {'destination' if manip == MANIP_SRC else 'source'} NAT")
        return self.nat.setup_info(ct, rng, manip)

    def redirect_address(self, frame: Frame, state: HookState) -> int | None:
        """nf_nat_redirect_ipv4: 127.0.0.1 for local output, else the in-device's first address."""
        if state.hook == OUTPUT:
            return _LOOPBACK
        if state.in_dev is None:
            return None
        primary = getattr(self.node, "primary_addr", None)
        if primary is not None:
            addr: int | None = primary(state.in_dev)
            return addr
        dev = getattr(self.node, "devices", {}).get(state.in_dev)
        addrs = getattr(dev, "addresses", None)
        return addrs[0].addr if addrs else None

    def conntrack_dump(self) -> str:
        """`conntrack -L` of this namespace."""
        return self.conntrack.dump()
