"""Hook functions written in Python, registered into a namespace's netfilter hook lists.

The engine side of `pktemu.Network.hook` (the Scapy conversion lives in pktemu/api/): a
callable gets the bytes of the IPv4 packet (IP header and up) at its hook and priority,
interleaved with the tables as in the kernel, and answers a verdict or new bytes. New bytes
replace the frame's, as a mangled skb: conntrack and the later hooks see the change.
"""
from __future__ import annotations

from typing import Any, Callable, Union

from pktemu.errors import PktemuError, excerpt
from pktemu.net.frame import ETH_HLEN, Frame
from pktemu.netfilter.core import NF_ACCEPT, NF_DROP, HookState
from pktemu.netfilter.hooks import HookEntry, Netfilter

#: What a Python hook's engine callable answers: a verdict, or the packet's new bytes (accept).
PyVerdict = Union[int, bytes, bytearray]
PyHookFn = Callable[[bytes], PyVerdict]

PRIORITY_MIN, PRIORITY_MAX = -(2**31), 2**31 - 1


def ip_packet(frame: Frame) -> bytes:
    """The IPv4 packet in the frame, without link-layer header or Ethernet padding."""
    d = frame.data
    total = int.from_bytes(d[ETH_HLEN + 2:ETH_HLEN + 4], "big")
    return bytes(d[ETH_HLEN:ETH_HLEN + total] if ETH_HLEN + total <= len(d) else d[ETH_HLEN:])


def replace_packet(frame: Frame, packet: bytes | bytearray) -> None:
    """The frame now carries `packet` after its Ethernet header (skb payload mangling)."""
    frame.data[ETH_HLEN:] = packet


def netfilter_of(node: Any) -> Netfilter:
    """The node's netfilter, made a hook list first if it had no rules (NoNetfilter): registering
    a hook loads no table and starts no conntrack."""
    nf = node.nf
    if not isinstance(nf, Netfilter):
        nf = node.nf = Netfilter(node, None)
    return nf


def register_pyhook(nf: Netfilter, hook: str, priority: int, name: str, fn: PyHookFn) -> HookEntry:
    """Insert `fn` at `priority` in `hook`; drops are reported as `python hook NAME at NODE HOOK prio N`."""
    if (isinstance(priority, bool) or not isinstance(priority, int)
            or not PRIORITY_MIN <= priority <= PRIORITY_MAX):
        raise PktemuError(f"hook: priority {excerpt(priority)} is not an integer from {PRIORITY_MIN} "
                          f"to {PRIORITY_MAX}")
    label = f"python hook {name} at {nf.node.name} {hook} prio {priority}"

    def run(frame: Frame, state: HookState) -> int:
        verdict = answered(frame)
        if state.trace is not None:          # `pktemu trace`: one step per hook function run
            state.trace.append({"table": "python", "chain": hook, "rulenum": None, "rule": name,
                                "verdict": "DROP" if verdict == NF_DROP else "ACCEPT", "priority": priority})
        return verdict

    def answered(frame: Frame) -> int:
        old = ip_packet(frame)
        answer = fn(old)
        if type(answer) is int and (answer == NF_ACCEPT or answer == NF_DROP):
            if answer == NF_DROP:
                frame.notes.append(f"{label}: DROP")
            return answer
        if isinstance(answer, (bytes, bytearray)):
            if answer != old:
                if len(answer) < 20 or answer[0] >> 4 != 4:
                    raise PktemuError(f"{label}: the modified packet is not an IPv4 packet")
                replace_packet(frame, answer)
                frame.notes.append(f"{label}: packet modified")
            return NF_ACCEPT
        raise PktemuError(f"{label}: answered {excerpt(answer)}, not a verdict")

    return nf.register(hook, HookEntry(priority, name, run, "python", label))
