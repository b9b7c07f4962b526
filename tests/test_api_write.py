"""`pktemu.Network.write`: the API writes `pktemu run`'s output directory, byte for byte, atomically."""
from __future__ import annotations

import gc
import os
import subprocess
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP
from scapy.utils import rdpcap

import pktemu
from conftest import pktemu as pktemu_cli
from datapaths import ROOT

TOPOLOGY = str(ROOT / "topologies" / "service-test.yaml")
SYN = IP(dst="10.3.241.152") / TCP(sport=40000, dport=80, flags="S", seq=1000)


def _files(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def _dnat_comments(pcapng: Path) -> list[str]:
    p = subprocess.run(["tshark", "-n", "-r", str(pcapng), "-Y", 'frame.comment contains "DNAT"',
                        "-T", "fields", "-e", "frame.interface_name"],
                       capture_output=True, text=True, timeout=60, check=True)
    return p.stdout.split()


@pytest.mark.parametrize("scenario", ["s1-clusterip", "s3-hairpin"])
def test_api_run_and_write_is_byte_identical_to_pktemu_run(tmp_path: Path, scenario: str) -> None:
    pktemu_cli("run", TOPOLOGY, "--scenario", scenario, "--out", str(tmp_path / "cli"), "-q")
    net = pktemu.Network.load(TOPOLOGY, scenario, capture=tmp_path / "api")
    net.run()
    path = net.write()
    assert path == str(tmp_path / "api" / scenario)
    cli, api = _files(tmp_path / "cli" / scenario), _files(tmp_path / "api" / scenario)
    assert sorted(api) == sorted(cli)
    assert "pcap/client-eth0.pcap" in api and "all.pcapng" in api and "client-result.json" in api
    for name in cli:
        assert api[name] == cli[name], name
    assert os.listdir(tmp_path / "api") == [scenario]          # no temporary left beside it


def test_a_session_of_your_own_packets_is_written_with_its_explain_comments(tmp_path: Path) -> None:
    net = pktemu.Network.load(TOPOLOGY, capture=tmp_path)
    assert net.sr1("client", SYN) is not None
    net.run(duration=0.01)
    out = Path(net.write())
    assert out == tmp_path / "network"
    syns = [p for p in rdpcap(str(out / "pcap" / "server-eth0.pcap")) if TCP in p and p[TCP].flags == "S"]
    assert [(p[IP].src, p[IP].dst, p[TCP].dport) for p in syns] == [("10.0.1.2", "10.0.2.2", 8080)]
    assert "node1/cbr0" in _dnat_comments(out / "all.pcapng")
    assert (out / "scenario.json").read_text() == '{\n  "description": "",\n  "scenario": "network"\n}\n'
    assert not (out / "client-result.json").exists()
    assert "10.0.1.2" in (out / "conntrack-node1.txt").read_text()


def test_write_moves_the_output_to_another_directory(tmp_path: Path) -> None:
    net = pktemu.Network.load(TOPOLOGY, "s1-clusterip", capture=tmp_path / "spool")
    net.run()
    path = net.write(tmp_path / "elsewhere")
    assert path == str(tmp_path / "elsewhere" / "s1-clusterip")
    assert os.listdir(tmp_path / "spool") == []
    assert (tmp_path / "elsewhere" / "s1-clusterip" / "pcap" / "client-eth0.pcap").stat().st_size > 24


def test_write_replaces_a_previous_output_whole(tmp_path: Path) -> None:
    old = tmp_path / "s2-noendpoints"
    old.mkdir()
    (old / "stale.txt").write_text("earlier\n")
    net = pktemu.Network.load(TOPOLOGY, "s2-noendpoints", capture=tmp_path)
    net.run()
    net.write()
    assert not (old / "stale.txt").exists() and (old / "drops.txt").exists()
    assert os.listdir(tmp_path) == ["s2-noendpoints"]


def test_sniff_still_works_and_a_second_write_is_refused(tmp_path: Path) -> None:
    net = pktemu.Network.load(TOPOLOGY, "s1-clusterip", capture=tmp_path)
    net.run()
    first = net.write()
    with pytest.raises(pktemu.Error, match=r"^write: already written to .*s1-clusterip$"):
        net.write()
    before = len(net.sniff("client-eth0"))
    assert before == net.frames["client-eth0"] > 0
    assert net.sr1("client", SYN) is not None                    # captures stopped, the network did not
    assert len(net.sniff("client-eth0")) > before
    assert len(rdpcap(os.path.join(first, "pcap", "client-eth0.pcap"))) == before


def test_write_without_capture_says_how(tmp_path: Path) -> None:
    net = pktemu.Network.load(TOPOLOGY, "s1-clusterip")
    with pytest.raises(pktemu.Error, match=r"^write: load the network with capture=DIR \(or True\)"):
        net.write(tmp_path)
    assert os.listdir(tmp_path) == []


def test_capture_true_needs_the_directory_at_write(tmp_path: Path) -> None:
    net = pktemu.Network.load(TOPOLOGY, "s1-clusterip", capture=True)
    net.run()
    with pytest.raises(pktemu.Error, match=r"^write: give the output directory"):
        net.write()
    assert net.write(tmp_path) == str(tmp_path / "s1-clusterip")
    assert (tmp_path / "s1-clusterip" / "all.pcapng").exists()


def test_an_unwritten_network_leaves_nothing_behind(tmp_path: Path) -> None:
    with pktemu.Network.load(TOPOLOGY, "s1-clusterip", capture=tmp_path) as net:
        net.run(duration=0.5)
        assert len(os.listdir(tmp_path)) == 1                    # the hidden temporary directory
    assert os.listdir(tmp_path) == []
    with pytest.raises(pktemu.Error, match="closed"):
        net.write()
    gone = pktemu.Network.load(TOPOLOGY, "s1-clusterip", capture=tmp_path / "gc")
    gone.run(duration=0.5)
    del gone
    gc.collect()
    assert not (tmp_path / "gc").exists()                    # nor the folder it made for it


def test_keep_frames_false_counts_without_keeping(tmp_path: Path) -> None:
    net = pktemu.Network.load(TOPOLOGY, "s1-clusterip", capture=tmp_path, keep_frames=False)
    net.run()
    assert net.frames["client-eth0"] == 15
    with pytest.raises(pktemu.Error, match=r"^sniff: the network was loaded with keep_frames=False$"):
        net.sniff("client-eth0")
    net.write()
    assert len(rdpcap(str(tmp_path / "s1-clusterip" / "pcap" / "client-eth0.pcap"))) == 15
    # the captures are written and closed; the counts go on, and so do sr's answers
    assert net.sr1("client", IP(dst="10.0.2.2") / TCP(sport=40001, dport=8080, flags="S"), timeout=1)
    assert net.frames["client-eth0"] == 15 + 3          # SYN, SYN-ACK, and the RST of a socketless client


def test_sr_on_a_network_that_keeps_no_frames_counts_every_frame_once(tmp_path: Path) -> None:
    net = pktemu.Network.load(TOPOLOGY, "s1-clusterip", capture=tmp_path, keep_frames=False)
    answer = net.sr1("client", IP(dst="10.0.2.2") / TCP(sport=40002, dport=8080, flags="S"), timeout=1)
    assert answer is not None and answer[TCP].flags == "SA"
    net.run()
    counted = net.frames
    net.write()
    pcaps = tmp_path / "s1-clusterip" / "pcap"
    assert counted == {name: len(rdpcap(str(pcaps / f"{name}.pcap"))) for name in counted}
    assert counted["client-eth0"] == 15 + 3


def test_an_unwritable_capture_directory_is_one_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(pktemu.Error, match=r"file.*cannot write: Not a directory"):
        pktemu.Network.load(TOPOLOGY, "s1-clusterip", capture=tmp_path / "file" / "out")


def test_files_of_your_own_go_into_the_directory_before_it_is_renamed(tmp_path: Path) -> None:
    net = pktemu.Network.load(TOPOLOGY, "s1-clusterip", capture=tmp_path)
    net.run(duration=0.01)
    for bad in ("../x.txt", ".hidden", "pcap/x"):
        with pytest.raises(pktemu.Error, match="expected a plain file name"):
            net.write(files={bad: "x"})
    assert not (tmp_path / "s1-clusterip").exists()              # refused before anything was closed
    out = Path(net.write(files={"notes.txt": "checked by hand\n"}))
    assert (out / "notes.txt").read_text() == "checked by hand\n" and (out / "drops.txt").is_file()
    clash = pktemu.Network.load(TOPOLOGY, "s1-clusterip", capture=tmp_path / "clash")
    with pytest.raises(pktemu.Error, match="'drops.txt' is a file the output already has"):
        clash.write(files={"drops.txt": ""})
    assert not (tmp_path / "clash" / "s1-clusterip").exists()    # refused before anything was closed
    assert (Path(clash.write()) / "drops.txt").read_text() == ""


def test_a_refused_write_leaves_the_run_to_write_again(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    net = pktemu.Network.load(TOPOLOGY, "s1-clusterip", capture=tmp_path / "out")
    net.run()
    refused = [
        ({"files": {"ok.txt": "\udcff"}}, r"^write: files: 'ok.txt': its text cannot be written as UTF-8 "
                                          r"\('\\udcff' at 0\)$"),
        ({"files": ["x"]}, r"^write: files: expected a dict of file name -> text, got \['x'\]$"),
        ({"files": {"client-result.json": "{}"}}, r"^write: files: 'client-result.json' is a file the "
                                                  r"output already has$"),
        ({"files": {"conntrack-node1.txt": ""}}, r"'conntrack-node1.txt' is a file the output already has$"),
        ({"out": 5}, r"^write: out=5 is not a directory name$"),
        ({"out": tmp_path / "file" / "x"}, r"^write: out .*file/x: is under .*file, "
                                           r"which is not a directory$"),
    ]
    for kwargs, message in refused:
        with pytest.raises(pktemu.Error, match=message):
            net.write(**kwargs)
        assert len(os.listdir(tmp_path / "out")) == 1           # the temporary output, still open
    out = Path(net.write(files={"notes.txt": "é\n"}))
    assert (out / "notes.txt").read_bytes() == "é\n".encode()
    assert (out / "client-result.json").exists() and (out / "pcap" / "client-eth0.pcap").stat().st_size > 24
