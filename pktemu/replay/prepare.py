"""From a capture to the frames a replay sends: parse, split, map, plan, time — all before the clock starts.

Everything that can be decided from the capture alone is decided here, once, so that a loop only
copies prepared bytes, and so that a bad option or an unusable capture stops the command before
any output exists.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from pktemu.errors import PktemuError
from pktemu.io.pcapread import Capture
from pktemu.net.frame import int2ip
from pktemu.replay.frames import FRAG_LATER, ICMP_QUERIES, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, Pkt, \
    bad_checksum, fix_checksums, parse
from pktemu.replay.mapping import AddressMap, Neighbours, Rewriter
from pktemu.replay.split import ARP_FLOW, Flow, Split, assign
from pktemu.replay.stats import ReplayStats
from pktemu.replay.tcpfollow import Need, plan
from pktemu.replay.timing import Timing
from pktemu.sim import EPOCH_NS, SECOND

LAST_PCAP_NS = (1 << 32) * SECOND      # pcap record seconds are 32 bits
MARGIN_NS = 86_400 * SECOND            # room for answers, timeouts and settling after the last frame


@dataclass(eq=False)
class FlowPlan:
    """A flow as it is replayed: its endpoints after --map, and whether its TCP is followed."""
    flow: Flow
    client: tuple[int, int]
    server: tuple[int, int]
    follow_tcp: bool
    records: int = 0
    last: int = -1               # index of its last frame in Prepared.items

    @property
    def proto(self) -> int:
        return self.flow.proto


@dataclass(slots=True, eq=False)
class Item:
    """One client frame, ready to send once per loop."""
    pkt: Pkt
    data: bytes
    offset: int                  # ns from the loop's start
    fp: FlowPlan
    need: Need | None
    react: int                   # ns to wait after the answer it waited for
    shift: str | None            # what a later loop changes: "port", "icmp-id" or nothing


@dataclass
class Prepared:
    items: list[Item] = field(default_factory=list)
    flows: list[FlowPlan] = field(default_factory=list)
    owned: set[int] = field(default_factory=set)     # client addresses the stand-in answers ARP for


def prepare(cap: Capture, split: Split, amap: AddressMap, neigh: Neighbours, timing: Timing,
            fix: bool, stats: ReplayStats) -> Prepared:
    pkts = [parse(r) for r in cap.records]
    flows = assign(pkts, split)
    rw = Rewriter(amap, neigh)
    out = Prepared()
    plans: list[FlowPlan] = []
    for fl in flows:
        follow = split.mode != "all" and fl.proto == IPPROTO_TCP
        client, server = (amap.map(fl.client[0]), fl.client[1]), (amap.map(fl.server[0]), fl.server[1])
        fp = FlowPlan(fl, client, server, follow)
        plans.append(fp)
    needs: dict[int, Need] = {}
    for fp in plans:
        if fp.follow_tcp:
            needs.update(plan(fp.flow))
    chosen: list[tuple[Pkt, bytes]] = []
    stats.records = len(pkts)
    for p in pkts:
        stats.vlan_tags_removed += p.vlan_tags
        if p.truncated:
            stats.truncated += 1
        if p.refused and not p.truncated:
            stats.refused[p.refused] += 1
        if p.flow < 0:
            continue
        if not p.client:
            stats.server_side += 1
            continue
        stats.client_side += 1
        if p.truncated:
            continue
        bad = bad_checksum(p)
        if bad is not None:
            stats.bad_checksums[bad] += 1
        frame = rw.rewrite(p)
        if fix and p.kind == "ipv4":
            fix_checksums(frame)
        _note_unmapped(p, amap, neigh, stats)
        chosen.append((p, bytes(frame)))
    offsets = timing.offsets([p.ts_ns for p, _ in chosen])
    used: set[int] = set()
    for (p, data), off in zip(chosen, offsets, strict=True):
        fp = plans[p.flow]
        fp.records += 1
        fp.last = len(out.items)
        used.add(p.flow)
        need = needs.get(p.number)
        out.items.append(Item(p, data, off, fp, need, timing.react(need.react) if need else 0, _shift(p)))
    if offsets:
        _check_pcap_time(cap, chosen[-1][0].number, offsets[-1], max(it.react for it in out.items), timing)
    out.flows = [fp for fp in plans if fp.flow.index in used]
    out.owned = {fp.client[0] for fp in out.flows if 0 < fp.client[0] and fp.client[0] >> 28 < 0xE}
    return out


def _check_pcap_time(cap: Capture, last_record: int, last_offset: int, react: int, timing: Timing) -> None:
    """Refuse a replay whose frames would be stamped past 2106, where pcap timestamps end.

    A loop lasts its last offset (plus a reaction it waits for) and the next starts an --pps
    interval later; the answers, timeouts and settling after the very last frame get MARGIN_NS,
    once. At --topspeed every offset is 0: any number of loops fits."""
    loops = timing.loops
    end = (last_offset + react) * loops + timing.interval * (loops - 1) + MARGIN_NS
    if end <= LAST_PCAP_NS - EPOCH_NS:
        return
    faster = "a faster --speed, --pps or --topspeed"
    if loops == 1 or last_offset + react + MARGIN_NS > LAST_PCAP_NS - EPOCH_NS:
        raise PktemuError(f"{cap.path}: record {last_record}: at {timing.mode} the replay would run past "
                          f"2106, where pcap timestamps end; use {faster}")
    raise PktemuError(f"{cap.path}: at {timing.mode}, {loops} loops of the replay would run past 2106, "
                      f"where pcap timestamps end; use fewer --loop or {faster}")


def _shift(p: Pkt) -> str | None:
    if p.kind != "ipv4" or p.inner is not None or p.frag == FRAG_LATER:
        return None
    if p.proto in (IPPROTO_TCP, IPPROTO_UDP):
        return "port"
    if p.proto == IPPROTO_ICMP and p.icmp_type in ICMP_QUERIES:
        return "icmp-id"
    return None


def _note_unmapped(p: Pkt, amap: AddressMap, neigh: Neighbours, stats: ReplayStats) -> None:
    for a in (p.src, p.dst):
        if amap.lookup(a) is None and a not in neigh.owners and 0 < a < 0xE0000000 and \
                not neigh.node.is_broadcast(a):
            stats.unmapped.add(int2ip(a))


def flow_name(fp: FlowPlan) -> str:
    return "arp" if fp.proto == ARP_FLOW else fp.flow.name
