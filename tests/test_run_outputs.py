"""What `pktemu run` leaves on disk: readable, checksum-clean, deterministic, never half written."""
from __future__ import annotations

import filecmp
import os
import subprocess
from pathlib import Path

import pytest
import yaml

import datapaths
from conftest import compare, pktemu, summarize

SCENARIOS = ["s1-clusterip", "s2-noendpoints", "s3-hairpin", "s3b-hairpin-off"]
BAD_FILTER = ("_ws.malformed || _ws.expert.severity == error || ip.checksum.status == 0 || "
              "tcp.checksum.status == 0 || udp.checksum.status == 0 || icmp.checksum.status == 0")


def _all_files(d: Path) -> list[str]:
    return sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file())


def test_layout_is_the_oracles(service_test_run: Path) -> None:
    for sc in SCENARIOS:
        files = _all_files(service_test_run / sc)
        for name in ("all.pcapng", "captures.tsv", "client-result.json", "conntrack-node1.txt",
                     "conntrack-gw.txt", "iptables-save-node1.txt", "iptables-save-node2.txt", "drops.txt"):
            assert name in files, (sc, name)
        ref = (datapaths.ORACLE_REF / sc / "captures.tsv").read_text().splitlines()
        ours = (service_test_run / sc / "captures.tsv").read_text().splitlines()
        assert [line.split("\t")[0] for line in ours[:len(ref)]] == [line.split("\t")[0] for line in ref]
    assert not [f for f in os.listdir(service_test_run) if f.startswith(".")], "temporary directory left"


def test_tshark_reads_every_file_without_error(service_test_run: Path) -> None:
    files = sorted(service_test_run.rglob("*.pcap")) + sorted(service_test_run.rglob("*.pcapng"))
    assert len(files) == 4 * 13
    for f in files:
        p = subprocess.run(["tshark", "-n", "-r", str(f), "-o", "ip.check_checksum:TRUE",
                            "-o", "tcp.check_checksum:TRUE", "-o", "udp.check_checksum:TRUE",
                            "-Y", BAD_FILTER], capture_output=True, text=True, timeout=60)
        stderr = [ln for ln in p.stderr.splitlines() if "Running as user" not in ln]
        assert p.returncode == 0 and stderr == [], (f, p.stderr)
        assert p.stdout == "", f"{f}: malformed or bad-checksum frames:\n{p.stdout}"


def test_merged_pcapng_has_one_interface_per_capture_point(service_test_run: Path) -> None:
    f = service_test_run / "s1-clusterip" / "all.pcapng"
    p = subprocess.run(["tshark", "-n", "-r", str(f), "-T", "fields", "-e", "frame.interface_name"],
                       capture_output=True, text=True, timeout=60, check=True)
    per_iface: dict[str, int] = {}
    for name in p.stdout.split():
        per_iface[name] = per_iface.get(name, 0) + 1
    assert per_iface["node1/cbr0"] == 14 and per_iface["client/eth0"] == 15
    assert per_iface["server/eth0"] == 13 and per_iface["gw/eth2"] == 14
    dnat = subprocess.run(["tshark", "-n", "-r", str(f), "-Y", 'frame.comment contains "DNAT"',
                           "-T", "fields", "-e", "frame.interface_name"],
                          capture_output=True, text=True, timeout=60, check=True).stdout.split()
    assert "node1/cbr0" in dnat


def test_same_seed_gives_byte_identical_output(service_test_run: Path, tmp_path: Path) -> None:
    pktemu("run", "topologies/service-test.yaml", "--out", str(tmp_path), "-q")
    for sc in SCENARIOS:
        a, b = service_test_run / sc, tmp_path / sc
        files = [f for f in _all_files(b) if f != "summary.json"]
        assert files == [f for f in _all_files(a) if f != "summary.json"]
        match, mismatch, errors = filecmp.cmpfiles(a, b, files, shallow=False)
        assert mismatch == [] and errors == [], (sc, mismatch, errors)


def test_another_seed_changes_the_bytes_but_not_the_behaviour(service_test_run: Path, tmp_path: Path) -> None:
    pktemu("run", "topologies/service-test.yaml", "--out", str(tmp_path), "--seed", "7", "-q")
    a = (service_test_run / "s1-clusterip" / "pcap" / "client-eth0.pcap").read_bytes()
    b = (tmp_path / "s1-clusterip" / "pcap" / "client-eth0.pcap").read_bytes()
    assert a != b                                  # ISNs, timestamps and IP ids come from the seed
    summarize(tmp_path)
    r = compare(datapaths.ORACLE_REF / "summary.json", tmp_path / "summary.json", "--level", "extended")
    assert r.stdout.strip().splitlines()[-1] == "IDENTICAL", r.stdout


def test_cli_prints_frame_counts_per_capture_point(tmp_path: Path) -> None:
    p = pktemu("run", "topologies/service-test.yaml", "--scenario", "s2-noendpoints", "--out", str(tmp_path))
    lines = {ln.split("│")[1].strip(): ln.split("│")[2].strip() for ln in p.stdout.splitlines()
             if ln.count("│") == 3}
    assert lines["client-eth0"] == "5" and lines["node1-cbr0"] == "4" and lines["node1-eth0"] == "0"
    assert (tmp_path / "s2-noendpoints" / "pcap" / "client-eth0.pcap").exists()
    assert not (tmp_path / "s1-clusterip").exists()


@pytest.mark.parametrize("text, message", [
    ("name: [unclosed\n", "YAML syntax error"),
    ("nodes:\n  a: {colour: blue}\n", "nodes.a.colour"),
])
def test_bad_topology_is_one_line_exit_2_nothing_written(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    out = tmp_path / "out"
    p = pktemu("run", str(f), "--out", str(out), check=False)
    assert p.returncode == 2
    assert len(p.stderr.strip().splitlines()) == 1 and message in p.stderr and "bad.yaml" in p.stderr
    assert "Traceback" not in p.stderr
    assert not out.exists()


@pytest.mark.parametrize("rules, message", [
    ("*filter\n-A FORWARD -j NOWHERE\nCOMMIT\n", ":2:"),
    ("*filter\n:A - [0:0]\n:B - [0:0]\n-A A -j B\n-A B -j A\nCOMMIT\n", "loop"),
    ("*filter\n-A FORWARD -m nosuchmatch -j ACCEPT\nCOMMIT\n", ":2:"),
    ("*filter\n-A FORWARD -j ACCEPT\n", "COMMIT"),
])
def test_bad_rules_file_is_one_line_exit_2_nothing_written(tmp_path: Path, rules: str, message: str) -> None:
    (tmp_path / "bad.iptables").write_text(rules)
    base = yaml.safe_load((datapaths.ROOT / "topologies" / "service-test.yaml").read_text())
    base["nodes"]["node1"]["iptables"] = "bad.iptables"
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(base))
    (tmp_path / "kube-proxy-rules.iptables").write_text(
        (datapaths.ROOT / "topologies" / "kube-proxy-rules.iptables").read_text())
    out = tmp_path / "out"
    p = pktemu("run", str(tmp_path / "t.yaml"), "--out", str(out), check=False)
    assert p.returncode == 2, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and message in p.stderr and "bad.iptables" in p.stderr
    assert not out.exists()


def test_unknown_scenario_and_validate(tmp_path: Path) -> None:
    p = pktemu("run", "topologies/service-test.yaml", "--scenario", "nope", "--out", str(tmp_path / "o"),
               check=False)
    assert p.returncode == 2 and "no scenario 'nope'" in p.stderr
    assert not (tmp_path / "o").exists()
    ok = pktemu("validate", "topologies/service-test.yaml")
    assert "OK" in ok.stdout and "4 scenarios" in ok.stdout
