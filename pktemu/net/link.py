"""`ip link set DEV down|up` in the middle of a run, with the kernel's side effects.

What this machine's kernel did (tests/test_kernel_link_updown.py holds it to that):

- down (dev_close, then fib_disable_ip / fib_sync_down_dev / fib_flush, arp_ifdown): every
  route through the device goes, connected, static and default alike, and the broadcast
  entries of its addresses; the addresses stay local (`ip route show table local`); its ARP
  entries are flushed and the packets waiting on them are freed without an ICMP error.
- the veth peer loses its carrier (NO-CARRIER, state DOWN): what the peer's namespace sends
  through it is freed before tcpdump sees it; its neighbours are flushed (neigh_carrier_down),
  its routes stay. A bridge port without carrier is disabled and its learned FDB entries are
  flushed; a bridge left without a forwarding port loses its own carrier, the same way.
- up: only the prefix routes of the device's addresses come back (proto kernel); static and
  default routes through it stay gone. The peer's carrier returns and a bridge port forwards
  again at once (STP off).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from pktemu.errors import PktemuError
from pktemu.net.bridge import Bridge
from pktemu.net.route import prefix_mask
from pktemu.net.veth import Veth

if TYPE_CHECKING:
    from pktemu.net.device import NetDevice
    from pktemu.net.node import Node


def link_set(node: "Node", dev: str, up: bool, why: str) -> None:
    """`ip link set DEV up|down` in `node`; `why` goes into the notes of the frames it decides."""
    d = node.devices.get(dev)
    if d is None or dev == "lo":
        known = ", ".join(sorted(n for n in node.devices if n != "lo")) or "none"
        raise PktemuError(f"{node.name}: no device {dev!r} to set up or down (devices: {known})")
    node.changes[f"link {dev}"] = why
    if d.up == up:
        return
    d.up = up
    d.link_why = why
    if up:
        _dev_open(node, d, why)
    else:
        _dev_close(node, d, why)


# ------------------------------------------------------------------ down
def _dev_close(node: "Node", d: "NetDevice", why: str) -> None:
    _fib_disable(node, d)
    _neigh_flush(node, d, why, "its device went down")
    if isinstance(d, Bridge):
        for p in d.ports.values():
            d.port_disable(p)                       # br_stp_disable_bridge
    if isinstance(d, Veth):
        d.carrier = False
        if d.peer is not None:
            _carrier(d.peer, False, _from(d, why))
    _port_update(d, why)


def _fib_disable(node: "Node", d: "NetDevice") -> None:
    """fib_disable_ip(): the routes out of `d` and its broadcast entries go."""
    for r in [r for r in node.fib.all_routes() if r.dev == d.name]:
        node.fib.tables[r.table].remove(r)
    for a in d.addresses:
        if a.peer is None and a.plen < 31:
            node._broadcast.discard(a.addr | (~prefix_mask(a.plen) & 0xFFFFFFFF))


def _neigh_flush(node: "Node", d: "NetDevice", why: str, what: str) -> None:
    """neigh_flush_dev(): entries of `d` go; packets queued on them are freed, no ICMP."""
    for key in [k for k, n in node.neigh.entries.items() if n.dev is d and n.state != "PERMANENT"]:
        n = node.neigh.entries.pop(key)
        if n.timer is not None:
            n.timer.cancel()
            n.timer = None
        for f in n.queue:
            node.drop(f, "neigh", f"neighbour entry flushed: {what} ({why})")
        n.queue.clear()
        n.qbytes = 0


# ------------------------------------------------------------------ up
def _dev_open(node: "Node", d: "NetDevice", why: str) -> None:
    addrs = list(d.addresses)
    d.addresses.clear()
    for a in addrs:
        node.add_address(d, a)                      # fib_add_ifaddr: local + prefix routes only
    if isinstance(d, Veth):
        peer = d.peer
        d.carrier = peer is not None and peer.up
        if peer is not None and peer.up:
            _carrier(peer, True, _from(d, why))
    if isinstance(d, Bridge):
        for p in d.ports.values():
            if p.dev.up and p.dev.carrier:
                d.port_enable(p)
        d.carrier = d.live_ports()
    _port_update(d, why)


# ------------------------------------------------------------------ carrier and bridge ports
def _from(d: "Veth", why: str) -> str:
    """The peer's side names the namespace the command ran in."""
    return why if d.peer is None or d.peer.node is d.node else f"{why} in {d.node.name}"


def _carrier(d: "NetDevice", on: bool, why: str) -> None:
    """netif_carrier_on/off() and what linkwatch and the notifiers do with it."""
    if d.carrier == on:
        return
    d.carrier = on
    d.link_why = why
    if not on:
        _neigh_flush(d.node, d, why, f"{d.name} lost its carrier")
    _port_update(d, why)


def _port_update(d: "NetDevice", why: str) -> None:
    """br_port_carrier_check(): a port forwards while its device is up with carrier."""
    br = getattr(d, "master", None)
    if not isinstance(br, Bridge) or d.name not in br.ports:
        return
    port = br.ports[d.name]
    if d.up and d.carrier and br.up:
        br.port_enable(port)
    elif port.state != "disabled":
        br.port_disable(port)
    if br.up:
        _carrier(br, br.live_ports(), why)
