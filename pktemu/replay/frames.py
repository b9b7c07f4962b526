"""Captured frames as the replay sees them: VLAN tags off, IPv4/ARP headers read once, checksums checked.

A capture may hold many thousands of frames, so each is read with `struct` and nothing is dissected
with Scapy. Lengths come from the IP header, not from what was captured, so a truncated record
still tells its flow's story (sequence numbers, payload sizes) although it is never sent.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from pktemu.io.pcapread import Record
from pktemu.net.frame import ETH_HLEN, checksum, csum_replace

ETH_P_IP, ETH_P_ARP = 0x0800, 0x0806
VLAN_TPIDS = (0x8100, 0x88A8, 0x9100)
ETHERTYPE_NAMES = {0x86DD: "IPv6", 0x8847: "MPLS", 0x8848: "MPLS", 0x8035: "RARP", 0x88CC: "LLDP",
                   0x8863: "PPPoE", 0x8864: "PPPoE", 0x8137: "IPX", 0x88E5: "MACsec", 0x0842: "Wake-on-LAN"}
IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP = 1, 6, 17
ICMP_ERRORS = frozenset({3, 4, 5, 11, 12})
ICMP_QUERIES = frozenset({0, 8, 13, 14, 15, 16, 17, 18})

FRAG_NONE, FRAG_FIRST, FRAG_LATER = 0, 1, 2

_H = struct.Struct("!H")
_PSEUDO = struct.Struct("!IIBBH")
_TCP = struct.Struct("!HHIIBB")


@dataclass(slots=True, eq=False)
class Pkt:
    """One captured frame, parsed: what the split, the mapping and the TCP follower need to know."""
    number: int                  # record number in the capture
    ts_ns: int
    data: bytearray              # the Ethernet frame, VLAN tags removed
    truncated: bool
    vlan_tags: int = 0
    kind: str = "other"          # "ipv4", "arp" or "other"
    refused: str | None = None   # why it cannot be injected at all
    src: int = 0
    dst: int = 0
    proto: int = 0
    sport: int = 0               # TCP/UDP ports; an ICMP query's identifier in both
    dport: int = 0
    flags: int = 0               # TCP flags
    seq: int = 0
    ack: int = 0
    plen: int = 0                # TCP/UDP payload length from the IP total length
    icmp_type: int = -1
    frag: int = FRAG_NONE
    ip_id: int = 0
    inner: tuple[int, int, int, int, int] | None = None   # ICMP error: quoted (proto, src, sport, dst, dport)
    arp_op: int = 0
    flow: int = -1               # index of its flow (see `split`), -1 when it has none
    client: bool = False         # sent by the replayed (client) side

    @property
    def l4off(self) -> int:
        return ETH_HLEN + (self.data[ETH_HLEN] & 0x0F) * 4


def parse(rec: Record) -> Pkt:
    """Read the headers of one record; `refused` says why it cannot be sent (None: it can)."""
    data = bytearray(rec.data)
    p = Pkt(rec.number, rec.ts_ns, data, rec.truncated)
    if rec.unusable:
        p.refused = rec.unusable
        return p
    while len(data) >= 18 and _H.unpack_from(data, 12)[0] in VLAN_TPIDS:
        del data[12:16]
        p.vlan_tags += 1
    et = _H.unpack_from(data, 12)[0]
    if et == ETH_P_IP:
        _parse_ipv4(p)
    elif et == ETH_P_ARP:
        _parse_arp(p)
    elif et < 0x0600:
        p.refused = "802.3 frame with an LLC header: not emulated (IPv4 and ARP only)"
    else:
        name = ETHERTYPE_NAMES.get(et, "unknown")
        p.refused = f"ethertype 0x{et:04x} ({name}): not emulated (IPv4 and ARP only)"
    return p


def _parse_arp(p: Pkt) -> None:
    d = p.data
    p.kind = "arp"
    if len(d) < ETH_HLEN + 28:
        p.refused = f"ARP message cut at {len(d)} bytes"
        return
    htype, ptype, hlen, plen, op = struct.unpack_from("!HHBBH", d, ETH_HLEN)
    if (htype, ptype, hlen, plen) != (1, ETH_P_IP, 6, 4):
        p.refused = f"ARP for hardware type {htype}, protocol 0x{ptype:04x}: not emulated"
        return
    p.arp_op = op
    p.src = int.from_bytes(d[ETH_HLEN + 14:ETH_HLEN + 18], "big")
    p.dst = int.from_bytes(d[ETH_HLEN + 24:ETH_HLEN + 28], "big")


def _parse_ipv4(p: Pkt) -> None:
    d = p.data
    p.kind = "ipv4"
    if len(d) < ETH_HLEN + 20:
        p.refused = f"IPv4 header cut at {len(d)} bytes"
        return
    ihl = (d[ETH_HLEN] & 0x0F) * 4
    total = _H.unpack_from(d, ETH_HLEN + 2)[0]
    if d[ETH_HLEN] >> 4 != 4 or ihl < 20 or total < ihl or len(d) < ETH_HLEN + ihl:
        p.refused = "malformed IPv4 header (the kernel's ip_rcv would drop it)"
        return
    if ETH_HLEN + total > len(d) and not p.truncated:
        p.refused = f"IPv4 total length {total} is beyond the frame's {len(d) - ETH_HLEN} bytes"
        return
    fragw = _H.unpack_from(d, ETH_HLEN + 6)[0]
    p.frag = FRAG_LATER if fragw & 0x1FFF else FRAG_FIRST if fragw & 0x2000 else FRAG_NONE
    p.ip_id = _H.unpack_from(d, ETH_HLEN + 4)[0]
    p.proto = d[ETH_HLEN + 9]
    p.src = int.from_bytes(d[ETH_HLEN + 12:ETH_HLEN + 16], "big")
    p.dst = int.from_bytes(d[ETH_HLEN + 16:ETH_HLEN + 20], "big")
    if p.frag == FRAG_LATER:
        return
    l4 = ETH_HLEN + ihl
    avail = min(len(d), ETH_HLEN + total) - l4
    if p.proto == IPPROTO_TCP and avail >= 20:
        p.sport, p.dport, p.seq, p.ack, doff, p.flags = _TCP.unpack_from(d, l4)
        p.plen = max(0, total - ihl - (doff >> 4) * 4)
    elif p.proto == IPPROTO_UDP and avail >= 8:
        p.sport, p.dport = struct.unpack_from("!HH", d, l4)
        p.plen = max(0, total - ihl - 8)
    elif p.proto == IPPROTO_ICMP and avail >= 8:
        p.icmp_type = d[l4]
        if p.icmp_type in ICMP_QUERIES:
            p.sport = p.dport = _H.unpack_from(d, l4 + 4)[0]
        elif p.icmp_type in ICMP_ERRORS and avail >= 28:
            p.inner = quoted(d, l4 + 8, l4 + avail)
    elif p.proto in (IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP) and not p.truncated:
        p.refused = f"IP protocol {p.proto} header cut at {avail} bytes"


def quoted(d: bytearray, off: int, end: int) -> tuple[int, int, int, int, int] | None:
    """(proto, src, sport, dst, dport) of the packet an ICMP error quotes (ports 0 when absent)."""
    ihl = (d[off] & 0x0F) * 4
    if d[off] >> 4 != 4 or ihl < 20 or off + ihl > end:
        return None
    proto = d[off + 9]
    src = int.from_bytes(d[off + 12:off + 16], "big")
    dst = int.from_bytes(d[off + 16:off + 20], "big")
    sport = dport = 0
    if off + ihl + 4 <= end and proto in (IPPROTO_TCP, IPPROTO_UDP):
        sport, dport = struct.unpack_from("!HH", d, off + ihl)
    elif off + ihl + 8 <= end and proto == IPPROTO_ICMP and d[off + ihl] in ICMP_QUERIES:
        sport = dport = _H.unpack_from(d, off + ihl + 4)[0]
    return proto, src, sport, dst, dport


# ---------------------------------------------------------------------------- checksums
def bad_checksum(p: Pkt) -> str | None:
    """Which checksum of a whole IPv4 frame is wrong ("ip", "tcp", "udp", "icmp"), or None.

    Transport checksums of fragments cover the whole datagram, so they are not checked here.
    """
    if p.kind != "ipv4" or p.refused or p.truncated:
        return None
    d = p.data
    l4 = p.l4off
    if checksum(d[ETH_HLEN:l4]) != 0:
        return "ip"
    if p.frag != FRAG_NONE:
        return None
    end = ETH_HLEN + _H.unpack_from(d, ETH_HLEN + 2)[0]
    if p.proto == IPPROTO_TCP or (p.proto == IPPROTO_UDP and _H.unpack_from(d, l4 + 6)[0]):
        pseudo = _PSEUDO.pack(p.src, p.dst, 0, p.proto, end - l4)
        if checksum(pseudo + bytes(d[l4:end])) != 0:
            return "tcp" if p.proto == IPPROTO_TCP else "udp"
    elif p.proto == IPPROTO_ICMP and checksum(d[l4:end]) != 0:
        return "icmp"
    return None


def fix_checksums(d: bytearray) -> None:
    """Recompute the IPv4 header checksum and, for an unfragmented datagram, the TCP/UDP/ICMP one."""
    ihl = (d[ETH_HLEN] & 0x0F) * 4
    l4 = ETH_HLEN + ihl
    d[ETH_HLEN + 10:ETH_HLEN + 12] = b"\0\0"
    _H.pack_into(d, ETH_HLEN + 10, checksum(d[ETH_HLEN:l4]))
    if _H.unpack_from(d, ETH_HLEN + 6)[0] & 0x3FFF:
        return
    end = ETH_HLEN + _H.unpack_from(d, ETH_HLEN + 2)[0]
    proto = d[ETH_HLEN + 9]
    src, dst = struct.unpack_from("!II", d, ETH_HLEN + 12)
    if proto == IPPROTO_TCP and end - l4 >= 20:
        d[l4 + 16:l4 + 18] = b"\0\0"
        _H.pack_into(d, l4 + 16, checksum(_PSEUDO.pack(src, dst, 0, proto, end - l4) + bytes(d[l4:end])))
    elif proto == IPPROTO_UDP and end - l4 >= 8 and _H.unpack_from(d, l4 + 6)[0]:
        d[l4 + 6:l4 + 8] = b"\0\0"
        c = checksum(_PSEUDO.pack(src, dst, 0, proto, end - l4) + bytes(d[l4:end]))
        _H.pack_into(d, l4 + 6, c or 0xFFFF)
    elif proto == IPPROTO_ICMP and end - l4 >= 4:
        d[l4 + 2:l4 + 4] = b"\0\0"
        _H.pack_into(d, l4 + 2, checksum(d[l4:end]))


def patch(d: bytearray, off: int, new: bytes, csums: tuple[int, ...]) -> None:
    """Write `new` at `off` and update each checksum field at `csums` incrementally (RFC 1624).

    Incremental updates keep a wrong checksum exactly as wrong as it was, as the kernel's NAT does,
    so a frame the capture had broken stays broken (unless the user asked to fix checksums).
    """
    start = off & ~1
    end = off + len(new)
    end += end & 1
    old = bytes(d[start:end]).ljust(end - start, b"\0")
    d[off:off + len(new)] = new
    cur = bytes(d[start:end]).ljust(end - start, b"\0")
    for c in csums:
        v = _H.unpack_from(d, c)[0]
        for i in range(0, len(old), 2):
            if old[i:i + 2] != cur[i:i + 2]:
                v = csum_replace(v, (old[i] << 8) | old[i + 1], (cur[i] << 8) | cur[i + 1])
        _H.pack_into(d, c, v)
