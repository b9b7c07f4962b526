"""One service port's iptables rules, as kube-proxy's syncProxyRules writes them (v1.28): the
KUBE-SERVICES entries, KUBE-SVC-* (Cluster policy), KUBE-SVL-* (Local), KUBE-EXT-* (external
destinations), KUBE-FW-* (load-balancer source ranges) and one KUBE-SEP-* per endpoint, with the
`statistic` cascade (1/(n-i), ten decimals), ClientIP affinity through `recent`, REJECT/DROP for
Services without (local) endpoints and the `! -s clusterCIDR` masquerade rule; and the chain
names' hashes. A cluster's nodes share the lines of services alike on every node (ServiceLines).
"""
from __future__ import annotations

import base64
import functools
import hashlib
from dataclasses import dataclass
from typing import Any

from pktemu.k8s.proxy_state import EndpointInfo, ServicePortInfo, ServicePortName, categorize


@functools.lru_cache(maxsize=1 << 18)
def _hash(*parts: str) -> str:
    """servicePortChainName's hash: base32 of sha256, 16 characters (the first 10 bytes' worth).
    Cached: a sync names each endpoint's chain several times, and every sync and node again."""
    return base64.b32encode(hashlib.sha256("".join(parts).encode()).digest()[:10]).decode()


def svc_chain(spn: ServicePortName) -> str:
    return "KUBE-SVC-" + _hash(str(spn), spn.protocol.lower())


def svl_chain(spn: ServicePortName) -> str:
    return "KUBE-SVL-" + _hash(str(spn), spn.protocol.lower())


def ext_chain(spn: ServicePortName) -> str:
    return "KUBE-EXT-" + _hash(str(spn), spn.protocol.lower())


def fw_chain(spn: ServicePortName) -> str:
    return "KUBE-FW-" + _hash(str(spn), spn.protocol.lower())


def sep_chain(spn: ServicePortName, endpoint: str) -> str:
    return "KUBE-SEP-" + _hash(str(spn), spn.protocol.lower(), endpoint)


@functools.lru_cache(maxsize=4096)
def probability(n: int) -> str:
    """computeProbability: 1/n with ten decimals (iptables-save prints it back with eleven)."""
    return f"{1.0 / n:.10f}"


@dataclass
class IptablesOptions:
    cluster_cidr: str | None = None       # the local-traffic detector (--cluster-cidr)
    masquerade_all: bool = False
    random_fully: bool = True
    localhost_nodeports: bool = True
    kubelet_firewall: bool = True         # False in the kernel-oracle variant
    node_ip: str | None = None


_NONE: list[EndpointInfo] = []


class ServiceLines:
    """The lines of a service port's rules, by what they are made of, for services that do not
    use local endpoints: those lines are the same on every node (a node's endpoints differ from
    the others' only in being local, `LocalView`), so a cluster's nodes make them once per sync
    instead of once each. Keys name the records and lists by identity (the cluster's `Records`
    gives each node the same objects); an entry keeps them alive. Bounded: past `size` it starts
    afresh."""

    def __init__(self, size: int = 1 << 14) -> None:
        self.size = size
        self._done: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        self._last: tuple[list[str], str] | None = None

    def text(self, lines: list[str]) -> str:
        """The restore text of `lines`: the last node's own object when its lines were the same (most
        of them are the same objects, so this costs little), so that a cluster's nodes hand
        iptables-restore one text whose hash is made once, not a copy each of megabytes."""
        last = self._last
        if last is not None and last[0] == lines:
            return last[1]
        text = "\n".join(lines) + "\n"
        self._last = (lines, text)
        return text

    def service(self, spn: ServicePortName, svc: ServicePortInfo, endpoints: list[EndpointInfo],
                opts: IptablesOptions, large: bool, active: set[str], f_rules: list[str],
                n_chains: list[str], n_rules: list[str], skip: bool) -> None:
        """`service_rules`, from the lines made before when they are the same."""
        endpoints = getattr(endpoints, "base", endpoints)
        key = (id(spn), id(svc), id(endpoints), opts.cluster_cidr, opts.masquerade_all,
               opts.node_ip if svc.load_balancer_source_ranges else None, large, skip)
        got = self._done.get(key)
        if got is None:
            if len(self._done) >= self.size:
                self._done.clear()
            made: tuple[set[str], list[str], list[str], list[str]] = (set(), [], [], [])
            service_rules(spn, svc, endpoints, opts, large, *made, skip)
            got = self._done[key] = (spn, svc, endpoints, *made)
        active.update(got[3])
        f_rules.extend(got[4])
        n_chains.extend(got[5])
        n_rules.extend(got[6])


def service_rules(spn: ServicePortName, svc: ServicePortInfo, endpoints: list[EndpointInfo],
                  opts: IptablesOptions, large: bool, active: set[str], f_rules: list[str],
                  n_chains_all: list[str], n_rules_all: list[str], skip: bool) -> None:
    """The body of syncProxyRules' per-service-port loop. Lines are built as whole f-strings, and the
    chain names from one hash per service port and one per endpoint: this loop is the sync's cost."""
    proto = svc.protocol.lower()
    name = str(spn)
    cat = categorize(endpoints, svc)
    reachable = [(ep.endpoint, ep.ip) for ep in cat.reachable]
    seps = {endpoint: "KUBE-SEP-" + _hash(name, proto, endpoint) for endpoint, _ in reachable}
    active.update(seps.values())
    h = _hash(name, proto)
    cluster_chain, local_chain, external_chain = "KUBE-SVC-" + h, "KUBE-SVL-" + h, "KUBE-EXT-" + h
    uses_cluster = bool(cat.cluster) and svc.uses_cluster_endpoints
    uses_local = bool(cat.local) and svc.uses_local_endpoints
    if uses_cluster:
        active.add(cluster_chain)
    if uses_local:
        active.add(local_chain)
    internal_chain, has_internal = cluster_chain, cat.has_any
    if svc.internal_policy_local:
        internal_chain = local_chain
        has_internal = has_internal and bool(cat.local)
    external_policy_chain, has_external = cluster_chain, cat.has_any
    if svc.external_policy_local:
        external_policy_chain = local_chain
        has_external = has_external and bool(cat.local)
    uses_external = cat.has_any and svc.externally_accessible
    if uses_external:
        active.add(external_chain)
    lb_chain = fw = external_chain
    uses_fw = cat.has_any and bool(svc.load_balancer_ips) and bool(svc.load_balancer_source_ranges)
    if uses_fw:
        lb_chain = fw = "KUBE-FW-" + h
        active.add(fw)
    if not cat.has_any:
        int_target, int_comment = "REJECT", f'"{name} has no endpoints"'
        ext_target, ext_comment = int_target, int_comment
    else:
        int_target = int_comment = ext_target = ext_comment = ""
        if not has_internal:
            int_target, int_comment = "DROP", f'"{name} has no local endpoints"'
        if not has_external:
            ext_target, ext_comment = "DROP", f'"{name} has no local endpoints"'
    match = f"-m {proto} -p {proto}"
    port = svc.port
    if has_internal:
        n_rules_all.append(f'-A KUBE-SERVICES -m comment --comment "{name} cluster IP" {match} '
                           f"-d {svc.cluster_ip} --dport {port} -j {internal_chain}")
    else:
        f_rules.append(f"-A KUBE-SERVICES -m comment --comment {int_comment} {match} "
                       f"-d {svc.cluster_ip} --dport {port} -j {int_target}")
    for ip in svc.external_ips:
        if cat.has_any:
            n_rules_all.append(f'-A KUBE-SERVICES -m comment --comment "{name} external IP" {match} '
                               f"-d {ip} --dport {port} -j {external_chain}")
        if not has_external:
            f_rules.append(f"-A KUBE-EXTERNAL-SERVICES -m comment --comment {ext_comment} {match} "
                           f"-d {ip} --dport {port} -j {ext_target}")
    for ip in svc.load_balancer_ips:
        if cat.has_any:
            n_rules_all.append(f'-A KUBE-SERVICES -m comment --comment "{name} loadbalancer IP" {match} '
                               f"-d {ip} --dport {port} -j {lb_chain}")
        if uses_fw:
            f_rules.append(f'-A KUBE-PROXY-FIREWALL -m comment --comment "{name} traffic not accepted by '
                           f'{fw}" {match} -d {ip} --dport {port} -j DROP')
    if not has_external:
        for ip in svc.load_balancer_ips:
            f_rules.append(f"-A KUBE-EXTERNAL-SERVICES -m comment --comment {ext_comment} {match} "
                           f"-d {ip} --dport {port} -j {ext_target}")
    if svc.node_port:
        if cat.has_any:
            n_rules_all.append(f"-A KUBE-NODEPORTS -m comment --comment {name} {match} "
                               f"--dport {svc.node_port} -j {external_chain}")
        if not has_external:
            f_rules.append(f"-A KUBE-EXTERNAL-SERVICES -m comment --comment {ext_comment} "
                           f"-m addrtype --dst-type LOCAL {match} --dport {svc.node_port} -j {ext_target}")
    if svc.health_check_node_port:
        f_rules.append(f'-A KUBE-NODEPORTS -m comment --comment "{name} health check node port" '
                       f"-m tcp -p tcp --dport {svc.health_check_node_port} -j ACCEPT")
    if skip:
        return
    n_chains, n_rules = n_chains_all, n_rules_all
    if has_internal:
        args = f'-m comment --comment "{name} cluster IP" {match} -d {svc.cluster_ip} --dport {port}'
        if opts.masquerade_all:
            n_rules.append(f"-A {internal_chain} {args} -j KUBE-MARK-MASQ")
        elif opts.cluster_cidr:
            n_rules.append(f"-A {internal_chain} {args} ! -s {opts.cluster_cidr} -j KUBE-MARK-MASQ")
    if uses_external:
        n_chains.append(f":{external_chain} - [0:0]")
        if not svc.external_policy_local:
            n_rules.append(f'-A {external_chain} -m comment --comment "masquerade traffic for {name} '
                           'external destinations" -j KUBE-MARK-MASQ')
        else:
            if opts.cluster_cidr:
                n_rules.append(f'-A {external_chain} -m comment --comment "pod traffic for {name} external '
                               f'destinations" -s {opts.cluster_cidr} -j {cluster_chain}')
            n_rules.append(f'-A {external_chain} -m comment --comment "masquerade LOCAL traffic for {name} '
                           'external destinations" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ')
            n_rules.append(f'-A {external_chain} -m comment --comment "route LOCAL traffic for {name} '
                           f'external destinations" -m addrtype --src-type LOCAL -j {cluster_chain}')
        if has_external:
            n_rules.append(f"-A {external_chain} -j {external_policy_chain}")
    if uses_fw:
        n_chains.append(f":{fw} - [0:0]")
        head = f'-A {fw} -m comment --comment "{name} loadbalancer IP"'
        allow_node = False
        for src in svc.load_balancer_source_ranges:
            n_rules.append(f"{head} -s {src} -j {external_chain}")
            allow_node = allow_node or _in_cidr(opts.node_ip, src)
        if allow_node:
            for ip in svc.load_balancer_ips:
                n_rules.append(f"{head} -s {ip} -j {external_chain}")
        n_rules.append(f'-A {fw} -m comment --comment "other traffic to {name} will be dropped by '
                       'KUBE-PROXY-FIREWALL"')
    if uses_cluster:
        n_chains.append(f":{cluster_chain} - [0:0]")
        _endpoint_rules(n_rules, name, svc, cluster_chain, cat.cluster, seps, large)
    if uses_local:
        n_chains.append(f":{local_chain} - [0:0]")
        _endpoint_rules(n_rules, name, svc, local_chain, cat.local, seps, large)
    comment = "" if large else f" -m comment --comment {name}"
    recent = " -m recent --name {} --set" if svc.client_ip_affinity else ""
    dnat = f"-m {proto} -p {proto} -j DNAT --to-destination"
    for endpoint, ip in reachable:
        chain = seps[endpoint]
        n_chains.append(f":{chain} - [0:0]")
        n_rules.append(f"-A {chain}{comment} -s {ip} -j KUBE-MARK-MASQ")
        n_rules.append(f"-A {chain}{comment}{recent.format(chain)} {dnat} {endpoint}")


def _endpoint_rules(rules: list[str], name: str, svc: ServicePortInfo, chain: str,
                    endpoints: list[EndpointInfo], seps: dict[str, str], large: bool) -> None:
    """writeServiceToEndpointRules: affinity checks first, then the probability cascade."""
    names = [ep.endpoint for ep in endpoints]
    heads = [f"-A {chain}" if large else f'-A {chain} -m comment --comment "{name} -> {endpoint}"'
             for endpoint in names]
    if svc.client_ip_affinity:
        for head, endpoint in zip(heads, names, strict=True):
            sep = seps[endpoint]
            rules.append(f"{head} -m recent --name {sep} --rcheck --seconds {svc.sticky_seconds} "
                         f"--reap -j {sep}")
    n = len(names)
    for i, endpoint in enumerate(names):
        if i < n - 1:
            rules.append(f"{heads[i]} -m statistic --mode random --probability {probability(n - i)} "
                         f"-j {seps[endpoint]}")
        else:
            rules.append(f"{heads[i]} -j {seps[endpoint]}")


def _in_cidr(ip: str | None, cidr: str) -> bool:
    import ipaddress
    return ip is not None and ipaddress.IPv4Address(ip) in ipaddress.IPv4Network(cidr, strict=False)
