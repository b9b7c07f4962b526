"""A fast path for the few rule shapes kube-proxy writes, ahead of the general parser (xt_parse).

A 10,000-Service ruleset is 170k lines of about a dozen shapes (`-A C [! -s A] [-d A] [-p tcp]
[-m comment --comment "T"] [-m tcp [--dport N]] [-m statistic ...] -j J [--to-destination D]`,
in iptables-save's order or in kube-proxy's, which leaves a comment without blanks unquoted).
One compiled regex per order reads such a line's fields, and the rule is built directly, the
extensions through their own `option` and `final_check` (so values are read and checked as the
general parser does) and kept per input by their settings, since nearly all of them repeat. With
the open table's chains (restore), the rule's chain and jump are looked up there too. A line
that does not fit a shape, names no declared chain, or whose values the extensions refuse,
returns None: the general parser then parses it, and reports the error exactly as it always
did. tests/test_xt_fast.py and test_xt_restore_fast.py hold every line of the kube-proxy
rulesets and of the repository's rules files to this: the same rules, the same errors.
"""
from __future__ import annotations

import re
import sys
from socket import inet_aton, inet_ntoa
from struct import Struct
from collections.abc import Callable, Mapping
from typing import Any, cast

from pktemu.errors import PktemuError
import pktemu.netfilter.matches  # noqa: F401  (registers the matches)
import pktemu.netfilter.targets  # noqa: F401  (registers the targets)
from pktemu.netfilter.xt_base import MATCHES, TARGETS, U32, Extension, ParseCtx, Target
from pktemu.netfilter.xt_rule import _HDR0, K_EXT, K_JUMP, SEEN as _SEEN, STANDARD, Rule, _new_rule
from pktemu.netfilter.xt_rule import maker as _maker, shared_ext

# No blank, quote, backslash or `!`, and no leading `-`: a word the general tokenizer leaves as is.
_NAME = r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,127}"
# An address as the regex reads it: digits and dots, a prefix length of one or two digits; _addr
# then takes it only if it is four plain decimal parts (no leading zeros, which mean octal to
# iptables) of at most 255 and a length of 0-32 (checking that in the regex costs it a seventh of
# a kube-proxy line; _addr checks each text once). An optional part is written `(?:X|)`, not
# `(?:X)?`: the same match, but re runs a branch in a quarter less time than a repeat.
_ADDR = r"[0-9.]{7,15}(?:/[0-9]{1,2}|)"
#: a quoted comment as the regex reads it: any text up to the closing quote, which fast_rule then
#: checks as iptables-restore reads it (no quote, backslash or line end) the first time it is seen
#: (a character class of four exclusions costs the regex a tenth of a kube-proxy line)
_TEXT = r'[^"]{0,255}'
_PROTO = r"tcp|udp"
_STAT = r"(?: -m statistic --mode random --probability (?P<prob>[0-9.]{1,20})|)"
_JUMP = r" -j (?P<jump>" + _NAME + r")(?: --to-destination (?P<dnat>[0-9.:-]{1,40})|)"
#: quoted, or one bare word as kube-proxy writes a comment without blanks (no quote, `!` or `-` first)
_COMMENT = (r'(?: -m comment --comment (?:"(?P<comment>' + _TEXT + r')"|(?P<bare>[^ \t"\'\\\r\n!-]'
            r'[^ \t"\'\\\r\n]{0,254}))|)')
_SRC = r"(?: (?:(?P<sinv>! )|)-s (?P<src>" + _ADDR + r")|)"


def _possessive(pattern: str) -> str:
    """`pattern` with its bounded repeats possessive: each is of characters that what follows it
    never starts with, so giving some back could not make a match, and re then keeps no places
    to go back to."""
    return re.sub(r"(\{[0-9]+,[0-9]+\})", r"\1+", pattern)


#: kube-proxy's order, then iptables-save's (the oracle's and a saved ruleset's)
_SHAPES = tuple(re.compile(_possessive(p)) for p in (
    r"-A (?P<chain>" + _NAME + r")" + _COMMENT
    + r"(?: -m (?P<mp>" + _PROTO + r") -p (?P<p>" + _PROTO + r")|)"
    r"(?: -d (?P<dst>" + _ADDR + r")|)(?: --dport (?P<dport>[0-9]{1,5})|)"
    + _SRC + _STAT + _JUMP,
    r"-A (?P<chain>" + _NAME + r")" + _SRC + r"(?: -d (?P<dst>" + _ADDR + r")|)"
    r"(?: -p (?P<p>" + _PROTO + r")|)" + _COMMENT
    + r"(?: -m (?P<mp>" + _PROTO + r")(?: --dport (?P<dport>[0-9]{1,5})|)|)" + _STAT + _JUMP,
))
_first = 0                      # the shape that matched last
_PROTOS = {"tcp": (6, 1), "udp": (17, 2), None: (0, 0)}     # -p -> (protocol, index in _Cache)
_MASKS = tuple((U32 << (32 - n)) & U32 for n in range(33))     # one int object per prefix length
#: a prefix length as iptables reads it (decimal, no leading zero) -> its mask
_PREFIX = {str(n): _MASKS[n] for n in range(33)}
_U32 = Struct("!I").unpack


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


class _Cache:
    """What one input's fast path found before, for one table: parsed addresses, comment matches,
    match tuples, targets. The objects are the ones the first line made: equal rules share them."""

    __slots__ = ("cidr", "ints", "comments", "tuples", "rest", "jumps", "dnat", "comment", "quad", "quad_v")

    def __init__(self) -> None:
        #: text -> the address of a /32 (an int), else (address, mask); few tuples: a load's
        #: temporary tuples end in the interpreter's free lists, which memory figures count
        self.cidr: dict[str, int | tuple[int, int]] = {}
        self.ints: dict[int, int] = {}                  # one int object per network, lone DNAT
        self.comments: dict[str, Extension] = {}
        self.tuples: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        self.rest: dict[tuple[int, str | None, str | None, str | None], tuple[Any, ...]] = {}
        #: by the rule's -p (_PROTOS): the jump word -> itself interned (a chain), else (kind,
        #: word, target); what copies the checked DNAT of 0.0.0.0:port, by port (see xt_rule.maker).
        #: No DNAT is kept by its text: kube-proxy's are one per endpoint, each text seen once.
        self.jumps: tuple[dict[str, Any], ...] = ({}, {}, {})
        self.dnat: tuple[dict[str, Callable[[], Any]], ...] = ({}, {}, {})
        self.comment: Callable[[], Any] | None = None   # copies the checked comment of "-"
        #: the plain address of the last /32 read and its value: an endpoint's DNAT line follows
        #: the line that read its address (`-s EP/32`), so most DNATs need no lookup
        self.quad: str | None = None
        self.quad_v = 0


class _Key:
    """The pool key of an input's _Cache for a table (no tuple of strings: nothing to collide with)."""


_CACHE_KEY = _Key()


def _cache(ctx: ParseCtx) -> _Cache:
    pool = ctx.shared
    if pool is None:
        return _Cache()
    per_table = pool.get(_CACHE_KEY)
    if per_table is None:
        per_table = pool[_CACHE_KEY] = {}
    fc = per_table.get(ctx.table)       # type: ignore[attr-defined]
    if fc is None:
        fc = per_table[ctx.table] = _Cache()    # type: ignore[index]
    return fc                           # type: ignore[no-any-return]


def _addr(fc: _Cache, text: str) -> int | tuple[int, int] | None:
    """fc.cidr's entry for `a.b.c.d[/n]`, made if new: the address of a /32 (an int, which the
    text's later uses share), else (address & mask, mask); None unless the address is four plain
    decimal parts of at most 255 (what inet_ntoa prints back) and n one of 0-32 in plain decimal."""
    addr, _, plen = text.partition("/")
    try:
        packed = inet_aton(addr)
    except OSError:
        return None
    if inet_ntoa(packed) != addr:       # fewer parts, a leading zero (octal), hex
        return None
    v = _U32(packed)[0]
    mask = _PREFIX.get(plen, 0) if plen else U32
    if mask == U32:                     # (an endpoint's DNAT takes this int object: fc.quad)
        fc.quad, fc.quad_v = addr, v
        fc.cidr[text] = v
        return v
    if mask == 0 and plen != "0":
        return None
    v &= mask
    out = fc.cidr[text] = (fc.ints.setdefault(v, v), mask)
    return out


def _dnat(to: str, proto: int, pi: int, ctx: ParseCtx, fc: _Cache) -> Target:
    """`-j DNAT --to-destination to`: one per endpoint, so made from the one of its port with
    0.0.0.0 (read and checked by DNAT itself) with the address set, when `to` is `a.b.c.d:port`
    in plain decimal (what DNAT reads as exactly that address; the rule's `-s` of the endpoint
    often read it already)."""
    ip, sep, port = to.partition(":")
    if not sep or "-" in to:
        return _ext(TARGETS, "DNAT", (("--to-destination", to),), proto, ctx)     # type: ignore[return-value]
    if ip == fc.quad:
        v: Any = fc.quad_v
    else:
        v = fc.cidr.get(ip)
        if v.__class__ is not int:
            v = fc.cidr.get(ip + "/32")
            if v.__class__ is not int:
                v = _quad(ip)
                if v is None:
                    return _ext(TARGETS, "DNAT", (("--to-destination", to),), proto, ctx)  # type: ignore[return-value]
                v = fc.ints.setdefault(v, v)
    makers = fc.dnat[pi]
    make = makers.get(port)
    if make is None:
        make = makers[port] = _maker(_ext(TARGETS, "DNAT", (("--to-destination", "0.0.0.0:" + port),),
                                          proto, ctx))
    ext = make()
    ext.min_ip = ext.max_ip = v
    return ext                          # type: ignore[no-any-return]


def _comment(text: str, proto: int, ctx: ParseCtx, fc: _Cache) -> Extension:
    """`-m comment --comment text`: kube-proxy's differ rule by rule, so an ASCII one (at most 255
    bytes, as the regex bounds it) is the checked one of "-" with its text set (its checks do
    not depend on the rule's -p)."""
    if not text.isascii():
        return _ext(MATCHES, "comment", (("--comment", text),), proto, ctx)
    make = fc.comment
    if make is None:
        make = fc.comment = _maker(_ext(MATCHES, "comment", (("--comment", "-"),), 0, ctx))
    ext = make()
    ext.comment = text
    return ext                          # type: ignore[no-any-return]


_QUAD_RE = re.compile(r"(?:0|[1-9][0-9]{0,2})(?:\.(?:0|[1-9][0-9]{0,2})){3}")


def _quad(text: str) -> int | None:
    """Exactly four decimal bytes without leading zeros (inet_pton) -> the address; else None."""
    if _QUAD_RE.fullmatch(text) is None:
        return None
    try:
        return int.from_bytes(inet_aton(text), "big")
    except OSError:                     # a part above 255
        return None


#: each shape's groups in the order m.groups() gives them (fast_rule unpacks them so)
_ORDERS = (("chain", "comment", "bare", "mp", "p", "dst", "dport", "sinv", "src", "prob", "jump", "dnat"),
           ("chain", "sinv", "src", "dst", "p", "comment", "bare", "mp", "dport", "prob", "jump", "dnat"))
if any(sorted(shape.groupindex, key=shape.groupindex.__getitem__) != list(order) or shape.groups != len(order)
       for shape, order in zip(_SHAPES, _ORDERS, strict=True)):
    raise AssertionError("xt_fast: a shape's groups are not in the order fast_rule unpacks them")


def _hdr_inv_src() -> tuple[Any, ...]:
    r = Rule()
    r.inv_src = True
    return r._hdr


_HDR_INV_SRC = _hdr_inv_src()           # the header tuple of `! -s` alone, as Rule makes it


def fast_cache(ctx: ParseCtx) -> _Cache:
    """What fast_rule keeps for the input and table of `ctx` (a loader asks once per table)."""
    return _cache(ctx)


def fast_rule(line: str, ctx: ParseCtx, at: int | str | None = None, fc: _Cache | None = None,
              chains: Mapping[str, Any] | None = None) -> tuple[Any, Rule] | None:
    """(chain, rule) of the `-A` line `line` if it has one of kube-proxy's shapes and valid values,
    else None. `at`: the rule's `where` as where_code makes it (else ctx.where); `fc`:
    fast_cache(ctx), if the caller has it; `chains`: the open table's chains, if the rule is to
    join them: then also None unless its chain is one of them and its jump (if to a chain) goes
    to one of their user chains, whose name the rule then holds (no lookup of its own), and the
    chain returned is the Chain object, not its name."""
    global _first
    first = _first
    m = _SHAPES[first].fullmatch(line)
    if m is None:
        first = 1 - first
        m = _SHAPES[first].fullmatch(line)
        if m is None:
            return None
        _first = first                  # a file keeps to one order: try it first next time
    if first:
        chain, sinv, src, dst, p, comment, bare, mp, dport, prob, jump, dnat = m.groups()
    else:
        chain, comment, bare, mp, p, dst, dport, sinv, src, prob, jump, dnat = m.groups()
    if mp is not None:
        if mp != p:
            return None
    elif dport is not None:
        return None
    if dnat is not None and jump != "DNAT":
        return None
    into: Any = chain
    if chains is not None:
        into = chains.get(chain)
        if into is None:
            return None
    if fc is None:
        fc = _cache(ctx)
    proto, pi = _PROTOS[p]
    if src is None:
        sa = sm = 0
    else:
        a = fc.cidr.get(src)
        if a is None:
            a = _addr(fc, src)
            if a is None:
                return None
        if a.__class__ is int:
            sa, sm = a, U32
        else:
            sa, sm = a                  # type: ignore[misc]
    key = None
    if dst is None:
        da = dm = 0
    else:
        a = fc.cidr.get(dst)
        if a is None:
            a = _addr(fc, dst)
            if a is None:
                return None
        if a.__class__ is int:
            da = key = a                # type: ignore[assignment]
            dm = U32
        else:
            da, dm = a                  # type: ignore[misc]
    target: Target | None
    try:
        if mp is None and prob is None:
            matches: tuple[Any, ...] = ()
        else:
            rkey = (proto, mp, dport, prob)
            matches = fc.rest.get(rkey) or fc.rest.setdefault(rkey, _more(mp, dport, prob, proto, ctx))
        if bare is not None:
            comment = bare
        if comment is not None:
            c = fc.comments.get(comment)
            if c is None:
                if bare is None and ("'" in comment or "\\" in comment or "\r" in comment
                                     or "\n" in comment):
                    return None
                c = fc.comments[comment] = _comment(comment, proto, ctx, fc)
            matches = (c, *matches) if matches else (c,)
            matches = fc.tuples.setdefault(matches, matches)      # equal objects: one tuple
        if dnat is not None:
            kind, word, target = K_EXT, "DNAT", _dnat(dnat, proto, pi, ctx, fc)
        else:
            to = chains.get(jump) if chains is not None else None
            if to is not None:          # a chain's name is no target's (check_chain_name)
                if to.builtin:
                    return None
                kind, word, target = K_JUMP, to.name, None
            else:
                jumps = fc.jumps[pi]
                j = jumps.get(jump)
                if j is None:
                    if chains is not None and jump not in STANDARD and jump not in TARGETS:
                        return None     # a jump to an undeclared chain: the general path says so
                    j = jumps[jump] = _jump(jump, proto, ctx)
                if j.__class__ is str:
                    if chains is not None:
                        return None     # not one of the open table's chains
                    kind, word, target = K_JUMP, j, None
                else:
                    kind, word, target = j      # type: ignore[str-unpack,misc,assignment]
    except PktemuError:
        return None
    if at is None:
        r = Rule(ctx.where)
        at = r._where
    else:
        r = _new_rule(Rule)
    (r.src, r.smsk, r.dst, r.dmsk, r.proto, r._hdr, r.matches, r.target, r.kind, r.jump, r.pkts, r.bytes,
     r._where, r.chain, r.num, r.checks, r.key, r._body, r.jump_steps) = (
        sa, sm, da, dm, proto, _HDR0 if sinv is None else _HDR_INV_SRC, matches, target, kind, word, 0, 0,
        at, "", 0, None, key, None, None)          # checks and body: made on first use (Rule.finish)
    return into, r


def _jump(jump: str, proto: int, ctx: ParseCtx) -> str | tuple[int, str, Target | None]:
    """`-j jump` without options: the word interned if a chain's (one string for its many jumps),
    else (kind, word, target)."""
    word = sys.intern(jump)
    kind = STANDARD.get(jump)
    if kind is not None:
        return kind, word, None
    if jump in TARGETS:
        return K_EXT, word, cast(Target, _ext(TARGETS, jump, (), proto, ctx))
    return word


def _more(mp: str | None, dport: str | None, prob: str | None, proto: int,
          ctx: ParseCtx) -> tuple[Any, ...]:
    """The `-m tcp/udp` and `-m statistic` matches a line has (after its comment)."""
    out: list[Any] = []
    if mp is not None:
        out.append(_ext(MATCHES, mp, (("--dport", dport),) if dport is not None else (), proto, ctx))
    if prob is not None:
        out.append(_ext(MATCHES, "statistic", (("--mode", "random"), ("--probability", prob)), proto, ctx))
    return tuple(out)
