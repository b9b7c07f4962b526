"""Rate and connection-count matches: limit, hashlimit, connlimit.

limit and hashlimit are the kernel's token buckets on the virtual clock, with its integer
arithmetic, so that which packet of a burst is the first one refused is the kernel's: iptables-nft
1.8.9 loads `-m limit` as nft's native limit (ns tokens, checked with `nft --debug=netlink`) and
`-m hashlimit` as xt_hashlimit revision 3 (credits per jiffy of a HZ=250 kernel). Their options parse and
print as libxt_limit / libxt_hashlimit of iptables 1.8.9 do (tests/test_xtables_rate.py).
connlimit keeps, per rule, the connections it has seen by masked address (nf_conncount) and
forgets those the node's conntrack table no longer holds or that TCP has closed.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pktemu.errors import excerpt
from pktemu.netfilter.core import IPS_CONFIRMED, UNTRACKED
from pktemu.netfilter.xt_base import (
    U32, Match, Opt, ParseCtx, Pkt, parse_uint, register_match,
)

if TYPE_CHECKING:
    from pktemu.netfilter.core import HookState

HZ = 250                        # CONFIG_HZ of the kernel the oracle runs on
U64 = (1 << 64) - 1
_UNITS = (("second", 1), ("minute", 60), ("hour", 3600), ("day", 86400))
_PRINT_UNIT = {"second": "sec", "minute": "min", "hour": "hour", "day": "day"}


def _pow2_below(x: int) -> int:
    """POW2_BELOW32/64: the highest power of two not above x."""
    return 1 << (x.bit_length() - 1)


def jiffies(now_ns: int) -> int:
    return now_ns * HZ // 1_000_000_000


def parse_rate(text: str, ctx: ParseCtx, scale: int, what: str) -> tuple[int, int]:
    """libxt parse_rate: `N[/second|minute|hour|day]` (any prefix of the unit) -> (scale*mult/N, mult)."""
    num, sep, unit = text.partition("/")
    mult = 1
    if sep:
        u = unit.lower()
        hit = next((m for name, m in _UNITS if u and name.startswith(u)), None)
        if hit is None:
            raise ctx.error(f"{what}: bad rate {excerpt(text)}")
        mult = hit
    digits = len(num) - len(num.lstrip("0123456789"))     # atoi/atoll: leading digits only
    r = int(num[:digits]) if digits and num.isascii() and len(num) < 20 else 0
    if r == 0:
        raise ctx.error(f"{what}: bad rate {excerpt(text)}")
    val = scale * mult // r
    if val == 0:
        raise ctx.error(f"{what}: rate too fast {excerpt(text)}")
    return val, mult


def rate_str(period: int, scale: int) -> tuple[str, int]:
    """libxt print_rate: the largest unit that still gives a whole count; also that unit in seconds."""
    rates = [(_PRINT_UNIT[name], scale * m, m) for name, m in reversed(_UNITS)]
    i = 1
    while i < len(rates):
        mult = rates[i][1]
        if period > mult or mult // period < mult % period:
            break
        i += 1
    name, mult, secs = rates[i - 1]
    return f"{mult // period}/{name}", secs


class TokenBucket:
    """One bucket: credits, cap, cost, and the jiffy it was last refilled."""

    __slots__ = ("credit", "cap", "cost", "prev", "expires")

    def __init__(self, credit: int, cost: int, prev: int) -> None:
        self.credit = self.cap = credit
        self.cost = cost
        self.prev = prev
        self.expires = 0

    def take(self, now: int, cpj: int) -> bool:
        """Refill by the jiffies since the last packet (capped), then pay the cost if there is enough."""
        if now != self.prev:
            self.credit = min(self.credit + (now - self.prev) * cpj, self.cap)
            self.prev = now
        if self.credit >= self.cost:
            self.credit -= self.cost
            return True
        return False


# ---------------------------------------------------------------------- limit
LIMIT_SCALE = 10000


@register_match("limit")
class LimitMatch(Match):
    """`-m limit` (default 3/hour, burst 5) as iptables-nft loads it: not xt_limit but nft's own
    `limit rate R/unit burst B packets` (nft_limit.c), R and unit as iptables-save prints them.
    Its bucket holds nanoseconds: a packet costs unit/R, the bucket holds B of them and refills
    with elapsed time (no jiffy rounding, no xt_limit overflow check)."""

    name = "limit"
    options = {"--limit": Opt("limit"), "--limit-burst": Opt("limit-burst")}

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.avg = LIMIT_SCALE * 3600 // 3
        self.burst = 5
        self.bucket: TokenBucket | None = None

    def parse(self, opt: str, args: list[str], invert: bool, ctx: ParseCtx) -> None:
        if opt == "limit":
            self.avg = parse_rate(args[0], ctx, LIMIT_SCALE, "limit")[0]
        else:
            self.burst = parse_uint(args[0], ctx, "limit --limit-burst", 0, 10000)

    def final_check(self, ctx: ParseCtx) -> None:
        if self.burst == 0:
            self.burst = 5          # nft_limit takes burst 0 for its default, and iptables-save shows that

    def bind(self, ruleset: Any) -> None:
        """The bucket is the rule's own, full when the rule is loaded (a copy gets a new one)."""
        self.bucket = None

    def match(self, p: Pkt, state: "HookState") -> bool:
        now = state.node.now()
        b = self.bucket
        if b is None:
            rate, unit = rate_str(self.avg, LIMIT_SCALE)
            cost = unit * 1_000_000_000 // int(rate.split("/")[0])
            b = self.bucket = TokenBucket(cost * self.burst, cost, now)
        return b.take(now, 1)

    def save(self) -> str:
        s = " --limit " + rate_str(self.avg, LIMIT_SCALE)[0]
        return s + (f" --limit-burst {self.burst}" if self.burst != 5 else "")


# ---------------------------------------------------------------------- hashlimit
HL_SCALE = 1_000_000                          # XT_HASHLIMIT_SCALE_v2
HL_CPJ = _pow2_below(U64 // (HZ * 86400))
HL_MODES = (("srcip", 4), ("srcport", 8), ("dstip", 1), ("dstport", 2))     # print order
HL_GCINTERVAL = 1000
_HL_PORT_PROTOS = frozenset((6, 17, 33, 132, 136))


def hl_credits(user: int) -> int:
    """xt_hashlimit user2credits (revision 3, u64)."""
    return (user * ((HZ * HL_CPJ) // HL_SCALE)) & U64


class HashTable:
    """One `--hashlimit-name` table of a namespace: buckets by key, cleaned every gc interval."""

    def __init__(self, cfg: "HashlimitMatch", now_ns: int) -> None:
        self.cfg = cfg
        self.born = now_ns
        self.last_gc = 0
        self.entries: dict[tuple[int, int, int, int], TokenBucket] = {}

    def gc(self, now_ns: int) -> None:
        """htable_gc runs every gc_interval ms: drop entries expired at a pass since the last one."""
        step = self.cfg.gcinterval * 1_000_000
        n = (now_ns - self.born) // step
        if n <= self.last_gc:
            return
        pass_j = jiffies(self.born + n * step)
        self.entries = {k: e for k, e in self.entries.items() if pass_j < e.expires}
        self.last_gc = n


@register_match("hashlimit")
class HashlimitMatch(Match):
    """xt_hashlimit revision 3 in packet mode; byte rates and --hashlimit-rate-match are refused."""

    name = "hashlimit"
    options = {"--hashlimit-upto": Opt("upto"), "--hashlimit-above": Opt("above"),
               "--hashlimit": Opt("upto"), "--hashlimit-burst": Opt("burst"),
               "--hashlimit-mode": Opt("mode"), "--hashlimit-name": Opt("name"),
               "--hashlimit-srcmask": Opt("srcmask"), "--hashlimit-dstmask": Opt("dstmask"),
               "--hashlimit-htable-size": Opt("size"), "--hashlimit-htable-max": Opt("max"),
               "--hashlimit-htable-gcinterval": Opt("gcinterval"),
               "--hashlimit-htable-expire": Opt("expire"),
               "--hashlimit-rate-match": Opt("rate-match", nargs=0),
               "--hashlimit-rate-interval": Opt("rate-interval")}

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.avg = 0
        self.unit = 1
        self.above = False
        self.burst = 5
        self.mode = 0
        self.table_name = ""
        self.srcmask = self.dstmask = 32
        self.size = self.max = 0
        self.gcinterval = HL_GCINTERVAL
        self.expire = 0
        self.tables: dict[str, HashTable] = {}

    def parse(self, opt: str, args: list[str], invert: bool, ctx: ParseCtx) -> None:
        arg = args[0] if args else ""
        if opt in ("upto", "above"):
            if "upto" in self.seen and "above" in self.seen:
                raise ctx.error("hashlimit: --hashlimit-upto and --hashlimit-above exclude each other")
            if arg[-1:].lower() == "b" or "b/" in arg.lower():
                raise ctx.error(f"hashlimit: byte rates ({excerpt(arg)}) are not modelled")
            self.avg, self.unit = parse_rate(arg, ctx, HL_SCALE, "hashlimit")
            self.above = opt == "above"
        elif opt == "burst":
            if not arg.isascii() or not arg.isdigit():
                raise ctx.error(f"hashlimit: bad --hashlimit-burst {excerpt(arg)} "
                                "(byte bursts are not modelled)")
            self.burst = parse_uint(arg, ctx, "hashlimit --hashlimit-burst", 1, 1_000_000)
        elif opt == "mode":
            self.mode = 0
            for part in arg.split(","):
                bit = dict(HL_MODES).get(part)
                if bit is None:
                    raise ctx.error(f"hashlimit: bad --hashlimit-mode {excerpt(part)}")
                self.mode |= bit
        elif opt == "name":
            if not arg or len(arg) > 254 or arg in (".", "..") or "/" in arg:
                raise ctx.error(f"hashlimit: bad --hashlimit-name {excerpt(arg)}")
            self.table_name = arg
        elif opt in ("srcmask", "dstmask"):
            setattr(self, opt, parse_uint(arg, ctx, f"hashlimit --hashlimit-{opt}", 0, 32))
        elif opt in ("size", "max", "gcinterval", "expire"):
            setattr(self, opt, parse_uint(arg, ctx, f"hashlimit --hashlimit-htable-{opt}"))
        else:
            raise ctx.error(f"hashlimit: --hashlimit-{opt} is not modelled")

    def final_check(self, ctx: ParseCtx) -> None:
        if not self.seen & {"upto", "above"}:
            raise ctx.error("hashlimit: you have to specify --hashlimit-upto or --hashlimit-above")
        if not self.table_name:
            raise ctx.error("hashlimit: you have to specify --hashlimit-name")
        if "expire" not in self.seen:
            self.expire = self.unit * 1000
        if self.gcinterval == 0 or self.expire == 0:
            raise ctx.error("hashlimit: --hashlimit-htable-gcinterval and -expire must not be 0")
        if hl_credits(self.avg * self.burst) < hl_credits(self.avg):
            raise ctx.error(f"hashlimit: overflow, try lower: {self.avg}/{self.burst}")

    def bind(self, ruleset: Any) -> None:
        """Tables are per namespace and by name; the first rule naming one sets its configuration."""
        self.tables = ruleset.ext.setdefault("hashlimit", {})

    def _key(self, p: Pkt) -> tuple[int, int, int, int]:
        m = self.mode
        src = p.saddr & ((U32 << (32 - self.srcmask)) & U32) if m & 4 else 0
        dst = p.daddr & ((U32 << (32 - self.dstmask)) & U32) if m & 1 else 0
        ports = p.proto in _HL_PORT_PROTOS and p.sport >= 0
        sport = p.sport if m & 8 and ports else 0
        dport = p.dport if m & 2 and ports else 0
        return src, dst, sport, dport

    def match(self, p: Pkt, state: "HookState") -> bool:
        now_ns = state.node.now()
        t = self.tables.get(self.table_name)
        if t is None:
            t = self.tables[self.table_name] = HashTable(self, now_ns)
        t.gc(now_ns)
        cfg = t.cfg
        now = jiffies(now_ns)
        key = cfg._key(p)
        e = t.entries.get(key)
        if e is None:
            if cfg.max and len(t.entries) >= cfg.max:
                return False                    # the kernel hot-drops the packet
            e = t.entries[key] = TokenBucket(hl_credits(cfg.avg * cfg.burst), hl_credits(cfg.avg), now)
        e.expires = now + -(-cfg.expire * HZ // 1000)
        return e.take(now, HL_CPJ) != cfg.above

    def save(self) -> str:
        rate, secs = rate_str(self.avg, HL_SCALE)
        s = f" --hashlimit-{'above' if self.above else 'upto'} {rate} --hashlimit-burst {self.burst}"
        if self.mode:
            s += " --hashlimit-mode " + ",".join(n for n, b in HL_MODES if self.mode & b)
        s += f" --hashlimit-name {self.table_name}"
        if self.size:
            s += f" --hashlimit-htable-size {self.size}"
        if self.max:
            s += f" --hashlimit-htable-max {self.max}"
        if self.gcinterval != HL_GCINTERVAL:
            s += f" --hashlimit-htable-gcinterval {self.gcinterval}"
        if self.expire != secs * 1000:
            s += f" --hashlimit-htable-expire {self.expire}"
        if self.srcmask != 32:
            s += f" --hashlimit-srcmask {self.srcmask}"
        if self.dstmask != 32:
            s += f" --hashlimit-dstmask {self.dstmask}"
        return s


# ---------------------------------------------------------------------- connlimit
_CLOSED = frozenset(("TIME_WAIT", "CLOSE"))


@register_match("connlimit")
class ConnlimitMatch(Match):
    """xt_connlimit: connections this rule has counted, by source (or destination) address & mask."""

    name = "connlimit"
    options = {"--connlimit-upto": Opt("upto"), "--connlimit-above": Opt("above"),
               "--connlimit-mask": Opt("mask"), "--connlimit-saddr": Opt("saddr", nargs=0),
               "--connlimit-daddr": Opt("daddr", nargs=0)}

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.limit = 0
        self.upto = False
        self.mask_len = 32
        self.daddr = False
        self.conns: dict[int, list[Any]] = {}

    def parse(self, opt: str, args: list[str], invert: bool, ctx: ParseCtx) -> None:
        if opt in ("upto", "above"):
            if self.seen & {"upto", "above"} - {opt}:
                raise ctx.error("connlimit: --connlimit-upto and --connlimit-above exclude each other")
            self.limit = parse_uint(args[0], ctx, f"connlimit --connlimit-{opt}")
            self.upto = opt == "upto"
        elif opt == "mask":
            self.mask_len = parse_uint(args[0], ctx, "connlimit --connlimit-mask", 0, 32)
        else:
            if self.seen & {"saddr", "daddr"} - {opt}:
                raise ctx.error("connlimit: --connlimit-saddr and --connlimit-daddr exclude each other")
            self.daddr = opt == "daddr"

    def final_check(self, ctx: ParseCtx) -> None:
        if not self.seen & {"upto", "above"}:
            raise ctx.error("connlimit: you must specify --connlimit-upto or --connlimit-above")

    def bind(self, ruleset: Any) -> None:
        """The counted connections are the rule's own (a copy for another namespace starts empty)."""
        self.conns = {}

    def match(self, p: Pkt, state: "HookState") -> bool:
        mask = (U32 << (32 - self.mask_len)) & U32
        key = (p.daddr if self.daddr else p.saddr) & mask
        table = getattr(state.nf, "conntrack", None)
        ct = p.frame.ct
        live = [c for c in self.conns.get(key, ()) if c is ct or _alive(c, table)]
        if ct is not None and ct is not UNTRACKED and all(c is not ct for c in live) \
                and not ct.status & IPS_CONFIRMED:
            live.append(ct)
        self.conns[key] = live
        n = len(live) if ct is not None and ct is not UNTRACKED else len(live) + 1
        return (n > self.limit) != self.upto

    def save(self) -> str:
        s = f" --connlimit-{'upto' if self.upto else 'above'} {self.limit} --connlimit-mask {self.mask_len}"
        return s + (" --connlimit-daddr" if self.daddr else " --connlimit-saddr")


def _alive(ct: Any, table: Any) -> bool:
    """nf_conncount find_or_evict: the entry is still in the table, and not a closed TCP connection
    (one that was never confirmed was dropped: it is gone too)."""
    if not ct.status & IPS_CONFIRMED or table is None or table.find(ct.orig, ct.zone) is None:
        return False
    return ct.tcp_state not in _CLOSED
