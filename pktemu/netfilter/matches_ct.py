"""Matches with state: conntrack/state, statistic (random and nth) and recent.

Conntrack state comes from the frame (`frame.ct`, `frame.ctinfo`) the way nf_conntrack leaves it on
the skb; statistic draws from the namespace's seeded RNG; recent lists belong to the ruleset
(one per network namespace), with time from the virtual clock.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from pktemu.errors import excerpt
from pktemu.netfilter.core import (
    FORWARD, IP_CT_IS_REPLY, IPS_ASSURED, IPS_CONFIRMED, IPS_DST_NAT, IPS_EXPECTED, IPS_SEEN_REPLY,
    IPS_SRC_NAT, ORIGINAL, POSTROUTING, REPLY, UNTRACKED,
)
from pktemu.netfilter.xt_base import (
    Match, Opt, ParseCtx, Pkt, ip_str, mask_str, parse_cidr, parse_ipv4, parse_port_range, parse_proto,
    parse_uint, register_match,
)

if TYPE_CHECKING:
    from pktemu.netfilter.core import HookState

ST_INVALID, ST_NEW, ST_RELATED, ST_ESTABLISHED, ST_UNTRACKED, ST_SNAT, ST_DNAT = (1 << i for i in range(7))
CT_STATES = (("INVALID", ST_INVALID), ("NEW", ST_NEW), ("RELATED", ST_RELATED),
             ("ESTABLISHED", ST_ESTABLISHED), ("UNTRACKED", ST_UNTRACKED), ("SNAT", ST_SNAT),
             ("DNAT", ST_DNAT))
_CTINFO_BIT = (ST_ESTABLISHED, ST_RELATED, ST_NEW)      # by ctinfo % IP_CT_IS_REPLY
CT_STATUS = (("EXPECTED", IPS_EXPECTED), ("SEEN_REPLY", IPS_SEEN_REPLY), ("ASSURED", IPS_ASSURED),
             ("CONFIRMED", IPS_CONFIRMED))


def ct_state_bits(frame: Any) -> int:
    """The state bit conntrack_mt computes: INVALID without ct, UNTRACKED, else by ctinfo (+NAT bits)."""
    ct = frame.ct
    if ct is None:
        return ST_INVALID
    if ct is UNTRACKED:
        return ST_UNTRACKED
    bits = _CTINFO_BIT[frame.ctinfo % IP_CT_IS_REPLY]
    status = ct.status
    if status & IPS_SRC_NAT:
        bits |= ST_SNAT
    if status & IPS_DST_NAT:
        bits |= ST_DNAT
    return bits


def ct_tuple(ct: Any, direction: int) -> tuple[int, int, int, int]:
    """(src, dst, sport, dport) of one direction of a conntrack entry (ports -1 when none)."""
    t = ct.tuple(direction)
    return t[0], t[1], t[2], t[3]


_ADDR_OPTS = ("ctorigsrc", "ctorigdst", "ctreplsrc", "ctrepldst")
_PORT_OPTS = ("ctorigsrcport", "ctorigdstport", "ctreplsrcport", "ctrepldstport")


@register_match("conntrack", "state")
class ConntrackMatch(Match):
    """xt_conntrack (revision 3); `-m state --state` is its alias, printed back as `-m state`."""

    name = "conntrack"
    options = {"--ctstate": Opt("ctstate", invert=True), "--ctproto": Opt("ctproto", invert=True),
               "--ctstatus": Opt("ctstatus", invert=True), "--ctdir": Opt("ctdir"),
               **{f"--{o}": Opt(o, invert=True) for o in _ADDR_OPTS + _PORT_OPTS}}
    _STATE_OPTS = {"--state": Opt("ctstate", invert=True)}

    def __init__(self, name: str) -> None:
        super().__init__(name)
        if name == "state":
            self.options = self._STATE_OPTS       # type: ignore[misc]
        self.states = 0
        self.status = 0
        self.l4proto = 0
        self.addrs: dict[str, tuple[int, int]] = {}
        self.ports: dict[str, tuple[int, int]] = {}
        self.reply_dir = False
        self.inv: set[str] = set()

    def parse(self, opt: str, args: list[str], invert: bool, ctx: ParseCtx) -> None:
        arg = args[0]
        if invert:
            self.inv.add(opt)
        if opt == "ctstate":
            allowed = CT_STATES[:5] if self.ext_name == "state" else CT_STATES
            for part in arg.split(","):
                bit = next((b for n, b in allowed if part and n.startswith(part.upper())), None)
                if bit is None:
                    raise ctx.error(f"bad {self.ext_name} state {excerpt(part)}")
                self.states |= bit
        elif opt == "ctstatus":
            for part in arg.split(","):
                if part.upper() == "NONE":
                    continue
                bit = next((b for n, b in CT_STATUS if part and n.startswith(part.upper())), None)
                if bit is None:
                    raise ctx.error(f"bad ctstatus {excerpt(part)}")
                self.status |= bit
        elif opt == "ctproto":
            self.l4proto = parse_proto(arg, ctx)
            if self.l4proto == 0:
                raise ctx.error("conntrack: --ctproto 0 would never match")
        elif opt == "ctdir":
            if arg.upper() not in ("ORIGINAL", "REPLY"):
                raise ctx.error(f"conntrack: --ctdir takes ORIGINAL or REPLY, not {excerpt(arg)}")
            self.reply_dir = arg.upper() == "REPLY"
        elif opt in _ADDR_OPTS:
            self.addrs[opt] = parse_cidr(arg, ctx, f"--{opt}")
        else:
            lo, hi = parse_port_range(arg, ctx)
            self.ports[opt] = (lo, hi)

    def final_check(self, ctx: ParseCtx) -> None:
        if not self.seen:
            raise ctx.error(f"match {self.ext_name} needs at least one option")

    def match(self, p: Pkt, state: "HookState") -> bool:
        frame = p.frame
        if self.states and bool(ct_state_bits(frame) & self.states) == ("ctstate" in self.inv):
            return False
        ct = frame.ct
        if ct is None or ct is UNTRACKED:
            return "ctstate" in self.seen
        inv = self.inv
        if "ctdir" in self.seen and (frame.ctinfo >= IP_CT_IS_REPLY) != self.reply_dir:
            return False
        if self.l4proto and (getattr(ct, "proto", None) == self.l4proto) == ("ctproto" in inv):
            return False
        if self.addrs or self.ports:
            orig, repl = ct_tuple(ct, ORIGINAL), ct_tuple(ct, REPLY)
            for opt, (addr, mask) in self.addrs.items():
                t = orig if opt.startswith("ctorig") else repl
                v = t[0] if opt.endswith("src") else t[1]
                if ((v & mask) == addr) == (opt in inv):
                    return False
            for opt, (lo, hi) in self.ports.items():
                t = orig if opt.startswith("ctorig") else repl
                v = t[2] if "src" in opt else t[3]
                if (lo <= v <= hi) == (opt in inv):
                    return False
        if "ctstatus" in self.seen and bool(ct.status & self.status) == ("ctstatus" in inv):
            return False
        return True

    def save(self) -> str:
        inv = self.inv
        s = ""
        if self.states:
            names = ",".join(n for n, b in CT_STATES if self.states & b)
            opt = "state" if self.ext_name == "state" else "ctstate"
            s += f"{' !' if 'ctstate' in inv else ''} --{opt} {names}"
        if self.l4proto:
            s += f"{' !' if 'ctproto' in inv else ''} --ctproto {self.l4proto}"
        for opt in _ADDR_OPTS:
            if opt in self.addrs:
                addr, mask = self.addrs[opt]
                m = "" if mask == 0xFFFFFFFF else "/" + mask_str(mask)
                s += f"{' !' if opt in inv else ''} --{opt} {ip_str(addr)}{m}"
        for opt in _PORT_OPTS:
            if opt in self.ports:
                lo, hi = self.ports[opt]
                s += f"{' !' if opt in inv else ''} --{opt} {lo}" + (f":{hi}" if hi != lo else "")
        if "ctstatus" in self.seen:
            names = ",".join(n for n, b in CT_STATUS if self.status & b) or "NONE"
            s += f"{' !' if 'ctstatus' in inv else ''} --ctstatus {names}"
        if "ctdir" in self.seen:
            s += f" --ctdir {'REPLY' if self.reply_dir else 'ORIGINAL'}"
        return s


# ---------------------------------------------------------------------- statistic
@register_match("statistic")
class StatisticMatch(Match):
    """xt_statistic: random (a 31-bit draw below the probability) or every-nth with a counter."""

    name = "statistic"
    options = {"--mode": Opt("mode"), "--probability": Opt("probability", invert=True),
               "--every": Opt("every", invert=True), "--packet": Opt("packet")}

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.mode = ""
        self.invert = False
        self.probability = 0          # u32 as the kernel keeps it (0..2^31)
        self.every = 0                # stored minus one, as the kernel does
        self.packet = 0
        self.count = 0

    def parse(self, opt: str, args: list[str], invert: bool, ctx: ParseCtx) -> None:
        arg = args[0]
        if invert:
            self.invert = True
        if opt == "mode":
            if arg not in ("random", "nth"):
                raise ctx.error(f"statistic: bad mode {excerpt(arg)}")
            self.mode = arg
        elif opt == "probability":
            try:
                if not arg.isascii() or "_" in arg:
                    raise ValueError(arg)
                v = float(arg)
            except ValueError:
                raise ctx.error(f"statistic: bad probability {excerpt(arg)}") from None
            if not 0.0 <= v <= 1.0:
                raise ctx.error(f"statistic: probability {excerpt(arg)} not within 0-1")
            self.probability = int(math.floor(0x80000000 * v + 0.5))
        elif opt == "every":
            self.every = parse_uint(arg, ctx, "statistic --every", 1) - 1
        elif opt == "packet":
            self.packet = parse_uint(arg, ctx, "statistic --packet")

    def final_check(self, ctx: ParseCtx) -> None:
        if not self.mode:
            raise ctx.error("statistic needs --mode")
        if self.mode == "random" and (self.seen & {"every", "packet"} or "probability" not in self.seen):
            raise ctx.error("statistic: --mode random takes --probability (and no --every/--packet)")
        if self.mode == "nth" and ("probability" in self.seen or "every" not in self.seen):
            raise ctx.error("statistic: --mode nth takes --every [--packet] (and no --probability)")
        if self.packet > self.every:
            raise ctx.error("statistic: --packet p must be 0 <= p <= n-1")
        self.count = self.every - self.packet

    @property
    def stateful(self) -> bool:
        return self.mode == "nth"           # the nth counter is the rule's own

    @property
    def random_below(self) -> int | None:
        """The draw's threshold if the match is one random draw (a Draw of the walk takes those
        of a run of such rules at once), else None."""
        return self.probability if self.mode == "random" and not self.invert else None

    def match(self, p: Pkt, state: "HookState") -> bool:
        if self.mode == "random":
            hit = (state.node.rng("statistic").getrandbits(32) & 0x7FFFFFFF) < self.probability
        else:
            self.count = 0 if self.count == self.every else self.count + 1
            hit = self.count == 0
        return hit != self.invert

    def save(self) -> str:
        inv = " !" if self.invert else ""
        if self.mode == "random":
            return f" --mode random{inv} --probability {self.probability / 0x80000000:.11f}"
        return f" --mode nth{inv} --every {self.every + 1} --packet {self.packet}"


# ---------------------------------------------------------------------- recent
RECENT_PKT_LIST = 20      # ip_pkt_list_tot
RECENT_LIST_TOT = 100     # ip_list_tot


class RecentEntry:
    __slots__ = ("addr", "ttl", "stamps", "index")

    def __init__(self, addr: int, ttl: int, now: int) -> None:
        self.addr, self.ttl, self.stamps, self.index = addr, ttl, [now], 1

    def update(self, now: int) -> None:
        self.index %= RECENT_PKT_LIST
        if self.index < len(self.stamps):
            self.stamps[self.index] = now
        else:
            self.stamps.append(now)
        self.index += 1


class RecentTable:
    """One `--name` list: entries by address in LRU order (oldest first), as xt_recent keeps them."""

    def __init__(self, mask: int) -> None:
        self.mask = mask
        self.entries: dict[int, RecentEntry] = {}

    def touch(self, e: RecentEntry) -> None:
        self.entries.pop(e.addr)
        self.entries[e.addr] = e


@register_match("recent")
class RecentMatch(Match):
    name = "recent"
    options = {**{f"--{o}": Opt(o, nargs=0, invert=True) for o in ("set", "rcheck", "update", "remove")},
               "--seconds": Opt("seconds"), "--reap": Opt("reap", nargs=0),
               "--hitcount": Opt("hitcount"), "--rttl": Opt("rttl", nargs=0), "--name": Opt("name"),
               "--rsource": Opt("rsource", nargs=0), "--rdest": Opt("rdest", nargs=0),
               "--mask": Opt("mask")}
    _OPS = ("set", "rcheck", "update", "remove")

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.op = ""
        self.invert = False
        self.seconds = self.hitcount = 0
        self.list_name = "DEFAULT"
        self.dest = False
        self.mask = 0xFFFFFFFF
        self.tables: dict[str, RecentTable] = {}

    def parse(self, opt: str, args: list[str], invert: bool, ctx: ParseCtx) -> None:
        if opt in self._OPS:
            if self.op:
                raise ctx.error("recent: only one of --set, --rcheck, --update, --remove")
            self.op, self.invert = opt, invert
        elif opt == "seconds":
            self.seconds = parse_uint(args[0], ctx, "recent --seconds", 1)
        elif opt == "hitcount":
            self.hitcount = parse_uint(args[0], ctx, "recent --hitcount", 0, RECENT_PKT_LIST)
        elif opt == "name":
            if not args[0] or len(args[0]) > 199:
                raise ctx.error(f"recent: bad list name {excerpt(args[0])}")
            self.list_name = args[0]
        elif opt in ("rsource", "rdest"):
            self.dest = opt == "rdest"
        elif opt == "mask":
            self.mask = parse_ipv4(args[0], ctx, "--mask")

    def final_check(self, ctx: ParseCtx) -> None:
        if not self.op:
            raise ctx.error("recent: you must specify one of --set, --rcheck, --update or --remove")
        if "reap" in self.seen and not self.seconds:
            raise ctx.error("recent: --reap needs --seconds")
        if "rttl" in self.seen and self.op in ("set", "remove"):
            raise ctx.error("recent: --rttl only goes with --rcheck or --update")

    def bind(self, ruleset: Any) -> None:
        """The list is created by the first rule naming it (its --mask wins), as recent_mt_check does."""
        self.tables = ruleset.recent
        if self.list_name not in self.tables:
            self.tables[self.list_name] = RecentTable(self.mask)

    def match(self, p: Pkt, state: "HookState") -> bool:
        t = self.tables.get(self.list_name)
        if t is None:
            t = self.tables[self.list_name] = RecentTable(self.mask)
        addr = (p.daddr if self.dest else p.saddr) & t.mask
        ttl = p.ttl
        if state.hook == FORWARD or (state.hook == POSTROUTING and state.in_dev is not None):
            ttl += 1          # the TTL as it was before forwarding
        want_ttl = ttl if "rttl" in self.seen else 0
        now = state.node.now()
        ret = self.invert
        e = t.entries.get(addr)
        if e is not None and want_ttl and e.ttl and e.ttl != want_ttl:
            e = None
        if e is None:
            if self.op != "set":
                return ret
            if len(t.entries) >= RECENT_LIST_TOT:
                del t.entries[next(iter(t.entries))]
            t.entries[addr] = RecentEntry(addr, ttl, now)
            return not ret
        if self.op == "set":
            ret = not ret
        elif self.op == "remove":
            del t.entries[addr]
            return not ret
        else:
            since = now - self.seconds * 1_000_000_000
            hits = 0
            for stamp in e.stamps:
                if self.seconds and stamp < since:
                    continue
                hits += 1
                if not self.hitcount or hits >= self.hitcount:
                    ret = not ret
                    break
            if "reap" in self.seen:
                self._reap(t, e, since, self.op == "update" and ret)
        if self.op == "set" or (self.op == "update" and ret):
            e.update(now)
            t.touch(e)
            e.ttl = ttl
        return ret

    @staticmethod
    def _reap(t: RecentTable, working: RecentEntry, since: int, updating: bool) -> None:
        """recent_entry_reap: drop the least recently used entry if its last stamp is too old."""
        oldest = next(iter(t.entries.values()))
        if oldest is working and updating:
            return
        if oldest.stamps[oldest.index - 1] < since:
            del t.entries[oldest.addr]

    def save(self) -> str:
        s = (" !" if self.invert else "") + f" --{self.op}"
        if self.seconds:
            s += f" --seconds {self.seconds}"
        if "reap" in self.seen:
            s += " --reap"
        if self.hitcount:
            s += f" --hitcount {self.hitcount}"
        if "rttl" in self.seen:
            s += " --rttl"
        s += f" --name {self.list_name} --mask {ip_str(self.mask)}"
        return s + (" --rdest" if self.dest else " --rsource")
