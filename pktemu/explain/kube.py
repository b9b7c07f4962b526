"""kube-proxy's own packet-tracer question, answered by the real rules engine.

Upstream tests kube-proxy by tracing a packet (source, protocol, destination, port) through the
ruleset it generated and listing the endpoints the packet may reach and whether it is
masqueraded (`tracePacket` in pkg/proxy/iptables/proxier_test.go). That tracer matches rule text.
Here the packet is a real frame that runs through the hooks a node runs it through (nat
PREROUTING or OUTPUT, filter INPUT or FORWARD, nat POSTROUTING) with real conntrack and NAT,
once per outcome of the `statistic --mode random` matches: each one is forced to match and to
fail, depth first, so the endpoints come out in rule order, as upstream lists them.
"""
from __future__ import annotations

import random
import re
import struct
from dataclasses import dataclass, field
from typing import Any, Sequence

from pktemu.errors import PktemuError
from pktemu.net.frame import Frame, checksum, int2ip, ip2int
from pktemu.net.ipv4 import build_ip
from pktemu.net.sctp import sctp_set_cksum
from pktemu.netfilter.core import FORWARD, INPUT, NF_ACCEPT, OUTPUT, POSTROUTING, PREROUTING, HookState
from pktemu.netfilter.hooks import Netfilter
from pktemu.netfilter.xtables import Ruleset, load_rules

PROTOS = {"tcp": 6, "udp": 17, "sctp": 132}
MAX_BRANCHES = 512
_DRAW_MATCH, _DRAW_MISS = 0, 0x7FFFFFFF      # statistic matches when draw < probability (<= 2^31)

# The base-chain jumps kube-proxy's syncProxyRules ensures (iptablesJumpChains, each prepended,
# so the last listed comes first) and kubelet's KUBE-FIREWALL jumps, in the order iptables-save
# shows them on a node. kube-proxy's restore data (what its tests compare) leaves them out.
KUBE_JUMP_RULES: dict[str, tuple[str, ...]] = {
    "filter": (
        '-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" '
        '-j KUBE-PROXY-FIREWALL',
        '-A INPUT -m comment --comment "kubernetes health check service ports" -j KUBE-NODEPORTS',
        '-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service '
        'portals" -j KUBE-EXTERNAL-SERVICES',
        "-A INPUT -j KUBE-FIREWALL",
        '-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" '
        '-j KUBE-PROXY-FIREWALL',
        '-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD',
        '-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" '
        '-j KUBE-SERVICES',
        '-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service '
        'portals" -j KUBE-EXTERNAL-SERVICES',
        '-A OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" '
        '-j KUBE-PROXY-FIREWALL',
        '-A OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" '
        '-j KUBE-SERVICES',
        "-A OUTPUT -j KUBE-FIREWALL",
    ),
    "nat": (
        '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
    ),
}
_TARGET_RE = re.compile(r" -[jg] (\S+)")


def with_kube_jump_chains(restore: str) -> str:
    """kube-proxy restore data plus the base-chain jumps into its chains (those it declares)."""
    out: list[str] = []
    table, declared = "", set[str]()
    for line in restore.splitlines():
        s = line.strip()
        if s.startswith("*"):
            table, declared = s[1:], set[str]()
        elif s.startswith(":"):
            declared.add(s[1:].split()[0])
        elif s == "COMMIT":
            out.extend(r for r in KUBE_JUMP_RULES.get(table, ()) if r.rsplit(" ", 1)[1] in declared)
        out.append(s)
    return "\n".join(out) + "\n"


def load_kube_restore(restore: str, name: str = "<kube-proxy>") -> Ruleset:
    """A Ruleset from kube-proxy's restore data (as its tests hold it), base-chain jumps added."""
    return load_rules(with_kube_jump_chains(restore), name)


def rule_target(rule_text: str) -> str:
    """The `-j`/`-g` word of an iptables-save rule ("" for a rule without one)."""
    found = _TARGET_RE.findall(rule_text)
    return found[-1] if found else ""


class _Draws:
    """The RNG `statistic` draws from: plays a script of match/miss decisions, then matches."""

    def __init__(self, script: Sequence[bool]) -> None:
        self.script = script
        self.made: list[bool] = []

    def getrandbits(self, bits: int) -> int:
        i = len(self.made)
        want = self.script[i] if i < len(self.script) else True
        self.made.append(want)
        return _DRAW_MATCH if want else _DRAW_MISS


class TracerNode:
    """The namespace netfilter sees: the node's addresses (plus 127/8), one uplink, scripted draws
    (of the match or statement named `draw_kind`)."""

    name = "kube-tracer"
    draw_kind = "statistic"

    def __init__(self, node_ips: Sequence[int], draws: Any) -> None:
        self.local = frozenset(node_ips)
        self.primary = node_ips[0] if node_ips else 0
        self.draws = draws
        self.rejected: str | None = None
        self.sysctls: dict[str, int] = {}          # the kernel's defaults

    def is_local(self, addr: int) -> bool:
        return addr in self.local or addr >> 24 == 127

    def addr_type(self, addr: int) -> str:
        if self.is_local(addr):
            return "LOCAL"
        if addr == 0:
            return "UNSPEC"
        if addr == 0xFFFFFFFF:
            return "BROADCAST"
        return "MULTICAST" if addr >> 28 == 0xE else "UNICAST"

    def masquerade_source(self, out_dev: str, daddr: int) -> int | None:
        return self.primary

    def send_reject(self, frame: Frame, state: HookState, reject_with: str) -> None:
        self.rejected = reject_with

    def rng(self, name: str) -> Any:
        return self.draws if name == self.draw_kind else random.Random(0)

    def now(self) -> int:
        return 0


@dataclass
class KubeBranch:
    """One run of the packet, for one combination of statistic outcomes."""
    choices: tuple[bool, ...]
    hooks: list[tuple[str, int]] = field(default_factory=list)        # (hook, verdict)
    rules: list[dict[str, Any]] = field(default_factory=list)         # the engine's trace entries
    endpoint: str | None = None
    verdict: str = "ACCEPT"                                            # ACCEPT, DROP or REJECT
    decided_by: str | None = None                                      # rule text of a DROP/REJECT
    accepted_by_rule: bool = False
    masquerade: bool = False

    @property
    def output(self) -> str:
        """Upstream's word for this branch: REJECT/DROP, the endpoint, ACCEPT by a rule, or ""."""
        if self.verdict != "ACCEPT":
            return self.verdict
        if self.endpoint is not None:
            return self.endpoint
        return "ACCEPT" if self.accepted_by_rule else ""


@dataclass
class KubeTrace:
    """Every branch of one traced packet, and upstream tracePacket's two answers."""
    branches: list[KubeBranch]
    truncated: bool = False

    @property
    def endpoints(self) -> list[str]:
        return _unique(b.endpoint for b in self.branches if b.endpoint is not None and b.verdict == "ACCEPT")

    @property
    def output(self) -> str:
        """Upstream's comma-joined destinations, or ACCEPT / DROP / REJECT, or ""."""
        return ", ".join(o for o in _unique(b.output for b in self.branches) if o)

    @property
    def masquerade(self) -> bool:
        return any(b.masquerade for b in self.branches)


def _unique(items: Any) -> list[str]:
    out: list[str] = []
    for i in items:
        if i not in out:
            out.append(i)
    return out


def trace_kube_packet(ruleset: Ruleset, source: str, protocol: str, dest: str, dport: int,
                      node_ips: Sequence[str], sport: int = 40000,
                      max_branches: int = MAX_BRANCHES) -> KubeTrace:
    """Where a new connection from `source` to `dest:dport` goes through `ruleset` on a node with
    `node_ips`: every statistic branch, its endpoint and whether it is masqueraded.

    Rule counters count every branch; xt_recent lists are emptied before each one, so every
    branch is the first packet of a new client (as upstream's tracer, which never matches them).
    """
    proto = PROTOS.get(protocol.lower())
    if proto is None:
        raise PktemuError(f"kube tracer: protocol {protocol!r} not traced (tcp, udp or sctp)")
    ips = [ip2int(a) for a in node_ips if ":" not in a]
    src, dst = ip2int(source), ip2int(dest)
    branches: list[KubeBranch] = []
    todo: list[tuple[bool, ...]] = [()]
    while todo:
        if len(branches) == max_branches:
            return KubeTrace(branches, truncated=True)
        script = todo.pop()
        for t in ruleset.recent.values():
            t.entries.clear()
        b = _run(ruleset, first_packet(src, dst, proto, sport, dport), ips, script)
        branches.append(b)
        todo.extend(b.choices[:i] + (False,) for i in range(len(script), len(b.choices)) if b.choices[i])
    return KubeTrace(branches)


def first_packet(src: int, dst: int, proto: int, sport: int, dport: int) -> Frame:
    """What opens a connection: a TCP SYN, a UDP datagram, or an SCTP INIT (verification tag 0,
    valid CRC32c: conntrack takes nothing else as a new SCTP association)."""
    if proto == 132:
        init = struct.pack("!BBHIIHHI", 1, 0, 20, 0x5045_4D55, 106_496, 10, 65535, 1)
        l4 = bytearray(struct.pack("!HHII", sport, dport, 0, 0) + init)
        sctp_set_cksum(l4, 0, len(l4))
        return build_ip(src, dst, proto, bytes(l4), ident=1)
    if proto == 6:
        l4 = bytearray(struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, 0x02, 64240, 0, 0))
    else:
        l4 = bytearray(struct.pack("!HHHH", sport, dport, 8, 0))
    pseudo = struct.pack("!IIBBH", src, dst, 0, proto, len(l4))
    struct.pack_into("!H", l4, 16 if proto == 6 else 6, checksum(pseudo + bytes(l4)) or 0xFFFF)
    return build_ip(src, dst, proto, bytes(l4), ident=1)


def _run(rs: Ruleset, frame: Frame, node_ips: list[int], script: tuple[bool, ...]) -> KubeBranch:
    draws = _Draws(script)
    node = TracerNode(node_ips, draws)
    nf = Netfilter(node, rs)
    b = KubeBranch(())
    walk_hooks(nf, node, frame, b)
    b.choices = tuple(draws.made)
    b.accepted_by_rule = any(t["table"] == "filter" and t["verdict"] == "ACCEPT" and t["rulenum"] is not None
                             for t in b.rules)
    b.masquerade = any(t["verdict"] == "ACCEPT" and rule_target(t["rule"]) == "MASQUERADE" for t in b.rules)
    return b


def walk_hooks(nf: Netfilter, node: Any, frame: Frame, b: KubeBranch) -> None:
    """The hooks a first packet meets on a node, as the kernel orders them for a locally sent packet
    (OUTPUT, POSTROUTING, then lo's PREROUTING/INPUT) or a routed one (PREROUTING, then INPUT or
    FORWARD/POSTROUTING), each hook's rule trace added to `b`; the walk stops at a drop."""
    before = (frame.daddr, frame.dport)

    def hook(name: str, in_dev: str | None, out_dev: str | None) -> bool:
        trace: list[dict[str, Any]] = []
        verdict = nf.hook(name, frame, in_dev, out_dev, trace=trace)
        b.hooks.append((name, verdict))
        for t in trace:
            t["hook"] = name
        b.rules.extend(trace)
        if verdict == NF_ACCEPT:
            return True
        last = next((t for t in reversed(trace) if t["verdict"] == "DROP"), None)
        b.decided_by = last["rule"] if last else None
        b.verdict = "REJECT" if node.rejected is not None else "DROP"
        return False

    if node.is_local(frame.saddr):
        ok = hook(OUTPUT, None, "lo" if node.is_local(frame.daddr) else "eth0")
        _dnat(b, frame, before)
        out = "lo" if node.is_local(frame.daddr) else "eth0"
        ok = ok and hook(POSTROUTING, None, out)
        if ok and out == "lo":
            ok = hook(PREROUTING, "lo", None) and hook(INPUT, "lo", None)
    else:
        ok = hook(PREROUTING, "eth0", None)
        _dnat(b, frame, before)
        if ok and node.is_local(frame.daddr):
            hook(INPUT, "eth0", None)
        elif ok and hook(FORWARD, "eth0", "eth0"):
            hook(POSTROUTING, None, "eth0")


def _dnat(b: KubeBranch, frame: Frame, before: tuple[int, int]) -> None:
    if (frame.daddr, frame.dport) != before:
        b.endpoint = f"{int2ip(frame.daddr)}:{frame.dport}"
