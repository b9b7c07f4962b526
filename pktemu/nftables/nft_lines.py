"""kube-proxy's one-line `nft -f` commands read straight from their words (see nft_fast).

`LineLoader.line` takes `add chain|rule|element` and `flush chain` lines of the shapes kube-proxy
writes and builds the very objects the general parser builds for them (same print text, steps,
handles and line), except that a rule keeps, instead of its text, its shape (pktemu.nftables.shapes);
any other line, or one the general parser would refuse, it leaves untouched.
"""
from __future__ import annotations

from typing import Any

from pktemu.nftables import shapes, steps
from pktemu.nftables.model import (
    FAMILIES, Chain, Element, NftRuleset, Rule, Step, Table, make_chain, make_verdict,
)
from pktemu.nftables.nft_words import (
    ADDR_FIELDS, ADDR_PARTS, INDEX, JUMPS, KIND, L4_READ, MASK, NAT_WORDS, PORTS, VERDICT_PART, VERDICTS,
    item_part, nat_target, num, plain, quad,
)
from pktemu.nftables.rules import cmp_step, prefix_step
from pktemu.nftables.statements import nat_like, nat_step, numgen_random, verdict_step
from pktemu.nftables.values import PROTOS, shared

class LineLoader:
    """One load's state: the ruleset, the shared ints, and the jump steps its rules share."""

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
        #: the shapes of _endpoint_rule's forms, recorded by the general loop the first time it builds one
        self.forms: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        self.touched: Chain | None = None
        self.ports: dict[str, tuple[int | None, int | None]] = {}

    def line(self, line: str, no: int) -> bool:
        """Apply one line if it is a shape this loader knows and would load without error (True);
        else change nothing (False)."""
        words = line.split()
        if len(words) < 5 or '"' in line or "#" in line or ";" in line or line.endswith("\\"):
            return False
        if " ".join(words) != line and len("".join(words)) + line.count(" ") != len(line):
            return False              # a tab or other blank the tokenizer reads otherwise than split
        verb, obj = words[0], words[1]
        if words[2] not in FAMILIES:
            return False
        table = self.rs.tables.get((words[2], words[3]))
        if table is None:
            return False
        if obj == "rule" and verb == "add":
            n = len(words)
            if (n == 10 or n == 11) and plain(line):
                c = table.chains.get(words[4])
                if c is not None and self._endpoint_rule(table, c, words, n, no):
                    return True
            return self._rule(table, words, line, no)
        if obj == "chain" and len(words) == 5 and (verb == "add" or verb == "flush") and plain(line):
            return self._chain(table, verb, words[4])
        if obj == "element" and verb == "add":
            return self._element(table, words, line)
        return False

    # the three shapes ---------------------------------------------------------------------------
    def _chain(self, table: Table, verb: str, name: str) -> bool:
        c = table.chains.get(name)
        if verb == "flush" and c is None:
            return False
        tx = table.tx
        if c is not None:
            if tx is not None:
                tx.touch(c)
            if verb == "flush":
                c.rules.clear()
            return True
        c = table.chains[name] = make_chain(name, table.new_handle())
        table.chains_changed()
        if tx is not None:
            tx.fresh(c)
        return True

    def _element(self, table: Table, words: list[str], line: str) -> bool:
        """`add element FAM T S { K1 . K2 [: VERDICT] }`: one element of plain keys."""
        s = table.sets.get(words[4])
        if (s is None or len(words) < 8 or words[5] != "{" or words[-1] != "}" or line.count("{") != 1
                or line.count("}") != 1 or "," in line):
            return False
        i, n = 6, len(words) - 1
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
                v = self._addr(w)
            elif typ == "inet_proto":
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
            elif w in JUMPS and i + 3 == n:
                data = make_verdict(KIND[w], self._target(table, words[i + 2]))
            else:
                return False
        elif i != n or s.data_type is not None:
            return False
        if table.tx is not None:
            table.tx.touch(s)
        s.add(Element(tuple(key), data))
        return True

    def _target(self, table: Table, name: str) -> str:
        """A jump's target: the chain's own name object when the chain exists."""
        c = table.chains.get(name)
        return c.name if c is not None else name

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
                i += 2
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
                step, part = verdict_step(rule, make_verdict(KIND[w], None)), VERDICT_PART
            elif w == "dnat" and nxt == "to" and table.family == "ip" and i + 2 < n:
                target = words[i + 2]
                i += 3
                if i < n and words[i] in NAT_WORDS:
                    return False
                nat = self._nat_target(target)
                if nat is None:
                    return False
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
                braces, anon = 0, anon + 1
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
            if dep is not None and dep[0] == "l4" and k + 1 < len(deps) and deps[k + 1] == ("needs", dep[1]):
                continue
            shown.append(part if isinstance(part, str) else (2 * k + 1, *part))
        rule.txt = self._shape(shown)
        rule.steps = tuple(out)
        table.anon += anon
        rule.pos |= table.new_handle()
        self._append(table, c, rule)
        if n == 10 or n == 11:
            self._form(table, words, n, rule.txt)
        return True

    def _form(self, table: Table, words: list[str], n: int, shape: tuple[Any, ...]) -> None:
        """Record the shape of a rule the general loop built, if it is of one of _endpoint_rule's forms."""
        if n == 10:
            if words[5] == "ip" and words[6] in ADDR_FIELDS and words[7] != "!=" and "/" not in words[7] \
                    and words[8] in JUMPS:
                self.forms.setdefault((words[6], words[8]), shape)
        elif words[5] == "meta" and words[6] == "l4proto" and words[8] == "dnat" and words[9] == "to":
            p = PROTOS.get(words[7])
            nat = self._nat_target(words[10])
            if p is not None and nat is not None and table.family == "ip":
                self.forms.setdefault(("dnat", p, nat[1], nat[2]), shape)

    def _append(self, table: Table, c: Chain, rule: Rule) -> None:
        if table.tx is not None and c is not self.touched:     # touching a chain twice changes nothing
            table.tx.touch(c)
            self.touched = c
        c.rules.append(rule)

    def _endpoint_rule(self, table: Table, c: Chain, words: list[str], n: int, no: int) -> bool:
        """An endpoint chain's two rules, `ip saddr A jump C` and `meta l4proto P dnat to A:P` (ten of a
        Service's twelve), built as the general loop of _rule builds them once it has met their form
        (its jump, protocol match and NAT ports); False (nothing changed) for any other line."""
        if n == 10:
            which, kind = words[6], words[8]
            if words[5] != "ip" or which not in ADDR_FIELDS or kind not in JUMPS:
                return False
            hit = self.jumps.get((id(table), kind, words[9]))
            shape = self.forms.get((which, kind))
            w = words[7]
            v = self.addrs.get(w)
            if v is None and "/" not in w:
                v = self._addr(w)
            if hit is None or shape is None or v is None:
                return False
            rule = Rule(shape, (*steps.eq_step(ADDR_FIELDS[which], shared(v)), *hit[1]), c.name, self.path,
                        no << 32 | table.new_handle())
        else:
            if words[5] != "meta" or words[6] != "l4proto" or words[8] != "dnat" or words[9] != "to" \
                    or table.family != "ip":
                return False
            p = PROTOS.get(words[7])
            nat = self._nat_target(words[10])
            if p is None or nat is None:
                return False
            match = self.consts.get(("l4", "==", p))
            like = self.consts.get(("dnat", nat[1], nat[2]))
            shape = self.forms.get(("dnat", p, nat[1], nat[2]))
            if match is None or like is None or shape is None:
                return False
            rule = Rule(shape, (), c.name, self.path, no << 32 | table.new_handle())
            rule.steps = (*match, *nat_like(rule, nat[0], like))
        if table.tx is not None and c is not self.touched:
            table.tx.touch(c)
            self.touched = c
        c.rules.append(rule)
        return True

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
        """quad through the load's cache (a Service's address is in its rule and its elements)."""
        v = self.addrs.get(w)
        if v is None:
            v = quad(w)
            if v is not None:
                v = self.addrs[w] = self.ints.setdefault(v, v)
        return v

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
        return at + 1, got, self._text((which, neg, w), f"ip {which} {'!= ' if neg else ''}{w}")

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
        while True:
            k = len(verdicts)     # words[j] must read as k: only its canonical decimal does
            if j + 2 >= n or words[j] != (INDEX[k] if k < 64 else str(k)) or words[j + 1] != ":":
                return None
            w = words[j + 2]
            if w in VERDICTS:
                v = make_verdict(KIND[w], None)
                j += 3
            elif w in JUMPS and j + 3 < n:
                c = chains.get(words[j + 3])
                v = make_verdict(KIND[w], words[j + 3] if c is None else c.name)
                j += 4
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
