"""Frame: the emulator's sk_buff.

A frame is the Ethernet bytes on the wire plus the metadata the kernel keeps beside them
(mark, conntrack, bridge-netfilter state, explanation notes). Headers are read and rewritten in
place with incremental checksum updates (RFC 1624), as the kernel's NAT and TTL code does, so a
hop never rebuilds or re-dissects a packet; `scapy()` dissects lazily when a person asks.
"""
from __future__ import annotations

import socket
import struct
from typing import Any

ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
ETH_P_8021Q = 0x8100
IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_SCTP = 132
_PROTO_WORDS = {IPPROTO_ICMP: "icmp", IPPROTO_TCP: "tcp", IPPROTO_UDP: "udp", IPPROTO_SCTP: "sctp"}
ETH_HLEN = 14

BROADCAST_MAC = b"\xff" * 6

_H = struct.Struct("!H")
_I = struct.Struct("!I")


def ip2int(ip: str) -> int:
    return _I.unpack(socket.inet_aton(ip))[0]


def int2ip(v: int) -> str:
    return socket.inet_ntoa(_I.pack(v))


def mac2bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def bytes2mac(b: bytes | bytearray) -> str:
    return b.hex(":")


def checksum(data: bytes | bytearray | memoryview) -> int:
    """Internet checksum (RFC 1071) of `data`.

    The ones'-complement sum of 16-bit words is the big integer the bytes spell, modulo 0xFFFF
    (2**16 = 1 mod 0xFFFF), so one int.from_bytes does in C what a word loop does in Python.
    """
    if len(data) % 2:
        data = bytes(data) + b"\x00"
    x = int.from_bytes(data, "big")
    s = x % 0xFFFF
    if s == 0 and x:
        s = 0xFFFF
    return ~s & 0xFFFF


def csum_replace(csum: int, old: int, new: int) -> int:
    """RFC 1624 eqn. 3 for one 16-bit word: HC' = ~(~HC + ~m + m')."""
    s = (~csum & 0xFFFF) + (~old & 0xFFFF) + (new & 0xFFFF)
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def csum_replace32(csum: int, old: int, new: int) -> int:
    csum = csum_replace(csum, old >> 16, new >> 16)
    return csum_replace(csum, old & 0xFFFF, new & 0xFFFF)


class Frame:
    """Ethernet frame bytes plus per-packet kernel metadata (see module docstring)."""

    __slots__ = ("data", "mark", "ct", "ctinfo", "nf_bridge", "notes", "meta")

    def __init__(self, data: bytes | bytearray, mark: int = 0) -> None:
        self.data = bytearray(data)
        self.mark = mark
        self.ct: Any = None
        self.ctinfo: Any = None
        self.nf_bridge: Any = None
        self.notes: list[str] = []
        self.meta: dict[str, Any] = {}

    def copy(self) -> "Frame":
        """skb_clone + copy: independent bytes, same metadata (the notes list is copied too)."""
        f = Frame(self.data, self.mark)
        f.ct, f.ctinfo, f.nf_bridge = self.ct, self.ctinfo, self.nf_bridge
        f.notes = list(self.notes)
        f.meta = dict(self.meta)
        return f

    def __len__(self) -> int:
        return len(self.data)

    def scapy(self) -> Any:
        from scapy.layers.l2 import Ether
        return Ether(bytes(self.data))

    def note(self, text: str) -> None:
        self.notes.append(text)

    # ------------------------------------------------------------------ Ethernet
    @property
    def dst_mac(self) -> bytes:
        return bytes(self.data[0:6])

    @property
    def src_mac(self) -> bytes:
        return bytes(self.data[6:12])

    def set_macs(self, src: bytes, dst: bytes) -> None:
        self.data[0:6] = dst
        self.data[6:12] = src

    @property
    def ethertype(self) -> int:
        return _H.unpack_from(self.data, 12)[0]

    @property
    def is_ipv4(self) -> bool:
        return len(self.data) >= ETH_HLEN + 20 and self.data[12] == 0x08 and self.data[13] == 0x00

    @property
    def is_arp(self) -> bool:
        return self.data[12] == 0x08 and self.data[13] == 0x06

    @property
    def is_multicast(self) -> bool:
        return bool(self.data[0] & 1)

    # ------------------------------------------------------------------ IPv4
    @property
    def l4off(self) -> int:
        return ETH_HLEN + (self.data[ETH_HLEN] & 0x0F) * 4

    @property
    def ip_len(self) -> int:
        return _H.unpack_from(self.data, ETH_HLEN + 2)[0]

    @property
    def ttl(self) -> int:
        return self.data[ETH_HLEN + 8]

    @property
    def proto(self) -> int:
        return self.data[ETH_HLEN + 9]

    @property
    def saddr(self) -> int:
        return _I.unpack_from(self.data, ETH_HLEN + 12)[0]

    @property
    def daddr(self) -> int:
        return _I.unpack_from(self.data, ETH_HLEN + 16)[0]

    @property
    def df(self) -> bool:
        return bool(self.data[ETH_HLEN + 6] & 0x40)

    @property
    def is_fragment(self) -> bool:
        return bool(_H.unpack_from(self.data, ETH_HLEN + 6)[0] & 0x3FFF)

    @property
    def ip_id(self) -> int:
        return _H.unpack_from(self.data, ETH_HLEN + 4)[0]

    def ip_bytes(self) -> bytes:
        """The IP datagram (header + payload), without Ethernet header or trailing padding."""
        return bytes(self.data[ETH_HLEN:ETH_HLEN + self.ip_len])

    def _ip_csum_replace16(self, off: int, new: int) -> None:
        old = _H.unpack_from(self.data, off)[0]
        if old == new:
            return
        _H.pack_into(self.data, off, new)
        c = _H.unpack_from(self.data, ETH_HLEN + 10)[0]
        _H.pack_into(self.data, ETH_HLEN + 10, csum_replace(c, old, new))

    def dec_ttl(self) -> None:
        """ip_decrease_ttl(): TTL-1 with the header checksum fixed up incrementally."""
        off = ETH_HLEN + 8
        word = _H.unpack_from(self.data, off)[0]
        self._ip_csum_replace16(off, word - 0x0100)

    def _l4_csum_off(self) -> int | None:
        """Offset of the TCP/UDP checksum that covers the pseudo-header, None if there is none."""
        if self.is_fragment and _H.unpack_from(self.data, ETH_HLEN + 6)[0] & 0x1FFF:
            return None
        p = self.proto
        if p == IPPROTO_TCP:
            return self.l4off + 16
        if p == IPPROTO_UDP:
            off = self.l4off + 6
            return off if _H.unpack_from(self.data, off)[0] != 0 else None
        return None

    def _set_addr(self, off: int, new: int) -> None:
        old = _I.unpack_from(self.data, off)[0]
        if old == new:
            return
        _I.pack_into(self.data, off, new)
        c = _H.unpack_from(self.data, ETH_HLEN + 10)[0]
        _H.pack_into(self.data, ETH_HLEN + 10, csum_replace32(c, old, new))
        l4c = self._l4_csum_off()
        if l4c is not None and l4c + 2 <= len(self.data):
            c = _H.unpack_from(self.data, l4c)[0]
            c = csum_replace32(c, old, new)
            if self.proto == IPPROTO_UDP and c == 0:
                c = 0xFFFF
            _H.pack_into(self.data, l4c, c)

    def set_saddr(self, addr: int) -> None:
        self._set_addr(ETH_HLEN + 12, addr)

    def set_daddr(self, addr: int) -> None:
        self._set_addr(ETH_HLEN + 16, addr)

    # ------------------------------------------------------------------ TCP / UDP / ICMP
    @property
    def has_ports(self) -> bool:
        """A TCP, UDP or SCTP header's ports are here: not a later fragment, nor cut short."""
        return self.proto in (IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP) and not (
            _H.unpack_from(self.data, ETH_HLEN + 6)[0] & 0x1FFF) and ETH_HLEN + self.ip_len >= self.l4off + 4

    @property
    def sport(self) -> int:
        return _H.unpack_from(self.data, self.l4off)[0]

    @property
    def dport(self) -> int:
        return _H.unpack_from(self.data, self.l4off + 2)[0]

    def _set_port(self, rel: int, new: int) -> None:
        off = self.l4off + rel
        old = _H.unpack_from(self.data, off)[0]
        if old == new:
            return
        _H.pack_into(self.data, off, new)
        l4c = self._l4_csum_off()
        if l4c is not None:
            c = csum_replace(_H.unpack_from(self.data, l4c)[0], old, new)
            if self.proto == IPPROTO_UDP and c == 0:
                c = 0xFFFF
            _H.pack_into(self.data, l4c, c)

    def set_sport(self, port: int) -> None:
        self._set_port(0, port)

    def set_dport(self, port: int) -> None:
        self._set_port(2, port)

    @property
    def tcp_flags(self) -> int:
        return self.data[self.l4off + 13]

    @property
    def tcp_seq(self) -> int:
        return _I.unpack_from(self.data, self.l4off + 4)[0]

    @property
    def tcp_ack(self) -> int:
        return _I.unpack_from(self.data, self.l4off + 8)[0]

    @property
    def l4_payload(self) -> bytes:
        """Application bytes of a TCP or UDP packet."""
        off = self.l4off
        end = ETH_HLEN + self.ip_len
        if self.proto == IPPROTO_TCP:
            return bytes(self.data[off + (self.data[off + 12] >> 4) * 4:end])
        if self.proto == IPPROTO_UDP:
            return bytes(self.data[off + 8:end])
        return bytes(self.data[off:end])

    @property
    def icmp_type(self) -> int:
        return self.data[self.l4off]

    @property
    def icmp_code(self) -> int:
        return self.data[self.l4off + 1]

    @property
    def icmp_id(self) -> int:
        return _H.unpack_from(self.data, self.l4off + 4)[0]

    def set_icmp_id(self, new: int) -> None:
        off = self.l4off
        old = _H.unpack_from(self.data, off + 4)[0]
        if old != new:
            _H.pack_into(self.data, off + 4, new)
            c = _H.unpack_from(self.data, off + 2)[0]
            _H.pack_into(self.data, off + 2, csum_replace(c, old, new))

    def l4_checksum_ok(self) -> bool:
        """Does the TCP/UDP checksum (pseudo-header included) verify? UDP checksum 0 means none."""
        off = self.l4off
        end = ETH_HLEN + self.ip_len
        proto = self.proto
        if proto == IPPROTO_UDP and _H.unpack_from(self.data, off + 6)[0] == 0:
            return True
        pseudo = bytes(self.data[ETH_HLEN + 12:ETH_HLEN + 20]) + _H.pack(proto) + _H.pack(end - off)
        return checksum(pseudo + bytes(self.data[off:end])) == 0

    def fix_icmp_checksum(self) -> None:
        """Recompute the ICMP checksum from scratch (after rewriting a quoted header)."""
        off = self.l4off
        end = ETH_HLEN + self.ip_len
        self.data[off + 2:off + 4] = b"\x00\x00"
        _H.pack_into(self.data, off + 2, checksum(self.data[off:end]))

    def summary(self) -> str:
        """`10.0.1.2:40000 > 10.3.250.77:80 tcp`: the frame as a comment names what it answers."""
        if not self.is_ipv4:
            return f"ethertype 0x{self.ethertype:04x}"
        ports = (f":{self.sport}", f":{self.dport}") if self.has_ports else ("", "")
        proto = _PROTO_WORDS.get(self.proto, f"proto {self.proto}")
        return f"{int2ip(self.saddr)}{ports[0]} > {int2ip(self.daddr)}{ports[1]} {proto}"

    def __repr__(self) -> str:
        if self.is_ipv4:
            s = f"{int2ip(self.saddr)} > {int2ip(self.daddr)} proto {self.proto}"
            if self.has_ports:
                s = (f"{int2ip(self.saddr)}:{self.sport} > {int2ip(self.daddr)}:{self.dport} "
                     f"proto {self.proto}")
            return f"<Frame {s} len {len(self.data)}>"
        return f"<Frame type 0x{self.ethertype:04x} len {len(self.data)}>"
