"""pktemu reads YAML as PyYAML's SafeLoader does (pktemu/infile.py composes and constructs plain
documents its own faster way): the same data for the same text, anchors and merge keys included,
and the same errors."""
from __future__ import annotations

import datetime
import math
import random
from typing import Any

import pytest
import yaml

from conftest import pktemu
from pktemu.errors import PktemuError
from pktemu.infile import load_yaml, load_yaml_all
from pktemu.k8s.manifests import load_text

WORDS = ["a", "b c", "", "1", "yes", "null", "12:34:56", "a: b", "- x", "#c", "é", "x" * 40]
NUMBERS: list[Any] = [0, -2, 10**30, 3.5, 0.1, float("inf"), float("-inf"), True, False, None]


def data(rng: random.Random, depth: int = 0) -> Any:
    r = rng.random()
    if depth > 5 or r < 0.5:
        return rng.choice(WORDS + NUMBERS + [datetime.date(2020, 1, 2), b"bytes"])
    if r < 0.75:
        return [data(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {rng.choice(["k", "j", 1, 2.5, True, None, "<<x"]): data(rng, depth + 1)
            for _ in range(rng.randint(0, 4))}


def same(a: Any, b: Any) -> bool:
    """Equal values of the same types all the way down, NaN equal to NaN, dict keys in order."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b)


def test_documents_read_as_pyyaml_reads_them() -> None:
    rng = random.Random(15)
    for _ in range(300):
        docs = []
        for _ in range(rng.randint(1, 3)):
            x = data(rng)
            docs.append([x, x] if rng.random() < 0.2 else x)     # a shared object: anchor and alias
        text = yaml.safe_dump_all(docs, default_flow_style=rng.choice([True, False, None]),
                                  allow_unicode=rng.random() < 0.5)
        ours = [d for d, _node in load_yaml_all(text, "t.yaml")]
        theirs = list(yaml.load_all(text, Loader=yaml.SafeLoader))
        assert same(ours, theirs), text


MERGED = """\
base: &base {port: 80, protocol: TCP}
list: &list [1, 2]
svc:
  <<: *base
  port: 8080
both:
  <<: [*base, {name: x}]
again: *list
"""


def test_anchors_aliases_and_merge_keys() -> None:
    ours = load_yaml(MERGED, "m.yaml")
    assert ours == yaml.load(MERGED, Loader=yaml.SafeLoader)
    assert ours["svc"] == {"port": 8080, "protocol": "TCP"}
    assert ours["both"] == {"port": 80, "protocol": "TCP", "name": "x"}
    assert ours["again"] is ours["list"]


@pytest.mark.parametrize("text", [
    "a:\n  b: 1\n  <<: scalar\n",
    "a: [1, {<<: [1]}]\n",
    "? [1, 2]\n: unhashable key\n",
    "a: !mytag 1\n",
])
def test_errors_are_pyyamls(text: str) -> None:
    with pytest.raises(yaml.YAMLError) as theirs:
        yaml.load(text, Loader=yaml.SafeLoader)
    with pytest.raises(PktemuError) as ours:
        load_yaml(text, "e.yaml")
    problem = theirs.value.problem if isinstance(theirs.value, yaml.MarkedYAMLError) else str(theirs.value)
    assert problem is not None
    assert problem.split(":")[0].split("'")[0] in str(ours.value), (str(ours.value), problem)
    assert str(ours.value).startswith(f"e.yaml:{theirs.value.problem_mark.line + 1}:")  # type: ignore[union-attr]


def test_many_manifests_read_as_pyyaml_reads_them() -> None:
    text = "".join(f"---\napiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}, namespace: ns{i % 3}}}\n"
                   f"spec:\n  clusterIP: 10.3.0.{i + 1}\n  selector: {{app: svc-{i}}}\n"
                   f"  ports:\n  - {{name: http, protocol: TCP, port: {80 + i}, targetPort: 8080}}\n"
                   for i in range(50))
    services = load_text(text, "svcs.yaml")
    assert [s.meta.name for s in services] == [f"svc-{i}" for i in range(50)]
    assert [(s.cluster_ip, s.ports[0].port) for s in services] == \
        [(d["spec"]["clusterIP"], d["spec"]["ports"][0]["port"]) for d in yaml.safe_load_all(text)]


def test_a_word_that_is_no_boolean_is_one_line_from_the_cli(tmp_path: Any) -> None:
    t = tmp_path / "t.yaml"
    t.write_text("name: x\nnodes: {n: {kind: host}}\ndescription: !!bool maybe\n")
    p = pktemu("validate", str(t), check=False)
    assert p.returncode == 2
    assert p.stderr == (f"pktemu: error: {t}:3: YAML error: cannot read 'maybe' as bool: "
                        "not one of its values\n")
