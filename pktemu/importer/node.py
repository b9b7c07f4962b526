"""One node dump -> a topology node: its bridges and their veth ports, its VXLAN devices, the
uplink, IPv4 addresses, routes of every table and `ip rule`s, sysctls, iptables-save rules and
kube-proxy's nftables tables, with a note for whatever is left out.

Only what pktemu emulates is kept: the devices a registered CNI claims (importer/cni.py: Linux
bridges and the veth ports pods hang off, flannel's VXLAN device, Calico's routed `cali*` veths
and IPIP `tunl0`), and the uplink (the device of the default route), which the underlay joins
to the router. Other tunnels and device kinds are reported.
"""
from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pktemu.errors import PktemuError, excerpt
from pktemu.importer import Notes
from pktemu.importer.fields import SHAPE_ERRORS, link_mac, link_mtu, mac_or_none
from pktemu.importer.sources import NodeDump
from pktemu.io.topofile_sysctl import CONF_SYSCTLS, GLOBAL_SYSCTLS, NEIGH_SYSCTLS, not_modelled

TUNNELS = {"ipip": "IPIP (other than the fallback tunl0)", "gre": "GRE", "geneve": "Geneve",
           "wireguard": "WireGuard", "sit": "SIT"}
_IFNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,14}\Z")


@dataclass
class Port:
    name: str
    mac: str | None
    hairpin: bool
    mtu: int


@dataclass
class Bridge:
    name: str
    mac: str | None
    addresses: list[ipaddress.IPv4Interface]
    stp: bool
    ageing_s: int | None
    ports: dict[str, Port] = field(default_factory=dict)


@dataclass
class Vxlan:
    """A VXLAN device as `ip -d link` shows it, with flanneld's FDB and neighbour entries."""

    name: str
    mac: str | None
    mtu: int
    addresses: list[str]
    vni: int
    local: str | None
    dev: str | None
    port: int | None
    learning: bool
    udpcsum: bool
    ttl: int | None
    fdb: list[dict[str, str]] = field(default_factory=list)
    neighbours: list[dict[str, str]] = field(default_factory=list)
    up: bool = True


@dataclass
class ImportedNode:
    dump: NodeDump
    name: str = ""
    bridges: dict[str, Bridge] = field(default_factory=dict)
    vxlans: dict[str, Vxlan] = field(default_factory=dict)
    routed: dict[str, Port] = field(default_factory=dict)       # Calico's cali* veths (no bridge)
    tunl: dict[str, Any] | None = None                           # Calico's tunl0, as a topology entry
    cnis: set[str] = field(default_factory=set)                  # registered CNIs that claimed devices
    uplink: str | None = None
    uplink_mac: str | None = None
    uplink_mtu: int = 1500
    uplink_addresses: list[Any] = field(default_factory=list)     # topology address entries
    gateway: str | None = None                                   # the default route's via
    gateway_mac: str | None = None
    routes: list[dict[str, Any]] = field(default_factory=list)
    ip_rules: list[str] = field(default_factory=list)            # `ip rule add` words, defaults left out
    all_addresses: set[str] = field(default_factory=set)
    neigh: dict[str, tuple[str, str]] = field(default_factory=dict)   # ip -> (lladdr, dev)
    fdb: dict[str, str] = field(default_factory=dict)                 # learned mac -> port
    raw_sysctls: dict[str, str] = field(default_factory=dict)
    iptables: str | None = None
    nftables: str | None = None                                  # the tables iptables-nft did not write

    @property
    def address(self) -> str | None:
        """The node's own address: the uplink's first."""
        for a in self.uplink_addresses:
            s = a["address"] if isinstance(a, dict) else a
            return str(s).split("/")[0]
        return None

    @property
    def where(self) -> str:
        return self.name or self.dump.origin


def read_node(dump: NodeDump, notes: Notes,
              namer: Callable[[NodeDump, set[str]], str]) -> ImportedNode | None:
    """The node, or None (with a note) when its devices cannot be read at all; `namer` names it
    from its dump and addresses."""
    node = ImportedNode(dump)
    bad: list[tuple[str, str]] = []
    addrs = _addresses(dump.json("ip-addr.json", notes) or [], bad)
    for a in addrs.values():
        node.all_addresses |= {(x["address"] if isinstance(x, dict) else x).split("/")[0] for x in a}
    node.name = namer(dump, node.all_addresses)
    for dev, shown in bad:
        notes.warn(f"{node.name}: ip-addr.json: device {dev}",
                   f"address {shown}: not an IPv4 address and prefix length: left out")
    links = dump.json("ip-link.json", notes)
    if links is None:
        notes.warn(node.name, "no devices (ip-link.json): node left out")
        return None
    routes = dump.json("ip-route.json", notes) or []
    default = next((r for r in routes if r.get("dst") == "default" and r.get("table", "main") == "main"
                    and r.get("type", "unicast") == "unicast" and r.get("gateway")), None)
    uplink = default.get("dev") if default else None
    from pktemu.importer.cni import Ctx, finish

    brlinks = {b.get("ifname"): b for b in dump.json("bridge-link.json", notes) or []}
    neigh = dump.json("ip-neigh.json", notes) or []
    ctx = Ctx(addrs, brlinks, dump.json("bridge-fdb.json", notes) or [], neigh, notes)
    for link in links:
        try:
            _device(node, link, uplink, ctx)
        except SHAPE_ERRORS:
            notes.warn(f"{node.where}: ip-link.json: device {str(link.get('ifname'))[:40]}",
                       "a field not as `ip -j link` prints it: left out")
    if node.uplink is None and uplink is not None:
        notes.warn(node.where, f"the default route's device {uplink} is not usable: node not joined "
                               "to the others")
    if default and node.uplink:
        node.gateway = str(default["gateway"])
    for n in neigh:
        if n.get("lladdr") and isinstance(n.get("dst"), str) and "." in n["dst"]:
            lladdr = mac_or_none(n["lladdr"])
            if lladdr is None:
                dev = str(n.get("dev"))[:40]
                notes.warn(f"{node.where}: ip-neigh.json: neighbour {n['dst'][:40]} dev {dev}",
                           f"lladdr {excerpt(n['lladdr'], 40)} is not a MAC address: left out")
                continue
            node.neigh[n["dst"]] = (lladdr, str(n.get("dev")))
    if node.gateway and node.gateway in node.neigh:
        node.gateway_mac = node.neigh[node.gateway][0]
    finish(node, ctx)
    _vxlan_lower(node, notes)
    from pktemu.importer.routes import read_routes, read_rules

    read_routes(node, routes, notes)
    read_rules(node, dump.json("ip-rule.json", notes) or [], notes)
    _sysctls(node, notes)
    _iptables(node, notes)
    from pktemu.importer.nft import read_nft

    read_nft(node, notes)
    return node


def _addresses(data: list[dict[str, Any]], bad: list[tuple[str, str]]) -> dict[str, list[Any]]:
    """ifname -> its IPv4 addresses as topology entries (`A/len` or `{address, peer}`); one that
    cannot be read is left out, and added to `bad` as (ifname, the address as given)."""
    out: dict[str, list[Any]] = {}
    for link in data:
        infos = link.get("addr_info")
        for a in infos if isinstance(infos, list) else []:
            if not isinstance(a, dict) or a.get("family") != "inet" or not a.get("local"):
                continue
            plen, peer = a.get("prefixlen", 32), a.get("address")
            shown = f"{str(a['local'])[:40]}/{str(plen)[:20]}" + (f" peer {str(peer)[:40]}" if peer else "")
            try:
                if isinstance(plen, bool) or not isinstance(plen, int):
                    raise ValueError
                entry: Any = str(ipaddress.IPv4Interface(f"{a['local']}/{plen}"))
                if peer and peer != a["local"]:
                    entry = {"address": entry, "peer": str(ipaddress.IPv4Address(str(peer).split("/")[0]))}
            except ValueError:
                bad.append((str(link.get("ifname"))[:40], shown))
                continue
            out.setdefault(str(link.get("ifname")), []).append(entry)
    return out


def _device(node: ImportedNode, link: dict[str, Any], uplink: str | None, ctx: Any) -> None:
    """A registered CNI's device, the uplink, or a note saying why it is left out."""
    from pktemu.importer.cni import recognise

    name = str(link.get("ifname"))
    info = link.get("linkinfo") or {}
    kind = info.get("info_kind")
    where = f"{node.where}: device {name}"
    notes: Notes = ctx.notes
    if link.get("link_type") == "loopback" or name == "lo":
        return
    if not _IFNAME.match(name):
        notes.warn(where, "not a name pktemu accepts: left out")
        return
    if recognise(node, link, ctx):
        return
    if kind in TUNNELS:
        notes.warn(where, f"{TUNNELS[kind]} tunnel: not emulated yet, left out")
        return
    if name == uplink and kind in (None, "veth", "bond", "vlan", "macvlan") and not link.get("master"):
        field_where = f"{node.where}: ip-link.json: device {name}"
        node.uplink = name
        node.uplink_mac = link_mac(link, field_where, notes)
        node.uplink_mtu = link_mtu(link, field_where, notes, 1500)
        node.uplink_addresses = ctx.addrs.get(name, [])
        return
    if kind == "veth":
        notes.warn(where, "veth outside any bridge: not emulated yet, left out")
        return
    if kind is None:
        notes.warn(where, "no default route through it: not joined to anything, left out")
    else:
        notes.warn(where, f"device kind {str(kind)[:30]} not emulated: left out")


def _vxlan_lower(node: ImportedNode, notes: Notes) -> None:
    """A VXLAN device's `dev` must be a device the topology has: the uplink."""
    for v in node.vxlans.values():
        if v.dev is not None and v.dev != node.uplink:
            notes.warn(f"{node.where}: device {v.name}", f"its lower device {v.dev} is not the uplink: "
                                                         "imported without dev")
            v.dev = None


def _sysctls(node: ImportedNode, notes: Notes) -> None:
    text = node.dump.text("sysctl.txt")
    if text is None or not text.strip():
        notes.warn(f"{node.dump.origin}: sysctl.txt", "missing or empty: the kernel's defaults are used")
        return
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            node.raw_sysctls[key.strip()] = value.strip()


def sysctls(node: ImportedNode, devices: set[str], notes: Notes) -> dict[str, int]:
    """The dumped sysctls pktemu accepts for the devices kept; one note lists the others."""
    out: dict[str, int] = {}
    ignored: list[str] = []
    for key, value in sorted(node.raw_sysctls.items()):
        rng = GLOBAL_SYSCTLS.get(key)
        if rng is None and key.startswith("net.ipv4.neigh.") and key.count(".") >= 4:
            dev, knob = key[len("net.ipv4.neigh."):].rsplit(".", 1)
            dev = dev.replace("/", ".")
            key = f"net.ipv4.neigh.{dev}.{knob}"
            if dev in devices:
                rng = NEIGH_SYSCTLS.get(knob)
        if rng is None and key.startswith("net.ipv4.conf.") and key.count(".") >= 4:
            dev, knob = key[len("net.ipv4.conf."):].rsplit(".", 1)
            dev = dev.replace("/", ".")                 # sysctl -a spells flannel.1 as flannel/1
            key = f"net.ipv4.conf.{dev}.{knob}"
            if dev in ("all", "default") or dev in devices:
                rng = CONF_SYSCTLS.get(knob)
        try:
            v = int(value)
        except ValueError:
            v = None
        if rng is None or v is None or not rng[0] <= v <= rng[1] or (v and not_modelled(key)):
            ignored.append(key)
            continue
        out[key] = v
    if ignored:
        shown = ", ".join(ignored[:6]) + (", ..." if len(ignored) > 6 else "")
        notes.warn(f"{node.where}: sysctl.txt", f"{len(ignored)} sysctls not emulated or of devices left "
                                                f"out, ignored: {shown}")
    return out


def _iptables(node: ImportedNode, notes: Notes) -> None:
    from pktemu.netfilter.xtables import load_rules

    where = f"{node.dump.origin}: iptables-save.txt"
    chosen = None
    for name in ("iptables-save.txt", "iptables-nft-save.txt", "iptables-legacy-save.txt"):
        text = node.dump.text(name)
        if text and any(line.startswith("*") for line in text.splitlines()):
            chosen = (name, text)
            break
    if chosen is None:
        if node.dump.text("iptables-save.txt") is None:
            notes.warn(where, "missing: the node has no iptables rules")
        return
    name, text = chosen
    if name != "iptables-save.txt":
        notes.warn(where, f"no rules there: {name} used instead")
    try:
        load_rules(text, f"{node.dump.origin}: {name}")
    except PktemuError as e:
        notes.warn("", f"{e} (rules do not parse: the node has no iptables rules)")
        return
    node.iptables = text
