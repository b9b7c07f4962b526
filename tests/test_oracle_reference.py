"""The emulator against the real kernel's reference run (tests/data/oracle/reference).

The oracle's own tool reads our pcaps, conntrack tables and iptables counters and compares them
with what Linux did, frame by frame, at every capture point of the four scenarios.
"""
from __future__ import annotations

import json
from pathlib import Path

import datapaths
from conftest import compare

REF = datapaths.ORACLE_REF / "summary.json"


def test_four_scenarios_identical_to_the_kernel_with_state(service_test_run: Path) -> None:
    r = compare(REF, service_test_run / "summary.json", "--level", "extended")
    assert r.stdout.strip().splitlines()[-1] == "IDENTICAL", r.stdout


def test_every_capture_point_has_frames_where_the_kernel_had(service_test_run: Path) -> None:
    ours = json.loads((service_test_run / "summary.json").read_text())["scenarios"]
    ref = json.loads(REF.read_text())["scenarios"]
    assert set(ours) == set(ref)
    for sc, s in ref.items():
        for ifn, d in s["interfaces"].items():
            assert ours[sc]["interfaces"][ifn]["count"] == d["count"], (sc, ifn)


def test_conntrack_and_counters_files_are_the_kernels(service_test_run: Path) -> None:
    ours = json.loads((service_test_run / "summary.json").read_text())["scenarios"]["s1-clusterip"]
    keys = [e["key"] for e in ours["conntrack"]["node1"]]
    assert keys == [
        "tcp TIME_WAIT orig=[10.0.1.2:40000 > 10.3.241.152:80] reply=[10.0.2.2:8080 > 10.0.1.2:40000] "
        "[ASSURED]",
        "udp - orig=[10.0.1.2:40053 > 10.3.240.10:53] reply=[10.0.2.3:53 > 10.0.1.2:40053]",
    ]
    assert ours["conntrack"]["gw"] == []
    nat = ours["iptables_counters"]["node1"]["nat"]
    assert '[1:60] -A KUBE-SEP-CCUNI5TAEJBRFII7 -p tcp -m comment --comment "default/service-test" -m tcp ' \
           '-j DNAT --to-destination 10.0.2.2:8080' in nat


def test_every_frame_has_good_checksums(service_test_run: Path) -> None:
    ours = json.loads((service_test_run / "summary.json").read_text())["scenarios"]
    n = 0
    for s in ours.values():
        for d in s["interfaces"].values():
            for p in d["packets"]:
                assert p["csum_ok"] in (True, None), p["xkey"]
                n += 1
    assert n > 100


def test_client_results_are_the_kernels(service_test_run: Path) -> None:
    for sc in ("s1-clusterip", "s2-noendpoints", "s3-hairpin", "s3b-hairpin-off"):
        ref = json.loads((datapaths.ORACLE_REF / sc / "client-result.json").read_text())
        ours = json.loads((service_test_run / sc / "client-result.json").read_text())
        for key in ("status_line", "body", "bytes", "error", "target", "source"):
            assert ours["http"].get(key) == ref["http"].get(key), (sc, key)
        if ref["dns"]:
            assert ours["dns"]["answers"] == ref["dns"]["answers"]


def test_br_netfilter_off_routes_the_hairpin(tmp_path: Path) -> None:
    """The oracle README's ORACLE_BRNF=0 variant: no bridge detour, so the hairpin is routed."""
    from conftest import brnf0_topology, pktemu, summarize

    topo = brnf0_topology(tmp_path)
    pktemu("run", str(topo), "--out", str(tmp_path), "-q")
    s = summarize(tmp_path)["scenarios"]
    cbr0 = [p for p in s["s1-clusterip"]["interfaces"]["node1-cbr0"]["packets"] if p["proto"] == "TCP"]
    assert {p["dst"] for p in cbr0 if p["src"].startswith("10.0.1.2")} == {"10.3.241.152:80"}
    hairpinned = [p for p in s["s3-hairpin"]["interfaces"]["client-eth0"]["packets"]
                  if p["proto"] == "TCP" and p["dst"] == "10.0.1.2:8080"]
    assert hairpinned and all(p["ttl"] == 63 and p["src_mac"] == "0a:58:0a:00:01:01" for p in hairpinned)
    assert s["s3-hairpin"]["interfaces"]["node1-cbr0"]["count"] == 22
    assert s["s3b-hairpin-off"]["interfaces"]["node1-cbr0"]["count"] == 22
    result = json.loads((tmp_path / "s3b-hairpin-off" / "client-result.json").read_text())
    assert result["http"]["status_line"] == "HTTP/1.1 200 OK"
