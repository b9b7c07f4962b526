"""One Service port's part of kube-proxy's nftables sync (the body of syncProxyRules' per-port
loop in pkg/proxy/nftables/proxier.go) and the hashed chain names upstream gives it."""
from __future__ import annotations

import base64
import functools
import hashlib
import ipaddress
from typing import TYPE_CHECKING

from pktemu.k8s.nft_tx import Obj, Tx, chain, element, rule
from pktemu.k8s.proxy_state import EndpointInfo, ServicePortInfo, ServicePortName, categorize

if TYPE_CHECKING:
    from pktemu.k8s.proxier_nftables import NftablesProxier

NAME_MAX = 256 - 16                    # knftables.NameLengthMax - chainNamePrefixLengthMax


@functools.lru_cache(maxsize=1 << 18)
def hash_and_truncate(name: str) -> str:
    """hashAndTruncate: base32(sha256(name))[:8] + "-" + name, cut to 240 characters. Eight base32
    characters are the first five bytes' worth; cached, since every sync and node names them again."""
    out = base64.b32encode(hashlib.sha256(name.encode()).digest()[:5]).decode() + "-" + name
    return out[:NAME_MAX - 3] + "..." if len(out) > NAME_MAX else out


def chain_base(spn: ServicePortName) -> str:
    """servicePortChainNameBase: HASH-namespace/name/protocol/portname."""
    return hash_and_truncate(f"{spn.namespace}/{spn.name}/{spn.protocol.lower()}/{spn.port}")


def endpoint_base(spn: ServicePortName, ep: EndpointInfo) -> str:
    """servicePortEndpointChainNameBase: HASH-namespace/name/protocol/portname__ip/port."""
    return hash_and_truncate(f"{spn.namespace}/{spn.name}/{spn.protocol.lower()}/{spn.port}"
                             f"__{ep.ip}/{ep.port}")


def ensure_chain(tx: Tx, name: str, created: set[str], skip: bool = False) -> None:
    """ensureChain: add and flush a chain once per transaction (or only note it, when skipped)."""
    if name in created:
        return
    created.add(name)
    if not skip:
        c = chain(name)
        tx.add(c)
        tx.flush(c)


class ServicePortRules:
    """The body of syncProxyRules' per-service-port loop."""

    def __init__(self, p: "NftablesProxier", tx: Tx, spn: ServicePortName, svc: ServicePortInfo,
                 endpoints: list[EndpointInfo], active: set[str], affinity: set[str], skip: bool) -> None:
        self.p, self.tx, self.spn, self.svc, self.skip = p, tx, spn, svc, skip
        self.active, self.affinity = active, affinity
        self.cat = categorize(endpoints, svc)
        base = chain_base(spn)
        self.cluster_chain, self.local_chain = "service-" + base, "local-" + base
        self.external_chain, self.fw_chain = "external-" + base, "firewall-" + base
        self.ep_bases: dict[str, str] = {}

    def put(self, name: str, key: str, value: str, comment: str | None = None) -> None:
        """ensureElem into the named map's storage."""
        self.p.storage[name].ensure(self.tx, element(name, key, value, comment))

    def ep_base(self, ep: EndpointInfo) -> str:
        """endpoint_base, once per endpoint: the loop names each endpoint's chain three times or more."""
        base = self.ep_bases.get(ep.endpoint)
        if base is None:
            base = self.ep_bases[ep.endpoint] = endpoint_base(self.spn, ep)
        return base

    def ep_chain(self, ep: EndpointInfo) -> str:
        return "endpoint-" + self.ep_base(ep)

    def ep_set(self, ep: EndpointInfo) -> str:
        return "affinity-" + self.ep_base(ep)

    def write(self) -> None:
        tx, svc, cat, skip = self.tx, self.svc, self.cat, self.skip
        proto, name = svc.protocol.lower(), str(self.spn)
        for ep in cat.reachable:
            ensure_chain(tx, self.ep_chain(ep), self.active, skip)
            if svc.client_ip_affinity:
                self.affinity.add(self.ep_set(ep))
        uses_cluster = bool(cat.cluster) and svc.uses_cluster_endpoints
        uses_local = bool(cat.local) and svc.uses_local_endpoints
        if uses_cluster:
            ensure_chain(tx, self.cluster_chain, self.active, skip)
        if uses_local:
            ensure_chain(tx, self.local_chain, self.active, skip)
        has_any = cat.has_any
        internal_chain, has_internal = self.cluster_chain, has_any
        if svc.internal_policy_local:
            internal_chain, has_internal = self.local_chain, has_any and bool(cat.local)
        external_policy_chain, has_external = self.cluster_chain, has_any
        if svc.external_policy_local:
            external_policy_chain, has_external = self.local_chain, has_any and bool(cat.local)
        uses_external = has_any and svc.externally_accessible
        if uses_external:
            ensure_chain(tx, self.external_chain, self.active, skip)
        int_verdict = ext_verdict = "goto reject-chain"
        if has_any:
            int_verdict = "" if has_internal else "drop"
            ext_verdict = "" if has_external else "drop"
        port = str(svc.port)
        self.put("cluster-ips", svc.cluster_ip, "")
        if has_internal:
            self.put("service-ips", f"{svc.cluster_ip} . {proto} . {port}", f"goto {internal_chain}")
        else:
            self.put("no-endpoint-services", f"{svc.cluster_ip} . {proto} . {port}", int_verdict, name)
        ext = self.external_chain
        for ip in svc.external_ips:
            if has_any:
                self.put("service-ips", f"{ip} . {proto} . {port}", f"goto {ext}")
            if not has_external:
                self.put("no-endpoint-services", f"{ip} . {proto} . {port}", ext_verdict, name)
        uses_fw = bool(svc.load_balancer_ips) and bool(svc.load_balancer_source_ranges)
        if uses_fw:
            ensure_chain(tx, self.fw_chain, self.active, skip)
        for ip in svc.load_balancer_ips:
            if has_any:
                self.put("service-ips", f"{ip} . {proto} . {port}", f"goto {ext}")
            if uses_fw:
                self.put("firewall-ips", f"{ip} . {proto} . {port}", f"goto {self.fw_chain}")
        if not has_external:
            for ip in svc.load_balancer_ips:
                self.put("no-endpoint-services", f"{ip} . {proto} . {port}", ext_verdict, name)
        if svc.node_port:
            if has_any:
                self.put("service-nodeports", f"{proto} . {svc.node_port}", f"goto {ext}")
            if not has_external:
                self.put("no-endpoint-nodeports", f"{proto} . {svc.node_port}", ext_verdict, name)
        if skip:
            return
        self._chains(proto, port, internal_chain, has_internal, uses_external, has_external,
                     external_policy_chain, uses_fw, uses_cluster, uses_local)

    def _chains(self, proto: str, port: str, internal_chain: str, has_internal: bool, uses_external: bool,
                has_external: bool, external_policy_chain: str, uses_fw: bool, uses_cluster: bool,
                uses_local: bool) -> None:
        o, tx, svc, cat = self.p.opts, self.tx, self.svc, self.cat
        dport = f" {proto} dport {port}" if self.p.layout.service_dport else ""
        if has_internal:
            match = f"ip daddr {svc.cluster_ip}{dport}"
            if o.masquerade_all:
                tx.add(rule(internal_chain, f"{match} jump mark-for-masquerade"))
            elif o.cluster_cidr:
                tx.add(rule(internal_chain, f"{match} ip saddr != {o.cluster_cidr} jump mark-for-masquerade"))
        if uses_external:
            ext = self.external_chain
            if not svc.external_policy_local:
                tx.add(rule(ext, "jump mark-for-masquerade"))
            else:
                if o.cluster_cidr:
                    tx.add(rule(ext, f"ip saddr {o.cluster_cidr} goto {self.cluster_chain}",
                                "short-circuit pod traffic"))
                tx.add(rule(ext, "fib saddr type local jump mark-for-masquerade", "masquerade local traffic"))
                tx.add(rule(ext, f"fib saddr type local goto {self.cluster_chain}",
                            "short-circuit local traffic"))
            if has_external:
                tx.add(rule(ext, f"goto {external_policy_chain}"))
        if uses_fw:
            sources = [str(r).strip() for r in svc.load_balancer_source_ranges]
            if _in_any(o.node_ip, sources):
                sources += list(svc.load_balancer_ips)
            tx.add(rule(self.fw_chain, f"ip saddr != {{ {' , '.join(sources)} }} drop"))
        if svc.client_ip_affinity:
            for ep in cat.reachable:
                tx.add(Obj("set", self.ep_set(ep), f"type ipv4_addr ; flags dynamic,timeout ; "
                                                   f"timeout {svc.sticky_seconds}s ;"))
        if uses_cluster:
            self._to_endpoints(self.cluster_chain, cat.cluster)
        if uses_local:
            self._to_endpoints(self.local_chain, cat.local)
        for ep in cat.reachable:
            c = self.ep_chain(ep)
            tx.add(rule(c, f"ip saddr {ep.ip} jump mark-for-masquerade"))
            if svc.client_ip_affinity:
                tx.add(rule(c, f"update @{self.ep_set(ep)} {{ ip saddr }}"))
            tx.add(rule(c, f"meta l4proto {proto} dnat to {ep.endpoint}"))

    def _to_endpoints(self, svc_chain: str, endpoints: list[EndpointInfo]) -> None:
        """writeServiceToEndpointRules: affinity lookups first, then the random pick."""
        if self.svc.client_ip_affinity:
            for ep in endpoints:
                self.tx.add(rule(svc_chain, f"ip saddr @{self.ep_set(ep)} goto {self.ep_chain(ep)}"))
        picks = " , ".join(f"{i} : goto {self.ep_chain(ep)}" for i, ep in enumerate(endpoints))
        self.tx.add(rule(svc_chain, f"numgen random mod {len(endpoints)} vmap {{ {picks} }}"))


def _in_any(ip: str | None, cidrs: list[str]) -> bool:
    if ip is None:
        return False
    return any(ipaddress.IPv4Address(ip) in ipaddress.IPv4Network(c, strict=False) for c in cidrs)
