"""Packet matches (`-m NAME`): each one a registered class, as iptables' libxt_*.so + xt_*.ko.

Parsing follows the iptables extension (options, defaults, error cases) and `save()` prints
exactly what its save function prints; `match()` follows the kernel's match function.
Connection-state, statistic and recent matches live in `matches_ct`, addrtype and physdev in
`matches_dev`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from pktemu.errors import excerpt
from pktemu.netfilter.xt_base import (
    Match, Opt, ParseCtx, Pkt, mark_mask_str, parse_mark_mask, parse_port, parse_port_range, parse_uint,
    register_match, save_string,
)

if TYPE_CHECKING:
    from pktemu.netfilter.core import HookState


def _opts(*items: tuple[tuple[str, ...], Opt]) -> dict[str, Opt]:
    return {tok: opt for toks, opt in items for tok in toks}


def _ports_save(name: str, lo: int, hi: int, inv: bool) -> str:
    if lo == 0 and hi == 0xFFFF and not inv:
        return ""
    return f"{' !' if inv else ''} --{name} {lo}" + (f":{hi}" if lo != hi else "")


# ---------------------------------------------------------------------- tcp / udp / icmp
TCP_FLAGS = (("FIN", 0x01), ("SYN", 0x02), ("RST", 0x04), ("PSH", 0x08), ("ACK", 0x10),
             ("URG", 0x20), ("ALL", 0x3F), ("NONE", 0))


def _parse_tcp_flags(text: str, ctx: ParseCtx) -> int:
    v = 0
    for part in text.split(","):
        for name, bit in TCP_FLAGS:
            if name.lower() == part.lower():
                v |= bit
                break
        else:
            raise ctx.error(f"unknown TCP flag {excerpt(part)}")
    return v


def _tcp_flags_str(flags: int) -> str:
    """print_tcpf: one name per bit, FIN first; never ALL."""
    names = [name for name, bit in TCP_FLAGS[:6] if flags & bit]
    return ",".join(names) if names else "NONE"


class _PortMatch(Match):
    """Shared part of tcp and udp: --sport/--dport ranges with `!`."""

    options: ClassVar[dict[str, Opt]] = _opts(
        (("--sport", "--source-port"), Opt("sport", invert=True)),
        (("--dport", "--destination-port"), Opt("dport", invert=True)),
    )

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.spts = (0, 0xFFFF)
        self.dpts = (0, 0xFFFF)
        self.inv_s = self.inv_d = False

    def parse(self, opt: str, args: list[str], invert: bool, ctx: ParseCtx) -> None:
        if opt == "sport":
            self.spts, self.inv_s = parse_port_range(args[0], ctx), invert
        elif opt == "dport":
            self.dpts, self.inv_d = parse_port_range(args[0], ctx), invert

    def ports_match(self, p: Pkt) -> bool:
        if p.sport < 0:
            return False
        lo, hi = self.spts
        if (lo <= p.sport <= hi) == self.inv_s:
            return False
        lo, hi = self.dpts
        return (lo <= p.dport <= hi) != self.inv_d

    def save(self) -> str:
        return (_ports_save("sport", *self.spts, self.inv_s)
                + _ports_save("dport", *self.dpts, self.inv_d))


@register_match("tcp")
class TcpMatch(_PortMatch):
    name = "tcp"
    proto = 6
    options = dict(_PortMatch.options) | _opts(
        (("--syn",), Opt("flags", nargs=0, invert=True)),
        (("--tcp-flags",), Opt("flags", nargs=2, invert=True)),
        (("--tcp-option",), Opt("option", invert=True)),
    )

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.flg_mask = self.flg_cmp = 0
        self.inv_flags = False
        self.tcp_option = 0
        self.inv_option = False

    def parse(self, opt: str, args: list[str], invert: bool, ctx: ParseCtx) -> None:
        if opt == "flags":
            if args:
                self.flg_mask, self.flg_cmp = _parse_tcp_flags(args[0], ctx), _parse_tcp_flags(args[1], ctx)
            else:
                self.flg_mask, self.flg_cmp = 0x17, 0x02
            self.inv_flags = invert
        elif opt == "option":
            self.tcp_option, self.inv_option = parse_uint(args[0], ctx, "TCP option", 1, 255), invert
        else:
            super().parse(opt, args, invert, ctx)

    def match(self, p: Pkt, state: "HookState") -> bool:
        if not self.ports_match(p):
            return False
        d = p.frame.data
        if ((d[p.l4off + 13] & self.flg_mask) == self.flg_cmp) == self.inv_flags:
            return False
        if self.tcp_option:
            return self._has_option(p) != self.inv_option
        return True

    def _has_option(self, p: Pkt) -> bool:
        d = p.frame.data
        off = p.l4off + 20
        end = min(p.l4off + (d[p.l4off + 12] >> 4) * 4, len(d))
        while off < end:
            kind = d[off]
            if kind == self.tcp_option:
                return True
            if kind == 0:
                return False
            if kind == 1:
                off += 1
                continue
            if off + 1 >= end or d[off + 1] < 2:
                return False
            off += d[off + 1]
        return False

    def save(self) -> str:
        s = super().save()
        if self.tcp_option or self.inv_option:
            s += f"{' !' if self.inv_option else ''} --tcp-option {self.tcp_option}"
        if self.flg_mask or self.inv_flags:
            s += (f"{' !' if self.inv_flags else ''} --tcp-flags {_tcp_flags_str(self.flg_mask)} "
                  f"{_tcp_flags_str(self.flg_cmp)}")
        return s


@register_match("udp")
class UdpMatch(_PortMatch):
    name = "udp"
    proto = 17

    def match(self, p: Pkt, state: "HookState") -> bool:
        return self.ports_match(p)


ICMP_TYPES: dict[str, tuple[int, int, int]] = {
    "any": (0xFF, 0, 0xFF), "echo-reply": (0, 0, 0xFF), "pong": (0, 0, 0xFF),
    "destination-unreachable": (3, 0, 0xFF), "network-unreachable": (3, 0, 0),
    "host-unreachable": (3, 1, 1), "protocol-unreachable": (3, 2, 2), "port-unreachable": (3, 3, 3),
    "fragmentation-needed": (3, 4, 4), "network-prohibited": (3, 9, 9), "host-prohibited": (3, 10, 10),
    "communication-prohibited": (3, 13, 13), "source-quench": (4, 0, 0xFF), "redirect": (5, 0, 0xFF),
    "echo-request": (8, 0, 0xFF), "ping": (8, 0, 0xFF), "time-exceeded": (11, 0, 0xFF),
    "ttl-zero-during-transit": (11, 0, 0), "parameter-problem": (12, 0, 0xFF),
    "timestamp-request": (13, 0, 0xFF), "timestamp-reply": (14, 0, 0xFF),
}


@register_match("icmp")
class IcmpMatch(Match):
    name = "icmp"
    proto = 1
    options = _opts((("--icmp-type",), Opt("type", invert=True)))

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.type, self.code = 0xFF, (0, 0xFF)
        self.invert = False

    def parse(self, opt: str, args: list[str], invert: bool, ctx: ParseCtx) -> None:
        text = args[0]
        if text.lower() in ICMP_TYPES:
            t, lo, hi = ICMP_TYPES[text.lower()]
            self.type, self.code = t, (lo, hi)
        else:
            t_s, sep, c_s = text.partition("/")
            self.type = parse_uint(t_s, ctx, "ICMP type", 0, 255)
            c = parse_uint(c_s, ctx, "ICMP code", 0, 255) if sep else None
            self.code = (c, c) if c is not None else (0, 0xFF)
        self.invert = invert

    def match(self, p: Pkt, state: "HookState") -> bool:
        if p.fragoff:
            return False
        d = p.frame.data
        t, c = d[p.l4off], d[p.l4off + 1]
        hit = self.type == 0xFF or (t == self.type and self.code[0] <= c <= self.code[1])
        return hit != self.invert

    def save(self) -> str:
        s = " !" if self.invert else ""
        if self.type == 0xFF:
            return s + " --icmp-type any"
        s += f" --icmp-type {self.type}"
        if self.code != (0, 0xFF):
            s += f"/{self.code[0]}"
        return s


# ---------------------------------------------------------------------- multiport
@register_match("multiport")
class MultiportMatch(Match):
    name = "multiport"
    options = _opts(
        (("--sports", "--source-ports"), Opt("sports", invert=True)),
        (("--dports", "--destination-ports"), Opt("dports", invert=True)),
        (("--ports",), Opt("ports", invert=True)),
    )

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.mode = ""
        self.ranges: list[tuple[int, int]] = []
        self.invert = False

    def parse(self, opt: str, args: list[str], invert: bool, ctx: ParseCtx) -> None:
        if self.mode:
            raise ctx.error("multiport takes only one of --sports, --dports, --ports")
        self.mode, self.invert = opt, invert
        slots = 0
        for part in args[0].split(","):
            lo_s, sep, hi_s = part.partition(":")
            lo = parse_port(lo_s, ctx)
            hi = parse_port(hi_s, ctx) if sep else lo
            if lo > hi:
                raise ctx.error(f"multiport: invalid port range {excerpt(part)}")
            self.ranges.append((lo, hi))
            slots += 2 if sep else 1
        if slots > 15:
            raise ctx.error("multiport: too many ports specified (15 at most)")

    def final_check(self, ctx: ParseCtx) -> None:
        if not self.mode:
            raise ctx.error("multiport needs --sports, --dports or --ports")
        if ctx.proto not in (6, 17, 33, 132, 136) or ctx.proto_inv:
            raise ctx.error("multiport needs '-p tcp', '-p udp', '-p udplite', '-p sctp' or '-p dccp'")

    def match(self, p: Pkt, state: "HookState") -> bool:
        if p.sport < 0:
            return False
        s, d, mode = p.sport, p.dport, self.mode
        for lo, hi in self.ranges:
            if ((mode != "dports" and lo <= s <= hi) or (mode != "sports" and lo <= d <= hi)):
                return not self.invert
        return self.invert

    def save(self) -> str:
        ports = ",".join(f"{lo}:{hi}" if lo != hi else str(lo) for lo, hi in self.ranges)
        return f"{' !' if self.invert else ''} --{self.mode} {ports}"


# ---------------------------------------------------------------------- comment / mark / connmark
@register_match("comment")
class CommentMatch(Match):
    name = "comment"
    always = True
    options = _opts((("--comment",), Opt("comment")))

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.comment = ""

    def parse(self, opt: str, args: list[str], invert: bool, ctx: ParseCtx) -> None:
        if len(args[0].encode("utf-8", "surrogatepass")) > 255:
            raise ctx.error("comment longer than 255 bytes")
        self.comment = args[0]

    def final_check(self, ctx: ParseCtx) -> None:
        if "comment" not in self.seen:
            raise ctx.error("match comment needs --comment")

    def match(self, p: Pkt, state: "HookState") -> bool:
        return True

    def save(self) -> str:
        return " --comment" + save_string(self.comment)


@register_match("mark")
class MarkMatch(Match):
    name = "mark"
    options = _opts((("--mark",), Opt("mark", invert=True)))

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.mark, self.mask, self.invert = 0, 0xFFFFFFFF, False

    def parse(self, opt: str, args: list[str], invert: bool, ctx: ParseCtx) -> None:
        self.mark, self.mask = parse_mark_mask(args[0], ctx, "mark")
        self.invert = invert

    def final_check(self, ctx: ParseCtx) -> None:
        if "mark" not in self.seen:
            raise ctx.error(f"match {self.ext_name} needs --mark")

    def match(self, p: Pkt, state: "HookState") -> bool:
        return ((p.frame.mark & self.mask) == self.mark) != self.invert

    def save(self) -> str:
        return f"{' !' if self.invert else ''} --mark" + mark_mask_str(self.mark, self.mask)


@register_match("connmark")
class ConnmarkMatch(MarkMatch):
    name = "connmark"

    def match(self, p: Pkt, state: "HookState") -> bool:
        ct = p.frame.ct
        mark = getattr(ct, "mark", None)
        if mark is None:
            return False
        return ((mark & self.mask) == self.mark) != self.invert


from pktemu.netfilter import matches_ct as _matches_ct  # noqa: E402,F401  (registers its matches)
from pktemu.netfilter import matches_dev as _matches_dev  # noqa: E402,F401  (registers its matches)
from pktemu.netfilter import matches_node as _matches_node  # noqa: E402,F401  (registers its matches)
from pktemu.netfilter import matches_rate as _matches_rate  # noqa: E402,F401  (registers its matches)
from pktemu.netfilter import matches_string as _matches_string  # noqa: E402,F401  (registers its matches)
from pktemu.netfilter import matches_sctp as _matches_sctp  # noqa: E402,F401  (registers its matches)
from pktemu.netfilter import matches_set as _matches_set  # noqa: E402,F401  (ipset: -m set, -j SET)
