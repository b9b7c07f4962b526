"""`pktemu draw TOPOLOGY -o FILE.svg|png`: a Graphviz picture of the topology, and its errors."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import datapaths
from conftest import pktemu

SVG = "{http://www.w3.org/2000/svg}"
pytestmark = pytest.mark.skipif(shutil.which("dot") is None and os.geteuid() != 0,
                                reason="graphviz (dot) not installed and not root (CI installs it)")


def _texts(svg: Path) -> list[str]:
    root = ET.parse(svg).getroot()
    assert root.tag == SVG + "svg"
    return [t.text or "" for t in root.iter(SVG + "text")]


def test_svg_of_the_founding_topology(tmp_path: Path) -> None:
    out = tmp_path / "topo.svg"
    p = pktemu("draw", "topologies/service-test.yaml", "-o", str(out))
    assert p.stdout == "" and p.stderr == ""
    texts = _texts(out)
    for name in ("node1 (host)", "gw (host)", "node2 (host)", "client (pod)", "server (pod)", "dns (pod)",
                 "cbr0", "veth-server", "10.0.2.2/24", "default via 10.100.0.1", "veth", "port (hairpin)"):
        assert name in texts, name
    assert texts.count("iptables rules: kube-proxy-rules.iptables") == 2      # node1 and node2 hold rules
    first = out.read_bytes()
    pktemu("draw", "-t", "topologies/service-test.yaml", "-o", str(out))
    assert out.read_bytes() == first, "not deterministic"
    assert os.listdir(tmp_path) == ["topo.svg"], "temporary left"


def test_svg_shows_services_and_their_endpoints(tmp_path: Path) -> None:
    out = tmp_path / "k8s.svg"
    pktemu("draw", "topologies/seed-story.yaml", "-o", str(out), "--scenario", "story")
    texts = _texts(out)
    assert "seed-story — story" in texts
    for name in ("default/service-test", "ClusterIP 10.3.241.152", "kube-system/kube-dns",
                 "ClusterIP 10.3.240.10", "server-b (pod)", "kube-proxy (iptables) rules"):
        assert name in texts, name
    assert texts.count("endpoint") == 3              # server, server-b, coredns


def test_nodes_with_nftables_rules_are_outlined_with_their_file(tmp_path: Path) -> None:
    # only an `iptables:` file was drawn: the nodes of service-test-nftables looked rule-free
    out = tmp_path / "nft.svg"
    pktemu("draw", "topologies/service-test-nftables.yaml", "-o", str(out))
    texts = _texts(out)
    assert "nftables rules: kube-proxy-rules-node1.nft" in texts
    assert "nftables rules: kube-proxy-rules-node2.nft" in texts
    assert out.read_text().count('stroke="#c0392b"') >= 2         # the outline of a node with rules


def test_a_node_without_interfaces_is_drawn(tmp_path: Path) -> None:
    # dot leaves out a cluster with nothing in it: the node was missing from the picture
    topo = tmp_path / "lone.yaml"
    topo.write_text("name: lone\nnodes:\n  a: {interfaces: {eth0: {addresses: [10.0.0.1/24]}}}\n"
                    "  b: {interfaces: {eth0: {addresses: [10.0.0.2/24]}}}\n  spare: {}\n"
                    "veths: [[a/eth0, b/eth0]]\n")
    out = tmp_path / "lone.svg"
    pktemu("draw", str(topo), "-o", str(out))
    texts = _texts(out)
    assert "a (host)" in texts and "spare (host)" in texts and "(no interfaces)" in texts


def test_png(tmp_path: Path) -> None:
    out = tmp_path / "topo.png"
    pktemu("draw", "topologies/service-test.yaml", "-o", str(out))
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


@pytest.mark.parametrize("args, what", [
    (["topologies/service-test.yaml", "-o", "{tmp}/topo.gif"], "must end in .svg or .png"),
    (["topologies/service-test.yaml", "-o", "{tmp}/no/such/topo.svg"], "does not exist"),
    (["topologies/service-test.yaml", "-o", "{tmp}/topo.svg", "--scenario", "nope"], "no scenario 'nope'"),
    (["topologies/missing.yaml", "-o", "{tmp}/topo.svg"], "missing.yaml"),
    (["-o", "{tmp}/topo.svg"], "the topology is required"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path: Path, args: list[str], what: str) -> None:
    p = pktemu("draw", *[a.replace("{tmp}", str(tmp_path)) for a in args], check=False)
    assert p.returncode == 2
    assert len(p.stderr.splitlines()) == 1 and p.stderr.startswith("pktemu: error: ") and what in p.stderr
    assert os.listdir(tmp_path) == []


def test_without_graphviz_says_so_before_running(tmp_path: Path) -> None:
    bindir = os.path.dirname(sys.executable)
    if os.path.exists(os.path.join(bindir, "dot")):
        pytest.skip("python and dot share a folder: cannot hide dot")
    env = {**os.environ, "PATH": bindir}
    for args in (["draw", "topologies/service-test.yaml", "-o", str(tmp_path / "t.svg")],
                 ["run", "topologies/service-test.yaml", "--out", str(tmp_path / "out"), "--report"]):
        p = subprocess.run([sys.executable, "-m", "pktemu.cli", *args], capture_output=True, text=True,
                           timeout=120, cwd=datapaths.ROOT, env=env)
        assert p.returncode == 2, p.stderr
        assert p.stderr == "pktemu: error: graphviz: the `dot` program is not installed " \
                           "(Debian/Ubuntu: apt-get install graphviz)\n"
        assert os.listdir(tmp_path) == []


def test_drawing_a_topology_does_not_load_scapy(tmp_path: Path) -> None:
    # only a report dissects frames; `pktemu draw` of a topology file starts in half the time without it
    out = tmp_path / "topo.svg"
    code = ("import sys; from pktemu.cli import main; "
            f"s = main(['draw', 'topologies/service-test.yaml', '-o', {str(out)!r}]); "
            "print(s, 'scapy' in sys.modules)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       cwd=datapaths.ROOT)
    assert p.stdout.split() == ["0", "False"], p.stderr
    assert "client (pod)" in _texts(out)
