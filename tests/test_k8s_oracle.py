"""service-test-k8s.yaml: the oracle's four scenarios with the rules written by kube-proxy from
Service objects instead of read from a file still compare IDENTICAL with the real kernel.

The oracle's summary is a pure function of a run's pcaps and state files, so instead of reading
48 pcaps with tshark a second time, the kube-proxy run is checked to be byte for byte the run of
service-test.yaml (whose summary the session fixture compares with the kernel's); the compare is
then repeated on that summary so this file stands on its own.
"""
from __future__ import annotations

import filecmp
import struct
from pathlib import Path

import pytest

import datapaths
from conftest import compare, pktemu

SCENARIOS = ("s1-clusterip", "s2-noendpoints", "s3-hairpin", "s3b-hairpin-off")


@pytest.fixture(scope="module")
def k8s_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("service-test-k8s")
    pktemu("run", "topologies/service-test-k8s.yaml", "--out", str(out), "-q")
    return out


def _files(d: Path) -> list[str]:
    return sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file())


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_kube_proxy_run_is_byte_identical_to_the_rules_file_run(k8s_run: Path, service_test_run: Path,
                                                                scenario: str) -> None:
    a, b = service_test_run / scenario, k8s_run / scenario
    files = [f for f in _files(a) if f != "summary.json"]
    assert files == _files(b) and "pcap/node1-cbr0.pcap" in files and "iptables-save-node1.txt" in files
    _, mismatch, errors = filecmp.cmpfiles(a, b, [f for f in files if f != "all.pcapng"], shallow=False)
    assert mismatch == [] and errors == [], mismatch
    # all.pcapng's section header names the topology (service-test vs service-test-k8s); every
    # block after it (interfaces, frames with their comments, statistics) is the same
    shb_a, rest_a = _split_shb((a / "all.pcapng").read_bytes())
    shb_b, rest_b = _split_shb((b / "all.pcapng").read_bytes())
    assert rest_a == rest_b
    assert b"topology service-test (service-test.yaml)," in shb_a
    assert b"topology service-test-k8s (service-test-k8s.yaml)," in shb_b


def _split_shb(data: bytes) -> tuple[bytes, bytes]:
    n = struct.unpack_from("<I", data, 4)[0]
    return data[:n], data[n:]


def test_four_scenarios_identical_to_the_kernel_with_state(k8s_run: Path, service_test_run: Path) -> None:
    r = compare(datapaths.ORACLE_REF / "summary.json", service_test_run / "summary.json",
                "--level", "extended")
    assert r.stdout.strip().splitlines()[-1] == "IDENTICAL", r.stdout


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_iptables_save_with_counters_is_the_kernels_line_for_line(k8s_run: Path, scenario: str) -> None:
    for node in ("node1", "node2"):
        ours = (k8s_run / scenario / f"iptables-save-{node}.txt").read_text().splitlines()
        ref = (datapaths.ORACLE_REF / scenario / f"iptables-save-{node}.txt").read_text().splitlines()
        assert [ln for ln in ours if not ln.startswith("#")] == [ln for ln in ref if not ln.startswith("#")]
