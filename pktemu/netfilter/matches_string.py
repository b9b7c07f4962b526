"""The string match: a pattern searched in the packet from its IP header on (xt_string).

The kernel searches skb data from the network header, bytes [--from, --to) (a match must end
within them), so offsets count from the first byte of the IP header, and Ethernet padding is not
searched. bm and kmp find the same first occurrence in a linear packet, which every emulated
packet is; the match only says whether there is one. Parsing and printing follow libxt_string
(revision 1) of iptables 1.8.9.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from pktemu.errors import excerpt
from pktemu.netfilter.xt_base import Match, Opt, ParseCtx, Pkt, parse_uint, register_match

if TYPE_CHECKING:
    from pktemu.netfilter.core import HookState

MAX_PATTERN = 128          # XT_STRING_MAX_PATTERN_SIZE
_HEX = frozenset("0123456789abcdefABCDEF")


def parse_hex_string(text: str, ctx: ParseCtx) -> bytes:
    """libxt_string parse_hex_string: literal characters, `\\c` escapes, `|41 42|` hex blocks."""
    if not text:
        raise ctx.error("string: --hex-string must contain at least one char")
    raw = text.encode("utf-8", "surrogateescape")
    out = bytearray()
    i, n, in_hex = 0, len(raw), False
    while i < n:
        c = raw[i:i + 1]
        if c == b"|":
            in_hex = not in_hex
            i += 1
            continue
        if in_hex:
            if c == b" ":
                i += 1
                continue
            pair = raw[i:i + 2].decode("latin-1")
            if len(pair) < 2 or not set(pair) <= _HEX:
                raise ctx.error(f"string: invalid hex block in {excerpt(text)}")
            out.append(int(pair, 16))
            i += 2
        elif c == b"\\":
            if i + 1 >= n:
                raise ctx.error(f"string: bad literal placement at end of {excerpt(text)}")
            out += raw[i + 1:i + 2]
            i += 2
        else:
            out += c
            i += 1
        if len(out) > MAX_PATTERN:
            raise ctx.error("string: pattern longer than 128 bytes")
    if in_hex:
        raise ctx.error(f"string: unterminated hex block in {excerpt(text)}")
    return bytes(out)


@register_match("string")
class StringMatch(Match):
    name = "string"
    options = {"--algo": Opt("algo"), "--string": Opt("string", invert=True),
               "--hex-string": Opt("hex-string", invert=True), "--from": Opt("from"),
               "--to": Opt("to"), "--icase": Opt("icase", nargs=0)}

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.algo = ""
        self.pattern = b""
        self.invert = False
        self.from_off = 0
        self.to_off = 0xFFFF
        self.needle = b""

    def parse(self, opt: str, args: list[str], invert: bool, ctx: ParseCtx) -> None:
        arg = args[0] if args else ""
        if opt == "algo":
            if arg not in ("bm", "kmp"):
                raise ctx.error(f"string: --algo {excerpt(arg)}: only bm and kmp exist")
            self.algo = arg
        elif opt in ("string", "hex-string"):
            if self.seen & {"string", "hex-string"} - {opt}:
                raise ctx.error("string: only one of --string and --hex-string")
            if opt == "string":
                pat = arg.encode("utf-8", "surrogateescape")
                if not pat or len(pat) > MAX_PATTERN:
                    raise ctx.error(f"string: --string {excerpt(arg)}: 1 to 128 bytes")
            else:
                pat = parse_hex_string(arg, ctx)
            self.pattern, self.invert = pat, invert
        elif opt == "from":
            self.from_off = parse_uint(arg, ctx, "string --from", 0, 0xFFFF)
        elif opt == "to":
            self.to_off = parse_uint(arg, ctx, "string --to", 0, 0xFFFF)

    def final_check(self, ctx: ParseCtx) -> None:
        if not self.pattern:
            raise ctx.error("string: you must specify --string or --hex-string")
        if not self.algo:
            raise ctx.error("string: you must specify --algo")
        if self.from_off > self.to_off:
            raise ctx.error("string: --from is after --to")
        self.needle = self.pattern.lower() if "icase" in self.seen else self.pattern

    def match(self, p: Pkt, state: "HookState") -> bool:
        start = 14 + self.from_off
        window = bytes(p.frame.data[start:14 + min(self.to_off, p.ip_len)])
        if "icase" in self.seen:
            window = window.lower()
        return (self.needle in window) != self.invert

    def save(self) -> str:
        pat = self.pattern
        inv = " !" if self.invert else ""
        if all(0x20 <= b < 0x7F for b in pat):
            text = "".join("\\" + chr(b) if b in (0x22, 0x5C) else chr(b) for b in pat)
            s = f'{inv} --string "{text}"'
        else:
            s = f'{inv} --hex-string "|' + "".join(f"{b:02x}" for b in pat) + '|"'
        s += f" --algo {self.algo}"
        if self.from_off:
            s += f" --from {self.from_off}"
        if self.to_off != 0xFFFF:
            s += f" --to {self.to_off}"
        return s + (" --icase" if "icase" in self.seen else "")
