"""kube-proxy's nftables work shared by a cluster's nodes (pktemu.nftables.shared: the transactions'
results; pktemu.k8s.nft_renders: each Service port's operations): every output is what each node
writing and loading its own gives, byte for byte, and what one node changes in its table (an `nft`
action, a text that fails) stays its own."""
from __future__ import annotations

import filecmp
import json
from pathlib import Path
from typing import Any

import pytest

import datapaths
from pktemu.cli import main
from pktemu.errors import PktemuError
from pktemu.k8s import kube_proxy, nft_renders
from pktemu.nftables import shared, shared_files
from pktemu.nftables.model import NftRuleset
from pktemu.nftables.parse import load_nft
from pktemu.nftables.save import list_ruleset

CLUSTER = datapaths.ROOT / "topologies" / "generated-large-cluster.yaml"
#: the generated cluster with kube-proxy in nftables mode; node1 drops the Service's traffic at
#: 150 ms in kube-proxy's own table, after the syncs that made it and before its client's GET
TOPO = f"""extends: {{file: {CLUSTER}, merge: true}}
vars: {{nodes: 4, pods: 3}}
kubernetes:
  kube_proxy: {{for n in 1..nodes: {{"node{{n}}": {{mode: nftables}}}}}}
scenarios:
  blocked:
    description: clients, with node1's kube-proxy table changed by hand
    timeline:
      - at: 0s
        apply:
          kind: List
          items:
            - {{apiVersion: v1, kind: Service, metadata: {{name: web, namespace: default}},
               spec: {{clusterIP: 10.96.0.100, selector: {{app: web}},
                      ports: [{{protocol: TCP, port: 80, targetPort: 8080}}]}}}}
            - {{apiVersion: v1, kind: Service, metadata: {{name: local, namespace: default}},
               spec: {{type: NodePort, clusterIP: 10.96.0.101, externalTrafficPolicy: Local,
                      selector: {{app: web}},
                      ports: [{{protocol: TCP, port: 80, targetPort: 8080, nodePort: 30080}}]}}}}
            - {{apiVersion: v1, kind: Service, metadata: {{name: sticky, namespace: default}},
               spec: {{clusterIP: 10.96.0.102, sessionAffinity: ClientIP, selector: {{app: web}},
                      ports: [{{protocol: TCP, port: 80, targetPort: 8080}}]}}}}
            - for n in 1..nodes:
                - for p in 1..pods:
                    - {{apiVersion: v1, kind: Pod, metadata: {{name: "pod{{n}}-{{p}}", namespace: default,
                                                             labels: {{app: web}}}}}}
      - {{at: 150ms, node: node1,
         nft: "insert rule ip kube-proxy filter-prerouting ip daddr 10.96.0.100 tcp dport 80 drop"}}
    traffic:
      - for n in 1..nodes:
          - {{at: 200ms, pod: "pod{{n}}-1", app: {{kind: http-client, target: 10.96.0.100, port: 80}}}}
      - for k in 1..3:
          - {{at: "{{200 + 100 * k}}ms", pod: pod2-1,
             app: {{kind: http-client, target: 10.96.0.102, port: 80}}}}
"""


def _run(tmp: Path, topo: Path, out: str, on: bool, monkeypatch: pytest.MonkeyPatch,
         *args: str) -> tuple[Path, int]:
    monkeypatch.setattr(shared, "ENABLED", on)
    monkeypatch.setattr(nft_renders, "ENABLED", on)
    kube_proxy._NFT.clear()
    kube_proxy._RENDERS.clear()
    assert main(["run", str(topo), "--out", str(tmp / out), "-q", *args]) == 0
    return tmp / out, sum(s.hits for s in kube_proxy._NFT.values()) + \
        sum(r.hits for r in kube_proxy._RENDERS.values())


def _same_tree(a: Path, b: Path) -> list[Path]:
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    _, mismatch, errors = filecmp.cmpfiles(a, b, [str(f) for f in files], shallow=False)
    assert not mismatch and not errors, mismatch
    return files


def test_a_cluster_that_shares_writes_what_each_node_loading_its_own_writes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    topo = tmp_path / "nft-cluster.yaml"
    topo.write_text(TOPO)
    own, none = _run(tmp_path, topo, "own", False, monkeypatch)
    got, hits = _run(tmp_path, topo, "shared", True, monkeypatch)
    assert none == 0 and hits >= 6          # 4 nodes x 3 syncs, the first of each made once
    files = _same_tree(own, got)
    assert len([f for f in files if f.name.startswith("nft-ruleset-node")]) == 12
    for scenario in ("clients", "blocked"):
        rulesets = {n: (got / scenario / f"nft-ruleset-node{n}.txt").read_text() for n in range(1, 5)}
        assert "10.0.4.4:8080" in rulesets[2]       # every node has every endpoint
        for n in range(1, 5):                        # and its own address in nodeport-ips
            assert f"elements = {{ 172.16.0.{n + 2} }}" in rulesets[n]
        dropped = [n for n, text in rulesets.items() if "ip daddr 10.96.0.100 tcp dport 80 drop" in text]
        if scenario == "blocked":        # a Local policy: each node's own endpoints only
            # ClientIP affinity: node2's client is remembered in node2's own affinity set only
            assert "10.0.2.2 expires" in rulesets[2] and "10.0.2.2 expires" not in rulesets[3]
            assert "__10.0.1.3/8080" in rulesets[1].split("chain local-")[1].split("}")[0]
            assert "__10.0.1.3/8080" not in rulesets[2].split("chain local-")[1].split("}")[0]
        assert dropped == ([1] if scenario == "blocked" else [])
    results: list[dict[str, Any]] = json.loads((got / "blocked" / "client-result.json").read_text())
    by_source = {r["http"]["source"].split(":")[0]: r["http"] for r in results}
    assert by_source["10.0.1.2"]["error"] == "timeout"                 # node1's own drop rule
    assert all(by_source[f"10.0.{n}.2"]["status_line"] == "HTTP/1.1 200 OK" for n in (2, 3, 4))


def test_the_k8s_nftables_topology_writes_the_same_when_shared(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    topo = datapaths.ROOT / "topologies" / "service-test-k8s-nftables.yaml"
    own, _ = _run(tmp_path, topo, "own", False, monkeypatch)
    got, hits = _run(tmp_path, topo, "shared", True, monkeypatch)
    assert hits > 0
    _same_tree(own, got)


SETS = """add table ip kube-proxy
add set ip kube-proxy nodeport-ips { type ipv4_addr ; }
add chain ip kube-proxy services
add chain ip kube-proxy endpoint
add rule ip kube-proxy services ip daddr @nodeport-ips jump endpoint
add rule ip kube-proxy endpoint meta l4proto tcp dnat to 10.0.0.9:80
add element ip kube-proxy nodeport-ips { %s }
"""


def _apply(tx: shared.SharedTx, rs: NftRuleset, text: str) -> None:
    tx.apply(rs, text, "<t>", "ip", "kube-proxy")


def test_nodes_share_the_chains_and_keep_their_own_plain_sets() -> None:
    tx = shared.SharedTx()
    a, b, c = NftRuleset(), NftRuleset(), NftRuleset()
    _apply(tx, a, SETS % "172.16.0.3")
    _apply(tx, b, SETS % "172.16.0.4")
    _apply(tx, c, (SETS % "172.16.0.5").replace("10.0.0.9", "10.0.0.8"))    # a rule differs
    ta, tb, tc = (r.tables[("ip", "kube-proxy")] for r in (a, b, c))
    assert ta.chains is tb.chains and tc.chains is not ta.chains and tx.hits == 1
    for rs, addr in ((a, "172.16.0.3"), (b, "172.16.0.4"), (c, "172.16.0.5")):
        text = SETS % addr if rs is not c else (SETS % addr).replace("10.0.0.9", "10.0.0.8")
        assert list_ruleset(rs) == list_ruleset(load_nft(text, "<t>"))
    more = "add element ip kube-proxy nodeport-ips { 172.16.9.9 }\nadd chain ip kube-proxy extra\n"
    _apply(tx, a, more)
    _apply(tx, b, more)
    assert "172.16.9.9" in list_ruleset(a) and "172.16.0.3" in list_ruleset(a)
    assert "172.16.0.3" not in list_ruleset(b) and "172.16.0.4" in list_ruleset(b)
    assert a.tables[("ip", "kube-proxy")].chains is b.tables[("ip", "kube-proxy")].chains


def test_equal_texts_made_apart_share_and_a_later_other_text_does_not_pass_for_them() -> None:
    """Each node makes its text apart (equal, distinct objects): the second shares the first's
    result; a text equal to neither, sent next, loads as its own text says."""
    tx = shared.SharedTx()
    a, b, c = NftRuleset(), NftRuleset(), NftRuleset()
    text = SETS % "172.16.0.3"
    _apply(tx, a, text)
    _apply(tx, b, "".join(list(text)))
    assert tx.hits == 1
    assert a.tables[("ip", "kube-proxy")].chains is b.tables[("ip", "kube-proxy")].chains
    other = text.replace("10.0.0.9", "10.0.0.7")
    _apply(tx, c, other)
    assert list_ruleset(c) == list_ruleset(load_nft(other, "<t>")) != list_ruleset(a)


def test_a_change_of_ones_own_leaves_the_others_alone() -> None:
    tx = shared.SharedTx()
    a, b = NftRuleset(), NftRuleset()
    _apply(tx, a, SETS % "172.16.0.3")
    _apply(tx, b, SETS % "172.16.0.4")
    before = list_ruleset(b)
    load_nft("add rule ip kube-proxy services drop\n", "<action>", a)       # an `nft` action on a
    assert "drop" in list_ruleset(a) and list_ruleset(b) == before
    with pytest.raises(PktemuError, match="jump to unknown chain 'nowhere'"):
        _apply(tx, b, "add rule ip kube-proxy services jump nowhere\n")
    assert list_ruleset(b) == before


def test_a_table_whose_rules_count_is_not_shared() -> None:
    tx = shared.SharedTx()
    text = (SETS % "172.16.0.3").replace("jump endpoint", "counter jump endpoint")
    a, b = NftRuleset(), NftRuleset()
    _apply(tx, a, text)
    _apply(tx, b, text)
    ta, tb = a.tables[("ip", "kube-proxy")], b.tables[("ip", "kube-proxy")]
    assert ta.shares is None and tb.shares is None and ta.chains is not tb.chains and tx.hits == 0


def test_a_nodes_nftables_file_is_read_once_per_process(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The nftables founding topology: 4 scenarios x 2 nodes load 2 files that differ in one element
    of nodeport-ips; the first is parsed once, the second is the first's result with its own
    nodeport-ips, and every output is what a parse per node gives."""
    from pktemu.nftables import load
    topo = datapaths.ROOT / "topologies" / "service-test-nftables.yaml"
    parsed: list[str] = []
    real = load.load_nft

    def counting(text: str, path: str, *args: Any, **kw: Any) -> NftRuleset:
        parsed.append(path)
        return real(text, path, *args, **kw)
    monkeypatch.setattr(load, "load_nft", counting)
    shared_files._FILES.clear()
    own, _ = _run(tmp_path, topo, "own", False, monkeypatch)
    assert len(parsed) == 8 and len(set(parsed)) == 2
    parsed.clear()
    got, _ = _run(tmp_path, topo, "shared", True, monkeypatch)
    assert parsed == [str(datapaths.ROOT / "topologies" / "kube-proxy-rules-node1.nft")]   # node2's
    assert any(f.name.startswith("nft-ruleset-") for f in _same_tree(own, got))


def test_files_that_differ_only_in_plain_set_elements_are_read_once() -> None:
    """Three nodes' kube-proxy tables, as `add` commands and as `nft list ruleset` prints them
    (wrapped element lists): one parse each way, each node's ruleset as its own parse gives it."""
    extra = "add set ip kube-proxy many { type ipv4_addr ; }\nadd element ip kube-proxy many { %s }\n"
    texts = [SETS % f"172.16.0.{n}" + extra % ", ".join(f"10.{n}.0.{k}" for k in range(1, 6))
             for n in range(3, 6)]
    listings = [list_ruleset(load_nft(t, "<t>")) for t in texts]
    assert "10.3.0.1, 10.3.0.2,\n" in listings[0]
    for group in (texts, listings):
        shared_files._FILES.clear()
        parses: list[str] = []
        for text in group:
            def parse(text: str = text, parses: list[str] = parses) -> NftRuleset:
                parses.append(text)
                return load_nft(text, "<f>")
            assert list_ruleset(shared_files.loaded(text, parse)) == list_ruleset(load_nft(text, "<f>"))
        assert parses == group[:1]
    shared_files._FILES.clear()
    other = texts[1].replace("10.0.0.9", "10.0.0.8")          # a rule differs: read again
    for text in (texts[0], other):
        shared_files.loaded(text, lambda text=text: load_nft(text, "<f>"))
    assert list(shared_files._FILES) == [texts[0], other]
