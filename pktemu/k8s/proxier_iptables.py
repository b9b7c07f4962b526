"""kube-proxy's iptables mode: a port of pkg/proxy/iptables/proxier.go syncProxyRules (v1.28).

Each sync writes one `iptables-restore --noflush` input with the filter and nat tables: the
top-level KUBE-* chains, per service port KUBE-SVC-* (Cluster policy), KUBE-SVL-* (Local),
KUBE-EXT-* (external destinations), KUBE-FW-* (load-balancer source ranges) and one KUBE-SEP-*
per endpoint, with the `statistic` cascade (1/(n-i), ten decimals), ClientIP affinity through
`recent`, REJECT/DROP for Services without (local) endpoints, and the `! -s clusterCIDR`
masquerade rule. As upstream, chains of services that did not change since the last sync are
left out (a partial sync) unless a full sync is due, stale service chains are deleted with
`-X`, and the jumps from the built-in chains are ensured separately (inserted at the top when
missing), since a restore must not replace the built-in chains.

`variant="kernel-oracle"` reproduces the kernel oracle's rules (tests/data/oracle/reference/rules):
MASQUERADE without `--random-fully` and no KUBE-FIREWALL (kubelet's localnet rule); everything else
is upstream's.
"""
from __future__ import annotations

import base64
import functools
import hashlib
from dataclasses import dataclass
from typing import Any

from pktemu.k8s.proxy_state import (
    EndpointInfo, EndpointsMap, ServicePortInfo, ServicePortMap, ServicePortName, StaleUdp, categorize,
    stale_udp,
)
from pktemu.netfilter.xt_parse import parse_line, tokenize
from pktemu.netfilter.xt_base import ParseCtx
from pktemu.netfilter.xtables import Ruleset

FILTER_CHAINS = ("KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES", "KUBE-FORWARD", "KUBE-NODEPORTS",
                 "KUBE-PROXY-FIREWALL")
MASQ_MARK = "0x004000"            # fmt.Sprintf("%#08x", 1 << 14), as NewProxier formats it
LARGE_CLUSTER_ENDPOINTS = 1000
SERVICE_CHAIN_PREFIXES = ("KUBE-SVC-", "KUBE-SVL-", "KUBE-SEP-", "KUBE-FW-", "KUBE-EXT-")

# (table, destination chain, source chain, comment, extra args): iptablesJumpChains, in order.
_NEW = "-m conntrack --ctstate NEW"
JUMPS: tuple[tuple[str, str, str, str, str], ...] = (
    ("filter", "KUBE-EXTERNAL-SERVICES", "INPUT", "kubernetes externally-visible service portals", _NEW),
    ("filter", "KUBE-EXTERNAL-SERVICES", "FORWARD", "kubernetes externally-visible service portals", _NEW),
    ("filter", "KUBE-NODEPORTS", "INPUT", "kubernetes health check service ports", ""),
    ("filter", "KUBE-SERVICES", "FORWARD", "kubernetes service portals", _NEW),
    ("filter", "KUBE-SERVICES", "OUTPUT", "kubernetes service portals", _NEW),
    ("filter", "KUBE-FORWARD", "FORWARD", "kubernetes forwarding rules", ""),
    ("filter", "KUBE-PROXY-FIREWALL", "INPUT", "kubernetes load balancer firewall", _NEW),
    ("filter", "KUBE-PROXY-FIREWALL", "OUTPUT", "kubernetes load balancer firewall", _NEW),
    ("filter", "KUBE-PROXY-FIREWALL", "FORWARD", "kubernetes load balancer firewall", _NEW),
    ("nat", "KUBE-SERVICES", "OUTPUT", "kubernetes service portals", ""),
    ("nat", "KUBE-SERVICES", "PREROUTING", "kubernetes service portals", ""),
    ("nat", "KUBE-POSTROUTING", "POSTROUTING", "kubernetes postrouting rules", ""),
)
KUBELET_JUMPS: tuple[tuple[str, str, str, str, str], ...] = (
    ("filter", "KUBE-FIREWALL", "INPUT", "", ""),
    ("filter", "KUBE-FIREWALL", "OUTPUT", "", ""),
)


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


class IptablesProxier:
    """The state kept between syncs: the maps of the last sync and whether the next must be full."""

    def __init__(self, opts: IptablesOptions, shared: "ServiceLines | None" = None) -> None:
        self.opts = opts
        self.shared = shared
        self.svc_map: ServicePortMap = {}
        self.eps_map: EndpointsMap = {}
        self.need_full_sync = True

    def sync(self, svcs: ServicePortMap, eps: EndpointsMap, ruleset: Ruleset) -> tuple[str, StaleUdp]:
        """The restore text for the new state and the stale UDP conntrack entries to delete."""
        full = self.need_full_sync
        changed = None if full else _changed_services(self.svc_map, svcs, self.eps_map, eps)
        text = render(svcs, eps, self.opts, ruleset, changed, self.shared)
        stale = stale_udp(self.svc_map, svcs, self.eps_map, eps)
        self.svc_map, self.eps_map = dict(svcs), {k: list(v) for k, v in eps.items()}
        self.need_full_sync = False
        return text, stale


def _changed_services(old_s: ServicePortMap, new_s: ServicePortMap, old_e: EndpointsMap,
                      new_e: EndpointsMap) -> set[str]:
    """serviceChanges/endpointsChanges.PendingChanges(): "ns/name" of every Service whose ports or
    endpoints differ from the last sync."""
    out: set[str] = set()
    for spn in set(old_s) | set(new_s) | set(old_e) | set(new_e):
        if old_s.get(spn) != new_s.get(spn) or old_e.get(spn) != new_e.get(spn):
            out.add(spn.service)
    return out


class _Buf(list[str]):
    """Lines of one section; `write` joins the non-empty parts (the per-service loop appends whole lines)."""

    def write(self, *parts: str) -> None:
        self.append(" ".join(p for p in parts if p))


def render(svcs: ServicePortMap, eps: EndpointsMap, opts: IptablesOptions, ruleset: Ruleset | None,
           changed: set[str] | None = None, shared: "ServiceLines | None" = None) -> str:
    """syncProxyRules' iptables-restore input. `changed` None means a full sync; otherwise the
    KUBE-SVC/SVL/EXT/FW/SEP chains of services not in it are left out. `shared`: the lines of
    services made by other nodes' syncs, for the services whose lines are alike on every node."""
    f_chains, f_rules, n_chains, n_rules = _Buf(), _Buf(), _Buf(), _Buf()
    for c in FILTER_CHAINS:
        f_chains.write(f":{c} - [0:0]")
    for c in ("KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ"):
        n_chains.write(f":{c} - [0:0]")
    n_rules.write("-A KUBE-POSTROUTING -m mark ! --mark", f"{MASQ_MARK}/{MASQ_MARK}", "-j RETURN")
    n_rules.write("-A KUBE-POSTROUTING -j MARK --xor-mark", MASQ_MARK)
    n_rules.write('-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" '
                  "-j MASQUERADE", "--random-fully" if opts.random_fully else "")
    n_rules.write("-A KUBE-MARK-MASQ -j MARK --or-mark", MASQ_MARK)
    if opts.localhost_nodeports and opts.kubelet_firewall:
        f_chains.write(":KUBE-FIREWALL - [0:0]")
        f_rules.write('-A KUBE-FIREWALL -m comment --comment "block incoming localnet connections" '
                      "-d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT "
                      "-j DROP")
    active: set[str] = set()
    large = sum(len(eps.get(spn, [])) for spn in svcs) > LARGE_CLUSTER_ENDPOINTS
    for spn, svc in svcs.items():
        skip = changed is not None and spn.service not in changed
        if shared is not None and not svc.uses_local_endpoints:
            shared.service(spn, svc, eps.get(spn, _NONE), opts, large, active, f_rules, n_chains, n_rules,
                           skip)
        else:
            _service(spn, svc, eps.get(spn, []), opts, large, active, f_rules, n_chains, n_rules, skip)
    if ruleset is not None and ruleset.has_table("nat"):
        for name in sorted(ruleset.view("nat").chains):
            if name.startswith(SERVICE_CHAIN_PREFIXES) and name not in active:
                n_chains.write(f":{name} - [0:0]")
                n_rules.write("-X", name)
    dest = "-m addrtype --dst-type LOCAL" + ("" if opts.localhost_nodeports else " ! -d 127.0.0.0/8")
    n_rules.write('-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be '
                  'the last rule in this chain"', dest, "-j KUBE-NODEPORTS")
    f_rules.write("-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP")
    f_rules.write('-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark',
                  f"{MASQ_MARK}/{MASQ_MARK}", "-j ACCEPT")
    f_rules.write('-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" '
                  "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT")
    jumps = JUMPS + (KUBELET_JUMPS if opts.localhost_nodeports and opts.kubelet_firewall else ())
    missing = missing_jumps(ruleset, jumps) if changed is None else {}
    out = ["*filter", *f_chains, *missing.get("filter", []), *f_rules, "COMMIT",
           "*nat", *n_chains, *missing.get("nat", []), *n_rules, "COMMIT"]
    return "\n".join(out) + "\n"


def missing_jumps(ruleset: Ruleset | None, jumps: tuple[tuple[str, str, str, str, str], ...]
                  ) -> dict[str, list[str]]:
    """EnsureRule(Prepend, ...) for each jump: `-I SRC 1 ...` lines for the jumps not there yet."""
    out: dict[str, list[str]] = {}
    for table, dst, src, comment, extra in jumps:
        comment_args = f'-m comment --comment "{comment}"' if comment else ""
        args = " ".join(a for a in (extra, comment_args, f"-j {dst}") if a)
        if not rule_exists(ruleset, table, src, args):
            out.setdefault(table, []).append(f"-I {src} 1 {args}")
    return out


def rule_exists(ruleset: Ruleset | None, table: str, chain: str, args: str) -> bool:
    """iptables -C: is a rule with these arguments (compared as iptables-save prints them) there?"""
    if ruleset is None or not ruleset.has_table(table) or chain not in ruleset.view(table).chains:
        return False
    where = "<kube-proxy>"
    cmd = parse_line(tokenize(f"-A {chain} {args}", where), ParseCtx(where, table, ""))
    want = cmd.rules[0].body
    return any(r.body == want for r in ruleset.view(table).chains[chain].rules)


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

    def service(self, spn: ServicePortName, svc: ServicePortInfo, endpoints: list[EndpointInfo],
                opts: IptablesOptions, large: bool, active: set[str], f_rules: list[str],
                n_chains: list[str], n_rules: list[str], skip: bool) -> None:
        """`_service`, from the lines made before when they are the same."""
        endpoints = getattr(endpoints, "base", endpoints)
        key = (id(spn), id(svc), id(endpoints), opts.cluster_cidr, opts.masquerade_all,
               opts.node_ip if svc.load_balancer_source_ranges else None, large, skip)
        got = self._done.get(key)
        if got is None:
            if len(self._done) >= self.size:
                self._done.clear()
            made: tuple[set[str], list[str], list[str], list[str]] = (set(), [], [], [])
            _service(spn, svc, endpoints, opts, large, *made, skip)
            got = self._done[key] = (spn, svc, endpoints, *made)
        active.update(got[3])
        f_rules.extend(got[4])
        n_chains.extend(got[5])
        n_rules.extend(got[6])


def _service(spn: ServicePortName, svc: ServicePortInfo, endpoints: list[EndpointInfo], opts: IptablesOptions,
             large: bool, active: set[str], f_rules: list[str], n_chains_all: list[str],
             n_rules_all: list[str], skip: bool) -> None:
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
