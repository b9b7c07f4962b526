"""One rule's text to compiled steps and to the text `nft list` prints for it.

A rule is a row of expressions and statements (src/parser_bison.y `rule`): matches
(`ip daddr 10.3.240.0/20`, `ct state new`, `ip daddr . meta l4proto . th dport vmap @m`) and
statements (`counter`, `meta mark set meta mark | 0x4000`, `dnat to a:p`, `jump c`, ...). Every
item becomes a step `(pkt, state) -> None | False | Verdict` (go on, the rule does not match, the
rule's verdict). Anything else is an error naming it.
"""
from __future__ import annotations

from typing import Any

from pktemu.nftables import statements, steps
from pktemu.nftables.elements import insert, merge_intervals, parse_elements, parse_typed, parse_verdict
from pktemu.nftables.fields import Field, lookup_field
from pktemu.nftables.lexer import Cursor, Token, describe
from pktemu.nftables.raw_payload import is_raw, parse_raw
from pktemu.nftables.unsupported import set_statement, unsupported
from pktemu.nftables.model import Element, NftSet, ParsedRule, Rule, Step, Table
from pktemu.nftables.values import format_key, format_value, parse_value, shared, ValueError_
from pktemu.nftables.rule_print import (
    PAYLOADS, STMT, Dep, element_text, rule_text, set_match_text, set_text, sorted_elements, value_text,
)

OPS = {"==": "==", "eq": "==", "!=": "!=", "ne": "!=", "<": "<", "lt": "<", ">": ">", "gt": ">",
       "<=": "<=", "le": "<=", ">=": ">=", "ge": ">="}
BINOPS = {"&": "&", "and": "&", "|": "|", "or": "|", "^": "^", "xor": "^"}
#: statements nothing may follow in a rule (nft: "Statement after terminal statement has no effect")
TERMINAL = frozenset(("accept", "drop", "return", "jump", "goto", "dnat", "snat", "masquerade", "redirect",
                      "reject"))


class Lhs:
    """The left side of a match: one field (maybe masked) or a concatenation of fields."""

    def __init__(self, fields: list[Field], text: str, binop: tuple[str, int] | None = None) -> None:
        self.fields = fields
        self.text = text
        self.types = [f.type for f in fields]
        self.binop = binop

    def reader(self) -> Any:
        if len(self.fields) == 1:
            read = self.fields[0].read
            if self.binop is None:
                return read
            op, arg = self.binop
            if op == "&":
                return lambda p, s: None if (v := read(p, s)) is None else v & arg
            if op == "|":
                return lambda p, s: None if (v := read(p, s)) is None else v | arg
            return lambda p, s: None if (v := read(p, s)) is None else v ^ arg
        reads = [f.read for f in self.fields]

        def key(p: Any, s: Any) -> Any:
            out = []
            for r in reads:
                v = r(p, s)
                if v is None:
                    return None
                out.append(v)
            return tuple(out)
        return key


def parse_rule(cur: Cursor, table: Table, chain: str) -> ParsedRule:
    """The rule whose tokens are the rest of `cur` (one line)."""
    rule = ParsedRule(chain, cur.path, cur.peek().line << 32)
    items: list[tuple[str, Dep]] = []
    steps: list[Step] = []
    terminal = None
    l4 = False                    # a match so far gives nft a transport protocol (see parse_match)
    while not cur.at_end():
        t = cur.peek()
        if t.text == "comment" and t.kind == "word":
            cur.next()
            rule.own_comment = cur.word("a comment string")
            if not cur.at_end():      # nft's grammar: one comment, last (else a syntax error)
                nxt = cur.peek()
                raise cur.error("a rule takes one comment" if nxt.text == "comment" else
                                f"the comment must end the rule: nothing may follow it, {describe(nxt)} "
                                "does", nxt)
            continue
        if terminal is not None:
            raise cur.error(f"statement after terminal statement '{terminal}' has no effect "
                            "(nft refuses it)", t)
        stmt = statements.parse_statement(cur, table, rule, l4)
        if stmt is not None:
            text, step = stmt
            items.append((text, STMT))
            if step is not None:
                steps.append(step)
            if t.text in TERMINAL and t.kind == "word":
                terminal = t.text
            continue
        text, step, dep, gives_l4 = parse_match(cur, table, rule)
        l4 |= gives_l4
        _conflict(cur, items, dep, t)
        items.append((text, dep))
        steps.append(step)
    rule.text = rule_text(items, rule.own_comment, table.family)
    rule.steps = tuple(x for step in steps for x in step)
    if not steps and not rule.text:
        raise cur.error("empty rule")
    return rule


def _conflict(cur: Cursor, items: list[tuple[str, Dep]], dep: Dep, at: Token) -> None:
    """nft's "conflicting protocols specified": a header field after a match that stated another
    transport protocol (`meta l4proto udp tcp dport 80`), or an ip field after `meta nfproto ipv6`."""
    known: int | None = None
    ipv6 = False
    for _, d in items:
        if d is not STMT:
            known = d.l4 if d.l4 is not None else d.needs if d.needs is not None else known
            ipv6 |= d.nf == 10
    if dep.needs is not None and known is not None and known != dep.needs:
        names = {6: "tcp", 17: "udp", 132: "sctp"}
        raise cur.error(f"conflicting protocols specified: {names.get(known, known)} vs. "
                        f"{names.get(dep.needs, dep.needs)}", at)
    if dep.ip and ipv6:
        raise cur.error("conflicting protocols specified: ip6 vs. ip", at)


def parse_lhs(cur: Cursor, family: str = "ip") -> Lhs | None:
    fields: list[Field] = []
    while True:
        words = [cur.peek(k).text if cur.peek(k).kind == "word" else "" for k in range(3)]
        if words[0][:1] == "@" and is_raw(cur):
            f = parse_raw(cur, family)
        elif words[0] == "numgen":
            f = statements.parse_numgen(cur)
        else:
            found = lookup_field(words)
            if found is None:
                if fields:
                    raise cur.error(f"unknown expression '{words[0]}' after '.'")
                return None
            f, n = found
            for _ in range(n):
                cur.next()
        fields.append(f)
        if not cur.accept("."):
            break
    text = " . ".join(f.text for f in fields)
    op = BINOPS.get(cur.peek().text) if cur.peek().kind == "word" else None
    if op is not None and len(fields) == 1:
        cur.next()
        arg = parse_typed(cur, fields[0].type)[0]
        return Lhs(fields, f"{text} {op} {format_value(fields[0].type, arg)}", (op, arg))
    return Lhs(fields, text)


def parse_match(cur: Cursor, table: Table, rule: ParsedRule) -> tuple[str, Step, Dep, bool]:
    """(print text, step, dependency as rule_text wants it, whether nft takes the match as the
    transport protocol a NAT port mapping needs: a tcp/udp/sctp header field's, or `meta l4proto`
    or `ip protocol` equal to a value or in a set)."""
    tok = cur.peek()
    lhs = parse_lhs(cur, table.family)
    if lhs is None:
        raise cur.error(unsupported(cur) or f"unknown statement or expression '{tok.text}'", tok)
    l4 = any(f.proto is not None for f in lhs.fields)
    proto_eq = len(lhs.fields) == 1 and lhs.binop is None and lhs.text in ("meta l4proto", "ip protocol")
    if table.family != "inet" and any(f.type == "nfproto" for f in lhs.fields):
        raise cur.error("meta nfproto is only useful in the inet family", tok)     # as nft says
    if cur.peek().text == "set" and cur.peek().kind == "word":
        raise cur.error(set_statement(lhs.text), tok)
    dep = Dep(needs=next((f.proto for f in lhs.fields if f.proto is not None), None),
              ip=any(f.text.startswith("ip ") for f in lhs.fields),
              th=len(lhs.fields) == 1 and lhs.binop is None and lhs.text.startswith("th "))
    read = lhs.reader()
    if cur.accept("vmap"):
        s = set_ref(cur, table, lhs, "verdict")
        if s.anonymous:
            rule.own_jumps += tuple(el.data for el in s.elements.values() if el.data.target is not None)
        return f"{lhs.text} vmap {set_text(s)}", vmap_step(read, s, lhs, rule), dep, l4
    op = "=="
    optext = ""
    if cur.peek().kind == "word" and cur.peek().text in OPS:
        op = OPS[cur.next().text]
        # nft prints `==` only where the bare form means another thing: a flag test (`ct state new`)
        optext = "" if op == "==" and not (len(lhs.fields) == 1 and lhs.fields[0].flags) else op + " "
    if cur.peek().text == "{" or cur.peek().text.startswith("@"):
        if op not in ("==", "!="):
            raise cur.error(f"operator {op} cannot take a set")
        s = set_ref(cur, table, lhs, None)
        neg = op == "!="
        l4 |= proto_eq and not neg
        if s.anonymous and s.written == 1 and len(lhs.fields) == 1:
            ((key, el),) = s.elements.items()
            if lhs.binop is None or el.prefix is not None or el.key_end is not None:
                shown = f"{lhs.text} {optext}{format_key(lhs.types, key, el.prefix, el.key_end)}"
            else:
                shown = value_text(lhs, op, optext, key[0])
            if op == "==" and el.prefix is None and el.key_end is None and lhs.binop is None:
                if lhs.text in ("meta l4proto", "ip protocol"):      # nft reads `{ tcp }` as `tcp`
                    dep = dep._replace(l4=key[0])
                elif lhs.text == "meta nfproto":
                    dep = dep._replace(nf=key[0])
            if el.prefix is not None:
                mask = ((1 << el.prefix) - 1) << (32 - el.prefix) if el.prefix else 0
                return shown, prefix_step(read, key[0] & mask, mask, neg), dep, l4
            if el.key_end is not None:
                return shown, range_step(read, key[0], el.key_end[0], neg), dep, l4
            return shown, cmp_step(read, op, key[0]), dep, l4
        return set_match_text(lhs, op, optext, s), set_step(read, s, neg, len(lhs.fields) > 1), dep, l4
    if len(lhs.fields) > 1:
        raise cur.error(f"a concatenation ({lhs.text}) needs a set, a map or a vmap")
    typ = lhs.types[0]
    valtok = cur.next()
    text = valtok.text
    while typ in ("ct_state", "ct_status") and cur.peek().text == "," and cur.peek(1).kind == "word":
        cur.next()
        text += "," + cur.next().text
    try:
        v, plen, hi = parse_value("raw" if lhs.fields[0].raw else typ, text)
    except ValueError_ as e:
        raise cur.error(str(e), valtok) from None
    v = cur.one(v)
    top = lhs.fields[0].top
    if top is not None and max(v, hi or 0) > top:
        raise cur.error(f"{lhs.text} {text}: value {max(v, hi or 0)} exceeds valid range 0-{top}", valtok)
    l4 |= proto_eq and op == "==" and hi is None
    if op == "==" and plen is None and hi is None and lhs.binop is None:
        if lhs.text in ("meta l4proto", "ip protocol"):
            dep = dep._replace(l4=v)
        elif lhs.text == "meta nfproto":
            dep = dep._replace(nf=v)
    shown = format_value(typ, v)
    if plen is not None:
        if plen != 32:                            # nft lists a full prefix as the bare value
            shown += f"/{plen}"
        mask = ((1 << plen) - 1) << (32 - plen) if plen else 0
        return f"{lhs.text} {optext}{shown}", prefix_step(read, v & mask, mask, op == "!="), dep, l4
    if hi is not None:
        shown += "-" + format_value(typ, hi)
        return f"{lhs.text} {optext}{shown}", range_step(read, v, hi, op == "!="), dep, l4
    if lhs.fields[0].flags and not optext:
        return f"{lhs.text} {shown}", flags_step(read, v), dep, l4
    if op == "==" and lhs.binop is None:
        dep = dep._replace(pay=PAYLOADS.get(lhs.text))
    return value_text(lhs, op, optext, v), cmp_step(read, op, v), dep, l4


def set_ref(cur: Cursor, table: Table, lhs: Lhs, data: str | None) -> NftSet:
    """`@name` (checked against the key types) or an anonymous `{ ... }`."""
    t = cur.peek()
    if t.text.startswith("@"):
        cur.next()
        s = table.set(t.text[1:], f"{cur.path}:{t.line}")
        if s.types != lhs.types and not (s.types == ["integer"] or lhs.types == ["integer"]):
            raise cur.error(f"set '{s.name}' has type {' . '.join(s.types)}, "
                            f"the expression {lhs.text} is {' . '.join(lhs.types)}", t)
        if data == "verdict" and s.data_type != "verdict":
            raise cur.error(f"'{s.name}' is not a verdict map", t)
        return s
    table.anon += 1
    s = NftSet(f"__set{table.anon - 1}", "map" if data else "set", list(lhs.types), data, anonymous=True)
    top = lhs.fields[0].top if len(lhs.fields) == 1 else None

    def add(el: Element, at: Token) -> None:
        v = el.key[0] if el.key_end is None else el.key_end[0]
        if top is not None and v > top:
            raise cur.error(f"{lhs.text}: value {v} exceeds valid range 0-{top}", at)
        insert(cur, s, el, at)
    s.written = len(parse_elements(cur, s, each=add))
    if not s.written:
        raise cur.error("an anonymous set needs an element: '{ }' is empty (nft: syntax error)", t)
    if s.prefixes or s.ranges:
        s.flags.append("interval")
        merge_intervals(s)
    return s


def cmp_step(read: Any, op: str, val: Any) -> Step:
    val = shared(val)
    if op == "==":
        return steps.eq_step(read, val)
    if op == "!=":
        small = isinstance(val, int) and val < 1 << 16
        return (steps.ne, steps.shared_args(read, val) if small else (read, val))
    import operator
    fn = {"<": operator.lt, ">": operator.gt, "<=": operator.le, ">=": operator.ge}[op]
    return (steps.compare, (read, fn, val))


def prefix_step(read: Any, net: int, mask: int, neg: bool) -> Step:
    return (steps.prefix, steps.shared_args(read, shared(net), shared(mask), neg))


def range_step(read: Any, lo: int, hi: int, neg: bool) -> Step:
    return (steps.in_range, (read, lo, hi, neg))


def flags_step(read: Any, bits: int) -> Step:
    return (steps.flags, steps.shared_args(read, shared(bits)))


def set_step(read: Any, st: NftSet, neg: bool, concat: bool) -> Step:
    """An anonymous set is the rule's own; a named one is the table's, found by its name when a packet
    comes (so a namespace that shares another's chains sees its own sets: pktemu.nftables.shared)."""
    if _plain(st) and not concat:
        return (steps.member, (read, frozenset(k[0] for k in st.elements), neg))
    if not st.anonymous:
        return (steps.named_set_lookup, (read, st.name, neg, concat))
    return (steps.set_lookup, (read, st, neg, concat))


def vmap_step(read: Any, st: NftSet, lhs: Lhs, rule: Rule) -> Step:
    """A verdict map: the element's verdict, or no match; a named map's hit is noted with its element."""
    concat = len(lhs.fields) > 1
    if _plain(st) and not concat:
        verdicts = {k[0]: el.data for k, el in st.elements.items()}
        if sorted(verdicts) == list(range(len(verdicts))):
            return (steps.vmap_index, (read, *(verdicts[n] for n in range(len(verdicts)))))
        return (steps.vmap_plain, (read, verdicts))

    if not st.anonymous:
        return (named_vmap, (read, st.name, rule, concat))

    def step(p: Any, s: Any) -> Any:
        v = read(p, s)
        if v is None:
            return False
        el = st.lookup(v if concat else (v,), s.node.now())
        return False if el is None else el.data
    return steps.wrap(step)


def named_vmap(p: Any, s: Any, a: Any) -> Any:
    """`vmap @map`: the table's map by its name (see set_step); a hit is noted with its element."""
    from pktemu.nftables.notes import note
    read, name, rule, concat = a
    v = read(p, s)
    if v is None:
        return False
    st = p.sets[name]
    el = st.lookup(v if concat else (v,), s.node.now())
    if el is None:
        return False
    note(p, s, rule, f" [{element_text(st, el)}]")
    return el.data


def _plain(st: NftSet) -> bool:
    """An anonymous set of exact single-field keys, without timeouts: it never changes, so a rule
    can keep its keys in a plain dict or frozenset (one probe, no set and element objects)."""
    return (st.anonymous and not st.prefixes and not st.ranges
            and all(el.expires_ns is None and el.timeout_ns is None for el in st.elements.values()))


__all__ = ["parse_rule", "parse_verdict", "element_text", "sorted_elements"]
