"""The netfilter hook runner of one namespace: tables, conntrack and NAT in kernel priority order.

Per hook, the functions the kernel registers for IPv4 run in priority order:

    PREROUTING   raw(-300) conntrack-in(-200) mangle(-150) nat-dst(-100)
    INPUT        mangle(-150) filter(0) nat-src(100) confirm(INT_MAX)
    FORWARD      mangle(-150) filter(0)
    OUTPUT       raw(-300) conntrack-in(-200) mangle(-150) nat-dst(-100) filter(0)
    POSTROUTING  mangle(-150) nat-src(100) confirm(INT_MAX)

A table that is not loaded has no hook; NAT runs only when a nat table exists, as nf_nat hooks
are registered by iptable_nat. Conntrack is active only while a ruleset is loaded (the gateway in
the reference has none and tracks nothing). The first verdict other than ACCEPT ends the walk; a
DROP takes the packet's unconfirmed conntrack entry with it.
"""
from __future__ import annotations

from typing import Any

from pktemu.errors import PktemuError
from pktemu.net.frame import IPPROTO_ICMP, Frame
from pktemu.netfilter.conntrack import Conn, ConntrackTable
from pktemu.netfilter.core import (
    FORWARD, INPUT, IP_CT_NEW, IP_CT_RELATED, IP_CT_RELATED_REPLY, IPS_CONFIRMED, MANIP_SRC, NF_ACCEPT,
    NF_DROP, OUTPUT, POSTROUTING, PREROUTING, HookState, NatRange, NodeView,
)
from pktemu.netfilter.nat import HOOK2MANIP, Nat, nat_initialized

_TABLE, _CT_IN, _NAT, _CONFIRM = range(4)
_PLAN: dict[str, tuple[tuple[int, str], ...]] = {
    PREROUTING: ((_TABLE, "raw"), (_CT_IN, ""), (_TABLE, "mangle"), (_NAT, "nat")),
    INPUT: ((_TABLE, "mangle"), (_TABLE, "filter"), (_NAT, "nat"), (_CONFIRM, "")),
    FORWARD: ((_TABLE, "mangle"), (_TABLE, "filter")),
    OUTPUT: ((_TABLE, "raw"), (_CT_IN, ""), (_TABLE, "mangle"), (_NAT, "nat"), (_TABLE, "filter")),
    POSTROUTING: ((_TABLE, "mangle"), (_NAT, "nat"), (_CONFIRM, "")),
}
_LOOPBACK = 0x7F000001


class Netfilter:
    """Netfilter of one namespace: the loaded ruleset, the conntrack table and NAT."""

    def __init__(self, node: NodeView, ruleset: Any | None) -> None:
        self.node = node
        self.ruleset = ruleset
        self.conntrack = ConntrackTable(node)
        self.nat = Nat(self.conntrack, node)

    def hook(self, hook: str, frame: Frame, in_dev: str | None, out_dev: str | None,
             physin: str | None = None, physout: str | None = None,
             trace: list[Any] | None = None) -> int:
        """NF_HOOK(): run every hook function of `hook` on the frame; returns the verdict."""
        rs = self.ruleset
        if rs is None or not frame.is_ipv4:
            return NF_ACCEPT
        plan = _PLAN.get(hook)
        if plan is None:
            raise PktemuError(f"{self.node.name}: unknown netfilter hook {hook!r}")
        state = HookState(hook, in_dev, out_dev, self.node, self, physin, physout, trace)
        verdict: int
        for kind, table in plan:
            if kind == _TABLE:
                if not rs.has_table(table):
                    continue
                verdict = rs.traverse(table, frame, state)
            elif kind == _CT_IN:
                ct = frame.ct
                if ct.__class__ is Conn and ct.owner is not self.conntrack:
                    frame.ct = frame.ctinfo = None
                if frame.ct is None:
                    self.conntrack.conntrack_in(frame, hook)
                continue
            elif kind == _NAT:
                if not rs.has_table(table):
                    continue
                verdict = self._nat_hook(rs, frame, state)
            else:
                verdict = self.conntrack.confirm(frame)
            if verdict != NF_ACCEPT:
                if verdict == NF_DROP:
                    self._dropped(frame, state, table or ("conntrack" if kind == _CONFIRM else ""))
                    ct = frame.ct
                    if ct.__class__ is Conn and not ct.status & IPS_CONFIRMED:
                        frame.ct = frame.ctinfo = None
                return verdict
        return NF_ACCEPT

    def _dropped(self, frame: Frame, state: HookState, where: str) -> None:
        """NF_DROP is a kfree_skb too: tell the node which hook, rule and reason, for drops.txt."""
        drop = getattr(self.node, "drop", None)
        if drop is None:
            return
        note = state.extra.get("verdict_rule")
        if note is not None:
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
                verdict: int = rs.traverse("nat", frame, state)
                if verdict != NF_ACCEPT:
                    return verdict
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
