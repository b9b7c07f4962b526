"""The bodies of `set|map NAME { ... }` and `chain NAME { ... }` declarations (pktemu.nftables.parse),
and the tokens of one rule."""
from __future__ import annotations

from pktemu.nftables.elements import insert, merge_intervals, parse_elements, parse_time
from pktemu.nftables.lexer import Cursor, Token, describe
from pktemu.nftables.model import (
    CHAIN_TYPES, DATA_TYPES, HOOK_NAMES, KEY_TYPES, STD_PRIOS, Chain, NftSet, Table, prio_compatible,
)
from pktemu.nftables.rules import parse_rule


def rule_tokens(cur: Cursor) -> list[Token]:
    """The tokens of one rule: up to the end of its line (or a `;`), braces kept whole."""
    out: list[Token] = []
    depth = 0
    while True:
        t = cur.peek()
        if cur.i >= len(cur.toks) - 1 and t.kind == "nl":
            break
        if depth == 0 and (t.kind == "nl" or t.text in (";", "}")) and t.kind != "string":
            break
        cur.next()
        if t.kind == "punct" and t.text == "{":
            depth += 1
        elif t.kind == "punct" and t.text == "}":
            depth -= 1
        if t.kind != "nl":
            out.append(t)
    if not out:
        raise cur.error("empty rule")
    return out


def flag_list(cur: Cursor) -> list[str]:
    out = [cur.word("a flag")]
    while cur.accept(","):
        out.append(cur.word("a flag"))
    return out


def set_body(cur: Cursor, s: NftSet) -> None:
    elements: int | None = None             # the token of the block's last `elements = {`
    while True:
        cur.skip_nl()
        if cur.accept(";"):
            continue
        if cur.accept("}"):
            break
        w = cur.word("type, flags, timeout, size, comment or elements")
        if w == "type":
            at = cur.peek()
            s.types, s.data_type = _type_spec(cur)
            if "integer" in s.types and len(s.types) > 1:       # as nft 1.0.x says
                raise cur.error("can not use variable sized data types (integer) in concat expressions", at)
            if "integer" in (*s.types, s.data_type):
                raise cur.error(f"unqualified type integer specified in {s.kind} definition. Try \"typeof "
                                "expression\" instead of \"type datatype\" (typeof is not supported by "
                                "pktemu)", at)
            if (s.kind == "map") != (s.data_type is not None):
                raise cur.error(f"{s.kind} {s.name}: " + ("a map needs 'type KEY : DATA'" if s.kind == "map"
                                                          else "a set has no ': DATA' type"))
        elif w == "typeof":
            raise cur.error("'typeof' set declarations are not supported: use 'type'")
        elif w == "flags":
            s.flags = flag_list(cur)
            bad = [f for f in s.flags if f not in ("interval", "timeout", "dynamic", "constant")]
            if bad:
                raise cur.error(f"unknown set flag '{bad[0]}'")
        elif w in ("timeout", "gc-interval"):
            v = cur.word("a time")
            if parse_time(v) is None:
                raise cur.error(f"bad time '{v}'")
            if w == "timeout":
                s.timeout = v
        elif w == "size":
            s.size = cur.number("a size")
        elif w == "policy":
            cur.word("performance or memory")
        elif w == "auto-merge":
            if s.kind == "map":
                raise cur.error("syntax error, unexpected auto-merge: a map does not merge (nft refuses it)")
            s.automerge = True
        elif w == "comment":
            s.comment = cur.word("a comment string")
        elif w == "elements":
            cur.expect("=")
            elements = cur.i
            _skip_braces(cur)
        else:
            raise cur.error(f"unknown {s.kind} property '{w}'")
        if w not in ("elements", "auto-merge"):     # the two nft's grammar ends without a separator
            cur.separator()
    if not s.types:
        raise cur.error(f"{s.kind} {s.name} has no type")
    if elements is not None:
        end, cur.i = cur.i, elements
        parse_elements(cur, s, each=lambda el, at: insert(cur, s, el, at))
        if s.automerge:
            merge_intervals(s)
        cur.i = end


def _skip_braces(cur: Cursor) -> None:
    """Past `{ ... }`: nft's parser keeps a set block's last `elements = {...}` and evaluates it
    once the block is read, so the type, flags and timeout may come after it, and an earlier
    `elements =` in the block is dropped."""
    cur.expect("{")
    depth = 1
    while depth:
        t = cur.next()
        if t.kind == "punct":
            depth += {"{": 1, "}": -1}.get(t.text, 0)


def _type_spec(cur: Cursor) -> tuple[list[str], str | None]:
    """`KEY [. KEY ...] [: DATA]` up to the line's end: nft's scanner makes `:` a token of its own,
    so `ipv4_addr: verdict` and `ipv4_addr:verdict` are `ipv4_addr : verdict` (pktemu's words
    hold a `:`, for `ip:port`); a `.` it does not split (`ipv4_addr.inet_service` is no type)."""
    toks: list[Token] = []
    while cur.peek().kind == "word":
        toks.append(cur.next())
    if not toks:
        raise cur.error(f"expected a type, got {describe(cur.peek())}")
    parts = [(p, t) for t in toks for p in t.text.replace(":", " : ").split()]
    keys = [parts[0]]
    k = 1
    while k + 1 < len(parts) and parts[k][0] == ".":
        keys.append(parts[k + 1])
        k += 2
    data = None
    if k + 1 < len(parts) and parts[k][0] == ":":
        data = parts[k + 1]
        k += 2
    if k < len(parts):
        raise cur.error(f"syntax error, unexpected '{parts[k][0]}', expecting colon or . (in a type)",
                        parts[k][1])
    types = [_type(cur, p, t, KEY_TYPES) for p, t in keys]
    return types, None if data is None else _type(cur, data[0], data[1], DATA_TYPES)


def _type(cur: Cursor, text: str, t: Token, allowed: tuple[str, ...] | dict[str, tuple[int, bool]]) -> str:
    if text not in allowed:
        raise cur.error(f"unsupported type '{text}' (one of {', '.join(allowed)})", t)
    return text


def chain_body(cur: Cursor, t: Table, c: Chain, rules: bool, new: bool) -> None:
    policy = False
    while True:
        cur.skip_nl()
        if cur.accept(";"):
            continue
        if cur.accept("}"):
            return
        w = cur.peek().text
        if w == "type" and cur.peek().kind == "word":
            cur.next()
            _base_chain(cur, c, new)
            new = True                    # a second `type` in the same block is nft's syntax error
            cur.separator()
        elif w == "policy":
            if policy:                    # once per block (another block of the chain may change it)
                raise cur.error("you cannot set chain policy twice (nft refuses it)")
            policy = True
            cur.next()
            c.policy = cur.word("accept or drop")
            if c.policy not in ("accept", "drop"):
                raise cur.error(f"chain policy '{c.policy}': expected accept or drop")
            cur.separator()
        elif w == "comment" and (cur.peek(2).kind == "nl" or cur.peek(2).text in (";", "}")):
            cur.next()
            c.comment = cur.word("a comment string")
            cur.separator()
        elif rules:
            toks = rule_tokens(cur)
            cur.separator()
            rule = parse_rule(Cursor(toks, cur.path, cur.ints, cur.any_names), t, c.name)
            rule.handle = t.new_handle()
            c.rules.append(rule)
        else:
            raise cur.error(f"unexpected '{w}' in a chain declaration")


def _base_chain(cur: Cursor, c: Chain, new: bool) -> None:
    """`type T hook H priority P`; for a chain that exists, as nf_tables_updchain: it must be a base
    chain of that type (else File exists), at that hook and priority (else Operation not supported)."""
    at = cur.peek()
    ctype = cur.word("filter, nat or route")
    if ctype not in CHAIN_TYPES:
        raise cur.error(f"unknown chain type '{ctype}' (one of {', '.join(CHAIN_TYPES)})")
    cur.expect("hook")
    hook = cur.word("a hook")
    if hook not in HOOK_NAMES:
        raise cur.error(f"hook '{hook}' is not supported (one of {', '.join(HOOK_NAMES)})")
    if ctype == "nat" and hook == "forward":
        raise cur.error("a nat chain cannot hook forward")
    if ctype == "route" and hook != "output":
        raise cur.error(f"a route chain hooks output only, not {hook}: Operation not supported", at)
    if cur.accept("device"):
        raise cur.error("'device' is for netdev chains, which are not supported")
    cur.expect("priority")
    prio = _priority(cur, hook)
    if not new and c.hook is None:
        raise cur.error(f"chain {c.name} exists as a regular chain: File exists (it cannot become a base "
                        "chain)", at)
    if not new and c.type != ctype:
        raise cur.error(f"chain {c.name} exists with type {c.type}: File exists", at)
    if not new and (c.hook != HOOK_NAMES[hook] or c.priority != prio):
        was = next(k for k, v in HOOK_NAMES.items() if v == c.hook)
        raise cur.error(f"chain {c.name} is hooked at {was} priority {c.priority}: Operation not supported "
                        "(a base chain's hook and priority cannot change)", at)
    c.type, c.hook, c.priority = ctype, HOOK_NAMES[hook], prio


def _priority(cur: Cursor, hook: str) -> int:
    t = cur.next()
    names = dict(STD_PRIOS)
    try:
        if t.text in names:
            v = names[t.text]
            if not prio_compatible(v, HOOK_NAMES[hook]):
                only = "prerouting" if v < 0 else "postrouting"
                raise cur.error(f"priority {t.text} at hook {hook}: invalid priority expression value in "
                                f"this context ({t.text} is for {only} only)", t)
            if cur.peek().text in ("+", "-"):
                sign = 1 if cur.next().text == "+" else -1
                v += sign * int(cur.word("a number"))
            return v
        return int(t.text)
    except ValueError:
        raise cur.error(f"bad priority {describe(t)}", t) from None
