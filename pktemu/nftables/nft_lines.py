"""kube-proxy's one-line `nft -f` commands read straight from their words (see nft_fast).

`LineLoader.line` takes `add chain|rule|element` and `flush chain` lines of the shapes kube-proxy
writes and builds the very objects the general parser builds for them (same print text, steps,
handles and line), except that a rule keeps, instead of its text, its shape (pktemu.nftables.shapes);
any other line, or one the general parser would refuse, it leaves untouched.
"""
from __future__ import annotations

from typing import Any

from pktemu.nftables import shapes, steps
from pktemu.nftables.model import FAMILIES, Chain, Element, Rule, Step, Table, make_chain, make_verdict
from pktemu.nftables.nft_forms import BAD, LoadState, new_object
from pktemu.nftables.nft_keywords import KEYWORDS
from pktemu.nftables.nft_words import (
    ADDR_FIELDS, ADDR_PARTS, JUMPS, KIND, L4_READ, MASK, PORTS, VERDICT_PART, VERDICTS,
    item_part, num, plain,
)
from pktemu.nftables.rules import cmp_step, prefix_step
from pktemu.nftables.nat_stmt import nat_like, nat_step
from pktemu.nftables.statements import verdict_step
from pktemu.nftables.values import PROTOS, shared


def _element_form(words: list[str]) -> tuple[str, ...]:
    """The form of an element whose key starts with an address: the set and the words after the
    address, but a jump's target (`S { A . tcp . 80 : goto C }`)."""
    return (words[0], *words[3:-2]) if len(words) > 6 and words[-4] == ":" else (words[0], *words[3:-1])


class LineLoader(LoadState):
    """One load's lines: each taken by a short path (see LoadState) or read word by word here."""

    def line(self, line: str, no: int) -> bool:
        """Apply one line if it is a shape this loader knows and would load without error (True);
        else change nothing (False). A line that starts as the last one of its kind did (`add rule
        ip kube-proxy `) is first tried by a short path (see LoadState), which reads only the rest;
        the two most frequent, an address rule of a form met before and a new chain, are written out
        here (a call less for each of some 100,000 lines)."""
        if line.startswith(self.rule_head):
            p = line[len(self.rule_head):].split(" ", 4)
            if len(p) == 5:
                if p[1] == "ip":
                    by = self.rule_forms.get(p[2])
                    form = by.get(p[4]) if by is not None else None
                    if form is not None and self._addr_rule(form, p, no):
                        return True
                elif self._rule_line(p, line, no):
                    return True
        elif line.startswith(self.chain_head):
            name = line[len(self.chain_head):]
            table = self.chain_table
            if name and BAD(name) is None and table is not None and name not in KEYWORDS:
                chains = table.chains
                if name in chains:
                    return self._chain(table, "add", name)
                h = table.next_handle
                table.next_handle = h + 1
                c = new_object(Chain)            # make_chain's
                c.name, c.type, c.hook, c.priority, c.policy, c.comment, c.handle, c.rules = \
                    name, None, None, 0, "accept", None, h, []
                chains[name] = c
                if self.grown is not table:
                    self.grown = table
                    table.chains_changed()
                return True
        elif line.startswith(self.element_head):
            table = self.element_table
            assert table is not None
            if not ('"' in line or "#" in line or ";" in line or "\t" in line or "\r" in line
                    or line[-1] == "\\"):
                words = line[len(self.element_head):].split(" ")
                if "" not in words and self._element(table, words, line):     # no blank but single spaces
                    return True
        return self._line(line, no)

    def _rule_line(self, p: list[str], line: str, no: int) -> bool:
        """An `add rule` line after its table (split at its first four blanks) but an address rule."""
        table = self.rule_table
        assert table is not None
        w = p[1]
        c = table.chains.get(p[0])          # a name of the table is one word (see Table.odd_names)
        if c is None:
            return False
        if w == "meta":
            return self._dnat_rule(table, c, p, no)
        rest = line[len(self.rule_head):]
        if w == "numgen":
            if '"' in line or "#" in line or ";" in line or "\t" in line or "\r" in line or line[-1] == "\\":
                return False
            p = rest.split(" ")
            return "" not in p and self._numgen_rule(table, c, p, len(p), line, no)
        return False

    def _line(self, line: str, no: int) -> bool:
        """Any line of the shapes this loader takes, read word by word."""
        words = line.split()
        if len(words) < 5 or '"' in line or "#" in line or ";" in line or line.endswith("\\"):
            return False
        if " ".join(words) != line and len("".join(words)) + line.count(" ") != len(line):
            return False              # a tab or other blank the tokenizer reads otherwise than split
        verb, obj = words[0], words[1]
        if words[2] not in FAMILIES:
            return False
        table = self.rs.tables.get((words[2], words[3]))
        if table is None or table.odd_names:
            return False
        if verb == "add":
            self._heads(line, obj, words, table)
        if obj == "rule" and verb == "add":
            return self._rule(table, words, line, no)
        if (obj == "chain" and len(words) == 5 and (verb == "add" or verb == "flush") and plain(line)
                and words[4] not in KEYWORDS):
            return self._chain(table, verb, words[4])
        if obj == "element" and verb == "add":
            return self._element(table, words[4:], line)
        return False

    def _chain(self, table: Table, verb: str, name: str) -> bool:
        c = table.chains.get(name)
        if verb == "flush" and c is None:
            return False
        tx = table.tx
        if c is not None:
            if tx is not None and c.handle < tx.handles.get(id(table), 0):
                tx.touch(c)               # an older chain: saved (a new one goes if the transaction fails)
            if verb == "flush":
                c.rules.clear()
            return True
        table.chains[name] = make_chain(name, table.new_handle())
        table.chains_changed()
        return True

    def _element(self, table: Table, words: list[str], line: str) -> bool:
        """`add element FAM T S { K1 . K2 [: VERDICT] }`: one element of plain keys (`words` from S on).
        One of a form met before (`_element_form`: every Service's `S { A . tcp . 80 : goto C }`) is
        made of the address, the target and what the first one of the form was read into."""
        s = table.sets.get(words[0])
        if s is not None and s.timeout is not None:
            return False              # its elements expire: the general parser gives them the set's timeout
        form = self.element_forms.get(_element_form(words))
        if (form is not None and form[0] is s and len(words) == form[3] and words[1] == "{"
                and words[-1] == "}" and line.count("{") == 1 and line.count("}") == 1 and "," not in line):
            v = self.addrs.get(words[2])
            if v is None:
                v = self._addr(words[2])
            if v is not None:
                _, rest, kind, _ = form
                if kind is None or words[-2] not in KEYWORDS:
                    data = None if kind is None else make_verdict(kind, self._target(table, words[-2]))
                    return self._add_element(table, s, (v, *rest), data)
        return self._element_long(table, s, words, line)

    def _add_element(self, table: Table, s: Any, key: tuple[int, ...], data: Any) -> bool:
        if table.tx is not None and s is not self.sets_touched[0] and s is not self.sets_touched[1]:
            table.tx.touch(s)             # kube-proxy's elements go to two sets in turn
            self.sets_touched = (s, self.sets_touched[0])
        el = new_object(Element)                # Element(key, data)'s, without a call per element
        el.key, el.data, el.comment, el.key_end, el.prefix, el.timeout_ns, el.expires_ns = \
            key, data, None, None, None, None, None
        # what NftSet.add does for an element without interval; one the set holds stays (as
        # elements.insert keeps it), and one with other data is left to the general parser to refuse
        old = s.elements.setdefault(key, el)
        return old is el or old.data == data

    def _element_long(self, table: Table, s: Any, words: list[str], line: str) -> bool:
        if (s is None or s.size or s.interval or len(words) < 4 or words[1] != "{" or words[-1] != "}"
                or line.count("{") != 1 or line.count("}") != 1 or "," in line):
            return False
        i, n = 2, len(words) - 1
        key: list[int] = []
        ints = self.ints
        for k, typ in enumerate(s.types):
            if k:
                if i >= n or words[i] != ".":
                    return False
                i += 1
            if i >= n:
                return False
            w = words[i]
            if typ == "ipv4_addr":
                v = self._addr(w)         # the object the Service's rule has (see LoadState._addr)
                if v is None:
                    return False
                key.append(v)
                i += 1
                continue
            if typ == "inet_proto":
                v = PROTOS.get(w)
            elif typ == "inet_service":
                v = num(w, 65535)
            else:
                return False
            if v is None:
                return False
            key.append(ints.setdefault(v, v))
            i += 1
        data = None
        if i < n and words[i] == ":":
            if s.data_type != "verdict" or i + 1 >= n:
                return False
            w = words[i + 1]
            if w in VERDICTS and i + 2 == n:
                data = make_verdict(KIND[w], None)
            elif w in JUMPS and i + 3 == n and words[i + 2] not in KEYWORDS:
                data = make_verdict(KIND[w], self._target(table, words[i + 2]))
            else:
                return False
        elif i != n or s.data_type is not None:
            return False
        if s.types and s.types[0] == "ipv4_addr" and (data is None or data.target is not None):
            self.element_forms.setdefault(_element_form(words),
                                          (s, tuple(key[1:]), None if data is None else data.kind, n + 1))
        return self._add_element(table, s, tuple(key), data)

    def _rule(self, table: Table, words: list[str], line: str, no: int) -> bool:
        c = table.chains.get(words[4])
        n = len(words)
        if c is None or n < 6 or words[5] in ("handle", "position", "index"):
            return False
        braces = 0
        if "{" in line or "}" in line or "," in line:
            braces = line.count("{") + line.count("}") + line.count(",")
        rule = Rule("", (), c.name, self.path, no << 32)
        out: list[Any] = []           # the flat steps
        parts: list[Any] = []         # item -> its text, or (pre, fmt, extra, post): see _part
        deps: list[Any] = []          # item -> ("l4", P), ("needs", P) or None, as for rule_text
        anon = 0
        fixed = True                  # every item's step is made of its words and the table alone
        eq_port = False               # a `port == P` match so far
        ints = self.ints
        i = 5
        while i < n:
            w = words[i]
            nxt = words[i + 1] if i + 1 < n else ""
            dep: Any = None
            if w == "ip" and nxt in ADDR_FIELDS:
                i, step, part = self._ip(words, i, n, nxt)
                if step is None:
                    return False
            elif w in JUMPS and nxt and not braces:
                if nxt in KEYWORDS:
                    return False      # nft's syntax error: the general parser's
                i += 2
                if i < n:
                    return False      # a statement after a terminal one: the general parser's error
                hit = self.jumps.get((id(table), w, nxt))
                if hit is None:
                    v = make_verdict(KIND[w], self._target(table, nxt))
                    hit = self.jumps[(id(table), w, nxt)] = (v, (steps.go, v), table)
                step, part = hit[1], VERDICT_PART
            elif (w, nxt) in PORTS:
                read, proto = PORTS[(w, nxt)]
                op, at = ("!=", i + 3) if i + 2 < n and words[i + 2] == "!=" else ("==", i + 2)
                port = num(words[at], 65535) if at < n else None
                if port is None:
                    return False
                i = at + 1
                if (op == "==" and eq_port) or (any(deps) and (proto is None or any(
                        d is not None and d[1] != proto for d in deps))):
                    return False      # `th` after the protocol is known, two ports nft joins into one
                                      # compare (rule_print) or a conflicting protocol (refused there)
                eq_port |= op == "=="
                if proto is not None:
                    dep = ("needs", proto)
                key = (w, nxt, op, port)
                step = self.consts.get(key)
                if step is None:
                    step = self.consts[key] = cmp_step(read, op, ints.setdefault(port, port))
                part = self._text(key, f"{w} {nxt} {'!= ' if op == '!=' else ''}{port}")
            elif w == "meta" and nxt == "l4proto":
                op, at = ("!=", i + 3) if i + 2 < n and words[i + 2] == "!=" else ("==", i + 2)
                p = PROTOS.get(words[at]) if at < n else None
                if p is None:
                    return False
                i = at + 1
                if op == "==":
                    dep = ("l4", p)
                step = self.consts.get(("l4", op, p))
                if step is None:
                    step = self.consts[("l4", op, p)] = cmp_step(L4_READ, op, ints.setdefault(p, p))
                part = self._text(("l4", op, p), f"meta l4proto {'!= ' if op == '!=' else ''}{words[at]}")
            elif w in VERDICTS:
                i += 1
                if i < n:
                    return False      # as after a jump (or `continue ...`, which the general parser takes)
                fixed = False
                step, part = verdict_step(rule, make_verdict(KIND[w], None)), VERDICT_PART
            elif w == "dnat" and nxt == "to" and table.family == "ip" and i + 2 < n:
                target = words[i + 2]
                i += 3
                fixed = False
                if i < n:
                    return False      # flags, or a statement after this terminal one
                nat = self._nat_target(target)
                if nat is None or (nat[1] is not None and not any(deps)):
                    return False      # ports without a transport protocol match: refused there
                like = self.consts.get(("dnat", nat[1], nat[2]))
                if like is None:
                    step = self.consts[("dnat", nat[1], nat[2])] = nat_step(rule, "dnat", *nat, [])
                else:
                    step = nat_like(rule, nat[0], like)
                part = item_part("dnat to ", shapes.nat, None, shapes.nat_port(nat[1], nat[2]))
            elif w == "numgen":
                got = self._numgen(table, words, i, n, braces)
                if got is None:
                    return False
                i, mod, step = got
                braces, anon, fixed = 0, anon + 1, False
                part = item_part("", shapes.numgen_vmap, mod, "")
            else:
                return False
            out += step
            parts.append(part)
            deps.append(dep)
        if braces:
            return False
        shown = []                    # as rule_text: `meta l4proto tcp tcp dport 80` prints `tcp dport 80`
        for k, part in enumerate(parts):
            dep = deps[k]
            if dep is not None and dep[0] == "l4" and _killed(deps, k):
                continue
            shown.append(part if isinstance(part, str) else (2 * k + 1, *part))
        rule.txt = self._shape(shown)
        rule.steps = tuple(out)
        table.anon += anon
        rule.pos |= table.new_handle()
        self._append(table, c, rule)
        if fixed and n >= 9 and words[5] == "ip":
            self._record(table, words[4:], rule)
        elif n == 11:
            self._nat_form(table, words[4:], rule.txt)
        return True

    def _ip(self, words: list[str], i: int, n: int, which: str) -> tuple[int, Step | None, Any]:
        """`ip saddr|daddr [!=] A[/L]`: (next word, step, print part), or no step when not plain."""
        read = ADDR_FIELDS[which]
        neg = i + 2 < n and words[i + 2] == "!="
        at = i + 3 if neg else i + 2
        if at >= n:
            return at, None, None
        w = words[at]
        if "/" not in w:
            v = self.addrs.get(w)
            if v is None:
                v = self._addr(w)
                if v is None:
                    return at, None, None
            step = cmp_step(read, "!=", v) if neg else steps.eq_step(read, shared(v))
            return at + 1, step, ADDR_PARTS[(which, neg)]
        got = self.consts.get((which, neg, w))
        if got is None:
            addr, _, plen_text = w.partition("/")
            v = self._addr(addr)
            plen = num(plen_text, 32)
            if v is None or plen is None or v & ~MASK[plen] & 0xFFFFFFFF:
                return at, None, None
            mask = MASK[plen]
            got = self.consts[(which, neg, w)] = prefix_step(read, v & mask, mask, neg)
        shown = w[:-3] if w.endswith("/32") else w          # nft lists a full prefix as the address
        return at + 1, got, self._text((which, neg, w), f"ip {which} {'!= ' if neg else ''}{shown}")


def _killed(deps: list[Any], k: int) -> bool:
    """Whether a later match on its protocol's header implies the `meta l4proto P` at `k` before
    another `meta l4proto` replaces it (rule_text: every item here but the last is a match)."""
    for d in deps[k + 1:]:
        if d is not None:
            return d == ("needs", deps[k][1])
    return False
