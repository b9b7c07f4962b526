"""A scenario's (or step's) `timeline:`: changes at given times, checked when the file is loaded.

Entries are `{at: T, <action>: <argument>}` for cluster actions (`apply`, `delete`, `ready`,
`scale`, `kube_proxy`: they need a `kubernetes:` section) and `{at: T, node: N, <action>: ...}`
for node actions (`iptables`, `iptables-restore`, `conntrack`, `ip`, `bridge`, `sysctl`, `app`),
which run in the named node or pod. pktemu.timeline registers them.
"""
from __future__ import annotations

from typing import Any, Sequence

import yaml

from pktemu.errors import excerpt, shorten
from pktemu.io.topofile_fields import Src, mapping, seq, string
from pktemu.io.topofile_k8s import Allocations, check_objects
from pktemu.io.topofile_merge import resolve_at
from pktemu.k8s.manifests import Ctx
from pktemu.k8s.objects import Service
from pktemu.timeline import CLUSTER, load_builtin
from pktemu.topo import TimelineEntry, Topology
from pktemu.units import parse_duration


def split_timeline(value: object) -> tuple[object, object]:
    """The scenario mapping without `timeline`, and the timeline (parsed by parse_timeline)."""
    if isinstance(value, dict) and "timeline" in value:
        rest = {k: v for k, v in value.items() if k != "timeline"}
        return rest, value["timeline"]
    return value, None


def _text(name: str, value: Any) -> str:
    """The command as a person would type it, for the timeline log."""
    if isinstance(value, str):
        return value if value.split(" ", 1)[0] == name else f"{name} {value}"
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "; ".join(_text(name, v) for v in value)
    try:
        shown = _few(value)
        if shown is None:
            shown = shorten(_flow(_ends(value)), _SHOWN)
    except yaml.YAMLError:
        shown = shorten(str(value), _SHOWN)
    return f"{name} {shown}"


def _flow(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10**6).strip()


_SHOWN = 160
#: items kept at each end of a long list or mapping: each is at least 3 characters of flow text
#: (`x, `), so both ends of the text that `shorten` shows come out as the whole value's would
_KEEP = _SHOWN // 2

_HEAD = (_SHOWN - 3) * 2 // 3           # what `shorten` keeps of the text's start
_TAIL = _SHOWN - 3 - _HEAD              # and of its end
#: what stands for the items left out (a private-use character: no topology's text holds it)
_MARK = "\ue000"
_MARK_TEXT = '"\\uE000"'


def _few(value: Any) -> str | None:
    """`shorten` of the flow text of `value`, made from a few items at each end of its long lists
    and mappings, with a mark where the others were: right when every mark falls inside the part
    `shorten` leaves out, as an item's text does not depend on its neighbours' (None otherwise, and
    when `value` shares an object, whose anchor depends on everything before it, or holds the mark)."""
    if not _plain(value):
        return None
    for keep in (2, 8):
        flow = _flow(_cut(value, keep))
        first, last = flow.find(_MARK_TEXT), flow.rfind(_MARK_TEXT)
        if first < 0:
            return shorten(flow, _SHOWN)        # nothing was left out: the whole text
        after = len(flow) - last - len(_MARK_TEXT)
        if first >= _HEAD and after >= _TAIL and first + after > _SHOWN:
            return f"{flow[:_HEAD]}...{flow[len(flow) - _TAIL:]}"
    return None


def _plain(value: Any) -> bool:
    """No list or mapping in `value` twice, and no text holding the mark."""
    seen: set[int] = set()
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            if _MARK in v:
                return False
        elif isinstance(v, (list, dict)):
            if id(v) in seen:
                return False
            seen.add(id(v))
            if isinstance(v, dict):
                stack.extend(v)
                stack.extend(v.values())
            else:
                stack.extend(v)
    return True


def _cut(value: Any, keep: int) -> Any:
    """`value` with the middle of every list and mapping longer than 2 * keep items one mark."""
    if isinstance(value, list):
        if len(value) > 2 * keep:
            return [_cut(x, keep) for x in value[:keep]] + [_MARK] + [_cut(x, keep) for x in value[-keep:]]
        return [_cut(x, keep) for x in value]
    if isinstance(value, dict):
        items = list(value.items())
        if len(items) > 2 * keep:
            items = items[:keep] + [(_MARK, _MARK)] + items[-keep:]
        return {k: _cut(x, keep) for k, x in items}
    return value


def _ends(value: Any) -> Any:
    """`value` with the middle of every long list and mapping left out: dumping a List of thousands
    of objects only to show 160 characters of it took a second. Values that share an object (YAML
    anchors) are dumped whole, as their anchors' numbers depend on everything before them."""
    seen: set[int] = set()

    def shared(v: Any) -> bool:
        if not isinstance(v, (list, dict)):
            return False
        if id(v) in seen:
            return True
        seen.add(id(v))
        return any(shared(x) for x in (v.values() if isinstance(v, dict) else v))

    def cut(v: Any) -> Any:
        if isinstance(v, list):
            kept = v if len(v) <= 2 * _KEEP else v[:_KEEP] + v[-_KEEP:]
            return [cut(x) for x in kept]
        if isinstance(v, dict):
            items = list(v.items())
            if len(items) > 2 * _KEEP:
                items = items[:_KEEP] + items[-_KEEP:]
            return {k: cut(x) for k, x in items}
        return v

    return value if shared(value) else cut(value)


class Names:
    """The Kubernetes objects there are as a timeline is replayed at load time (`_check_names`):
    `live` ones, those `gone` (deleted, by which entry) and those that `maybe` are there (applied
    by a timeline that runs beside this one, at times not known before the run); and the ClusterIPs
    and node ports the live Services hold."""

    def __init__(self, live: dict[tuple[str, str], Any], maybe: dict[tuple[str, str], Any],
                 alloc: Allocations) -> None:
        self.live = live
        self.gone: dict[tuple[str, str], str] = {}
        self.maybe = maybe
        self.alloc = alloc
        #: replaying a scenario's steps (for messages)
        self.stepped = False

    @classmethod
    def of(cls, src: Src, t: Topology, beside: Sequence[TimelineEntry] = ()) -> "Names":
        """The manifests' objects; those the entries `beside` apply or delete may or may not be there."""
        objects = t.kubernetes.objects if t.kubernetes is not None else []
        alloc = Allocations()
        if t.kubernetes is not None:
            check_objects([(o, Ctx(src.path, 0, "")) for o in objects if isinstance(o, Service)],
                          t.kubernetes, t, alloc)
        live = {(type(o).__name__, o.meta.key): o for o in objects}
        maybe: dict[tuple[str, str], Any] = {}
        for e in beside:
            if e.action == "apply":
                maybe.update(((type(o).__name__, o.meta.key), o) for o in e.args["objects"])
            elif e.action == "delete" and (e.args["kind"], e.args["key"]) in live:
                maybe[(e.args["kind"], e.args["key"])] = live[(e.args["kind"], e.args["key"])]
        return cls(live, maybe, alloc)


def parse_timeline(src: Src, where: str, value: object, t: Topology, end: int,
                   objects: Names | None = None) -> list[TimelineEntry]:
    """The entries in time order (ties in file order); each must happen by `end`, the scenario's
    (or step's) last instant, and name nodes and objects that exist when it happens: in `objects`
    as the timelines before this one left them (which it updates), or the manifests'."""
    actions = load_builtin()
    entries = seq(src, where, value)
    base = resolve_at(src, where, ".")
    out: list[tuple[TimelineEntry, str]] = []
    for i, e in enumerate(entries):
        at_where = f"{where}[{i}]"
        m = mapping(src, at_where, e, allowed=("at", "node", *actions))
        names = [a for a in actions if a in m]
        if len(names) != 1:
            raise src.error(at_where, f"give exactly one action of: {', '.join(actions)}")
        name = names[0]
        action = actions[name]
        at = 0 if m.get("at") is None else parse_duration(m["at"], src.at(f"{at_where}.at"))
        if at > end:
            raise src.error(f"{at_where}.at", f"{name} at {at / 1e9:g}s is after the scenario ends, at "
                                              f"{end / 1e9:g}s (the last traffic start plus duration)")
        node = ""
        if action.scope == CLUSTER:
            if m.get("node") is not None:
                raise src.error(f"{at_where}.node", f"{name} changes the cluster, not a node: leave node out")
            if t.kubernetes is None:
                raise src.error(f"{at_where}.{name}",
                                f"{name} changes the cluster: it needs a kubernetes: section")
        else:
            if m.get("node") is None:
                raise src.error(f"{at_where}.node", f"required: the node or pod {name} runs in")
            node = string(src, f"{at_where}.node", m["node"])
            if node not in t.nodes:
                raise src.error(f"{at_where}.node", f"no node or pod named {excerpt(node)}")
        args = action.parse(m[name], src.at(f"{at_where}.{name}"), base, t.nodes.get(node))
        if name == "kube_proxy" and args["node"] not in t.kubernetes.kube_proxy:     # type: ignore[union-attr]
            raise src.error(f"{at_where}.kube_proxy.node", f"no kube-proxy runs on {excerpt(args['node'])} "
                                                           "(see kubernetes.kube_proxy)")
        out.append((TimelineEntry(at, name, args, f"{src.path}: {at_where}", node, _text(name, m[name])),
                    at_where))
    out.sort(key=lambda x: x[0].at)
    _check_names(src, out, objects if objects is not None else Names.of(src, t), t)
    return [e for e, _ in out]


def _check_names(src: Src, entries: list[tuple[TimelineEntry, str]], names: Names, t: Topology) -> None:
    """Replay the timeline on the names of the objects: a name that is not there when its action
    runs (never defined, or deleted earlier) is a mistake, not something to ignore at run time.
    Applied objects are checked when they are applied: a deleted Service's ClusterIP is free again,
    a Service applied again keeps its own."""
    live, gone = names.live, names.gone

    def need(key: tuple[str, str], field: str, at: int) -> Any:
        if key not in live:
            if key in names.maybe:
                return names.maybe[key]
            why = (f"it was deleted by {gone[key]}" if key in gone else
                   "it is neither in the manifests nor applied earlier in this timeline"
                   + (" or an earlier step's" if names.stepped else ""))
            raise src.error(field, f"no {key[0]} {shorten(key[1])} at {at / 1e9:g}s: {why}")
        return live[key]

    for e, at_where in entries:
        if e.action == "apply":
            check_objects([(o, Ctx(src.path, 0, f"{at_where}.apply: {type(o).__name__} {o.meta.key}"))
                           for o in e.args["objects"]], t.kubernetes, t, names.alloc)  # type: ignore[arg-type]
            for o in e.args["objects"]:
                key = (type(o).__name__, o.meta.key)
                live[key] = o
                gone.pop(key, None)
        elif e.action == "delete":
            key = (e.args["kind"], e.args["key"])
            need(key, f"{at_where}.delete", e.at)
            live.pop(key, None)
            if key[0] == "Service":
                names.alloc.release(key[1])
            gone[key] = at_where
        elif e.action == "ready":
            need(("Pod", e.args["key"]), f"{at_where}.ready.pod", e.at)
        elif e.action == "scale":
            svc = need(("Service", e.args["key"]), f"{at_where}.scale.service", e.at)
            if not svc.selector:
                raise src.error(f"{at_where}.scale.service", f"Service {svc.meta.key} has no selector: "
                                                             "there are no Pods to scale")
