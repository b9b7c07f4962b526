"""The vocabulary shared by the netfilter pieces: hooks, verdicts, conntrack info, NAT ranges.

The rules engine (`xtables`), conntrack/NAT (`conntrack`, `nat`) and the per-node hook runner
(`hooks`) only meet through what is defined here, as in the kernel where x_tables, nf_conntrack
and nf_nat meet through `struct nf_hook_state`, `enum ip_conntrack_info` and `nf_nat_range2`.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from pktemu.net.frame import Frame

# Hooks, in the order a forwarded packet meets them.
PREROUTING, INPUT, FORWARD, OUTPUT, POSTROUTING = "PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"
HOOKS = (PREROUTING, INPUT, FORWARD, OUTPUT, POSTROUTING)

# Tables and the hooks each one has (iptables' built-in chains).
TABLE_HOOKS: dict[str, tuple[str, ...]] = {
    "raw": (PREROUTING, OUTPUT),
    "mangle": (PREROUTING, INPUT, FORWARD, OUTPUT, POSTROUTING),
    "nat": (PREROUTING, INPUT, OUTPUT, POSTROUTING),
    "filter": (INPUT, FORWARD, OUTPUT),
}

# Verdicts (include/uapi/linux/netfilter.h).
NF_DROP, NF_ACCEPT, NF_STOLEN = 0, 1, 2

# enum ip_conntrack_info
IP_CT_ESTABLISHED, IP_CT_RELATED, IP_CT_NEW, IP_CT_ESTABLISHED_REPLY, IP_CT_RELATED_REPLY = 0, 1, 2, 3, 4
IP_CT_IS_REPLY = 3

# enum ip_conntrack_status bits (include/uapi/linux/netfilter/nf_conntrack_common.h)
IPS_EXPECTED = 1 << 0
IPS_SEEN_REPLY = 1 << 1
IPS_ASSURED = 1 << 2
IPS_CONFIRMED = 1 << 3
IPS_SRC_NAT = 1 << 4
IPS_DST_NAT = 1 << 5
IPS_SRC_NAT_DONE = 1 << 7
IPS_DST_NAT_DONE = 1 << 8
IPS_DYING = 1 << 9

# NAT manipulation types (enum nf_nat_manip_type)
MANIP_SRC, MANIP_DST = 0, 1

ORIGINAL, REPLY = 0, 1   # conntrack directions


class _Untracked:
    """The `-j CT --notrack` / NOTRACK conntrack: matched by `--ctstate UNTRACKED`."""

    def __repr__(self) -> str:
        return "UNTRACKED"


UNTRACKED = _Untracked()


@dataclass
class NatRange:
    """nf_nat_range2: addresses and ports to map to; None keeps the packet's own."""
    min_ip: int | None = None
    max_ip: int | None = None
    min_port: int | None = None
    max_port: int | None = None
    random: bool = False          # --random
    random_fully: bool = False    # --random-fully
    persistent: bool = False


class NodeView(Protocol):
    """What netfilter may ask of the namespace it runs in (the node implements this)."""

    name: str
    #: the namespace's sysctls (conntrack reads its net.netfilter.* ones)
    sysctls: dict[str, int]

    def is_local(self, addr: int) -> bool: ...

    def addr_type(self, addr: int) -> str:
        """iptables addrtype: LOCAL, UNICAST, BROADCAST, MULTICAST, UNSPEC, BLACKHOLE, UNREACHABLE."""
        ...

    def masquerade_source(self, out_dev: str, daddr: int) -> int | None:
        """The address MASQUERADE uses: the preferred source of the route to daddr via out_dev."""
        ...

    def send_reject(self, frame: "Frame", state: "HookState", reject_with: str) -> None:
        """Build and send the ICMP error or TCP RST a REJECT target answers with."""
        ...

    def rng(self, name: str) -> random.Random: ...

    def now(self) -> int:
        """Virtual time in ns."""
        ...


@dataclass
class HookState:
    """nf_hook_state: where a packet is (hook, devices) plus what targets may call back into.

    `nf` is the node's Netfilter (conntrack + NAT); NAT targets call `nf.nat_setup(...)`.
    `trace`, when not None, collects one entry per rule evaluated (for `pktemu trace`).
    """
    hook: str
    in_dev: str | None
    out_dev: str | None
    node: NodeView
    nf: Any = None
    physin: str | None = None      # bridge port a bridged frame came in on (physdev match)
    physout: str | None = None
    trace: list[Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
