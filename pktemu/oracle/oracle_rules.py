#!/usr/bin/env python3
"""Generate kube-proxy style rules: iptables mode (iptables-restore format, the default) or
nftables mode (`--mode nftables`, an `nft -f` input file).

Chain names are computed exactly as kube-proxy does (pkg/proxy/iptables/proxier.go):
    KUBE-SVC-  + base32(sha256(servicePortName + protocol))[:16]
    KUBE-SEP-  + base32(sha256(servicePortName + protocol + endpoint))[:16]
e.g. "kube-system/kube-dns:dns" + "udp" -> KUBE-SVC-TCOU7JCQXEZGVUNU (the well known name).

The layout follows kube-proxy v1.28+ (filter + nat tables) with two deliberate
simplifications, both for determinism / portability:
  * MASQUERADE without --random-fully (unless --random-fully is given), so the
    masqueraded source port is kept and the captures are reproducible;
  * no nfacct match on the INVALID drop rule.

nftables mode (--mode nftables) follows the layout of kube-proxy's nftables proxier as
released in Kubernetes v1.33.0 (GA; pkg/proxy/nftables/proxier.go, in the text format of
proxier_test.go TestOverallNFTablesRules): `table ip kube-proxy`, base chains
filter-prerouting/-input/-forward/-output (priority -110), filter-output-post-dnat (-90),
nat-prerouting/-output (-100), nat-postrouting (100), the service-ips / no-endpoint-services
verdict maps, the cluster-ips set, and per service port the chains
    service-<H8>-<namespace>/<name>/<proto>/<portname>
    endpoint-<H8>-<namespace>/<name>/<proto>/<portname>__<ip>/<port>
where <H8> = base32(sha256(<rest of the name>))[:8] (hashAndTruncate), e.g.
kube-dns -> service-FY5PMXPG-kube-system/kube-dns/udp/dns. The one deliberate change is the
same as in iptables mode: `masquerade` without `fully-random` unless --random-fully is given.
Stdlib only.
"""
import argparse
import base64
import hashlib
import json
import re
import sys
from typing import Any

CLUSTER_CIDR = "10.0.0.0/16"  # pod network (node1 10.0.1.0/24, node2 10.0.2.0/24)

# name, namespace, port name ('' = unnamed), protocol, clusterIP, port, endpoints
SERVICES: list[dict[str, Any]] = [
    {"ns": "kube-system", "name": "kube-dns", "port_name": "dns", "proto": "udp",
     "cluster_ip": "10.3.240.10", "port": 53, "endpoints": ["10.0.2.3:53"]},
    {"ns": "default", "name": "service-test", "port_name": "", "proto": "tcp",
     "cluster_ip": "10.3.241.152", "port": 80, "endpoints": ["10.0.2.2:8080"]},
    {"ns": "default", "name": "service-noep", "port_name": "", "proto": "tcp",
     "cluster_ip": "10.3.250.77", "port": 80, "endpoints": []},
    {"ns": "default", "name": "service-hairpin", "port_name": "", "proto": "tcp",
     "cluster_ip": "10.3.245.20", "port": 80, "endpoints": ["10.0.1.2:8080"]},
]


def _hash_chain(prefix: str, s: str) -> str:
    digest = hashlib.sha256(s.encode()).digest()
    return prefix + base64.b32encode(digest).decode()[:16]


def port_name(svc) -> str:
    base = f"{svc['ns']}/{svc['name']}"
    return base + (f":{svc['port_name']}" if svc["port_name"] else "")


def svc_chain(svc) -> str:
    return _hash_chain("KUBE-SVC-", port_name(svc) + svc["proto"])


def sep_chain(svc, ep: str) -> str:
    return _hash_chain("KUBE-SEP-", port_name(svc) + svc["proto"] + ep)


def render(random_fully: bool = False) -> str:
    filt_chains = ["KUBE-EXTERNAL-SERVICES", "KUBE-FORWARD", "KUBE-NODEPORTS",
                   "KUBE-PROXY-FIREWALL", "KUBE-SERVICES"]
    filt = [
        '-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL',
        '-A INPUT -m comment --comment "kubernetes health check service ports" -j KUBE-NODEPORTS',
        '-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES',
        '-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL',
        '-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD',
        '-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES',
        '-A OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL',
        '-A OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP',
        '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT',
        '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT',
    ]
    nat_chains = ["KUBE-MARK-MASQ", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-SERVICES"]
    nat = [
        '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
        '-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000',
        '-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN',
        '-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0',
        '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE'
        + (" --random-fully" if random_fully else ""),
    ]
    svc_rules, sep_rules = [], []
    for svc in SERVICES:
        pn, proto, cip, port = port_name(svc), svc["proto"], svc["cluster_ip"], svc["port"]
        if not svc["endpoints"]:
            filt.append(f'-A KUBE-SERVICES -d {cip}/32 -p {proto} -m comment --comment "{pn} has no endpoints" '
                        f'-m {proto} --dport {port} -j REJECT --reject-with icmp-port-unreachable')
            continue
        sc = svc_chain(svc)
        nat_chains.append(sc)
        nat.append(f'-A KUBE-SERVICES -d {cip}/32 -p {proto} -m comment --comment "{pn} cluster IP" '
                   f'-m {proto} --dport {port} -j {sc}')
        svc_rules.append(f'-A {sc} ! -s {CLUSTER_CIDR} -d {cip}/32 -p {proto} -m comment --comment "{pn} cluster IP" '
                         f'-m {proto} --dport {port} -j KUBE-MARK-MASQ')
        n = len(svc["endpoints"])
        for i, ep in enumerate(svc["endpoints"]):
            ec = sep_chain(svc, ep)
            nat_chains.append(ec)
            stat = ""
            if i < n - 1:
                stat = f" -m statistic --mode random --probability {1.0 / (n - i):.11f}"
            svc_rules.append(f'-A {sc} -m comment --comment "{pn} -> {ep}"{stat} -j {ec}')
            ep_ip = ep.rsplit(":", 1)[0]
            sep_rules.append(f'-A {ec} -s {ep_ip}/32 -m comment --comment "{pn}" -j KUBE-MARK-MASQ')
            sep_rules.append(f'-A {ec} -p {proto} -m comment --comment "{pn}" -m {proto} -j DNAT --to-destination {ep}')
    nat.append('-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last '
               'rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS')
    nat += svc_rules + sep_rules

    out = ["# kube-proxy (iptables mode) style rules generated by oracle_rules.py", "*filter"]
    out += [f":{c} - [0:0]" for c in filt_chains] + filt + ["COMMIT", "*nat"]
    out += [f":{c} - [0:0]" for c in nat_chains] + nat + ["COMMIT"]
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------- nftables mode
NFT_UPSTREAM = ["Kubernetes v1.33.0 kube-proxy nftables mode (GA), pkg/proxy/nftables/proxier.go",
                "setupNFTables()/syncProxyRules(), in the text format of proxier_test.go TestOverallNFTablesRules.",
                "(Later: v1.34 and v1.33.x patches use filter-*-pre-dnat chains; v1.34 drops `dport` from service-* rules.)"]
NFT_SERVICE_CIDR = "10.3.240.0/20"  # the ServiceCIDR kube-proxy v1.33 learns from the API (MultiCIDRServiceAllocator GA)
NFT_MASQ_MARK = "0x4000"            # 1 << masqueradeBit(14)


def nft_hash_and_truncate(name: str) -> str:
    """kube-proxy hashAndTruncate(): base32(sha256(name))[:8] + "-" + name, cut to 240 chars."""
    digest = hashlib.sha256(name.encode()).digest()
    name = base64.b32encode(digest).decode()[:8] + "-" + name
    limit = 256 - 16  # knftables.NameLengthMax - chainNamePrefixLengthMax
    if len(name) > limit:
        name = name[:limit - 3] + "..."
    return name


def nft_chain_base(svc) -> str:
    """servicePortChainNameBase(): "<ns>/<name>/<proto>/<portname>" (portname may be empty)."""
    return nft_hash_and_truncate(f"{svc['ns']}/{svc['name']}/{svc['proto']}/{svc['port_name']}")


def nft_ep_chain_base(svc, ep: str) -> str:
    """servicePortEndpointChainNameBase(): "<ns>/<name>/<proto>/<portname>__<ip>/<port>"."""
    ip, port = ep.rsplit(":", 1)
    return nft_hash_and_truncate(f"{svc['ns']}/{svc['name']}/{svc['proto']}/{svc['port_name']}__{ip}/{port}")


def nft_svc_chain(svc) -> str:
    return "service-" + nft_chain_base(svc)


def nft_ep_chain(svc, ep: str) -> str:
    return "endpoint-" + nft_ep_chain_base(svc, ep)


_NFT_ACTION = re.compile(r"(^|\s)(jump|goto|return|drop|reject|masquerade|dnat to|mark set)\b")


def _nft_add_counter(line: str) -> str:
    """Diagnostic only (kube-proxy writes no counters): put a `counter` into an `add rule` line, just
    before its action (so it counts the packets that matched), or first when the rule is a vmap lookup."""
    head = "add rule ip kube-proxy "
    if not line.startswith(head):
        return line
    chain, body = line[len(head):].split(" ", 1)
    if " vmap " in f" {body} ":
        body = "counter " + body
    else:
        m = _NFT_ACTION.search(body)
        assert m is not None, body
        body = body[:m.start(2)] + "counter " + body[m.start(2):]
    return f"{head}{chain} {body}"


def render_nft(random_fully: bool = False, node_ip: str = "", service_cidr: str = NFT_SERVICE_CIDR,
               counters: bool = False) -> str:
    T = "ip kube-proxy"
    masq = "masquerade fully-random" if random_fully else "masquerade"
    out = [
        "#!/usr/sbin/nft -f",
        "# kube-proxy (nftables mode) ruleset generated by oracle_rules.py --mode nftables",
        f"# Upstream layout: {NFT_UPSTREAM[0]}",
        f"#   {NFT_UPSTREAM[1]}",
        f"#   {NFT_UPSTREAM[2]}",
        "# Written as the objects kube-proxy's first full sync creates (add commands only; on a fresh",
        "# namespace its extra flush/delete commands are no-ops), ordered so that nft -f loads it in one pass.",
        "# Assumed kube-proxy settings: --masquerade-bit 14 (mark 0x4000), --detect-local-mode ClusterCIDR",
        f"# --cluster-cidr {CLUSTER_CIDR}, --nodeport-addresses primary (nodeport-ips = this node's IP),",
        f"# ServiceCIDR {service_cidr or '(none)'}.",
    ]
    if random_fully:
        out.append("# Deliberate difference from real kube-proxy: none (masquerade fully-random as upstream).")
    else:
        out += ["# Deliberate difference from real kube-proxy: `masquerade` without `fully-random` (upstream:",
                "# masquerade fully-random), so the masqueraded source port is kept and the captures are reproducible."]
    out += [
        "",
        f'add table {T} {{ comment "rules for kube-proxy" ; }}',
        "",
        f'add set {T} cluster-ips {{ type ipv4_addr ; comment "Active ClusterIPs" ; }}',
        f'add set {T} nodeport-ips {{ type ipv4_addr ; comment "IPs that accept NodePort traffic" ; }}',
        f'add map {T} firewall-ips {{ type ipv4_addr . inet_proto . inet_service : verdict ; '
        f'comment "destinations that are subject to LoadBalancerSourceRanges" ; }}',
        f'add map {T} no-endpoint-nodeports {{ type inet_proto . inet_service : verdict ; '
        f'comment "vmap to drop or reject packets to service nodeports with no endpoints" ; }}',
        f'add map {T} no-endpoint-services {{ type ipv4_addr . inet_proto . inet_service : verdict ; '
        f'comment "vmap to drop or reject packets to services with no endpoints" ; }}',
        f'add map {T} service-ips {{ type ipv4_addr . inet_proto . inet_service : verdict ; '
        f'comment "ClusterIP, ExternalIP and LoadBalancer IP traffic" ; }}',
        f'add map {T} service-nodeports {{ type inet_proto . inet_service : verdict ; comment "NodePort traffic" ; }}',
        "",
        "# base chains (nftablesBaseChains): filter before DNAT (dstnat-10), filter-output-post-dnat (dstnat+10)",
        f"add chain {T} filter-prerouting {{ type filter hook prerouting priority -110 ; }}",
        f"add chain {T} filter-input {{ type filter hook input priority -110 ; }}",
        f"add chain {T} filter-forward {{ type filter hook forward priority -110 ; }}",
        f"add chain {T} filter-output {{ type filter hook output priority -110 ; }}",
        f"add chain {T} filter-output-post-dnat {{ type filter hook output priority -90 ; }}",
        f"add chain {T} nat-prerouting {{ type nat hook prerouting priority -100 ; }}",
        f"add chain {T} nat-output {{ type nat hook output priority -100 ; }}",
        f"add chain {T} nat-postrouting {{ type nat hook postrouting priority 100 ; }}",
        "",
        f"add chain {T} cluster-ips-check",
        f"add chain {T} firewall-check",
        f"add chain {T} mark-for-masquerade",
        f"add chain {T} masquerading",
        f"add chain {T} nodeport-endpoints-check",
        f'add chain {T} reject-chain {{ comment "helper for @no-endpoint-services / @no-endpoint-nodeports" ; }}',
        f"add chain {T} service-endpoints-check",
        f"add chain {T} services",
        "",
        "# jumps from the base chains (nftablesJumpChains, in kube-proxy's order)",
        f"add rule {T} filter-input ct state new jump nodeport-endpoints-check",
        f"add rule {T} filter-input ct state new jump service-endpoints-check",
        f"add rule {T} filter-forward ct state new jump service-endpoints-check",
        f"add rule {T} filter-output ct state new jump service-endpoints-check",
        f"add rule {T} filter-prerouting ct state new jump firewall-check",
        f"add rule {T} filter-output ct state new jump firewall-check",
        f"add rule {T} nat-output jump services",
        f"add rule {T} nat-prerouting jump services",
        f"add rule {T} nat-postrouting jump masquerading",
        f"add rule {T} filter-forward ct state new jump cluster-ips-check",
        f"add rule {T} filter-output-post-dnat ct state new jump cluster-ips-check",
        "",
        f"add rule {T} mark-for-masquerade mark set mark or {NFT_MASQ_MARK}",
        f"add rule {T} masquerading mark and {NFT_MASQ_MARK} == 0 return",
        f"add rule {T} masquerading mark set mark xor {NFT_MASQ_MARK}",
        f"add rule {T} masquerading {masq}",
        "",
        f'add rule {T} cluster-ips-check ip daddr @cluster-ips reject comment "Reject traffic to invalid ports of ClusterIPs"',
    ]
    if service_cidr:
        out.append(f'add rule {T} cluster-ips-check ip daddr {{ {service_cidr} }} drop comment "Drop traffic to unallocated ClusterIPs"')
    if node_ip:
        out.append(f"add element {T} nodeport-ips {{ {node_ip} }}")
    out += [
        f"add rule {T} reject-chain reject",
        f"add rule {T} service-endpoints-check ip daddr . meta l4proto . th dport vmap @no-endpoint-services",
        f"add rule {T} nodeport-endpoints-check ip daddr @nodeport-ips meta l4proto . th dport vmap @no-endpoint-nodeports",
        f"add rule {T} firewall-check ip daddr . meta l4proto . th dport vmap @firewall-ips",
        f"add rule {T} services ip daddr . meta l4proto . th dport vmap @service-ips",
        f"add rule {T} services ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports",
    ]
    for svc in SERVICES:
        pn, proto, cip, port = port_name(svc), svc["proto"], svc["cluster_ip"], svc["port"]
        out.append("")
        if not svc["endpoints"]:
            out += [f"# {pn} (no endpoints: rejected from filter-forward/-input/-output via service-endpoints-check)",
                    f"add element {T} cluster-ips {{ {cip} }}",
                    f'add element {T} no-endpoint-services {{ {cip} . {proto} . {port} comment "{pn}" : goto reject-chain }}']
            continue
        sc = nft_svc_chain(svc)
        eps = [(ep, nft_ep_chain(svc, ep)) for ep in svc["endpoints"]]
        out.append(f"# {pn}")
        out.append(f"add chain {T} {sc}")
        out += [f"add chain {T} {ec}" for _, ec in eps]
        out.append(f"add rule {T} {sc} ip daddr {cip} {proto} dport {port} ip saddr != {CLUSTER_CIDR} jump mark-for-masquerade")
        vm = " , ".join(f"{i} : goto {ec}" for i, (_, ec) in enumerate(eps))
        out.append(f"add rule {T} {sc} numgen random mod {len(eps)} vmap {{ {vm} }}")
        for ep, ec in eps:
            ep_ip = ep.rsplit(":", 1)[0]
            out.append(f"add rule {T} {ec} ip saddr {ep_ip} jump mark-for-masquerade")
            out.append(f"add rule {T} {ec} meta l4proto {proto} dnat to {ep}")
        out.append(f"add element {T} cluster-ips {{ {cip} }}")
        out.append(f"add element {T} service-ips {{ {cip} . {proto} . {port} : goto {sc} }}")
    if counters:
        out = [_nft_add_counter(x) for x in out]
        out.insert(1, "# DIAGNOSTIC VARIANT (--counters): `counter` added to every rule; kube-proxy writes none.")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=("iptables", "nftables"), default="iptables",
                    help="kube-proxy mode: iptables (iptables-restore input, default) or nftables (nft -f input)")
    ap.add_argument("--random-fully", action="store_true",
                    help="MASQUERADE --random-fully / masquerade fully-random (like real kube-proxy)")
    ap.add_argument("--services-json", metavar="FILE", help="also write the service table (with chain names) as JSON")
    ap.add_argument("--node-ip", default="", metavar="IP",
                    help="nftables mode: the node's primary IP, put into the nodeport-ips set (--nodeport-addresses primary)")
    ap.add_argument("--service-cidr", default=NFT_SERVICE_CIDR, metavar="CIDR",
                    help=f"nftables mode: ServiceCIDR for the cluster-ips-check drop rule (default {NFT_SERVICE_CIDR}; '' omits the rule)")
    ap.add_argument("--counters", action="store_true",
                    help="nftables mode, diagnostic only: add a `counter` to every rule (kube-proxy writes none)")
    a = ap.parse_args(argv)
    if a.mode == "nftables":
        sys.stdout.write(render_nft(a.random_fully, a.node_ip, a.service_cidr, a.counters))
    else:
        sys.stdout.write(render(a.random_fully))
    if a.services_json:
        table = []
        for s in SERVICES:
            d = dict(s, port_name_full=port_name(s))
            if s["endpoints"] and a.mode == "nftables":
                d["nft_service_chain"] = nft_svc_chain(s)
                d["nft_endpoint_chains"] = {ep: nft_ep_chain(s, ep) for ep in s["endpoints"]}
            elif s["endpoints"]:
                d["svc_chain"] = svc_chain(s)
                d["sep_chains"] = {ep: sep_chain(s, ep) for ep in s["endpoints"]}
            table.append(d)
        with open(a.services_json, "w") as f:
            json.dump(table, f, indent=2)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
