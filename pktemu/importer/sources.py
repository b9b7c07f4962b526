"""Reading the DUMP arguments: node archives or folders (`pktemu-collect/`), cluster archives
(`pktemu-cluster/`) or YAML files of Kubernetes objects, recognised by what they hold.

Archives are read in memory, member by member (never extracted), with bounded sizes.
"""
from __future__ import annotations

import json
import os
import tarfile
from dataclasses import dataclass, field
from typing import Any

from pktemu.errors import PktemuError
from pktemu.importer import Notes

#: The largest file of a dump read (a big node's iptables-save is tens of MiB).
MEMBER_MAX = 256 * 1024 * 1024
NODE_MARKERS = ("ip-link.json", "commands.tsv", "meta.tsv")
KINDS = ("Node", "Pod", "Service", "EndpointSlice", "Endpoints")


@dataclass
class NodeDump:
    """One node's collected files (name -> text), and where they came from."""

    origin: str
    files: dict[str, str]
    name: str = ""

    def text(self, name: str) -> str | None:
        return self.files.get(name)

    def status(self, name: str) -> int | None:
        """The exit status commands.tsv recorded for `name` (None if not recorded)."""
        for line in (self.files.get("commands.tsv") or "").splitlines()[1:]:
            parts = line.split("\t")
            if len(parts) >= 2 and parts[0] == name:
                try:
                    return int(parts[1])
                except ValueError:
                    return None
        return None

    def meta(self, key: str) -> str | None:
        for line in (self.files.get("meta.tsv") or "").splitlines():
            k, _, v = line.partition("\t")
            if k == key:
                return v.strip() or None
        return None

    def json(self, name: str, notes: Notes) -> list[dict[str, Any]] | None:
        """`name` parsed as `ip -j`/`bridge -j` output, or None with a note saying why."""
        text = self.files.get(name)
        where = f"{self.origin}: {name}"
        if text is None:
            notes.warn(where, "missing from the dump")
            return None
        if not text.strip():
            st = self.status(name)
            notes.warn(where, "empty" + (f" (the command exited {st})" if st else ""))
            return None
        try:
            data = json.loads(text)
        except ValueError as e:
            notes.warn(where, f"not valid JSON (truncated?): {e}")
            return None
        if not isinstance(data, list):
            notes.warn(where, f"expected a JSON list, got {type(data).__name__}")
            return None
        return [d for d in data if isinstance(d, dict)]


@dataclass
class Sources:
    nodes: list[NodeDump] = field(default_factory=list)
    objects: list[tuple[str, dict[str, Any]]] = field(default_factory=list)   # (origin, object)


def read_sources(paths: list[str], notes: Notes) -> Sources:
    out = Sources()
    for path in paths:
        if os.path.isdir(path):
            _folder(path, out, notes)
        elif os.path.isfile(path):
            if _is_tar(path):
                _archive(path, out, notes)
            else:
                _yaml_text(path, _read(path), out, notes)
        else:
            raise PktemuError(f"{path}: no such file or folder")
    return out


def _is_tar(path: str) -> bool:
    try:
        return tarfile.is_tarfile(path)
    except OSError:
        return False


def _read(path: str) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read(MEMBER_MAX + 1)
    except OSError as e:
        raise PktemuError(f"{path}: cannot read: {e.strerror or e}") from None
    if len(data) > MEMBER_MAX:
        raise PktemuError(f"{path}: larger than {MEMBER_MAX >> 20} MiB")
    return data.decode("utf-8", "replace")


def _folder(path: str, out: Sources, notes: Notes) -> None:
    """A node dump (the folder itself or its pktemu-collect/), or a folder of YAML files."""
    names = set(os.listdir(path))
    if any(m in names for m in NODE_MARKERS):
        files = {n: _read(os.path.join(path, n)) for n in sorted(names)
                 if os.path.isfile(os.path.join(path, n))}
        out.nodes.append(NodeDump(path, files))
        return
    found = False
    for sub in ("pktemu-collect", "pktemu-cluster"):
        if os.path.isdir(os.path.join(path, sub)):
            _folder(os.path.join(path, sub), out, notes)
            found = True
    for n in sorted(names):
        if n.endswith((".yaml", ".yml")) and os.path.isfile(os.path.join(path, n)):
            _yaml_text(os.path.join(path, n), _read(os.path.join(path, n)), out, notes)
            found = True
    if not found:
        notes.warn(path, "neither a node dump (pktemu collect) nor Kubernetes YAML files: skipped")


def _archive(path: str, out: Sources, notes: Notes) -> None:
    """Each pktemu-collect*/ folder of the archive is a node; its YAML files are cluster objects."""
    groups: dict[str, dict[str, str]] = {}
    yamls: list[tuple[str, str]] = []
    try:
        with tarfile.open(path, "r:*") as tar:
            for m in tar:
                if not m.isfile():
                    continue
                if m.size > MEMBER_MAX:
                    notes.warn(f"{path}: {m.name}", f"larger than {MEMBER_MAX >> 20} MiB: skipped")
                    continue
                f = tar.extractfile(m)
                if f is None:
                    continue
                text = f.read().decode("utf-8", "replace")
                folder, _, base = m.name.rstrip("/").rpartition("/")
                if base.endswith((".yaml", ".yml")):
                    yamls.append((f"{path}: {m.name}", text))
                else:
                    groups.setdefault(folder, {})[base] = text
    except (tarfile.TarError, EOFError, OSError, ValueError) as e:
        notes.warn(path, f"archive cut short or damaged ({e}); reading what came before")
    for folder, files in sorted(groups.items()):
        if any(m in files for m in NODE_MARKERS):
            out.nodes.append(NodeDump(f"{path}: {folder}" if folder else path, files))
    for origin, text in yamls:
        _yaml_text(origin, text, out, notes)
    if not yamls and not any(any(m in f for m in NODE_MARKERS) for f in groups.values()):
        notes.warn(path, "neither a node dump (pktemu collect) nor Kubernetes objects: skipped")


def _yaml_text(origin: str, text: str, out: Sources, notes: Notes) -> None:
    from pktemu.infile import load_yaml_all

    try:
        docs = [d for d, _ in load_yaml_all(text, origin)]
    except PktemuError as e:
        notes.warn("", f"{e} (file skipped)")
        return
    before = len(out.objects)
    skipped: dict[str, int] = {}
    for doc in docs:
        _objects(origin, doc, out, skipped)
    if skipped:
        kinds = ", ".join(f"{k} ({n})" for k, n in sorted(skipped.items()))
        notes.warn(origin, f"kinds not used by import, ignored: {kinds}")
    if len(out.objects) == before and not skipped and docs:
        notes.warn(origin, "no Kubernetes objects in this file: skipped")


def _objects(origin: str, doc: Any, out: Sources, skipped: dict[str, int]) -> None:
    if not isinstance(doc, dict):
        return
    kind = doc.get("kind")
    if isinstance(kind, str) and kind.endswith("List") and isinstance(doc.get("items"), list):
        for item in doc["items"]:
            _objects(origin, item, out, skipped)
        return
    if kind in KINDS:
        out.objects.append((origin, doc))
    else:
        k = kind if isinstance(kind, str) else "(no kind)"
        skipped[k[:40]] = skipped.get(k[:40], 0) + 1
