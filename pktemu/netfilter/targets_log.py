"""Targets that record or untrack without deciding: LOG, TRACE and CT (--notrack, zones) / NOTRACK.

LOG keeps a kernel-log-like line in the ruleset (one list per namespace) instead of printing;
CT --notrack gives the packet the untracked conntrack so conntrack-in leaves it alone.
"""
from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

from pktemu.net.icmp import KERNEL_SK
from pktemu.netfilter.conntrack import TEMPLATE_KEY, ZoneSpec
from pktemu.netfilter.core import UNTRACKED
from pktemu.netfilter.xt_base import (
    XT_CONTINUE, Opt, ParseCtx, Pkt, Target, ip_str, parse_uint, register_target, save_string,
)

if TYPE_CHECKING:
    from pktemu.netfilter.core import HookState

# ---------------------------------------------------------------------- LOG / CT / NOTRACK
_TCP_FLAGS = ((0x80, "CWR"), (0x40, "ECE"), (0x20, "URG"), (0x10, "ACK"), (0x08, "PSH"), (0x04, "RST"),
              (0x02, "SYN"), (0x01, "FIN"))


def _hex(b: bytes) -> str:
    return "".join(f"{x:02X}" for x in b)


def log_line(p: Pkt, state: "HookState", flags: set[str] | frozenset[str] = frozenset()) -> str:
    """The line nf_log_syslog prints for an IPv4 packet (after the prefix), trailing blank included.

    The MAC part is there when the packet came in on a device; `--log-uid` gives UID=0 GID=0 to
    locally generated packets (the emulated sockets are root's, as the owner match assumes), but
    not to what the kernel sent itself (KERNEL_SK: its control sockets have no file).
    """
    d = bytes(p.frame.data)
    s = f"IN={state.in_dev or ''} OUT={state.out_dev or ''} "
    if state.physin and state.physin != state.in_dev:
        s += f"PHYSIN={state.physin} "
    if state.physout and state.physout != state.out_dev:
        s += f"PHYSOUT={state.physout} "
    if state.in_dev is not None:
        if "log-macdecode" in flags:
            s += f"MACSRC={_mac(d[6:12])} MACDST={_mac(d[0:6])} MACPROTO={d[12]:02x}{d[13]:02x} "
        else:
            s += "MAC=" + ":".join(f"{x:02x}" for x in d[:14]) + " "
    s += _ipv4(d[14:14 + p.ip_len], flags, True)
    if "log-uid" in flags and state.in_dev is None and KERNEL_SK not in p.frame.meta:
        s += "UID=0 GID=0 "
    if p.frame.mark:
        s += f"MARK=0x{p.frame.mark:x} "
    return s


def _mac(b: bytes) -> str:
    return ":".join(f"{x:02x}" for x in b)


def _ipv4(ip: bytes, flags: set[str] | frozenset[str], outer: bool) -> str:
    """dump_ipv4_packet: header fields, then the transport header; an ICMP error's quote once."""
    if len(ip) < 20:
        return "TRUNCATED"
    ihl = (ip[0] & 0x0F) * 4
    tot_len, ip_id, frag = struct.unpack_from("!HHH", ip, 2)
    tos, ttl, proto = ip[1], ip[8], ip[9]
    s = (f"SRC={ip_str(int.from_bytes(ip[12:16], 'big'))} DST={ip_str(int.from_bytes(ip[16:20], 'big'))} "
         f"LEN={tot_len} TOS=0x{tos & 0x1E:02X} PREC=0x{tos & 0xE0:02X} TTL={ttl} ID={ip_id} ")
    s += "".join(w for bit, w in ((0x8000, "CE "), (0x4000, "DF "), (0x2000, "MF ")) if frag & bit)
    fragoff = frag & 0x1FFF
    if fragoff:
        s += f"FRAG:{fragoff} "
    if "log-ip-options" in flags and ihl > 20:
        s += f"OPT ({_hex(ip[20:ihl])}) "
    l4 = ip[ihl:]
    if proto == 6:
        s += "PROTO=TCP "
        if fragoff:
            return s
        if len(l4) < 20:
            return s + f"INCOMPLETE [{len(l4)} bytes] "
        sport, dport, seq, ack, off_flags, window, _c, urg = struct.unpack_from("!HHIIHHHH", l4)
        s += f"SPT={sport} DPT={dport} "
        if "log-tcp-sequence" in flags:
            s += f"SEQ={seq} ACK={ack} "
        s += f"WINDOW={window} RES=0x{(off_flags & 0x0F00) >> 6:02x} "
        s += "".join(w + " " for bit, w in _TCP_FLAGS if off_flags & bit)
        s += f"URGP={urg} "
        doff = (off_flags >> 12) * 4
        if "log-tcp-options" in flags and doff > 20:
            s += f"OPT ({_hex(l4[20:doff])}) "
    elif proto in (17, 136):
        s += "PROTO=UDP " if proto == 17 else "PROTO=UDPLITE "
        if fragoff:
            return s
        if len(l4) < 8:
            return s + f"INCOMPLETE [{len(l4)} bytes] "
        sport, dport, ulen = struct.unpack_from("!HHH", l4)
        s += f"SPT={sport} DPT={dport} LEN={ulen} "
    elif proto == 1:
        s += "PROTO=ICMP "
        if fragoff:
            return s
        if len(l4) < 8:
            return s + f"INCOMPLETE [{len(l4)} bytes] "
        typ, code = l4[0], l4[1]
        s += f"TYPE={typ} CODE={code} "
        need = _ICMP_NEED.get(typ, 0)
        if need and len(l4) < need:
            return s + f"INCOMPLETE [{len(l4)} bytes] "
        if typ in (0, 8):
            s += f"ID={int.from_bytes(l4[4:6], 'big')} SEQ={int.from_bytes(l4[6:8], 'big')} "
        elif typ == 12:
            s += f"PARAMETER={l4[4]} "
        elif typ == 5:
            s += f"GATEWAY={ip_str(int.from_bytes(l4[4:8], 'big'))} "
        if typ in (3, 4, 5, 11) and outer:
            s += "[" + _ipv4(l4[8:], flags, False) + "] "
        if typ == 3 and code == 4:
            s += f"MTU={int.from_bytes(l4[6:8], 'big')} "
    else:
        s += f"PROTO={proto} "
    return s


#: required_len in dump_ipv4_packet: the ICMP header bytes each type needs to be printed
_ICMP_NEED = {0: 4, 3: 28, 4: 28, 5: 28, 8: 4, 11: 28, 12: 28, 13: 20, 14: 20, 17: 12, 18: 12}

LOG_LEVELS = {"emerg": 0, "panic": 0, "alert": 1, "crit": 2, "error": 3, "err": 3, "warning": 4,
              "warn": 4, "notice": 5, "info": 6, "debug": 7}
_LOG_FLAGS = ("log-tcp-sequence", "log-tcp-options", "log-ip-options", "log-uid", "log-macdecode")


@register_target("LOG")
class LogTarget(Target):
    """Records a kernel-log-like line in the ruleset's `log` list; the packet goes on."""

    name = "LOG"
    options = {"--log-level": Opt("log-level"), "--log-prefix": Opt("log-prefix"),
               **{f"--{o}": Opt(o, nargs=0) for o in _LOG_FLAGS}}

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.level = 4
        self.prefix = ""
        self.sink: list[tuple[int, str]] = []

    def parse(self, opt: str, args: list[str], invert: bool, ctx: ParseCtx) -> None:
        if opt == "log-level":
            a = args[0].lower()
            self.level = LOG_LEVELS[a] if a in LOG_LEVELS else parse_uint(a, ctx, "log level", 0, 7)
        elif opt == "log-prefix":
            if len(args[0].encode("utf-8", "surrogatepass")) > 29:
                raise ctx.error("LOG: --log-prefix longer than 29 characters")
            self.prefix = args[0]

    def bind(self, ruleset: Any) -> None:
        self.sink = ruleset.log

    def target(self, p: Pkt, state: "HookState") -> int:
        self.sink.append((state.node.now(), self.prefix + log_line(p, state, self.seen)))
        return XT_CONTINUE

    def save(self) -> str:
        s = f" --log-prefix{save_string(self.prefix)}" if self.prefix else ""
        if self.level != 4:
            s += f" --log-level {self.level}"
        return s + "".join(f" --{o}" for o in _LOG_FLAGS if o in self.seen)


@register_target("CT", "NOTRACK")
class CtTarget(Target):
    """raw-table conntrack templates: --notrack (`-j NOTRACK` is its alias) and the zones.

    As xt_ct_target, the first CT a packet meets wins (a later one sees a conntrack attached);
    the template's zone waits in frame.meta for this namespace's conntrack_in."""

    name = "CT"
    table = "raw"
    notable = True
    options = {"--notrack": Opt("notrack", nargs=0), "--zone": Opt("zone"), "--zone-orig": Opt("zone-orig"),
               "--zone-reply": Opt("zone-reply")}
    _DIRS = {"zone": 3, "zone-orig": 1, "zone-reply": 2}

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.zone: ZoneSpec | None = None
        self.zone_opt = ""
        if name == "NOTRACK":
            self.options = {}             # type: ignore[misc]
            self.seen.add("notrack")

    def parse(self, opt: str, args: list[str], invert: bool, ctx: ParseCtx) -> None:
        if opt in self._DIRS:
            by_mark = args[0] == "mark"
            if not by_mark and not (args[0].isdigit() and int(args[0]) <= 0xFFFF):
                raise ctx.error(f"CT: cannot parse {args[0]} as a zone ID (0-65535 or mark)")
            zid = 0 if by_mark else int(args[0])
            self.zone, self.zone_opt = (zid, self._DIRS[opt], by_mark), opt   # the last one given wins

    def target(self, p: Pkt, state: "HookState") -> int:
        f = p.frame
        if f.ct is not None:
            return XT_CONTINUE
        table = getattr(state.nf, "conntrack", None)
        tmpl = f.meta.get(TEMPLATE_KEY)
        if tmpl is not None and tmpl[0] is table:
            return XT_CONTINUE
        if "notrack" in self.seen:
            f.ct, f.ctinfo = UNTRACKED, None
        elif table is not None:
            table.zoned = True
            f.meta[TEMPLATE_KEY] = (table, self.zone)
        return XT_CONTINUE

    def save(self) -> str:
        if self.ext_name != "CT":
            return ""
        s = " --notrack" if "notrack" in self.seen else ""
        if self.zone is not None and (self.zone[0] or self.zone[2]):
            s += f" --{self.zone_opt} {'mark' if self.zone[2] else self.zone[0]}"
        return s

    def summary(self, p: Pkt, state: "HookState") -> str:
        if "notrack" in self.seen:
            return "NOTRACK"
        return "CT" + self.save().replace(" --", " ")


@register_target("TRACE")
class TraceTarget(Target):
    """Marks the packet traced in this namespace (iptables-nft's `meta nftrace set 1`); nftrace
    then writes down every rule it matches in every table, this one's later rules included."""

    name = "TRACE"
    table = "raw"
    options = {}

    def parse(self, opt: str, args: list[str], invert: bool, ctx: ParseCtx) -> None:
        pass

    def bind(self, ruleset: Any) -> None:
        ruleset.ext.setdefault("trace", [])

    def target(self, p: Pkt, state: "HookState") -> int:
        meta = p.frame.meta
        mark = meta.get("nftrace")
        if mark is None or mark[0] != state.node.name:
            meta["nftrace"] = [state.node.name, state.node.rng("nftrace").getrandbits(32), False]
        return XT_CONTINUE
