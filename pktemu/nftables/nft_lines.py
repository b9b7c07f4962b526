"""kube-proxy's one-line `nft -f` commands read straight from their words (see nft_fast).

`LineLoader.line` takes `add chain|rule|element` and `flush chain` lines of the shapes kube-proxy
writes and builds the very objects the general parser builds for them (same print text, steps,
handles and line), except that a rule keeps, instead of its text, its shape (pktemu.nftables.shapes);
any other line, or one the general parser would refuse, it leaves untouched.
"""
from __future__ import annotations

import socket
from typing import Any, Callable

from pktemu.nftables import shapes, steps
from pktemu.nftables.fields import lookup_field
from pktemu.nftables.model import FAMILIES, Chain, Element, NftRuleset, Rule, Step, Table, make_verdict
from pktemu.nftables.rules import cmp_step, prefix_step
from pktemu.nftables.statements import nat_like, nat_step, numgen_random, verdict_step
from pktemu.nftables.values import PROTOS, port_range, shared

_VERDICTS = ("accept", "drop", "continue", "return")
_JUMPS = ("jump", "goto")
_NAT_WORDS = ("random", "fully-random", "persistent", ",")
#: `PROTO dport|sport` -> (reader, the l4 protocol it needs)
_PORTS: dict[tuple[str, str], tuple[Any, int | None]] = {}
for _p in ("tcp", "udp", "sctp", "th"):
    for _d in ("sport", "dport"):
        _f = lookup_field([_p, _d, ""])
        assert _f is not None
        _PORTS[(_p, _d)] = (_f[0].read, _f[0].proto)
_ADDR_FIELDS = {w: lookup_field(["ip", w, ""])[0].read for w in ("saddr", "daddr")}  # type: ignore[index]
_L4 = lookup_field(["meta", "l4proto", ""])
assert _L4 is not None
_L4_READ = _L4[0].read
_aton, _ntoa = socket.inet_aton, socket.inet_ntoa
_MASK = tuple(((1 << n) - 1) << (32 - n) if n else 0 for n in range(33))


def _addr(w: str) -> int | None:
    """A dotted quad as ipaddress prints it (no leading zeros: what inet_ntoa gives back), else None."""
    try:
        b = _aton(w)
    except (OSError, ValueError):
        return None
    return int.from_bytes(b, "big") if _ntoa(b) == w else None


def _num(w: str, top: int) -> int | None:
    """A decimal number as nft prints it (no sign, no leading zeros), up to `top`, else None."""
    if not (w.isdigit() and w.isascii()) or (w[0] == "0" and len(w) > 1):
        return None
    v = int(w)
    return v if v <= top else None


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
            return self._rule(table, words, line, no)
        if obj == "chain" and len(words) == 5 and (verb == "add" or verb == "flush") and _plain(line):
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
        c = table.chains[name] = Chain(name, handle=table.new_handle())
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
                v = _num(w, 65535)
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
            if w in _VERDICTS and i + 2 == n:
                data = make_verdict(_KIND[w], None)
            elif w in _JUMPS and i + 3 == n:
                data = make_verdict(_KIND[w], self._target(table, words[i + 2]))
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
            if w == "ip" and nxt in _ADDR_FIELDS:
                i, step, part = self._ip(words, i, n, nxt)
                if step is None:
                    return False
            elif w in _JUMPS and nxt and not braces:
                i += 2
                hit = self.jumps.get((id(table), w, nxt))
                if hit is None:
                    v = make_verdict(_KIND[w], self._target(table, nxt))
                    hit = self.jumps[(id(table), w, nxt)] = (v, (steps.go, v), table)
                step, part = hit[1], _VERDICT_PART
            elif (w, nxt) in _PORTS:
                read, proto = _PORTS[(w, nxt)]
                op, at = ("!=", i + 3) if i + 2 < n and words[i + 2] == "!=" else ("==", i + 2)
                port = _num(words[at], 65535) if at < n else None
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
                    step = self.consts[("l4", op, p)] = cmp_step(_L4_READ, op, ints.setdefault(p, p))
                part = self._text(("l4", op, p), f"meta l4proto {'!= ' if op == '!=' else ''}{words[at]}")
            elif w in _VERDICTS:
                i += 1
                step, part = verdict_step(rule, make_verdict(_KIND[w], None)), _VERDICT_PART
            elif w == "dnat" and nxt == "to" and table.family == "ip" and i + 2 < n:
                target = words[i + 2]
                i += 3
                if i < n and words[i] in _NAT_WORDS:
                    return False
                nat = _nat_target(target, self._addr)
                if nat is None:
                    return False
                like = self.consts.get(("dnat", nat[1], nat[2]))
                if like is None:
                    step = self.consts[("dnat", nat[1], nat[2])] = nat_step(rule, "dnat", *nat, [])
                else:
                    step = nat_like(rule, nat[0], like)
                part = _part("dnat to ", shapes.nat, None, shapes.nat_port(nat[1], nat[2]))
            elif w == "numgen":
                got = self._numgen(table, words, i, n, braces)
                if got is None:
                    return False
                i, mod, step = got
                braces, anon = 0, anon + 1
                part = _part("", shapes.numgen_vmap, mod, "")
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
        if table.tx is not None:
            table.tx.touch(c)
        c.rules.append(rule)
        return True

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
        """_addr through the load's cache (a Service's address is in its rule and its elements)."""
        v = self.addrs.get(w)
        if v is None:
            v = _addr(w)
            if v is not None:
                v = self.addrs[w] = self.ints.setdefault(v, v)
        return v

    def _ip(self, words: list[str], i: int, n: int, which: str) -> tuple[int, Step | None, Any]:
        """`ip saddr|daddr [!=] A[/L]`: (next word, step, print part), or no step when not plain."""
        read = _ADDR_FIELDS[which]
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
            return at + 1, step, _ADDR_PARTS[(which, neg)]
        got = self.consts.get((which, neg, w))
        if got is None:
            addr, _, plen_text = w.partition("/")
            v = self._addr(addr)
            plen = _num(plen_text, 32)
            if v is None or plen is None or v & ~_MASK[plen] & 0xFFFFFFFF:
                return at, None, None
            mask = _MASK[plen]
            got = self.consts[(which, neg, w)] = prefix_step(read, v & mask, mask, neg)
        return at + 1, got, self._text((which, neg, w), f"ip {which} {'!= ' if neg else ''}{w}")

    def _numgen(self, table: Table, words: list[str], i: int, n: int,
                braces: int) -> tuple[int, int, Step] | None:
        """`numgen random mod N vmap { 0 : V0 , 1 : V1 , ... }` with keys 0..N-1 in order (vmap_index)."""
        if i + 5 >= n or words[i + 1] != "random" or words[i + 2] != "mod" or words[i + 4] != "vmap":
            return None
        mod = _num(words[i + 3], 2**32 - 1)
        if not mod or words[i + 5] != "{":
            return None
        j = i + 6
        verdicts: list[Any] = []
        used = 1
        while True:
            if j + 2 >= n or _num(words[j], 2**32 - 1) != len(verdicts) or words[j + 1] != ":":
                return None
            w = words[j + 2]
            if w in _VERDICTS:
                v = make_verdict(_KIND[w], None)
                j += 3
            elif w in _JUMPS and j + 3 < n:
                v = make_verdict(_KIND[w], self._target(table, words[j + 3]))
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


_KIND = {k: k for k in (*_VERDICTS, *_JUMPS)}
_PARTS: dict[tuple[Any, ...], tuple[Any, ...]] = {}


def _part(pre: str, fmt: Any, extra: Any, post: str) -> tuple[Any, ...]:
    """An item printed as `pre + fmt(its step's argument, extra) + post`, one tuple for equal ones."""
    key = (pre, fmt, extra, post)
    return _PARTS.setdefault(key, key)


_VERDICT_PART = _part("", shapes.verdict, None, "")
_ADDR_PARTS = {(w, neg): _part(f"ip {w} {'!= ' if neg else ''}", shapes.addr, None, "")
               for w in ("saddr", "daddr") for neg in (False, True)}


def _plain(line: str) -> bool:
    return "{" not in line and "}" not in line and "," not in line


def _nat_target(text: str, addr_of: Callable[[str], int | None]) -> tuple[int, int | None, int | None] | None:
    """`A` or `A:P` or `A:P-Q` of a dnat, as statements._addr_port reads it, else None."""
    addr, colon, port = text.rpartition(":")
    if not colon:
        addr, port = text, ""
    v = addr_of(addr)
    if v is None:
        return None
    if not port:
        return v, None, None
    ports = port_range(port)
    if ports is None or shapes.nat_port(*ports) != ":" + port:
        return None               # only as printed back (`:08080` or `:80-80` go to the general parser)
    return (v, *ports)
