"""Pod to pod with no Service (topologies/pod-to-pod.yaml, scenario `direct`): the routed path.

Expected frames come from the kernel's s1 run with the Service addresses replaced by the pod
addresses they were DNATed to: on that path Linux routes exactly as it does for a direct
connection, so every TTL, MAC, ARP exchange and TCP segment must be the kernel's.
"""
from __future__ import annotations

import json
from pathlib import Path

import datapaths

CLUSTER_TO_POD = {"10.3.241.152:80": "10.0.2.2:8080", "10.3.240.10:53": "10.0.2.3:53"}


def _unservice(key: str) -> str:
    for vip, pod in CLUSTER_TO_POD.items():
        key = key.replace(vip + " ", pod + " ")
    return key


def _records(summary: Path, scenario: str) -> dict[str, list[str]]:
    s = json.loads(summary.read_text())["scenarios"][scenario]
    return {ifn: [p["xkey"] for p in d["packets"]] for ifn, d in s["interfaces"].items()}


def test_routed_path_matches_the_kernel_hop_by_hop(pod_to_pod_run: Path) -> None:
    ref = _records(datapaths.ORACLE_REF / "summary.json", "s1-clusterip")
    ours = _records(pod_to_pod_run / "summary.json", "direct")
    assert list(ours) == list(ref)
    for ifn, frames in ref.items():
        assert ours[ifn] == [_unservice(k) for k in frames], ifn


def test_ttl_and_macs_change_only_at_routers(pod_to_pod_run: Path) -> None:
    s = json.loads((pod_to_pod_run / "summary.json").read_text())["scenarios"]["direct"]["interfaces"]
    syn = {ifn: next(p for p in d["packets"] if p.get("flags") == "S") for ifn, d in s.items()
           if any(p.get("flags") == "S" for p in d["packets"])}
    assert {ifn: p["ttl"] for ifn, p in syn.items()} == {
        "client-eth0": 64, "node1-veth-client": 64, "node1-cbr0": 64, "node1-eth0": 63, "gw-eth1": 63,
        "gw-eth2": 62, "node2-eth0": 62, "node2-cbr0": 61, "node2-veth-server": 61, "server-eth0": 61}
    macs = {ifn: (p["src_mac"], p["dst_mac"]) for ifn, p in syn.items()}
    assert macs["node1-eth0"] == ("02:00:0a:64:00:0b", "02:01:0a:64:00:01")
    assert macs["gw-eth2"] == ("02:02:0a:64:00:01", "02:00:0a:64:00:0c")
    assert syn["server-eth0"]["dst"] == "10.0.2.2:8080" and syn["client-eth0"]["dst"] == "10.0.2.2:8080"


def test_client_gets_the_page(pod_to_pod_run: Path) -> None:
    r = json.loads((pod_to_pod_run / "direct" / "client-result.json").read_text())
    assert r["dns"]["answers"][0]["a"] == "10.3.241.152"
    assert r["http"]["status_line"] == "HTTP/1.1 200 OK"
    assert r["http"]["body"] == "hello from server-pod 10.0.2.2\n"
