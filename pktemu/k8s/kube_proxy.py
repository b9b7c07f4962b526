"""The kube-proxy daemon of one node: watches Services and EndpointSlices, resyncs the node's
netfilter through `iptables-restore --noflush` (or, in nftables mode, `nft -f` transactions),
clears stale UDP conntrack entries, and can crash and restart.

Events reach it after the cluster's watch latency; syncs then run through a bounded-frequency
runner (at most two back to back, then one per `min_sync_period`), as upstream's. The first sync
happens at start, synchronously, as if kube-proxy had been running before the scenario began.
A crash stops the watches and the pending sync and, in userspace mode, closes the process's
sockets; rules and conntrack entries stay in the node, and changes made meanwhile are not
applied. A restart lists everything afresh and does a full sync, with empty previous state
(so upstream's restart behaviour follows: every UDP service with endpoints counts as newly
active and its ClusterIP's conntrack entries are flushed).
"""
from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

from pktemu.k8s.apiserver import DELETED, ApiServer
from pktemu.k8s.nft_renders import ServiceRenders
from pktemu.k8s.nft_tx import TABLE, TableListing, apply_tx
from pktemu.nftables.shared import SharedTx
from pktemu.k8s.proxier_iptables import IptablesOptions, IptablesProxier, ServiceLines
from pktemu.k8s.proxier_nftables import NftablesOptions, NftablesProxier
from pktemu.k8s.proxier_userspace import UserspaceProxier
from pktemu.k8s.proxy_state import Records, StaleUdp, endpoints_map, service_ports
from pktemu.net.frame import ip2int
from pktemu.netfilter.restore_shared import SharedRestores
from pktemu.netfilter.xt_parse import LineCache

if TYPE_CHECKING:
    from pktemu import topo
    from pktemu.net.node import Node

BURST_SYNCS = 2
#: every kube-proxy's restores in this process: syncs and nodes repeat nearly the same lines
LINES = LineCache()
CANARY = "KUBE-PROXY-CANARY"
#: per cluster (its API server), the service and endpoint records its kube-proxies share
_RECORDS: "weakref.WeakKeyDictionary[ApiServer, Records]" = weakref.WeakKeyDictionary()
#: per cluster, its kube-proxies' restores: nodes that write the same rules share the tables made
_RESTORES: "weakref.WeakKeyDictionary[ApiServer, SharedRestores]" = weakref.WeakKeyDictionary()
#: per cluster, its kube-proxies' nftables transactions: nodes that send the same share the result
_NFT: "weakref.WeakKeyDictionary[ApiServer, SharedTx]" = weakref.WeakKeyDictionary()
#: per cluster, the nftables operations of services alike on every node
_RENDERS: "weakref.WeakKeyDictionary[ApiServer, ServiceRenders]" = weakref.WeakKeyDictionary()
#: per cluster, the iptables lines of services alike on every node
_LINES: "weakref.WeakKeyDictionary[ApiServer, ServiceLines]" = weakref.WeakKeyDictionary()
UDP = 17


class KubeProxy:
    def __init__(self, api: ApiServer, node: "Node", cfg: "topo.KubeProxy", node_ip: str | None,
                 cluster_cidr: str | None, watch_latency: int) -> None:
        self.api = api
        self.node = node
        self.cfg = cfg
        self.node_ip = node_ip
        self.cluster_cidr = cluster_cidr
        self.watch_latency = watch_latency
        self.running = False
        self.syncs = 0
        self.log: list[tuple[int, str]] = []
        self._services: dict[str, Any] = {}
        self._slices: dict[str, Any] = {}
        self._proxier: IptablesProxier | NftablesProxier | UserspaceProxier | None = None
        self._timer: Any = None
        self._tokens = float(BURST_SYNCS)
        self._tokens_at = 0

    @property
    def ruleset(self) -> Any:
        return self.node.nf.ruleset

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start (or restart): list, watch, and sync everything now."""
        if self.running:
            return
        self.running = True
        self._services = {s.meta.key: s for s in self.api.list("Service")}
        self._slices = {s.meta.key: s for s in self.api.list("EndpointSlice")}
        self.api.watch("Service", self._on_event, self.watch_latency)
        self.api.watch("EndpointSlice", self._on_event, self.watch_latency)
        if self.cfg.mode == "userspace":
            self._proxier = UserspaceProxier(self.node, self.cfg.port, self.node_ip or "0.0.0.0",
                                             self.cfg.udp_idle_timeout, self.node.rng("kube-proxy"))
        elif self.cfg.mode == "nftables":
            oracle = self.cfg.variant == "kernel-oracle"
            self._proxier = NftablesProxier(NftablesOptions(
                self.cluster_cidr, self.cfg.masquerade_all,
                not oracle if self.cfg.random_fully is None else self.cfg.random_fully, self.node_ip,
                (self.node_ip,) if self.node_ip else None,         # --nodeport-addresses primary
                self.api.settings.service_cidr,                    # the ServiceCIDR object
                version=self.cfg.kube_proxy_version), mirror=False,  # it lists the node's table
                renders=_RENDERS.setdefault(self.api, ServiceRenders()))
        else:
            oracle = self.cfg.variant == "kernel-oracle"
            random_fully = not oracle if self.cfg.random_fully is None else self.cfg.random_fully
            self._proxier = IptablesProxier(IptablesOptions(
                self.cluster_cidr, self.cfg.masquerade_all, random_fully, self.cfg.localhost_nodeports,
                kubelet_firewall=not oracle, node_ip=self.node_ip),
                _LINES.setdefault(self.api, ServiceLines()))
            if self.cfg.localhost_nodeports:
                # NewProxier: NodePorts on 127.0.0.1 need 127/8 routed off lo (sysctl route_localnet)
                self.node.sysctls["net.ipv4.conf.all.route_localnet"] = 1
            if not oracle:
                tables = ("mangle", "nat", "filter")          # ipt.Monitor's canaries
                self._restore("".join(f"*{t}\n:{CANARY} - [0:0]\nCOMMIT\n" for t in tables))
        self._note("started")
        self.sync()

    def crash(self) -> None:
        if not self.running:
            return
        self.running = False
        self.api.unwatch(self._on_event)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if isinstance(self._proxier, UserspaceProxier):
            self._proxier.stop()
        self._proxier = None
        self._note("crashed")

    def restart(self) -> None:
        self.crash()
        self._tokens, self._tokens_at = float(BURST_SYNCS), self.node.sim.now
        self.start()

    # ------------------------------------------------------------------ watch and sync
    def _on_event(self, ev: str, kind: str, obj: Any) -> None:
        if not self.running:
            return
        store = self._services if kind == "Service" else self._slices
        if ev == DELETED:
            store.pop(obj.meta.key, None)
        else:
            store[obj.meta.key] = obj
        self._request_sync()

    def _request_sync(self) -> None:
        """BoundedFrequencyRunner.Run: sync now if a token is left, else when the next one is due."""
        if self._timer is not None:
            return
        now = self.node.sim.now
        period = max(1, self.cfg.min_sync_period)
        self._tokens = min(float(BURST_SYNCS), self._tokens + (now - self._tokens_at) / period)
        self._tokens_at = now
        wait = 0 if self._tokens >= 1 else int((1 - self._tokens) * period) + 1
        self._timer = self.node.sim.timer(wait, self._run_sync)

    def _run_sync(self) -> None:
        self._timer = None
        if self.running:
            now = self.node.sim.now
            self._tokens = min(float(BURST_SYNCS), self._tokens + (now - self._tokens_at)
                               / max(1, self.cfg.min_sync_period)) - 1
            self._tokens_at = now
            self.sync()

    def sync(self) -> None:
        """syncProxyRules with the current cache."""
        proxier = self._proxier
        if proxier is None:
            return
        records = _RECORDS.setdefault(self.api, Records())
        svcs = service_ports(self._services.values(), records)
        eps = endpoints_map(self._slices.values(), self.node.name, records)
        if isinstance(proxier, UserspaceProxier):
            text = proxier.sync(svcs, eps, self.ruleset)
            stale = None
        elif isinstance(proxier, NftablesProxier):
            txs, stale = proxier.sync(svcs, eps, TableListing(self.node.nf, TABLE), self.node.sim.now)
            shared = _NFT.get(self.api)
            if shared is None:
                shared = _NFT[self.api] = SharedTx()
            for tx in txs:
                apply_tx(self.node.nf, str(tx), f"<kube-proxy {self.node.name}>", shared=shared)
            text = ""
        else:
            text, stale = proxier.sync(svcs, eps, self.ruleset)
        if text:
            self._restore(text)
        self.syncs += 1
        n_eps = sum(len(v) for v in eps.values())
        self._note(f"sync {self.syncs}: {len(svcs)} service ports, {n_eps} endpoints")
        if stale is not None:
            self._clear_stale(stale)

    def _restore(self, text: str) -> None:
        shared = _RESTORES.get(self.api)
        if shared is None:
            shared = _RESTORES[self.api] = SharedRestores()
        shared.restore(text, f"<kube-proxy {self.node.name}>", self.ruleset, noflush=True, cache=LINES)

    def _note(self, what: str) -> None:
        self.log.append((self.node.sim.now, what))

    # ------------------------------------------------------------------ conntrack -D
    def _clear_stale(self, stale: StaleUdp) -> None:
        ct = getattr(self.node.nf, "conntrack", None)
        if ct is None:
            return
        ips = {ip2int(ip) for ip in stale.service_ips}
        nat = {(ip2int(a), ip2int(b)) for a, b in stale.nat}
        port_nat = {(p, ip2int(b)) for p, b in stale.port_nat}
        killed = 0
        for conn in list(ct):
            o, r = conn.orig, conn.reply
            if o.proto != UDP:
                continue
            if (o.dst in ips or o.dport in stale.node_ports or (o.dst, r.src) in nat
                    or (o.dport, r.src) in port_nat):
                ct.kill(conn)
                killed += 1
        if killed:
            self._note(f"conntrack -D: {killed} stale UDP entries")
