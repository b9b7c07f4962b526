"""kube-proxy's nftables mode: a port of pkg/proxy/nftables/proxier.go syncProxyRules.

One `table ip kube-proxy`: base chains at the filter, nat and postrouting hooks jumping to the
dispatch chains; the `service-ips` / `service-nodeports` verdict maps send a connection's first
packet to its `service-<hash>-ns/svc/proto/port` chain, which picks an endpoint with
`numgen random mod N vmap` and gotos `endpoint-<hash>-...` (DNAT); `no-endpoint-services` /
`no-endpoint-nodeports` reject or drop, `firewall-ips` applies LoadBalancerSourceRanges,
`cluster-ips-check` rejects unknown ports of ClusterIPs and drops unallocated ones, and
ClientIP affinity keeps `affinity-...` sets (`update @set { ip saddr }`).

As upstream, every sync is one transaction: the first (and any full one) sets up the table,
flushing the base chains and the maps; later ones rewrite only the chains of Services that
changed and add or delete only the map elements that changed. Chains no longer used are
flushed at once and deleted by a sync at least a second later; unused affinity sets go at once.

The layout is kube-proxy's of a given version (`LAYOUTS`): "1.33" is v1.33.0's (base chains
filter-prerouting/-input/-forward/-output at -110 and filter-output-post-dnat at -90, the
`dport` match in service chains), which the kernel oracle's reference ruleset is; "1.34" is the
later one (filter-prerouting-pre-dnat / filter-output-pre-dnat at -110, filter chains at 0, no
`dport`), which upstream's current proxier_test.go expects.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from pktemu.errors import PktemuError
from pktemu.k8s.nft_service import ServicePortRules, ensure_chain
from pktemu.k8s.nft_tx import ElementStorage, Fake, Obj, Tx, chain, element, rule
from pktemu.k8s.proxy_state import (
    EndpointsMap, ServicePortMap, StaleUdp, stale_udp,
)

if TYPE_CHECKING:
    from pktemu.k8s.nft_renders import ServiceRenders

STALE_CHAIN_AGE = 1_000_000_000        # ns: a flushed chain is deleted by a sync this much later
MAPS = (("set", "cluster-ips"), ("map", "service-ips"), ("map", "firewall-ips"),
        ("map", "no-endpoint-services"), ("map", "no-endpoint-nodeports"), ("map", "service-nodeports"))


@dataclass(frozen=True)
class Layout:
    base_chains: tuple[tuple[str, str, str, int], ...]     # name, type, hook, priority
    jumps: tuple[tuple[str, str, str], ...]                # destination, source, extra match
    service_dport: bool                                     # `tcp dport P` in the masquerade rule


_NEW = "ct state new"


def _jumps(prerouting: str, output_pre: str, output_post: str) -> tuple[tuple[str, str, str], ...]:
    """nftablesJumpChains, in upstream's order, with the layout's filter chain names."""
    return (("nodeport-endpoints-check", "filter-input", _NEW),
            ("service-endpoints-check", "filter-input", _NEW),
            ("service-endpoints-check", "filter-forward", _NEW),
            ("service-endpoints-check", "filter-output", _NEW),
            ("firewall-check", prerouting, _NEW), ("firewall-check", output_pre, _NEW),
            ("services", "nat-output", ""), ("services", "nat-prerouting", ""),
            ("masquerading", "nat-postrouting", ""),
            ("cluster-ips-check", "filter-forward", _NEW), ("cluster-ips-check", output_post, _NEW))


_NAT = (("nat-prerouting", "nat", "prerouting", -100), ("nat-output", "nat", "output", -100),
        ("nat-postrouting", "nat", "postrouting", 100))
LAYOUTS = {
    "1.33": Layout(
        (("filter-prerouting", "filter", "prerouting", -110), ("filter-input", "filter", "input", -110),
         ("filter-forward", "filter", "forward", -110), ("filter-output", "filter", "output", -110),
         ("filter-output-post-dnat", "filter", "output", -90), *_NAT),
        _jumps("filter-prerouting", "filter-output", "filter-output-post-dnat"), service_dport=True),
    "1.34": Layout(
        (("filter-prerouting-pre-dnat", "filter", "prerouting", -110),
         ("filter-output-pre-dnat", "filter", "output", -110), ("filter-forward", "filter", "forward", 0),
         ("filter-input", "filter", "input", 0), ("filter-output", "filter", "output", 0), *_NAT),
        _jumps("filter-prerouting-pre-dnat", "filter-output-pre-dnat", "filter-output"), service_dport=False),
}
DEFAULT_VERSION = "1.33"


class Listing(Protocol):
    def list(self, what: str) -> list[str]: ...


def layout(version: str) -> Layout:
    """The layout of a kube-proxy version; an unknown one is a one-line error."""
    found = LAYOUTS.get(version)
    if found is None:
        raise PktemuError(f"kube-proxy nftables mode: no layout for version {version!r} "
                          f"(have: {', '.join(LAYOUTS)})")
    return found


@dataclass
class NftablesOptions:
    cluster_cidr: str | None = None        # --detect-local-mode ClusterCIDR
    masquerade_all: bool = False
    random_fully: bool = True
    node_ip: str | None = None
    #: --nodeport-addresses: the addresses in nodeport-ips; None = every local address (MatchAll)
    nodeport_ips: tuple[str, ...] | None = None
    service_cidrs: str = ""                # the ServiceCIDRs, comma separated ("" = no drop rule)
    masquerade_mark: str = "0x4000"
    version: str = DEFAULT_VERSION


class NftablesProxier:
    """The state kept between syncs; `fake` mirrors the table as the transactions leave it, unless
    `mirror` is False (a node's kube-proxy, which lists the node's own table: a mirror there would
    be a second copy of every node's whole table, kept and updated for nothing)."""

    def __init__(self, opts: NftablesOptions, mirror: bool = True,
                 renders: "ServiceRenders | None" = None) -> None:
        """`renders`: the cluster's, to write each Service port's operations once for every node."""
        self.opts = opts
        self.renders = renders
        self.layout = layout(opts.version)
        self.svc_map: ServicePortMap = {}
        self.eps_map: EndpointsMap = {}
        self.need_full_sync = True
        self.flushed = False
        self.stale_chains: dict[str, int] = {}
        self.storage = {name: ElementStorage(kind, name) for kind, name in MAPS}
        self.fake = Fake()
        self.mirror = mirror

    def sync(self, svcs: ServicePortMap, eps: EndpointsMap, existing: "Listing | None" = None,
             now: int = 0) -> tuple[list[Tx], StaleUdp]:
        """The transactions of one syncProxyRules (stale chain deletion first, when due) and the
        stale UDP conntrack entries to delete. `existing` lists the table's chains and sets
        (the node's, as `nft list` would); by default the proxier's own mirror."""
        if existing is None and not self.mirror:
            raise ValueError("a proxier without a mirror needs the table's listing")
        listing = existing if existing is not None else self.fake
        changed = None if self.need_full_sync else _changed_services(self.svc_map, svcs, self.eps_map, eps)
        out: list[Tx] = []
        due = [c for c, t in self.stale_chains.items() if t < now - STALE_CHAIN_AGE]
        if due:
            cleanup = Tx()
            for c in due:
                cleanup.delete(chain(c))
                del self.stale_chains[c]
            out.append(cleanup)
            if self.mirror:
                self.fake.run(cleanup)
        tx = Tx()
        if changed is None:
            self._setup(tx)
        self._services(tx, svcs, eps, changed, listing, now, set(due))
        out.append(tx)
        if self.mirror:
            self.fake.run(tx)
        stale = stale_udp(self.svc_map, svcs, self.eps_map, eps)
        self.svc_map, self.eps_map = dict(svcs), {k: list(v) for k, v in eps.items()}
        self.need_full_sync = False
        return out, stale

    # ------------------------------------------------------------------ setupNFTables
    def _setup(self, tx: Tx) -> None:
        o, lay = self.opts, self.layout
        tx.add(Obj("table", comment="rules for kube-proxy"))
        if not self.flushed:
            for name, *_ in lay.base_chains:
                tx.add(chain(name))
                tx.delete(chain(name))
            self.flushed = True
        for name, ctype, hook, prio in lay.base_chains:
            base = chain(name, f"type {ctype} hook {hook} priority {prio} ;")
            tx.add(base)
            tx.flush(base)
        created: set[str] = set()
        for dst, src, extra in lay.jumps:
            ensure_chain(tx, dst, created)
            tx.add(rule(src, f"{extra} jump {dst}".strip()))
        for c in ("services", "cluster-ips-check", "masquerading", "mark-for-masquerade"):
            ensure_chain(tx, c, created)
        mark = o.masquerade_mark
        tx.add(rule("mark-for-masquerade", f"mark set mark or {mark}"))
        tx.add(rule("masquerading", f"mark and {mark} == 0 return"))
        tx.add(rule("masquerading", f"mark set mark xor {mark}"))
        tx.add(rule("masquerading", "masquerade fully-random" if o.random_fully else "masquerade"))
        tx.add(Obj("set", "cluster-ips", 'type ipv4_addr ; comment "Active ClusterIPs" ;'))
        tx.add(rule("cluster-ips-check", "ip daddr @cluster-ips reject",
                    "Reject traffic to invalid ports of ClusterIPs"))
        if o.service_cidrs:
            tx.add(rule("cluster-ips-check", f"ip daddr {{ {o.service_cidrs} }} drop",
                        "Drop traffic to unallocated ClusterIPs"))
        tx.add(Obj("set", "nodeport-ips", 'type ipv4_addr ; comment "IPs that accept NodePort traffic" ;'))
        if o.nodeport_ips is None:
            tx.delete(Obj("set", "nodeport-ips"))
        else:
            tx.flush(Obj("set", "nodeport-ips"))
            for ip in o.nodeport_ips:
                if not ip.startswith("127."):
                    tx.add(element("nodeport-ips", ip))
        vmap = "ipv4_addr . inet_proto . inet_service : verdict"
        tx.add(Obj("map", "no-endpoint-services", f'type {vmap} ; comment "vmap to drop or reject packets '
                                                   'to services with no endpoints" ;'))
        tx.add(Obj("map", "no-endpoint-nodeports", 'type inet_proto . inet_service : verdict ; comment "vmap '
                                                    'to drop or reject packets to service nodeports with no '
                                                    'endpoints" ;'))
        tx.add(chain("reject-chain", comment="helper for @no-endpoint-services / @no-endpoint-nodeports"))
        tx.flush(chain("reject-chain"))
        tx.add(rule("reject-chain", "reject"))
        tx.add(rule("service-endpoints-check",
                    "ip daddr . meta l4proto . th dport vmap @no-endpoint-services"))
        local = "ip daddr @nodeport-ips" if o.nodeport_ips is not None else "ip daddr != 127.0.0.0/8"
        tx.add(rule("nodeport-endpoints-check",
                    f"{local} meta l4proto . th dport vmap @no-endpoint-nodeports"))
        tx.add(Obj("map", "firewall-ips", f'type {vmap} ; comment "destinations that are subject to '
                                          'LoadBalancerSourceRanges" ;'))
        ensure_chain(tx, "firewall-check", created)
        tx.add(rule("firewall-check", "ip daddr . meta l4proto . th dport vmap @firewall-ips"))
        tx.add(Obj("map", "service-ips", f'type {vmap} ; comment "ClusterIP, ExternalIP and LoadBalancer IP '
                                         'traffic" ;'))
        tx.add(Obj("map", "service-nodeports", 'type inet_proto . inet_service : verdict ; comment "NodePort '
                                               'traffic" ;'))
        tx.add(rule("services", "ip daddr . meta l4proto . th dport vmap @service-ips"))
        if o.nodeport_ips is None:
            local = "fib daddr type local " + local
        tx.add(rule("services", f"{local} meta l4proto . th dport vmap @service-nodeports"))
        for s in self.storage.values():
            s.reset(tx)

    # ------------------------------------------------------------------ syncProxyRules
    def _services(self, tx: Tx, svcs: ServicePortMap, eps: EndpointsMap, changed: set[str] | None,
                  listing: "Listing", now: int, deleted: set[str]) -> None:
        """The per-service-port loop and the cleanup after it; `deleted`: the chains the sync's
        first transaction deletes (the listing was taken before it ran)."""
        active: set[str] = set()
        affinity: set[str] = set()
        for spn, svc in svcs.items():
            skip = changed is not None and spn.service not in changed
            if self.renders is not None:
                self.renders.write(self, tx, spn, svc, eps.get(spn, []), active, affinity, skip)
            else:
                ServicePortRules(self, tx, spn, svc, eps.get(spn, []), active, affinity, skip).write()
        for c in listing.list("chains"):
            if "/" not in c or c in deleted:
                continue
            if c not in active:
                tx.flush(chain(c))
                self.stale_chains[c] = now
            else:
                self.stale_chains.pop(c, None)
        for s in listing.list("sets"):
            if s.startswith("affinity-") and s not in affinity:
                tx.delete(Obj("set", s))
        for st in self.storage.values():
            st.cleanup(tx)


def _changed_services(old_s: ServicePortMap, new_s: ServicePortMap, old_e: EndpointsMap,
                      new_e: EndpointsMap) -> set[str]:
    """UpdatedServices of the service and endpoints change trackers: "ns/name" of each Service
    whose ports or endpoints differ from the last sync."""
    out: set[str] = set()
    for spn in set(old_s) | set(new_s) | set(old_e) | set(new_e):
        if old_s.get(spn) != new_s.get(spn) or old_e.get(spn) != new_e.get(spn):
            out.add(spn.service)
    return out
