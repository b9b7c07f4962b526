"""Frames grouped into flows, the way conntrack groups them: one flow per connection, across NAT.

A frame's key is its protocol and unordered pair of endpoints (the inner header of an ICMP
error, so a REJECT's port-unreachable joins the connection it refuses). Keys are joined when a
conntrack entry (in a frame's comment or in conntrack-<node>.txt) has them as its original and
reply tuples, or when a comment says `DNAT a -> b`/`SNAT a -> b` on that frame. Within a flow,
consecutive frames with the same IP id, length and TCP sequence/flags are one packet seen at
successive hops: the ladder draws them joined.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pktemu.report.runread import Drop, Frame, Run

Endpoint = tuple[str, int]
Key = tuple[str, Endpoint, Endpoint]

PROTOS = {1: "icmp", 6: "tcp", 17: "udp"}
_CT = re.compile(r"src=(\S+) dst=(\S+) (?:sport=(\d+) dport=(\d+)|type=\d+ code=\d+ id=(\d+))")
_CT_LINE = re.compile(r"^(?:.*: )?(tcp|udp|icmp)\s+\d+\s+\d+\s.*$", re.M)
NAT = re.compile(r"\b(?:un-)?(?:DNAT|SNAT|MASQUERADE)\s+(\S+) -> ([^\s;,]+)")
_TCP_FLAGS = [("S", "SYN"), ("F", "FIN"), ("R", "RST"), ("P", "PSH"), ("A", "ACK")]


@dataclass
class Hop:
    frame: Frame
    label: str                      # addresses and what the packet is, as seen at this point
    packet: int                     # which packet of the flow (same number at each of its hops)
    nat: list[str] = field(default_factory=list)   # "DNAT a -> b" lines of this frame's comment


@dataclass
class Flow:
    key: Key
    title: str
    hops: list[Hop] = field(default_factory=list)
    drops: list[Drop] = field(default_factory=list)

    @property
    def points(self) -> list[str]:
        return list(dict.fromkeys(h.frame.point for h in self.hops))


def _ep(addr: str, port: int | None) -> Endpoint:
    return (addr, port or 0)


def _key(proto: str, a: Endpoint, b: Endpoint) -> Key:
    lo, hi = sorted((a, b))
    return (proto, lo, hi)


@dataclass
class Decoded:
    key: Key
    label: str
    sig: tuple[object, ...]
    ends: str = ""                  # "a:p → b:q", for the flow's title
    datagram: tuple[str, str, int, int] | None = None   # src, dst, proto, IP id of a fragment
    later_fragment: bool = False    # a fragment past the first: no ports, its flow is its first's


#: Link types whose frames begin with the IP header (pcap LINKTYPE_RAW, LINKTYPE_IPV4, and RAW as
#: some systems number it): an IPIP device's captures.
RAW_IP = {101, 228, 12, 14}


def decode(data: bytes, linktype: int = 1) -> Decoded:
    """What the ladder writes at a hop, and the keys that tie the frame to its flow and packet."""
    from scapy.layers.inet import IP  # a report dissects
    from scapy.layers.l2 import ARP, Ether
    from scapy.packet import Packet, Raw

    pkt: Packet
    if linktype in RAW_IP:
        pkt = IP(data) if data[:1] and data[0] >> 4 == 4 else Raw(data)
    elif linktype != 1:
        pkt = Raw(data)
    else:
        pkt = Ether(data)
    if ARP in pkt:
        a = pkt[ARP]
        label = (f"ARP who-has {a.pdst} tell {a.psrc}" if a.op == 1 else f"ARP {a.psrc} is-at {a.hwsrc}")
        return Decoded(("arp", (a.pdst if a.op == 1 else a.psrc, 0), ("", 0)), label, ("arp", a.op, a.psrc))
    if IP not in pkt:
        return Decoded(("other", ("", 0), ("", 0)), pkt.summary(), ("other", bytes(pkt)))
    ip, tunnel = _tunnelled(pkt[IP])
    d = _decode_datagram(ip)
    if tunnel:
        d.label += f" in {tunnel}"
    return d


def _tunnelled(ip: Any) -> tuple[Any, str]:
    """The IP packet an IPIP or VXLAN packet carries and the tunnel in words, else `ip` and "": a
    connection's frames on the underlay belong to its flow, not to one of the tunnel's."""
    from scapy.layers.inet import IP
    from scapy.layers.vxlan import VXLAN

    if ip.proto == 4 and not ip.frag and isinstance(ip.payload, IP):
        return ip.payload, f"ipip {ip.src} → {ip.dst}"
    if not ip.frag and VXLAN in ip and IP in ip[VXLAN]:
        return ip[VXLAN][IP], f"vxlan {ip.src} → {ip.dst} vni {ip[VXLAN].vni}"
    return ip, ""


def _decode_datagram(ip: Any) -> Decoded:
    """`decode` of an IPv4 packet; a fragment past the first, which has no ports, is marked."""
    proto = PROTOS.get(ip.proto, str(ip.proto))
    sig: tuple[object, ...] = (ip.id, ip.proto, len(ip.payload), ip.frag)
    if ip.frag or ip.flags.MF:
        datagram = (ip.src, ip.dst, ip.proto, ip.id)
        if ip.frag:
            return Decoded(_key(proto, _ep(ip.src, 0), _ep(ip.dst, 0)),
                           f"{ip.src} → {ip.dst} {proto.upper()} fragment offset {ip.frag * 8} "
                           f"len={len(ip.payload)}", sig, datagram=datagram, later_fragment=True)
        first = _decode_ip(ip, proto, sig)
        first.datagram = datagram
        return first
    return _decode_ip(ip, proto, sig)


def _decode_ip(pkt: Any, proto: str, sig: tuple[object, ...]) -> Decoded:
    """`decode` of an IPv4 packet (`pkt`, its IP layer), or of its first fragment, by its transport
    header."""
    from scapy.layers.inet import ICMP, TCP, UDP, ICMPerror, IPerror, TCPerror, UDPerror

    ip = pkt
    if TCP in pkt and TCPerror not in pkt:
        t = pkt[TCP]
        flags = ",".join(n for c, n in _TCP_FLAGS if c in str(t.flags))
        size = len(t.payload)
        ends = f"{ip.src}:{t.sport} → {ip.dst}:{t.dport}"
        label = f"{ends} {flags}" + (f" len={size}" if size else "")
        return Decoded(_key(proto, _ep(ip.src, t.sport), _ep(ip.dst, t.dport)), label,
                       sig + (t.seq, t.ack, str(t.flags)), ends)
    if UDP in pkt and UDPerror not in pkt:
        u = pkt[UDP]
        ends = f"{ip.src}:{u.sport} → {ip.dst}:{u.dport}"
        return Decoded(_key(proto, _ep(ip.src, u.sport), _ep(ip.dst, u.dport)),
                       f"{ends} UDP len={len(u.payload)}", sig, ends)
    if ICMP in pkt:
        ic = pkt[ICMP]
        if IPerror in pkt:
            inner = pkt[IPerror]
            l4 = inner[TCPerror] if TCPerror in inner else inner[UDPerror] if UDPerror in inner else None
            sp, dp = (l4.sport, l4.dport) if l4 is not None else (0, 0)
            iproto = PROTOS.get(inner.proto, str(inner.proto))
            about = f"{inner.src}:{sp} → {inner.dst}:{dp} {iproto}"
            if ICMPerror in inner and inner[ICMPerror].id is not None:    # about an echo: its flow's key
                sp = dp = inner[ICMPerror].id
                about = f"{inner.src} → {inner.dst} {iproto} id={sp}"
            label = f"{ip.src} → {ip.dst} ICMP type {ic.type} code {ic.code} (about {about})"
            return Decoded(_key(iproto, _ep(inner.src, sp), _ep(inner.dst, dp)), label, sig)
        label = f"{ip.src} → {ip.dst} ICMP type {ic.type} id={ic.id} seq={ic.seq}"
        ends = f"{ip.src} → {ip.dst} id={ic.id}" if ic.id is not None else ""
        return Decoded(_key(proto, _ep(ip.src, ic.id), _ep(ip.dst, ic.id)), label, sig + (ic.seq,), ends)
    return Decoded(_key(proto, _ep(ip.src, 0), _ep(ip.dst, 0)), f"{ip.src} → {ip.dst} proto {ip.proto}", sig)


class _Union:
    def __init__(self) -> None:
        self.parent: dict[Key, Key] = {}

    def find(self, k: Key) -> Key:
        self.parent.setdefault(k, k)
        while self.parent[k] != k:
            self.parent[k] = self.parent[self.parent[k]]
            k = self.parent[k]
        return k

    def join(self, a: Key, b: Key) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _ct_keys(text: str) -> list[tuple[Key, Key]]:
    """(original, reply) keys of every conntrack entry written in `text`."""
    out = []
    for m in _CT_LINE.finditer(text):
        tuples = _CT.findall(m.group(0))
        if len(tuples) >= 2:
            (s1, d1, sp1, dp1, id1), (s2, d2, sp2, dp2, id2) = tuples[:2]
            proto = m.group(1)
            a = _key(proto, _ep(s1, int(sp1 or id1 or 0)), _ep(d1, int(dp1 or id1 or 0)))
            b = _key(proto, _ep(s2, int(sp2 or id2 or 0)), _ep(d2, int(dp2 or id2 or 0)))
            out.append((a, b))
    return out


def _nat_key(key: Key, old: str, new: str) -> Key | None:
    """`key` with endpoint `old` (addr[:port]) replaced by `new`, or None if it has no such endpoint."""
    def parse(s: str) -> Endpoint | None:
        addr, _, port = s.partition(":")
        return (addr, int(port)) if port.isdigit() else (addr, -1)
    o, n = parse(old), parse(new)
    if o is None or n is None:
        return None
    eps = [key[1], key[2]]
    for i, ep in enumerate(eps):
        if ep[0] == o[0] and (o[1] in (-1, ep[1])):
            eps[i] = (n[0], ep[1] if n[1] == -1 else n[1])
            return _key(key[0], eps[0], eps[1])
    return None


def build_flows(run: Run) -> list[Flow]:
    """The run's flows in the order of their first frame, IP flows first, then ARP and the rest."""
    decoded = [decode(f.data, f.linktype) for f in run.frames]
    first_fragment: dict[tuple[str, str, int, int], Key] = {}
    for d in decoded:
        if d.datagram is not None and not d.later_fragment:
            first_fragment[d.datagram] = d.key
        elif d.datagram is not None and d.datagram in first_fragment:
            d.key = first_fragment[d.datagram]
    uf = _Union()
    for f, d in zip(run.frames, decoded, strict=True):
        uf.find(d.key)
        for a, b in _ct_keys(f.comment):
            uf.join(a, b)
        for old, new in NAT.findall(f.comment):
            for was, now in ((old, new), (new, old)):      # the frame as it was, or as translated
                k = _nat_key(d.key, was, now)
                if k is not None:
                    uf.join(d.key, k)
    for text in run.conntrack.values():
        for a, b in _ct_keys(text):
            if a in uf.parent or b in uf.parent:
                uf.join(a, b)
    flows: dict[Key, Flow] = {}
    last_sig: dict[Key, tuple[object, ...]] = {}
    for f, d in zip(run.frames, decoded, strict=True):
        root = uf.find(d.key)
        flow = flows.get(root)
        if flow is None:
            flow = flows[root] = Flow(root, _title(d))
        if last_sig.get(root) != d.sig or not flow.hops:
            packet = (flow.hops[-1].packet + 1) if flow.hops else 0
        else:
            packet = flow.hops[-1].packet
        last_sig[root] = d.sig
        nat = [m.group(0) for m in re.finditer(r"\b(?:un-)?(?:DNAT|SNAT|MASQUERADE)\s+\S+ -> [^\s;,]+",
                                               f.comment)]
        flow.hops.append(Hop(f, d.label, packet, nat))
    for drop in run.drops:
        drop_root = _drop_flow(uf, drop)
        if drop_root is not None and drop_root in flows:
            flows[drop_root].drops.append(drop)
    ordered = list(flows.values())
    return [f for f in ordered if f.key[0] not in ("arp", "other")] + \
           [f for f in ordered if f.key[0] in ("arp", "other")]


def _drop_flow(uf: _Union, drop: Drop) -> Key | None:
    """The flow of a dropped frame: by its addresses and ports, or, for a frame without ports (an
    ICMP echo), by its addresses when they belong to one flow only."""
    if drop.tuple is None:
        return None
    proto, src, sport, dst, dport = drop.tuple
    name = PROTOS.get(proto, str(proto))
    if sport is not None and dport is not None:
        k = _key(name, (src, sport), (dst, dport))
        return uf.find(k) if k in uf.parent else None
    roots = {uf.find(k) for k in list(uf.parent) if k[0] == name and {k[1][0], k[2][0]} == {src, dst}}
    return roots.pop() if len(roots) == 1 else None


def _title(d: Decoded) -> str:
    if d.key[0] == "arp":
        return f"ARP for {d.key[1][0]}"
    if d.key[0] == "other":
        return "other frames"
    return f"{d.key[0].upper()} {d.ends}" if d.ends else d.label


def flow_nat_summary(flow: Flow) -> str:
    """`DNAT 10.3.241.152:80 -> 10.0.2.2:8080 at node1/cbr0`, one per distinct translation."""
    seen = dict.fromkeys(f"{n} at {h.frame.point}" for h in flow.hops for n in h.nat)
    return "; ".join(seen)


def unmatched_drops(run: Run, flows: list[Flow]) -> list[Drop]:
    placed = {id(d) for f in flows for d in f.drops}
    return [d for d in run.drops if id(d) not in placed]
