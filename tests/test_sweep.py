"""`pktemu sweep` run serially through the real CLI: what it aggregates (endpoints, outcomes, latency
percentiles) checked against the per-seed result files it keeps, and its one-line errors."""
from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

import datapaths
from conftest import pktemu
from pktemu.errors import PktemuError
from pktemu.scaleout.runner import parse_seeds

GENERATED = "topologies/generated-cluster.yaml"


def sweep_json(*args: str) -> dict[str, Any]:
    p = pktemu("sweep", *args, "-o", "json", timeout=120)
    assert p.stderr == ""
    data: dict[str, Any] = json.loads(p.stdout)
    return data


def nearest_rank(values: list[float], p: int) -> float:
    values = sorted(values)
    return values[math.ceil(p / 100 * len(values)) - 1]


def test_endpoints_are_the_servers_that_served_each_seed(tmp_path: Path) -> None:
    out = tmp_path / "sw"
    s = sweep_json(GENERATED, "--seeds", "1-12", "--out", str(out))
    assert s["scenario"] == "clients" and s["seeds"] == 12
    assert [e["seed"] for e in s["per_seed"]] == list(range(1, 13))
    assert sorted(os.listdir(out)) == sorted(["sweep.json", *(f"seed-{n}" for n in range(1, 13))])
    assert json.loads((out / "sweep.json").read_text()) == s
    spread: set[str] = set()
    for entry in s["per_seed"]:
        seed_dir = out / f"seed-{entry['seed']}"
        assert sorted(os.listdir(seed_dir)) == ["client-result.json", "scenario.json", "server-result.json"]
        served = json.loads((seed_dir / "server-result.json").read_text())
        by_server = Counter(f"{pod} {r['local']}" for pod, apps in served.items() for a in apps
                            for r in a["result"]["served"])
        clients = json.loads((seed_dir / "client-result.json").read_text())
        conns = entry["connections"]
        assert [c["kind"] for c in conns] == ["http"] * 3
        assert [c["outcome"] for c in conns] == [c["http"].get("status_line") or c["http"]["error"]
                                                 for c in clients]
        assert [c["elapsed_ms"] for c in conns] == [c["http"]["elapsed_ms"] for c in clients]
        reached = Counter(c["endpoint"] for c in conns if c["endpoint"] is not None)
        assert reached == by_server
        spread |= set(reached)
    assert len(spread) >= 4, spread         # kube-proxy spreads the GETs over the pods across seeds
    for row in s["endpoints"]:
        assert row["count"] == sum(1 for e in s["per_seed"] for c in e["connections"]
                                   if (c["client"], c["endpoint"] or "-") == (row["client"], row["endpoint"]))
    assert sum(r["count"] for r in s["outcomes"]) == s["connections"] == 36


def test_latency_percentiles_are_nearest_rank_over_the_seeds() -> None:
    s = sweep_json(GENERATED, "--seeds", "1-12")
    for row in s["latency_ms"]:
        vals = [c["elapsed_ms"] for e in s["per_seed"] for c in e["connections"]
                if c["client"] == row["client"] and c["elapsed_ms"] is not None]
        assert row["count"] == len(vals) > 0
        assert (row["min"], row["max"]) == (min(vals), max(vals))
        for p in (50, 90, 99):
            assert row[f"p{p}"] == nearest_rank(vals, p)


def echo_topology(tmp_path: Path) -> Path:
    pod = {"node": "node1", "bridge": "cbr0"}
    topo = {"name": "echo", "seed": 1,
            "nodes": {"node1": {"bridges": {"cbr0": {"addresses": ["10.0.1.1/24"]}}}},
            "pods": {"server": {**pod, "address": "10.0.1.2/24",
                                "apps": [{"kind": "udp-echo", "port": 7, "name": "echo-a"}]},
                     "dns": {**pod, "address": "10.0.1.4/24",
                             "apps": [{"kind": "dns-server", "records": {"echo.test": "10.0.1.2"}}]},
                     "client": {**pod, "address": "10.0.1.10/24", "resolv": {"nameservers": ["10.0.1.4"]}}},
            "scenarios": {"u": {"traffic": [{"pod": "client", "app": {
                "kind": "echo-client", "name": "echo.test", "proto": "udp", "port": 7, "count": 2,
                "interval": "100ms", "payload": "hi\n"}}]}}}
    path = tmp_path / "echo.yaml"
    path.write_text(yaml.safe_dump(topo, sort_keys=False))
    return path


def test_echo_answers_and_dns_answers_name_the_endpoints(tmp_path: Path) -> None:
    s = sweep_json(str(echo_topology(tmp_path)), "--seeds", "1-3")
    rows = {(r["kind"], r["endpoint"]): r["count"] for r in s["endpoints"]}
    assert rows == {("dns", "10.0.1.2"): 3, ("echo", "echo-a 10.0.1.2:7"): 6}
    assert {(r["kind"], r["outcome"]): r["count"] for r in s["outcomes"]} == \
        {("dns", "NOERROR"): 3, ("echo", "answer"): 6}
    echo = [c for e in s["per_seed"] for c in e["connections"] if c["kind"] == "echo"]
    assert all(c["to_server_ms"] is not None and c["to_server_ms"] > 0 for c in echo)
    assert [r["metric"] for r in s["latency_ms"]] == ["rtt_ms", "to_server_ms"]


def test_text_output_shows_the_tables(tmp_path: Path) -> None:
    p = pktemu("sweep", GENERATED, "--seeds", "1-3", timeout=120)
    assert p.stderr == ""
    assert p.stdout.startswith("clients over 3 seeds: 9 connections")
    for title in ("endpoints reached", "outcomes", "latency, virtual ms"):
        assert title in p.stdout


def test_captures_keep_what_pktemu_run_writes_for_that_seed(tmp_path: Path) -> None:
    pktemu("sweep", "topologies/service-test.yaml", "--scenario", "s1-clusterip", "--seeds", "4,9",
           "--out", str(tmp_path / "sw"), "--captures", "-o", "json")
    for seed in (4, 9):
        pktemu("run", "topologies/service-test.yaml", "--scenario", "s1-clusterip", "--seed", str(seed),
               "--out", str(tmp_path / f"run{seed}"), "-q")
        assert tree(tmp_path / "sw" / f"seed-{seed}") == tree(tmp_path / f"run{seed}" / "s1-clusterip")


def tree(top: Path) -> dict[str, bytes]:
    """Every file under `top` by relative path, with its bytes (folders as empty markers)."""
    out: dict[str, bytes] = {}
    for here, dirs, files in os.walk(top):
        for d in dirs:
            out[os.path.relpath(os.path.join(here, d), top) + "/"] = b""
        for f in files:
            path = os.path.join(here, f)
            out[os.path.relpath(path, top)] = Path(path).read_bytes()
    return out


def one_line_error(*args: str) -> str:
    p = pktemu(*args, check=False, timeout=60)
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert p.stdout == "" and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr
    return p.stderr


def timed_error(*args: str) -> tuple[str, float]:
    """one_line_error's line, and the seconds the command took past a bare Python's import of what
    it imports before it tries a --scheduler (pktemu's API, Dask): that import alone took 5-8 s
    on the 2-core machine under the suite and two busy loops (1-2 s idle), so a bound on the whole
    run measured the load, not the wait it is there to catch (Dask's 10 s connect timeout)."""
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-c", "import distributed, pktemu.cli, pktemu.api"], check=True,
                   timeout=120, cwd=datapaths.ROOT)
    t1 = time.monotonic()
    err = one_line_error(*args)
    return err, time.monotonic() - t1 - (t1 - t0)


def test_bad_options_are_one_line_and_write_nothing(tmp_path: Path) -> None:
    out = tmp_path / "never"
    base = ("sweep", "topologies/service-test.yaml", "--out", str(out))
    assert "--seeds 'x': expected seeds as N, N-M" in one_line_error(*base, "--scenario", "s1-clusterip",
                                                                      "--seeds", "x")
    assert "give --scenario (have: s1-clusterip, s2-noendpoints" in one_line_error(*base, "--seeds", "1")
    assert "no scenario 'nope'" in one_line_error(*base, "--scenario", "nope", "--seeds", "1")
    assert "--workers 0: expected 1 to 256" in one_line_error(*base, "--scenario", "s1-clusterip",
                                                              "--seeds", "1", "--workers", "0")
    assert "--workers and --scheduler: give one" in one_line_error(
        *base, "--scenario", "s1-clusterip", "--seeds", "1", "--workers", "2", "--scheduler", "tcp://x:1")
    assert "--captures: give --out DIR" in one_line_error(
        "sweep", "topologies/service-test.yaml", "--scenario", "s1-clusterip", "--seeds", "1", "--captures")
    assert "--workers 0: expected 1 to 256" in one_line_error("run", "topologies/service-test.yaml", "--out",
                                                              str(out), "--workers", "0")
    assert not out.exists()


def test_seed_lists() -> None:
    assert parse_seeds("1-3,7,2-4") == [1, 2, 3, 7, 4]
    assert parse_seeds("10-20,1-30,15") == [*range(10, 21), *range(1, 10), *range(21, 31)]
    # a seed ranges overlap on runs once and counts once against the limit
    assert parse_seeds("0-999999,0-999999,5,999999") == list(range(1_000_000))
    with pytest.raises(PktemuError, match="more than 1,000,000 seeds"):
        parse_seeds("0-999999,500000-1000000")
    assert parse_seeds(" 5 ") == [5]
    for spec, msg in (("5-2", "5-2 is not a range"), ("-1", "expected seeds"), ("1,,2", "expected seeds"),
                      ("0-1000000", "more than 1,000,000 seeds"), ("1-2-3", "expected seeds"),
                      ("18446744073709551616", "18446744073709551616 is not a seed"),
                      ("1,18446744073709551615-18446744073709551616", "is not a seed")):
        with pytest.raises(PktemuError, match=msg):
            parse_seeds(spec)


def test_an_unreachable_scheduler_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as s:               # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "never"
    err, took = timed_error("sweep", "topologies/service-test.yaml", "--scenario", "s1-clusterip",
                            "--seeds", "1", "--scheduler", f"tcp://127.0.0.1:{port}", "--out", str(out))
    assert err.startswith(f"pktemu: error: --scheduler 'tcp://127.0.0.1:{port}': cannot connect")
    assert took < 45      # CONNECT_TIMEOUT is 5 s; this bound only catches a hang
    assert not out.exists()


def test_without_dask_workers_ask_for_the_extra(tmp_path: Path) -> None:
    """A Python where `distributed` cannot be imported, as on an install without `pktemu[dask]`."""
    code = ("import sys; sys.modules['distributed'] = None; from pktemu.cli import main; "
            "sys.exit(main(sys.argv[1:]))")

    def without_dask(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60,
                              cwd=datapaths.ROOT)

    out = tmp_path / "never"
    for cmd in (("sweep", "topologies/service-test.yaml", "--scenario", "s1-clusterip", "--seeds", "1"),
                ("run", "topologies/service-test.yaml")):
        p = without_dask(*cmd, "--workers", "2", "--out", str(out))
        assert (p.returncode, p.stdout) == (2, "")
        assert p.stderr == ("pktemu: error: --workers/--scheduler need Dask, which is not installed: "
                            "pip install 'pktemu[dask]'\n")
    assert not out.exists()
    p = without_dask("sweep", "topologies/service-test.yaml", "--scenario", "s2-noendpoints",
                     "--seeds", "1-2", "-o", "json")          # a serial sweep does not need it
    assert p.returncode == 0 and json.loads(p.stdout)["seeds"] == 2


@contextmanager
def not_a_scheduler(answer: bytes | None) -> Iterator[int]:
    """A loopback port that accepts connections and sends `answer` (an HTTP error, as a web server
    or proxy would), or with None nothing at all; yields the port."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    held: list[socket.socket] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            held.append(conn)
            if answer is not None:
                conn.sendall(answer)

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield srv.getsockname()[1]
    finally:
        srv.close()
        for c in held:
            c.close()


@pytest.mark.parametrize("answer", [None, b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n"],
                         ids=["silent", "http"])
def test_a_server_that_is_not_a_scheduler_is_one_line(tmp_path: Path, answer: bytes | None) -> None:
    """Dask waited for ever for a silent server's handshake (Ctrl-C held off), and read an HTTP
    answer as a frame length (an internal MemoryError)."""
    out = tmp_path / "never"
    with not_a_scheduler(answer) as port:
        err, took = timed_error("sweep", "topologies/service-test.yaml", "--scenario", "s1-clusterip",
                                "--seeds", "1", "--scheduler", f"tcp://127.0.0.1:{port}", "--out", str(out))
    assert err.startswith(f"pktemu: error: --scheduler 'tcp://127.0.0.1:{port}': cannot connect: ")
    assert took < 30
    assert not out.exists()


def test_a_malformed_scheduler_address_is_one_line_at_once(tmp_path: Path) -> None:
    """Dask's half-made Client printed an `Exception ignored ... TimeoutError` traceback 10 s later."""
    err, took = timed_error("run", "topologies/service-test.yaml", "--scheduler", "garbage",
                            "--out", str(tmp_path / "never"))
    assert err == ("pktemu: error: --scheduler 'garbage': cannot connect: "
                   "missing port number in address 'garbage'\n")
    assert took < 8


def test_a_folder_named_sweep_json_is_refused_before_any_seed_runs(tmp_path: Path) -> None:
    """It was refused only after every seed had run (and written its seed-N/)."""
    (tmp_path / "sweep.json").mkdir()
    err = one_line_error("sweep", "topologies/service-test.yaml", "--scenario", "s1-clusterip",
                         "--seeds", "1-3", "--out", str(tmp_path))
    assert err == f"pktemu: error: {tmp_path / 'sweep.json'}: cannot write: Is a directory\n"
    assert sorted(os.listdir(tmp_path)) == ["sweep.json"]


def test_a_python_app_that_calls_sys_exit_is_its_outcome(tmp_path: Path) -> None:
    """sys.exit() in an app ended pktemu itself: exit status 5, no word, no output (and on Dask
    it killed each worker in turn). It ends the app, as any exception it does not catch."""
    (tmp_path / "quits.py").write_text("import sys\ndef main(api):\n"
                                       "    yield api.sleep(0.01)\n    sys.exit(5)\n")
    (tmp_path / "quits.yaml").write_text(
        f"extends: {datapaths.ROOT / 'topologies/service-test.yaml'}\nname: quits\nscenarios:\n"
        "  quits:\n    traffic:\n      - {at: 0ms, pod: client, app: {kind: python, entry: 'quits:main'}}\n")
    out = tmp_path / "out"
    p = pktemu("sweep", str(tmp_path / "quits.yaml"), "--scenario", "quits", "--seeds", "1-2",
               "--out", str(out), "-o", "json", check=False, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stderr == 2 * ("pktemu: warning: client: python app quits:main: SystemExit: 5 "
                            "(at quits.py:4 in main); recorded in its result\n")
    assert json.loads((out / "seed-2" / "client-result.json").read_text()) == {
        "error": "SystemExit: 5", "error_at": "quits.py:4 in main"}


def test_overlapping_seed_ranges_run_each_seed_once(tmp_path: Path) -> None:
    """`--seeds 4-5,5,4-5` is the two runs of seeds 4 and 5, as `--seeds 4-5` is."""
    out = tmp_path / "sw"
    s = sweep_json("topologies/service-test.yaml", "--scenario", "s1-clusterip", "--seeds", "4-5,5,4-5",
                   "--out", str(out))
    assert s["seeds"] == 2
    assert sorted(p.name for p in out.iterdir()) == ["seed-4", "seed-5", "sweep.json"]
    assert s == sweep_json("topologies/service-test.yaml", "--scenario", "s1-clusterip", "--seeds", "4-5")
