"""Matches that real nodes' dumps use: nfacct, iprange, length, owner; u32 is refused.

Each parses and prints as its libxt_*.so does (checked against iptables 1.8.9, see
tests/test_xtables_real_nodes.py) and matches as its xt_*.ko does, with the limits said per class.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from pktemu.errors import excerpt
from pktemu.net.icmp import CTL_SOCK, KERNEL_SK
from pktemu.netfilter.core import OUTPUT, POSTROUTING
from pktemu.netfilter.xt_base import (
    U32, Match, Opt, ParseCtx, Pkt, ip_str, parse_ipv4, parse_uint, register_match, save_string,
)

if TYPE_CHECKING:
    from pktemu.netfilter.core import HookState


@register_match("nfacct")
class NfacctMatch(Match):
    """Counts into the named accounting object (per namespace, in `ruleset.ext["nfacct"]`) and
    always matches. The kernel needs `nfacct add NAME` first; here the object exists on first use."""

    name = "nfacct"
    options = {"--nfacct-name": Opt("name")}

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.acct = ""
        self.counters: dict[str, list[int]] = {}

    def parse(self, opt: str, args: list[str], invert: bool, ctx: ParseCtx) -> None:
        if not args[0] or len(args[0].encode("utf-8", "surrogatepass")) > 31:
            raise ctx.error(f"nfacct: --nfacct-name {excerpt(args[0])}: 1 to 31 characters")
        self.acct = args[0]

    def final_check(self, ctx: ParseCtx) -> None:
        if not self.acct:
            raise ctx.error("match nfacct needs --nfacct-name")

    def bind(self, ruleset: Any) -> None:
        self.counters = ruleset.ext.setdefault("nfacct", {})
        self.counters.setdefault(self.acct, [0, 0])

    def match(self, p: Pkt, state: "HookState") -> bool:
        c = self.counters.setdefault(self.acct, [0, 0])
        c[0] += 1
        c[1] += p.ip_len
        return True

    def save(self) -> str:
        return " --nfacct-name " + save_string(self.acct)   # libxt_nfacct prints two blanks


@register_match("iprange")
class IprangeMatch(Match):
    """`--src-range a[-b]`, `--dst-range a[-b]` (inclusive; a reversed range matches nothing)."""

    name = "iprange"
    options = {"--src-range": Opt("src", invert=True), "--dst-range": Opt("dst", invert=True)}

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.ranges: dict[str, tuple[int, int, bool]] = {}

    def parse(self, opt: str, args: list[str], invert: bool, ctx: ParseCtx) -> None:
        lo_s, dash, hi_s = args[0].partition("-")
        lo = parse_ipv4(lo_s, ctx, f"--{opt}-range")
        hi = parse_ipv4(hi_s, ctx, f"--{opt}-range") if dash else lo
        self.ranges[opt] = (lo, hi, invert)

    def final_check(self, ctx: ParseCtx) -> None:
        if not self.ranges:
            raise ctx.error("match iprange needs --src-range or --dst-range")

    def match(self, p: Pkt, state: "HookState") -> bool:
        for opt, (lo, hi, inv) in self.ranges.items():
            addr = p.saddr if opt == "src" else p.daddr
            if (lo <= addr <= hi) == inv:
                return False
        return True

    def save(self) -> str:
        return "".join(f"{' !' if inv else ''} --{opt}-range {ip_str(lo)}-{ip_str(hi)}"
                       for opt in ("src", "dst") if opt in self.ranges
                       for lo, hi, inv in (self.ranges[opt],))


@register_match("length")
class LengthMatch(Match):
    """`--length a[:b]` on the IP total length (a reversed range matches nothing, as in the kernel)."""

    name = "length"
    options = {"--length": Opt("length", invert=True)}

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.lo, self.hi, self.invert = 0, 0xFFFF, False

    def parse(self, opt: str, args: list[str], invert: bool, ctx: ParseCtx) -> None:
        a, sep, b = args[0].partition(":")
        self.lo = parse_uint(a, ctx, "length", 0, 0xFFFF) if a else 0
        self.hi = (parse_uint(b, ctx, "length", 0, 0xFFFF) if b else 0xFFFF) if sep else self.lo
        self.invert = invert

    def final_check(self, ctx: ParseCtx) -> None:
        if "length" not in self.seen:
            raise ctx.error("match length needs --length")

    def match(self, p: Pkt, state: "HookState") -> bool:
        return (self.lo <= p.ip_len <= self.hi) != self.invert

    def save(self) -> str:
        rng = str(self.lo) if self.lo == self.hi else f"{self.lo}:{self.hi}"
        return f"{' !' if self.invert else ''} --length {rng}"


@register_match("owner")
class OwnerMatch(Match):
    """`--socket-exists`, `--uid-owner a[-b]`, `--gid-owner a[-b]`, only in OUTPUT/POSTROUTING.

    The nodes' applications run as root (uid 0, gid 0). What the kernel answers by itself goes
    out by a control socket without a file (`KERNEL_SK` CTL_SOCK: --socket-exists matches, the ids
    do not) or, for REJECT's tcp-reset and once it crossed into another namespace, by no socket;
    as owner_mt, an option the packet has nothing for passes only inverted.
    """

    name = "owner"
    hooks = frozenset((OUTPUT, POSTROUTING))
    options = {"--socket-exists": Opt("socket-exists", nargs=0, invert=True),
               "--uid-owner": Opt("uid-owner", invert=True), "--gid-owner": Opt("gid-owner", invert=True)}
    _NAMES = {"root": 0}

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.items: dict[str, tuple[int, int, bool]] = {}

    def parse(self, opt: str, args: list[str], invert: bool, ctx: ParseCtx) -> None:
        if opt == "socket-exists":
            self.items[opt] = (0, 0, invert)
            return
        text = args[0]
        if text in self._NAMES:
            lo = hi = self._NAMES[text]
        else:
            a, dash, b = text.partition("-")
            lo = parse_uint(a, ctx, f"--{opt} (only numeric ids and root are known)", 0, U32 - 1)
            hi = parse_uint(b, ctx, f"--{opt}", 0, U32 - 1) if dash else lo
        self.items[opt] = (lo, hi, invert)

    def final_check(self, ctx: ParseCtx) -> None:
        if not self.items:
            raise ctx.error("match owner needs --socket-exists, --uid-owner or --gid-owner")

    def match(self, p: Pkt, state: "HookState") -> bool:
        sk = p.frame.meta.get(KERNEL_SK)
        if sk is None:
            return all((lo <= 0 <= hi) != inv for lo, hi, inv in self.items.values())
        if sk[1] != CTL_SOCK or sk[0] != state.node.name:
            return all(inv for _lo, _hi, inv in self.items.values())
        return all(inv != (opt == "socket-exists") for opt, (_lo, _hi, inv) in self.items.items())

    def save(self) -> str:
        out = ""
        for opt in ("socket-exists", "uid-owner", "gid-owner"):
            if opt in self.items:
                lo, hi, inv = self.items[opt]
                out += f"{' !' if inv else ''} --{opt}"
                if opt != "socket-exists":
                    out += f" {lo}" + (f"-{hi}" if hi != lo else "")
        return out


class _Refused(Match):
    """A match that is refused by name: a rule that silently never (or always) matched would be
    worse than an error."""

    why: ClassVar[str] = ""

    def parse(self, opt: str, args: list[str], invert: bool, ctx: ParseCtx) -> None:
        raise ctx.error(self.why)

    def final_check(self, ctx: ParseCtx) -> None:
        raise ctx.error(self.why)


@register_match("u32")
class U32Match(_Refused):
    name = "u32"
    options = {"--u32": Opt("u32", invert=True)}
    why = ("match u32 is not modelled (its byte-offset tests are not interpreted); "
           "rewrite the rule with other matches (e.g. -p, --tcp-flags, -m length)")

