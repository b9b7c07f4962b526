"""The sctp match: ports and chunk types of an SCTP packet (xt_sctp).

Parsing and printing follow libxt_sctp of iptables 1.8.9, `match()` the kernel's sctp_mt and
match_packet. libxt_sctp files chunk flags under the index of the chunk in its name table, not
under the chunk type; the two agree for types 0-14 and differ for I_DATA and later ones, which the
kernel then compares against chunks of the index's type. That is kept as it is.
"""
from __future__ import annotations

import struct
from typing import TYPE_CHECKING, ClassVar

from pktemu.errors import excerpt
from pktemu.netfilter.xt_base import (SERVICES, Match, Opt, ParseCtx, Pkt, parse_port, parse_port_range,
                                      register_match)

if TYPE_CHECKING:
    from pktemu.netfilter.core import HookState

_H = struct.Struct("!H")
MATCH_ANY, MATCH_ALL, MATCH_ONLY = 1, 2, 4        # SCTP_CHUNK_MATCH_*
MAX_FLAG_INFO = 4                                  # XT_NUM_SCTP_FLAGS
SCTP_COMMON_HLEN = 12

#: sctp_chunk_names of libxt_sctp: name, chunk type, valid flag letters (bit 7 first)
CHUNK_NAMES: tuple[tuple[str, int, str], ...] = (
    ("DATA", 0, "----IUBE"), ("INIT", 1, "--------"), ("INIT_ACK", 2, "--------"),
    ("SACK", 3, "--------"), ("HEARTBEAT", 4, "--------"), ("HEARTBEAT_ACK", 5, "--------"),
    ("ABORT", 6, "-------T"), ("SHUTDOWN", 7, "--------"), ("SHUTDOWN_ACK", 8, "--------"),
    ("ERROR", 9, "--------"), ("COOKIE_ECHO", 10, "--------"), ("COOKIE_ACK", 11, "--------"),
    ("ECN_ECNE", 12, "--------"), ("ECN_CWR", 13, "--------"), ("SHUTDOWN_COMPLETE", 14, "-------T"),
    ("I_DATA", 64, "----IUBE"), ("RE_CONFIG", 130, "--------"), ("PAD", 132, "--------"),
    ("ASCONF", 193, "--------"), ("ASCONF_ACK", 128, "--------"), ("FORWARD_TSN", 192, "--------"),
    ("I_FORWARD_TSN", 194, "--------"),
)
_ALL = frozenset(range(256))
#: the sctp entries of netbase's /etc/services, which xtables_parse_port(name, "sctp") reads
SCTP_SERVICES = {"amqp": 5672}


def _port(text: str, ctx: ParseCtx) -> int:
    if text in SCTP_SERVICES:
        return SCTP_SERVICES[text]
    if text in SERVICES:
        raise ctx.error(f"invalid port/service {excerpt(text)} (not an sctp service)")
    return parse_port(text, ctx)


def parse_sctp_ports(text: str, ctx: ParseCtx) -> tuple[int, int]:
    """parse_sctp_ports(): `a`, `a:b`, `:b`, `a:`, names looked up for sctp."""
    return parse_port_range(text, ctx, _port, "sctp: invalid portrange")


@register_match("sctp")
class SctpMatch(Match):
    name = "sctp"
    proto = 132
    options: ClassVar[dict[str, Opt]] = {
        "--sport": Opt("sport", invert=True), "--source-port": Opt("sport", invert=True),
        "--dport": Opt("dport", invert=True), "--destination-port": Opt("dport", invert=True),
        "--chunk-types": Opt("chunk-types", nargs=2, invert=True),
    }

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.spts = self.dpts = (0, 0xFFFF)
        self.inv_s = self.inv_d = self.inv_c = False
        self.match_type = 0
        self.chunkmap: frozenset[int] = frozenset()
        #: (chunk type as libxt_sctp files it, flag bits, flag mask), in the order given
        self.flag_info: list[tuple[int, int, int]] = []

    def parse(self, opt: str, args: list[str], invert: bool, ctx: ParseCtx) -> None:
        if opt == "sport":
            self.spts, self.inv_s = parse_sctp_ports(args[0], ctx), invert
        elif opt == "dport":
            self.dpts, self.inv_d = parse_sctp_ports(args[0], ctx), invert
        else:
            kind, chunks = args[0], args[1]
            if chunks[:1] in ("-", "!"):
                raise ctx.error("sctp: --chunk-types requires two args")
            types = {"ANY": MATCH_ANY, "ALL": MATCH_ALL, "ONLY": MATCH_ONLY}
            if kind.upper() not in types:
                raise ctx.error('sctp: Match type has to be one of "ALL", "ANY" or "ONLY"')
            self.match_type, self.inv_c = types[kind.upper()], invert
            self._parse_chunks(chunks, ctx)

    def _parse_chunks(self, text: str, ctx: ParseCtx) -> None:
        """parse_sctp_chunk: ALL, NONE, or NAME[:FLAGS] separated by commas."""
        if text.upper() == "ALL":
            self.chunkmap = _ALL
            return
        if text.upper() == "NONE":
            return
        chunkmap: set[int] = set()
        info: dict[int, list[int]] = {}
        for part in (p for p in text.split(",") if p):
            name, _, flags = part.partition(":")
            idx = next((i for i, c in enumerate(CHUNK_NAMES) if c[0].lower() == name.lower()), None)
            if idx is None:
                raise ctx.error(f"sctp: Unknown sctp chunk {excerpt(name)}")
            chunkmap.add(CHUNK_NAMES[idx][1])
            valid = CHUNK_NAMES[idx][2]
            for ch in flags:
                pos = valid.find(ch.upper())
                if pos < 0:
                    raise ctx.error(f"sctp: Invalid flags for chunk type {idx}")
                if idx not in info:
                    if len(info) == MAX_FLAG_INFO:
                        raise ctx.error("sctp: Number of chunk types with flags exceeds currently "
                                        "allowed limit")
                    info[idx] = [0, 0]
                bit = 1 << (7 - pos)
                info[idx][1] |= bit
                if ch.isupper():
                    info[idx][0] |= bit
        self.chunkmap = frozenset(chunkmap)
        self.flag_info = [(t, f, m) for t, (f, m) in info.items()]

    def _flags_ok(self, ctype: int, cflags: int) -> bool:
        """match_flags(): the first flag_info entry of this chunk type decides."""
        for t, flag, mask in self.flag_info:
            if t == ctype:
                return cflags & mask == flag
        return True

    def _chunks_match(self, d: bytearray, off: int, end: int) -> bool:
        """match_packet(): walk the chunks; a missing or zero-length header does not match
        (the kernel also hotdrops the packet)."""
        pending = set(self.chunkmap) if self.match_type == MATCH_ALL else set()
        while True:
            if end - off < 4 or _H.unpack_from(d, off + 2)[0] == 0:
                return False
            ctype, cflags = d[off], d[off + 1]
            off += (_H.unpack_from(d, off + 2)[0] + 3) & ~3
            if ctype in self.chunkmap:
                ok = self._flags_ok(ctype, cflags)
                if self.match_type == MATCH_ANY and ok:
                    return True
                if self.match_type == MATCH_ALL and ok:
                    pending.discard(ctype)
                if self.match_type == MATCH_ONLY and not ok:
                    return False
            elif self.match_type == MATCH_ONLY:
                return False
            if off >= end:
                break
        if self.match_type == MATCH_ALL:
            return not pending
        return self.match_type == MATCH_ONLY

    def match(self, p: Pkt, state: "HookState") -> bool:
        if p.fragoff or p.sport < 0:
            return False
        d = p.frame.data
        end = min(14 + p.ip_len, len(d))
        if end - p.l4off < SCTP_COMMON_HLEN:
            return False
        if "sport" in self.seen and (self.spts[0] <= p.sport <= self.spts[1]) == self.inv_s:
            return False
        if "dport" in self.seen and (self.dpts[0] <= p.dport <= self.dpts[1]) == self.inv_d:
            return False
        if "chunk-types" in self.seen:
            return self._chunks_match(d, p.l4off + SCTP_COMMON_HLEN, end) != self.inv_c
        return True

    def save(self) -> str:
        s = ""
        for opt, (lo, hi), inv in (("sport", self.spts, self.inv_s), ("dport", self.dpts, self.inv_d)):
            if opt in self.seen:
                s += (" !" if inv else "") + f" --{opt} {lo}" + (f":{hi}" if lo != hi else "")
        if "chunk-types" in self.seen:
            s += (" !" if self.inv_c else "") + " --chunk-types"
            s += {MATCH_ANY: " any", MATCH_ALL: " all", MATCH_ONLY: " only"}[self.match_type]
            s += self._chunks_str()
        return s

    def _chunks_str(self) -> str:
        """print_chunks(): NONE, ALL, or the chunks in type order, each with its flags."""
        if not self.chunkmap:
            return " NONE"
        if self.chunkmap == _ALL:
            return " ALL"
        parts = []
        for ctype in sorted(self.chunkmap):
            text = "".join(c[0] for c in CHUNK_NAMES if c[1] == ctype)
            for t, flag, mask in self.flag_info:
                if t == ctype and mask:
                    valid = CHUNK_NAMES[ctype][2]
                    text += ":" + "".join(valid[7 - i] if flag >> i & 1 else valid[7 - i].lower()
                                          for i in range(7, -1, -1) if mask >> i & 1)
            parts.append(text)
        return " " + ",".join(parts)
