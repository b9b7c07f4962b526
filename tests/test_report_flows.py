"""The report's flows are connections as conntrack sees them, across every translation: a frame
captured after its translation (the reply un-SNATed by br_netfilter before the bridge device sees
it) joins the connection its comment's `un-SNAT a -> b` names, as one captured before does; and
a connection's frames on an overlay's underlay (VXLAN, IPIP) are in its flow, not in the tunnel's,
and those an IPIP device captured (bare IP, no Ethernet header) are read as IP."""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from conftest import pktemu

pytestmark = pytest.mark.skipif(shutil.which("dot") is None and os.geteuid() != 0,
                                reason="graphviz (dot) not installed and not root (CI installs it)")


def _flows(html: str) -> dict[str, str]:
    """Each flow's title and its section (heading, summary and ladder) of the page."""
    out = {}
    for part in re.split(r'(?=<(?:section|details) class="flow">)', html)[1:]:
        m = re.search(r'<h3 id="flow\d+">flow \d+: ([^<]*)</h3>', part)
        assert m, part[:200]
        out[m.group(1)] = part
    return out


def test_a_localhost_nodeport_connection_is_one_flow(tmp_path: Path) -> None:
    pktemu("run", "topologies/nodeport-localhost.yaml", "--scenario", "localhost-nodeport-served",
           "--out", str(tmp_path), "-q", "--report")
    flows = _flows((tmp_path / "localhost-nodeport-served" / "report.html").read_text())
    tcp = [t for t in flows if t.startswith("TCP")]
    assert tcp == ["TCP 10.0.1.1:40000 → 10.0.1.2:8080"], tcp
    section = flows[tcp[0]]
    assert "10 packets, 30 frames at 3 capture points" in section
    assert "10.0.1.2:8080 → 127.0.0.1:40000 SYN,ACK" in section      # node1/cbr0 in, un-SNATed
    assert "un-SNAT 10.0.1.1:40000 -&gt; 127.0.0.1:40000" in section


def test_a_connection_through_a_vxlan_tunnel_is_one_flow(tmp_path: Path) -> None:
    pktemu("run", "topologies/flannel-vxlan.yaml", "--out", str(tmp_path), "-q", "--report")
    flows = _flows((tmp_path / "ping-and-http" / "report.html").read_text())
    ip = [t for t in flows if not t.startswith("ARP")]
    assert ip == ["ICMP 10.244.0.2 → 10.244.1.2 id=20549", "TCP 10.244.0.2:40000 → 10.244.1.2:8080"], ip
    tcp = flows[ip[1]]
    assert "10 packets, 100 frames at 10 capture points" in tcp           # node1/eth0 and node2/eth0 too
    assert "10.244.0.2:40000 → 10.244.1.2:8080 SYN in vxlan 192.168.50.11 → 192.168.50.12 vni 1" in tcp


def test_a_connection_through_calico_ipip_is_one_flow_with_its_tunl0_hops(tmp_path: Path) -> None:
    pktemu("run", "topologies/calico-ipip.yaml", "--scenario", "cross-node", "--out", str(tmp_path), "-q",
           "--report")
    flows = _flows((tmp_path / "cross-node" / "report.html").read_text())
    ip = [t for t in flows if not t.startswith("ARP")]
    assert ip == ["ICMP 10.244.0.5 → 10.244.1.5 id=20549", "TCP 10.244.0.5:40000 → 10.244.1.5:8080"], ip
    tcp = flows[ip[1]]
    assert "10 packets, 80 frames at 8 capture points" in tcp
    assert 'class="ln-dev">tunl0<' in tcp and 'data-point="node2/tunl0"' in tcp
    assert "10.244.0.5:40000 → 10.244.1.5:8080 SYN in ipip 192.168.50.11 → 192.168.50.12" in tcp
