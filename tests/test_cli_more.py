"""The rest of the command line's conventions, through the real CLI: `-o json|yaml` for run, trace
and replay; trace's exit statuses, `--from namespace/pod` and `--to service[.namespace]:port`;
`rules -c --at` with the scenario's traffic and `-t nat`; `pktemu conntrack`; and the example
topologies shipped inside the package, down to an installed wheel in a fresh virtualenv."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from scapy.utils import rdpcap

import datapaths
from conftest import pktemu

TOPO = "topologies/service-test.yaml"
K8S = "topologies/service-test-k8s.yaml"
REPLAY = ["tests/data/captures/http_get_session.pcap", "-t", TOPO, "--inject", "node1/veth-client",
          "--map", "141.142.228.5=10.0.1.2", "--map", "192.150.187.43=10.3.241.152"]
SEP_DNAT = "-A KUBE-SEP-CCUNI5TAEJBRFII7 -p tcp"


def refused(p: subprocess.CompletedProcess[str], msg: str) -> None:
    """The contract for bad input: one line naming the problem, exit 2, nothing on stdout."""
    assert p.returncode == 2 and p.stdout == "", p
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("pktemu: error: ") and msg in lines[0], p.stderr


@pytest.fixture(scope="module")
def run_json(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("run")
    p = pktemu("run", TOPO, "--scenario", "s1-clusterip", "--scenario", "s2-noendpoints", "--out", str(out),
               "-o", "json")
    return out, json.loads(p.stdout)


# ---------------------------------------------------------------------------------------- -o json|yaml
def test_run_json_says_what_was_written(run_json: tuple[Path, dict[str, Any]]) -> None:
    out, d = run_json
    assert [s["scenario"] for s in d["scenarios"]] == ["s1-clusterip", "s2-noendpoints"]
    for s in d["scenarios"]:
        folder = Path(s["out_dir"])
        assert folder == out / s["scenario"] and (folder / "all.pcapng").is_file()
        points = [ln.split("\t") for ln in (folder / "captures.tsv").read_text().splitlines()]
        assert list(s["frames"]) == [pt[0] for pt in points]
        for name, _node, _ifname, pcap in points:            # the counts are the pcaps' frames
            assert s["frames"][name] == len(rdpcap(str(folder / pcap))), name
        assert s["drops"]["count"] == len((folder / "drops.txt").read_text().splitlines())
        assert s["events"] > 0 and 0 < s["virtual_s"] < 10
    s1, s2 = d["scenarios"]
    assert s1["frames"]["server-eth0"] > 0 and s1["drops"]["count"] == 0
    assert s2["drops"]["reasons"] == [{"node": "node1", "where": "netfilter FORWARD",
                                       "reason": "filter KUBE-SERVICES#1 REJECT icmp-port-unreachable",
                                       "count": 1}]


def test_run_yaml_is_the_same_data_and_text_stays_the_default(tmp_path: Path,
                                                              run_json: tuple[Path, dict[str, Any]]) -> None:
    p = pktemu("run", TOPO, "--scenario", "s2-noendpoints", "--out", str(tmp_path / "y"), "-o", "yaml")
    d = yaml.safe_load(p.stdout)
    want = dict(run_json[1]["scenarios"][1], out_dir=str(tmp_path / "y" / "s2-noendpoints"))
    assert d["scenarios"] == [want]
    text = pktemu("run", TOPO, "--scenario", "s2-noendpoints", "--out", str(tmp_path / "t")).stdout
    assert "1 frame dropped (drops.txt):" in text and "written to" in text


def test_run_of_a_topology_without_scenarios_is_an_error_and_writes_nothing(tmp_path: Path) -> None:
    """It exited 0 having printed and written nothing, as if it had run."""
    topo = tmp_path / "t.yaml"
    topo.write_text("nodes:\n  a: {interfaces: {eth0: {addresses: [10.0.0.1/24]}}}\n"
                    "  b: {interfaces: {eth0: {addresses: [10.0.0.2/24]}}}\nveths: [[a/eth0, b/eth0]]\n")
    p = pktemu("run", str(topo), "--out", str(tmp_path / "out"), check=False)
    assert (p.returncode, p.stdout) == (2, "")
    assert p.stderr == f"pktemu: error: {topo}: no scenarios to run: add one under scenarios: " \
                       "(docs/topology.md, Scenarios)\n"
    assert not (tmp_path / "out").exists()


def test_run_text_says_each_scenarios_time_on_one_line(tmp_path: Path) -> None:
    """A short capture point list made the table narrow, and its title was wrapped to it."""
    topo = tmp_path / "t.yaml"
    topo.write_text("nodes:\n  a: {interfaces: {eth0: {addresses: [10.0.0.1/24]}}}\n"
                    "  b: {interfaces: {eth0: {addresses: [10.0.0.2/24]}}}\n"
                    "veths: [[a/eth0, b/eth0]]\nscenarios:\n  x: {}\n")
    text = pktemu("run", str(topo), "--out", str(tmp_path / "out")).stdout
    assert text.splitlines()[0] == "x  (0.000 s virtual, 0 events)"
    assert not text.lstrip().startswith("{")


def test_replay_output_json_is_json_alias_and_yaml(tmp_path: Path) -> None:
    a = pktemu("replay", *REPLAY, "--out", str(tmp_path / "a"), "--json").stdout
    b = pktemu("replay", *REPLAY, "--out", str(tmp_path / "b"), "-o", "json").stdout
    c = pktemu("replay", *REPLAY, "--out", str(tmp_path / "c"), "-o", "yaml").stdout

    def same(text: str, parse: Any) -> dict[str, Any]:
        d = parse(text)
        d.pop("out_dir", None)
        return d

    assert a.replace(str(tmp_path / "a"), "X") == b.replace(str(tmp_path / "b"), "X")
    assert same(c, yaml.safe_load) == same(a, json.loads)
    assert json.loads(a)["sent"]["packets"] > 0
    refused(pktemu("replay", *REPLAY, "--out", str(tmp_path / "d"), "--json", "-o", "yaml", check=False),
            "replay: --json and -o yaml given")
    assert not (tmp_path / "d").exists()


def test_trace_output_yaml_is_the_json_data() -> None:
    args = ("trace", TOPO, "--from", "client", "--to", "10.3.241.152:80", "--sport", "40000")
    j = json.loads(pktemu(*args, "--json").stdout)
    assert json.loads(pktemu(*args, "-o", "json").stdout) == j
    assert yaml.safe_load(pktemu(*args, "-o", "yaml").stdout) == j
    assert j["summary"]["request"].startswith("delivered to server")


# ---------------------------------------------------------------------------------------- trace
@pytest.mark.parametrize("to,status,first", [
    ("10.3.241.152:80", 0, "delivered to server"),           # answered
    ("10.3.250.77:80", 1, "dropped at node1"),               # REJECTed: no endpoints
])
def test_trace_exit_status_says_whether_it_was_answered(to: str, status: int, first: str) -> None:
    p = pktemu("trace", TOPO, "--from", "client", "--to", to, "-o", "json", check=False)
    assert p.returncode == status and p.stderr == ""
    assert json.loads(p.stdout)["summary"]["request"].startswith(first)


def test_trace_exits_1_when_nothing_answers() -> None:
    p = pktemu("trace", TOPO, "--from", "client", "--to", "10.3.245.20:80", "--scenario", "s3b-hairpin-off",
               check=False)
    assert p.returncode == 1 and "reply: none within" in p.stdout


@pytest.mark.parametrize("to", ["service-test:80", "service-test.default:80", "service-test.default.svc:80"])
def test_trace_from_a_pod_to_a_service_by_name(to: str) -> None:
    p = pktemu("trace", K8S, "--from", "default/client", "--to", to, "-o", "json")
    d = json.loads(p.stdout)
    assert d["from"] == "default/client" and d["to"] == "10.3.241.152:80/tcp"
    assert d["summary"]["request"].startswith("delivered to server (tcp 10.0.1.2:")
    assert d["summary"]["reply"].startswith("delivered to client (tcp 10.3.241.152:80 > 10.0.1.2:")


def test_trace_to_a_service_takes_its_port_protocol_and_namespace() -> None:
    d = json.loads(pktemu("trace", K8S, "--from", "client", "--to", "kube-dns.kube-system:53",
                          "--json").stdout)
    assert d["to"] == "10.3.240.10:53/udp" and d["summary"]["request"].startswith("delivered to dns (udp")
    p = pktemu("trace", K8S, "--from", "client", "--to", "service-noep:80", check=False)
    assert p.returncode == 1 and "REJECT" in p.stdout


@pytest.mark.parametrize("topo,to,msg", [
    (K8S, "nope:80", "trace --to 'nope:80': no Service default/nope (have: "),
    (K8S, "service-test.kube-system:80", "no Service kube-system/service-test"),
    (K8S, "service-test:81", "Service default/service-test has no port 81 (has: 80/tcp)"),
    (K8S, "service-test:80/udp", "has no port 80/udp"),
    (K8S, "Service_Test:80", "expected IPv4:PORT[/tcp|udp] or SERVICE[.NAMESPACE]:PORT"),
    (TOPO, "service-test:80", "has no kubernetes section to look Services up in"),
])
def test_trace_to_a_bad_service_is_one_line_exit_2(topo: str, to: str, msg: str) -> None:
    refused(pktemu("trace", topo, "--from", "client", "--to", to, check=False, timeout=60), msg)


# ---------------------------------------------------------------------------------------- rules
def test_rules_counters_at_a_time_count_the_scenarios_traffic(run_json: tuple[Path, dict[str, Any]]) -> None:
    base = ("rules", TOPO, "--node", "node1", "--scenario", "s1-clusterip", "-c")
    at0 = pktemu(*base, "--at", "0s", "-t", "nat").stdout
    end = pktemu(*base, "--at", "5s", "-t", "nat").stdout
    assert f"[0:0] {SEP_DNAT}" in at0 and f"[1:60] {SEP_DNAT}" in end
    saved = (run_json[0] / "s1-clusterip" / "iptables-save-node1.txt").read_text()
    assert end == saved[saved.index("# Generated by pktemu iptables-save\n*nat\n"):]   # nat is the last table
    # GETs every 500 ms: the counts keep growing with --at
    story = ("rules", "topologies/seed-story.yaml", "--node", "node1", "--scenario", "story", "-c",
             "-o", "json", "--table", "nat")
    counts = []
    for at in ("0.2s", "2.2s"):
        d = json.loads(pktemu(*story, "--at", at).stdout)
        rule = next(r for r in d["tables"][0]["rules"] if r["chain"] == "PREROUTING")
        counts.append(rule["packets"])
    assert 0 < counts[0] < counts[1]


def test_rules_dash_t_table_prints_that_table_only() -> None:
    nat = pktemu("rules", TOPO, "--node", "node1", "-t", "nat").stdout
    assert re.findall(r"^\*(\w+)$", nat, re.M) == ["nat"] and nat.startswith("# Generated by")
    assert nat.rstrip().endswith("COMMIT\n# Completed by pktemu".rstrip())
    assert pktemu("rules", "-t", TOPO, "--node", "node1", "--table", "nat").stdout == nat
    whole = pktemu("rules", TOPO, "--node", "node1").stdout
    assert nat in whole and "*filter" in whole
    d = json.loads(pktemu("rules", TOPO, "--node", "node1", "-t", "filter", "-o", "json").stdout)
    assert [t["table"] for t in d["tables"]] == ["filter"]
    p = pktemu("rules", TOPO, "--node", "node1", "--table", "nope", check=False)
    assert p.returncode == 2 and len(p.stderr.splitlines()) == 1 and "nope" in p.stderr


# ---------------------------------------------------------------------------------------- conntrack
def test_conntrack_at_the_end_is_what_run_wrote(run_json: tuple[Path, dict[str, Any]]) -> None:
    seen = {}
    for node in ("node1", "node2"):
        seen[node] = pktemu("conntrack", TOPO, "--node", node, "--scenario", "s1-clusterip").stdout
        assert seen[node] == (run_json[0] / "s1-clusterip" / f"conntrack-{node}.txt").read_text()
    assert "TIME_WAIT src=10.0.1.2 dst=10.3.241.152 sport=40000 dport=80 src=10.0.2.2" in seen["node1"]


def test_conntrack_at_a_time_and_as_data() -> None:
    base = ("conntrack", TOPO, "--node", "node1", "--scenario", "s1-clusterip")
    assert pktemu(*base, "--at", "0s").stdout == ""
    d = json.loads(pktemu(*base, "--at", "1s", "-o", "json").stdout)
    assert d["node"] == "node1" and d["at_s"] == 1.0
    tcp = next(e for e in d["entries"] if e["proto"] == "tcp")
    assert tcp["original"] == {"src": "10.0.1.2", "sport": 40000, "dst": "10.3.241.152", "dport": 80}
    assert tcp["reply"] == {"src": "10.0.2.2", "sport": 8080, "dst": "10.0.1.2", "dport": 40000}
    assert tcp["state"] == "TIME_WAIT" and tcp["timeout_s"] == 119
    assert tcp["line"].startswith("tcp      6 119 TIME_WAIT src=10.0.1.2 ")
    assert yaml.safe_load(pktemu(*base, "--at", "1s", "-o", "yaml").stdout) == d


@pytest.mark.parametrize("args,msg", [
    (["--node", "nosuch"], "--node 'nosuch': no pod or node 'nosuch'"),
    (["--node", "node1", "--scenario", "nope"], "no scenario 'nope'"),
    (["--node", "node1", "--at", "soon"], "--at"),
])
def test_conntrack_bad_input_is_one_line_exit_2(args: list[str], msg: str) -> None:
    refused(pktemu("conntrack", TOPO, *args, check=False, timeout=60), msg)


# ---------------------------------------------------------------------------------------- examples
def test_the_packaged_examples_are_the_repositorys_topologies() -> None:
    shipped = datapaths.ROOT / "pktemu" / "examples"
    repo = datapaths.ROOT / "topologies"
    mine = {str(p.relative_to(repo)) for p in repo.rglob("*") if p.is_file()}
    theirs = {str(p.relative_to(shipped)) for p in shipped.rglob("*") if p.is_file()}
    fix = "copy topologies/X to pktemu/examples/X (and its kind of file into pyproject's package-data)"
    assert mine == theirs, f"only in topologies/: {sorted(mine - theirs)}, only in pktemu/examples/: " \
                           f"{sorted(theirs - mine)}: {fix}"
    for rel in sorted(mine):
        assert (repo / rel).read_bytes() == (shipped / rel).read_bytes(), f"{rel} differs: {fix}"


def test_example_alone_lists_them_and_a_name_runs_one(tmp_path: Path) -> None:
    p = pktemu("run", "--example")
    names = [ln.split()[0] for ln in p.stdout.splitlines() if not ln.startswith("(")]
    assert {"service-test", "service-test-k8s", "seed-story", "pod-to-pod"} <= set(names)
    assert pktemu("validate", "--example").stdout == p.stdout
    v = pktemu("validate", "--example", "service-test-k8s")
    assert "OK — 6 nodes" in " ".join(v.stdout.split())
    pktemu("run", "--example", "service-test", "--scenario", "s2-noendpoints", "--out", str(tmp_path), "-q")
    assert (tmp_path / "s2-noendpoints" / "all.pcapng").is_file()
    trace = pktemu("trace", "--example", "service-test-k8s", "--from", "client", "--to", "service-test:80")
    assert "DNAT 10.3.241.152:80 -> 10.0.2.2:8080" in trace.stdout


@pytest.mark.parametrize("args,msg", [
    (["run", "--example", "nope"], "run --example 'nope': no such example (have: "),
    (["run", TOPO, "--example", "service-test"], "run: a topology ('topologies/service-test.yaml') and "
                                                 "--example 'service-test' given: give one"),
    (["replay", "x.pcap", "--inject", "node1/veth-client"], "replay: the topology is required "
                                                            "(-t/--topology TOPOLOGY or --example NAME)"),
])
def test_bad_example_is_one_line_exit_2(args: list[str], msg: str, tmp_path: Path) -> None:
    refused(pktemu(*args, "--out", str(tmp_path / "o"), check=False, timeout=60), msg)
    assert not (tmp_path / "o").exists()


def test_examples_run_from_an_installed_wheel(tmp_path: Path) -> None:
    """Build the wheel from a copy of the sources, install it into a fresh virtualenv with its
    dependencies, and run an example from a folder that has no topologies/ (finishes within ~60 s)."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(datapaths.ROOT / name, src / name)
    shutil.copytree(datapaths.ROOT / "pktemu", src / "pktemu",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    built = subprocess.run([*pip, "wheel", ".", "-w", str(tmp_path / "dist"), "--no-deps"], cwd=src,
                           capture_output=True, text=True, timeout=180)
    if built.returncode != 0:
        pytest.skip(f"pip cannot build the wheel here: {built.stderr.strip().splitlines()[-1:]}")
    wheel = next((tmp_path / "dist").glob("pktemu-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    subprocess.run([*pip, "--python", str(py), "install", "--no-deps", str(wheel)], check=True,
                   capture_output=True, timeout=180)
    deps = subprocess.run([*pip, "--python", str(py), "install", "scapy>=2.5", "pyyaml>=6", "rich>=13"],
                          capture_output=True, text=True, timeout=300)
    if deps.returncode != 0:
        pytest.skip(f"pip cannot install scapy, pyyaml and rich: {deps.stderr.strip().splitlines()[-1:]}")
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    where = subprocess.run([str(py), "-c", "import pktemu; print(pktemu.__file__)"], cwd=work, env=env,
                           capture_output=True, text=True, check=True, timeout=60).stdout
    assert where.startswith(str(venv)), where                # the wheel's copy, not the repository's
    listed = subprocess.run([str(venv / "bin" / "pktemu"), "run", "--example"], cwd=work, env=env,
                            capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and "service-test-k8s" in listed.stdout
    p = subprocess.run([str(venv / "bin" / "pktemu"), "run", "--example", "service-test", "--out", "X", "-q"],
                       cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    for sc in ("s1-clusterip", "s2-noendpoints", "s3-hairpin", "s3b-hairpin-off"):
        assert (work / "X" / sc / "all.pcapng").is_file(), sc
    assert "HTTP/1.1 200 OK" in (work / "X" / "s1-clusterip" / "client-result.json").read_text()
    k8s = subprocess.run([str(venv / "bin" / "pktemu"), "trace", "--example", "service-test-k8s", "--from",
                          "default/client", "--to", "service-test:80"], cwd=work, env=env,
                         capture_output=True, text=True, timeout=60)
    assert k8s.returncode == 0 and "delivered to server" in k8s.stdout, k8s.stderr


def test_import_takes_dumps_after_the_output_option(tmp_path: Path) -> None:
    """`pktemu import A -o T B` reads B as a dump too (as `cp`-like tools take operands anywhere);
    an unknown option after it is still refused."""
    first = tmp_path / "node1"
    first.mkdir()
    out = tmp_path / "t.yaml"
    r = pktemu("import", str(first), "-o", str(out), str(tmp_path / "missing.tar.gz"), check=False)
    assert r.returncode == 2
    missing = tmp_path / "missing.tar.gz"
    assert r.stderr.strip().splitlines()[-1] == f"pktemu: error: {missing}: no such file or folder"
    assert not out.exists()
    r = pktemu("import", str(first), "-o", str(out), "b", "--bogus", check=False)
    assert r.returncode == 2 and "unrecognized arguments: b --bogus" in r.stderr


def test_rules_dash_t_table_wins_over_a_file_of_that_name(tmp_path: Path) -> None:
    """A file `nat` in the current directory does not make `-t nat` a topology (README: only a `-t`
    value that is not a table name is the topology); `-t ./nat` names the file."""
    (tmp_path / "nat").write_text("nodes: {}\n")
    env = {**os.environ, "PYTHONPATH": str(datapaths.ROOT)}
    topo = str(datapaths.ROOT / TOPO)

    def rules(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pktemu.cli", "rules", *args], capture_output=True,
                              text=True, timeout=120, cwd=tmp_path, env=env)

    p = rules(topo, "-t", "nat", "--node", "node1")
    assert (p.returncode, p.stderr) == (0, "")
    assert p.stdout == pktemu("rules", TOPO, "--node", "node1", "--table", "nat").stdout
    p = rules("-t", "./nat", "--node", "node1")
    assert (p.returncode, p.stderr) == (2, "pktemu: error: --node 'node1': no pod or node 'node1' (have: )\n")


@pytest.mark.parametrize("seed", ["-1", "18446744073709551616", "x", "1.5"])
@pytest.mark.parametrize("cmd", [["run", TOPO], ["reach", TOPO, "--from", "client"], ["replay", *REPLAY],
                                 ["trace", TOPO, "--from", "client", "--to", "10.3.241.152:80/tcp"]])
def test_a_seed_outside_a_topologys_seed_range_is_refused(tmp_path: Path, cmd: list[str], seed: str) -> None:
    """--seed takes what a topology's `seed:` takes (0 to 2**64-1): -1 was run and recorded as the seed."""
    out = tmp_path / "out"
    outs = ["--out", str(out)] if cmd[0] in ("run", "replay") else []
    p = pktemu(*cmd, "--seed", seed, *outs, check=False)
    refused(p, f"argument --seed: '{seed}' is not a seed (an integer from 0 to 2**64-1)")
    assert not out.exists()
