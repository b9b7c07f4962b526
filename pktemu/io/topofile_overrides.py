"""A scenario's `overrides:`: per-scenario changes to a node, checked when the file is loaded.

`{port: node/ifname, hairpin: bool}` changes a bridge port. `{node: X, ...}` changes node or pod X:
`sysctls` (merged into its sysctls), `routes` (replace its routes), `iptables` (another rules file,
relative to the file that wrote it), and `interface: IF` with `addresses` (replace that interface's
or bridge's addresses). The changed node is checked as the topology is (routes' devices, gateway
reachability, src addresses; addresses not on another device), so a bad override stops the file
before anything runs. pktemu.network.apply_overrides applies them.
"""
from __future__ import annotations

import copy
from typing import Any

from pktemu.errors import excerpt
from pktemu.infile import not_a_file
from pktemu.io.topofile_check import _check_addresses, _check_routes
from pktemu.io.topofile_fields import Src, boolean, interface_name, mapping, seq, string
from pktemu.io.topofile_fields import path as path_field
from pktemu.io.topofile_merge import resolve_at
from pktemu.io.topofile_nodes import Built, parse_addresses
from pktemu.io.topofile_routes import parse_route
from pktemu.io.topofile_sysctl import parse_sysctls
from pktemu.topo import Node, Override

NODE_CHANGES = ("sysctls", "routes", "iptables", "interface", "addresses")


class _Places(dict[tuple[Any, ...], tuple[Src, str]]):
    """Where the unchanged parts were written is not kept after loading: they are named by
    node/device, and blamed on the override (which made them wrong)."""

    def __init__(self, src: Src, where: str) -> None:
        super().__init__()
        self.src, self.where = src, where

    def __missing__(self, key: tuple[Any, ...]) -> tuple[Src, str]:
        if key[0] == "addr":
            return self.src, f"{key[1]}/{key[2]}"
        return self.src, self.where


def parse_override(src: Src, where: str, value: object, nodes: dict[str, Node]) -> Override:
    m = mapping(src, where, value, allowed=("port", "hairpin", "node", *NODE_CHANGES))
    if m.get("port") is not None:
        mapping(src, where, m, allowed=("port", "hairpin"), required=("hairpin",))
        target = string(src, f"{where}.port", m["port"])
        n, _, ifn = target.partition("/")
        node = nodes.get(n)
        if node is None or not any(p.name == ifn for br in node.bridges.values() for p in br.ports):
            raise src.error(f"{where}.port", f"{excerpt(target)} is not a bridge port (write node/ifname)")
        return Override(target, {"hairpin": boolean(src, f"{where}.hairpin", m["hairpin"])})
    if m.get("node") is None:
        raise src.error(where, "an override needs port: (with hairpin:) or node: (with sysctls:, routes:, "
                               "iptables: or interface: and addresses:)")
    mapping(src, where, m, allowed=("node", *NODE_CHANGES))
    n = string(src, f"{where}.node", m["node"])
    if n not in nodes:
        raise src.error(f"{where}.node", f"no node or pod named {excerpt(n)}")
    if not any(m.get(k) is not None for k in NODE_CHANGES):
        raise src.error(where, f"nothing to change: give one or more of {', '.join(NODE_CHANGES)}")
    node = nodes[n]
    settings: dict[str, Any] = {}
    if m.get("sysctls") is not None:
        settings["sysctls"] = parse_sysctls(src, f"{where}.sysctls", m["sysctls"],
                                            set(node.interfaces) | set(node.bridges))
    if m.get("iptables") is not None:
        if node.kind == "pod":
            raise src.error(f"{where}.iptables", f"{n} is a pod; rules files are for nodes")
        rules = resolve_at(src, f"{where}.iptables", path_field(src, f"{where}.iptables", m["iptables"]))
        if (problem := not_a_file(rules)) is not None:
            raise src.error(f"{where}.iptables", problem)
        settings["iptables"] = rules
    changed = copy.deepcopy(node)
    b = Built(0, places=_Places(src, where))
    if (m.get("interface") is None) != (m.get("addresses") is None):
        missing = "addresses" if m.get("addresses") is None else "interface"
        raise src.error(f"{where}.{missing}", "required: interface: and addresses: go together")
    if m.get("interface") is not None:
        dev = interface_name(src, f"{where}.interface", m["interface"])
        device = changed.interfaces.get(dev) or changed.bridges.get(dev)
        if device is None:
            known = ", ".join([*changed.interfaces, *changed.bridges]) or "none"
            raise src.error(f"{where}.interface", f"no interface or bridge {dev} on {n} (devices: {known})")
        device.addresses = parse_addresses(src, f"{where}.addresses", m["addresses"], b, n, dev)
        settings["addresses"] = {dev: device.addresses}
    if m.get("routes") is not None:
        changed.routes = []
        for i, r in enumerate(seq(src, f"{where}.routes", m["routes"])):
            b.places[("route", n, i)] = (src, f"{where}.routes[{i}]")
            changed.routes.append(parse_route(src, f"{where}.routes[{i}]", r))
        settings["routes"] = changed.routes
    if "addresses" in settings:
        b.nodes = {k: v for k, v in nodes.items() if k != n}
        b.nodes[n] = changed                 # last, so a clash is reported on the override's address
        _check_addresses(b)
    if "addresses" in settings or "routes" in settings:
        _check_routes(b, changed)
    return Override(n, settings)
