"""The pytest plugin's `pktemu_network` fixture, run by pytest itself (pytester) as a user's tests would."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from datapaths import ROOT

pytest_plugins = ["pytester"]

TOPOLOGY = str(ROOT / "topologies" / "service-test.yaml")


@pytest.fixture(autouse=True)
def _this_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    """pytest's subprocess imports pktemu (and the plugin) from this checkout, not the installed one."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))

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


def test_a_network_the_test_closed_is_left_closed(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=f'''
import os

def test_with(pktemu_network, tmp_path):
    with pktemu_network({TOPOLOGY!r}) as net:
        net.run(duration=0.1)
    assert net.output is None and os.listdir(tmp_path) == []

def test_close(pktemu_network):
    net = pktemu_network({TOPOLOGY!r})
    net.run(duration=0.1)
    net.close()

def test_closed_and_failed(pktemu_network):
    closed = pktemu_network({TOPOLOGY!r}, scenario="s1-clusterip")
    closed.close()
    kept = pktemu_network({TOPOLOGY!r}, scenario="s2-noendpoints")
    kept.run()
    assert False, "planted"
''')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=300)
    result.assert_outcomes(passed=2, failed=1)
    out = result.stdout.str()
    assert "PktemuError" not in out and "captures were closed" not in out
    printed = [Path(p) for p in re.findall(r"^(/\S+)  \(pcap/", out, re.M)]
    assert [(p.parent.name, p.name) for p in printed] == [("pktemu-2", "s2-noendpoints")]
    assert (printed[0] / "drops.txt").exists()
    assert not (printed[0].parent.parent / "pktemu").exists()


def test_the_fixture_takes_a_capture_folder_of_the_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=f'''
import os

def test_mine(pktemu_network, tmp_path):
    net = pktemu_network({TOPOLOGY!r}, "s1-clusterip", capture=tmp_path / "x")
    assert net.output == str(tmp_path / "x" / "s1-clusterip")
    none = pktemu_network({TOPOLOGY!r}, "s1-clusterip", capture=None)
    assert none.output is None
    net.run()
    none.run()
    assert none.results == net.results
    assert False, "planted"
''')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=300)
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "TypeError" not in out
    printed = [Path(p) for p in re.findall(r"^(/\S+)  \(pcap/", out, re.M)]
    assert [(p.parent.name, p.name) for p in printed] == [("x", "s1-clusterip")]
    assert (printed[0] / "all.pcapng").exists() and (printed[0] / "client-result.json").exists()
    assert sorted(os.listdir(printed[0].parent.parent)) == ["x"]
