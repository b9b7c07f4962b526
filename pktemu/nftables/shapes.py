"""The print text of a fast-loaded rule, made from its steps when asked for instead of kept.

At 10,000 Services a ruleset has 120,000 rules, and their texts were the biggest thing a load kept
(some 120 bytes a rule). A rule the fast loader (nft_lines) reads keeps instead its *shape*: one
tuple shared by every rule of that form in the load: a `%` template of the constant words (the
port, protocol and prefix matches, `dnat to `, a NAT target's port), then one `(i, fmt, extra)`
per `%s` in it, filled with `fmt(steps[i], extra)` from the argument of one of the rule's steps
(the address it compares with, its verdict, its NAT address, its numgen map). The fast loader
takes only words these print back exactly (canonical addresses and numbers), so the text is the
one the general parser keeps.
"""
from __future__ import annotations

from typing import Any

from pktemu.nftables.model import Verdict

_DOT = tuple(f"{i}." for i in range(256))
_OCTET = tuple(str(i) for i in range(256))


def dotted(v: int) -> str:
    """An IPv4 address as inet_ntoa prints it, without inet_ntoa's bytes object and snprintf."""
    return _DOT[v >> 24] + _DOT[v >> 16 & 255] + _DOT[v >> 8 & 255] + _OCTET[v & 255]


def addr(arg: Any, extra: None) -> str:
    """`ip saddr A`'s A: the step's address (a direct read's argument, or a comparison's second item)."""
    return dotted(arg if arg.__class__ is int else arg[1])


def verdict(arg: Any, extra: None) -> str:
    """A jump/goto/continue/return step's Verdict, or an accept/drop step's (rule, Verdict)."""
    return (arg if isinstance(arg, Verdict) else arg[1]).text()


def nat_port(lo: int | None, hi: int | None) -> str:
    """A NAT target's port part as the fast loader takes it written (`:P`, `:P-Q` with P < Q)."""
    if lo is None:
        return ""
    return f":{lo}" if lo == hi else f":{lo}-{hi}"


def nat(arg: Any, extra: None) -> str:
    """`dnat to A:P`'s A: the step's (address, rule, how)."""
    return dotted(arg[0])


def numgen_vmap(arg: Any, mod: int) -> str:
    """`numgen random mod N vmap { 0 : V0, ... }`: the step's (reader, V0, V1, ...)."""
    shown = ", ".join([f"{i} : {v.text()}" for i, v in enumerate(arg[1:])])
    return f"numgen random mod {mod} vmap {{ {shown} }}"
