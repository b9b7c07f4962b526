"""inet_peer's token bucket (net/ipv4/inetpeer.c): what limits the ICMP errors a host sends.

One peer per remote address holds the tokens, and the two limiters that draw on it share them:
ip_error() (a packet with no route: 1 s a message, 5 s of burst) and icmpv4_xrlim_allow()
(icmp_ratelimit, 1000 ms by default, 0 for no limit; six of burst) for destination unreachable,
source quench, time exceeded and parameter problem (icmp_ratemask 0x1818), but not fragmentation
needed. A new peer starts 60 s in credit, so a source that keeps hitting a missing route gets two
errors and then about none: each second's token goes to ip_error, and icmp_send finds too few
left (Linux 6.18 sent two net unreachables for five segments, tests/test_kernel_midflow.py). The
global limit (icmp_msgs_per_sec, 1000 a second, 50 of burst) is not modelled.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from pktemu.sim import MS, SECOND

if TYPE_CHECKING:
    from pktemu.net.node import Node

ERROR_COST, ERROR_BURST = SECOND, 5 * SECOND          # ip_rt_error_cost, ip_rt_error_burst
RATELIMIT = "net.ipv4.icmp_ratelimit"                  # ms, 1000 by default; 0: no limit
BURST_FACTOR = 6                                       # XRLIM_BURST_FACTOR
RATEMASK = 0x1818                                      # net.ipv4.icmp_ratemask
_NEW_CREDIT = 60 * SECOND


class Peers:
    """The peers of one namespace, by address: [tokens, last] in virtual nanoseconds."""

    __slots__ = ("_peers",)

    def __init__(self) -> None:
        self._peers: dict[int, list[int]] = {}

    def allow(self, addr: int, now: int, cost: int, burst: int) -> bool:
        """inet_peer_xrlim_allow() and ip_error()'s own copy of it: take `cost` if there is."""
        p = self._peers.get(addr)
        if p is None:
            p = self._peers[addr] = [0, now - _NEW_CREDIT]
        token = min(p[0] + now - p[1], burst)
        p[1] = now
        ok = token >= cost
        p[0] = token - cost if ok else token
        return ok


def icmp_allowed(node: "Node", itype: int, code: int, daddr: int) -> bool:
    """icmpv4_xrlim_allow(): may this error go to daddr now? (Never limited to a local address.)"""
    if not (1 << itype) & RATEMASK or (itype == 3 and code == 4) or node.is_local(daddr):
        return True
    cost = node.sysctls.get(RATELIMIT, 1000) * MS
    return not cost or peers(node).allow(daddr, node.now(), cost, BURST_FACTOR * cost)


def peers(node: "Node") -> Peers:
    """The namespace's inet peers, made at its first rate-limited error."""
    p = node.peers
    if p is None:
        p = node.peers = Peers()
    return p
