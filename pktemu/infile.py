"""Reading users' input files: every failure is the one-line PktemuError (`file[:line]: ...`).

The work done for an input is bounded whatever it holds, since topologies, manifests and rules
files come from anywhere (a dump, a generator, a colleague):

* a file larger than its limit is refused before it is read (`/dev/zero` and FIFOs, which have no
  size, are read up to the limit plus one byte);
* YAML is read by `YamlLoader`: nesting deeper than YAML_MAX_DEPTH and aliases that expand a
  document by more than YAML_MAX_ALIAS_NODES nodes ("billion laughs") are refused after
  composition, before anything is constructed; integers longer than YAML_INT_MAX_CHARS are
  refused (Python refuses to convert more than 4300 digits anyway), and so are control
  characters, with their line and column.
"""
from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import yaml
from yaml.constructor import ConstructorError

from pktemu.errors import PktemuError, excerpt, shorten

#: Topology files and Kubernetes manifests: a 10,000-Service cluster dump is a few MiB.
YAML_MAX_BYTES = 16 * 1024 * 1024
#: iptables-restore text: a 10,000-Service x 5-endpoint kube-proxy ruleset is tens of MiB.
RULES_MAX_BYTES = 256 * 1024 * 1024
#: Nesting of YAML collections (topologies need 6, Kubernetes objects about 10).
YAML_MAX_DEPTH = 100
#: How many nodes aliases may add to a file once expanded (its own nodes are bounded by its size).
YAML_MAX_ALIAS_NODES = 1_000_000
#: The longest integer literal (a 64-bit value in binary is 66 characters).
YAML_INT_MAX_CHARS = 100

_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_CHUNK = 1024 * 1024
_TAGS_KEPT = 1 << 16                    # distinct plain scalars whose tag a loader remembers


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):g} MiB"


def check_path(path: str, what: str = "") -> None:
    """Refuse a file name no file can have (os functions raise ValueError on a NUL byte)."""
    if "\0" in path:
        raise PktemuError(f"{shorten(path, 300)}: cannot read{' ' + what if what else ''}: "
                          "the file name contains a NUL byte")


def not_a_file(path: str) -> str | None:
    """Why `path` cannot be named as an input file (None if it is a regular file)."""
    if os.path.isfile(path):
        return None
    if os.path.isdir(path):
        return f"{path} is a directory, not a file"
    if os.path.lexists(path):
        return f"{path} is not a regular file"
    return f"no such file: {path}"


def read_text(path: str, what: str = "", limit: int = YAML_MAX_BYTES) -> str:
    """A UTF-8 text file of at most `limit` bytes; `what` names it in messages (`cannot read manifest`)."""
    cannot = f"cannot read{' ' + what if what else ''}"
    too_big = f"{path}: {what or 'file'} is larger than {_mib(limit)}, the limit (see docs/topology.md)"
    check_path(path, what)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise PktemuError(f"{shorten(path, 300)}: {cannot}: {e.strerror or e}") from None
    data = bytearray()
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise PktemuError(f"{path}: {cannot}: it is a directory")
        if stat.S_ISREG(st.st_mode) and st.st_size > limit:
            raise PktemuError(f"{too_big} ({_mib(st.st_size)})")
        while len(data) <= limit:
            b = os.read(fd, min(_CHUNK, limit + 1 - len(data)))
            if not b:
                break
            data += b
        if len(data) > limit:
            raise PktemuError(too_big)
    except OSError as e:
        raise PktemuError(f"{path}: {cannot}: {e.strerror or e}") from None
    finally:
        os.close(fd)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise PktemuError(f"{path}: not UTF-8 text: {e.reason} at byte {e.start}") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")    # as open()'s universal newlines


# ---------------------------------------------------------------------------- YAML
@contextmanager
def yaml_errors(path: str, text: str = "") -> Iterator[None]:
    """PyYAML's errors (and a RecursionError, as a backstop) as `file:line: ...`."""
    try:
        yield
    except yaml.reader.ReaderError as e:
        where = ""
        if text and 0 <= e.position <= len(text):
            line = text.count("\n", 0, e.position) + 1
            where = f":{line}:{e.position - (text.rfind(chr(10), 0, e.position) + 1) + 1}"
        what = f"#x{e.character:04x}" if isinstance(e.character, int) else excerpt(e.character)
        raise PktemuError(f"{path}{where}: YAML error: character {what} is not allowed "
                          f"(control characters and NUL bytes cannot appear in YAML)") from None
    except ConstructorError as e:
        raise PktemuError(f"{path}{_line(e)}: YAML error: {_problem(e)}") from None
    except yaml.MarkedYAMLError as e:
        raise PktemuError(f"{path}{_line(e)}: YAML syntax error: {_problem(e)}") from None
    except yaml.YAMLError as e:
        raise PktemuError(f"{path}: YAML error: {(str(e).splitlines() or [type(e).__name__])[0]}") from None
    except RecursionError:
        raise PktemuError(f"{path}: YAML error: nested too deeply") from None


def _line(e: yaml.MarkedYAMLError) -> str:
    mark = e.problem_mark or e.context_mark
    return f":{mark.line + 1}" if mark is not None else ""


def _problem(e: yaml.MarkedYAMLError) -> str:
    return " ".join(str(x) for x in (e.context, e.problem) if x)


def _libyaml_events() -> Any:
    """libyaml's scanner and parser (4x faster than PyYAML's own), where PyYAML was built with it."""
    try:
        from yaml._yaml import CParser
    except ImportError:                 # pragma: no cover
        return None
    return CParser


_Events: Any = _libyaml_events()
_Base: Any
if _Events is not None:
    class _CBase(yaml.composer.Composer, _Events, yaml.constructor.SafeConstructor,  # type: ignore[misc]
                 yaml.resolver.Resolver):
        """SafeLoader's pieces on libyaml's event parser. The composer is Python's (YamlLoader's,
        bounded in depth): libyaml's own composer recurses in C and overflows the stack on deep
        nesting (a segfault, not an error)."""

        def __init__(self, text: str) -> None:
            _Events.__init__(self, text)
            yaml.composer.Composer.__init__(self)
            yaml.constructor.SafeConstructor.__init__(self)
            yaml.resolver.Resolver.__init__(self)
    _Base = _CBase
else:                                   # pragma: no cover
    _Base = yaml.SafeLoader


class YamlLoader(_Base):  # type: ignore[misc]
    """A safe loader, bounded (see the module docstring), without YAML 1.1 base-60 numbers (so
    12:34:56:00:00:01 stays a string), and with errors that name the file."""

    def __init__(self, text: str, path: str) -> None:
        super().__init__(text)
        self.pktemu_path = path
        self._alias_budget = YAML_MAX_ALIAS_NODES
        self._anchored = True               # the last document composed defined anchors
        self._tags: dict[str, str] = {}     # plain scalar -> its resolved tag (_scalar_tag)

    def error(self, mark: Any, msg: str) -> PktemuError:
        line = f":{mark.line + 1}" if mark is not None else ""
        return PktemuError(f"{self.pktemu_path}{line}: YAML error: {msg}")

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        """PyYAML's Composer.compose_node as one loop over the events instead of a call per node
        and a few per event (the same nodes, anchors and errors; half the time of a big manifest
        file), refusing a node nested YAML_MAX_DEPTH collections deep."""
        if self.yaml_path_resolvers:                        # pragma: no cover (none are added)
            return super().compose_node(parent, index)
        get, anchors, scalar_tag = self.get_event, self.anchors, self._scalar_tag
        opened: list[Any] = []                              # the collections being composed
        keys: list[Any] = []                                # a mapping's key awaiting its value
        while True:
            if len(opened) >= YAML_MAX_DEPTH:
                raise self.error(getattr(self.peek_event(), "start_mark", None),
                                 f"nested more than {YAML_MAX_DEPTH} levels deep")
            event = get()
            kind = event.__class__
            if kind is yaml.AliasEvent:
                if event.anchor not in anchors:
                    raise yaml.composer.ComposerError(None, None, f"found undefined alias {event.anchor!r}",
                                                      event.start_mark)
                node = anchors[event.anchor]
            else:
                anchor = event.anchor
                if anchor is not None and anchor in anchors:
                    raise yaml.composer.ComposerError(f"found duplicate anchor {anchor!r}; first occurrence",
                                                      anchors[anchor].start_mark, "second occurrence",
                                                      event.start_mark)
                tag = event.tag
                if kind is yaml.ScalarEvent:
                    if tag is None or tag == "!":
                        tag = scalar_tag(event.value, event.implicit)
                    node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark,
                                           style=event.style)
                else:
                    sequence = kind is yaml.SequenceStartEvent
                    if tag is None or tag == "!":
                        tag = self.resolve(yaml.SequenceNode if sequence else yaml.MappingNode, None,
                                           event.implicit)
                    node = (yaml.SequenceNode if sequence else yaml.MappingNode)(
                        tag, [], event.start_mark, None, flow_style=event.flow_style)
                if anchor is not None:
                    anchors[anchor] = node
                if kind is not yaml.ScalarEvent:
                    opened.append(node)
                    keys.append(None)
                    node = None
            while True:                                     # hand the node to its collection
                if node is not None:
                    if not opened:
                        return node
                    top = opened[-1]
                    if top.__class__ is yaml.SequenceNode:
                        top.value.append(node)
                    elif keys[-1] is None:
                        keys[-1] = node
                    else:
                        top.value.append((keys[-1], node))
                        keys[-1] = None
                if self.peek_event().__class__ not in (yaml.SequenceEndEvent, yaml.MappingEndEvent):
                    break
                node = opened.pop()
                keys.pop()
                node.end_mark = get().end_mark

    def _scalar_tag(self, value: str, implicit: tuple[bool, bool]) -> str:
        """Resolver.resolve of a scalar, remembered by value for plain ones (the same words and
        numbers recur all through a big file)."""
        if not implicit[0]:
            return self.resolve(yaml.ScalarNode, value, implicit)  # type: ignore[no-any-return]
        tags: dict[str, str] = self._tags
        tag = tags.get(value)
        if tag is None:
            tag = self.resolve(yaml.ScalarNode, value, implicit)
            if len(tags) < _TAGS_KEPT:
                tags[value] = tag
        return tag

    def compose_document(self) -> yaml.Node | None:
        """Composer.compose_document, noting whether the document defined anchors (else it has
        no alias, and composing bounded its depth already: `measure` has nothing to do)."""
        self.get_event()
        node = self.compose_node(None, None)
        self.get_event()
        anchors: dict[str, yaml.Node] = self.anchors
        self._anchored = bool(anchors)
        anchors.clear()
        return node

    def measure(self, root: yaml.Node) -> None:
        """Refuse a document whose aliases form a cycle, nest deeper than YAML_MAX_DEPTH or
        expand it by more than what is left of YAML_MAX_ALIAS_NODES; linear in the node graph
        (each node's expanded size and depth is computed once: an alias is the same node object)."""
        if not self._anchored:
            return
        size: dict[int, int] = {}
        depth: dict[int, int] = {}
        entered: set[int] = set()
        stack: list[tuple[yaml.Node, list[yaml.Node] | None]] = [(root, None)]
        while stack:
            node, kids = stack.pop()
            k = id(node)
            if kids is not None:                                  # leaving: the children are done
                size[k] = 1 + sum(size[id(c)] for c in kids)
                depth[k] = 1 + max((depth[id(c)] for c in kids), default=0)
                if depth[k] > YAML_MAX_DEPTH:
                    raise self.error(node.start_mark, f"aliases nest this over {YAML_MAX_DEPTH} levels deep")
                if size[k] - len(entered) > self._alias_budget:
                    raise self.error(node.start_mark, f"aliases expand this by more than "
                                                      f"{YAML_MAX_ALIAS_NODES:,} nodes (an alias bomb?)")
                continue
            if k in size:
                continue
            if k in entered:
                raise self.error(node.start_mark, "an alias refers to a collection it is in (a cycle)")
            entered.add(k)
            kids = _children(node)
            stack.append((node, kids))
            for c in kids:
                i = id(c)
                if i in size:
                    continue
                if isinstance(c, yaml.ScalarNode):                # a leaf: done at once
                    size[i] = depth[i] = 1
                    entered.add(i)
                else:
                    stack.append((c, None))
        self._alias_budget -= size[id(root)] - len(entered)

    def construct_document(self, node: yaml.Node) -> Any:
        """A document without anchors is a tree of nodes: when all of it is plain maps, lists and
        scalars it is made in one walk that only reads it (PyYAML's constructor pays a generator
        and two dictionaries a node). Anything else, or any error, is PyYAML's own construction of
        the document, from the start: which then raises what PyYAML raises."""
        if not self._anchored and type(self).construct_mapping is _SAFE_MAPPING:
            try:
                return self._tree(node)
            except Exception:                               # noqa: BLE001 (PyYAML's way says what)
                pass
        return super().construct_document(node)

    def _tree(self, node: yaml.Node) -> Any:
        tag = node.tag
        kind = node.__class__
        if kind is yaml.ScalarNode:
            return _PLAIN_SCALARS[tag](self, node)
        if kind is yaml.MappingNode and tag == _MAP:
            out = {}
            for k, v in node.value:
                if k.tag in _MERGE_KEYS:
                    raise _NotPlain
                out[self._tree(k)] = self._tree(v)
            return out
        if kind is yaml.SequenceNode and tag == _SEQ:
            return [self._tree(v) for v in node.value]
        raise _NotPlain

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, TypeError, OverflowError, KeyError) as e:  # !!timestamp 2024-13-45, !!bool maybe
            why = "not one of its values" if isinstance(e, KeyError) else shorten(str(e), 80)
            raise ConstructorError(None, None, f"cannot read {excerpt(_scalar(node), 40)} as "
                                               f"{node.tag.rsplit(':', 1)[-1]}: {why}",
                                   node.start_mark) from None

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        if len(str(node.value)) > YAML_INT_MAX_CHARS:
            raise ConstructorError(None, None, f"an integer of {len(node.value):,} characters is too large "
                                               f"(at most {YAML_INT_MAX_CHARS})", node.start_mark)
        return super().construct_yaml_int(node)  # type: ignore[no-any-return]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _scalar(node: yaml.Node) -> object:
    return node.value if isinstance(node, yaml.ScalarNode) else f"<{type(node).__name__}>"


YamlLoader.add_constructor(_INT, YamlLoader.construct_yaml_int)
_SAFE_MAPPING = yaml.constructor.SafeConstructor.construct_mapping


class _NotPlain(Exception):
    """A node YamlLoader._tree leaves to PyYAML's constructor."""


_MAP, _SEQ = "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"
_MERGE_KEYS = frozenset(("tag:yaml.org,2002:merge", "tag:yaml.org,2002:value"))
#: the scalars YamlLoader._tree makes itself: the constructors SafeConstructor would call
_PLAIN_SCALARS: dict[str, Any] = {
    "tag:yaml.org,2002:str": lambda _ld, node: node.value,
    "tag:yaml.org,2002:null": lambda _ld, _node: None,
    "tag:yaml.org,2002:bool": YamlLoader.construct_yaml_bool,
    _INT: YamlLoader.construct_yaml_int,
    _FLOAT: YamlLoader.construct_yaml_float,
}
YamlLoader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in rs if tag not in (_INT, _FLOAT)]
    for ch, rs in yaml.SafeLoader.yaml_implicit_resolvers.items()}
YamlLoader.add_implicit_resolver(_INT, re.compile(
    r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"), list("-+0123456789"))
YamlLoader.add_implicit_resolver(_FLOAT, re.compile(
    r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?|\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"), list("-+0123456789."))


def load_yaml(text: str, path: str, loader: type[YamlLoader] = YamlLoader) -> Any:
    """The one document of `text` (None if empty), read by `loader`."""
    with yaml_errors(path, text):
        ld = loader(text, path)
        try:
            node = ld.get_single_node()
            if node is None:
                return None
            ld.measure(node)
            return ld.construct_document(node)
        finally:
            ld.dispose()


def load_yaml_all(text: str, path: str, loader: type[YamlLoader] = YamlLoader
                  ) -> Iterator[tuple[Any, yaml.Node]]:
    """Every document of `text` with its node (for line numbers), in order; empty ones left out."""
    with yaml_errors(path, text):
        ld = loader(text, path)
        try:
            while ld.check_node():
                node = ld.get_node()
                if node is None:
                    continue
                ld.measure(node)
                yield ld.construct_document(node), node
        finally:
            ld.dispose()
