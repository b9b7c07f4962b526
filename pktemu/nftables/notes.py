"""The frame notes nftables rules leave, and the accept and drop verdicts the statements return.

A statement that changes the packet or ends it leaves a frame note naming the table, chain and
rule text (`nat:PREROUTING kube-proxy endpoint-X: meta l4proto tcp dnat to 10.0.2.2:8080`), the
way an iptables target leaves a RuleNote, so all.pcapng's comments and drops.txt can quote it.
"""
from __future__ import annotations

from typing import Any

from pktemu.nftables.model import COUNTER_MARK, Rule, Verdict

ACCEPT, DROP = Verdict("accept"), Verdict("drop")


class NftNote(str):
    """A frame note left by an nftables rule: its text, plus what drops.txt says for a drop."""

    drop_reason: str
    rule_text: str

    def __new__(cls, text: str, rule_text: str, drop_reason: str) -> "NftNote":
        note = super().__new__(cls, text)
        note.rule_text, note.drop_reason = rule_text, drop_reason
        return note


def note(p: Any, s: Any, rule: Rule, extra: str = "") -> NftNote:
    """Leave the rule's note on the frame (the chain comes from the traversal's state)."""
    ctype, table, c = s.extra.get("nft_chain", ("filter", "?", rule.chain))
    chain = c if isinstance(c, str) else c.name
    text = rule.text if rule.counter is None else rule.text.replace(COUNTER_MARK, "counter")
    n = NftNote(f"{ctype}:{s.hook} {table} {chain}: {text}{extra}", text,
                f"nft {table} {chain}: {text}{extra}")
    p.frame.notes.append(n)
    return n
