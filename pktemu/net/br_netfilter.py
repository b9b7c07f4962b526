"""br_netfilter: bridged IPv4 frames detour through iptables (net/bridge/br_netfilter_hooks.c).

With bridge-nf-call-iptables=1 a frame entering a bridge port runs the IPv4 PREROUTING hook
(conntrack, DNAT) *before* the bridge decides where it goes; a bridged frame then runs FORWARD and
POSTROUTING with the bridge as in/out device. When DNAT sends a frame back to a host behind the
same bridge (a hairpinned Service), br_nf_pre_routing_finish_bridge() uses the neighbour entry:
if it is not NUD_CONNECTED the frame is handed to neigh->output on the bridge device, so tcpdump
on the bridge sees it with the bridge's source MAC, half translated (DNAT done, SNAT not yet);
br_dev_xmit then restores the original source MAC and bridges it on. That is the kernel's
behaviour the oracle recorded in s3, reproduced here step by step.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from pktemu.net.frame import Frame, bytes2mac, int2ip
from pktemu.net.ip_fragment import fragment, output_mtu
from pktemu.net.ipv4 import validate_header
from pktemu.net.neighbour import CONNECTED
from pktemu.netfilter.core import FORWARD, NF_ACCEPT, POSTROUTING, PREROUTING

if TYPE_CHECKING:
    from pktemu.net.bridge import Bridge, BridgePort


class NfBridgeInfo:
    """struct nf_bridge_info: what a bridged frame remembers between the hooks."""

    __slots__ = ("physin", "prerouting_done", "bridged_dnat", "saved_src")

    def __init__(self, physin: "BridgePort") -> None:
        self.physin = physin
        self.prerouting_done = False
        self.bridged_dnat = False
        self.saved_src = b""


def pre_routing(bridge: "Bridge", port: "BridgePort", frame: Frame) -> None:
    """br_nf_pre_routing + br_nf_pre_routing_finish."""
    node = bridge.node
    err = validate_header(frame)
    if err is not None:                   # br_validate_ipv4: inhdr_error, the frame is freed
        node.drop(frame, f"br_netfilter {bridge.name}", err)
        return
    nfb = frame.nf_bridge = NfBridgeInfo(port)
    daddr = frame.daddr
    if node.nf.hook(PREROUTING, frame, bridge.name, None, physin=port.dev.name) != NF_ACCEPT:
        return
    nfb.prerouting_done = True
    if frame.daddr != daddr:
        new = frame.daddr
        rt = None if node.is_local(new) else node.routes.lookup(new)
        if rt is not None and rt.dev == bridge.name:
            _bridged_dnat(bridge, port, frame, rt.gateway if rt.gateway is not None else new)
            return
        frame.data[0:6] = bridge.mac      # routed after DNAT: the frame is now for this host
        frame.note(f"br_nf: DNAT to {int2ip(new)} is routed, dst MAC := {bridge.name}")
    bridge.handle_frame_finish(port, frame)


def _bridged_dnat(bridge: "Bridge", port: "BridgePort", frame: Frame, nexthop: int) -> None:
    """br_nf_pre_routing_finish_bridge: DNAT to a host on the same bridge."""
    node = bridge.node
    n = node.neigh.lookup(bridge, nexthop)
    if n is not None and n.state in CONNECTED and n.mac is not None:
        frame.data[0:6] = n.mac
        frame.note(f"br_nf: bridged DNAT, neigh {int2ip(nexthop)} {n.state}")
        bridge.handle_frame_finish(port, frame)
        return
    nfb = frame.nf_bridge
    nfb.saved_src = bytes(frame.data[6:12])
    nfb.bridged_dnat = True
    state = n.state if n is not None else "none"
    frame.note(f"br_nf: bridged DNAT, neigh {int2ip(nexthop)} {state}: via neigh output on {bridge.name}")
    node.neigh.output(bridge, nexthop, frame)


def finish_bridge_slow(bridge: "Bridge", frame: Frame) -> None:
    """br_nf_pre_routing_finish_bridge_slow: called from br_dev_xmit for a bridged-DNAT frame."""
    nfb = frame.nf_bridge
    nfb.bridged_dnat = False
    frame.data[6:12] = nfb.saved_src
    frame.note(f"br_nf: src MAC restored to {bytes2mac(nfb.saved_src)}")
    bridge.handle_frame_finish(nfb.physin, frame)


def forward(bridge: "Bridge", in_port: "BridgePort | None", out: "BridgePort", frame: Frame) -> None:
    """br_nf_forward_ip then br_nf_post_routing: FORWARD and POSTROUTING with in/out = bridge."""
    node = bridge.node
    physin = in_port.dev.name if in_port is not None else None
    if node.nf.hook(FORWARD, frame, bridge.name, bridge.name, physin=physin,
                    physout=out.dev.name) != NF_ACCEPT:
        return
    if node.nf.hook(POSTROUTING, frame, None, bridge.name, physin=physin,
                    physout=out.dev.name) != NF_ACCEPT:
        return
    mtu = output_mtu(frame, out.dev.mtu)
    if frame.ip_len > mtu and not frame.df:      # br_nf_dev_queue_xmit: a reassembled one, again in pieces
        for piece in fragment(frame, mtu):
            out.dev.xmit(piece)
        return
    out.dev.xmit(frame)
