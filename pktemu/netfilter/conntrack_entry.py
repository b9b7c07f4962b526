"""nf_conn: one tracked connection, and the line `conntrack -L` prints for it.

Its own module because everything that looks at a packet's connection (NAT, the ct matches, the
explain comments, the reports) needs the entry, while only the table builds and finds one.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from pktemu.netfilter.conntrack_sctp import SctpTrack
from pktemu.netfilter.conntrack_tcp import STATE_NAMES, TcpTrack
from pktemu.netfilter.conntrack_tuple import PORT_PROTOS, PROTO_NAMES, CtTuple, CtZone
from pktemu.netfilter.core import (
    IP_CT_ESTABLISHED, IP_CT_ESTABLISHED_REPLY, IP_CT_NEW, IP_CT_RELATED, IPS_ASSURED, IPS_CONFIRMED,
    IPS_EXPECTED, IPS_SEEN_REPLY, ORIGINAL, REPLY,
)
from pktemu.sim import SECOND

if TYPE_CHECKING:
    from pktemu.netfilter.conntrack import ConntrackTable


class Conn:
    """nf_conn: one tracked connection. `tuplehash[ORIGINAL]` / `[REPLY]` are the two directions."""

    __slots__ = ("id", "tuplehash", "status", "mark", "expires", "tcp", "stream_ts", "owner", "zone", "sctp")

    def __init__(self, cid: int, orig: CtTuple, reply: CtTuple, owner: "ConntrackTable",
                 zone: CtZone | None = None) -> None:
        self.id = cid
        self.tuplehash = [orig, reply]
        self.status = 0
        self.mark = 0
        self.expires = 0
        self.tcp: TcpTrack | None = None
        self.sctp: SctpTrack | None = None
        self.stream_ts = 0
        self.owner = owner
        self.zone = zone

    @property
    def orig(self) -> CtTuple:
        return self.tuplehash[ORIGINAL]

    @property
    def reply(self) -> CtTuple:
        return self.tuplehash[REPLY]

    @property
    def proto(self) -> int:
        return self.tuplehash[ORIGINAL].proto

    @property
    def confirmed(self) -> bool:
        return bool(self.status & IPS_CONFIRMED)

    @property
    def tcp_state(self) -> str | None:
        return STATE_NAMES[self.tcp.state] if self.tcp is not None else None

    @property
    def proto_state(self) -> str | None:
        """The state `conntrack -L` prints after the timeout (TCP and SCTP have one)."""
        if self.tcp is not None:
            return STATE_NAMES[self.tcp.state]
        return self.sctp.name if self.sctp is not None else None

    def tuple(self, direction: int) -> tuple[int, int, int, int]:
        """(src, dst, sport, dport) of one direction, ports -1 for protocols without ports."""
        t = self.tuplehash[direction]
        if t.proto in PORT_PROTOS:
            return t.src, t.dst, t.sport, t.dport
        return t.src, t.dst, -1, -1

    def remaining(self, now: int) -> int:
        """Time left before expiry in ns (never negative), as nf_ct_expires()."""
        return max(0, self.expires - now)

    def __repr__(self) -> str:
        state = f" {self.tcp_state}" if self.tcp is not None else ""
        return f"<Conn {self.id}{state} orig=[{self.orig}] reply=[{self.reply}] status={self.status:#x}>"


def ctinfo_for(ct: Conn, dir: int) -> int:
    """resolve_normal_ct(): ctinfo of a packet travelling in `dir` of an existing connection."""
    if dir == REPLY:
        return IP_CT_ESTABLISHED_REPLY
    if ct.status & IPS_SEEN_REPLY:
        return IP_CT_ESTABLISHED
    if ct.status & IPS_EXPECTED:
        return IP_CT_RELATED
    return IP_CT_NEW


def conntrack_line(ct: Conn, now: int) -> str:
    """One `conntrack -L` line, as libnetfilter_conntrack's default snprintf writes it."""
    proto = ct.proto
    s = f"{PROTO_NAMES.get(proto, 'unknown'):<8} {proto} {ct.remaining(now) // SECOND} "
    state = ct.proto_state
    if state is not None:
        s += f"{state} "
    zone = ct.zone
    s += ct.orig.conntrack_str()
    if zone is not None and zone.dirs == 1:
        s += f"zone-orig={zone.id} "
    if not ct.status & IPS_SEEN_REPLY:
        s += "[UNREPLIED] "
    s += ct.reply.conntrack_str()
    if zone is not None and zone.dirs == 2:
        s += f"zone-reply={zone.id} "
    if ct.status & IPS_ASSURED:
        s += "[ASSURED] "
    s += f"mark={ct.mark} "
    if zone is not None and zone.dirs == 3:
        s += f"zone={zone.id} "
    return s + "use=1"
