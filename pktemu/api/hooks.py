"""Python netfilter hooks and NFQUEUE handlers, the Scapy side (docs/python-api.md, "Netfilter hooks").

The engine (pktemu.netfilter.pyhooks, .nfqueue) speaks bytes; here a hook function gets a
Scapy `IP` packet and may answer a verdict or a modified packet, whose lengths and checksums
are recomputed before its bytes replace the frame's.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from pktemu.errors import PktemuError, excerpt
from pktemu.net.node import Node
from pktemu.netfilter.core import HOOKS, NF_ACCEPT, NF_DROP
from pktemu.netfilter.hooks import HookEntry
from pktemu.netfilter.nfqueue import Handler, bind_queue
from pktemu.netfilter.pyhooks import PyVerdict, netfilter_of, register_pyhook

if TYPE_CHECKING:
    from scapy.packet import Packet

ScapyHook = Callable[["Packet"], Any]


def add_hook(node: Node, hook: str, priority: int, fn: ScapyHook) -> HookEntry:
    """Register `fn` (Scapy packet in, verdict or packet out) at `hook` and `priority` of `node`."""
    if hook not in HOOKS:
        raise PktemuError(f"hook: {excerpt(hook)} is not a netfilter hook (one of {', '.join(HOOKS)})")
    if not callable(fn):
        raise PktemuError(f"hook: {excerpt(fn)} is not a function")
    name = getattr(fn, "__name__", type(fn).__name__)
    return register_pyhook(netfilter_of(node), hook, priority, name, _scapy_side(fn))


def add_queue(node: Node, num: int, handler: Handler) -> None:
    """Attach `handler` to NFQUEUE queue `num` of `node` (netfilterqueue's `bind`)."""
    bind_queue(netfilter_of(node), num, handler)


def _scapy_side(fn: ScapyHook) -> Callable[[bytes], PyVerdict]:
    from scapy.layers.inet import IP
    from scapy.packet import Packet

    def call(data: bytes) -> PyVerdict:
        answer = fn(IP(data))
        if answer is None or answer is True:
            return NF_ACCEPT
        if answer is False:
            return NF_DROP
        if isinstance(answer, int) and answer in (NF_ACCEPT, NF_DROP):
            return int(answer)
        if isinstance(answer, Packet):
            return _rebuilt(answer, data)
        raise PktemuError(f"python hook {getattr(fn, '__name__', fn)}: answered {excerpt(answer)}; "
                          "expected pktemu.ACCEPT, pktemu.DROP, True, False, None or a Scapy packet")
    return call


def _rebuilt(pkt: Packet, old: bytes) -> bytes:
    """The packet's bytes; when they changed, with IP and transport lengths (header lengths too:
    added options) and checksums redone."""
    from scapy.layers.inet import ICMP, IP, TCP, UDP

    if IP not in pkt:
        raise PktemuError(f"python hook: answered {pkt.summary()}, which has no IP layer")
    ip = pkt[IP]
    raw = bytes(ip)
    if raw == old:
        return old
    ip = ip.copy()
    for layer, fields in ((IP, ("ihl", "len", "chksum")), (TCP, ("dataofs", "chksum")),
                          (UDP, ("len", "chksum")), (ICMP, ("chksum",))):
        if layer in ip:
            for f in fields:
                setattr(ip[layer], f, None)
    return bytes(ip)
