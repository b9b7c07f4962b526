"""Generated topologies: `for` loops and `{expr}` patterns expand into plain objects before parsing,
the expansion is bounded, and every mistake in a loop is one line naming the file and the entry."""
from __future__ import annotations

import json
from typing import Any
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

import datapaths
from conftest import load_error, pktemu
from pktemu.errors import PktemuError
from pktemu.io.topofile import load_topology
from pktemu.topo import Address, Route, Veth

TOPO = datapaths.ROOT / "topologies"
CLUSTER = TOPO / "generated-cluster.yaml"

#: Two nodes on one link, written with loops: `n` nodes, each with its interface and address.
LAN = """
vars: {n: 2}
nodes:
  for i in 1..n:
    h{i}:
      interfaces: {eth0: {addresses: ["10.1.0.{i}/24"], mtu: "{1400 + i}"}}
veths:
  - for i in 1..n // 2: [["h{2 * i - 1}/eth0", "h{2 * i}/eth0"]]
"""


def write(tmp_path: Path, text: str, name: str = "t.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_loops_expand_into_plain_objects(tmp_path: Path) -> None:
    t = load_topology(str(write(tmp_path, LAN)))
    assert list(t.nodes) == ["h1", "h2"]
    assert t.nodes["h2"].interfaces["eth0"].addresses == [Address("10.1.0.2/24")]
    assert t.nodes["h2"].interfaces["eth0"].mtu == 1402                 # a whole `{expr}` is an integer
    assert t.veths == [Veth("h1/eth0", "h2/eth0")]


def test_the_shipped_generated_cluster_expands_as_declared() -> None:
    t = load_topology(str(CLUSTER))
    assert [n for n, m in t.nodes.items() if m.kind != "pod"] == ["gw", "node1", "node2", "node3"]
    assert [n for n, m in t.nodes.items() if m.kind == "pod"] == \
        ["pod1-1", "pod1-2", "pod2-1", "pod2-2", "pod3-1", "pod3-2"]
    assert t.nodes["gw"].routes[2] == Route("10.0.3.0/24", via="10.100.0.13")
    assert t.nodes["pod3-2"].interfaces["eth0"].addresses == [Address("10.0.3.3/24")]
    assert t.kubernetes is not None and t.kubernetes.pod_cidrs["node2"] == "10.0.2.0/24"
    assert sorted(t.kubernetes.kube_proxy) == ["node1", "node2", "node3"]
    assert [tr.node for tr in t.scenarios["clients"].traffic] == ["pod1-1", "pod2-1", "pod3-1"]


def test_the_generated_cluster_runs_and_every_client_reaches_the_service(tmp_path: Path) -> None:
    out = tmp_path / "out"
    pktemu("run", str(CLUSTER), "--out", str(out), "-q", timeout=120)
    results = json.loads((out / "clients" / "client-result.json").read_text())
    assert len(results) == 3
    assert all(r["http"]["status_line"] == "HTTP/1.1 200 OK" for r in results)
    assert all(r["http"]["body"].startswith("hello from pod") for r in results)


def test_a_100_by_30_cluster_is_two_lines_and_validate_prints_its_size(tmp_path: Path) -> None:
    big = write(tmp_path, f"extends: {{file: {CLUSTER}, merge: true}}\nvars: {{nodes: 100, pods: 30}}\n")
    p = pktemu("validate", str(big), "-o", "json", timeout=120)
    data = json.loads(p.stdout)
    assert data["size"] == {"nodes": 101, "pods": 3000, "interfaces": 6200, "bridges": 100, "veths": 3100,
                            "routes": 3200}
    text = " ".join(pktemu("validate", str(big), timeout=120).stdout.split())
    assert "OK — 3101 nodes, 3100 veth pairs, 1 scenario (clients)" in text
    assert "size: 101 nodes and 3000 pods, 6200 interfaces, 100 bridges, 3100 veth pairs" in text


def test_a_file_without_loops_may_hold_braces(tmp_path: Path) -> None:
    doc = LAN.replace("vars: {n: 2}\n", "").replace("1..n", "1..2") + \
        "scenarios:\n  s:\n    description: '{not an expression}'\n"
    assert load_topology(str(write(tmp_path, doc))).scenarios["s"].description == "{not an expression}"


def test_literal_braces_in_a_loop_are_doubled(tmp_path: Path) -> None:
    doc = LAN + "scenarios:\n  for i in 1..1:\n    s{i}: {description: '{{x}} {i}'}\n"
    assert load_topology(str(write(tmp_path, doc))).scenarios["s1"].description == "{x} 1"


@pytest.mark.parametrize("change, where, message", [
    (("1..n:", "1..m:"), "nodes.for i in 1..m", "no variable 'm' (variables: n)"),
    (("h{i}:", "h{i:"), "nodes.h{i", "unbalanced '{' in 'h{i' (write {{ for a literal brace)"),
    (('"10.1.0.{i}/24"', '"10.1.0.{i // 0}/24"'), "nodes.h1.interfaces.eth0.addresses[0]",
     "in '{i // 0}': division by zero"),
    (('"10.1.0.{i}/24"', '"10.1.0.{__import__}/24"'), "nodes.h1.interfaces.eth0.addresses[0]",
     "no variable '__import__'"),
    (('"10.1.0.{i}/24"', '"10.1.0.{i ** 2}/24"'), "nodes.h1.interfaces.eth0.addresses[0]",
     "in '{i ** 2}': unexpected '*'"),
    (("vars: {n: 2}", "vars: {n: two}"), "vars.n", "expected an integer, got string 'two'"),
    (("vars: {n: 2}", "vars: {2n: 2}"), "vars.2n", "not a variable name"),
    (("h{i}:", "h1:"), "nodes.for i in 1..n", "'h1' is already an entry here (from nodes.for i in 1..n)"),
    (("vars: {n: 2}", "vars: {n: 200001}"), "nodes.for i in 1..n",
     "the loops add more than 100,000 entries in all (the limit)"),
    (("vars: {n: 2}", "vars: {n: 99999999999999999999}"), "vars.n", "is out of range"),
    (("  - for i in 1..n // 2:", "  - x: 1\n    for i in 1..n // 2:"), "veths[0]",
     "a loop in a list is an item with the for key only"),
])
def test_loop_mistakes_are_one_line(tmp_path: Path, change: tuple[str, str], where: str,
                                    message: str) -> None:
    assert change[0] in LAN
    p = write(tmp_path, LAN.replace(change[0], change[1]))
    msg = load_error(p)
    assert msg.startswith(f"{p}: {where}: ") and message in msg


def test_nested_loops_are_bounded_in_all(tmp_path: Path) -> None:
    p = write(tmp_path, "nodes:\n  for i in 1..1000:\n    for j in 1..1000:\n      h{i}-{j}: {}\n")
    p2 = pktemu("validate", str(p), check=False, timeout=60)
    assert p2.returncode == 2 and p2.stdout == "" and p2.stderr.count("\n") == 1
    assert "the loops add more than 100,000 entries in all (the limit)" in p2.stderr


def test_a_large_loop_body_is_bounded_by_values(tmp_path: Path) -> None:
    body = ", ".join(f"k{i}: v" for i in range(1000))
    p = write(tmp_path, f"nodes:\n  for i in 1..5000:\n    h{{i}}: {{x: {{{body}}}}}\n")
    assert "the loops create more than 2,000,000 values in all (the limit)" in load_error(p)


def test_an_error_in_a_generated_object_names_the_file_that_wrote_the_loop(tmp_path: Path) -> None:
    base = write(tmp_path, LAN, "base.yaml")
    d = write(tmp_path, "extends: {file: base.yaml, merge: true}\nvars: {n: 3}\n", "d.yaml")
    msg = load_error(d)                     # three hosts, one pair: h3/eth0 is not joined to anything
    assert msg.startswith(f"{base}: nodes.h3.interfaces.eth0: not joined to anything")


def test_a_derived_file_merges_into_a_generated_entry(tmp_path: Path) -> None:
    write(tmp_path, LAN, "base.yaml")
    d = write(tmp_path, "extends: {file: base.yaml, merge: true}\nnodes:\n  for i in 1..n:\n    h{i}:\n"
                        "      sysctls: {net.ipv4.ip_default_ttl: '{60 + i}'}\n", "d.yaml")
    t = load_topology(str(d))
    assert t.nodes["h2"].sysctls["net.ipv4.ip_default_ttl"] == 62
    assert t.nodes["h2"].interfaces["eth0"].addresses == [Address("10.1.0.2/24")]


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet="{}()+-*/% in.0123456789ijn_x", max_size=40))
def test_any_pattern_is_a_value_or_one_line(text: str) -> None:
    """Whatever a loop's string holds, the loader gives a topology or one PktemuError line."""
    doc = yaml.safe_dump({"vars": {"n": 2}, "nodes": {"for i in 1..n": {"h{i}": {"interfaces": {
        "eth0": {"addresses": [text]}}}}}})
    try:
        load_topology("t.yaml", doc)
    except PktemuError as e:
        assert "\n" not in str(e) and len(str(e)) < 400


@settings(max_examples=200, deadline=None)
@given(key=st.text(alphabet="for in .0123456789ijn+-*/(){}", max_size=30),
       body=st.sampled_from([None, 1, "x", [], {}, {"h{i}": {}}, [{"a": 1}]]))
def test_any_loop_key_is_a_value_or_one_line(key: str, body: object) -> None:
    doc = yaml.safe_dump({"vars": {"n": 2}, "nodes": {key: body}, "veths": [{key: body}]})
    try:
        load_topology("t.yaml", doc)
    except PktemuError as e:
        assert "\n" not in str(e) and len(str(e)) < 400


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="{}np+-*/%()1 a", max_size=14), st.booleans())
def test_a_text_reads_the_same_through_its_template_as_match_by_match(text: str, whole: bool) -> None:
    """Loop bodies substitute through a template made once per text (`substitute`); it gives what
    substituting match by match gives (`substitute_each`): the same value, or the same error."""
    from pktemu.io.topofile_fields import Src
    from pktemu.io.topofile_generate import substitute, substitute_each

    def outcome(f: Any) -> tuple[str, Any]:
        try:
            return "value", f(Src("t.yaml"), "nodes.x", text, {"n": 3, "p": 7}, whole)
        except PktemuError as e:
            return "error", str(e)
    assert outcome(substitute) == outcome(substitute) == outcome(substitute_each)
