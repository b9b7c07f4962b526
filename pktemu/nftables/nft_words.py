"""The words of kube-proxy's `nft -f` lines as the fast loader (nft_lines) reads them: only as nft
prints them back (canonical addresses, numbers and NAT targets), so a rule's text can be printed
from its steps; and the readers, verdict words and print parts its rules share."""
from __future__ import annotations

import socket
from typing import Any, Callable

from pktemu.nftables import shapes
from pktemu.nftables.fields import lookup_field
from pktemu.nftables.values import port_range

VERDICTS = ("accept", "drop", "continue", "return")
JUMPS = ("jump", "goto")
#: `PROTO dport|sport` -> (reader, the l4 protocol it needs)
PORTS: dict[tuple[str, str], tuple[Any, int | None]] = {}
for _p in ("tcp", "udp", "sctp", "th"):
    for _d in ("sport", "dport"):
        _f = lookup_field([_p, _d, ""])
        assert _f is not None
        PORTS[(_p, _d)] = (_f[0].read, _f[0].proto)
ADDR_FIELDS = {w: lookup_field(["ip", w, ""])[0].read for w in ("saddr", "daddr")}  # type: ignore[index]
_L4 = lookup_field(["meta", "l4proto", ""])
assert _L4 is not None
L4_READ = _L4[0].read
_pton, _INET = socket.inet_pton, socket.AF_INET
MASK = tuple(((1 << n) - 1) << (32 - n) if n else 0 for n in range(33))


def quad(w: str) -> int | None:
    """A dotted quad as ipaddress prints it (no leading zeros: what inet_ntoa gives back), else None:
    inet_pton takes exactly those (four decimal octets, no leading zero, nothing around them), in
    one call where inet_aton then inet_ntoa (which take `1.2.3`, `0x1.2.3.4`, `01.2.3.4`) made two."""
    try:
        return int.from_bytes(_pton(_INET, w), "big")
    except (OSError, ValueError):
        return None


def num(w: str, top: int) -> int | None:
    """A decimal number as nft prints it (no sign, no leading zeros), up to `top`, else None."""
    if not (w.isdigit() and w.isascii()) or (w[0] == "0" and len(w) > 1):
        return None
    v = int(w)
    return v if v <= top else None


KIND = {k: k for k in (*VERDICTS, *JUMPS)}
INDEX = tuple(str(k) for k in range(64))
_PARTS: dict[tuple[Any, ...], tuple[Any, ...]] = {}


def item_part(pre: str, fmt: Any, extra: Any, post: str) -> tuple[Any, ...]:
    """An item printed as `pre + fmt(its step's argument, extra) + post`, one tuple for equal ones."""
    key = (pre, fmt, extra, post)
    return _PARTS.setdefault(key, key)


VERDICT_PART = item_part("", shapes.verdict, None, "")
ADDR_PARTS = {(w, neg): item_part(f"ip {w} {'!= ' if neg else ''}", shapes.addr, None, "")
               for w in ("saddr", "daddr") for neg in (False, True)}


def plain(line: str) -> bool:
    return "{" not in line and "}" not in line and "," not in line


def nat_target(text: str, addr_of: Callable[[str], int | None]) -> tuple[int, int | None, int | None] | None:
    """`A` or `A:P` or `A:P-Q` of a dnat, as statements._addr_port reads it, else None."""
    addr, colon, port = text.rpartition(":")
    if not colon:
        addr, port = text, ""
    elif not port:
        return None               # `A:` the general parser keeps as written
    v = addr_of(addr)
    if v is None:
        return None
    if not port:
        return v, None, None
    ports = port_range(port)
    if ports is None or shapes.nat_port(*ports) != ":" + port:
        return None               # only as printed back (`:08080` or `:80-80` go to the general parser)
    return (v, *ports)
