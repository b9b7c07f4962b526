"""kube-proxy's one-line `nft -f` commands read straight from their words (see nft_fast).

`LineLoader.line` takes `add chain|rule|element` and `flush chain` lines of the shapes kube-proxy
writes and builds the very objects the general parser builds for them (same print text, steps,
handles and line); any other line, or one the general parser would refuse, it leaves untouched.
"""
from __future__ import annotations

import socket
from typing import Any, Callable

from pktemu.nftables import steps
from pktemu.nftables.fields import lookup_field
from pktemu.nftables.model import FAMILIES, Chain, Element, NftRuleset, Rule, Step, Table, make_verdict
from pktemu.nftables.rules import cmp_step, prefix_step, rule_text
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
        self.jumps: dict[tuple[int, str, str], tuple[Any, Step, tuple[Any, ...], Table]] = {}

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
                c.prog = None
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
        out: list[Step] = []
        starts: list[int] = []        # the word each item starts at: its print text is its words
        deps: dict[int, Any] = {}     # item -> ("l4", P) or ("needs", P), for rule_text
        shown: dict[int, str] = {}    # item -> its print text where that is not its words
        jumps: tuple[Any, ...] = ()
        anon = 0
        ints = self.ints
        plain = True                  # the rule's print text is its words as written
        l4: int | None = None
        i = 5
        while i < n:
            w = words[i]
            nxt = words[i + 1] if i + 1 < n else ""
            starts.append(i)
            last_l4, l4 = l4, None
            if w == "ip" and nxt in _ADDR_FIELDS:
                i, step = self._ip(words, i, n, nxt)
                if step is None:
                    return False
                out.append(step)
            elif w in _JUMPS and nxt and not braces:
                i += 2
                hit = self.jumps.get((id(table), w, nxt))
                if hit is None:
                    v = make_verdict(_KIND[w], self._target(table, nxt))
                    hit = self.jumps[(id(table), w, nxt)] = (v, (steps.go, v), (v,), table)
                jumps = hit[2] if not jumps else jumps + hit[2]
                out.append(hit[1])
            elif (w, nxt) in _PORTS:
                read, proto = _PORTS[(w, nxt)]
                op, at = ("!=", i + 3) if i + 2 < n and words[i + 2] == "!=" else ("==", i + 2)
                port = _num(words[at], 65535) if at < n else None
                if port is None:
                    return False
                i = at + 1
                if proto is not None:
                    deps[len(starts) - 1] = ("needs", proto)
                    if last_l4 == proto:
                        plain = False     # `meta l4proto tcp tcp dport 80` prints as `tcp dport 80`
                step = self.consts.get((w, nxt, op, port))
                if step is None:
                    step = self.consts[(w, nxt, op, port)] = cmp_step(read, op, ints.setdefault(port, port))
                out.append(step)
            elif w == "meta" and nxt == "l4proto":
                op, at = ("!=", i + 3) if i + 2 < n and words[i + 2] == "!=" else ("==", i + 2)
                p = PROTOS.get(words[at]) if at < n else None
                if p is None:
                    return False
                i = at + 1
                if op == "==":
                    deps[len(starts) - 1] = ("l4", p)
                    l4 = p
                step = self.consts.get(("l4", op, p))
                if step is None:
                    step = self.consts[("l4", op, p)] = cmp_step(_L4_READ, op, ints.setdefault(p, p))
                out.append(step)
            elif w in _VERDICTS:
                i += 1
                out.append(verdict_step(rule, make_verdict(_KIND[w], None)))
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
                    out.append(nat_step(rule, "dnat", *nat, []))
                    self.consts[("dnat", nat[1], nat[2])] = out[-1]
                else:
                    out.append(nat_like(rule, nat[0], like))
            elif w == "numgen":
                got = self._numgen(table, words, i, n, braces)
                if got is None:
                    return False
                i, shown[len(starts) - 1], step, vjumps = got
                braces, anon, plain = 0, anon + 1, False
                jumps += vjumps
                out.append(step)
            else:
                return False
        if braces:
            return False
        if plain:
            rule.text = " ".join(words[5:])
        else:
            ends = starts[1:] + [n]
            rule.text = rule_text([(shown.get(k) or " ".join(words[a:b]), deps.get(k))
                                   for k, (a, b) in enumerate(zip(starts, ends, strict=True))], None)
        rule.steps = tuple(out)
        rule.jumps = jumps
        table.anon += anon
        rule.pos |= table.new_handle()
        if table.tx is not None:
            table.tx.touch(c)
        c.rules.append(rule)
        c.prog = None
        return True

    def _addr(self, w: str) -> int | None:
        """_addr through the load's cache (a Service's address is in its rule and its elements)."""
        v = self.addrs.get(w)
        if v is None:
            v = _addr(w)
            if v is not None:
                v = self.addrs[w] = self.ints.setdefault(v, v)
        return v

    def _ip(self, words: list[str], i: int, n: int, which: str) -> tuple[int, Step | None]:
        """`ip saddr|daddr [!=] A[/L]`: (next word, step), or no step when not plain."""
        read = _ADDR_FIELDS[which]
        neg = i + 2 < n and words[i + 2] == "!="
        at = i + 3 if neg else i + 2
        if at >= n:
            return at, None
        w = words[at]
        if "/" not in w:
            v = self.addrs.get(w)
            if v is None:
                v = self._addr(w)
                if v is None:
                    return at, None
            return at + 1, (cmp_step(read, "!=", v) if neg else steps.eq_step(read, shared(v)))
        step = self.consts.get((which, neg, w))
        if step is None:
            addr, _, plen_text = w.partition("/")
            v = self._addr(addr)
            plen = _num(plen_text, 32)
            if v is None or plen is None or v & ~_MASK[plen] & 0xFFFFFFFF:
                return at, None
            mask = _MASK[plen]
            step = self.consts[(which, neg, w)] = prefix_step(read, v & mask, mask, neg)
        return at + 1, step

    def _numgen(self, table: Table, words: list[str], i: int, n: int,
                braces: int) -> tuple[int, str, Step, tuple[Any, ...]] | None:
        """`numgen random mod N vmap { 0 : V0 , 1 : V1 , ... }` with keys 0..N-1 in order (vmap_index)."""
        if i + 5 >= n or words[i + 1] != "random" or words[i + 2] != "mod" or words[i + 4] != "vmap":
            return None
        mod = _num(words[i + 3], 2**32 - 1)
        if not mod or words[i + 5] != "{":
            return None
        j = i + 6
        verdicts: list[Any] = []
        shown: list[str] = []
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
            shown.append(f"{len(verdicts) - 1} : {v.text()}")
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
        text = f"numgen random mod {mod} vmap {{ {', '.join(shown)} }}"
        step = (steps.vmap_index, (numgen_random(mod, 0), *verdicts))
        return j + 1, text, step, tuple(v for v in verdicts if v.target is not None)


_KIND = {k: k for k in (*_VERDICTS, *_JUMPS)}


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
    return None if ports is None else (v, *ports)
