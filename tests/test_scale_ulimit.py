"""A 1,000-node x 30-pod generated cluster under the common `ulimit -n 1024` (issue 15): every one
of its 63,000 capture points gets its pcap, each a file Scapy reads back, and every client's
request is answered. Scenario `direct` (pod to pod): the Service scenario `clients` makes every
node's kube-proxy program all 30,000 endpoints, which does not finish at this size (see
pktemu.bench.cluster for its growth)."""
from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

from scapy.layers.inet import TCP
from scapy.utils import rdpcap

import datapaths

NODES, PODS = 1000, 30
FDS = 1024
PCAP_MAGIC = {bytes.fromhex(m) for m in ("d4c3b2a1", "a1b2c3d4", "4d3cb2a1", "a1b23c4d")}


def _limit_fds() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (FDS, FDS))


def test_a_1000_by_30_cluster_records_every_capture_point_under_ulimit_1024(tmp_path: Path) -> None:
    topo = tmp_path / "cluster.yaml"
    topo.write_text(f"extends: {{file: {datapaths.ROOT / 'topologies' / 'generated-large-cluster.yaml'}, "
                    f"merge: true}}\nvars: {{nodes: {NODES}, pods: {PODS}}}\n")
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, "-m", "pktemu.cli", "run", str(topo), "--scenario", "direct",
                        "--out", str(out), "-q"], capture_output=True, text=True, timeout=900,
                       cwd=datapaths.ROOT, preexec_fn=_limit_fds)
    assert p.returncode == 0, p.stderr
    assert p.stderr == ""
    run = out / "direct"
    points = [line.split("\t") for line in (run / "captures.tsv").read_text().splitlines()]
    # gw: one link per node; a node: eth0, cbr0 and one veth per pod; a pod: eth0
    assert len(points) == NODES + NODES * (2 + PODS) + NODES * PODS
    pcaps = {f.name for f in (run / "pcap").iterdir()}
    assert pcaps == {Path(pt[3]).name for pt in points}
    for name in pcaps:                  # each a whole pcap file: its global header at least
        with open(run / "pcap" / name, "rb") as f:
            assert f.read(4) in PCAP_MAGIC, name
    for name in ("gw-eth1.pcap", "gw-eth1000.pcap", "node1-eth0.pcap", "node500-cbr0.pcap",
                 "pod1-1-eth0.pcap", "pod1000-1-eth0.pcap", "pod2-1-eth0.pcap"):
        frames = rdpcap(str(run / "pcap" / name))
        assert any(TCP in f for f in frames), name
    results = json.loads((run / "client-result.json").read_text())
    assert len(results) == NODES
    assert all(r["http"]["status_line"] == "HTTP/1.1 200 OK" for r in results)
