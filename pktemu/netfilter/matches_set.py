"""`-m set --match-set NAME FLAGS` and `-j SET --add-set/--del-set`: ipset lookups from rules.

The sets are the namespace's (`ruleset.ext["ipset"]`, an IpsetStore, put there before the rules
load): a rule naming a set that does not exist is refused, as iptables does. Semantics follow
xt_set revision 4 / SET revision 3 and ip_set_core: fewer FLAGS than the set has dimensions
never match (nor add), `--return-nomatch` turns a nomatch entry into a match and a match into
none, counters are updated (1 packet, the IP length) unless `! --update-counters`, then
`--packets-*`/`--bytes-*` compare them. `--map-set` is refused (skbinfo is not modelled).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pktemu.errors import PktemuError, excerpt
from pktemu.netfilter.ipset import Entry, IpSet, IpsetStore
from pktemu.netfilter.ipset_elem import packet_elem
from pktemu.netfilter.xt_base import (
    XT_CONTINUE, Match, Opt, ParseCtx, Pkt, Target, parse_uint, register_match, register_target,
)

if TYPE_CHECKING:
    from pktemu.netfilter.core import HookState

_COUNTER_OPS = ("eq", "lt", "gt")
#: `--packets-gt 5` etc.: ("gt:packets", 5, inverted)
Counters = tuple[tuple[str, int, bool], ...]


def _flags(text: str, ctx: ParseCtx) -> tuple[bool, ...]:
    parts = text.split(",")
    if len(parts) > 6 or any(p not in ("src", "dst") for p in parts):
        raise ctx.error(f"set: bad flags {excerpt(text)} (1 to 6 of src, dst, comma-separated)")
    return tuple(p == "src" for p in parts)


def _flags_text(flags: tuple[bool, ...]) -> str:
    return ",".join("src" if f else "dst" for f in flags)


def _name(text: str, ctx: ParseCtx) -> str:
    if not text or len(text.encode("utf-8", "surrogatepass")) > 31:
        raise ctx.error(f"set: bad set name {excerpt(text)} (1 to 31 characters)")
    return text


def _lookup(ruleset: Any, name: str, where: str) -> tuple[IpsetStore, IpSet]:
    store = ruleset.ext.get("ipset")
    s = store.get(name) if isinstance(store, IpsetStore) else None
    if s is None or store is None:
        raise PktemuError(f"{where}: Set {name} doesn't exist (no such ipset on this node; "
                          "give the node `ipsets: FILE`)")
    return store, s


def _extensions(s: IpSet, e: Entry, p: Pkt, update: bool, counters: Counters) -> bool:
    """ip_set_match_extensions: the counters updated first (1 packet, the IP length), then compared."""
    if "counters" not in s.exts:
        return True
    if update:
        e.packets += 1
        e.bytes += p.ip_len
    for what, value, inv in counters:
        op, _, field = what.partition(":")
        have = e.packets if field == "packets" else e.bytes
        ok = have == value if op == "eq" else have < value if op == "lt" else have > value
        if ok == inv:
            return False
    return True


def test(s: IpSet, store: IpsetStore, p: Pkt, flags: tuple[bool, ...], update: bool,
         update_sub: bool = True, counters: Counters = (), return_nomatch: bool = False) -> int:
    """ip_set_test before its last step: > 0 a match; -1 a nomatch entry (or, with
    `return_nomatch`, a match), 0 none. A list:set's members are tested without the counter
    conditions and with `return_nomatch`, as list_set_ktest does."""
    if len(flags) < s.dims:
        return 0
    now = store.now()
    if s.kind == "list:set":
        for m in s.members:
            sub = store.get(str(m.elem[0]))
            if (s.live(m, now) and sub is not None
                    and test(sub, store, p, flags, update and update_sub, True, (), return_nomatch) > 0
                    and _extensions(s, m, p, update, counters)):
                return 1
        return 0
    elem = packet_elem(s.kind, p, flags)
    if elem is None:
        return 0
    r = 0
    for e in s.candidates(elem, now):
        if _extensions(s, e, p, update, counters):
            r = -1 if e.nomatch else 1
            break
        if s.kind not in ("hash:net", "hash:ip,port,net"):
            break
    return -r if return_nomatch and s.kind in ("hash:net", "hash:ip,port,net") else r


@register_match("set")
class SetMatch(Match):
    name = "set"
    options = {"--match-set": Opt("match-set", nargs=2, invert=True),
               "--return-nomatch": Opt("return-nomatch", nargs=0),
               "--update-counters": Opt("update-counters", nargs=0, invert=True),
               "--update-subcounters": Opt("update-subcounters", nargs=0, invert=True),
               **{f"--{f}-{op}": Opt(f"{op}:{f}", invert=op == "eq")
                  for f in ("packets", "bytes") for op in _COUNTER_OPS}}

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.set_name, self.invert = "", False
        self.flags: tuple[bool, ...] = ()
        self.return_nomatch, self.update, self.update_sub = False, True, True
        self.counters: Counters = ()
        self.where = ""
        self.store: IpsetStore | None = None
        self.set: IpSet | None = None

    def parse(self, opt: str, args: list[str], invert: bool, ctx: ParseCtx) -> None:
        self.where = ctx.where
        if opt == "match-set":
            self.set_name, self.flags, self.invert = _name(args[0], ctx), _flags(args[1], ctx), invert
        elif opt == "return-nomatch":
            self.return_nomatch = True
        elif opt == "update-counters":
            self.update = not invert
        elif opt == "update-subcounters":
            self.update_sub = not invert
        else:
            field = opt.partition(":")[2]
            if any(c[0].endswith(field) for c in self.counters):
                raise ctx.error(f"set: only one --{field}-* option")
            self.counters += ((opt, parse_uint(args[0], ctx, f"--{field}", 0, (1 << 64) - 1), invert),)

    def final_check(self, ctx: ParseCtx) -> None:
        if not self.set_name:
            raise ctx.error("match set needs --match-set NAME FLAGS")

    def bind(self, ruleset: Any) -> None:
        self.store, self.set = _lookup(ruleset, self.set_name, self.where)

    def match(self, p: Pkt, state: "HookState") -> bool:
        assert self.set is not None and self.store is not None
        r = test(self.set, self.store, p, self.flags, self.update, self.update_sub, self.counters,
                 self.return_nomatch)
        return (r > 0) != self.invert

    def save(self) -> str:
        s = f"{' !' if self.invert else ''} --match-set {self.set_name} {_flags_text(self.flags)}"
        if self.return_nomatch:
            s += " --return-nomatch"
        if not self.update:
            s += " ! --update-counters"
        if not self.update_sub:
            s += " ! --update-subcounters"
        for field in ("packets", "bytes"):
            for opt, value, inv in self.counters:
                if opt.endswith(field):
                    op = "eq" if inv else opt.partition(":")[0]
                    s += f"{' !' if inv else ''} --{field}-{op} {value}"
        return s


def _kadd(s: IpSet, store: IpsetStore, p: Pkt, flags: tuple[bool, ...], exist: bool,
          timeout: int | None, delete: bool) -> bool:
    """ip_set_add / ip_set_del from a packet; list:set tries its members in order."""
    if len(flags) < s.dims:
        return False
    now = store.now()
    if s.kind == "list:set":
        for m in s.members:
            sub = store.get(str(m.elem[0]))
            if s.live(m, now) and sub is not None and _kadd(sub, store, p, flags, exist, timeout, delete):
                return True
        return False
    elem = packet_elem(s.kind, p, flags)
    if elem is None or s.kind == "bitmap:port" and not s.lo <= int(elem[0]) <= s.hi:
        return False
    if delete:
        return s.delete(elem, now) is None
    c = "counters" in s.exts
    return s.add(elem, now, exist, timeout, packets=1 if c else 0, nbytes=p.ip_len if c else 0) is None


@register_target("SET")
class SetTarget(Target):
    name = "SET"
    notable = True
    options = {"--add-set": Opt("add-set", nargs=2), "--del-set": Opt("del-set", nargs=2),
               "--exist": Opt("exist", nargs=0), "--timeout": Opt("timeout"),
               "--map-set": Opt("map-set", nargs=2)}

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.add_set: tuple[str, tuple[bool, ...]] | None = None
        self.del_set: tuple[str, tuple[bool, ...]] | None = None
        self.exist, self.where = False, ""
        self.timeout: int | None = None
        self.store: IpsetStore | None = None
        self.sets: dict[str, IpSet] = {}

    def parse(self, opt: str, args: list[str], invert: bool, ctx: ParseCtx) -> None:
        self.where = ctx.where
        if opt == "map-set":
            raise ctx.error("SET --map-set is not modelled (skbinfo marks, priorities and queues)")
        if opt in ("add-set", "del-set"):
            setattr(self, opt.replace("-", "_"), (_name(args[0], ctx), _flags(args[1], ctx)))
        elif opt == "exist":
            self.exist = True
        else:
            self.timeout = parse_uint(args[0], ctx, "--timeout", 0, 2_147_483)

    def final_check(self, ctx: ParseCtx) -> None:
        if self.add_set is None and self.del_set is None:
            raise ctx.error("SET target needs --add-set or --del-set")
        if self.add_set is None and (self.exist or self.timeout is not None):
            raise ctx.error("SET: --exist and --timeout go with --add-set")

    def bind(self, ruleset: Any) -> None:
        for spec in (self.add_set, self.del_set):
            if spec is not None:
                self.store, self.sets[spec[0]] = _lookup(ruleset, spec[0], self.where)

    def target(self, p: Pkt, state: "HookState") -> int:
        assert self.store is not None
        if self.add_set is not None:
            _kadd(self.sets[self.add_set[0]], self.store, p, self.add_set[1], self.exist, self.timeout, False)
        if self.del_set is not None:
            _kadd(self.sets[self.del_set[0]], self.store, p, self.del_set[1], False, None, True)
        return XT_CONTINUE

    def save(self) -> str:
        s = ""
        if self.add_set is not None:
            s += f" --add-set {self.add_set[0]} {_flags_text(self.add_set[1])}"
            if self.exist:
                s += " --exist"
            if self.timeout is not None:
                s += f" --timeout {self.timeout}"
        if self.del_set is not None:
            s += f" --del-set {self.del_set[0]} {_flags_text(self.del_set[1])}"
        return s


class AnySets(IpsetStore):
    """Every name is a set: for checking rules' syntax before the node's sets are known (a
    timeline's iptables-restore input); the real load at run time names the missing ones."""

    def get(self, name: str) -> IpSet | None:
        return IpSet(name, "hash:ip")


def syntax_ruleset() -> Any:
    """A scratch ruleset whose `-m set` / `-j SET` rules bind to any set name."""
    from pktemu.netfilter.xtables import Ruleset
    rs = Ruleset()
    rs.ext["ipset"] = AnySets(lambda: 0)
    return rs


def referenced(ruleset: Any, name: str) -> bool:
    """Whether a rule of the ruleset names the set (ipset refuses to destroy it then)."""
    if ruleset is None or not hasattr(ruleset, "tables"):
        return False
    for t in ruleset.tables():
        for c in ruleset.table(t).chains.values():
            for r in c.rules:
                for x in (*r.matches, r.target):
                    if isinstance(x, SetMatch) and x.set_name == name:
                        return True
                    if isinstance(x, SetTarget) and name in x.sets:
                        return True
    return False


def node_store(node: Any) -> IpsetStore:
    """The node's sets (made on first use), on its clock, seen by its iptables ruleset."""
    store = node.ipsets
    if store is None:
        store = node.ipsets = IpsetStore(node.now)
        store.in_use = lambda name: referenced(getattr(node.nf, "ruleset", None), name)
    rs = getattr(node.nf, "ruleset", None)
    if rs is not None and hasattr(rs, "ext"):
        rs.ext["ipset"] = store
    return store


def load_ipsets(node: Any, path: str) -> IpsetStore:
    """The topology's `ipsets: FILE` (`ipset save` text) restored into the node's sets."""
    from pktemu.infile import RULES_MAX_BYTES, read_text
    store = node_store(node)
    store.restore(read_text(path, "ipset file", RULES_MAX_BYTES), path)
    return store
