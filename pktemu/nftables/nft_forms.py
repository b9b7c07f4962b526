"""The state of one fast load (see nft_fast) and its short paths: the lines of a form met before.

Most of a kube-proxy ruleset is a handful of rule forms repeated once per Service or endpoint with
another address or other chains: `ip daddr A tcp dport P ip saddr != N/L jump C` and `ip saddr A jump
C` (an address, then constant words), `meta l4proto P dnat to A:P` and `numgen random mod N vmap { 0 :
goto E0 , ... }`. The general word loop (nft_lines.LineLoader._rule) records what it built for the
first line of an address form (the shape and the steps after the address's, all constants: a port
match, a prefix match, the one jump verdict of the table for that target), keyed by the table, the
field and the words after the address; a later line with the same words is then one dict probe,
the address read, and a Rule made of them, the very Rule the loop would build.

The short paths are tried on a line that starts as the last `add rule|chain|element` line read word
by word did (`add rule ip kube-proxy `): only the rest is split, at blanks (any other blank, a quote
or a comment makes the words miss the exact ones a form or a check wants, and the line goes the long
way). A table whose chain names are not all plain words (Table.odd_names) gets no short path for its
rules, whose chain name is taken as written. What the general parser runs between such lines may
delete or replace tables: the short paths forget them first (`forget`).
"""
from __future__ import annotations

import re
from typing import Any

from pktemu.nftables import shapes, steps
from pktemu.nftables.model import Chain, NftRuleset, Rule, Step, Table, Verdict, make_verdict
from pktemu.nftables.nft_keywords import KEYWORDS
from pktemu.nftables.nft_words import (
    ADDR_FIELDS, INDEX, KIND, VERDICTS, item_part, nat_target, num, quad,
)
from pktemu.nftables.nat_stmt import nat_like, nat_statement
from pktemu.nftables.statements import numgen_random
from pktemu.nftables.values import PROTOS, shared

_NUMGEN_WORDS = ["numgen", "random", "mod"]
#: how many addresses a load keeps read (see LoadState._addr)
ADDR_CACHE = 4096
#: object.__new__: a Rule, Verdict or Element made without a call to its __init__
new_object = object.__new__
#: finds what keeps a text from being one word as the tokenizer reads it (pktemu.nftables.lexer), or a
#: `\\`: a chain name in which it finds nothing (and not empty) is taken as is
BAD = re.compile(r'[ \t\r\n"#{};,\\]').search


class LoadState:
    """One load's state: the ruleset, the shared ints, the jump steps its rules share, the forms met."""

    def __init__(self, rs: NftRuleset, path: str, ints: dict[int, int]) -> None:
        self.rs, self.path, self.ints = rs, path, ints
        self.addrs: dict[str, int] = {}
        #: steps of constants (`tcp dport 80`, `ip saddr != 10.0.0.0/8`): one tuple for every rule
        self.consts: dict[tuple[Any, ...], Step] = {}
        #: (table, kind, target) -> the verdict and its step: every rule's `jump mark-for-masquerade`
        #: is then one Verdict (resolved once, as the table's epoch allows) and one step tuple
        self.jumps: dict[tuple[int, str, str], tuple[Any, Step, Table]] = {}
        self.texts: dict[tuple[Any, ...], str] = {}
        self.shapes: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        #: the shapes of `dnat` rules' forms, recorded by the general loop the first time it builds one
        self.forms: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        #: table id -> (table, field -> the words after the address -> (shape, the steps after the
        #: address's, the direct reader's eq function or None, the field's reader)): see _addr_rule
        self.addr_forms: dict[int, tuple[Table, dict[str, dict[str, tuple[Any, ...]]]]] = {}
        self.numgen_shapes: dict[int, tuple[Any, ...]] = {}
        #: the start of the last `add rule|chain|element` line read word by word, and its table
        self.rule_head = self.chain_head = self.element_head = "\n"
        self.rule_table: Table | None = None
        self.chain_table: Table | None = None
        self.element_table: Table | None = None
        #: the rule table's first handle of this transaction (see Snapshot.handles)
        self.rule_old = 0
        #: the table the chain short path added chains to since the general parser last ran
        self.grown: Table | None = None
        self.rule_forms: dict[str, dict[str, tuple[Any, ...]]] = {}
        #: the last two sets this load's elements went to (their transaction has saved them)
        self.sets_touched: tuple[Any, Any] = (None, None)
        self.touched: Chain | None = None
        self.ports: dict[str, tuple[int | None, int | None]] = {}
        #: mod -> the columns of a numgen vmap of gotos (see _gotos)
        self.gotos_cols: dict[int, tuple[Any, ...]] = {}
        #: (protocol word, port text) -> a `dnat to A:PORT` rule's match step, NAT args and shape
        self.dnat_forms: dict[tuple[str, str], tuple[Any, ...]] = {}
        #: (set name, the words after the address but a target) -> (the set, the rest of the key, the
        #: verdict kind or None): see LineLoader._element
        self.element_forms: dict[tuple[str, ...], tuple[Any, ...]] = {}

    def _target(self, table: Table, name: str) -> str:
        """A jump's target: the chain's own name object when the chain exists."""
        c = table.chains.get(name)
        return c.name if c is not None else name

    def _append(self, table: Table, c: Chain, rule: Rule) -> None:
        tx = table.tx
        if tx is not None and c is not self.touched:     # touching a chain twice changes nothing
            self.touched = c
            if c.handle < tx.handles.get(id(table), 0):
                tx.touch(c)
        c.rules.append(rule)

    def _nat_target(self, text: str) -> tuple[int, int | None, int | None] | None:
        """nat_target with the port part's reading kept (every endpoint of a port has the same)."""
        addr, colon, port = text.rpartition(":")
        if not colon or "-" in port:
            return nat_target(text, self._addr)
        ports = self.ports.get(port)
        if ports is None:
            got = nat_target("0.0.0.0:" + port, quad)
            if got is None:
                return None
            ports = self.ports[port] = got[1:]
        v = self.addrs.get(addr)
        if v is None:
            v = self._addr(addr)
            if v is None:
                return None
        return (v, *ports)

    def _text(self, key: tuple[Any, ...], text: str) -> str:
        """The print text of a constant step (a port, protocol or prefix match): one string per load."""
        got = self.texts.get(key)
        if got is None:
            got = self.texts[key] = text
        return got

    def _shape(self, parts: list[Any]) -> tuple[Any, ...]:
        """The shape of a rule whose items print as `parts` (a text, or `(i, pre, fmt, extra, post)`):
        `(template, (i, fmt, extra), ...)`, one tuple per form of rule in a load (see shapes)."""
        key = tuple(parts)
        got = self.shapes.get(key)
        if got is None:
            pieces, fills = [], []
            for part in parts:
                if isinstance(part, str):
                    pieces.append(part.replace("%", "%%"))
                else:
                    i, pre, fmt, extra, post = part
                    pieces.append(pre.replace("%", "%%") + "%s" + post.replace("%", "%%"))
                    fills.append((i, fmt, extra))
            got = self.shapes[key] = (" ".join(pieces), *fills)
        return got

    def _addr(self, w: str) -> int | None:
        """quad through the load's cache of the last addresses read: a Service's address is in its
        rule and its elements, an endpoint's in its two rules, all within a few lines, which then
        share one int. The cache is emptied now and then, so that it stays small (and in the CPU's
        caches) however many Services the ruleset has."""
        v = self.addrs.get(w)
        if v is None:
            v = quad(w)
            if v is not None:
                addrs = self.addrs
                if len(addrs) >= ADDR_CACHE:
                    addrs.clear()
                addrs[w] = v
        return v

    def _numgen(self, table: Table, words: list[str], i: int, n: int,
                braces: int) -> tuple[int, int, Step] | None:
        """`numgen random mod N vmap { 0 : V0 , 1 : V1 , ... }` with keys 0..N-1 in order (vmap_index)."""
        if i + 5 >= n or words[i + 1] != "random" or words[i + 2] != "mod" or words[i + 4] != "vmap":
            return None
        mod = num(words[i + 3], 2**32 - 1)
        if not mod or words[i + 5] != "{":
            return None
        j = i + 6
        verdicts: list[Any] = []
        used = 1
        chains = table.chains
        new = object.__new__
        while True:
            k = len(verdicts)     # words[j] must read as k: only its canonical decimal does
            if j + 2 >= n or words[j] != (INDEX[k] if k < 64 else str(k)) or words[j + 1] != ":":
                return None
            w = words[j + 2]
            if (w == "goto" or w == "jump") and j + 3 < n:
                t = words[j + 3]
                if t in KEYWORDS:
                    return None
                c = chains.get(t)
                v = new(Verdict)          # make_verdict's, without a call per endpoint
                v.kind, v.target, v.chain, v.epoch = KIND[w], t if c is None else c.name, None, 0
                j += 4
            elif w in VERDICTS:
                v = make_verdict(KIND[w], None)
                j += 3
            else:
                return None
            verdicts.append(v)
            if j < n and words[j] == ",":
                j += 1
                used += 1
                continue
            if j < n and words[j] == "}":
                used += 1
                break
            return None
        if used != braces:
            return None
        step = (steps.vmap_index, (numgen_random(mod, 0), *verdicts))
        return j + 1, mod, step

    def _gotos(self, table: Table, w: list[str], n: int, braces: int) -> tuple[int, int, Step] | None:
        """`_numgen` of `C numgen random mod N vmap { 0 : goto E0 , ... }` whose every verdict is a
        goto (a Service's endpoints): its words checked a column at a time (`w[7::5]` the keys, and so
        on) instead of one by one; None for any other form, left to `_numgen`."""
        mod = (n - 7) // 5
        if (n - 7) % 5 or mod < 1 or braces != mod + 1 or w[5] != "vmap" or w[6] != "{":
            return None
        cols = self.gotos_cols.get(mod)
        if cols is None:
            cols = self.gotos_cols[mod] = (str(mod), [str(k) for k in range(mod)], [":"] * mod,
                                           ["goto"] * mod, [","] * (mod - 1) + ["}"])
        if (w[4] != cols[0] or w[1:4] != _NUMGEN_WORDS or w[7::5] != cols[1] or w[8::5] != cols[2]
                or w[9::5] != cols[3] or w[11::5] != cols[4]):
            return None
        chains = table.chains
        goto = KIND["goto"]
        new = object.__new__
        verdicts: list[Any] = []
        for t in w[10::5]:
            if t in KEYWORDS:
                return None
            c = chains.get(t)
            v = new(Verdict)          # make_verdict's, without a call per endpoint
            v.kind, v.target, v.chain, v.epoch = goto, t if c is None else c.name, None, 0
            verdicts.append(v)
        return n, mod, (steps.vmap_index, (numgen_random(mod, 0), *verdicts))

    # the short paths ---------------------------------------------------------------------------
    def _heads(self, line: str, obj: str, words: list[str], table: Table) -> None:
        """After a line read word by word: the short paths' start of the next line of its kind."""
        head = f"add {obj} {words[2]} {words[3]} "
        if not line.startswith(head):
            return
        if obj == "rule":
            if table.odd_names:
                return
            self.rule_head, self.rule_table = head, table
            self.rule_old = table.tx.handles.get(id(table), 0) if table.tx is not None else 0
            got = self.addr_forms.get(id(table))
            if got is None:
                got = self.addr_forms[id(table)] = (table, {w: {} for w in ADDR_FIELDS})
            self.rule_forms = got[1]
        elif obj == "chain":
            self.chain_head, self.chain_table = head, table
        elif obj == "element":
            self.element_head, self.element_table = head, table

    def forget(self) -> None:
        """Before the general parser runs: the tables the short paths know may go."""
        self.rule_head = self.chain_head = self.element_head = "\n"     # no line starts so
        self.rule_table = self.chain_table = self.element_table = None
        self.bump()

    def bump(self) -> None:
        """The table the short path added chains to gets a new epoch (Table.chains_changed) once more:
        it does so at its first new chain, not at each (no packet runs during a load)."""
        if self.grown is not None:
            self.grown.chains_changed()
            self.grown = None

    def _addr_rule(self, form: tuple[Any, ...], p: list[str], no: int) -> bool:
        """`C ip saddr|daddr A <rest>` (`p`: the line after its table, split at its first four blanks)
        whose form (the field and the rest) was met before: the rest is then the very text of the
        words the form was recorded from."""
        table = self.rule_table
        assert table is not None
        c = table.chains.get(p[0])          # a name of the table is one word (see Table.odd_names)
        if c is None:
            return False
        w = p[3]
        v = self.addrs.get(w)
        if v is None:
            v = self._addr(w)
            if v is None:
                return False
        shape, tail, direct, read = form
        v = shared(v)
        first = (direct, v) if direct is not None else steps.eq_step(read, v)
        h = table.next_handle
        table.next_handle = h + 1
        rule = new_object(Rule)                 # Rule(...)'s, without a call per rule
        rule.txt, rule.steps, rule.chain, rule.src, rule.pos, rule.counter = \
            shape, (*first, *tail), c.name, self.path, no << 32 | h, None
        if table.tx is not None and c is not self.touched:
            self.touched = c
            if c.handle < self.rule_old:
                table.tx.touch(c)
        c.rules.append(rule)
        return True

    def _record(self, table: Table, w: list[str], rule: Rule) -> None:
        """Record the form of a rule `C ip F A <rest>` the general loop built of constant items only."""
        which, a = w[2], w[3]
        read = ADDR_FIELDS.get(which)
        if read is None or a == "!=" or "/" in a:
            return
        got = self.addr_forms.get(id(table))
        if got is None:
            got = self.addr_forms[id(table)] = (table, {f: {} for f in ADDR_FIELDS})
        got[1][which].setdefault(" ".join(w[4:]), (rule.txt, rule.steps[2:], steps._EQ.get(read), read))

    def _nat_form(self, table: Table, w: list[str], shape: tuple[Any, ...]) -> None:
        """Record the shape of a `C meta l4proto P dnat to A:P` rule the general loop built."""
        if w[1] == "meta" and w[2] == "l4proto" and w[4] == "dnat" and w[5] == "to":
            p = PROTOS.get(w[3])
            nat = self._nat_target(w[6])
            if p is not None and nat is not None and table.family == "ip":
                self.forms.setdefault(("dnat", p, nat[1], nat[2]), shape)

    def _nat_rule(self, table: Table, c: Chain, w: list[str], no: int) -> bool:
        """`C meta l4proto P dnat to A:P` (an endpoint chain's second rule) once its form was met."""
        if w[2] != "l4proto" or w[4] != "dnat" or w[5] != "to" or table.family != "ip":
            return False
        p = PROTOS.get(w[3])
        nat = self._nat_target(w[6])
        if p is None or nat is None:
            return False
        match = self.consts.get(("l4", "==", p))
        like = self.consts.get(("dnat", nat[1], nat[2]))
        shape = self.forms.get(("dnat", p, nat[1], nat[2]))
        if match is None or like is None or shape is None:
            return False
        h = table.next_handle
        table.next_handle = h + 1
        rule = new_object(Rule)
        rule.txt, rule.chain, rule.src, rule.pos, rule.counter = shape, c.name, self.path, no << 32 | h, None
        rule.steps = (*match, *nat_like(rule, nat[0], like))
        port = w[6].rpartition(":")[2]
        if "-" not in port:
            self.dnat_forms.setdefault((w[3], port), (match, like[1][2], shape))
        self._append(table, c, rule)
        return True

    def _dnat_rule(self, table: Table, c: Chain, p: list[str], no: int) -> bool:
        """`C meta l4proto P dnat to A:PORT` (`p`: the line after its table, split at its first four
        blanks) once a rule of its protocol and port was met: the form's steps and shape found by
        (P, the rest after the address), else `_nat_rule`."""
        last = p[4]
        addr, colon, port = last.rpartition(":")
        form = self.dnat_forms.get((p[3], port)) if colon and p[2] == "l4proto" else None
        if form is None or addr[:8] != "dnat to " or " " in addr[8:] or table.family != "ip":
            w = [*p[:4], *last.split(" ")]
            return len(w) == 7 and self._nat_rule(table, c, w, no)
        a = addr[8:]
        v = self.addrs.get(a)
        if v is None:
            v = self._addr(a)
            if v is None:
                return False
        match, how, shape = form
        h = table.next_handle
        table.next_handle = h + 1
        rule = new_object(Rule)
        rule.txt, rule.chain, rule.src, rule.pos, rule.counter = shape, c.name, self.path, no << 32 | h, None
        rule.steps = (*match, nat_statement, (v, rule, how))       # nat_like's step
        self._append(table, c, rule)
        return True

    def _numgen_rule(self, table: Table, c: Chain, w: list[str], n: int, line: str, no: int) -> bool:
        """`C numgen random mod N vmap { ... }` alone (a Service chain's second rule)."""
        braces = line.count("{") + line.count("}") + line.count(",")
        got = self._gotos(table, w, n, braces)
        if got is None:
            got = self._numgen(table, w, 1, n, braces)
        if got is None or got[0] != n:
            return False
        _, mod, step = got
        shape = self.numgen_shapes.get(mod)
        if shape is None:
            shape = self.numgen_shapes[mod] = self._shape([(1, *item_part("", shapes.numgen_vmap, mod, ""))])
        rule = Rule(shape, step, c.name, self.path, no << 32 | table.new_handle())
        table.anon += 1
        self._append(table, c, rule)
        return True
