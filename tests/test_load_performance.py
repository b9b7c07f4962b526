"""Load-time work at cluster size (issue 15): a rules text is parsed once per process however many
nodes and scenarios load it, each node still gets its own counters and extension state, and a
cluster with more capture points than `ulimit -n` allows open files runs and writes every pcap."""
from __future__ import annotations

import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pktemu.network as engine_mod
from pktemu.io.topofile import load_topology
from pktemu.netfilter.save import save_rules
from pktemu.netfilter.xt_parse import LineCache
from pktemu.netfilter.xtables import load_rules
from pktemu.network import Network

from tests import datapaths

TOPOLOGIES = Path(datapaths.ROOT) / "topologies"


def _service_test_copy(tmp_path: Path, extra_rules: str = "") -> Path:
    """service-test.yaml and its rules file under tmp_path (a rules path no other test loaded)."""
    shutil.copy(TOPOLOGIES / "service-test.yaml", tmp_path / "service-test.yaml")
    rules = (TOPOLOGIES / "kube-proxy-rules.iptables").read_text()
    if extra_rules:
        rules = rules.replace("*filter\n", "*filter\n" + extra_rules, 1)
        assert extra_rules in rules
    (tmp_path / "kube-proxy-rules.iptables").write_text(rules)
    return tmp_path / "service-test.yaml"


def test_rules_file_shared_by_nodes_and_scenarios_is_parsed_once(tmp_path: Path) -> None:
    t = load_topology(str(_service_test_copy(tmp_path)))
    sharing = [m.name for m in t.nodes.values() if m.iptables]
    assert len(sharing) >= 2
    before = engine_mod.rules_parsed
    nets = [Network(t, t.scenario(name)) for name in t.scenarios]
    assert len(nets) >= 2
    assert engine_mod.rules_parsed - before == 1
    rulesets = [net.nodes[n].nf.ruleset for net in nets for n in sharing]
    assert len({id(rs) for rs in rulesets}) == len(rulesets)
    first, other = rulesets[0], rulesets[1]
    for table in first.tables():
        for cname, chain in first.table(table).chains.items():
            twin = other.chain(table, cname)
            for r, s in zip(chain.rules, twin.rules, strict=True):
                assert r is not s
                assert [m is n for m, n in zip(r.matches, s.matches, strict=True)] == [True] * len(r.matches)
    assert save_rules(first) == save_rules(other)


def test_counters_stay_per_node(tmp_path: Path) -> None:
    t = load_topology(str(_service_test_copy(tmp_path)))
    net = Network(t, t.scenario("s1-clusterip"))
    from pktemu.api.network import Network as ApiNetwork
    api = ApiNetwork(t, "s1-clusterip", engine=net)
    api.run()
    counted = {n: save_rules(net.nodes[n].nf.ruleset) for n in ("node1", "node2")}
    assert counted["node1"] != counted["node2"]           # node1 DNATs the client's SYN, node2 does not
    fresh = Network(t, t.scenario("s1-clusterip"))        # from the cache: no counts carried over
    zero = save_rules(fresh.nodes["node1"].nf.ruleset)
    assert zero != counted["node1"]
    assert zero == save_rules(load_rules((tmp_path / "kube-proxy-rules.iptables").read_text(), "x"))


def test_stateful_extensions_get_their_own_object_per_node(tmp_path: Path) -> None:
    nth = "-A FORWARD -m statistic --mode nth --every 3 -j ACCEPT\n"
    t = load_topology(str(_service_test_copy(tmp_path, nth)))
    net = Network(t)
    a, b = (net.nodes[n].nf.ruleset.chain("filter", "FORWARD").rules for n in ("node1", "node2"))
    ra = next(r for r in a if r.matches and r.matches[0].ext_name == "statistic")
    rb = next(r for r in b if r.matches and r.matches[0].ext_name == "statistic")
    assert ra.matches[0] is not rb.matches[0]
    assert ra.compiled()[0] != rb.compiled()[0]


def test_a_bad_rules_file_still_fails_every_run(tmp_path: Path) -> None:
    """The cache keeps only what parsed: the same bad text fails again, with its line."""
    path = _service_test_copy(tmp_path, "-A FORWARD -m nosuchmatch -j ACCEPT\n")
    for _ in range(2):
        p = subprocess.run([sys.executable, "-m", "pktemu.cli", "run", str(path), "--out",
                            str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
        assert p.returncode == 2
        assert "kube-proxy-rules.iptables:" in p.stderr and "nosuchmatch" in p.stderr
        assert len(p.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "out").exists()


def test_more_capture_points_than_open_files_allowed(tmp_path: Path) -> None:
    """40 nodes x 30 pods: 2,520 capture points under `ulimit -n 1024`; every pcap is written."""
    topo_file = tmp_path / "big.yaml"
    topo_file.write_text(f"extends: {{file: {TOPOLOGIES / 'generated-cluster.yaml'}, merge: true}}\n"
                         "vars: {nodes: 40, pods: 30}\n")
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, "-m", "pktemu.cli", "run", str(topo_file), "--out", str(out), "-q"],
                       capture_output=True, text=True, timeout=300, cwd=datapaths.ROOT,
                       preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024)))
    assert p.returncode == 0, p.stderr
    assert p.stderr == ""
    points = [line.split("\t")[0] for line in (out / "clients" / "captures.tsv").read_text().splitlines()]
    assert len(points) > 1024
    pcaps = {f.stem for f in (out / "clients" / "pcap").iterdir()}
    assert pcaps == set(points)
    for name in points:
        data = (out / "clients" / "pcap" / f"{name}.pcap").read_bytes()
        assert data[:4] == bytes.fromhex("4d3cb2a1")
    assert [f.name for f in out.rglob(".*")] == []


def test_kube_proxy_line_cache_reuses_parsed_lines() -> None:
    """kube-proxy restores nearly the same text every sync on every node: a line parsed before is
    copied, except one whose extension keeps state of its own (an nth counter)."""
    nth = "-A FORWARD -m statistic --mode nth --every 3 -j ACCEPT\n"
    text = (TOPOLOGIES / "kube-proxy-rules.iptables").read_text().replace("*filter\n", "*filter\n" + nth, 1)
    assert nth in text
    cache = LineCache()
    first = load_rules(text, "first", cache=cache)
    parsed = cache.parsed
    second = load_rules(text, "second", cache=cache)
    assert cache.parsed - parsed == 1
    assert save_rules(first) == save_rules(second) == save_rules(load_rules(text, "plain"))
    rules = [r for c in second.table("nat").chains.values() for r in c.rules]
    assert rules and all(r.where.startswith("second:") for r in rules)


def test_the_load_benchmark_runs_and_reports_every_figure() -> None:
    """`python -m pktemu.bench_load` (figures, not timing assertions): a kube-proxy sync of N Services
    x 5 endpoints yields per Service its KUBE-SVC jump, 5 KUBE-SEP chains and their rules."""
    import json
    import subprocess
    import sys
    p = subprocess.run([sys.executable, "-m", "pktemu.bench_load", "--services", "40", "--repeat", "1",
                        "--json"], capture_output=True, text=True, timeout=120, check=True)
    r = json.loads(p.stdout)
    assert set(r) == {"manifests_s", "sync_s", "sync_again_s", "rules", "rules_load_s", "copy_s",
                      "bytes_per_rule"}
    assert r["rules"] > 40 * 5 * 2 and all(v > 0 for v in r.values())
