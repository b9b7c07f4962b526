"""Typed values: parse a literal of one key type to an int, print it back as nft does, sort keys.

`nft list` sorts the elements of a set it prints (src/expression.c list_expr_sort): a single
field by its value, a concatenation by its bytes read as one host-endian (little-endian) number,
which is why `10.3.245.20 . tcp . 80` prints before `10.3.241.152 . tcp . 80`.
"""
from __future__ import annotations

import ipaddress
from typing import Any

from pktemu.nftables.model import KEY_TYPES
from pktemu.nftables.unsupported import service

PROTOS = {"icmp": 1, "igmp": 2, "tcp": 6, "udp": 17, "gre": 47, "esp": 50, "ah": 51, "sctp": 132,
          "dccp": 33, "udplite": 136}
PROTO_NAMES = {v: k for k, v in PROTOS.items()}
CT_STATE_BITS = {"invalid": 1, "established": 2, "related": 4, "new": 8, "untracked": 64}
CT_STATUS_BITS = {"expected": 1, "seen-reply": 2, "assured": 4, "confirmed": 8, "snat": 16,
                  "dnat": 32, "dying": 512}
FLAG_NAMES = {"ct_state": CT_STATE_BITS, "ct_status": CT_STATUS_BITS}
#: `meta nfproto`'s names (NFPROTO_IPV4, NFPROTO_IPV6)
NFPROTOS = {"ipv4": 2, "ipv6": 10}
NFPROTO_NAMES = {v: k for k, v in NFPROTOS.items()}
FIB_TYPES = ("unspec", "unicast", "local", "broadcast", "anycast", "multicast", "blackhole",
             "unreachable", "prohibit")


class ValueError_(Exception):
    """A literal that is not a value of the expected type (the parser adds file and line)."""


def parse_value(typ: str, text: str) -> tuple[int, int | None, int | None]:
    """(value, prefix length or None, range end or None) of one literal of `typ`."""
    ranged = ("ipv4_addr", "inet_service", "integer", "mark", "raw")
    if "-" in text and typ in ranged and not text.startswith("-"):
        lo, _, hi = text.partition("-")
        if "/" in text:
            raise ValueError_(f"{text}: a prefix cannot be part of a range (nft: syntax error, unexpected -)")
        a, _, _ = parse_value(typ, lo)
        b, _, _ = parse_value(typ, hi)
        if b < a:
            raise ValueError_(f"range {text} ends before it starts")
        return a, None, b
    if typ == "ipv4_addr":
        try:
            if "/" in text:
                net = ipaddress.IPv4Network(text, strict=False)
                return int(net.network_address), net.prefixlen, None
            return int(ipaddress.IPv4Address(text)), None, None
        except ValueError:
            raise ValueError_(f"'{text}' is not an IPv4 address") from None
    if typ in FLAG_NAMES:
        bits = 0
        for name in text.split(","):
            if name not in FLAG_NAMES[typ]:
                raise ValueError_(f"'{name}' is not a {typ.replace('_', ' ')} ({', '.join(FLAG_NAMES[typ])})")
            bits |= FLAG_NAMES[typ][name]
        return bits, None, None
    if typ == "fib_type":
        if text not in FIB_TYPES:
            raise ValueError_(f"'{text}' is not a fib address type ({', '.join(FIB_TYPES)})")
        return FIB_TYPES.index(text), None, None
    if typ == "inet_proto":
        if text in PROTOS:
            return PROTOS[text], None, None
        return _int(text, 255, "protocol"), None, None
    if typ == "inet_service":
        if text[:1].isalpha():
            raise ValueError_(service(text))
        return _int(text, 65535, "port"), None, None
    if typ == "nfproto":
        if text in NFPROTOS:
            return NFPROTOS[text], None, None
        return _int(text, 255, "nfproto (ipv4, ipv6 or a number)"), None, None
    if typ == "mark" and "/" in text:          # nft lists a masked mark so: 0x00010000/16
        val, _, length = text.partition("/")
        if not length.isdigit() or int(length) > 32:
            raise ValueError_(f"'{text}': a mark prefix length is 0-32")
        plen = int(length)
        return _int(val, 2**32 - 1, typ) & (((1 << plen) - 1) << (32 - plen)), plen, None
    if typ in ("mark", "integer", "ct_state"):
        return _int(text, 2**32 - 1, typ), None, None
    if typ == "raw":                           # `@base,off,len` compares to an integer of any size
        try:
            return int(text, 0), None, None
        except ValueError:
            raise ValueError_(f"'{text}' is not an integer (a raw payload's value)") from None
    if typ == "ifname":
        raw = text.encode()[:16]
        return int.from_bytes(raw.ljust(16, b"\0"), "big"), None, None
    raise ValueError_(f"values of type {typ} are not supported")


def _int(text: str, top: int, what: str) -> int:
    try:
        v = int(text, 0)
    except ValueError:
        raise ValueError_(f"'{text}' is not a valid {what}") from None
    if not 0 <= v <= top:
        raise ValueError_(f"{what} {text} out of range 0-{top}")
    return v


def format_value(typ: str, v: int) -> str:
    """One value as `nft list` prints it."""
    if typ == "ipv4_addr":
        return str(ipaddress.IPv4Address(v))
    if typ == "inet_proto":
        return PROTO_NAMES.get(v, str(v))
    if typ == "mark":
        return f"0x{v:08x}"
    if typ == "nfproto":
        return NFPROTO_NAMES.get(v, str(v))
    if typ in FLAG_NAMES:
        return ",".join(n for n, b in sorted(FLAG_NAMES[typ].items(), key=lambda x: x[1]) if v & b)
    if typ == "fib_type":
        return FIB_TYPES[v] if v < len(FIB_TYPES) else str(v)
    if typ == "raw":
        return f"0x{v:x}"
    if typ == "ifname":
        return '"' + v.to_bytes(16, "big").rstrip(b"\0").decode(errors="replace") + '"'
    return str(v)


def format_key(types: list[str], key: tuple[int, ...], prefix: int | None = None,
               end: tuple[int, ...] | None = None, elements: bool = False) -> str:
    """An element key: fields joined by ` . `, an interval as a/len or a-b, a full prefix as the bare
    value; `elements`: as a set's element, whose range that is a prefix prints as one (as nft
    prints what it reads back from the kernel), where a match's `a-b` prints as written."""
    parts = []
    for i, (t, v) in enumerate(zip(types, key, strict=True)):
        s = format_value(t, v)
        if prefix is not None and len(key) == 1:
            if prefix != KEY_TYPES.get(t, (4, False))[0] * 8:
                s += f"/{prefix}"
        elif end is not None and end[i] != v:
            plen = range_prefix(t, v, end[i]) if elements else None
            s += f"/{plen}" if plen is not None else "-" + format_value(t, end[i])
        parts.append(s)
    return " . ".join(parts)


def range_prefix(typ: str, lo: int, hi: int) -> int | None:
    """The prefix length a range of an address or a mark is (nft prints a concatenation's field so),
    or None."""
    if typ not in ("ipv4_addr", "mark") or hi < lo:
        return None
    host = (hi - lo + 1).bit_length() - 1
    if hi - lo + 1 != 1 << host or lo & ((1 << host) - 1):
        return None
    return 32 - host


def sort_key(types: list[str], key: tuple[int, ...]) -> int:
    """list_expr_sort's order: the value itself, or a concatenation's bytes as a little-endian number."""
    if len(types) == 1 and types[0] != "ifname":     # a name's bytes are a string: read little-endian too
        return key[0]
    data = b""
    for t, v in zip(types, key, strict=True):
        size, host = KEY_TYPES.get(t, (4, True))
        data += v.to_bytes(size, "little" if host else "big")
    return int.from_bytes(data, "little")


def shared(v: Any) -> Any:
    """The one int object for a small constant (ports, masks, marks), shared by every rule using it:
    a packet then touches one object for them however many rules it runs."""
    if isinstance(v, int) and (v < 1 << 16 or v in _MASKS):
        return _CONSTS.setdefault(v, v)
    return v


_CONSTS: dict[int, int] = {}
_MASKS = frozenset(((1 << n) - 1) << (32 - n) for n in range(33))


def port_range(port: str) -> tuple[int, int] | None:
    """`P` or `P-Q` of a NAT target, else None."""
    a, _, b = port.partition("-")
    try:
        return int(a), int(b or a)
    except ValueError:
        return None
