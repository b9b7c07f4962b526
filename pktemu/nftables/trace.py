"""The `packet:` line of `nft monitor trace` (nftables 1.0.6), from the frame a base chain sees.

The kernel sends each base chain's first trace event with the packet's headers (nf_tables_trace.c:
the link-layer header on the receive path, the network header, 20 bytes of the transport header)
and nft prints what it decodes of them, then the rest of those 20 bytes as `@th,64,N 0x...`:

    iif "vb" ether saddr 02:00:00:00:00:0a ether daddr 02:00:00:00:00:0b ip saddr 10.9.0.1
    ip daddr 10.9.0.2 ip dscp cs0 ip ecn not-ect ip ttl 64 ip id 3376 ip length 84 icmp type
    echo-request icmp code net-unreachable icmp id 4660 icmp sequence 7 @th,64,96 0x102030405060708090a0b

(checked against this machine's kernel: tests/test_nftables_fidelity.py).
"""
from __future__ import annotations

import struct
from typing import Any

from pktemu.net.frame import ETH_HLEN, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, bytes2mac, int2ip
from pktemu.netfilter.core import FORWARD, INPUT, PREROUTING

TRANSPORT_HSIZE = 20        # NFT_TRACETYPE_TRANSPORT_HSIZE
_ECN = ("not-ect", "ect1", "ect0", "ce")
_DSCP = {0: "cs0", 8: "cs1", 16: "cs2", 24: "cs3", 32: "cs4", 40: "cs5", 48: "cs6", 56: "cs7", 10: "af11",
         12: "af12", 14: "af13", 18: "af21", 20: "af22", 22: "af23", 26: "af31", 28: "af32", 30: "af33",
         34: "af41", 36: "af42", 38: "af43", 46: "ef", 44: "va", 1: "lephb"}
_ICMP_TYPES = {0: "echo-reply", 3: "destination-unreachable", 4: "source-quench", 5: "redirect",
               8: "echo-request", 9: "router-advertisement", 10: "router-solicitation", 11: "time-exceeded",
               12: "parameter-problem", 13: "timestamp-request", 14: "timestamp-reply", 15: "info-request",
               16: "info-reply", 17: "address-mask-request", 18: "address-mask-reply"}
_ICMP_CODES = {0: "net-unreachable", 1: "host-unreachable", 2: "prot-unreachable", 3: "port-unreachable",
               4: "frag-needed", 9: "net-prohibited", 10: "host-prohibited", 13: "admin-prohibited"}
_TCP_FLAGS = {0x01: "fin", 0x02: "syn", 0x04: "rst", 0x08: "psh", 0x10: "ack", 0x20: "urg", 0x40: "ecn",
              0x80: "cwr"}
_RECEIVE_HOOKS = (PREROUTING, INPUT, FORWARD)


def _rest(th: bytes, decoded: int) -> str:
    """The transport bytes nft did not decode, as one big-endian number (`@th,OFF,BITS 0x...`)."""
    rest = th[decoded:TRANSPORT_HSIZE]
    return f" @th,{decoded * 8},{len(rest) * 8} 0x{int.from_bytes(rest, 'big'):x}" if rest else ""


def packet_line(frame: Any, hook: str, in_dev: str | None, out_dev: str | None) -> str:
    """What follows `packet:` for this frame at this hook, with nft's trailing space."""
    d = bytes(frame.data)
    out = []
    if in_dev:
        out.append(f'iif "{in_dev}"')
    if out_dev:
        out.append(f'oif "{out_dev}"')
    if in_dev and hook in _RECEIVE_HOOKS:
        if in_dev == "lo":
            out.append("@ll,0,112 0x800")
        else:
            out.append(f"ether saddr {bytes2mac(frame.src_mac)} ether daddr {bytes2mac(frame.dst_mac)}")
    ip = ETH_HLEN
    tos, length, ident = d[ip + 1], *struct.unpack_from("!HH", d, ip + 2)
    dscp = tos >> 2
    out.append(f"ip saddr {int2ip(frame.saddr)} ip daddr {int2ip(frame.daddr)} "
               f"ip dscp {_DSCP.get(dscp, f'0x{dscp:02x}')} ip ecn {_ECN[tos & 3]} ip ttl {frame.ttl} "
               f"ip id {ident} ip length {length}")
    proto, th = frame.proto, d[frame.l4off:frame.l4off + TRANSPORT_HSIZE]
    if proto == IPPROTO_UDP and len(th) >= 8:
        sport, dport, ulen = struct.unpack_from("!HHH", th)
        out.append(f"udp sport {sport} udp dport {dport} udp length {ulen}{_rest(th, 8)}")
    elif proto == IPPROTO_TCP and len(th) >= 20:
        sport, dport = struct.unpack_from("!HH", th)
        flags, window = th[13], struct.unpack_from("!H", th, 14)[0]
        names = _TCP_FLAGS.get(flags, f"0x{flags:x}")
        out.append(f"tcp sport {sport} tcp dport {dport} tcp flags == {names} tcp window {window}")
    elif proto == IPPROTO_ICMP and len(th) >= 8:
        itype, code = th[0], th[1]
        ident, seq = struct.unpack_from("!HH", th, 4)
        out.append(f"icmp type {_ICMP_TYPES.get(itype, itype)} icmp code {_ICMP_CODES.get(code, code)} "
                   f"icmp id {ident} icmp sequence {seq}{_rest(th, 8)}")
    else:
        out.append(f"ip protocol {proto}")
    return " ".join(out) + " "
