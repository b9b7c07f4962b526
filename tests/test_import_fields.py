"""`pktemu import` of dumps with one bad field: the item it belongs to (a route, a device's field,
an address, a neighbour) is left out with one warning naming the file and the item, and the rest
of the node imports (docs/import.md, Problems). Hand-made dumps, no root needed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import pktemu
from test_import import _link, cluster_yaml, node_dump, warnings

ROUTES: list[dict[str, Any]] = [
    {"type": "unicast", "dst": "default", "gateway": "192.168.5.1", "dev": "eth0", "table": "main",
     "protocol": "dhcp"},
    {"type": "unicast", "dst": "10.9.0.0/16", "gateway": "192.168.5.7", "dev": "eth0", "table": "main",
     "metric": 50},
    {"dst": "10.0.1.0/24", "dev": "cbr0", "table": "main", "protocol": "kernel", "scope": "link"},
]
LINKS: list[dict[str, Any]] = [
    {"ifindex": 1, "ifname": "lo", "link_type": "loopback", "flags": ["UP"]},
    _link("eth0", 2, "52:54:00:00:00:0b"),
    _link("cbr0", 3, "0a:58:0a:00:01:01", "bridge"),
    _link("veth-a", 4, "06:00:0a:00:01:02", "veth", "cbr0"),
]
ADDRS: list[dict[str, Any]] = [
    {"ifname": "eth0", "addr_info": [{"family": "inet", "local": "192.168.5.11", "prefixlen": 24}]},
    {"ifname": "cbr0", "addr_info": [{"family": "inet", "local": "10.0.1.1", "prefixlen": 24}]},
]


def imported(tmp_path: Path, **files: Any) -> tuple[dict[str, Any], list[str]]:
    """Import a dump whose files `files` replace (as JSON), with the Pod frontend; the topology written
    and the warnings."""
    replaced = {k.replace("_", "-") + ".json": json.dumps(v) for k, v in files.items()}
    dump = node_dump(tmp_path / "dump", **replaced)
    out = tmp_path / "t.yaml"
    p = pktemu("import", str(dump), str(cluster_yaml(tmp_path / "c.yaml")), "-o", str(out))
    w = [line for line in warnings(p.stderr) if "sysctl.txt" not in line]
    pktemu("validate", str(out))
    return yaml.safe_load(out.read_text()), w


def with_field(entries: list[dict[str, Any]], index: int, **fields: Any) -> list[dict[str, Any]]:
    out = json.loads(json.dumps(entries))
    out[index].update(fields)
    return out


@pytest.mark.parametrize("metric, shown",
                         [(-1, "-1"), ("abc", "'abc'"), (2**32, "4294967296"), (True, "True")])
def test_a_route_with_a_bad_metric_is_left_out_alone(tmp_path: Path, metric: Any, shown: str) -> None:
    t, w = imported(tmp_path, ip_route=with_field(ROUTES, 1, metric=metric))
    assert w == [f"worker-a: ip-route.json: route 10.9.0.0/16 via 192.168.5.7 dev eth0: metric {shown} is "
                 "not a route metric (0..4294967295): left out"]
    assert t["nodes"]["worker-a"]["routes"] == [{"to": "default", "via": "192.168.5.1", "dev": "eth0"}]
    assert list(t["pods"]) == ["frontend"]


def test_a_device_with_a_bad_mac_is_imported_without_it(tmp_path: Path) -> None:
    t, w = imported(tmp_path, ip_link=with_field(LINKS, 1, address="not-a-mac"))
    assert w == ["worker-a: ip-link.json: device eth0: address 'not-a-mac' is not a MAC address: imported "
                 "without it (pktemu derives one)"]
    assert t["nodes"]["worker-a"]["interfaces"]["eth0"] == {"addresses": ["192.168.5.11/24"]}
    assert list(t["pods"]) == ["frontend"]


@pytest.mark.parametrize("index, device", [(1, "eth0"), (3, "veth-a")])
def test_a_device_with_a_bad_mtu_gets_the_default(tmp_path: Path, index: int, device: str) -> None:
    t, w = imported(tmp_path, ip_link=with_field(LINKS, index, mtu="big"))
    assert w == [f"worker-a: ip-link.json: device {device}: mtu 'big' is not an MTU (68..65535): "
                 "imported with 1500"]
    assert "mtu" not in t["nodes"]["worker-a"]["interfaces"]["eth0"] and "mtu" not in t["pods"]["frontend"]
    assert t["nodes"]["worker-a"]["routes"] == [{"to": "default", "via": "192.168.5.1", "dev": "eth0"}]


def test_an_address_with_a_bad_prefix_length_is_left_out_with_a_warning(tmp_path: Path) -> None:
    addrs = json.loads(json.dumps(ADDRS))
    addrs[1]["addr_info"].append({"family": "inet", "local": "10.0.2.1", "prefixlen": "x"})
    t, w = imported(tmp_path, ip_addr=addrs)
    assert w == ["worker-a: ip-addr.json: device cbr0: address 10.0.2.1/x: not an IPv4 address and prefix "
                 "length: left out"]
    assert t["nodes"]["worker-a"]["bridges"]["cbr0"]["addresses"] == ["10.0.1.1/24"]
    assert list(t["pods"]) == ["frontend"]


def test_a_neighbour_with_a_bad_lladdr_is_left_out(tmp_path: Path) -> None:
    """The Pod's MAC comes from its neighbour entry: without it, the Pod is wired by elimination."""
    neigh = [{"dst": "10.0.1.2", "dev": "cbr0", "lladdr": "0a:58:zz"},
             {"dst": "192.168.5.1", "dev": "eth0", "lladdr": "52:54:00:00:00:01"}]
    t, w = imported(tmp_path, ip_neigh=neigh)
    assert w[0] == ("worker-a: ip-neigh.json: neighbour 10.0.1.2 dev cbr0: lladdr '0a:58:zz' is not a MAC "
                    "address: left out")
    assert "mac" not in t["pods"]["frontend"]


def test_a_field_of_an_unexpected_shape_leaves_out_its_item_only(tmp_path: Path) -> None:
    """Shapes no check foresaw (flags a number, addr_info a string): the item, not the node."""
    routes = with_field(ROUTES, 1, flags=5)
    addrs = [*ADDRS, {"ifname": "eth9", "addr_info": "x"}]
    t, w = imported(tmp_path, ip_route=routes, ip_addr=addrs)
    assert w == ["worker-a: ip-route.json: route 10.9.0.0/16 via 192.168.5.7 dev eth0: a field not as `ip -j "
                 "route` prints it: left out"]
    assert t["nodes"]["worker-a"]["routes"] == [{"to": "default", "via": "192.168.5.1", "dev": "eth0"}]


def test_ipv6_routes_are_one_line_naming_their_devices(tmp_path: Path) -> None:
    v6 = [{"type": "unicast", "dst": "fe80::/64", "dev": d, "table": "main", "protocol": "kernel",
           "metric": 256} for d in ("eth0", "veth-a", "cbr0")]
    v6.append({"type": "unicast", "dst": "default", "gateway": "fe80::1", "dev": "eth0", "table": "main"})
    v6.append({"type": "local", "dst": "::1", "dev": "lo", "table": "local"})
    t, w = imported(tmp_path, ip_route=ROUTES + v6)
    assert w == ["worker-a: ip-route.json: 4 IPv6 routes left out (IPv6 is not emulated): fe80::/64 dev "
                 "eth0, fe80::/64 dev veth-a, fe80::/64 dev cbr0, default via fe80::1 dev eth0"]
    assert len(t["nodes"]["worker-a"]["routes"]) == 2
