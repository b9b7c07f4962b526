"""One iptables rule: the `struct ipt_ip` header part, its matches, its target, its counters.

A rule is compiled into a tuple of small check callables (only the tests it really has), so the
per-packet walk is `all(check(p, state))` with no interpretation of options. Its canonical
`iptables-save` text is built once too, in iptables' print order. Both are made on first use: in
a table of 170k kube-proxy rules most are never evaluated (the index skips them) nor printed,
and the closures and text would be most of a rule's memory. For the same reason rules share
equal extension objects (shared_ext), and the fast loader copies its per-rule ones (a comment,
an endpoint's DNAT) with straight-line code (maker).
"""
from __future__ import annotations

import copy as _copy
from keyword import iskeyword
from typing import TYPE_CHECKING, Any, Callable, TypeVar, cast

from pktemu.errors import PktemuError

from pktemu.netfilter.xt_base import (
    U32, Extension, Match, ParseCtx, Pkt, Target, ifname_match, ip_str, mask_str, proto_name,
)

if TYPE_CHECKING:
    from pktemu.netfilter.core import HookState

Check = Callable[[Pkt, "HookState"], bool]

# What a rule does when it matches.
K_NONE, K_ACCEPT, K_DROP, K_RETURN, K_JUMP, K_GOTO, K_EXT = range(7)
STANDARD = {"ACCEPT": K_ACCEPT, "DROP": K_DROP, "RETURN": K_RETURN}


#: The header fields a rule rarely sets, kept together in one tuple that equal rules share
#: (kube-proxy's 170k rules have a handful of distinct ones): 80 bytes fewer per rule.
_HDR_FIELDS = ("inv_src", "inv_dst", "iniface", "inv_in", "outiface", "inv_out", "inv_proto", "frag",
               "inv_frag", "origin")
_HDR0: tuple[Any, ...] = (False, False, "", False, "", False, False, False, False, "")
_HDRS: dict[tuple[Any, ...], tuple[Any, ...]] = {_HDR0: _HDR0}
_MAX_SHARED = 1 << 14           # distinct headers (or source paths) kept; past that each its own
_PATHS: dict[str, int] = {}
_PATH_LIST: list[str] = []


def _hdr_field(i: int, doc: str) -> property:
    def get(self: "Rule") -> Any:
        return self._hdr[i]

    def put(self: "Rule", value: Any) -> None:
        if self._hdr[i] is value:
            return
        h = (*self._hdr[:i], value, *self._hdr[i + 1:])
        if len(_HDRS) < _MAX_SHARED:
            h = _HDRS.setdefault(h, h)
        self._hdr = h
    return property(get, put, doc=doc)


class Rule:
    """An ipt_entry. `where` is "file:line" of its source, for error messages."""

    # what the packet path reads first, so that it shares the object header's cache line
    __slots__ = ("checks", "kind", "pkts", "bytes", "jump_steps", "target", "src", "smsk", "dst", "dmsk",
                 "proto", "_hdr", "matches", "jump", "_where", "chain", "num", "key", "_body")

    inv_src = _hdr_field(0, "`! -s`")
    inv_dst = _hdr_field(1, "`! -d`")
    iniface = _hdr_field(2, "`-i`")
    inv_in = _hdr_field(3, "`! -i`")
    outiface = _hdr_field(4, "`-o`")
    inv_out = _hdr_field(5, "`! -o`")
    inv_proto = _hdr_field(6, "`! -p`")
    frag = _hdr_field(7, "`-f`")
    inv_frag = _hdr_field(8, "`! -f`")
    #: how a rule loaded mid-run came to be ("replaced at 2.000 s by iptables -R"); "" otherwise
    origin = _hdr_field(9, "how a rule loaded mid-run came to be")

    def __init__(self, where: str = "<rules>") -> None:
        self.src = self.smsk = self.dst = self.dmsk = 0
        self.proto = 0
        self._hdr = _HDR0
        self.matches: tuple[Match, ...] = ()
        self.target: Target | None = None
        self.kind = K_NONE
        self.jump = ""                 # the -j / -g word as written (chain or standard target)
        self.pkts = self.bytes = 0
        self.where = where
        self.chain = ""
        self.num = 0
        self.checks: tuple[Check, ...] | None = ()
        self.key: int | None = None
        self._body: str | None = ""
        self.jump_steps: Any = None

    @property
    def where(self) -> str:
        """"file:line" of the rule's source (kept as one int: a string per rule would be 60 bytes)."""
        w = self._where
        if w.__class__ is int:
            return f"{_PATH_LIST[w >> 32]}:{w & 0xFFFFFFFF}"    # type: ignore[operator]
        return w        # type: ignore[return-value]

    @where.setter
    def where(self, value: str) -> None:
        path, sep, line = value.rpartition(":")
        if (sep and line.isascii() and line.isdecimal() and len(line) <= 9 and line[0] != "0"
                and (path in _PATHS or len(_PATH_LIST) < _MAX_SHARED)):
            k = _PATHS.get(path)
            if k is None:
                k = _PATHS[path] = len(_PATH_LIST)
                _PATH_LIST.append(path)
            self._where: int | str = k << 32 | int(line)
        else:
            self._where = value

    def __getstate__(self) -> dict[str, Any]:
        """Slots by name, `where` as text: its int form indexes this process's table of paths, and
        a pickled topology runs in another process (pktemu.scaleout)."""
        state = {k: getattr(self, k) for k in self.__slots__ if hasattr(self, k)}
        state["_where"] = self.where
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        for k, v in state.items():
            setattr(self, k, v)
        self.where = state["_where"]

    def copy(self) -> "Rule":
        """The same rule as a new object (its counters can then change independently); the
        extension objects are shared."""
        r = _new_rule(Rule)
        (r.src, r.smsk, r.dst, r.dmsk, r.proto, r._hdr, r.target, r.kind, r.jump, r.pkts, r.bytes,
         r._where, r.chain, r.num, r.checks, r.key, r._body, r.jump_steps) = (
            self.src, self.smsk, self.dst, self.dmsk, self.proto, self._hdr, self.target, self.kind,
            self.jump, self.pkts, self.bytes, self._where, self.chain, self.num, self.checks, self.key,
            self._body, self.jump_steps)
        r.matches = self.matches
        if self.smsk == U32 or self.dmsk == U32:
            r.checks = None             # a /32 test is a method of its rule (_src_is): made anew
        return r

    def clone(self) -> "Rule":
        """A copy for another namespace: what keeps state per rule or per namespace (an nth
        counter, a recent list, a LOG sink) is copied, every other extension object is shared,
        and so is the save text (every run's iptables-save-<node>.txt prints it for every copy)."""
        self.body                       # noqa: B018 (made once here, not once per copy)
        r = self.copy()
        if self.target is not None and self.target.stateful:
            r.target = _copy.copy(self.target)
        if any(m.stateful for m in self.matches):
            r.matches = tuple(_copy.copy(m) if m.stateful else m for m in self.matches)
            r.checks = None
        return r

    def finish(self) -> None:
        """Parsing is complete: the index key now, the checks and the save text on first use."""
        self.checks = None
        self.key = self.dst if self.dmsk == U32 and not self.inv_dst else None
        self._body = None

    def compiled(self) -> tuple[Check, ...]:
        """The checks (compiled the first time)."""
        checks = self.checks
        if checks is None:
            checks = self.checks = _shared(self._compile(True), self.smsk == U32 or self.dmsk == U32)
        return checks

    def keyed_checks(self) -> tuple[Check, ...]:
        """The checks of a rule reached through its key (`-d key/32`, an indexed run): without
        the destination test, which the index made, so that equal rules share one tuple."""
        if self.key is None:
            return self.compiled()
        return _shared(self._compile(False), self.smsk == U32)

    @property
    def body(self) -> str:
        """The rule as iptables-save prints it after `-A CHAIN` (made the first time)."""
        body = self._body
        if body is None:
            body = self._body = self._text()
        return body

    def _compile(self, dst: bool) -> list[Check]:
        """The rule's tests; each one shared by the rules that have the same (see _check). A rule
        with none of the rare header fields (kube-proxy's but its `! -s` ones) takes the short
        way: a packet's first visit to a Service's endpoint chain compiles them."""
        if self._hdr is not _HDR0:
            return self._compile_any(dst)
        out: list[Check] = []
        smsk = self.smsk
        if smsk:
            out.append(self._src_is if smsk == U32 else _check("s", self.src, smsk, False))
        if dst:
            dmsk = self.dmsk
            if dmsk:
                out.append(self._dst_is if dmsk == U32 else _check("d", self.dst, dmsk, False))
        proto = self.proto
        if proto:
            c = _PROTO_CHECKS.get(proto)
            if c is None:
                c = _PROTO_CHECKS[proto] = _check("p", proto, 0, False)
            out.append(c)
        for m in self.matches:
            if not m.always:
                out.append(m.match)
        return out

    def _compile_any(self, dst: bool) -> list[Check]:
        out: list[Check] = []
        inv_src, inv_dst, iniface, inv_in, outiface, inv_out, inv_proto, frag, inv_frag, _o = self._hdr
        if self.smsk == U32 and not inv_src:
            out.append(self._src_is)
        elif self.smsk or inv_src:
            out.append(_check("s", self.src, self.smsk, inv_src))
        if not dst:
            pass
        elif self.dmsk == U32 and not inv_dst:
            out.append(self._dst_is)
        elif self.dmsk or inv_dst:
            out.append(_check("d", self.dst, self.dmsk, inv_dst))
        if iniface and (iniface != "+" or inv_in):
            out.append(_check("i", iniface, 0, inv_in))
        if outiface and (outiface != "+" or inv_out):
            out.append(_check("o", outiface, 0, inv_out))
        if self.proto or inv_proto:
            out.append(_check("p", self.proto, 0, inv_proto))
        if frag:
            out.append(_check("f", 0, 0, inv_frag))
        out.extend(m.match for m in self.matches if not m.always)
        return out

    def _src_is(self, p: Pkt, s: "HookState") -> bool:
        """`-s a/32`: a method of the rule, not a closure, as one address is one rule's own (a
        bound method is one small object; a closure is four, scattered)."""
        return p.saddr == self.src

    def _dst_is(self, p: Pkt, s: "HookState") -> bool:
        """`-d a/32` (see _src_is)."""
        return p.daddr == self.dst

    def _text(self) -> str:
        """The rule as iptables-save prints it after `-A CHAIN` (each part with a leading space)."""
        parts: list[str] = []
        for letter, addr, mask, inv in (("s", self.src, self.smsk, self.inv_src),
                                        ("d", self.dst, self.dmsk, self.inv_dst)):
            if mask or inv or addr:
                parts.append(f"{' !' if inv else ''} -{letter} {ip_str(addr)}/{mask_str(mask)}")
        for letter, name, inv in (("i", self.iniface, self.inv_in), ("o", self.outiface, self.inv_out)):
            if name and (name != "+" or inv):
                parts.append(f"{' !' if inv else ''} -{letter} {name}")
        if self.proto:
            parts.append(f"{' !' if self.inv_proto else ''} -p {proto_name(self.proto)}")
        if self.frag:
            parts.append(f"{' !' if self.inv_frag else ''} -f")
        for m in self.matches:
            parts.append(f" -m {m.ext_name}{m.save()}")
        if self.target is not None:
            parts.append(f" -j {self.target.ext_name}{self.target.save()}")
        elif self.jump:
            parts.append(f" -{'g' if self.kind == K_GOTO else 'j'} {self.jump}")
        return "".join(parts)

    @property
    def text(self) -> str:
        """`-A CHAIN ...` exactly as iptables-save prints it (without counters)."""
        return f"-A {self.chain}{self.body}"

    def __repr__(self) -> str:
        return f"<Rule {self.text} [{self.pkts}:{self.bytes}]>"


_new_rule = object.__new__

#: Checks and check tuples by what they test: a packet to one Service among thousands then
#: runs mostly shared objects that stay in cache, not closures of its own scattered in the heap.
#: A /32 address is one rule's own (a ClusterIP, an endpoint): its check is made, not kept.
_CHECKS: dict[tuple[Any, ...], Check] = {}
_CHECK_TUPLES: dict[tuple[Check, ...], tuple[Check, ...]] = {}
_PROTO_CHECKS: dict[int, Check] = {}       # `-p N`, by N: _check's, without its key tuple


def _make_check(kind: str, v: Any, m: int, inv: bool) -> Check:
    if kind == "s":
        return lambda p, s: ((p.saddr & m) == v) != inv
    if kind == "d":
        return lambda p, s: ((p.daddr & m) == v) != inv
    if kind == "i":
        return lambda p, s: ifname_match(s.in_dev, v) != inv
    if kind == "o":
        return lambda p, s: ifname_match(s.out_dev, v) != inv
    if kind == "p":
        return lambda p, s: (p.proto == v) != inv
    return lambda p, s: (p.fragoff != 0) != inv


def _check(kind: str, v: Any, m: int, inv: bool) -> Check:
    if m == U32 or len(_CHECKS) >= _MAX_SHARED:
        return _make_check(kind, v, m, inv)
    key = (kind, v, m, inv)
    c = _CHECKS.get(key)
    if c is None:
        c = _CHECKS[key] = _make_check(kind, v, m, inv)
    return c


def _shared(checks: list[Check], own: bool) -> tuple[Check, ...]:
    """One tuple for equal check lists (bound methods of one match object are equal), unless a
    check in it is the rule's `own` (see _check)."""
    t = tuple(checks)
    if own or len(_CHECK_TUPLES) >= _MAX_SHARED:
        return t
    return _CHECK_TUPLES.setdefault(t, t)


def where_code(path: str, lineno: int) -> int | str:
    """`Rule.where` of line `lineno` of `path` in the form the rule keeps (what its setter makes of
    "path:lineno"), for a loader that makes many rules without formatting that text for each."""
    if 0 < lineno < 10**9 and (path in _PATHS or len(_PATH_LIST) < _MAX_SHARED):
        k = _PATHS.get(path)
        if k is None:
            k = _PATHS[path] = len(_PATH_LIST)
            _PATH_LIST.append(path)
        return k << 32 | lineno
    return f"{path}:{lineno}"


# Extension objects shared by rules: 170k kube-proxy rules have a few dozen distinct settings.

#: one `seen` set per distinct set of options: extensions are done with theirs once parsed, and
#: 170k rules would otherwise hold 180k small sets
SEEN: dict[frozenset[str], set[str]] = {}
_E = TypeVar("_E", bound=Extension)


def shared_ext(ext: _E, ctx: ParseCtx) -> _E:
    """The object of an equal extension parsed before in this input, if any: an extension without
    state of its own is its settings, and 170k kube-proxy rules have a few dozen distinct `-m tcp`,
    `statistic` or MARK settings. Equal means every attribute equal (a `seen` set by content)."""
    ext.seen = SEEN.setdefault(frozenset(ext.seen), ext.seen)
    pool = ctx.shared
    if pool is None or ext.stateful:
        return ext
    try:
        key = (type(ext), *[(k, id(v) if v.__class__ is set else v) for k, v in ext_attrs(ext).items()])
        return cast(_E, pool.setdefault(key, ext))
    except TypeError:                   # a list or dict setting: kept as it is
        return ext


#: extension class -> its slots' names, base classes first
_SLOT_NAMES: dict[type, tuple[str, ...]] = {}


def ext_attrs(ext: Extension) -> dict[str, Any]:
    """An extension's attributes by name, its slots' (base classes first) then its __dict__'s, in
    the order they were set: what `vars` gives of an object without slots."""
    cls = type(ext)
    names = _SLOT_NAMES.get(cls)
    if names is None:
        names = _SLOT_NAMES[cls] = tuple(n for c in reversed(cls.__mro__)
                                         for n in c.__dict__.get("__slots__", ())
                                         if n not in ("__dict__", "__weakref__"))
    out = {n: getattr(ext, n) for n in names if hasattr(ext, n)}
    own = getattr(ext, "__dict__", None)
    if own:
        out.update(own)
    return out


#: (class, attribute names) -> what makes a maker for their values (compiled once per process)
_FACTORIES: dict[tuple[type, tuple[str, ...]], Callable[..., Callable[[], Any]]] = {}


def maker(ext: Extension) -> Callable[[], Any]:
    """A function that makes a copy of `ext` as it is now: its attributes stored one by one in the
    same order (the instances keep sharing their class's attribute layout), as straight-line code,
    which costs a third of a setattr loop (one per kube-proxy comment and endpoint: 120k a load)."""
    items = ext_attrs(ext)
    key = (type(ext), tuple(items))
    factory = _FACTORIES.get(key)
    if factory is None:
        if not all(k.isidentifier() and not iskeyword(k) for k in key[1]):
            raise PktemuError("not ours: the general parser reads the line")    # (fast_rule declines it)
        args = "".join(f", v{i}" for i in range(len(key[1])))
        body = "".join(f"        o.{k} = v{i}\n" for i, k in enumerate(key[1]))
        code = (f"def make(new, cls{args}):\n    def m():\n        o = new(cls)\n{body}"
                "        return o\n    return m\n")
        space: dict[str, Any] = {}
        exec(code, space)               # noqa: S102 (the code is made of attribute names only)
        factory = _FACTORIES[key] = space["make"]
    return factory(_new_rule, type(ext), *items.values())
