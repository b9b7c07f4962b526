"""A network namespace: its devices, addresses, routes, neighbours, netfilter and sockets.

The node owns the state `ip addr`, `ip route`, `ip neigh` and sysctl show; the packet paths that
use it live in `ipv4` (receive, forward, output) and `icmp`. Netfilter is plugged in from above
(`node.nf`, anything with a `hook()` method) so this layer does not import the rules engine.
"""
from __future__ import annotations

import functools
import random
from typing import TYPE_CHECKING, Any, Callable, Protocol

from pktemu.net import icmp, ipv4, martian
from pktemu.net.device import IfAddr, NetDevice
from pktemu.net.fib_rules import ROUTE_ERRNO, Fib, FibResult, Flow
from pktemu.net.frame import ETH_P_ARP, ETH_P_IP, Frame, int2ip
from pktemu.net.inetpeer import Peers
from pktemu.net.ip_fragment import Reassembler
from pktemu.net.neighbour import NeighTable
from pktemu.net.pmtu import path_mtu
from pktemu.net.route import (RT_SCOPE_HOST, RT_SCOPE_LINK, RT_SCOPE_UNIVERSE, Route, RouteTable,
                              prefix_mask)
from pktemu.net.veth import Loopback
from pktemu.netfilter.core import NF_ACCEPT
from pktemu.sim import stream_seed

if TYPE_CHECKING:
    from pktemu.netfilter.core import HookState
    from pktemu.sim import Simulator

DEFAULT_SYSCTLS: dict[str, int] = {
    "net.ipv4.ip_forward": 0,
    "net.ipv4.conf.all.rp_filter": 0,
    "net.bridge.bridge-nf-call-iptables": 0,
    "net.ipv4.conf.all.send_redirects": 1,
    "net.ipv4.icmp_errors_use_inbound_ifaddr": 0,
}

ProtoRcv = Callable[[Frame], None]
ProtoErr = Callable[[int, int, int, bytes], None]      # type, code, info (MTU), quoted


class Hooks(Protocol):
    def hook(self, hook: str, frame: Frame, in_dev: str | None, out_dev: str | None,
             physin: str | None = None, physout: str | None = None) -> int: ...


class NoNetfilter:
    """A namespace with no rules loaded: every hook accepts and nothing is tracked."""

    ruleset = None
    active = False          # the packet path skips the call (and working out its arguments)

    def hook(self, hook: str, frame: Frame, in_dev: str | None, out_dev: str | None,
             physin: str | None = None, physout: str | None = None) -> int:
        return NF_ACCEPT

    def conntrack_dump(self) -> str:
        return ""


_SCOPE_RANK: dict[str, int] = {RT_SCOPE_UNIVERSE: 0, RT_SCOPE_LINK: 253, RT_SCOPE_HOST: 254}


def _addr_scope(a: IfAddr) -> int:
    """The scope `ip addr add` gives: host for 127/8 (iproute2's default), else global."""
    return _SCOPE_RANK[RT_SCOPE_HOST] if a.addr >> 24 == 127 else _SCOPE_RANK[RT_SCOPE_UNIVERSE]


def _ifa_match(a: IfAddr, dst: int) -> bool:
    """inet_ifa_match(): dst is on the address's prefix (its peer, for a point-to-point one)."""
    if a.peer is not None:
        return a.peer == dst
    return (a.addr ^ dst) & prefix_mask(a.plen) == 0


def _primaries(dev: NetDevice) -> list[IfAddr]:
    """The device's addresses without IFA_F_SECONDARY: the kernel marks an address secondary
    when an earlier one on the device has the same prefix and mask (inet_insert_ifa)."""
    out: list[IfAddr] = []
    for a in dev.addresses:
        if a.peer is None and any(p.peer is None and p.plen == a.plen and _ifa_match(p, a.addr)
                                  for p in out):
            continue
        out.append(a)
    return out


@functools.lru_cache(maxsize=8192)
def _first_ip_id(seed: int, name: str) -> int:
    """Namespace `name`'s first IP ID: the one draw of its stream `ipid:<name>` (`Simulator.rng`),
    the same in every network of a seed, so made once."""
    return random.Random(stream_seed(seed, f"ipid:{name}")).randrange(0x10000)


class Node:
    """One network namespace (a host, router, Kubernetes node or pod)."""

    def __init__(self, sim: "Simulator", name: str, kind: str = "host",
                 sysctls: dict[str, int] | None = None) -> None:
        self.sim = sim
        self.name = name
        self.kind = kind
        self.sysctls = dict(DEFAULT_SYSCTLS)
        self.sysctls.update(sysctls or {})
        self.devices: dict[str, NetDevice] = {}
        self.routes = RouteTable()
        self.fib = Fib(self.routes)               # `ip rule` and the tables besides main
        self._local: dict[int, str] = {}          # local address -> device name
        self._broadcast: set[int] = {0xFFFFFFFF}
        self.neigh = NeighTable(self, on_failure=self._neigh_failure)
        self.frags = Reassembler(self)
        self.nf: Any = NoNetfilter()
        self.ipsets: Any = None                   # ipset sets (pktemu.netfilter.ipset.IpsetStore)
        self.protocols: dict[int, tuple[ProtoRcv, ProtoErr | None]] = {}
        self.ping_sockets: dict[int, Callable[[Frame], None]] = {}   # ICMP echo id -> receiver
        self.peers: Peers | None = None           # the ICMP errors' rate limits (at the first)
        self.pmtu: dict[int, tuple[int, int]] = {}   # daddr -> (path MTU, until): pktemu.net.pmtu
        #: what a timeline changed here and when ("sysctl net.ipv4.ip_forward" -> "... at 2.000 s"),
        #: for the notes of the frames the change decides
        self.changes: dict[str, str] = {}
        self.drop_sink: Callable[[str, str, str, Frame], None] | None = None
        self.resolv: dict[str, Any] = {}          # a pod's resolv.conf (topology `resolv`): apps.resolver
        self._ip_id = -1                          # drawn at the first packet (_first_ip_id)
        self.tcp: Any = None
        self.udp: Any = None
        lo = Loopback(self, "lo", b"\x00" * 6, mtu=65536)
        self.add_device(lo)
        self.add_address(lo, IfAddr(0x7F000001, 8))
        icmp.register(self)

    def __repr__(self) -> str:
        return f"<Node {self.name}>"

    # ------------------------------------------------------------------ configuration
    def add_device(self, dev: NetDevice) -> None:
        self.devices[dev.name] = dev

    def add_address(self, dev: NetDevice, a: IfAddr) -> None:
        """`ip addr add`: the address becomes local and its connected route appears."""
        dev.addresses.append(a)
        self._local[a.addr] = dev.name
        if dev.name == "lo":
            self.routes.add(Route(a.addr & prefix_mask(a.plen), a.plen, "lo", scope=RT_SCOPE_HOST,
                                  src=a.addr, proto="kernel"))
            return
        if a.peer is not None:
            self.routes.add(Route(a.peer, 32, dev.name, src=a.addr, scope=RT_SCOPE_LINK, proto="kernel"))
        elif a.plen < 32:
            if any(p is a for p in _primaries(dev)):     # fib_add_ifaddr: no prefix route for a secondary
                self.routes.add(Route(a.addr & prefix_mask(a.plen), a.plen, dev.name, src=a.addr,
                                      scope=RT_SCOPE_LINK, proto="kernel"))
            if a.plen < 31:
                self._broadcast.add(a.addr | (~prefix_mask(a.plen) & 0xFFFFFFFF))

    def add_route(self, route: Route) -> None:
        self.fib.add_route(route)

    def changed(self, *keys: str) -> str:
        """" (<when and by what>)" for the timeline changes among `keys` of `changes` ("" if none):
        the drop reason a sysctl or hairpin decides names the change that made it so."""
        whys = [self.changes[k] for k in keys if k in self.changes] if self.changes else []
        return f" ({'; '.join(whys)})" if whys else ""

    def sysctl(self, key: str, dev: str | None = None) -> int:
        if dev is not None:
            v = self.sysctls.get(key.replace(".all.", f".{dev}."))
            if v is not None:
                return max(v, self.sysctls.get(key, 0)) if "rp_filter" in key else v
        return self.sysctls.get(key, 0)

    def register_protocol(self, proto: int, rcv: ProtoRcv, err: ProtoErr | None = None) -> None:
        self.protocols[proto] = (rcv, err)

    # ------------------------------------------------------------------ address questions
    def is_local(self, addr: int) -> bool:
        return addr in self._local

    def is_broadcast(self, addr: int) -> bool:
        return addr in self._broadcast

    def addr_type(self, addr: int) -> str:
        """inet_addr_type(), as the addrtype match names it."""
        if addr in self._local:
            return "LOCAL"
        if addr == 0:
            return "UNSPEC"
        if addr in self._broadcast:
            return "BROADCAST"
        if addr >> 28 == 0xE:
            return "MULTICAST"
        return "UNICAST" if self.routes.lookup(addr) is not None else "UNREACHABLE"

    def select_addr(self, dev: NetDevice, dst: int, scope: str = "global") -> int | None:
        """inet_select_addr(): an address of `dev` on dst's subnet, else its first, else any."""
        first = None
        for a in dev.addresses:
            if a.peer is not None and a.peer == dst:
                return a.addr
            if a.plen < 32 and (a.addr ^ dst) & prefix_mask(a.plen) == 0:
                return a.addr
            if first is None:
                first = a.addr
        if first is not None:
            return first
        if scope == RT_SCOPE_LINK:
            return None
        for d in self.devices.values():
            if d.name != "lo" and d.addresses:
                return d.addresses[0].addr
        return None

    def route_output(self, daddr: int, fl: Flow | None = None) -> tuple[Route, int | None] | None:
        """ip_route_output_key(): the route and preferred source for a locally sent packet
        (`fl`: the packet's source, mark, ... for `ip rule`; see fib_output for the errno)."""
        if daddr in self._local:
            return Route(daddr, 32, "lo", scope=RT_SCOPE_HOST, src=daddr), daddr
        rt = self.fib_output(fl or Flow(daddr)).route
        if rt is None or rt.type != "unicast":
            return None
        if rt.src is not None:
            return rt, rt.src
        dev = self.devices.get(rt.dev)
        return rt, (self.select_addr(dev, rt.gateway or daddr) if dev else None)

    def fib_output(self, fl: Flow) -> FibResult:
        """The policy-routing walk for an output flow (iif lo), with the rule that decided."""
        if not self.fib.custom:
            rt = self.routes.lookup(fl.daddr)
            return FibResult(rt, "ENETUNREACH" if rt is None else ROUTE_ERRNO.get(rt.type))
        return self.fib.lookup(fl)

    def route_errno(self, daddr: int) -> str:
        """What a socket call gets when there is no usable route to daddr (ENETUNREACH, or the
        rule's or route type's EACCES/EINVAL/EHOSTUNREACH)."""
        return self.fib_output(Flow(daddr)).errno or "ENETUNREACH"

    def source_address(self, daddr: int) -> int | None:
        r = self.route_output(daddr)
        return None if r is None else r[1]

    def source_and_mtu(self, daddr: int) -> tuple[int | None, int | None]:
        """One route lookup for a datagram: its preferred source (None without a route) and the
        path MTU to `daddr` (None without a device)."""
        r = self.route_output(daddr)
        if r is None:
            return None, None
        dev = self.devices.get(r[0].dev)
        return r[1], None if dev is None else path_mtu(self, daddr, dev.mtu) if self.pmtu else dev.mtu

    def arp_source(self, dev: NetDevice, target: int, saddr: int | None) -> int:
        """arp_solicit() with arp_announce=0: the packet's own source when it is ours."""
        if saddr is not None and self.is_local(saddr):
            return saddr
        return self.select_addr(dev, target, RT_SCOPE_LINK) or self.select_addr(dev, target) or 0

    def masquerade_source(self, out_dev: str, daddr: int) -> int | None:
        """nf_nat_masquerade_ipv4: inet_select_addr(out, nexthop, RT_SCOPE_UNIVERSE).

        Out of `lo` (a DNAT to one of our own addresses) 127.0.0.1 is host scope, so the kernel
        takes the first global primary address of the namespace instead (the node's address).
        """
        dev = self.devices.get(out_dev)
        if dev is None:
            return None
        rt = self.routes.lookup(daddr)
        nh = rt.gateway if rt is not None and rt.gateway is not None else daddr
        return self.inet_select_addr(dev, nh, _SCOPE_RANK[RT_SCOPE_UNIVERSE])

    def inet_select_addr(self, dev: NetDevice, dst: int, scope: int) -> int | None:
        """devinet.c's inet_select_addr(): `scope` is the kernel's number (0 universe, 253 link).

        A primary address of `dev` no narrower than `scope` (on dst's subnet first, else the
        first); failing that, the first primary of any device, `lo` first, that is neither link
        scope nor narrower than `scope` (in_dev_select_addr).
        """
        localnet = _SCOPE_RANK[RT_SCOPE_LINK if self.route_localnet(dev.name) else RT_SCOPE_HOST]
        first = None
        for a in _primaries(dev):
            if min(_addr_scope(a), localnet) > scope:
                continue
            if _ifa_match(a, dst):
                return a.addr
            if first is None:
                first = a.addr
        if first is not None:
            return first
        for d in self.devices.values():
            for a in _primaries(d):
                s = _addr_scope(a)
                if s != _SCOPE_RANK[RT_SCOPE_LINK] and s <= scope:
                    return a.addr
        return None

    def route_localnet(self, dev: str) -> bool:
        """IN_DEV_ROUTE_LOCALNET: `all` or the device's own setting."""
        return self.conf_or("route_localnet", dev)

    def conf_or(self, knob: str, dev: str) -> bool:
        """IN_DEV_ORCONF: a boolean `net.ipv4.conf` knob is on if `all` or the device has it."""
        return bool(self.sysctls.get(f"net.ipv4.conf.all.{knob}", 0)
                    or self.sysctls.get(f"net.ipv4.conf.{dev}.{knob}", 0))

    def reroute_martian(self, saddr: int, daddr: int) -> str | None:
        """ip_route_me_harder() after a NAT in OUTPUT: why the new route is refused, or None."""
        r = self.route_output(daddr)
        return None if r is None else martian.output_martian(self, saddr, daddr, r[0].dev)

    # ------------------------------------------------------------------ netfilter's view
    def rng(self, name: str) -> random.Random:
        return self.sim.rng(f"{self.name}:{name}")

    def now(self) -> int:
        return self.sim.now

    def send_reject(self, frame: Frame, state: "HookState", reject_with: str) -> None:
        icmp.send_reject(self, frame, reject_with)

    # ------------------------------------------------------------------ packet entry points
    def netif_receive(self, dev: NetDevice, frame: Frame) -> None:
        """The protocol demux of __netif_receive_skb for frames no bridge took."""
        et = (frame.data[12] << 8) | frame.data[13]
        if et == ETH_P_IP:
            ipv4.ip_rcv(self, dev, frame)
        elif et == ETH_P_ARP:
            self.neigh.arp_rcv(dev, frame)
        else:
            self.drop(frame, "netif_receive", f"ethertype 0x{et:04x} not handled")

    def ip_send(self, saddr: int, daddr: int, proto: int, l4: bytes, *, df: bool = True,
                ttl: int = 0, tos: int = 0, flow_saddr: int | None = None) -> None:
        ipv4.ip_send(self, saddr, daddr, proto, l4, df=df, ttl=ttl, tos=tos, flow_saddr=flow_saddr)

    def icmp_send(self, frame: Frame, icmp_type: int, code: int, info: int = 0) -> None:
        icmp.icmp_send(self, frame, icmp_type, code, info=info)

    def ctl_send(self, saddr: int, daddr: int, proto: int, l4: bytes, *, df: bool = True,
                 ttl: int = 0, tos: int = 0) -> None:
        """ip_send for what the kernel answers by itself (the TCP stack's RST): no owner."""
        icmp.kernel_send(self, saddr, daddr, proto, l4, df=df, ttl=ttl, tos=tos)

    def next_ip_id(self) -> int:
        ip_id = self._ip_id
        if ip_id < 0:           # a seeded generator costs ~15 us, and many nodes of a cluster send nothing
            ip_id = _first_ip_id(self.sim.seed, self.name)
        self._ip_id = ip_id = (ip_id + 1) & 0xFFFF
        return ip_id

    def drop(self, frame: Frame, where: str, reason: str) -> None:
        """kfree_skb with a reason: the frame leaves no capture, so the run records why."""
        if self.drop_sink is not None:
            self.drop_sink(self.name, where, reason, frame)

    def _neigh_failure(self, frame: Frame) -> None:
        self.drop(frame, "neigh", "neighbour resolution failed")
        if frame.is_ipv4:
            self.icmp_send(frame, 3, 1)

    # ------------------------------------------------------------------ state dumps
    def ip_addr(self) -> list[str]:
        return [f"{d.name} {a}" for d in self.devices.values() for a in d.addresses]

    def ip_route(self) -> list[str]:
        return [str(r) for r in self.routes.routes()]

    def local_addresses(self) -> list[str]:
        return sorted(int2ip(a) for a in self._local)
