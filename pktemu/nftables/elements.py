"""Set and map elements in braces, verdicts and time values, shared by rules and commands."""
from __future__ import annotations

import re

from pktemu.nftables.lexer import Cursor
from pktemu.nftables.model import Element, NftSet, Verdict
from pktemu.nftables.values import ValueError_, parse_value

VERDICTS = ("accept", "drop", "continue", "return")
_TIME = re.compile(r"(\d+)(ms|d|h|m|s)")
_UNIT_NS = {"d": 86400 * 10**9, "h": 3600 * 10**9, "m": 60 * 10**9, "s": 10**9, "ms": 10**6}


def parse_time(text: str) -> int | None:
    """nft's time literal (`3h`, `1h30m`, `10800s`, `500ms`, a bare number of seconds) in ns."""
    if text.isdigit():
        return int(text) * 10**9
    pos, total = 0, 0
    for m in _TIME.finditer(text):
        if m.start() != pos:
            return None
        total += int(m.group(1)) * _UNIT_NS[m.group(2)]
        pos = m.end()
    return total if pos == len(text) and pos else None


def format_time(ns: int) -> str:
    """A time as nft prints it: `3h`, `2h59m58s`, `500ms`."""
    ms = ns // 10**6
    out = ""
    for unit, size in (("d", 86400000), ("h", 3600000), ("m", 60000), ("s", 1000), ("ms", 1)):
        if ms >= size:
            out += f"{ms // size}{unit}"
            ms %= size
    return out or "0s"


def parse_verdict(cur: Cursor) -> Verdict:
    t = cur.next()
    if t.text in VERDICTS:
        return Verdict(t.text)
    if t.text in ("jump", "goto"):
        return Verdict(t.text, cur.word("a chain name"))
    raise cur.error(f"expected a verdict, got '{t.text}'", t)


def parse_typed(cur: Cursor, typ: str) -> tuple[int, int | None, int | None]:
    t = cur.next()
    if t.kind not in ("word", "string"):
        raise cur.error(f"expected a {typ} value, got '{t.text}'", t)
    text = t.text if t.kind == "word" else t.text
    try:
        v, plen, hi = parse_value(typ, text)
    except ValueError_ as e:
        raise cur.error(str(e), t) from None
    return cur.one(v), plen, hi


def parse_elements(cur: Cursor, s: NftSet, keys_only: bool = False) -> list[Element]:
    """`{ k [timeout T] [comment "c"] [: data], ... }` for the key types of `s`; `keys_only` for
    `delete element`, which names a map's elements by their keys."""
    cur.expect("{")
    out: list[Element] = []
    while True:
        cur.skip_nl()
        if cur.accept("}"):
            return out
        key, end, prefix = [], [], None
        ranged = False
        for i, typ in enumerate(s.types):
            if i:
                cur.expect(".")
            v, plen, hi = parse_typed(cur, typ)
            key.append(v)
            end.append(v if hi is None else hi)
            ranged |= hi is not None
            if plen is not None:
                if len(s.types) == 1:
                    prefix = plen
                else:
                    bits = 32 if typ == "ipv4_addr" else 0
                    end[-1] = v | ((1 << (bits - plen)) - 1)
                    ranged = True
        el = Element(tuple(key), key_end=tuple(end) if ranged else None, prefix=prefix)
        while True:
            if cur.accept("timeout"):
                el.timeout_ns = parse_time(cur.word("a time"))
                el.expires_ns = el.timeout_ns           # loaded at virtual time 0
            elif cur.accept("expires"):
                el.expires_ns = parse_time(cur.word("a time"))
            elif cur.accept("comment"):
                el.comment = cur.word("a comment string")
            elif cur.accept("counter"):
                while cur.peek().text in ("packets", "bytes"):
                    cur.next()
                    cur.next()
            else:
                break
        if cur.accept(":"):
            if s.data_type is None:
                raise cur.error(f"set '{s.name}' is not a map: an element takes no ': value'")
            if s.data_type == "verdict":
                el.data = parse_verdict(cur)
            else:
                el.data = parse_typed(cur, s.data_type)[0]
        elif s.data_type is not None and not keys_only:
            raise cur.error(f"map '{s.name}' element without ': value'")
        out.append(el)
        cur.skip_nl()
        if cur.accept(","):
            continue
        cur.skip_nl()
        cur.expect("}")
        return out
