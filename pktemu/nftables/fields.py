"""The packet fields a rule reads (nft's payload, meta, ct, fib and numgen expressions).

Each field knows the text `nft list` prints for it, its key type, and how to read it from a
frame at a hook; a reader returns None where the kernel's expression would break the rule (no
transport header, no conntrack entry).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from pktemu.netfilter.core import IP_CT_IS_REPLY, UNTRACKED
from pktemu.netfilter.xt_base import Pkt
from pktemu.nftables.values import CT_STATE_BITS, FIB_TYPES, FLAG_NAMES

Reader = Callable[[Pkt, Any], "int | None"]

_CTINFO_STATE = (2, 4, 8)        # ctinfo % IP_CT_IS_REPLY: established, related, new


@dataclass
class Field:
    """One readable field: print text, key type (see values.KEY_TYPES) and its reader."""
    text: str
    type: str
    read: Reader
    proto: int | None = None         # tcp/udp payload: the l4 protocol it depends on
    top: int | None = None           # the largest value of a field narrower than its type
    raw: bool = False                # given as `@base,off,len`: its value is read as an integer

    @property
    def flags(self) -> bool:
        return self.type in FLAG_NAMES


def _th(off: int, proto: int | None) -> Reader:
    """One shared reader per (offset, protocol): every rule's `tcp dport` calls the same function,
    which stays in cache however many rules there are."""
    read = _TH.get((off, proto))
    if read is None:
        read = _TH[(off, proto)] = _th_new(off, proto)
    return read


def _th_new(off: int, proto: int | None) -> Reader:
    def read(p: Pkt, state: Any) -> int | None:
        if proto is not None and p.proto != proto:
            return None
        if p.fragoff:
            return None
        d = p.frame.data
        at = p.l4off + off
        if len(d) < at + 2:
            return None
        return (d[at] << 8) | d[at + 1]
    return read


def _ct_state(p: Pkt, state: Any) -> int | None:
    frame = p.frame
    ct = frame.ct
    if ct is None:
        return CT_STATE_BITS["invalid"]
    if ct is UNTRACKED:
        return CT_STATE_BITS["untracked"]
    return _CTINFO_STATE[frame.ctinfo % IP_CT_IS_REPLY]


def _ct_attr(name: str) -> Reader:
    def read(p: Pkt, state: Any) -> int | None:
        ct = p.frame.ct
        if ct is None or ct is UNTRACKED:
            return None
        v: int = getattr(ct, name)
        return v
    return read


def _dev(attr: str) -> Reader:
    def read(p: Pkt, state: Any) -> int | None:
        name = getattr(state, attr)
        if name is None:
            return None
        return int.from_bytes(name.encode()[:16].ljust(16, b"\0"), "big")
    return read


def _fib(addr: str) -> Reader:
    def read(p: Pkt, state: Any) -> int | None:
        kind = str(state.node.addr_type(getattr(p, addr))).lower()
        return FIB_TYPES.index(kind) if kind in FIB_TYPES else 0
    return read


_TH: dict[tuple[int, int | None], Reader] = {}


def _saddr(p: Pkt, s: Any) -> int:
    return p.saddr


def _daddr(p: Pkt, s: Any) -> int:
    return p.daddr


def _proto(p: Pkt, s: Any) -> int:
    return p.proto


def _ttl(p: Pkt, s: Any) -> int:
    return p.ttl


def _ip_len(p: Pkt, s: Any) -> int:
    return p.ip_len


def _nfproto(p: Pkt, s: Any) -> int:
    return 2            # NFPROTO_IPV4: the chains run IPv4 packets only


def _mark(p: Pkt, s: Any) -> int:
    mark: int = p.frame.mark
    return mark


#: the readers that are a plain attribute of the packet (steps.eq_step reads those directly)
DIRECT_READS = {"saddr": _saddr, "daddr": _daddr, "proto": _proto, "tcp dport": _th(2, 6),
                "udp dport": _th(2, 17)}
_CT_STATUS, _CT_MARK = _ct_attr("status"), _ct_attr("mark")
_DEVS = {"iifname": _dev("in_dev"), "oifname": _dev("out_dev")}
_FIBS = {"saddr": _fib("saddr"), "daddr": _fib("daddr")}
_PROTO_FIELDS = {"tcp": 6, "udp": 17, "th": None, "sctp": 132}


def lookup_field(words: list[str]) -> tuple[Field, int] | None:
    """The field the words start with and how many words it took; None if they name none."""
    w0 = words[0]
    w1 = words[1] if len(words) > 1 else ""
    if w0 == "ip":
        if w1 == "saddr":
            return Field("ip saddr", "ipv4_addr", _saddr), 2
        if w1 == "daddr":
            return Field("ip daddr", "ipv4_addr", _daddr), 2
        if w1 == "protocol":
            return Field("ip protocol", "inet_proto", _proto), 2
        if w1 == "ttl":
            return Field("ip ttl", "integer", _ttl, top=255), 2
        if w1 == "length":
            return Field("ip length", "integer", _ip_len, top=65535), 2
        return None
    if w0 in _PROTO_FIELDS and w1 in ("sport", "dport"):
        proto = _PROTO_FIELDS[w0]
        return Field(f"{w0} {w1}", "inet_service", _th(0 if w1 == "sport" else 2, proto), proto), 2
    meta = w0 == "meta"
    key = w1 if meta else w0
    n = 2 if meta else 1
    if key == "l4proto" and meta:
        return Field("meta l4proto", "inet_proto", _proto), 2
    if key == "nfproto" and meta:
        return Field("meta nfproto", "nfproto", _nfproto), 2
    if key == "mark":
        return Field("meta mark", "mark", _mark), n
    if key in ("iifname", "oifname"):
        return Field(key, "ifname", _DEVS[key]), n
    if w0 == "ct":
        if w1 == "state":
            return Field("ct state", "ct_state", _ct_state), 2
        if w1 == "status":
            return Field("ct status", "ct_status", _CT_STATUS), 2
        if w1 == "mark":
            return Field("ct mark", "mark", _CT_MARK), 2
        return None
    if w0 == "fib" and w1 in ("saddr", "daddr") and words[2:3] == ["type"]:
        return Field(f"fib {w1} type", "fib_type", _FIBS[w1]), 3
    return None
