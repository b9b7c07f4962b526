"""The founding topology in kube-proxy's nftables mode, held to the real kernel's run of it
(tests/data/oracle/reference-nftables, ORACLE_PROXY=nftables): frames on every capture point,
conntrack tables and the `nft list ruleset` of each node, compared by the oracle's own tool."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import compare, pktemu, summarize

import datapaths

REF = datapaths.ROOT / "tests" / "data" / "oracle" / "reference-nftables"
TOPO = datapaths.ROOT / "topologies" / "service-test-nftables.yaml"
SCENARIOS = ("s1-clusterip", "s2-noendpoints", "s3-hairpin", "s3b-hairpin-off")


@pytest.fixture(scope="module")
def nft_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("service-test-nftables")
    pktemu("run", str(TOPO), "--out", str(out), "-q")
    summarize(out)
    return out


def test_run_matches_the_kernel_reference_identically(nft_run: Path) -> None:
    r = compare(REF / "summary.json", nft_run / "summary.json", "--level", "extended")
    assert r.returncode == 0, r.stdout
    assert r.stdout.strip().splitlines()[-1] == "IDENTICAL"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_nft_list_ruleset_files_are_the_kernels_byte_for_byte(nft_run: Path, scenario: str) -> None:
    for node in ("node1", "node2"):
        ours = (nft_run / scenario / f"nft-ruleset-{node}.txt").read_text()
        assert ours == (REF / scenario / f"nft-ruleset-{node}.txt").read_text()
        assert not (nft_run / scenario / f"iptables-save-{node}.txt").exists()


def test_drops_and_comments_quote_the_nft_rule(nft_run: Path) -> None:
    drops = (nft_run / "s2-noendpoints" / "drops.txt").read_text()
    assert "node1 netfilter FORWARD: nft kube-proxy reject-chain: reject" in drops
    comments = subprocess.run(["tshark", "-r", str(nft_run / "s1-clusterip" / "all.pcapng"), "-T", "fields",
                               "-e", "frame.comment"], capture_output=True, text=True, timeout=120).stdout
    assert ("nat:PREROUTING kube-proxy services: ip daddr . meta l4proto . th dport vmap @service-ips "
            "[10.3.241.152 . tcp . 80 : goto service-EAFHE2E3-default/service-test/tcp/]") in comments
    assert "nat:PREROUTING kube-proxy endpoint-TQ2NHXDT-default/service-test/tcp/__10.0.2.2/8080: " \
           "meta l4proto tcp dnat to 10.0.2.2:8080" in comments


def test_counters_count_what_went_through(tmp_path: Path) -> None:
    """nat chains see a connection's first packet only: on node1 in s1 the DNS query (IP length 84)
    and the SYN (60); filter-forward sees every packet node1 forwards, both ways: 6 from the client
    (84+60+52+151+52+52 bytes) and 6 back (100+60+52+167+52+52), as the reference pcap of node1-cbr0
    lists them."""
    for node in ("node1", "node2"):
        text = (REF / "rules" / f"kube-proxy-rules-{node}.nft").read_text()
        text = text.replace("add rule ip kube-proxy nat-prerouting jump services",
                            "add rule ip kube-proxy nat-prerouting counter jump services")
        text = text.replace("filter-forward ct state new jump service-endpoints-check",
                            "filter-forward counter ct state new jump service-endpoints-check")
        (tmp_path / f"kube-proxy-rules-{node}.nft").write_text(text)
    shutil.copy(TOPO, tmp_path / "t.yaml")
    pktemu("run", str(tmp_path / "t.yaml"), "--scenario", "s1-clusterip", "--out", str(tmp_path / "out"),
           "-q")
    listed = (tmp_path / "out" / "s1-clusterip" / "nft-ruleset-node1.txt").read_text()
    assert "\t\tcounter packets 2 bytes 144 jump services\n" in listed
    forwarded = listed.split("chain filter-forward {")[1].split("}")[0]
    assert "counter packets 12 bytes 934 ct state new jump service-endpoints-check" in forwarded


def test_trace_keeps_the_case_of_the_chains_a_verdict_names() -> None:
    """nft monitor trace prints a vmap's goto with the chain's own name (kube-proxy's hashes: upper case)."""
    r = pktemu("trace", str(TOPO), "--from", "client", "--to", "10.3.241.152:80")
    assert r.returncode == 0, r.stderr
    assert ("ip kube-proxy services rule ip daddr . meta l4proto . th dport vmap @service-ips "
            "(verdict goto service-EAFHE2E3-default/service-test/tcp/)") in r.stdout
    assert "(verdict goto endpoint-TQ2NHXDT-default/service-test/tcp/__10.0.2.2/8080)" in r.stdout
