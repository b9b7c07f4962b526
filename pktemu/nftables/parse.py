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
from pktemu.nftables.elements import insert, merge_intervals, parse_elements
from pktemu.nftables.lexer import Cursor, describe, tokenize
from pktemu.nftables.model import (
    FAMILIES, REFUSED_FAMILIES, Chain, NftRuleset,
    NftSet, Table,
)
from pktemu.nftables.nft_fast import apply_text
from pktemu.nftables.nft_forms import BAD
from pktemu.nftables.nft_keywords import KEYWORDS
from pktemu.nftables.parse_bodies import chain_body, flag_list, rule_tokens, set_body
from pktemu.nftables.rules import parse_rule

VERBS = ("add", "create", "insert", "delete", "destroy", "flush")
OBJECTS = ("table", "chain", "rule", "set", "map", "element", "ruleset")


def load_nft(text: str, path: str, rs: NftRuleset | None = None, fast: bool = True,
             any_names: bool = False, now: int = 0) -> NftRuleset:
    """Apply an `nft -f` file to `rs` (a new ruleset by default) and check its references; `fast`
    False reads every line with the general parser (what the fast loader is held to); `any_names`
    takes chain names nft's scanner reads as keywords (text made from JSON, where nft takes them);
    `now` is the virtual time of the load (ns), from which its elements' timeouts count down."""
    rs = rs if rs is not None else NftRuleset()
    collecting = gc.isenabled()
    gc.disable()        # a load only adds objects: the cyclic GC's passes over them would cost a third
    tx = rs.transaction()
    try:
        ints: dict[int, int] = {}

        def general(chunk: str, line: int) -> None:
            _apply(Cursor(tokenize(chunk, path, line), path, ints, any_names, now), rs)
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
        name = cur.chain_name()
        if verb in ("add", "create"):
            if verb == "create" and name in table.chains:
                raise cur.error(f"chain {name} exists")
            c = table.get_chain(name)
            fresh = c is None
            if c is None:
                name = sys.intern(name)         # a jump's target is the same object: no string compare
                c = table.chains[name] = Chain(name, handle=table.new_handle())
                table.chains_changed()
                if not name or BAD(name) is not None or name in KEYWORDS:
                    table.odd_names = True
                if table.tx is not None:
                    table.tx.fresh(c)
            if cur.accept("{"):
                chain_body(cur, table, c, rules=False, new=fresh)
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
                set_body(cur, new)
                table.sets[name] = new
            elif cur.accept("{"):
                set_body(cur, old)
            return _end(cur)
        s = table.set(name, where)
        if verb == "flush":
            s.clear()
        else:
            del table.sets[name]
        return _end(cur)
    if obj == "element":
        s = table.set(cur.word("a set name"), where)
        if verb in ("add", "create"):
            parse_elements(cur, s, each=lambda el, at: insert(cur, s, el, at, verb == "create"))
            if s.automerge:
                merge_intervals(s)
            return _end(cur)
        for el in parse_elements(cur, s, keys_only=True):
            try:
                s.remove(el.key)
            except KeyError:
                if verb == "delete":
                    raise cur.error(f"no such element in {s.name}") from None
        return _end(cur)
    _rule_command(cur, table, verb, where)


def _rule_command(cur: Cursor, table: Table, verb: str, where: str) -> None:
    c = table.chain(cur.chain_name(), where)
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
    rule = parse_rule(Cursor(rule_tokens(cur), cur.path, cur.ints, cur.any_names), table, c.name)
    rule.handle = table.new_handle()
    if pos is None:
        pos = 0 if verb == "insert" else len(c.rules)
    c.rules.insert(pos, rule)


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
            return cur.separator()
        w = cur.word("comment, flags, set, map or chain")
        if w == "comment":
            t.comment = cur.word("a comment string")
        elif w == "flags":
            at = cur.peek()
            t.flags = flag_list(cur)
            bad = [f for f in t.flags if f not in ("dormant", "owner", "persist")]
            if bad:
                raise cur.error(f"unknown table option {bad[0]} (nft refuses it)", at)
        elif w in ("set", "map"):
            sname = cur.word(f"a {w} name")
            s = t.get_set(sname) or NftSet(sname, w, handle=t.new_handle())
            cur.expect("{")
            set_body(cur, s)
            t.sets[sname] = s
        elif w == "chain":
            cname = cur.chain_name()
            c = t.get_chain(cname)
            fresh = c is None
            if c is None:
                cname = sys.intern(cname)
                c = t.chains[cname] = Chain(cname, handle=t.new_handle())
                t.chains_changed()
                if not cname or BAD(cname) is not None or cname in KEYWORDS:
                    t.odd_names = True
            cur.expect("{")
            chain_body(cur, t, c, rules=True, new=fresh)
        else:
            raise cur.error(f"unknown table statement '{w}'")
        cur.separator()
