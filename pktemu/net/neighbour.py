"""The ARP neighbour table (net/core/neighbour.c + net/ipv4/arp.c, default sysctls).

States follow the kernel: an entry learned from a request addressed to us starts STALE and is
reused for replies without asking again; using a STALE entry moves it to DELAY, and after
`delay_first_probe_time` (5 s) unconfirmed to PROBE (unicast requests). Resolving an unknown
address queues the packets (INCOMPLETE), sends up to `mcast_solicit` (3) broadcast requests one
`retrans_time` (1 s) apart and reports failure as ICMP host unreachable.
"""
from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Callable

from pktemu.net.frame import BROADCAST_MAC, ETH_P_ARP, Frame, bytes2mac, int2ip
from pktemu.sim import SECOND, Timer

if TYPE_CHECKING:
    import random

    from pktemu.net.device import NetDevice
    from pktemu.net.node import Node

INCOMPLETE, REACHABLE, STALE, DELAY, PROBE, FAILED, PERMANENT = (
    "INCOMPLETE", "REACHABLE", "STALE", "DELAY", "PROBE", "FAILED", "PERMANENT")
CONNECTED = frozenset({REACHABLE, PERMANENT})

RETRANS_TIME = 1 * SECOND
DELAY_FIRST_PROBE = 5 * SECOND
BASE_REACHABLE = 30 * SECOND
MCAST_SOLICIT = 3
UCAST_SOLICIT = 3
UNRES_QLEN_BYTES = 212_992
PROXY_DELAY = 80                # neigh/default/proxy_delay, centiseconds (USER_HZ): 0.8 s

_ARP = struct.Struct("!6s6sHHHBBH6s4s6s4s")
ARP_REQUEST, ARP_REPLY = 1, 2


def build_arp(op: int, src_mac: bytes, dst_mac: bytes, sha: bytes, sip: int, tha: bytes, tip: int) -> Frame:
    return Frame(_ARP.pack(dst_mac, src_mac, ETH_P_ARP, 1, 0x0800, 6, 4, op,
                           sha, sip.to_bytes(4, "big"), tha, tip.to_bytes(4, "big")))


class Neighbour:
    __slots__ = ("dev", "ip", "mac", "state", "queue", "qbytes", "probes", "timer", "saddr")

    def __init__(self, dev: "NetDevice", ip: int) -> None:
        self.dev = dev
        self.ip = ip
        self.mac: bytes | None = None
        self.state = INCOMPLETE
        self.queue: list[Frame] = []
        self.qbytes = 0
        self.probes = 0
        self.timer: Timer | None = None
        self.saddr: int | None = None

    def __str__(self) -> str:
        mac = f" lladdr {bytes2mac(self.mac)}" if self.mac else ""
        return f"{int2ip(self.ip)} dev {self.dev.name}{mac} {self.state}"


class NeighTable:
    """One namespace's ARP cache."""

    def __init__(self, node: "Node", on_failure: Callable[[Frame], None]) -> None:
        self.node = node
        self.entries: dict[tuple[str, int], Neighbour] = {}
        self.on_failure = on_failure
        self._notes: dict[tuple[int, bytes | None, str], str] = {}

    @property
    def _rng(self) -> random.Random:
        """The stream of reachable-time draws, made on the first (most namespaces never draw)."""
        return self.node.sim.rng(f"neigh:{self.node.name}")

    def lookup(self, dev: "NetDevice", ip: int) -> Neighbour | None:
        return self.entries.get((dev.name, ip))

    # ------------------------------------------------------------------ output
    def output(self, dev: "NetDevice", nexthop: int, frame: Frame) -> None:
        """neigh_resolve_output: fill in the MACs and send, or queue and resolve."""
        noarp = getattr(dev, "noarp_output", None)
        if noarp is not None:           # a NOARP device (ipip): nothing to resolve
            noarp(frame, nexthop)
            return
        n = self.entries.get((dev.name, nexthop))
        if n is None or n.state == FAILED:
            if n is None:
                n = self.entries[(dev.name, nexthop)] = Neighbour(dev, nexthop)
            n.state, n.probes, n.mac = INCOMPLETE, 0, None
            self._enqueue(n, frame)
            n.saddr = frame.saddr if frame.is_ipv4 else None
            self._solicit(n)
            return
        if n.state == INCOMPLETE:
            self._enqueue(n, frame)
            return
        if n.state == STALE:
            self._set_state(n, DELAY, DELAY_FIRST_PROBE)
        frame.set_macs(dev.mac, n.mac)  # type: ignore[arg-type]
        key = (nexthop, n.mac, n.state)
        note = self._notes.get(key)
        if note is None:                # every packet to a neighbour says the same: made once
            note = self._notes[key] = f"neigh {int2ip(nexthop)} {bytes2mac(n.mac)} {n.state}"  # type: ignore
        frame.notes.append(note)
        dev.xmit(frame)

    def _enqueue(self, n: Neighbour, frame: Frame) -> None:
        n.queue.append(frame)
        n.qbytes += len(frame)
        while n.qbytes > UNRES_QLEN_BYTES and n.queue:
            old = n.queue.pop(0)
            n.qbytes -= len(old)
            self.node.drop(old, "neigh", f"unresolved queue for {int2ip(n.ip)} full (unres_qlen_bytes)")

    def _set_state(self, n: Neighbour, state: str, timeout: int | None) -> None:
        n.state = state
        if n.timer is not None:
            n.timer.cancel()
            n.timer = None
        if timeout is not None:
            n.timer = self.node.sim.timer(timeout, self._timer, n)

    def _reachable_time(self) -> int:
        return int(BASE_REACHABLE * (0.5 + self._rng.random()))

    def _timer(self, n: Neighbour) -> None:
        n.timer = None
        if n.state == REACHABLE:
            self._set_state(n, STALE, None)
        elif n.state == DELAY:
            n.probes = 0
            self._set_state(n, PROBE, None)
            self._solicit(n)
        elif n.state in (INCOMPLETE, PROBE):
            self._solicit(n)

    def _solicit(self, n: Neighbour) -> None:
        limit = MCAST_SOLICIT if n.state == INCOMPLETE else UCAST_SOLICIT
        if n.probes >= limit:
            self._set_state(n, FAILED, None)
            queued, n.queue, n.qbytes = n.queue, [], 0
            for f in queued:
                self.on_failure(f)
            return
        n.probes += 1
        dev = n.dev
        sip = self.node.arp_source(dev, n.ip, n.saddr)
        if n.state == INCOMPLETE:
            req = build_arp(ARP_REQUEST, dev.mac, BROADCAST_MAC, dev.mac, sip, b"\x00" * 6, n.ip)
        else:
            req = build_arp(ARP_REQUEST, dev.mac, n.mac or BROADCAST_MAC, dev.mac, sip, b"\x00" * 6, n.ip)
        req.note(f"arp who-has {int2ip(n.ip)} ({n.state}, probe {n.probes})")
        n.timer = self.node.sim.timer(RETRANS_TIME, self._timer, n)
        dev.xmit(req)

    # ------------------------------------------------------------------ input
    def update(self, dev: "NetDevice", ip: int, mac: bytes, state: str) -> None:
        """neigh_update from a received ARP packet."""
        n = self.entries.get((dev.name, ip))
        if n is None:
            n = self.entries[(dev.name, ip)] = Neighbour(dev, ip)
        if n.state == PERMANENT:
            return
        if state == STALE and n.state in (REACHABLE, DELAY, PROBE) and n.mac == mac:
            return  # a request with the same address does not demote a good entry
        n.mac = mac
        n.probes = 0
        self._set_state(n, state, self._reachable_time() if state == REACHABLE else None)
        queued, n.queue, n.qbytes = n.queue, [], 0
        for f in queued:
            f.set_macs(dev.mac, mac)
            f.note(f"neigh {int2ip(ip)} {bytes2mac(mac)} {n.state} (resolved)")
            dev.xmit(f)

    def arp_rcv(self, dev: "NetDevice", frame: Frame) -> None:
        """arp_process(): answer requests for local addresses, learn from what is addressed to us."""
        data = frame.data
        if len(data) < 42:
            return
        (_d, _s, _t, htype, ptype, hlen, plen, op, sha, sip_b, tha, tip_b) = _ARP.unpack_from(data)
        if htype != 1 or ptype != 0x0800 or hlen != 6 or plen != 4:
            return
        sip, tip = int.from_bytes(sip_b, "big"), int.from_bytes(tip_b, "big")
        node = self.node
        if node.is_local(sip) or sha[0] & 1:
            return  # our own request reflected back (hairpin), or a bogus sender
        if op == ARP_REQUEST and node.is_local(tip) and sip != 0:
            self.update(dev, sip, sha, STALE)
            reply = build_arp(ARP_REPLY, dev.mac, sha, dev.mac, tip, sha, sip)
            reply.note(f"arp reply {int2ip(tip)} is-at {bytes2mac(dev.mac)}")
            dev.xmit(reply)
            return
        if op == ARP_REQUEST and sip != 0 and self._proxy(dev, frame, sip, sha, tip):
            return
        n = self.entries.get((dev.name, sip))
        if n is not None and n.state != PERMANENT:
            self.update(dev, sip, sha, REACHABLE if op == ARP_REPLY and tha == dev.mac else STALE)

    # ------------------------------------------------------------------ proxy ARP
    def _proxy(self, dev: "NetDevice", frame: Frame, sip: int, sha: bytes, tip: int) -> bool:
        """arp_process()'s proxy branch: a request for an address routed out of another device.

        ip_route_input(tip, sip, dev) must give a unicast route (and pass rp_filter for the
        sender), the device must forward (IN_DEV_FORWARD), and arp_fwd_proxy() holds: proxy_arp
        on (all or dev), the route's device is not `dev` (medium_id 0). A broadcast request is
        answered after a random delay below `neigh.<dev>.proxy_delay` (pneigh_enqueue; 80
        centiseconds by default), unless it is 0."""
        node = self.node
        if not node.conf_or("proxy_arp", dev.name):
            return False
        fwd = node.sysctls.get(f"net.ipv4.conf.{dev.name}.forwarding", node.sysctl("net.ipv4.ip_forward"))
        rt = node.routes.lookup(tip)
        if not fwd or rt is None or rt.type != "unicast" or rt.dev == dev.name or tip >> 28 == 0xE:
            return False
        rp = node.sysctl("net.ipv4.conf.all.rp_filter", dev.name)  # fib_validate_source of the sender
        back = node.routes.lookup(sip) if rp else None
        if rp and (back is None or (rp == 1 and back.dev != dev.name)):
            return False
        self.update(dev, sip, sha, STALE)               # neigh_event_ns
        why = f"proxy_arp on {dev.name}: {int2ip(tip)} is routed via {rt.dev}"
        delay = proxy_delay(node, dev.name)
        if frame.data[0:6] == dev.mac or delay == 0:    # PACKET_HOST or proxy_delay 0: at once
            self._proxy_reply(dev, sip, sha, tip, why)
        else:
            rng = node.sim.rng(f"pneigh:{node.name}")
            wait = rng.randrange(delay) * (SECOND // 100)       # get_random_u32_below, in centiseconds
            node.sim.timer(wait, self._proxy_reply, dev, sip, sha, tip,
                           f"{why} (after {wait / SECOND:.2f} s of proxy_delay {delay / 100:g} s)")
        return True

    def _proxy_reply(self, dev: "NetDevice", sip: int, sha: bytes, tip: int, why: str) -> None:
        reply = build_arp(ARP_REPLY, dev.mac, sha, dev.mac, tip, sha, sip)
        reply.note(f"arp reply {int2ip(tip)} is-at {bytes2mac(dev.mac)} ({why})")
        dev.xmit(reply)

    def dump(self) -> list[str]:
        return [str(n) for _k, n in sorted(self.entries.items(), key=lambda kv: (kv[0][0], kv[0][1]))]


def proxy_delay(node: "Node", dev: str) -> int:
    """`net.ipv4.neigh.<dev>.proxy_delay` (centiseconds); the device's copy of `default`."""
    d = node.sysctls.get("net.ipv4.neigh.default.proxy_delay", PROXY_DELAY)
    return node.sysctls.get(f"net.ipv4.neigh.{dev}.proxy_delay", d)
