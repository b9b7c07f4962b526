"""The pytest plugin's `pktemu_network` fixture, run by pytest itself (pytester) as a user's tests would."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from datapaths import ROOT

pytest_plugins = ["pytester"]

TOPOLOGY = str(ROOT / "topologies" / "service-test.yaml")

USER_TESTS = f'''
from scapy.layers.inet import IP, TCP

TOPOLOGY = {TOPOLOGY!r}


def test_reaches_the_service(pktemu_network):
    net = pktemu_network(TOPOLOGY, scenario="s1-clusterip")
    net.run()
    assert net.results[0]["http"]["status_line"] == "HTTP/1.1 200 OK"


def test_expects_the_wrong_source(pktemu_network):
    net = pktemu_network(TOPOLOGY, scenario="s1-clusterip")
    net.run()
    syn = net.sniff("server-eth0", lfilter=lambda p: TCP in p and p[TCP].flags == "S")[0]
    assert syn[IP].src == "10.9.9.9", "planted failure"
'''


def test_captures_are_written_per_test_and_a_failure_prints_their_path(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=300)
    result.assert_outcomes(passed=1, failed=1)
    out = result.stdout.str()
    assert "planted failure" in out
    printed = re.findall(r"^(/\S+)  \(pcap/\*\.pcap, all\.pcapng", out, re.M)
    assert len(printed) == 1, out
    assert "- pktemu captures -" in out
    failed = Path(printed[0])
    assert failed.name == "s1-clusterip" and failed.parent.name == "pktemu"
    assert failed.parent.parent.name.startswith("test_expects_the_wrong_source")
    assert (failed / "pcap" / "server-eth0.pcap").stat().st_size > 24
    assert (failed / "all.pcapng").exists() and (failed / "client-result.json").exists()
    passed = failed.parent.parent.parent / "test_reaches_the_service0" / "pktemu" / "s1-clusterip"
    same = "pcap/client-eth0.pcap"
    assert (passed / same).read_bytes() == (failed / same).read_bytes()


def test_a_test_that_writes_itself_and_two_networks_in_one_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=f'''
import os

def test_two(pktemu_network, tmp_path):
    a = pktemu_network({TOPOLOGY!r}, scenario="s1-clusterip")
    b = pktemu_network({TOPOLOGY!r}, scenario="s2-noendpoints")
    a.run()
    b.run()
    assert a.write(tmp_path / "mine") == str(tmp_path / "mine" / "s1-clusterip")
    assert b.output == str(tmp_path / "pktemu-2" / "s2-noendpoints")
    assert False, "planted"
''')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=300)
    result.assert_outcomes(failed=1)
    printed = [Path(p) for p in re.findall(r"^(/\S+)  \(pcap/", result.stdout.str(), re.M)]
    assert [(p.parent.name, p.name) for p in printed] == [("mine", "s1-clusterip"),
                                                          ("pktemu-2", "s2-noendpoints")]
    for p in printed:
        assert (p / "drops.txt").exists() and (p / "all.pcapng").exists()
    assert list((printed[0].parent.parent / "pktemu").iterdir()) == []     # moved, no temporary left
