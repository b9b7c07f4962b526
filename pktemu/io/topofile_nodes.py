"""`nodes:` and `pods:` sections -> model nodes; a pod also adds its veth pair and bridge port.

Parsing here checks each object on its own (types, formats, unknown keys). Checks that need
the whole topology (veth ends, duplicate addresses, route gateways) are in `topofile_check`,
which finds where each object was written through `Built.places`.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

import pktemu.k8s  # noqa: F401  (registers the Kubernetes app kinds, e.g. cluster-dns)
from pktemu.apps import dnswire, registry
from pktemu.errors import PktemuError, excerpt
from pktemu.infile import not_a_file
from pktemu.io.topofile_fields import (
    Src,
    boolean,
    derived_mac,
    host_address,
    integer,
    interface_name,
    ipv4,
    mac,
    mapping,
    name,
    seq,
    string,
)
from pktemu.io.topofile_fields import path as path_field
from pktemu.io.topofile_links import LINK_TYPES
from pktemu.io.topofile_merge import resolve_at
from pktemu.io.topofile_routes import parse_ip_rules, parse_route
from pktemu.io.topofile_sysctl import parse_sysctls
from pktemu.topo import Address, App, Bridge, BridgePort, Interface, Node, Route, Veth
from pktemu.units import interface, parse_duration

NODE_KEYS = ("sysctls", "interfaces", "bridges", "routes", "ip_rules", "iptables", "nftables", "ipsets",
             "apps", "resolv")
POD_KEYS = ("node", "bridge", "host_veth", "mac", "address", "addresses", "gateway", "apps", "resolv",
            "sysctls", "mtu")

#: Where an object was written: key -> (file, dotted path). Keys: ("node", n), ("dev", n, dev),
#: ("addr", n, dev, i), ("route", n, i), ("port", n, bridge, i), ("veth", i), ("sysctls", n).
Places = dict[tuple[Any, ...], tuple[Src, str]]


@dataclass
class Built:
    """The model under construction plus what the cross-checks need to name places."""
    seed: int
    nodes: dict[str, Node] = field(default_factory=dict)
    veths: list[Veth] = field(default_factory=list)
    places: Places = field(default_factory=dict)
    raw_sysctls: dict[str, Any] = field(default_factory=dict)

    def error(self, key: tuple[Any, ...], msg: str, suffix: str = "") -> PktemuError:
        src, where = self.places[key]
        return src.error(where + suffix, msg)

    def where(self, key: tuple[Any, ...]) -> str:
        return self.places[key][1]


#: The server kinds' sockets: kind -> (protocol, default port); the address is `bind` (0.0.0.0).
SERVER_SOCKETS: dict[str, tuple[str, int | None]] = {
    "http-server": ("tcp", 8080), "tcp-echo": ("tcp", None), "udp-echo": ("udp", None),
    "dns-server": ("udp", 53), "cluster-dns": ("udp", 53)}


def parse_apps(src: Src, where: str, value: object) -> list[App]:
    return [parse_app(src, f"{where}[{i}]", a) for i, a in enumerate(seq(src, where, value))]


def check_app_ports(src: Src, placed: list[tuple[str, App]], first: int = 0) -> None:
    """Servers of one node, each with where it is written: one that would listen on a port an
    earlier one holds (the same address, or either on 0.0.0.0) is an error at its `.port`, as its
    bind() would fail with EADDRINUSE when it starts. Only entries from `first` on are checked
    against the ones before them (those before `first` were checked already)."""
    taken: dict[tuple[str, int], list[tuple[str, int]]] = {}
    for i, (at, app) in enumerate(placed):
        if app.kind not in SERVER_SOCKETS:
            continue
        proto, default = SERVER_SOCKETS[app.kind]
        port, bind = app.params.get("port", default), str(app.params.get("bind", "0.0.0.0"))
        if not isinstance(port, int) or port == 0:
            continue
        for other_bind, j in taken.get((proto, port), []) if i >= first else ():
            if "0.0.0.0" in (bind, other_bind) or bind == other_bind:
                raise src.error(f"{at}.port", f"{proto} port {port} is already taken by {placed[j][0]} "
                                f"({placed[j][1].kind} on {other_bind}:{port}): this {app.kind} on {bind} "
                                "would fail with EADDRINUSE")
        taken.setdefault((proto, port), []).append((bind, i))


def parse_app(src: Src, where: str, value: object) -> App:
    """`{kind: K, ...params}`; the app kind validates (and normalises) its own parameters."""
    m = mapping(src, where, value, required=("kind",), open_keys=True)
    kind = string(src, f"{where}.kind", m["kind"])
    params = {k: v for k, v in m.items() if k != "kind"}
    app_kind = registry.get(kind, src.at(where))
    return App(kind, app_kind.validate(params, src.at(where)))


def parse_addresses(src: Src, where: str, value: object, b: Built, node: str, dev: str,
                    first: int = 0) -> list[Address]:
    """`first`: how many addresses the device already has (a pod's `address:` comes first)."""
    out: list[Address] = []
    for i, a in enumerate(seq(src, where, value)):
        at = f"{where}[{i}]"
        b.places[("addr", node, dev, first + len(out))] = (src, at)
        if isinstance(a, dict):
            m = mapping(src, at, a, allowed=("peer",), required=("address",))
            iface = host_address(src, f"{at}.address", m["address"])
            peer = None
            if m.get("peer") is not None:
                peer = str(ipv4(src, f"{at}.peer", m["peer"]))
                if iface.network.prefixlen != 32:
                    raise src.error(f"{at}.address", f"an address with a peer must be a /32, got {iface}")
            out.append(Address(str(iface), peer))
        else:
            out.append(Address(str(host_address(src, at, a))))
    return out


def parse_resolv(src: Src, where: str, value: object) -> dict[str, Any]:
    m = mapping(src, where, value, allowed=("nameservers", "search", "ndots"))
    out: dict[str, Any] = {}
    if m.get("nameservers") is not None:
        ns = seq(src, f"{where}.nameservers", m["nameservers"])
        out["nameservers"] = [str(ipv4(src, f"{where}.nameservers[{i}]", v)) for i, v in enumerate(ns)]
    if m.get("search") is not None:
        sl = seq(src, f"{where}.search", m["search"])
        out["search"] = [_domain(src, f"{where}.search[{i}]", v) for i, v in enumerate(sl)]
    if m.get("ndots") is not None:
        out["ndots"] = integer(src, f"{where}.ndots", m["ndots"], 0, 15)
    return out


def _domain(src: Src, where: str, value: object) -> str:
    """A search domain: a DNS name the resolver appends to short names."""
    s = string(src, where, value)
    try:
        dnswire.check_user_name(s)
    except dnswire.DnsFormatError as e:
        raise src.error(where, str(e)) from None
    return s


def _mtu(src: Src, where: str, value: object) -> int:
    return 1500 if value is None else integer(src, where, value, 68, 65535)


def _mac(src: Src, where: str, value: object, seed: int, node: str, dev: str) -> str:
    return derived_mac(seed, node, dev) if value is None else mac(src, where, value)


def parse_node(src: Src, where: str, nname: str, value: object, b: Built) -> None:
    m = mapping(src, where, value, allowed=NODE_KEYS)
    node = Node(nname)
    b.places[("node", nname)] = (src, where)
    ifs = mapping(src, f"{where}.interfaces", m.get("interfaces"), open_keys=True)
    for ifn, iv in ifs.items():
        at = f"{where}.interfaces.{ifn}"
        interface_name(src, at, ifn)
        kind = "veth"
        if isinstance(iv, dict) and iv.get("type") is not None:
            kind = string(src, f"{at}.type", iv["type"])
            if kind not in LINK_TYPES:
                raise src.error(f"{at}.type", f"unknown interface type {excerpt(kind)} "
                                              f"(types: {', '.join(LINK_TYPES)})")
        keys, parse_params = LINK_TYPES[kind]
        for other, (okeys, _p) in LINK_TYPES.items():
            stray = [k for k in okeys if isinstance(iv, dict) and k in iv and k not in keys]
            if stray:
                raise src.error(f"{at}.{stray[0]}", f"a key of type: {other} interfaces, and this one is "
                                                    f"a {kind} (add type: {other})")
        im = mapping(src, at, iv, allowed=("mac", "addresses", "mtu", "type", *keys))
        b.places[("dev", nname, ifn)] = (src, at)
        ifc = Interface(ifn, _mac(src, f"{at}.mac", im.get("mac"), b.seed, nname, ifn),
                        parse_addresses(src, f"{at}.addresses", im.get("addresses"), b, nname, ifn),
                        _mtu(src, f"{at}.mtu", im.get("mtu")), kind)
        if parse_params is not None:
            ifc.params = parse_params(src, at, im)
            if im.get("mtu") is None:
                ifc.mtu = 0                 # the underlay's MTU - 50, once it is known (topofile_check)
        node.interfaces[ifn] = ifc
    brs = mapping(src, f"{where}.bridges", m.get("bridges"), open_keys=True)
    for brn, bv in brs.items():
        at = f"{where}.bridges.{brn}"
        interface_name(src, at, brn)
        if brn in node.interfaces:
            raise src.error(at, f"name already used by {where}.interfaces.{brn}")
        bm = mapping(src, at, bv, allowed=("mac", "addresses", "ports", "stp", "ageing_time"))
        b.places[("dev", nname, brn)] = (src, at)
        br = Bridge(brn, _mac(src, f"{at}.mac", bm.get("mac"), b.seed, nname, brn),
                    parse_addresses(src, f"{at}.addresses", bm.get("addresses"), b, nname, brn))
        if bm.get("stp") is not None:
            br.stp = boolean(src, f"{at}.stp", bm["stp"])
        if bm.get("ageing_time") is not None:
            br.ageing_time = parse_duration(bm["ageing_time"], src.at(f"{at}.ageing_time")) / 1e9
        for i, p in enumerate(seq(src, f"{at}.ports", bm.get("ports"))):
            pat = f"{at}.ports[{i}]"
            if isinstance(p, dict):
                pm = mapping(src, pat, p, allowed=("hairpin",), required=("name",))
                port = BridgePort(interface_name(src, f"{pat}.name", pm["name"]))
                if pm.get("hairpin") is not None:
                    port.hairpin = boolean(src, f"{pat}.hairpin", pm["hairpin"])
            else:
                port = BridgePort(interface_name(src, pat, p))
            b.places[("port", nname, brn, len(br.ports))] = (src, pat)
            br.ports.append(port)
        node.bridges[brn] = br
    for i, r in enumerate(seq(src, f"{where}.routes", m.get("routes"))):
        node.routes.append(parse_route(src, f"{where}.routes[{i}]", r))
        b.places[("route", nname, i)] = (src, f"{where}.routes[{i}]")
    node.ip_rules = parse_ip_rules(src, f"{where}.ip_rules", m.get("ip_rules"))
    if m.get("iptables") is not None:
        path = resolve_at(src, f"{where}.iptables", path_field(src, f"{where}.iptables", m["iptables"]))
        if (problem := not_a_file(path)) is not None:
            raise src.error(f"{where}.iptables", problem)
        node.iptables = path
    if m.get("nftables") is not None:
        path = resolve_at(src, f"{where}.nftables", path_field(src, f"{where}.nftables", m["nftables"]))
        if (problem := not_a_file(path)) is not None:
            raise src.error(f"{where}.nftables", problem)
        node.nftables = path
    if m.get("ipsets") is not None:
        path = resolve_at(src, f"{where}.ipsets", path_field(src, f"{where}.ipsets", m["ipsets"]))
        if (problem := not_a_file(path)) is not None:
            raise src.error(f"{where}.ipsets", problem)
        node.ipsets = path
    node.apps = parse_apps(src, f"{where}.apps", m.get("apps"))
    node.resolv = parse_resolv(src, f"{where}.resolv", m.get("resolv"))
    b.raw_sysctls[nname] = m.get("sysctls")
    b.places[("sysctls", nname)] = (src, f"{where}.sysctls")
    b.nodes[nname] = node


def parse_pod(src: Src, where: str, pname: str, value: object, b: Built) -> None:
    """A pod: its own node with eth0, plus the host end of its veth as a port of `bridge`."""
    m = mapping(src, where, value, allowed=POD_KEYS, required=("node", "bridge"))
    if pname in b.nodes:
        raise src.error(where, f"name already used by {b.where(('node', pname))}")
    host = name(src, f"{where}.node", m["node"], "node name")
    if host not in b.nodes or b.nodes[host].kind == "pod":
        raise src.error(f"{where}.node", f"no node {excerpt(host)} in nodes")
    hnode = b.nodes[host]
    brname = string(src, f"{where}.bridge", m["bridge"])
    if brname not in hnode.bridges:
        known = ", ".join(hnode.bridges) or "none"
        raise src.error(f"{where}.bridge", f"node {host} has no bridge {excerpt(brname)} (bridges: {known})")
    hv = mapping(src, f"{where}.host_veth", m.get("host_veth"), allowed=("name", "mac", "hairpin"))
    hat = f"{where}.host_veth"
    hname = interface_name(src, f"{hat}.name", f"veth-{pname}" if hv.get("name") is None else hv["name"])
    if hname in hnode.interfaces or hname in hnode.bridges:
        raise src.error(f"{hat}.name", f"{hname} is already a device of node {host} "
                                       f"({b.where(('dev', host, hname))})")
    mtu = _mtu(src, f"{where}.mtu", m.get("mtu"))
    b.places[("dev", host, hname)] = (src, hat)
    hnode.interfaces[hname] = Interface(hname, _mac(src, f"{hat}.mac", hv.get("mac"), b.seed, host, hname),
                                        mtu=mtu)
    port = BridgePort(hname, boolean(src, f"{hat}.hairpin", hv["hairpin"]) if hv.get("hairpin") is not None
                      else False)
    bridge = hnode.bridges[brname]
    b.places[("port", host, brname, len(bridge.ports))] = (src, hat)
    bridge.ports.append(port)

    pod = Node(pname, kind="pod")
    b.places[("node", pname)] = (src, where)
    b.places[("dev", pname, "eth0")] = (src, where)
    addrs: list[Address] = []
    if m.get("address") is not None:
        b.places[("addr", pname, "eth0", 0)] = (src, f"{where}.address")
        addrs.append(Address(str(host_address(src, f"{where}.address", m["address"]))))
    addrs += parse_addresses(src, f"{where}.addresses", m.get("addresses"), b, pname, "eth0", len(addrs))
    if not addrs:
        raise src.error(f"{where}.address", "required (or addresses: a list, the first is the primary)")
    addr = interface(addrs[0].cidr)
    pod.interfaces["eth0"] = Interface("eth0", _mac(src, f"{where}.mac", m.get("mac"), b.seed, pname, "eth0"),
                                       addrs, mtu)
    if m.get("gateway") is not None:
        gw = str(ipv4(src, f"{where}.gateway", m["gateway"]))
    else:
        gw = _bridge_gateway(src, where, bridge, addr, host)
    pod.routes.append(Route("default", via=gw, dev="eth0"))
    b.places[("route", pname, 0)] = (src, f"{where}.gateway")
    pod.apps = parse_apps(src, f"{where}.apps", m.get("apps"))
    pod.resolv = parse_resolv(src, f"{where}.resolv", m.get("resolv"))
    b.raw_sysctls[pname] = m.get("sysctls")
    b.places[("sysctls", pname)] = (src, f"{where}.sysctls")
    b.nodes[pname] = pod
    b.places[("veth", len(b.veths))] = (src, hat)
    b.veths.append(Veth(f"{pname}/eth0", f"{host}/{hname}"))


def _bridge_gateway(src: Src, where: str, bridge: Bridge, addr: ipaddress.IPv4Interface, host: str) -> str:
    """No `gateway:` given: the bridge's address on the pod's network, as kubenet sets it up."""
    for a in bridge.addresses:
        ba = interface(a.cidr)
        if a.peer is None and addr.ip in ba.network:
            return str(ba.ip)
    raise src.error(f"{where}.gateway", f"required: bridge {bridge.name} of node {host} has no address "
                                        f"on {addr.network}")


def finish_sysctls(b: Built) -> None:
    """Sysctls last: `net.ipv4.conf.<if>.*` may name a pod's host veth, added after the node."""
    for nname, raw in b.raw_sysctls.items():
        node = b.nodes[nname]
        src, where = b.places[("sysctls", nname)]
        node.sysctls = parse_sysctls(src, where, raw, set(node.interfaces) | set(node.bridges))
