"""`extends: {file, merge: true}`: a derived file changes one node's route, sysctl or rules file
without restating the rest; errors name the file that wrote the value; relative paths stay
relative to their own file; plain `extends: FILE` keeps replacing top-level keys."""
from __future__ import annotations

from pathlib import Path

import pytest

import datapaths
from conftest import load_error, pktemu
from pktemu.io.topofile import load_topology
from pktemu.topo import Address, Route

TOPO = datapaths.ROOT / "topologies"
BASE = TOPO / "service-test.yaml"


def derived(tmp_path: Path, text: str, base: Path = BASE, name: str = "d.yaml") -> Path:
    p = tmp_path / name
    p.write_text(f"extends: {{file: {base}, merge: true}}\n{text}")
    return p


def test_merge_changes_one_route_sysctl_and_keeps_the_rest(tmp_path: Path) -> None:
    base = load_topology(str(BASE))
    t = load_topology(str(derived(tmp_path, """
nodes:
  node1:
    routes: [{to: default, via: 10.100.0.1, metric: 5}]
    sysctls: {net.ipv4.conf.all.rp_filter: 2}
""")))
    assert t.nodes["node1"].routes == [Route("default", via="10.100.0.1", metric=5)]
    assert t.nodes["node1"].sysctls["net.ipv4.conf.all.rp_filter"] == 2
    assert t.nodes["node1"].sysctls["net.ipv4.ip_forward"] == 1            # the base's other sysctls stay
    assert t.nodes["node1"].iptables == base.nodes["node1"].iptables       # resolved against the base file
    assert t.nodes["node1"].interfaces == base.nodes["node1"].interfaces
    assert {n: m for n, m in t.nodes.items() if n != "node1"} == \
        {n: m for n, m in base.nodes.items() if n != "node1"}
    assert t.veths == base.veths and list(t.scenarios) == list(base.scenarios)
    assert t.name == "d"


def test_merge_changes_a_rules_file_relative_to_the_derived_file(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "open.iptables").write_text("*filter\n:FORWARD ACCEPT [0:0]\nCOMMIT\n")
    t = load_topology(str(derived(tmp_path, "nodes:\n  node2:\n    iptables: rules/open.iptables\n")))
    assert t.nodes["node2"].iptables == str(tmp_path / "rules" / "open.iptables")
    assert t.nodes["node1"].iptables == str(TOPO / "kube-proxy-rules.iptables")


def test_merge_replacing_a_base_rules_file_resolves_against_the_derived_file(tmp_path: Path) -> None:
    """node1 has a rules file in the base; the derived file's own, relative path is its writer's."""
    (tmp_path / "mine.iptables").write_text("*filter\n:FORWARD ACCEPT [0:0]\nCOMMIT\n")
    top = derived(tmp_path, "nodes:\n  node1:\n    iptables: mine.iptables\n")
    assert load_topology(str(top)).nodes["node1"].iptables == str(tmp_path / "mine.iptables")
    assert pktemu("validate", str(top)).returncode == 0


def test_base_paths_stay_relative_to_the_base_through_a_chain(tmp_path: Path) -> None:
    """Three files in three folders: the middle one merges into the base, the top into the middle."""
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "b").mkdir()
    derived(tmp_path / "a", "nodes:\n  gw:\n    sysctls: {net.ipv4.conf.all.rp_filter: 1}\n",
            name="mid.yaml")
    top = tmp_path / "a" / "b" / "top.yaml"
    top.write_text("extends: {file: ../mid.yaml, merge: true}\nnodes:\n  node2:\n    routes: "
                   "[{to: default, via: 10.100.0.1, metric: 7}]\n")
    t = load_topology(str(top))
    assert t.nodes["gw"].sysctls["net.ipv4.conf.all.rp_filter"] == 1
    assert t.nodes["node2"].routes[0].metric == 7
    assert t.nodes["node2"].iptables == str(TOPO / "kube-proxy-rules.iptables")


def test_null_deletes_a_base_entry(tmp_path: Path) -> None:
    t = load_topology(str(derived(tmp_path, "nodes:\n  node1:\n    iptables: null\n"
                                            "scenarios:\n  s3b-hairpin-off: null\n")))
    assert t.nodes["node1"].iptables is None
    assert "s3b-hairpin-off" not in t.scenarios and "s1-clusterip" in t.scenarios


@pytest.mark.parametrize("text, where", [
    ("scenarios:\n  s3b-hairpin-of: null\n", "scenarios.s3b-hairpin-of"),        # a typo: s3b-hairpin-off ran
    ("scenarios:\n  new:\n", "scenarios.new"),                                    # meant as an empty scenario
    ("nodes:\n  node1:\n    iptable: null\n", "nodes.node1.iptable"),
])
def test_null_for_an_entry_the_base_does_not_have_is_an_error(tmp_path: Path, text: str, where: str) -> None:
    """It deleted nothing without a word: the entry meant stayed, or the new one was not there."""
    d = derived(tmp_path, text)
    assert load_error(d) == (f"{d}: {where}: null deletes the base's entry, and the base has none here "
                             "(an empty new entry is {})")


def test_a_merged_scenario_keeps_its_traffic(tmp_path: Path) -> None:
    t = load_topology(str(derived(tmp_path, "scenarios:\n  s1-clusterip:\n    description: changed\n")))
    base = load_topology(str(BASE))
    assert t.scenarios["s1-clusterip"].description == "changed"
    assert t.scenarios["s1-clusterip"].traffic == base.scenarios["s1-clusterip"].traffic


def test_an_error_in_the_base_names_the_base_and_one_in_the_derived_file_names_it(tmp_path: Path) -> None:
    bad_base = tmp_path / "base.yaml"
    bad_base.write_text(BASE.read_text().replace("addresses: [10.100.0.12/24]",
                                                 "addresses: [10.100.0.12/24], mtu: 9"))
    (tmp_path / "kube-proxy-rules.iptables").write_text((TOPO / "kube-proxy-rules.iptables").read_text())
    msg = load_error(derived(tmp_path, "nodes:\n  node2:\n    routes: [{to: default, via: 10.100.0.1}]\n",
                             base=bad_base))
    assert msg == f"{bad_base}: nodes.node2.interfaces.eth0.mtu: 9 is out of range 68..65535"
    d = derived(tmp_path, "nodes:\n  node2:\n    routes: [{to: default, via: 10.9.9.9}]\n")
    assert load_error(d) == (f"{d}: nodes.node2.routes[0]: route to default: gateway 10.9.9.9 is not on a "
                             "connected network of node node2")


def test_the_extends_mapping_is_checked(tmp_path: Path) -> None:
    p = tmp_path / "d.yaml"
    p.write_text(f"extends: {{file: {BASE}, merge: yes please}}\n")
    assert load_error(p) == f"{p}: extends.merge: expected true or false, got string 'yes please'"
    p.write_text("extends: {merge: true}\n")
    assert load_error(p) == f"{p}: extends.file: required"
    p.write_text(f"extends: {{file: {BASE}, mrge: true}}\n")
    assert load_error(p).startswith(f"{p}: extends.mrge: unknown key")


def test_plain_extends_still_replaces_whole_keys(tmp_path: Path) -> None:
    """service-test-k8s.yaml restates node1 without `iptables:` and means: no rules file."""
    t = load_topology(str(TOPO / "service-test-k8s.yaml"))
    assert t.nodes["node1"].iptables is None and t.nodes["node2"].iptables is None


def test_a_merged_rules_file_reaches_the_run(tmp_path: Path) -> None:
    """The override of a whole node's rules file by merge reaches a run: an empty FORWARD chain on
    node2 is what iptables-save prints at the end."""
    (tmp_path / "open.iptables").write_text("*filter\n:FORWARD ACCEPT [0:0]\nCOMMIT\n")
    d = derived(tmp_path, "nodes:\n  node2:\n    iptables: open.iptables\n")
    out = tmp_path / "out"
    pktemu("run", str(d), "--scenario", "s2-noendpoints", "--out", str(out), "-q")
    saved = (out / "s2-noendpoints" / "iptables-save-node2.txt").read_text()
    assert "KUBE-SERVICES" not in saved and ":FORWARD ACCEPT" in saved
    assert "KUBE-SERVICES" in (out / "s2-noendpoints" / "iptables-save-node1.txt").read_text()


def test_bad_merge_input_is_one_line_exit_2(tmp_path: Path) -> None:
    d = derived(tmp_path, "nodes:\n  node1:\n    interfaces: {eth0: {addresses: [10.100.0.12/24]}}\n")
    p = pktemu("validate", str(d), check=False)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.count("\n") == 1
    assert "address 10.100.0.12 is also on nodes.node1.interfaces.eth0.addresses[0]" in p.stderr


def test_addresses_merge_by_interface(tmp_path: Path) -> None:
    t = load_topology(str(derived(tmp_path, "nodes:\n  node1:\n    interfaces:\n      eth0: "
                                            "{addresses: [10.100.0.11/24, 10.100.0.21/24]}\n")))
    assert t.nodes["node1"].interfaces["eth0"].addresses == [Address("10.100.0.11/24"),
                                                             Address("10.100.0.21/24")]
    assert t.nodes["node1"].interfaces["eth0"].mac == "02:00:0a:64:00:0b"        # the base's mac stays
