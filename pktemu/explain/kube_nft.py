"""kube-proxy's packet-tracer question for its nftables mode, answered by pktemu's nft engine.

Upstream's nftables proxier tests trace a packet (source, protocol, destination, port) through
the ruleset kube-proxy wrote and list the endpoints it may reach and whether it is marked for
masquerade (`tracePacket` / `nftablesTracer` in pkg/proxy/nftables/helpers_test.go, a regexp
interpreter of kube-proxy's own rule shapes). Here the packet is a real frame run through the
namespace's hooks by the real nftables engine (base chains at their priorities, conntrack, the
NAT core, the masquerade in nat-postrouting), once per outcome of every `numgen random` draw, so
the endpoints come out in vmap order, as upstream lists them.
"""
from __future__ import annotations

import re
from typing import Sequence

from pktemu.errors import PktemuError
from pktemu.explain.kube import (MAX_BRANCHES, PROTOS, KubeBranch, KubeTrace, TracerNode, first_packet,
                                 walk_hooks)
from pktemu.net.frame import Frame, ip2int
from pktemu.netfilter.hooks import Netfilter
from pktemu.netfilter.xtables import Ruleset
from pktemu.nftables.eval import attach
from pktemu.nftables.model import NftRuleset
from pktemu.nftables.parse import load_nft

_NUMGEN_RE = re.compile(r"numgen random mod (\d+)")


def load_kube_nft(text: str, name: str = "<kube-proxy>") -> NftRuleset:
    """An NftRuleset from kube-proxy's transaction text (`add table ip kube-proxy ...` lines)."""
    return load_nft(text, name)


class _Draws:
    """The RNG `numgen random` draws from: the script picks one of `ways` equal buckets per draw."""

    def __init__(self, script: Sequence[int], ways: int) -> None:
        self.script = script
        self.ways = ways
        self.made: list[int] = []

    def getrandbits(self, bits: int) -> int:
        i = len(self.made)
        k = self.script[i] if i < len(self.script) else 0
        self.made.append(k)
        return ((2 * k + 1) << (bits - 1)) // self.ways      # the middle of bucket k


class _Node(TracerNode):
    """The namespace netfilter sees, with scripted `numgen` draws."""

    name = "kube-nft-tracer"
    draw_kind = "numgen"


def _ways(rs: NftRuleset) -> int:
    """The largest `numgen random mod N` of the ruleset: that many buckets reach every outcome."""
    n = 1
    for t in rs.tables.values():
        for c in t.chains.values():
            for r in c.rules:
                n = max([n, *(int(m) for m in _NUMGEN_RE.findall(r.text))])
    return n


def trace_kube_nft_packet(rs: NftRuleset, source: str, protocol: str, dest: str, dport: int,
                          node_ips: Sequence[str], sport: int = 40000,
                          max_branches: int = MAX_BRANCHES) -> KubeTrace:
    """Where a new connection from `source` to `dest:dport` goes through the nft ruleset `rs` on a
    node with `node_ips`: every numgen branch, its endpoint and whether it is masqueraded.

    Dynamic sets (session affinity) are emptied before each branch, so every branch is the first
    packet of a new client, as in upstream's tracer, which never matches them.
    """
    proto = PROTOS.get(protocol.lower())
    if proto is None:
        raise PktemuError(f"kube tracer: protocol {protocol!r} not traced (tcp, udp or sctp)")
    ips = [ip2int(a) for a in node_ips if ":" not in a]
    src, dst = ip2int(source), ip2int(dest)
    ways = _ways(rs)
    branches: list[KubeBranch] = []
    todo: list[tuple[int, ...]] = [()]
    while todo:
        if len(branches) == max_branches:
            return KubeTrace(branches, truncated=True)
        script = todo.pop(0)
        for t in rs.tables.values():
            for s in t.sets.values():
                if "dynamic" in s.flags:
                    s.clear()
        b, made = _run(rs, first_packet(src, dst, proto, sport, dport), ips, script, ways)
        branches.append(b)
        for i in range(len(script), len(made)):
            todo.extend(tuple(made[:i]) + (k,) for k in range(1, ways))
    return KubeTrace(branches)


def _run(rs: NftRuleset, frame: Frame, node_ips: list[int], script: tuple[int, ...],
         ways: int) -> tuple[KubeBranch, list[int]]:
    draws = _Draws(script, ways)
    node = _Node(node_ips, draws)
    nf = Netfilter(node, Ruleset(name="nftables"))
    attach(nf, rs)
    b = KubeBranch(())
    walk_hooks(nf, node, frame, b)
    b.masquerade = any(t["verdict"] == "ACCEPT" and "masquerade" in t["rule"].split() for t in b.rules)
    return b, list(draws.made)

