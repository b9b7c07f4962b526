"""A fast path for the few rule shapes kube-proxy writes, ahead of the general parser (xt_parse).

A 10,000-Service ruleset is 170k lines of about a dozen shapes (`-A C [! -s A] [-d A] [-p tcp]
[-m comment --comment "T"] [-m tcp [--dport N]] [-m statistic ...] -j J [--to-destination D]`,
in iptables-save's order or in kube-proxy's). One compiled regex per order reads such a line's
fields, and the rule is built directly, the extensions through their own `option` and
`final_check` (so values are read and checked as the general parser does) and kept per input by
their settings, since nearly all of them repeat. A line that does not fit a shape, or whose
values the extensions refuse, returns None: the general parser then parses it, and reports the
error exactly as it always did. tests/test_xt_fast.py holds every line of the kube-proxy rulesets
and of the repository's rules files to this: the same rule text, fields and extensions.
"""
from __future__ import annotations

import re
import sys
from typing import Any

from typing import TypeVar, cast

from pktemu.errors import PktemuError
import pktemu.netfilter.matches  # noqa: F401  (registers the matches)
import pktemu.netfilter.targets  # noqa: F401  (registers the targets)
from pktemu.netfilter.xt_base import MATCHES, TARGETS, U32, Extension, ParseCtx, Target
from pktemu.netfilter.xt_rule import K_EXT, K_JUMP, STANDARD, Rule

# No blank, quote, backslash or `!`, and no leading `-`: a word the general tokenizer leaves as is.
_NAME = r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,127}"
_ADDR = r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}(?:/[0-9]{1,2})?"
_TEXT = r"[^\"'\\\r\n]{0,255}"
_PROTO = r"tcp|udp"
_STAT = r"(?: -m statistic --mode random --probability (?P<prob>[0-9.]{1,20}))?"
_JUMP = r" -j (?P<jump>" + _NAME + r")(?: --to-destination (?P<dnat>[0-9.:-]{1,40}))?"
_COMMENT = r'(?: -m comment --comment "(?P<comment>' + _TEXT + r')")?'
_SRC = r"(?: (?P<sinv>! )?-s (?P<src>" + _ADDR + r"))?"

#: kube-proxy's order, then iptables-save's (the oracle's and a saved ruleset's)
_SHAPES = (
    re.compile(r"-A (?P<chain>" + _NAME + r")" + _COMMENT
               + r"(?: -m (?P<mp>" + _PROTO + r") -p (?P<p>" + _PROTO + r"))?"
               r"(?: -d (?P<dst>" + _ADDR + r"))?(?: --dport (?P<dport>[0-9]{1,5}))?"
               + _SRC + _STAT + _JUMP),
    re.compile(r"-A (?P<chain>" + _NAME + r")" + _SRC + r"(?: -d (?P<dst>" + _ADDR + r"))?"
               r"(?: -p (?P<p>" + _PROTO + r"))?" + _COMMENT
               + r"(?: -m (?P<mp>" + _PROTO + r")(?: --dport (?P<dport>[0-9]{1,5}))?)?" + _STAT + _JUMP),
)
_first = 0                      # the shape that matched last
_PROTOS = {"tcp": 6, "udp": 17}
_MASKS = tuple((U32 << (32 - n)) & U32 for n in range(33))     # one int object per prefix length
_MAX_LINE = 1023            # longer lines may hold an argument iptables-restore refuses: not ours


#: one `seen` set per distinct set of options: extensions are done with theirs once parsed, and
#: 170k rules would otherwise hold 180k small sets
_SEEN: dict[frozenset[str], set[str]] = {}
_E = TypeVar("_E", bound=Extension)


def shared_ext(ext: _E, ctx: ParseCtx) -> _E:
    """The object of an equal extension parsed before in this input, if any: an extension without
    state of its own is its settings, and 170k kube-proxy rules have a few dozen distinct `-m tcp`,
    `statistic` or MARK settings. Equal means every attribute equal (a `seen` set by content)."""
    ext.seen = _SEEN.setdefault(frozenset(ext.seen), ext.seen)
    pool = ctx.shared
    if pool is None or ext.stateful:
        return ext
    try:
        key = (type(ext), *[(k, id(v) if v.__class__ is set else v) for k, v in vars(ext).items()])
        return cast(_E, pool.setdefault(key, ext))
    except TypeError:                   # a list or dict setting: kept as it is
        return ext


def _cidr(text: str) -> tuple[int, int] | None:
    """`a.b.c.d[/n]` in plain decimal (no leading zeros, which mean octal to iptables) -> (address &
    mask, mask); None for anything else."""
    addr, _, plen = text.partition("/")
    v = 0
    for part in addr.split("."):
        if len(part) > 1 and part[0] == "0":
            return None
        b = int(part)
        if b > 255:
            return None
        v = (v << 8) | b
    if not plen:
        return v, U32
    if (len(plen) > 1 and plen[0] == "0") or int(plen) > 32:
        return None
    mask = _MASKS[int(plen)]
    return v & mask, mask


def _ext(reg: dict[str, Any], name: str, opts: tuple[tuple[str, str], ...], proto: int,
         ctx: ParseCtx) -> Extension:
    """The extension `name` with `opts`, as the general parser makes it (options read before the
    rule's `-p` is known, then final_check with it); one object per input for equal settings."""
    pool = ctx.shared
    key = ("xt_fast", ctx.table, proto, name, opts)
    if pool is not None:
        hit = pool.get(key)
        if hit is not None:
            return hit                  # type: ignore[no-any-return]
    ext: Extension = reg[name](name)
    ctx.proto, ctx.proto_inv = 0, False
    for tok, arg in opts:
        ext.option(tok, [arg], False, ctx)
    ctx.proto = proto
    ext.final_check(ctx)
    if ext.stateful:
        return shared_ext(ext, ctx)
    # Equal settings are one object by `key` already; shared_ext's comparison of every attribute
    # would give each object a materialized __dict__ (a DNAT per endpoint: 50k of them).
    ext.seen = _SEEN.setdefault(frozenset(ext.seen), ext.seen)
    flags = getattr(ext, "flags", None)
    if flags is not None and flags.__class__ is set:       # NAT flags: fixed once parsed
        ext.flags = _SEEN.setdefault(frozenset(flags), flags)   # type: ignore[attr-defined]
    if pool is not None:
        pool[key] = ext
    return ext


def _dnat(to: str, proto: int, ctx: ParseCtx) -> Extension:
    """`-j DNAT --to-destination to`: one per endpoint, so made from the one of its port with
    0.0.0.0 (read and checked by DNAT itself) with the address set, when `to` is `a.b.c.d:port`
    in plain decimal (what DNAT reads as exactly that address)."""
    opts = (("--to-destination", to),)
    ip, sep, port = to.partition(":")
    v = _quad(ip) if sep and "-" not in to else None
    if v is None:
        return _ext(TARGETS, "DNAT", opts, proto, ctx)
    key = ("xt_fast", ctx.table, proto, "DNAT", opts)
    if ctx.shared is not None:
        hit = ctx.shared.get(key)
        if hit is not None:
            return hit                  # type: ignore[no-any-return]
    proto_ext = _ext(TARGETS, "DNAT", (("--to-destination", "0.0.0.0:" + port),), proto, ctx)
    ext = TARGETS["DNAT"]("DNAT")
    for k, val in vars(proto_ext).items():
        setattr(ext, k, val)
    ext.min_ip = ext.max_ip = v         # type: ignore[attr-defined]
    if ctx.shared is not None:
        ctx.shared[key] = ext
    return ext


def _comment(text: str, proto: int, ctx: ParseCtx) -> Extension:
    """`-m comment --comment text`: kube-proxy's differ rule by rule, so an ASCII one (at most 255
    bytes, as the regex bounds it) is the checked one of "-" with its text set."""
    opts = (("--comment", text),)
    if not text.isascii():
        return _ext(MATCHES, "comment", opts, proto, ctx)
    key = ("xt_fast", ctx.table, proto, "comment", opts)
    if ctx.shared is not None:
        hit = ctx.shared.get(key)
        if hit is not None:
            return hit                  # type: ignore[no-any-return]
    proto_ext = _ext(MATCHES, "comment", (("--comment", "-"),), proto, ctx)
    ext = MATCHES["comment"]("comment")
    for k, val in vars(proto_ext).items():
        setattr(ext, k, val)
    ext.comment = text                  # type: ignore[attr-defined]
    if ctx.shared is not None:
        ctx.shared[key] = ext
    return ext


def _quad(text: str) -> int | None:
    """Exactly four decimal bytes without leading zeros (inet_pton) -> the address; else None."""
    parts = text.split(".")
    if len(parts) != 4 or not all(p.isdigit() and p.isascii() and len(p) <= 3 and (p == "0" or p[0] != "0")
                                  for p in parts):
        return None
    a, b, c, d = (int(p) for p in parts)
    if a > 255 or b > 255 or c > 255 or d > 255:
        return None
    return (a << 24) | (b << 16) | (c << 8) | d


def fast_rule(line: str, ctx: ParseCtx) -> tuple[str, Rule] | None:
    """(chain, rule) of the `-A` line `line` if it has one of kube-proxy's shapes and valid values,
    else None."""
    if len(line) > _MAX_LINE or not line.startswith("-A "):
        return None
    global _first
    m = _SHAPES[_first].fullmatch(line)
    if m is None:
        m = _SHAPES[1 - _first].fullmatch(line)
        if m is None:
            return None
        _first = 1 - _first             # a file keeps to one order: try it first next time
    chain, src, dst, p, comment, mp, dport, prob, jump, dnat = m.group(
        "chain", "src", "dst", "p", "comment", "mp", "dport", "prob", "jump", "dnat")
    if (mp is not None and mp != p) or (dport is not None and mp is None):
        return None
    if dnat is not None and jump != "DNAT":
        return None
    proto = _PROTOS[p] if p is not None else 0
    ctx.chain = chain
    r = Rule(ctx.where)
    if src is not None:
        s = _cidr(src)
        if s is None:
            return None
        r.src, r.smsk = s
        if m.group("sinv") is not None:
            r.inv_src = True
    if dst is not None:
        d = _cidr(dst)
        if d is None:
            return None
        r.dst, r.dmsk = d
    r.proto = proto
    try:
        matches: list[Any] = []
        if comment is not None:
            matches.append(_comment(comment, proto, ctx))
        if mp is not None:
            matches.append(_ext(MATCHES, mp, (("--dport", dport),) if dport is not None else (), proto, ctx))
        if prob is not None:
            matches.append(_ext(MATCHES, "statistic", (("--mode", "random"), ("--probability", prob)),
                                proto, ctx))
        r.matches = tuple(matches)
        r.jump = sys.intern(jump)
        kind = STANDARD.get(jump)
        if kind is not None:
            r.kind = kind
        elif jump in TARGETS:
            r.kind = K_EXT
            r.target = cast(Target, _dnat(dnat, proto, ctx) if dnat is not None
                            else _ext(TARGETS, jump, (), proto, ctx))
        else:
            r.kind = K_JUMP
    except PktemuError:
        return None
    ctx.proto, ctx.proto_inv = proto, False
    r.finish()
    return chain, r
