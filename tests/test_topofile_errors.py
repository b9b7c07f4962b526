"""Every kind of bad topology fails at load time with one line naming file, object and field."""
from __future__ import annotations

import os
from typing import Any, Callable

import pytest

from pktemu.errors import PktemuError
from pktemu.io.topofile import load_topology
from tests.test_topofile import base_doc, write

Doc = dict[str, Any]


def error_of(tmp_path: Any, doc: Doc | str, fname: str = "t.yaml") -> str:
    path = write(tmp_path, doc, fname)
    with pytest.raises(PktemuError) as ei:
        load_topology(path)
    msg = str(ei.value)
    assert "\n" not in msg
    return msg.replace(str(tmp_path) + os.sep, "")


def n1(d: Doc) -> Doc:
    return d["nodes"]["n1"]


def _set(fn: Callable[[Doc], Any]) -> Callable[[Doc], Doc]:
    def mutate(d: Doc) -> Doc:
        fn(d)
        return d
    return mutate


CASES: list[tuple[str, Callable[[Doc], Doc], str]] = [
    ("unknown top key", _set(lambda d: d.update(nodez={})),
     "t.yaml: top level.nodez: unknown key (expected one of: captures, description, extends, kubernetes,"),
    ("unknown interface key", _set(lambda d: n1(d)["interfaces"]["eth0"].update(macc="x")),
     "t.yaml: nodes.n1.interfaces.eth0.macc: unknown key (expected one of: addresses, mac, mtu, type)"),
    ("short MAC", _set(lambda d: n1(d)["interfaces"]["eth0"].update(mac="02:00")),
     "t.yaml: nodes.n1.interfaces.eth0.mac: not a MAC address: '02:00'"),
    ("multicast MAC", _set(lambda d: n1(d)["interfaces"]["eth0"].update(mac="01:00:5e:00:00:01")),
     "t.yaml: nodes.n1.interfaces.eth0.mac: 01:00:5e:00:00:01 is a multicast MAC address"),
    ("wrong type", _set(lambda d: n1(d)["interfaces"]["eth0"].update(mtu="big")),
     "t.yaml: nodes.n1.interfaces.eth0.mtu: expected an integer, got string 'big'"),
    ("interfaces not a mapping", _set(lambda d: n1(d).update(interfaces=["eth0"])),
     "t.yaml: nodes.n1.interfaces: expected a mapping, got list"),
    ("missing pod address", _set(lambda d: d["pods"]["p1"].pop("address")),
     "t.yaml: pods.p1.address: required"),
    ("bad CIDR", _set(lambda d: n1(d)["interfaces"]["eth0"].update(addresses=["10.1.0.300/24"])),
     "t.yaml: nodes.n1.interfaces.eth0.addresses[0]: not an IPv4 address/prefix: '10.1.0.300/24'"),
    ("address without prefix", _set(lambda d: n1(d)["interfaces"]["eth0"].update(addresses=["10.1.0.1"])),
     "t.yaml: nodes.n1.interfaces.eth0.addresses[0]: expected an address with a prefix length"),
    ("peer needs /32", _set(lambda d: n1(d)["interfaces"]["eth0"].update(
        addresses=[{"address": "10.1.0.1/24", "peer": "10.1.0.2"}])),
     "t.yaml: nodes.n1.interfaces.eth0.addresses[0].address: an address with a peer must be a /32"),
    ("bad interface name", _set(lambda d: n1(d)["interfaces"].update({"a-very-long-ifname": {}})),
     "t.yaml: nodes.n1.interfaces.a-very-long-ifname: not a valid interface name"),
    ("loopback declared", _set(lambda d: n1(d)["interfaces"].update({"lo": {}})),
     "t.yaml: nodes.n1.interfaces.lo: the loopback lo is implicit in every node"),
    ("duplicate MAC", _set(lambda d: d["pods"]["p1"].update(mac="02:00:00:00:00:02")),
     "t.yaml: pods.p1.mac: MAC 02:00:00:00:00:02 is also used by nodes.n2.interfaces.eth0"),
    ("duplicate address across nodes", _set(lambda d: d["pods"]["p1"].update(address="10.0.1.1/24")),
     "t.yaml: pods.p1.address: address 10.0.1.1 is also on nodes.n1.bridges.br0.addresses[0]"),
    ("duplicate address in one node",
     _set(lambda d: n1(d)["bridges"]["br0"]["addresses"].append("10.1.0.1/16")),
     "t.yaml: nodes.n1.bridges.br0.addresses[1]: address 10.1.0.1 is also on "
     "nodes.n1.interfaces.eth0.addresses[0]"),
    ("peer addresses on two nodes", _set(lambda d: (
        n1(d)["interfaces"]["eth0"].update(addresses=[{"address": "10.9.0.1/32", "peer": "10.9.0.2"}]),
        d["nodes"]["n2"]["interfaces"]["eth0"].update(
            addresses=[{"address": "10.9.0.1/32", "peer": "10.9.0.3"}]),
        n1(d).pop("routes"), d["nodes"]["n2"].pop("routes"))),
     "t.yaml: nodes.n2.interfaces.eth0.addresses[0]: address 10.9.0.1 is also on "
     "nodes.n1.interfaces.eth0.addresses[0]"),
    ("unreachable gateway", _set(lambda d: n1(d)["routes"].append({"to": "10.0.2.0/24", "via": "10.9.9.9"})),
     "t.yaml: nodes.n1.routes[1]: route to 10.0.2.0/24: gateway 10.9.9.9 is not on a connected network "
     "of node n1"),
    ("gateway on another dev", _set(lambda d: n1(d)["routes"][0].update(dev="br0")),
     "t.yaml: nodes.n1.routes[0]: route to default: gateway 10.1.0.2 is not on a connected network "
     "of node n1 through br0"),
    ("pod gateway off-net", _set(lambda d: d["pods"]["p1"].update(gateway="10.0.2.1")),
     "t.yaml: pods.p1.gateway: route to default: gateway 10.0.2.1 is not on a connected network of node p1"),
    ("route dev missing", _set(lambda d: n1(d)["routes"].append({"to": "10.5.0.0/16", "dev": "eth9"})),
     "t.yaml: nodes.n1.routes[1].dev: route to 10.5.0.0/16: no device 'eth9' on node n1"),
    ("route host bits", _set(lambda d: n1(d)["routes"].append({"to": "10.5.0.1/16", "dev": "eth0"})),
     "t.yaml: nodes.n1.routes[1].to: expected default or a CIDR like 10.0.2.0/24, got '10.5.0.1/16'"),
    ("route without via or dev", _set(lambda d: n1(d)["routes"].append({"to": "10.5.0.0/16"})),
     "t.yaml: nodes.n1.routes[1]: a route needs via, dev or both"),
    ("route src not local", _set(lambda d: n1(d)["routes"][0].update(src="10.1.0.9")),
     "t.yaml: nodes.n1.routes[0].src: route to default: src 10.1.0.9 is not an address of node n1"),
    ("duplicate route", _set(lambda d: n1(d)["routes"].append({"to": "default", "via": "10.1.0.2"})),
     "t.yaml: nodes.n1.routes[1]: route to default with metric 0 is already defined at nodes.n1.routes[0]"),
    ("veth end missing", _set(lambda d: d["veths"].append(["n2/eth1", "n1/eth0"])),
     "t.yaml: veths[1]: n2/eth1: no interface 'eth1' on n2 (interfaces: eth0)"),
    ("veth end used twice", _set(lambda d: (n1(d)["interfaces"].update(eth1={}),
                                            d["veths"].append(["n1/eth1", "n2/eth0"]))),
     "t.yaml: veths[1]: n2/eth0 is already an end of veths[0]"),
    ("veth end malformed", _set(lambda d: d["veths"].append(["n1-eth0", "n2/eth0"])),
     "t.yaml: veths[1][0]: expected node/ifname, got 'n1-eth0'"),
    ("dangling interface", _set(lambda d: n1(d)["interfaces"].update(eth1={})),
     "t.yaml: nodes.n1.interfaces.eth1: not joined to anything: every interface is one end of a veth"),
    ("bridge port not an interface", _set(lambda d: n1(d)["bridges"]["br0"].update(ports=["eth7"])),
     "t.yaml: nodes.n1.bridges.br0.ports[0]: no interface 'eth7' on node n1"),
    ("bridge port in two bridges", _set(lambda d: n1(d)["bridges"].update(br1={"ports": ["veth-p1"]})),
     "t.yaml: nodes.n1.bridges.br1.ports[0]: veth-p1 is already a port of pods.p1.host_veth"),
    ("unknown sysctl", _set(lambda d: n1(d)["sysctls"].update({"net.ipv4.ip_fwd": 1})),
     "t.yaml: nodes.n1.sysctls.net.ipv4.ip_fwd: unknown sysctl"),
    ("sysctl out of range", _set(lambda d: n1(d)["sysctls"].update({"net.ipv4.conf.all.rp_filter": 3})),
     "t.yaml: nodes.n1.sysctls.net.ipv4.conf.all.rp_filter: 3 is out of range 0..2"),
    ("sysctl bool", _set(lambda d: n1(d)["sysctls"].update({"net.ipv4.ip_forward": True})),
     "t.yaml: nodes.n1.sysctls.net.ipv4.ip_forward: expected an integer, got boolean True"),
    ("sysctl on missing interface",
     _set(lambda d: n1(d)["sysctls"].update({"net.ipv4.conf.eth5.rp_filter": 1})),
     "t.yaml: nodes.n1.sysctls.net.ipv4.conf.eth5.rp_filter: no interface 'eth5' on this node"),
    ("iptables file missing", _set(lambda d: n1(d).update(iptables="nope.iptables")),
     "t.yaml: nodes.n1.iptables: no such file: "),
    ("unknown app kind", _set(lambda d: d["pods"]["p1"]["apps"].append({"kind": "no-such-app"})),
     "t.yaml: pods.p1.apps[1]: unknown app kind 'no-such-app' (known: "),
    ("app validator error", _set(lambda d: d["pods"]["p1"]["apps"][0].update(port="x")),
     "t.yaml: pods.p1.apps[0].port: expected an integer"),
    ("pod on unknown node", _set(lambda d: d["pods"]["p1"].update(node="n9")),
     "t.yaml: pods.p1.node: no node 'n9' in nodes"),
    ("pod on unknown bridge", _set(lambda d: d["pods"]["p1"].update(bridge="br9")),
     "t.yaml: pods.p1.bridge: node n1 has no bridge 'br9' (bridges: br0)"),
    ("pod named like a node", _set(lambda d: d["pods"].update(n2=d["pods"].pop("p1"))),
     "t.yaml: pods.n2: name already used by nodes.n2"),
    ("host veth clashes", _set(lambda d: d["pods"]["p1"]["host_veth"].update(name="eth0")),
     "t.yaml: pods.p1.host_veth.name: eth0 is already a device of node n1 (nodes.n1.interfaces.eth0)"),
    ("traffic names unknown pod", _set(lambda d: d["scenarios"]["s"]["traffic"][0].update(pod="p9")),
     "t.yaml: scenarios.s.traffic[0].pod: no pod named 'p9'"),
    ("traffic pod: names a node", _set(lambda d: d["scenarios"]["s"]["traffic"][0].update(pod="n1")),
     "t.yaml: scenarios.s.traffic[0].pod: no pod named 'n1' (n1 is a node; write node: n1)"),
    ("traffic bad duration", _set(lambda d: d["scenarios"]["s"]["traffic"][0].update(at="soon")),
     "t.yaml: scenarios.s.traffic[0].at: expected a duration like 800ms or 2s, got 'soon'"),
    ("override not a port", _set(lambda d: d["scenarios"]["s"].update(overrides=[{"port": "n1/eth0",
                                                                                  "hairpin": False}])),
     "t.yaml: scenarios.s.overrides[0].port: 'n1/eth0' is not a bridge port"),
    ("override hairpin not bool", _set(lambda d: d["scenarios"]["s"].update(overrides=[{"port": "n1/veth-p1",
                                                                                        "hairpin": "off"}])),
     "t.yaml: scenarios.s.overrides[0].hairpin: expected true or false, got string 'off'"),
    ("override sysctl", _set(lambda d: d["scenarios"]["s"].update(overrides=[{"node": "p1", "sysctls": {
        "net.ipv4.conf.veth-p1.rp_filter": 1}}])),
     "t.yaml: scenarios.s.overrides[0].sysctls.net.ipv4.conf.veth-p1.rp_filter: "
     "no interface 'veth-p1' on this node"),
    ("override mixes kinds", _set(lambda d: d["scenarios"]["s"].update(
        overrides=[{"port": "n1/veth-p1", "hairpin": True, "node": "n1"}])),
     "t.yaml: scenarios.s.overrides[0].node: unknown key (expected one of: hairpin, port)"),
    ("capture unknown", _set(lambda d: d.update(captures=["n1-eth0", "n1-lo"])),
     "t.yaml: captures[1]: no interface or bridge for 'n1-lo'"),
    ("capture twice", _set(lambda d: d.update(captures=["n1-eth0", "n1-eth0"])),
     "t.yaml: captures[1]: n1-eth0 is listed twice"),
    ("seed type", _set(lambda d: d.update(seed="x")), "t.yaml: seed: expected an integer, got string 'x'"),
    ("bad scenario name", _set(lambda d: d["scenarios"].update({"a b": {}})),
     "t.yaml: scenarios.a b: not a valid scenario name: 'a b'"),
]


@pytest.mark.parametrize("mutate,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_topology(tmp_path: Any, mutate: Callable[[Doc], Doc], expected: str) -> None:
    assert error_of(tmp_path, mutate(base_doc())).startswith(expected)


def test_capture_names_must_be_unambiguous(tmp_path: Any) -> None:
    d = base_doc()
    d["nodes"]["n1-veth"] = {"interfaces": {"p1": {"mac": "02:00:00:00:09:09"}}}
    d["nodes"]["n3"] = {"interfaces": {"x": {"mac": "02:00:00:00:09:0a"}}}
    d["veths"].append(["n1-veth/p1", "n3/x"])
    assert error_of(tmp_path, d).startswith(
        "t.yaml: nodes.n1-veth.interfaces.p1: capture name n1-veth-p1 is also the capture name of n1/veth-p1")


def test_yaml_syntax_error_names_the_line(tmp_path: Any) -> None:
    text = "name: t\nnodes:\n  n1: {interfaces: {eth0: {mac: 02:00:00:00:00:01}\nveths: []\n"
    msg = error_of(tmp_path, text)
    assert msg.startswith("t.yaml:4: YAML syntax error")


def test_duplicate_yaml_key_names_the_line(tmp_path: Any) -> None:
    text = "name: t\nnodes:\n  n1:\n    interfaces:\n      eth0: {}\n      eth0: {}\n"
    assert error_of(tmp_path, text) == "t.yaml:6: duplicate key 'eth0'"


def test_empty_and_non_mapping_files(tmp_path: Any) -> None:
    assert error_of(tmp_path, "# nothing\n") == "t.yaml: empty topology file"
    assert error_of(tmp_path, "- a\n- b\n") == "t.yaml: top level: expected a mapping, got list"


def test_missing_file(tmp_path: Any) -> None:
    with pytest.raises(PktemuError, match=r"nope\.yaml: cannot read: No such file or directory"):
        load_topology(os.path.join(str(tmp_path), "nope.yaml"))


def test_extends_cycle_and_missing_base(tmp_path: Any) -> None:
    write(tmp_path, {"extends": "b.yaml"}, "a.yaml")
    write(tmp_path, {"extends": "a.yaml"}, "b.yaml")
    assert error_of(tmp_path, {"extends": "a.yaml"}, "c.yaml") == \
        "b.yaml: extends: a.yaml extends this file again (a cycle)"
    assert error_of(tmp_path, {"extends": "zz.yaml"}, "d.yaml").startswith("d.yaml: extends: no such file: ")
