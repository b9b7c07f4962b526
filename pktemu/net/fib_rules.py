"""Policy routing: `ip rule` and the numbered tables, as net/core/fib_rules.c and
net/ipv4/fib_rules.c evaluate them.

Rules are walked in priority order (fib_rules_lookup): the first that matches decides, except
that a table lookup that finds nothing (or a `throw` route, or a result the rule's
`suppress_prefixlength` hides) goes on to the next rule. `unreachable`, `prohibit` and
`blackhole` rules end the walk with ENETUNREACH, EACCES and EINVAL (fib4_rule_action); routes of
those types with EHOSTUNREACH, EACCES and EINVAL (fib_props). The `local` table (255) holds what
`ip route add ... table local` adds; the node's own and broadcast addresses are found before
the rules are consulted, as if rule 0 had found them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from pktemu.net.frame import int2ip
from pktemu.net.route import Route, RouteTable, prefix_mask

RT_TABLE_DEFAULT, RT_TABLE_MAIN, RT_TABLE_LOCAL = 253, 254, 255
TABLE_NAMES = {"default": RT_TABLE_DEFAULT, "main": RT_TABLE_MAIN, "local": RT_TABLE_LOCAL}
ACTIONS = ("lookup", "goto", "blackhole", "unreachable", "prohibit", "nop")
#: rule action -> errno (fib4_rule_action)
RULE_ERRNO = {"unreachable": "ENETUNREACH", "prohibit": "EACCES", "blackhole": "EINVAL"}
#: route type -> errno (fib_props)
ROUTE_ERRNO = {"unreachable": "EHOSTUNREACH", "prohibit": "EACCES", "blackhole": "EINVAL"}
#: errno of a failed input route -> ICMP destination-unreachable code (ip_error); EINVAL: silent drop
ICMP_CODE = {"ENETUNREACH": 0, "EHOSTUNREACH": 1, "EACCES": 13}


def table_id(text: str) -> int:
    """`main`, `local`, `default` or 1..2^32-1; ValueError otherwise."""
    if text in TABLE_NAMES:
        return TABLE_NAMES[text]
    if not text.isdigit() or not 0 < int(text) < 2**32:
        raise ValueError(f"expected main, local, default or a table number 1..4294967295, got {text!r}")
    return int(text)


def table_name(tid: int) -> str:
    return {v: k for k, v in TABLE_NAMES.items()}.get(tid, str(tid))


@dataclass(frozen=True)
class FibRule:
    """One `ip rule`: selectors (None: any) and an action."""
    priority: int
    action: str = "lookup"
    table: int = RT_TABLE_MAIN
    src: tuple[int, int] | None = None          # (prefix, plen)
    dst: tuple[int, int] | None = None
    iif: str | None = None
    oif: str | None = None
    fwmark: int | None = None
    fwmask: int = 0xFFFFFFFF
    tos: int | None = None
    ipproto: int | None = None
    sport: tuple[int, int] | None = None        # inclusive range
    dport: tuple[int, int] | None = None
    invert: bool = False
    goto: int | None = None
    suppress_prefixlength: int = -1

    def matches(self, fl: "Flow") -> bool:
        """fib_rule_match() + fib4_rule_match(), with `not` inverting the whole selector."""
        return self._match(fl) != self.invert

    def _match(self, fl: "Flow") -> bool:
        if self.iif is not None and self.iif != fl.iif:
            return False
        if self.oif is not None and self.oif != fl.oif:
            return False
        if self.fwmark is not None and (self.fwmark ^ fl.mark) & self.fwmask:
            return False
        if self.src is not None and (fl.saddr ^ self.src[0]) & prefix_mask(self.src[1]):
            return False
        if self.dst is not None and (fl.daddr ^ self.dst[0]) & prefix_mask(self.dst[1]):
            return False
        if self.tos is not None and self.tos != fl.tos & 0xFC:
            return False
        if self.ipproto is not None and self.ipproto != fl.proto:
            return False
        if self.sport is not None and not self.sport[0] <= fl.sport <= self.sport[1]:
            return False
        return self.dport is None or self.dport[0] <= fl.dport <= self.dport[1]

    @cached_property
    def text(self) -> str:
        """`ip rule show` syntax (without the tab): `100:	from 10.0.0.0/8 lookup 100`."""
        s = [f"{self.priority}:"]
        if self.invert:
            s.append("not")
        s.append("from " + (_pfx(self.src) if self.src else "all"))
        if self.dst:
            s.append("to " + _pfx(self.dst))
        if self.tos is not None:
            s.append(f"tos {self.tos:#x}")
        if self.fwmark is not None:
            s.append(f"fwmark {self.fwmark:#x}" + (f"/{self.fwmask:#x}" if self.fwmask != 0xFFFFFFFF else ""))
        for key in ("iif", "oif"):
            if getattr(self, key) is not None:
                s.append(f"{key} {getattr(self, key)}")
        if self.ipproto is not None:
            s.append(f"ipproto {self.ipproto}")
        for key in ("sport", "dport"):
            r = getattr(self, key)
            if r is not None:
                s.append(f"{key} {r[0]}" + (f"-{r[1]}" if r[1] != r[0] else ""))
        if self.action == "lookup":
            s.append(f"lookup {table_name(self.table)}")
            if self.suppress_prefixlength >= 0:
                s.append(f"suppress_prefixlength {self.suppress_prefixlength}")
        elif self.action == "goto":
            s.append(f"goto {self.goto}")
        else:
            s.append(self.action)
        return " ".join(s)


def _pfx(p: tuple[int, int]) -> str:
    return int2ip(p[0]) if p[1] == 32 else f"{int2ip(p[0])}/{p[1]}"


DEFAULT_RULES = (FibRule(0, table=RT_TABLE_LOCAL), FibRule(32766, table=RT_TABLE_MAIN),
                 FibRule(32767, table=RT_TABLE_DEFAULT))


@dataclass(frozen=True)
class Flow:
    """The flowi4 keys a rule can select on. `iif` is `lo` for locally generated packets."""
    daddr: int
    saddr: int = 0
    iif: str = "lo"
    oif: str | None = None
    mark: int = 0
    tos: int = 0
    proto: int = 0
    sport: int = 0
    dport: int = 0


@dataclass
class FibResult:
    """A route, or the errno that ended the walk; `rule`/`table` say who decided (for notes)."""
    route: Route | None = None
    errno: str | None = None
    rule: FibRule | None = None
    table: int | None = None

    @property
    def why(self) -> str:
        """`rule 100 from 10.0.0.0/8 lookup 100: ` when a rule other than the defaults decided."""
        if self.rule is None or self.rule in DEFAULT_RULES:
            return ""
        return f"rule {self.rule.text.replace(':', '', 1)}: "


@dataclass
class Fib:
    """A namespace's tables and rules; `tables[254]` is the node's `routes` (the main table)."""
    main: RouteTable
    tables: dict[int, RouteTable] = field(default_factory=dict)
    rules: list[FibRule] = field(default_factory=lambda: list(DEFAULT_RULES))

    custom: bool = False

    def __post_init__(self) -> None:
        self.tables[RT_TABLE_MAIN] = self.main
        self.tables.setdefault(RT_TABLE_LOCAL, RouteTable())

    def _recheck(self) -> None:
        """fib_has_custom_rules, or a table besides main: otherwise a lookup is one main lookup."""
        self.custom = (self.rules != list(DEFAULT_RULES) or len(self.tables) > 2
                       or bool(self.tables[RT_TABLE_LOCAL].routes()))

    def table(self, tid: int) -> RouteTable:
        """fib_new_table(): created on first use, as `ip route add ... table N` does."""
        if tid not in self.tables:
            self.tables[tid] = RouteTable()
            self.custom = True
        return self.tables[tid]

    def add_route(self, route: Route) -> None:
        self.table(route.table).add(route)
        if route.table == RT_TABLE_LOCAL or route.type == "throw":
            self.custom = True

    def del_rule(self, rule: FibRule) -> None:
        self.rules.remove(rule)
        self._recheck()

    def all_routes(self) -> list[Route]:
        return [r for tid in sorted(self.tables) for r in self.tables[tid].routes()]

    def default_priority(self) -> int:
        """fib_default_rule_pref(): one below the second rule's priority (32765 on a fresh node)."""
        if len(self.rules) > 1 and self.rules[1].priority:
            return self.rules[1].priority - 1
        return 0

    def add_rule(self, rule: FibRule) -> None:
        """After every rule of the same or a lower priority (fib_nl_newrule)."""
        i = 0
        while i < len(self.rules) and self.rules[i].priority <= rule.priority:
            i += 1
        self.rules.insert(i, rule)
        self._recheck()

    def lookup(self, fl: Flow) -> FibResult:
        """fib_lookup() -> fib_rules_lookup(): the route, or the errno (ENETUNREACH: nothing found)."""
        if not self.custom:
            rt = self.main.lookup(fl.daddr)
            return FibResult(rt, "ENETUNREACH" if rt is None else ROUTE_ERRNO.get(rt.type))
        i = 0
        while i < len(self.rules):
            rule = self.rules[i]
            i += 1
            if not rule.matches(fl):
                continue
            if rule.action == "goto":
                nxt = next((j for j, r in enumerate(self.rules) if r.priority == rule.goto and j >= i), None)
                if nxt is not None:
                    i = nxt
                continue
            if rule.action == "nop":
                continue
            if rule.action in RULE_ERRNO:
                return FibResult(None, RULE_ERRNO[rule.action], rule)
            tbl = self.tables.get(rule.table)
            rt = tbl.lookup(fl.daddr) if tbl is not None else None
            if rt is None or rt.type == "throw":
                continue
            if rt.type in ROUTE_ERRNO:
                return FibResult(rt, ROUTE_ERRNO[rt.type], rule, rule.table)
            if rt.plen <= rule.suppress_prefixlength:      # fib4_rule_suppress
                continue
            return FibResult(rt, None, rule, rule.table)
        return FibResult(None, "ENETUNREACH")


# ---------------------------------------------------------------------------- `ip rule` syntax
_PROTOS = {"icmp": 1, "tcp": 6, "udp": 17, "sctp": 132}
_FLAGS = {"blackhole", "unreachable", "prohibit", "nop"}


def _prefix(text: str) -> tuple[int, int] | None:
    import ipaddress
    if text == "all":
        return None
    try:
        net = ipaddress.IPv4Network(text, strict=False)
    except ValueError:
        raise ValueError(f"not a prefix like 10.0.0.0/8: {text!r}") from None
    return int(net.network_address), net.prefixlen


def _num(text: str, what: str, hi: int = 2**32 - 1) -> int:
    try:
        v = int(text, 0)
    except ValueError:
        raise ValueError(f"{what}: expected a number, got {text!r}") from None
    if not 0 <= v <= hi:
        raise ValueError(f"{what}: {v} is out of range 0..{hi}")
    return v


def _port_range(text: str, what: str) -> tuple[int, int]:
    lo, _, hi = text.partition("-")
    a, b = _num(lo, what, 65535), _num(hi or lo, what, 65535)
    if b < a:
        raise ValueError(f"{what}: empty range {text!r}")
    return a, b


def parse_rule(toks: list[str]) -> tuple[FibRule, set[str]]:
    """`ip rule add` arguments -> (rule, the fields given); ValueError says what is wrong.

    A rule without a priority gets -1 until `Fib.default_priority` places it, as the kernel does.
    """
    kw: dict[str, object] = {}
    i = 0
    while i < len(toks):
        key = toks[i]
        i += 1
        if key == "not":
            kw["invert"] = True
            continue
        if key in _FLAGS:
            kw["action"] = key
            continue
        if i >= len(toks):
            raise ValueError(f"{key}: missing value")
        val = toks[i]
        i += 1
        if key == "from":
            kw["src"] = _prefix(val)
        elif key == "to":
            kw["dst"] = _prefix(val)
        elif key in ("iif", "dev"):
            kw["iif"] = val
        elif key == "oif":
            kw["oif"] = val
        elif key == "fwmark":
            mark, slash, mask = val.partition("/")
            kw["fwmark"] = _num(mark, "fwmark")
            if slash:
                kw["fwmask"] = _num(mask, "fwmark mask")
        elif key in ("tos", "dsfield"):
            kw["tos"] = _num(val if val.startswith("0x") else f"0x{val}", "tos", 255)
        elif key in ("priority", "preference", "pref", "prio"):
            kw["priority"] = _num(val, "priority")
        elif key in ("table", "lookup"):
            kw["table"] = table_id(val)
            kw.setdefault("action", "lookup")
        elif key == "goto":
            kw["goto"] = _num(val, "goto")
            kw["action"] = "goto"
        elif key == "suppress_prefixlength":
            kw["suppress_prefixlength"] = _num(val, "suppress_prefixlength", 32)
        elif key == "ipproto":
            kw["ipproto"] = _PROTOS[val] if val in _PROTOS else _num(val, "ipproto", 255)
        elif key in ("sport", "dport"):
            kw[key] = _port_range(val, key)
        elif key == "type":
            if val not in _FLAGS and val != "unicast":
                raise ValueError(f"type: expected unicast, blackhole, unreachable, prohibit, nop: {val!r}")
            kw["action"] = "lookup" if val == "unicast" else val
        else:
            raise ValueError(f"unknown or unsupported selector {key!r} (from, to, iif, oif, fwmark, tos, "
                             "ipproto, sport, dport, not, priority, lookup, goto, blackhole, unreachable, "
                             "prohibit, suppress_prefixlength)")
    if kw.get("action") == "goto" and "priority" in kw and kw["goto"] <= kw["priority"]:  # type: ignore[operator]
        raise ValueError("goto: backward goto not supported (the target must be after this rule)")
    given = set(kw)
    kw.setdefault("priority", -1)
    return FibRule(**kw), given  # type: ignore[arg-type]


def find_rule(rules: list[FibRule], rule: FibRule, given: set[str]) -> FibRule | None:
    """`ip rule del`: the first rule equal to `rule` on every field given."""
    for r in rules:
        if all(getattr(r, k) == getattr(rule, k) for k in given):
            return r
    return None


def rule_tokens(m: dict[str, object]) -> list[str]:
    """A topology's mapping form (`{priority: 100, from: 10.0.0.0/8, table: 100}`) as `ip rule` words."""
    toks: list[str] = []
    for k, v in m.items():
        if k == "not":
            toks += ["not"] if v is True else []
        elif k == "action":
            toks += [str(v)] if v not in ("lookup", "goto") else []
        else:
            toks += [str(k), str(v)]
    return toks


_JSON_SKIP = {"src", "srclen", "dst", "dstlen", "not", "iif_detached", "oif_detached", "fwmask", "protocol",
              "sport_end", "dport_end", "flags"}


def json_rule_words(r: dict[str, Any]) -> tuple[list[str], list[str]]:
    """One `ip -j rule` object as `ip rule add` words, and the keys pktemu cannot emulate."""
    toks: list[str] = []
    unknown: list[str] = []
    if "not" in r:
        toks.append("not")
    for key, plen in (("src", "srclen"), ("dst", "dstlen")):
        if r.get(key) not in (None, "all"):
            toks += ["from" if key == "src" else "to", f"{r[key]}/{r.get(plen, 32)}"]
    for key, val in r.items():
        if key in _JSON_SKIP:
            continue
        if key in ("priority", "tos", "iif", "oif", "ipproto", "sport", "dport", "goto"):
            toks += [key, str(val)]
        elif key == "fwmark":
            toks += ["fwmark", f"{val}/{r['fwmask']}" if "fwmask" in r else str(val)]
        elif key in ("sport_start", "dport_start"):
            end = r.get(key.replace("start", "end"), val)
            toks += [key[:5], f"{val}-{end}"]
        elif key == "table":
            toks += ["lookup", str(val)]
        elif key == "suppress_prefixlen":
            toks += ["suppress_prefixlength", str(val)]
        elif key == "action" and val in ("blackhole", "unreachable", "prohibit", "nop"):
            toks.append(str(val))
        else:
            unknown.append(key)
    return toks, unknown


def install_rules(fib: Fib, rules: list[FibRule]) -> None:
    """A topology's `ip_rules`, as that many `ip rule add` in order (a rule with no priority
    gets one from fib_default_rule_pref at its turn)."""
    from dataclasses import replace
    for r in rules:
        fib.add_rule(r if r.priority >= 0 else replace(r, priority=fib.default_priority()))
