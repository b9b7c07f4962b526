"""ipset sets of one network namespace: `ipset restore` input in, `ipset save` text out.

Types hash:ip, hash:net, hash:ip,port, hash:ip,port,ip, hash:ip,port,net, bitmap:port and
list:set, family inet. Lookups are dict lookups (hash:net types: one per prefix length present,
longest first, as mtype_test_cidrs). The hash types also keep the kernel's buckets (jhash2 of
the element with the set's initval, buckets of `bucketsize` slots, doubled tables on overflow)
only so that `ipset save` lists elements in the kernel's order. Timeouts run on the node's
virtual clock; `skbinfo` is accepted and ignored (only `-j SET --map-set` reads it, refused).
"""
from __future__ import annotations

import hashlib
import shlex
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from pktemu.errors import PktemuError, excerpt
from pktemu.netfilter.ipset_elem import DIMS, Elem, elem_text, jhash2, key_words, parse_elem

NS = 1_000_000_000
MAX_TIMEOUT = 2_147_483
EXTS = ("counters", "comment", "skbinfo")


@dataclass(eq=False)
class Entry:
    elem: Elem
    nomatch: bool = False
    expires: int | None = None          # virtual ns; None: permanent
    packets: int = 0
    bytes: int = 0
    comment: str | None = None


@dataclass
class IpSet:
    name: str
    kind: str
    timeout: int | None = None          # default timeout (s) when created with `timeout`
    exts: frozenset[str] = frozenset()
    hashsize: int = 1024
    maxelem: int = 65536
    bucketsize: int = 12
    initval: int = 0
    lo: int = 0                         # bitmap:port range
    hi: int = 0
    size: int = 8                       # list:set
    entries: dict[Elem, Entry] = field(default_factory=dict)
    cidrs: dict[int, int] = field(default_factory=dict)     # hash:net types: prefix length -> count
    #: the kernel's buckets that hold something, by index (hashsize may be 2^31: no empty ones)
    buckets: dict[int, list[Entry | None]] = field(default_factory=dict)
    members: list[Entry] = field(default_factory=list)      # list:set, in order

    @property
    def dims(self) -> int:
        return len(DIMS[self.kind])

    @property
    def is_hash(self) -> bool:
        return self.kind.startswith("hash:")

    def live(self, e: Entry, now: int) -> bool:
        return e.expires is None or now <= e.expires

    # ------------------------------------------------------------------ changes
    def add(self, elem: Elem, now: int, exist: bool, timeout: int | None = None, nomatch: bool = False,
            comment: str | None = None, packets: int = 0, nbytes: int = 0, before: str | None = None,
            after: str | None = None) -> str | None:
        """mtype_add; returns an error text (ipset's) or None."""
        t = self.timeout if timeout is None else timeout
        expires = None if self.timeout is None or not t else now + t * NS
        old = self.entries.get(elem)
        if old is not None and self.live(old, now) and not exist:
            return "Element cannot be added to the set: it's already added"
        if old is not None:
            old.expires, old.nomatch, old.comment = expires, nomatch, comment
            old.packets, old.bytes = packets, nbytes
            return None
        if self.kind != "list:set" and len(self.entries) >= self.maxelem:
            return "Hash is full, cannot add more elements" if self.is_hash else "Set is full"
        e = Entry(elem, nomatch, expires, packets, nbytes, comment)
        if self.kind == "list:set":
            if len(self.members) >= self.size:
                return "List set is full, cannot add more elements"
            ref = before or after
            names = [str(m.elem[0]) for m in self.members]
            if ref is not None and ref not in names:
                return f"Set {ref} is not a member of {self.name}"
            at = len(self.members) if ref is None else names.index(ref) + (1 if after else 0)
            self.members.insert(at, e)
        elif self.is_hash:
            self._place(e)
        self.entries[elem] = e
        if self.kind in ("hash:net", "hash:ip,port,net"):
            c = int(elem[-1])
            self.cidrs[c] = self.cidrs.get(c, 0) + 1
        return None

    def delete(self, elem: Elem, now: int) -> str | None:
        e = self.entries.get(elem)
        if e is None or not self.live(e, now):
            return "Element cannot be deleted from the set: it's not added"
        del self.entries[elem]
        if self.kind == "list:set":
            self.members.remove(e)
        elif self.is_hash:
            self._unplace(e)
        if self.kind in ("hash:net", "hash:ip,port,net"):
            c = int(elem[-1])
            self.cidrs[c] -= 1
            if not self.cidrs[c]:
                del self.cidrs[c]
        return None

    def flush(self) -> None:
        self.entries.clear()
        self.cidrs.clear()
        self.members.clear()
        self.buckets = {}

    # ------------------------------------------------------------------ the kernel's buckets
    def _bucket(self, e: Entry) -> int:
        return jhash2(key_words(self.kind, e.elem), self.initval) & (self.hashsize - 1)

    def _place(self, e: Entry) -> None:
        b = self.buckets.setdefault(self._bucket(e), [])
        for i, slot in enumerate(b):
            if slot is None:
                b[i] = e
                return
        if len(b) >= self.bucketsize:
            self._resize()
            self._place(e)
            return
        b.append(e)

    def _unplace(self, e: Entry) -> None:
        key = self._bucket(e)
        b = self.buckets[key]
        b[next(i for i, s in enumerate(b) if s is e)] = None
        holes = b.count(None)
        if holes == len(b):
            del self.buckets[key]
        elif holes >= 2:
            self.buckets[key] = [s for s in b if s is not None]

    def _resize(self) -> None:
        """mtype_resize: the table doubled, entries rehashed in the old buckets' order."""
        old = [s for _, b in sorted(self.buckets.items()) for s in b if s is not None]
        while True:
            self.hashsize *= 2
            self.buckets = {}
            for s in old:
                b = self.buckets.setdefault(self._bucket(s), [])
                if len(b) >= self.bucketsize:
                    break
                b.append(s)
            else:
                return

    def ordered(self) -> list[Entry]:
        """Entries in the order `ipset save` lists them."""
        if self.kind == "list:set":
            return list(self.members)
        if self.kind == "bitmap:port":
            return [self.entries[k] for k in sorted(self.entries)]      # type: ignore[type-var]
        return [s for _, b in sorted(self.buckets.items()) for s in b if s is not None]

    # ------------------------------------------------------------------ lookups
    def candidates(self, elem: Elem, now: int) -> Iterator[Entry]:
        """mtype_test / mtype_test_cidrs: the live entries that hold the element, longest prefix
        first (the caller stops at the first whose extensions match)."""
        if self.kind not in ("hash:net", "hash:ip,port,net"):
            e = self.entries.get(elem)
            if e is not None and self.live(e, now):
                yield e
            return
        head, ip = elem[:-2], int(elem[-2])
        for c in sorted(self.cidrs, reverse=True):
            m = (0xFFFFFFFF << (32 - c)) & 0xFFFFFFFF
            e = self.entries.get((*head, ip & m, c))
            if e is not None and self.live(e, now):
                yield e

    def find(self, elem: Elem, now: int) -> Entry | None:
        return next(self.candidates(elem, now), None)

    # ------------------------------------------------------------------ text
    def header(self) -> str:
        ext = "".join(f" {x}" for x in EXTS if x in self.exts)
        tmo = f" timeout {self.timeout}" if self.timeout is not None else ""
        if self.kind == "bitmap:port":
            return f"range {self.lo}-{self.hi}{tmo}{ext}"
        if self.kind == "list:set":
            return f"size {self.size}{tmo}{ext}"
        return (f"family inet hashsize {self.hashsize} maxelem {self.maxelem}{tmo}{ext} "
                f"bucketsize {self.bucketsize} initval 0x{self.initval:08x}")

    def entry_text(self, e: Entry, now: int) -> str:
        s = f"add {self.name} {elem_text(self.kind, e.elem)}"
        if self.timeout is not None:
            s += " timeout " + ("0" if e.expires is None else str(max((e.expires - now) // NS, 1)))
        if e.nomatch:
            s += " nomatch"
        if "counters" in self.exts:
            s += f" packets {e.packets} bytes {e.bytes}"
        if "comment" in self.exts and e.comment is not None:
            s += f' comment "{e.comment}"'
        return s


class IpsetStore:
    """The sets of one namespace, by kernel index (a destroyed set's index is reused)."""

    def __init__(self, clock: Callable[[], int]) -> None:
        self.now = clock
        self.slots: list[IpSet | None] = []
        #: who may hold a set (rules of the namespace): name -> True when in use by a kernel component
        self.in_use: Callable[[str], bool] = lambda name: False

    def get(self, name: str) -> IpSet | None:
        for s in self.slots:
            if s is not None and s.name == name:
                return s
        return None

    def names(self) -> list[str]:
        return [s.name for s in self.slots if s is not None]

    def save(self) -> str:
        """`ipset save`: non-list sets first, then list:set ones, each in index order."""
        now = self.now()
        sets = [s for s in self.slots if s is not None]
        out: list[str] = []
        for s in [x for x in sets if x.kind != "list:set"] + [x for x in sets if x.kind == "list:set"]:
            out.append(f"create {s.name} {s.kind} {s.header()}")
            out += [s.entry_text(e, now) for e in s.ordered() if s.live(e, now)]
        return "".join(line + "\n" for line in out)

    def restore(self, text: str, path: str, exist: bool = False) -> None:
        """`ipset restore [-exist]`: every line applied in order; the first error names its line."""
        from pktemu.netfilter.ipset_cmd import run_line
        for n, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            try:
                toks = shlex.split(line)
            except ValueError as e:
                raise PktemuError(f"{path}:{n}: {e}") from None
            try:
                run_line(self, toks, exist)
            except PktemuError as e:
                raise PktemuError(f"{path}:{n}: {e}") from None


def default_initval(name: str) -> int:
    """The kernel draws a random initval; ours is a digest of the name, so runs repeat."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=4).digest(), "big")


def elems(s: IpSet, text: str) -> list[Elem]:
    return parse_elem(s.kind, text, s.lo, s.hi)


def check_name(name: str) -> None:
    if not name or len(name.encode()) > 31 or not name.isprintable() or " " in name:
        raise PktemuError(f"bad set name {excerpt(name)} (1 to 31 characters)")
