"""Which CNI made a node's devices: a small registry instead of a chain of if/elif.

Each CNI registers what it claims (a predicate over one `ip -j -d link` entry), how it reads a
claimed device into the node, and what it reads once all devices are known (FDB and neighbour
entries). `recognise()` gives a device to the first CNI that claims it; a device no CNI claims
is the uplink or is reported by node.py. A new CNI is one `register(Cni(...))` in its own module
or here, and a line in docs/import.md.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pktemu.importer import Notes
from pktemu.importer.fields import link_mac, link_mtu, mac_or_none
from pktemu.importer.node import Bridge, ImportedNode, Port, Vxlan

Link = dict[str, Any]


@dataclass(frozen=True)
class Ctx:
    """What a CNI needs besides the link: the node's addresses and `bridge -d link` entries."""

    addrs: dict[str, list[Any]]
    brlinks: dict[Any, dict[str, Any]]
    fdb: list[dict[str, Any]]             # bridge -j fdb
    neigh: list[dict[str, Any]]           # ip -j neigh
    notes: Notes


@dataclass(frozen=True)
class Cni:
    name: str
    claims: Callable[[Link], bool]
    read: Callable[[ImportedNode, Link, Ctx], None]
    finish: Callable[[ImportedNode, Ctx], None] | None = None     # after every device is read


REGISTRY: list[Cni] = []


def _where(node: ImportedNode, name: str) -> str:
    """Where a field of a device's `ip -j link` entry is, for a warning."""
    return f"{node.where}: ip-link.json: device {name}"


def register(cni: Cni) -> Cni:
    REGISTRY.append(cni)
    return cni


def _kind(link: Link) -> Any:
    info = link.get("linkinfo")
    return info.get("info_kind") if isinstance(info, dict) else None


def recognise(node: ImportedNode, link: Link, ctx: Ctx) -> bool:
    """True when a registered CNI claimed (and read) the device."""
    for cni in REGISTRY:
        if cni.claims(link):
            cni.read(node, link, ctx)
            node.cnis.add(cni.name)
            return True
    return False


def finish(node: ImportedNode, ctx: Ctx) -> None:
    for cni in REGISTRY:
        if cni.name in node.cnis and cni.finish is not None:
            cni.finish(node, ctx)


# -- bridge CNIs: kubenet's cbr0, the bridge plugin's cni0 (flannel's too) -----------------------

def _bridge(node: ImportedNode, link: Link, ctx: Ctx) -> None:
    name = str(link.get("ifname"))
    info = link.get("linkinfo") or {}
    if "UP" not in (link.get("flags") or []):
        ctx.notes.warn(f"{node.where}: device {name}", "bridge is down: left out")
        return
    data = info.get("info_data") or {}
    ageing = data.get("ageing_time")
    mac = link_mac(link, _where(node, name), ctx.notes)
    old = node.bridges.get(name)
    addrs = [ipaddress.IPv4Interface(a) for a in ctx.addrs.get(name, []) if isinstance(a, str)]
    br = Bridge(name, mac, addrs, bool(data.get("stp_state")),
                int(ageing) // 100 if isinstance(ageing, int) else None)
    if old is not None:                      # a port listed before its bridge
        br.ports = old.ports
    node.bridges[name] = br


def _port(node: ImportedNode, link: Link, ctx: Ctx) -> None:
    name, master = str(link.get("ifname")), str(link["master"])
    bl = ctx.brlinks.get(name) or {}
    slave = (link.get("linkinfo") or {}).get("info_slave_data") or {}
    hairpin = bool(bl.get("hairpin", slave.get("hairpin", False)))
    where = _where(node, name)
    mac = link_mac(link, where, ctx.notes)
    node.bridges.setdefault(master, Bridge(master, None, [], False, None))
    node.bridges[master].ports[name] = Port(name, mac, hairpin, link_mtu(link, where, ctx.notes, 1500))


def _bridge_fdb(node: ImportedNode, ctx: Ctx) -> None:
    for f in ctx.fdb:
        mac = mac_or_none(f.get("mac"))
        if f.get("master") in node.bridges and f.get("state") != "permanent" and mac:
            node.fdb[mac] = str(f.get("ifname"))


def _read_bridge_or_port(node: ImportedNode, link: Link, ctx: Ctx) -> None:
    (_bridge if _kind(link) == "bridge" else _port)(node, link, ctx)


def _bridge_claims(link: Link) -> bool:
    return _kind(link) == "bridge" or (_kind(link) == "veth" and bool(link.get("master")))


register(Cni("bridge", _bridge_claims, _read_bridge_or_port, _bridge_fdb))


# -- flannel VXLAN: flannel.1 (or any vxlan device), its FDB and permanent neighbours ------------

def _vxlan(node: ImportedNode, link: Link, ctx: Ctx) -> None:
    name = str(link.get("ifname"))
    data = (link.get("linkinfo") or {}).get("info_data") or {}
    where = f"{node.where}: device {name}"
    vni = data.get("id")
    if not isinstance(vni, int) or not 0 <= vni < 2**24:
        ctx.notes.warn(where, "VXLAN device without a VNI (linkinfo.info_data.id): left out")
        return
    try:
        local = str(ipaddress.IPv4Address(data["local"])) if data.get("local") else None
    except ValueError:
        ctx.notes.warn(where, f"local {str(data.get('local'))[:40]} is not IPv4: left out")
        return
    if data.get("group") or data.get("remote"):
        ctx.notes.warn(where, "a group or remote address is not emulated: unknown MACs are dropped")
    port, ttl = data.get("port"), data.get("ttl")
    field_where = _where(node, name)
    mac = link_mac(link, field_where, ctx.notes)
    addresses = [a for a in ctx.addrs.get(name, []) if isinstance(a, str)]
    node.vxlans[name] = Vxlan(name, mac, link_mtu(link, field_where, ctx.notes, 1450), addresses, vni, local,
                              str(data["link"]) if data.get("link") else None,
                              int(port) if isinstance(port, int) and 0 < port < 65536 else None,
                              bool(data.get("learning", True)),
                              bool(data.get("udp_csum", True)),
                              ttl if isinstance(ttl, int) and 0 < ttl < 256 else None,
                              up="UP" in (link.get("flags") or []))
    if not node.vxlans[name].up:
        ctx.notes.warn(where, "VXLAN device is down: imported up")


def _vxlan_entries(node: ImportedNode, ctx: Ctx) -> None:
    """flanneld's `bridge fdb append MAC dev flannel.1 dst NODE` and its permanent neighbours."""
    for f in ctx.fdb:
        v = node.vxlans.get(str(f.get("ifname")))
        if v is None or not f.get("mac") or not f.get("dst"):
            continue
        where = f"{node.where}: bridge-fdb.json: {v.name} fdb {str(f['mac'])[:40]}"
        try:
            dst = str(ipaddress.IPv4Address(f["dst"]))
        except ValueError:
            ctx.notes.warn(where, "dst is not IPv4: left out")
            continue
        mac = mac_or_none(f["mac"])
        if mac is None:
            ctx.notes.warn(where, "not a MAC address: left out")
            continue
        entry = {"mac": mac, "dst": dst}
        if entry not in v.fdb:
            v.fdb.append(entry)
    for n in ctx.neigh:
        v = node.vxlans.get(str(n.get("dev")))
        if v is None or not n.get("lladdr") or not isinstance(n.get("dst"), str) or "." not in n["dst"]:
            continue
        if "PERMANENT" not in (n.get("state") or []):
            continue                          # learned entries: the emulated node resolves its own
        lladdr = mac_or_none(n["lladdr"])
        if lladdr is None:                    # node.py warned already
            continue
        try:
            ipaddress.IPv4Address(n["dst"])
        except ValueError:
            ctx.notes.warn(f"{node.where}: ip-neigh.json: neighbour {n['dst'][:40]} dev {v.name}",
                           "not an IPv4 address: left out")
            continue
        v.neighbours.append({"ip": n["dst"], "lladdr": lladdr})
    for v in node.vxlans.values():
        if not v.fdb:
            ctx.notes.warn(f"{node.where}: device {v.name}", "no FDB entries with a dst: nothing can leave "
                                                             "through it")


register(Cni("flannel", lambda link: _kind(link) == "vxlan", _vxlan, _vxlan_entries))


# -- Calico: routed cali* veths (no bridge, proxy ARP for 169.254.1.1) and the IPIP tunl0 --------

def _calico_claims(link: Link) -> bool:
    name = str(link.get("ifname"))
    return (_kind(link) == "veth" and name.startswith("cali") and not link.get("master")) or \
        (_kind(link) == "ipip" and name == "tunl0")


def _calico(node: ImportedNode, link: Link, ctx: Ctx) -> None:
    name = str(link.get("ifname"))
    if _kind(link) == "veth":
        where = _where(node, name)
        node.routed[name] = Port(name, link_mac(link, where, ctx.notes), False,
                                 link_mtu(link, where, ctx.notes, 1500))
        return
    mtu = link_mtu(link, _where(node, name), ctx.notes, 1480)
    data = (link.get("linkinfo") or {}).get("info_data") or {}
    if data.get("remote") not in (None, "any") or data.get("local") not in (None, "any"):
        ctx.notes.warn(f"{node.where}: device {name}", "tunl0 with a local or remote address: only the "
                                                       "fallback device (remote any, local any) is emulated")
    addrs = [a for a in ctx.addrs.get(name, []) if isinstance(a, str)]
    entry: dict[str, Any] = {"type": "ipip", "addresses": addrs}
    if mtu != 1480:
        entry["mtu"] = mtu
    ttl = data.get("ttl")
    if data.get("pmtudisc"):
        entry["pmtudisc"] = True
        if isinstance(ttl, int) and 0 < ttl < 256:
            entry["ttl"] = ttl
    node.tunl = entry


register(Cni("calico", _calico_claims, _calico))
