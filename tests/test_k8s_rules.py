"""kube-proxy's iptables mode: the rules it writes (against the kernel oracle's reference file and
upstream's layout) and what the real rules engine does with them (the statistic cascade)."""
from __future__ import annotations

import json
import math
import random

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

import datapaths
from conftest import pktemu
from pktemu.k8s.proxier_iptables import IptablesOptions, IptablesProxier, render, sep_chain, svc_chain
from pktemu.k8s.proxy_state import (
    EndpointInfo, EndpointsMap, ServicePortInfo, ServicePortMap, ServicePortName,
)
from pktemu.net.frame import Frame, int2ip
from pktemu.net.node import Node
from pktemu.netfilter.core import PREROUTING
from pktemu.netfilter.hooks import Netfilter
from pktemu.netfilter.xtables import Ruleset, load_rules, save_rules
from pktemu.sim import Simulator

REF_RULES = datapaths.ORACLE_REF / "rules" / "kube-proxy-rules.iptables"
REF_SERVICES = datapaths.ORACLE_REF / "rules" / "services.json"
ORACLE = IptablesOptions(cluster_cidr="10.0.0.0/16", random_fully=False, kubelet_firewall=False)


def _saved(text: str, rs: Ruleset | None = None) -> str:
    return save_rules(load_rules(text, "<test>", rs, noflush=rs is not None), counters=False)


def _reference_maps() -> tuple[ServicePortMap, EndpointsMap]:
    svcs: ServicePortMap = {}
    eps: EndpointsMap = {}
    for s in json.loads(REF_SERVICES.read_text()):
        spn = ServicePortName(s["ns"], s["name"], s["port_name"], s["proto"].upper())
        svcs[spn] = ServicePortInfo(spn, s["cluster_ip"], s["port"], s["proto"].upper())
        if s["endpoints"]:
            eps[spn] = [EndpointInfo(e.split(":")[0], int(e.split(":")[1]), False, True, True, False)
                        for e in s["endpoints"]]
    return svcs, eps


def test_rules_for_the_reference_services_equal_the_reference_file() -> None:
    svcs, eps = _reference_maps()
    rs = Ruleset("node1")
    text, _ = IptablesProxier(ORACLE).sync(svcs, eps, rs)
    assert _saved(text, rs) == _saved(REF_RULES.read_text())
    table = {s["name"]: s for s in json.loads(REF_SERVICES.read_text())}
    for spn in svcs:
        if "svc_chain" in table[spn.name]:
            assert svc_chain(spn) == table[spn.name]["svc_chain"]
            for ep, chain in table[spn.name]["sep_chains"].items():
                assert sep_chain(spn, ep) == chain


def test_pktemu_rules_prints_the_reference_rules_from_the_manifests() -> None:
    out = pktemu("rules", "topologies/service-test-k8s.yaml", "--node", "node2").stdout
    assert save_rules(load_rules(out, "<cli>"), counters=False) == _saved(REF_RULES.read_text())


def test_upstream_variant_adds_random_fully_kubelet_firewall_and_canaries() -> None:
    out = pktemu("rules", "topologies/seed-story.yaml", "--node", "node1").stdout
    assert "-j MASQUERADE --random-fully" in out
    inputs = [ln for ln in out.splitlines() if ln.startswith("-A INPUT ")]
    assert inputs[0] == "-A INPUT -j KUBE-FIREWALL"                   # kubelet's jump, prepended last
    assert out.count(":KUBE-PROXY-CANARY - [0:0]") == 3             # mangle, nat, filter
    assert ('-A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8 -m comment --comment "block incoming localnet '
            'connections" -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP') in out


def _svc(n: int, **kw: object) -> tuple[ServicePortName, ServicePortInfo, list[EndpointInfo]]:
    spn = ServicePortName("default", "web", "", "TCP")
    info = ServicePortInfo(spn, "10.3.241.1", 80, "TCP", **kw)              # type: ignore[arg-type]
    eps = [EndpointInfo(f"10.0.{1 + i % 2}.{10 + i}", 8080, i % 2 == 0, True, True, False, f"node{1 + i % 2}")
           for i in range(n)]
    return spn, info, eps


def test_statistic_cascade_uses_upstream_probabilities() -> None:
    spn, info, eps = _svc(4)
    text = render({spn: info}, {spn: eps}, ORACLE, None)
    probs = [ln.split("--probability ")[1].split()[0] for ln in text.splitlines() if "--probability" in ln]
    assert probs == ["0.2500000000", "0.3333333333", "0.5000000000"]           # 1/(n-i), ten decimals
    saved = _saved(text)
    assert "--probability 0.33333333349" in saved                              # iptables-save's eleven


def _frame(src: str, dst: str, dport: int) -> bytes:
    return bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src=src, dst=dst)
                 / TCP(sport=1024, dport=dport, flags="S"))


def _choices(n: int, seed: int, connections: int) -> list[str]:
    """DNAT destinations of `connections` new connections through the real nat PREROUTING path."""
    spn, info, eps = _svc(n)
    sim = Simulator(seed)
    node = Node(sim, "node1")
    rs = Ruleset("node1")
    node.nf = Netfilter(node, load_rules(render({spn: info}, {spn: eps}, ORACLE, None), "<kube-proxy>", rs))
    template = _frame("10.0.1.2", "10.3.241.1", 80)
    out = []
    for i in range(connections):
        f = Frame(template)
        f.set_sport(1024 + i)
        assert node.nf.hook(PREROUTING, f, "cbr0", None) == 1
        out.append(int2ip(f.daddr))
    return out


@pytest.mark.parametrize("n", [2, 3, 5])
def test_statistic_cascade_spreads_evenly_and_the_seed_fixes_the_sequence(n: int) -> None:
    N = 10_000
    seq = _choices(n, seed=1, connections=N)
    counts = {ip: seq.count(ip) for ip in set(seq)}
    assert len(counts) == n
    sigma = math.sqrt(N * (1 / n) * (1 - 1 / n))
    for ip, c in counts.items():
        assert abs(c - N / n) < 3 * sigma, (ip, c, N / n, sigma)
    assert _choices(n, seed=1, connections=300) == seq[:300]
    assert _choices(n, seed=2, connections=300) != seq[:300]


def test_no_endpoints_rejects_and_local_policies_drop_or_pick_local_endpoints() -> None:
    spn, info, _ = _svc(0)
    text = render({spn: info}, {}, ORACLE, None)
    assert ('-A KUBE-SERVICES -m comment --comment "default/web has no endpoints" -m tcp -p tcp '
            "-d 10.3.241.1 --dport 80 -j REJECT") in text
    assert "KUBE-SVC-" not in text

    spn, info, eps = _svc(4, internal_policy="Local")
    only_remote = [e for e in eps if not e.is_local]
    text = render({spn: info}, {spn: only_remote}, ORACLE, None)
    assert '"default/web has no local endpoints"' in text and "-j DROP" in text
    text = render({spn: info}, {spn: eps}, ORACLE, None)
    svl = [ln for ln in text.splitlines() if ln.startswith("-A KUBE-SVL-")]
    assert len(svl) == 3 and all("10.0.1." in ln for ln in svl[1:])          # masq rule, then 2 local eps


def test_nodeport_with_external_policy_local_short_circuits_pod_and_local_traffic() -> None:
    spn, info, eps = _svc(2, node_port=30080, external_policy="Local")
    text = render({spn: info}, {spn: eps}, ORACLE, None)
    ext = [ln for ln in text.splitlines() if ln.startswith("-A KUBE-EXT-")]
    assert len(ext) == 4
    assert "-s 10.0.0.0/16 -j KUBE-SVC-" in ext[0]
    assert "--src-type LOCAL -j KUBE-MARK-MASQ" in ext[1] and "--src-type LOCAL -j KUBE-SVC-" in ext[2]
    assert ext[3].endswith(" -j KUBE-SVL-" + svc_chain(spn)[9:])
    assert ("-A KUBE-NODEPORTS -m comment --comment default/web -m tcp -p tcp --dport 30080 "
            "-j KUBE-EXT-") in text
    _saved(text)                                                                # loads in the real engine


def test_client_ip_affinity_checks_recent_lists_before_the_cascade() -> None:
    spn, info, eps = _svc(2, client_ip_affinity=True, sticky_seconds=10800)
    lines = render({spn: info}, {spn: eps}, ORACLE, None).splitlines()
    svc = [ln for ln in lines if ln.startswith(f"-A {svc_chain(spn)} ")]
    assert [("--rcheck --seconds 10800 --reap" in ln) for ln in svc] == [False, True, True, False, False]
    assert sum("-m recent --name KUBE-SEP-" in ln and "--set" in ln for ln in lines) == 2


def test_partial_sync_rewrites_only_changed_services_and_deletes_stale_chains() -> None:
    a = ServicePortName("default", "a", "", "TCP")
    b = ServicePortName("default", "b", "", "UDP")
    svcs = {a: ServicePortInfo(a, "10.3.241.1", 80, "TCP"), b: ServicePortInfo(b, "10.3.241.2", 53, "UDP")}
    ep = [EndpointInfo("10.0.2.2", 8080, False, True, True, False)]
    ep2 = [EndpointInfo("10.0.2.3", 53, False, True, True, False)]
    proxier, rs = IptablesProxier(ORACLE), Ruleset("n")
    text, _ = proxier.sync(svcs, {a: ep, b: ep2}, rs)
    load_rules(text, "<1>", rs, noflush=True)
    rs.chain("nat", sep_chain(a, "10.0.2.2:8080")).rules[1].pkts = 7          # a counter that must survive
    moved = [EndpointInfo("10.0.2.9", 53, False, True, True, False)]
    text, stale = proxier.sync(svcs, {a: ep, b: moved}, rs)
    assert sep_chain(a, "10.0.2.2:8080") not in text and "-I " not in text    # a unchanged, jumps in place
    assert f"-X {sep_chain(b, '10.0.2.3:53')}" in text
    assert stale.nat == {("10.3.241.2", "10.0.2.3")}                          # conntrack -D for UDP only
    load_rules(text, "<2>", rs, noflush=True)
    assert rs.chain("nat", sep_chain(a, "10.0.2.2:8080")).rules[1].pkts == 7
    assert sep_chain(b, "10.0.2.3:53") not in rs.table("nat").chains


def test_the_reference_topology_gets_the_same_rules_on_every_random_service_order() -> None:
    """Chain names depend only on names, never on order: a shuffled sync gives the same chains."""
    svcs, eps = _reference_maps()
    keys = list(svcs)
    random.Random(3).shuffle(keys)
    rs1, rs2 = Ruleset(), Ruleset()
    load_rules(IptablesProxier(ORACLE).sync(svcs, eps, rs1)[0], "<a>", rs1, noflush=True)
    shuffled = {k: svcs[k] for k in keys}
    load_rules(IptablesProxier(ORACLE).sync(shuffled, eps, rs2)[0], "<b>", rs2, noflush=True)
    assert sorted(rs1.table("nat").chains) == sorted(rs2.table("nat").chains)
