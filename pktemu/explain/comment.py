"""The pcapng comment of a captured frame: what the kernel did to it since its previous capture.

The first line is what Wireshark's packet list shows: `in:` or `out:`, then the notes in the
order the kernel path left them (conntrack, rule verdicts, NAT as old -> new with the rule that
chose it, route, bridge FDB, neighbour state). The lines after it quote what the first line only
names: each rule that fired with its iptables-save text and verdict, and the frame's conntrack
state in nft words, with the whole entry as `conntrack -L` prints it when conntrack or NAT
changed something here (quoting it on every frame would cost more than it tells).
docs/explain.md describes the format.
"""
from __future__ import annotations

from typing import Any

from pktemu.explain.ctinfo import ct_entry, ct_state
from pktemu.netfilter.nftrace import TraceNote
from pktemu.netfilter.rule_note import RuleNote

NAT_TARGETS = frozenset(("DNAT", "SNAT", "MASQUERADE", "REDIRECT"))
_NAT_DONE = ("DNAT ", "SNAT ", "un-DNAT ", "un-SNAT ")
CT_CHANGED = ("ct ",) + _NAT_DONE          # notes after which the comment quotes the whole entry


def rule_label(note: RuleNote) -> str:
    """`nat:PREROUTING KUBE-SEP-X#2`, or `filter:FORWARD policy` for a chain policy."""
    if note.rule is None:
        return f"{note.table}:{note.hook} policy"
    return f"{note.table}:{note.hook} {note.rule.chain}#{note.rule.num}"


def summary(notes: list[str]) -> str:
    """The notes joined by "; ", a NAT rule's note folded into the translation it caused."""
    items: list[str | None] = []
    pending: list[tuple[int, RuleNote]] = []
    for n in notes:
        if n.__class__ is RuleNote and n.rule is not None and n.rule.jump in NAT_TARGETS \
                and n.verdict != "DROP":                                       # type: ignore[attr-defined]
            pending.append((len(items), n))                                   # type: ignore[arg-type]
            items.append(n)
        elif pending and n.startswith(_NAT_DONE):
            i, rule = pending.pop(0)
            items[i] = None
            target = rule.rule.jump                      # type: ignore[union-attr]
            how = "" if n.startswith(target) else f"{target} "
            items.append(f"{n} by {how}{rule_label(rule)}")
        else:
            items.append(n)
    return "; ".join(i for i in items if i is not None)


def plain_comment(direction: str, point: str) -> str:
    """The comment of a frame with no notes: which way it crossed which capture point, so every
    frame of all.pcapng says where it was seen (`out: node1/cbr0 sent`)."""
    return f"{direction}: {point} {'received' if direction == 'in' else 'sent'}"


def frame_comment(direction: str, notes: list[str], frame: Any, now: int) -> str:
    """The comment for `frame` captured in `direction` ("in"/"out") with the notes since the last one.

    Called for every captured frame that has notes: one pass over the notes builds the rule
    lines and finds out whether the summary needs folding and the conntrack entry is worth quoting.
    """
    lines = [""]
    fold = changed = False
    for n in notes:
        if n.__class__ is RuleNote:
            r = n.rule                                                         # type: ignore[attr-defined]
            v = n.verdict                                                      # type: ignore[attr-defined]
            verdict = f" (verdict {v.lower()})" if v else ""
            if r is None:
                lines.append(f"rule {n.table}:{n.hook} policy: -P {n.hook} {v}{verdict}")  # type: ignore
            else:
                origin = f" (rule {r.origin})" if r.origin else ""                  # type: ignore
                lines.append(f"rule {n.table}:{n.hook} {r.chain}#{r.num}: -A {r.chain}{r.body}{verdict}"
                             f"{origin}")                                                  # type: ignore
                fold = fold or r.jump in NAT_TARGETS
        elif n.__class__ is TraceNote:
            lines.extend(n.lines)                                              # type: ignore[attr-defined]
        elif n.startswith(CT_CHANGED):
            changed = True
    lines[0] = f"{direction}: {summary(notes) if fold else '; '.join(notes)}"
    ct = frame.ct
    if ct is not None:
        words = ct_state(ct, frame.ctinfo)
        entry = ct_entry(ct, now) if changed else None
        lines.append(f"{words}: {entry}" if entry else words)
    return lines[0] if len(lines) == 1 else "\n".join(lines)
