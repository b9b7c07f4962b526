"""Targets (`-j NAME`): REJECT, the NAT family, MARK and CONNMARK (LOG and CT/NOTRACK: targets_log).

ACCEPT, DROP, RETURN and jumps to chains are the engine's own (standard targets in the kernel).
Each class parses and prints like its iptables extension and acts like its kernel module; NAT
targets only build the `NatRange` and hand it to conntrack's NAT (`state.nf.nat_setup`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from pktemu.errors import excerpt
from pktemu.netfilter.core import (
    FORWARD, INPUT, MANIP_DST, MANIP_SRC, NF_DROP, OUTPUT, POSTROUTING, PREROUTING, UNTRACKED, NatRange,
)
from pktemu.netfilter.xt_base import (
    U32, XT_CONTINUE, Opt, ParseCtx, Pkt, Target, check_not_ipv6, ip_str, ipv4_pton, parse_mark_mask,
    parse_port, parse_uint, register_target,
)

if TYPE_CHECKING:
    from pktemu.netfilter.core import HookState

# ---------------------------------------------------------------------- REJECT
REJECT_TYPES = (("icmp-net-unreachable", "net-unreach"), ("icmp-host-unreachable", "host-unreach"),
                ("icmp-proto-unreachable", "proto-unreach"), ("icmp-port-unreachable", "port-unreach"),
                ("icmp-net-prohibited", "net-prohib"), ("icmp-host-prohibited", "host-prohib"),
                ("tcp-reset", "tcp-rst"), ("icmp-admin-prohibited", "admin-prohib"))


@register_target("REJECT")
class RejectTarget(Target):
    name = "REJECT"
    table = "filter"
    hooks = frozenset((INPUT, FORWARD, OUTPUT))
    notable = True
    options = {"--reject-with": Opt("with")}

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.reject_with = "icmp-port-unreachable"

    def parse(self, opt: str, args: list[str], invert: bool, ctx: ParseCtx) -> None:
        arg = args[0].lower()
        for full, alias in REJECT_TYPES:          # libipt_REJECT matches prefixes, first wins
            if full.startswith(arg) or alias.startswith(arg):
                self.reject_with = full
                return
        raise ctx.error(f"REJECT: unknown reject type {excerpt(args[0])}")

    def final_check(self, ctx: ParseCtx) -> None:
        if self.reject_with == "tcp-reset" and (ctx.proto != 6 or ctx.proto_inv):
            raise ctx.error("REJECT --reject-with tcp-reset needs '-p tcp'")

    def target(self, p: Pkt, state: "HookState") -> int:
        state.node.send_reject(p.frame, state, self.reject_with)
        return NF_DROP

    def save(self) -> str:
        return f" --reject-with {self.reject_with}"

    def summary(self, p: Pkt, state: "HookState") -> str:
        return f"REJECT {self.reject_with}"


# ---------------------------------------------------------------------- NAT
class _NatTarget(Target):
    """libxt_NAT's range (`ip[-ip][:port[-port]]`) and flags, shared by the four NAT targets."""

    __slots__ = ("min_ip", "max_ip", "min_port", "max_port", "flags")      # (see Extension)
    table = "nat"
    notable = True
    manip: ClassVar[int] = MANIP_DST
    range_opt: ClassVar[str] = "--to-destination"

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.min_ip: int | None = None
        self.max_ip: int | None = None
        self.min_port: int | None = None
        self.max_port: int | None = None
        self.flags: set[str] = set()

    def _parse_ports(self, text: str, ctx: ParseCtx) -> None:
        if ":" in text:
            raise ctx.error(f"{self.ext_name}: invalid port:port syntax {excerpt(text)} - use dash")
        if "/" in text:
            raise ctx.error(f"{self.ext_name}: shifted port ranges are not supported")
        lo_s, sep, hi_s = text.partition("-")
        lo = parse_port(lo_s, ctx)
        hi = parse_port(hi_s, ctx) if sep else lo
        if hi < lo:
            raise ctx.error(f"{self.ext_name}: port range {excerpt(text)} funky (max < min)")
        self.min_port, self.max_port = lo, hi

    def _parse_to(self, text: str, ctx: ParseCtx) -> None:
        check_not_ipv6(text, ctx, self.range_opt)
        if "[" in text:
            raise ctx.error(f"{self.ext_name}: invalid address format {excerpt(text)}")
        ip_part, colon, ports = text.partition(":")
        if colon:
            if ":" in ports:
                raise ctx.error(f"{self.ext_name}: bad address {excerpt(text)}")
            self._parse_ports(ports, ctx)
            if not ip_part:
                return
        lo_s, dash, hi_s = ip_part.partition("-")
        self.min_ip = self._full_ip(lo_s, text, ctx)
        self.max_ip = self._full_ip(hi_s, text, ctx) if dash else self.min_ip
        if self.max_ip < self.min_ip:
            # iptables takes it, and the kernel then picks from a range wrapped around 0.0.0.0
            # (nf_nat_core's `max - min + 1` in u32): no address the rule's author meant
            raise ctx.error(f"{self.ext_name}: address range {excerpt(ip_part)} reversed (first above last)")

    def _full_ip(self, s: str, text: str, ctx: ParseCtx) -> int:
        """inet_pton, as libxt_NAT reads it: exactly four decimal bytes (no `10.1`, no octal)."""
        v = ipv4_pton(s)
        if v is None:
            raise ctx.error(f"{self.ext_name}: bad IP address in {excerpt(text)}")
        return v

    def parse(self, opt: str, args: list[str], invert: bool, ctx: ParseCtx) -> None:
        if opt == "to":
            self._parse_to(args[0], ctx)
        elif opt == "ports":
            self._parse_ports(args[0], ctx)
        else:
            self.flags.add(opt)

    def final_check(self, ctx: ParseCtx) -> None:
        if self.min_port is not None and ctx.proto not in (6, 17, 132, 33, 1):
            raise ctx.error(f"{self.ext_name}: a port mapping needs '-p tcp', '-p udp', '-p sctp' "
                            "or '-p dccp'")

    def range_str(self) -> str:
        s = ""
        if self.min_ip is not None:
            s = ip_str(self.min_ip)
            if self.max_ip != self.min_ip:
                s += "-" + ip_str(self.max_ip or 0)
        if self.min_port is not None:
            s += f":{self.min_port}" + (f"-{self.max_port}" if self.max_port != self.min_port else "")
        return s

    def save(self) -> str:
        r = self.range_str()
        if r.startswith(":") and self.range_opt == "--to-ports":
            r = r[1:]
        s = f" {self.range_opt} {r}" if r else ""
        for flag in ("random", "random-fully", "persistent"):
            if flag in self.flags:
                s += f" --{flag}"
        return s

    def nat_range(self, ip: int | None = None) -> NatRange:
        lo = self.min_ip if ip is None else ip
        hi = self.max_ip if ip is None else ip
        return NatRange(lo, hi, self.min_port, self.max_port, "random" in self.flags,
                        "random-fully" in self.flags, "persistent" in self.flags)

    def target(self, p: Pkt, state: "HookState") -> int:
        verdict: int = state.nf.nat_setup(p.frame, self.manip, self.nat_range(), state)
        return verdict

    def summary(self, p: Pkt, state: "HookState") -> str:
        return f"{self.ext_name} {self.range_str()}".rstrip()


@register_target("DNAT")
class DnatTarget(_NatTarget):
    __slots__ = ()
    name = "DNAT"
    hooks = frozenset((PREROUTING, OUTPUT))
    options = {"--to-destination": Opt("to"), "--random": Opt("random", nargs=0),
               "--persistent": Opt("persistent", nargs=0)}

    def final_check(self, ctx: ParseCtx) -> None:
        if "to" not in self.seen:
            raise ctx.error("DNAT needs --to-destination")
        super().final_check(ctx)


@register_target("SNAT")
class SnatTarget(_NatTarget):
    name = "SNAT"
    hooks = frozenset((POSTROUTING, INPUT))
    manip = MANIP_SRC
    range_opt = "--to-source"
    options = {"--to-source": Opt("to"), "--random": Opt("random", nargs=0),
               "--random-fully": Opt("random-fully", nargs=0), "--persistent": Opt("persistent", nargs=0)}

    def final_check(self, ctx: ParseCtx) -> None:
        if "to" not in self.seen:
            raise ctx.error("SNAT needs --to-source")
        super().final_check(ctx)


@register_target("MASQUERADE")
class MasqueradeTarget(_NatTarget):
    """SNAT to the address the route out of `out_dev` prefers; DROP when there is none."""

    name = "MASQUERADE"
    hooks = frozenset((POSTROUTING,))
    manip = MANIP_SRC
    range_opt = "--to-ports"
    options = {"--to-ports": Opt("ports"), "--random": Opt("random", nargs=0),
               "--random-fully": Opt("random-fully", nargs=0)}

    def target(self, p: Pkt, state: "HookState") -> int:
        out = state.out_dev                   # always set in POSTROUTING, the only hook MASQUERADE runs in
        src = None if out is None else state.node.masquerade_source(out, p.daddr)
        if src is None:
            return NF_DROP
        verdict: int = state.nf.nat_setup(p.frame, self.manip, self.nat_range(src), state)
        return verdict

    def summary(self, p: Pkt, state: "HookState") -> str:
        out = state.out_dev
        src = None if out is None else state.node.masquerade_source(out, p.daddr)
        ports = self.range_str()
        return f"MASQUERADE {ip_str(src) if src is not None else '(no address: DROP)'}{ports}"


@register_target("REDIRECT")
class RedirectTarget(_NatTarget):
    """DNAT to the in-device's primary address (127.0.0.1 for OUTPUT), as nf_nat_redirect_ipv4."""

    name = "REDIRECT"
    hooks = frozenset((PREROUTING, OUTPUT))
    range_opt = "--to-ports"
    options = {"--to-ports": Opt("ports"), "--random": Opt("random", nargs=0)}

    def target(self, p: Pkt, state: "HookState") -> int:
        dst = state.nf.redirect_address(p.frame, state)
        if dst is None:
            return NF_DROP
        verdict: int = state.nf.nat_setup(p.frame, self.manip, self.nat_range(dst), state)
        return verdict

    def summary(self, p: Pkt, state: "HookState") -> str:
        dst = state.nf.redirect_address(p.frame, state)
        return f"REDIRECT {ip_str(dst) if dst is not None else '(no address: DROP)'}{self.range_str()}"


# ---------------------------------------------------------------------- MARK / CONNMARK
class _XmarkTarget(Target):
    """The --set-xmark family, translated the way libxt_MARK / libxt_CONNMARK translate it."""

    notable = True
    _EXCL: ClassVar[frozenset[str]] = frozenset(("set-xmark", "set-mark", "and-mark", "or-mark", "xor-mark"))

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.mark, self.mask = 0, 0
        self.op = ""

    def parse_xmark(self, opt: str, arg: str, ctx: ParseCtx) -> None:
        if self.op:
            raise ctx.error(f"{self.ext_name}: --{opt} cannot be combined with --{self.op}")
        self.op = opt
        if opt == "set-xmark":
            self.mark, self.mask = parse_mark_mask(arg, ctx, opt)
        elif opt == "set-mark":
            v, m = parse_mark_mask(arg, ctx, opt)
            self.mark, self.mask = v, v | m
        else:
            v = parse_uint(arg, ctx, opt)
            self.mark, self.mask = {"and-mark": (0, ~v & U32), "or-mark": (v, v), "xor-mark": (v, 0)}[opt]


@register_target("MARK")
class MarkTarget(_XmarkTarget):
    name = "MARK"
    options = {f"--{o}": Opt(o) for o in _XmarkTarget._EXCL}

    def parse(self, opt: str, args: list[str], invert: bool, ctx: ParseCtx) -> None:
        self.parse_xmark(opt, args[0], ctx)

    def final_check(self, ctx: ParseCtx) -> None:
        if not self.op:
            raise ctx.error("MARK needs one of --set-xmark, --set-mark, --and-mark, --or-mark, --xor-mark")

    def target(self, p: Pkt, state: "HookState") -> int:
        f = p.frame
        f.mark = (f.mark & ~self.mask & U32) ^ self.mark
        return XT_CONTINUE

    def save(self) -> str:
        return f" --set-xmark 0x{self.mark:x}/0x{self.mask:x}"

    def summary(self, p: Pkt, state: "HookState") -> str:
        old = p.frame.mark
        new = (old & ~self.mask & U32) ^ self.mark
        return f"MARK --set-xmark 0x{self.mark:x}/0x{self.mask:x} (0x{old:x} -> 0x{new:x})"


@register_target("CONNMARK")
class ConnmarkTarget(_XmarkTarget):
    name = "CONNMARK"
    options = {**{f"--{o}": Opt(o) for o in _XmarkTarget._EXCL},
               "--save-mark": Opt("save-mark", nargs=0), "--restore-mark": Opt("restore-mark", nargs=0),
               "--ctmask": Opt("ctmask"), "--nfmask": Opt("nfmask"), "--mask": Opt("mask")}

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.ctmask = self.nfmask = U32

    def parse(self, opt: str, args: list[str], invert: bool, ctx: ParseCtx) -> None:
        if opt in self._EXCL:
            self.parse_xmark(opt, args[0], ctx)
        elif opt in ("save-mark", "restore-mark"):
            if self.op:
                raise ctx.error(f"CONNMARK: --{opt} cannot be combined with --{self.op}")
            self.op = opt
        else:
            if "mask" in self.seen and self.seen & {"ctmask", "nfmask"}:
                raise ctx.error("CONNMARK: --mask cannot be combined with --ctmask/--nfmask")
            v = parse_uint(args[0], ctx, opt)
            if opt in ("ctmask", "mask"):
                self.ctmask = v
            if opt in ("nfmask", "mask"):
                self.nfmask = v

    def final_check(self, ctx: ParseCtx) -> None:
        if not self.op:
            raise ctx.error("CONNMARK needs one of --set-xmark, --set-mark, --and-mark, --or-mark, "
                            "--xor-mark, --save-mark, --restore-mark")

    def target(self, p: Pkt, state: "HookState") -> int:
        f = p.frame
        ct: Any = f.ct
        if ct is None or ct is UNTRACKED:
            return XT_CONTINUE
        if self.op == "save-mark":
            ct.mark = (ct.mark & ~self.ctmask & U32) ^ (f.mark & self.nfmask)
        elif self.op == "restore-mark":
            f.mark = (f.mark & ~self.nfmask & U32) ^ (ct.mark & self.ctmask)
        else:
            ct.mark = (ct.mark & ~self.mask & U32) ^ self.mark
        return XT_CONTINUE

    def save(self) -> str:
        if self.op in ("save-mark", "restore-mark"):
            return f" --{self.op} --nfmask 0x{self.nfmask:x} --ctmask 0x{self.ctmask:x}"
        return f" --set-xmark 0x{self.mark:x}/0x{self.mask:x}"


from pktemu.netfilter import targets_log as _targets_log  # noqa: E402,F401  (registers LOG, CT)
from pktemu.netfilter import targets_queue as _targets_queue  # noqa: E402,F401  (registers NFQUEUE)
from pktemu.netfilter import targets_node as _targets_node  # noqa: E402,F401  (NFLOG, CHECKSUM, TCPMSS)
