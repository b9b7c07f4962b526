"""Scenario overrides of routes, addresses and rules files: checked at load time like the topology,
applied to that scenario only."""
from __future__ import annotations

from pathlib import Path

import pytest

import datapaths
from conftest import load_error, pktemu
from pktemu.io.topofile import load_topology
from pktemu.network import apply_overrides
from pktemu.topo import Address, Route

TOPO = datapaths.ROOT / "topologies"
BASE = TOPO / "service-test.yaml"


def topo(tmp_path: Path, *overrides: str, extra: str = "") -> Path:
    p = tmp_path / "t.yaml"
    body = "".join(f"      - {o}\n" for o in overrides)
    p.write_text(f"extends: {BASE}\n{extra}scenarios:\n  s:\n    overrides:\n{body}"
                 "    traffic: [{pod: client, app: {kind: http-client, target: 10.3.241.152, port: 80, "
                 "connect_timeout: 300ms}}]\n")
    return p


def test_routes_addresses_and_rules_apply_to_the_scenario_only(tmp_path: Path) -> None:
    (tmp_path / "open.iptables").write_text("*filter\n:FORWARD ACCEPT [0:0]\nCOMMIT\n")
    t = load_topology(str(topo(
        tmp_path,
        "{node: node1, interface: eth0, addresses: [10.100.0.11/24, 10.100.0.31/24],"
        " routes: [{to: default, via: 10.100.0.1, src: 10.100.0.31}]}",
        "{node: node2, iptables: open.iptables}")))
    changed = apply_overrides(t, t.scenarios["s"])
    assert changed.nodes["node1"].interfaces["eth0"].addresses == [Address("10.100.0.11/24"),
                                                                   Address("10.100.0.31/24")]
    assert changed.nodes["node1"].routes == [Route("default", via="10.100.0.1", src="10.100.0.31")]
    assert changed.nodes["node2"].iptables == str(tmp_path / "open.iptables")
    assert t.nodes["node1"].routes == [Route("default", via="10.100.0.1")]      # the topology is unchanged
    assert t.nodes["node2"].iptables == str(TOPO / "kube-proxy-rules.iptables")


def test_a_route_override_changes_the_path_of_the_run(tmp_path: Path) -> None:
    """node1 keeps only its pod network: the DNATed SYN has no route there, and gw sees nothing."""
    p = topo(tmp_path, "{node: node1, routes: [{to: 10.0.1.0/24, dev: cbr0}]}")
    out = tmp_path / "out"
    pktemu("run", str(p), "--out", str(out), "--scenario", "s", "-q", timeout=120)
    assert "node1 ip_route_input: no route to 10.0.2.2" in (out / "s" / "drops.txt").read_text()
    assert (out / "s" / "pcap" / "gw-eth1.pcap").stat().st_size == 24          # the pcap header only
    assert (out / "s" / "pcap" / "node1-veth-client.pcap").stat().st_size > 24


@pytest.mark.parametrize("override, where, message", [
    ("{node: node1, routes: [{to: default, via: 10.9.9.9}]}", "overrides[0].routes[0]",
     "route to default: gateway 10.9.9.9 is not on a connected network of node node1"),
    ("{node: node1, routes: [{to: default, via: 10.100.0.1, dev: eth9}]}", "overrides[0].routes[0].dev",
     "no device 'eth9' on node node1"),
    ("{node: node1, interface: eth0, addresses: [10.200.0.11/24]}", "overrides[0]",
     "route to default: gateway 10.100.0.1 is not on a connected network of node node1"),
    ("{node: node1, interface: eth0, addresses: [10.0.2.2/24]}", "overrides[0].addresses[0]",
     "address 10.0.2.2 is also on server/eth0"),
    ("{node: node1, interface: eth7, addresses: [10.0.2.2/24]}", "overrides[0].interface",
     "no interface or bridge eth7 on node1"),
    ("{node: node1, interface: eth0}", "overrides[0].addresses",
     "required: interface: and addresses: go together"),
    ("{node: node1, iptables: missing.iptables}", "overrides[0].iptables", "no such file"),
    ("{node: client, iptables: missing.iptables}", "overrides[0].iptables", "client is a pod"),
    ("{node: node1}", "overrides[0]", "nothing to change"),
    ("{node: node1, route: []}", "overrides[0].route", "unknown key"),
    ("{node: nodeX, routes: []}", "overrides[0].node", "no node or pod named 'nodeX'"),
])
def test_bad_overrides_are_one_line_naming_the_field(tmp_path: Path, override: str, where: str,
                                                     message: str) -> None:
    p = topo(tmp_path, override)
    msg = load_error(p)
    assert msg.startswith(f"{p}: scenarios.s.{where}: ") and message in msg


def test_bad_override_from_the_cli_is_exit_2_and_nothing_written(tmp_path: Path) -> None:
    p = topo(tmp_path, "{node: node1, routes: [{to: default, via: 10.9.9.9}]}")
    out = tmp_path / "out"
    r = pktemu("run", str(p), "--out", str(out), check=False)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and r.stderr.startswith("pktemu: error: ")
    assert not out.exists()


def test_existing_overrides_still_work() -> None:
    t = load_topology(str(BASE))
    sc = t.scenarios["s3b-hairpin-off"]
    changed = apply_overrides(t, sc)
    port = [p for p in changed.nodes["node1"].bridges["cbr0"].ports if p.name == "veth-client"][0]
    assert port.hairpin is False
