"""Matches on where a packet is: addrtype (the route type of its addresses) and physdev (bridge ports).

Both ask the namespace, not the packet: addrtype through `state.node.addr_type`, physdev through
the bridge ports br_netfilter put in the hook state.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from pktemu.errors import excerpt
from pktemu.netfilter.core import INPUT, OUTPUT, POSTROUTING, PREROUTING
from pktemu.netfilter.xt_base import Match, Opt, ParseCtx, Pkt, ifname_check, ifname_match, register_match

if TYPE_CHECKING:
    from pktemu.netfilter.core import HookState


def _opts(*items: tuple[tuple[str, ...], Opt]) -> dict[str, Opt]:
    return {tok: opt for toks, opt in items for tok in toks}


# ---------------------------------------------------------------------- addrtype
RTN_TYPES = ("UNSPEC", "UNICAST", "LOCAL", "BROADCAST", "ANYCAST", "MULTICAST", "BLACKHOLE",
             "UNREACHABLE", "PROHIBIT", "THROW", "NAT", "XRESOLVE")
_RTN_BIT = {n: 1 << i for i, n in enumerate(RTN_TYPES)}


def _parse_types(text: str, ctx: ParseCtx) -> int:
    v = 0
    for part in text.split(","):
        bit = _RTN_BIT.get(part.upper())
        if bit is None:
            raise ctx.error(f"addrtype: unknown address type {excerpt(part)}")
        v |= bit
    return v


def _types_str(mask: int) -> str:
    return ",".join(n for n in RTN_TYPES if mask & _RTN_BIT[n])


@register_match("addrtype")
class AddrtypeMatch(Match):
    """The address type as the node's routing sees it (`state.node.addr_type`).

    With --limit-iface-in/out the kernel asks about one device; the node may offer
    `dev_addr_type(addr, dev)` for that, otherwise the namespace-wide answer is used.
    """

    name = "addrtype"
    options = _opts(
        (("--src-type",), Opt("src", invert=True)),
        (("--dst-type",), Opt("dst", invert=True)),
        (("--limit-iface-in",), Opt("in", nargs=0)),
        (("--limit-iface-out",), Opt("out", nargs=0)),
    )

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.src = self.dst = 0
        self.inv_src = self.inv_dst = False

    def parse(self, opt: str, args: list[str], invert: bool, ctx: ParseCtx) -> None:
        if opt == "src":
            self.src, self.inv_src = _parse_types(args[0], ctx), invert
        elif opt == "dst":
            self.dst, self.inv_dst = _parse_types(args[0], ctx), invert
        if "in" in self.seen and "out" in self.seen:
            raise ctx.error("addrtype: --limit-iface-in and --limit-iface-out are exclusive")

    def final_check(self, ctx: ParseCtx) -> None:
        if not self.seen & {"src", "dst"}:
            raise ctx.error("addrtype: you must specify --src-type or --dst-type")

    def check_hooks(self, hooks: frozenset[str]) -> str | None:
        if "in" in self.seen and hooks & {POSTROUTING, OUTPUT}:
            return "addrtype --limit-iface-in is only valid from PREROUTING, INPUT and FORWARD"
        if "out" in self.seen and hooks & {PREROUTING, INPUT}:
            return "addrtype --limit-iface-out is only valid from POSTROUTING, OUTPUT and FORWARD"
        return None

    def _type_bit(self, addr: int, state: "HookState") -> int:
        node = state.node
        dev = state.in_dev if "in" in self.seen else state.out_dev if "out" in self.seen else None
        per_dev = getattr(node, "dev_addr_type", None) if dev is not None else None
        name = per_dev(addr, dev) if per_dev is not None else node.addr_type(addr)
        return _RTN_BIT.get(name, 0)

    def match(self, p: Pkt, state: "HookState") -> bool:
        if self.src and bool(self._type_bit(p.saddr, state) & self.src) == self.inv_src:
            return False
        if self.dst and bool(self._type_bit(p.daddr, state) & self.dst) == self.inv_dst:
            return False
        return True

    def save(self) -> str:
        s = ""
        if self.src:
            s += f"{' !' if self.inv_src else ''} --src-type {_types_str(self.src)}"
        if self.dst:
            s += f"{' !' if self.inv_dst else ''} --dst-type {_types_str(self.dst)}"
        if "in" in self.seen:
            s += " --limit-iface-in"
        if "out" in self.seen:
            s += " --limit-iface-out"
        return s


# ---------------------------------------------------------------------- physdev
@register_match("physdev")
class PhysdevMatch(Match):
    """Bridge ports of a bridged frame (br_netfilter): `state.physin` / `state.physout`."""

    name = "physdev"
    options = _opts(
        (("--physdev-in",), Opt("in", invert=True)),
        (("--physdev-out",), Opt("out", invert=True)),
        (("--physdev-is-in",), Opt("is-in", nargs=0, invert=True)),
        (("--physdev-is-out",), Opt("is-out", nargs=0, invert=True)),
        (("--physdev-is-bridged",), Opt("is-bridged", nargs=0, invert=True)),
    )

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.physin = self.physout = ""
        self.inv: set[str] = set()

    def parse(self, opt: str, args: list[str], invert: bool, ctx: ParseCtx) -> None:
        if opt in ("in", "out") and not args[0]:
            # the kernel would match any port; iptables-save prints nothing that restores
            raise ctx.error(f"physdev: --physdev-{opt} needs an interface name")
        if opt == "in":
            ifname_check(args[0], ctx)
            self.physin = args[0]
        elif opt == "out":
            ifname_check(args[0], ctx)
            self.physout = args[0]
        if invert:
            self.inv.add(opt)

    def final_check(self, ctx: ParseCtx) -> None:
        if not self.seen:
            raise ctx.error("physdev: at least one option is needed")

    def check_hooks(self, hooks: frozenset[str]) -> str | None:
        bridged_only = "is-bridged" in self.seen and "is-bridged" not in self.inv
        if self.seen & {"out", "is-out"} and not bridged_only and OUTPUT in hooks:
            return ("--physdev-out and --physdev-is-out are only valid in FORWARD and POSTROUTING "
                    "with bridged traffic")
        return None

    def match(self, p: Pkt, state: "HookState") -> bool:
        seen, inv = self.seen, self.inv
        if p.frame.nf_bridge is None and state.physin is None and state.physout is None:
            return all(o in inv for o in seen)
        if "is-bridged" in seen and (state.physout is not None) == ("is-bridged" in inv):
            return False
        if "is-in" in seen and (state.physin is None) != ("is-in" in inv):
            return False
        if "is-out" in seen and (state.physout is None) != ("is-out" in inv):
            return False
        if "in" in seen and ifname_match(state.physin, self.physin) == ("in" in inv):
            return False
        if "out" in seen:
            return ifname_match(state.physout, self.physout) != ("out" in inv)
        return True

    def save(self) -> str:
        s = ""
        for opt, text in (("is-in", " --physdev-is-in"), ("in", f" --physdev-in {self.physin}"),
                          ("is-out", " --physdev-is-out"), ("out", f" --physdev-out {self.physout}"),
                          ("is-bridged", " --physdev-is-bridged")):
            if opt in self.seen:
                s += (" !" if opt in self.inv else "") + text
        return s
