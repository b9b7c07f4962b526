"""The text `nft list` prints for a rule: its items as nft's evaluation and delinearization leave
them (dependencies dropped or added, masks and xors folded), sets and elements sorted as nft sorts
them. Kept apart from the parsing (pktemu.nftables.rules) that hands it its items."""
from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from pktemu.nftables import statements
from pktemu.nftables.model import Element, NftSet, Verdict
from pktemu.nftables.values import format_key, format_value, sort_key

if TYPE_CHECKING:
    from pktemu.nftables.rules import Lhs


class Dep(NamedTuple):
    """What a match tells nft's evaluation and listing of the rule (src/payload.c dependencies):
    the transport protocol its header field needs, the one it states (`meta l4proto P`, or `ip
    protocol P` in an ip table) or the family it states (`meta nfproto N`), whether it reads the ip
    header, whether it is a bare `th` field."""
    needs: int | None = None
    l4: int | None = None
    nf: int | None = None
    ip: bool = False
    th: bool = False
    #: a `field value` match nft may merge with a neighbour of its header: (header, bit offset, bits)
    pay: tuple[str, int, int] | None = None


NO_DEP = Dep()
#: a statement's place in rule_text's items: it ends the dependencies stored so far
STMT = Dep(needs=-1)
_L4_NAMES = {6: "tcp", 17: "udp", 132: "sctp"}
#: header fields nft's payload_try_merge joins when next to each other: (header, bit offset, bits)
PAYLOADS = {"ip ttl": ("nh", 64, 8), "ip protocol": ("nh", 72, 8), "ip saddr": ("nh", 96, 32),
            "ip daddr": ("nh", 128, 32),
            **{f"{p} {d}": ("th", 0 if d == "sport" else 16, 16)
               for p in ("tcp", "udp", "sctp", "th") for d in ("sport", "dport")}}


_BASES = {"nh": 2, "th": 3}          # nft's proto_bases: the network header before the transport's
_PROTOCOL = "ip protocol"           # a field nft flags EXPR_F_PROTOCOL: the join keeps its statement


def _merge(items: list[tuple[str, Dep]], family: str) -> list[tuple[str, Dep]]:
    """nft 1.0.6's stmt_reduce (src/rule.c): the `field value` matches of a rule are gathered and,
    sorted by header and offset, each joined with the one on the bytes just before it (one compare of
    at most 32 bits), listed in header order in the place of the lower one's statement (of `ip
    protocol`'s when it is one of the pair). A statement ends a gathering only once two matches are
    gathered (its `idx < 2` continues without starting anew), so `tcp sport 1 counter tcp dport 2`
    joins and lists as `tcp sport 1 tcp dport 2 counter`. A joined match whose evaluation brought in
    the protocol's dependency (`meta l4proto tcp`, `meta nfproto ipv4` in inet) leaves it in its
    place; two `th` fields join into a raw `@th,OFF,LEN 0x...`."""
    out: list[list[tuple[str, Dep]] | None] = [[it] for it in items]
    firsts = _dependency_points(items, family)
    gathered: list[int] = []

    def join(sa: list[int]) -> None:
        pays = {k: items[k][1].pay or ("", 0, 0) for k in sa}
        order = sorted(sa, key=lambda k: (_BASES[pays[k][0]], pays[k][1]))
        last = order[0]
        lpay = pays[last]
        for this in order[1:]:
            tpay = pays[this]
            if tpay[0] != lpay[0] or lpay[1] + lpay[2] != tpay[1] or lpay[2] + tpay[2] > 32:
                last, lpay = this, tpay
                continue
            keep, drop = (this, last) if items[this][0].startswith(_PROTOCOL) else (last, this)
            joined = (out[last] or []) + (out[this] or [])
            out[keep] = joined
            out[drop] = None if drop not in firsts else [firsts[drop]]
            last, lpay = keep, (lpay[0], lpay[1], lpay[2] + tpay[2])

    for k, (_, dep) in enumerate(items):
        if dep is STMT:
            if len(gathered) >= 2:
                join(gathered)
                gathered = []
        elif dep.pay is not None:
            gathered.append(k)
    if len(gathered) >= 2:
        join(gathered)
    flat: list[tuple[str, Dep]] = []
    for part in out:
        if part is None:
            continue
        if len(part) == 1:
            flat.extend(part)
        elif all(t.startswith("th ") for t, _ in part):
            flat.append((_raw_th(part), NO_DEP))
        else:
            flat.extend((t, d._replace(pay=None)) for t, d in part)
    return flat


def _dependency_points(items: list[tuple[str, Dep]], family: str) -> dict[int, tuple[str, Dep]]:
    """The matches at which nft's evaluation puts a dependency (the first to need a transport
    protocol nothing before states; in inet, the first ip field before any `meta nfproto`)."""
    out: dict[int, tuple[str, Dep]] = {}
    l4: int | None = None
    nf = family != "inet"
    for k, (_, dep) in enumerate(items):
        if dep is STMT:
            continue
        if dep.pay is not None and dep.needs is not None and l4 is None and dep.needs in _L4_NAMES:
            out[k] = (f"meta l4proto {_L4_NAMES[dep.needs]}", Dep(l4=dep.needs))
        elif dep.pay is not None and dep.ip and not nf:
            out[k] = ("meta nfproto ipv4", Dep(nf=2))
        l4 = dep.l4 if dep.l4 is not None else dep.needs if dep.needs is not None else l4
        nf = nf or dep.ip or dep.nf is not None
    return out


def _raw_th(part: list[tuple[str, Dep]]) -> str:
    """Joined `th` port matches as nft lists them, the transport header's bytes as one number."""
    off = min(d.pay[1] for _, d in part if d.pay is not None)
    bits = sum(d.pay[2] for _, d in part if d.pay is not None)
    value = 0
    for text, _ in part:
        value = (value << 16) | int(text.rsplit(" ", 1)[1])
    return f"@th,{off},{bits} 0x{value:x}"


def rule_text(items: list[tuple[str, Dep]], comment: str | None, family: str = "ip") -> str:
    """The text nft prints for a rule's items (print text, Dep), as its evaluation and
    delinearization leave it: a `meta l4proto P` (or in an ip table `ip protocol P`) that a later
    match on P's header implies is left out, a `meta nfproto ipv4` that an ip header match implies
    too, unless a statement came between (rule_maybe_reset_payload_deps); a `th` field after the
    protocol is known prints as that protocol's; `reject with tcp reset` without a tcp match gets
    the `meta l4proto tcp` nft adds at the rule's start in an inet table, and takes the stored one
    away in an ip table; a reject's icmp type takes a stored `meta nfproto` away in inet, and a
    plain reject there after an ipv4 match prints its icmp type."""
    items = list(items)
    known: int | None = None
    for k, (text, dep) in enumerate(items):        # evaluation: `th` becomes the known protocol's
        if dep is not STMT and dep.th and known is not None and known in _L4_NAMES:
            items[k] = (_L4_NAMES[known] + text[2:], dep._replace(needs=known))
        elif dep is not STMT:
            known = dep.l4 if dep.l4 is not None else dep.needs if dep.needs is not None else known
    items = _merge(items, family)
    words: list[str | None] = []
    head = ""
    l4_dep: tuple[int, int] | None = None        # (word index, protocol) stored
    nf_dep: int | None = None                    # word index stored
    known_l4: int | None = None                  # what the evaluation knows so far
    ipv4 = False
    for text, dep in items:
        if dep is STMT:
            if text.startswith(statements.TCP_DEP):
                text = text[len(statements.TCP_DEP):]
                if family == "inet":
                    if known_l4 != 6:
                        head = "meta l4proto tcp "
                elif l4_dep is not None and l4_dep[1] == 6:
                    words[l4_dep[0]] = None
            if family == "inet" and text.startswith("reject"):
                if text == "reject" and ipv4:
                    text = "reject with icmp port-unreachable"
                if text.startswith("reject with icmp ") or text.startswith("reject with tcp"):
                    if nf_dep is not None:
                        words[nf_dep] = None
            words.append(text)
            l4_dep = nf_dep = None
            continue
        if dep.ip and nf_dep is not None:
            words[nf_dep] = None
            nf_dep = None
        if dep.needs is not None and l4_dep is not None and l4_dep[1] == dep.needs:
            words[l4_dep[0]] = None
            l4_dep = None
        words.append(text)
        if dep.nf is not None:
            nf_dep = len(words) - 1
        if dep.l4 is not None and (family == "ip" or not dep.ip):
            l4_dep = (len(words) - 1, dep.l4)
        known_l4 = dep.l4 if dep.l4 is not None else dep.needs if dep.needs is not None else known_l4
        ipv4 |= dep.ip or dep.nf == 2
    if comment is not None:
        words.append(f'comment "{comment}"')
    return head + " ".join(w for w in words if w is not None)


def set_text(s: NftSet) -> str:
    if not s.anonymous:
        return f"@{s.name}"
    return "{ " + ", ".join(element_text(s, el) for el in sorted_elements(s)) + " }"


def sorted_elements(s: NftSet) -> list[Element]:
    """nft sorts elements by value, but for an interval concatenation's (the kernel's pipapo walk)
    which it prints in the order they were added."""
    if len(s.types) > 1 and (s.ranges or s.interval):
        return list(s.elements.values())
    return sorted(s.elements.values(), key=lambda el: sort_key(s.types, el.key))


def element_text(s: NftSet, el: Element, extra: str = "") -> str:
    """An element as nft prints it: key, `extra` (timeout, expires), comment, ` : data`."""
    out = format_key(s.types, el.key, el.prefix, el.key_end, elements=True) + extra
    if el.comment is not None:
        out += f' comment "{el.comment}"'
    if el.data is not None:
        data = el.data.text() if isinstance(el.data, Verdict) else format_value(s.data_type or "", el.data)
        out += f" : {data}"
    return out


#: types nft prints a masked match of as a prefix (DTYPE_F_PREFIX), with their width in bits
_PREFIX_TYPES = {"ipv4_addr": 32, "mark": 32}


def _prefix_len(mask: int, bits: int) -> int | None:
    """The prefix length `mask` is a netmask of (leading ones, then zeros), or None."""
    ones = bin(mask).count("1")
    return ones if mask == ((1 << ones) - 1) << (bits - ones) else None


def value_text(lhs: Lhs, op: str, optext: str, v: int) -> str:
    """`lhs op value` as nft prints it after its evaluation and delinearization: `x ^ c == v` is
    `x v^c` (binop_transfer), `addr & netmask == v` is `addr v/len` and a full mask is no mask
    (DTYPE_F_PREFIX types); any other masked match prints its operator, `==` too."""
    field = lhs.fields[0]
    if lhs.binop is None:
        return f"{lhs.text} {optext}{format_value(field.type, v)}"
    bop, arg = lhs.binop
    if bop == "^" and op in ("==", "!="):
        return f"{field.text} {optext}{format_value(field.type, v ^ arg)}"
    bits = _PREFIX_TYPES.get(field.type)
    plen = _prefix_len(arg, bits) if bop == "&" and bits else None
    if plen is not None:
        return f"{field.text} {optext}{format_value(field.type, v)}" + ("" if plen == bits else f"/{plen}")
    return f"{lhs.text} {op} {format_value(field.type, v)}"


def set_match_text(lhs: Lhs, op: str, optext: str, s: NftSet) -> str:
    """`lhs [op] set` as nft prints it: a masked field prints its operator, `==` too; `x ^ c` against
    plain values prints the values xor c, as binop_transfer makes them."""
    if lhs.binop is None:
        return f"{lhs.text} {optext}{set_text(s)}"
    bop, arg = lhs.binop
    field = lhs.fields[0]
    if bop == "^" and op in ("==", "!=") and s.anonymous and not (s.prefixes or s.ranges):
        keys = sorted((k[0] ^ arg for k in s.elements), key=lambda k: sort_key(lhs.types, (k,)))
        return f"{field.text} {optext}{{ {', '.join(format_value(field.type, k) for k in keys)} }}"
    return f"{lhs.text} {op} {set_text(s)}"
