"""What a trace records: one traced packet's events, hop by hop, as plain data.

Events are kept as the tracer saw them (device captures, netfilter hooks with every rule that
matched, drops, local delivery), each with a view of the packet's headers at that moment, so
the tree and the JSON are two renderings of the same record.
"""
from __future__ import annotations

import struct
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from pktemu.net.frame import IPPROTO_ICMP, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, Frame, bytes2mac, int2ip

PROTO_NAMES = {IPPROTO_TCP: "tcp", IPPROTO_UDP: "udp", IPPROTO_ICMP: "icmp", IPPROTO_SCTP: "sctp", 4: "ipip",
               47: "gre"}
# TCP flags in Scapy's letter order (SA, PA, FA, RA) with their nft names.
_TCP_FLAGS = (("F", "fin", 0x01), ("S", "syn", 0x02), ("R", "rst", 0x04), ("P", "psh", 0x08),
              ("A", "ack", 0x10), ("U", "urg", 0x20))
_ICMP_TYPES = {0: "echo-reply", 3: "destination-unreachable", 8: "echo-request", 11: "time-exceeded"}
_UNREACH = {0: "net-unreachable", 1: "host-unreachable", 2: "prot-unreachable", 3: "port-unreachable",
            4: "frag-needed", 9: "net-prohibited", 10: "host-prohibited", 13: "admin-prohibited"}


@dataclass(frozen=True)
class PacketView:
    """A frame's IPv4 and transport headers at one moment (addresses as text)."""
    src: str
    dst: str
    proto: str
    sport: int | None
    dport: int | None
    flags: str                    # TCP flags in Scapy letters ("S", "SA"), "" otherwise
    ttl: int
    length: int
    src_mac: str
    dst_mac: str
    icmp_type: int | None = None
    icmp_code: int | None = None
    quoted: str | None = None     # the packet an ICMP error quotes, as "src:sport > dst:dport"

    @classmethod
    def of(cls, frame: Frame) -> "PacketView | None":
        if not frame.is_ipv4:
            return None
        p = frame.proto
        ports = frame.has_ports
        itype = icode = None
        quoted = None
        if p == IPPROTO_ICMP:
            itype, icode = frame.icmp_type, frame.icmp_code
            quoted = _quoted(frame)
        flags = ""
        if p == IPPROTO_TCP and ports:
            f = frame.tcp_flags
            flags = "".join(letter for letter, _, bit in _TCP_FLAGS if f & bit)
        return cls(int2ip(frame.saddr), int2ip(frame.daddr), PROTO_NAMES.get(p, str(p)),
                   frame.sport if ports else None, frame.dport if ports else None, flags, frame.ttl,
                   frame.ip_len, bytes2mac(frame.src_mac), bytes2mac(frame.dst_mac), itype, icode, quoted)

    @property
    def flow(self) -> str:
        if self.sport is None:
            return f"{self.src} > {self.dst}"
        return f"{self.src}:{self.sport} > {self.dst}:{self.dport}"

    @property
    def key(self) -> tuple[str, str, str, int | None, int | None]:
        return self.src, self.dst, self.proto, self.sport, self.dport

    def short(self) -> str:
        """`10.0.1.2:40000 > 10.3.241.152:80 tcp [S] ttl 64`."""
        s = f"{self.flow} {self.proto}"
        if self.flags:
            s += f" [{self.flags}]"
        if self.icmp_type is not None:
            s += f" type {self.icmp_type} code {self.icmp_code}"
            if self.quoted:
                s += f" (quoting {self.quoted})"
        return s + f" ttl {self.ttl}"

    def nft(self) -> str:
        """The packet as `nft monitor trace` prints it after `packet:`."""
        s = f"ip saddr {self.src} ip daddr {self.dst} ip ttl {self.ttl} ip length {self.length}"
        if self.sport is not None:
            s += f" {self.proto} sport {self.sport} {self.proto} dport {self.dport}"
        if self.flags:
            names = [name for letter, name, _ in _TCP_FLAGS if letter in self.flags]
            s += " tcp flags == " + " | ".join(names)
        if self.icmp_type is not None:
            s += f" icmp type {_ICMP_TYPES.get(self.icmp_type, self.icmp_type)}"
            if self.icmp_type == 3:
                s += f" icmp code {_UNREACH.get(self.icmp_code or 0, self.icmp_code)}"
        return s


def _quoted(frame: Frame) -> str | None:
    """"src:sport > dst:dport" of the datagram an ICMP error quotes (None for queries)."""
    d = frame.data
    q = frame.l4off + 8
    if frame.icmp_type not in (3, 4, 5, 11, 12) or len(d) < q + 20:
        return None
    src, dst = struct.unpack_from("!II", d, q + 12)
    ihl = (d[q] & 0x0F) * 4
    if d[q + 9] in (IPPROTO_TCP, IPPROTO_UDP) and len(d) >= q + ihl + 4:
        sport, dport = struct.unpack_from("!HH", d, q + ihl)
        return f"{int2ip(src)}:{sport} > {int2ip(dst)}:{dport}"
    return f"{int2ip(src)} > {int2ip(dst)}"


@dataclass
class RuleStep:
    """One rule the packet matched (or a chain policy), as the rules engine's trace reports it.

    A Python hook is a step of table "python" (`rule` its name, `priority` its place in the
    hook); an NFQUEUE handler's verdict one of table "nfqueue" (`rule`: the queue number and
    the packet id), both with `chain` the netfilter hook."""
    table: str
    chain: str
    rulenum: int | None
    rule: str
    verdict: str                  # JUMP, GOTO, ACCEPT, DROP, CONTINUE, RETURN (policy: ACCEPT/DROP)
    target: str                   # the -j/-g word ("" for a policy)
    priority: int | None = None   # Python hooks only
    #: native nftables steps: base (chain), family, header (the `packet:` line, on a base chain's
    #: first step), mark (policy steps)
    nft: dict[str, Any] | None = None


NFT_KEYS = ("base", "family", "header", "mark")


@dataclass
class Event:
    """One thing that happened to the traced packet."""
    type: str                     # device | path (notes between events) | hook | drop | deliver
    t: int                        # virtual time, ns
    node: str
    packet: PacketView | None
    dev: str | None = None        # device events: the interface
    direction: str | None = None  # device events: in | out
    hook: str | None = None       # hook events
    iif: str | None = None
    oif: str | None = None
    physin: str | None = None
    physout: str | None = None
    after: PacketView | None = None          # hook events: the packet after the hook, when it changed
    rules: list[RuleStep] = field(default_factory=list)
    verdict: str | None = None               # hook events: accept | drop | stolen
    notes: list[str] = field(default_factory=list)
    ct: str | None = None                    # ct state words after the hook
    ct_entry: str | None = None              # `conntrack -L` line of the entry
    where: str | None = None                 # drop events: kernel place; deliver events: protocol
    reason: str | None = None                # drop events


@dataclass
class TracedPacket:
    """The request or its reply: its trace id, its events in order, and how it ended."""
    role: str
    trace_id: str
    events: list[Event] = field(default_factory=list)
    result: Event | None = None

    def to_json(self) -> dict[str, Any]:
        return {"role": self.role, "trace_id": self.trace_id,
                "result": _event_json(self.result) if self.result else None,
                "events": [_event_json(e) for e in self.events]}


def _event_json(e: Event) -> dict[str, Any]:
    d: dict[str, Any] = {}
    for f in fields(e):
        v = getattr(e, f.name)
        if v is None or v == []:
            continue
        if isinstance(v, PacketView):
            v = asdict(v)
        elif f.name == "rules":
            v = [_step_json(r) for r in v]
        elif f.name == "notes":
            v = [str(n) for n in v]
        d[f.name] = v
    return d


def _step_json(r: RuleStep) -> dict[str, Any]:
    d = asdict(r)
    for k in ("priority", "nft"):
        if d[k] is None:
            del d[k]
    return d
