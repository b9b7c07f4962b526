"""Whole-topology checks, run once every node and pod exists: what `ip` would refuse, or what
would make a run silently wrong (a dangling interface, two devices with one MAC).
"""
from __future__ import annotations

import functools
import ipaddress

from pktemu.errors import excerpt, shorten
from pktemu.io.topofile_nodes import Built, check_app_ports
from pktemu.topo import Address, Node
from pktemu.units import interface


_iface = interface       # every check reads every address, which the parser validated already


@functools.lru_cache(maxsize=4096)
def _addr(text: str) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(text)


def check_topology(b: Built) -> None:
    _check_ports(b)
    _check_tunnels(b)
    _check_veths(b)
    _check_addresses(b)
    _check_macs(b)
    _check_binds(b)
    for n, node in b.nodes.items():
        src, where = b.places[("node", n)]
        check_app_ports(src, [(f"{where}.apps[{i}]", a) for i, a in enumerate(node.apps)])
    for node in b.nodes.values():
        _check_routes(b, node)


def _devices(node: Node) -> list[tuple[str, str, list[Address]]]:
    """(name, mac, addresses) of every interface, then every bridge."""
    out = [(i.name, i.mac, i.addresses) for i in node.interfaces.values()]
    return out + [(br.name, br.mac, br.addresses) for br in node.bridges.values()]


def _check_ports(b: Built) -> None:
    for n, node in b.nodes.items():
        seen: dict[str, tuple[str, int]] = {}
        for brn, br in node.bridges.items():
            for i, port in enumerate(br.ports):
                key = ("port", n, brn, i)
                if port.name in node.bridges:
                    raise b.error(key, f"{port.name} is a bridge; a bridge port must be an interface")
                if port.name not in node.interfaces:
                    known = ", ".join(node.interfaces) or "none"
                    raise b.error(key, f"no interface {port.name!r} on node {n} (interfaces: {known})")
                if port.name in seen:
                    first = b.where(("port", n, *seen[port.name]))
                    raise b.error(key, f"{port.name} is already a port of {first}")
                seen[port.name] = (brn, i)


def _check_veths(b: Built) -> None:
    used: dict[str, int] = {}
    for i, veth in enumerate(b.veths):
        for end in (veth.a, veth.b):
            n, _, ifn = end.partition("/")
            if n not in b.nodes:
                raise b.error(("veth", i), f"{shorten(end)}: no node or pod named {excerpt(n)}")
            node = b.nodes[n]
            if ifn in node.bridges:
                raise b.error(("veth", i), f"{end}: {ifn} is a bridge, not an interface")
            if ifn not in node.interfaces:
                known = ", ".join(node.interfaces) or "none"
                raise b.error(("veth", i), f"{end}: no interface {ifn!r} on {n} (interfaces: {known})")
            if node.interfaces[ifn].type != "veth":
                raise b.error(("veth", i), f"{end}: {ifn} is a {node.interfaces[ifn].type} device, "
                                           "not a veth end")
            if end in used:
                raise b.error(("veth", i), f"{end} is already an end of {b.where(('veth', used[end]))}")
            used[end] = i
    for n, node in b.nodes.items():
        for ifn, ifc in node.interfaces.items():
            if ifc.type == "veth" and f"{n}/{ifn}" not in used:
                raise b.error(("dev", n, ifn), "not joined to anything: every interface is one end of a veth "
                                               f"(add [{n}/{ifn}, <node>/<ifname>] to veths)")


def _check_tunnels(b: Built) -> None:
    """A vxlan's `dev` is another device of its node; its MTU is at most that device's - 50 (the
    VXLAN headers), and that by default."""
    for n, node in b.nodes.items():
        for ifn, ifc in node.interfaces.items():
            if ifc.type == "ipip" and ifc.mtu == 0:
                ifc.mtu = 1480                  # the fallback tunl0: ETH_DATA_LEN - 20
            if ifc.type != "vxlan":
                continue
            lower = ifc.params.get("dev")
            under = node.interfaces.get(lower) if lower is not None else None
            if lower is not None and (lower == ifn or (under is None and lower not in node.bridges)):
                known = ", ".join(d for d in [*node.interfaces, *node.bridges] if d != ifn) or "none"
                raise b.error(("dev", n, ifn), f"no underlay device {excerpt(lower)} on node {n} "
                                               f"(devices: {known})", ".dev")
            top = max(68, (under.mtu if under is not None else 1500) - 50)    # vxlan_config_apply
            if ifc.mtu == 0:
                ifc.mtu = top
            elif ifc.mtu > top and lower is not None:
                raise b.error(("dev", n, ifn), f"MTU {ifc.mtu} is more than {lower}'s MTU - 50 ({top}): "
                                               "the kernel refuses it", ".mtu")


def _check_addresses(b: Built) -> None:
    """An address may repeat only as /32 peer addresses of one node (a router's numbered legs)."""
    seen: dict[ipaddress.IPv4Address, tuple[str, str, int, bool]] = {}
    for n, node in b.nodes.items():
        local = {_iface(a.cidr).ip for _, _, addrs in _devices(node) for a in addrs}
        peers: dict[str, tuple[str, int]] = {}
        for dev, _, addrs in _devices(node):
            for i, a in enumerate(addrs):
                ip = _iface(a.cidr).ip
                key = ("addr", n, dev, i)
                first = seen.get(ip)
                if first is not None:
                    fn, fdev, fi, fpeer = first
                    if not (fn == n and fpeer and a.peer is not None):
                        raise b.error(key, f"address {ip} is also on {b.where(('addr', fn, fdev, fi))}")
                else:
                    seen[ip] = (n, dev, i, a.peer is not None)
                if a.peer is None:
                    continue
                if _addr(a.peer) in local:
                    raise b.error(key, f"peer {a.peer} is an address of node {n} itself")
                if a.peer in peers:
                    raise b.error(key, f"peer {a.peer} is also the peer of "
                                       f"{b.where(('addr', n, *peers[a.peer]))}")
                peers[a.peer] = (dev, i)


def _check_binds(b: Built) -> None:
    """A server app's `bind` must be an address of its node: bind() would fail with EADDRNOTAVAIL."""
    for n, node in b.nodes.items():
        local = {_iface(a.cidr).ip for _, _, addrs in _devices(node) for a in addrs}
        for i, app in enumerate(node.apps):
            bind = app.params.get("bind")
            try:
                ip = ipaddress.IPv4Address(bind if isinstance(bind, str) else "")
            except ValueError:
                continue
            if not (ip.is_unspecified or ip.is_loopback or ip in local):
                src, where = b.places[("node", n)]
                raise src.error(f"{where}.apps[{i}].bind", f"{ip} is not an address of {n} "
                                                          "(bind() would fail with EADDRNOTAVAIL)")


def _check_macs(b: Built) -> None:
    """MACs are unique, except on unaddressed devices outside any bridge: Calico gives every
    host-side cali veth ee:ee:ee:ee:ee:ee (each is a point-to-point link to one pod); and a bridge
    may have one of its own ports' MACs, as a Linux bridge without a MAC of its own takes the
    lowest of its ports' (a real node's dump, `pktemu import`, shows it so)."""
    seen: dict[str, tuple[str, str]] = {}
    shareable: set[tuple[str, str]] = set()
    for n, node in b.nodes.items():
        ported = {p.name for br in node.bridges.values() for p in br.ports}
        shareable |= {(n, dev) for dev, _, addrs in _devices(node)
                      if not addrs and dev not in ported and dev not in node.bridges}
        for dev, mac, _ in _devices(node):
            if mac in seen and (n, dev) in shareable and seen[mac] in shareable:
                continue
            if mac in seen and dev in node.bridges and seen[mac][0] == n \
                    and seen[mac][1] in {p.name for p in node.bridges[dev].ports}:
                continue
            if mac in seen:
                raise b.error(("dev", n, dev), f"MAC {mac} is also used by {b.where(('dev', *seen[mac]))}",
                              ".mac")
            seen[mac] = (n, dev)


def _check_routes(b: Built, node: Node) -> None:
    n = node.name
    devs = set(node.interfaces) | set(node.bridges)
    connected: list[tuple[str, ipaddress.IPv4Network]] = []
    peers: list[tuple[str, ipaddress.IPv4Address]] = []
    local: set[ipaddress.IPv4Address] = set()
    for dev, _, addrs in _devices(node):
        for a in addrs:
            iface = _iface(a.cidr)
            local.add(iface.ip)
            if a.peer is not None:
                peers.append((dev, _addr(a.peer)))
            else:
                connected.append((dev, iface.network))
    seen: dict[tuple[str, int, int], int] = {}
    for i, r in enumerate(node.routes):
        key = ("route", n, i)
        if r.dev is not None and r.dev not in devs:
            raise b.error(key, f"route to {r.dst}: no device {excerpt(r.dev)} on node {n} "
                               f"(devices: {', '.join(sorted(devs)) or 'none'})", ".dev")
        if r.via is not None:
            via = _addr(r.via)
            if via in local:
                raise b.error(key, f"route to {r.dst}: gateway {via} is an address of node {n} itself")
            on = (r.onlink or any(via in net for d, net in connected if r.dev in (None, d))
                  or any(via == p for d, p in peers if r.dev in (None, d)))
            if not on:
                dev = f" through {r.dev}" if r.dev else ""
                raise b.error(key, f"route to {r.dst}: gateway {via} is not on a connected network "
                                   f"of node {n}{dev}")
        if r.src is not None and _addr(r.src) not in local:
            raise b.error(key, f"route to {r.dst}: src {r.src} is not an address of node {n}", ".src")
        if (r.dst, r.metric, r.table) in seen:
            raise b.error(key, f"route to {r.dst} with metric {r.metric} is already defined at "
                               f"{b.where(('route', n, seen[(r.dst, r.metric, r.table)]))}")
        seen[(r.dst, r.metric, r.table)] = i
