"""Scapy packets in, engine frames out: what a raw socket's kernel side fills in, and nothing more.

`send` hands the node an IP datagram the way a raw socket with IP_HDRINCL does: the kernel
fills in a missing source address (from the route, as for any local packet), the total length
and the header checksum; Scapy fills in the transport checksum it would have computed for the
wire. Anything the user set explicitly is kept.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from pktemu.errors import PktemuError, excerpt
from pktemu.net.frame import ETH_HLEN, Frame, int2ip, ip2int

if TYPE_CHECKING:
    from scapy.packet import Packet

    from pktemu.net.node import Node

_ETH_IP = b"\x00" * 12 + b"\x08\x00"


def expand(what: str, pkts: Any) -> list[Packet]:
    """Every packet `pkts` stands for (a packet with ranges or a Net is several, as in Scapy)."""
    from scapy.packet import Packet

    if isinstance(pkts, Packet):
        items: Iterable[Any] = [pkts]
    elif isinstance(pkts, Iterable) and not isinstance(pkts, (str, bytes, bytearray)):
        items = pkts
    else:
        raise PktemuError(f"{what}: expected a Scapy packet or a list of them, got {excerpt(pkts)}")
    out: list[Packet] = []
    for p in items:
        if not isinstance(p, Packet):
            raise PktemuError(f"{what}: expected a Scapy packet, got {excerpt(p)}")
        try:
            out.extend(p)
        except Exception as e:          # Scapy's own complaint about a field value
            raise PktemuError(f"{what}: cannot expand {p.summary()}: {e}") from None
    return out


def ip_datagram(what: str, node: "Node", pkt: Packet) -> tuple[Packet, Frame]:
    """The datagram `node` would send for `pkt` (as a Scapy packet, filled in) and its frame."""
    from scapy.layers.inet import IP

    if IP not in pkt:
        raise PktemuError(f"{what}: {pkt.summary()} has no IP layer (send() is L3; use sendp() "
                          "for an Ethernet frame)")
    ip = pkt[IP].copy()
    dst = _address(what, "dst", ip.dst)
    if "src" not in ip.fields:
        saddr = node.source_address(dst)
        if saddr is None:
            raise PktemuError(f"{what}: {node.name} has no route to {int2ip(dst)} (ENETUNREACH)")
        ip.src = int2ip(saddr)
    else:
        _address(what, "src", ip.src)
    ip.len = None
    ip.chksum = None
    try:
        raw = bytes(ip)
    except Exception as e:
        raise PktemuError(f"{what}: cannot build {pkt.summary()}: {e}") from None
    return IP(raw), Frame(_ETH_IP + raw)


def ethernet_frame(what: str, pkt: Packet) -> Frame:
    """The bytes of an Ethernet frame, as a peer's driver hands them over."""
    from scapy.layers.l2 import Ether

    if Ether not in pkt or not isinstance(pkt, Ether):
        raise PktemuError(f"{what}: {pkt.summary()} is not an Ethernet frame (sendp() is L2; use "
                          "send() for an IP packet)")
    try:
        raw = bytes(pkt)
    except Exception as e:
        raise PktemuError(f"{what}: cannot build {pkt.summary()}: {e}") from None
    if len(raw) < ETH_HLEN:
        raise PktemuError(f"{what}: a frame of {len(raw)} bytes is shorter than an Ethernet header")
    return Frame(raw)


def _address(what: str, field: str, value: Any) -> int:
    try:
        return ip2int(str(ipaddress.IPv4Address(str(value))))
    except ValueError:
        raise PktemuError(f"{what}: IP {field} {excerpt(value)} is not an IPv4 address (the emulated "
                          "network has no name service of its own for Scapy)") from None
