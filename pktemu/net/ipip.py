"""The IPIP fallback device `tunl0`, as Calico uses it (net/ipv4/ipip.c, ip_tunnel.c).

Once the `ipip` module is loaded every namespace has `tunl0` (`ip -d link show tunl0`:
`link/ipip 0.0.0.0 ... ipip remote any local any ttl inherit nopmtudisc`, mtu 1480). Calico gives
it an address from the node's pod block and routes the other nodes' blocks through it:
`10.244.1.0/26 via 192.168.50.12 dev tunl0 onlink`. The device has no link layer (NOARP, no
MAC): tcpdump on it sees bare IPv4 (LINKTYPE_RAW).

Transmit, ip_tunnel_xmit() with the fallback's all-zero parameters:
- outer destination: the route's gateway (rt_nexthop), else the inner destination; outer
  source: the output route's preferred source (`local any`); protocol 4;
- TTL: the inner packet's (`ttl inherit`; it was already decremented by ip_forward);
- TOS 0 plus the inner ECN bits (ip_tunnel_ecn_encap: CE is sent as ECT(0));
- DF: the inner packet's DF (`nopmtudisc` adds none, and the inner DF is copied);
- tnl_update_pmtu(): an inner DF packet longer than the underlay route's MTU - 20 is refused with
  ICMP frag-needed quoting that MTU; without DF the outer packet is fragmented by ip_output;
- a route to the remote that leads back into the tunnel is a collision (dropped).
The outer packet then takes the node's own output path (OUTPUT, POSTROUTING, ARP, underlay).

Receive, ipip_rcv(): an IPv4 protocol-4 packet delivered locally (after PREROUTING and INPUT as
an outer packet) is taken by the fallback device whatever its source and destination (`remote
any local any`), when the device is up; else tunnel4_rcv() answers ICMP port unreachable. The
inner packet is received on tunl0 like on any device (its own PREROUTING, routing, FORWARD...).

Not the kernel's: the outer IP ID (the kernel's per-destination ip_idents start at random
values; pktemu counts per namespace); the outer CE mark is not copied into the inner header on
receive (ip_tunnel_ecn_decap); only the fallback device (no `local`/`remote`/`key` tunnels).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pktemu.net import ipv4
from pktemu.net.device import PACKET_HOST, NetDevice, register_kind
from pktemu.net.frame import ETH_HLEN, Frame, int2ip

if TYPE_CHECKING:
    from pktemu.net.node import Node

IPPROTO_IPIP = 4
IPIP_HLEN = 20                      # the outer IPv4 header: tunl0's MTU is the underlay's - 20
FALLBACK_MTU = 1480                 # ETH_DATA_LEN - 20, the fallback device's MTU
LINKTYPE_RAW = 101
_ETH_IP = b"\x00" * 12 + b"\x08\x00"


class Ipip(NetDevice):
    kind = "ipip"
    #: what tcpdump on the device writes: raw IPv4, no Ethernet header (ARPHRD_TUNNEL)
    linktype = LINKTYPE_RAW

    def __init__(self, node: "Node", name: str, mac: bytes, mtu: int, params: dict[str, Any]) -> None:
        super().__init__(node, name, b"\x00" * 6, mtu)     # dev_addr is the 4-byte local: 0.0.0.0
        self.ttl: int = params.get("ttl", 0)                # 0: inherit
        self.pmtudisc: bool = params.get("pmtudisc", False)
        self._nexthop = 0

    def open(self) -> None:
        """The ipip module's tunnel4 handler for protocol 4 (xfrm4_tunnel_register)."""
        self.node.register_protocol(IPPROTO_IPIP, self.ipip_rcv)

    def pkt_type(self, frame: Frame) -> str:
        return PACKET_HOST                                  # no link layer: every packet is ours

    # ------------------------------------------------------------------ egress
    def noarp_output(self, frame: Frame, nexthop: int) -> None:
        """neigh_output on a NOARP device: no resolution; the route's next hop rides along."""
        frame.set_macs(b"\x00" * 6, b"\x00" * 6)
        self._nexthop = nexthop
        self.xmit(frame)

    def transmit(self, frame: Frame) -> None:
        """ip_tunnel_xmit(): outer header, PMTU check, then ip_local_out."""
        node = self.node
        remote = self._nexthop
        inner = bytes(frame.data[ETH_HLEN:ETH_HLEN + frame.ip_len])
        r = node.route_output(remote)
        rt, saddr = r if r is not None else (None, None)
        if rt is None or saddr is None:
            node.drop(frame, f"dev {self.name}", f"ipip: no route to the remote {int2ip(remote)}")
            node.icmp_send(frame, 3, 1)                     # tx_error_icmp: host unreachable
            return
        if rt.dev == self.name:
            node.drop(frame, f"dev {self.name}", f"ipip: the route to the remote {int2ip(remote)} is "
                                                 f"through {self.name} itself (collision)")
            return
        under = node.devices.get(rt.dev)
        df = frame.df or self.pmtudisc
        if df and under is not None:
            mtu = under.mtu - IPIP_HLEN                     # tnl_update_pmtu
            if frame.df and len(inner) > mtu:
                node.drop(frame, f"dev {self.name}", f"ipip: {len(inner)} bytes with DF > "
                                                     f"{rt.dev} MTU - 20 ({mtu}): frag-needed")
                node.icmp_send(frame, 3, 4, info=mtu)
                return
        tos_in = inner[1]
        ecn = 0x02 if tos_in & 3 == 3 else tos_in & 3      # INET_ECN_encapsulate: CE -> ECT(0)
        outer = ipv4.build_ip(saddr, remote, IPPROTO_IPIP, inner, ident=node.next_ip_id(), df=df,
                              ttl=self.ttl or frame.ttl, tos=ecn)
        outer.mark = frame.mark                             # skb_scrub_packet(xnet=false) keeps it
        outer.notes, outer.meta = frame.notes, frame.meta   # the same sk_buff; conntrack is reset
        outer.note(f"ipip {self.name}: encapsulated {int2ip(frame.saddr)} > {int2ip(frame.daddr)} in "
                   f"{int2ip(saddr)} > {int2ip(remote)} proto 4, ttl "
                   f"{'inherit' if not self.ttl else self.ttl}, DF {'set' if df else 'clear'}")
        ipv4.ip_local_out(node, outer)

    # ------------------------------------------------------------------ ingress
    def ipip_rcv(self, outer: Frame) -> None:
        """ipip_rcv() + ip_tunnel_rcv(): the fallback takes any remote; strip, receive on tunl0."""
        node = self.node
        ihl = (outer.data[ETH_HLEN] & 0xF) * 4
        data = bytes(outer.data[ETH_HLEN + ihl:ETH_HLEN + outer.ip_len])
        if not self.up:
            node.drop(outer, "ipip_rcv", f"{self.name} is down: no tunnel for protocol 4 (tunnel4_rcv)")
            node.icmp_send(outer, 3, 3)
            return
        if len(data) < 20 or data[0] >> 4 != 4:
            node.drop(outer, "ipip_rcv", "inner packet is not IPv4")
            return
        inner = Frame(_ETH_IP + data, outer.mark)
        inner.notes, inner.meta = outer.notes, outer.meta
        inner.note(f"ipip {self.name}: decapsulated from {int2ip(outer.saddr)} (remote any)")
        node.sim.schedule(0, self.receive, inner)           # gro_cells: the device's NAPI poll


register_kind("ipip", Ipip)
