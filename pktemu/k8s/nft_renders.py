"""A Service port's nftables rules rendered once for a cluster's kube-proxies (nft_service).

Every node's kube-proxy writes the same operations for a Service port whose rules do not look at
locality: the same chains, rules and elements, in the same order. The first node's
ServicePortRules.write runs against a recorder; the others replay what it recorded (the operations
appended to their transaction in one step, with their text made once) and only put the Service's
elements through their own element storage (which adds or deletes what changed for that node).
A Service with a Local traffic policy, a firewall that names the node's address, or chains another
Service of the sync has already made, is written the ordinary way.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pktemu.k8s.nft_service import ServicePortRules
from pktemu.k8s.nft_tx import Obj, Tx

if TYPE_CHECKING:
    from pktemu.k8s.proxier_nftables import NftablesProxier
    from pktemu.k8s.proxy_state import EndpointInfo, ServicePortInfo, ServicePortName


#: off: every node writes its own (what the recordings are held to, in the tests)
ENABLED = True


class _Put:
    """An element storage that records `ensure` (the node's own storage decides at replay)."""

    def __init__(self, rec: "_Recorder", name: str) -> None:
        self.rec, self.name = rec, name

    def ensure(self, tx: Tx, el: Obj) -> None:
        self.rec.cut(tx)
        self.rec.parts.append((self.name, el))


class _Recorder:
    """What ServicePortRules reads of its proxier (options, layout, storage), recording the puts."""

    def __init__(self, p: "NftablesProxier") -> None:
        self.opts, self.layout = p.opts, p.layout
        self.storage = {name: _Put(self, name) for name in p.storage}
        self.parts: list[Any] = []          # ([verbs], [objs]) runs and (map name, element) puts
        self.at = 0

    def cut(self, tx: Tx) -> None:
        if len(tx.verbs) > self.at:
            self.parts.append((tx.verbs[self.at:], tx.objs[self.at:]))
            self.at = len(tx.verbs)


class Render:
    """One Service port's recorded operations, for the Service and endpoint records it was made of."""
    __slots__ = ("svc", "eps", "parts", "names", "affinity", "texts")

    def __init__(self, svc: Any, eps: Any, parts: list[Any], names: set[str], affinity: set[str]) -> None:
        self.svc, self.eps, self.parts, self.names, self.affinity = svc, eps, parts, names, affinity
        self.texts: dict[tuple[str, str, int], str] = {}


class ServiceRenders:
    """Per cluster: each Service port's latest Render, by the options its rules depend on."""

    def __init__(self) -> None:
        self._by: dict[tuple[Any, ...], Render] = {}
        self.hits = 0

    def write(self, p: "NftablesProxier", tx: Tx, spn: "ServicePortName", svc: "ServicePortInfo",
              eps: "list[EndpointInfo]", active: set[str], affinity: set[str], skip: bool) -> None:
        """ServicePortRules(...).write(), from the cluster's recording when it can be."""
        if not ENABLED or svc.uses_local_endpoints or svc.load_balancer_source_ranges:
            ServicePortRules(p, tx, spn, svc, eps, active, affinity, skip).write()
            return
        base = getattr(eps, "base", eps)           # the cluster's list, nothing marked local
        o = p.opts
        key = (spn, skip, o.cluster_cidr, o.masquerade_all, p.layout.service_dport, tuple(p.storage))
        r = self._by.get(key)
        if r is None or r.svc is not svc or r.eps is not base:
            r = self._by[key] = _record(p, spn, svc, base, skip)
        else:
            self.hits += 1
        if not active.isdisjoint(r.names):          # another Service made one of its chains
            ServicePortRules(p, tx, spn, svc, eps, active, affinity, skip).write()
            return
        storage = p.storage
        for i, part in enumerate(r.parts):
            if part[0].__class__ is str:
                storage[part[0]].ensure(tx, part[1])
                continue
            verbs, objs = part
            tk = (tx.family, tx.table, i)
            text = r.texts.get(tk)
            if text is None:
                text = r.texts[tk] = Tx(tx.family, tx.table, verbs, objs).text()
            tx.extend(verbs, objs, text)
        active |= r.names
        affinity |= r.affinity


def _record(p: "NftablesProxier", spn: "ServicePortName", svc: "ServicePortInfo", eps: Any,
            skip: bool) -> Render:
    rec = _Recorder(p)
    tx = Tx()
    names: set[str] = set()
    affinity: set[str] = set()
    ServicePortRules(rec, tx, spn, svc, eps, names, affinity, skip).write()    # type: ignore[arg-type]
    rec.cut(tx)
    return Render(svc, eps, rec.parts, names, affinity)

