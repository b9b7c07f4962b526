"""Loading topology files: the shipped topologies, pod expansion, derived MACs, capture order, extends."""
from __future__ import annotations

import copy
import hashlib
import os
from typing import Any

import pytest
import yaml

from pktemu.apps import registry
from pktemu.errors import PktemuError
from pktemu.io.topofile import load_topology
from pktemu.topo import Address, BridgePort, Route, Veth

import datapaths

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOPO = os.path.join(ROOT, "topologies")
ORACLE_REF = str(datapaths.ORACLE_REF)
ORACLE_SCENARIOS = ["s1-clusterip", "s2-noendpoints", "s3-hairpin", "s3b-hairpin-off"]
ORACLE_CAPTURES = ["client-eth0", "node1-veth-client", "node1-cbr0", "node1-eth0", "gw-eth1", "gw-eth2",
                   "node2-eth0", "node2-cbr0", "node2-veth-server", "server-eth0", "node2-veth-dns",
                   "dns-eth0"]


def _validate_echo(params: dict[str, Any], where: str) -> dict[str, Any]:
    port = params.get("port")
    if isinstance(port, bool) or not isinstance(port, int):
        raise PktemuError(f"{where}.port: expected an integer")
    return {"port": port, "checked": True}


def _ensure_apps() -> None:
    """A test app kind, plus stand-ins for the built-in apps while those are being written."""
    have = registry.kinds()
    if "test-echo" not in have:
        registry.register(registry.AppKind("test-echo", lambda *a: None, _validate_echo))
    for kind in ("http-server", "http-client", "dns-server"):
        if kind not in have:
            registry.register(registry.AppKind(kind, lambda *a: None, lambda p, w: dict(p)))


_ensure_apps()


def base_doc() -> dict[str, Any]:
    """A small valid topology: two hosts on a veth, a bridge on n1 with one pod, one scenario."""
    return copy.deepcopy({
        "name": "t", "seed": 7,
        "nodes": {
            "n1": {"sysctls": {"net.ipv4.ip_forward": 1},
                   "interfaces": {"eth0": {"mac": "02:00:00:00:00:01", "addresses": ["10.1.0.1/24"]}},
                   "bridges": {"br0": {"mac": "02:00:00:00:01:01", "addresses": ["10.0.1.1/24"]}},
                   "routes": [{"to": "default", "via": "10.1.0.2"}]},
            "n2": {"interfaces": {"eth0": {"mac": "02:00:00:00:00:02", "addresses": ["10.1.0.2/24"]}},
                   "routes": [{"to": "10.0.1.0/24", "via": "10.1.0.1"}]},
        },
        "veths": [["n1/eth0", "n2/eth0"]],
        "pods": {"p1": {"node": "n1", "bridge": "br0",
                        "host_veth": {"name": "veth-p1", "mac": "06:00:00:00:00:01", "hairpin": True},
                        "mac": "0a:58:00:00:00:01", "address": "10.0.1.2/24", "gateway": "10.0.1.1",
                        "apps": [{"kind": "test-echo", "port": 7}]}},
        "scenarios": {"s": {"traffic": [{"at": "10ms", "pod": "p1",
                                         "app": {"kind": "test-echo", "port": 9}}]}},
    })


def write(tmp_path: Any, doc: dict[str, Any] | str, fname: str = "t.yaml") -> str:
    path = os.path.join(str(tmp_path), fname)
    with open(path, "w") as f:
        f.write(doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False))
    return path


def test_service_test_matches_the_oracle_topology() -> None:
    t = load_topology(os.path.join(TOPO, "service-test.yaml"))
    assert t.name == "service-test" and t.seed == 1
    assert list(t.scenarios) == ORACLE_SCENARIOS
    with open(os.path.join(ORACLE_REF, "s1-clusterip", "captures.tsv")) as f:
        oracle_caps = [line.split("\t")[0] for line in f if line.strip()]
    assert oracle_caps == ORACLE_CAPTURES
    assert t.capture_order == ORACLE_CAPTURES       # every device of the topology is a capture point
    assert t.capture_points["node1-veth-client"] == "node1/veth-client"
    assert set(t.nodes) == {"node1", "gw", "node2", "client", "server", "dns"}
    gw = t.nodes["gw"]
    assert gw.interfaces["eth1"].addresses == [Address("10.100.0.1/32", "10.100.0.11")]
    assert gw.routes[1] == Route("10.0.2.0/24", via="10.100.0.12")
    n1 = t.nodes["node1"]
    assert n1.iptables == os.path.join(TOPO, "kube-proxy-rules.iptables")
    assert n1.sysctls["net.bridge.bridge-nf-call-iptables"] == 1
    assert n1.bridges["cbr0"].stp is False
    s3b = t.scenarios["s3b-hairpin-off"]
    assert s3b.overrides[0].target == "node1/veth-client" and s3b.overrides[0].settings == {"hairpin": False}
    assert s3b.traffic[0].node == "client" and s3b.traffic[0].result == "client-result.json"


def test_pod_expands_into_node_veth_and_bridge_port() -> None:
    t = load_topology(os.path.join(TOPO, "service-test.yaml"))
    client = t.nodes["client"]
    assert client.kind == "pod"
    assert client.interfaces["eth0"].mac == "0a:58:0a:00:01:02"
    assert client.interfaces["eth0"].addresses == [Address("10.0.1.2/24")]
    assert client.routes == [Route("default", via="10.0.1.1", dev="eth0")]
    assert client.apps[0].kind == "http-server"
    assert t.nodes["node1"].interfaces["veth-client"].mac == "06:00:0a:00:01:02"
    assert BridgePort("veth-client", hairpin=True) in t.nodes["node1"].bridges["cbr0"].ports
    assert Veth("client/eth0", "node1/veth-client") in t.veths
    assert [p.name for p in t.nodes["node2"].bridges["cbr0"].ports] == ["veth-server", "veth-dns"]


def test_pod_to_pod_extends_service_test() -> None:
    base = load_topology(os.path.join(TOPO, "service-test.yaml"))
    t = load_topology(os.path.join(TOPO, "pod-to-pod.yaml"))
    assert t.name == "pod-to-pod"
    assert list(t.scenarios) == [*ORACLE_SCENARIOS, "direct"]
    assert t.scenarios["direct"].traffic[0].app.params["target"] == "10.0.2.2"
    assert t.nodes == base.nodes and t.veths == base.veths and t.capture_order == base.capture_order


def test_loading_is_deterministic(tmp_path: Any) -> None:
    doc = base_doc()
    del doc["nodes"]["n2"]["interfaces"]["eth0"]["mac"]
    p = write(tmp_path, doc)
    assert load_topology(p) == load_topology(p)


def test_app_params_are_validated_and_normalised(tmp_path: Any) -> None:
    t = load_topology(write(tmp_path, base_doc()))
    assert t.nodes["p1"].apps[0].params == {"port": 7, "checked": True}
    tr = t.scenarios["s"].traffic[0]
    assert (tr.at, tr.node, tr.app.params) == (10_000_000, "p1", {"port": 9, "checked": True})


def test_derived_macs_are_hashed_locally_administered_unicast(tmp_path: Any) -> None:
    doc = base_doc()
    del doc["nodes"]["n2"]["interfaces"]["eth0"]["mac"]
    del doc["nodes"]["n1"]["bridges"]["br0"]["mac"]
    del doc["pods"]["p1"]["mac"]
    del doc["pods"]["p1"]["host_veth"]["mac"]
    t = load_topology(write(tmp_path, doc))
    macs = {"n2/eth0": t.nodes["n2"].interfaces["eth0"].mac, "n1/br0": t.nodes["n1"].bridges["br0"].mac,
            "p1/eth0": t.nodes["p1"].interfaces["eth0"].mac,
            "n1/veth-p1": t.nodes["n1"].interfaces["veth-p1"].mac}
    for where, mac in macs.items():
        node, ifname = where.split("/")
        b = bytearray(hashlib.sha256(f"7/{node}/{ifname}".encode()).digest()[:6])
        b[0] = (b[0] & 0xFC) | 0x02
        assert mac == ":".join(f"{x:02x}" for x in b)
        first = int(mac[:2], 16)
        assert first & 0x02 and not first & 0x01
    assert len(set(macs.values())) == 4
    doc["seed"] = 8
    t8 = load_topology(write(tmp_path, doc, "t8.yaml"))
    assert t8.nodes["n2"].interfaces["eth0"].mac != macs["n2/eth0"]


def test_capture_order_lists_every_device_after_the_named_ones(tmp_path: Any) -> None:
    doc = base_doc()
    doc["captures"] = ["p1-eth0", "n2-eth0"]
    t = load_topology(write(tmp_path, doc))
    assert t.capture_order == ["p1-eth0", "n2-eth0", "n1-eth0", "n1-veth-p1", "n1-br0"]
    assert list(t.capture_points) == t.capture_order
    assert t.capture_points["n1-br0"] == "n1/br0"


def test_defaults_and_optional_forms(tmp_path: Any) -> None:
    doc = base_doc()
    pod = doc["pods"]["p1"]
    del pod["gateway"], pod["host_veth"]
    doc["nodes"]["n1"]["bridges"]["br0"].update(ageing_time="30s", stp=True)
    doc["nodes"]["n1"]["sysctls"]["net.ipv4.conf.veth-p1.rp_filter"] = 2
    doc["nodes"]["n2"]["routes"].append({"to": "10.9.0.7", "dev": "eth0", "metric": 5})
    doc["scenarios"]["s"].update(duration="2s", settle="500ms")
    doc["scenarios"]["s"]["traffic"].append({"node": "n2", "app": {"kind": "test-echo", "port": 1},
                                             "result": "n2.json"})
    t = load_topology(write(tmp_path, doc))
    assert t.nodes["p1"].routes == [Route("default", via="10.0.1.1", dev="eth0")]  # the bridge's address
    assert "veth-p1" in t.nodes["n1"].interfaces
    assert BridgePort("veth-p1", hairpin=False) in t.nodes["n1"].bridges["br0"].ports
    assert t.nodes["n1"].bridges["br0"].ageing_time == 30.0 and t.nodes["n1"].bridges["br0"].stp
    assert t.nodes["n1"].sysctls["net.ipv4.conf.veth-p1.rp_filter"] == 2
    assert t.nodes["n2"].routes[1] == Route("10.9.0.7/32", dev="eth0", metric=5)
    sc = t.scenarios["s"]
    assert (sc.duration, sc.settle) == (2_000_000_000, 500_000_000)
    assert [(tr.node, tr.at, tr.result) for tr in sc.traffic] == [("p1", 10_000_000, "client-result.json"),
                                                                 ("n2", 0, "n2.json")]


def test_base_sixty_lookalike_mac_stays_a_mac(tmp_path: Any) -> None:
    text = yaml.safe_dump(base_doc(), sort_keys=False).replace("02:00:00:00:00:02", "12:34:56:00:00:02")
    text = text.replace("'12:34:56:00:00:02'", "12:34:56:00:00:02")
    assert "mac: 12:34:56:00:00:02" in text
    t = load_topology(write(tmp_path, text))
    assert t.nodes["n2"].interfaces["eth0"].mac == "12:34:56:00:00:02"


def test_extends_replaces_keys_and_merges_scenarios(tmp_path: Any) -> None:
    base = base_doc()
    base["scenarios"]["other"] = {"description": "from base"}
    write(tmp_path, base, "base.yaml")
    os.makedirs(os.path.join(str(tmp_path), "sub"))
    derived = {"extends": "../base.yaml", "seed": 9,
               "scenarios": {"s": {"description": "derived wins"}, "new": {}}}
    t = load_topology(write(tmp_path, derived, "sub/derived.yaml"))
    assert t.name == "derived"                      # name is not inherited
    assert t.seed == 9
    assert list(t.scenarios) == ["s", "other", "new"]
    assert t.scenarios["s"].description == "derived wins" and not t.scenarios["s"].traffic
    assert t.scenarios["other"].description == "from base"
    assert t.path.endswith("derived.yaml")


def test_extends_errors_name_the_file_the_key_came_from(tmp_path: Any) -> None:
    base = base_doc()
    base["nodes"]["n2"]["interfaces"]["eth0"]["mtu"] = 10
    write(tmp_path, base, "base.yaml")
    p = write(tmp_path, {"extends": "base.yaml", "name": "d"}, "d.yaml")
    with pytest.raises(PktemuError, match=r"base\.yaml: nodes\.n2\.interfaces\.eth0\.mtu: 10 is out of"):
        load_topology(p)


def test_extends_iptables_path_resolves_against_the_base_file(tmp_path: Any) -> None:
    os.makedirs(os.path.join(str(tmp_path), "base"))
    with open(os.path.join(str(tmp_path), "base", "rules.iptables"), "w") as f:
        f.write("*filter\nCOMMIT\n")
    base = base_doc()
    base["nodes"]["n1"]["iptables"] = "rules.iptables"
    write(tmp_path, base, "base/b.yaml")
    t = load_topology(write(tmp_path, {"extends": "base/b.yaml"}, "d.yaml"))
    assert t.nodes["n1"].iptables == os.path.join(str(tmp_path), "base", "rules.iptables")


def test_every_accepted_sysctl_is_documented() -> None:
    from pktemu.io.topofile_sysctl import known_sysctls
    with open(os.path.join(ROOT, "docs", "topology.md")) as f:
        doc = f.read()
    missing = [k for k in known_sysctls() if f"`{k}`" not in doc]
    assert not missing


def test_yaml_anchors_in_x_keys_and_merge_keys(tmp_path: Any) -> None:
    text = """x-sys: &sys {net.ipv4.ip_forward: 1, net.ipv4.conf.all.rp_filter: 2}
nodes:
  a:
    sysctls: {<<: *sys, net.ipv4.conf.all.rp_filter: 0}
    interfaces: {eth0: {addresses: [10.0.0.1/24]}}
  b:
    sysctls: *sys
    interfaces: {eth0: {addresses: [10.0.0.2/24]}}
veths: [[a/eth0, b/eth0]]
"""
    t = load_topology(write(tmp_path, text))
    assert t.nodes["a"].sysctls == {"net.ipv4.ip_forward": 1, "net.ipv4.conf.all.rp_filter": 0}
    assert t.nodes["b"].sysctls == {"net.ipv4.ip_forward": 1, "net.ipv4.conf.all.rp_filter": 2}
    assert t.name == "t" and t.capture_order == ["a-eth0", "b-eth0"] and t.scenarios == {}


def test_a_bridge_may_have_its_own_ports_mac_as_linux_gives_it(tmp_path: Any) -> None:
    """A Linux bridge without a MAC of its own takes the lowest of its ports' (real nodes' dumps show
    cni0 with a pod veth's MAC): accepted, and frames to that MAC still reach the bridge's stack
    (every port's MAC is a local FDB entry), so the pod reaches its gateway and the Service."""
    import json
    import subprocess
    import sys
    t = tmp_path / "t.yaml"
    t.write_text(f"extends: {{file: {datapaths.ROOT / 'topologies' / 'service-test.yaml'}, merge: true}}\n"
                 "nodes:\n  node1:\n    bridges:\n      cbr0: {mac: '06:00:0a:00:01:02'}\n")
    topo = load_topology(str(t))
    assert topo.nodes["node1"].bridges["cbr0"].mac == "06:00:0a:00:01:02"
    out = tmp_path / "out"
    subprocess.run([sys.executable, "-m", "pktemu.cli", "run", str(t), "--scenario", "s1-clusterip",
                    "--out", str(out), "-q"], check=True, cwd=datapaths.ROOT, timeout=120)
    result = json.loads((out / "s1-clusterip" / "client-result.json").read_text())
    assert result["http"]["status_line"] == "HTTP/1.1 200 OK"
    # a MAC another bridge's port has is still refused
    t.write_text(f"extends: {{file: {datapaths.ROOT / 'topologies' / 'service-test.yaml'}, merge: true}}\n"
                 "nodes:\n  node2:\n    bridges:\n      cbr0: {mac: '06:00:0a:00:01:02'}\n")
    with pytest.raises(PktemuError, match="MAC 06:00:0a:00:01:02 is also used by"):
        load_topology(str(t))
