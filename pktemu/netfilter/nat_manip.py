"""Rewriting packets for NAT (nf_nat_proto.c): headers of a packet, or of one quoted in ICMP.

Outer headers go through the Frame setters, which keep every checksum right incrementally. A
packet quoted inside an ICMP error has no setters, so its IP and L4 checksums are fixed here the
same way the kernel does (RFC 1624), and the caller recomputes the ICMP checksum afterwards.
"""
from __future__ import annotations

import struct

from pktemu.net.frame import (
    ETH_HLEN, IPPROTO_ICMP, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, Frame, csum_replace, csum_replace32,
)
from pktemu.net.sctp import SCTP_HLEN, sctp_set_cksum
from pktemu.netfilter.conntrack_tuple import ICMP_INVERSE, CtTuple, endpoint, ip_end, tuple_at
from pktemu.netfilter.core import MANIP_SRC

_H = struct.Struct("!H")
_I = struct.Struct("!I")


def manip_pkt(frame: Frame, target: CtTuple, mtype: int) -> tuple[str, str]:
    """nf_nat_ipv4_manip_pkt on the frame itself: make its source (SRC) or destination (DST)
    those of `target`. Returns the endpoint before and after, for the explanation note."""
    proto = frame.proto
    d = frame.data
    l4 = frame.l4off
    ports = frame.has_ports and ip_end(d) - l4 >= 8
    icmp_query = (proto == IPPROTO_ICMP and not _H.unpack_from(d, ETH_HLEN + 6)[0] & 0x1FFF
                  and ip_end(d) - l4 >= 8 and d[l4] in ICMP_INVERSE)
    if mtype == MANIP_SRC:
        before = endpoint(frame.saddr, frame.sport if ports else 0, proto if ports else 0)
        if ports:
            frame.set_sport(target.sport)
        elif icmp_query:
            frame.set_icmp_id(target.sport)
        frame.set_saddr(target.src)
        _sctp_cksum(frame, ports)
        return before, endpoint(target.src, target.sport, proto if ports else 0)
    before = endpoint(frame.daddr, frame.dport if ports else 0, proto if ports else 0)
    if ports:
        frame.set_dport(target.dport)
    elif icmp_query:
        frame.set_icmp_id(target.sport)
    frame.set_daddr(target.dst)
    _sctp_cksum(frame, ports)
    return before, endpoint(target.dst, target.dport, proto if ports else 0)


def _sctp_cksum(frame: Frame, ports: bool) -> None:
    """sctp_manip_pkt(): the CRC32c is recomputed over the whole packet after every SCTP manip
    (it has no pseudo-header, so only the port change matters, but the kernel redoes it anyway)."""
    if ports and frame.proto == IPPROTO_SCTP and ip_end(frame.data) - frame.l4off >= SCTP_HLEN:
        sctp_set_cksum(frame.data, frame.l4off, ip_end(frame.data))


def manip_quoted(frame: Frame, t: CtTuple, mtype: int) -> bool:
    """The inner half of nf_nat_icmp_reply_translation: rewrite the packet an ICMP error quotes.

    `t` gives the new source (SRC) or destination (DST) address and port/id. The L4 checksum is
    only touched when the quote holds it (a full TCP header; UDP unless it is zero; a full SCTP
    common header), as the kernel does. False when the quote is too short to rewrite (the kernel
    then drops the error).
    """
    d = frame.data
    end = ip_end(d)
    ioff = frame.l4off + 8
    if end - ioff < 20:
        return False
    hoff = ioff + (d[ioff] & 0x0F) * 4
    if end - hoff < 8:
        return False
    if mtype == MANIP_SRC:
        new_addr, new_port, aoff, poff = t.src, t.sport, ioff + 12, hoff
    else:
        new_addr, new_port, aoff, poff = t.dst, t.dport, ioff + 16, hoff + 2
    old_addr = _I.unpack_from(d, aoff)[0]
    proto = d[ioff + 9]
    if proto in (IPPROTO_TCP, IPPROTO_UDP):
        old_port = _H.unpack_from(d, poff)[0]
        _H.pack_into(d, poff, new_port)
        coff = hoff + (16 if proto == IPPROTO_TCP else 6)
        if proto == IPPROTO_UDP or end - hoff >= 20:
            c = _H.unpack_from(d, coff)[0]
            if proto == IPPROTO_TCP or c != 0:
                c = csum_replace(csum_replace32(c, old_addr, new_addr), old_port, new_port)
                if proto == IPPROTO_UDP and c == 0:
                    c = 0xFFFF
                _H.pack_into(d, coff, c)
    elif proto == IPPROTO_SCTP:
        _H.pack_into(d, poff, new_port)
        if end - hoff >= SCTP_HLEN:      # the kernel's CRC runs from the quoted header to skb end
            sctp_set_cksum(d, hoff, end)
    elif proto == IPPROTO_ICMP and d[hoff] in ICMP_INVERSE:
        old_id = _H.unpack_from(d, hoff + 4)[0]
        _H.pack_into(d, hoff + 4, t.sport)
        _H.pack_into(d, hoff + 2, csum_replace(_H.unpack_from(d, hoff + 2)[0], old_id, t.sport))
    if old_addr != new_addr:
        _I.pack_into(d, aoff, new_addr)
        _H.pack_into(d, ioff + 10, csum_replace32(_H.unpack_from(d, ioff + 10)[0], old_addr, new_addr))
    return True


def quoted_str(frame: Frame) -> str:
    """`10.0.1.2:40000 > 10.0.2.2:8080` for the packet an ICMP error quotes (for notes)."""
    t = tuple_at(frame.data, frame.l4off + 8, ip_end(frame.data))
    return str(t) if t is not None else "?"
