"""Rewriting captured frames onto the topology: `--map OLD=NEW` for addresses, MACs from the neighbours.

A capture's addresses mean nothing in the emulated cluster, so, as tcprewrite users do, the user
maps them (`--map 192.168.1.7=10.0.1.2`, `--map 192.168.1.0/24=10.0.1.0/24`). Every IPv4 address a
frame carries is mapped: source and destination, ARP sender and target, and the addresses of the
packet an ICMP error quotes. Checksums follow incrementally, so a checksum that was wrong in the
capture stays wrong by the same amount. The MACs become those the replaced namespace would use:
its own as the source, and as the destination the owner of the next hop its routing table picks
(what ARP would have answered), as if the frame had been sent from there.
"""
from __future__ import annotations

import ipaddress
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pktemu.errors import PktemuError
from pktemu.net.frame import BROADCAST_MAC, ETH_HLEN, Frame, csum_replace32
from pktemu.replay.frames import IPPROTO_TCP, IPPROTO_UDP, Pkt, patch

if TYPE_CHECKING:
    from pktemu.net.device import NetDevice
    from pktemu.net.node import Node
    from pktemu.network import Network

_I = struct.Struct("!I")
_H = struct.Struct("!H")


def _mask(plen: int) -> int:
    return (0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF


@dataclass(frozen=True)
class MapRule:
    """OLD network -> NEW: the prefix is replaced and host bits kept, or a whole network -> one address."""
    old_net: int
    old_plen: int
    new_net: int
    new_plen: int
    spec: str

    def apply(self, addr: int) -> int:
        if self.new_plen == 32:
            return self.new_net
        return self.new_net | (addr & ~_mask(self.old_plen) & 0xFFFFFFFF)


class AddressMap:
    """All `--map` rules; the longest OLD prefix that contains an address decides."""

    def __init__(self, specs: Sequence[str]) -> None:
        rules: list[MapRule] = []
        for spec in specs:
            rule = _parse_rule(spec)
            for r in rules:
                if (r.old_net, r.old_plen) == (rule.old_net, rule.old_plen):
                    raise PktemuError(f"--map {spec!r}: {r.spec.split('=')[0]} is already mapped "
                                      f"({r.spec!r})")
            rules.append(rule)
        self.rules = sorted(rules, key=lambda r: -r.old_plen)

    def lookup(self, addr: int) -> MapRule | None:
        for r in self.rules:
            if addr & _mask(r.old_plen) == r.old_net:
                return r
        return None

    def map(self, addr: int) -> int:
        r = self.lookup(addr)
        return addr if r is None else r.apply(addr)


def _parse_rule(spec: str) -> MapRule:
    old, sep, new = spec.partition("=")
    if not sep or not old.strip() or not new.strip():
        raise PktemuError(f"--map {spec!r}: expected OLD=NEW, each an IPv4 address or CIDR")
    nets = []
    for side in (old.strip(), new.strip()):
        try:
            nets.append(ipaddress.IPv4Network(side, strict=True))
        except ValueError as e:
            raise PktemuError(f"--map {spec!r}: {side!r} is not an IPv4 address or network ({e})") from None
    a, b = nets
    if b.prefixlen != 32 and b.prefixlen != a.prefixlen:
        raise PktemuError(f"--map {spec!r}: /{a.prefixlen} cannot map onto /{b.prefixlen} (map equal-sized "
                          "networks, or a network onto one address)")
    return MapRule(int(a.network_address), a.prefixlen, int(b.network_address), b.prefixlen, spec)


def _multicast_mac(addr: int) -> bytes:
    return b"\x01\x00\x5e" + _I.pack(addr & 0x7FFFFF)[1:]


class Neighbours:
    """The MACs the replaced namespace would put on its frames: its own, and its next hops' owners."""

    def __init__(self, net: "Network", node: "Node", own: "NetDevice", inject: "NetDevice") -> None:
        self.node = node
        self.own_mac = own.mac
        self.owners: dict[int, bytes] = {}
        for n in net.nodes.values():
            for dev in n.devices.values():
                if dev.name != "lo":
                    for a in dev.addresses:
                        self.owners.setdefault(a.addr, dev.mac)
        master = getattr(inject, "master", None)
        self.fallback: bytes = master.mac if master is not None else inject.mac

    def dst_mac(self, daddr: int) -> bytes:
        """The destination MAC for `daddr`: broadcast, multicast, or the next hop's owner."""
        if daddr == 0xFFFFFFFF or self.node.is_broadcast(daddr):
            return BROADCAST_MAC
        if daddr >> 28 == 0xE:
            return _multicast_mac(daddr)
        r = self.node.route_output(daddr)
        if r is None or r[0].dev == "lo":
            return self.fallback
        rt = r[0]
        return self.owners.get(rt.gateway if rt.gateway is not None else daddr, self.fallback)

    def owner_mac(self, addr: int) -> bytes:
        return self.owners.get(addr, self.fallback)


class Rewriter:
    """Maps one captured frame onto the topology (a new buffer; the parsed Pkt is left as it was)."""

    def __init__(self, amap: AddressMap, neigh: Neighbours) -> None:
        self.amap = amap
        self.neigh = neigh

    def rewrite(self, p: Pkt) -> bytearray:
        return self._ipv4(p) if p.kind == "ipv4" else self._arp(p)

    def _ipv4(self, p: Pkt) -> bytearray:
        f = Frame(p.data)
        src, dst = self.amap.map(p.src), self.amap.map(p.dst)
        f.set_saddr(src)
        f.set_daddr(dst)
        if p.inner is not None:
            self._quoted(f.data, p.l4off)
        dmac = bytes(p.data[0:6])
        if dmac != BROADCAST_MAC:
            dmac = _multicast_mac(dst) if dmac[0] & 1 and dst >> 28 == 0xE else self.neigh.dst_mac(dst)
        f.set_macs(self.neigh.own_mac, dmac)
        return f.data

    def _quoted(self, d: bytearray, l4: int) -> None:
        """Map the addresses of the packet an ICMP error quotes, with every checksum it covers."""
        off = l4 + 8
        end = ETH_HLEN + _H.unpack_from(d, ETH_HLEN + 2)[0]
        icmp_c = l4 + 2
        ihl = (d[off] & 0x0F) * 4
        proto = d[off + 9]
        inner_l4c = None
        if proto == IPPROTO_TCP:
            inner_l4c = off + ihl + 16
        elif proto == IPPROTO_UDP and off + ihl + 8 <= end and _H.unpack_from(d, off + ihl + 6)[0]:
            inner_l4c = off + ihl + 6
        for field in (off + 12, off + 16):
            old = _I.unpack_from(d, field)[0]
            new = self.amap.map(old)
            if new == old:
                continue
            ipc = csum_replace32(_H.unpack_from(d, off + 10)[0], old, new)
            patch(d, field, _I.pack(new), (icmp_c,))
            patch(d, off + 10, _H.pack(ipc), (icmp_c,))
            if inner_l4c is not None and inner_l4c + 2 <= end:
                c = csum_replace32(_H.unpack_from(d, inner_l4c)[0], old, new)
                if proto == IPPROTO_UDP and c == 0:
                    c = 0xFFFF
                patch(d, inner_l4c, _H.pack(c), (icmp_c,))

    def _arp(self, p: Pkt) -> bytearray:
        d = bytearray(p.data)
        spa, tpa = self.amap.map(p.src), self.amap.map(p.dst)
        a = ETH_HLEN
        d[a + 8:a + 14] = self.neigh.own_mac
        d[a + 14:a + 18] = _I.pack(spa)
        d[a + 24:a + 28] = _I.pack(tpa)
        if p.arp_op == 2 and d[a + 18:a + 24] != b"\0" * 6 and spa != tpa:
            d[a + 18:a + 24] = self.neigh.owner_mac(tpa)
        dmac = bytes(d[0:6])
        if dmac != BROADCAST_MAC:
            dmac = self.neigh.owner_mac(tpa)
        d[0:6] = dmac
        d[6:12] = self.neigh.own_mac
        return d
