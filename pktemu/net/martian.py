"""127/8 martians: the loopback checks of net/ipv4/route.c, with `route_localnet` lifting them.

The kernel keeps 127/8 inside the host. On input (ip_route_input_slow) a 127/8 destination, else
a 127/8 source, arriving on any device but `lo` is a martian unless `route_localnet` (all or the
input device) is 1; then fib_validate_source still refuses a source that is one of the host's own
addresses (127.0.0.1) unless `accept_local`. On output (__mkroute_output) a route out of any
device but `lo` refuses a 127/8 source with EINVAL unless the output device has `route_localnet`:
that is what makes kube-proxy's NodePort on 127.0.0.1 time out, the DNATed SYN being rerouted
(ip_route_me_harder) out of eth0 with source 127.0.0.1 and freed inside the nat OUTPUT hook.
Checked against this machine's kernel by tests/test_kernel_route_localnet.py.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from pktemu.net.frame import int2ip

if TYPE_CHECKING:
    from pktemu.net.node import Node


def is_loopback(addr: int) -> bool:
    """ipv4_is_loopback(): 127.0.0.0/8."""
    return addr >> 24 == 127


def input_martian(node: "Node", dev: str, saddr: int, daddr: int) -> str | None:
    """Why ip_route_input_slow() would free a packet received on `dev`, or None.

    Frames looped back through `lo` carry their output route in the kernel and are never
    checked, so `lo` is exempt.
    """
    if dev == "lo" or not (is_loopback(saddr) or is_loopback(daddr)):
        return None
    localnet = node.route_localnet(dev)
    why = _changed(node, dev)
    if is_loopback(daddr) and not localnet:
        return f"martian destination {int2ip(daddr)} from {dev} (route_localnet=0){why}"
    if is_loopback(saddr):
        if not localnet:
            return f"martian source {int2ip(saddr)} from {dev} (route_localnet=0){why}"
        if node.is_local(saddr) and not node.conf_or("accept_local", dev):
            return (f"martian source {int2ip(saddr)} from {dev}: an address of this host "
                    "(route_localnet=1, accept_local=0)")
    return None


def output_martian(node: "Node", saddr: int, daddr: int, out_dev: str) -> str | None:
    """Why __mkroute_output() would refuse the route to daddr out of `out_dev` (EINVAL), or None."""
    if out_dev == "lo" or not is_loopback(saddr) or node.route_localnet(out_dev):
        return None
    return (f"martian source {int2ip(saddr)} out {out_dev} to {int2ip(daddr)} "
            f"(route_localnet=0): route EINVAL{_changed(node, out_dev)}")


def _changed(node: "Node", dev: str) -> str:
    return node.changed("sysctl net.ipv4.conf.all.route_localnet",
                        f"sysctl net.ipv4.conf.{dev}.route_localnet")
