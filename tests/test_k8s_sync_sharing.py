"""What every node's kube-proxy builds alike is built once: the per-sync records of Services and
endpoints are shared between the nodes of a cluster (which would otherwise hold nodes x endpoints
of them), and the sync's output does not depend on which node built a record first."""
from __future__ import annotations

import json
from pathlib import Path

from conftest import pktemu

from datapaths import ROOT

from pktemu.bench_load import manifests_text
from pktemu.k8s import manifests
from pktemu.k8s.objects import Endpoint, EndpointConditions, EndpointPort, EndpointSlice, ObjectMeta, Service
from pktemu.k8s.proxier_iptables import IptablesOptions, IptablesProxier
from pktemu.k8s.nft_service import hash_and_truncate
from pktemu.k8s.proxier_nftables import NftablesOptions, NftablesProxier
from pktemu.k8s.proxy_state import Records, endpoints_map, service_ports
from pktemu.netfilter.xtables import Ruleset

CLUSTER = ROOT / "topologies" / "generated-large-cluster.yaml"


def _slice() -> EndpointSlice:
    eps = [Endpoint([f"10.0.{n}.2"], EndpointConditions(True, True, False), f"node{n}") for n in (1, 2, 3)]
    return EndpointSlice(ObjectMeta("web-abc", "default"), "web", "IPv4", eps,
                         [EndpointPort(8080, "TCP", "")])


def test_endpoint_records_are_shared_between_nodes_except_where_local_differs() -> None:
    records = Records()
    on1 = endpoints_map([_slice()], "node1", records)
    on2 = endpoints_map([_slice()], "node2", records)
    (spn1, eps1), = on1.items()
    (spn2, eps2), = on2.items()
    assert spn1 is spn2
    assert [e.endpoint for e in eps1] == ["10.0.1.2:8080", "10.0.2.2:8080", "10.0.3.2:8080"]
    assert [e.is_local for e in eps1] == [True, False, False]
    assert [e.is_local for e in eps2] == [False, True, False]
    assert eps1[2] is eps2[2]                          # node3's endpoint, remote for both
    assert eps1[0] is not eps2[0] and eps1[0].ip == eps2[0].ip


def test_service_records_are_shared_between_syncs() -> None:
    objs = manifests.load_text(manifests_text(3, slices=True), "<test>")
    svcs = [o for o in objs if isinstance(o, Service)]
    records = Records()
    a, b = service_ports(svcs, records), service_ports(svcs, records)
    assert len(a) == 3
    assert all(x is y and a[x] is b[y] for x, y in zip(a, b, strict=True))
    alone = service_ports(svcs)                        # no cluster's records: records of its own
    assert alone == a and all(x is not y for x, y in zip(alone, a, strict=True))


def test_iptables_sync_text_is_the_same_on_every_node_and_sync() -> None:
    """A full sync of 50 Services x 5 endpoints (none local), rendered for two nodes and again:
    byte-identical, one KUBE-SEP chain and three rules per endpoint."""
    objs = manifests.load_text(manifests_text(50, slices=True), "<test>")
    svcs = service_ports([o for o in objs if isinstance(o, Service)])
    texts = [IptablesProxier(IptablesOptions(cluster_cidr="10.0.0.0/8")).sync(
        svcs, endpoints_map([o for o in objs if isinstance(o, EndpointSlice)], node), Ruleset())[0]
        for node in ("node1", "node2", "node1")]
    assert texts[0] == texts[1] == texts[2]
    lines = texts[0].splitlines()
    assert sum(ln.startswith(":KUBE-SEP-") for ln in lines) == 250
    assert sum(ln.startswith("-A KUBE-SEP-") for ln in lines) == 500
    assert sum(ln.startswith("-A KUBE-SVC-") for ln in lines) == 50 * 6      # masquerade + 5 picks


def test_nftables_chain_hash_is_base32_of_the_digest_prefix() -> None:
    """hashAndTruncate's eight characters (computed from the digest's first five bytes) for names
    whose hashes upstream's tests spell out, and the same name hashed twice."""
    assert hash_and_truncate("ns1/svc1/tcp/p80") == "ULMVA6XW-ns1/svc1/tcp/p80"
    assert hash_and_truncate("ns2/svc2/tcp/p80") == hash_and_truncate("ns2/svc2/tcp/p80")
    objs = manifests.load_text(manifests_text(20, slices=True), "<test>")
    svcs = service_ports([o for o in objs if isinstance(o, Service)])
    eps = endpoints_map([o for o in objs if isinstance(o, EndpointSlice)], "node1")
    one, two = (NftablesProxier(NftablesOptions(cluster_cidr="10.0.0.0/8")) for _ in range(2))
    one.sync(svcs, eps)
    two.sync(svcs, eps)
    assert one.fake.dump() == two.fake.dump()
    assert one.fake.dump().count("add chain ip kube-proxy endpoint-") == 100



def test_every_node_of_a_generated_cluster_gets_the_same_service_chains(tmp_path: Path) -> None:
    """`pktemu run` of a 3 x 4 generated cluster, scenario clients (one Service over every pod,
    kube-proxy in iptables mode on each node): every node's saved ruleset has the same KUBE-SVC and
    KUBE-SEP chains and rules, one SEP chain per pod, and every client got its answer."""
    topo = tmp_path / "c.yaml"
    topo.write_text(f"extends: {{file: {CLUSTER}, merge: true}}\nvars: {{nodes: 3, pods: 4}}\n")
    r = pktemu("run", str(topo), "--scenario", "clients", "--out", str(tmp_path / "out"), "-q")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "out" / "clients"
    chains = [sorted(ln for ln in (out / f"iptables-save-node{n}.txt").read_text().splitlines()
                     if ln.startswith(("-A KUBE-SEP-", "-A KUBE-SVC-", ":KUBE-SEP-", ":KUBE-SVC-")))
              for n in (1, 2, 3)]
    assert chains[0] == chains[1] == chains[2]
    assert sum(ln.startswith(":KUBE-SEP-") for ln in chains[0]) == 12
    results = json.loads((out / "client-result.json").read_text())
    assert len(results) == 3 and all(x["http"]["status_line"] == "HTTP/1.1 200 OK" for x in results)


def test_nodes_whose_sync_lines_are_the_same_hand_restore_one_text() -> None:
    """With the cluster's shared service lines, two nodes whose syncs make the same lines get one
    text object (iptables-restore's shared result is then found by a hash made once); a node whose
    lines differ (its own node port address) gets its own text, which is what its lines say."""
    from pktemu.k8s.iptables_service import ServiceLines
    objs = manifests.load_text(manifests_text(20, slices=True), "<test>")
    records, shared = Records(), ServiceLines()
    svcs = service_ports([o for o in objs if isinstance(o, Service)], records)
    slices = [o for o in objs if isinstance(o, EndpointSlice)]

    def sync(node: str, opts: IptablesOptions) -> str:
        return IptablesProxier(opts, shared).sync(svcs, endpoints_map(slices, node, records), Ruleset())[0]

    same = IptablesOptions(cluster_cidr="10.0.0.0/8")
    one, two = sync("node1", same), sync("node2", same)
    assert one is two
    alone = IptablesProxier(same).sync(svcs, endpoints_map(slices, "node2"), Ruleset())[0]
    assert alone == one and alone is not one
    other = sync("node3", IptablesOptions(cluster_cidr="10.99.0.0/16"))
    assert other is not one and other != one and "10.99.0.0/16" in other and "10.99.0.0/16" not in one
    assert sync("node4", same) == one
