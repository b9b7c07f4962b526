"""Conntrack tuples: what identifies one direction of a connection (nf_conntrack_tuple).

A tuple is a plain hashable NamedTuple so the table is a dict. TCP, UDP and SCTP carry ports; ICMP
queries carry the id in `sport` and `(type << 8) | code` in `dport` (the kernel keeps the id on
the source side and type/code on the destination side); every other protocol is tracked by
addresses alone, like the kernel's generic tracker.
"""
from __future__ import annotations

import struct
from typing import NamedTuple

from pktemu.net.frame import ETH_HLEN, IPPROTO_ICMP, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, Frame, int2ip

_II = struct.Struct("!II")
_HH = struct.Struct("!HH")
_H = struct.Struct("!H")

PORT_PROTOS = (IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP)

# ICMP query types and their answers (icmp_invert_tuple's invmap).
ICMP_ECHOREPLY, ICMP_ECHO = 0, 8
ICMP_INVERSE = {8: 0, 0: 8, 13: 14, 14: 13, 15: 16, 16: 15, 17: 18, 18: 17}
# Types that may start a connection (nf_conntrack_icmp_packet's valid_new).
ICMP_VALID_NEW = frozenset((8, 13, 15, 17))
# Errors that quote a packet (icmp_is_err): dest unreach, source quench, redirect, time exceeded, param.
ICMP_ERRORS = frozenset((3, 4, 5, 11, 12))
NR_ICMP_TYPES = 18

PROTO_NAMES = {6: "tcp", 17: "udp", 136: "udplite", 1: "icmp", 58: "icmpv6", 132: "sctp", 47: "gre",
               33: "dccp"}


class CtTuple(NamedTuple):
    """One direction: protocol, source address/port (or ICMP id), destination address/port."""
    proto: int
    src: int
    sport: int
    dst: int
    dport: int

    @property
    def icmp_type(self) -> int:
        return self.dport >> 8

    @property
    def icmp_code(self) -> int:
        return self.dport & 0xFF

    def conntrack_str(self) -> str:
        """The tuple as `conntrack -L` prints it (with the trailing space the tool leaves)."""
        s = f"src={int2ip(self.src)} dst={int2ip(self.dst)} "
        if self.proto in PORT_PROTOS:
            return s + f"sport={self.sport} dport={self.dport} "
        if self.proto == IPPROTO_ICMP:
            return s + f"type={self.dport >> 8} code={self.dport & 0xFF} id={self.sport} "
        return s

    def __str__(self) -> str:
        if self.proto in PORT_PROTOS:
            return f"{int2ip(self.src)}:{self.sport} > {int2ip(self.dst)}:{self.dport}"
        if self.proto == IPPROTO_ICMP:
            return f"{int2ip(self.src)} > {int2ip(self.dst)} icmp type {self.dport >> 8} id {self.sport}"
        return f"{int2ip(self.src)} > {int2ip(self.dst)} proto {self.proto}"


class CtZone(NamedTuple):
    """nf_conntrack_zone: an id and the directions it applies to (bit 0 original, bit 1 reply).

    A connection's tuple of direction `d` is hashed and compared with `zid(d)`: the id where the
    zone covers that direction, 0 (the default zone) elsewhere. A connection of the default zone
    carries None, so the hot path keys by the bare tuple."""
    id: int
    dirs: int = 3

    def zid(self, direction: int) -> int:
        """nf_ct_zone_id(): the zone id used for one direction's tuple."""
        return self.id if self.dirs >> direction & 1 else 0


def zone_id(zone: CtZone | None, direction: int) -> int:
    """nf_ct_zone_id() of a possibly default (None) zone."""
    return 0 if zone is None else zone.zid(direction)


def invert(t: CtTuple) -> CtTuple | None:
    """nf_ct_invert_tuple: the tuple of the answer; None for ICMP types that have no answer."""
    if t.proto == IPPROTO_ICMP:
        inv = ICMP_INVERSE.get(t.dport >> 8)
        if inv is None:
            return None
        return CtTuple(IPPROTO_ICMP, t.dst, t.sport, t.src, (inv << 8) | (t.dport & 0xFF))
    return CtTuple(t.proto, t.dst, t.dport, t.src, t.sport)


def ip_end(data: bytearray) -> int:
    """Offset just past the IP datagram (ip_len bounded by what the frame really holds)."""
    ip_len: int = _H.unpack_from(data, ETH_HLEN + 2)[0]
    return min(ETH_HLEN + ip_len, len(data))


def tuple_at(data: bytearray, ipoff: int, end: int) -> CtTuple | None:
    """The tuple of the IP header at `ipoff` (an outer packet or one quoted in an ICMP error).

    None when the headers needed are missing: the kernel's pkt_to_tuple reads 8 bytes of TCP,
    UDP or ICMP header, and a later fragment has none.
    """
    if end - ipoff < 20:
        return None
    ihl = (data[ipoff] & 0x0F) * 4
    if ihl < 20 or _H.unpack_from(data, ipoff + 6)[0] & 0x1FFF:
        return None
    proto = data[ipoff + 9]
    src, dst = _II.unpack_from(data, ipoff + 12)
    l4 = ipoff + ihl
    if proto in PORT_PROTOS:
        if end - l4 < 8:
            return None
        sport, dport = _HH.unpack_from(data, l4)
        return CtTuple(proto, src, sport, dst, dport)
    if proto == IPPROTO_ICMP:
        if end - l4 < 8:
            return None
        return CtTuple(proto, src, _H.unpack_from(data, l4 + 4)[0], dst, (data[l4] << 8) | data[l4 + 1])
    return CtTuple(proto, src, 0, dst, 0)


def frame_tuple(frame: Frame) -> CtTuple | None:
    """The tuple of a frame's own IPv4 header (None if truncated or a non-first fragment)."""
    return tuple_at(frame.data, ETH_HLEN, ip_end(frame.data))


def endpoint(addr: int, port: int, proto: int) -> str:
    """`10.0.2.2:8080` for port protocols, `10.0.2.2` otherwise (for explanation notes)."""
    return f"{int2ip(addr)}:{port}" if proto in PORT_PROTOS else int2ip(addr)
