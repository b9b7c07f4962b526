"""What every x_tables extension shares: the packet view, the option model, registries, parsers.

Matches and targets register themselves by name (as iptables' libxt_*.so do), so the rules
engine and the restore parser never name an extension. Values are parsed and printed the way
libxtables does it, so that `iptables-save` text round-trips byte for byte.
"""
from __future__ import annotations

import ipaddress
import re
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from pktemu.errors import PktemuError, excerpt

if TYPE_CHECKING:
    from pktemu.net.frame import Frame
    from pktemu.netfilter.core import HookState

XT_CONTINUE = -1          # a target's "go on with the next rule" (XT_CONTINUE in the kernel)
U32 = 0xFFFFFFFF

_IPHDR = struct.Struct("!HHHBBH4x")      # tot_len, id, frag_off, ttl, proto, check (from offset 16)
_ADDRS = struct.Struct("!II")
_PORTS = struct.Struct("!HH")
_PORT_PROTOS = frozenset((6, 17, 33, 132, 136))    # tcp, udp, dccp, sctp, udplite


class Pkt:
    """The IPv4 header fields of one frame, read once per table traversal.

    No target that lets the traversal continue rewrites addresses or ports (NAT targets end
    it), so the fields stay valid for the whole walk.
    """

    __slots__ = ("frame", "saddr", "daddr", "proto", "fragoff", "l4off", "ip_len", "ttl",
                 "sport", "dport")

    def __init__(self, frame: "Frame") -> None:
        d = frame.data
        self.frame = frame
        self.l4off = 14 + (d[14] & 0x0F) * 4
        self.ip_len, _id, frag, self.ttl, self.proto, _c = _IPHDR.unpack_from(d, 16)
        self.fragoff = frag & 0x1FFF
        self.saddr, self.daddr = _ADDRS.unpack_from(d, 26)
        if self.proto in _PORT_PROTOS and self.fragoff == 0 and len(d) >= self.l4off + 4:
            self.sport, self.dport = _PORTS.unpack_from(d, self.l4off)
        else:
            self.sport = self.dport = -1


@dataclass(frozen=True)
class Opt:
    """One extension option: its canonical name, argument count, and whether `!` may precede it."""
    name: str
    nargs: int = 1
    invert: bool = False
    multi: bool = False


#: What `-s`/`-d` address lists may add to one iptables-restore input, in rule parts (a rule counts 1
#: + its matches): iptables expands `-s a,b -d c,d` into 4 rules, and lists multiply.
MAX_EXPANSION = 1 << 16


class ParseCtx:
    """Where a rule is being parsed (for error lines), the rule's `-p` (extensions check it), and
    how many rule parts address lists may still add to this input."""

    def __init__(self, where: str, table: str, chain: str, expansion: int = MAX_EXPANSION,
                 shared: dict[Any, Any] | None = None) -> None:
        self.where = where
        self.table = table
        self.chain = chain
        self.proto = 0
        self.proto_inv = False
        self.expansion = expansion
        #: extension objects of one input by their settings, so equal ones are one object (xt_parse)
        self.shared = shared

    def error(self, msg: str) -> PktemuError:
        return PktemuError(f"{self.where}: {msg}")


class Extension:
    """Base of matches and targets: option bookkeeping shared by both. Its attributes are slots: a
    NAT target (slots only) then has its values in the object, not in a separate array (a DNAT
    per endpoint, read by a Service's first packet); others keep a __dict__ (xt_rule.ext_attrs)."""

    __slots__ = ("ext_name", "seen")
    name: ClassVar[str] = ""
    options: ClassVar[dict[str, Opt]] = {}
    table: ClassVar[str | None] = None              # kernel `.table`
    hooks: ClassVar[frozenset[str] | None] = None   # kernel `.hooks`
    kind: ClassVar[str] = "extension"

    def __init__(self, name: str) -> None:
        self.ext_name = name          # the name the rule used (aliases such as `state`, `NOTRACK`)
        self.seen: set[str] = set()

    def option(self, tok: str, args: list[str], invert: bool, ctx: ParseCtx) -> None:
        """Generic checks (inversion, repetition), then the extension's own `parse`."""
        opt = self.options[tok]
        if invert and not opt.invert:
            raise ctx.error(f"option '{tok}' of {self.kind} {self.ext_name} does not take '!'")
        if opt.name in self.seen and not opt.multi:
            raise ctx.error(f"option '{tok}' of {self.kind} {self.ext_name} given more than once")
        self.seen.add(opt.name)
        self.parse(opt.name, args, invert, ctx)

    def parse(self, opt: str, args: list[str], invert: bool, ctx: ParseCtx) -> None:
        raise NotImplementedError

    def final_check(self, ctx: ParseCtx) -> None:
        """x6_fcheck + the kernel's checkentry: called once the whole rule is parsed."""

    def bind(self, ruleset: Any) -> None:
        """Attach per-namespace state (recent lists) when the rule joins a ruleset."""

    @property
    def stateful(self) -> bool:
        """Whether a copy of the rule for another namespace needs its own object: the extension
        binds per-namespace state; an extension with state of its own says so too."""
        return type(self).bind is not Extension.bind

    def check_hooks(self, hooks: frozenset[str]) -> str | None:
        """Reachability check (the kernel's hook_mask test); returns an error text or None."""
        if self.hooks is not None and hooks - self.hooks:
            bad = ", ".join(sorted(hooks - self.hooks))
            ok = ", ".join(sorted(self.hooks))
            return f"{self.kind} {self.ext_name} is reachable from {bad}; only valid from {ok}"
        return None

    def save(self) -> str:
        """The text iptables-save prints after `-m NAME` / `-j NAME`, each part with a leading space."""
        return ""


class Match(Extension):
    kind = "match"
    proto: ClassVar[int | None] = None     # kernel `.proto`: the rule must say `-p` this
    always: ClassVar[bool] = False         # matches every packet: a rule's checks leave it out

    def final_check(self, ctx: ParseCtx) -> None:
        if self.proto is not None and (ctx.proto != self.proto or ctx.proto_inv):
            raise ctx.error(f"match {self.ext_name} needs '-p {proto_name(self.proto)}'")

    def match(self, p: Pkt, state: "HookState") -> bool:
        raise NotImplementedError


class Target(Extension):
    __slots__ = ()
    kind = "target"
    notable: ClassVar[bool] = False         # worth a note in frame.notes when it fires

    def target(self, p: Pkt, state: "HookState") -> int:
        """A verdict (NF_ACCEPT / NF_DROP / NF_STOLEN) or XT_CONTINUE."""
        raise NotImplementedError

    def summary(self, p: Pkt, state: "HookState") -> str:
        """Short text for explanation notes: the target name and what it did."""
        return self.ext_name + self.save().replace(" --", " ")


MATCHES: dict[str, type[Match]] = {}
TARGETS: dict[str, type[Target]] = {}


def register_match(*names: str) -> Any:
    """Class decorator: make a match available to `-m NAME` (several names for aliases)."""
    def deco(cls: type[Match]) -> type[Match]:
        for n in names or (cls.name,):
            MATCHES[n] = cls
        return cls
    return deco


def register_target(*names: str) -> Any:
    """Class decorator: make a target available to `-j NAME`."""
    def deco(cls: type[Target]) -> type[Target]:
        for n in names or (cls.name,):
            TARGETS[n] = cls
        return cls
    return deco


# ---------------------------------------------------------------------- value parsers / printers
PROTOCOLS: dict[str, int] = {
    "tcp": 6, "sctp": 132, "udp": 17, "udplite": 136, "icmp": 1, "esp": 50, "ah": 51,
    "dccp": 33, "gre": 47, "ipv6-icmp": 58, "icmpv6": 58, "all": 0,
}
_PROTO_NAMES = {6: "tcp", 132: "sctp", 17: "udp", 136: "udplite", 1: "icmp", 50: "esp", 51: "ah",
                33: "dccp", 47: "gre", 58: "ipv6-icmp"}

SERVICES: dict[str, int] = {
    "ftp": 21, "ssh": 22, "telnet": 23, "smtp": 25, "domain": 53, "http": 80, "www": 80,
    "pop3": 110, "ntp": 123, "imap": 143, "snmp": 161, "https": 443, "syslog": 514,
}


def proto_name(num: int) -> str:
    return _PROTO_NAMES.get(num, str(num))


def parse_proto(text: str, ctx: ParseCtx) -> int:
    t = text.lower()
    if t in PROTOCOLS:
        return PROTOCOLS[t]
    n = parse_uint(text, ctx, "protocol", 0, 255)
    return n


_MAX_NUM_CHARS = 64
_NUM_RE = re.compile(r"0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*")


def _strtoui(text: str) -> int | None:
    """strtoumax with base 0 on the whole string (decimal, 0x hex, 0 octal); None if it is not one.

    ASCII digits only (Python's int() also takes other scripts' digits); the leading sign and blanks
    strtoumax would skip are refused, and so is a number longer than _MAX_NUM_CHARS.
    """
    if text.isascii() and text.isdigit() and (text[0] != "0" or len(text) == 1) and len(text) < 20:
        return int(text)
    if len(text) > _MAX_NUM_CHARS or _NUM_RE.fullmatch(text) is None:
        return None
    if text[:2] in ("0x", "0X"):
        return int(text[2:], 16)
    return int(text, 8 if text[0] == "0" else 10)


def parse_uint(text: str, ctx: ParseCtx, what: str, lo: int = 0, hi: int = U32) -> int:
    """xtables_strtoui: decimal, 0x hex or 0 octal, within [lo, hi]."""
    v = _strtoui(text)
    if v is None:
        raise ctx.error(f"bad {what} {excerpt(text)}")
    if not lo <= v <= hi:
        raise ctx.error(f"{what} {excerpt(text)} out of range {lo}-{hi}")
    return v


def is_number(text: str) -> bool:
    """Only ASCII digits (str.isdigit() also says yes to other scripts' digits and superscripts)."""
    return text.isascii() and text.isdigit()


def parse_port(text: str, ctx: ParseCtx) -> int:
    """xtables_parse_port: a number (base 0, as xtables_strtoui) or a service name."""
    if text in SERVICES:
        return SERVICES[text]
    if _strtoui(text) is None:
        raise ctx.error(f"invalid port/service {excerpt(text)}")
    return parse_uint(text, ctx, "port", 0, 65535)


def parse_port_range(text: str, ctx: ParseCtx, port: Callable[[str, ParseCtx], int] | None = None,
                     inverted: str = "invalid port range") -> tuple[int, int]:
    """`a`, `a:b`, `:b`, `a:` as parse_tcp_ports does; `port` reads one end (names looked up for
    the match's protocol), `inverted` starts the message for min > max."""
    one = parse_port if port is None else port
    if ":" not in text:
        p = one(text, ctx)
        return p, p
    a, b = text.split(":", 1)
    lo = one(a, ctx) if a else 0
    hi = one(b, ctx) if b else 0xFFFF
    if lo > hi:
        raise ctx.error(f"{inverted} {excerpt(text)} (min > max)")
    return lo, hi


def check_not_ipv6(text: str, ctx: ParseCtx, what: str) -> None:
    """iptables-restore refuses an IPv6 address in an IPv4 rule: say so rather than `bad address`.

    `text` may carry what follows an address in an option (`[a]:port`, `a/len`, `a-b`).
    """
    if ":" not in text:
        return
    addr = _V6_CUT.split(text.removeprefix("["), 1)[0]
    if ":" in addr and len(addr) <= 64:
        try:
            ipaddress.IPv6Address(addr)
        except ValueError:
            return
        raise ctx.error(f"{what}: IPv6 address in an IPv4 rule: {excerpt(text)} (ip6tables rules are "
                        "not modelled)")


_BAD_IFNAME = re.compile(r"[\s/\"']")
_V6_CUT = re.compile(r"[\]/\-]")


def parse_ipv4(text: str, ctx: ParseCtx, what: str = "address") -> int:
    """xtables_numeric_to_ipaddr: 1 to 4 dot-separated bytes, each decimal, 0x hex or 0 octal, missing
    ones zero (`10` = 10.0.0.0, `10.1` = 10.1.0.0, `010.1.1.1` = 8.1.1.1).

    iptables reads at most 19 characters of it (longer text is silently cut there); such text is
    refused here instead.
    """
    check_not_ipv6(text, ctx, what)
    parts = text.split(".", 4)
    vals = [_strtoui(x) for x in parts] if len(text) <= 19 and len(parts) <= 4 else [None]
    if any(v is None or v > 255 for v in vals):
        raise ctx.error(f"{what}: bad IPv4 address {excerpt(text)} (host names are not resolved)")
    v = 0
    for x in vals:
        v = (v << 8) | (x or 0)
    return v << 8 * (4 - len(vals))


def ipv4_pton(text: str) -> int | None:
    """inet_pton(AF_INET): exactly four decimal bytes without leading zeros; None otherwise."""
    parts = text.split(".", 4)
    if len(parts) != 4 or not all(is_number(x) and len(x) <= 3 and (x == "0" or x[0] != "0")
                                  and int(x) <= 255 for x in parts):
        return None
    return (int(parts[0]) << 24) | (int(parts[1]) << 16) | (int(parts[2]) << 8) | int(parts[3])


def parse_mask(text: str, ctx: ParseCtx, what: str = "address") -> int:
    """parse_ipmask: a dotted mask of exactly four bytes, else a prefix length 0-32."""
    if "." in text or _strtoui(text) is None:
        if len(text.split(".", 4)) != 4:
            raise ctx.error(f"{what}: invalid mask {excerpt(text)}")
        return parse_ipv4(text, ctx, what)
    n = parse_uint(text, ctx, f"{what} prefix length", 0, 32)
    return (U32 << (32 - n)) & U32


def parse_cidr(text: str, ctx: ParseCtx, what: str = "address") -> tuple[int, int]:
    """`a.b.c.d[/len|/mask]` -> (address & mask, mask); no mask means /32, an empty one is refused."""
    check_not_ipv6(text, ctx, what)
    addr, sep, m = text.partition("/")
    mask = parse_mask(m, ctx, what) if sep else U32
    return parse_ipv4(addr, ctx, what) & mask, mask


def ip_str(v: int) -> str:
    return f"{v >> 24}.{(v >> 16) & 255}.{(v >> 8) & 255}.{v & 255}"


def mask_str(mask: int) -> str:
    """mask_to_str(): the prefix length when the mask is contiguous, else dotted."""
    inv = ~mask & U32
    if inv & (inv + 1) == 0:
        return str(32 - inv.bit_length())
    return ip_str(mask)


def parse_mark_mask(text: str, ctx: ParseCtx, what: str) -> tuple[int, int]:
    """xtables_parse_mark_mask: `value[/mask]`, mask defaults to 0xffffffff."""
    v, sep, m = text.partition("/")
    val = parse_uint(v, ctx, what)
    return val, (parse_uint(m, ctx, what) if sep else U32)


def mark_mask_str(val: int, mask: int) -> str:
    """xtables_print_mark_mask."""
    return f" 0x{val:x}/0x{mask:x}" if mask != U32 else f" 0x{val:x}"


_NO_QUOTE = frozenset("_-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def save_string(value: str) -> str:
    """xtables_save_string: bare when only [-_0-9A-Za-z], else double-quoted with \\ escapes."""
    if value and all(c in _NO_QUOTE for c in value):
        return " " + value
    out = "".join("\\" + c if c in "\"\\'" else c for c in value)
    return f' "{out}"'


def ifname_check(name: str, ctx: ParseCtx) -> None:
    """xtables_parse_interface: at most 15 bytes. Blanks and `/` (which iptables only warns about: no
    kernel device can have them) and quotes are refused: iptables-save would print the name bare,
    as text that does not restore."""
    if len(name.encode("utf-8", "surrogatepass")) > 15:
        raise ctx.error(f"interface name {excerpt(name)} longer than 15 characters")
    if _BAD_IFNAME.search(name):
        raise ctx.error(f"interface name {excerpt(name)}: blanks, '/' and quotes are not allowed")


def ifname_match(name: str | None, pattern: str) -> bool:
    """ifname_compare_aligned: exact, or a prefix when the pattern ends in `+`."""
    dev = name or ""
    if pattern.endswith("+"):
        return dev.startswith(pattern[:-1])
    return dev == pattern
