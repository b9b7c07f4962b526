"""Property-based fuzzing of pktemu's input contract: whatever a user hands it, `pktemu` exits 0 with
valid outputs, or exits 2 with one short `pktemu: error: ...` line, fast, within bounded memory,
never with a traceback or an internal error, and leaves nothing behind for a refused input.

Inputs are mutated from the repository's real files: topologies (YAML tree and text), Kubernetes
manifests (through a copy of their topology), the kube-proxy rules file (through a copy of
service-test.yaml), captures for `pktemu replay` (Scapy-made seeds and tests/data/captures),
and the commands' options. Each case runs in one persistent worker process (tests/fuzz/worker.py).

Deterministic by default (CI: a few hundred inputs). `PKTEMU_FUZZ=long` tries 20 times as many;
`PKTEMU_FUZZ_KEEP_GOING=1` records broken contracts instead of failing; `PKTEMU_FUZZ_REPORT=FILE`
names the JSON summary (per class: inputs tried, exit statuses, the slowest case, failures).
"""
from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from fuzz import seeds
from fuzz.mutate_bytes import capture_mutation, rules_mutation
from fuzz.mutate_yaml import dump, text_mutation, tree_mutation
from fuzz.session import Session

SCALE = 20 if os.environ.get("PKTEMU_FUZZ") == "long" else 1
TOPOLOGY_SEEDS = {p.name: seeds.topology_doc(p) for p in seeds.TOPOLOGY_SEEDS}
DONORS = [*TOPOLOGY_SEEDS.values(),
          *(d for p in seeds.MANIFEST_SEEDS for d in yaml.safe_load_all(p.read_text()))]
SCENARIOS = {name: list(doc.get("scenarios") or {}) for name, doc in TOPOLOGY_SEEDS.items()}


def fuzz(examples: int) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Deterministic, no example database, no deadline (the worker has its own time bound), and no
    `explain` phase (its line tracing is slow); a failure is still shrunk to a small input."""
    return settings(max_examples=examples * SCALE, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck), print_blob=False,
                    phases=[Phase.explicit, Phase.generate, Phase.shrink])


@pytest.fixture(scope="session")
def session(tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config) -> Iterator[Session]:
    s = Session(tmp_path_factory.mktemp("fuzz"))
    yield s
    s.worker.stop()
    report = Path(os.environ.get("PKTEMU_FUZZ_REPORT") or s.root / "fuzz-summary.json")
    report.write_text(json.dumps(s.summary(), indent=1))
    tr = pytestconfig.pluginmanager.get_plugin("terminalreporter")
    capman = pytestconfig.pluginmanager.get_plugin("capturemanager")
    if tr is None or capman is None:
        return
    with capman.global_and_fixture_disabled():          # shown without -s too
        t = s.tally
        tr.write_line("")
        tr.write_line(f"fuzz summary ({report}; failing inputs kept under {s.findings}):")
        for cls, n in t.tried.items():
            slow = t.slowest[cls]
            tr.write_line(f"  {cls}: {n} inputs, exits {t.exits[cls]}, "
                          f"slowest {slow['seconds']}s ({' '.join(slow['argv'])[:160]})")
        tr.write_line(f"  distinct failures: {len(t.failures)}")
        for sig, f in t.failures.items():
            tr.write_line(f"    {f['count']}x {sig}")


@st.composite
def run_command(draw: st.DrawFn, seed: str, topo: str, case_out: str) -> list[str]:
    """validate (mostly), or one scenario run, a trace or a rules print of the mutated topology."""
    cmd = draw(st.sampled_from(["validate", "validate", "validate", "run", "trace", "rules"]))
    scenarios = SCENARIOS[seed]
    if cmd == "run":
        return ["run", topo, "-q", "--out", case_out] + (
            ["--scenario", draw(st.sampled_from(scenarios))] if scenarios else [])
    if cmd == "trace":
        origin = "h1" if seed == "lan.yaml" else "client"
        to = "10.8.0.1:80/tcp" if seed == "lan.yaml" else "10.3.241.152:80/tcp"
        return ["trace", topo, "--from", origin, "--to", to]
    if cmd == "rules" and seed != "lan.yaml":
        return ["rules", topo, "--node", "node1"]
    return ["validate", topo]


@fuzz(100)
@given(data=st.data())
def test_topology_tree(session: Session, data: st.DataObject) -> None:
    """(a) A shipped topology with its YAML tree mutated: keys deleted, duplicated, swapped, values
    retyped or nudged to near misses, aliased, nested, replaced by raw YAML oddities."""
    seed = data.draw(st.sampled_from(sorted(TOPOLOGY_SEEDS)))
    docs, raw, what = data.draw(tree_mutation([TOPOLOGY_SEEDS[seed]], DONORS))
    case = session.case("topology-tree", f"{seed}: {what}")
    topo = session.write(case, "topology.yaml", dump(docs, raw, data.draw(st.booleans())))
    case.argv = data.draw(run_command(seed, topo, str(case.out)))
    session.check(case)


RUNNABLE = sorted((seed, sc) for seed, doc in TOPOLOGY_SEEDS.items() for sc in SCENARIOS[seed])


@fuzz(60)
@given(data=st.data())
def test_scenario_traffic(session: Session, data: st.DataObject) -> None:
    """(a) One scenario of a shipped topology (its traffic, overrides, timeline) and the pods' apps
    mutated, then run: app parameters, timelines and overrides reach the emulation itself."""
    seed, name = data.draw(st.sampled_from(RUNNABLE))
    doc = copy.deepcopy(TOPOLOGY_SEEDS[seed])
    parts = [doc["scenarios"][name]] + ([doc["pods"]] if isinstance(doc.get("pods"), dict) else [])
    new, raw, what = data.draw(tree_mutation(parts, DONORS))
    doc["scenarios"][name] = new[0]
    if len(new) > 1:
        doc["pods"] = new[1]
    case = session.case("scenario-traffic", f"{seed} {name}: {what}")
    topo = session.write(case, "topology.yaml", dump([doc], raw, False))
    case.argv = ["run", topo, "-q", "--out", str(case.out), "--scenario", name]
    session.check(case)


@fuzz(80)
@given(data=st.data())
def test_topology_text(session: Session, data: st.DataObject) -> None:
    """(a) A shipped topology's text with bytes flipped, YAML tokens inserted, lines cut or repeated."""
    seed = data.draw(st.sampled_from(sorted(TOPOLOGY_SEEDS)))
    path = next(p for p in seeds.TOPOLOGY_SEEDS if p.name == seed)
    text, what = data.draw(text_mutation(seeds.topology_text(path)))
    case = session.case("topology-text", f"{seed}: {what}")
    topo = session.write(case, "topology.yaml", text)
    case.argv = data.draw(run_command(seed, topo, str(case.out)))
    session.check(case)


MANIFESTS = {p.name: (p, list(yaml.safe_load_all(p.read_text())), topo)
             for p, topo in seeds.MANIFEST_SEEDS.items()}


@fuzz(100)
@given(data=st.data())
def test_manifests(session: Session, data: st.DataObject) -> None:
    """(b) A Kubernetes manifest mutated (tree or text), loaded through a copy of its topology."""
    name = data.draw(st.sampled_from(sorted(MANIFESTS)))
    path, docs, topology = MANIFESTS[name]
    if data.draw(st.booleans()):
        mdocs, raw, what = data.draw(tree_mutation(docs, DONORS))
        text = dump(mdocs, raw, data.draw(st.booleans()))
    else:
        text, what = data.draw(text_mutation(path.read_bytes()))
    case = session.case("manifests", f"{name}: {what}")
    mpath = session.write(case, name, text)
    listed = seeds.topology_doc(topology)["kubernetes"]["manifests"]
    doc = seeds.with_manifests(topology, [mpath if Path(m).name == name else m for m in listed])
    topo = session.write(case, "topology.yaml", yaml.safe_dump(doc, sort_keys=False).encode())
    cmd = data.draw(st.sampled_from(["validate", "validate", "rules", "run"]))
    scenario = "story" if topology.name == "seed-story.yaml" else "s1-clusterip"
    case.argv = {"validate": ["validate", topo], "rules": ["rules", topo, "--node", "node1"],
                 "run": ["run", topo, "-q", "--out", str(case.out), "--scenario", scenario]}[cmd]
    session.check(case)


@fuzz(100)
@given(data=st.data())
def test_rules_file(session: Session, data: st.DataObject) -> None:
    """(c) kube-proxy-rules.iptables with lines and tokens mutated, as node1's `iptables:` file."""
    text, what = data.draw(rules_mutation(seeds.RULES_SEED.read_text()))
    case = session.case("rules", what)
    rules = session.write(case, "rules.iptables", text)
    topo = session.write(case, "topology.yaml",
                         yaml.safe_dump(seeds.with_rules(rules), sort_keys=False).encode())
    cmd = data.draw(st.sampled_from(["validate", "trace", "trace-udp", "rules", "run"]))
    case.argv = {"validate": ["validate", topo],
                 "trace": ["trace", topo, "--from", "client", "--to", "10.3.241.152:80/tcp"],
                 "trace-udp": ["trace", topo, "--from", "client", "--to", "10.3.240.10:53/udp"],
                 "rules": ["rules", topo, "--node", "node1", "-c"],
                 "run": ["run", topo, "-q", "--out", str(case.out), "--scenario", "s1-clusterip"]}[cmd]
    session.check(case)


CAPTURES: dict[str, bytes] = {}


def capture_seeds(session: Session) -> dict[str, bytes]:
    if not CAPTURES:
        for p in seeds.make_captures(session.root / "seeds"):
            CAPTURES[p.name] = p.read_bytes()
    return CAPTURES


@fuzz(120)
@given(data=st.data())
def test_capture(session: Session, data: st.DataObject) -> None:
    """(d) A pcap or pcapng with header fields, bytes and spans mutated, replayed into service-test."""
    caps = capture_seeds(session)
    name = data.draw(st.sampled_from(sorted(caps)))
    blob, what = data.draw(capture_mutation(caps[name], list(caps.values())))
    case = session.case("captures", f"{name}: {what}")
    cap = session.write(case, name, blob)
    maps = [a for m in seeds.capture_maps(Path(name)) for a in ("--map", m)]
    opts = data.draw(st.sampled_from([[], ["--topspeed"], ["--fix-checksums"],
                                      ["--split", "all", "--topspeed"], ["--json"], ["--split", "port:80,53"],
                                      ["--loop", "2", "--topspeed"],
                                      ["--split", "cidr:192.168.1.0/24,10.0.0.0/8", "--fix-checksums"]]))
    case.argv = ["replay", cap, "--topology", str(seeds.TOPOLOGIES / "service-test.yaml"),
                 "--inject", "node1/veth-client", *maps, *opts, "--out", str(case.out), "-q"]
    session.check(case)


ODD_NUMBERS = ["0", "-1", "1", "nan", "inf", "-inf", "1e-300", "1e300", "1e400", "0x10", "", " 1", "1_0",
               "9" * 400]
ODD_DURATIONS = ["0s", "-1s", "1.5", "1 s", "1e400s", "nans", "infs", "1000h", "9" * 30 + "ns", "", "s", "1S",
                 "0.0000000001ns", "1h1h"]


@st.composite
def odd_options(draw: st.DrawFn, out: str, capture: str) -> list[str]:
    """A command line with one or two options set to odd values (on the unmodified shipped files)."""
    topo, k8s, lan = (str(seeds.TOPOLOGIES / n) for n in ("service-test.yaml", "service-test-k8s.yaml",
                                                          "pod-to-pod.yaml"))
    one = st.sampled_from
    cmd = draw(one(["run", "rules", "trace", "replay", "validate"]))
    if cmd == "run":
        return ["run", draw(one([topo, lan])), "-q", "--out", out, "--scenario",
                draw(one(["s2-noendpoints", "direct", "nope", "", "s1-clusterip,s2"])), "--seed",
                draw(one(["1", "0", "-1", str(2 ** 64), "9" * 5000, "x"]))]
    if cmd == "rules":
        return ["rules", draw(one([topo, k8s])), "--node", draw(one(["node1", "client", "gw", "nope", ""])),
                "--at", draw(one(ODD_DURATIONS)), *draw(one([[], ["--scenario", "s3b-hairpin-off"],
                                                             ["--scenario", "nope"]]))]
    if cmd == "trace":
        return ["trace", draw(one([topo, k8s])), "--from",
                draw(one(["client", "node1", "gw", "dns", "nope"])), "--to",
                draw(one(["10.3.241.152:80/tcp", "10.3.241.152:80/sctp", "10.3.241.152:0", "1.2.3.4:53/udp",
                                  "10.0.1.2:8080", "255.255.255.255:9/udp", "10.3.241.152", "::1:80",
                                  "10.3.241.152:99999", "0.0.0.0:1"])),
                *draw(one([[], ["--sport", "0"], ["--sport", "65535"], ["--sport", str(2 ** 70)], ["--json"],
                           ["--seed", "-5"]]))]
    if cmd == "validate":
        return ["validate", draw(one(["/", "/dev/null", str(seeds.RULES_SEED), str(seeds.ROOT / "README.md"),
                                      capture, "nope.yaml", ""]))]
    opt = draw(one(["--speed", "--pps", "--loop", "--answer-timeout", "--settle", "--split", "--map",
                    "--inject", "--name", "--scenario"]))
    value = draw(one(ODD_DURATIONS if opt in ("--answer-timeout", "--settle") else
                     ["syn", "all", "port", "port:0", "port:80,99999", "cidr:", "cidr:10.0.0.0/33",
                      "cidr:0.0.0.0/0", "bogus"] if opt == "--split" else
                     ["a=b", "10.0.0.0/8=10.0.1.2", "1.2.3.4=", "=1.2.3.4", "1.2.3.4=::1",
                      "0.0.0.0/0=10.0.1.0/24", "192.168.1.7=192.168.1.7", "192.168.1.7/33=10.0.1.2"]
                     if opt == "--map" else
                     ["node1/veth-client", "node1/cbr0", "node1/lo", "nope/x", "", "node1", "node1/eth0",
                      "client/eth0", "gw/eth1"] if opt == "--inject" else
                     ["x", "", "..", ".", "a/b", ".hidden", "-", "é" * 200, "x" * 300] if opt == "--name" else
                     ["s1-clusterip", "nope", ""] if opt == "--scenario" else
                     ["1", "2", "0", "-1", "0.5"] if opt == "--loop" else ODD_NUMBERS))
    base = ["replay", capture, "--topology", topo, *[a for m in seeds.SEED_MAPS for a in ("--map", m)],
            "--out", out, "-q"]
    if opt == "--inject":
        return base + ["--inject", value]
    return base + ["--inject", "node1/veth-client", opt, value]


@fuzz(60)
@given(data=st.data())
def test_options(session: Session, data: st.DataObject) -> None:
    """(e) The commands' options set to odd values: numbers, durations, names, targets, maps."""
    case = session.case("options", "")
    capture = session.root / "seeds" / "seed.pcap"
    capture_seeds(session)
    case.argv = data.draw(odd_options(str(case.out), str(capture)))
    case.what = " ".join(case.argv[:1] + [a for a in case.argv[2:] if a.startswith("-") or "/" not in a])
    session.check(case)


def test_the_contract_check_catches_a_traceback_and_leftovers(session: Session) -> None:
    """The checker is not vacuous: a case that breaks the contract is reported, one that keeps it is not."""
    from fuzz.runner import violations

    ok = session.case("self-check", "unmodified lan.yaml")
    ok.argv = ["validate", str(seeds.ROOT / "tests" / "data" / "lan.yaml")]
    res = session.worker.run(ok)
    assert res.exit == 0 and violations(ok, res) == []
    bad = session.case("self-check", "a refused input with a file left in the output root")
    bad.argv = ["validate", str(bad.dir / "in" / "missing.yaml")]
    bad.out.mkdir()
    (bad.out / ".x.tmp").write_text("")
    res = session.worker.run(bad)
    found = violations(bad, res)
    assert res.exit == 2 and res.stderr.startswith("pktemu: error: ")
    assert any(f.startswith("refused input left output") for f in found)
    assert any(f.startswith("temporary files left") for f in found)
    slow = session.case("self-check", "unmodified lan.yaml under a time bound it cannot meet")
    slow.argv = ["run", str(seeds.ROOT / "tests" / "data" / "lan.yaml"), "-q", "--out", str(slow.out)]
    res = session.worker.run(slow, timeout=0.001)
    assert res.raw["timed_out"] and violations(slow, res)[0].startswith("timeout after")
    again = session.worker.run(ok)
    assert again.exit == 0 and violations(ok, again) == []
