"""Hostile input is refused fast and in one short line: huge files, alias bombs, deep nesting,
giant integers, infinities, NUL bytes, megabyte values (pktemu/infile.py, docs/topology.md#limits)."""
from __future__ import annotations

import re

from pathlib import Path

import pytest

import datapaths
from conftest import cpu_seconds, pktemu
from pktemu.errors import PktemuError
from pktemu.io.topofile import load_topology
from pktemu.k8s.manifests import load_text

TOPO = datapaths.ROOT / "topologies"
SHORT = 500           # "a few hundred characters": the longest line any of these may print


def refused(path: Path | str, *args: str) -> str:
    """`pktemu validate PATH` (or `pktemu ARGS`): status 2, one short line, well within a hang's bound."""
    t0 = cpu_seconds()
    p = pktemu(*(args or ("validate", str(path))), check=False, timeout=60)
    assert cpu_seconds() - t0 < 20, "took too long: not bounded"      # CPU time: load-immune
    assert p.returncode == 2, p.stderr[:2000]
    assert p.stderr.startswith("pktemu: error: ") and p.stderr.count("\n") == 1, p.stderr[:2000]
    assert len(p.stderr) < SHORT, p.stderr[:2000]
    return p.stderr


def load_error(path: Path | str) -> str:
    with pytest.raises(PktemuError) as e:
        load_topology(str(path))
    msg = str(e.value)
    assert "\n" not in msg and len(msg) < SHORT, msg[:2000]
    return msg


def topo(tmp_path: Path, text: str, base: str = "service-test.yaml", name: str = "t.yaml") -> Path:
    t = tmp_path / name
    t.write_text(f"extends: {TOPO / base}\n{text}")
    return t


# ---------------------------------------------------------------------------- 1. file sizes
def test_dev_zero_is_refused_after_reading_at_most_the_limit() -> None:
    err = refused("/dev/zero")
    assert "/dev/zero: file is larger than 16 MiB" in err


def test_a_large_file_is_refused_by_its_size_before_it_is_read(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    with open(big, "wb") as f:
        f.truncate(24 * 1024 * 1024 * 1024)       # sparse: 24 GiB that take no disk and no time
    err = refused(big)
    assert f"{big}: file is larger than 16 MiB, the limit" in err and "(24576 MiB)" in err


def test_a_directory_given_as_a_file_is_one_line(tmp_path: Path) -> None:
    assert refused(tmp_path).rstrip("\n").endswith(f"{tmp_path}: cannot read: it is a directory")


def test_a_directory_given_as_a_manifest_is_one_line(tmp_path: Path) -> None:
    m = tmp_path / "m"
    m.mkdir()
    t = topo(tmp_path, "kubernetes:\n  manifests: [m]\n", "service-test-k8s.yaml")
    assert f"{m}: cannot read manifest: it is a directory" in load_error(t)


def test_a_manifest_that_never_ends_is_refused(tmp_path: Path) -> None:
    t = topo(tmp_path, "kubernetes:\n  manifests: [/dev/zero]\n", "service-test-k8s.yaml")
    assert "/dev/zero: manifest is larger than 16 MiB" in refused(t)


def test_a_rules_file_over_256_mib_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    t = tmp_path / "service-test.yaml"
    t.write_text((TOPO / "service-test.yaml").read_text())
    rules = tmp_path / "kube-proxy-rules.iptables"         # what service-test.yaml names
    with open(rules, "wb") as f:
        f.truncate(257 * 1024 * 1024)
    out = tmp_path / "out"
    err = refused(t, "run", str(t), "--scenario", "s1-clusterip", "--out", str(out), "-q")
    assert f"{rules}: rules file is larger than 256 MiB" in err
    assert not out.exists()


# ---------------------------------------------------------------------------- 2. YAML structure
def _bomb(levels: int = 9) -> str:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]")
    return "\n".join(lines) + "\n"


def test_a_billion_laughs_topology_is_refused_quickly(tmp_path: Path) -> None:
    t = tmp_path / "bomb.yaml"
    t.write_text(_bomb() + "name: *a9\n")               # 10**10 strings once expanded
    err = refused(t)
    assert "aliases expand this by more than 1,000,000 nodes" in err


def test_a_billion_laughs_manifest_is_refused() -> None:
    with pytest.raises(PktemuError, match=r"^m.yaml:\d+: YAML error: aliases expand this by more than"):
        load_text("kind: Service\n" + _bomb(), "m.yaml")


def test_many_small_bombs_in_one_file_share_one_budget() -> None:
    doc = _bomb(4) + "kind: List\n"           # about 120,000 nodes once expanded: fine alone
    assert load_text(doc, "m.yaml") == []
    with pytest.raises(PktemuError, match=r"m.yaml:\d+: YAML error: aliases expand this"):
        load_text("---\n".join([doc] * 12), "m.yaml")


def test_moderate_aliases_are_fine(tmp_path: Path) -> None:
    t = topo(tmp_path, "x-lists: &l [1, 2, 3]\nx-more: [*l, *l, *l]\n")
    assert load_topology(str(t)).name == "t"


@pytest.mark.parametrize("text", [
    "name: " + "[" * 10_000 + "]" * 10_000 + "\n",
    "name: " + "{a: " * 10_000 + "1" + "}" * 10_000 + "\n",
    "name:\n" + "".join(" " * i + "- \n" for i in range(0, 2000, 2)),
], ids=["flow-lists", "flow-mappings", "block-lists"])
def test_deep_nesting_is_a_clean_error(tmp_path: Path, text: str) -> None:
    t = tmp_path / "deep.yaml"
    t.write_text(text)
    # newer libyaml (PyYAML 6.0.4's wheels) refuses deep flow nesting itself, before our bound
    assert re.search(r"YAML error: nested more than 100 levels deep|YAML syntax error: .*exceeded maximum "
                     r"nesting depth", refused(t))


@pytest.mark.parametrize("text", ["name: " + "[" * 150 + "]" * 150 + "\n",
                                  "name: " + "{a: " * 150 + "1" + "}" * 150 + "\n"])
def test_nesting_past_our_bound_is_refused_whatever_libyaml_allows(tmp_path: Path, text: str) -> None:
    t = tmp_path / "deep.yaml"
    t.write_text(text)
    assert "YAML error: nested more than 100 levels deep" in refused(t)


def test_aliases_cannot_nest_past_the_depth_limit_either() -> None:
    lines = ["a0: &a0 " + "[" * 60 + "]" * 60]
    for i in range(1, 5):
        lines.append(f"a{i}: &a{i} " + "[" * 60 + f"*a{i - 1}" + "]" * 60)
    with pytest.raises(PktemuError, match=r"YAML error: aliases nest this over 100 levels deep"):
        load_text("\n".join(lines) + "\n", "m.yaml")


def test_an_alias_cycle_is_refused() -> None:
    with pytest.raises(PktemuError, match=r"^m.yaml:1: YAML error: an alias refers to a collection it is in"):
        load_text("items: &a [*a]\n", "m.yaml")


# ---------------------------------------------------------------------------- 3. scalars
def test_an_integer_past_pythons_digit_limit_is_refused(tmp_path: Path) -> None:
    t = topo(tmp_path, f"seed: {'1' * 5000}\n")
    assert f"{t}:2: YAML error: an integer of 5,000 characters is too large" in refused(t)


@pytest.mark.parametrize("value", ["18446744073709551616", "-1", "0x1" + "0" * 90])
def test_integer_fields_have_bounds(tmp_path: Path, value: str) -> None:
    assert "is out of range 0..18446744073709551615" in load_error(topo(tmp_path, f"seed: {value}\n"))


@pytest.mark.parametrize("field, text", [
    ("timeline[0].at", "scenarios:\n  s1-clusterip:\n    timeline: [{at: .inf, kube_proxy: {node: node1, "
                       "action: crash}}]\n"),
    ("duration", "scenarios:\n  s1-clusterip: {duration: -.inf}\n"),
    ("settle", "scenarios:\n  s1-clusterip: {settle: .nan}\n"),
    ("duration", "scenarios:\n  s1-clusterip: {duration: 1.0e999}\n"),
    ("duration", f"scenarios:\n  s1-clusterip: {{duration: {'9' * 400}s}}\n"),
    ("duration", "scenarios:\n  s1-clusterip: {duration: 169h}\n"),
    ("traffic[0].app.response_delay", "scenarios:\n  s1-clusterip:\n    traffic: [{pod: server, app: "
                                      "{kind: http-server, response_delay: .nan}}]\n"),
    ("traffic[0].app.timeout", "scenarios:\n  s1-clusterip:\n    traffic: [{pod: client, app: "
                               "{kind: ping, target: 10.0.2.2, timeout: .inf}}]\n"),
])
def test_infinities_and_nans_are_not_durations(tmp_path: Path, field: str, text: str) -> None:
    msg = load_error(topo(tmp_path, text, "service-test-k8s.yaml"))
    assert f"scenarios.s1-clusterip.{field}: " in msg
    assert "expected a duration" in msg or "is longer than the longest duration, 168h" in msg


def test_response_delay_nan_in_a_dns_server(tmp_path: Path) -> None:
    t = topo(tmp_path, "scenarios:\n  s1-clusterip:\n    traffic: [{pod: dns, app: {kind: dns-server, "
                       "response_delay: .nan}}]\n")
    assert load_error(t).endswith("traffic[0].app.response_delay: expected a duration like 800ms or 2s, "
                                  "got nan")


def test_a_nul_byte_in_the_yaml_names_its_line_and_column(tmp_path: Path) -> None:
    t = tmp_path / "t.yaml"
    t.write_bytes(b"name: t\ndescription: ab\x00c\n")
    assert f"{t}:2:16: YAML error: character #x0000 is not allowed" in refused(t)
    t.write_bytes(b"name: t\n\x1b[31m\n")
    assert f"{t}:2:1: YAML error: character #x001b is not allowed" in load_error(t)


@pytest.mark.parametrize("text, message", [
    ('nodes:\n  "a\\0b": {}\n', r"nodes.a\x00b: not a valid node name: 'a\x00b'"),
    ('nodes:\n  n:\n    interfaces: {"e\\0": {}}\n', r"nodes.n.interfaces.e\x00: not a valid interface name"),
    ('nodes:\n  n: {iptables: "r\\0.iptables"}\n',
     r"nodes.n.iptables: not a usable file name: 'r\x00.iptables'"),
    ('extends: "b\\0.yaml"\n', r"extends: not a usable file name: 'b\x00.yaml'"),
    ('kubernetes:\n  manifests: ["m\\0.yaml"]\n', r"kubernetes.manifests[0]: not a usable file name"),
    ('pods:\n  c: {node: node1, bridge: cbr0, address: 10.0.1.9/24, resolv: {search: ["a\\0b"]}}\n',
     r"pods.c.resolv.search[0]: name 'a\x00b': only printable ASCII characters without spaces"),
    ('nodes:\n  "n\\n": {}\n', r"nodes.n\n: not a valid node name: 'n\n'"),
])
def test_nul_and_newlines_in_names_and_paths_are_refused(tmp_path: Path, text: str, message: str) -> None:
    t = tmp_path / "t.yaml"
    t.write_text(f"extends: {TOPO / 'service-test-k8s.yaml'}\n{text}" if "extends" not in text else text)
    assert message in load_error(t)


def test_a_nul_in_the_topology_path_itself() -> None:
    assert load_error("topo\x00.yaml") == r"topo\x00.yaml: cannot read: the file name contains a NUL byte"


@pytest.mark.parametrize("text, message", [
    ("description: 2024-13-45\n",
     "YAML error: cannot read '2024-13-45' as timestamp: month must be in 1..12"),
    ("description: !!float xyz\n", "YAML error: cannot read 'xyz' as float"),
    ("description: !!int xyz\n", "YAML error: cannot read 'xyz' as int"),
    ("description: !!bool maybe\n", "YAML error: cannot read 'maybe' as bool: not one of its values"),
])
def test_scalars_pyyaml_cannot_construct_are_clean_errors(tmp_path: Path, text: str, message: str) -> None:
    t = topo(tmp_path, text)
    assert f"{t}:2: {message}" in load_error(t)


# ---------------------------------------------------------------------------- 4. short messages
MB = "a" * 1_000_000


@pytest.mark.parametrize("text", [
    f"nodes:\n  n:\n    interfaces: {{eth0: {{mac: {MB}}}}}\n",
    f"nodes:\n  ? {MB}\n  : {{}}\n",
    f"nodes:\n  n: {{routes: [{{to: {MB}, dev: eth0}}]}}\n",
    f"captures: [{MB}]\n",
    f"veths: [[{MB}, n/eth0]]\n",
    f"pods:\n  c: {{node: {MB}, bridge: cbr0, address: 10.0.1.9/24}}\n",
    f"pods:\n  c: {{node: node1, bridge: cbr0, address: {MB}/24}}\n",
    f"pods:\n  c: {{node: node1, bridge: cbr0, address: 10.0.1.9/24, gateway: {MB}}}\n",
    f"scenarios:\n  s1-clusterip:\n    traffic: [{{pod: client, app: {{kind: {MB}}}}}]\n",
    f"scenarios:\n  s1-clusterip:\n    traffic: [{{pod: client, app: {{kind: ping, target: {MB}}}}}]\n",
    f"scenarios:\n  s1-clusterip:\n    traffic: [{{pod: client, app: {{kind: ping, ? {MB}\n : 1}}}}]\n",
    f"scenarios:\n  s1-clusterip:\n    traffic: [{{pod: client, app: {{kind: http-client, name: {MB}}}}}]\n",
    f"scenarios:\n  s1-clusterip:\n    traffic: [{{pod: dns, app: {{kind: dns-server, "
    f"records: {{a: {MB}}}}}}}]\n",
    f"scenarios:\n  s1-clusterip:\n    traffic: [{{pod: dns, app: {{kind: dns-server, records: [{MB}]}}}}]\n",
    f"scenarios:\n  s1-clusterip:\n    traffic: [{{pod: client, app: {{kind: http-load, count: [{MB}]}}}}]\n",
    f"scenarios:\n  s1-clusterip:\n    traffic: [{{pod: client, app: {{kind: ping, target: 10.0.2.2}}, "
    f"result: {MB}}}]\n",
    f"scenarios:\n  s1-clusterip:\n    timeline: [{{at: 1s, delete: {MB}}}]\n",
    f"scenarios:\n  s1-clusterip:\n    timeline: [{{at: 1s, ready: {{pod: {MB}, value: true}}}}]\n",
    f"scenarios:\n  s1-clusterip:\n    timeline: [{{at: 1s, kube_proxy: {{node: {MB}, action: crash}}}}]\n",
    f"kubernetes:\n  kube_proxy: {{node1: {{mode: {MB}}}}}\n",
    f"kubernetes:\n  service_cidr: {MB}\n",
], ids=["mac", "node-key", "route-to", "captures", "veth", "pod-node", "pod-address", "pod-gateway",
        "app-kind", "ping-target", "app-key", "dns-name", "dns-record", "dns-records", "load-count", "result",
        "tl-delete", "tl-ready", "tl-kube-proxy", "kp-mode", "service-cidr"])
def test_a_megabyte_value_gives_a_short_message(tmp_path: Path, text: str) -> None:
    msg = load_error(topo(tmp_path, text, "service-test-k8s.yaml"))
    assert "..." in msg


@pytest.mark.parametrize("obj", [
    f"kind: Service\napiVersion: v1\nmetadata: {{name: s}}\nspec: {{type: {MB}}}\n",
    f"kind: Service\napiVersion: v1\nmetadata: {{name: {MB}}}\n",
    f"kind: Service\napiVersion: v1\nmetadata: {{name: s}}\nspec: {{? {MB}\n : x}}\n",
    f"kind: Service\napiVersion: v1\nmetadata: {{name: s}}\nspec: {{ports: [{{port: {MB}}}]}}\n",
    f"kind: Service\napiVersion: v1\nmetadata: {{name: s}}\n"
    f"spec: {{clusterIP: {MB}, ports: [{{port: 1}}]}}\n",
    f"kind: {MB}List\nitems: 1\n",
    f"kind: {MB}\n",
    f"kind: Pod\napiVersion: v1\nmetadata: {{name: p}}\nstatus: {{podIP: {MB}}}\n",
], ids=["type", "name", "spec-key", "port", "clusterIP", "list-kind", "kind", "podIP"])
def test_a_megabyte_value_in_a_manifest_gives_a_short_message(obj: str) -> None:
    with pytest.raises(PktemuError) as e:
        load_text(obj, "m.yaml")
    msg = str(e.value)
    assert msg.startswith("m.yaml:") and "\n" not in msg and len(msg) < SHORT and "..." in msg, msg[:2000]


def test_a_megabyte_alias_expansion_in_a_message_stays_short(tmp_path: Path) -> None:
    t = topo(tmp_path, "x-a: &a [" + ", ".join(["xxxxxxxxxx"] * 1000) + "]\n"
                       "seed: [" + ", ".join(["*a"] * 900) + "]\n")          # 900,000 strings
    assert "seed: expected an integer, got list [[" in load_error(t)


def test_the_error_limits_are_what_the_docs_say() -> None:
    doc = (datapaths.ROOT / "docs" / "topology.md").read_text()
    from pktemu import infile

    assert infile.YAML_MAX_BYTES == 16 * 2**20 and infile.RULES_MAX_BYTES == 256 * 2**20
    for row in ("| 16 MiB (`YAML_MAX_BYTES`)", "| 256 MiB (`RULES_MAX_BYTES`)",
                f"| {infile.YAML_MAX_DEPTH} levels (`YAML_MAX_DEPTH`)",
                f"| {infile.YAML_MAX_ALIAS_NODES:,} (`YAML_MAX_ALIAS_NODES`)",
                f"| {infile.YAML_INT_MAX_CHARS} characters (`YAML_INT_MAX_CHARS`)"):
        assert row in doc
