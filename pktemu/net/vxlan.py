"""VXLAN devices as flannel sets them up (drivers/net/vxlan/vxlan_core.c).

`ip link add flannel.1 type vxlan id 1 local 192.168.50.11 dev eth0 dstport 8472 nolearning`,
`bridge fdb append MAC dev flannel.1 dst 192.168.50.12` and
`ip neigh add 10.244.1.0 lladdr MAC dev flannel.1 nud permanent`: the route sends a packet to
the device, the permanent neighbour gives the inner destination MAC (tcpdump on flannel.1 sees the
inner frame), the device's FDB gives the remote VTEP, and vxlan_xmit_one() wraps the frame in
outer Ethernet/IPv4/UDP/VXLAN headers that leave through the node's own output path (OUTPUT,
routing, POSTROUTING, ARP, the underlay device). Received, a datagram to the VXLAN port goes
through PREROUTING and INPUT as outer UDP; the tunnel socket strips it and the inner frame is
received on the VXLAN device like on any other (its own PREROUTING, routing, FORWARD ...).

The outer headers, as this machine's kernel (6.18) builds them, held to it by
tests/test_kernel_vxlan.py:
- IPv4 TTL ip_default_ttl, 64 by default (`ttl auto`: ip4_dst_hoplimit), TOS 0 with the inner
  ECN bits (INET_ECN_encapsulate), DF clear (`df unset` is the default), IP ID from the sending
  namespace's counter;
- UDP destination port `dstport`, source port udp_flow_src_port() over the inner flow in
  [32768, 61000) (the local port range, max+1, when `srcport 0 0`);
- UDP checksum computed: `udpcsum` is the kernel default (iproute2 and flannel's netlink library
  send no IFLA_VXLAN_UDP_CSUM, and `ip -d link` shows `udpcsum`). tcpdump on a veth shows the
  partial (offloaded, CHECKSUM_PARTIAL) value there; pktemu writes the finished checksum.
  `udpcsum: false` (VXLAN_F_UDP_ZERO_CSUM_TX) sends 0.

The source port cannot match the kernel's bit for bit: skb_get_hash() is the flow dissector's
jhash2 keyed with `hashrnd`, a random secret drawn once per boot (net_get_random_once), and TCP
packets carry their socket's random sk_txhash instead. pktemu computes the same shape: jhash2 of
the inner flow keys (direction-independent, as __flow_hash_consistentify makes them) keyed with a
secret from the run's seed, then the kernel's reduction into the port range. So one flow keeps
one port, both directions of a flow hash alike, and the port is in the kernel's range.

Also not the kernel's: the outer IP ID (the kernel's ip_idents slot per destination starts at a
random value; pktemu counts per namespace); on receive the outer ECN CE mark is not copied into
the inner header (IP_ECN_decapsulate), and the outer TOS's ECN bits (copied from the inner on
send) are not exercised by the kernel comparison.

Wireshark (4.0) decodes VXLAN on UDP 4789 only; for flannel's 8472 use `-d udp.port==8472,vxlan`
(tshark) or Decode As; the encapsulating frame's comment says so.
"""
from __future__ import annotations

import hashlib
import struct
import weakref
from typing import TYPE_CHECKING, Any

from pktemu.net import ipv4, udp
from pktemu.net.device import NetDevice, register_kind
from pktemu.net.frame import (ETH_HLEN, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, Frame, bytes2mac, int2ip,
                              ip2int, mac2bytes)
from pktemu.net.neighbour import PERMANENT, Neighbour

if TYPE_CHECKING:
    from pktemu.net.node import Node

VXLAN_HEADROOM = 50                 # outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14
FLANNEL_PORT = 8472                 # the Linux default dstport, and flannel's
PORT_MIN, PORT_MAX = 32768, 61000   # ip_local_port_range 32768 60999, max + 1 (udp_flow_src_port)
VXLAN_HF_VNI = 0x08000000
ZERO_MAC = b"\x00" * 6
WIRESHARK_HINT = "Wireshark: decode UDP 8472 as VXLAN (tshark -d udp.port==8472,vxlan)"

_VXH = struct.Struct("!II")


# ---------------------------------------------------------------------------- the flow hash
def _rol(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & 0xFFFFFFFF


def jhash2(words: list[int], initval: int) -> int:
    """include/linux/jhash.h jhash2(): Bob Jenkins' lookup3 over 32-bit words."""
    m = 0xFFFFFFFF
    a = b = c = (0xDEADBEEF + (len(words) << 2) + initval) & m
    k = list(words)
    while len(k) > 3:
        a, b, c = (a + k[0]) & m, (b + k[1]) & m, (c + k[2]) & m
        a = (a - c) & m; a ^= _rol(c, 4); c = (c + b) & m           # noqa: E702 (__jhash_mix)
        b = (b - a) & m; b ^= _rol(a, 6); a = (a + c) & m           # noqa: E702
        c = (c - b) & m; c ^= _rol(b, 8); b = (b + a) & m           # noqa: E702
        a = (a - c) & m; a ^= _rol(c, 16); c = (c + b) & m          # noqa: E702
        b = (b - a) & m; b ^= _rol(a, 19); a = (a + c) & m          # noqa: E702
        c = (c - b) & m; c ^= _rol(b, 4); b = (b + a) & m           # noqa: E702
        k = k[3:]
    if not k:
        return c
    k += [0] * (3 - len(k))
    a, b, c = (a + k[0]) & m, (b + k[1]) & m, (c + k[2]) & m
    c ^= b; c = (c - _rol(b, 14)) & m                               # noqa: E702 (__jhash_final)
    a ^= c; a = (a - _rol(c, 11)) & m                               # noqa: E702
    b ^= a; b = (b - _rol(a, 25)) & m                               # noqa: E702
    c ^= b; c = (c - _rol(b, 16)) & m                               # noqa: E702
    a ^= c; a = (a - _rol(c, 4)) & m                                # noqa: E702
    b ^= a; b = (b - _rol(a, 14)) & m                               # noqa: E702
    c ^= b; c = (c - _rol(b, 24)) & m                               # noqa: E702
    return c


def flow_hash(frame: Frame, hashrnd: int) -> int:
    """skb_get_hash() of an inner frame: its flow keys, lower address (and port) first."""
    if not frame.is_ipv4:       # no flow keys: jhash(eth addresses, 12, protocol), unkeyed
        return jhash2([int.from_bytes(frame.data[i:i + 4], "big") for i in (0, 4, 8)], frame.ethertype)
    s, d, proto = frame.saddr, frame.daddr, frame.proto
    sp = dp = icmp = 0
    if proto in (IPPROTO_TCP, IPPROTO_UDP) and frame.has_ports:
        sp, dp = frame.sport, frame.dport
    elif proto == IPPROTO_ICMP and not frame.is_fragment:     # key_icmp: type, code, echo id
        off = frame.l4off
        echo = frame.data[off] in (0, 8)
        icmp = (frame.data[off] << 24) | (frame.data[off + 1] << 16) | (frame.icmp_id if echo else 0)
    if (d, dp) < (s, sp):
        s, d, sp, dp = d, s, dp, sp
    return jhash2([(0x0800 << 16) | proto, (sp << 16) | dp, icmp, s, d], hashrnd) or 1


def udp_flow_src_port(hash32: int, lo: int = PORT_MIN, hi: int = PORT_MAX) -> int:
    """include/net/udp.h udp_flow_src_port(): fold the hash, scale it into [lo, hi)."""
    h = (hash32 ^ (hash32 << 16)) & 0xFFFFFFFF
    return ((h * (hi - lo)) >> 32) + lo


# ---------------------------------------------------------------------------- the tunnel socket
class _TunnelSock:
    """The kernel UDP socket a namespace's VXLAN devices share per port (struct vxlan_sock)."""

    def __init__(self, node: "Node", port: int) -> None:
        self.node = node
        self.devices: dict[int, Vxlan] = {}
        self.sock = node.udp.bind(port, None)
        self.sock.encap_rcv = self.encap_rcv

    def encap_rcv(self, outer: Frame, off: int) -> None:
        """vxlan_rcv(): check the header, find the device by VNI, hand it the inner frame.

        The inner frame is the same sk_buff with the outer headers pulled: it keeps the frame's
        metadata (a trace follows it) and mark and the notes not yet shown; conntrack is reset."""
        data = bytes(outer.data[off:ETH_HLEN + outer.ip_len])
        if len(data) < 8 + ETH_HLEN:
            self.node.drop(outer, "vxlan_rcv", "datagram shorter than VXLAN + Ethernet headers")
            return
        flags, vni = _VXH.unpack_from(data)
        if not flags & VXLAN_HF_VNI:
            self.node.drop(outer, "vxlan_rcv", "VXLAN header without the I (VNI) flag")
            return
        dev = self.devices.get(vni >> 8)
        if dev is None:
            self.node.drop(outer, "vxlan_rcv", f"no VXLAN device for VNI {vni >> 8}")
            return
        inner = Frame(data[8:], outer.mark)
        inner.notes, inner.meta = outer.notes, outer.meta
        dev.rcv(inner, outer.saddr, outer.sport)


_SOCKS: "weakref.WeakKeyDictionary[Node, dict[int, _TunnelSock]]" = weakref.WeakKeyDictionary()


# ---------------------------------------------------------------------------- the device
class Vxlan(NetDevice):
    kind = "vxlan"

    def __init__(self, node: "Node", name: str, mac: bytes, mtu: int, params: dict[str, Any]) -> None:
        super().__init__(node, name, mac, mtu)
        self.vni: int = params["vni"]
        self.dstport: int = params.get("dstport", FLANNEL_PORT)
        self.local: int | None = ip2int(params["local"]) if params.get("local") else None
        self.underlay: str | None = params.get("dev")
        self.learning: bool = params.get("learning", True)
        self.udpcsum: bool = params.get("udpcsum", True)
        self.ttl: int = params.get("ttl", 0)
        #: `bridge fdb show dev flannel.1`: MAC -> remote VTEP addresses (append adds one more)
        self.fdb: dict[bytes, list[int]] = {}
        for e in params.get("fdb", []):
            self.fdb_append(mac2bytes(e["mac"]), ip2int(e["dst"]))
        self._neigh = [(ip2int(e["ip"]), mac2bytes(e["lladdr"])) for e in params.get("neighbours", [])]
        #: the boot's hashrnd: one secret for every namespace of the machine (run), from its seed
        self.hashrnd = int.from_bytes(hashlib.sha256(f"{node.sim.seed}/hashrnd".encode()).digest()[:4], "big")

    def fdb_append(self, mac: bytes, dst: int) -> None:
        """`bridge fdb append MAC dev DEV dst IP` (self permanent)."""
        dsts = self.fdb.setdefault(bytes(mac), [])
        if dst not in dsts:
            dsts.append(dst)

    def open(self) -> None:
        """ndo_open: the shared tunnel socket on `dstport`, and the permanent neighbours."""
        socks = _SOCKS.setdefault(self.node, {})
        ts = socks.get(self.dstport)
        if ts is None:
            ts = socks[self.dstport] = _TunnelSock(self.node, self.dstport)
        ts.devices[self.vni] = self
        for ip, lladdr in self._neigh:
            add_permanent_neigh(self.node, self, ip, lladdr)

    def show_fdb(self) -> list[str]:
        return [f"{bytes2mac(m)} dst {int2ip(d)} self permanent"
                for m, ds in self.fdb.items() for d in ds]

    # ------------------------------------------------------------------ egress
    def transmit(self, frame: Frame) -> None:
        """vxlan_xmit(): FDB entry for the destination MAC, else the all-zeros default, else drop."""
        dst = frame.dst_mac
        remotes = self.fdb.get(dst)
        which = bytes2mac(dst)
        if remotes is None:
            remotes = self.fdb.get(ZERO_MAC)
            which = "00:00:00:00:00:00 (default)"
        if not remotes:
            self.node.drop(frame, f"vxlan {self.name}",
                           f"no FDB entry for {bytes2mac(dst)} and no default 00:00:00:00:00:00 entry "
                           "(SKB_DROP_REASON_NO_TX_TARGET: `bridge fdb append MAC dev "
                           f"{self.name} dst VTEP` missing)")
            return
        for i, remote in enumerate(remotes):
            self.xmit_one(frame if i == len(remotes) - 1 else frame.copy(), remote, which)

    def xmit_one(self, frame: Frame, remote: int, which: str) -> None:
        """vxlan_xmit_one() + udp_tunnel_xmit_skb(): outer headers, then ip_local_out."""
        node = self.node
        r = node.route_output(remote)
        if r is None:
            node.drop(frame, f"vxlan {self.name}", f"no route to VTEP {int2ip(remote)}")
            return
        if r[0].dev == self.name:
            node.drop(frame, f"vxlan {self.name}", f"circular route to VTEP {int2ip(remote)}")
            return
        saddr = self.local if self.local is not None else r[1]
        if saddr is None:
            node.drop(frame, f"vxlan {self.name}", f"no source address for VTEP {int2ip(remote)}")
            return
        inner = bytes(frame.data)
        sport = udp_flow_src_port(flow_hash(frame, self.hashrnd))
        payload = _VXH.pack(VXLAN_HF_VNI, self.vni << 8) + inner
        if self.udpcsum:
            seg = udp.build(saddr, remote, sport, self.dstport, payload)
        else:
            seg = struct.pack("!HHHH", sport, self.dstport, 8 + len(payload), 0) + payload
        inner_tos = inner[ETH_HLEN + 1] if frame.is_ipv4 else 0
        ecn = 0x02 if inner_tos & 3 == 3 else inner_tos & 3     # INET_ECN_encapsulate: CE -> ECT(0)
        outer = ipv4.build_ip(saddr, remote, IPPROTO_UDP, seg, ident=node.next_ip_id(), df=False,
                              ttl=self.ttl or ipv4.default_ttl(node), tos=ecn)
        outer.mark = frame.mark                                 # skb_scrub_packet(xnet=false) keeps it
        outer.notes, outer.meta = frame.notes, frame.meta       # the same sk_buff; conntrack is reset
        outer.note(f"vxlan {self.name}: fdb {which} -> dst {int2ip(remote)}; encapsulated VNI {self.vni}, "
                   f"UDP {sport} -> {self.dstport} (udp_flow_src_port of the inner flow); {WIRESHARK_HINT}")
        ipv4.ip_local_out(node, outer)

    # ------------------------------------------------------------------ ingress
    def rcv(self, inner: Frame, saddr: int, sport: int) -> None:
        """vxlan_set_mac() and gro_cells_receive(): loop check, learning, then the device receives."""
        src = inner.src_mac
        if src == self.mac:
            self.node.drop(inner, f"vxlan {self.name}", "inner source MAC is the device's own (loop)")
            return
        if self.learning and not src[0] & 1 and saddr not in self.fdb.get(src, []):
            self.fdb[src] = [saddr]                             # vxlan_snoop
            inner.note(f"vxlan {self.name}: learned {bytes2mac(src)} dst {int2ip(saddr)}")
        inner.note(f"vxlan {self.name}: decapsulated VNI {self.vni} from {int2ip(saddr)}:{sport}")
        self.node.sim.schedule(0, self.receive, inner)          # gro_cells: the device's NAPI poll


def add_permanent_neigh(node: "Node", dev: NetDevice, ip: int, lladdr: bytes) -> None:
    """`ip neigh add IP lladdr MAC dev DEV nud permanent` (what flanneld programs per node)."""
    n = Neighbour(dev, ip)
    n.mac, n.state = bytes(lladdr), PERMANENT
    node.neigh.entries[(dev.name, ip)] = n


register_kind("vxlan", Vxlan)
