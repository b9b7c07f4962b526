"""Path MTU exceptions (the kernel's fib_nh_exception): an ICMP "fragmentation needed" quoting a
packet this node sent lowers the MTU of the route to that destination, for local output only and
for ten minutes. Forwarded packets keep the device's MTU (ip_forward_use_pmtu 0), so a router
never learns from the errors it relays.

A TCP socket then sends smaller segments and resends at once what the router dropped
(tcp_v4_mtu_reduced); a UDP datagram longer than the path MTU is cut into fragments by its sender
(IP_PMTUDISC_WANT: DF only on what fits).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from pktemu.sim import SECOND

if TYPE_CHECKING:
    from pktemu.net.node import Node

MIN_PMTU = 552                      # net.ipv4.route.min_pmtu
EXPIRES = 600 * SECOND              # net.ipv4.route.mtu_expires


def path_mtu(node: "Node", daddr: int, dev_mtu: int) -> int:
    """dst_mtu() of a local packet's route to `daddr` leaving a device of `dev_mtu`."""
    e = node.pmtu.get(daddr)
    if e is None:
        return dev_mtu
    if node.sim.now >= e[1]:
        del node.pmtu[daddr]
        return dev_mtu
    return min(e[0], dev_mtu)


def route_mtu(node: "Node", daddr: int) -> int | None:
    """The path MTU to `daddr` through its output route (None without one)."""
    r = node.route_output(daddr)
    dev = None if r is None else node.devices.get(r[0].dev)
    return None if dev is None else path_mtu(node, daddr, dev.mtu)


def update(node: "Node", daddr: int, mtu: int) -> int | None:
    """__ip_rt_update_pmtu(): an exception only ever lowers the MTU, never below min_pmtu; one
    already there at that MTU is renewed once half its time is gone. Returns the path MTU now."""
    old = route_mtu(node, daddr)
    if old is None or old < mtu:
        return old
    if mtu < MIN_PMTU:
        mtu = min(old, MIN_PMTU)
    e = node.pmtu.get(daddr)
    if e is not None and e[0] == mtu and node.sim.now < e[1] - EXPIRES // 2:
        return mtu
    node.pmtu[daddr] = (mtu, node.sim.now + EXPIRES)
    return mtu
