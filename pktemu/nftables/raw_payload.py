"""Raw payload expressions `@base,offset,length` (nft's parser_bison.y `payload_raw_expr`).

pktemu lists two joined `th` port matches as nft does, `@th,0,32 0x10002`, so it must read that
form back for a saved listing to load. nft's delinearization names a raw field that is exactly a
known header field (`@th,16,16` is `th dport`, in an ip table `@nh,96,32` is `ip saddr`), so those
become the named field; the others stay raw and list their value in hex.
"""
from __future__ import annotations

from typing import Any

from pktemu.netfilter.xt_base import Pkt
from pktemu.nftables.fields import Field, lookup_field
from pktemu.nftables.lexer import Cursor

BASES = ("ll", "nh", "th", "ih")
#: raw (offset, bits) nft lists as a named field: th in any family, nh in an ip table
_TH_NAMES = {(0, 16): ["th", "sport"], (16, 16): ["th", "dport"]}
_NH_NAMES = {(16, 16): ["ip", "length"], (64, 8): ["ip", "ttl"], (72, 8): ["ip", "protocol"],
             (96, 32): ["ip", "saddr"], (128, 32): ["ip", "daddr"]}


def is_raw(cur: Cursor) -> bool:
    """Whether the cursor is at `@base ,` (a set reference `@name` has no comma after it)."""
    t = cur.peek()
    return t.kind == "word" and t.text[:1] == "@" and cur.peek(1).text == "," and cur.peek(1).kind == "punct"


def parse_raw(cur: Cursor, family: str) -> Field:
    """The field of `@base,offset,length` at the cursor (named where nft names it); its `raw` flag
    tells the match to read the value as an integer, as nft does."""
    tok = cur.next()
    base = tok.text[1:]
    cur.expect(",")
    off = cur.number("a raw payload offset")
    cur.expect(",")
    bits = cur.number("a raw payload length")
    if base not in BASES:
        raise cur.error(f"unknown raw payload base '{base}' (nft's are {', '.join(BASES)})", tok)
    if base in ("ll", "ih"):
        raise cur.error(f"@{base} is not supported by pktemu (it reads raw payloads of @nh and @th)", tok)
    if bits == 0 or off % 8 or bits % 8:
        raise cur.error(f"@{base},{off},{bits} is not supported by pktemu (it reads whole bytes, "
                        "of length 1 bit or more)", tok)
    names = _TH_NAMES if base == "th" else _NH_NAMES if family != "inet" else {}
    if (off, bits) in names:
        found = lookup_field(names[(off, bits)] + [""])
        assert found is not None
        f = found[0]
        return Field(f.text, f.type, f.read, f.proto, (1 << bits) - 1, raw=True)
    return Field(f"@{base},{off},{bits}", "raw", _reader(base == "th", off // 8, bits // 8), None,
                 (1 << bits) - 1, raw=True)


def _reader(th: bool, at: int, n: int) -> Any:
    """Read n bytes at `at` of the transport header (none in a later fragment) or of the ip header."""
    def read(p: Pkt, state: Any) -> int | None:
        if th and p.fragoff:
            return None
        d = p.frame.data
        start = (p.l4off if th else 14) + at
        if len(d) < start + n:
            return None
        return int.from_bytes(d[start:start + n], "big")
    return read
