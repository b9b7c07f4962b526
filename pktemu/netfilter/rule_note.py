"""RuleNote: the frame note a firing rule leaves, which also carries the rule itself."""
from __future__ import annotations

from pktemu.netfilter.xt_rule import K_ACCEPT, Rule


class RuleNote(str):
    """A frame note saying a rule (or a chain policy) fired, holding the rule itself.

    It is the note text, so everything that reads notes as strings keeps working; explanations
    use `rule` to quote the rule's iptables-save text even after the ruleset was replaced.
    """

    table: str
    hook: str
    rule: Rule | None
    verdict: str

    def __new__(cls, text: str, table: str, hook: str, rule: Rule | None, verdict: str = "") -> "RuleNote":
        note = super().__new__(cls, text)
        note.table, note.hook, note.rule, note.verdict = table, hook, rule, verdict
        return note

    def __getnewargs__(self) -> tuple[str, str, str, Rule | None, str]:      # type: ignore[override]
        return str(self), self.table, self.hook, self.rule, self.verdict

    @property
    def rule_text(self) -> str:
        """The rule as iptables-save prints it, or `-P CHAIN POLICY` for a policy verdict."""
        if self.rule is None:
            return f"-P {self.hook} {self.verdict}"
        return self.rule.text


#: (rule, hook, its chain and number) -> the note its ACCEPT or DROP leaves: the same note on every
#: packet it takes, made once (its chain's name and its number are in the text, and `iptables -E`
#: or an insert before it changes them)
_VERDICT_NOTES: dict[tuple[Rule, str, str, int], RuleNote] = {}
_VERDICT_NOTES_KEPT = 1 << 16


def verdict_note(table: str, hook: str, rule: Rule) -> RuleNote:
    """The note of `rule` (an ACCEPT or DROP rule of `table`) deciding at `hook`."""
    key = (rule, hook, rule.chain, rule.num)
    note = _VERDICT_NOTES.get(key)
    if note is None or note.table != table:
        word = "ACCEPT" if rule.kind == K_ACCEPT else "DROP"
        note = RuleNote(f"{table}:{hook} {rule.chain}#{rule.num} {word}", table, hook, rule, word)
        if len(_VERDICT_NOTES) >= _VERDICT_NOTES_KEPT:
            _VERDICT_NOTES.clear()
        _VERDICT_NOTES[key] = note
    return note
