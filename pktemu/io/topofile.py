"""Topology files: YAML -> a validated `pktemu.topo.Topology`, with every error caught before a run.

Errors are one line: `file:line: ...` for YAML syntax, `file: object.path.field: ...` for content.
`extends: base.yaml` loads the base first; the derived file's top-level keys replace the base's,
except `scenarios`, which merge by name (the derived file wins), and `name`, which is not inherited;
`extends: {file: base.yaml, merge: true}` merges recursively instead (pktemu.io.topofile_merge).
`for` loops then expand (pktemu.io.topofile_generate), and the plain document is parsed.
The format is documented in docs/topology.md.
"""
from __future__ import annotations

import os
import pickle
from collections import OrderedDict
from typing import Any

import yaml

from pktemu.errors import PktemuError, excerpt
from pktemu.infile import YamlLoader, check_path, load_yaml, not_a_file, read_text
from pktemu.io.topofile_check import check_topology
from pktemu.io.topofile_fields import (
    IFNAME_RE,
    NAME_RE,
    Src,
    boolean,
    integer,
    mapping,
    name,
    namespace_name,
    seq,
    string,
)
from pktemu.io.topofile_fields import path as path_field
from pktemu.io.topofile_generate import expand, has_loops, parse_vars
from pktemu.io.topofile_k8s import parse_kubernetes
from pktemu.io.topofile_merge import Doc, MergedSrc, merge_top, replace_top
from pktemu.io.topofile_nodes import Built, finish_sysctls, parse_node, parse_pod
from pktemu.io.topofile_scenarios import parse_scenario
from pktemu.topo import Topology, Veth

TOP_KEYS = ("name", "description", "seed", "extends", "captures", "nodes", "veths", "pods", "scenarios",
            "kubernetes", "vars")


class _Loader(YamlLoader):
    """The bounded YamlLoader (no base-60 numbers, so 12:34:56:00:00:01 stays a string) with
    duplicate keys as errors instead of silently keeping the last one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int, float, bool)) or key is None:
                if key in seen:
                    line = key_node.start_mark.line + 1
                    raise PktemuError(f"{self.pktemu_path}:{line}: duplicate key {excerpt(key)}")
                seen.add(key)
        return super().construct_mapping(node, deep)


def read_yaml(path: str) -> Any:
    """One YAML document, read within the bounds of pktemu.infile; errors are `file:line: problem`."""
    return parse_yaml(read_text(path), path)


#: parsed documents by (file name, text), pickled: a process that loads the same topology again
#: (the Python API, sweeps, benchmarks) reads the file but does not parse it again
_PARSED: OrderedDict[tuple[str, str], bytes] = OrderedDict()
PARSED_KEPT = 8
PARSED_MAX_CHARS = 1 << 20


def parse_yaml(text: str, path: str) -> Any:
    """`text` as one document (a fresh copy each time: callers change what they get)."""
    if len(text) > PARSED_MAX_CHARS:
        return load_yaml(text, path, _Loader)
    key = (path, text)
    blob = _PARSED.get(key)
    if blob is not None:
        _PARSED.move_to_end(key)
        return pickle.loads(blob)
    doc = load_yaml(text, path, _Loader)
    try:
        _PARSED[key] = pickle.dumps(doc, pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, TypeError, ValueError, RecursionError):
        return doc
    while len(_PARSED) > PARSED_KEPT:
        _PARSED.popitem(last=False)
    return pickle.loads(_PARSED[key])


def _load_doc(path: str, chain: tuple[str, ...], text: str | None = None) -> Doc:
    src = Src(path)
    raw = read_yaml(path) if text is None else parse_yaml(text, path)
    if raw is None:
        raise PktemuError(f"{path}: empty topology file")
    if isinstance(raw, dict):
        raw = {k: v for k, v in raw.items() if not (isinstance(k, str) and k.startswith("x-"))}
    top = mapping(src, "top level", raw, allowed=TOP_KEYS)
    mapping(src, "scenarios", top.get("scenarios"), open_keys=True)
    ext = top.pop("extends", None)
    if ext is None:
        return Doc(top, src)
    rel, merge = _extends(src, ext)
    base = os.path.normpath(os.path.join(os.path.dirname(path), rel))
    if os.path.realpath(base) in chain:
        raise src.error("extends", f"{rel} extends this file again (a cycle)")
    if (problem := not_a_file(base)) is not None:
        raise src.error("extends", problem)
    doc = _load_doc(base, chain + (os.path.realpath(base),))
    doc.values.pop("name", None)
    doc.origin.kids.pop("name", None)
    (merge_top if merge else replace_top)(doc, top, src)
    return doc


def _extends(src: Src, value: object) -> tuple[str, bool]:
    """`extends: FILE` (replace top-level keys) or `extends: {file: FILE, merge: true}`."""
    if not isinstance(value, dict):
        return path_field(src, "extends", value), False
    m = mapping(src, "extends", value, allowed=("merge",), required=("file",))
    merge = False if m.get("merge") is None else boolean(src, "extends.merge", m["merge"])
    return path_field(src, "extends.file", m["file"]), merge


def load_topology(path: str, text: str | None = None) -> Topology:
    """Parse and validate a topology file (and the files it extends); raise PktemuError on any problem.

    With `text` (the Python API's YAML string), that is the document and `path` only names it in
    messages; relative paths in it are then relative to the current directory.
    """
    check_path(path)
    doc = _load_doc(path, (os.path.realpath(path),), text)
    v = doc.values
    top = Src(path)
    src_of = MergedSrc(path, doc.origin)
    if "vars" in v or has_loops(v):
        variables = parse_vars(src_of.view("vars"), v.get("vars"))
        v = expand({k: x for k, x in v.items() if k != "vars"}, doc.origin, src_of, variables)
    v.pop("vars", None)
    stem = os.path.splitext(os.path.basename(path))[0] if text is None else "network"
    topo = Topology(name=name(top, "name", v.get("name") or stem, "topology name"), path=path)
    if v.get("description") is not None:
        topo.description = string(src_of, "description", v["description"])
    if v.get("seed") is not None:
        topo.seed = integer(src_of, "seed", v["seed"], 0, 2**64 - 1)

    scenarios = mapping(src_of, "scenarios", v.get("scenarios"), open_keys=True)
    b = Built(topo.seed)
    if "nodes" in v:
        for n, nv in mapping(src_of, "nodes", v["nodes"], open_keys=True).items():
            src = src_of.view(f"nodes.{n}.iptables")
            parse_node(src, f"nodes.{n}", namespace_name(src, "nodes", n, "node name"), nv, b)
    if "veths" in v:
        _parse_veths(src_of, v["veths"], b)
    if "pods" in v:
        for p, pv in mapping(src_of, "pods", v["pods"], open_keys=True).items():
            parse_pod(src_of, f"pods.{p}", namespace_name(src_of, "pods", p, "pod name"), pv, b)
    finish_sysctls(b)
    check_topology(b)
    topo.nodes, topo.veths = b.nodes, b.veths

    points = _capture_points(b)
    order: list[str] = []
    if "captures" in v:
        src = src_of
        for i, c in enumerate(seq(src, "captures", v["captures"])):
            cname = string(src, f"captures[{i}]", c)
            if cname not in points:
                raise src.error(f"captures[{i}]", f"no interface or bridge for {excerpt(cname)} "
                                                  "(capture names are <node>-<ifname>; the loopback is not "
                                                  "a capture point)")
            if cname in order:
                raise src.error(f"captures[{i}]", f"{cname} is listed twice")
            order.append(cname)
    order += [c for c in points if c not in order]
    topo.capture_order = order
    topo.capture_points = {c: points[c] for c in order}

    if v.get("kubernetes") is not None:
        topo.kubernetes = parse_kubernetes(src_of.view("kubernetes.manifests"), v["kubernetes"], topo)
    for sname, sv in scenarios.items():
        src = src_of.view(f"scenarios.{sname}.timeline")
        topo.scenarios[sname] = parse_scenario(src, f"scenarios.{sname}", sname, sv, topo)
    return topo


def _parse_veths(src: Src, value: object, b: Built) -> None:
    for i, pair in enumerate(seq(src, "veths", value)):
        where = f"veths[{i}]"
        ends = seq(src, where, pair)
        if len(ends) != 2:
            raise src.error(where, f"expected a pair [node/ifname, node/ifname], got {len(ends)} entries")
        for j, end in enumerate(ends):
            s = string(src, f"{where}[{j}]", end)
            n, slash, ifn = s.partition("/")
            if not slash or not NAME_RE.match(n) or not IFNAME_RE.match(ifn):
                raise src.error(f"{where}[{j}]", f"expected node/ifname, got {excerpt(s)}")
        b.places[("veth", len(b.veths))] = (src, where)
        b.veths.append(Veth(ends[0], ends[1]))


def _capture_points(b: Built) -> dict[str, str]:
    """Every interface and bridge as `<node>-<dev>` -> `node/dev`: nodes, then pods, in file order."""
    points: dict[str, str] = {}
    for n, node in b.nodes.items():
        for dev in [*node.interfaces, *node.bridges]:
            cname = f"{n}-{dev}"
            if cname in points:
                raise b.error(("dev", n, dev), f"capture name {cname} is also the capture name of "
                                               f"{points[cname]}; rename one of them")
            points[cname] = f"{n}/{dev}"
    return points
