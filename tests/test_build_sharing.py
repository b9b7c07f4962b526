"""What one process shares between the networks it builds: parsed rules tables (borrowed by every
node until it counts or changes them) and validated topologies. Whatever is shared, each node
counts and prints on its own, and a changed or missing input file is seen as in a fresh process."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import datapaths
from conftest import pktemu
from pktemu import Network
from pktemu.errors import PktemuError
from pktemu.io.topofile import load_topology
from pktemu.network import Network as Engine
from pktemu.network import shared_rules
from pktemu.netfilter.xtables import Ruleset, load_rules, save_rules

RULES = """*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
-A PREROUTING -j KUBE-SERVICES
-A KUBE-SERVICES -d 10.3.0.1/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.0.2.2:8080
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -s 10.0.1.0/24 -j ACCEPT
COMMIT
"""
#: a table whose rules keep state per namespace (a recent list, a LOG sink): never shared
STATEFUL = """*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -m recent --name seen --set
-A FORWARD -j LOG --log-prefix "fwd "
COMMIT
"""


def _zero_save(text: str) -> str:
    return save_rules(load_rules(text, "<rules>"), counters=True)


def _two_node_net(tmp_path: Path, rules: str) -> Network:
    (tmp_path / "rules.iptables").write_text(rules)
    topo = tmp_path / "t.yaml"
    topo.write_text("""
nodes:
  a:
    sysctls: {net.ipv4.ip_forward: 1}
    interfaces: {eth0: {mac: "02:00:00:00:00:01", addresses: [10.0.1.1/24]}}
    iptables: rules.iptables
  b:
    interfaces: {eth0: {mac: "02:00:00:00:00:02", addresses: [10.0.1.2/24]}}
    iptables: rules.iptables
veths:
  - [a/eth0, b/eth0]
""")
    return Network.load(str(topo))


def test_nodes_share_tables_until_they_count(tmp_path: Path) -> None:
    net = _two_node_net(tmp_path, RULES)
    a, b = net.engine.nodes["a"].nf.ruleset, net.engine.nodes["b"].nf.ruleset
    shared = a.view("nat")
    assert b.view("nat") is shared                     # borrowed from the one parse
    assert save_rules(b, counters=True) == _zero_save(RULES)
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether
    # to a from an address nobody has: a answers into the void (ARP only), b sees no IPv4 at all
    net.sendp("a/eth0", Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:09")
              / IP(src="10.0.1.9", dst="10.0.1.1") / TCP(dport=22))
    net.run(duration=0.1)
    # a counts in counters of its own, still walking the shared table: no copy for a packet
    assert a.view("nat") is shared and b.view("nat") is shared
    assert a.counted("nat") and b.counted("nat") is None
    assert "[1:40] -A PREROUTING -j KUBE-SERVICES" in save_rules(a, counters=True)
    # a copy made later (a change) starts from what a counted
    assert "[1:40] -A PREROUTING -j KUBE-SERVICES" in save_rules(a.copy(), counters=True)
    a.table("nat")
    assert a.view("nat") is not shared and a.counted("nat") is None
    assert "[1:40] -A PREROUTING -j KUBE-SERVICES" in save_rules(a, counters=True)
    assert save_rules(b, counters=True) == _zero_save(RULES)
    # another network from the same file starts from zero: nobody counted in the template
    other = _two_node_net(tmp_path, RULES)
    assert save_rules(other.engine.nodes["a"].nf.ruleset, counters=True) == _zero_save(RULES)


def test_changing_a_borrowed_table_changes_only_that_node(tmp_path: Path) -> None:
    net = _two_node_net(tmp_path, RULES)
    net.cmd("a", "iptables -t filter -A FORWARD -j DROP")
    a, b = net.engine.nodes["a"].nf.ruleset, net.engine.nodes["b"].nf.ruleset
    assert "-A FORWARD -j DROP" in save_rules(a)
    assert "-A FORWARD -j DROP" not in save_rules(b)
    b.table("filter").chains["FORWARD"].rules[0].pkts = 3         # what `table` gives is b's own
    assert "[3:0] -A FORWARD" in save_rules(b, counters=True)
    b.zero_counters()
    assert save_rules(b, counters=True) == _zero_save(RULES)
    assert save_rules(_two_node_net(tmp_path, RULES).engine.nodes["a"].nf.ruleset) == _zero_save(RULES)


def test_borrow_prints_and_walks_as_a_copy() -> None:
    template = load_rules(RULES, "<rules>")
    borrowed, copied = template.borrow("x"), template.copy("x")
    assert save_rules(borrowed) == save_rules(copied) == save_rules(template)
    assert borrowed.tables() == copied.tables() == ["nat", "filter"]
    assert [r.body for r in borrowed.table("nat").chains["KUBE-SERVICES"].rules] == \
        [r.body for r in copied.table("nat").chains["KUBE-SERVICES"].rules]
    assert borrowed.table("nat") is not template.view("nat")       # `table` gives the node's own
    assert borrowed.view("filter") is template.view("filter")


def test_stateful_tables_are_never_shared() -> None:
    template = load_rules(STATEFUL, "<rules>")
    one, two = template.borrow("one"), template.borrow("two")
    assert one.view("filter") is not template.view("filter")
    assert one.view("filter") is not two.view("filter")
    assert save_rules(one) == save_rules(two) == save_rules(template)


def test_shared_rules_give_each_node_its_own_counters(tmp_path: Path) -> None:
    path = tmp_path / "r.iptables"
    path.write_text(RULES)
    first, second = shared_rules(str(path)), shared_rules(str(path))
    assert isinstance(first, Ruleset) and first is not second
    first.table("filter").chains["FORWARD"].rules[0].pkts = 7
    assert "[0:0] -A FORWARD" in save_rules(second, counters=True)
    assert "[0:0] -A FORWARD" in save_rules(shared_rules(str(path)), counters=True)


def test_every_scenario_of_the_founding_topology_counts_alone() -> None:
    """node2 sees no packet in s2/s3/s3b: its tables stay borrowed and print [0:0] throughout,
    while node1's own copies count; building a scenario twice gives the same text."""
    t = load_topology(str(datapaths.ROOT / "topologies" / "service-test.yaml"))
    texts = {}
    for name in t.scenarios:
        net = Network(t, name, engine=Engine(t, t.scenario(name)))
        net.run()
        texts[name] = {n: save_rules(node.nf.ruleset) for n, node in net.engine.nodes.items()
                       if node.nf.ruleset is not None}
    zero = save_rules(shared_rules(str(datapaths.ROOT / "topologies" / "kube-proxy-rules.iptables")))
    for name in ("s2-noendpoints", "s3-hairpin", "s3b-hairpin-off"):
        assert texts[name]["node2"] == zero
        assert texts[name]["node1"] != zero
    assert texts["s1-clusterip"]["node2"] != zero


# ---------------------------------------------------------------------------- topologies


def _copy_topology(tmp_path: Path) -> Path:
    src = datapaths.ROOT / "topologies"
    for f in ("service-test.yaml", "kube-proxy-rules.iptables"):
        shutil.copy(src / f, tmp_path / f)
    return tmp_path / "service-test.yaml"


def test_a_topology_loaded_again_is_equal_and_its_own(tmp_path: Path) -> None:
    path = str(_copy_topology(tmp_path))
    first = load_topology(path)
    first.nodes["node1"].sysctls["net.ipv4.ip_forward"] = 0          # a caller may change its copy
    again = load_topology(path)
    assert again.nodes["node1"].sysctls["net.ipv4.ip_forward"] == 1
    assert again is not first and again.nodes is not first.nodes
    assert again == load_topology(path)


def test_a_changed_topology_file_is_read_again(tmp_path: Path) -> None:
    path = _copy_topology(tmp_path)
    load_topology(str(path))
    path.write_text(path.read_text().replace("seed: 1", "seed: 7"))
    assert load_topology(str(path)).seed == 7


def test_a_rules_file_removed_after_a_load_is_an_error_again(tmp_path: Path) -> None:
    path = _copy_topology(tmp_path)
    load_topology(str(path))
    os.unlink(tmp_path / "kube-proxy-rules.iptables")
    with pytest.raises(PktemuError) as cached:
        load_topology(str(path))
    assert "nodes.node1.iptables" in str(cached.value) and "no such file" in str(cached.value)
    p = pktemu("run", str(path), "--out", str(tmp_path / "out"), check=False)
    assert p.returncode == 2 and p.stderr.strip() == f"pktemu: error: {cached.value}"
    assert not (tmp_path / "out").exists()


def test_a_changed_base_file_is_read_again(tmp_path: Path) -> None:
    base = _copy_topology(tmp_path)
    derived = tmp_path / "derived.yaml"
    derived.write_text("extends: service-test.yaml\nname: derived\n")
    assert load_topology(str(derived)).seed == 1
    base.write_text(base.read_text().replace("seed: 1", "seed: 9"))
    assert load_topology(str(derived)).seed == 9
    os.unlink(base)
    with pytest.raises(PktemuError, match="extends"):
        load_topology(str(derived))


def test_relative_paths_follow_the_working_directory(tmp_path: Path) -> None:
    """A topology named by a relative path: the same name from another folder is another file."""
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    _copy_topology(one)
    _copy_topology(two)
    second = two / "service-test.yaml"
    second.write_text(second.read_text().replace("seed: 1", "seed: 5"))
    cwd = os.getcwd()
    try:
        os.chdir(one)
        assert load_topology("service-test.yaml").seed == 1
        os.chdir(two)
        loaded = load_topology("service-test.yaml")
        assert loaded.seed == 5
        assert loaded.nodes["node1"].iptables == str(two / "kube-proxy-rules.iptables")
    finally:
        os.chdir(cwd)


def test_runs_in_one_process_write_the_same_bytes(tmp_path: Path) -> None:
    """What the first run leaves in the shared templates and caches changes nothing for the next."""
    from pktemu.cli import main
    path = str(_copy_topology(tmp_path))
    for k in range(3):
        assert main(["run", path, "--out", str(tmp_path / f"out{k}"), "-q"]) == 0
    files = sorted(p.relative_to(tmp_path / "out0") for p in (tmp_path / "out0").rglob("*") if p.is_file())
    assert len(files) >= 4 * 20           # pcaps, all.pcapng, state files of every scenario
    for k in (1, 2):
        assert sorted(p.relative_to(tmp_path / f"out{k}") for p in (tmp_path / f"out{k}").rglob("*")
                      if p.is_file()) == files
        for f in files:
            assert (tmp_path / f"out{k}" / f).read_bytes() == (tmp_path / "out0" / f).read_bytes(), f


#: a kube-proxy-like nat table with a long chain, so a count lands amid the lines of one text
_LONG = ("*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n"
         ":KUBE-SERVICES - [0:0]\n:KUBE-SVC-A - [0:0]\n:KUBE-EMPTY - [0:0]\n"
         "-A PREROUTING -j KUBE-SERVICES\n-A OUTPUT -j KUBE-SERVICES\n"
         + "".join(f"-A KUBE-SERVICES -d 10.3.{i // 250}.{i % 250 + 1}/32 -p tcp -m tcp --dport 80 "
                   "-j KUBE-SVC-A\n" for i in range(300))
         + "".join(f"-A KUBE-SVC-A -p tcp -m statistic --mode random --probability 0.{i + 1:011d} "
                   f"-j DNAT --to-destination 10.0.{i // 200}.{i % 200 + 2}:8080\n" for i in range(120))
         + "COMMIT\n")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["PREROUTING", "OUTPUT", "KUBE-SERVICES", "KUBE-SVC-A"]),
                          st.integers(0, 299), st.integers(1, 9), st.integers(40, 1500)),
                max_size=8))
def test_a_borrowed_table_with_counts_prints_as_its_own_copy(hits: list[tuple[str, int, int, int]]) -> None:
    """A node's counts in a shared (template) table are cut into the template's text: what it prints
    is what its own copy with the same counters prints, wherever the counted rules are."""
    template = load_rules(_LONG, "<rules>")
    borrowed, own = template.borrow("x"), template.copy("x")
    t = template.view("nat")
    counts: dict[object, list[int]] = {}
    for chain, at, pkts, size in hits:
        rules = t.chains[chain].rules
        r = rules[at % len(rules)]
        n = counts.setdefault(r, [0, 0])
        n[0] += pkts
        n[1] += pkts * size
        mine = own.table("nat").chains[chain].rules[at % len(rules)]
        mine.pkts += pkts
        mine.bytes += pkts * size
    borrowed.adopt({"nat": t}, {"nat": counts})
    assert borrowed.borrowed("nat")
    assert save_rules(borrowed, counters=True) == save_rules(own, counters=True)
    assert save_rules(borrowed, counters=False) == save_rules(own, counters=False)
