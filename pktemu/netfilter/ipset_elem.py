"""ipset elements: their text (as `ipset add` reads and `ipset save` prints it), the kernel's
hash key bytes (for the bucket order `ipset save` lists), and the packet's side of a lookup.

An element is a tuple per type: hash:ip (ip,), hash:net (ip, cidr), hash:ip,port (ip, proto,
port), hash:ip,port,ip (ip, proto, port, ip2), hash:ip,port,net (ip, proto, port, ip2, cidr),
bitmap:port (port,), list:set (name,).
"""
from __future__ import annotations

import ipaddress
import struct
from typing import TYPE_CHECKING

from pktemu.errors import PktemuError, excerpt

if TYPE_CHECKING:
    from pktemu.netfilter.xt_base import Pkt

Elem = tuple[int | str, ...]

#: ipset's lib/icmp.c names, first name of a type/code wins when printing
ICMP_NAMES: tuple[tuple[str, int, int], ...] = (
    ("echo-reply", 0, 0), ("pong", 0, 0), ("network-unreachable", 3, 0), ("host-unreachable", 3, 1),
    ("protocol-unreachable", 3, 2), ("port-unreachable", 3, 3), ("fragmentation-needed", 3, 4),
    ("source-route-failed", 3, 5), ("network-unknown", 3, 6), ("host-unknown", 3, 7),
    ("network-prohibited", 3, 9), ("host-prohibited", 3, 10), ("TOS-network-unreachable", 3, 11),
    ("TOS-host-unreachable", 3, 12), ("communication-prohibited", 3, 13),
    ("host-precedence-violation", 3, 14), ("precedence-cutoff", 3, 15), ("source-quench", 4, 0),
    ("network-redirect", 5, 0), ("host-redirect", 5, 1), ("TOS-network-redirect", 5, 2),
    ("TOS-host-redirect", 5, 3), ("echo-request", 8, 0), ("ping", 8, 0), ("router-advertisement", 9, 0),
    ("router-solicitation", 10, 0), ("ttl-zero-during-transit", 11, 0),
    ("ttl-zero-during-reassembly", 11, 1), ("ip-header-bad", 12, 0), ("required-option-missing", 12, 1),
    ("timestamp-request", 13, 0), ("timestamp-reply", 14, 0), ("address-mask-request", 17, 0),
    ("address-mask-reply", 18, 0),
)
_ICMP_BY_NAME = {n.lower(): (t, c) for n, t, c in ICMP_NAMES}
_ICMP_TEXT: dict[int, str] = {}
for _n, _t, _c in ICMP_NAMES:
    _ICMP_TEXT.setdefault(_t << 8 | _c, _n)
PROTOS = {"tcp": 6, "udp": 17, "sctp": 132, "udplite": 136, "icmp": 1, "gre": 47, "esp": 50, "ah": 51}
PROTO_NAMES = {v: k for k, v in PROTOS.items()}
PORT_PROTOS = frozenset((6, 17, 132, 136))
SERVICES = {"ftp": 21, "ssh": 22, "telnet": 23, "smtp": 25, "domain": 53, "http": 80, "www": 80,
            "pop3": 110, "ntp": 123, "imap": 143, "snmp": 161, "https": 443, "syslog": 514}

#: per type: the dimensions, in order ("ip", "port", "net", "set")
DIMS = {"hash:ip": ("ip",), "hash:net": ("net",), "hash:ip,port": ("ip", "port"),
        "hash:ip,port,ip": ("ip", "port", "ip"), "hash:ip,port,net": ("ip", "port", "net"),
        "bitmap:port": ("port",), "list:set": ("set",)}


def _dec(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _ip(text: str) -> int:
    try:
        return int(ipaddress.IPv4Address(text))
    except ValueError:
        raise PktemuError(f"bad IPv4 address {excerpt(text)}") from None


def ip_text(v: int) -> str:
    return str(ipaddress.IPv4Address(v))


def _net(text: str, zero_ok: bool = False) -> list[tuple[int, int]]:
    """`a.b.c.d[/n]` or `a-b` (split into CIDRs as the kernel does, lowest first)."""
    if "-" in text:
        lo, _, hi = text.partition("-")
        a, b = _ip(lo), _ip(hi)
        if a > b:
            raise PktemuError(f"bad range {excerpt(text)}: first address above last")
        return [(int(n.network_address), n.prefixlen) for n in
                ipaddress.summarize_address_range(ipaddress.IPv4Address(a), ipaddress.IPv4Address(b))]
    addr, slash, plen = text.partition("/")
    cidr = 32
    if slash:
        if not _dec(plen) or not (0 if zero_ok else 1) <= int(plen) <= 32:
            raise PktemuError(f"the CIDR parameter of the IP address is invalid: {excerpt(text)}")
        cidr = int(plen)
    mask = (0xFFFFFFFF << (32 - cidr)) & 0xFFFFFFFF
    return [(_ip(addr) & mask, cidr)]


def _port(text: str, with_proto: bool) -> tuple[int, int]:
    """`[proto:]port` -> (proto, port); ICMP's port is type << 8 | code (a name or `type/code`)."""
    proto, colon, rest = text.partition(":")
    if not colon or not with_proto:
        proto, rest = "tcp", text
    p = PROTOS.get(proto.lower())
    if p is None:
        if not _dec(proto) or int(proto) > 255:
            raise PktemuError(f"unknown protocol {excerpt(proto)} (tcp, udp, sctp, udplite, icmp, gre, "
                              "esp, ah or a number)")
        p = int(proto)
    if p == 1:
        if rest.lower() in _ICMP_BY_NAME:
            t, c = _ICMP_BY_NAME[rest.lower()]
            return 1, t << 8 | c
        t_s, slash, c_s = rest.partition("/")
        if not (slash and _dec(t_s) and _dec(c_s) and int(t_s) < 256 and int(c_s) < 256):
            raise PktemuError(f"bad ICMP type {excerpt(rest)} (a name like echo-request, or type/code)")
        return 1, int(t_s) << 8 | int(c_s)
    if rest.lower() in SERVICES:
        return p, SERVICES[rest.lower()]
    if not _dec(rest) or int(rest) > 0xFFFF:
        raise PktemuError(f"bad port {excerpt(rest)} (0-65535; port ranges are not modelled)")
    if p not in PORT_PROTOS and int(rest) != 0:
        raise PktemuError(f"protocol {proto} has no ports: write {proto}:0")
    return p, int(rest)


def port_text(proto: int, port: int) -> str:
    name = PROTO_NAMES.get(proto, str(proto))
    if proto == 1:
        return f"icmp:{_ICMP_TEXT.get(port) or f'{port >> 8}/{port & 255}'}"
    return f"{name}:{port}"


def parse_elem(kind: str, text: str, lo: int = 0, hi: int = 0xFFFF) -> list[Elem]:
    """The elements `ipset add SET TEXT` means (a range or CIDR of hash:ip is one per address)."""
    parts = text.split(",")
    dims = DIMS[kind]
    if len(parts) != len(dims):
        raise PktemuError(f"element {excerpt(text)} has {len(parts)} part(s); {kind} has {len(dims)}")
    if kind == "list:set":
        return [(text,)]
    if kind == "bitmap:port":
        a, dash, b = text.partition("-")
        pa = _port(a, False)[1]
        pb = _port(b, False)[1] if dash else pa
        if not (lo <= pa <= pb <= hi):
            raise PktemuError(f"port {excerpt(text)} is outside of the range of the set ({lo}-{hi})")
        return [(p,) for p in range(pa, pb + 1)]
    first: list[tuple[int, int]]
    if dims[0] == "net":
        return [(ip, c) for ip, c in _net(parts[0])]
    first = _net(parts[0], zero_ok=False)
    if sum(1 << (32 - c) for _, c in first) > 65536:
        raise PktemuError(f"{excerpt(parts[0])} is more than 65536 addresses")
    ips = [ip + i for ip, c in first for i in range(1 << (32 - c))]
    if kind == "hash:ip":
        return [(ip,) for ip in ips]
    proto, port = _port(parts[1], True)
    if kind == "hash:ip,port":
        return [(ip, proto, port) for ip in ips]
    if kind == "hash:ip,port,ip":
        ip2 = _ip(parts[2])
        return [(ip, proto, port, ip2) for ip in ips]
    return [(ip, proto, port, ip2, c) for ip in ips for ip2, c in _net(parts[2])]


def elem_text(kind: str, e: Elem) -> str:
    if kind == "list:set":
        return str(e[0])
    if kind == "bitmap:port":
        return str(e[0])
    ip = ip_text(int(e[0]))
    if kind == "hash:ip":
        return ip
    if kind == "hash:net":
        return ip if e[1] == 32 else f"{ip}/{e[1]}"
    pt = port_text(int(e[1]), int(e[2]))
    if kind == "hash:ip,port":
        return f"{ip},{pt}"
    ip2 = ip_text(int(e[3]))
    if kind == "hash:ip,port,ip":
        return f"{ip},{pt},{ip2}"
    return f"{ip},{pt},{ip2}" + ("" if e[4] == 32 else f"/{e[4]}")


def key_words(kind: str, e: Elem) -> tuple[int, ...]:
    """The element struct the kernel hashes (hash_*4_elem with flags zero), as host-order u32s."""
    if kind == "hash:ip":
        b = struct.pack("!I", e[0])
    elif kind == "hash:net":
        b = struct.pack("!IHBB", e[0], 0, 0, e[1])
    elif kind == "hash:ip,port":
        b = struct.pack("!IHBB", e[0], e[2], e[1], 0)
    elif kind == "hash:ip,port,ip":
        b = struct.pack("!IIHBB", e[0], e[3], e[2], e[1], 0)
    else:
        b = struct.pack("!IIHBB", e[0], e[3], e[2], (int(e[4]) - 1) & 0x7F, e[1])
    return struct.unpack(f"<{len(b) // 4}I", b)


def _rol(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & 0xFFFFFFFF


def _final(a: int, b: int, c: int) -> int:
    m = 0xFFFFFFFF
    c ^= b
    c = (c - _rol(b, 14)) & m
    a ^= c
    a = (a - _rol(c, 11)) & m
    b ^= a
    b = (b - _rol(a, 25)) & m
    c ^= b
    c = (c - _rol(b, 16)) & m
    a ^= c
    a = (a - _rol(c, 4)) & m
    b ^= a
    b = (b - _rol(a, 14)) & m
    c ^= b
    c = (c - _rol(b, 24)) & m
    return c


def _mix(a: int, b: int, c: int) -> tuple[int, int, int]:
    m = 0xFFFFFFFF
    a = (a - c) & m
    a ^= _rol(c, 4)
    c = (c + b) & m
    b = (b - a) & m
    b ^= _rol(a, 6)
    a = (a + c) & m
    c = (c - b) & m
    c ^= _rol(b, 8)
    b = (b + a) & m
    a = (a - c) & m
    a ^= _rol(c, 16)
    c = (c + b) & m
    b = (b - a) & m
    b ^= _rol(a, 19)
    a = (a + c) & m
    c = (c - b) & m
    c ^= _rol(b, 4)
    b = (b + a) & m
    return a, b, c


def jhash2(k: tuple[int, ...], initval: int) -> int:
    """linux/jhash.h jhash2 (lookup3)."""
    m = 0xFFFFFFFF
    a = b = c = (0xDEADBEEF + (len(k) << 2) + initval) & m
    i, n = 0, len(k)
    while n > 3:
        a, b, c = (a + k[i]) & m, (b + k[i + 1]) & m, (c + k[i + 2]) & m
        a, b, c = _mix(a, b, c)
        i, n = i + 3, n - 3
    if n == 0:
        return c
    if n == 3:
        c = (c + k[i + 2]) & m
    if n >= 2:
        b = (b + k[i + 1]) & m
    a = (a + k[i]) & m
    return _final(a, b, c)


def packet_elem(kind: str, p: "Pkt", flags: tuple[bool, ...]) -> Elem | None:
    """The packet's element for a lookup (flags: True = src, per dimension); None when the packet
    has none (a fragment for a port dimension), as ip_set_get_ip4_port fails."""
    dims = DIMS[kind]
    out: list[int | str] = []
    for d, src in zip(dims, flags, strict=False):
        if d in ("ip", "net"):
            out.append(p.saddr if src else p.daddr)
            if d == "net":
                out.append(32)
        else:
            if p.fragoff:
                return None
            proto = p.proto
            if proto in PORT_PROTOS:
                if p.sport < 0:
                    return None
                port = p.sport if src else p.dport
            elif proto == 1:
                data = p.frame.data
                if len(data) < p.l4off + 2:
                    return None
                port = data[p.l4off] << 8 | data[p.l4off + 1]
            else:
                port = 0
            if kind == "bitmap:port":
                if proto not in PORT_PROTOS:
                    return None
                out.append(port)
            else:
                out += [proto, port]
    return tuple(out)
