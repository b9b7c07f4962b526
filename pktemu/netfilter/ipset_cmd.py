"""One `ipset` command (a restore line or a timeline action): create, add, del, flush, destroy.

Messages are ipset's own where it has one ("Set cannot be created: set with the same name
already exists"), so a timeline's `[FAILED]` reads as the real tool would print it.
"""
from __future__ import annotations

from pktemu.errors import PktemuError, excerpt
from pktemu.netfilter.ipset import (
    EXTS, MAX_TIMEOUT, IpSet, IpsetStore, check_name, default_initval, elems,
)
from pktemu.netfilter.ipset_elem import DIMS

_CREATE_OPTS = {"family": 1, "hashsize": 1, "maxelem": 1, "timeout": 1, "bucketsize": 1, "initval": 1,
                "range": 1, "size": 1, "counters": 0, "comment": 0, "skbinfo": 0}
_ADD_OPTS = {"timeout": 1, "nomatch": 0, "packets": 1, "bytes": 1, "comment": 1, "before": 1, "after": 1}
_REFUSED = {"netmask", "markmask", "forceadd", "probes", "resize", "skbmark", "skbprio", "skbqueue"}


def _num(text: str, what: str, hi: int) -> int:
    try:
        v = int(text, 0)
    except ValueError:
        raise PktemuError(f"bad {what} {excerpt(text)}") from None
    if not 0 <= v <= hi:
        raise PktemuError(f"{what} {excerpt(text)} out of range 0-{hi}")
    return v


def _opts(toks: list[str], allowed: dict[str, int], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    i = 0
    while i < len(toks):
        k = toks[i]
        if k in _REFUSED:
            raise PktemuError(f"{what} option {k} is not modelled")
        if k not in allowed:
            raise PktemuError(f"unknown {what} option {excerpt(k)} (known: {', '.join(allowed)})")
        if k in out:
            raise PktemuError(f"{what} option {k} given twice")
        if allowed[k]:
            if i + 1 >= len(toks):
                raise PktemuError(f"{what} option {k} needs a value")
            out[k] = toks[i + 1]
        else:
            out[k] = ""
        i += 1 + allowed[k]
    return out


def _set(store: IpsetStore, name: str) -> IpSet:
    s = store.get(name)
    if s is None:
        raise PktemuError(f"The set with the given name does not exist: {excerpt(name)}")
    return s


def create(store: IpsetStore, name: str, kind: str, toks: list[str], exist: bool) -> None:
    check_name(name)
    if kind not in DIMS:
        raise PktemuError(f"unknown or unmodelled set type {excerpt(kind)} (one of {', '.join(DIMS)})")
    o = _opts(toks, _CREATE_OPTS, "create")
    if o.get("family", "inet") != "inet":
        raise PktemuError(f"family {excerpt(o['family'])} is not modelled (only inet)")
    s = IpSet(name, kind)
    s.exts = frozenset(x for x in EXTS if x in o)
    if "timeout" in o:
        s.timeout = _num(o["timeout"], "timeout", MAX_TIMEOUT)
    hash_only = {"family", "hashsize", "maxelem", "bucketsize", "initval"}
    if not s.is_hash and hash_only & set(o):
        raise PktemuError(f"{kind} takes no {', '.join(sorted(hash_only & set(o)))}")
    if kind != "bitmap:port" and "range" in o:
        raise PktemuError(f"{kind} takes no range")
    if kind != "list:set" and "size" in o:
        raise PktemuError(f"{kind} takes no size")
    if s.is_hash:
        hs = max(_num(o.get("hashsize", "1024"), "hashsize", 1 << 31), 64)
        s.hashsize = 1 << (hs - 1).bit_length()
        s.maxelem = _num(o.get("maxelem", "65536"), "maxelem", 0xFFFFFFFF)
        bs = min(max(_num(o.get("bucketsize", "12"), "bucketsize", 255), 2), 12)
        s.bucketsize = bs + (bs & 1)
        s.initval = (_num(o["initval"], "initval", 0xFFFFFFFF) if "initval" in o
                     else default_initval(name))
    elif kind == "bitmap:port":
        if "range" not in o:
            raise PktemuError("bitmap:port needs range FROM-TO")
        a, _, b = o["range"].partition("-")
        s.lo, s.hi = _num(a, "range", 0xFFFF), _num(b or a, "range", 0xFFFF)
        if s.lo > s.hi:
            s.lo, s.hi = s.hi, s.lo
    else:
        s.size = max(_num(o.get("size", "8"), "size", 0xFFFFFFFF), 4)
    old = store.get(name)
    if old is not None:
        same = (old.kind == s.kind and old.maxelem == s.maxelem and old.timeout == s.timeout
                and old.exts == s.exts and (old.lo, old.hi) == (s.lo, s.hi))
        if exist and same:
            return
        raise PktemuError("Set cannot be created: set with the same name already exists")
    for i, slot in enumerate(store.slots):
        if slot is None:
            store.slots[i] = s
            return
    store.slots.append(s)


def add(store: IpsetStore, s: IpSet, text: str, toks: list[str], exist: bool) -> None:
    o = _opts(toks, _ADD_OPTS, "add")
    for k, ext in (("timeout", "timeout"), ("packets", "counters"), ("bytes", "counters"),
                   ("comment", "comment")):
        if k in o and not (s.timeout is not None if ext == "timeout" else ext in s.exts):
            raise PktemuError(f"{k} cannot be used: set {s.name} was created without {ext} support")
    if "nomatch" in o and s.kind not in ("hash:net", "hash:ip,port,net"):
        raise PktemuError(f"nomatch cannot be used with {s.kind}")
    if ("before" in o or "after" in o) and s.kind != "list:set":
        raise PktemuError("before/after are for list:set only")
    if "comment" in o and ('"' in o["comment"] or len(o["comment"]) > 255):
        raise PktemuError('comment: " is not permitted, and at most 255 characters')
    timeout = _num(o["timeout"], "timeout", MAX_TIMEOUT) if "timeout" in o else None
    packets = _num(o.get("packets", "0"), "packets", (1 << 64) - 1)
    nbytes = _num(o.get("bytes", "0"), "bytes", (1 << 64) - 1)
    if s.kind == "list:set":
        m = _set(store, text)
        if m.kind == "list:set":
            raise PktemuError(f"set {text} is a list:set: list:set members cannot be list:set")
    for e in elems(s, text):
        err = s.add(e, store.now(), exist, timeout, "nomatch" in o, o.get("comment"), packets, nbytes,
                    o.get("before"), o.get("after"))
        if err is not None:
            raise PktemuError(err)


def run_line(store: IpsetStore, toks: list[str], exist: bool = False) -> str:
    """Apply one command (tokens, `ipset` itself not included); returns what it printed."""
    if "-exist" in toks or "-!" in toks:
        exist = True
        toks = [t for t in toks if t not in ("-exist", "-!")]
    if not toks:
        raise PktemuError("empty ipset command")
    cmd, args = toks[0], toks[1:]
    if cmd in ("create", "n", "-N"):
        if len(args) < 2:
            raise PktemuError("create needs a set name and a type")
        create(store, args[0], args[1], args[2:], exist)
    elif cmd in ("add", "a", "-A", "del", "d", "-D", "test", "t", "-T"):
        if len(args) < 2:
            raise PktemuError(f"{cmd} needs a set name and an element")
        s = _set(store, args[0])
        if cmd in ("add", "a", "-A"):
            add(store, s, args[1], args[2:], exist)
            return ""
        es = elems(s, args[1])
        if cmd in ("test", "t", "-T"):
            if any(s.find(e, store.now()) is None for e in es):
                raise PktemuError(f"{args[1]} is NOT in set {s.name}.")
            return f"Warning: {args[1]} is in set {s.name}."
        if args[2:]:
            raise PktemuError(f"del takes no options: {excerpt(' '.join(args[2:]))}")
        for e in es:
            err = s.delete(e, store.now())
            if err is not None and not exist:
                raise PktemuError(err)
    elif cmd in ("flush", "F", "-F"):
        for s in ([_set(store, args[0])] if args else [x for x in store.slots if x is not None]):
            s.flush()
    elif cmd in ("destroy", "x", "X", "-X"):
        names = args[:1] or store.names()
        for name in names:
            _set(store, name)
            users = [x.name for x in store.slots if x is not None and x.kind == "list:set"
                     and any(m.elem[0] == name for m in x.members)]
            if users or store.in_use(name):
                raise PktemuError("Set cannot be destroyed: it is in use by a kernel component")
        store.slots = [None if x is not None and x.name in names else x for x in store.slots]
    elif cmd in ("save", "list", "-L", "-S"):
        return store.save()
    else:
        raise PktemuError(f"unknown or unmodelled ipset command {excerpt(cmd)} "
                          "(create, add, del, test, flush, destroy, save)")
    return ""
