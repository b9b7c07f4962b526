"""RuleNote: the frame note a firing rule leaves, which also carries the rule itself."""
from __future__ import annotations

from pktemu.netfilter.xt_rule import Rule


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
