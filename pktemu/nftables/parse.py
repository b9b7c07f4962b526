"""`nft -f` text: the block syntax `nft list ruleset` prints and the flat commands kube-proxy sends.

    table ip t { comment "c"; set s { type ipv4_addr; elements = { 1.2.3.4 } } chain c { ... } }
    add table ip t { comment "c" ; }      add chain ip t c { type nat hook output priority -100 ; }
    add rule ip t c ip daddr @s jump d    add element ip t s { 1.2.3.4 }   flush chain ip t c

Commands apply in order to one NftRuleset, as nft's single transaction does; a reference to a
chain that does not exist at the end is an error naming the rule. Errors are one line,
`file:line: what`.
"""
from __future__ import annotations

import gc
import sys

from pktemu.netfilter.gc_pause import settle_young
from pktemu.nftables.check import check
from pktemu.nftables.elements import parse_elements, parse_time
from pktemu.nftables.lexer import Cursor, Token, describe, tokenize
from pktemu.nftables.model import (
    CHAIN_TYPES, DATA_TYPES, FAMILIES, HOOK_NAMES, KEY_TYPES, REFUSED_FAMILIES, STD_PRIOS, Chain, NftRuleset,
    NftSet, Table,
)
from pktemu.nftables.nft_fast import apply_text
from pktemu.nftables.nft_forms import BAD
from pktemu.nftables.rules import parse_rule

VERBS = ("add", "create", "insert", "delete", "destroy", "flush")
OBJECTS = ("table", "chain", "rule", "set", "map", "element", "ruleset")


def load_nft(text: str, path: str, rs: NftRuleset | None = None, fast: bool = True) -> NftRuleset:
    """Apply an `nft -f` file to `rs` (a new ruleset by default) and check its references; `fast`
    False reads every line with the general parser (what the fast loader is held to)."""
    rs = rs if rs is not None else NftRuleset()
    collecting = gc.isenabled()
    gc.disable()        # a load only adds objects: the cyclic GC's passes over them would cost a third
    tx = rs.transaction()
    try:
        ints: dict[int, int] = {}

        def general(chunk: str, line: int) -> None:
            _apply(Cursor(tokenize(chunk, path, line), path, ints), rs)
        if fast:
            apply_text(text, path, rs, ints, general)
        else:
            general(text, 1)
        check(rs, path)
    except BaseException:
        tx.restore()
        raise
    finally:
        tx.close()
        if collecting:
            settle_young()
            gc.enable()
    return rs


def _apply(cur: Cursor, rs: NftRuleset) -> None:
    """Every command of a run of lines the fast loader left, in order (`load_nft` undoes all on error)."""
    while True:
        while cur.peek().text in (";",) or cur.peek().kind == "nl":
            if cur.i >= len(cur.toks) - 1:
                break
            cur.next()
        if cur.i >= len(cur.toks) - 1:
            break
        t = cur.next()
        if t.text == "table" and t.kind == "word":
            _table_block(cur, rs, "add")
        elif t.text in VERBS and t.kind == "word":
            _command(cur, rs, t.text)
        else:
            raise cur.error(f"unknown command {describe(t)} (expected table, {', '.join(VERBS)})", t)


def _family(cur: Cursor) -> str:
    w = cur.peek().text
    if w in FAMILIES:
        cur.next()
        return w
    if w in REFUSED_FAMILIES:
        raise cur.error(f"family {w} is not supported (ip and inet are)")
    return "ip"


def _end(cur: Cursor) -> None:
    t = cur.peek()
    if t.kind != "nl" and t.text != ";":
        raise cur.error(f"unexpected {describe(t)}", t)


def _command(cur: Cursor, rs: NftRuleset, verb: str) -> None:
    obj = cur.word("an object (table, chain, rule, set, map, element)")
    if obj not in OBJECTS:
        raise cur.error(f"unknown object '{obj}' after {verb}")
    if obj == "ruleset":
        if verb != "flush":
            raise cur.error(f"{verb} ruleset is not supported (flush ruleset is)")
        rs.tables.clear()
        return _end(cur)
    fam = _family(cur)
    tname = cur.word("a table name")
    where = f"{cur.path}:{cur.peek().line}"
    if obj == "table":
        if verb in ("add", "create"):
            if verb == "create" and (fam, tname) in rs.tables:
                raise cur.error(f"table {fam} {tname} exists")
            _table_block(cur, rs, verb, fam, tname)
            return
        t = rs.table(fam, tname, where) if verb != "destroy" else rs.tables.get((fam, tname))
        if verb in ("delete", "destroy"):
            rs.tables.pop((fam, tname), None)
        elif verb == "flush" and t is not None:
            t.chains = {n: Chain(c.name, c.type, c.hook, c.priority, c.policy, c.comment, c.handle)
                        for n, c in t.chains.items()}
            t.chains_changed()
            for s in t.sets.values():
                if t.tx is not None:
                    t.tx.touch(s)
                s.clear()
        return _end(cur)
    table = rs.table(fam, tname, where)
    if obj == "chain":
        name = cur.word("a chain name")
        if verb in ("add", "create"):
            if verb == "create" and name in table.chains:
                raise cur.error(f"chain {name} exists")
            c = table.get_chain(name)
            if c is None:
                name = sys.intern(name)         # a jump's target is the same object: no string compare
                c = table.chains[name] = Chain(name, handle=table.new_handle())
                table.chains_changed()
                if not name or BAD(name) is not None:
                    table.odd_names = True
                if table.tx is not None:
                    table.tx.fresh(c)
            if cur.accept("{"):
                _chain_body(cur, table, c, rules=False)
            return _end(cur)
        if verb == "flush":
            c = table.chain(name, where)
            c.rules.clear()
        elif name in table.chains or verb == "delete":
            table.chain(name, where)
            # as nf_tables_delchain: the chain's own rules go with it (kube-proxy deletes its base
            # chains with their jumps on a restart); one still jumped to fails the final check
            del table.chains[name]
            table.chains_changed()
        return _end(cur)
    if obj in ("set", "map"):
        name = cur.word(f"a {obj} name")
        if verb in ("add", "create"):
            if name in table.sets and verb == "create":
                raise cur.error(f"{obj} {name} exists")
            old = table.get_set(name)
            if old is None:
                new = NftSet(name, obj, handle=table.new_handle())
                cur.expect("{")
                _set_body(cur, new)
                table.sets[name] = new
            elif cur.accept("{"):
                _set_body(cur, old)
            return _end(cur)
        s = table.set(name, where)
        if verb == "flush":
            s.clear()
        else:
            del table.sets[name]
        return _end(cur)
    if obj == "element":
        s = table.set(cur.word("a set name"), where)
        els = parse_elements(cur, s, keys_only=verb in ("delete", "destroy"))
        for el in els:
            if verb in ("add", "create"):
                if verb == "create" and el.key in s.elements:
                    raise cur.error(f"element exists in {s.name}")
                s.add(el)
            else:
                try:
                    s.remove(el.key)
                except KeyError:
                    if verb == "delete":
                        raise cur.error(f"no such element in {s.name}") from None
        return _end(cur)
    _rule_command(cur, table, verb, where)


def _rule_command(cur: Cursor, table: Table, verb: str, where: str) -> None:
    c = table.chain(cur.word("a chain name"), where)
    pos: int | None = None
    if cur.peek().text in ("handle", "position", "index"):
        how = cur.next().text
        num = cur.number("a number")
        if how == "index":
            if num >= len(c.rules):
                raise cur.error(f"no rule at index {num} in chain {c.name}")
            pos = num
        else:
            pos = next((i for i, r in enumerate(c.rules) if r.handle == num), None)
            if pos is None:
                raise cur.error(f"no rule with handle {num} in chain {c.name}")
        if verb in ("delete", "destroy"):
            del c.rules[pos]
            return _end(cur)
        if verb != "insert":              # as nft: `add` goes after the rule named, `insert` before it
            pos += 1
    elif verb in ("delete", "destroy"):
        raise cur.error("delete rule needs 'handle N'")
    rule = parse_rule(Cursor(_rule_tokens(cur), cur.path, cur.ints), table, c.name)
    rule.handle = table.new_handle()
    if pos is None:
        pos = 0 if verb == "insert" else len(c.rules)
    c.rules.insert(pos, rule)


def _rule_tokens(cur: Cursor) -> list[Token]:
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


def _table_block(cur: Cursor, rs: NftRuleset, verb: str, fam: str | None = None,
                 name: str | None = None) -> None:
    if fam is None:
        fam = _family(cur)
        name = cur.word("a table name")
    assert name is not None
    t = rs.tables.get((fam, name))
    if t is None:
        t = rs.tables[(fam, name)] = Table(fam, name)
    if not cur.accept("{"):
        return _end(cur)
    while True:
        cur.skip_nl()
        if cur.accept(";"):
            continue
        if cur.accept("}"):
            return
        w = cur.word("comment, flags, set, map or chain")
        if w == "comment":
            t.comment = cur.word("a comment string")
        elif w == "flags":
            t.flags = _list(cur)
        elif w in ("set", "map"):
            sname = cur.word(f"a {w} name")
            s = t.get_set(sname) or NftSet(sname, w, handle=t.new_handle())
            cur.expect("{")
            _set_body(cur, s)
            t.sets[sname] = s
        elif w == "chain":
            cname = cur.word("a chain name")
            c = t.get_chain(cname)
            if c is None:
                cname = sys.intern(cname)
                c = t.chains[cname] = Chain(cname, handle=t.new_handle())
                t.chains_changed()
                if not cname or BAD(cname) is not None:
                    t.odd_names = True
            cur.expect("{")
            _chain_body(cur, t, c, rules=True)
        else:
            raise cur.error(f"unknown table statement '{w}'")


def _list(cur: Cursor) -> list[str]:
    out = [cur.word("a flag")]
    while cur.accept(","):
        out.append(cur.word("a flag"))
    return out


def _set_body(cur: Cursor, s: NftSet) -> None:
    while True:
        cur.skip_nl()
        if cur.accept(";"):
            continue
        if cur.accept("}"):
            break
        w = cur.word("type, flags, timeout, size, comment or elements")
        if w == "type":
            s.types = [_type(cur, KEY_TYPES)]
            while cur.accept("."):
                s.types.append(_type(cur, KEY_TYPES))
            if cur.accept(":"):
                s.data_type = _type(cur, DATA_TYPES)
            if (s.kind == "map") != (s.data_type is not None):
                raise cur.error(f"{s.kind} {s.name}: " + ("a map needs 'type KEY : DATA'" if s.kind == "map"
                                                          else "a set has no ': DATA' type"))
        elif w == "typeof":
            raise cur.error("'typeof' set declarations are not supported: use 'type'")
        elif w == "flags":
            s.flags = _list(cur)
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
            continue
        elif w == "comment":
            s.comment = cur.word("a comment string")
        elif w == "elements":
            cur.expect("=")
            if not s.types:
                raise cur.error(f"{s.kind} {s.name}: elements before its type")
            for el in parse_elements(cur, s):
                s.add(el)
        else:
            raise cur.error(f"unknown {s.kind} property '{w}'")
    if not s.types:
        raise cur.error(f"{s.kind} {s.name} has no type")


def _type(cur: Cursor, allowed: tuple[str, ...] | dict[str, tuple[int, bool]]) -> str:
    t = cur.next()
    if t.text not in allowed:
        raise cur.error(f"unsupported type '{t.text}' (one of {', '.join(allowed)})", t)
    return t.text


def _chain_body(cur: Cursor, t: Table, c: Chain, rules: bool) -> None:
    while True:
        cur.skip_nl()
        if cur.accept(";"):
            continue
        if cur.accept("}"):
            return
        w = cur.peek().text
        if w == "type" and cur.peek().kind == "word":
            cur.next()
            _base_chain(cur, c)
        elif w == "policy":
            cur.next()
            c.policy = cur.word("accept or drop")
            if c.policy not in ("accept", "drop"):
                raise cur.error(f"chain policy '{c.policy}': expected accept or drop")
        elif w == "comment" and (cur.peek(2).kind == "nl" or cur.peek(2).text in (";", "}")):
            cur.next()
            c.comment = cur.word("a comment string")
        elif rules:
            rule = parse_rule(Cursor(_rule_tokens(cur), cur.path, cur.ints), t, c.name)
            rule.handle = t.new_handle()
            c.rules.append(rule)
        else:
            raise cur.error(f"unexpected '{w}' in a chain declaration")


def _base_chain(cur: Cursor, c: Chain) -> None:
    ctype = cur.word("filter, nat or route")
    if ctype not in CHAIN_TYPES:
        raise cur.error(f"unknown chain type '{ctype}' (one of {', '.join(CHAIN_TYPES)})")
    cur.expect("hook")
    hook = cur.word("a hook")
    if hook not in HOOK_NAMES:
        raise cur.error(f"hook '{hook}' is not supported (one of {', '.join(HOOK_NAMES)})")
    if ctype == "nat" and hook == "forward":
        raise cur.error("a nat chain cannot hook forward")
    if cur.accept("device"):
        raise cur.error("'device' is for netdev chains, which are not supported")
    cur.expect("priority")
    c.type, c.hook, c.priority = ctype, HOOK_NAMES[hook], _priority(cur)


def _priority(cur: Cursor) -> int:
    t = cur.next()
    names = dict(STD_PRIOS)
    try:
        if t.text in names:
            v = names[t.text]
            if cur.peek().text in ("+", "-"):
                sign = 1 if cur.next().text == "+" else -1
                v += sign * int(cur.word("a number"))
            return v
        return int(t.text)
    except ValueError:
        raise cur.error(f"bad priority {describe(t)}", t) from None
