"""IPv4 receive, forward and output paths (net/ipv4/ip_input.c, ip_forward.c, ip_output.c).

Netfilter hooks sit exactly where the kernel calls NF_HOOK, and the TTL is decremented before
the FORWARD hook, as ip_forward() does (so an ICMP error sent from FORWARD quotes TTL-1).
"""
from __future__ import annotations

import struct
from dataclasses import replace
from typing import TYPE_CHECKING

from pktemu.net.device import PACKET_HOST, PACKET_OTHERHOST, NetDevice
from pktemu.net.fib_rules import ICMP_CODE, ROUTE_ERRNO, FibResult, Flow
from pktemu.net.frame import ETH_HLEN, Frame, checksum, int2ip
from pktemu.net.inetpeer import ERROR_BURST, ERROR_COST, peers
from pktemu.net.ip_fragment import fragment, output_mtu
from pktemu.net.pmtu import path_mtu
from pktemu.net.martian import input_martian, output_martian
from pktemu.net.route import Route
from pktemu.netfilter.core import FORWARD, INPUT, NF_ACCEPT, OUTPUT, POSTROUTING, PREROUTING

if TYPE_CHECKING:
    from pktemu.net.node import Node

_IPH = struct.Struct("!BBHHHBBH4s4s")
_ETH_IP = b"\x00" * 12 + b"\x08\x00"
IPPROTO_ICMP = 1
FLOW_SADDR = "flow_saddr"      # frame.meta: the source ip_rule sees for a locally sent packet


def build_ip(saddr: int, daddr: int, proto: int, payload: bytes, *, ident: int, df: bool = True,
             ttl: int = 64, tos: int = 0) -> Frame:
    """A Frame holding an IPv4 datagram behind a blank Ethernet header (neigh fills the MACs)."""
    hdr = bytearray(_IPH.pack(0x45, tos, 20 + len(payload), ident, 0x4000 if df else 0, ttl, proto, 0,
                              saddr.to_bytes(4, "big"), daddr.to_bytes(4, "big")))
    struct.pack_into("!H", hdr, 10, checksum(hdr))
    return Frame(_ETH_IP + bytes(hdr) + payload)


# ---------------------------------------------------------------------------- receive
def validate_header(frame: Frame) -> str | None:
    """ip_rcv_core() / br_validate_ipv4(): what is wrong with the header, or None.

    A good frame loses its Ethernet padding on the way (pskb_trim_rcsum).
    """
    data = frame.data
    if len(data) < ETH_HLEN + 20 or data[ETH_HLEN] >> 4 != 4 or data[ETH_HLEN] & 0xF < 5:
        return "bad IPv4 header"
    ihl = (data[ETH_HLEN] & 0xF) * 4
    end = ETH_HLEN + frame.ip_len
    if end - ETH_HLEN < ihl or end > len(data):
        return "bad IPv4 total length"
    if checksum(data[ETH_HLEN:ETH_HLEN + ihl]) != 0:
        return "bad IPv4 header checksum"
    if len(data) > end:
        del data[end:]
    return None


def ip_rcv(node: "Node", dev: NetDevice, frame: Frame) -> None:
    """ip_rcv + ip_rcv_finish: sanity checks, PREROUTING, then the input route decides."""
    if dev.pkt_type(frame) == PACKET_OTHERHOST and frame.nf_bridge is None:
        node.drop(frame, "ip_rcv", "frame not addressed to this host (PACKET_OTHERHOST)")
        return
    err = validate_header(frame)
    if err is not None:
        node.drop(frame, "ip_rcv", err)
        return
    nfb = frame.nf_bridge
    if nfb is None or not nfb.prerouting_done:
        # ip_sabotage_in: a frame that br_netfilter already ran through PREROUTING skips it here
        nf = node.nf
        if nf.active and nf.hook(PREROUTING, frame, dev.name, None) != NF_ACCEPT:
            return
    ip_route_input(node, dev, frame)


def ip_route_input(node: "Node", dev: NetDevice, frame: Frame) -> None:
    daddr = frame.daddr
    loopback = daddr >> 24 == 127
    if loopback or frame.saddr >> 24 == 127:
        why = input_martian(node, dev.name, frame.saddr, daddr)
        if why is not None:
            node.drop(frame, "ip_route_input", why)
            return
    if loopback or node.is_local(daddr) or node.is_broadcast(daddr):    # `local 127.0.0.0/8 dev lo`
        ip_local_deliver(node, dev, frame)
        return
    if daddr >> 28 == 0xE:
        node.drop(frame, "ip_route_input", "multicast not routed")
        return
    if not node.sysctl("net.ipv4.ip_forward"):
        node.drop(frame, "ip_route_input", f"not local ({int2ip(daddr)}) and ip_forward=0"
                  + node.changed("sysctl net.ipv4.ip_forward"))
        return
    if not _rp_filter_ok(node, dev, frame):
        node.drop(frame, "ip_route_input", "rp_filter: reverse path is not via the input device"
                  + node.changed("sysctl net.ipv4.conf.all.rp_filter",
                                 f"sysctl net.ipv4.conf.{dev.name}.rp_filter"))
        return
    if not node.fib.custom:
        rt = node.routes.lookup(daddr)
        if rt is not None and rt.type == "unicast":
            ip_forward(node, dev, frame, rt)
            return
        res = FibResult(rt, "ENETUNREACH" if rt is None else ROUTE_ERRNO.get(rt.type, "ENETUNREACH"))
    else:
        res = node.fib.lookup(flow_of(frame, dev.name))
    if res.errno is not None or res.route is None:
        _route_error(node, frame, res)
        return
    ip_forward(node, dev, frame, res.route, res.why)


def flow_of(frame: Frame, iif: str = "lo") -> Flow:
    """The flowi4 of a packet for `ip rule`: addresses, mark, TOS, protocol and ports."""
    ports = frame.has_ports
    return Flow(frame.daddr, frame.saddr, iif, None, frame.mark, frame.data[ETH_HLEN + 1], frame.proto,
                frame.sport if ports else 0, frame.dport if ports else 0)


def _route_error(node: "Node", frame: Frame, res: FibResult) -> None:
    """ip_error(): ICMP net/host unreachable or pkt-filtered by the errno; a blackhole is silent."""
    daddr = int2ip(frame.daddr)
    if res.rule is None and res.route is None:
        frame.note(f"route {daddr}: no route")
        node.drop(frame, "ip_route_input", f"no route to {daddr}")
    else:
        what = res.why + (str(res.route) if res.route is not None else "")
        frame.note(f"route {daddr}: {what.rstrip(': ')} ({res.errno})")
        node.drop(frame, "ip_route_input", f"{what.rstrip(': ')} ({res.errno})")
    code = ICMP_CODE.get(res.errno or "")
    if code is not None and peers(node).allow(frame.saddr, node.now(), ERROR_COST, ERROR_BURST):
        node.icmp_send(frame, 3, code)


def _rp_filter_ok(node: "Node", dev: NetDevice, frame: Frame) -> bool:
    mode = node.sysctl("net.ipv4.conf.all.rp_filter", dev.name)
    if mode == 0:
        return True
    if node.fib.custom:        # __fib_validate_source: reverse flow from lo, mark if src_valid_mark
        mark = frame.mark if node.conf_or("src_valid_mark", dev.name) else 0
        back = node.fib.lookup(Flow(frame.saddr, frame.daddr, "lo", None, mark)).route
    else:
        back = node.routes.lookup(frame.saddr)
    if back is None or back.type != "unicast":
        return False
    return mode == 2 or back.dev == dev.name


def ip_local_deliver(node: "Node", dev: NetDevice, frame: Frame) -> None:
    if frame.is_fragment:
        whole = node.frags.add(frame)
        if whole is None:
            return
        frame = whole
    nf = node.nf
    if nf.active and nf.hook(INPUT, frame, dev.name, None, physin=_physin(frame)) != NF_ACCEPT:
        return
    proto = frame.proto
    handler = node.protocols.get(proto)
    if handler is None:
        node.drop(frame, "ip_local_deliver", f"no handler for IP protocol {proto}")
        node.icmp_send(frame, 3, 2)
        return
    handler[0](frame)


# ---------------------------------------------------------------------------- forward
def ip_forward(node: "Node", in_dev: NetDevice, frame: Frame, rt: Route, rule: str = "") -> None:
    if in_dev.pkt_type(frame) != PACKET_HOST and frame.nf_bridge is None:
        node.drop(frame, "ip_forward", "not addressed to this host at L2")
        return
    if frame.ttl <= 1:
        node.drop(frame, "ip_forward", "TTL exceeded")
        node.icmp_send(frame, 11, 0)
        return
    out = node.devices.get(rt.dev)
    if out is None:
        node.drop(frame, "ip_forward", f"route device {rt.dev} missing")
        return
    nexthop = rt.gateway if rt.gateway is not None else frame.daddr
    if frame.ip_len > out.mtu:
        if frame.df:
            node.drop(frame, "ip_forward", f"needs fragmentation (len {frame.ip_len} > mtu {out.mtu}, DF)")
            node.icmp_send(frame, 3, 4, info=out.mtu)
            return
    frame.dec_ttl()
    frame.notes.append(_fwd_note(in_dev.name, out.name, rule, rt))
    nf = node.nf
    if nf.active and nf.hook(FORWARD, frame, in_dev.name, out.name, physin=_physin(frame)) != NF_ACCEPT:
        return
    ip_output(node, frame, out, nexthop)


#: (devices and rule, id of the route) -> (the route, the note every packet it forwards gets): made
#: once per route (the entry holds its route, so the id is that route's while it is there)
_ROUTE_NOTES: dict[tuple[str, str, str, int], tuple[Route, str]] = {}


def _fwd_note(in_name: str, out_name: str, rule: str, rt: Route) -> str:
    """`fwd IN->OUT via [RULE: ]ROUTE`."""
    key = (in_name, out_name, rule, id(rt))
    hit = _ROUTE_NOTES.get(key)
    if hit is not None and hit[0] is rt:
        return hit[1]
    note = f"fwd {in_name}->{out_name} via {rule}{rt}" + (f" ({rt.why})" if rt.why else "")
    if len(_ROUTE_NOTES) >= 1 << 14:
        _ROUTE_NOTES.clear()
    _ROUTE_NOTES[key] = (rt, note)
    return note


# ---------------------------------------------------------------------------- output
def default_ttl(node: "Node") -> int:
    """ip4_dst_hoplimit(): what a socket without IP_TTL, the kernel's own answers and a VXLAN
    device with `ttl auto` put in the TTL."""
    return node.sysctls.get("net.ipv4.ip_default_ttl", 64)


def ip_send(node: "Node", saddr: int, daddr: int, proto: int, payload: bytes, *, df: bool = True,
            ttl: int = 0, tos: int = 0, note: str | None = None, cause: str | None = None,
            flow_saddr: int | None = None) -> None:
    """ip_queue_xmit for a transport: build the header, then the local output path.

    `note` says what the packet is, `cause` (a note of another frame, e.g. the REJECT rule's)
    why it was sent; both go on the new frame's notes for its first capture. `flow_saddr` is the
    source `ip rule` sees when it is not the packet's: 0 for an unbound, unconnected UDP socket
    (udp_sendmsg routes with the socket's inet_saddr). `ttl` 0 is the namespace's default.
    """
    frame = build_ip(saddr, daddr, proto, payload, ident=node.next_ip_id(), df=df,
                     ttl=ttl or default_ttl(node), tos=tos)
    if flow_saddr is not None:
        frame.meta[FLOW_SADDR] = flow_saddr
    if note:
        frame.note(note)
    if cause:
        frame.notes.append(cause)
    ip_local_out(node, frame)


def ip_local_out(node: "Node", frame: Frame) -> None:
    daddr = frame.daddr
    res = _output_route(node, frame, frame.meta.pop(FLOW_SADDR, frame.saddr))
    if res.errno is not None or res.route is None:
        links = "; ".join(v for k, v in node.changes.items() if k.startswith("link "))
        node.drop(frame, "ip_local_out", _out_error(frame, res) + (f" after {links}" if links else ""))
        return
    rt = res.route
    why = output_martian(node, frame.saddr, daddr, rt.dev)
    if why is not None:
        node.drop(frame, "ip_local_out", why)
        return
    keys = (frame.saddr, daddr, frame.mark, frame.data[ETH_HLEN + 1])
    nf = node.nf
    if nf.active and nf.hook(OUTPUT, frame, None, rt.dev) != NF_ACCEPT:
        return
    if (frame.saddr, frame.daddr, frame.mark, frame.data[ETH_HLEN + 1]) != keys:
        # ip_route_me_harder: a DNAT in OUTPUT, or a MARK/TOS change in mangle OUTPUT
        res = _output_route(node, frame, frame.saddr)
        if res.errno is not None or res.route is None:
            node.drop(frame, "ip_local_out", _out_error(frame, res) + " after OUTPUT")
            return
        rt = res.route
        why = output_martian(node, frame.saddr, frame.daddr, rt.dev)
        if why is not None:         # a daddr change outside the nat hook (which checks it itself)
            node.drop(frame, "ip_local_out", why)
            return
    out = node.devices[rt.dev]
    frame.note(f"route {res.why}{rt}" + (f" ({rt.why})" if rt.why else ""))
    ip_output(node, frame, out, rt.gateway if rt.gateway is not None else frame.daddr,
              path_mtu(node, frame.daddr, out.mtu) if node.pmtu else out.mtu)


def _output_route(node: "Node", frame: Frame, saddr: int) -> FibResult:
    """ip_route_output_key() for a local packet: its own addresses first, then `ip rule` with
    `saddr` as the flow's source."""
    daddr = frame.daddr
    if node.is_local(daddr):
        return FibResult(Route(daddr, 32, "lo", scope="host", src=daddr))
    if not node.fib.custom:
        return node.fib_output(Flow(daddr))
    fl = flow_of(frame)
    return node.fib.lookup(fl if saddr == fl.saddr else replace(fl, saddr=saddr))


def _out_error(frame: Frame, res: FibResult) -> str:
    if res.rule is None and res.route is None:
        return f"no route to {int2ip(frame.daddr)} (ENETUNREACH)"
    what = res.why + (str(res.route) if res.route is not None else "")
    return f"{int2ip(frame.daddr)}: {what.rstrip(': ')} ({res.errno})"


def ip_output(node: "Node", frame: Frame, out: NetDevice, nexthop: int, mtu: int | None = None) -> None:
    """ip_output + ip_finish_output2: POSTROUTING, then the neighbour layer. `mtu`: a local
    packet's path MTU (the device's for a forwarded one)."""
    nf = node.nf
    if nf.active and nf.hook(POSTROUTING, frame, None, out.name, physin=_physin(frame)) != NF_ACCEPT:
        return
    if out.name == "lo":
        out.xmit(frame)
        return
    mtu = output_mtu(frame, out.mtu if mtu is None else mtu)
    if frame.ip_len > mtu:
        if frame.df:
            node.drop(frame, "ip_output", f"len {frame.ip_len} > mtu {mtu} with DF (EMSGSIZE)")
            return
        for piece in fragment(frame, mtu):
            node.neigh.output(out, nexthop, piece)
        return
    node.neigh.output(out, nexthop, frame)


def _physin(frame: Frame) -> str | None:
    """The bridge port a frame came in on: br_netfilter's info stays on the skb once it is routed,
    so physdev-in matches in INPUT, FORWARD and POSTROUTING too."""
    nfb = frame.nf_bridge
    return nfb.physin.dev.name if nfb is not None else None
