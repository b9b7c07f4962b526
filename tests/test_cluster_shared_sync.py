"""A cluster's kube-proxies share what is alike on every node: the endpoint maps (each node's
own endpoints marked local), the rule lines of services that do not look at locality, and the
tables a restore makes (`SharedRestores`: nodes that restore the same text onto the same
templates borrow one result and count in counters of their own). Each is held here to the
result of doing the same work node by node, unshared: same text, same packets, same counters."""
from __future__ import annotations

import dataclasses
import gc
import re
from pathlib import Path

import pytest
import yaml
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from conftest import pktemu
from datapaths import ROOT

from pktemu.bench.rules import _Node, first_packet, render as oracle_render
from pktemu.bench_load import manifests_text
from pktemu.cli import main
from pktemu.errors import PktemuError
from pktemu.k8s import manifests
from pktemu.k8s.objects import Endpoint, EndpointConditions, EndpointPort, EndpointSlice, ObjectMeta, Service
from pktemu.k8s.proxier_iptables import IptablesOptions, ServiceLines, render
from pktemu.k8s.proxy_state import LocalView, Records, endpoints_map, service_ports
from pktemu.netfilter.hooks import Netfilter
from pktemu.netfilter.restore_shared import SharedRestores
from pktemu.netfilter.xtables import Ruleset, load_rules, save_rules

CLUSTER = ROOT / "topologies" / "generated-large-cluster.yaml"
BASE = """*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -s 192.0.2.0/24 -j DROP
COMMIT
"""
CANARY = "".join(f"*{t}\n:KUBE-PROXY-CANARY - [0:0]\nCOMMIT\n" for t in ("mangle", "nat", "filter"))


def _syn(dst: str, sport: int) -> bytes:
    return bytes(Ether(src="0a:58:0a:00:01:02", dst="0a:58:0a:00:01:01")
                 / IP(src="10.0.1.2", dst=dst) / TCP(sport=sport, dport=80, flags="S"))


def _group(n: int, base: Ruleset) -> list[Ruleset]:
    return [base.borrow(f"node{i}") for i in range(n)]


def test_shared_restores_give_every_node_what_its_own_restore_gives() -> None:
    """Three nodes borrow one parsed rules file; kube-proxy's canary and a full sync of 30
    Services are restored through SharedRestores on them and plainly on three copies: same
    iptables-save; one table object for all three; then packets on each count apart, and a
    later restore onto a node that counted goes the unshared way, with the same result."""
    base = load_rules(BASE, "<rules>")
    text = oracle_render("iptables", 30)
    shared, plain = _group(3, base), [base.copy(f"node{i}") for i in range(3)]
    restores = SharedRestores()
    for step in (CANARY, text):
        for i in range(3):
            restores.restore(step, f"<kube-proxy node{i}>", shared[i], noflush=True)
            load_rules(step, f"<kube-proxy node{i}>", ruleset=plain[i], noflush=True)
    assert restores.hits == 4                           # node1 and node2, both steps
    assert shared[0].view("nat") is shared[1].view("nat") is shared[2].view("nat")
    assert shared[0].view("filter") is shared[2].view("filter")
    assert [save_rules(r) for r in shared] == [save_rules(r) for r in plain]
    ips = [f"172.20.0.{k + 1}" for k in range(30)]
    for i in range(3):
        nfs = []
        for rs in (shared[i], plain[i]):
            node = _Node()
            node.nf = Netfilter(node, rs)               # type: ignore[arg-type]
            nfs.append(node.nf)
        for k in range(i + 1):                          # node i opens i + 1 connections
            a, va = first_packet(nfs[0], _syn(ips[7 * i + k], 40000 + k))
            b, vb = first_packet(nfs[1], _syn(ips[7 * i + k], 40000 + k))
            assert (va, a.daddr, a.dport, [str(x) for x in a.notes]) == \
                (vb, b.daddr, b.dport, [str(x) for x in b.notes])
            assert a.dport == 8080
    assert shared[0].view("nat") is shared[2].view("nat")          # counting copied nothing
    saved = [save_rules(r, counters=True) for r in shared]
    assert saved == [save_rules(r, counters=True) for r in plain]
    assert [len(re.findall(r"^\[1:40\] -A KUBE-SEP-\S+ .*DNAT", s, re.M)) for s in saved] == [1, 2, 3]
    # a sync after traffic (one Service fewer, its chains deleted): still one result for all,
    # each node's counts carried onto the rules the restore kept, as in its own copy
    again = oracle_render("iptables", 29)
    for i in range(3):
        restores.restore(again, f"<kube-proxy node{i}>", shared[i], noflush=True)
        load_rules(again, f"<kube-proxy node{i}>", ruleset=plain[i], noflush=True)
    assert restores.hits == 6
    assert shared[0].view("nat") is shared[1].view("nat") is shared[2].view("nat")
    saved = [save_rules(r, counters=True) for r in shared]
    assert saved == [save_rules(r, counters=True) for r in plain]
    assert saved[0] != saved[1] and "[1:40] -A PREROUTING" in saved[0] and "[2:80] -A PREROUTING" in saved[1]
    # one that zeroes counters is each node's own
    zero = "*nat\n-Z\nCOMMIT\n"
    for i in range(3):
        restores.restore(zero, f"<kube-proxy node{i}>", shared[i], noflush=True)
        load_rules(zero, f"<kube-proxy node{i}>", ruleset=plain[i], noflush=True)
    assert restores.hits == 6 and shared[0].view("nat") is not shared[1].view("nat")
    assert [save_rules(r, counters=True) for r in shared] == [save_rules(r, counters=True) for r in plain]
    assert "[1:40]" not in save_rules(shared[0].copy(), counters=True).split("*nat")[1].split("COMMIT")[0]


def test_a_bad_restore_fails_alike_and_changes_nothing() -> None:
    base = load_rules(BASE, "<rules>")
    rs, before = base.borrow("n"), save_rules(base)
    bad = "*nat\n:KUBE-SERVICES - [0:0]\n-A KUBE-SERVICES -j NOWHERE\nCOMMIT\n"
    with pytest.raises(PktemuError) as shared_err:
        SharedRestores().restore(bad, "<kube-proxy n>", rs, noflush=True)
    with pytest.raises(PktemuError) as plain_err:
        load_rules(bad, "<kube-proxy n>", ruleset=base.copy("n"), noflush=True)
    assert str(shared_err.value) == str(plain_err.value)
    assert "<kube-proxy n>:3" in str(shared_err.value)
    assert save_rules(rs) == before and rs.view("filter") is base.view("filter")


def test_tables_with_per_node_state_are_restored_apart() -> None:
    """A `recent` list is each node's own: such a result is never shared."""
    text = "*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD -m recent --name seen --set\nCOMMIT\n"
    restores = SharedRestores()
    one, two = Ruleset("one"), Ruleset("two")
    restores.restore(text, "<a>", one)
    restores.restore(text, "<b>", two)
    assert restores.hits == 0 and one.view("filter") is not two.view("filter")
    assert save_rules(one) == save_rules(two) == save_rules(load_rules(text, "<c>"))


def _slices() -> list[EndpointSlice]:
    """Two Services' slices over four nodes, with an address listed twice (not ready, then ready)
    and one endpoint without a node."""
    def ep(ip: str, node: str | None, ready: bool = True) -> Endpoint:
        return Endpoint([ip], EndpointConditions(ready, ready, False), node)
    web = [ep(f"10.0.{n}.{p}", f"node{n}") for n in (1, 2, 3) for p in (2, 3)]
    web += [ep("10.0.4.9", "node4", ready=False), ep("10.0.4.9", "node3"), ep("10.0.9.9", None)]
    db = [ep("10.0.2.7", "node2"), ep("10.0.1.7", "node1", ready=False)]
    http, pg = [EndpointPort(8080, "TCP", "")], [EndpointPort(5432, "TCP", "pg")]
    return [EndpointSlice(ObjectMeta("web-a", "default"), "web", "IPv4", web[:5], http),
            EndpointSlice(ObjectMeta("web-b", "default"), "web", "IPv4", web[5:], http),
            EndpointSlice(ObjectMeta("db-a", "default"), "db", "IPv4", db, pg)]


@pytest.mark.parametrize("node", ["node1", "node2", "node3", "node4", "elsewhere"])
def test_shared_endpoint_maps_equal_each_nodes_own(node: str) -> None:
    slices, records = _slices(), Records()
    endpoints_map(slices, "node1", records)             # another node made the shared map first
    mine = endpoints_map(list(reversed(slices)), node, records)
    own = endpoints_map(slices, node)
    assert mine == own
    assert {e.endpoint for eps in mine.values() for e in eps if e.is_local} == \
        {e.endpoint for eps in own.values() for e in eps if e.is_local}
    for spn, eps in mine.items():                     # lists without a local endpoint: one object
        local = any(e.is_local for e in eps)
        assert isinstance(eps, LocalView) == local
        assert (eps is endpoints_map(slices, "elsewhere", records)[spn]) == (not local)


def test_shared_service_lines_render_what_each_node_renders() -> None:
    """A full sync of 20 Services (5 endpoints each on node0..node4), one with an internal
    traffic policy of Local: rendered with the cluster's ServiceLines on every node, and alone."""
    objs = manifests.load_text(manifests_text(20, slices=True), "<test>")
    records, lines = Records(), ServiceLines()
    svcs = service_ports([o for o in objs if isinstance(o, Service)], records)
    first = next(iter(svcs))
    svcs[first] = records(dataclasses.replace(svcs[first], internal_policy="Local"))
    slices = [o for o in objs if isinstance(o, EndpointSlice)]
    texts = set()
    for node in ("node0", "node1", "node4", "node9"):
        opts = IptablesOptions(cluster_cidr="10.0.0.0/8", node_ip=f"172.16.0.{len(node)}")
        eps = endpoints_map(slices, node, records)
        shared = render(svcs, eps, opts, Ruleset(), None, lines)
        assert shared == render(svcs, endpoints_map(slices, node), opts, Ruleset())
        texts.add(shared)
    assert len(texts) == 4            # the Local service's KUBE-SVL chain differs node by node


def test_each_node_of_a_cluster_counts_its_own_connection(tmp_path: Path) -> None:
    """`pktemu run` of a 6 x 3 generated cluster, scenario clients: the nodes share one kube-proxy
    nat table, but each node's iptables-save counts exactly its own client's connection: one
    KUBE-SEP DNAT rule at [1:60], whose endpoint is the one in that node's conntrack listing."""
    topo = tmp_path / "c.yaml"
    topo.write_text(f"extends: {{file: {CLUSTER}, merge: true}}\nvars: {{nodes: 6, pods: 3}}\n")
    r = pktemu("run", str(topo), "--scenario", "clients", "--out", str(tmp_path / "out"), "-q")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "out" / "clients"
    rules = set()
    for n in range(1, 7):
        saved = (out / f"iptables-save-node{n}.txt").read_text()
        hits = re.findall(r"^\[1:60\] -A KUBE-SEP-\S+ .*--to-destination (\S+):8080$", saved, re.M)
        assert len(hits) == 1, saved
        assert re.search(rf"^tcp .* dst=10\.96\.0\.100 .* src={re.escape(hits[0])} dst=10\.0\.{n}\.2 ",
                         (out / f"conntrack-node{n}.txt").read_text(), re.M)
        rules.add("\n".join(ln.split("] ", 1)[-1] for ln in saved.splitlines()))
    assert len(rules) == 1                               # apart from counters, one ruleset


def test_run_leaves_the_garbage_collector_as_it_found_it(tmp_path: Path) -> None:
    """`pktemu run` keeps the built network out of the cyclic GC's passes (gc.freeze) during the
    run only: an in-process caller gets its GC back unfrozen, after a run and after a failure."""
    topo = tmp_path / "c.yaml"
    topo.write_text(f"extends: {{file: {CLUSTER}, merge: true}}\nvars: {{nodes: 2, pods: 1}}\n")
    assert main(["run", str(topo), "--scenario", "direct", "--out", str(tmp_path / "o"), "-q"]) == 0
    assert gc.get_freeze_count() == 0 and gc.isenabled()
    bad = tmp_path / "bad.yaml"
    bad.write_text("nodes: {a: {interfaces: {eth0: {addresses: [nonsense]}}}}\n")
    assert main(["run", str(bad), "--out", str(tmp_path / "o2"), "-q"]) == 2
    assert gc.get_freeze_count() == 0 and gc.isenabled()


def test_a_run_leaves_a_callers_own_frozen_objects_frozen(tmp_path: Path) -> None:
    """A program that froze objects of its own (gc.freeze) gets them back frozen after a run whose
    kube-proxies restore rules mid-run (each restore moves its young objects out of the way with a
    freeze of its own only when nothing is frozen), and the run does not freeze or thaw anything
    for it."""
    topo = tmp_path / "c.yaml"
    topo.write_text(f"extends: {{file: {CLUSTER}, merge: true}}\nvars: {{nodes: 2, pods: 2}}\n")
    gc.collect()
    mine = [[k] for k in range(1000)]
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        assert frozen >= len(mine)
        assert main(["run", str(topo), "--scenario", "clients", "--out", str(tmp_path / "o"), "-q"]) == 0
        assert gc.isenabled() and gc.get_freeze_count() >= len(mine)
        assert not any(o is mine[0] for o in gc.get_objects())   # frozen objects are in no generation
        assert frozen - gc.get_freeze_count() < len(mine)
        assert "hello from pod" in (tmp_path / "o" / "clients" / "client-result.json").read_text()
    finally:
        gc.unfreeze()
    assert main(["run", str(topo), "--scenario", "clients", "--out", str(tmp_path / "o2"), "-q"]) == 0
    assert gc.get_freeze_count() == 0


def test_a_sync_after_the_traffic_keeps_each_nodes_counts(tmp_path: Path) -> None:
    """A 4 x 3 cluster whose clients connect at 200 ms, then pod4-3 is deleted at 700 ms: every
    kube-proxy syncs again after its node counted. Each node keeps its own counts on the rules
    the sync leaves alone (the jumps from the built-in chains: one SYN and the rest of its
    connection's first packets each), the chains the sync writes again start from zero (as
    iptables-restore flushes them), and no node keeps the deleted pod's endpoint."""
    topo = tmp_path / "c.yaml"
    clients = yaml.safe_load(CLUSTER.read_text())["scenarios"]["clients"]
    clients["timeline"].append({"at": "700ms", "delete": "Pod/default/pod4-3"})
    topo.write_text(yaml.safe_dump({"extends": {"file": str(CLUSTER), "merge": True},
                                    "vars": {"nodes": 4, "pods": 3}, "scenarios": {"churn": clients}}))
    r = pktemu("run", str(topo), "--scenario", "churn", "--out", str(tmp_path / "out"), "-q")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "out" / "churn"
    assert "0.700000 - delete Pod/default/pod4-3 [ok]" in (out / "timeline.txt").read_text()
    jumps = set()
    for n in range(1, 5):
        saved = (out / f"iptables-save-node{n}.txt").read_text()
        assert "10.0.4.4" not in saved
        jump = re.findall(r"^\[(\d+):\d+\] -A PREROUTING .* -j KUBE-SERVICES$", saved, re.M)
        assert len(jump) == 1 and int(jump[0]) >= 1, saved
        jumps.add(int(jump[0]))
        assert not re.findall(r"^\[[1-9]\d*:\d+\] -A KUBE-(SEP|SVC|SERVICES)", saved, re.M), saved
    assert len(jumps) > 1                 # nodes counted apart: not one shared counter
