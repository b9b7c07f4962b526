"""MASQUERADE's source address is nf_nat_masquerade_ipv4's: inet_select_addr(out, nexthop,
RT_SCOPE_UNIVERSE). Host traffic DNATed to the node's own address (the API server's ClusterIP on a
control-plane node) leaves through `lo`, whose 127.0.0.1 is host scope, so the kernel takes the
node's global address instead: the server sees the node's address, never 127.0.0.1.
Checked against the kernel of the machine running the tests when it is root (6.18: reply tuple
`src=10.100.0.11 dst=10.100.0.11 sport=6443 dport=40000`).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import pktemu

NODE_IP, CLUSTER_IP, API_PORT, SPORT = "10.100.0.11", "10.3.0.1", 6443, 40000

PLAIN = [
    ("OUTPUT", f"-d {CLUSTER_IP}/32 -p tcp -m tcp --dport 443 -j DNAT --to-destination {NODE_IP}:{API_PORT}"),
    ("POSTROUTING", "-j MASQUERADE"),
]
KUBE = [   # kube-proxy's mark-and-masquerade
    ("OUTPUT", f"-d {CLUSTER_IP}/32 -p tcp -m tcp --dport 443 -j MARK --set-xmark 0x4000/0x4000"),
    ("OUTPUT", f"-d {CLUSTER_IP}/32 -p tcp -m tcp --dport 443 -j DNAT --to-destination {NODE_IP}:{API_PORT}"),
    ("POSTROUTING", "-m mark --mark 0x4000/0x4000 -j MASQUERADE"),
]
RULESETS = {"masquerade": PLAIN, "mark-masq": KUBE}


def _restore_text(rules: list[tuple[str, str]]) -> str:
    body = "".join(f"-A {chain} {spec}\n" for chain, spec in rules)
    return ("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
            f":POSTROUTING ACCEPT [0:0]\n{body}COMMIT\n")


def _reply_tuple(conntrack_text: str) -> str:
    """The second (reply) tuple of the one TCP entry: `src=.. dst=.. sport=.. dport=..`."""
    lines = [ln for ln in conntrack_text.splitlines() if ln.startswith("tcp")]
    assert len(lines) == 1, conntrack_text
    tuples = re.findall(r"src=\S+ dst=\S+ sport=\d+ dport=\d+", lines[0])
    assert len(tuples) == 2, lines[0]
    return tuples[1]


def _emulated(tmp_path: Path, rules: list[tuple[str, str]]) -> tuple[str, str]:
    """Run the node's own GET to the ClusterIP in pktemu: (conntrack reply tuple, server's peer)."""
    (tmp_path / "rules.iptables").write_text(_restore_text(rules))
    (tmp_path / "topo.yaml").write_text(f"""
name: masq-source
seed: 1
nodes:
  node1:
    interfaces:
      eth0: {{mac: "02:00:0a:64:00:0b", addresses: [{NODE_IP}/24]}}
    routes:
      - {{to: default, via: 10.100.0.1}}
    iptables: rules.iptables
    apps: [{{kind: http-server, port: {API_PORT}}}]
  gw:
    interfaces:
      eth1: {{mac: "02:01:0a:64:00:01", addresses: [10.100.0.1/24]}}
veths:
  - [node1/eth0, gw/eth1]
scenarios:
  apiserver:
    traffic:
      - {{at: 0ms, node: node1, app: {{kind: http-client, target: {CLUSTER_IP}, port: 443, sport: {SPORT}}}}}
""")
    out = tmp_path / "out"
    pktemu("run", str(tmp_path / "topo.yaml"), "--out", str(out), timeout=120)
    client = json.loads((out / "apiserver" / "client-result.json").read_text())
    assert client["http"]["status_line"] == "HTTP/1.1 200 OK", client
    served = json.loads((out / "apiserver" / "server-result.json").read_text())
    peer = served["node1"][0]["result"]["served"][0]["peer"]
    return _reply_tuple((out / "apiserver" / "conntrack-node1.txt").read_text()), peer


@pytest.mark.parametrize("ruleset", sorted(RULESETS))
def test_masquerade_out_of_lo_keeps_the_node_address(tmp_path: Path, ruleset: str) -> None:
    reply, peer = _emulated(tmp_path, RULESETS[ruleset])
    assert reply == f"src={NODE_IP} dst={NODE_IP} sport={API_PORT} dport={SPORT}"
    assert peer == f"{NODE_IP}:{SPORT}"


TOOLS = ("ip", "iptables", "conntrack")


def _kernel(rules: list[tuple[str, str]]) -> str:
    """The same namespace on this machine's kernel: the conntrack reply tuple of the connection."""
    ns = f"pktemu-masq-{os.getpid()}"

    def nsx(*cmd: str) -> None:
        subprocess.run(["ip", "netns", "exec", ns, *cmd], check=True, capture_output=True, timeout=20)

    subprocess.run(["ip", "netns", "add", ns], check=True, capture_output=True, timeout=20)
    try:
        nsx("ip", "link", "set", "lo", "up")
        nsx("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
        nsx("ip", "addr", "add", f"{NODE_IP}/24", "dev", "eth0")
        nsx("ip", "link", "set", "eth0", "up")
        nsx("ip", "link", "set", "eth1", "up")
        nsx("ip", "route", "add", "default", "via", "10.100.0.1")
        for chain, spec in rules:
            nsx("iptables", "-t", "nat", "-A", chain, *spec.split())
        script = (
            "import socket, subprocess\n"
            f"srv = socket.socket(); srv.bind(('{NODE_IP}', {API_PORT})); srv.listen()\n"
            "c = socket.socket(); c.settimeout(5)\n"
            f"c.bind(('0.0.0.0', {SPORT})); c.connect(('{CLUSTER_IP}', 443)); srv.accept()\n"
            "print(subprocess.run(['conntrack', '-L', '-p', 'tcp'], capture_output=True, text=True,"
            " check=True).stdout)\n")
        p = subprocess.run(["ip", "netns", "exec", ns, "python3", "-c", script], check=True,
                           capture_output=True, text=True, timeout=30)
        return _reply_tuple(p.stdout)
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)


@pytest.mark.skipif(os.geteuid() != 0 or any(shutil.which(t) is None for t in TOOLS),
                    reason="builds a network namespace: needs root and " + ", ".join(TOOLS))
@pytest.mark.parametrize("ruleset", sorted(RULESETS))
def test_the_kernel_agrees(tmp_path: Path, ruleset: str) -> None:
    kernel = _kernel(RULESETS[ruleset])
    emulated, _ = _emulated(tmp_path, RULESETS[ruleset])
    assert kernel == emulated
