"""`extends`: combining a topology file with the file it extends, remembering who wrote what.

Two modes. `extends: base.yaml` replaces each top-level key of the base as a whole (scenarios
merge by name, each one replaced as a whole). `extends: {file: base.yaml, merge: true}` merges
mappings recursively by key (nodes, interfaces, bridges, pods, scenarios, sysctls, kubernetes
sub-maps...), replaces lists and scalars, and deletes a key the derived file sets to null.

Either way an `Origin` tree records which file wrote each merged part, and `MergedSrc` (a `Src`)
looks the file up from the dotted path of a message, so an error names the file that wrote the
faulty value, and a relative path resolves against that file.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pktemu.errors import PktemuError
from pktemu.io.topofile_fields import Src, mapping

#: Keys whose null means something ("none") rather than "delete the base's value".
NULL_KEEPS = frozenset({"kubernetes.cluster_cidr"})


class Origin:
    """The file that wrote one value (None: the parent's) and the origins of its mapping entries."""
    __slots__ = ("src", "kids")

    def __init__(self, src: Src | None, kids: dict[str, Origin] | None = None) -> None:
        self.src = src
        self.kids: dict[str, Origin] = kids if kids is not None else {}

    def kid(self, key: str) -> Origin:
        """The entry's origin, created (inheriting this one's file) when it has none yet."""
        got = self.kids.get(key)
        if got is None:
            got = self.kids[key] = Origin(None)
        return got


def file_of(root: Origin, where: str, default: Src) -> Src:
    """The file that wrote the value at `where` ("nodes.n1.interfaces.eth0.addresses[0]"): the
    deepest recorded entry on its path. Names may hold dots, so the longest matching key wins."""
    best = root.src or default
    node, rest = root, where
    while node.kids and rest:
        cuts = [i for i, ch in enumerate(rest) if ch in ".["] + [len(rest)]
        for cut in reversed(cuts):
            nxt = node.kids.get(rest[:cut])
            if nxt is not None:
                break
        else:
            break
        node = nxt
        if node.src is not None:
            best = node.src
        if cut == len(rest) or rest[cut] == "[":
            break
        rest = rest[cut + 1:]
    return best


@dataclass(frozen=True)
class MergedSrc(Src):
    """A `Src` for merged documents: messages name the file that wrote the value at `where`;
    `path` (what `resolve` and the Kubernetes contexts use) is the file of the part parsed."""
    origin: Origin = field(default_factory=lambda: Origin(None), compare=False, hash=False, repr=False)

    def file_of(self, where: str) -> str:
        return file_of(self.origin, where, self).path

    def at(self, where: str) -> str:
        return f"{self.file_of(where)}: {where}"

    def error(self, where: str, msg: str) -> PktemuError:
        return PktemuError(f"{self.file_of(where)}: {where}: {msg}")

    def view(self, where: str) -> MergedSrc:
        """The same lookups, with `path` the file that wrote `where` (for relative paths)."""
        return MergedSrc(self.file_of(where), self.origin)


def resolve_at(src: Src, where: str, rel: str) -> str:
    """A relative path written at `where`, resolved against the file that wrote it."""
    return src.view(where).resolve(rel) if isinstance(src, MergedSrc) else src.resolve(rel)


class Doc:
    """A document being merged: its values and who wrote them."""

    def __init__(self, values: dict[str, Any], src: Src) -> None:
        self.values = values
        self.origin = Origin(src)


def replace_top(doc: Doc, top: dict[str, Any], src: Src) -> None:
    """`extends: FILE`: each top-level key replaces the base's; scenarios replace by name."""
    for key, value in top.items():
        if key == "scenarios":
            scenarios = doc.values.get("scenarios")
            merged = dict(scenarios) if isinstance(scenarios, dict) else {}
            sorigin = doc.origin.kid("scenarios")
            for sname, sv in mapping(src, "scenarios", value, open_keys=True).items():
                merged[sname] = sv
                sorigin.kids[sname] = Origin(src)
            doc.values["scenarios"] = merged
            continue
        doc.values[key] = value
        doc.origin.kids[key] = Origin(src)


def merge_top(doc: Doc, top: dict[str, Any], src: Src) -> None:
    """`extends: {file: FILE, merge: true}`: mappings merge by key, lists and scalars replace,
    null deletes."""
    _merge(doc.values, doc.origin, top, src, "")


def _merge(base: dict[Any, Any], origin: Origin, derived: dict[Any, Any], src: Src, where: str) -> None:
    for key, value in derived.items():
        at = f"{where}{key}"
        skey = key if isinstance(key, str) else None
        if value is None and at not in NULL_KEEPS:
            if key not in base:             # a typo'd name would leave the entry meant in place
                raise src.error(at, "null deletes the base's entry, and the base has none here "
                                    "(an empty new entry is {})")
            base.pop(key, None)
            if skey is not None:
                origin.kids.pop(skey, None)
            continue
        old = base.get(key)
        if isinstance(value, dict) and isinstance(old, dict) and skey is not None:
            base[key] = dict(old)                # a copy: YAML aliases may share the base's mapping
            _merge(base[key], origin.kid(skey), value, src, f"{at}.")
            continue
        base[key] = value
        if skey is not None:
            origin.kids[skey] = Origin(src)
