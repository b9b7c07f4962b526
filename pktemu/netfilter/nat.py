"""NAT bindings (nf_nat_core.c): choosing the translated tuple and applying it to packets.

A connection's NAT is decided once, on its first packet: `setup_info` (called by the DNAT, SNAT,
MASQUERADE and REDIRECT targets, or as a null binding when no rule chose anything) turns the
wanted range into a tuple no other connection uses, and stores it as the connection's reply
tuple. Every later packet is rewritten by `packet` from the two tuples alone, and ICMP errors
about a NATed connection are translated, quoted header included, by `icmp_reply_translation`.
"""
from __future__ import annotations

from pktemu.errors import PktemuError
from pktemu.net.frame import IPPROTO_ICMP, IPPROTO_UDP, Frame, checksum, int2ip
from pktemu.netfilter.conntrack import Conn, ConntrackTable
from pktemu.netfilter.conntrack_tuple import ICMP_ERRORS, PORT_PROTOS, CtTuple, invert, ip_end
from pktemu.netfilter.core import (
    INPUT, IP_CT_IS_REPLY, IPS_CONFIRMED, IPS_DST_NAT, IPS_DST_NAT_DONE, IPS_SRC_NAT, IPS_SRC_NAT_DONE,
    MANIP_DST, MANIP_SRC, NF_ACCEPT, NF_DROP, ORIGINAL, OUTPUT, POSTROUTING, PREROUTING, REPLY, NatRange,
    NodeView,
)
from pktemu.netfilter.nat_manip import manip_pkt, manip_quoted, quoted_str

HOOK2MANIP = {PREROUTING: MANIP_DST, OUTPUT: MANIP_DST, POSTROUTING: MANIP_SRC, INPUT: MANIP_SRC}
IPS_NAT_MASK = IPS_SRC_NAT | IPS_DST_NAT
_DONE = {MANIP_SRC: IPS_SRC_NAT_DONE, MANIP_DST: IPS_DST_NAT_DONE}
_MAX_ATTEMPTS = 128
_ICMP_REDIRECT = 5
# Note labels: (manip type, packet direction) -> what the rewrite means for that packet.
_LABEL = {(MANIP_DST, ORIGINAL): "DNAT", (MANIP_SRC, ORIGINAL): "SNAT",
          (MANIP_SRC, REPLY): "un-DNAT", (MANIP_DST, REPLY): "un-SNAT"}


def nat_initialized(ct: Conn, manip: int) -> bool:
    """nf_nat_initialized(): has this connection's source (or destination) binding been set up?"""
    return bool(ct.status & _DONE[manip])


class _Range:
    """nf_nat_range2 with its flags spelled out (NatRange with the gaps filled in)."""

    __slots__ = ("map_ips", "min_ip", "max_ip", "proto", "min_port", "max_port", "random_all",
                 "persistent")

    def __init__(self, r: NatRange, where: str) -> None:
        self.map_ips = r.min_ip is not None
        self.min_ip = r.min_ip or 0
        self.max_ip = r.max_ip if r.max_ip is not None else self.min_ip
        self.proto = r.min_port is not None
        lo = r.min_port or 0
        hi = r.max_port if r.max_port is not None else lo
        self.min_port, self.max_port = min(lo, hi), max(lo, hi)
        self.random_all = r.random or r.random_fully
        self.persistent = r.persistent
        if self.map_ips and self.max_ip < self.min_ip:
            raise PktemuError(f"{where}: NAT range {int2ip(self.min_ip)}-{int2ip(self.max_ip)}: "
                              "first address is above the last")
        if not 0 <= self.min_port <= self.max_port <= 65535:
            raise PktemuError(f"{where}: NAT port range {lo}-{hi} is outside 0-65535")

    def l4_in_range(self, t: CtTuple, manip: int) -> bool:
        """l4proto_in_range(): is the tuple's port (ICMP: id) inside the range?"""
        if t.proto == IPPROTO_ICMP:
            return self.min_port <= t.sport <= self.max_port
        if t.proto in PORT_PROTOS:
            port = t.sport if manip == MANIP_SRC else t.dport
            return self.min_port <= port <= self.max_port
        return True

    def src_in_range(self, t: CtTuple) -> bool:
        """nf_in_range(): source address and port already acceptable for this source NAT."""
        if self.map_ips and not self.min_ip <= t.src <= self.max_ip:
            return False
        return not self.proto or self.l4_in_range(t, MANIP_SRC)


def _rol32(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & 0xFFFFFFFF


def _mix(a: int, b: int, c: int) -> tuple[int, int, int]:
    """__jhash_mix."""
    m = 0xFFFFFFFF
    for x, y, z, r in ((0, 2, 1, 4), (1, 0, 2, 6), (2, 1, 0, 8), (0, 2, 1, 16), (1, 0, 2, 19), (2, 1, 0, 4)):
        v = [a, b, c]
        v[x] = ((v[x] - v[y]) & m) ^ _rol32(v[y], r)
        v[y] = (v[y] + v[z]) & m
        a, b, c = v
    return a, b, c


def _final(a: int, b: int, c: int) -> int:
    """__jhash_final: fold (a, b, c) into c."""
    m = 0xFFFFFFFF
    for x, y, r in ((2, 1, 14), (0, 2, 11), (1, 0, 25), (2, 1, 16), (0, 2, 4), (1, 0, 14), (2, 1, 24)):
        v = [a, b, c]
        v[x] = ((v[x] ^ v[y]) - _rol32(v[y], r)) & m
        a, b, c = v
    return c


def jhash2(words: list[int], initval: int) -> int:
    """The kernel's jhash2() (Bob Jenkins' lookup3 `hashword`) over 32-bit words."""
    m = 0xFFFFFFFF
    a = b = c = (0xDEADBEEF + (len(words) << 2) + initval) & m
    k = list(words)
    while len(k) > 3:
        a, b, c = _mix((a + k[0]) & m, (b + k[1]) & m, (c + k[2]) & m)
        k = k[3:]
    if not k:
        return c
    k += [0] * (3 - len(k))
    return _final((a + k[0]) & m, (b + k[1]) & m, (c + k[2]) & m)


def _raw32(addr: int) -> int:
    """An address as the kernel's u32 holds it (network bytes read little-endian on x86)."""
    return int.from_bytes(addr.to_bytes(4, "big"), "little")


class Nat:
    """nf_nat for one namespace, working on that namespace's conntrack table."""

    def __init__(self, table: ConntrackTable, node: NodeView) -> None:
        self.table = table
        self.node = node

    # ------------------------------------------------------------------ bindings
    def setup_info(self, ct: Conn, rng: NatRange, manip: int) -> int:
        """nf_nat_setup_info(): bind the unconfirmed connection's source or destination."""
        if ct.status & IPS_CONFIRMED:
            return NF_ACCEPT
        if nat_initialized(ct, manip):
            return NF_DROP
        r = _Range(rng, f"{self.node.name}: {'SNAT' if manip == MANIP_SRC else 'DNAT'}")
        curr = invert(ct.tuplehash[REPLY])
        assert curr is not None
        new = self._unique_tuple(curr, r, ct, manip)
        if new != curr:
            reply = invert(new)
            assert reply is not None
            ct.tuplehash[REPLY] = reply
            ct.status |= IPS_SRC_NAT if manip == MANIP_SRC else IPS_DST_NAT
        ct.status |= _DONE[manip]
        return NF_ACCEPT

    def alloc_null_binding(self, ct: Conn, manip: int) -> int:
        """nf_nat_alloc_null_binding(): "no NAT", still checked for a clash with other tuples."""
        reply = ct.tuplehash[REPLY]
        ip = reply.dst if manip == MANIP_SRC else reply.src
        return self.setup_info(ct, NatRange(min_ip=ip, max_ip=ip), manip)

    def _used(self, t: CtTuple, ct: Conn) -> bool:
        """nf_nat_used_tuple(): would `t` make the reply of `ct` collide with another entry?"""
        reply = invert(t)
        return reply is not None and self.table.tuple_taken(reply, ct)

    def _used_new(self, t: CtTuple, ct: Conn) -> bool:
        """nf_nat_used_tuple_new(): _used, letting a non-NAT UDP/ICMP reverse clash through."""
        if not self._used(t, ct):
            return False
        if t.proto not in (IPPROTO_UDP, IPPROTO_ICMP) or ct.status & IPS_NAT_MASK:
            return True
        hit = self.table.find(t, ct.zone)
        if hit is None:
            rt = invert(t)
            hit = self.table.find(rt, ct.zone) if rt is not None else None
            if hit is None:
                return False
        other = hit[0]
        if other.status & IPS_NAT_MASK:
            return True
        return other.tuplehash[ORIGINAL] != ct.tuplehash[REPLY]

    def _unique_tuple(self, orig: CtTuple, r: _Range, ct: Conn, manip: int) -> CtTuple:
        """get_unique_tuple(): the tuple to translate to, as close to `orig` as the range allows."""
        if manip == MANIP_SRC and not r.random_all:
            if r.src_in_range(orig):
                if not self._used_new(orig, ct):
                    return orig
            else:
                for other in self.table.same_source(orig, ct.zone):
                    back = invert(other.tuplehash[REPLY])
                    if back is None:
                        continue
                    cand = CtTuple(orig.proto, back.src, back.sport, orig.dst, orig.dport)
                    if r.src_in_range(cand):
                        if not self._used(cand, ct):
                            return cand
                        break
        t = self._best_ips(orig, r, manip)
        if not r.random_all:
            if r.proto:
                if r.l4_in_range(t, manip) and (r.min_port == r.max_port or not self._used(t, ct)):
                    return t
            elif not self._used(t, ct):
                return t
        return self._l4_unique(t, r, manip, ct)

    def _best_ips(self, t: CtTuple, r: _Range, manip: int) -> CtTuple:
        """find_best_ips_proto(): pick the address from the range by a hash of the endpoints."""
        if not r.map_ips:
            return t
        if r.min_ip == r.max_ip:
            ip = r.min_ip
        else:
            j = jhash2([_raw32(t.src), 0, 0, 0], 0 if r.persistent else _raw32(t.dst))
            ip = r.min_ip + ((j * (r.max_ip - r.min_ip + 1)) >> 32)
        if manip == MANIP_SRC:
            return t._replace(src=ip)
        return t._replace(dst=ip)

    def _l4_unique(self, t: CtTuple, r: _Range, manip: int, ct: Conn) -> CtTuple:
        """nf_nat_l4proto_unique_tuple(): search a free port (ICMP: id) from a random offset."""
        if t.proto == IPPROTO_ICMP:
            field = "sport"
            lo, size = (r.min_port, r.max_port - r.min_port + 1) if r.proto else (0, 65536)
        elif t.proto in PORT_PROTOS:
            field = "sport" if manip == MANIP_SRC else "dport"
            if r.proto:
                lo, size = r.min_port, r.max_port - r.min_port + 1
            elif manip == MANIP_DST:
                return t
            else:
                port = getattr(t, field)
                if port < 512:
                    lo, size = 1, 511
                elif port < 1024:
                    lo, size = 600, 424
                else:
                    lo, size = 1024, 64512
        else:
            return t
        rand = self.node.rng("nat")
        off = rand.getrandbits(16)
        attempts = min(size, _MAX_ATTEMPTS)
        while True:
            for _ in range(attempts):
                t = t._replace(**{field: lo + off % size})
                if not self._used(t, ct):
                    return t
                off = (off + 1) & 0xFFFF
            if attempts >= size or attempts < 16:
                return t
            attempts //= 2
            off = rand.getrandbits(16)

    # ------------------------------------------------------------------ packets
    def packet(self, ct: Conn, ctinfo: int, hook: str, frame: Frame) -> int:
        """nf_nat_packet(): apply this hook's half of the connection's translation to the frame."""
        mtype = HOOK2MANIP[hook]
        dir = REPLY if ctinfo >= IP_CT_IS_REPLY else ORIGINAL
        statusbit = IPS_SRC_NAT if mtype == MANIP_SRC else IPS_DST_NAT
        if dir == REPLY:
            statusbit ^= IPS_NAT_MASK
        if ct.status & statusbit:
            target = invert(ct.tuplehash[1 - dir])
            assert target is not None
            before, after = manip_pkt(frame, target, mtype)
            frame.note(f"{_LABEL[mtype, dir]} {before} -> {after}")
        return NF_ACCEPT

    def icmp_reply_translation(self, frame: Frame, ct: Conn, ctinfo: int, hook: str) -> bool:
        """nf_nat_icmp_reply_translation(): NAT an ICMP error and the packet it quotes.

        The quoted packet travelled the other way, so it gets the inverse manipulation; the outer
        header is then made to look like a reply of the connection. False means drop.
        """
        d = frame.data
        if d[frame.l4off] not in ICMP_ERRORS:
            return True
        if checksum(d[frame.l4off:ip_end(d)]) != 0:
            frame.note("ICMP error with a bad checksum: dropped by NAT")
            return False
        if d[frame.l4off] == _ICMP_REDIRECT:
            if ct.status & (IPS_SRC_NAT_DONE | IPS_DST_NAT_DONE) != IPS_SRC_NAT_DONE | IPS_DST_NAT_DONE:
                return False
            if ct.status & IPS_NAT_MASK:
                return False
        mtype = HOOK2MANIP[hook]
        dir = REPLY if ctinfo >= IP_CT_IS_REPLY else ORIGINAL
        statusbit = IPS_SRC_NAT if mtype == MANIP_SRC else IPS_DST_NAT
        if dir == REPLY:
            statusbit ^= IPS_NAT_MASK
        if not ct.status & statusbit:
            return True
        other = ct.tuplehash[1 - dir]
        quoted_before = quoted_str(frame)
        if not manip_quoted(frame, other, MANIP_DST if mtype == MANIP_SRC else MANIP_SRC):
            frame.note("ICMP error quote too short to translate: dropped")
            return False
        frame.fix_icmp_checksum()
        target = invert(other)
        assert target is not None
        before, after = manip_pkt(frame, target._replace(proto=IPPROTO_ICMP), mtype)
        frame.note(f"{_LABEL[mtype, dir]} ICMP error {before} -> {after}, "
                   f"quoted {quoted_before} -> {quoted_str(frame)}")
        return True
