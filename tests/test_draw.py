"""`pktemu draw TOPOLOGY -o FILE.svg|png`: a Graphviz picture of the topology, and its errors."""
from __future__ import annotations

import html
import json
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
    (["topologies/service-test.yaml", "-o", "{tmp}/topo.svg", "--node", "nope"],
     "draw: --node nope: no such node in topologies/service-test.yaml (have: node1, gw, node2, client, "
     "server, ...)"),
    (["topologies/service-test.yaml", "-o", "{tmp}/topo.svg", "--node", "node1", "--full"],
     "draw: --full draws every node in full: give it or --node, not both"),
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


def _cluster(tmp_path: Path, nodes: int, pods: int) -> Path:
    """generated-large-cluster at `nodes` x `pods`, with its Service over every pod in a manifest."""
    items: list[dict[str, object]] = [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
         "spec": {"clusterIP": "10.96.0.100", "selector": {"app": "web"},
                  "ports": [{"protocol": "TCP", "port": 80, "targetPort": 8080}]}}]
    items += [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"pod{n}-{p}", "namespace": "default",
                                                              "labels": {"app": "web"}}}
              for n in range(1, nodes + 1) for p in range(1, pods + 1)]
    (tmp_path / "web.json").write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
    topo = tmp_path / "cluster.yaml"
    base = f"{datapaths.ROOT}/topologies/generated-large-cluster.yaml"
    topo.write_text(f"extends: {{file: {base}, merge: true}}\n"
                    f"vars: {{nodes: {nodes}, pods: {pods}}}\nkubernetes: {{manifests: [web.json]}}\n")
    return topo


def test_a_big_cluster_is_summarised_one_box_a_node(tmp_path: Path) -> None:
    # 1000 nodes x 30 pods: dot gave up after 60 s (100 x 30 took 41 s) on every pod's cluster
    topo, out = _cluster(tmp_path, 30, 8), tmp_path / "big.svg"
    pktemu("draw", str(topo), "-o", str(out))
    texts = _texts(out)
    assert "summarised: 31 nodes drawn as one box each, their 240 pods counted, links written in the boxes." \
        in texts
    assert f"The full picture: pktemu draw {topo} -o {out} --full; a node in full: --node NAME" in texts
    for line in ("node17 (host)", "kube-proxy (iptables) rules", "eth0 172.16.0.19/16 — gw/eth17",
                 "cbr0 (bridge, 8 ports) 10.0.17.1/24", "pod CIDR 10.0.17.0/24",
                 "8 pods: pod17-1, pod17-2 … pod17-8",
                 "default via 172.16.255.1", "gw (host)", "30 interfaces: eth1, eth2 … eth30", "30 routes",
                 "default/web", "ClusterIP 10.96.0.100", "240 endpoints on 30 nodes"):
        assert line in texts, line
    assert sum(t.startswith("8 pods: ") for t in texts) == 30
    assert not any(t.endswith("(pod)") for t in texts), "a pod drawn"
    assert "veth-pod17-1" not in "".join(texts), "a pod's veth listed on its node"
    svg = out.read_text()
    assert svg.count('class="node"') == 31 + 1 and 'id="ns&#45;node30"' in svg      # the nodes, the Service
    first = out.read_bytes()
    pktemu("draw", str(topo), "-o", str(out))
    assert out.read_bytes() == first, "not deterministic"


def test_a_node_asked_for_is_drawn_in_full_the_others_summarised(tmp_path: Path) -> None:
    topo, out = _cluster(tmp_path, 30, 8), tmp_path / "one.svg"
    pktemu("draw", str(topo), "-o", str(out), "--node", "node17", "--node", "pod3-2")     # a pod: its node
    texts = _texts(out)
    assert "summarised: 29 nodes drawn as one box each, their 224 pods counted, node17, node3 in full, " \
           "links written in the boxes." in texts
    for line in ("node17 (host)", "pod17-1 (pod)", "pod17-8 (pod)", "veth-pod17-8", "10.0.17.9/24",
                 "pod3-5 (pod)", "node4 (host)", "8 pods: pod4-1, pod4-2 … pod4-8"):
        assert line in texts, line
    assert "pod4-1 (pod)" not in texts and "8 pods: pod17-1, pod17-2 … pod17-8" not in texts


def test_full_draws_every_pod_of_a_big_cluster(tmp_path: Path) -> None:
    topo, out = _cluster(tmp_path, 30, 8), tmp_path / "full.svg"
    pktemu("draw", str(topo), "-o", str(out), "--full")
    texts = _texts(out)
    assert not any("summarised" in t for t in texts)
    assert sum(t.endswith("(pod)") for t in texts) == 240 and texts.count("endpoint") == 240


@pytest.mark.parametrize("topo", ["service-test", "seed-story", "calico-ipip", "generated-large-cluster"])
def test_a_small_topology_is_drawn_in_full(tmp_path: Path, topo: str) -> None:
    # the summary starts past 200 namespaces: the pictures of the examples are what --full draws
    pktemu("draw", f"topologies/{topo}.yaml", "-o", str(tmp_path / "a.svg"))
    pktemu("draw", f"topologies/{topo}.yaml", "-o", str(tmp_path / "b.svg"), "--full")
    assert (tmp_path / "a.svg").read_bytes() == (tmp_path / "b.svg").read_bytes()
    assert not any("summarised" in t for t in _texts(tmp_path / "a.svg"))


def test_the_report_of_a_big_cluster_draws_it_summarised(tmp_path: Path) -> None:
    # report.html laid out every pod too: a real-size cluster's page never came (dot's 60 s)
    out = tmp_path / "out"
    pktemu("run", "topologies/generated-large-cluster.yaml", "--scenario", "direct", "--out", str(out), "-q")
    topo = _cluster(tmp_path, 30, 8)
    topo.write_text("name: generated-large-cluster\n" + topo.read_text())     # the run's name: -t is checked
    pktemu("report", str(out / "direct"), "-t", str(topo), "-q")
    page = html.unescape((out / "direct" / "report.html").read_text())
    assert "summarised: 31 nodes drawn as one box each, their 240 pods counted" in page
    assert f"The full picture: pktemu draw {topo} -o FILE.svg --full; a node in full: --node NAME" in page
    assert "8 pods: pod30-1, pod30-2 … pod30-8" in page and "pod30-1 (pod)" not in page


ROUTED = """name: routed
vars: {nodes: 20, pods: 10}
nodes:
  gw:
    interfaces:
      for n in 1..nodes:
        eth{n}: {addresses: ["192.168.{n}.254/24"]}
  for n in 1..nodes:
    node{n}:
      interfaces:
        eth0: {addresses: ["192.168.{n}.1/24"]}
        for p in 1..pods:
          cali{n}x{p}: {}
    for p in 1..pods:
      p{n}-{p}:
        interfaces: {eth0: {addresses: ["10.{n}.0.{p}/32"]}}
veths:
  - for n in 1..nodes: [["node{n}/eth0", "gw/eth{n}"]]
  - for n in 1..nodes:
      - for p in 1..pods: [["p{n}-{p}/eth0", "node{n}/cali{n}x{p}"]]
"""


def test_routed_pods_are_counted_in_their_node_and_few_links_drawn(tmp_path: Path) -> None:
    # pods written as plain namespaces, a veth each to the node (Calico's way): no bridge nests them
    topo, out = tmp_path / "routed.yaml", tmp_path / "routed.svg"
    topo.write_text(ROUTED)
    pktemu("draw", str(topo), "-o", str(out))
    texts = _texts(out)
    assert "summarised: 21 nodes drawn as one box each, their 200 namespaces counted." in texts
    assert "10 namespaces by veth: p7-1, p7-2 … p7-10" in texts and "eth0 192.168.7.1/24" in texts
    assert not any("cali7x" in t for t in texts) and "p7-1 (host)" not in texts
    assert texts.count("veth eth0 — eth7") == 1                # 20 links: drawn, not written in the boxes
    assert sum(t.startswith("veth eth0 — eth") for t in texts) == 20
