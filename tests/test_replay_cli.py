"""`pktemu replay` as a user runs it: the summary, --json, the output directory, and bad options."""
from __future__ import annotations

import filecmp
import json
import subprocess
from pathlib import Path

import pytest

import datapaths
from conftest import pktemu
from pktemu.cli import main

HTTP = str(datapaths.CAPTURES / "http_get_session.pcap")
TOPO = str(datapaths.ROOT / "topologies" / "service-test.yaml")
BASE = ["replay", HTTP, "--topology", TOPO, "--inject", "node1/veth-client",
        "--map", "141.142.228.5=10.0.1.2", "--map", "192.150.187.43=10.3.241.152"]
POINTS = ["client-eth0", "node1-veth-client", "node1-cbr0", "node1-eth0", "gw-eth1", "gw-eth2", "node2-eth0",
          "node2-cbr0", "node2-veth-server", "server-eth0", "node2-veth-dns", "dns-eth0"]


def test_summary_reads_like_tcpreplays_and_the_output_like_a_run(tmp_path: Path) -> None:
    p = pktemu(*BASE, "--out", str(tmp_path))
    lines = p.stdout.splitlines()
    assert lines[0] == "Actual: 7 packets (610 bytes) sent in 0.211628 seconds"
    assert lines[1] == "Rated: 2882.4 Bps, 0.023 Mbps, 33.08 pps"
    assert lines[2] == "Flows: 1 flows, 4.73 fps, 7 flow packets, 0 non-flow"
    assert lines[3].startswith("Statistics for network device: node1/veth-client (the replay stands in for "
                               "client/eth0)")
    assert lines[-1] == f"written to {tmp_path / 'replay-http_get_session'}"
    out = tmp_path / "replay-http_get_session"
    files = sorted(str(f.relative_to(out)) for f in out.rglob("*") if f.is_file())
    assert files == sorted(["all.pcapng", "captures.tsv", "scenario.json", "drops.txt", "replay.json",
                            "server-result.json",
                            "conntrack-gw.txt", "conntrack-node1.txt", "conntrack-node2.txt",
                            "iptables-save-node1.txt", "iptables-save-node2.txt"]
                           + [f"pcap/{n}.pcap" for n in POINTS])
    assert [f.name for f in tmp_path.iterdir()] == ["replay-http_get_session"]      # no temporary left
    tshark = ["tshark", "-n", "-r", str(out / "all.pcapng"), "-Y", 'frame.comment contains "replay"',
              "-T", "fields", "-e", "frame.interface_name"]
    comments = subprocess.run(tshark, capture_output=True, text=True, timeout=60, check=True).stdout.split()
    assert comments == ["client/eth0"] * 8                  # 7 replayed records and the stand-in's ARP reply


def test_json_is_what_replay_json_holds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*BASE, "--out", str(tmp_path), "--json", "--name", "j"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((tmp_path / "j" / "replay.json").read_text())
    assert printed["sent"]["packets"] == 7 and printed["sent"]["bytes"] == 610
    assert printed["server_side"] == 7 and printed["truncated"] == 0 and printed["refused"] == {}
    assert printed["flows"] == [{"loop": 0, "proto": "tcp", "client": "10.0.1.2:59856",
                                 "server": "10.3.241.152:80", "records": 7, "sent": 7, "answers": 5,
                                 "outcome": "complete"}]
    assert printed["stands_in_for"] == "client/eth0" and printed["split"] == "syn"


def test_same_input_same_bytes(tmp_path: Path) -> None:
    for d in ("a", "b"):
        assert main([*BASE, "--out", str(tmp_path / d), "-q", "--loop", "2"]) == 0
    a, b = tmp_path / "a" / "replay-http_get_session", tmp_path / "b" / "replay-http_get_session"
    names = [str(f.relative_to(a)) for f in sorted(a.rglob("*")) if f.is_file() and f.name != "replay.json"]
    match, mismatch, errors = filecmp.cmpfiles(a, b, names, shallow=False)
    assert not mismatch and not errors and len(match) == len(names) == 22
    ja, jb = (json.loads((d / "replay.json").read_text()) for d in (a, b))
    ja.pop("out_dir")
    jb.pop("out_dir")
    assert ja == jb


@pytest.mark.parametrize(("extra", "message"), [
    (["--map", "nonsense"], "--map 'nonsense': expected OLD=NEW"),
    (["--inject", "node9/eth0"], "--inject 'node9/eth0': "),
    (["--inject", "node1/cbr0"], "--inject 'node1/cbr0': a bridge device; the replay enters through a veth"),
    (["--inject", "node1"], "--inject 'node1': expected NODE/IFNAME"),
    (["--split", "magic"], "--split 'magic': expected syn, all"),
    (["--speed", "0"], "--speed 0.0: expected a multiplier above 0"),
    (["--loop", "0"], "--loop 0: expected 1 or more"),
    (["--scenario", "nope"], "no scenario 'nope'"),
    (["--answer-timeout", "soon"], "--answer-timeout: expected a duration"),
    (["--pps", "5", "--topspeed"], "argument --topspeed: not allowed with argument --pps"),
])
def test_bad_options_are_one_line_exit_2_and_write_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                           extra: list[str], message: str) -> None:
    args = [*BASE, "--out", str(tmp_path / "out"), *extra]
    if "not allowed" in message:                    # argparse's own check: same one line, same status
        with pytest.raises(SystemExit) as e:
            main(args)
        assert e.value.code == 2
    else:
        assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("pktemu: error: ") and err.count("\n") == 1 and message in err
    assert not (tmp_path / "out").exists()


def test_missing_capture_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["replay", str(tmp_path / "none.pcap"), "--topology", TOPO, "--inject", "node1/veth-client",
            "--out", str(tmp_path / "out")]
    assert main(args) == 2
    assert capsys.readouterr().err == f"pktemu: error: {tmp_path / 'none.pcap'}: cannot read capture: " \
                                      "No such file or directory\n"
