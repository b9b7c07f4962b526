"""ICMP: echo replies, error delivery to sockets, and the errors this host sends (net/ipv4/icmp.c).

Errors follow __icmp_send(): never about an ICMP error, a non-first fragment or a broadcast; the
quote is the offending datagram up to 576 bytes in all; TOS gets IPTOS_PREC_INTERNETCONTROL;
DF is clear; the source is the offending packet's destination when that is ours, otherwise the
preferred source of the route back (icmp_errors_use_inbound_ifaddr=0).

What the kernel answers by itself (echo replies, ICMP errors, the TCP stack's RST) leaves through
a control socket, which has no file and so no uid or gid: `-m owner --socket-exists` matches it,
`--uid-owner`/`--gid-owner` do not, and LOG --log-uid prints no UID. The REJECT target's
tcp-reset has no socket at all (nf_send_reset). Such frames carry KERNEL_SK in frame.meta.
"""
from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from pktemu.net import ipv4
from pktemu.net.frame import ETH_HLEN, IPPROTO_TCP, Frame, checksum
from pktemu.net.inetpeer import icmp_allowed

if TYPE_CHECKING:
    from pktemu.net.node import Node

IPPROTO_ICMP = 1
ICMP_ECHOREPLY, ICMP_DEST_UNREACH, ICMP_ECHO, ICMP_TIME_EXCEEDED = 0, 3, 8, 11
_ERRORS = frozenset({3, 4, 5, 11, 12})
_MAX_ERROR_LEN = 576
#: frame.meta key of a frame the kernel made: (node name, CTL_SOCK or NO_SOCK)
KERNEL_SK = "kernel_sk"
CTL_SOCK, NO_SOCK = "ctl", "none"

REJECT_CODES = {
    "icmp-net-unreachable": 0, "icmp-host-unreachable": 1, "icmp-proto-unreachable": 2,
    "icmp-port-unreachable": 3, "icmp-net-prohibited": 9, "icmp-host-prohibited": 10,
    "icmp-admin-prohibited": 13,
}


def register(node: "Node") -> None:
    node.register_protocol(IPPROTO_ICMP, lambda frame: icmp_rcv(node, frame))


def icmp_rcv(node: "Node", frame: Frame) -> None:
    off = frame.l4off
    end = ETH_HLEN + frame.ip_len
    if end - off < 8 or checksum(frame.data[off:end]) != 0:
        node.drop(frame, "icmp_rcv", "short ICMP message or bad checksum")
        return
    itype, code = frame.data[off], frame.data[off + 1]
    if itype == ICMP_ECHO:
        if node.is_broadcast(frame.daddr):
            return   # icmp_echo_ignore_broadcasts=1
        body = bytearray(frame.data[off:end])
        body[0] = ICMP_ECHOREPLY
        body[2:4] = b"\x00\x00"
        struct.pack_into("!H", body, 2, checksum(body))
        kernel_send(node, frame.daddr, frame.saddr, IPPROTO_ICMP, bytes(body), df=False)
        return
    if itype == ICMP_ECHOREPLY:
        ident = int.from_bytes(frame.data[off + 4:off + 6], "big")
        cb = node.ping_sockets.get(ident)
        if cb is None:
            node.drop(frame, "ping_rcv", f"no socket for echo reply id {ident}")
            return
        cb(frame)
        return
    if itype in _ERRORS:
        quoted = bytes(frame.data[off + 8:end])
        if len(quoted) < 20:
            return
        if quoted[9] == IPPROTO_ICMP and len(quoted) >= 28 and quoted[20] == ICMP_ECHO:
            cb = node.ping_sockets.get(int.from_bytes(quoted[24:26], "big"))
            if cb is not None:
                cb(frame)
            return
        handler = node.protocols.get(quoted[9])
        if handler is not None and handler[1] is not None:
            handler[1](itype, code, int.from_bytes(frame.data[off + 6:off + 8], "big"), quoted)


def icmp_send(node: "Node", frame: Frame, itype: int, code: int, cause: str | None = None,
              info: int = 0) -> None:
    """__icmp_send(): an error about `frame` back to its source (`cause`: the note saying why;
    `info`: the second word, the next-hop MTU of a frag-needed)."""
    if not frame.is_ipv4:
        return
    data = frame.data
    if struct.unpack_from("!H", data, ETH_HLEN + 6)[0] & 0x1FFF:
        return                                      # not about non-first fragments
    saddr_orig = frame.saddr
    if node.is_broadcast(frame.daddr) or frame.daddr >> 28 == 0xE or saddr_orig == 0:
        return
    if frame.proto == IPPROTO_ICMP:
        if ETH_HLEN + frame.ip_len <= frame.l4off:
            return                                  # no type to tell an error from a query
        t = data[frame.l4off]
        if t not in (ICMP_ECHO, ICMP_ECHOREPLY, 13, 14, 15, 16, 17, 18):
            return                                  # never an error about an error
    src = frame.daddr if node.is_local(frame.daddr) else node.source_address(saddr_orig)
    if src is None:
        return
    if not icmp_allowed(node, itype, code, saddr_orig):
        return
    room = _MAX_ERROR_LEN - 20 - 8
    quoted = bytes(data[ETH_HLEN:ETH_HLEN + min(frame.ip_len, room)])
    body = bytearray(struct.pack("!BBHI", itype, code, 0, info) + quoted)
    struct.pack_into("!H", body, 2, checksum(body))
    tos = (data[ETH_HLEN + 1] & 0x1E) | 0xC0
    kernel_send(node, src, saddr_orig, IPPROTO_ICMP, bytes(body), df=False, tos=tos,
                note=f"icmp type {itype} code {code} about {frame.summary()}", cause=cause)


def send_reject(node: "Node", frame: Frame, reject_with: str) -> None:
    """The REJECT target's answer (nf_send_unreach / nf_send_reset); the frame's last note, the
    REJECT rule's, goes on the answer so its capture says which rule sent it."""
    cause = frame.notes[-1] if frame.notes else None
    if reject_with == "tcp-reset":
        _send_reset(node, frame, cause)
        return
    icmp_send(node, frame, ICMP_DEST_UNREACH, REJECT_CODES.get(reject_with, 3), cause)


def _send_reset(node: "Node", frame: Frame, cause: str | None) -> None:
    """nf_send_reset(): a RST answering a TCP segment, never a RST for a RST."""
    if frame.proto != IPPROTO_TCP or not frame.has_ports:
        return
    off = frame.l4off
    flags = frame.tcp_flags
    if flags & 0x04:
        return
    doff = (frame.data[off + 12] >> 4) * 4
    payload_len = frame.ip_len - (off - ETH_HLEN) - doff
    if flags & 0x10:
        seq, ack, rflags = frame.tcp_ack, 0, 0x04
    else:
        seq = 0
        ack = (frame.tcp_seq + payload_len + (flags & 0x02) // 2 + (flags & 0x01)) & 0xFFFFFFFF
        rflags = 0x14
    saddr, daddr = frame.daddr, frame.saddr
    tcp = bytearray(struct.pack("!HHIIBBHHH", frame.dport, frame.sport, seq, ack, 5 << 4, rflags, 0, 0, 0))
    pseudo = struct.pack("!4s4sBBH", saddr.to_bytes(4, "big"), daddr.to_bytes(4, "big"), 0, IPPROTO_TCP, 20)
    struct.pack_into("!H", tcp, 16, checksum(pseudo + bytes(tcp)))
    kernel_send(node, saddr, daddr, IPPROTO_TCP, bytes(tcp), df=True, sock=NO_SOCK,
                note=f"tcp reset answering {frame.summary()}", cause=cause)


def kernel_send(node: "Node", saddr: int, daddr: int, proto: int, payload: bytes, *, df: bool = True,
                ttl: int = 0, tos: int = 0, sock: str = CTL_SOCK, note: str | None = None,
                cause: str | None = None) -> None:
    """ipv4.ip_send for a packet the kernel makes itself, marked with the socket it goes out by.
    With DF its IP id is 0: a control socket has no peer to count ids for (__ip_select_ident),
    and nf_reject_iphdr_put writes 0."""
    ident = 0 if df else node.next_ip_id()
    frame = ipv4.build_ip(saddr, daddr, proto, payload, ident=ident, df=df,
                          ttl=ttl or ipv4.default_ttl(node), tos=tos)
    frame.meta[KERNEL_SK] = (node.name, sock)
    if note:
        frame.note(note)
    if cause:
        frame.notes.append(cause)
    ipv4.ip_local_out(node, frame)
