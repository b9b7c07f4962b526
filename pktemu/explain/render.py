"""A recorded trace as a rich tree (nft trace lines where they fit) or as JSON data.

The tree has one branch per packet (request, reply), one sub-branch per node it crossed in
order, and under it the device captures, the routing/bridge/neighbour decisions, and every
netfilter hook with the lines `nft monitor trace` would print for it:
`trace id 3695828d ip nat KUBE-SERVICES rule -A KUBE-SERVICES ... (verdict jump KUBE-SVC-...)`,
then the conntrack state (`ct state new ct direction original ct status dnat`) and any address
translation as old -> new. The last line of a packet says where it ended: delivered or dropped.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.text import Text
from rich.tree import Tree

from pktemu.explain.comment import CT_CHANGED as _CT_CHANGED
from pktemu.explain.model import Event, RuleStep, TracedPacket
from pktemu.netfilter.rule_note import RuleNote


@dataclass
class TraceReport:
    """What `pktemu trace` asked and what came back."""
    origin: str
    target: str                      # "10.3.241.152:80/tcp"
    topology: str
    scenario: str | None
    wait_ns: int
    request: TracedPacket | None
    reply: TracedPacket | None

    def to_json(self) -> dict[str, Any]:
        return {"from": self.origin, "to": self.target, "topology": self.topology, "scenario": self.scenario,
                "summary": {"request": outcome(self.request), "reply": outcome(self.reply)},
                "packets": [p.to_json() for p in (self.request, self.reply) if p is not None]}


def outcome(tp: TracedPacket | None) -> str:
    """One line: where the packet ended."""
    if tp is None:
        return "not seen"
    r = tp.result
    if r is None:
        return "no delivery and no drop seen"
    if r.type == "deliver":
        return f"delivered to {r.node} ({r.where} {r.packet.flow if r.packet else ''})".rstrip()
    return f"dropped at {r.node} ({r.where}): {r.reason}"


def verdict_words(step: RuleStep) -> str:
    """nft's `(verdict ...)` text for one rule step."""
    v = step.verdict.lower()
    if v in ("jump", "goto"):
        return f"{v} {step.target}"
    return v


def nft_lines(tp: TracedPacket, ev: Event, ct_changed: bool = True) -> list[str]:
    """The `nft monitor trace` lines of one hook event (the ct line only when it says something new).

    A native nftables base chain prints as nft 1.0.6 does (checked against the kernel): its
    `packet:` line (with nft's trailing space), a `rule` line for every rule that matched, with
    `(verdict continue)` when it has no verdict, and `policy accept ` (with the mark when set)
    when the chain ends. iptables tables keep one `ip HOOK packet:` line per hook and their rules in
    iptables-save text (the kernel prints iptables-nft rules translated to nft syntax)."""
    tid = f"trace id {tp.trace_id}"
    devs = "".join(f' {k} "{v}"' for k, v in (("iif", ev.iif), ("oif", ev.oif), ("physin", ev.physin),
                                               ("physout", ev.physout)) if v)
    packet = f"{tid} ip {ev.hook} packet:{devs} {ev.packet.nft() if ev.packet else ''}".rstrip()
    lines: list[str] = [] if ev.rules and ev.rules[0].nft is not None else [packet]
    for r in ev.rules:
        if r.nft is not None:
            lines += _nft_step(tid, r)
            continue
        if packet not in lines:          # the first iptables step after native nftables chains
            lines.append(packet)
        if r.table == "python":
            lines.append(f"{tid} python hook {r.rule} (prio {r.priority}): {r.verdict.lower()}")
        elif r.table == "nfqueue":
            lines.append(f"{tid} nfqueue {r.rule}: {r.verdict.lower()}")
        elif r.rulenum is None:
            lines.append(f"{tid} ip {r.table} {r.chain} policy {r.verdict.lower()}")
        else:
            lines.append(f"{tid} ip {r.table} {r.chain} rule {r.rule} (verdict {verdict_words(r)})")
    if ev.ct and ct_changed:
        lines.append(f"{tid} {ev.ct}")
    return lines


def _nft_step(tid: str, r: RuleStep) -> list[str]:
    nft = r.nft or {}
    head = f"{tid} {nft.get('family', 'ip')} {r.table}"
    out = []
    if nft.get("header") is not None:
        out.append(f"{head} {nft.get('base', r.chain)} packet: {nft['header']}")
    if r.rulenum is None:
        mark = nft.get("mark") or 0
        shown = f"meta mark 0x{mark:08x} " if mark else ""
        out.append(f"{head} {r.chain} policy {r.verdict.lower()} {shown}")
    else:
        out.append(f"{head} {r.chain} rule {r.rule} (verdict {verdict_words(r)})")
    return out


def _label(text: str, style: str = "") -> Text:
    return Text(text, style=style)


def _hook_branch(parent: Tree, tp: TracedPacket, ev: Event, last_ct: str | None) -> None:
    style = "bold red" if ev.verdict == "drop" else "bold"
    b = parent.add(_label(f"{ev.hook}  verdict {ev.verdict}", style))
    for line in nft_lines(tp, ev, ev.ct != last_ct):
        b.add(_label(line))
    notes = [n for n in ev.notes if n.__class__ is not RuleNote]
    if ev.ct_entry and any(n.startswith(_CT_CHANGED) for n in notes):
        b.add(_label(f"conntrack -L: {ev.ct_entry}", "dim"))
    for n in notes:
        b.add(_label(n, "cyan"))


def _event(parent: Tree, tp: TracedPacket, ev: Event, t0: int, last_ct: str | None) -> None:
    stamp = f"+{(ev.t - t0) / 1e9:.6f}s"
    if ev.type == "hook":
        _hook_branch(parent, tp, ev, last_ct)
        return
    if ev.type == "device":
        b = parent.add(_label(f"{stamp} {ev.direction} {ev.dev}: {ev.packet.short() if ev.packet else ''}"))
    elif ev.type == "path":
        b = parent
    elif ev.type == "drop":
        b = parent.add(_label(f"{stamp} dropped ({ev.where}): {ev.reason}", "bold red"))
    else:
        b = parent.add(_label(f"{stamp} delivered to the {ev.where} stack of {ev.node}", "bold green"))
    for n in ev.notes:
        b.add(_label(n, "cyan"))


def packet_tree(tp: TracedPacket, t0: int) -> Tree:
    first = next((e.packet for e in tp.events if e.packet is not None), None)
    title = f"{tp.role}  trace id {tp.trace_id}  {first.short() if first else ''}".rstrip()
    tree = Tree(_label(title, "bold"))
    node_branch: Tree | None = None
    node_name = last_ct = None
    for ev in tp.events:
        if ev.node != node_name or node_branch is None:
            node_name, last_ct = ev.node, None
            node_branch = tree.add(_label(ev.node, "bold magenta"))
        _event(node_branch, tp, ev, t0, last_ct)
        if ev.type == "hook":
            last_ct = ev.ct
    tree.add(_label(f"result: {outcome(tp)}", "bold green" if tp.result and tp.result.type == "deliver"
                    else "bold red"))
    return tree


def report_tree(rep: TraceReport) -> Tree:
    scen = f", scenario {rep.scenario}" if rep.scenario else ""
    root = Tree(_label(f"pktemu trace {rep.origin} -> {rep.target}  ({rep.topology}{scen})", "bold"))
    t0 = rep.request.events[0].t if rep.request and rep.request.events else 0
    for tp, role in ((rep.request, "request"), (rep.reply, "reply")):
        if tp is None:
            root.add(_label(f"{role}: none within {rep.wait_ns / 1e9:g} s", "bold red"))
        else:
            root.add(packet_tree(tp, t0))
    return root
