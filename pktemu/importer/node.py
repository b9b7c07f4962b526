"""One node dump -> a topology node: its bridges and their veth ports, the uplink, IPv4
addresses, main-table routes, sysctls and iptables-save rules, with a note for whatever is left out.

Only what pktemu emulates is kept: Linux bridges, the veth ports pods hang off, and the uplink
(the device of the default route), which the underlay joins to the router. Tunnels (flannel's
VXLAN, Calico's IPIP), Calico's routed `cali*` veths and other device kinds are reported.
"""
from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pktemu.errors import PktemuError
from pktemu.importer import Notes
from pktemu.importer.sources import NodeDump
from pktemu.io.topofile_sysctl import CONF_SYSCTLS, GLOBAL_SYSCTLS

TUNNELS = {"vxlan": "VXLAN (flannel)", "ipip": "IPIP (Calico tunl0)", "gre": "GRE", "geneve": "Geneve",
           "wireguard": "WireGuard", "sit": "SIT"}
_IFNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,14}\Z")
_NFT_COMPAT = {"filter", "nat", "mangle", "raw", "security"}


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
class ImportedNode:
    dump: NodeDump
    name: str = ""
    bridges: dict[str, Bridge] = field(default_factory=dict)
    uplink: str | None = None
    uplink_mac: str | None = None
    uplink_mtu: int = 1500
    uplink_addresses: list[Any] = field(default_factory=list)     # topology address entries
    gateway: str | None = None                                   # the default route's via
    gateway_mac: str | None = None
    routes: list[dict[str, Any]] = field(default_factory=list)
    all_addresses: set[str] = field(default_factory=set)
    neigh: dict[str, tuple[str, str]] = field(default_factory=dict)   # ip -> (lladdr, dev)
    fdb: dict[str, str] = field(default_factory=dict)                 # learned mac -> port
    raw_sysctls: dict[str, str] = field(default_factory=dict)
    iptables: str | None = None

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
    addrs = _addresses(dump.json("ip-addr.json", notes) or [])
    for a in addrs.values():
        node.all_addresses |= {(x["address"] if isinstance(x, dict) else x).split("/")[0] for x in a}
    node.name = namer(dump, node.all_addresses)
    links = dump.json("ip-link.json", notes)
    if links is None:
        notes.warn(node.name, "no devices (ip-link.json): node left out")
        return None
    routes = dump.json("ip-route.json", notes) or []
    default = next((r for r in routes if r.get("dst") == "default" and r.get("table", "main") == "main"
                    and r.get("type", "unicast") == "unicast" and r.get("gateway")), None)
    uplink = default.get("dev") if default else None
    brlinks = {b.get("ifname"): b for b in dump.json("bridge-link.json", notes) or []}
    for link in links:
        _device(node, link, uplink, addrs, brlinks, notes)
    if node.uplink is None and uplink is not None:
        notes.warn(node.where, f"the default route's device {uplink} is not usable: node not joined "
                               "to the others")
    if default and node.uplink:
        node.gateway = str(default["gateway"])
    for n in dump.json("ip-neigh.json", notes) or []:
        if n.get("lladdr") and isinstance(n.get("dst"), str) and "." in n["dst"]:
            node.neigh[n["dst"]] = (str(n["lladdr"]).lower(), str(n.get("dev")))
    if node.gateway and node.gateway in node.neigh:
        node.gateway_mac = node.neigh[node.gateway][0]
    for f in dump.json("bridge-fdb.json", notes) or []:
        if f.get("master") in node.bridges and f.get("state") != "permanent" and f.get("mac"):
            node.fdb[str(f["mac"]).lower()] = str(f.get("ifname"))
    _routes(node, routes, notes)
    _rules(node, dump.json("ip-rule.json", notes) or [], notes)
    _sysctls(node, notes)
    _iptables(node, notes)
    _nft(node, notes)
    return node


def _addresses(data: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """ifname -> its IPv4 addresses as topology entries (`A/len` or `{address, peer}`)."""
    out: dict[str, list[Any]] = {}
    for link in data:
        for a in link.get("addr_info") or []:
            if not isinstance(a, dict) or a.get("family") != "inet" or not a.get("local"):
                continue
            try:
                entry: Any = str(ipaddress.IPv4Interface(f"{a['local']}/{a.get('prefixlen', 32)}"))
                if a.get("address") and a["address"] != a["local"]:
                    peer = ipaddress.IPv4Address(str(a["address"]).split("/")[0])
                    entry = {"address": entry, "peer": str(peer)}
            except ValueError:
                continue
            out.setdefault(str(link.get("ifname")), []).append(entry)
    return out


def _device(node: ImportedNode, link: dict[str, Any], uplink: str | None, addrs: dict[str, list[Any]],
            brlinks: dict[Any, dict[str, Any]], notes: Notes) -> None:
    name = str(link.get("ifname"))
    info = link.get("linkinfo") or {}
    kind = info.get("info_kind")
    up = "UP" in (link.get("flags") or [])
    where = f"{node.where}: device {name}"
    if link.get("link_type") == "loopback" or name == "lo":
        return
    if not _IFNAME.match(name):
        notes.warn(where, "not a name pktemu accepts: left out")
        return
    mac = str(link["address"]).lower() if link.get("address") else None
    mtu = int(link.get("mtu") or 1500)
    if kind == "bridge":
        if not up:
            notes.warn(where, "bridge is down: left out")
            return
        data = info.get("info_data") or {}
        ageing = data.get("ageing_time")
        node.bridges[name] = Bridge(name, mac, [ipaddress.IPv4Interface(a) for a in addrs.get(name, [])
                                                if isinstance(a, str)], bool(data.get("stp_state")),
                                    int(ageing) // 100 if isinstance(ageing, int) else None)
        return
    if kind in TUNNELS:
        notes.warn(where, f"{TUNNELS[kind]} tunnel: not emulated yet, left out")
        return
    if name == uplink and kind in (None, "veth", "bond", "vlan", "macvlan") and not link.get("master"):
        node.uplink, node.uplink_mac, node.uplink_mtu = name, mac, mtu
        node.uplink_addresses = addrs.get(name, [])
        return
    if kind == "veth" and link.get("master"):
        bl = brlinks.get(name) or {}
        slave = info.get("info_slave_data") or {}
        hairpin = bool(bl.get("hairpin", slave.get("hairpin", False)))
        port = Port(name, mac, hairpin, mtu)
        node.bridges.setdefault(str(link["master"]), Bridge(str(link["master"]), None, [], False, None))
        node.bridges[str(link["master"])].ports[name] = port
        return
    if kind == "veth":
        what = "Calico routed pod veth" if name.startswith("cali") else "veth outside any bridge"
        notes.warn(where, f"{what}: not emulated yet, left out")
        return
    if kind is None:
        notes.warn(where, "no default route through it: not joined to anything, left out")
    else:
        notes.warn(where, f"device kind {str(kind)[:30]} not emulated: left out")


def _kept_devices(node: ImportedNode) -> set[str]:
    return set(node.bridges) | ({node.uplink} if node.uplink else set())


def _connected(node: ImportedNode) -> list[tuple[str, ipaddress.IPv4Network | None, str | None]]:
    """(device, connected network, p2p peer) of each kept address."""
    out: list[tuple[str, ipaddress.IPv4Network | None, str | None]] = []
    for b in node.bridges.values():
        out += [(b.name, a.network, None) for a in b.addresses]
    for a in node.uplink_addresses:
        if isinstance(a, dict):
            out.append((node.uplink or "", None, a["peer"]))
        else:
            out.append((node.uplink or "", ipaddress.IPv4Interface(a).network, None))
    return out


def _routes(node: ImportedNode, routes: list[dict[str, Any]], notes: Notes) -> None:
    kept, conn = _kept_devices(node), _connected(node)
    other_tables: set[str] = set()
    seen: set[tuple[str, int]] = set()
    for r in routes:
        table = str(r.get("table", "main"))
        if table == "local":
            continue
        if table != "main":
            other_tables.add(table)
            continue
        dst, dev, via = str(r.get("dst")), r.get("dev"), r.get("gateway")
        rtype = r.get("type", "unicast")
        where = f"{node.where}: route {dst[:40]}"
        try:
            if dst != "default":
                ipaddress.IPv4Network(dst)
            if via is not None:
                ipaddress.IPv4Address(via)
        except ValueError:
            notes.warn(where, "not an IPv4 route pktemu can read: left out")
            continue
        if r.get("protocol") == "kernel" and r.get("scope") == "link":
            continue                                     # connected: pktemu adds it from the address
        if rtype != "unicast":
            notes.warn(where, f"{rtype} routes are not emulated: left out")
            continue
        if r.get("nexthops"):
            notes.warn(where, "multipath route: not emulated, left out")
            continue
        if dev not in kept:
            notes.warn(where, f"through device {dev}, which is left out: left out")
            continue
        if via is not None and not any(d == dev and ((net is not None and ipaddress.IPv4Address(via) in net)
                                                     or peer == via) for d, net, peer in conn):
            notes.warn(where, f"gateway {via} is not on a connected network of {dev}: left out")
            continue
        metric = int(r.get("metric") or 0)
        if (dst, metric) in seen:
            notes.warn(where, "a second route with this destination and metric: left out")
            continue
        seen.add((dst, metric))
        entry: dict[str, Any] = {"to": dst}
        if via is not None:
            entry["via"] = str(via)
        entry["dev"] = str(dev)
        if r.get("prefsrc") and r["prefsrc"] in node.all_addresses:
            entry["src"] = str(r["prefsrc"])
        if metric:
            entry["metric"] = metric
        node.routes.append(entry)
    for t in sorted(other_tables):
        notes.warn(f"{node.where}: routing table {t}", "policy routing tables are not imported yet: left out")


def _rules(node: ImportedNode, rules: list[dict[str, Any]], notes: Notes) -> None:
    extra = [r for r in rules if str(r.get("table")) not in ("local", "main", "default")]
    if extra:
        notes.warn(f"{node.where}: ip-rule.json", f"{len(extra)} policy routing rules (ip rule) "
                                                  "not imported yet")


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
        if rng is None and key.startswith("net.ipv4.conf.") and key.count(".") >= 4:
            dev, knob = key[len("net.ipv4.conf."):].rsplit(".", 1)
            if dev in ("all", "default") or dev in devices:
                rng = CONF_SYSCTLS.get(knob)
        try:
            v = int(value)
        except ValueError:
            v = None
        if rng is None or v is None or not rng[0] <= v <= rng[1]:
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


def _nft(node: ImportedNode, notes: Notes) -> None:
    text = node.dump.text("nft-ruleset.txt") or ""
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "table" and parts[2] not in _NFT_COMPAT:
            notes.warn(f"{node.where}: nft-ruleset.txt",
                       f"nftables table {parts[1]} {parts[2]}: not imported yet (only iptables rules are)")
