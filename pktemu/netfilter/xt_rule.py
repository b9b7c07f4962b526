"""One iptables rule: the `struct ipt_ip` header part, its matches, its target, its counters.

A rule is compiled once into a tuple of small check callables (only the tests it really has), so
the per-packet walk is `all(check(p, state))` with no interpretation of options. Its canonical
`iptables-save` text is built once too, in iptables' print order.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from pktemu.netfilter.xt_base import U32, Match, Pkt, Target, ifname_match, ip_str, mask_str, proto_name

if TYPE_CHECKING:
    from pktemu.netfilter.core import HookState

Check = Callable[[Pkt, "HookState"], bool]

# What a rule does when it matches.
K_NONE, K_ACCEPT, K_DROP, K_RETURN, K_JUMP, K_GOTO, K_EXT = range(7)
STANDARD = {"ACCEPT": K_ACCEPT, "DROP": K_DROP, "RETURN": K_RETURN}


class Rule:
    """An ipt_entry. `where` is "file:line" of its source, for error messages."""

    __slots__ = ("src", "smsk", "inv_src", "dst", "dmsk", "inv_dst", "iniface", "inv_in",
                 "outiface", "inv_out", "proto", "inv_proto", "frag", "inv_frag", "matches",
                 "target", "kind", "jump", "pkts", "bytes", "where", "chain", "num", "checks",
                 "key", "body", "jump_chain", "origin")

    def __init__(self, where: str = "<rules>") -> None:
        self.src = self.smsk = self.dst = self.dmsk = 0
        self.inv_src = self.inv_dst = False
        self.iniface = self.outiface = ""
        self.inv_in = self.inv_out = False
        self.proto = 0
        self.inv_proto = False
        self.frag = False
        self.inv_frag = False
        self.matches: list[Match] = []
        self.target: Target | None = None
        self.kind = K_NONE
        self.jump = ""                 # the -j / -g word as written (chain or standard target)
        self.pkts = self.bytes = 0
        self.where = where
        self.chain = ""
        self.num = 0
        self.checks: tuple[Check, ...] = ()
        self.key: int | None = None
        self.body = ""
        self.jump_chain: Any = None
        #: how a rule loaded mid-run came to be ("replaced at 2.000 s by iptables -R"); "" otherwise
        self.origin = ""

    def copy(self) -> "Rule":
        """The same rule as a new object (its counters can then change independently); the
        extension objects are shared."""
        r = Rule(self.where)
        for name in self.__slots__:
            setattr(r, name, getattr(self, name))
        r.matches = list(self.matches)
        return r

    def finish(self) -> None:
        """Compile the checks, the index key and the save text (after parsing is complete)."""
        self.checks = tuple(self._compile())
        self.key = self.dst if self.dmsk == U32 and not self.inv_dst else None
        self.body = self._text()

    def _compile(self) -> list[Check]:
        out: list[Check] = []
        if self.smsk or self.inv_src:
            a, m, inv = self.src, self.smsk, self.inv_src
            out.append(lambda p, s: ((p.saddr & m) == a) != inv)
        if self.dmsk or self.inv_dst:
            a2, m2, inv2 = self.dst, self.dmsk, self.inv_dst
            out.append(lambda p, s: ((p.daddr & m2) == a2) != inv2)
        if self.iniface and (self.iniface != "+" or self.inv_in):
            name, inv3 = self.iniface, self.inv_in
            out.append(lambda p, s: ifname_match(s.in_dev, name) != inv3)
        if self.outiface and (self.outiface != "+" or self.inv_out):
            name2, inv4 = self.outiface, self.inv_out
            out.append(lambda p, s: ifname_match(s.out_dev, name2) != inv4)
        if self.proto or self.inv_proto:
            pr, inv5 = self.proto, self.inv_proto
            out.append(lambda p, s: (p.proto == pr) != inv5)
        if self.frag:
            inv6 = self.inv_frag
            out.append(lambda p, s: (p.fragoff != 0) != inv6)
        out.extend(m.match for m in self.matches)
        return out

    def _text(self) -> str:
        """The rule as iptables-save prints it after `-A CHAIN` (each part with a leading space)."""
        parts: list[str] = []
        for letter, addr, mask, inv in (("s", self.src, self.smsk, self.inv_src),
                                        ("d", self.dst, self.dmsk, self.inv_dst)):
            if mask or inv or addr:
                parts.append(f"{' !' if inv else ''} -{letter} {ip_str(addr)}/{mask_str(mask)}")
        for letter, name, inv in (("i", self.iniface, self.inv_in), ("o", self.outiface, self.inv_out)):
            if name and (name != "+" or inv):
                parts.append(f"{' !' if inv else ''} -{letter} {name}")
        if self.proto:
            parts.append(f"{' !' if self.inv_proto else ''} -p {proto_name(self.proto)}")
        if self.frag:
            parts.append(f"{' !' if self.inv_frag else ''} -f")
        for m in self.matches:
            parts.append(f" -m {m.ext_name}{m.save()}")
        if self.target is not None:
            parts.append(f" -j {self.target.ext_name}{self.target.save()}")
        elif self.jump:
            parts.append(f" -{'g' if self.kind == K_GOTO else 'j'} {self.jump}")
        return "".join(parts)

    @property
    def text(self) -> str:
        """`-A CHAIN ...` exactly as iptables-save prints it (without counters)."""
        return f"-A {self.chain}{self.body}"

    def __repr__(self) -> str:
        return f"<Rule {self.text} [{self.pkts}:{self.bytes}]>"
