"""The timeline log's one-line form of an action (`apply {kind: List, items: [...]}`) is the value's
YAML flow text shortened to 160 characters; it is made from the value's two ends only, so it must
equal what the whole value's text gives. It is first made from a few items at each end, with a mark
where the others were (pktemu.io.topofile_timeline._few), and that too must equal the whole's."""
from __future__ import annotations

import random
from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from pktemu.errors import shorten
from pktemu.io.topofile_timeline import _text


def whole(name: str, value: Any) -> str:
    flow = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10**6).strip()
    return f"{name} {shorten(flow, 160)}"


def value(rnd: random.Random, depth: int) -> Any:
    sizes = [0, 1, 2, 79, 80, 81, 161, 200] if depth < 2 else [0, 1, 3]
    r = rnd.random()
    if depth > 2 or r < 0.3:
        return rnd.choice([1, "a", "x" * rnd.randrange(5), None, True, "10.0.0.1", "a: b", "", 2.5])
    if r < 0.65:
        return [value(rnd, depth + 1) for _ in range(rnd.choice(sizes))]
    return {f"k{i}": value(rnd, depth + 1) for i in range(rnd.choice(sizes))}


def test_long_values_read_as_the_whole_value_does() -> None:
    rnd = random.Random(15)
    for _ in range(30):
        v = {"kind": "List", "items": value(rnd, 0)}
        assert _text("apply", v) == whole("apply", v)


def test_a_list_of_thousands_of_objects() -> None:
    items = [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"pod{i}"}} for i in range(3000)]
    text = _text("apply", {"kind": "List", "items": items})
    assert text == whole("apply", {"kind": "List", "items": items})
    assert text.startswith("apply {kind: List, items: [{apiVersion: v1")
    assert text.endswith("name: pod2999}}]}")


def test_shared_objects_keep_their_anchors() -> None:
    item = {"kind": "Pod"}
    v = {"items": [item] * 200}
    assert _text("apply", v) == whole("apply", v)
    assert "&id001" in _text("apply", v)


LEAVES = st.one_of(st.integers(-10**6, 10**9), st.none(), st.booleans(),
                   st.text(alphabet="abz09-./: '\"#{}\\\u00e9", max_size=30),
                   st.sampled_from(["", "yes", "null", "0x1F", "1e3", "- x", "a: b", "\ue000"]))
VALUES = st.recursive(LEAVES, lambda kids: st.one_of(
    st.lists(kids, max_size=40),
    st.dictionaries(st.text(alphabet="abcxyz_-", min_size=1, max_size=12), kids, max_size=40)),
    max_leaves=400)


@settings(max_examples=200, deadline=None)
@given(VALUES)
def test_any_value_reads_as_the_whole_value_does(v: Any) -> None:
    if isinstance(v, str) or (isinstance(v, list) and all(isinstance(x, str) for x in v)):
        return                           # commands as written, not YAML
    assert _text("apply", v) == whole("apply", v)


def test_a_cluster_of_manifests_with_a_service_first() -> None:
    pods = [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"pod{n}-{p}", "namespace": "default",
                                                             "labels": {"app": "web"}}}
            for n in range(1, 301) for p in range(1, 31)]
    v = {"kind": "List", "items": [{"kind": "Service", "metadata": {"name": "web"}}, *pods]}
    text = _text("apply", v)
    assert text == whole("apply", v)
    assert text.startswith("apply {kind: List, items: [{kind: Service, metadata: {name: web}}, ")
    assert text.endswith("pod300-30, namespace: default, labels: {app: web}}}]}")
