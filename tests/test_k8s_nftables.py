"""kube-proxy's nftables mode (pktemu.k8s.proxier_nftables): upstream's TestOverallNFTablesRules,
the transactions of later syncs, and the founding topology with kube-proxy writing its v1.33
ruleset, held to the kernel's stored nftables run."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import compare, pktemu, summarize

import datapaths
from pktemu.k8s.manifests import load_text
from pktemu.k8s.objects import EndpointSlice, Service
from pktemu.k8s.nft_service import hash_and_truncate
from pktemu.k8s.proxier_nftables import LAYOUTS, NftablesOptions, NftablesProxier
from pktemu.k8s.proxy_state import EndpointsMap, ServicePortMap, endpoints_map, service_ports
from pktemu.nftables.parse import load_nft

DATA = datapaths.DATA / "k8s-nftables"
TOPO = datapaths.ROOT / "topologies" / "service-test-k8s-nftables.yaml"
REF = datapaths.ORACLE_REF_NFT
SCENARIOS = ("s1-clusterip", "s2-noendpoints", "s3-hairpin", "s3b-hairpin-off")


def _lines(text: str) -> list[str]:
    """assertNFTablesTransactionEqual's view: blank lines and comments dropped, lines sorted."""
    return sorted(ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#"))


def _maps(text: str) -> tuple[ServicePortMap, EndpointsMap]:
    objs = load_text(text, "<test>")
    return (service_ports([o for o in objs if isinstance(o, Service)]),
            endpoints_map([o for o in objs if isinstance(o, EndpointSlice)], "test-node"))


def _fake_proxier(version: str) -> NftablesProxier:
    """NewFakeProxier(IPv4): pods 10.0.0.0/8, ClusterIPs 172.30.0.0/16, node IP 192.168.0.2 (the
    only --nodeport-addresses), masquerade mark 0x4000, fully-random masquerade."""
    return NftablesProxier(NftablesOptions("10.0.0.0/8", False, True, "192.168.0.2", ("192.168.0.2",),
                                           "172.30.0.0/16", version=version))


def test_overall_nftables_rules_are_upstreams_line_for_line() -> None:
    """TestOverallNFTablesRules: the six Services and five EndpointSlices of the test, one full sync,
    and the table knftables' Fake dumps compared with the expected text as upstream compares it."""
    svcs, eps = _maps((DATA / "overall-manifests.yaml").read_text())
    p = _fake_proxier("1.34")
    p.sync(svcs, eps)
    expected = _lines((DATA / "overall-rules.nft").read_text())
    got = _lines(p.fake.dump())
    assert len(expected) == 122
    assert [ln for ln in expected if ln not in got] == []
    assert got == expected


def test_overall_in_the_v1_33_layout_differs_only_where_v1_33_did() -> None:
    """The same sync in v1.33.0's layout: the filter base chains and their jumps, and `tcp dport 80`
    in each service chain's masquerade rule; nothing else."""
    svcs, eps = _maps((DATA / "overall-manifests.yaml").read_text())
    p = _fake_proxier("1.33")
    p.sync(svcs, eps)
    got = set(_lines(p.fake.dump()))
    upstream = set(_lines((DATA / "overall-rules.nft").read_text()))
    ours_only, theirs_only = got - upstream, upstream - got
    assert len(ours_only) == len(theirs_only) == 13
    svc_rules = {ln for ln in ours_only if " service-" in ln}
    without_dport = {ln.replace(" tcp dport 80", "") for ln in svc_rules}
    assert without_dport == {ln for ln in theirs_only if " service-" in ln}
    assert len(svc_rules) == 5 and all(" filter-" in ln for ln in ours_only - svc_rules)
    assert "add chain ip kube-proxy filter-output-post-dnat { type filter hook output priority -90 ; }" in got


def test_chain_names_are_hashed_as_upstream() -> None:
    assert hash_and_truncate("ns1/svc1/tcp/p80") == "ULMVA6XW-ns1/svc1/tcp/p80"
    assert hash_and_truncate("kube-system/kube-dns/udp/dns") == "FY5PMXPG-kube-system/kube-dns/udp/dns"
    long = hash_and_truncate("n" * 300)
    assert len(long) == 240 and long.endswith("...")


SVC7 = """
apiVersion: v1
kind: Service
metadata: {name: svc7, namespace: ns7}
spec:
  clusterIP: 172.30.0.47
  ports: [{name: p80, port: 80, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: svc7-1, namespace: ns7, labels: {kubernetes.io/service-name: svc7}}
addressType: IPv4
endpoints: [{addresses: [10.180.0.7]}%s]
ports: [{name: p80, port: 80, protocol: TCP}]
"""


def test_later_syncs_send_only_what_changed() -> None:
    """A Service added, its endpoints changed, then removed: each sync is one transaction with the
    changed chains and elements only; the removed chains are flushed, and deleted by a sync a
    second later. Every transaction loads in the node's nftables engine in turn."""
    base = (DATA / "overall-manifests.yaml").read_text()
    p = _fake_proxier("1.33")
    rs = load_nft("", "<empty>")
    svcs, eps = _maps(base)
    (first,), _ = p.sync(svcs, eps, now=0)
    load_nft(str(first), "<sync 1>", rs)
    assert str(first).startswith('add table ip kube-proxy { comment "rules for kube-proxy" ; }\n')

    svcs, eps = _maps(base + "---" + SVC7 % "")
    (added,), _ = p.sync(svcs, eps, now=2_000_000_000)
    load_nft(str(added), "<sync 2>", rs)
    text = str(added)
    assert "add table" not in text and "flush map" not in text and "ns1/svc1" not in text
    assert "add element ip kube-proxy service-ips { 172.30.0.47 . tcp . 80 : goto service-" in text
    assert "add element ip kube-proxy cluster-ips { 172.30.0.47 }" in text
    svc_chain = "service-" + hash_and_truncate("ns7/svc7/tcp/p80")
    assert f"flush chain ip kube-proxy {svc_chain}\n" in text
    assert "numgen random mod 1 vmap { 0 : goto endpoint-" in text

    svcs, eps = _maps(base + "---" + SVC7 % ", {addresses: [10.180.0.8]}")
    (grown,), _ = p.sync(svcs, eps, now=3_000_000_000)
    load_nft(str(grown), "<sync 3>", rs)
    assert f"add rule ip kube-proxy {svc_chain} numgen random mod 2 vmap" in str(grown)
    assert "add element" not in str(grown)          # the Service's map elements did not change

    svcs, eps = _maps(base)
    (removed,), _ = p.sync(svcs, eps, now=4_000_000_000)
    load_nft(str(removed), "<sync 4>", rs)
    assert "delete element ip kube-proxy service-ips { 172.30.0.47 . tcp . 80 }\n" in str(removed)
    assert "delete element ip kube-proxy cluster-ips { 172.30.0.47 }\n" in str(removed)
    assert f"flush chain ip kube-proxy {svc_chain}\n" in str(removed)
    assert "delete chain" not in str(removed)
    assert svc_chain in rs.tables[("ip", "kube-proxy")].chains

    txs, _ = p.sync(svcs, eps, now=4_500_000_000)
    assert len(txs) == 1                            # flushed half a second ago: kept (and flushed again,
    assert f"flush chain ip kube-proxy {svc_chain}\n" in str(txs[0])  # which restarts its second)
    txs, _ = p.sync(svcs, eps, now=5_400_000_000)
    assert len(txs) == 1
    txs, _ = p.sync(svcs, eps, now=6_500_000_000)
    assert len(txs) == 2 and f"delete chain ip kube-proxy {svc_chain}\n" in str(txs[0])
    for tx in txs:
        load_nft(str(tx), "<sync 6>", rs)
    assert svc_chain not in rs.tables[("ip", "kube-proxy")].chains
    assert _lines(p.fake.dump()) == _lines(_fresh_dump(base))


def _fresh_dump(manifests: str) -> str:
    p = _fake_proxier("1.33")
    svcs, eps = _maps(manifests)
    p.sync(svcs, eps)
    return p.fake.dump()


def test_transactions_are_accepted_by_the_real_nft(tmp_path: Path) -> None:
    """The first and a later sync's text, run by this machine's nft in a scratch namespace."""
    if shutil.which("nft") is None or shutil.which("ip") is None:
        pytest.skip("needs nft and ip")
    import os
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    ns = f"kpnft-{os.getpid()}"
    p = _fake_proxier("1.33")
    base = (DATA / "overall-manifests.yaml").read_text()
    try:
        subprocess.run(["ip", "netns", "add", ns], check=True, timeout=20)
        for i, text in enumerate((base, base + "---" + SVC7 % "", base)):
            svcs, eps = _maps(text)
            txs, _ = p.sync(svcs, eps, now=i * 2_000_000_000)
            for tx in txs:
                f = tmp_path / f"tx{i}.nft"
                f.write_text(str(tx))
                r = subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", str(f)], capture_output=True,
                                   text=True, timeout=20)
                assert r.returncode == 0, r.stderr
        listed = subprocess.run(["ip", "netns", "exec", ns, "nft", "list", "chains"], capture_output=True,
                                text=True, timeout=20).stdout
        assert "chain filter-output-post-dnat" in listed and "service-ULMVA6XW-ns1/svc1/tcp/p80" in listed
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)


def test_an_unknown_version_is_a_one_line_error(tmp_path: Path) -> None:
    t = tmp_path / "t.yaml"
    t.write_text(TOPO.read_text().replace('kube_proxy_version: "1.33"}', 'kube_proxy_version: "1.12"}', 1)
                 .replace("extends: service-test.yaml", f"extends: {TOPO.parent / 'service-test.yaml'}")
                 .replace("manifests: [k8s/", f"manifests: [{TOPO.parent}/k8s/")
                 .replace(", k8s/", f", {TOPO.parent}/k8s/"))
    r = pktemu("run", str(t), "--out", str(tmp_path / "out"), check=False)
    assert r.returncode == 2 and not (tmp_path / "out").exists()
    assert r.stderr.strip().splitlines() == [
        f"pktemu: error: {t}: kubernetes.kube_proxy.node1.kube_proxy_version: no nftables layout for "
        f"version '1.12' (have: {', '.join(LAYOUTS)})"]


# ------------------------------------------------------------------ a run in nftables mode
@pytest.fixture(scope="module")
def k8s_nft_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("service-test-k8s-nftables")
    pktemu("run", str(TOPO), "--out", str(out), "-q")
    summarize(out)
    return out


def test_pod_to_cluster_ip_reaches_the_endpoint(k8s_nft_run: Path) -> None:
    s1 = k8s_nft_run / "s1-clusterip"
    result = json.loads((s1 / "client-result.json").read_text())
    assert "hello from server-pod 10.0.2.2" in json.dumps(result)
    for cap in ("client-eth0", "node1-cbr0", "node2-veth-server", "server-eth0"):
        assert (s1 / "pcap" / f"{cap}.pcap").stat().st_size > 24
    assert (s1 / "all.pcapng").stat().st_size > 1000
    assert not (s1 / "iptables-save-node1.txt").exists()
    listed = (s1 / "nft-ruleset-node1.txt").read_text()
    assert "chain service-EAFHE2E3-default/service-test/tcp/ {" in listed
    assert "\t\tmeta l4proto tcp dnat to 10.0.2.2:8080\n" in listed
    drops = (k8s_nft_run / "s2-noendpoints" / "drops.txt").read_text()
    assert "nft kube-proxy reject-chain: reject" in drops


def test_four_scenarios_identical_to_the_kernels_nftables_run(k8s_nft_run: Path) -> None:
    r = compare(REF / "summary.json", k8s_nft_run / "summary.json", "--level", "extended")
    assert r.stdout.strip().splitlines()[-1] == "IDENTICAL", r.stdout
    assert "nft ruleset node1: the same tables, sets and chains, created in another order" in r.stdout


def test_a_changed_rule_is_still_a_difference(k8s_nft_run: Path, tmp_path: Path) -> None:
    summary = json.loads((k8s_nft_run / "summary.json").read_text())
    rules = summary["scenarios"]["s1-clusterip"]["nft_ruleset"]["node1"]
    i = rules.index("meta l4proto tcp dnat to 10.0.2.2:8080")
    rules[i] = "meta l4proto tcp dnat to 10.0.2.2:8081"
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    r = compare(REF / "summary.json", tmp_path / "summary.json", "--level", "extended")
    assert r.stdout.strip().splitlines()[-1] == "1 difference(s)", r.stdout
    assert "+meta l4proto tcp dnat to 10.0.2.2:8081" in r.stdout


def test_rules_format_nft_prints_kube_proxys_table() -> None:
    r = pktemu("rules", str(TOPO), "--node", "node1", "--format", "nft")
    assert r.stdout.startswith('table ip kube-proxy {\n\tcomment "rules for kube-proxy"\n')
    assert "\t\ttype filter hook output priority -90; policy accept;\n" in r.stdout
    bad = pktemu("rules", "topologies/service-test-k8s.yaml", "--node", "node1", "--format", "nft",
                 check=False)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.strip().splitlines() == [
        "pktemu: error: topologies/service-test-k8s.yaml: node node1 has no nftables tables (no `nftables:` "
        "file and no kube-proxy in nftables mode)"]


def test_a_service_added_and_removed_mid_run_and_a_restart(tmp_path: Path) -> None:
    """The timeline adds a Service at 1 s and deletes it at 2 s; kube-proxy restarts at 3 s (a full
    sync: base chains deleted and re-added) and another change at 4 s deletes the flushed chain."""
    t = tmp_path / "t.yaml"
    obj = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "extra", "namespace": "default"},
           "spec": {"clusterIP": "10.3.242.7", "selector": {"app": "service-test"},
                    "ports": [{"port": 81, "targetPort": 8080}]}}
    t.write_text(json.dumps({
        "extends": str(TOPO), "name": "t",
        "scenarios": {"mid": {"traffic": [], "timeline": [
            {"at": "1s", "apply": obj}, {"at": "2s", "delete": "Service/default/extra"},
            {"at": "3s", "kube_proxy": {"node": "node1", "action": "restart"}},
            {"at": "4s", "delete": "Service/default/service-noep"}]}}}))
    chain = "service-" + hash_and_truncate("default/extra/tcp/")

    def listed(at: str) -> str:
        return pktemu("rules", str(t), "--node", "node1", "--scenario", "mid", "--at", at,
                      "--format", "nft").stdout

    assert chain not in listed("0.5s")
    during = listed("1.5s")
    assert f"\tchain {chain} {{\n\t\tip daddr 10.3.242.7 tcp dport 81 ip saddr != 10.0.0.0/16" in during
    assert "10.3.242.7 . tcp . 81 : goto " + chain in during
    after = listed("2.5s")
    assert f"\tchain {chain} {{\n\t}}" in after and "10.3.242.7" not in after
    restarted = listed("3.5s")
    assert restarted.count("chain filter-forward {") == 1 and restarted.count("ct state new jump") == 8
    assert "10.3.250.77" in restarted
    final = listed("4.5s")
    assert chain not in final and "10.3.250.77" not in final


def test_client_ip_affinity_records_the_client(tmp_path: Path) -> None:
    """A ClientIP Service added mid-run: the connection reaches the endpoint through the new chains,
    and `update @affinity-... { ip saddr }` leaves the client's address in the endpoint's set."""
    t = tmp_path / "t.yaml"
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "sticky", "namespace": "default"},
           "spec": {"clusterIP": "10.3.242.7", "selector": {"app": "service-test"},
                    "sessionAffinity": "ClientIP", "ports": [{"port": 81, "targetPort": 8080}]}}
    t.write_text(json.dumps({"extends": str(TOPO), "name": "aff", "scenarios": {"aff": {
        "traffic": [{"at": "1s", "pod": "client",
                     "app": {"kind": "http-client", "target": "10.3.242.7", "port": 81, "sport": 40001}}],
        "timeline": [{"at": "0.5s", "apply": svc}]}}}))
    pktemu("run", str(t), "--out", str(tmp_path / "out"), "-q")
    result = json.loads((tmp_path / "out" / "aff" / "client-result.json").read_text())
    assert result["http"]["status_line"] == "HTTP/1.1 200 OK"
    assert result["http"]["body"] == "hello from server-pod 10.0.2.2\n"
    listed = (tmp_path / "out" / "aff" / "nft-ruleset-node1.txt").read_text()
    name = "affinity-" + hash_and_truncate("default/sticky/tcp/__10.0.2.2/8080")
    block = listed.split(f"\tset {name} {{\n")[1].split("\t}")[0]
    assert "\t\tflags dynamic,timeout\n\t\ttimeout 3h\n" in block
    assert "elements = { 10.0.1.2 expires 2h59m" in block
