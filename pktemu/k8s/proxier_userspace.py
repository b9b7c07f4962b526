"""kube-proxy's userspace mode (the pre-1.2 design, pkg/proxy/userspace): netfilter only redirects,
kube-proxy itself carries the bytes.

Each service port gets a proxy port on the node (allocated upward from `base_port`, 10400 in the
seed post) where kube-proxy listens (TCP) or receives (UDP). nat KUBE-PORTALS-CONTAINER
(from PREROUTING) REDIRECTs the ClusterIP to that port, so a pod's connection lands on the
bridge address of its node; KUBE-PORTALS-HOST (from OUTPUT) DNATs the node's own traffic to
the node IP; NodePorts get KUBE-NODEPORT-CONTAINER/-HOST and an ACCEPT in filter
KUBE-NODEPORT-NON-LOCAL. Rules are added and deleted one by one (EnsureRule/DeleteRule), here as
`-A`/`-D` lines of one `iptables-restore --noflush`. Endpoints are picked round-robin from a
list shuffled whenever it changes (LoadBalancerRR), with ClientIP affinity if asked for. A
started proxier flushes its chains first, since ports from an earlier run mean nothing.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pktemu.k8s.proxier_iptables import rule_exists
from pktemu.k8s.proxy_state import EndpointsMap, ServicePortInfo, ServicePortMap, ServicePortName
from pktemu.k8s.userspace_relay import Picker, TcpRelay, UdpRelay
from pktemu.netfilter.xt_base import ParseCtx
from pktemu.netfilter.xt_parse import parse_line, tokenize
from pktemu.netfilter.xtables import Ruleset

if TYPE_CHECKING:
    from pktemu.net.node import Node
    from pktemu.net.tcp import Listener
    from pktemu.net.tcp_conn import TcpConnection

NAT_CHAINS = ("KUBE-PORTALS-CONTAINER", "KUBE-PORTALS-HOST", "KUBE-NODEPORT-CONTAINER", "KUBE-NODEPORT-HOST")
FILTER_CHAIN = "KUBE-NODEPORT-NON-LOCAL"
_PORTALS = '-m comment --comment "handle ClusterIPs; NOTE: this must be before the NodePort rules"'
_NODEPORTS = ('-m addrtype --dst-type LOCAL -m comment --comment "handle service NodePorts; NOTE: this '
              'must be the last rule in the chain"')
# (table, source chain, prepend?, args) as iptablesInit ensures them, in order.
JUMPS = (("nat", "PREROUTING", True, f"{_PORTALS} -j KUBE-PORTALS-CONTAINER"),
         ("nat", "OUTPUT", True, f"{_PORTALS} -j KUBE-PORTALS-HOST"),
         ("nat", "PREROUTING", False, f"{_NODEPORTS} -j KUBE-NODEPORT-CONTAINER"),
         ("nat", "OUTPUT", False, f"{_NODEPORTS} -j KUBE-NODEPORT-HOST"),
         ("filter", "INPUT", True, '-m comment --comment "Ensure that non-local NodePort traffic can flow" '
                                   f"-j {FILTER_CHAIN}"))


@dataclass
class _Balancer:
    """LoadBalancerRR's per-service state."""
    endpoints: list[str] = field(default_factory=list)
    index: int = 0
    affinity: dict[str, tuple[str, int]] = field(default_factory=dict)   # client ip -> (endpoint, last use)


@dataclass
class _Proxy:
    info: ServicePortInfo
    port: int
    listener: "Listener | None" = None
    udp: UdpRelay | None = None


class UserspaceProxier:
    """Proxy ports, sockets and relays of one node; `sync` returns the rule changes to restore."""

    def __init__(self, node: "Node", base_port: int, node_ip: str, udp_idle_timeout: int,
                 rng: random.Random) -> None:
        self.node = node
        self.base_port = base_port
        self.node_ip = node_ip
        self.udp_idle_timeout = udp_idle_timeout
        self.rng = rng
        self.proxies: dict[ServicePortName, _Proxy] = {}
        self.balancers: dict[ServicePortName, _Balancer] = {}
        self.relays: set[TcpRelay] = set()
        self._used_ports: set[int] = set()
        self.flushed = False

    # ------------------------------------------------------------------ sync
    def sync(self, svcs: ServicePortMap, eps: EndpointsMap, ruleset: Ruleset) -> str:
        for spn in [s for s in self.proxies if s not in svcs or svcs[s] != self.proxies[s].info]:
            self._stop(spn)
        for spn, info in svcs.items():
            if spn not in self.proxies:
                self._start(spn, info)
        for spn in list(self.balancers):
            if spn not in svcs:
                del self.balancers[spn]
        for spn in svcs:
            ready = [e.endpoint for e in eps.get(spn, []) if e.ready]
            lb = self.balancers.setdefault(spn, _Balancer())
            if sorted(ready) != sorted(lb.endpoints):
                lb.endpoints = ready[:]
                self.rng.shuffle(lb.endpoints)
                lb.index = 0
                lb.affinity = {c: a for c, a in lb.affinity.items() if a[0] in ready}
        return self._rules(ruleset)

    def _start(self, spn: ServicePortName, info: ServicePortInfo) -> None:
        port = self.base_port
        while port in self._used_ports:
            port += 1
        self._used_ports.add(port)
        px = _Proxy(info, port)
        if info.protocol == "TCP":
            px.listener = self.node.tcp.listen(port, lambda conn, s=spn: self._accept(s, conn))
        elif info.protocol == "UDP":
            px.udp = UdpRelay(self.node, port, self._picker(spn), self.udp_idle_timeout)
        self.proxies[spn] = px

    def _picker(self, spn: ServicePortName) -> Picker:
        def pick(client_ip: str, reset: bool) -> str | None:
            return self.next_endpoint(spn, client_ip, reset)
        return pick

    def _stop(self, spn: ServicePortName) -> None:
        px = self.proxies.pop(spn)
        self._used_ports.discard(px.port)
        if px.listener is not None:
            px.listener.close()
        if px.udp is not None:
            px.udp.close()

    def stop(self) -> None:
        """The process exits: every socket it had is closed."""
        for spn in list(self.proxies):
            self._stop(spn)
        for relay in list(self.relays):
            relay.close()

    # ------------------------------------------------------------------ data path
    def _accept(self, spn: ServicePortName, conn: "TcpConnection") -> None:
        relay = TcpRelay(self.node, conn, self._picker(spn), self.relays.discard)
        if not relay.closed:
            self.relays.add(relay)

    def next_endpoint(self, spn: ServicePortName, client_ip: str, reset: bool) -> str | None:
        """LoadBalancerRR.NextEndpoint: a live affinity wins, else the next endpoint in turn."""
        lb = self.balancers.get(spn)
        px = self.proxies.get(spn)
        if lb is None or px is None or not lb.endpoints:
            return None
        now = self.node.sim.now
        sticky = px.info.client_ip_affinity
        if sticky and not reset:
            hit = lb.affinity.get(client_ip)
            if hit is not None and (now - hit[1]) // 1_000_000_000 < px.info.sticky_seconds:
                lb.affinity[client_ip] = (hit[0], now)
                return hit[0]
        ep = lb.endpoints[lb.index]
        lb.index = (lb.index + 1) % len(lb.endpoints)
        if sticky:
            lb.affinity[client_ip] = (ep, now)
        return ep

    # ------------------------------------------------------------------ rules
    def desired(self) -> dict[tuple[str, str], list[str]]:
        """The portal rules of every proxied service port, per (table, chain)."""
        out: dict[tuple[str, str], list[str]] = {("nat", c): [] for c in NAT_CHAINS}
        out[("filter", FILTER_CHAIN)] = []
        for spn, px in self.proxies.items():
            info = px.info
            if info.protocol not in ("TCP", "UDP"):
                continue
            proto = info.protocol.lower()
            head = f"-m comment --comment {spn} -p {proto} -m {proto} --dport"
            redirect = f"-j REDIRECT --to-ports {px.port}"
            dnat = f"-j DNAT --to-destination {self.node_ip}:{px.port}"
            portal = f"{head} {info.port} -d {info.cluster_ip}/32"
            out[("nat", "KUBE-PORTALS-CONTAINER")].append(f"{portal} {redirect}")
            out[("nat", "KUBE-PORTALS-HOST")].append(f"{portal} {dnat}")
            if info.node_port:
                out[("nat", "KUBE-NODEPORT-CONTAINER")].append(f"{head} {info.node_port} {redirect}")
                out[("nat", "KUBE-NODEPORT-HOST")].append(f"{head} {info.node_port} {dnat}")
                out[("filter", FILTER_CHAIN)].append(f"{head} {px.port} -m state --state NEW -j ACCEPT")
        return out

    def _rules(self, ruleset: Ruleset) -> str:
        """iptablesInit (chains and jumps), a flush on the first sync, then -D/-A to the desired rules."""
        tables: dict[str, list[str]] = {"filter": [], "nat": []}
        for table, chain in [("nat", c) for c in NAT_CHAINS] + [("filter", FILTER_CHAIN)]:
            if not (ruleset.has_table(table) and chain in ruleset.table(table).chains) or not self.flushed:
                tables[table].append(f":{chain} - [0:0]")
        for table, src, prepend, args in JUMPS:
            if not rule_exists(ruleset, table, src, args):
                tables[table].append(f"-I {src} 1 {args}" if prepend else f"-A {src} {args}")
        for (table, chain), rules in self.desired().items():
            exists = ruleset.has_table(table) and chain in ruleset.table(table).chains
            have = [r.body for r in ruleset.chain(table, chain).rules] if self.flushed and exists else []
            want = [_body(table, chain, r) for r in rules]
            for body in have:
                if body not in want:
                    tables[table].append(f"-D {chain}{body}")
            for body, rule in zip(want, rules, strict=True):
                if body not in have:
                    tables[table].append(f"-A {chain} {rule}")
        self.flushed = True
        out: list[str] = []
        for table, lines in tables.items():
            if lines:
                out += [f"*{table}", *lines, "COMMIT"]
        return "\n".join(out) + "\n" if out else ""


def _body(table: str, chain: str, args: str) -> str:
    where = "<kube-proxy>"
    return parse_line(tokenize(f"-A {chain} {args}", where), ParseCtx(where, table, "")).rules[0].body
