"""Set and map elements in braces, verdicts and time values, shared by rules and commands."""
from __future__ import annotations

import re
from typing import Callable

from pktemu.nftables.lexer import Cursor, Token
from pktemu.nftables.model import KEY_TYPES, Element, NftSet, Verdict
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
        return Verdict(t.text, cur.chain_name())
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


def parse_elements(cur: Cursor, s: NftSet, keys_only: bool = False,
                   each: Callable[[Element, Token], None] | None = None) -> list[Element]:
    """`{ k [timeout T] [comment "c"] [: data], ... }` for the key types of `s`; `keys_only` for
    `delete element`, which names a map's elements by their keys; `each(element, its first token)`
    as each is read (pktemu.nftables.elements.insert adds it where it is refused)."""
    cur.expect("{")
    out: list[Element] = []
    while True:
        cur.skip_nl()
        if cur.accept("}"):
            return out
        at = cur.peek()
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
                    bits = 32 if typ in ("ipv4_addr", "mark") else 0
                    end[-1] = v | ((1 << (bits - plen)) - 1)
                    ranged = True
        el = Element(tuple(key), key_end=tuple(end) if ranged else None, prefix=prefix)
        while True:
            if cur.accept("timeout"):
                el.timeout_ns = parse_time(cur.word("a time"))
                el.expires_ns = None if el.timeout_ns is None else cur.now + el.timeout_ns
            elif cur.accept("expires"):
                left = parse_time(cur.word("a time"))
                el.expires_ns = None if left is None else cur.now + left
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
        if each is not None:
            each(el, at)
        cur.skip_nl()
        if cur.accept(","):
            continue
        cur.skip_nl()
        cur.expect("}")
        return out


def insert(cur: Cursor, s: NftSet, el: Element, at: Token, create: bool = False) -> None:
    """Add an element to a set as nft and the kernel add it, refusing (naming the element's line)
    what they refuse: an interval in a set without `flags interval`, an interval overlapping
    another unless the set merges them (`auto-merge`, as anonymous sets do), a key a map holds with
    other data or `create` finds (File exists), a timeout in a set without timeouts (Invalid
    argument), an element past the set's `size` (Too many open files in system). An element the
    set holds already is kept as it is, as the kernel keeps it."""
    interval = el.prefix is not None or el.key_end is not None
    if interval and not (s.interval or s.anonymous):
        raise cur.error(f"{s.kind} {s.name}: You must add 'flags interval' to your set declaration if you "
                        f"want to add {'prefix' if el.prefix is not None else 'range'} elements", at)
    if el.timeout_ns is not None and "timeout" not in s.flags and s.timeout is None:
        raise cur.error(f"{s.kind} {s.name}: an element timeout needs the set's timeout flag: Invalid "
                        "argument", at)
    if el.timeout_ns is None and el.expires_ns is None and s.timeout is not None:
        el.expires_ns = cur.now + (parse_time(s.timeout) or 0)     # the set's timeout, from the load on
    if len(el.key) > 1 and (interval or s.interval or s.ranges):
        _pipapo_overlap(cur, s, el, at)
    merge = (s.automerge or s.anonymous) and len(el.key) == 1
    old = s.elements.get(el.key)
    if old is not None and merge and s.data_type is None and _span(s, old) != _span(s, el):
        (lo, hi), (olo, ohi) = _span(s, el), _span(s, old)
        s.remove(old.key)
        s.add(_interval(s, min(lo, olo), max(hi, ohi), old))
        return
    if old is not None:
        if (old.key_end != el.key_end or old.prefix != el.prefix) and not merge:
            raise cur.error(f"{s.kind} {s.name}: conflicting intervals specified ({_shown(s, el)} overlaps "
                            f"{_shown(s, old)})", at)
        if create or old.data != el.data:
            raise cur.error(f"{s.kind} {s.name}: element {_shown(s, old)} exists"
                            + ("" if create else f" with other data ({_data(old)})") + ": File exists", at)
        return
    if s.interval and len(el.key) == 1 and not merge and (interval or s.ranges or s.prefixes):
        lo, hi = _span(s, el)
        for other in s.elements.values():
            olo, ohi = _span(s, other)
            if lo <= ohi and olo <= hi:
                raise cur.error(f"{s.kind} {s.name}: conflicting intervals specified ({_shown(s, el)} "
                                f"overlaps {_shown(s, other)})", at)
    if s.size and len(s.elements) >= s.size:
        raise cur.error(f"{s.kind} {s.name} holds its size, {s.size} elements: Too many open files in "
                        "system", at)
    s.add(el)


def merge_intervals(s: NftSet) -> None:
    """What nft makes of a one-field interval set with `auto-merge` (and of an anonymous one) after
    each command: overlapping and adjacent intervals become one, a prefix where it is one."""
    if len(s.types) != 1 or s.data_type is not None or not (s.prefixes or s.ranges):
        return
    merged: list[tuple[int, int, list[Element]]] = []
    for (lo, hi), el in sorted(((_span(s, el), el) for el in s.elements.values()), key=lambda x: x[0]):
        if merged and lo <= merged[-1][1] + 1:
            mlo, mhi, els = merged[-1]
            els.append(el)
            merged[-1] = (mlo, max(mhi, hi), els)
        else:
            merged.append((lo, hi, [el]))
    if len(merged) == len(s.elements):
        return
    for lo, hi, els in merged:
        if len(els) > 1:
            for el in els:
                s.remove(el.key)
            s.add(_interval(s, lo, hi, els[0]))


def _interval(s: NftSet, lo: int, hi: int, like: Element) -> Element:
    """The element for lo-hi: one value, a prefix where the type prints as one, else a range."""
    from pktemu.nftables.values import range_prefix
    plen = range_prefix(s.types[0], lo, hi)
    el = Element((lo,), comment=like.comment, timeout_ns=like.timeout_ns, expires_ns=like.expires_ns)
    if lo == hi:
        return el
    if plen is not None:
        el.prefix = plen
    else:
        el.key_end = (hi,)
    return el


def _pipapo_overlap(cur: Cursor, s: NftSet, el: Element, at: Token) -> None:
    """A concatenation with an interval, as nft_pipapo_insert takes it: refused (File exists) when an
    element other than an identical one holds its first or its last key, whatever `auto-merge` says
    (nft merges single fields only); an identical one is left to insert, which keeps it."""
    start, end = el.key, el.key_end or el.key
    same = s.elements.get(start)
    if same is not None and (same.key_end or same.key) == end:
        return
    for other in s.elements.values():
        olo, ohi = other.key, other.key_end or other.key
        if (all(a <= k <= b for k, a, b in zip(start, olo, ohi, strict=True))
                or all(a <= k <= b for k, a, b in zip(end, olo, ohi, strict=True))):
            name = f"anonymous {s.kind}" if s.anonymous else f"{s.kind} {s.name}"
            raise cur.error(f"{name}: element {_shown(s, el)} overlaps {_shown(s, other)}: File exists", at)


def _span(s: NftSet, el: Element) -> tuple[int, int]:
    """An element's first and last value (one field)."""
    v = el.key[0]
    if el.prefix is not None:
        bits = KEY_TYPES.get(s.types[0], (4, False))[0] * 8
        return v, v | ((1 << (bits - el.prefix)) - 1)
    return v, v if el.key_end is None else el.key_end[0]


def _shown(s: NftSet, el: Element) -> str:
    from pktemu.nftables.values import format_key
    return format_key(s.types, el.key, el.prefix, el.key_end, elements=True)


def _data(el: Element) -> str:
    return el.data.text() if isinstance(el.data, Verdict) else str(el.data)
