"""The connection tracking table of one namespace: lookup, new entries, confirm, expiry, dump.

As in nf_conntrack_core.c, the first packet of a flow gets an *unconfirmed* entry that only hangs
on the packet (`frame.ct`); it enters the table (indexed by both directions' tuples) when the
packet leaves through POSTROUTING or INPUT, so an entry whose packet is dropped on the way never
existed. Entries expire on the virtual clock; expiry is lazy (on lookup, on dump and by a sweep
every few hundred inserts), which is what `conntrack -L` would show anyway.

Conntrack zones (`-j CT --zone`, nf_conntrack_zone) make equal tuples different connections: a
tuple is hashed with the zone id of its direction, so an entry of the default zone is keyed by its
bare tuple and one of zone N by (N, tuple). The zone comes from the raw table's CT template,
which the target leaves in `frame.meta` (TEMPLATE_KEY) for conntrack_in to read.

Fragments reach conntrack whole: the Netfilter's defrag hook (pktemu.netfilter.defrag) makes them
so at PREROUTING and OUTPUT first, as nf_defrag_ipv4 does. Called on its own, conntrack_in still
takes a first fragment as a whole packet and gives a later one the connection of the first with
the same addresses, protocol and IP id, or none (INVALID) if that first fragment was not seen.
"""
from __future__ import annotations

import struct
from typing import Iterator

from pktemu.net.frame import ETH_HLEN, IPPROTO_ICMP, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, Frame, checksum
from pktemu.netfilter.conntrack_entry import Conn, conntrack_line, ctinfo_for
from pktemu.netfilter.conntrack_sctp import sctp_error, sctp_packet
from pktemu.netfilter.conntrack_tcp import (
    PKT_ACCEPT, PKT_INVALID, PKT_KILL, PKT_REPEAT, tcp_error, tcp_new, tcp_new_refused, tcp_packet,
)
from pktemu.netfilter.conntrack_tuple import (
    ICMP_ERRORS, ICMP_VALID_NEW, NR_ICMP_TYPES, PROTO_NAMES, CtTuple, CtZone, frame_tuple,
    invert, ip_end, tuple_at, zone_id,
)
from pktemu.netfilter.core import (
    IP_CT_IS_REPLY, IP_CT_NEW, IP_CT_RELATED, IPS_ASSURED,
    IPS_CONFIRMED, IPS_DYING, IPS_SEEN_REPLY, IPS_SRC_NAT_DONE, NF_ACCEPT, NF_DROP,
    ORIGINAL, PREROUTING, REPLY, NodeView,
)
from pktemu.sim import SECOND

_H = struct.Struct("!H")

TCP_LOOSE = "net.netfilter.nf_conntrack_tcp_loose"
#: the sysctls of the UDP and ICMP timeouts, in seconds (30, 120 and 30 by default)
UDP_TIMEOUT_KEY = "net.netfilter.nf_conntrack_udp_timeout"
UDP_TIMEOUT_STREAM_KEY = "net.netfilter.nf_conntrack_udp_timeout_stream"
ICMP_TIMEOUT_KEY = "net.netfilter.nf_conntrack_icmp_timeout"
UDP_STREAM_AFTER = 2 * SECOND       # a flow still alive this long after its start is a stream
GENERIC_TIMEOUT = 600 * SECOND
_ALLOW_CLASH = frozenset((IPPROTO_UDP, IPPROTO_ICMP))
_SWEEP_EVERY = 256
_MAX_FRAG_HEADS = 64
#: frame.meta key of a raw-table CT template: (the ConntrackTable it was made for, zone spec)
TEMPLATE_KEY = "ct_tmpl"
#: a template's zone spec: (id, directions, id taken from the packet mark)
ZoneSpec = tuple[int, int, bool]


class ConntrackTable:
    """The per-namespace conntrack hash: confirmed entries indexed by both of their tuples."""

    def __init__(self, node: NodeView) -> None:
        self.node = node
        self._hash: dict[CtTuple | tuple[int, CtTuple], tuple[Conn, int]] = {}
        self._conns: dict[int, Conn] = {}
        self._bysource: dict[tuple[int, int, int], list[Conn]] = {}
        self._frag_heads: dict[tuple[int, int, int, int], tuple[Conn, int]] = {}
        self._next_id = 1
        self._inserts = 0
        #: orig tuple -> why its entry was deleted (`conntrack -D`), for the note of the entry after it
        self.deleted: dict[CtTuple, str] = {}
        #: a CT target has run here: conntrack_in looks for templates
        self.zoned = False

    # ------------------------------------------------------------------ the table
    def __len__(self) -> int:
        self.purge()
        return len(self._conns)

    def __iter__(self) -> Iterator[Conn]:
        self.purge()
        return iter(list(self._conns.values()))

    def find(self, t: CtTuple, zone: CtZone | None = None) -> tuple[Conn, int] | None:
        """nf_conntrack_find_get(): the live confirmed entry with tuple `t` in `zone`, and t's
        direction (a zone of one direction is tried with its original, then its reply id)."""
        if zone is None:
            hit = self._hash.get(t)
            if hit is not None and hit[0].expires <= self.node.now():
                self._unlink(hit[0])
                return None
            return hit
        oid, rid = zone.zid(ORIGINAL), zone.zid(REPLY)
        hit = self._at(t, oid, zone)
        if hit is None and rid != oid:
            hit = self._at(t, rid, zone)
        return hit

    def _at(self, t: CtTuple, k: int, zone: CtZone | None) -> tuple[Conn, int] | None:
        """The live entry hashed as (zone id k, t) that nf_ct_key_equal() accepts for `zone`."""
        hit = self._hash.get(t if k == 0 else (k, t))
        if hit is None or zone_id(zone, hit[1]) != k:
            return None
        if hit[0].expires <= self.node.now():
            self._unlink(hit[0])
            return None
        return hit

    def tuple_taken(self, t: CtTuple, ignored: Conn) -> bool:
        """nf_conntrack_tuple_taken(): is `t` used by another connection than `ignored`, in
        ignored's zone (looked up with the zone id of its reply direction)?"""
        zone = ignored.zone
        hit = self.find(t) if zone is None else self._at(t, zone.zid(REPLY), zone)
        if hit is None or hit[0] is ignored:
            return False
        return hit[0].tuplehash[ORIGINAL] != ignored.tuplehash[ORIGINAL]

    def same_source(self, orig: CtTuple, zone: CtZone | None = None) -> list[Conn]:
        """Live entries that were source-NAT-checked and share orig's source in the same zone
        (nf_nat_bysource, compared with nf_ct_zone_equal on the original direction)."""
        now = self.node.now()
        zid = zone_id(zone, ORIGINAL)
        return [c for c in self._bysource.get((orig.proto, orig.src, orig.sport), ())
                if c.expires > now and not c.status & IPS_DYING and zone_id(c.zone, ORIGINAL) == zid]

    def kill(self, ct: Conn) -> None:
        """nf_ct_kill(): take the entry out of the table at once (packets holding it keep it)."""
        ct.status |= IPS_DYING
        if self._conns.get(ct.id) is ct:
            self._unlink(ct)

    def flush(self) -> None:
        """`conntrack -F`."""
        for ct in list(self._conns.values()):
            self.kill(ct)

    def delete(self, ct: Conn, why: str) -> None:
        """`conntrack -D`: kill the entry and remember why, so the flow's next entry says so."""
        self.kill(ct)
        self.deleted[ct.orig] = why

    def purge(self) -> None:
        """Drop every expired entry (the kernel's gc worker)."""
        now = self.node.now()
        for ct in [c for c in self._conns.values() if c.expires <= now]:
            self._unlink(ct)

    def _unlink(self, ct: Conn) -> None:
        self._conns.pop(ct.id, None)
        for d, t in enumerate(ct.tuplehash):
            key = _key(ct.zone, d, t)
            if self._hash.get(key, (None,))[0] is ct:
                del self._hash[key]
        src = self._bysource.get((ct.orig.proto, ct.orig.src, ct.orig.sport))
        if src is not None and ct in src:
            src.remove(ct)
            if not src:
                del self._bysource[(ct.orig.proto, ct.orig.src, ct.orig.sport)]

    # ------------------------------------------------------------------ conntrack in
    def conntrack_in(self, frame: Frame, hook: str = PREROUTING) -> None:
        """nf_conntrack_in(): attach a connection and ctinfo to the frame (ct None means INVALID).

        At PREROUTING the trackers verify the ICMP, TCP and UDP checksums and SCTP's CRC32c as the
        kernel does with nf_conntrack_checksum=1 (a bad one makes the packet INVALID, so kube-proxy's
        `--ctstate INVALID -j DROP` drops it before any NAT); replayed captures can carry them.
        """
        d = frame.data
        zone = self._template_zone(frame) if self.zoned else None
        if _H.unpack_from(d, ETH_HLEN + 6)[0] & 0x1FFF:
            self._later_fragment(frame)
            return
        proto = d[ETH_HLEN + 9]
        if proto == IPPROTO_ICMP:
            l4 = frame.l4off
            end = ip_end(d)
            if end - l4 >= 8:
                if hook == PREROUTING and not d[ETH_HLEN + 6] & 0x20 and checksum(d[l4:end]) != 0:
                    return _invalid(frame, "bad icmp checksum")
                if d[l4] > NR_ICMP_TYPES:
                    return _invalid(frame, f"unknown icmp type {d[l4]}")
                if d[l4] in ICMP_ERRORS:
                    return self._icmp_error(frame, zone)
        t = frame_tuple(frame)
        if t is None:
            return _invalid(frame, "truncated packet")
        if (hook == PREROUTING and proto in (IPPROTO_TCP, IPPROTO_UDP) and not d[ETH_HLEN + 6] & 0x20
                and not frame.l4_checksum_ok()):     # a first fragment's checksum covers the whole
            return _invalid(frame, f"bad {PROTO_NAMES[proto]} checksum")
        if proto == IPPROTO_TCP:
            err = tcp_error(frame)
            if err is not None:
                return _invalid(frame, err)
        elif proto == IPPROTO_SCTP:
            err = sctp_error(frame, hook)
            if err is not None:
                return _invalid(frame, err)
        now = self.node.now()
        for _attempt in range(2):
            hit = self.find(t, zone)
            if hit is None:
                rt = invert(t)
                if rt is None:
                    return _invalid(frame, "tuple cannot be inverted")
                ct, dir, ctinfo = Conn(self._next_id, t, rt, self, zone), ORIGINAL, IP_CT_NEW
                self._next_id += 1
                if proto == IPPROTO_TCP:
                    ct.tcp = tcp_new(frame, self.node.sysctls.get(TCP_LOOSE, 1))
                    if ct.tcp is None:
                        return _invalid(frame, tcp_new_refused(frame))
            else:
                ct, dir = hit
                ctinfo = ctinfo_for(ct, dir)
            verdict = self._l4_packet(ct, frame, dir, now)
            if verdict != PKT_REPEAT:
                break
            self.kill(ct)
        if verdict == PKT_INVALID:
            return _invalid(frame, None)
        if verdict == PKT_KILL:
            self.kill(ct)
        if not ct.status & IPS_CONFIRMED and ctinfo == IP_CT_NEW:
            state = f" {ct.proto_state}" if ct.proto_state is not None else ""
            why = self.deleted.pop(t, None) if self.deleted else None
            frame.note(f"ct new {PROTO_NAMES.get(proto, 'unknown')}{state}"
                       + (f" (this flow's previous entry was {why})" if why else ""))
        if dir == REPLY:
            ct.status |= IPS_SEEN_REPLY
        frame.ct, frame.ctinfo = ct, ctinfo
        if d[ETH_HLEN + 6] & 0x20:
            heads = self._frag_heads
            heads[(proto, frame.saddr, frame.daddr, frame.ip_id)] = (ct, dir)
            if len(heads) > _MAX_FRAG_HEADS:
                del heads[next(iter(heads))]

    def _template_zone(self, frame: Frame) -> CtZone | None:
        """nf_ct_zone_tmpl(): the zone of the CT template this namespace's raw table attached."""
        tmpl = frame.meta.pop(TEMPLATE_KEY, None)
        if tmpl is None or tmpl[0] is not self or tmpl[1] is None:
            return None
        zid, dirs, by_mark = tmpl[1]
        if by_mark:
            zid = frame.mark & 0xFFFF
        return CtZone(zid, dirs) if zid else None

    def _l4_packet(self, ct: Conn, frame: Frame, dir: int, now: int) -> int:
        """The protocol tracker's `packet` callback; returns a PKT_* code."""
        proto = ct.proto
        if proto == IPPROTO_TCP:
            return tcp_packet(ct, frame, dir, now, self.node.sysctls)
        if proto == IPPROTO_UDP:
            status = ct.status
            if not status & IPS_CONFIRMED:
                ct.stream_ts = now + UDP_STREAM_AFTER
            sysctls = self.node.sysctls
            if status & IPS_SEEN_REPLY and now > ct.stream_ts:
                ct.expires = now + sysctls.get(UDP_TIMEOUT_STREAM_KEY, 120) * SECOND
                if not status & IPS_ASSURED:
                    ct.status |= IPS_ASSURED
                    frame.note("ct udp stream [ASSURED]")
            else:
                ct.expires = now + sysctls.get(UDP_TIMEOUT_KEY, 30) * SECOND
            return PKT_ACCEPT
        if proto == IPPROTO_SCTP:
            return sctp_packet(ct, frame, dir, now)
        if proto == IPPROTO_ICMP:
            if not ct.status & IPS_CONFIRMED and ct.orig.icmp_type not in ICMP_VALID_NEW:
                frame.note(f"ct INVALID: icmp type {ct.orig.icmp_type} cannot open a connection")
                return PKT_INVALID
            ct.expires = now + self.node.sysctls.get(ICMP_TIMEOUT_KEY, 30) * SECOND
            return PKT_ACCEPT
        ct.expires = now + GENERIC_TIMEOUT
        return PKT_ACCEPT

    def _icmp_error(self, frame: Frame, zone: CtZone | None) -> None:
        """nf_conntrack_inet_error(): an ICMP error is RELATED to the connection it quotes."""
        inner = tuple_at(frame.data, frame.l4off + 8, ip_end(frame.data))
        rt = invert(inner) if inner is not None else None
        if rt is None:
            return _invalid(frame, "icmp error quotes no trackable packet")
        hit = self.find(rt, zone)
        if hit is None:
            return _invalid(frame, f"icmp error about unknown connection {inner}")
        ct, dir = hit
        if ct.tuplehash[dir].dst != frame.daddr:
            return _invalid(frame, "icmp error: outer destination differs from the quoted source")
        frame.ct, frame.ctinfo = ct, IP_CT_RELATED + (IP_CT_IS_REPLY if dir == REPLY else 0)
        frame.note(f"ct RELATED to {ct.orig}")

    def _later_fragment(self, frame: Frame) -> None:
        hit = self._frag_heads.get((frame.proto, frame.saddr, frame.daddr, frame.ip_id))
        if hit is None or not hit[0].status & IPS_CONFIRMED or hit[0].status & IPS_DYING \
                or hit[0].expires <= self.node.now():
            return _invalid(frame, "fragment whose first fragment was not tracked")
        ct, dir = hit
        frame.ct, frame.ctinfo = ct, ctinfo_for(ct, dir)

    # ------------------------------------------------------------------ confirm
    def confirm(self, frame: Frame) -> int:
        """__nf_conntrack_confirm(): put the frame's unconfirmed connection into the table."""
        ct = frame.ct
        if not isinstance(ct, Conn) or ct.status & IPS_CONFIRMED:
            return NF_ACCEPT
        if frame.ctinfo is not None and frame.ctinfo >= IP_CT_IS_REPLY:
            return NF_ACCEPT
        if ct.status & IPS_DYING:
            frame.note("ct entry died before confirmation: packet dropped")
            return NF_DROP
        zone = ct.zone
        for d, t in enumerate(ct.tuplehash):
            hit = self.find(t) if zone is None else self._at(t, zone.zid(d), zone)
            if hit is not None:
                other = hit[0]
                if other.tuplehash == ct.tuplehash and ct.proto in _ALLOW_CLASH:
                    frame.ct = other
                    frame.note("ct insert clash resolved: packet joins the existing entry")
                    return NF_ACCEPT
                frame.note(f"ct insert clash with [{other.orig}]: packet dropped")
                return NF_DROP
        ct.status |= IPS_CONFIRMED
        self._conns[ct.id] = ct
        if zone is None:
            self._hash[ct.tuplehash[ORIGINAL]] = (ct, ORIGINAL)
            self._hash[ct.tuplehash[REPLY]] = (ct, REPLY)
        else:
            for d, t in enumerate(ct.tuplehash):
                self._hash[_key(zone, d, t)] = (ct, d)
        if ct.status & IPS_SRC_NAT_DONE:
            o = ct.orig
            self._bysource.setdefault((o.proto, o.src, o.sport), []).append(ct)
        self._inserts += 1
        if self._inserts % _SWEEP_EVERY == 0:
            self.purge()
        return NF_ACCEPT

    # ------------------------------------------------------------------ conntrack -L
    def dump(self) -> str:
        """`conntrack -L` output, one line per live entry in insertion order."""
        self.purge()
        now = self.node.now()
        return "".join(conntrack_line(ct, now) + "\n" for ct in self._conns.values())


def _key(zone: CtZone | None, direction: int, t: CtTuple) -> CtTuple | tuple[int, CtTuple]:
    """The hash key of one direction's tuple: the bare tuple in the default zone."""
    k = zone_id(zone, direction)
    return t if k == 0 else (k, t)


def _invalid(frame: Frame, why: str | None) -> None:
    frame.ct = frame.ctinfo = None
    if why:
        frame.note(f"ct INVALID: {why}")
