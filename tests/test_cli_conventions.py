"""The command line's conventions, through the real CLI: `pktemu` alone lists the commands,
`--version`, counts in English, and the topology as `TOPOLOGY` or `-t/--topology` everywhere."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from conftest import pktemu

TOPOLOGY = "topologies/service-test.yaml"


def test_pktemu_alone_prints_the_commands_and_exits_0() -> None:
    p = pktemu(check=False)
    assert p.returncode == 0 and p.stderr == ""
    for cmd in ("run", "validate", "rules", "trace", "replay", "kernel"):
        assert re.search(rf"^\s+{cmd}\s+\S", p.stdout, re.M), cmd


def test_version() -> None:
    p = pktemu("--version")
    assert re.fullmatch(r"pktemu \d+\.\d+\.\d+\S*\n", p.stdout), p.stdout


@pytest.mark.parametrize("form", [["TOPO"], ["-t", "TOPO"], ["--topology", "TOPO"], ["--topology=TOPO"]])
def test_validate_takes_the_topology_either_way(form: list[str]) -> None:
    p = pktemu("validate", *[a.replace("TOPO", TOPOLOGY) for a in form])
    assert "OK — 6 nodes, 5 veth pairs, 4 scenarios" in " ".join(p.stdout.split())


def test_every_topology_command_takes_dash_t(tmp_path: Path) -> None:
    rules = pktemu("rules", "-t", TOPOLOGY, "--node", "node1")
    assert rules.stdout == pktemu("rules", TOPOLOGY, "--node", "node1").stdout and "*nat" in rules.stdout
    trace = pktemu("trace", "-t", TOPOLOGY, "--from", "client", "--to", "10.3.241.152:80", "--json")
    assert trace.stdout == pktemu("trace", TOPOLOGY, "--from", "client", "--to", "10.3.241.152:80",
                                  "--json").stdout
    pktemu("run", "-t", TOPOLOGY, "--scenario", "s2-noendpoints", "--out", str(tmp_path), "-q")
    assert (tmp_path / "s2-noendpoints" / "all.pcapng").exists()
    replay = pktemu("replay", "tests/data/captures/http_get_session.pcap", "-t", TOPOLOGY,
                    "--inject", "node1/veth-client", "--map", "141.142.228.5=10.0.1.2",
                    "--map", "192.150.187.43=10.3.241.152", "--out", str(tmp_path), "-q")
    assert replay.returncode == 0 and (tmp_path / "replay-http_get_session").is_dir()


@pytest.mark.parametrize("cmd", [["validate"], ["rules", "--node", "node1"], ["run"],
                                 ["trace", "--from", "client", "--to", "10.3.241.152:80"]])
def test_no_topology_or_two_is_one_line_and_exit_2(cmd: list[str], tmp_path: Path) -> None:
    for args in ([], [TOPOLOGY, "-t", "topologies/pod-to-pod.yaml"]):
        p = pktemu(*cmd, *args, check=False, timeout=60)
        assert p.returncode == 2 and p.stdout == "", p
        assert len(p.stderr.splitlines()) == 1 and p.stderr.startswith(f"pktemu: error: {cmd[0]}: ")
        assert "topolog" in p.stderr
    assert not list(tmp_path.iterdir()) and not Path("pcaps-never").exists()


def test_counts_read_as_english(tmp_path: Path) -> None:
    p = pktemu("validate", "topologies/seed-story.yaml")
    assert "1 scenario (story)" in p.stdout and "1 scenarios" not in p.stdout, p.stdout
    p = pktemu("run", TOPOLOGY, "--scenario", "s3b-hairpin-off", "--out", str(tmp_path))
    assert "1 frame dropped" in p.stdout and "1 frames" not in p.stdout, p.stdout
    assert re.search(r"\b([02-9]|\d\d+) events\)", p.stdout), p.stdout


def test_validate_machine_output() -> None:
    data = json.loads(pktemu("validate", "-t", TOPOLOGY, "-o", "json").stdout)
    assert data["valid"] is True and data["topology"] == TOPOLOGY
    assert "node1" in data["nodes"] and len(data["nodes"]) == 6 and data["veth_pairs"] == 5
    assert data["scenarios"] == ["s1-clusterip", "s2-noendpoints", "s3-hairpin", "s3b-hairpin-off"]
    assert yaml.safe_load(pktemu("validate", TOPOLOGY, "--output", "yaml").stdout) == data


def test_rules_machine_output_holds_the_iptables_save_text() -> None:
    args = ("rules", TOPOLOGY, "--node", "node1", "-c")
    text = pktemu(*args).stdout
    data = json.loads(pktemu(*args, "-o", "json").stdout)
    assert data["node"] == "node1"
    assert [t["table"] for t in data["tables"]] == re.findall(r"^\*(\w+)$", text, re.M)
    rules = [r for t in data["tables"] for r in t["rules"]]
    assert [f"[{r['packets']}:{r['bytes']}] {r['rule']}" for r in rules] == \
        [line for line in text.splitlines() if line.startswith("[")]
    nat = next(t for t in data["tables"] if t["table"] == "nat")
    assert {"chain": "PREROUTING", "policy": "ACCEPT", "packets": 0, "bytes": 0} in nat["chains"]
    assert any(r["chain"] == "KUBE-SERVICES" and "10.3.241.152/32" in r["rule"] for r in nat["rules"])
    assert yaml.safe_load(pktemu(*args, "-o", "yaml").stdout) == data


def test_an_unknown_output_format_is_a_usage_error() -> None:
    p = pktemu("validate", TOPOLOGY, "-o", "xml", check=False)
    assert p.returncode == 2 and p.stdout == "" and len(p.stderr.splitlines()) == 1
    assert p.stderr.startswith("pktemu: error: ") and "xml" in p.stderr
